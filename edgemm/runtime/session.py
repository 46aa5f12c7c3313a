"""One `edgemm run`: bind inputs to sources, open them and the backend, run the loop, always write the summary.

Sources: `camera` binds every camera input, `mic` every mic input, and `sources` ({input: SRC}) binds
one input each (a second camera, a second microphone). Each distinct SRC is opened once.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from edgemm.binding import Binding, Tensor, bind
from edgemm.errors import InputError
from edgemm.manifest import Manifest
from edgemm.runtime.loop import RunOptions, Runner
from edgemm.runtime.select import open_backend_for
from edgemm.runtime.metrics import ModelInfo, device_id, serve_metrics
from edgemm.runtime.stats import StatsRecorder, check_stats_path
from edgemm.layout import SourceLayoutOutputs
from edgemm.spec import ModelSpec


def open_mic(mic: str, rate: int, realtime: bool, clock_start: float):
    from edgemm.capture.audio import MicSource, WavSource

    if mic.lower().endswith(".wav") or Path(mic).is_file():
        return WavSource(mic, rate, realtime=realtime, clock_start=clock_start)
    if not realtime:
        raise InputError("--unpaced needs file sources (video files and WAV files)")
    return MicSource(mic, rate)


def route_sources(spec: ModelSpec, camera: str | None, mic: str | None,
                  sources: dict[str, str] | None = None) -> dict[str, str]:
    """{input name: SRC} for every camera and mic input of the spec; one line says what is missing."""
    sources = dict(sources or {})
    unknown = [n for n in sources if n not in spec.inputs or spec.inputs[n].source not in ("camera", "mic")]
    if unknown:
        sensors = [n for n, i in spec.inputs.items() if i.source in ("camera", "mic")]
        raise InputError(f"--source {unknown[0]}=...: not a camera or mic input of this model "
                         f"(those are: {', '.join(sensors) or 'none'})")
    routes = {}
    for name, item in spec.inputs.items():
        if item.source not in ("camera", "mic"):
            continue
        src = sources.get(name) or (camera if item.source == "camera" else mic)
        if src is None:
            flag = "--camera" if item.source == "camera" else "--mic"
            raise InputError(f"input {name!r} reads the {item.source}: add {flag} SRC (or --source {name}=SRC)")
        routes[name] = src
    if not routes:
        raise InputError("this model's spec has no camera or mic input: there is nothing to capture")
    return routes


def _open_sources(spec: ModelSpec, routes: dict[str, str], unpaced: bool, clock_start: float):
    from edgemm.capture.camera import CameraSource

    cameras, mics = {}, {}
    try:
        for name, src in sorted(routes.items(), key=lambda r: spec.inputs[r[0]].source != "camera"):  # cameras first
            item = spec.inputs[name]
            if item.source == "camera" and src not in cameras:
                transforms = {n: spec.inputs[n].transform for n, s in routes.items()
                              if s == src and spec.inputs[n].source == "camera"}
                prepare = None if unpaced else (lambda image, t=transforms: {n: tr.apply(image) for n, tr in t.items()})
                cameras[src] = CameraSource(src, realtime=not unpaced, clock_start=clock_start, prepare=prepare)
                if unpaced and cameras[src].kind != "file":
                    raise InputError("--unpaced needs file sources (video files and WAV files)")
            elif item.source == "mic" and src not in mics:
                mics[src] = open_mic(src, item.transform.sample_rate, not unpaced, clock_start)
    except BaseException:
        for source in [*cameras.values(), *mics.values()]:
            source.stop()
        raise
    return cameras, mics


def bind_backend(manifest: Manifest, selected) -> Binding:
    """The manifest's spec checked against the opened model's real tensors."""
    backend = selected.backend
    return bind(manifest.spec_for(selected.artifact), [Tensor.of(t) for t in backend.inputs],
                [Tensor.of(t) for t in backend.outputs], str(selected.path))


def run_session(manifest: Manifest, *, camera: str | None = None, mic: str | None = None,
                sources: dict[str, str] | None = None, backend: str = "auto", artifact: str | None = None,
                threads: int | None = None, duration: float | None = None, max_rate: float = 30.0,
                hop: float | None = None, smoothing: float = 0.5, threshold: float = 0.5, stats: Path | None = None,
                outputs: Path | None = None, metrics_port: int | None = None, metrics_host: str = "127.0.0.1",
                metrics_device: str | None = None, unpaced: bool = False, every: bool = False,
                as_json: bool = False, started: float | None = None,
                emit: Callable[[str], None] = print, note: Callable[[str], None] = print, tap=None,
                profile=None, on_error: str = "continue", backend_wrapper=None) -> dict:
    started = time.monotonic() if started is None else started
    if profile is not None:  # the board's defaults where the command line says nothing
        threads = threads or profile.threads
    if manifest.spec is None:
        raise InputError(f"{manifest.directory}: the manifest has no model spec; convert with a spec "
                         "(MODEL.yaml beside the model or --spec; `edgemm spec MODEL` writes a template)")
    device = device_id(metrics_device) if (metrics_port or metrics_device is not None) else None
    routes = route_sources(manifest.spec, camera, mic, sources)
    for path, flag in ((stats, "--stats"), (outputs, "--outputs")):
        if path is not None:
            check_stats_path(path, flag)
    cameras, mics = _open_sources(manifest.spec, routes, unpaced, time.monotonic() + 0.05)
    all_sources = [*cameras.values(), *mics.values()]
    try:
        selected = open_backend_for(manifest, backend, artifact, threads, profile=profile, note=note)
        selected.backend = SourceLayoutOutputs.wrap(selected.backend, manifest.perms(selected.artifact, "outputs"))
        binding = bind_backend(manifest, selected)
    except BaseException:
        for source in all_sources:
            source.stop()
        raise
    for line in selected.tried:
        note(f"backend {line.split(':')[0]} not used: {line.split(':', 1)[1].strip()}")
    note(f"backend {selected.name} ({selected.backend.name}) running {selected.path.name}")
    clock_start = time.monotonic() + 0.05  # media timelines start now, after the (possibly slow) backend start
    for source in all_sources:
        source.clock_start = clock_start
        source.note = note  # "camera lost, reconnecting" and the like, one line each
    options = RunOptions(duration=duration, max_rate=max_rate, hop=hop, smoothing=smoothing, threshold=threshold,
                         json_lines=as_json, every=every, unpaced=unpaced, on_error=on_error)
    if backend_wrapper is not None:  # fault injection in tests
        selected.backend = backend_wrapper(selected.backend)
    metrics = None
    if metrics_port:
        info = ModelInfo(model_sha256=manifest.artifacts[selected.artifact].sha256, artifact=selected.artifact,
                         backend=selected.backend.name, profile="none" if profile is None else profile.name)
        metrics = {"port": metrics_port, "host": metrics_host, "device": device, "info": info}
    return _run(selected, binding, cameras, mics, routes, options, stats=stats, outputs=outputs,
                metrics=metrics, profile=profile, emit=emit, tap=tap, started=started)


def _run(selected, binding, cameras, mics, routes, options: RunOptions, *, stats, outputs, metrics, profile, emit,
         tap, started: float) -> dict:
    recorder = StatsRecorder(stats)
    all_sources = [*cameras.values(), *mics.values()]
    runner = summary = None

    def live() -> dict:  # `runner` as it is when scraped: made below, once the port is ours
        return {} if runner is None else runner.source_counters()

    try:
        server = serve_metrics(recorder, **metrics, live=live) if metrics else None
        outputs_file = open(outputs, "a", encoding="utf-8") if outputs else None
    except BaseException:  # e.g. the port is taken: nothing ran, so nothing is appended to the stats file
        recorder.close()
        for source in all_sources:
            source.stop()
        raise
    first_mic = next(iter(mics.values()), None)
    recorder.info.update({
        "backend": selected.backend.name, "artifact": selected.artifact, "sources": routes,
        "camera": next(iter(cameras), None), "microphone": getattr(first_mic, "device", None),
        "audio_input_latency_s": getattr(first_mic, "input_latency", None), "unpaced": options.unpaced,
        "init_seconds": round(time.monotonic() - started, 3), "profile": None if profile is None else profile.name,
    })
    from edgemm.profiles import Telemetry, read_telemetry

    telemetry = profile.telemetry if profile is not None else Telemetry(
        thermal_zones="/sys/class/thermal/thermal_zone*/temp", clocks="/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq")
    recorder.info["telemetry_start"] = read_telemetry(telemetry)
    try:
        runner = Runner(binding, selected, cameras, mics, routes, options, recorder, emit, tap, outputs_file)
        summary = runner.run()
        summary["telemetry_end"] = read_telemetry(telemetry)
        return summary
    finally:
        if summary is None:  # an error or interruption: still write what was measured
            summary = recorder.summary()
            summary["interrupted"] = True
            if outputs_file is not None:
                outputs_file.close()
        recorder.close(summary)
        if server is not None:
            server.shutdown()
        if runner is None:
            for source in all_sources:
                source.stop()
