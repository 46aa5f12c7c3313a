"""A timestamped audio ring buffer: the microphone writes, the inference loop reads windows by time."""

from __future__ import annotations

import threading

import numpy as np


class AudioRing:
    """Mono float32 samples at `rate`, addressed by absolute sample index since the stream began.

    Each write gives the capture time of its last sample; the newest write defines the mapping
    between time and sample index (time of sample n = t_end - (total - n) / rate).
    """

    def __init__(self, rate: int, seconds: float = 4.0, max_gap: float = 0.5):
        self.rate = int(rate)
        self._buf = np.zeros(int(seconds * rate), np.float32)
        self._total = 0  # samples written since the start
        self._t_end: float | None = None  # capture time of sample index `_total`
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self.max_gap = max_gap  # seconds of missing audio after which the hole is filled with silence
        self.overflows = 0  # reported by the source (e.g. PortAudio input overflow)
        self.gaps = 0  # non-monotonic or missing timestamps that were repaired
        self.dropouts = 0  # holes in the stream (e.g. a reopened device) filled with silence

    @property
    def total(self) -> int:
        return self._total

    def _put(self, x: np.ndarray) -> None:
        """Stores samples [total, total + x.size) (only the last buffer-full of them fits)."""
        n, cap = x.size, self._buf.size
        start = self._total % cap
        if n >= cap:
            x, start, n = x[-cap:], (self._total + n - cap) % cap, cap
        first = min(n, cap - start)
        self._buf[start : start + first] = x[:first]
        self._buf[: n - first] = x[first:]

    def write(self, samples: np.ndarray, t_end: float | None) -> None:
        x = np.asarray(samples, np.float32).reshape(-1)
        with self._cond:
            expected = None if self._t_end is None else self._t_end + x.size / self.rate
            if t_end is None or (expected is not None and t_end < self._t_end):
                # missing or going backwards: continue the sample clock instead
                self.gaps += t_end is not None or self._t_end is not None
                t_end = expected if expected is not None else 0.0
            elif expected is not None and t_end - expected > self.max_gap:
                # the stream stopped and came back: the hole becomes silence, so sample indices keep
                # matching capture times across it
                hole = int(round((t_end - expected) * self.rate))
                self._put(np.zeros(min(hole, self._buf.size), np.float32))
                self._total += hole
                self.dropouts += 1
            self._put(x)
            self._total += x.size
            self._t_end = float(t_end)
            self._cond.notify_all()

    def index_at(self, t: float) -> float | None:
        """The (fractional) absolute sample index captured at time t, or None before any audio."""
        with self._lock:
            if self._t_end is None:
                return None
            return self._total - (self._t_end - t) * self.rate

    def time_of(self, index: int) -> float:
        """The capture time of absolute sample `index` (the inverse of index_at)."""
        with self._lock:
            if self._t_end is None:
                return 0.0
            return self._t_end - (self._total - index) / self.rate

    def wait_for(self, index: int, timeout: float) -> bool:
        """Waits until sample `index` has been written (True) or `timeout` passes (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._total >= index, timeout)

    def read(self, start: int, end: int) -> np.ndarray:
        """Samples [start, end); zeros where not (or no longer) in the buffer."""
        out = np.zeros(max(0, end - start), np.float32)
        with self._lock:
            lo = max(start, self._total - self._buf.size, 0)
            hi = min(end, self._total)
            if hi > lo:
                cap = self._buf.size
                idx = np.arange(lo, hi) % cap
                out[lo - start : hi - start] = self._buf[idx]
        return out
