"""Inference backends: one small class per runtime, all with the same interface.

A backend takes float32 inputs keyed by the model's input names, shaped
exactly as the model declares them (checked, never silently reshaped), and
returns float32 outputs keyed by output name; it quantizes int8 inputs and
dequantizes int8 outputs itself, with the scale and zero point stored in the
model. The backends are listed, and opened, in edgemm.backends.registry.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgemm.errors import DependencyError, InputError


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    name: str  # logical name, e.g. "image"
    shape: tuple[int, ...]  # batch dimension included; -1 where dynamic
    dtype: str  # "float32", "int8", "uint8", ...
    scale: float = 0.0  # quantization (0.0: not quantized)
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0 and self.dtype in ("int8", "uint8", "int16")

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(x, dtype=self.dtype)
        info = np.iinfo(self.dtype)
        q = np.asarray(x, np.float32) * np.float32(1.0 / self.scale)
        np.rint(q, out=q)
        q += self.zero_point
        np.clip(q, info.min, info.max, out=q)
        return q.astype(self.dtype)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if not self.quantized:
            return np.asarray(q, np.float32)
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {"shape": list(self.shape)}


class Backend:
    """Interface every backend implements."""

    name: str = ""
    inputs: tuple[TensorInfo, ...] = ()
    outputs: tuple[TensorInfo, ...] = ()
    last_invoke_s: float | None = None  # the kernel time of the last run(), where the runtime can tell

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def check_feeds(self, feeds: dict[str, np.ndarray]) -> None:
        """Refuses missing or extra inputs and any shape the model does not declare (-1: any size)."""
        expected = {t.name for t in self.inputs}
        if set(feeds) != expected:
            raise InputError(f"{self.name}: model inputs are {sorted(expected)}, got {sorted(feeds)}")
        for t in self.inputs:
            shape = np.shape(feeds[t.name])
            if len(shape) != len(t.shape) or any(d >= 0 and d != s for d, s in zip(t.shape, shape)):
                raise InputError(f"{self.name}: input {t.name!r} was given shape {list(shape)}, "
                                 f"the model wants {list(t.shape)}")


def require(module: str, extra_hint: str):
    """Imports a runtime module or raises a DependencyError that says how to get it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DependencyError(f"{module} is not importable ({e}): {extra_hint}") from None
