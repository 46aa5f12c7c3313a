"""The `edgemm` command line: one click group, thin commands.

Each command parses its options, calls one library function and prints.
Every :class:`EdgemmError` becomes a one-line message and its exit code.
"""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import click

from edgemm import __version__, logs
from edgemm.backends.registry import NAMES as BACKEND_NAMES
from edgemm.atomic import check_output_dir
from edgemm.errors import DependencyError, EdgemmError
from edgemm.progress import Progress


class EdgemmGroup(click.Group):
    """Maps edgemm's own errors to a one-line message and a documented exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgemmError as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(e.exit_code)


@contextlib.contextmanager
def _sigterm_unwinds():
    """SIGTERM (a cancelled CI job, `kill`) unwinds like Ctrl-C, so the cleanup runs: the child processes are
    stopped, the staging directory is removed and the previous output directory stays as it was."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _converters() -> None:
    """Checks that the converter side (TensorFlow/Keras) is installed, or explains how to get it. Only looked
    up, not imported: convert runs it in a child process, and importing TensorFlow here would cost seconds."""
    import importlib.util

    for name in ("tensorflow", "keras", "tf2onnx", "onnx"):
        if importlib.util.find_spec(name) is None:
            raise DependencyError(f"this command needs the converter extra ({name} missing): pip install 'edgemm[convert]'")


@click.group(cls=EdgemmGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgemm")
@click.option("-v", "--verbose", is_flag=True,
              help="Show the libraries' own logs and warnings too (TensorFlow, absl, LiteRT, ONNX Runtime).")
def main(verbose: bool) -> None:
    """edgemm: convert, run and benchmark camera + microphone models on edge devices."""
    logs.set_verbose(verbose)  # an environment variable: the processes edgemm starts follow it


def _size(text: str | None) -> int | None:
    """'600K', '1.5M', '2000000' -> bytes."""
    if text is None:
        return None
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    t = text.strip().upper().removesuffix("B")
    try:
        return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size like 600K, 1.5M or 2000000") from None


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output directory for artifacts and manifest.")
@click.option("--calib", type=click.Path(path_type=Path), default=None,
              help="Calibration .npz (required): one array per model input, keyed by input name, first axis = "
              "samples; optional 'label' array for accuracy.")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Validation .npz, same layout [default: the part of --calib not used to calibrate].")
@click.option("--train", type=click.Path(path_type=Path), default=None,
              help="Training .npz for --prune/--distill, same layout [default: the --calib samples].")
@click.option("--calib-samples", type=click.IntRange(1), default=300, show_default=True,
              help="Calibrate on the first N samples of --calib.")
@click.option("--method", type=click.Choice(["auto", "minmax", "entropy", "percentile"]), default="auto",
              show_default=True, help="int8 activation ranges: auto chooses per tensor among min/max, percentile, "
              "entropy and MSE by the error on held-out calibration samples; the others use one method for all.")
@click.option("--per-channel/--per-tensor", default=True, show_default=True, help="ONNX weight quantization granularity.")
@click.option("--tflite-weights", type=click.Choice(["auto", "per-tensor", "per-channel"]), default="auto",
              show_default=True, help="int8 TFLite weight granularity; auto: per-tensor (smaller), per-channel "
              "if per-tensor loses more than the accuracy budget (0.5 points or --max-accuracy-drop).")
@click.option("--reduce-range", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="7-bit ONNX weights; auto turns it on when int8 kernels saturate on this CPU (no VNNI).")
@click.option("--keep-float", default=None,
              help="ONNX nodes kept in float: comma-separated names, or 'auto' (worst layers until --max-accuracy-drop holds).")
@click.option("--keep-float-steps", type=click.IntRange(min=1), default=8, show_default=True,
              help="Most re-quantizations --keep-float auto tries (each one more layer in float).")
@click.option("--max-accuracy-drop", type=float, default=None, help="Gate: most accuracy points an int8 artifact may lose.")
@click.option("--max-size", default=None, help="Gate: largest int8 artifact, e.g. 600K or 2M.")
@click.option("--require-edgetpu-mappable", is_flag=True, help="Gate: every op of the int8 TFLite maps to the Edge TPU.")
@click.option("--format", "formats", default="tflite,onnx", show_default=True, help="Artifact formats to produce.")
@click.option("--spec", "spec", type=click.Path(path_type=Path), default=None,
              help="Model spec (YAML/JSON: inputs' sources and transforms, outputs' heads) "
              "[default: MODEL.yaml, .yml or .json beside the model]; `edgemm spec MODEL` writes a template.")
@click.option("--input-shape", "input_shapes", multiple=True, metavar="NAME=D0,D1,...",
              help="Fix a dynamic input's shape, e.g. x=1,3,48,192 (repeatable); dimensions sharing one symbolic "
              "name are fixed one by one.")
@click.option("--custom-code", type=click.Path(path_type=Path), default=None, metavar="FILE.py",
              help="Keras source with custom or Lambda layers: RUNS this Python file and gives the classes and "
              "functions it defines to Keras (safe mode off). Only for code you trust.")
@click.option("--min-agreement", type=click.FloatRange(0.0, 1.0), default=0.90, show_default=True,
              help="Gate: top-1 (classify) or per-label (multilabel) agreement of every artifact with the float model.")
@click.option("--min-sqnr", "min_sqnr", type=float, default=20.0, show_default=True,
              help="Gate: SQNR in dB of every raw/state output of every artifact against the float model.")
@click.option("--prune", type=click.FloatRange(0.0, 0.95), default=None,
              help="Structured pruning: remove this fraction of the channels of every prunable layer, then fine-tune.")
@click.option("--distill", is_flag=True, help="Train the pruned model / --student on MODEL's softened outputs.")
@click.option("--student", type=click.Path(path_type=Path), default=None,
              help="Student for --distill: a .keras model with MODEL's inputs and classes.")
@click.option("--epochs", type=click.IntRange(1), default=12, show_default=True, help="Fine-tuning / distillation epochs.")
@click.option("--temperature", type=click.FloatRange(min=0.1), default=4.0, show_default=True)
@click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=0.7, show_default=True,
              help="Weight of the teacher's soft targets (1 - alpha: hard labels).")
