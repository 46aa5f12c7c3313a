"""Walking a model graph from tensor to node to tensor, for either format (ONNX nodes, TFLite operators)."""

from __future__ import annotations

from collections.abc import Callable, Iterable


def walk(start: Iterable, neighbours: Callable[[object], list], onward: Callable[[object], Iterable]) -> list:
    """The nodes reached from the tensors `start`: neighbours(tensor) are the nodes met at a tensor,
    onward(node) the tensors to go on from; each node once, in the order met."""
    found: dict[int, object] = {}  # by id: node names may be empty, operators are not hashable
    wanted = list(start)
    while wanted:
        for node in neighbours(wanted.pop()):
            if id(node) not in found:
                found[id(node)] = node
                wanted.extend(onward(node))
    return list(found.values())


def attr(node, name: str, default):
    """An ONNX node's attribute by name, as a Python value; `default` when the node does not set it."""
    from onnx import helper

    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def fresh_name(name: str, taken: set[str]) -> str:
    """`name`, or `name_1`, `name_2`... : the first not in `taken` (every tensor name of the graph)."""
    candidate, k = name, 1
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    return candidate


def tensor_names(graph) -> set[str]:
    """Every name an ONNX graph gives a tensor: inputs, outputs, initializers, node outputs, value_info."""
    return ({i.name for i in graph.input} | {o.name for o in graph.output} | {i.name for i in graph.initializer}
            | {o for n in graph.node for o in n.output} | {v.name for v in graph.value_info})
