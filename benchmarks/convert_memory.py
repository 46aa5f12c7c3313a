"""Peak memory of a whole `edgemm convert` run -> benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/convert_memory.py [--only resnet50|teacher] [--format tflite,onnx] [--no-write]

Models:
  resnet50  keras.applications.ResNet50(weights=None) (random weights, 25.6 M parameters) exported to ONNX
            with edgemm's own Keras -> ONNX export (~100 MB float); calib.npz: --samples random images
            (default 400: convert calibrates on the first 300, its default, and validates on the rest).
  teacher   the shipped examples/av_digits/av_digits_teacher.keras, with the calib.npz (300 pairs of the
            AV-digits training split) and val.npz (the 900-pair test set) `python -m examples.av_digits data`
            writes, as benchmarks/convert_teacher.py uses them.
Each conversion runs as its own process, exactly `python -m edgemm convert MODEL --out DIR --calib CALIB.npz`
(run through runpy, as -m does, in a wrapper that reports its rusage when convert returns). Two peaks:
  convert process  ru_maxrss of the `edgemm convert` process itself (RUSAGE_SELF at its end): the CLI,
                   which runs the conversion in a child (converters/child.py);
  children         ru_maxrss over the processes it started and waited for, at any depth (RUSAGE_CHILDREN:
                   the largest one, not their sum): the conversion child, and the validation runners
                   (ONNX Runtime / LiteRT), tf2onnx and onnx2tf it starts.
Convert's gates may fail on random weights (it exits 1 after writing everything); memory is what is
measured here, so the exit status is reported, not asserted.
Models and data are made in a child process of their own (--prepare): a process's ru_maxrss starts from its
parent's RSS at fork, so a parent that had built a ResNet-50 in TensorFlow (~7 GB) would show as the peak of
every process it starts.
"""

from __future__ import annotations

import argparse
import json
import os
import importlib.metadata
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from edgemm import cpu_features  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/convert_memory.py"
MODELS = ("resnet50", "teacher")
TARGET_MB = {"resnet50": 4096}
# Runs `python -m edgemm ...` (runpy is what -m uses), writes the process's own peak RSS and its waited-for
# children's to argv[1] whatever way convert ends (click exits through SystemExit), and exits as convert did.
_WRAPPER = """
import json, resource, runpy, sys
result, sys.argv = sys.argv[1], ["edgemm", *sys.argv[2:]]
code = 0
try:
    runpy.run_module("edgemm", run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
finally:
    with open(result, "w") as f:
        json.dump({"self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, f)
sys.exit(code)
"""


def resnet50_inputs(tmp: Path, samples: int, size: int) -> tuple[Path, list[str]]:
    """float ONNX of a random-weight ResNet-50 and its calib.npz; (model, convert arguments)."""
    import keras
    import numpy as np
    import onnx

    from converters.export import write_onnx_from_keras

    keras.utils.set_random_seed(0)
    model_path = write_onnx_from_keras(keras.applications.ResNet50(weights=None, input_shape=(size, size, 3)),
                                       tmp / "resnet50.onnx")
    name = onnx.load(os.fspath(model_path), load_external_data=False).graph.input[0].name
    images = np.random.default_rng(0).uniform(-120, 150, (samples, size, size, 3)).astype(np.float32)  # caffe-like
    np.savez(tmp / "resnet50_calib.npz", **{name: images})
    return model_path, ["--calib", str(tmp / "resnet50_calib.npz")]


def teacher_inputs(tmp: Path, data_dir: Path | None) -> tuple[Path, list[str]]:
    from examples.av_digits import teacher_files as shipped
    from examples.av_digits.data import write_data
    from examples.av_digits.dataset import resolve_data_dir

    files = write_data(tmp / "av_digits", resolve_data_dir(data_dir), train_epochs=0, log=lambda s: None)
    return Path(shipped.TEACHER_MODEL), ["--calib", str(files.calib), "--val", str(files.val)]


def prepare(name: str, work: Path, args) -> tuple[Path, list[str]]:
    """Makes `name`'s model and data in a child process (see the module docstring); (model, convert arguments)."""
    command = [sys.executable, __file__, "--prepare", name, "--keep", str(work), "--samples", str(args.samples),
               "--image-size", str(args.image_size)] + (["--data-dir", str(args.data_dir)] if args.data_dir else [])
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"preparing {name} failed:\n{proc.stderr[-3000:]}")
    made = json.loads(proc.stdout.strip().splitlines()[-1])
    return Path(made["model"]), made["args"]