@click.option("--target", default=None,
              help="Device profile (firmware_configs/NAME.yaml): the artifacts the board needs, its budgets as gates.")
@click.option("--int16x8", "int16x8", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Also write int16x8.tflite (16-bit activations, for CPU/GPU TFLite targets); auto: when int8 TFLite "
              "misses 99 % agreement / 30 dB / the accuracy budget and --target is not an Edge TPU.")
@click.option("--qat", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="Quantization-aware fine-tuning of the int8 TFLite's weights and ranges on the calibration samples "
              "(the Edge TPU's only lever: full int8), kept only if closer; auto: when int8 TFLite misses 99 % "
              "agreement / 30 dB / the accuracy budget.")
@click.option("--qat-seconds", "qat_seconds", type=click.FloatRange(min=1.0), default=300.0, show_default=True,
              help="Longest quantization-aware fine-tuning (epochs stop before it would run over).")
@click.option("--equalize/--no-equalize", default=True, show_default=True,
              help="ONNX sources: cross-layer equalisation of Conv -> ReLU -> Conv pairs before quantizing (the same "
              "function, channel ranges evened out).")
@click.option("--bias-correction", "bias_correction", type=click.Choice(["auto", "on", "off"]), default="auto",
              show_default=True,
              help="int8 ONNX from a float model whose biases cancel the mean shift int8 weight rounding causes; auto: "
              "when int8 ONNX misses 99 % agreement / 30 dB / the accuracy budget, kept only if closer.")
@click.option("--compare-stock", is_flag=True,
              help="Also quantize with stock TFLite PTQ and stock ONNX Runtime quantize_static on the same samples and "
              "validate them the same way (report rows stock_*, files stock_int8.*; not in the manifest).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (it is also written to OUT/report.json).")
