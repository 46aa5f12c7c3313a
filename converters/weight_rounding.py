"""Hessian-aware rounding of weights to the int8 grid (GPTQ: Frantar et al., "GPTQ: Accurate Post-Training
Quantization for Generative Pre-trained Transformers", 2023, algorithm 1; the Optimal Brain Quantizer update).

Rounding each weight to the nearest int8 level treats the errors of a layer's weights as independent, but
they add up in its output: y = W x. GPTQ rounds the weights of each output channel one input at a time and
moves the weights not rounded yet so that the output error on the calibration inputs, E[((W' - W) x)^2] =
(W' - W) H (W' - W)^T with H = E[x x^T], stays smallest. The result is a float model whose weights lie exactly
on the quantizer's grid (converters/bias_correction.py `rounded`: max|w| / 127 per channel or per tensor),
so any converter that computes that grid stores exactly these weights: ONNX Runtime's quantize_static here,
and TFLite's symmetric int8 weights when they have the same granularity. Each grid's largest weight is kept
at its end (+-127 steps) so that the quantizer computes the same scale.

Measured on openWakeWord's embedding (20 Conv layers; 64 calibration samples, SQNR on 300 held-out
samples with float activations): nearest rounding 22.6 dB, this rounding 38.3 dB. AdaRound (Nagel et al.
2020) learns the same choice by gradient descent; GPTQ's closed-form update needs no training loop and runs
in seconds here, hence this one.

For a Conv the inputs x are the patches its kernel sees (im2col), per group; for Gemm/MatMul the rows of its
input. H is accumulated on the float model's layer inputs.
"""

from __future__ import annotations

import numpy as np

from converters.graphs import attr

DAMPING = 0.01  # GPTQ's: a fraction of H's mean diagonal added to it, so that its inverse is well defined
MAX_HESSIAN_BYTES = 1 << 30  # the layers' H matrices held at once; layers beyond keep nearest rounding
ROWS_PER_SAMPLE = 4096  # input rows (Conv positions) per sample that H is estimated from, evenly spaced: a
# DNSMOS Conv sees 145,000 positions of 1152 inputs per sample (1.3 GB, 190 GFLOP); 40 samples of 4096 rows
# estimate its 1152 x 1152 H well, and smaller inputs (openWakeWord: 2432 positions) keep every row


def patches(node, x: np.ndarray, kernel: tuple[int, ...], group: int) -> np.ndarray:
    """The inputs a Conv `node` multiplies with its kernel, (positions, group, channels per group * taps), in
    the order of its weights' (channel, tap...) axes, at most ROWS_PER_SAMPLE positions (evenly spaced).
    `x` is (N, C, spatial...); explicit pads only."""
    from numpy.lib.stride_tricks import sliding_window_view

    d = len(kernel)
    pads = list(attr(node, "pads", [0] * 2 * d))
    strides, dilations = list(attr(node, "strides", [1] * d)), list(attr(node, "dilations", [1] * d))
    x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + d]) for i in range(d)])
    span = [(k - 1) * dl + 1 for k, dl in zip(kernel, dilations, strict=True)]
    windows = sliding_window_view(x, span, axis=tuple(range(2, 2 + d)))  # (N, C, out..., span...)
    windows = windows[(slice(None), slice(None), *(slice(None, None, s) for s in strides),
                       *(slice(None, None, dl) for dl in dilations))]
    windows = np.moveaxis(windows, 1, 1 + d)  # (N, out..., C, kernel...)
    positions = windows.shape[:1 + d]
    windows = windows[np.unravel_index(_spread(int(np.prod(positions))), positions)]  # copies only those
    return windows.reshape(-1, group, x.shape[1] // group * int(np.prod(kernel)))


def rows(x: np.ndarray, axis: int) -> np.ndarray:
    """A Gemm/MatMul input as (rows, 1 group, the axis its weights reduce), at most ROWS_PER_SAMPLE rows."""
    moved = np.moveaxis(x, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    return flat[_spread(len(flat))][:, None, :]


def _spread(count: int) -> np.ndarray:
    """Up to ROWS_PER_SAMPLE indices evenly spaced over range(count)."""
    return np.unique(np.linspace(0, count - 1, min(count, ROWS_PER_SAMPLE)).round().astype(int))


def gptq(w: np.ndarray, h: np.ndarray, scale: np.ndarray, qmax: int) -> np.ndarray:
    """`w` (outputs, inputs) rounded to multiples of `scale` (one per output, or one for all) within +-qmax
    steps, each input column in turn, the columns not rounded yet updated to carry its error (GPTQ).
    `h` (inputs, inputs): E[x x^T] of the layer's inputs."""
    w = np.array(w, np.float64)
    scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (w.shape[0],))
    h = np.array(h, np.float64)
    dead = np.diag(h) == 0  # an input that is always zero: its weights do not matter
    h[dead, dead] = 1.0
    h += DAMPING * np.mean(np.diag(h)) * np.eye(len(h))
    upper = np.linalg.cholesky(np.linalg.inv(h)).T  # H^-1 = U^T U: row i holds the updates for column i
    q = np.empty_like(w)
    for i in range(w.shape[1]):
        q[:, i] = np.clip(np.round(w[:, i] / scale), -qmax, qmax) * scale
        error = (w[:, i] - q[:, i]) / upper[i, i]
        w[:, i + 1:] -= np.outer(error, upper[i, i + 1:])
    return q


def on_grid(w: np.ndarray, hessians: np.ndarray, grid: np.ndarray, axis: int | None, qmax: int) -> np.ndarray:
    """`w` (outputs, inputs) rounded by gptq to the grid nearest rounding gives it (`grid`: `w` rounded, whose
    per-row (axis 0) or whole (axis None) max|.| / qmax is the step), group by group (`hessians`: E[x x^T]
    per group of outputs, as a grouped Conv splits them), keeping each grid's largest weight at +-qmax steps so
    that the quantizer computes the same step again."""
    w, grid = np.asarray(w, np.float64), np.asarray(grid, np.float64)
    absmax = np.abs(grid).max(axis=1) if axis == 0 else np.full(len(grid), np.abs(grid).max())
    step = np.where(absmax > 0, absmax / qmax, 1.0)
    per_group = len(w) // len(hessians)
    q = np.concatenate([gptq(w[g * per_group:(g + 1) * per_group], h, step[g * per_group:(g + 1) * per_group], qmax)
                        for g, h in enumerate(hessians)])
    ends = ((np.arange(len(w)), np.abs(w).argmax(axis=1)) if axis == 0
            else np.unravel_index(np.abs(w).argmax(), w.shape))
    q[ends] = grid[ends]
    return (np.round(q / step[:, None]) * step[:, None]).astype(np.float32)