def measure(model: Path, args: list[str], out: Path, result: Path) -> dict:
    """One `edgemm convert` in its own process: exit status, seconds, peak RSS (MiB) of it and its children."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, str(result), "convert", str(model), "--out", str(out),
                           *args], cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    usage = json.loads(result.read_text()) if result.is_file() else {"self_kb": 0, "children_kb": 0}
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else {}
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    tail = [line for line in lines if line.startswith("Error")][-1:] or lines[-1:]
    return {"exit": proc.returncode, "seconds": seconds, "self_mb": usage["self_kb"] / 1024,
            "children_mb": usage["children_kb"] / 1024, "float_mb": model_size(model) / 2**20,
            "stages": report.get("stage_seconds", {}), "notes": report.get("notes", []),
            "calib": report.get("data", {}).get("calibration_samples"),
            "val": report.get("data", {}).get("validation_samples"), "tail": tail}


def _count(n) -> str:
    return "-" if n is None else str(n)  # no report.json: the convert failed before writing one


def model_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def section(rows: dict[str, dict], extra: str) -> str:
    lines = [
        "## Peak memory of `edgemm convert`",
        "",
        f"Command: `{COMMAND}{extra}`. Each model converted by `python -m edgemm convert MODEL --out DIR --calib "
        "CALIB.npz --format FORMATS` in its own process; peak RSS = ru_maxrss of the convert process (the CLI), "
        "and of the largest process it started and waited for, at any depth (RUSAGE_CHILDREN: the conversion "
        "child converters/child.py, validation runners, tf2onnx, onnx2tf).",
        f"CPU: {cpu_features.cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, onnxruntime "
        f"{importlib.metadata.version('onnxruntime')}.",
        "",
        "| model (formats) | float size | calibration / validation samples | convert process peak RSS "
        "| largest child peak RSS | target | wall time | exit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        peak = max(r["self_mb"], r["children_mb"])
        limit = TARGET_MB.get(name.split()[0])
        target = f"< {limit / 1024:.0f} GiB: {'met' if peak < limit else 'NOT met'}" if limit else "-"
        lines.append(f"| {name} | {r['float_mb']:.1f} MiB | {_count(r['calib'])} / {_count(r['val'])} | {r['self_mb']:.0f} MiB "
                     f"| {r['children_mb']:.0f} MiB | {target} | {r['seconds']:.0f} s | {r['exit']} |")
    lines.append("")
    for name, r in rows.items():
        lines.append(f"* {name} stages (s): " + ", ".join(f"{k} {v}" for k, v in r["stages"].items()))
        lines += [f"* {name} note: {n}" for n in r["notes"]]
        if r["exit"] != 0:
            lines.append(f"* {name} exit {r['exit']}: " + " / ".join(r["tail"]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=MODELS, action="append", help="run only this model (repeatable)")
    parser.add_argument("--format", action="append", help="convert's --format, one row per value (repeatable) "
                        "[default: tflite,onnx]")
    parser.add_argument("--samples", type=int, default=400, help="ResNet-50 calib.npz samples [default: 400]")
    parser.add_argument("--calib-samples", type=int, default=None, help="convert's --calib-samples [default: its own]")
    parser.add_argument("--image-size", type=int, default=224, help="ResNet-50 input size [default: 224]")
    parser.add_argument("--data-dir", type=Path, default=None, help="AV-digits data [default: ../shared/data]")
    parser.add_argument("--keep", type=Path, default=None, help="keep the models, data and artifacts here")
    parser.add_argument("--no-write", action="store_true", help="print the section, do not update RESULTS.md")
    parser.add_argument("--prepare", choices=MODELS, help=argparse.SUPPRESS)  # the child that makes model + data
    args = parser.parse_args()
    if args.prepare:
        made = (resnet50_inputs(args.keep, args.samples, args.image_size) if args.prepare == "resnet50"
                else teacher_inputs(args.keep, args.data_dir))
        print(json.dumps({"model": str(made[0]), "args": made[1]}))
        return 0
    formats = args.format or ["tflite,onnx"]
    extra = "".join(f" --only {m}" for m in args.only or ()) + "".join(f" --format {f}" for f in args.format or ())
    convert_args = []
    if args.calib_samples:
        convert_args += ["--calib-samples", str(args.calib_samples)]
        extra += f" --calib-samples {args.calib_samples}"
    if args.samples != 400 or args.image_size != 224:
        extra += f" --samples {args.samples} --image-size {args.image_size}"

    rows = {}
    with tempfile.TemporaryDirectory(prefix="edgemm-bench-memory-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.only or MODELS:
            model, data = prepare(name, work, args)
            for fmt in formats:
                key = f"{name} ({fmt})"
                print(f"converting {key} ({model_size(model) / 2**20:.1f} MiB)", file=sys.stderr, flush=True)
                tag = f"{name}_{fmt.replace(',', '_')}"
                rows[key] = measure(model, data + convert_args + ["--format", fmt], work / f"{tag}_out",
                                    work / f"{tag}_rusage.json")
    body = section(rows, extra)
    print(body)
    if not args.no_write:
        update_section("convert_memory", body)
    return 0 if all(r["self_mb"] > 0 for r in rows.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
