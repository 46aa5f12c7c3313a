"""Microphone sources: a PyAudio input device, or a WAV file replayed in real time or on demand.

Both write into an `AudioRing` with the capture time of each chunk's last sample. A
microphone is opened at the model's rate when the device accepts it (PulseAudio and most
ALSA plugins resample), otherwise at the device's default rate; the runtime then resamples
each window.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from edgemm import logs
from edgemm.errors import DependencyError, InputError
from edgemm.transforms.signal import resample_blocks
from edgemm.runtime.ring import AudioRing
from edgemm.wav import WavReader


class WavSource:
    """A WAV file as a microphone. realtime: chunks are released at the pace of the audio;
    otherwise the loop calls `feed_until(t)` (media time on the session clock).

    The file is read and resampled block by block as it plays (edgemm.transforms.signal.resample_blocks),
    so an hour-long recording costs no more memory than a second."""

    def __init__(self, path, rate: int, chunk: int = 320, realtime: bool = True, clock_start: float | None = None):
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such WAV file")
        self._reader = WavReader(path)
        file_rate = self._reader.rate
        if self._reader.frames == 0:
            self._reader.close()
            raise InputError(f"{path}: the WAV file holds no audio samples")
        self._blocks = resample_blocks(self._reader.read, self._reader.frames, file_rate, rate)
        self._pending = np.zeros(0, np.float32)  # resampled, not yet written to the ring
        self._exhausted = False
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
        return self._exhausted and self._pending.size == 0

    def _take(self, n: int) -> np.ndarray:
        """Up to n resampled samples, reading the next block when the pending one runs out."""
        while self._pending.size == 0 and not self._exhausted:
            self._pending = next(self._blocks, None)
            if self._pending is None:
                self._pending, self._exhausted = np.zeros(0, np.float32), True
                self._reader.close()
        out, self._pending = self._pending[:n], self._pending[n:]
        return out

    def feed_until(self, t: float) -> None:
        end = max(self._pos, int(round((t - self.clock_start) * self.rate)))
        while self._pos < end and not self.ended:
            block = self._take(min(self.chunk, end - self._pos))
            self._pos += block.size
            if block.size:
                self.ring.write(block, self.clock_start + self._pos / self.rate)

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


def open_pyaudio():
    pyaudio = _pyaudio()
    with logs.native_stderr_quieted():
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
        if isinstance(device, int) or str(device).isdecimal():
            if not 0 <= int(device) < pa.get_device_count():  # PortAudio takes a C int; a longer number overflows it
                raise InputError(f"audio device {str(device)[:24]}: no such device index (this machine has "
                                 f"{pa.get_device_count()} audio devices; give a name or an index below that)")
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
    """A PyAudio input stream; the callback writes 16-bit mono chunks into the ring, counting overflows.

    A watchdog thread notices when the stream dies or stops delivering audio for `stall_timeout`
    seconds (a USB microphone unplugged, the sound server restarted) and reopens the device with
    backoff, re-enumerating devices each time; the hole is filled with silence by the ring.
    """

    def __init__(self, device: str | int | None, rate: int, chunk: int = 320, stall_timeout: float = 1.0,
                 max_backoff: float = 5.0):
        self._pyaudio = _pyaudio()
        self.device_spec, self.model_rate, self.model_chunk = device, int(rate), int(chunk)
        self.stall_timeout, self.max_backoff = stall_timeout, max_backoff
        self.callback_errors = self.stream_errors = self.reopens = 0
        self.rate = None  # fixed by the first open: the ring and the features keep it across reopens
        self._lock = threading.Lock()  # guards pa/stream against the watchdog reopening them
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.note = None  # callable for one-line messages (the session sets it)
        self._alive_at = time.monotonic()
        self._open()
        self.ring = AudioRing(self.rate)

    def _open(self) -> None:
        """Opens PortAudio and the input stream (not started); InputError when that is impossible."""
        pyaudio = self._pyaudio
        pa = open_pyaudio()
        try:
            info = find_input_device(pa, self.device_spec)
            index = int(info["index"])
            rate = self.rate
            if rate is None:
                try:
                    supported = pa.is_format_supported(self.model_rate, input_device=index, input_channels=1,
                                                       input_format=pyaudio.paInt16)
                except ValueError:
                    supported = False
                rate = self.model_rate if supported else int(info["defaultSampleRate"])
            chunk = int(round(self.model_chunk * rate / self.model_rate))
            with logs.native_stderr_quieted():
                stream = pa.open(format=pyaudio.paInt16, channels=1, rate=rate, input=True,
                                 input_device_index=index, frames_per_buffer=chunk,
                                 stream_callback=self._callback, start=False)
            self.input_latency = float(stream.get_input_latency())
        except (OSError, IOError) as e:
            pa.terminate()
            raise InputError(f"cannot open audio input {self.device_spec or 'default'} ({e})") from None
        except InputError:
            pa.terminate()
            raise
        self.pa, self._stream, self.rate, self.chunk = pa, stream, rate, chunk
        self.device = f"{info['name']} (#{index}, {rate} Hz)"

    def _callback(self, data, frame_count, time_info, status):
        now = time.monotonic()
        self._alive_at = now
        try:
            if status & self._pyaudio.paInputOverflow:
                self.ring.overflows += 1
            samples = np.frombuffer(data, "<i2").astype(np.float32) / 32768.0
            self.ring.write(samples, now - self.input_latency)  # the last sample was captured this long ago
        except Exception:  # never let an exception kill PortAudio's thread
            self.callback_errors += 1
        return (None, self._pyaudio.paContinue)

    def start(self) -> "MicSource":
        self._alive_at = time.monotonic()
        self._stream.start_stream()
        self._watchdog = threading.Thread(target=self._watch, name="edgemm-mic-watchdog", daemon=True)
        self._watchdog.start()
        return self

    def _healthy(self) -> bool:
        if time.monotonic() - self._alive_at > self.stall_timeout:
            return False
        try:
            return bool(self._stream.is_active())
        except (OSError, IOError):
            return False

    def _watch(self) -> None:
        while not self._stop.wait(min(0.25, self.stall_timeout / 2)):
            if self._healthy():
                continue
            self.stream_errors += 1
            self._say(f"microphone {self.device} stopped delivering audio; reopening it")
            self._close(abandon_after=2.0)
            backoff = 0.25
            while not self._stop.is_set():
                try:
                    with self._lock:
                        if self._stop.is_set():
                            break
                        self._open()
                        self._alive_at = time.monotonic()
                        self._stream.start_stream()
                    self.reopens += 1
                    self._say(f"microphone reopened: {self.device}")
                    break
                except (InputError, OSError, IOError):
                    self._stop.wait(backoff)
                    backoff = min(self.max_backoff, backoff * 2)

    def _say(self, message: str) -> None:
        if self.note is not None:
            self.note(message)

    def _close(self, abandon_after: float | None = None) -> None:
        """Stops and closes the stream and PortAudio. With a broken sound server this can block, so the
        watchdog gives up waiting after `abandon_after` seconds and opens a fresh instance."""
        with self._lock:
            stream, pa = self._stream, self.pa

        def close():
            for step in (stream.stop_stream, stream.close, pa.terminate):
                try:
                    step()
                except Exception:  # already closed, or the server is gone: nothing left to release
                    pass

        if abandon_after is None:
            close()
            return
        closer = threading.Thread(target=close, name="edgemm-mic-close", daemon=True)
        closer.start()
        closer.join(abandon_after)

    def stop(self) -> None:
        self._stop.set()
        if self._watchdog is not None:
            self._watchdog.join(timeout=3.0)
        self._close(abandon_after=2.0)
