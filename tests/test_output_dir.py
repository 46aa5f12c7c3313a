"""The output directory of `edgemm convert` is one unit: SIGTERM mid-convert, two converts racing for one
--out, and the swap itself (converters/output_dir.py). Real converts in real child processes."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from converters import output_dir
from converters.output_dir import OutputDir

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import keras

    root = tmp_path_factory.mktemp("unit")
    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(3, activation="softmax")(keras.layers.Dense(8)(x))).save(root / "tiny.keras")
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        np.savez(root / f"{name}.npz", x=rng.normal(size=(40, 4)).astype(np.float32))
    return root


def _convert(root: Path, out: Path, calib: str, tmpdir: Path, **kw) -> subprocess.Popen:
    env = dict(os.environ, TMPDIR=str(tmpdir))
    return subprocess.Popen([sys.executable, "-m", "edgemm", "convert", str(root / "tiny.keras"), "--out", str(out),
                             "--calib", str(root / calib)], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, **kw)


def _consistent(out: Path) -> dict:
    """Every artifact the manifest lists is there with the recorded sha256; returns the manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["artifacts"].values():
        assert hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    return manifest


def test_sigterm_mid_reconvert_keeps_the_previous_directory(tiny, tmp_path):
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    tmpdir.mkdir()
    first = _convert(tiny, out, "a.npz", tmpdir)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    second = _convert(tiny, out, "b.npz", tmpdir)
    for line in second.stdout:  # interrupt it in the middle of writing artifacts
        if line.startswith("quantizing to full-int8 TFLite"):
            break
    assert list(tmp_path.glob(".out.staging-*"))  # the new set is being written beside, not into, out
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 128 + signal.SIGTERM
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    _consistent(out)
    assert not list(tmp_path.glob(".out.staging-*"))
    assert not list(tmpdir.iterdir())  # the work directory and whatever libraries put in TMPDIR: gone
    time.sleep(0.5)
    left = subprocess.run(["pgrep", "-f", str(tmpdir)], capture_output=True, text=True).stdout.split()
    assert not left  # the child and the processes it started were stopped with it


def test_two_converts_into_one_out_one_is_refused(tiny, tmp_path):
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    tmpdir.mkdir()
    runs = [_convert(tiny, out, calib, tmpdir) for calib in ("a.npz", "b.npz")]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in runs]
    assert sorted(code for code, _ in results) == [0, 3], results
    refused = next(err for code, err in results if code == 3)
    assert [ln for ln in refused.splitlines() if ln.startswith("Error:")] == [
        next(ln for ln in refused.splitlines() if ln.startswith("Error:"))]
    assert "another edgemm convert is writing it" in refused
    winner = "a.npz" if results[0][0] == 0 else "b.npz"
    assert _consistent(out)["source"]["path"].endswith("tiny.keras")
    assert json.loads((out / "report.json").read_text())["data"]["calibration"].startswith(str(tiny / winner))


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_commit_replaces_the_whole_directory(tmp_path, monkeypatch, exchange):
    if not exchange:
        monkeypatch.setattr(output_dir, "_exchange", lambda a, b: False)  # a file system without RENAME_EXCHANGE
    out = tmp_path / "out"
    for generation in ("old", "new"):
        target = OutputDir(out, [])
        with target as staging:
            (staging / "manifest.json").write_text(generation)
            (staging / f"{generation}.bin").write_text(generation)
            target.commit()
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.edgemm-lock", "out"]


def test_a_failed_convert_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "manifest.json").write_text("previous")
    with pytest.raises(RuntimeError):
        with OutputDir(out, []) as staging:
            (staging / "manifest.json").write_text("half")
            raise RuntimeError("a step failed")
    assert (out / "manifest.json").read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.edgemm-lock", "out"]
