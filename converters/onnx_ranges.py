"""Activation ranges chosen per tensor (converters/ranges.py) for ONNX Runtime's quantizer.

The float model runs with every intermediate tensor as an output (the augmentation ONNX Runtime's own
quantization debugger uses), one sample at a time; the chosen ranges go to quantize_static as
TensorQuantOverrides (rmin/rmax), its documented way to override calibrated ranges.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from converters import ranges
from converters.layer_error import augmented_session, saved_outputs
from edgemm.progress import Update
from edgemm.samples import model_ranks, sample


def overrides(model: Path, calib: dict[str, np.ndarray], progress: Update | None = None) -> tuple[dict, dict]:
    """TensorQuantOverrides for every float activation of `model` except its inputs and outputs, and
    ranges.summary() of the choice."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    ends = {v.name for v in graph.input} | {v.name for v in graph.output}
    with tempfile.TemporaryDirectory(prefix="edgemm-ranges-") as tmp:
        session = augmented_session(model, Path(tmp))
    floats = {o.name for o in session.get_outputs() if o.type == "tensor(float)"}
    saved = {tensor: output for tensor, output in saved_outputs(session).items()
             if tensor not in ends and output in floats}
    names, outputs = list(saved), list(saved.values())
    rectified = _only_into_relu(graph)

    ranks = model_ranks(session.get_inputs())

    def run(i: int) -> dict[str, np.ndarray]:
        values = dict(zip(names, session.run(outputs, sample(calib, i, ranks)), strict=True))
        return {n: np.maximum(v, 0) if n in rectified else v for n, v in values.items()}

    count = len(next(iter(calib.values())))
    hists = ranges.histograms(run, names, count, progress)
    choices = {name: ranges.choose(h) for name, h in hists.items()}
    result = {name: [{"rmin": np.array(c.low, np.float32), "rmax": np.array(c.high, np.float32)}]
              for name, c in choices.items()}
    return result, ranges.summary(choices)


def _only_into_relu(graph) -> set[str]:
    """Tensors read only by Relu nodes (a MatMul or Conv before its ReLU): their negative values never reach
    the rest of the model, so their range is chosen for what the ReLU lets through (the negative side
    becomes 0, which the Q/DQ pair then maps exactly as the ReLU would)."""
    readers: dict[str, set[str]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, set()).add(node.op_type)
    return {name for name, ops in readers.items() if ops == {"Relu"}}


def _outputs(model: Path, calib: dict[str, np.ndarray], samples: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    ranks = model_ranks(session.get_inputs())
    runs = [session.run(names, sample(calib, i, ranks)) for i in samples]
    return {name: np.concatenate([r[k] for r in runs]) for k, name in enumerate(names)}


def held_out_sqnr_db(float_model: Path, variants: dict[str, Path], calib: dict[str, np.ndarray]) -> dict:
    """Each variant's outputs against the float model's on the held-out calibration samples: the SQNR of the
    worst output, by variant name."""
    held = ranges.held_out_samples(len(next(iter(calib.values()))))
    reference = _outputs(float_model, calib, held)
    return {name: ranges.output_error_db(reference, _outputs(path, calib, held)) for name, path in variants.items()}


def keep_closer(float_model: Path, variants: dict[str, Path], calib: dict[str, np.ndarray]) -> dict:
    """Which quantized variant's outputs are closer to the float model's on the held-out calibration samples
    (SQNR of the worst output; ties keep the first)."""
    sqnr = held_out_sqnr_db(float_model, variants, calib)
    kept = max(sqnr, key=sqnr.__getitem__)
    return {"held_out_output_sqnr_db": {k: round(v, 2) for k, v in sqnr.items()}, "kept": kept}
