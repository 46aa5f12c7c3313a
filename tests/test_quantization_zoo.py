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
