"""Accuracy of the teacher on AV-digits: fused, and with one modality blanked."""

from __future__ import annotations

import numpy as np

from examples.av_digits.dataset import Split


def accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    return round(float(np.mean(np.argmax(probs, axis=1) == labels)), 4)


def evaluate_teacher(model, test: Split, blanks: dict) -> dict:
    """Fused accuracy, and accuracy when the audio (image-only) or the image (audio-only) is blank."""
    n = len(test)
    results = {"test_samples": n}
    variants = {
        "fused": test.inputs(),
        "image_only": {"image": test.image, "audio": np.repeat(blanks["audio"][None], n, axis=0)},
        "audio_only": {"image": np.repeat(blanks["image"][None], n, axis=0), "audio": test.audio},
    }
    for name, inputs in variants.items():
        probs = model.predict(inputs, batch_size=256, verbose=0)
        results[f"{name}_accuracy"] = accuracy(probs, test.label)
    return results
