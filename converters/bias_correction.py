"""Bias correction (Nagel et al., "Data-Free Quantization", 2019, section 4.2) of a float ONNX model.

Rounding a layer's weights to int8 is not noise that averages out: the rounding errors of one output channel
are fixed numbers and the input they multiply has a non-zero mean (images in [0, 1], anything after a ReLU),
so every output channel is shifted by a constant the layers after take for signal. It is largest with
per-tensor weights, where one large weight sets the step of the whole layer (batch-norm folding leaves channels
100x apart, worst in depthwise convolutions). With W_q = W + eps the quantized weights and E[x] the layer's
input mean on the calibration samples, the expected output moves by E[W_q x] - E[W x] = eps E[x]; the bias
b' = b - eps E[x] cancels it. For a Conv, E[x] is kept per channel and position and eps E[x] is the Conv of
that mean map with eps as weights, averaged over the output positions: the zero padding counts (the border
outputs see fewer inputs, and they are most outputs on the small maps of a network's last layers). eps is the
error of the rounding ONNX Runtime's quantize_static applies in this repo (converters/export.py: symmetric
int8, per output channel or per tensor, 7 bits with reduce_range), reproduced exactly, so a correction is for
one granularity; TFLite's symmetric int8 weights have the same max|w| / 127 scales, so it holds there too when
TFLite uses that granularity. The model changes, not the converter. The float outputs move by the removed
shift, as large as the bias part of the weight rounding error: with per-tensor weights that can be far from
small (the corrected float model is the int8 model's better reference, not a better float model).

Corrected: Conv (any group) and Gemm with initializer weights, and MatMul followed by an Add of an initializer
bias (what ONNX Runtime fuses into a Gemm). A Conv read only by a BatchNormalization has the normalisation
folded in first, as ONNX Runtime's pre-processing and onnx2tf fold it: the folded weights are the ones rounded.
Constant-node weights become initializers (converters/onnx_prep does the same before quantizing).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from converters.graphs import attr, fresh_name, tensor_names
from edgemm.samples import model_ranks, sample

SAMPLES = 64  # the input means settle long before; each sample is one float run of the model


@dataclasses.dataclass
class _Layer:
    node: object  # Conv, Gemm or MatMul
    norm: object | None = None  # a BatchNormalization folded into the Conv
    add: object | None = None  # the Add holding a MatMul's bias
    bias: str = ""  # the bias initializer (Conv, Gemm's C, the Add's other input); "" when there is none


def rounded(w: np.ndarray, axis: int | None, reduce_range: bool = False) -> np.ndarray:
    """`w` as quantize_static stores it with WeightSymmetric int8 weights, dequantized: one scale per slice
    along `axis` (per channel) or for the whole tensor (axis None), max|w| / 127 (/ 64 with reduce_range),
    float32 arithmetic and numpy's round-half-to-even as onnxruntime.quantization.quant_utils does."""
    w = np.asarray(w, np.float32)
    qmin, qmax = (-64, 64) if reduce_range else (-127, 127)
    moved = w.reshape(1, -1) if axis is None else np.moveaxis(w, axis, 0)
    flat = moved.reshape(moved.shape[0], -1)
    absmax = np.maximum(-np.minimum(flat.min(1), 0), np.maximum(flat.max(1), 0)).astype(np.float64)
    scale = 2 * absmax / (qmax - qmin)
    scale = np.where(scale < np.finfo(np.float32).tiny, 1.0, scale).astype(np.float32)[:, None]
    q = np.clip(np.round(flat / scale), -128, 127)  # the clip is int8's, not the symmetric range's
    out = (q.astype(np.float32) * scale).reshape(moved.shape)
    return out.reshape(w.shape) if axis is None else np.moveaxis(out, 0, axis)


