"""Cross-layer equalisation (Nagel et al., "Data-Free Quantization", 2019) of a float ONNX model.

Per-tensor int8 weights give every output channel of a layer the same step, so a layer whose channels
differ in range by 100x (common after batch-norm folding, worst in depthwise convolutions) loses the small
channels. For a Conv -> ReLU -> Conv pair, ReLU(x / s) = ReLU(x) / s for s > 0: output channel i of the
first Conv divided by s_i and input channel i of the second multiplied by s_i compute the same function.
With s_i = sqrt(r1_i / r2_i) (r: the channel's largest absolute weight) both layers' channels end with the
same range, sqrt(r1_i * r2_i). The model changes, not the converter, so every converter honours it (TFLite
through onnx2tf and ONNX Runtime alike); the float outputs stay equal up to float rounding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters.graphs import attr

ROUNDS = 4  # chains of three or more layers converge over a few passes


def _consumers(graph) -> dict[str, list]:
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def _pairs(graph, weights: dict[str, np.ndarray]) -> list[tuple]:
    """(first Conv, second Conv) joined by a ReLU that nothing else reads, with weights only they use."""
    readers = _consumers(graph)
    outputs = {o.name for o in graph.output}
    pairs = []
    for first in graph.node:
        if first.op_type != "Conv" or first.input[1] not in weights or attr(first, "group", 1) not in (1, weights[first.input[1]].shape[0]):
            continue
        relu = readers.get(first.output[0], [])
        if len(relu) != 1 or relu[0].op_type != "Relu" or first.output[0] in outputs:
            continue
        second = readers.get(relu[0].output[0], [])
        if len(second) != 1 or second[0].op_type != "Conv" or relu[0].output[0] in outputs:
            continue
        second = second[0]
        if second.input[0] != relu[0].output[0] or second.input[1] not in weights:
            continue
        used = [readers.get(n, []) for n in (first.input[1:] + second.input[1:])]
        if any(len(r) != 1 for r in used):  # shared weights would change another layer too
            continue
        channels = weights[first.input[1]].shape[0]
        w2 = weights[second.input[1]]
        depthwise = attr(second, "group", 1) == channels and w2.shape[0] == channels and w2.shape[1] == 1
        if attr(second, "group", 1) != 1 and not depthwise:
            continue
        if not depthwise and w2.shape[1] != channels:
            continue
        pairs.append((first, second, depthwise))
    return pairs


def equalize(source: Path, target: Path) -> int:
    """Writes the equalised model to `target`; returns how many Conv pairs were equalised (0: nothing to do,
    `target` is then a copy)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(source))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    weights = {name: numpy_helper.to_array(t).astype(np.float64) for name, t in inits.items()}
    pairs = _pairs(graph, weights)
    for _ in range(ROUNDS):
        for first, second, depthwise in pairs:
            w1, w2 = weights[first.input[1]], weights[second.input[1]]
            r1 = np.abs(w1).reshape(w1.shape[0], -1).max(1)
            r2 = (np.abs(w2).reshape(w2.shape[0], -1).max(1) if depthwise
                  else np.abs(w2).transpose(1, 0, *range(2, w2.ndim)).reshape(w2.shape[1], -1).max(1))
            valid = (r1 > 0) & (r2 > 0)
            s = np.where(valid, np.sqrt(np.where(valid, r1 / np.where(r2 > 0, r2, 1), 1)), 1.0)
            shape1 = (-1,) + (1,) * (w1.ndim - 1)
            weights[first.input[1]] = w1 / s.reshape(shape1)
            if len(first.input) > 2 and first.input[2]:
                weights[first.input[2]] = weights[first.input[2]] / s
            shape2 = (-1,) + (1,) * (w2.ndim - 1) if depthwise else (1, -1) + (1,) * (w2.ndim - 2)
            weights[second.input[1]] = w2 * s.reshape(shape2)
    changed = {n for first, second, _ in pairs for n in (*first.input[1:], second.input[1])}
    for name in changed:
        if name in inits:
            inits[name].CopyFrom(numpy_helper.from_array(weights[name].astype(np.float32), name))
    onnx.save(model, str(target))
    return len(pairs)
