"""The device loop: newest frame + the audio window ending at its capture time -> fused decision.

Per inference: take the newest camera frame (its capture time T), find the audio sample
captured at T in the microphone's ring buffer, snap it down to the hop grid (so audio
features are computed only for new hops), wait briefly if the audio has not arrived yet,
preprocess both with the manifest's spec, run the backend, smooth, decide, record.

Two modes: live (sources run in their own threads, files paced at their native rate) and
`unpaced` (file sources only: frames are pulled one after another and the WAV is fed up to
each frame's media time, as fast as the machine goes; for benchmarks and tests).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import threading
import time
from typing import Callable

import numpy as np

from edgemm import preprocess
from edgemm.errors import InputError
from edgemm.runtime.features import IncrementalLogMel
from edgemm.runtime.postprocess import Smoother
from edgemm.runtime.stats import StatsRecorder


@dataclasses.dataclass(frozen=True)
class RunOptions:
    duration: float | None = None  # seconds of wall time (live) or media time (unpaced); None: until a source ends
    max_rate: float = 30.0  # inferences per second at most (every new frame, capped)
    smoothing: float = 0.5  # EMA weight of the newest output
    threshold: float = 0.5  # smoothed probability needed to announce a decision
    top_k: int = 3
    audio_wait: float = 0.1  # seconds to wait for audio to reach the frame's capture time
    json_lines: bool = False
    every: bool = False  # print every inference, not only decision changes
    unpaced: bool = False
    on_error: str = "continue"  # backend error policy: continue | stop
    max_errors: int = 10


class Runner:
    def __init__(self, manifest, selected, camera, mic, options: RunOptions, recorder: StatsRecorder,
                 emit: Callable[[str], None] = print, tap: Callable | None = None):
        spec = manifest.preprocess
        if spec is None:
            raise InputError(f"{manifest.directory}: the manifest has no preprocessing spec; edgemm run needs one")
        self.spec, self.labels = spec, manifest.labels
        self.backend, self.selected = selected.backend, selected
        self.names = {t.name for t in self.backend.inputs}
        if not self.names <= {"image", "audio"}:
            raise InputError(f"edgemm run feeds inputs 'image' and 'audio'; this model has {sorted(self.names)}")
        if "image" in self.names and camera is None:
            raise InputError("this model needs a camera: add --camera")
        if "audio" in self.names and mic is None:
            raise InputError("this model needs a microphone: add --mic")
        self.camera, self.mic, self.options = camera, mic, options
        self.recorder, self.emit, self.tap = recorder, emit, tap
        self.smoother = Smoother(self.labels, options.smoothing, options.threshold, options.top_k)
        self.incremental = mic is not None and mic.ring.rate == spec.audio.sample_rate
        self.features = IncrementalLogMel(spec.audio) if self.incremental else None
        self.stop_event = threading.Event()
        self.errors = 0
        self.blank_image = np.zeros(spec.image.input_shape, np.float32)

    # -- audio -----------------------------------------------------------------------------------------
    def _audio(self, t_frame: float, live: bool):
        """(features, pairing error ms, audio age reference time) for the window ending at t_frame."""
        ring, spec = self.mic.ring, self.spec.audio
        index = ring.index_at(t_frame)
        if index is None and live:
            ring.wait_for(1, self.options.audio_wait)
            index = ring.index_at(t_frame)
        if index is None:
            index = 0.0
        hop = spec.frame_step
        rate_ratio = ring.rate / spec.sample_rate
        end = int(np.floor(index / (hop * rate_ratio))) * hop  # hop grid, in model-rate samples
        end_ring = int(round(end * rate_ratio))
        waited = time.perf_counter()
        if ring.total < end_ring and live:
            ring.wait_for(end_ring, self.options.audio_wait)
        self._audio_wait_ms = (time.perf_counter() - waited) * 1e3
        if ring.total < end_ring:  # the audio is late: use what there is
            end = int(np.floor(ring.total / (hop * rate_ratio))) * hop
            end_ring = int(round(end * rate_ratio))
        pairing_ms = (end_ring - index) / ring.rate * 1e3
        if self.incremental:
            feats = self.features.features(ring, end)
        else:
            n = int(round(spec.window_seconds * ring.rate))
            feats = preprocess.audio_features(ring.read(end_ring - n, end_ring), ring.rate, spec)
        return feats, pairing_ms, t_frame + pairing_ms / 1e3, end_ring

    # -- one inference ---------------------------------------------------------------------------------
    def step(self, frame, t_take: float, live: bool) -> None:
        perf = time.perf_counter
        rec: dict = {"t": round(frame.t if frame else t_take, 6), "seq": frame.seq if frame else None,
                     "media_t": round(frame.t - self.camera.clock_start, 4) if (frame and self.camera) else None}
        self._audio_wait_ms = None
        t0 = perf()
        feeds = {}
        image_pre_ms = None
        if "image" in self.names:
            if frame.prepared is not None:  # preprocessed by the capture thread, off this loop
                feeds["image"] = frame.prepared[None]
                image_pre_ms = frame.prepare_ms
            else:
                feeds["image"] = preprocess.preprocess_image(frame.image, self.spec.image)[None]
        t1 = perf()
        if image_pre_ms is None and "image" in self.names:
            image_pre_ms = (t1 - t0) * 1e3
        audio_end = None
        if "audio" in self.names:
            t_ref = frame.t if frame else t_take
            feats, pairing_ms, t_audio, audio_end = self._audio(t_ref, live)
            feeds["audio"] = feats[None]
            rec["pairing_error"] = round(pairing_ms, 3)
            rec["audio_age"] = round((t_take - t_audio) * 1e3, 3) if live else None
        t2 = perf()
        try:
            out = self.backend.run(feeds)
        except Exception as e:  # a backend failing on one input is counted; the policy decides
            self.errors += 1
            self.recorder.counters["backend_errors"] = self.errors
            self.emit(f"backend error on frame {rec['seq']}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
            if self.options.on_error == "stop" or self.errors >= self.options.max_errors:
                raise InputError(f"backend failed {self.errors} time(s); last error: {e}") from None
            return
        t3 = perf()
        decision = self.smoother.update(next(iter(out.values())))
        t4 = perf()
        if self.tap is not None:
            n = int(round(self.spec.audio.window_seconds * self.mic.ring.rate)) if self.mic else 0
            window = self.mic.ring.read(audio_end - n, audio_end) if self.mic else None
            self.tap(frame, window, decision)
        now = time.monotonic()
        rec.update({
            "frame_age": round((t_take - frame.t) * 1e3, 3) if (frame and live) else None,
            "image_pre": round(image_pre_ms, 4) if image_pre_ms is not None else None,
            "audio_wait": None if self._audio_wait_ms is None else round(self._audio_wait_ms, 4),
            "audio_features": round((t2 - t1) * 1e3 - (self._audio_wait_ms or 0.0), 4),
            "inference": round((t3 - t2) * 1e3, 4),
            "invoke": None if self.backend.last_invoke_s is None else round(self.backend.last_invoke_s * 1e3, 4),
            "postprocess": round((t4 - t3) * 1e3, 4),
            "loop": round((t4 - t0) * 1e3, 4),
            "sensor_to_decision": round((now - frame.t) * 1e3, 3) if (frame and live) else None,
            "outside_invoke": round((t4 - t0) * 1e3 - (self._audio_wait_ms or 0.0)
                                    - (self.backend.last_invoke_s or 0.0) * 1e3, 4),
            "label": decision.label, "confidence": round(decision.confidence, 4),
        })
        self.recorder.add(rec)
        if decision.changed or self.options.every:
            media_t = (frame.t - self.camera.clock_start) if frame is not None else 0.0
            if self.options.json_lines:
                self.emit(json.dumps({"type": "decision", "t": round(media_t, 3), "label": decision.label,
                                      "confidence": round(decision.confidence, 4), "top": decision.top}))
            else:
                top = ", ".join(f"{label} {p:.2f}" for label, p in decision.top)
                self.emit(f"{media_t:8.2f}s  {decision.label:>6}  ({decision.confidence:.2f})   top: {top}")

    # -- the loop --------------------------------------------------------------------------------------
    def run(self) -> dict:
        o = self.options
        live = not o.unpaced
        interval = 1.0 / o.max_rate if o.max_rate else 0.0
        last_t = -1e9
        started = time.monotonic()
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, lambda *_: self.stop_event.set())
            except ValueError:  # not the main thread (e.g. tests): Ctrl-C handling stays with the caller
                pass
        try:
            if live:
                for source in (self.camera, self.mic):
                    if source is not None:
                        source.start()
            while not self.stop_event.is_set():
                if o.duration is not None and live and time.monotonic() - started >= o.duration:
                    break
                frame = self._next_frame(live)
                if frame is None:
                    if self.camera is None or not self.camera.ended:
                        continue
                    break
                if o.duration is not None and not live and frame.t - self.camera.clock_start >= o.duration:
                    break
                if frame.t - last_t < 0.8 * interval:  # 20 % slack: camera jitter at the cap rate is not a skip
                    self.recorder.counters["frames_skipped_rate_cap"] = self.recorder.counters.get(
                        "frames_skipped_rate_cap", 0) + 1
                    continue
                last_t = frame.t
                if not live and self.mic is not None:
                    self.mic.feed_until(frame.t)
                self.step(frame, time.monotonic(), live)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for source in (self.camera, self.mic):
                if source is not None:
                    source.stop()
        return self.finish(time.monotonic() - started)

    def _next_frame(self, live: bool):
        if self.camera is None:  # audio-only model: pace by the rate cap
            time.sleep(1.0 / self.options.max_rate)
            from edgemm.capture.camera import Frame

            return Frame(np.zeros((1, 1, 3), np.uint8), time.monotonic(), 0)
        return self.camera.next_frame(timeout=1.0) if live else self.camera.read_next()

    def finish(self, wall_seconds: float) -> dict:
        c = self.recorder.counters
        if self.camera is not None:
            c.update({"frames_captured": self.camera.frames_captured, "frames_dropped": self.camera.frames_dropped,
                      "camera_reconnects": self.camera.reconnects, "camera_read_errors": self.camera.read_errors})
        if self.mic is not None:
            c.update({"audio_overflows": self.mic.ring.overflows, "audio_timestamp_repairs": self.mic.ring.gaps,
                      "audio_dropouts": self.mic.ring.dropouts, "audio_samples": self.mic.ring.total,
                      "audio_stream_errors": getattr(self.mic, "stream_errors", 0),
                      "audio_reopens": getattr(self.mic, "reopens", 0),
                      "audio_callback_errors": getattr(self.mic, "callback_errors", 0)})
            if self.features is not None:
                c["audio_frames_computed"] = self.features.computed
        c["backend_errors"] = self.errors
        self.recorder.info["wall_seconds"] = round(wall_seconds, 3)
        return self.recorder.summary()
