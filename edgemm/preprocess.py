"""The one preprocessing implementation: training, calibration, validation and
the device runtime all call these functions, so features cannot drift apart.

Pure numpy, plus OpenCV for image resizing. Every parameter lives in a frozen
spec (:class:`PreprocessSpec`) that serialises to a plain dict and travels in
each artifact's manifest.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import numpy as np

from edgemm.errors import InputError

SPEC_VERSION = 1


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise InputError(message)


@dataclasses.dataclass(frozen=True)
class AudioSpec:
    """Log-mel front-end parameters.

    Attributes:
        sample_rate: model rate in Hz; every source is resampled to it.
        window_seconds: length of the audio window one decision sees.
        frame_length: STFT window length in samples (periodic Hann).
        frame_step: STFT hop in samples.
        fft_length: FFT size (>= frame_length; frames are zero-padded at the end).
        n_mels: number of mel bands (HTK mel scale, triangles in the mel domain).
        fmin: lower edge of the lowest mel band in Hz.
        fmax: upper edge of the highest mel band in Hz.
        power: 1.0 for a magnitude, 2.0 for a power spectrogram.
        log_offset: added before the natural log, so silence stays finite.
        mean: subtracted from the log-mel features.
        std: the centred features are divided by it.
    """

    sample_rate: int = 16000
    window_seconds: float = 1.0
    frame_length: int = 480
    frame_step: int = 320
    fft_length: int = 512
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 4000.0
    power: float = 2.0
    log_offset: float = 1e-6
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        _require(self.sample_rate > 0, "audio.sample_rate must be positive")
        _require(self.window_seconds > 0, "audio.window_seconds must be positive")
        _require(0 < self.frame_length <= self.fft_length, "audio.frame_length must be in (0, fft_length]")
        _require(self.frame_step > 0, "audio.frame_step must be positive")
        _require(self.window_samples >= self.frame_length, "audio window is shorter than one STFT frame")
        _require(self.n_mels > 0, "audio.n_mels must be positive")
        _require(0 <= self.fmin < self.fmax <= self.sample_rate / 2, "audio needs 0 <= fmin < fmax <= sample_rate/2")
        _require(self.power in (1.0, 2.0), "audio.power must be 1.0 or 2.0")
        _require(self.log_offset > 0, "audio.log_offset must be positive")
        _require(self.std > 0 and math.isfinite(self.mean), "audio.std must be positive and audio.mean finite")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def num_frames(self) -> int:
        return 1 + (self.window_samples - self.frame_length) // self.frame_step

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        return (self.num_frames, self.n_mels, 1)


@dataclasses.dataclass(frozen=True)
class ImageSpec:
    """Camera frame to model input.

    Attributes:
        height: model input height.
        width: model input width.
        crop: "center" crops the largest centred square first, "none" squeezes the frame.
        invert: map dark ink on light paper to the bright-on-dark digits MNIST models expect.
        mean: subtracted after scaling pixels to [0, 1] (and inverting).
        std: the centred pixels are divided by it.
    """

    height: int = 32
    width: int = 32
    crop: str = "center"
    invert: bool = True
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        _require(self.height > 0 and self.width > 0, "image.height and image.width must be positive")
        _require(self.crop in ("center", "none"), "image.crop must be 'center' or 'none'")
        _require(self.std > 0 and math.isfinite(self.mean), "image.std must be positive and image.mean finite")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 1)


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """Everything needed to turn raw sensor data into model inputs."""

    image: ImageSpec = dataclasses.field(default_factory=ImageSpec)
    audio: AudioSpec = dataclasses.field(default_factory=AudioSpec)
    version: int = SPEC_VERSION

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessSpec":
        """Builds a spec from a dict; unknown or mistyped keys are errors."""
        if not isinstance(data, Mapping):
            raise InputError("preprocessing spec must be a mapping")
        _check_keys(data, cls, "preprocess")
        if data.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise InputError(f"preprocess.version {data.get('version')!r} is not supported (expected {SPEC_VERSION})")
        return cls(
            image=_build(ImageSpec, data.get("image", {}), "image"),
            audio=_build(AudioSpec, data.get("audio", {}), "audio"),
        )


def _check_keys(data: Mapping[str, Any], cls: type, where: str) -> None:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _build(cls: type, data: Any, where: str):
    if not isinstance(data, Mapping):
        raise InputError(f"preprocess.{where} must be a mapping")
    _check_keys(data, cls, f"preprocess.{where}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        value = data[f.name]
        expected = type(f.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise InputError(f"preprocess.{where}.{f.name} must be {expected.__name__}, got {value!r}")
        kwargs[f.name] = value
    return cls(**kwargs)


# --- audio -----------------------------------------------------------------


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


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """HTK mel scale."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


