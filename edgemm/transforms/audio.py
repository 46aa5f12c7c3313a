"""Audio front-ends: mono samples to waveform, log-mel or MFCC model inputs; resampling.

Convention "librosa" matches librosa (>= 0.10) and torchaudio, convention "tensorflow" matches
tf.signal.stft + tf.signal.linear_to_mel_weight_matrix, to float rounding. The device runtime has
only numpy, so the window, mel filterbanks, DCT and dB conversion are written here (the tests
check them against librosa); they are cached per parameter set because building a filterbank
costs more than applying it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import numpy as np

from edgemm import config
from edgemm.config import require
from edgemm.errors import InputError

_FEATURES = ("waveform", "logmel", "mfcc")


@dataclasses.dataclass(frozen=True)
class AudioTransform:
    """Mono samples at `sample_rate` to the model's audio input.

    Attributes:
        sample_rate: model rate in Hz. window: seconds of audio the model sees.
        features: "waveform", "logmel" or "mfcc".
        n_fft, win_length (None: n_fft), hop_length (None: win_length // 4): STFT sizes; periodic Hann window.
        center: frames centred on their time (librosa/torchaudio `center`), padded per `pad_mode`
            ("constant", librosa >= 0.10; "reflect", torchaudio).
        convention: "librosa" (window centred in the n_fft frame; mel triangles in Hz) or "tensorflow"
            (tf.signal.stft frames and tf.signal.linear_to_mel_weight_matrix: HTK, mel-domain triangles, no DC).
        n_mels, fmin, fmax (None: sample_rate / 2), mel_scale ("slaney"/"htk"), mel_norm ("slaney"/"none").
        power: 1.0 magnitude, 2.0 power spectrogram.
        log: "db" (power_to_db, or amplitude_to_db when power == 1, with ref, amin, top_db),
            "ln" (natural log of mel + log_offset) or "none".
        n_mfcc: coefficients kept for "mfcc" (orthonormal DCT-II of the log-mel, as librosa.feature.mfcc).
        mean, std: subtracted, then divided by; one value or one per mel bin / MFCC coefficient.
        axes: order of the non-batch input axes: "time" and "mels" ("time" alone for waveform), plus an
            optional size-1 "channel" anywhere.
    """

    sample_rate: int = 16000
    window: float = 1.0
    features: str = "logmel"
    n_fft: int = 2048
    win_length: int | None = None
    hop_length: int | None = None
    center: bool = True
    pad_mode: str = "constant"
    convention: str = "librosa"
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    mel_scale: str = "slaney"
    mel_norm: str = "slaney"
    power: float = 2.0
    log: str = "db"
    ref: float = 1.0
    amin: float = 1e-10
    top_db: float | None = 80.0
    log_offset: float = 1e-6
    n_mfcc: int = 20
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    axes: tuple[str, ...] = ("time", "mels")

    def __post_init__(self) -> None:
        # Lists (or arrays) given in code would make the transform unhashable, and the caches need hashing.
        for name in ("mean", "std"):
            if not np.isscalar(getattr(self, name)):
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "axes", tuple(self.axes))
        self._check_stft()
        self._check_mel()
        self._check_output()

    def _check_stft(self) -> None:
        require(self.sample_rate > 0, "sample_rate must be positive")
        require(self.window > 0 and self.window_samples > 0, "window must be positive")
        require(self.features in _FEATURES, f"features must be one of {', '.join(_FEATURES)}, got {self.features!r}")
        require(self.n_fft > 0, "n_fft must be positive")
        require(self.win_length is None or 0 < self.win_length <= self.n_fft, "win_length must be in (0, n_fft]")
        require(self.hop > 0, "hop_length must be positive")
        require(self.pad_mode in ("constant", "reflect"),
                f"pad_mode must be constant or reflect, got {self.pad_mode!r}")
        require(self.convention in ("librosa", "tensorflow"),
                f"convention must be librosa or tensorflow, got {self.convention!r}")
        if self.features != "waveform":
            require(self.num_frames >= 1, f"window ({self.window_samples} samples) is shorter than one STFT frame")
            # One reflection of the window's own samples must fill the centre padding (librosa needs it too).
            require(not (self.center and self.pad_mode == "reflect") or self.window_samples > self._pad,
                    "pad_mode reflect needs a window longer than n_fft // 2 samples")

    def _check_mel(self) -> None:
        require(self.n_mels > 0, "n_mels must be positive")
        require(0 <= self.fmin < self._fmax <= self.sample_rate / 2, "needs 0 <= fmin < fmax <= sample_rate / 2")
        require(self.mel_scale in ("slaney", "htk"), f"mel_scale must be slaney or htk, got {self.mel_scale!r}")
        require(self.mel_norm in ("slaney", "none"), f"mel_norm must be slaney or none, got {self.mel_norm!r}")
        require(self.convention == "librosa" or (self.mel_scale, self.mel_norm) == ("htk", "none"),
                "convention tensorflow needs mel_scale htk and mel_norm none (tf.signal.linear_to_mel_weight_matrix)")
        require(self.power > 0, "power must be positive")
        require(self.log in ("db", "ln", "none"), f"log must be db, ln or none, got {self.log!r}")
        require(self.log != "db" or self.power in (1.0, 2.0), "log db needs power 1.0 or 2.0")
        require(self.ref > 0 and self.amin > 0 and self.log_offset > 0, "ref, amin and log_offset must be positive")
        require(self.top_db is None or self.top_db >= 0, "top_db must be >= 0 or null")
        require(self.features != "mfcc" or 0 < self.n_mfcc <= self.n_mels, "n_mfcc must be in (0, n_mels]")

    def _check_output(self) -> None:
        base = self._base_axes
        named = sorted(a for a in self.axes if a != "channel")
        require(named == sorted(base) and len(self.axes) - len(named) <= 1,
                f"axes must be a permutation of {', '.join(base)} with an optional channel, got {list(self.axes)}")
        size = self._feature_size
        for name in ("mean", "std"):
            values = np.atleast_1d(np.asarray(getattr(self, name), np.float64))
            require(values.size in (1, size), f"{name} needs 1 or {size} values, got {values.size}")
            require(bool(np.all(np.isfinite(values))), f"{name} must be finite")
        require(bool(np.all(np.asarray(self.std) > 0)), "std must be positive")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "audio") -> "AudioTransform":
        """Builds a transform from a parsed mapping; unknown keys and mistyped values raise InputError."""
        return config.build(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON/YAML values."""
        return config.to_dict(self)

    @property
    def win(self) -> int:
        """The STFT window length in samples (win_length, or n_fft)."""
        return self.n_fft if self.win_length is None else self.win_length

    @property
    def hop(self) -> int:
        """The STFT hop in samples (hop_length, or win // 4 as librosa)."""
        return self.win // 4 if self.hop_length is None else self.hop_length

    @property
    def window_samples(self) -> int:
        """Samples in one model window."""
        return int(round(self.window * self.sample_rate))

    @property
    def num_frames(self) -> int:
        """Spectrogram frames in one window (librosa's or tf.signal's count for the same settings)."""
        return 1 + (self.window_samples + 2 * self._pad - self._frame_length) // self.hop

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The model input shape without the batch axis, in `axes` order."""
        sizes = {"time": self.window_samples if self.features == "waveform" else self.num_frames,
                 "mels": self._feature_size, "channel": 1}
        return tuple(sizes[a] for a in self.axes)

    @property
    def mel_basis(self) -> np.ndarray:
        """The (n_mels, n_fft // 2 + 1) filterbank applied to the spectrum (cached, read-only)."""
        if self.convention == "tensorflow":
            return tf_mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self._fmax)
        return mel_filterbank(self.sample_rate, self.n_fft, self.n_mels, self.fmin, self._fmax,
                              self.mel_scale, self.mel_norm)

    @property
    def _fmax(self) -> float:
        return self.sample_rate / 2 if self.fmax is None else self.fmax

    @property
    def _base_axes(self) -> tuple[str, ...]:
        return ("time",) if self.features == "waveform" else ("time", "mels")

    @property
    def _feature_size(self) -> int:
        return {"waveform": 1, "logmel": self.n_mels, "mfcc": self.n_mfcc}[self.features]

    @property
    def _pad(self) -> int:
        return self.n_fft // 2 if self.center else 0

    @property
    def _frame_length(self) -> int:
        # tf.signal.stft counts frames of win_length; librosa counts frames of n_fft.
        return self.n_fft if self.convention == "librosa" else self.win

    @property
    def _segment_offset(self) -> int:
        # Where the window's non-zero part starts inside a frame: librosa centres it in n_fft,
        # tf.signal puts it first. Only that segment is transformed: moving it inside the n_fft
        # frame is a circular shift, which leaves the magnitude spectrum unchanged.
        return (self.n_fft - self.win) // 2 if self.convention == "librosa" else 0

    @property
    def _segment_starts(self) -> np.ndarray:
        """Start of each frame's windowed segment (win samples), relative to the window start."""
        return np.arange(self.num_frames, dtype=np.int64) * self.hop + self._segment_offset - self._pad

    def features_of(self, samples: np.ndarray) -> np.ndarray:
        """The model input (float32, `output_shape`) for exactly `window_samples` float samples."""
        x = np.asarray(samples)
        if x.ndim != 1 or x.size != self.window_samples or not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"audio window must be {self.window_samples} float samples, got {x.dtype} {x.shape}")
        x = x.astype(np.float64)
        if self.features == "waveform":
            return self._finish(x)
        if self._pad:
            x = np.pad(x, self._pad, mode=self.pad_mode)
        return self._finish(self._log_mel_rows(x[self._segment_offset:], self.num_frames))

    def _log_mel_rows(self, samples: np.ndarray, count: int) -> np.ndarray:
        """(count, n_mels) log-mel rows before top_db; frame i is samples[i * hop : i * hop + win]."""
        x = np.ascontiguousarray(samples, np.float64)
        if x.size < (count - 1) * self.hop + self.win:
            raise InputError(f"{count} frames need {(count - 1) * self.hop + self.win} samples, got {x.size}")
        # a read-only strided view (frame i = x[i * hop : i * hop + win]); the ndarray constructor is what
        # sliding_window_view does, without its per-call Python overhead, which mattered in the live loop
        frames = np.ndarray((count, self.win), np.float64, x, 0, (x.strides[0] * self.hop, x.strides[0]))
        spectrum = np.abs(np.fft.rfft(frames * _hann(self.win), n=self.n_fft))
        if self.power == 2.0:
            spectrum = spectrum * spectrum
        elif self.power != 1.0:
            spectrum = spectrum**self.power
        mel = spectrum @ self.mel_basis.T
        if self.log == "ln":
            return np.log(mel + self.log_offset)
        if self.log == "none":
            return mel
        amin, ref = self.amin, self.ref
        if self.power == 1.0:  # amplitude_to_db = power_to_db of the squares
            mel, amin, ref = mel * mel, amin * amin, ref * ref
        return 10.0 * np.log10(np.maximum(amin, mel)) - 10.0 * np.log10(max(amin, ref))

    def _finish(self, rows: np.ndarray) -> np.ndarray:
        """top_db (against the window's maximum), DCT, mean/std and axis order: what needs the whole window."""
        if self.features != "waveform" and self.log == "db" and self.top_db is not None:
            rows = np.maximum(rows, rows.max() - self.top_db)
        if self.features == "mfcc":
            rows = rows @ dct_matrix(self.n_mels, self.n_mfcc).T
        rows = (rows - np.asarray(self.mean)) / np.asarray(self.std)
        names = list(self._base_axes)
        if "channel" in self.axes:
            rows, names = rows[..., None], names + ["channel"]
        return np.ascontiguousarray(rows.transpose([names.index(a) for a in self.axes]), dtype=np.float32)


