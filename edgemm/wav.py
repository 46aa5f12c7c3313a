"""WAV files in and out (stdlib `wave`, PCM 8/16/24/32-bit, any channel count).

A header is checked before any sample is read: a rate outside MIN_RATE..MAX_RATE (a 1 Hz file would be
resampled to hours of audio; a 4-billion-Hz one would size a filter to match) is refused, and `WavReader`
reads a long file block by block.
"""

from __future__ import annotations

import os
import wave

import numpy as np

from edgemm.atomic import atomic_path
from edgemm.errors import InputError

MIN_RATE, MAX_RATE = 1000, 768_000  # Hz: below telephone band .. above any studio rate
MAX_CHANNELS = 64


def _pcm_to_float(raw: bytes, width: int, channels: int, path) -> np.ndarray:
    usable = len(raw) // (width * channels) * width * channels
    raw = raw[:usable]
    if width == 1:
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        x = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:
        raise InputError(f"{path}: {8 * width}-bit WAV samples are not supported")
    x = x.reshape(-1, channels).mean(axis=1) if channels > 1 else x
    return x.astype(np.float32)


class WavReader:
    """An open PCM WAV file: `rate`, `frames` (as the header says), `read(start, stop)` -> mono float32."""

    def __init__(self, path: str | os.PathLike):
        self.path = path
        try:
            self._f = wave.open(os.fspath(path), "rb")
        except FileNotFoundError:
            raise InputError(f"{path}: no such WAV file") from None
        except (wave.Error, EOFError, OSError) as e:
            raise InputError(f"{path}: not a readable PCM WAV file ({str(e)[:120]})") from None
        f = self._f
        self.channels, self.width, self.rate, self.frames = (f.getnchannels(), f.getsampwidth(), f.getframerate(),
                                                             f.getnframes())
        if not MIN_RATE <= self.rate <= MAX_RATE or not 1 <= self.channels <= MAX_CHANNELS:
            self.close()
            raise InputError(f"{path}: WAV header has rate {self.rate} Hz and {self.channels} channels (edgemm reads "
                             f"{MIN_RATE}..{MAX_RATE} Hz, 1..{MAX_CHANNELS} channels)")
        if self.width not in (1, 2, 3, 4):
            self.close()
            raise InputError(f"{path}: {8 * self.width}-bit WAV samples are not supported")

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) as mono float32; shorter at the end of the data (headers may overstate it)."""
        try:
            self._f.setpos(min(start, self.frames))
            raw = self._f.readframes(max(0, stop - start))
        except (wave.Error, EOFError, OSError) as e:
            raise InputError(f"{self.path}: not a readable PCM WAV file ({str(e)[:120]})") from None
        return _pcm_to_float(raw, self.width, self.channels, self.path)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "WavReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Reads a whole PCM WAV file.

    Returns:
        (samples, rate): mono float32 samples in [-1, 1] (channels averaged) and the rate in Hz.
    """
    with WavReader(path) as reader:
        return reader.read(0, reader.frames), reader.rate


def write_wav(path: str | os.PathLike, samples: np.ndarray, rate: int) -> None:
    """Writes mono float samples in [-1, 1] as 16-bit PCM, atomically (temp file + rename)."""
    rate = int(rate)  # fails before anything is written
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    x = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    pcm = np.round(x * 32767.0).astype("<i2")
    with atomic_path(path) as tmp, wave.open(os.fspath(tmp), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())
