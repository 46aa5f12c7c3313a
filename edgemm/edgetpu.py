"""Edge TPU compatibility of a TFLite model, predicted from the published constraints.

Coral's compiler maps an op to the Edge TPU only if the op is on its supported
list, every activation tensor is 8-bit quantized, shapes are static, and tensors
have at most three dimensions larger than 1. It cuts the graph once: from the
first op it cannot map onward, every op runs on the CPU, supported or not.
Option-level limits (fused activations on pooling, unequal dilations, ...) are
only known to the compiler itself; when `edgetpu_compiler` is installed,
`edgemm convert` also runs it and keeps its log.
"""

from __future__ import annotations

import collections
import dataclasses

# Operators the Edge TPU compiler can map (coral.ai/docs/edgetpu/models-intro, "Supported operations"),
# as TFLite builtin operator names.
SUPPORTED_OPS = frozenset({
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "MAXIMUM",
    "MAX_POOL_2D", "MEAN", "MINIMUM", "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN",
    "RELU", "RELU6", "RELU_N1_TO_1", "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT",
    "SLICE", "SOFTMAX", "SPACE_TO_DEPTH", "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM",
    "SQUARED_DIFFERENCE", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
})
EIGHT_BIT = ("int8", "uint8")
MAPPED = "Mapped to Edge TPU"
AFTER_CUT = "Operation is otherwise supported, but not mapped due to an earlier unmapped operation"


@dataclasses.dataclass(frozen=True)
class Tensor:
    dtype: str
    shape: tuple[int, ...]
    constant: bool  # weights, biases, shape operands


@dataclasses.dataclass(frozen=True)
class Op:
    index: int
    name: str  # builtin operator name, e.g. "CONV_2D"
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


@dataclasses.dataclass(frozen=True)
class OpVerdict:
    index: int
    name: str
    mapped: bool
    status: str  # the compiler-style status text


def op_problem(op: Op) -> str | None:
    """Why `op` alone cannot map to the Edge TPU, or None if the published constraints allow it."""
    if op.name not in SUPPORTED_OPS:
        return "Operation not supported by the Edge TPU"
    activations = [t for t in op.inputs if not t.constant] + list(op.outputs)
    for t in activations:
        if t.dtype not in EIGHT_BIT:
            return f"Tensor has unsupported type {t.dtype} (only 8-bit quantized tensors map)"
    for t in op.inputs + op.outputs:
        if any(d < 0 for d in t.shape):
            return "Tensor has a dynamic size; only static shapes map"
    for t in activations:
        if sum(d > 1 for d in t.shape) > 3:
            return f"Tensor of shape {list(t.shape)} has more than 3 dimensions larger than 1"
    return None


def analyze(ops: list[Op]) -> list[OpVerdict]:
    """Per op, in execution order: mapped or not, and why; the graph is cut at the first unmapped op."""
    verdicts, cut = [], False
    for op in ops:
        problem = op_problem(op)
        if cut:
            verdicts.append(OpVerdict(op.index, op.name, False, problem or AFTER_CUT))
        elif problem:
            cut = True
            verdicts.append(OpVerdict(op.index, op.name, False, problem))
        else:
            verdicts.append(OpVerdict(op.index, op.name, True, MAPPED))
    return verdicts


def summary(verdicts: list[OpVerdict]) -> dict:
    mapped = sum(v.mapped for v in verdicts)
    first = next((v for v in verdicts if not v.mapped), None)
    return {
        "ops": len(verdicts),
        "mapped": mapped,
        "on_cpu": len(verdicts) - mapped,
        "fully_mappable": first is None and bool(verdicts),
        "first_unmapped": None if first is None else {"index": first.index, "op": first.name, "reason": first.status},
        "table": [{"operator": name, "count": count, "status": status}
                  for (name, status), count in collections.Counter((v.name, v.status) for v in verdicts).items()],
    }


def format_log(verdicts: list[OpVerdict]) -> str:
    """A table in the style of edgetpu_compiler's own log."""
    s = summary(verdicts)
    lines = [
        f"Number of operations that will run on Edge TPU: {s['mapped']}",
        f"Number of operations that will run on CPU: {s['on_cpu']}",
        "",
        f"{'Operator':<28} {'Count':>5}  Status",
    ]
    lines += [f"{row['operator']:<28} {row['count']:>5}  {row['status']}" for row in s["table"]]
    return "\n".join(lines)
