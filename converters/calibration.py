"""Calibration and validation data, keyed by input name (never by position).

An .npz file with one array per model input (first axis = samples) and an
optional `label` array. Without a separate validation file, the first part
calibrates and the rest (never seen by calibration) validates.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from edgemm.errors import InputError
from edgemm.samples import read_npz


# Beyond this, an int8 scale (range / 255) and the products of scales the quantizers compute leave float32's
# range; TFLite's quantizer has been seen to crash on calibration values near 3e38.
MAX_ABS_VALUE = 1e15


@dataclasses.dataclass(frozen=True)
class Samples:
    inputs: dict[str, np.ndarray]  # name -> (N, ...) float32
    labels: np.ndarray | None  # (N,) int64, or None when unknown
    source: str  # where they came from, for the report

    def __len__(self) -> int:
        return int(len(next(iter(self.inputs.values()))))

    def take(self, index) -> "Samples":
        labels = None if self.labels is None else self.labels[index]
        return Samples({k: v[index] for k, v in self.inputs.items()}, labels, self.source)


def check_samples(samples: Samples, expected: dict[str, tuple[int, ...]], where: str) -> Samples:
    """Refuses missing/extra inputs, wrong shapes, empty sets and non-finite values, naming the problem."""
    if set(samples.inputs) != set(expected):
        raise InputError(f"{where}: arrays {sorted(samples.inputs)} do not match the model inputs {sorted(expected)}")
    counts = {len(a) for a in samples.inputs.values()}
    if len(counts) != 1 or 0 in counts:
        raise InputError(f"{where}: every input needs the same, non-zero number of samples (got {sorted(counts)})")
    for name, shape in expected.items():
        array = samples.inputs[name]
        if tuple(array.shape[1:]) != tuple(shape):
            raise InputError(f"{where}: '{name}' samples have shape {tuple(array.shape[1:])}, the model wants {tuple(shape)}")
        if not np.issubdtype(array.dtype, np.number):
            raise InputError(f"{where}: '{name}' is not numeric ({array.dtype})")
        if not np.isfinite(array).all():
            raise InputError(f"{where}: '{name}' contains NaN or Inf")
        peak = max(float(array.max()), -float(array.min()))  # no |x| copy of a large array
        if peak > MAX_ABS_VALUE:
            raise InputError(f"{where}: '{name}' has values up to {peak:.3g}; int8 quantization scales cannot span "
                             f"that range (|x| <= {MAX_ABS_VALUE:.0e}): scale the data as the model expects it")
    if samples.labels is not None and len(samples.labels) != counts.pop():
        raise InputError(f"{where}: 'label' has {len(samples.labels)} entries for {len(samples)} samples")
    return Samples({k: np.ascontiguousarray(v, np.float32) for k, v in samples.inputs.items()},
                   samples.labels, samples.source)


def load_npz(path: Path) -> Samples:
    arrays, labels = read_npz(path, "calibration")
    return Samples(arrays, labels, str(path))


def split_npz(samples: Samples, calib_samples: int) -> tuple[Samples, Samples]:
    """First `calib_samples` calibrate, the rest validate (at least one of each)."""
    n = len(samples)
    if n < 2:
        raise InputError(f"{samples.source}: needs at least 2 samples (calibration and held-out validation)")
    cut = min(calib_samples, n - max(1, n // 4)) if calib_samples < n else n - max(1, n // 4)
    calib, val = samples.take(slice(0, cut)), samples.take(slice(cut, n))
    return (dataclasses.replace(calib, source=f"{samples.source}[:{cut}]"),
            dataclasses.replace(val, source=f"{samples.source}[{cut}:]"))
