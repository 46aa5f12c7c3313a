"""Activation ranges chosen per tensor by measured error (`--method auto`).

Min/max calibration lets one rare large value stretch an int8 tensor's range: every other value then gets
fewer of the 255 levels. Clipping the range trades that rounding error for a clipping error on the rare
values. Which trade is better differs from tensor to tensor, so each tensor gets the candidate range with
the smallest quantization error on calibration samples that did not choose the candidates:

  minmax      the observed minimum and maximum
  percentile  the 0.01 % and 99.99 % quantiles
  entropy     the KL-divergence threshold (TensorRT's method; ONNX Runtime's implementation)
  mse         the clipping of the min/max range that minimises the mean squared error

The calibration samples are split: the first part (fit) gives each tensor's candidates, the rest (held-out)
measures them. Both are summarised as histograms over the tensor's full range, so memory does not grow with
the number of samples.

A tensor's own error is not the model's: clipping one channel that carries the decision lowers the tensor's
squared error and ruins the output (a test builds such a model). So the whole model quantized with the
chosen ranges is compared with the model quantized with min/max ranges on the held-out samples (SQNR of its
outputs against the float model's), and the better one is kept. Graph inputs and outputs keep their min/max range: clipping a classifier's top logit
can change its decision, and the input range is what the caller's data has.

The same choice serves both formats: ONNX (TensorQuantOverrides of ONNX Runtime's quantizer) and TFLite (the
calibration statistics of the TFLite converter's calibrated model, converters/tflite_ranges.py).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import numpy as np

CANDIDATES = ("minmax", "percentile", "entropy", "mse")
BINS = 2048  # per histogram
ENTROPY_COARSENING = 4  # the entropy search sees BINS / 4 bins
LEVELS = 255  # int8 activations
PERCENTILE = 99.99
HELD_OUT = 0.25  # fraction of the calibration samples that measures the candidates
# Samples the choice looks at (spread over the calibration set): each holds thousands of values per tensor,
# so 128 give stable quantiles, and the two passes cost 128 runs of the model each, not 300.
MAX_SAMPLES = 128


@dataclasses.dataclass
class Histogram:
    """Counts of one tensor's values over fixed edges, for the fit and the held-out samples."""

    edges: np.ndarray
    fit: np.ndarray
    held_out: np.ndarray
    low: float = 0.0  # the exact extremes seen (bin edges are up to a bin away: a ReLU's 0 must stay 0)
    high: float = 0.0

    @property
    def centers(self) -> np.ndarray:
        return (self.edges[:-1] + self.edges[1:]) / 2


@dataclasses.dataclass(frozen=True)
class Choice:
    low: float
    high: float
    method: str
    error: float  # mean squared quantization error of this range on the held-out samples
    minmax_error: float  # the same for the min/max range


def split(count: int) -> tuple[range, range]:
    """Fit and held-out sample indices (one sample: it is both)."""
    held = max(1, int(round(count * HELD_OUT))) if count > 1 else 0
    fit = range(0, count - held)
    return fit, (range(count - held, count) if held else fit)


def sample_indices(count: int) -> np.ndarray:
    """The calibration samples the choice looks at: at most MAX_SAMPLES, spread over the set."""
    return np.unique(np.linspace(0, count - 1, min(count, MAX_SAMPLES)).round().astype(int))


def held_out_samples(count: int) -> np.ndarray:
    """Of `count` calibration samples, those that measured the candidates (and that compare whole models)."""
    samples = sample_indices(count)
    return samples[list(split(len(samples))[1])]