def correct(source: Path, target: Path, calib: dict[str, np.ndarray], per_channel: bool,
            reduce_range: bool = False, hessian: bool = False, bias: bool = True) -> int:
    """Writes the bias-corrected model to `target`; returns how many layers were corrected (0: `target` is a
    copy of `source`). `per_channel` and `reduce_range` must be those the model will be quantized with.
    hessian: the weights themselves are first rounded to the quantizer's grid by converters/weight_rounding.py
    (the model then holds the rounded weights) and the bias corrects that rounding's error.
    bias=False: no bias correction; the model holds its weights rounded to nearest on the grid (with float
    activations, the share of a quantized model's error that its weights' rounding makes)."""
    import onnx
    from onnx import numpy_helper

    from converters.onnx_prep import constants_to_initializers

    model = onnx.load(str(source))
    graph = model.graph
    constants_to_initializers(graph, model.ir_version)  # as converters/onnx_prep does before quantizing
    layers = _layers(graph)
    if not layers:
        shutil.copyfile(source, target)
        return 0
    hessian = hessian and bias
    means, maps, hessians = _input_means(model, layers, calib, hessian) if bias else ({}, {}, {})
    rounds = hessian or not bias  # the model holds the rounded weights
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    inits = {t.name: t for t in graph.initializer}
    array = {name: numpy_helper.to_array(t) for name, t in inits.items()}
    taken = tensor_names(graph)
    readers = _readers(graph)
    for layer in layers:
        node = layer.node
        w = array[node.input[1]].astype(np.float32)
        if node.op_type == "Conv":
            layer_bias = array[layer.bias].astype(np.float64) if layer.bias else np.zeros(w.shape[0])
            if layer.norm is not None:
                w, layer_bias = _fold(w, layer_bias, [array[n] for n in layer.norm.input[1:5]], layer.norm)
            new = _rounded(w.reshape(len(w), -1), 0 if per_channel else None, reduce_range,
                           hessians.get(id(node))).reshape(w.shape)
            eps = (new - w).astype(np.float64)
            w = new if rounds else w
            mean_map = maps.get(node.input[0])
            if not bias:
                shift = 0.0
            elif mean_map is None:
                shift = _conv_shift(eps, means[(node.input[0], 1)], attr(node, "group", 1))
            else:
                shift = _conv_response(node, eps, mean_map, opset)
            new_bias = layer_bias - shift
        else:
            trans_b = node.op_type == "Gemm" and attr(node, "transB", 0)
            new = _rounded(w if trans_b else w.T, 0 if per_channel else None, reduce_range, hessians.get(id(node)))
            new = new if trans_b else new.T
            eps = (new - w).astype(np.float64)
            w = new if rounds else w
            if not bias:
                _replace(graph, inits, node.input[1], w)
                continue
            shift = means[(node.input[0], _channel_axis(node))] @ (eps.T if trans_b else eps)
            if node.op_type == "Gemm":
                shift *= attr(node, "alpha", 1.0) / attr(node, "beta", 1.0)
            new_bias = array[layer.bias] - shift if layer.bias else -shift  # a scalar or (M, 1) C: per column
        new_bias = new_bias.astype(np.float32)
        if layer.norm is not None or rounds:
            _replace(graph, inits, node.input[1], w)
        if layer.norm is not None:
            node.output[0] = layer.norm.output[0]
        elif not bias:  # nothing to fold and no correction: the bias stays as it is
            continue
        name = layer.bias
        if not name or len(readers.get(name, [])) > 1:  # a shared bias stays as the other readers had it
            name = fresh_name(f"{node.input[1]}_bias_corrected", taken)
            taken.add(name)
            inits[name] = graph.initializer.add()
            if model.ir_version < 4:  # before IR 4 every initializer must also be a graph input
                graph.input.extend([onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, new_bias.shape)])
        _replace(graph, inits, name, new_bias)
        holder = layer.add if layer.add is not None else node
        index = list(holder.input).index(layer.bias) if layer.bias else 2
        while len(holder.input) <= index:
            holder.input.append("")
        holder.input[index] = name
    _drop_norms(graph, [layer for layer in layers if layer.norm is not None], readers)
    onnx.save(model, str(target))
    return len(layers)


def _rounded(w: np.ndarray, axis: int | None, reduce_range: bool, hessian: np.ndarray | None) -> np.ndarray:
    """A layer's weights (outputs, inputs) as the quantizer rounds them (`rounded`), or, given the layer's
    E[x x^T] per group (groups, inputs, inputs), as converters/weight_rounding.py rounds them to the same grid."""
    grid = rounded(w, axis, reduce_range)
    if hessian is None:
        return grid
    from converters import weight_rounding

    return weight_rounding.on_grid(w, hessian, grid, axis, 64 if reduce_range else 127)


def _readers(graph) -> dict[str, list]:
    """Tensor -> the nodes that read it, once per input slot, subgraphs (If, Loop, Scan bodies) included."""
    readers: dict[str, list] = {}

    def visit(g) -> None:
        for node in g.node:
            for name in node.input:
                readers.setdefault(name, []).append(node)
            for a in node.attribute:
                for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                    visit(sub)

    visit(graph)
    return readers


