"""Fixing a model's dynamic input dimensions: `--input-shape NAME=1,3,48,192`.

Real ONNX files have dynamic dimensions: a batch axis, and often height and width that share
one symbolic name (an OCR model exported with dynamic_axes={"x": {2: "size", 3: "size"}}).
Every dimension is fixed by its position, never by its symbol: `x=1,3,48,192` gives H=48 and
W=192 even though the file says both are "size". (onnxruntime.tools.make_dynamic_shape_fixed
fixes by symbol, so it cannot untie a shared symbol, and it fails on such files.) The shapes
inside the graph are then inferred again with onnx's shape inference.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgemm.binding import Tensor
from edgemm.errors import InputError

_SHAPE = re.compile(r"^([^=]+)=(\d+(?:,\d+)*)$")


def parse_input_shapes(values: tuple[str, ...] | list[str]) -> dict[str, tuple[int, ...]]:
    """NAME=D0,D1,... (repeatable) -> {NAME: (D0, D1, ...)}; every dimension a positive integer."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        match = _SHAPE.match(value.strip())
        if not match:
            raise InputError(f"--input-shape {value!r}: give NAME=D0,D1,... with positive integers, e.g. x=1,3,48,192")
        name, dims = match.group(1).strip(), tuple(int(d) for d in match.group(2).split(","))
        if any(d <= 0 for d in dims):
            raise InputError(f"--input-shape {value!r}: every dimension must be a positive integer")
        if name in shapes:
            raise InputError(f"--input-shape: {name} given twice")
        shapes[name] = dims
    return shapes


def _dims(shape) -> str:
    return "x".join("?" if d < 0 else str(d) for d in shape)


def settle(inputs: list[Tensor], shapes: dict[str, tuple[int, ...]], where: str) -> list[Tensor]:
    """The inputs with `shapes` applied. A given shape must keep the rank and every static dimension;
    a dynamic dimension left beyond the batch axis is an error that prints the flag to use."""
    names = {t.name for t in inputs}
    unknown = sorted(set(shapes) - names)
    if unknown:
        raise InputError(f"--input-shape {unknown[0]}: the model has no such input (inputs: {', '.join(sorted(names))})")
    settled = []
    for t in inputs:
        shape = shapes.get(t.name)
        if shape is not None:
            if len(shape) != len(t.shape) or any(d >= 0 and d != s for d, s in zip(t.shape, shape)):
                raise InputError(f"--input-shape {t.name}={','.join(map(str, shape))}: the model's input is "
                                 f"{_dims(t.shape)} (? = dynamic); keep its rank and static dimensions")
            t = Tensor(t.name, shape, t.dtype, t.scale)
        elif any(d < 0 for d in t.shape[1:]):
            example = ",".join(str(d) if d >= 0 else ("1" if i == 0 else "N") for i, d in enumerate(t.shape))
            raise InputError(f"{where}: input {t.name!r} has dynamic dimensions ({_dims(t.shape)}); fix them with "
                             f"--input-shape {t.name}={example} (N: the size you feed)")
        settled.append(t)
    return settled


def fix_onnx(path: Path, shapes: dict[str, tuple[int, ...]], out: Path) -> Path:
    """Writes `path` with the given input shapes to `out`, shapes inside the graph inferred again."""
    import onnx

    model = onnx.load(str(path))
    for value in model.graph.input:
        if value.name not in shapes:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, shapes[value.name]):
            dim.Clear()  # drops dim_param: a symbol shared with another axis no longer ties them
            dim.dim_value = size
    # Inferred shapes of intermediate tensors and outputs still carry the symbols: infer them anew.
    del model.graph.value_info[:]
    for value in model.graph.output:
        for dim in value.type.tensor_type.shape.dim:
            if not dim.HasField("dim_value"):
                dim.Clear()
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:  # onnx raises InferenceError, ValidationError...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: the model does not accept the shapes given with --input-shape ({reason[:300]})") from None
    onnx.save(model, str(out))
    return out