@functools.lru_cache(maxsize=8)
def mel_filterbank(spec: AudioSpec) -> np.ndarray:
    """(fft_length // 2 + 1, n_mels) triangular filters, built in the mel domain.

    The DC bin gets no weight: it carries the recording's offset, not speech.
    """
    n_bins = spec.fft_length // 2 + 1
    bin_mel = hz_to_mel(np.arange(n_bins) * spec.sample_rate / spec.fft_length)[:, None]
    edges = np.linspace(hz_to_mel(spec.fmin), hz_to_mel(spec.fmax), spec.n_mels + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mel - lower) / (center - lower)
    falling = (upper - bin_mel) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    weights.flags.writeable = False
    return weights.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _hann(length: int) -> np.ndarray:
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)).astype(np.float32)
    window.flags.writeable = False
    return window


def log_mel(samples: np.ndarray, spec: AudioSpec, normalise: bool = True) -> np.ndarray:
    """Log-mel features (frames, n_mels) of a mono float signal at spec.sample_rate.

    Frames are taken without padding: frame i covers samples
    [i * frame_step, i * frame_step + frame_length).
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or x.size < spec.frame_length:
        raise InputError(f"log_mel needs a 1-D signal of at least {spec.frame_length} samples, got shape {x.shape}")
    x = np.ascontiguousarray(x)
    count = (x.size - spec.frame_length) // spec.frame_step + 1
    frames = np.lib.stride_tricks.as_strided(  # a view: frame i = x[i * step : i * step + length]
        x, (count, spec.frame_length), (x.strides[0] * spec.frame_step, x.strides[0]), writeable=False)
    spectrum = np.abs(np.fft.rfft(frames * _hann(spec.frame_length), n=spec.fft_length))
    if spec.power == 2.0:
        spectrum = spectrum * spectrum
    features = np.log(spectrum.astype(np.float32) @ mel_filterbank(spec) + spec.log_offset)
    if normalise:
        features = (features - spec.mean) / spec.std
    return features.astype(np.float32)


def audio_features(samples: np.ndarray, sample_rate: int, spec: AudioSpec) -> np.ndarray:
    """Raw samples at any rate to the model's audio input (num_frames, n_mels, 1).

    The last `window_seconds` of the signal are used; a shorter signal is
    left-padded with silence (the newest audio stays at the end, as on a live
    microphone).
    """
    x = resample(to_float_audio(samples), sample_rate, spec.sample_rate)
    n = spec.window_samples
    x = x[-n:] if x.size >= n else np.concatenate([np.zeros(n - x.size, np.float32), x])
    return log_mel(x, spec)[..., None]


# --- image -----------------------------------------------------------------


def preprocess_image(frame: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """A camera frame (H, W), (H, W, 3) BGR or (H, W, 4) BGRA uint8 to (height, width, 1) float32."""
    import cv2

    img = np.asarray(frame)
    if img.dtype != np.uint8:
        raise InputError(f"camera frames must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] in (3, 4):
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY if img.shape[2] == 3 else cv2.COLOR_BGRA2GRAY)
    if img.ndim != 2 or min(img.shape) == 0:
        raise InputError(f"camera frame must be (H, W), (H, W, 3) or (H, W, 4), got shape {np.shape(frame)}")
    if spec.crop == "center":
        h, w = img.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        img = img[top : top + side, left : left + side]
    if img.shape != (spec.height, spec.width):
        img = cv2.resize(img, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    x = img.astype(np.float32) * np.float32(1.0 / 255.0)
    if spec.invert:
        x = 1.0 - x
    x = (x - spec.mean) / spec.std
    return x[..., None].astype(np.float32)
