"""Artifacts whose inputs are laid out differently from the source model's.

An ONNX model from PyTorch takes NCHW images; its TFLite artifact takes NHWC (the Edge TPU maps no
TRANSPOSE, so none is left at the model's edges). The manifest records, per artifact, each input
whose axes were permuted: artifact input = source input transposed by `perm` (numpy axes order).
The spec describes the source model; :func:`adapt_spec` gives the spec that feeds the artifact,
with each camera/mic transform writing straight into the artifact's layout, so no frame is copied
once more per inference. Data given in the source layout (calibration, validation) goes through
:func:`to_artifact`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgemm.errors import InputError
from edgemm.spec import CameraInput, ConstantInput, MicInput, ModelSpec

Perms = dict[str, tuple[int, ...]]  # input name -> perm, only for inputs whose layout differs


def is_identity(perm) -> bool:
    return list(perm) == list(range(len(perm)))


def read_perms(entry: dict | None, side: str = "inputs") -> Perms:
    """The "layout" entry of a manifest artifact: {"inputs": {name: {"perm": [...]}}, "outputs": {...}}."""
    return {name: tuple(int(a) for a in v["perm"]) for name, v in ((entry or {}).get(side) or {}).items()}


@dataclasses.dataclass(frozen=True)
class ArtifactLayout:
    """How an artifact's inputs and outputs are permuted from the source model's (empty: not at all)."""

    inputs: Perms = dataclasses.field(default_factory=dict)
    outputs: Perms = dataclasses.field(default_factory=dict)

    def entry(self) -> dict:
        """The manifest's "layout" entry (only what differs), as keyword arguments for the artifact record."""
        layout = {side: {n: {"perm": list(p)} for n, p in perms.items() if not is_identity(p)}
                  for side, perms in (("inputs", self.inputs), ("outputs", self.outputs))}
        layout = {k: v for k, v in layout.items() if v}
        return {"layout": layout} if layout else {}


def to_source(outputs: dict[str, np.ndarray], perms: Perms) -> dict[str, np.ndarray]:
    """An artifact's outputs (one run, or samples on the first axis replacing the batch) in the source layout."""
    return {n: v if n not in perms else v.transpose(np.argsort(perms[n])) for n, v in outputs.items()}


class SourceLayoutOutputs:
    """A backend whose outputs are given back in the source model's layout (transposed views, no copy), so
    heads, state feedback and recorded outputs see what the spec describes."""

    def __init__(self, backend, perms: Perms):
        self._backend, self._perms = backend, perms
        self.name, self.inputs = backend.name, backend.inputs
        self.outputs = tuple(t if t.name not in perms else
                             dataclasses.replace(t, shape=tuple(t.shape[a] for a in np.argsort(perms[t.name])))
                             for t in backend.outputs)

    @classmethod
    def wrap(cls, backend, perms: Perms):
        """`backend` itself when no output is permuted."""
        perms = {n: p for n, p in perms.items() if not is_identity(p)}
        return cls(backend, perms) if perms else backend

    @property
    def last_invoke_s(self):
        return self._backend.last_invoke_s

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return to_source(self._backend.run(feeds), self._perms)

    def __getattr__(self, name):  # anything else (providers, close...) is the wrapped backend's
        return getattr(self._backend, name)


def to_artifact(inputs: dict[str, np.ndarray], perms: Perms) -> dict[str, np.ndarray]:
    """Arrays in the source layout to the artifact's: one feed each (the model's rank), or many samples on a
    first axis with the model's shape after it (its batch axis, if any, replaced by the samples)."""
    out = {}
    for name, array in inputs.items():
        perm = perms.get(name)
        if perm is not None and array.ndim == len(perm) + 1:  # samples of a model without a batch axis
            perm = (0, *(a + 1 for a in perm))
        out[name] = array if perm is None else np.ascontiguousarray(array.transpose(perm))
    return out


def _drop_batch(perm: tuple[int, ...]) -> tuple[int, ...]:
    if perm[0] != 0:
        raise InputError(f"layout permutation {list(perm)} moves the batch axis")
    return tuple(a - 1 for a in perm[1:])


def _image(item: CameraInput, perm: tuple[int, ...]) -> CameraInput:
    t = item.transform
    labels = list(t.layout[1:])  # axes after the batch axis
    if t.frames > 1:
        labels.insert(t.frame_axis - 1, "T")
    batch = len(perm) == len(labels) + 1
    core = _drop_batch(perm) if batch else perm
    moved = [labels[a] for a in core]
    layout = "N" + "".join(a for a in moved if a != "T")
    if layout not in ("NCHW", "NHWC", "NHW"):
        raise InputError(f"{item.name}: the artifact wants the image axes as {''.join(moved)}, which no camera "
                         "transform writes; use an artifact in the source layout")
    frame_axis = moved.index("T") + 1 if "T" in moved else t.frame_axis
    return dataclasses.replace(item, transform=dataclasses.replace(t, layout=layout, frame_axis=frame_axis))


def _audio(item: MicInput, perm: tuple[int, ...]) -> MicInput:
    t = item.transform
    batch = len(perm) == len(t.axes) + 1
    core = _drop_batch(perm) if batch else perm
    return dataclasses.replace(item, transform=dataclasses.replace(t, axes=tuple(t.axes[a] for a in core)))


def _constant(item: ConstantInput, perm: tuple[int, ...], shape: tuple[int, ...]) -> ConstantInput:
    value = np.broadcast_to(np.asarray(item.value, np.float64), shape).transpose(perm)
    return dataclasses.replace(item, value=value.tolist())


def adapt_spec(spec: ModelSpec, perms: Perms, source_shapes: dict[str, tuple[int, ...]]) -> ModelSpec:
    """The spec that feeds an artifact whose inputs `perms` permutes. source_shapes: each permuted
    input's shape in the source model (for constants)."""
    if not perms:
        return spec
    inputs = dict(spec.inputs)
    for name, perm in perms.items():
        item = inputs.get(name)
        if item is None or is_identity(perm):
            continue
        if isinstance(item, CameraInput):
            inputs[name] = _image(item, perm)
        elif isinstance(item, MicInput):
            inputs[name] = _audio(item, perm)
        elif isinstance(item, ConstantInput):
            inputs[name] = _constant(item, perm, tuple(max(d, 1) for d in source_shapes[name]))
        else:
            raise InputError(f"{name}: a state input whose layout differs in the artifact cannot be fed back; "
                             "use an artifact in the source layout")
    return dataclasses.replace(spec, inputs=inputs)
