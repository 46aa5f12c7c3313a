"""Model inputs from sources, one feeder per kind of input, all driven by the spec.

camera    the frame's transform (done by the capture thread when it can), newest N frames stacked
mic       the audio window ending at the trigger time, snapped to the transform's hop grid, features
          computed incrementally (only new hops) when the ring runs at the model's rate
state     zeros at the start, then the output named in the spec (fed back after each inference)
constant  the spec's value, broadcast to the model's shape once
"""

from __future__ import annotations

import time

import numpy as np

from edgemm.binding import BoundInput
from edgemm.transforms.audio import IncrementalFeatures
from edgemm.transforms.signal import resample
from edgemm.transforms.image import FrameStack


def _batched(bound: BoundInput, x: np.ndarray) -> np.ndarray:
    return x[None] if bound.batch_axis else x


class CameraFeed:
    def __init__(self, bound: BoundInput, camera):
        self.bound, self.camera, self.transform = bound, camera, bound.spec.transform
        self.stack = FrameStack(self.transform) if self.transform.frames > 1 else None

    def value(self, frame) -> tuple[np.ndarray, float]:
        """(model input, preprocessing ms spent in this thread)."""
        start = time.perf_counter()
        prepared = frame.prepared.get(self.bound.name) if isinstance(frame.prepared, dict) else None
        x = prepared if prepared is not None else self.transform.apply(frame.image)
        if self.stack is not None:
            x = self.stack.push(x)
        return _batched(self.bound, x), (time.perf_counter() - start) * 1e3


class AudioFeed:
    """The audio window of one mic input that ends at a given time on the session clock."""

    def __init__(self, bound: BoundInput, mic, audio_wait: float):
        self.bound, self.mic, self.transform = bound, mic, bound.spec.transform
        self.ring = mic.ring
        self.audio_wait = audio_wait
        self.incremental = IncrementalFeatures(self.transform) if self.ring.rate == self.transform.sample_rate else None
        self.grid = 1 if self.transform.features == "waveform" else self.transform.hop

    def end_index(self, t: float, live: bool) -> tuple[int, float, float]:
        """(window end in ring samples, pairing error ms, ms waited): the sample captured at t, snapped down
        to the hop grid, waiting up to `audio_wait` for late audio."""
        ring = self.ring
        index = ring.index_at(t)
        if index is None and live:
            ring.wait_for(1, self.audio_wait)
            index = ring.index_at(t)
        index = 0.0 if index is None else index
        ratio = ring.rate / self.transform.sample_rate
        end = int(round(int(np.floor(index / (self.grid * ratio))) * self.grid * ratio))
        waited = time.perf_counter()
        if ring.total < end and live:
            ring.wait_for(end, self.audio_wait)
        waited_ms = (time.perf_counter() - waited) * 1e3
        if ring.total < end:  # the audio is late: use what there is
            end = int(round(int(np.floor(ring.total / (self.grid * ratio))) * self.grid * ratio))
        return end, (end - index) / ring.rate * 1e3, waited_ms

    def value(self, end: int) -> np.ndarray:
        """The model input for the window ending at ring sample `end`."""
        t = self.transform
        if self.incremental is not None:
            return _batched(self.bound, self.incremental.features(self.ring, end))
        n = int(round(t.window * self.ring.rate))
        window = resample(self.ring.read(end - n, end), self.ring.rate, t.sample_rate)
        if window.size != t.window_samples:  # rounding of the rate ratio: pad/crop at the start
            window = window[-t.window_samples:] if window.size > t.window_samples else np.concatenate(
                [np.zeros(t.window_samples - window.size, np.float32), window])
        return _batched(self.bound, t.features_of(window))

    def window(self, end: int) -> np.ndarray:
        """The raw samples of the window ending at `end` (for taps in tests)."""
        n = int(round(self.transform.window * self.ring.rate))
        return self.ring.read(end - n, end)

    @property
    def computed(self) -> int:
        return 0 if self.incremental is None else self.incremental.computed


class StateFeed:
    def __init__(self, bound: BoundInput):
        self.bound = bound
        self.current = bound.zeros()

    def update(self, outputs: dict[str, np.ndarray]) -> None:
        value = outputs[self.bound.spec.from_output]
        self.current = np.asarray(value).reshape(self.bound.shape).astype(self.current.dtype, copy=False)