def convert(model, out, calib, val, train, calib_samples, method, per_channel, tflite_weights, reduce_range, keep_float,
            keep_float_steps,
            max_accuracy_drop, max_size, require_edgetpu_mappable, formats, spec, input_shapes, custom_code, min_agreement, min_sqnr, prune, distill, student, epochs,
            temperature, alpha, target, int16x8, qat, qat_seconds, equalize, bias_correction, compare_stock,
            as_json) -> None:
    """Quantize MODEL to int8 TFLite and int8 ONNX, validate, and apply CI gates.

    MODEL: .keras, .h5/.hdf5 (Keras 3, or legacy tf_keras in a child process), a SavedModel
    directory, a float .tflite, or .onnx (opset 11+; PyTorch, Paddle, TF exports). ONNX models get
    their TFLite through onnx2tf, with NHWC inputs (recorded in the manifest).

    With --prune and/or --distill (Keras sources), a smaller student is made first (load -> prune -> distill ->
    quantize -> export -> validate), each stage timed and reported.

    Exits 1 when a gate fails; the artifacts and report stay in OUT for inspection.
    """
    _converters()
    from converters.convert import ConvertOptions, convert as run_convert, summary_table

    wanted = tuple(f.strip() for f in formats.split(",") if f.strip())
    if not wanted or set(wanted) - {"tflite", "onnx"}:
        raise click.BadParameter(f"{formats!r}: choose from tflite, onnx", param_hint="--format")
    if keep_float is None:
        keep = ()
    elif keep_float.strip() == "auto":
        if max_accuracy_drop is None:
            raise click.BadParameter("'auto' needs --max-accuracy-drop as its budget", param_hint="--keep-float")
        keep = "auto"
    else:
        keep = tuple(n.strip() for n in keep_float.split(",") if n.strip())
    options = ConvertOptions(
        calib=calib, val=val, train=train, calib_samples=calib_samples, method=method, per_channel=per_channel,
        tflite_weights=tflite_weights, reduce_range=reduce_range, keep_float=keep, keep_float_steps=keep_float_steps,
        max_accuracy_drop=max_accuracy_drop, max_size=_size(max_size),
        require_edgetpu_mappable=require_edgetpu_mappable, formats=wanted, spec=spec,
        input_shapes=tuple(input_shapes), custom_code=custom_code,
        min_agreement=min_agreement, min_sqnr_db=min_sqnr,
        prune=prune or None, distill=distill, student=student, epochs=epochs, temperature=temperature, alpha=alpha,
        compare_stock=compare_stock, int16x8=int16x8, qat=qat, qat_seconds=qat_seconds, equalize=equalize,
        bias_correction=bias_correction,
    )
    if student is not None and not distill:
        raise click.BadParameter("a student is trained by distillation: add --distill", param_hint="--student")
    if target:
        import dataclasses as _dc

        from edgemm.profiles import load_profile

        profile = load_profile(target)
        wanted = tuple(f for f in ("tflite", "onnx") if any(a.endswith(f) for a in profile.artifacts))
        b = profile.budgets
        tighter = lambda a, c: c if a is None else (a if c is None else min(a, c))  # noqa: E731
        options = _dc.replace(
            options, formats=wanted, fp16_onnx="fp16_onnx" in profile.artifacts, target=profile.name,
            require_edgetpu_mappable=require_edgetpu_mappable or profile.require_edgetpu_mappable,
            max_size=tighter(options.max_size, b.max_model_bytes),
            max_accuracy_drop=tighter(options.max_accuracy_drop, b.max_accuracy_drop),
            max_latency_ms=b.max_latency_ms if profile.accelerator == "cpu" else None)
        click.echo(f"target {profile.name}: {', '.join(profile.artifacts)}; gates: size <= {options.max_size} bytes, "
                   f"accuracy drop <= {options.max_accuracy_drop} points"
                   + (", every op on the Edge TPU" if options.require_edgetpu_mappable else "")
                   + (f", median invoke <= {options.max_latency_ms} ms here" if options.max_latency_ms else
                      " (latency budget: measure on the board with edgemm bench)"), err=as_json)
    progress = Progress(err=as_json)
    from edgemm.errors import GateError

    check_output_dir(out, "--out")

    try:
        with _sigterm_unwinds():
            report = run_convert(model, out, options, log=progress.line, progress=progress.update)
    except GateError:
        progress.close()
        import json as _json

        report = _json.loads((out / "report.json").read_text())
        click.echo(_json.dumps(report, indent=2) if as_json else summary_table(report))
        raise
    finally:
        progress.close()
    click.echo(json.dumps(report, indent=2) if as_json else summary_table(report))