def _layers(graph) -> list[_Layer]:
    readers = _readers(graph)
    floats = {t.name for t in graph.initializer if t.data_type == 1}  # TensorProto.FLOAT
    dims = {t.name: tuple(t.dims) for t in graph.initializer}
    inputs = {i.name for i in graph.input}  # an initializer that is also an input can be replaced at run time
    outputs = {o.name for o in graph.output}
    constant = floats - inputs

    def own(name: str, node) -> bool:
        return name in constant and readers.get(name) == [node]

    def only_reader(tensor: str):
        nodes = readers.get(tensor, [])
        return nodes[0] if len(nodes) == 1 and tensor not in outputs else None

    layers = []
    for node in graph.node:
        if node.domain not in ("", "ai.onnx") or len(node.input) < 2 or node.input[0] in dims:
            continue
        weight = node.input[1]
        if not own(weight, node) or 0 in dims[weight]:
            continue
        bias = node.input[2] if len(node.input) > 2 else ""
        if bias and bias not in constant:
            continue
        if node.op_type == "Conv" and len(dims[weight]) >= 3:
            after = only_reader(node.output[0])
            if after is not None and after.op_type == "Mul" and any(i in dims for i in after.input):
                continue  # ONNX Runtime folds a constant Mul into the weights, which then round differently
            norm = after if after is not None and after.op_type == "BatchNormalization" else None
            if norm is not None and not _foldable(norm, constant, dims, dims[weight][0]):
                norm = None
            layers.append(_Layer(node, norm, None, bias))
        elif node.op_type == "Gemm" and len(dims[weight]) == 2 and attr(node, "beta", 1.0) != 0:
            layers.append(_Layer(node, None, None, bias))
        elif node.op_type == "MatMul" and len(dims[weight]) == 2:
            add = only_reader(node.output[0])
            if add is None or add.op_type != "Add":
                continue
            other = next((i for i in add.input if i != node.output[0]), "")
            shape = dims.get(other)
            n = dims[weight][1]
            if other in constant and shape is not None and len(shape) >= 1 and shape[-1] in (1, n) \
                    and all(d == 1 for d in shape[:-1]):
                layers.append(_Layer(node, None, add, other))
    return layers


def _foldable(norm, constant: set[str], dims: dict, channels: int) -> bool:
    return (len(norm.input) == 5 and all(n in constant and dims[n] == (channels,) for n in norm.input[1:5])
            and len(norm.output) == 1 and not attr(norm, "training_mode", 0) and attr(norm, "spatial", 1) == 1)


def _fold(w: np.ndarray, bias: np.ndarray, params: list[np.ndarray], norm) -> tuple[np.ndarray, np.ndarray]:
    scale, beta, mean, var = (np.asarray(p, np.float64).reshape(-1) for p in params)
    s = scale / np.sqrt(var + attr(norm, "epsilon", 1e-5))
    folded = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(np.float32)
    return folded, (bias - mean) * s + beta


def _drop_norms(graph, folded: list[_Layer], readers: dict) -> None:
    """Removes the folded BatchNormalizations, the tensors between them and their Conv, and their parameters
    where nothing else reads them. Last: rebuilding a repeated field detaches the messages held elsewhere."""
    between = {layer.norm.input[0] for layer in folded}
    params = {n for layer in folded for n in layer.norm.input[1:5] if len(readers.get(n, [])) == 1}
    nodes = [n for n in graph.node if not (n.op_type == "BatchNormalization" and n.input[0] in between)]
    for field, kept in ((graph.node, nodes), (graph.value_info, [v for v in graph.value_info if v.name not in between]),
                        (graph.initializer, [t for t in graph.initializer if t.name not in params]),
                        (graph.input, [v for v in graph.input if v.name not in params])):
        if len(kept) != len(field):
            kept = [type(m).FromString(m.SerializeToString()) for m in kept]
            del field[:]
            field.extend(kept)


