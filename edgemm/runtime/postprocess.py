"""From model output to a decision: probabilities, temporal smoothing, top-k, change detection."""

from __future__ import annotations

import dataclasses

import numpy as np


def to_probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax unless the output already is a probability distribution (softmax head)."""
    x = np.asarray(scores, np.float32).reshape(-1)
    total = float(x.sum())
    if abs(total - 1.0) < 0.02 and float(x.min()) >= -1e-3:
        return x
    e = np.exp(x - x.max())
    return e / e.sum()


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

    def __init__(self, labels: tuple[str, ...], alpha: float = 0.5, threshold: float = 0.5, top_k: int = 3):
        self.labels, self.alpha, self.threshold, self.top_k = labels, alpha, threshold, top_k
        self._state: np.ndarray | None = None
        self._current: int | None = None

    def update(self, scores: np.ndarray) -> Decision:
        p = to_probabilities(scores)
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
        top = [(self.labels[i], round(float(state[i]), 4)) for i in order.tolist()]
        return Decision(self.labels[best], best, float(state[best]), top, changed)
