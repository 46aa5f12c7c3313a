"""Sample-level audio helpers shared by the microphone, WAV files and the feature transform:
PCM to float, polyphase resampling, fitting a clip into a window. Pure numpy (the device runtime has
no scipy/librosa; a Kaiser-windowed sinc polyphase filter is a few lines)."""

from __future__ import annotations

import functools
import math

import numpy as np

from edgemm.errors import InputError


def to_float_audio(samples: np.ndarray) -> np.ndarray:
    """Integer PCM or float samples, mono or (n, channels), to mono float32 in [-1, 1]."""
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1) if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64).mean(axis=1)
    if x.ndim != 1:
        raise InputError(f"audio must be 1-D or (samples, channels), got shape {np.shape(samples)}")
    if np.issubdtype(np.asarray(samples).dtype, np.integer):
        info = np.iinfo(np.asarray(samples).dtype)
        scale = float(max(-info.min, info.max))
        offset = 0.0 if info.min < 0 else (info.max + 1) / 2.0
        return ((x.astype(np.float64) - offset) / scale).astype(np.float32)
    return x.astype(np.float32)


@functools.lru_cache(maxsize=16)
def _resample_filter(up: int, down: int) -> tuple[np.ndarray, int]:
    """Kaiser-windowed sinc low-pass for a rational resampling by up/down."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    n = np.arange(-half_len, half_len + 1, dtype=np.float64)
    cutoff = 1.0 / max_rate  # relative to the Nyquist rate of the upsampled signal
    taps = cutoff * np.sinc(cutoff * n) * np.kaiser(n.size, 5.0)
    taps *= up / taps.sum()  # unit DC gain after zero insertion
    return taps, half_len


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling of a mono float signal from orig_rate to target_rate Hz."""
    x = np.asarray(samples, dtype=np.float32)
    if orig_rate <= 0 or target_rate <= 0:
        raise InputError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    if orig_rate == target_rate or x.size == 0:
        return x.copy()
    g = math.gcd(int(orig_rate), int(target_rate))
    up, down = int(target_rate) // g, int(orig_rate) // g
    taps, half_len = _resample_filter(up, down)
    n_taps_per_phase = -(-taps.size // up)
    # phases[p, t] = taps[p + up * t]: the taps that meet real (non-inserted) samples.
    phases = np.zeros(up * n_taps_per_phase)
    phases[: taps.size] = taps
    phases = phases.reshape(n_taps_per_phase, up).T.astype(np.float32)
    n_out = -(-x.size * up // down)
    # Output k is taken at position j = k * down + half_len of the zero-stuffed
    # signal: phase j % up, newest input sample j // up.
    j = np.arange(n_out, dtype=np.int64) * down + half_len
    if up <= 8:  # few phases (8k->16k, 48k->16k): one short convolution per phase
        per_phase = np.stack([np.convolve(x, phases[p]) for p in range(up)])
        return per_phase[j % up, j // up].astype(np.float32)
    padded = np.concatenate(
        [np.zeros(n_taps_per_phase, np.float32), x, np.zeros(n_taps_per_phase + 1, np.float32)]
    )
    out = np.empty(n_out, np.float32)
    lags = np.arange(n_taps_per_phase)
    block = 32768  # bounds memory on long recordings
    for start in range(0, n_out, block):
        jb = j[start : start + block]
        idx = (jb // up)[:, None] - lags[None, :] + n_taps_per_phase
        out[start : start + jb.size] = np.einsum("kt,kt->k", phases[jb % up], padded[idx])
    return out


def resample_blocks(read, n_in: int, orig_rate: int, target_rate: int, block: int = 1 << 18):
    """Yields `resample(read(0, n_in), orig_rate, target_rate)` block by block, with memory bounded by a block.

    read(start, stop) returns input samples [start, stop). Each block is resampled with enough input on
    either side to cover the filter, cut where input and output sample times coincide (multiples of
    `down` inputs), and trimmed, so the blocks join into exactly the whole-signal result.
    """
    if orig_rate == target_rate:
        for a in range(0, n_in, block):
            yield read(a, min(n_in, a + block))
        return
    g = math.gcd(int(orig_rate), int(target_rate))
    up, down = int(target_rate) // g, int(orig_rate) // g
    _, half_len = _resample_filter(up, down)
    pad = -(-(half_len // up + 2) // down) * down  # the filter's reach in input samples, whole periods of `down`
    step = max(down, block // down * down)
    for a in range(0, n_in, step):
        b = min(n_in, a + step)
        lo, hi = max(0, a - pad), min(n_in, b + pad)
        y = resample(read(lo, hi), orig_rate, target_rate)
        first = (a - lo) * up // down
        yield y[first : first + (-(-b * up // down) - a * up // down)]


def fit_window(samples: np.ndarray, length: int, offset: int | None = None) -> np.ndarray:
    """Pads or crops a clip to `length` samples.

    A shorter clip is placed at `offset` (default: centred) in silence; a
    longer one is cropped around its centre.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.size >= length:
        start = (x.size - length) // 2
        return x[start : start + length].copy()
    out = np.zeros(length, np.float32)
    if offset is None:
        offset = (length - x.size) // 2
    offset = int(np.clip(offset, 0, length - x.size))
    out[offset : offset + x.size] = x
    return out
