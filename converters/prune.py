"""Structured pruning of Keras functional models: whole channels removed, a smaller model rebuilt.

How channels are tied: every tensor's last axis belongs to a *channel group*.
Conv2D and Dense layers start a new group (their filters/units); layers that keep
channels one-to-one (BatchNormalization, DepthwiseConv2D with depth_multiplier 1,
activations, pooling, dropout, global pooling) pass the group through; `Add`
(and other element-wise merges) ties the groups of its inputs into one, so a
residual's branches lose the same channels; `Concatenate` lays its inputs'
groups side by side; `Flatten` repeats its input's channels once per spatial
position. A group is prunable when every layer that produces it is a Conv2D or
Dense and it does not reach a model output or a layer edgemm does not know.

Importance of a channel: the L1 norm of its filter in every producer, times the
absolute effective scale of the BatchNormalization right after it (gamma /
sqrt(var + eps)), when there is one; summed over tied producers. The lowest
`ratio` of each group is removed (per layer, rounded to a multiple of
`round_to` so kernels stay vector-friendly). The pruned model is rebuilt from
the original's config with the new widths, and every surviving weight copied.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict

import numpy as np

from edgemm.errors import InputError

PASS_THROUGH = (
    "BatchNormalization", "ReLU", "Activation", "LeakyReLU", "ELU", "PReLU", "Dropout", "SpatialDropout2D",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "ZeroPadding2D",
    "Cropping2D", "UpSampling2D", "Identity", "GaussianNoise", "GaussianDropout",
)
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")


class _Groups:
    """Union-find over channel groups; each group has a size and its producer layers."""

    def __init__(self):
        self.parent: list[int] = []
        self.size: list[int] = []
        self.frozen: list[bool] = []

    def new(self, size: int, frozen: bool = False) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        self.frozen.append(frozen)
        return len(self.parent) - 1

    def find(self, g: int) -> int:
        while self.parent[g] != g:
            self.parent[g] = self.parent[self.parent[g]]
            g = self.parent[g]
        return g

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            if self.size[a] != self.size[b]:
                raise InputError(f"cannot tie channel groups of sizes {self.size[a]} and {self.size[b]}")
            self.parent[b] = a
            self.frozen[a] = self.frozen[a] or self.frozen[b]
        return a

    def freeze(self, g: int) -> None:
        self.frozen[self.find(g)] = True


@dataclasses.dataclass
class _Layout:
    """A tensor's last axis: blocks laid side by side (Concatenate); each block is channel groups
    concatenated, repeated once per spatial position when it comes from a Flatten (channels last)."""

    blocks: list[tuple[list[int], int]]  # (group ids, spatial repeat)

    @classmethod
    def of(cls, *groups: int) -> "_Layout":
        return cls([(list(groups), 1)])

    @property
    def plain(self) -> bool:  # one block, not flattened: channels map one to one
        return len(self.blocks) == 1 and self.blocks[0][1] == 1

    @property
    def groups(self) -> list[int]:
        return [g for segs, _ in self.blocks for g in segs]


def _inbound(layer, model) -> list:
    node = layer._inbound_nodes[0]
    return list(node.input_tensors)


@dataclasses.dataclass
class PruningPlan:
    keep: dict[int, np.ndarray]  # group -> sorted kept channel indices
    group_of: dict[str, int]  # producer layer name -> its output group
    layouts: dict[str, _Layout]  # layer name -> layout of its input (for weight slicing)
    groups: _Groups


def _analyse(model):
    from keras import layers as L

    groups = _Groups()
    tensor_layout: dict[int, _Layout] = {}
    group_of: dict[str, int] = {}
    input_layouts: dict[str, list[_Layout]] = {}
    producers: dict[int, list[str]] = defaultdict(list)

    for t in model.inputs:
        tensor_layout[id(t)] = _Layout.of(groups.new(int(t.shape[-1]), frozen=True))
    for layer in model.layers:
        if isinstance(layer, L.InputLayer):
            continue
        if len(layer._inbound_nodes) != 1:
            raise InputError(f"layer {layer.name} is used {len(layer._inbound_nodes)} times; shared layers cannot be pruned")
        ins = [tensor_layout[id(t)] for t in _inbound(layer, model)]
        input_layouts[layer.name] = ins
        kind = type(layer).__name__
        if kind in ("Conv2D", "Dense") and getattr(layer, "groups", 1) == 1:
            g = groups.new(int(layer.kernel.shape[-1]))
            group_of[layer.name] = g
            producers[g].append(layer.name)
            out = _Layout.of(g)
        elif kind == "DepthwiseConv2D" and layer.depth_multiplier == 1 and ins[0].plain:
            out = ins[0]
        elif kind in PASS_THROUGH and ins[0].plain:
            out = ins[0]
        elif kind in MERGES and all(i.plain and len(i.groups) == 1 for i in ins):
            g = ins[0].groups[0]
            for i in ins[1:]:
                g = groups.union(g, i.groups[0])
            out = _Layout.of(g)
        elif kind == "Concatenate" and layer.axis in (-1, len(layer.output.shape) - 1):
            out = _Layout([block for i in ins for block in i.blocks])
        elif kind == "Flatten" and ins[0].plain and len(layer.input.shape) > 2:
            out = _Layout([(ins[0].groups, int(np.prod(layer.input.shape[1:-1])))])
        else:  # unknown layer (or a merge of concatenations): whatever feeds it keeps all its channels
            for i in ins:
                for g in i.groups:
                    groups.freeze(g)
            out = _Layout.of(groups.new(int(layer.output.shape[-1]) if layer.output.shape else 1, frozen=True))
        tensor_layout[id(layer.output)] = out
    for t in model.outputs:
        for g in tensor_layout[id(t)].groups:
            groups.freeze(g)
    return groups, group_of, input_layouts, producers


def _importance(model, groups: _Groups, group_of: dict[str, int]) -> dict[int, np.ndarray]:
    from keras import layers as L

    following_bn = {}
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            src = _inbound(layer, model)[0]
            for name in group_of:
                if model.get_layer(name).output is src:
                    following_bn[name] = layer
    scores: dict[int, np.ndarray] = {}
    for name, g in group_of.items():
        layer = model.get_layer(name)
        kernel = np.asarray(layer.kernel)
        l1 = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0)
        l1 = l1 / (l1.mean() + 1e-12)  # comparable across tied producers
        bn = following_bn.get(name)
        if bn is not None:
            gamma = np.asarray(bn.gamma) if bn.scale else np.ones_like(l1)
            l1 = l1 * np.abs(gamma) / np.sqrt(np.asarray(bn.moving_variance) + bn.epsilon)
        root = groups.find(g)
        scores[root] = scores.get(root, 0) + l1
    return scores


def plan(model, ratio: float, round_to: int = 4, min_channels: int = 4) -> PruningPlan:
    """Which channels of each prunable group survive when `ratio` of them are removed."""
    if not 0.0 <= ratio < 1.0:
        raise InputError(f"prune ratio must be in [0, 1), got {ratio}")
    groups, group_of, layouts, _ = _analyse(model)
    scores = _importance(model, groups, group_of)
    keep = {}
    for root, score in scores.items():
        size = groups.size[root]
        if groups.frozen[root] or ratio == 0.0:
            keep[root] = np.arange(size)
            continue
        n = max(min_channels, int(round(size * (1.0 - ratio) / round_to)) * round_to)
        n = min(size, n)
        keep[root] = np.sort(np.argsort(-score, kind="stable")[:n])
    return PruningPlan(keep=keep, group_of=group_of, layouts=layouts, groups=groups)


def _kept(plan_: PruningPlan, g: int) -> np.ndarray:
    root = plan_.groups.find(g)
    return plan_.keep.get(root, np.arange(plan_.groups.size[root]))


def _input_index(plan_: PruningPlan, layout: _Layout) -> np.ndarray:
    """Indices along the last axis of a (possibly concatenated/flattened) input that survive."""
    parts, base = [], 0
    for segments, spatial in layout.blocks:
        kept, width = [], 0
        for g in segments:
            kept.append(_kept(plan_, g) + width)
            width += plan_.groups.size[plan_.groups.find(g)]
        channels = np.concatenate(kept)
        parts.append(base + (np.arange(spatial)[:, None] * width + channels[None, :]).reshape(-1))
        base += spatial * width
    return np.concatenate(parts)


def apply(model, plan_: PruningPlan):
    """Builds the smaller model and copies the surviving weights into it."""
    import keras

    config = model.get_config()
    new_width = {name: len(_kept(plan_, g)) for name, g in plan_.group_of.items()}
    for layer_cfg in config["layers"]:
        layer_cfg.pop("build_config", None)  # built again from the new input shapes
        name = layer_cfg["config"]["name"]
        if name in new_width:
            key = "filters" if "filters" in layer_cfg["config"] else "units"
            layer_cfg["config"][key] = new_width[name]
    pruned = keras.Model.from_config(config)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kind = type(layer).__name__
        ins = plan_.layouts.get(layer.name, [])
        in_idx = _input_index(plan_, ins[0]) if ins else None
        if kind in ("Conv2D", "Dense"):
            out_idx = _kept(plan_, plan_.group_of[layer.name])
            kernel = weights[0].take(in_idx, axis=-2).take(out_idx, axis=-1)
            new = [kernel] + [w.take(out_idx, axis=-1) for w in weights[1:]]
        elif kind == "DepthwiseConv2D":
            new = [weights[0].take(in_idx, axis=-2)] + [w.take(in_idx, axis=-1) for w in weights[1:]]
        elif kind in ("BatchNormalization", "PReLU"):
            new = [w.take(in_idx, axis=-1) for w in weights]
        else:
            new = weights
        try:
            pruned.get_layer(layer.name).set_weights(new)
        except ValueError as e:
            raise InputError(f"pruning cannot rebuild layer {layer.name} ({kind}): {e}") from None
    return pruned


def prune(model, ratio: float, round_to: int = 4, min_channels: int = 4):
    """Removes `ratio` of the channels of every prunable layer; returns (pruned model, summary)."""
    p = plan(model, ratio, round_to, min_channels)
    pruned = apply(model, p)
    per_layer = {name: [int(p.groups.size[p.groups.find(g)]), int(len(_kept(p, g)))] for name, g in p.group_of.items()}
    return pruned, {"ratio": ratio, "round_to": round_to, "channels": per_layer}
