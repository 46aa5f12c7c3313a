"""Every script behind benchmarks/RESULTS.md runs in CI in a short version (no timing asserted, nothing written),
so that the benchmarks cannot go stale."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.convert, pytest.mark.slow]


def _script(name: str, *args, timeout: int = 900) -> str:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_reference_teacher(data_dir):
    assert "fusion gain" in _script("reference_teacher.py", "--no-write")


def test_convert_teacher(data_dir):
    assert "stock ORT quantize_static defaults" in _script("convert_teacher.py", "--no-write")


def test_prune_distill_one_epoch(converted_teacher):
    full, _ = converted_teacher  # the plain convert it compares with, made once per session
    out = _script("prune_distill.py", "--epochs", "1", "--formats", "tflite", "--full", full, "--no-write")
    assert "speed-up" in out and "from scratch, hard labels" in out


def test_latency_and_bare_loop_scripts(converted_teacher):
    out, _ = converted_teacher
    assert "median_ms" in _script("litert_latency.py", out / "int8.tflite", out / "float.tflite", "--rounds", "2",
                                  "--runs", "5")
    assert "| int8_tflite | litert |" in _script("bench_vs_bare.py", out, "--rounds", "1", "--runs", "20", "--no-write")


def test_bench_teacher(converted_teacher, tmp_path):
    out, _ = converted_teacher
    text = _script("bench_teacher.py", "--model", out, "--runs", "10", "--duration", "0.1", "--report", tmp_path,
                   "--no-write")
    assert "int8_tflite/litert/t2" in text and (tmp_path / "report.html").is_file()


def test_run_pipeline(converted_teacher):
    from benchmarks.loopback import VirtualMic

    if not VirtualMic.available:
        pytest.skip("pulseaudio not installed (install.sh installs it)")
    out, _ = converted_teacher
    text = _script("run_pipeline.py", "--model", out, "--duration", "3", "--phases", "1", "--phase-seconds", "2",
                   "--no-write")
    assert "audio overflows" in text and "bare loop" in text


def test_soak_short(converted_teacher):
    from benchmarks.loopback import VirtualMic

    if not VirtualMic.available:
        pytest.skip("pulseaudio not installed (install.sh installs it)")
    out, _ = converted_teacher
    text = _script("soak.py", "--model", out, "--duration", "15", "--window", "5", "--no-write")
    assert "(**= inferences**)" in text


def test_convert_memory_teacher_onnx(data_dir):
    assert "| teacher (onnx) |" in _script("convert_memory.py", "--only", "teacher", "--format", "onnx", "--no-write")


def test_reliability_counts():
    text = _script("reliability.py", "-k", "idx_reader or usb_camera or audio_overflow or random_model", "--no-write")
    assert "150 generated examples" in text and "Faults injected during `edgemm run`: 3, survived: 3" in text
    assert "Random and mutated model files: 15" in text


def test_loop_overhead(converted_teacher):
    out = _script("loop_overhead.py", "--duration", "2", "--teacher", converted_teacher[0], "--only-teacher",
                  "--no-write")
    assert "| example teacher" in out and "NCHW RGB" not in out


def test_quantization_techniques():
    out = _script("quantization_techniques.py", "--no-write")
    assert "| cross-layer equalisation | int8 ONNX, per-channel weights |" in out and "int16x8" in out
    assert "| bias correction | int8 ONNX, per-tensor weights |" in out and "| mixed TFLite |" in out
    assert "| weight rounding (GPTQ) and bias correction |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "technique" not in line]
    gains = [float(line.rsplit("|", 2)[1]) for line in rows]
    assert len(gains) == 9 and min(gains) > 3.0, gains  # every technique pays on the model built to need it
