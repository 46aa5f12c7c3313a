"""Bring your own model: `edgemm convert` per source kind: conversion time, artifact sizes, int8 agreement.

    .venv/bin/python benchmarks/byom_sources.py [--no-write]

Sources (tests/zoo.py builds and trains them, as the tests do):
  - the PyTorch-style NCHW RGB + log-mel model (two inputs) as .keras, Keras 3 .h5, SavedModel
    (model.export, dynamic batch), float .tflite (TFLite converter) and ONNX (NCHW, dynamic batch);
  - a legacy TF 2.x .h5 with a custom layer, written by tf_keras (loaded in a child process, --custom-code);
  - an OCR-style ONNX whose height and width share one symbolic dimension (--input-shape x=1,3,24,40).
Agreement is top-1 agreement of each int8 artifact with the source model on the validation set, as the
converter measures it (LiteRT / ONNX Runtime, separate process). Times are wall seconds of the whole
`edgemm convert` (both formats, validation included) on this machine, one run each.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from tests import zoo  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/byom_sources.py"


def _sources(tmp: Path) -> list[tuple[str, Path, Path, Path, list[str]]]:
    """(label, model, calib, val, extra convert flags) per source kind."""
    import keras
    import tensorflow as tf
    import yaml

    z = zoo.MODELS["fused_nchw"]
    keras_file = zoo.train(z, tmp / "av.keras")
    calib, val = zoo.write_data(z, tmp)
    spec = yaml.safe_dump(z.spec, sort_keys=False)
    model = keras.saving.load_model(keras_file)
    h5 = tmp / "av_h5.h5"
    model.save(h5)
    saved = tmp / "av_savedmodel"
    model.export(str(saved), verbose=False)
    flat = tmp / "av_float.tflite"
    flat.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(saved)).convert())
    subprocess.run([sys.executable, "-m", "edgemm", "convert", str(keras_file), "--out", str(tmp / "onnx_export"),
                    "--format", "onnx", "--calib", str(calib)], cwd=ROOT, check=True, capture_output=True)
    onnx_file = tmp / "av_pytorch_style.onnx"
    onnx_file.write_bytes((tmp / "onnx_export" / "float.onnx").read_bytes())
    for path in (h5, saved, flat, onnx_file):
        path.with_suffix(".yaml").write_text(spec)
    legacy, custom = zoo.write_legacy_h5(tmp / "legacy", zoo.MODELS["gray_two_heads"])
    g_calib, g_val = zoo.write_data(zoo.MODELS["gray_two_heads"], tmp / "legacy")
    ocr = tmp / "ocr_shared_hw.onnx"
    ocr.write_bytes(zoo.shared_hw_onnx())
    ocr_calib = zoo.shared_hw_data(tmp / "ocr", 240, 24, 40)
    return [
        ("Keras 3 `.keras`", keras_file, calib, val, []),
        ("Keras 3 `.h5`", h5, calib, val, []),
        ("SavedModel (`model.export`, dynamic batch)", saved, calib, val, []),
        ("float `.tflite`", flat, calib, val, []),
        ("ONNX, PyTorch-style NCHW, 2 inputs, dynamic batch", onnx_file, calib, val, []),
        ("legacy TF 2.x `.h5` + custom layer (tf_keras child)", legacy, g_calib, g_val, ["--custom-code", str(custom)]),
        ("ONNX, OCR-style shared symbolic H/W", ocr, ocr_calib, ocr_calib, ["--input-shape", "x=1,3,24,40"]),
    ]


def measure(label: str, model: Path, calib: Path, val: Path, extra: list[str], out: Path) -> dict:
    args = [sys.executable, "-m", "edgemm", "convert", str(model), "--out", str(out), "--calib", str(calib),
            "--val", str(val), *extra]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"label": label, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    report = json.loads((out / "report.json").read_text())
    arts = report["artifacts"]
    return {"label": label, "kind": report["source"]["kind"], "seconds": round(seconds, 1),
            "stages": report["stage_seconds"],
            "sizes_kb": {k: round(a["size_bytes"] / 1024, 1) for k, a in arts.items()},
            "agreement": {k: a.get("agreement") for k, a in arts.items() if k.startswith("int8")},
            "sqnr_db": {k: a.get("sqnr_db") for k, a in arts.items() if k.startswith("int8")},
            "edgetpu": f"{arts['int8_tflite']['edgetpu']['mapped']}/{arts['int8_tflite']['edgetpu']['ops']}",
            "layout": "NHWC (perm recorded)" if arts["int8_tflite"].get("layout") else "as the source"}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def table(rows: list[dict]) -> str:
    lines = [f"Command: `{COMMAND}`", "",
             "| source | kind | convert s | float / int8 TFLite KB | float / int8 ONNX KB | int8 TFLite agree | "
             "int8 ONNX agree | Edge TPU ops | TFLite inputs |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['label']} | failed: {r['error'][:120]} | | | | | | | |")
            continue
        s = r["sizes_kb"]
        lines.append(f"| {r['label']} | {r['kind']} | {r['seconds']} | {s['float_tflite']} / {s['int8_tflite']} | "
                     f"{s['float_onnx']} / {s['int8_onnx']} | {_pct(r['agreement']['int8_tflite'])} | "
                     f"{_pct(r['agreement']['int8_onnx'])} | {r['edgetpu']} | {r['layout']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgemm-byom-") as tmp:
        tmp = Path(tmp)
        rows = [measure(label, model, calib, val, extra, tmp / f"out{i}")
                for i, (label, model, calib, val, extra) in enumerate(_sources(tmp))]
    body = table(rows)
    print(body)
    print(json.dumps(rows, indent=1))
    if not args.no_write:
        update_section("byom_sources", "## `edgemm convert` per source kind (bring your own model)\n\n" + body)


if __name__ == "__main__":
    main()
