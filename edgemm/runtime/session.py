"""One `edgemm run`: open the backend and the sources, run the loop, always write the summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from edgemm.errors import InputError
from edgemm.manifest import Manifest
from edgemm.runtime.loop import RunOptions, Runner
from edgemm.runtime.select import open_backend_for
from edgemm.runtime.stats import StatsRecorder, check_stats_path, serve_metrics


def open_mic(mic: str, rate: int, realtime: bool, clock_start: float):
    from edgemm.capture.audio import MicSource, WavSource

    if mic.lower().endswith(".wav") or Path(mic).is_file():
        return WavSource(mic, rate, realtime=realtime, clock_start=clock_start)
    if not realtime:
        raise InputError("--unpaced needs file sources (a video file and a WAV file)")
    return MicSource(mic, rate)


def run_session(manifest: Manifest, *, camera: str | None, mic: str | None, backend: str = "auto",
                artifact: str | None = None, threads: int | None = None, duration: float | None = None,
                max_rate: float = 30.0, smoothing: float = 0.5, threshold: float = 0.5, stats: Path | None = None,
                metrics_port: int | None = None, metrics_host: str = "127.0.0.1", unpaced: bool = False,
                every: bool = False, as_json: bool = False, started: float | None = None,
                emit: Callable[[str], None] = print, note: Callable[[str], None] = print, tap=None,
                profile=None, on_error: str = "continue", backend_wrapper=None) -> dict:
    from edgemm.capture.camera import CameraSource
    from edgemm.preprocess import preprocess_image

    started = time.monotonic() if started is None else started
    if profile is not None:  # the board's defaults where the command line says nothing
        threads = threads or profile.threads
    if camera is None and mic is None:
        raise InputError("give --camera and/or --mic")
    if manifest.preprocess is None:
        raise InputError(f"{manifest.directory}: the manifest has no preprocessing spec; edgemm run needs one")
    if stats is not None:
        check_stats_path(stats)
    clock_start = time.monotonic() + 0.05
    cam = src_mic = None
    try:
        if camera is not None:
            image_spec = manifest.preprocess.image
            cam = CameraSource(camera, realtime=not unpaced, clock_start=clock_start,
                               prepare=None if unpaced else (lambda image: preprocess_image(image, image_spec)))
            if unpaced and cam.kind != "file":
                raise InputError("--unpaced needs file sources (a video file and a WAV file)")
        if mic is not None:
            src_mic = open_mic(mic, manifest.preprocess.audio.sample_rate, not unpaced, clock_start)
        selected = open_backend_for(manifest, backend, artifact, threads, profile=profile, note=note)
    except BaseException:
        for source in (cam, src_mic):
            if source is not None:
                source.stop()
        raise
    for line in selected.tried:
        note(f"backend {line.split(':')[0]} not used: {line.split(':', 1)[1].strip()}")
    note(f"backend {selected.name} ({selected.backend.name}) running {selected.path.name}")
    clock_start = time.monotonic() + 0.05  # media timelines start now, after the (possibly slow) backend start
    for source in (cam, src_mic):
        if source is not None and hasattr(source, "clock_start"):
            source.clock_start = clock_start
        if source is not None:
            source.note = note  # "camera lost, reconnecting" and the like, one line each
    recorder = StatsRecorder(stats)
    try:
        server = serve_metrics(recorder, metrics_port, metrics_host) if metrics_port else None
    except BaseException:  # e.g. the port is taken: nothing ran, so nothing is appended to the stats file
        recorder.close()
        for source in (cam, src_mic):
            if source is not None:
                source.stop()
        raise
    recorder.info.update({
        "backend": selected.backend.name, "artifact": selected.artifact, "camera": camera,
        "microphone": getattr(src_mic, "device", None), "audio_input_latency_s": getattr(src_mic, "input_latency", None),
        "unpaced": unpaced, "init_seconds": round(time.monotonic() - started, 3),
        "profile": None if profile is None else profile.name,
    })
    from edgemm.profiles import Telemetry, read_telemetry

    telemetry = profile.telemetry if profile is not None else Telemetry(
        thermal_zones="/sys/class/thermal/thermal_zone*/temp", clocks="/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq")
    recorder.info["telemetry_start"] = read_telemetry(telemetry)
    options = RunOptions(duration=duration, max_rate=max_rate, smoothing=smoothing, threshold=threshold,
                         json_lines=as_json, every=every, unpaced=unpaced, on_error=on_error)
    if backend_wrapper is not None:  # fault injection in tests
        selected.backend = backend_wrapper(selected.backend)
    runner = None
    summary = None
    try:
        runner = Runner(manifest, selected, cam, src_mic, options, recorder, emit, tap)
        summary = runner.run()
        summary["telemetry_end"] = read_telemetry(telemetry)
        return summary
    finally:
        if summary is None:  # an error or interruption: still write what was measured
            summary = recorder.summary()
            summary["interrupted"] = True
        recorder.close(summary)
        if server is not None:
            server.shutdown()
        if runner is None:
            for source in (cam, src_mic):
                if source is not None:
                    source.stop()
