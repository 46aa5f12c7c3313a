"""Short names for what ONNX Runtime's QDQ quantizer adds to a model.

quantize_static names each tensor it adds after the float tensor it stands for: `X_QuantizeLinear_Output`,
`X_DequantizeLinear_Output`, `X_scale`, `X_zero_point`, `W_quantized`. Exporters' float names are long
(tf2onnx: `StatefulPartitionedCall/model_1/conv2d_1/BiasAdd_weights_fused_bn`) and a QDQ model repeats each one
up to ten times: on a small model with many ops the names outweigh the int8 weights and the int8 ONNX is
larger than the float one (basic-pitch: 205 KiB of names in a 309 KiB int8 ONNX, float ONNX 201 KiB).

compact() renames, and changes nothing the model computes:
- each DequantizeLinear output takes the float tensor's own name (the layers behind it read the tensor they
  read in the float model, as in Netron or a TensorRT error message), the tensor before its QuantizeLinear
  takes a short one;
- the quantizer's other tensors (int8 weights, scales, zero points, QuantizeLinear outputs) and its Q/DQ
  nodes get short names: `q12`, `DQ40`.
Graph inputs and outputs keep their names. Models with subgraphs (If, Loop) are left as they are: an outer
tensor can be read inside one by name.

Not onnx.compose.add_prefix or an optimizer's renaming: those rename every name, the float ones included.
"""

from __future__ import annotations

import itertools
import re

_QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
# The names quantize_static gives what it adds (onnxruntime.quantization: quant_utils, base_quantizer).
_GENERATED = re.compile(
    r"(_quantized|_scale|_zero_point|_QuantizeLinear_(Input|Output)|_DequantizeLinear_Output(_\d+)?)$")


def has_subgraphs(graph) -> bool:
    import onnx

    graphs = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
    return any(a.type in graphs for n in graph.node for a in n.attribute)


def compact(model) -> int:
    """Renames in place (see the module docstring); returns how many tensor names changed."""
    graph = model.graph
    if has_subgraphs(graph):
        return 0
    keep = {v.name for v in graph.input} | {v.name for v in graph.output}
    initializers = {t.name for t in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    used = keep | initializers | {t for n in graph.node for t in (*n.input, *n.output)}
    counter = itertools.count()

    def short(prefix: str, taken: set[str]) -> str:
        while (name := f"{prefix}{next(counter)}") in taken:
            pass
        taken.add(name)
        return name

    rename: dict[str, str] = {}
    claimed: set[str] = set()  # float names given to dequantized tensors
    for node in graph.node:  # each dequantized tensor takes the float tensor's name
        if node.op_type != "DequantizeLinear" or node.output[0] in keep or node.output[0] in rename:
            continue
        source = node.input[0]
        if source in initializers and source.endswith("_quantized"):  # a weight: W is no longer in the graph
            name = source[: -len("_quantized")]
            if name in used or name in claimed:
                continue
        elif source in producer and producer[source].op_type == "QuantizeLinear":  # an activation X -> Q -> DQ
            name = producer[source].input[0]
            if name in keep or name in rename or name in initializers:
                continue
            rename[name] = short("q", used)
        else:
            continue
        rename[node.output[0]] = name
        claimed.add(name)
    for node in graph.node:  # what else the quantizer added
        if node.op_type in _QDQ_OPS:
            for name in (*node.input, *node.output):
                if name and name not in keep and name not in rename and _GENERATED.search(name):
                    rename[name] = short("q", used)

    def renamed(name: str) -> str:
        return rename.get(name, name)

    node_names = {n.name for n in graph.node}
    for node in graph.node:
        node.input[:] = [renamed(t) for t in node.input]
        node.output[:] = [renamed(t) for t in node.output]
        if node.op_type in _QDQ_OPS:
            node.name = short("DQ" if node.op_type == "DequantizeLinear" else "Q", node_names)
    for tensor in graph.initializer:
        tensor.name = renamed(tensor.name)
    for info in graph.value_info:
        info.name = renamed(info.name)
    return len(rename)
