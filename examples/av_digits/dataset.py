"""AV-digits: the reference audio-visual task.

A camera frame of a handwritten digit (MNIST) and a spoken clip of the same
digit (Free Spoken Digit Dataset), fused into one 10-class decision.

* Audio split by take, as FSDD's own test split: takes 0-4 are the test set
  (300 clips), takes 5-49 the training set (2700 clips); all six speakers in both.
* Images: the 10000 MNIST test-set images are shuffled with a fixed seed; the
  first 2000 are the image test pool, the other 8000 the training pool (disjoint).
* Pairing: each clip is paired with `pairs_per_clip` distinct images of the
  same digit from its split's pool, drawn with a seeded generator.
* Camera-like frames: MNIST's bright-on-dark digits become dark ink on light
  paper (255 - pixel), which the preprocessing spec inverts back.
* Corruption (seeded, so every run sees the same test set), which makes
  each modality unreliable on its own so that fusion matters:
  - image: a square of `occlusion` x `occlusion` MNIST pixels at a random place is
    blanked to paper white (glare, a finger), then Gaussian pixel noise with a
    standard deviation of `image_noise` x 255 is added;
  - audio: the clip is placed in a `window_seconds` window (centred for the
    test set, at a random offset for training) and white Gaussian noise is added
    to the whole window at `snr_db` dB relative to the clip's mean power.

Everything here is numpy (+ OpenCV through the preprocessing): the device-side
benchmarks use it without TensorFlow. The data is read from a directory and
never copied into the repository.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
import re
import struct
from pathlib import Path

import numpy as np

from edgemm.errors import DataError
from edgemm.transforms import v1 as preprocess
from edgemm.transforms.signal import fit_window
from edgemm.wav import read_wav

LABELS = tuple(str(d) for d in range(10))
DATA_DIR_ENV = "EDGEMM_DATA_DIR"
DEFAULT_DATA_DIR = "../shared/data"
IMAGE_TEST_POOL = 2000
SPLIT_SEED = 20240607
_FSDD_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


@dataclasses.dataclass(frozen=True)
class Corruption:
    """Seeded corruption of both modalities (see the module docstring)."""

    occlusion: int = 14
    image_noise: float = 0.35
    snr_db: float = 0.0


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training-only audio variation, so the teacher is not tied to one noise level.

    With probability `probability` a training sample gets an SNR drawn uniformly
    from `snr_db` instead of the task's fixed SNR, and its level is changed by a
    uniform draw from `gain_db`; the other samples keep the task's conditions.
    """

    snr_db: tuple[float, float] = (-3.0, 40.0)
    gain_db: tuple[float, float] = (-12.0, 6.0)
    probability: float = 0.5


@dataclasses.dataclass(frozen=True)
class RawData:
    images: np.ndarray  # (N, 28, 28) uint8, MNIST as published (bright digit on dark)
    image_labels: np.ndarray  # (N,) int64
    clips: tuple[np.ndarray, ...]  # float32 mono at clip_rate
    clip_labels: np.ndarray  # (M,) int64
    clip_takes: np.ndarray  # (M,) int64
    clip_speakers: tuple[str, ...]
    clip_rate: int


@dataclasses.dataclass(frozen=True)
class Split:
    """Model-ready samples: preprocessed inputs keyed by input name, and labels."""

    image: np.ndarray  # (N, H, W, 1) float32
    audio: np.ndarray  # (N, frames, mels, 1) float32
    label: np.ndarray  # (N,) int64

    def inputs(self) -> dict[str, np.ndarray]:
        return {"image": self.image, "audio": self.audio}

    def __len__(self) -> int:
        return int(self.label.size)


def resolve_data_dir(path: str | os.PathLike | None = None) -> Path:
    """The data directory: `path`, else $EDGEMM_DATA_DIR, else ../shared/data.

    The default is looked up from the current directory and then from the
    repository root, so commands work from either.
    """
    if path is None:
        path = os.environ.get(DATA_DIR_ENV) or None
    if path is not None:
        candidates = [Path(path)]
    else:
        repo_root = Path(__file__).resolve().parents[2]
        candidates = [Path.cwd() / DEFAULT_DATA_DIR, repo_root / DEFAULT_DATA_DIR]
    for candidate in candidates:
        if (candidate / "fsdd" / "recordings").is_dir() and (candidate / "mnist").is_dir():
            return candidate.resolve()
    where = " or ".join(str(c) for c in candidates)
    raise DataError(
        f"AV-digits data not found at {where}: pass --data-dir or set {DATA_DIR_ENV} "
        "(it needs fsdd/recordings/*.wav and mnist/t10k-*-idx*-ubyte.gz, see README 'Data')"
    )


