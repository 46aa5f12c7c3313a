"""WAV files in and out (stdlib `wave`, PCM 8/16/24/32-bit, any channel count)."""

from __future__ import annotations

import os
import wave

import numpy as np

from edgemm.atomic import atomic_path
from edgemm.errors import InputError


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Reads a PCM WAV file.

    Returns:
        (samples, rate): mono float32 samples in [-1, 1] (channels averaged) and the rate in Hz.
    """
    try:
        with wave.open(os.fspath(path), "rb") as f:
            channels, width, rate, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            raw = f.readframes(n)
    except FileNotFoundError:
        raise InputError(f"{path}: no such WAV file") from None
    except (wave.Error, EOFError, OSError) as e:
        raise InputError(f"{path}: not a readable PCM WAV file ({e})") from None
    if rate <= 0 or channels <= 0:
        raise InputError(f"{path}: WAV header has rate {rate} and {channels} channels")
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
    return x.astype(np.float32), rate


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
