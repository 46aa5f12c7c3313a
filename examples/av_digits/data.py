"""The AV-digits sets as the .npz files `edgemm convert` and `edgemm bench` take (arrays keyed by input name).

    python -m examples.av_digits data --out DIR [--data-dir D] [--calib-samples 300] [--train-epochs 3]

DIR/calib.npz  `calib_samples` pairs of the training split (one image per clip, seed 7, shuffled with seed 7)
DIR/val.npz    the test set: 300 clips x 3 images = 900 pairs
DIR/train.npz  fresh augmented training pairs (seed 11), `train_epochs` epochs' worth, concatenated,
               for `edgemm convert --prune/--distill --train`
Each with 'label'. Preprocessed with the teacher's spec (its sidecar), as the device preprocesses.

Without the AV-digits data directory the demo media stand in (as the demo does): the model inputs
at every demo frame, shuffled; the first `calib_samples` (at most three quarters) calibrate, the rest
validate, and the calibration part is also the training set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from edgemm.atomic import atomic_path
from edgemm.errors import DataError
from edgemm.transforms.v1 import PreprocessSpec
from examples.av_digits import dataset, demo_media, teacher_files

Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class DataFiles:
    calib: Path
    val: Path
    train: Path | None  # None when no training epochs were asked for
    source: str  # where the samples came from
    counts: dict[str, int]  # file name -> samples


def calibration_sets(data_dir: Path, spec: PreprocessSpec, calib_samples: int,
                     val_pairs_per_clip: int = 3) -> tuple[Arrays, Arrays]:
    """(calibration from the training split, validation = the test set), with 'label'."""
    train = dataset.make_split(data_dir, "train", spec, pairs_per_clip=1, seed=7)
    order = np.random.default_rng(7).permutation(len(train))[:calib_samples]
    test = dataset.make_split(data_dir, "test", spec, pairs_per_clip=val_pairs_per_clip)
    calib = {k: v[order] for k, v in train.inputs().items()} | {"label": train.label[order]}
    return calib, test.inputs() | {"label": test.label}


def training_arrays(data_dir: Path, spec: PreprocessSpec, epochs: int) -> Arrays:
    """Fresh augmented training pairs per epoch (new images, offsets, noise), concatenated."""
    splits = [dataset.make_split(data_dir, "train", spec, pairs_per_clip=1, epoch=epoch, seed=11,
                                 augmentation=dataset.Augmentation()) for epoch in range(epochs)]
    return {"image": np.concatenate([s.image for s in splits]), "audio": np.concatenate([s.audio for s in splits]),
            "label": np.concatenate([s.label for s in splits])}


def demo_sets(media: demo_media.DemoMedia, spec: PreprocessSpec, calib_samples: int) -> tuple[Arrays, Arrays]:
    """(calibration, validation) from the demo media: the first part calibrates, the held-out rest validates."""
    arrays = demo_media.calibration_arrays(media, spec)
    n = len(arrays["label"])
    cut = min(calib_samples, n - max(1, n // 4))
    return {k: v[:cut] for k, v in arrays.items()}, {k: v[cut:] for k, v in arrays.items()}


def _save(path: Path, arrays: Arrays) -> Path:
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def write_data(out: Path, data_dir: Path | None = None, model: Path | None = None, calib_samples: int = 300,
               train_epochs: int = 3, media: demo_media.DemoMedia | None = None,
               log: Callable[[str], None] = print) -> DataFiles:
    """Writes calib.npz, val.npz and (with train_epochs > 0) train.npz into `out`.

    Args:
        out: directory for the files (created).
        data_dir: the AV-digits data [default: $EDGEMM_DATA_DIR or ../shared/data]; when it is
            missing, the demo media stand in.
        model: the Keras teacher whose sidecar gives the preprocessing [default: the shipped teacher].
        calib_samples: calibration samples.
        train_epochs: epochs' worth of training pairs in train.npz (0: no train.npz).
        media: demo media to use when the data is missing [default: rendered into out/media].
        log: progress lines.
    """
    out = Path(out)
    spec, _ = teacher_files.load_sidecar(Path(model or teacher_files.TEACHER_MODEL))
    out.mkdir(parents=True, exist_ok=True)
    try:
        root = dataset.resolve_data_dir(data_dir)
    except DataError as e:
        root = None
        log(f"{e}; using the demo media instead")
    sets = {}
    if root is not None:
        source = f"AV-digits ({root})"
        log(f"building {calib_samples} calibration pairs and the test set from {root}")
        sets["calib"], sets["val"] = calibration_sets(root, spec, calib_samples)
        if train_epochs > 0:
            log(f"building {train_epochs} epoch(s) of augmented training pairs")
            sets["train"] = training_arrays(root, spec, train_epochs)
    else:
        if media is None:
            media = demo_media.DemoMedia(out / "media" / "demo.avi", out / "media" / "demo.wav", out / "media" / "demo.json")
            if not all(p.is_file() for p in (media.video, media.audio, media.truth)):
                log(f"rendering demo media into {out / 'media'}/")
                media = demo_media.render(out / "media")
        source = f"demo media ({media.video.parent})"
        sets["calib"], sets["val"] = demo_sets(media, spec, calib_samples)
        if train_epochs > 0:
            sets["train"] = sets["calib"]
    paths = {name: _save(out / f"{name}.npz", arrays) for name, arrays in sets.items()}
    return DataFiles(calib=paths["calib"], val=paths["val"], train=paths.get("train"), source=source,
                     counts={p.name: int(len(sets[name]["label"])) for name, p in paths.items()})