class IncrementalFeatures:
    """An AudioTransform over a live stream, computing each interior spectrogram row once.

    Rows whose segment lies inside the window (not touching the centre padding) are cached by
    absolute sample position and reused by the next windows that contain them (rows the current
    window does not use are dropped); rows at the window edges depend on the window's own padding
    and are computed for every window. Results equal `transform.features_of(ring.read(end -
    window_samples, end))`; `ring` is an AudioRing, or anything with `read(start, end)`.
    """

    def __init__(self, transform: AudioTransform):
        self.transform = t = transform
        self.computed = 0  # spectrogram rows computed (statistics)
        self._starts = t._segment_starts if t.features != "waveform" else None
        if self._starts is not None:  # which rows touch the window's edges depends only on the transform
            head = self._starts < 0
            tail = ~head & (self._starts + t.win > t.window_samples)
            self._head, self._tail = np.flatnonzero(head), np.flatnonzero(tail)
            inside = np.flatnonzero(~(head | tail))  # a contiguous run of rows
            self._inside = (int(inside[0]), int(inside[-1]) + 1) if inside.size else (0, 0)
        # the previous window's rows, the absolute segment start of its row 0, and the run of its rows
        # [lo, hi) that were complete interior rows (reusable by a later window on the same hop grid)
        self._rows: np.ndarray | None = None
        self._seg0 = 0
        self._valid = (0, 0)

    def snap(self, index: float) -> int:
        """The last multiple of the hop at or before sample `index`."""
        return int(math.floor(index / self.transform.hop)) * self.transform.hop

    def features(self, ring: Any, end: int) -> np.ndarray:
        """The model input for the stream window [end - window_samples, end) of `ring` (an AudioRing)."""
        t = self.transform
        end = int(end)
        start = end - t.window_samples
        if self._starts is None:
            return t._finish(ring.read(start, end).astype(np.float64))
        rows = np.empty((self._starts.size, t.n_mels))
        for idx in (self._head, self._tail):
            if idx.size:
                self._edge_rows(ring, start, end, idx, rows)
        self._interior_rows(ring, start, rows)
        return t._finish(rows)

    def _edge_rows(self, ring: Any, start: int, end: int, idx: np.ndarray, rows: np.ndarray) -> None:
        lo, hi = start + int(self._starts[idx[0]]), start + int(self._starts[idx[-1]]) + self.transform.win
        samples = _padded_read(ring, start, end, lo, hi, self.transform.pad_mode)
        rows[idx] = self.transform._log_mel_rows(samples, idx.size)
        self.computed += int(idx.size)

    def _interior_rows(self, ring: Any, start: int, rows: np.ndarray) -> None:
        """Interior rows: shifted from the previous window where it computed them, the rest computed now."""
        t = self.transform
        lo, hi = self._inside
        seg0 = start + int(self._starts[0])
        shift, remainder = divmod(seg0 - self._seg0, t.hop)
        reuse_lo, reuse_hi = lo, lo  # rows [reuse_lo, reuse_hi) come from the previous window
        if self._rows is not None and remainder == 0 and shift >= 0:
            reuse_lo, reuse_hi = max(lo, self._valid[0] - shift), min(hi, self._valid[1] - shift)
            if reuse_hi > reuse_lo:
                rows[reuse_lo:reuse_hi] = self._rows[reuse_lo + shift : reuse_hi + shift]
            else:
                reuse_lo = reuse_hi = lo
        for a, b in ((lo, reuse_lo), (max(lo, reuse_hi), hi)):  # before and after the reused run
            if b > a:
                first = seg0 + int(self._starts[a]) - int(self._starts[0])
                rows[a:b] = t._log_mel_rows(ring.read(first, first + (b - a - 1) * t.hop + t.win), b - a)
                self.computed += b - a
        # Samples not yet written read as zeros: rows made of them are used once but not kept.
        written = getattr(ring, "total", None)
        valid_hi = hi
        if written is not None:
            complete = (written - seg0 - t.win) // t.hop + 1  # rows whose segment ends by `written`
            valid_hi = max(lo, min(hi, complete))
        self._valid, self._rows, self._seg0 = (lo, valid_hi), rows.copy(), seg0


