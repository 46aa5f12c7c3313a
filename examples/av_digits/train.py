"""Trains the AV-digits teacher (and one-modality baselines) on the CPU.

Each epoch draws new image/audio pairs, offsets and noise from the training
split; half of the training clips also get a random SNR (-3..40 dB) and level
(-12..+6 dB), so the model hears clean speech too (`dataset.Augmentation`).
The test split is fixed at the task's 0 dB SNR. With `modality_dropout`, a
sample loses its image or its audio (replaced by blank paper / silence), so
the teacher also decides from one modality alone, and its one-modality
accuracy can be measured.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np

from edgemm.transforms.v1 import PreprocessSpec
from examples.av_digits import dataset, teacher_files
from examples.av_digits.evaluate import accuracy, evaluate_teacher


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 2e-3
    modality_dropout: float = 0.2
    pairs_per_clip: int = 1
    seed: int = 0
    baselines: bool = True
    augmentation: dataset.Augmentation | None = dataset.Augmentation()


def fit_audio_normalisation(data_dir: Path, spec: PreprocessSpec) -> PreprocessSpec:
    """Sets the audio mean/std from the training split's log-mel features."""
    raw_spec = dataclasses.replace(spec, audio=dataclasses.replace(spec.audio, mean=0.0, std=1.0))
    features = dataset.make_split(data_dir, "train", raw_spec, pairs_per_clip=1, seed=1).audio
    mean, std = float(features.mean()), float(features.std())
    return dataclasses.replace(spec, audio=dataclasses.replace(spec.audio, mean=round(mean, 4), std=round(std, 4)))


def _drop_modalities(split: dataset.Split, blanks: dict, rate: float, rng: np.random.Generator) -> dict:
    inputs = {name: array.copy() for name, array in split.inputs().items()}
    draw = rng.random(len(split))
    inputs["image"][draw < rate] = blanks["image"]
    inputs["audio"][(draw >= rate) & (draw < 2 * rate)] = blanks["audio"]
    return inputs


def train(
    data_dir: Path,
    out_dir: Path,
    config: TrainConfig = TrainConfig(),
    log: Callable[[str], None] = print,
) -> dict:
    """Trains, evaluates and writes the teacher and its sidecar into out_dir.

    Returns:
        The sidecar dict (preprocessing spec, labels, metrics, training config).
    """
    import keras

    from examples.av_digits.model import build_single, build_teacher

    started = time.perf_counter()
    keras.utils.set_random_seed(config.seed)
    spec = fit_audio_normalisation(data_dir, PreprocessSpec())
    log(f"audio feature normalisation: mean={spec.audio.mean} std={spec.audio.std}")
    test = dataset.make_split(data_dir, "test", spec)
    blanks = dataset.blank_inputs(spec)
    models = {"fused": build_teacher(spec)}
    if config.baselines:
        models["image"] = build_single("image", spec)
        models["audio"] = build_single("audio", spec)
    steps = config.epochs * int(np.ceil(2700 * config.pairs_per_clip / config.batch_size))
    for model in models.values():
        schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, steps, alpha=0.02)
        model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(config.seed)

    def epoch_data(epoch: int) -> dataset.Split:
        return dataset.make_split(
            data_dir, "train", spec, pairs_per_clip=config.pairs_per_clip, epoch=epoch,
            augmentation=config.augmentation,
        )

    with ThreadPoolExecutor(1) as pool:  # features of the next epoch are built while this one trains
        pending = pool.submit(epoch_data, 0)
        for epoch in range(config.epochs):
            split = pending.result()
            if epoch + 1 < config.epochs:
                pending = pool.submit(epoch_data, epoch + 1)
            line = [f"epoch {epoch + 1}/{config.epochs}"]
            for kind, model in models.items():
                if kind == "fused":
                    x = _drop_modalities(split, blanks, config.modality_dropout, rng)
                else:
                    x = {kind: split.inputs()[kind]}
                hist = model.fit(x, split.label, batch_size=config.batch_size, epochs=1, verbose=0, shuffle=True)
                line.append(f"{kind} loss {hist.history['loss'][-1]:.3f} acc {hist.history['accuracy'][-1]:.3f}")
            log(" | ".join(line) + f" | {time.perf_counter() - started:.0f}s")

    metrics = evaluate_teacher(models["fused"], test, blanks)
    for kind in ("image", "audio"):
        if kind in models:
            probs = models[kind].predict({kind: test.inputs()[kind]}, batch_size=256, verbose=0)
            metrics[f"{kind}_baseline_accuracy"] = accuracy(probs, test.label)
    metrics["train_seconds"] = round(time.perf_counter() - started, 1)
    sidecar = teacher_files.sidecar(models["fused"], spec, metrics, dataclasses.asdict(config))
    teacher_files.save(models["fused"], sidecar, out_dir)
    return sidecar
