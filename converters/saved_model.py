"""TensorFlow SavedModel sources: the serving signature's tensors, running it, and its TFLite.

A SavedModel is what every TensorFlow-side source becomes: the user's SavedModel directory,
a legacy .h5 loaded with tf_keras (converters.legacy_keras), and an ONNX model converted by
onnx2tf (converters.onnx_tflite). TFLite is made from a concrete function with fixed shapes
(batch 1, --input-shape for dynamic dimensions): the Edge TPU compiler needs static shapes.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from edgemm.binding import Tensor
from edgemm.errors import InputError

SIGNATURE = "serving_default"


def _signature(path: Path):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(os.fspath(path))
    except Exception as e:  # TF raises OSError, ValueError, errors.*...
        text = str(e).strip()
        raise InputError(f"{path}: TensorFlow cannot load this SavedModel ({(text.splitlines() or [type(e).__name__])[0][:300]})") from None
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if SIGNATURE not in signatures:
        raise InputError(f"{path}: the SavedModel has no {SIGNATURE!r} signature (has: {', '.join(signatures) or 'none'}); "
                         "save it with a serving signature (model.export(dir) in Keras)")
    return loaded, signatures[SIGNATURE]


def _tensor(name: str, spec) -> Tensor:
    shape = tuple(-1 if d is None else int(d) for d in spec.shape) if spec.shape.rank is not None else ()
    return Tensor(name, shape, spec.dtype.name)


def signature_io(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """The serving signature's inputs and outputs, named by their signature keys."""
    _, fn = _signature(path)
    inputs = [_tensor(name, spec) for name, spec in sorted(fn.structured_input_signature[1].items())]
    outputs = [_tensor(name, spec) for name, spec in sorted(fn.structured_outputs.items())]
    bad = [t for t in inputs if t.dtype != "float32"]
    if bad:
        raise InputError(f"{path}: input {bad[0].name} is {bad[0].dtype}; edgemm converts models with float32 inputs")
    return inputs, outputs


def run(path: Path, inputs: dict[str, np.ndarray], batch: int = 32) -> dict[str, np.ndarray]:
    """The serving signature's outputs for `inputs` (first axis = samples), keyed by output name."""
    import tensorflow as tf

    _, fn = _signature(path)
    count = len(next(iter(inputs.values())))
    results: dict[str, list[np.ndarray]] = {}
    for start in range(0, count, batch):
        feed = {k: tf.constant(v[start:start + batch], tf.float32) for k, v in inputs.items()}
        for name, value in fn(**feed).items():
            results.setdefault(name, []).append(value.numpy())
    return {k: np.concatenate(v).astype(np.float32) for k, v in results.items()}


@dataclasses.dataclass(frozen=True)
class Graph:
    """A SavedModel to make TFLite from: its serving signature traced with static shapes (batch 1) and the
    source model's tensor names (onnx2tf names outputs output_0, output_1, ...)."""

    path: Path
    inputs: list[Tensor]  # settled shapes in the graph's layout, named as in the source model
    input_keys: dict[str, str] = dataclasses.field(default_factory=dict)  # source name -> signature key, if not equal
    output_keys: dict[str, str] = dataclasses.field(default_factory=dict)  # signature key -> source name, if not equal

    @property
    def static_inputs(self) -> dict[str, tuple[int, ...]]:
        return {t.name: (1, *t.shape[1:]) if t.shape and t.shape[0] < 0 else t.shape for t in self.inputs}

    def as_is(self) -> bool:
        """The SavedModel's own signature already is static, batch 1, with the source's names."""
        return not self.input_keys and not self.output_keys and \
            {t.name: t.shape for t in signature_io(self.path)[0]} == self.static_inputs

    def concrete_function(self):
        """(function, the loaded object that owns its variables) for TFLiteConverter.from_concrete_functions."""
        import tensorflow as tf

        loaded, fn = _signature(self.path)
        specs = {name: tf.TensorSpec(shape, tf.float32, name=name) for name, shape in self.static_inputs.items()}
        keys, renames = self.input_keys, self.output_keys

        @tf.function(input_signature=[specs])
        def serve(feeds):
            outputs = fn(**{keys.get(name, name): value for name, value in feeds.items()})
            return {renames.get(key, key): value for key, value in outputs.items()}

        return serve.get_concrete_function(), loaded
