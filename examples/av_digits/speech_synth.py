"""Spoken digits from Debian's espeak-ng: demo inputs, and extra training voices.

FSDD has six speakers; a teacher trained on them alone does not understand
a seventh voice. Synthetic voices (espeak-ng voices x variants x speeds)
widen the training set; the demo speaks with a voice kept out of that list.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from edgemm.errors import DependencyError
from edgemm.transforms.signal import resample
from edgemm.wav import read_wav

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Voices the teacher hears in training: espeak-ng voice[+variant] and words per minute.
TRAINING_VOICES = tuple(
    (voice, speed)
    for voice in ("en-us", "en-us+f2", "en-us+m3", "en-gb-scotland", "en-gb-scotland+f4", "en-gb-x-rp+m7",
                  "en-029", "en-029+f3", "en-gb-x-gbclan", "en-gb-x-gbclan+f5", "en-us-nyc+m5", "en-gb-x-gbcwmd+f1")
    for speed in (130, 175)
)
# The demo's voice: British English with the default variant, in no training voice above.
DEMO_VOICE = ("en", 150)


def speak(word: str, rate: int, voice: str = DEMO_VOICE[0], speed: int = DEMO_VOICE[1]) -> np.ndarray:
    """espeak-ng saying `word`, as float samples at `rate` Hz with leading/trailing silence trimmed."""
    return _speak(word, rate, voice, speed).copy()


@functools.lru_cache(maxsize=512)
def _speak(word: str, rate: int, voice: str, speed: int) -> np.ndarray:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DependencyError("espeak-ng is not installed: apt-get install espeak-ng")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "word.wav"
        cmd = [exe, "-v", voice, "-s", str(speed), "-w", str(out), word]
        proc = subprocess.run(cmd, capture_output=True, timeout=60)
        if proc.returncode != 0 or not out.is_file():
            raise DependencyError(f"espeak-ng -v {voice} failed: {proc.stderr.decode(errors='replace').strip()[:200]}")
        samples, native = read_wav(out)
    samples = resample(samples, native, rate)
    voiced = np.flatnonzero(np.abs(samples) > 0.02)
    samples = samples[voiced[0] : voiced[-1] + 1] if voiced.size else samples
    samples.flags.writeable = False
    return samples


def digit_clips(voices=TRAINING_VOICES, rate: int = 8000) -> tuple[tuple[np.ndarray, int], ...]:
    """Every digit spoken by every (voice, speed), as (samples, digit) pairs at `rate` Hz."""
    return tuple((speak(WORDS[d], rate, voice, speed), d) for voice, speed in voices for d in range(10))
