"""benchmarks/quantization_zoo.py in its short version on the smallest real model (RapidOCR's text-direction
classifier, fetched from its PyPI wheel): the row is there with real numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.convert, pytest.mark.slow]


def test_quantization_zoo_short_text_direction():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "quantization_zoo.py"), "--only",
                           "text_direction", "--short", "--no-write"], cwd=ROOT, check=False, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| `rapidocr==3.10.0` text_direction (Apache-2.0) | image, classify (2) | 40 / 40 | edgemm int8 TFLite |" \
        in proc.stdout
    (row,) = json.loads(proc.stdout[proc.stdout.index("\n[\n") + 1:])
    assert "error" not in row, row["error"]
    assert row["float_accuracy"] > 0.8  # the rendered text lines are what the classifier knows
    for key in ("int8_tflite", "int8_onnx"):
        a = row["artifacts"][key]
        assert 0.0 <= a["agreement"] <= 1.0 and 0.0 <= a["accuracy"] <= 1.0
        assert -100.0 <= a["drop"] <= 100.0 and 10_000 < a["size_bytes"] < 600_000 and a["seconds"] > 0


def test_a_stock_artifact_that_was_not_made_is_a_row_with_why():
    """The stock tools can write a model that does not load or run (basic-pitch: ONNX Runtime's quantizer
    renamed a bias onto a tensor; the stock TFLite PTQ DIV fails on a quiet window): the table says so, without
    file paths, instead of leaving the row out."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import quantization_zoo

    row = {"name": "m", "package": "p==1", "licence": "MIT", "kind": "audio, raw (1)", "samples": (4, 4),
           "artifacts": {}, "notes": ["stock_int8_onnx not made: /tmp/x/stock_int8.onnx: running it in ort-cpu "
                                      "failed: /tmp/x/stock_int8.onnx: ONNX Runtime cannot load this model (FAIL)"]}
    table = quantization_zoo.table([row], stock=True)
    (line,) = [ln for ln in table.splitlines() if "stock ORT quantize_static" in ln]
    assert "not made: running it in ort-cpu failed: ONNX Runtime cannot load this model (FAIL)" in line, line
    assert "/tmp" not in line and line.rstrip(" |").endswith("MISS"), line
    assert "stock TFLite PTQ" not in table  # no note about it: no row


def test_the_model_note_says_what_quantization_aware_fine_tuning_did():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import quantization_zoo

    note = ("int8 TFLite: quantization-aware fine-tuning (12 epochs, 67.1 s on the calibration samples; held-out "
            "29.61 -> 30.96 dB simulated): agreement 0.9733 against agreement 0.9667 without, kept")
    row = {"name": "m", "note": "a model", "notes": [note, "int8_tflite misses the precision target"]}
    assert quantization_zoo.model_note(row) == ("* **m**: a model; edgemm int8 TFLite: quantization-aware "
                                                f"fine-tuning {note.split('fine-tuning ', 1)[1]}.")