def summary_lines(summary: dict) -> list[str]:
    """What `edgemm run` prints after a run: counts, backend, and a table of the stage timings."""
    lines = [f"summary: {summary['inferences']} inferences in {summary.get('wall_seconds', 0):.1f} s"
             + (f" ({summary['inference_rate_hz']} /s)" if summary.get("inference_rate_hz") else "")
             + f", backend {summary.get('backend')}, init {summary.get('init_seconds')} s, peak RSS {summary['peak_rss_mb']} MB",
             f"  {'stage (ms)':<20} {'count':>6} {'mean':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"]
    for stage, d in summary["stages_ms"].items():
        if d.get("count"):
            lines.append(f"  {stage:<20} {d['count']:>6} {d['mean']:>8.3f} {d['p50']:>8.3f} {d['p90']:>8.3f} "
                         f"{d['p99']:>8.3f} {d['max']:>8.3f}")
    lines.append("  " + ", ".join(f"{k} {v}" for k, v in summary["counters"].items()))
    return lines


@main.command()
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="Directory with manifest.json (the output of edgemm convert).")
@click.option("--camera", default=None, is_flag=False, flag_value="0",
              help="Camera: index, /dev/videoN, video file, http(s)/rtsp URL, csi://N or a GStreamer pipeline [flag alone: 0].")
@click.option("--mic", default=None, is_flag=False, flag_value="default",
              help="Microphone: 'default', a PortAudio device index or name, or a WAV file [flag alone: default].")
@click.option("--source", "sources", multiple=True, metavar="NAME=SRC",
              help="Bind one model input to a camera or microphone (a second camera, a second mic); repeatable. "
              "--camera/--mic bind every camera/mic input not named here.")
