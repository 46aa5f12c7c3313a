"""A model spec bound to a model's real tensors: every input and output checked, shapes settled.

convert binds the spec to the source model before any work; run and bench bind it to the
artifact they open. A mismatch is one line naming the input and both shapes, e.g.
"pixel_values: spec gives 3x224x224 (NCHW rgb), model wants 1x224x224x3".
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from edgemm.errors import InputError
from edgemm.spec import CameraInput, ConstantInput, MicInput, ModelSpec, OutputSpec, StateInput


@dataclasses.dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]  # -1 where dynamic
    dtype: str
    scale: float = 0.0  # quantized input: the backend takes float32 and quantizes it with this scale

    @classmethod
    def of(cls, info) -> "Tensor":
        """From a backend TensorInfo or a manifest/isolated-run dict."""
        if isinstance(info, dict):
            return cls(str(info["name"]), tuple(int(d) for d in info["shape"]), str(info["dtype"]),
                       float(info.get("scale") or 0.0))
        return cls(info.name, tuple(info.shape), info.dtype, float(info.scale))

    @property
    def feed_dtype(self) -> str:
        """What edgemm feeds: float32 for quantized inputs (the backend quantizes), else the model's type."""
        return "float32" if self.scale else self.dtype


def _dims(shape) -> str:
    return "x".join("?" if d < 0 else str(d) for d in shape) or "scalar"


@dataclasses.dataclass(frozen=True)
class BoundInput:
    spec: CameraInput | MicInput | StateInput | ConstantInput
    tensor: Tensor
    shape: tuple[int, ...]  # what is fed: the model's shape with dynamic dims settled (batch 1)
    batch_axis: bool  # the model has a leading batch axis (sensors: one the transform does not produce;
    # state/constant: a dynamic first axis), left out of calibration samples

    @property
    def name(self) -> str:
        return self.tensor.name

    def zeros(self) -> np.ndarray:
        return np.zeros(self.shape, _numpy_dtype(self.tensor.feed_dtype))

    def constant(self) -> np.ndarray:
        value = np.asarray(self.spec.value, np.float64)
        return np.array(np.broadcast_to(value, self.shape), dtype=_numpy_dtype(self.tensor.feed_dtype))


@dataclasses.dataclass(frozen=True)
class BoundOutput:
    spec: OutputSpec
    tensor: Tensor

    @property
    def classes(self) -> int | None:
        dims = self.tensor.shape[1:] if len(self.tensor.shape) > 1 else self.tensor.shape
        return None if any(d < 0 for d in dims) else int(math.prod(dims))

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels or tuple(str(i) for i in range(self.classes or 0))


@dataclasses.dataclass(frozen=True)
class Binding:
    spec: ModelSpec
    inputs: dict[str, BoundInput]
    outputs: dict[str, BoundOutput]  # every model output, in the model's order

    @property
    def heads(self) -> list[BoundOutput]:
        return [o for o in self.outputs.values() if o.spec.head != "state"]


def _numpy_dtype(dtype: str):
    try:
        return np.dtype(dtype)
    except TypeError:
        raise InputError(f"model input type {dtype!r} cannot be fed by edgemm") from None


def _transform_shape(item) -> tuple[tuple[int, ...], str]:
    t = item.transform
    if isinstance(item, CameraInput):
        what = f"{t.layout} {t.color}" + (f", {t.frames} frames" if t.frames > 1 else "")
    else:
        what = f"{t.features}, axes {'/'.join(t.axes)}"
    return tuple(t.output_shape), what


def _bind_sensor(item, tensor: Tensor) -> BoundInput:
    want, what = _transform_shape(item)
    shape = tensor.shape
    batch = len(shape) == len(want) + 1
    core = shape[1:] if batch else shape
    fits = len(core) == len(want) and all(m < 0 or m == w for m, w in zip(core, want))
    if batch and shape[0] not in (-1, 1) or not batch and shape and shape[0] < 0:
        fits = False  # a batch axis of 1 (or dynamic) beside the transform's shape, never a dynamic data axis
    if not fits:
        raise InputError(f"{tensor.name}: spec gives {_dims(want)} ({what}), model wants {_dims(shape)}")
    return BoundInput(item, tensor, ((1,) if batch else ()) + want, batch)


def _settle(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(1 if d < 0 else d for d in shape)


def _bind_input(item, tensor: Tensor, outputs: dict[str, Tensor]) -> BoundInput:
    if isinstance(item, (CameraInput, MicInput)):
        return _bind_sensor(item, tensor)
    shape = _settle(tensor.shape)
    batch = len(shape) > 0 and tensor.shape[0] < 0  # a dynamic first axis is the batch axis
    if isinstance(item, StateInput):
        out = outputs.get(item.from_output)
        if out is None:
            raise InputError(f"{tensor.name}: state comes from output {item.from_output!r}, which the model does not "
                             f"have (outputs: {', '.join(outputs)})")
        if math.prod(_settle(out.shape)) != math.prod(shape):
            raise InputError(f"{tensor.name}: state input is {_dims(tensor.shape)} but output {out.name} is "
                             f"{_dims(out.shape)}")
        return BoundInput(item, tensor, shape, batch)
    value = np.asarray(item.value, np.float64)
    try:
        np.broadcast_to(value, shape)
    except ValueError:
        raise InputError(f"{tensor.name}: constant of shape {_dims(value.shape)} does not fit the model's "
                         f"{_dims(tensor.shape)}") from None
    return BoundInput(item, tensor, shape, batch)


def _default_outputs(spec: ModelSpec, outputs: list[Tensor]) -> dict[str, OutputSpec]:
    """Outputs the spec does not describe: a single output is a classifier, any other is raw."""
    described = dict(spec.outputs)
    for t in outputs:
        if t.name not in described:
            head = "classify" if len(outputs) == 1 and not spec.outputs else "raw"
            described[t.name] = OutputSpec(t.name, head)
    return described


def bind(spec: ModelSpec, inputs: list[Tensor], outputs: list[Tensor], where: str = "model") -> Binding:
    """Checks `spec` against a model's input and output tensors; every mismatch is one InputError."""
    names = [t.name for t in inputs]
    missing, extra = [n for n in names if n not in spec.inputs], [n for n in spec.inputs if n not in names]
    if missing or extra:
        detail = "; ".join(p for p in (f"not in the spec: {', '.join(missing)}" if missing else "",
                                       f"not in the model: {', '.join(extra)}" if extra else "") if p)
        raise InputError(f"{where}: the spec's inputs do not match the model's ({detail})")
    unknown = [n for n in spec.outputs if n not in {t.name for t in outputs}]
    if unknown:
        raise InputError(f"{where}: spec output(s) {', '.join(unknown)} not in the model "
                         f"(outputs: {', '.join(t.name for t in outputs)})")
    by_name = {t.name: t for t in outputs}
    bound_in = {t.name: _bind_input(spec.inputs[t.name], t, by_name) for t in inputs}
    described = _default_outputs(spec, outputs)
    bound_out = {t.name: BoundOutput(described[t.name], t) for t in outputs}
    for o in bound_out.values():
        if o.spec.head in ("classify", "multilabel") and o.spec.labels and o.classes not in (None, len(o.spec.labels)):
            raise InputError(f"{o.tensor.name}: {len(o.spec.labels)} labels for an output of {o.classes} values "
                             f"({_dims(o.tensor.shape)})")
    return Binding(dataclasses.replace(spec, outputs=described), bound_in, bound_out)
