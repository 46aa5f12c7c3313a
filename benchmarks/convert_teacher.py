"""`edgemm convert` on the shipped teacher vs the stock converters' defaults -> benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/convert_teacher.py [--data-dir DIR] [--out DIR] [--no-write]

Same model, same calibration samples (300 from the AV-digits training split) and same held-out
validation (the 900-sample test set), written by `python -m examples.av_digits data`, for every row. Stock rows: the TFLite converter's default
post-training int8 (Optimize.DEFAULT + representative dataset, float input/output) and ONNX
Runtime's quantize_static with its defaults (QDQ, per-tensor weights, MinMax), both run in the
same runtimes (LiteRT, ONNX Runtime CPU) as edgemm's artifacts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_md import update_section  # noqa: E402
from converters import calibration, export, saved_model  # noqa: E402
from converters.convert import ConvertOptions, convert  # noqa: E402
from converters.sources import keras_io, load_keras  # noqa: E402
from edgemm import cpu_features  # noqa: E402
from edgemm.backends.isolated import run_isolated  # noqa: E402
from examples.av_digits import teacher_files  # noqa: E402
from examples.av_digits.data import write_data  # noqa: E402
from examples.av_digits.dataset import resolve_data_dir  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/convert_teacher.py"


def _row(name, path: Path, kind: str, val, reference, seconds: float) -> dict:
    outputs, info = run_isolated(kind, path, val.inputs)
    scores = next(iter(outputs.values())).reshape(len(val), -1)
    return {"name": name, "size_bytes": path.stat().st_size,
            "accuracy": float(np.mean(scores.argmax(1) == val.labels)),
            "agreement": float(np.mean(scores.argmax(1) == reference.argmax(1))),
            "max_abs_diff": float(np.abs(scores - reference).max()), "seconds": seconds, "backend": info["backend"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="keep edgemm's artifacts here")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    data_dir = resolve_data_dir(args.data_dir)

    with tempfile.TemporaryDirectory(prefix="edgemm-bench-convert-") as tmp:
        tmp = Path(tmp)
        out = args.out or tmp / "edgemm"
        files = write_data(tmp / "data", data_dir, train_epochs=0, log=lambda s: None)
        start = time.perf_counter()
        report = convert(teacher_files.TEACHER_MODEL, out, ConvertOptions(calib=files.calib, val=files.val),
                         log=lambda s: None)
        edgemm_seconds = time.perf_counter() - start

        model = load_keras(teacher_files.TEACHER_MODEL)
        calib, val = calibration.load_npz(files.calib), calibration.load_npz(files.val)
        reference = model.predict(val.inputs, batch_size=256, verbose=0)
        float_acc = float(np.mean(reference.argmax(1) == val.labels))
        rows = []
        for key, label in (("float_tflite", "float TFLite"), ("int8_tflite", "edgemm int8 TFLite (full int8)"),
                           ("float_onnx", "float ONNX"), ("int8_onnx", "edgemm int8 ONNX (QDQ)")):
            a = report["artifacts"][key]
            rows.append({"name": label, "size_bytes": a["size_bytes"], "accuracy": a["accuracy"],
                         "agreement": a["agreement"], "max_abs_diff": a["max_abs_diff"], "seconds": None,
                         "backend": a["backend"], "settings": a.get("quantization")})
        t = time.perf_counter()
        graph = saved_model.Graph(export.export_saved_model(model, tmp / "saved_model"), keras_io(model)[0])
        export.write_tflite(graph, tmp / "stock.tflite", calib.inputs, full_int8=False)
        rows.append(_row("stock TFLite default PTQ (float I/O, float fallback: not Edge TPU-ready)", tmp / "stock.tflite", "litert", val, reference,
                         time.perf_counter() - t))
        t = time.perf_counter()
        export.write_onnx_int8(out / "float.onnx", tmp / "stock.onnx", calib.inputs, stock=True)
        rows.append(_row("stock ORT quantize_static defaults", tmp / "stock.onnx", "ort-cpu", val, reference,
                         time.perf_counter() - t))

    float_tflite = report["artifacts"]["float_tflite"]["size_bytes"]
    lines = [
        "## Conversion of the reference teacher: edgemm vs stock converters",
        "",
        f"Command: `{COMMAND}`. Calibration: calib.npz, 300 pairs of the AV-digits training split; validation: "
        f"val.npz, the {len(val)}-pair test set (never seen by calibration). Float Keras accuracy: {100 * float_acc:.2f} %.",
        f"CPU: {cpu_features.cpu_model()} (int8 dot product: {cpu_features.has_int8_dot_product()}).",
        "",
        "| artifact | size | % of float TFLite | accuracy | drop (points) | top-1 agreement | max abs diff | runtime |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['size_bytes'] / 1024:.1f} KiB | {100 * r['size_bytes'] / float_tflite:.1f} % | "
            f"{100 * r['accuracy']:.2f} % | {100 * (float_acc - r['accuracy']):+.2f} | {100 * r['agreement']:.2f} % | "
            f"{r['max_abs_diff']:.4f} | {r['backend']} |")
    st = report["stage_seconds"]
    lines += [
        "",
        f"* edgemm convert, whole run: {edgemm_seconds:.1f} s (stages: "
        + ", ".join(f"{k} {v} s" for k, v in st.items() if k != "total") + ")",
        "* stock rows' conversion time: " + ", ".join(f"{r['name']} {r['seconds']:.1f} s" for r in rows if r["seconds"]),
        "* edgemm settings: " + json.dumps({r["name"]: r["settings"] for r in rows if r.get("settings")}),
    ]
    lines += [f"* note from the report: {n}" for n in report["notes"]]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        update_section("convert_teacher", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