@click.option("--backend", default="auto", show_default=True, type=click.Choice(["auto", *BACKEND_NAMES]))
@click.option("--artifact", default=None, help="Manifest artifact to run, e.g. int8_tflite [default: per backend].")
@click.option("--threads", type=click.IntRange(1), default=None, help="CPU threads for the backend.")
@click.option("--duration", type=click.FloatRange(min=0.0, min_open=True), default=None, help="Stop after S seconds.")
@click.option("--rate", "max_rate", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Inferences per second at most (every new frame, capped).")
@click.option("--smoothing", type=click.FloatRange(0.01, 1.0), default=0.5, show_default=True,
              help="Weight of the newest output in the moving average (1 = none).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Smoothed probability a classify decision needs before it is announced.")
@click.option("--hop", type=click.FloatRange(min=0.001), default=None,
              help="Audio-only models: seconds of new audio between inferences [default: min(window, 0.25 s)].")
@click.option("--stats", type=click.Path(path_type=Path), default=None, help="Append one JSON line per inference here.")
@click.option("--outputs", "outputs", type=click.Path(path_type=Path), default=None,
              help="Append every output tensor of every inference here, one JSON line each (raw heads, embeddings).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=None, help="Serve Prometheus metrics on this port.")
@click.option("--metrics-host", default="127.0.0.1", show_default=True,
              help="Address the metrics endpoint listens on (0.0.0.0: every interface, for a fleet's Prometheus).")
@click.option("--device-id", "device_id", default=None, metavar="NAME",
              help="The device label of every metric series, 1-64 of A-Z a-z 0-9 . _ : - [default: the host name].")
@click.option("--unpaced", is_flag=True, help="File sources only: as fast as possible, in media time.")
@click.option("--every", is_flag=True, help="Print every inference, not only when the decision changes.")
@click.option("--on-error", type=click.Choice(["continue", "stop"]), default="continue", show_default=True,
              help="When the backend fails on one input: count it and go on (up to 10), or stop.")
@click.option("--profile", "profile_name", default=None,
              help="Device profile (firmware_configs/NAME.yaml): its backend chain, threads, camera, microphone.")
@click.option("--json", "as_json", is_flag=True, help="Decisions and the summary as JSON lines.")
def run(model_dir, camera, mic, sources, backend, artifact, threads, duration, max_rate, smoothing, threshold, hop,
        stats, outputs, metrics_port, metrics_host, device_id, unpaced, every, on_error, profile_name,
        as_json) -> None:
    """Feed the model from its spec (cameras, microphones, state, constants), run it, print what each output says.

    A model with a camera input runs on every new frame (capped by --rate), pairing it with the audio window
    that ends at the frame's capture time; an audio-only model runs every --hop seconds of new audio.
    """
    import time as _time

    from edgemm.manifest import load_manifest
    from edgemm.runtime import session

    started = _time.monotonic()
    profile = None
    if profile_name:
        from edgemm.profiles import load_profile

        profile = load_profile(profile_name)
        camera = profile.camera.uri if camera is None else camera
        mic = profile.microphone.device if mic is None else mic
    bound = {}
    for item in sources:
        name, sep, src = item.partition("=")
        if not sep or not name or not src:
            raise click.BadParameter(f"{item!r} is not NAME=SRC", param_hint="--source")
        bound[name] = src
    manifest = load_manifest(model_dir)
    summary = session.run_session(
        manifest, profile=profile, on_error=on_error, camera=camera, mic=mic, sources=bound, backend=backend,
        artifact=artifact, threads=threads, duration=duration, max_rate=max_rate, hop=hop, smoothing=smoothing,
        threshold=threshold, stats=stats, outputs=outputs, metrics_port=metrics_port,
        metrics_host=metrics_host, metrics_device=device_id, unpaced=unpaced, every=every, as_json=as_json,
        started=started,
        emit=lambda line: click.echo(line), note=lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(json.dumps(summary))
    else:
        for line in summary_lines(summary):
            click.echo(line)


@main.command("spec")
@click.argument("model", type=click.Path(path_type=Path))
def spec_template(model: Path) -> None:
    """Print a model spec template for MODEL (.onnx, .tflite, .keras): every input and output with its shape and
    dtype, and a guessed source, layout and front-end to check and edit (save it as MODEL.yaml)."""
    from edgemm.spec_template import template

    click.echo(template(model), nl=False)


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers") from None
    if not values or min(values) < 1:
        raise click.BadParameter(f"{text!r}: thread counts must be >= 1")
    return values


@main.command()
@click.argument("model_dirs", nargs=-1, type=click.Path(path_type=Path))
@click.option("--backend", "backends", default="litert,ort-cpu", show_default=True,
              help="Backends to try: litert, ort-cpu, ort-cuda, ort-tensorrt (comma-separated).")
@click.option("--threads", default="1,2", show_default=True, help="Thread counts (comma-separated).")
@click.option("--artifact", "artifacts", default=None, help="Only these manifest artifacts (comma-separated).")
@click.option("--runs", type=click.IntRange(1), default=200, show_default=True, help="Timed single-stream runs.")
@click.option("--warmup", type=click.IntRange(0), default=20, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0.0), default=2.0, show_default=True,
              help="Seconds of back-to-back inference for the throughput figure.")
@click.option("--pipeline", "pipeline_media", nargs=2, type=click.Path(path_type=Path), default=None,
              help="VIDEO WAV: also run the edgemm run loop over them (unpaced) and report its stages.")
@click.option("--val", type=click.Path(path_type=Path), default=None,
              help="Validation .npz (one array per model input + 'label'): accuracy of each artifact; its first "
              "sample is the timing input [default: seeded random inputs, no accuracy].")
@click.option("--baseline", default=None, help="Configuration id for the ratios [default: the first].")
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Directory for report.json, report.md and report.html.")
@click.option("--compare", "compare_files", nargs=2, type=click.Path(path_type=Path), default=None,
              help="OLD.json NEW.json: flag regressions instead of benchmarking (exit 1 if any).")
@click.option("--tolerance", type=click.FloatRange(min=0.0), default=0.10, show_default=True,
              help="--compare: allowed median slow-down (0.10 = 10 %).")
@click.option("--merge", is_flag=True,
              help="The arguments are bench reports (report.json, or its directory) from several devices or models: "
              "write one report (--report OUT) showing them side by side.")
@click.option("--device-id", default=None,
              help="The name of this device in the report, shown by --merge [default: the host name].")
def bench(model_dirs, backends, threads, artifacts, runs, warmup, duration, pipeline_media, val, baseline,
          report_dir, compare_files, tolerance, merge, device_id) -> None:
    """Benchmark converted models (DIR = edgemm convert output) and write comparable reports.

    With --merge, put the reports of several runs (devices, models) side by side instead."""
    from edgemm.bench import report as reports
    from edgemm.bench.run import compare, run_bench
    from edgemm.manifest import is_model_dir
    from edgemm.errors import GateError, InputError

    if compare_files:
        old, new = (reports.load_report(p) for p in compare_files)
        findings = compare(old, new, tolerance)
        for f in findings:
            extra = f", accuracy {f['accuracy_change_points']:+.2f} points" if "accuracy_change_points" in f else ""
            click.echo(f"{'REGRESSION' if f['regression'] else 'ok':<10} {f['id']}: p50 {f['old_p50_ms']:.3f} -> "
                       f"{f['new_p50_ms']:.3f} ms ({f['ratio']:.2f}x){extra}")
        bad = [f for f in findings if f["regression"]]
        if not findings:
            raise InputError("the two reports have no configuration in common")
        if bad:
            raise GateError(f"{len(bad)} configuration(s) regressed beyond {tolerance:.0%}: "
                            + ", ".join(f["id"] for f in bad))
        return
    if merge:
        from edgemm.bench.merge import write_merged

        if report_dir is None:
            raise click.UsageError("--merge needs --report OUT")
        check_output_dir(report_dir, "--report")
        if is_model_dir(report_dir):
            raise InputError(f"--report {report_dir}: a model directory (it holds manifest.json), whose files "
                             "belong to convert: give another directory")
        paths = write_merged(list(model_dirs), report_dir)
        click.echo("reports: " + ", ".join(str(p) for p in paths.values()))
        return
    from edgemm.runtime.metrics import device_id as checked_device_id

    device_id = checked_device_id(device_id)  # the name --merge shows; the same rules as run's Prometheus label
    if not model_dirs:
        raise click.UsageError("give one or more model directories (or --compare OLD NEW, or --merge REPORTS)")
    if report_dir is None:
        raise click.UsageError("--report OUT is required when benchmarking")
    check_output_dir(report_dir, "--report")  # before minutes of measuring, not after
    if is_model_dir(report_dir):  # its report.json is convert's
        raise InputError(f"--report {report_dir}: a model directory (it holds manifest.json), whose files "
                         "belong to convert: give another directory")
    progress = Progress(err=True)
    result = run_bench(
        list(model_dirs), backends=tuple(b.strip() for b in backends.split(",") if b.strip()),
        threads=_int_list(threads), runs=runs, warmup=warmup, duration=duration,
        artifacts=tuple(a.strip() for a in artifacts.split(",")) if artifacts else None, val=val,
        pipeline_media=tuple(pipeline_media) if pipeline_media else None, baseline=baseline,
        log=progress.line, progress=progress.update, device=device_id)
    progress.close()
    paths = reports.write_reports(result, report_dir)
    click.echo(reports.markdown(result))
    click.echo("reports: " + ", ".join(str(p) for p in paths.values()))


@main.group()
def profiles() -> None:
    """Device profiles in firmware_configs/: list, show, check this machine against one."""


@profiles.command("list")
def profiles_list() -> None:
    """Every profile, validated."""
    from edgemm.profiles import available, load_profile

    for name in available():
        p = load_profile(name)
        click.echo(f"{p.name:<18} {p.accelerator:<8} {' -> '.join(b.name for b in p.backends):<36} {p.description}")


@profiles.command("show")
@click.argument("name")
def profiles_show(name: str) -> None:
    """A profile's settings, after validation."""
    import dataclasses as _dc

    from edgemm.profiles import load_profile

    p = load_profile(name)
    data = _dc.asdict(p)
    data["path"] = str(p.path)
    click.echo(json.dumps(data, indent=2, default=str))


@profiles.command("check")
@click.argument("name")
def profiles_check(name: str) -> None:
    """Check this machine against a profile: what is missing and how to fix it (exit 1 if something required is)."""
    from edgemm.errors import GateError
    from edgemm.profiles import check, load_profile

    p = load_profile(name)
    rows = check(p)
    for item, status, detail in rows:
        click.echo(f"{status.upper():<8} {item:<36} {detail}")
    missing = [item for item, status, _ in rows if status == "missing"]
    if missing:
        raise GateError(f"this machine does not meet {p.name}: missing {', '.join(missing)}")
    click.echo(f"this machine meets {p.name}" + (" (with warnings)" if any(s == "warning" for _, s, _ in rows) else ""))
