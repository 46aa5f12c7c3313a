"""The device loop: trigger -> inputs from the spec -> backend -> heads -> record.

Trigger: with a camera input, every new frame of the first camera input's source (capture time T,
capped at --rate); audio-only models run every `hop` seconds of new audio. Each mic input gets the
audio window ending at T, snapped to its hop grid; other cameras give their newest frame; state
inputs get the previous inference's output; constants are fed as given.

Two modes: live (sources run in their own threads, files paced at their native rate) and
`unpaced` (file sources only: frames are pulled one after another and WAVs are fed up to each
trigger's media time, as fast as the machine goes; for benchmarks and tests).
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from typing import Callable

from edgemm.binding import Binding
from edgemm.errors import InputError
from edgemm.runtime.feeds import AudioFeed, CameraFeed, StateFeed
from edgemm.runtime.heads import Heads
from edgemm.runtime.stats import StatsRecorder


@dataclasses.dataclass(frozen=True)
class RunOptions:
    duration: float | None = None  # seconds of wall time (live) or media time (unpaced); None: until a source ends
    max_rate: float = 30.0  # inferences per second at most (every new frame, capped)
    hop: float | None = None  # audio-only models: seconds of new audio between inferences (None: see Runner)
    smoothing: float = 0.5  # EMA weight of the newest output
    threshold: float = 0.5  # smoothed probability needed to announce a decision
    top_k: int = 3
    audio_wait: float = 0.1  # seconds to wait for audio to reach the frame's capture time
    json_lines: bool = False
    every: bool = False  # print every inference, not only decision changes
    unpaced: bool = False
    on_error: str = "continue"  # backend error policy: continue | stop
    max_errors: int = 10


def default_hop(binding: Binding) -> float:
    """Audio-only models run every min(window, 0.25 s) of new audio: a streaming model whose window is a
    short chunk (e.g. 32 ms with a recurrent state) sees every chunk once; a 1 s keyword model is
    re-evaluated 4 times a second, as Edge Impulse's continuous mode does."""
    mics = [b.spec.transform for b in binding.inputs.values() if b.spec.source == "mic"]
    return min(mics[0].window, 0.25)


