"""From model outputs to what a user sees, one reader per head.

classify     probabilities, exponential smoothing over inferences, top-k, a line when the decision changes
multilabel   the labels whose probability reaches the threshold, a line when that set changes
raw          shape and summary statistics (embeddings, detector tensors: the user post-processes them,
             e.g. from `edgemm run --outputs FILE.jsonl`)
state        fed back into the model, never shown
"""

from __future__ import annotations

import dataclasses

import numpy as np


def activate(scores: np.ndarray, activation: str, multilabel: bool = False) -> np.ndarray:
    """The output as probabilities: softmax, sigmoid, none, or auto (leave it if it already is)."""
    x = np.asarray(scores, np.float32).reshape(-1)
    if activation == "auto":
        if multilabel:
            activation = "none" if x.size and float(x.min()) >= 0.0 and float(x.max()) <= 1.0 else "sigmoid"
        else:
            looks_like_probabilities = abs(float(x.sum()) - 1.0) < 0.02 and float(x.min()) >= -1e-3
            activation = "none" if looks_like_probabilities else "softmax"
    if activation == "softmax":
        e = np.exp(x - x.max())
        return e / e.sum()
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))
    return x


@dataclasses.dataclass
class Decision:
    label: str
    index: int
    confidence: float  # smoothed probability of the label
    top: list[tuple[str, float]]  # top-k (label, smoothed probability)
    changed: bool  # the smoothed decision differs from the previous one


class Smoother:
    """Exponential moving average of the probabilities over the last inferences.

    `alpha` is the weight of the newest output (1.0 = no smoothing). A decision is
    only announced when its smoothed probability reaches `threshold`.
    """

    def __init__(self, labels: tuple[str, ...], alpha: float = 0.5, threshold: float = 0.5, top_k: int = 3,
                 activation: str = "auto"):
        self.labels, self.alpha, self.threshold, self.top_k = labels, alpha, threshold, top_k
        self.activation = activation
        self._state: np.ndarray | None = None
        self._current: int | None = None

    def update(self, scores: np.ndarray) -> Decision:
        p = activate(scores, self.activation)
        if self._state is None:
            self._state = p.copy()
        else:
            self._state *= 1.0 - self.alpha
            self._state += self.alpha * p
        state = self._state
        order = np.argpartition(-state, self.top_k - 1)[: self.top_k] if state.size > self.top_k else np.arange(state.size)
        order = order[np.argsort(-state[order])]
        best = int(order[0])
        changed = bool(state[best] >= self.threshold) and best != self._current
        if changed:
            self._current = best
        top = [(self._label(i), round(float(state[i]), 4)) for i in order.tolist()]
        return Decision(self._label(best), best, float(state[best]), top, changed)

    def _label(self, i: int) -> str:
        return self.labels[i] if i < len(self.labels) else str(i)


@dataclasses.dataclass
class LabelSet:
    labels: list[tuple[str, float]]  # (label, probability) over the threshold, most probable first
    changed: bool


class MultiLabel:
    """Labels whose (smoothed) probability reaches the threshold; announced when the set changes."""

    def __init__(self, labels: tuple[str, ...], alpha: float = 0.5, threshold: float = 0.5, activation: str = "auto"):
        self.labels, self.alpha, self.threshold, self.activation = labels, alpha, threshold, activation
        self._state: np.ndarray | None = None
        self._current: frozenset[int] = frozenset()

    def update(self, scores: np.ndarray) -> LabelSet:
        p = activate(scores, self.activation, multilabel=True)
        self._state = p.copy() if self._state is None else (1.0 - self.alpha) * self._state + self.alpha * p
        on = np.flatnonzero(self._state >= self.threshold)
        on = on[np.argsort(-self._state[on])]
        active = frozenset(on.tolist())
        changed = active != self._current
        self._current = active
        names = [(self.labels[i] if i < len(self.labels) else str(i), round(float(self._state[i]), 4)) for i in on]
        return LabelSet(names, changed)


def summarize(value: np.ndarray) -> dict:
    """Shape and summary statistics of a raw output."""
    x = np.asarray(value, np.float32)
    flat = x.reshape(-1)
    if flat.size == 0:
        return {"shape": list(x.shape), "size": 0}
    return {"shape": list(x.shape), "min": round(float(flat.min()), 5), "max": round(float(flat.max()), 5),
            "mean": round(float(flat.mean()), 5), "norm": round(float(np.linalg.norm(flat)), 5),
            "argmax": int(flat.argmax())}