def _padded_read(ring: Any, start: int, end: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """Samples [lo, hi) of the window [start, end) padded as np.pad(window, mode) would pad it."""
    if mode == "constant":
        out = np.zeros(hi - lo, np.float32)
        a, b = max(lo, start), min(hi, end)
        if b > a:
            out[a - lo : b - lo] = ring.read(a, b)
        return out
    idx = np.arange(lo, hi)
    idx = np.where(idx < start, 2 * start - idx, idx)
    idx = np.where(idx >= end, 2 * (end - 1) - idx, idx)
    first = int(idx.min())
    return ring.read(first, int(idx.max()) + 1)[idx - first]


@functools.lru_cache(maxsize=8)
def _hann(length: int) -> np.ndarray:
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)  # periodic, as scipy/tf/torch
    window.flags.writeable = False
    return window


def _hz_to_mel(hz: np.ndarray | float, scale: str) -> np.ndarray:
    f = np.asarray(hz, np.float64)
    if scale == "htk":
        return 2595.0 * np.log10(1.0 + f / 700.0)
    # Slaney: linear below 1 kHz, logarithmic above (librosa.hz_to_mel with htk=False).
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-12) / 1000.0) / (np.log(6.4) / 27.0), f * 3.0 / 200.0)


def _mel_to_hz(mel: np.ndarray, scale: str) -> np.ndarray:
    if scale == "htk":
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), mel * 200.0 / 3.0)