def output_error_db(reference: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> float:
    """A quantized model's outputs against the float model's: the worst output's SQNR in dB."""
    from converters.metrics import sqnr_db

    return min(sqnr_db(reference[name], test[name]) for name in reference)


def histograms(run: Callable[[int], dict[str, np.ndarray]], names: Iterable[str], count: int,
               progress: Callable[[int, int], None] | None = None) -> dict[str, Histogram]:
    """Two passes over `count` samples (at most MAX_SAMPLES of them): `run(i)` returns sample i's tensors by
    name. The first pass finds each tensor's range (symmetric around 0, so the entropy search has 0 at its
    centre bin), the second counts."""
    names = list(names)
    low, high = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    samples = sample_indices(count)
    count = len(samples)
    for i in range(count):
        for name, value in run(samples[i]).items():
            if name in low and value.size:
                low[name] = min(low[name], float(value.min()))
                high[name] = max(high[name], float(value.max()))
        if progress is not None:
            progress(i + 1, 2 * count)
    fit, held = split(count)
    result = {}
    for name in names:
        m = max(-low[name], high[name]) or 1e-8
        result[name] = Histogram(np.linspace(-m, m, BINS + 1), np.zeros(BINS), np.zeros(BINS), low[name], high[name])
    for i in range(count):
        for name, value in run(samples[i]).items():
            if name not in result:
                continue
            h = result[name]
            counts = _counts(value, float(h.edges[0]), float(h.edges[-1]))
            if i in fit:
                h.fit += counts
            if i in held:
                h.held_out += counts
        if progress is not None:
            progress(count + i + 1, 2 * count)
    return result


def _counts(value: np.ndarray, low: float, high: float) -> np.ndarray:
    """np.histogram(value, BINS, (low, high)) for values known to lie in the range, 10x faster: one scaled
    index and a bincount (np.histogram spends 0.5 ms a call on checks and float64 copies)."""
    scaled = (value.reshape(-1).astype(np.float32, copy=False) - low) * (BINS / (high - low))
    return np.bincount(np.clip(scaled, 0, BINS - 1).astype(np.intp), minlength=BINS)


def quantization_mse(counts: np.ndarray, centers: np.ndarray, low: float, high: float) -> float:
    """Mean squared error of int8 asymmetric quantization with range [low, high] over a histogram: values
    inside are rounded (uniform error, step^2 / 12), values outside are clipped to the nearest end."""
    total = counts.sum()
    if total == 0:
        return 0.0
    step = (high - low) / LEVELS
    clipped = np.clip(centers, low, high)
    inside = (centers >= low) & (centers <= high)
    error = np.where(inside, step * step / 12.0, (centers - clipped) ** 2)
    return float(np.dot(counts, error) / total)


def _with_zero(low: float, high: float) -> tuple[float, float]:
    """int8 ranges include 0 exactly (zero padding and ReLU outputs must be representable)."""
    return min(low, 0.0), max(high, 0.0)


def _percentile(counts: np.ndarray, edges: np.ndarray) -> tuple[float, float]:
    cumulative = np.cumsum(counts) / max(counts.sum(), 1)
    tail = (100.0 - PERCENTILE) / 100.0
    low = int(np.searchsorted(cumulative, tail, side="left"))
    high = int(np.searchsorted(cumulative, 1.0 - tail, side="left"))
    return float(edges[low]), float(edges[min(high + 1, len(edges) - 1)])


def _entropy(counts: np.ndarray, edges: np.ndarray, quantized_bins: int = 128) -> tuple[float, float]:
    """TensorRT's entropy calibration on a copy of the histogram ENTROPY_COARSENING times coarser: the
    symmetric threshold whose int8 version of the clipped histogram (outliers folded into the end bins,
    merged into `quantized_bins` levels, spread back over the non-empty bins) has the smallest KL divergence
    from it. Written here, vectorised per threshold, because ONNX Runtime's get_entropy_threshold loops in
    Python per level (0.05 s a tensor at 256 bins, a third of the whole range search)."""
    coarse = counts.reshape(-1, ENTROPY_COARSENING).sum(1).astype(np.float64)
    edges = edges[::ENTROPY_COARSENING]
    zero = coarse.size // 2
    best, best_i = np.inf, zero
    for i in range(quantized_bins // 2, zero + 1):
        sliced = coarse[zero - i : zero + i]
        p = sliced.copy()
        p[0] += coarse[: zero - i].sum()
        p[-1] += coarse[zero + i :].sum()
        nonzero = p > 0
        starts = np.arange(quantized_bins) * (p.size // quantized_bins)
        merged = np.add.reduceat(sliced, starts)
        occupied = np.add.reduceat(nonzero.astype(np.float64), starts)
        level = np.divide(merged, occupied, out=np.zeros_like(merged), where=occupied > 0)
        q = np.repeat(level, np.diff(np.append(starts, p.size))) * nonzero
        if q.sum() == 0:
            continue
        p, q = p[nonzero] / p.sum(), q[nonzero] / q.sum()
        divergence = float(np.sum(p * np.log(p / np.maximum(q, 1e-12))))
        if divergence < best:
            best, best_i = divergence, i
    return float(edges[zero - best_i]), float(edges[zero + best_i])


def _mse(counts: np.ndarray, centers: np.ndarray, low: float, high: float) -> tuple[float, float]:
    scales = np.linspace(0.05, 1.0, 96)
    errors = [quantization_mse(counts, centers, s * low, s * high) for s in scales]
    best = scales[int(np.argmin(errors))]
    return best * low, best * high


def choose(h: Histogram, methods: tuple[str, ...] = CANDIDATES) -> Choice:
    """The candidate range (of `methods`) with the smallest error on the held-out histogram (min/max on ties)."""
    centers = h.centers
    low, high = h.low, h.high
    ranges = {"minmax": (low, high)}
    if high > low:
        ranges["percentile"] = _percentile(h.fit, h.edges)
        ranges["entropy"] = _entropy(h.fit, h.edges)
        ranges["mse"] = _mse(h.fit, centers, low, high)
    errors = {}
    for method, (a, b) in ranges.items():
        a, b = _with_zero(max(a, low), min(b, high))
        ranges[method] = (a, b)
        errors[method] = quantization_mse(h.held_out, centers, a, b)
    allowed = [m for m in CANDIDATES if m in methods and m in errors] or ["minmax"]  # a constant: min/max
    method = min(allowed, key=errors.__getitem__)
    a, b = ranges[method]
    return Choice(a, b, method, errors[method], errors["minmax"])


def own_sqnr_db(h: Histogram, error: float) -> float:
    """A tensor's SQNR against its own quantization error (`error`: a Choice's mean squared error), on the
    held-out histogram: how much quantizing this tensor alone costs, as layer_error reports it for ONNX."""
    total = h.held_out.sum()
    power = float(np.dot(h.held_out, h.centers ** 2) / total) if total else 0.0
    return float("inf") if error <= 0 else 10 * float(np.log10(max(power, 1e-30) / error))


def summary(choices: dict[str, Choice]) -> dict:
    """For the report: how often each method won, and the geometric mean over tensors of the chosen range's
    held-out error relative to min/max's (1.0: no better; 0.5: half the squared error)."""
    counts = {m: sum(c.method == m for c in choices.values()) for m in CANDIDATES}
    ratios = [c.error / c.minmax_error for c in choices.values() if c.minmax_error > 0]
    mean = float(np.exp(np.mean(np.log(np.maximum(ratios, 1e-12))))) if ratios else 1.0
    return {"tensors": len(choices), "chosen": counts, "held_out_mse_vs_minmax": round(mean, 4)}