def read_idx(path: Path) -> np.ndarray:
    """Reads a (gzipped) IDX file of unsigned bytes, as MNIST is published."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] != 0x08:
        raise DataError(f"{path}: not an IDX file of unsigned bytes")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    count = int(np.prod(shape))
    if len(data) - header != count:
        raise DataError(f"{path}: IDX payload has {len(data) - header} bytes, header says {count}")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


@functools.lru_cache(maxsize=2)
def load_raw(data_dir: Path) -> RawData:
    """Reads MNIST test images and all FSDD clips from `data_dir` (cached)."""
    mnist = data_dir / "mnist"
    images = read_idx(mnist / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(mnist / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    if images.ndim != 3 or images.shape[0] != labels.shape[0]:
        raise DataError(f"{mnist}: image and label files do not match")
    clips, clip_labels, takes, speakers, rates = [], [], [], [], set()
    for path in sorted((data_dir / "fsdd" / "recordings").glob("*.wav")):
        match = _FSDD_NAME.match(path.name)
        if not match:
            continue
        samples, rate = read_wav(path)
        clips.append(samples)
        clip_labels.append(int(match.group(1)))
        speakers.append(match.group(2))
        takes.append(int(match.group(3)))
        rates.add(rate)
    if not clips:
        raise DataError(f"{data_dir / 'fsdd' / 'recordings'}: no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav)")
    if len(rates) != 1:
        raise DataError(f"FSDD recordings have mixed sample rates {sorted(rates)}")
    return RawData(
        images=images,
        image_labels=labels,
        clips=tuple(clips),
        clip_labels=np.array(clip_labels, np.int64),
        clip_takes=np.array(takes, np.int64),
        clip_speakers=tuple(speakers),
        clip_rate=rates.pop(),
    )


def _split_members(raw: RawData, split: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """Clip indices of a split and, per digit, the indices of its image pool."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    test = split == "test"
    clip_idx = np.flatnonzero((raw.clip_takes < 5) == test)
    order = np.random.default_rng(SPLIT_SEED).permutation(raw.images.shape[0])
    pool = order[:IMAGE_TEST_POOL] if test else order[IMAGE_TEST_POOL:]
    by_digit = [np.sort(pool[raw.image_labels[pool] == d]) for d in range(10)]
    return clip_idx, by_digit


def camera_frame(mnist_image: np.ndarray) -> np.ndarray:
    """An MNIST digit as a camera would see it on paper: dark ink on a light background."""
    return (255 - np.asarray(mnist_image, np.uint8)).astype(np.uint8)


def corrupt_frame(frame: np.ndarray, corruption: Corruption, rng: np.random.Generator) -> np.ndarray:
    out = frame.astype(np.float32)
    h, w = out.shape
    size = min(corruption.occlusion, h, w)
    if size > 0:
        top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
        out[top : top + size, left : left + size] = 255.0
    if corruption.image_noise > 0:
        out += rng.normal(0.0, corruption.image_noise * 255.0, out.shape)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def noisy_window(
    clip: np.ndarray, length: int, snr_db: float, rng: np.random.Generator, random_offset: bool
) -> np.ndarray:
    """The clip in a window of `length` samples, with white noise over the whole window at `snr_db`."""
    offset = int(rng.integers(0, max(1, length - clip.size + 1))) if random_offset else None
    window = fit_window(clip, length, offset)
    power = float(np.mean(np.square(clip, dtype=np.float64))) if clip.size else 0.0
    noise_std = np.sqrt(power / 10.0 ** (snr_db / 10.0))
    return (window + rng.normal(0.0, noise_std, length)).astype(np.float32)


def make_split(
    data_dir: Path,
    split: str,
    spec: preprocess.PreprocessSpec,
    *,
    pairs_per_clip: int = 3,
    epoch: int = 0,
    corruption: Corruption = Corruption(),
    seed: int = 0,
    extra_clips: tuple[tuple[np.ndarray, int], ...] = (),
    augmentation: Augmentation | None = None,
) -> Split:
    """Builds the paired, corrupted and preprocessed samples of one split.

    The test split is the same on every call with the same arguments. For
    training, a new `epoch` gives new pairs, offsets and noise, and
    `extra_clips` ((samples at the FSDD rate, digit) pairs, e.g. synthetic
    voices) join the FSDD training clips; `augmentation` varies their SNR and level.
    """
    if (extra_clips or augmentation) and split != "train":
        raise ValueError("extra clips and augmentation are for the training split only")
    raw = load_raw(Path(data_dir))
    clip_idx, pools = _split_members(raw, split)
    clips = [(raw.clips[i], int(raw.clip_labels[i])) for i in clip_idx] + list(extra_clips)
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, epoch])
    window_len = int(round(spec.audio.window_seconds * raw.clip_rate))
    n = len(clips) * pairs_per_clip
    images = np.empty((n, *spec.image.input_shape), np.float32)
    audio = np.empty((n, *spec.audio.feature_shape), np.float32)
    labels = np.empty(n, np.int64)
    row = 0
    for clip, digit in clips:
        chosen = rng.choice(pools[digit], size=pairs_per_clip, replace=False)
        for ii in chosen:
            frame = corrupt_frame(camera_frame(raw.images[ii]), corruption, rng)
            images[row] = preprocess.preprocess_image(frame, spec.image)
            snr, voice = corruption.snr_db, clip
            if augmentation is not None and rng.random() < augmentation.probability:
                snr = float(rng.uniform(*augmentation.snr_db))
                voice = clip * np.float32(10.0 ** (rng.uniform(*augmentation.gain_db) / 20.0))
            window = noisy_window(voice, window_len, snr, rng, random_offset=split == "train")
            audio[row] = preprocess.audio_features(window, raw.clip_rate, spec.audio)
            labels[row] = digit
            row += 1
    return Split(image=images, audio=audio, label=labels)


def blank_inputs(spec: preprocess.PreprocessSpec) -> dict[str, np.ndarray]:
    """What an absent modality looks like: blank paper, and a silent microphone."""
    paper = np.full((spec.image.height, spec.image.width), 255, np.uint8)
    silence = np.zeros(spec.audio.window_samples, np.float32)
    return {
        "image": preprocess.preprocess_image(paper, spec.image),
        "audio": preprocess.audio_features(silence, spec.audio.sample_rate, spec.audio),
    }