@functools.lru_cache(maxsize=16)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float, scale: str = "slaney",
                   norm: str = "slaney") -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangles in Hz between mel-spaced edges, as librosa.filters.mel.

    `norm` "slaney" scales each triangle to unit area (constant energy per band); "none" keeps peaks at 1.
    """
    freqs = np.arange(n_fft // 2 + 1) * (sample_rate / n_fft)  # np.fft.rfftfreq: odd n_fft stops short of Nyquist
    edges = _mel_to_hz(np.linspace(_hz_to_mel(fmin, scale), _hz_to_mel(fmax, scale), n_mels + 2), scale)
    widths = np.diff(edges)
    rising = (freqs[None, :] - edges[:-2, None]) / widths[:-1, None]
    falling = (edges[2:, None] - freqs[None, :]) / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    if norm == "slaney":
        weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    weights.flags.writeable = False
    return weights


@functools.lru_cache(maxsize=16)
def tf_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1): tf.signal.linear_to_mel_weight_matrix, transposed.

    HTK mel (1127 ln(1 + f / 700)), triangles built in the mel domain, the DC bin given no weight.
    """
    bin_mel = 1127.0 * np.log1p(np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1) / 700.0)[None, :]
    edges = np.linspace(1127.0 * np.log1p(fmin / 700.0), 1127.0 * np.log1p(fmax / 700.0), n_mels + 2)[:, None]
    rising = (bin_mel - edges[:-2]) / (edges[1:-1] - edges[:-2])
    falling = (edges[2:] - bin_mel) / (edges[2:] - edges[1:-1])
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[:, 0] = 0.0
    weights.flags.writeable = False
    return weights


@functools.lru_cache(maxsize=8)
def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in): the first n_out rows of the orthonormal DCT-II (scipy dct type 2, norm "ortho")."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    matrix = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * np.sqrt(2.0 / n_in)
    matrix[0] /= np.sqrt(2.0)
    matrix.flags.writeable = False
    return matrix
