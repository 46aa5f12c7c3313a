"""The first (v1) preprocessing schema, kept so that v1 sidecars and manifests keep working.

v1 described one gray NHWC image and one TensorFlow-convention log-mel (tf.signal frames, HTK mel in
the mel domain, natural log); here it is only a schema: every computation goes through the spec's
transforms (:func:`image_from_v1`, :func:`audio_from_v1`), the one implementation per modality.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Mapping

import numpy as np

from edgemm import config
from edgemm.config import require

_require = require
from edgemm.errors import InputError
from edgemm.transforms.audio import AudioTransform
from edgemm.transforms.image import ImageTransform
from edgemm.transforms.signal import resample, to_float_audio

SPEC_VERSION = 1


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
        invert: map dark ink on light paper to the bright-on-dark strokes a model was trained on.
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
        if data.get("version", SPEC_VERSION) != SPEC_VERSION:
            raise InputError(f"preprocess.version {data.get('version')!r} is not supported (expected {SPEC_VERSION})")
        unknown = sorted(set(data) - {"image", "audio", "version"})
        _require(not unknown, f"preprocess: unknown key(s) {', '.join(map(str, unknown))}")
        return cls(image=config.build(ImageSpec, data.get("image", {}), "preprocess.image"),
                   audio=config.build(AudioSpec, data.get("audio", {}), "preprocess.audio"))


def audio_from_v1(spec: Mapping[str, Any]) -> AudioTransform:
    """The AudioTransform equal to a v1 `preprocess.AudioSpec` given as its dict.

    v1 is tf.signal's front-end: un-centred frames, HTK mel built in the mel domain, ln(mel + offset).
    """
    v1 = spec if isinstance(spec, AudioSpec) else config.build(AudioSpec, spec, "audio")
    return AudioTransform(
        sample_rate=v1.sample_rate, window=v1.window_seconds, features="logmel", n_fft=v1.fft_length,
        win_length=v1.frame_length, hop_length=v1.frame_step, center=False, convention="tensorflow",
        n_mels=v1.n_mels, fmin=v1.fmin, fmax=v1.fmax, mel_scale="htk", mel_norm="none", power=v1.power,
        log="ln", log_offset=v1.log_offset, top_db=None, mean=v1.mean, std=v1.std,
        axes=("time", "mels", "channel"))


def image_from_v1(spec: Mapping[str, Any]) -> ImageTransform:
    """The ImageTransform equal to a v1 `preprocess.ImageSpec` given as its dict.

    v1 converts to gray, crops the largest centred square (crop "center") and resizes with INTER_AREA.
    """
    v1 = spec if isinstance(spec, ImageSpec) else config.build(ImageSpec, spec, "image")
    require(v1.crop == "none" or v1.height == v1.width,
            "image: v1 crop center with a non-square size (a square crop, then stretched) has no ImageTransform "
            "equivalent")
    return ImageTransform(layout="NHWC", color="gray", size=(v1.height, v1.width),
                          resize="center-crop" if v1.crop == "center" else "stretch", interpolation="area",
                          invert=v1.invert, scale=1 / 255, mean=v1.mean, std=v1.std)


@functools.lru_cache(maxsize=16)
def _image(spec: ImageSpec) -> ImageTransform:
    return image_from_v1(spec)


@functools.lru_cache(maxsize=16)
def _audio(spec: AudioSpec) -> AudioTransform:
    return audio_from_v1(spec)


def preprocess_image(frame: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """A camera frame to the v1 model's (height, width, 1) float32 input."""
    return _image(spec).apply(frame)


def audio_features(samples: np.ndarray, sample_rate: int, spec: AudioSpec) -> np.ndarray:
    """Raw samples at any rate to the v1 model's (num_frames, n_mels, 1) input: the last window_seconds of
    the signal, a shorter one left-padded with silence (the newest audio at the end, as on a live mic)."""
    x = resample(to_float_audio(samples), sample_rate, spec.sample_rate)
    n = spec.window_samples
    x = x[-n:] if x.size >= n else np.concatenate([np.zeros(n - x.size, np.float32), x])
    return _audio(spec).features_of(x)