class Runner:
    def __init__(self, binding: Binding, selected, cameras: dict, mics: dict, routes: dict[str, str],
                 options: RunOptions, recorder: StatsRecorder, emit: Callable[[str], None] = print,
                 tap: Callable | None = None, outputs_file=None):
        self.binding, self.backend, self.selected = binding, selected.backend, selected
        self.options, self.recorder, self.emit, self.tap = options, recorder, emit, tap
        self.cameras, self.mics = cameras, mics
        self.camera_feeds = [CameraFeed(b, cameras[routes[n]]) for n, b in binding.inputs.items()
                             if b.spec.source == "camera"]
        self.audio_feeds = [AudioFeed(b, mics[routes[n]], options.audio_wait) for n, b in binding.inputs.items()
                            if b.spec.source == "mic"]
        self.state_feeds = [StateFeed(b) for b in binding.inputs.values() if b.spec.source == "state"]
        self.constants = {n: b.constant() for n, b in binding.inputs.items() if b.spec.source == "constant"}
        self.camera = self.camera_feeds[0].camera if self.camera_feeds else None  # the trigger
        self.mic = self.audio_feeds[0].mic if self.audio_feeds else None
        if self.camera is None and self.mic is None:
            raise InputError("the spec has no camera or mic input: nothing would trigger an inference")
        self.heads = Heads(binding, options, emit, outputs_file)
        self.hop = options.hop or (default_hop(binding) if self.camera is None else None)
        self.stop_event = threading.Event()
        self.errors = 0

    # -- one inference ---------------------------------------------------------------------------------
    def _camera_inputs(self, frame, feeds: dict, rec: dict) -> None:
        image_ms = 0.0
        for feed in self.camera_feeds:
            f = frame if feed.camera is self.camera else self._newest(feed.camera)
            if f is None:
                raise InputError(f"camera {feed.camera.uri} has no frame yet")
            feeds[feed.bound.name], ms = feed.value(f)
            image_ms += ms if f.prepared is None else (f.prepare_ms or 0.0)
        rec["image_pre"] = round(image_ms, 4) if self.camera_feeds else None

    def _newest(self, camera):
        return camera.read_next() if self.options.unpaced else camera.latest()

    def _audio_inputs(self, t_ref: float, t_take: float, live: bool, feeds: dict, rec: dict) -> dict:
        ends, waited = {}, 0.0
        for i, feed in enumerate(self.audio_feeds):
            end, pairing_ms, wait_ms = feed.end_index(t_ref, live)
            waited += wait_ms
            ends[feed.bound.name] = end
            feeds[feed.bound.name] = feed.value(end)
            if i == 0:
                rec["pairing_error"] = round(pairing_ms, 3)
                rec["audio_age"] = round((t_take - t_ref) * 1e3 - pairing_ms, 3) if live else None
        rec["audio_wait"] = round(waited, 4) if self.audio_feeds else None
        return ends

    def step(self, frame, t_ref: float, t_take: float, live: bool) -> None:
        perf = time.perf_counter
        clock_start = (self.camera or self.mic).clock_start
        media_t = t_ref - clock_start
        rec: dict = {"t": round(t_ref, 6), "seq": frame.seq if frame else None, "media_t": round(media_t, 4)}
        t0 = perf()
        feeds = dict(self.constants)
        for s in self.state_feeds:
            feeds[s.bound.name] = s.current
        self._camera_inputs(frame, feeds, rec)
        t1 = perf()
        ends = self._audio_inputs(t_ref, t_take, live, feeds, rec)
        t2 = perf()
        try:
            out = self.backend.run(feeds)
        except Exception as e:  # a backend failing on one input is counted; the policy decides
            self._backend_error(e, rec)
            return
        t3 = perf()
        for s in self.state_feeds:
            s.update(out)
        summary = self.heads.update(out, media_t, rec)
        t4 = perf()
        if self.tap is not None:
            first = self.audio_feeds[0] if self.audio_feeds else None
            self.tap(frame, first.window(ends[first.bound.name]) if first else None, summary)
        self._record(rec, frame, t_take, live, (t0, t1, t2, t3, t4))

    def _backend_error(self, e: Exception, rec: dict) -> None:
        self.errors += 1
        self.recorder.counters["backend_errors"] = self.errors
        self.emit(f"backend error on input {rec['seq'] if rec['seq'] is not None else rec['t']}: "
                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
        if self.options.on_error == "stop" or self.errors >= self.options.max_errors:
            raise InputError(f"backend failed {self.errors} time(s); last error: {e}") from None

    def _record(self, rec: dict, frame, t_take: float, live: bool, marks: tuple) -> None:
        t0, t1, t2, t3, t4 = marks
        wait = rec.get("audio_wait") or 0.0
        invoke = self.backend.last_invoke_s
        now = time.monotonic()
        rec.update({
            "frame_age": round((t_take - frame.t) * 1e3, 3) if (frame and live) else None,
            "audio_features": round((t2 - t1) * 1e3 - wait, 4) if self.audio_feeds else None,
            "inference": round((t3 - t2) * 1e3, 4),
            "invoke": None if invoke is None else round(invoke * 1e3, 4),
            "postprocess": round((t4 - t3) * 1e3, 4),
            "loop": round((t4 - t0) * 1e3, 4),
            "sensor_to_decision": round((now - frame.t) * 1e3, 3) if (frame and live) else None,
            "outside_invoke": round((t4 - t0) * 1e3 - wait - (invoke or 0.0) * 1e3, 4),
        })
        self.recorder.add(rec)

    # -- the loop --------------------------------------------------------------------------------------
    def run(self) -> dict:
        live = not self.options.unpaced
        started = time.monotonic()
        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, lambda *_: self.stop_event.set())
            except ValueError:  # not the main thread (e.g. tests): Ctrl-C handling stays with the caller
                pass
        sources = [*self.cameras.values(), *self.mics.values()]
        try:
            if live:
                for source in sources:
                    source.start()
            if self.camera is not None:
                self._frame_loop(live, started)
            else:
                self._audio_loop(live, started)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for source in sources:
                source.stop()
        return self.finish(time.monotonic() - started)

    def _over(self, live: bool, started: float, media_t: float) -> bool:
        d = self.options.duration
        if self.stop_event.is_set():
            return True
        return d is not None and (time.monotonic() - started >= d if live else media_t >= d)

    def _frame_loop(self, live: bool, started: float) -> None:
        interval = 1.0 / self.options.max_rate if self.options.max_rate else 0.0
        last_t = -1e9
        while not self._over(live, started, 0.0):
            frame = self.camera.next_frame(timeout=1.0) if live else self.camera.read_next()
            if frame is None:
                if not self.camera.ended:
                    continue
                break
            if not live and self._over(live, started, frame.t - self.camera.clock_start):
                break
            if frame.t - last_t < 0.8 * interval:  # 20 % slack: camera jitter at the cap rate is not a skip
                c = self.recorder.counters
                c["frames_skipped_rate_cap"] = c.get("frames_skipped_rate_cap", 0) + 1
                continue
            last_t = frame.t
            if not live:
                for mic in self.mics.values():
                    mic.feed_until(frame.t)
            self.step(frame, frame.t, time.monotonic(), live)

    def _audio_loop(self, live: bool, started: float) -> None:
        """Audio-only models: one inference per `hop` seconds of new audio on the first mic."""
        mic, ring = self.mic, self.mic.ring
        hop = max(1, int(round(self.hop * ring.rate)))
        next_end = int(round(self.audio_feeds[0].transform.window * ring.rate))  # the first full window
        while True:
            t_end = mic.clock_start + next_end / ring.rate
            if self._over(live, started, t_end - mic.clock_start):
                break
            if live:
                if not ring.wait_for(next_end, 1.0):
                    if getattr(mic, "ended", False):
                        break
                    continue
            else:
                for m in self.mics.values():
                    m.feed_until(t_end)
                if ring.total < next_end:
                    break
            t_ref = ring.time_of(next_end)
            self.step(None, t_ref, time.monotonic(), live)
            next_end += hop

    def source_counters(self) -> dict[str, int]:
        """The sources' and backend's counters as they stand (read while running by /metrics, and into the
        summary by finish)."""
        c = {}
        if self.camera is not None:
            c.update({"frames_captured": self.camera.frames_captured, "frames_dropped": self.camera.frames_dropped,
                      "camera_reconnects": self.camera.reconnects, "camera_read_errors": self.camera.read_errors,
                      "camera_stalls": self.camera.stalls})
        if self.mic is not None:
            ring = self.mic.ring
            c.update({"audio_overflows": ring.overflows, "audio_timestamp_repairs": ring.gaps,
                      "audio_dropouts": ring.dropouts, "audio_samples": ring.total,
                      "audio_stream_errors": getattr(self.mic, "stream_errors", 0),
                      "audio_reopens": getattr(self.mic, "reopens", 0),
                      "audio_callback_errors": getattr(self.mic, "callback_errors", 0)})
            if self.audio_feeds[0].incremental is not None:
                c["audio_frames_computed"] = sum(f.computed for f in self.audio_feeds)
        c["backend_errors"] = self.errors
        return c

    def finish(self, wall_seconds: float) -> dict:
        self.recorder.counters.update(self.source_counters())
        self.heads.close()
        self.recorder.info["wall_seconds"] = round(wall_seconds, 3)
        return self.recorder.summary()