def _conv_shift(eps: np.ndarray, mean: np.ndarray, group: int) -> np.ndarray:
    """Per output channel, sum over its input channels and kernel taps of eps times the channel's mean."""
    out, per_group = eps.shape[0], eps.shape[1]
    taps = eps.reshape(out, per_group, -1).sum(2)
    means = mean.reshape(group, per_group)[np.arange(out) // (out // group)]
    return (taps * means).sum(1)


def _conv_response(node, eps: np.ndarray, mean_map: np.ndarray, opset: int) -> np.ndarray:
    """Per output channel, the mean over positions of the Conv of the mean input with eps as its weights: the
    shift with the zero padding counted (the border outputs see fewer inputs; on the small maps of the last
    layers of a mobile network they are most of the outputs)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    conv = helper.make_node("Conv", ["x", "eps"], ["y"])
    conv.attribute.extend(node.attribute)
    graph = helper.make_graph([conv], "shift", [helper.make_tensor_value_info("x", TensorProto.FLOAT, mean_map.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(eps.astype(np.float32), "eps")])
    opsets = [helper.make_opsetid("", max(opset, 11))]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"x": mean_map.astype(np.float32)})[0].astype(np.float64)
    return y.mean(axis=(0, *range(2, y.ndim)))


def _replace(graph, inits: dict, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    inits[name].CopyFrom(numpy_helper.from_array(np.asarray(value, np.float32), name))


def _channel_axis(node) -> int:
    """The axis of a layer's input that its weights reduce."""
    if node.op_type == "Conv":
        return 1
    return (0 if attr(node, "transA", 0) else 1) if node.op_type == "Gemm" else -1


def _input_means(model, layers: list[_Layer], calib: dict[str, np.ndarray],
                 hessian: bool = False) -> tuple[dict, dict, dict]:
    """Each layer input's mean per input channel, by (tensor, _channel_axis), over up to SAMPLES calibration
    samples spread over the set and over every other axis; and each Conv input's mean over the samples and the
    batch alone, (1, C, ...), where every sample gives it the same shape. With `hessian`, also each layer's
    E[x x^T] per group by id(node) (converters/weight_rounding.py), for the layers whose matrices fit in
    weight_rounding.MAX_HESSIAN_BYTES together (the others keep nearest rounding).

    The inputs are extra outputs of the float model that keep their shapes: the channel axis of a tensor
    whose batch axis is not 1 cannot be found in qdq_loss_debug's flattened copies (layer_error)."""
    import onnx
    import onnxruntime as ort

    keys = {(layer.node.input[0], _channel_axis(layer.node)) for layer in layers}
    convs = {layer.node.input[0] for layer in layers if layer.node.op_type == "Conv"}
    feeds = {i.name for i in model.graph.input}
    fetched = sorted({name for name, _ in keys} - feeds)
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    present = {o.name for o in augmented.graph.output}
    augmented.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                                  for n in fetched if n not in present)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(augmented.SerializeToString(), options, providers=["CPUExecutionProvider"])
    ranks = model_ranks(session.get_inputs())
    arrays = {k: v for k, v in calib.items() if k in ranks}
    count = len(next(iter(arrays.values())))
    picks = np.unique(np.linspace(0, count - 1, min(SAMPLES, count)).round().astype(int))
    hessians: dict[int, tuple] = {}
    sums = {key: 0.0 for key in keys}
    maps: dict[str, np.ndarray | None] = {}
    products = _hessian_layers(model, layers) if hessian else {}
    for i in picks:
        feed = sample(arrays, int(i), ranks)
        values = feed | (dict(zip(fetched, session.run(fetched, feed), strict=True)) if fetched else {})
        for layer, inputs in products.values():
            x = inputs(np.asarray(values[layer.node.input[0]], np.float64))
            layer_sums = hessians.get(id(layer.node), (0.0, 0))
            by_group = x.transpose(1, 0, 2)  # (groups, rows, inputs): one BLAS product per group
            hessians[id(layer.node)] = (layer_sums[0] + by_group.transpose(0, 2, 1) @ by_group, layer_sums[1] + len(x))
        for name in convs:
            mean = np.asarray(values[name], np.float64).mean(0, keepdims=True)
            if name not in maps:
                maps[name] = mean
            elif maps[name] is not None:
                maps[name] = maps[name] + mean if maps[name].shape == mean.shape else None
        for name, axis in keys:
            value = np.moveaxis(np.asarray(values[name], np.float64), axis, -1)
            sums[(name, axis)] = sums[(name, axis)] + value.reshape(-1, value.shape[-1]).mean(0)
    return ({key: total / len(picks) for key, total in sums.items()},
            {name: total / len(picks) for name, total in maps.items() if total is not None},
            {key: total / max(n, 1) for key, (total, n) in hessians.items()})


def _hessian_layers(model, layers: list[_Layer]) -> dict[int, tuple]:
    """id(node) -> (layer, x -> its inputs as (rows, groups, inputs)) for the layers weight_rounding rounds:
    Conv with explicit pads, Gemm, MatMul, while their E[x x^T] fit in MAX_HESSIAN_BYTES."""
    from functools import partial

    from converters import weight_rounding

    dims = {t.name: tuple(t.dims) for t in model.graph.initializer}
    chosen, budget = {}, weight_rounding.MAX_HESSIAN_BYTES
    for layer in layers:
        node, shape = layer.node, dims[layer.node.input[1]]
        if node.op_type == "Conv":
            if attr(node, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
                continue
            group = attr(node, "group", 1)
            inputs, size = partial(weight_rounding.patches, node, kernel=shape[2:], group=group), int(np.prod(shape[1:]))
        else:
            inputs = partial(weight_rounding.rows, axis=_channel_axis(node))
            group, size = 1, shape[0] if node.op_type == "MatMul" or not attr(node, "transB", 0) else shape[1]
        if group * size * size * 8 <= budget:
            budget -= group * size * size * 8
            chosen[id(node)] = (layer, inputs)
    return chosen
