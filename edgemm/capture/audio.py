"""Microphone sources: a PyAudio input device, or a WAV file replayed in real time or on demand.

Both write into an `AudioRing` with the capture time of each chunk's last sample. A
microphone is opened at the model's rate when the device accepts it (PulseAudio and most
ALSA plugins resample), otherwise at the device's default rate; the runtime then resamples
each window.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import numpy as np

from edgemm.errors import DependencyError, InputError
from edgemm.preprocess import resample
from edgemm.runtime.ring import AudioRing
from edgemm.wav import read_wav


class WavSource:
    """A WAV file as a microphone. realtime: chunks are released at the pace of the audio;
    otherwise the loop calls `feed_until(t)` (media time on the session clock)."""

    def __init__(self, path, rate: int, chunk: int = 320, realtime: bool = True, clock_start: float | None = None):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such WAV file")
        samples, file_rate = read_wav(path)
        self.samples = resample(samples, file_rate, rate) if file_rate != rate else samples
        self.rate, self.chunk, self.realtime = int(rate), int(chunk), realtime
        self.clock_start = time.monotonic() if clock_start is None else clock_start
        self.ring = AudioRing(self.rate)
        self.device = f"wav:{path.name} ({file_rate} Hz{' -> ' + str(rate) if file_rate != rate else ''})"
        self.input_latency = 0.0
        self._pos = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ended(self) -> bool:
        return self._pos >= self.samples.size

    def feed_until(self, t: float) -> None:
        end = min(self.samples.size, max(self._pos, int(round((t - self.clock_start) * self.rate))))
        while self._pos < end:
            stop = min(end, self._pos + self.chunk)
            self.ring.write(self.samples[self._pos : stop], self.clock_start + stop / self.rate)
            self._pos = stop

    def start(self) -> "WavSource":
        if self.realtime:
            self._thread = threading.Thread(target=self._run, name="edgemm-wav", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and not self.ended:
            target = self.clock_start + (self._pos + self.chunk) / self.rate
            delay = target - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            self.feed_until(target)

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2.0)


@contextlib.contextmanager
def quiet_native_stderr():
    """Silences what ALSA/JACK print to file descriptor 2 while PortAudio probes devices
    (dozens of lines about absent sound cards); Python-level errors still surface as exceptions."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def open_pyaudio():
    pyaudio = _pyaudio()
    with quiet_native_stderr():
        return pyaudio.PyAudio()


def _pyaudio():
    try:
        import pyaudio
    except ImportError as e:
        raise DependencyError(f"PyAudio is not importable ({e}): apt install portaudio19-dev; pip install pyaudio") from None
    return pyaudio


def find_input_device(pa, device: str | int | None) -> dict:
    """The PortAudio input device: default, an index, or the first whose name contains `device`."""
    try:
        if device in (None, "", "default"):
            return pa.get_default_input_device_info()
        if isinstance(device, int) or str(device).isdigit():
            info = pa.get_device_info_by_index(int(device))
            if info["maxInputChannels"] < 1:
                raise InputError(f"audio device {device} ({info['name']}) has no input channels")
            return info
    except (OSError, IOError) as e:
        raise InputError(f"no audio input device available ({e})") from None
    names = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if info["maxInputChannels"] > 0:
            names.append(info["name"])
            if str(device).lower() in info["name"].lower():
                return info
    raise InputError(f"no audio input device named like {device!r} (inputs: {', '.join(names) or 'none'})")


class MicSource:
    """A PyAudio input stream; the callback writes 16-bit mono chunks into the ring, counting overflows."""

    def __init__(self, device: str | int | None, rate: int, chunk: int = 320):
        pyaudio = _pyaudio()
        self._pyaudio = pyaudio
        self.pa = open_pyaudio()
        try:
            info = find_input_device(self.pa, device)
            index = int(info["index"])
            try:
                supported = self.pa.is_format_supported(rate, input_device=index, input_channels=1,
                                                        input_format=pyaudio.paInt16)
            except ValueError:
                supported = False
            self.rate = int(rate) if supported else int(info["defaultSampleRate"])
            self.chunk = int(round(chunk * self.rate / rate))
            self.ring = AudioRing(self.rate)
            self.device = f"{info['name']} (#{index}, {self.rate} Hz)"
            with quiet_native_stderr():
                self._stream = self.pa.open(format=pyaudio.paInt16, channels=1, rate=self.rate, input=True,
                                            input_device_index=index, frames_per_buffer=self.chunk,
                                            stream_callback=self._callback, start=False)
            self.input_latency = float(self._stream.get_input_latency())
        except (OSError, IOError) as e:
            self.pa.terminate()
            raise InputError(f"cannot open audio input {device or 'default'} ({e})") from None
        except InputError:
            self.pa.terminate()
            raise
        self.callback_errors = 0

    def _callback(self, data, frame_count, time_info, status):
        now = time.monotonic()
        try:
            if status & self._pyaudio.paInputOverflow:
                self.ring.overflows += 1
            samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
            self.ring.write(samples, now - self.input_latency)  # the last sample was captured this long ago
        except Exception:  # never let an exception kill PortAudio's thread
            self.callback_errors += 1
        return (None, self._pyaudio.paContinue)

    def start(self) -> "MicSource":
        self._stream.start_stream()
        return self

    def stop(self) -> None:
        try:
            self._stream.stop_stream()
            self._stream.close()
        finally:
            self.pa.terminate()
