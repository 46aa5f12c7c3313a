"""The bad-input matrix: every command against broken paths, files, manifests, data, devices and options.

Each row: the command line, the documented exit code (README "Exit codes") and a fragment of the one-line
error. Every failing row must print exactly one `Error:` line (or click's usage error), no traceback, and
leave an existing stats file, artifact and manifest exactly as they were. Rows marked LIMITED feed hostile
sizes: they run as a separate `python -m edgemm` process under an address-space limit (MEMORY_LIMIT), so a
regression shows as a MemoryError or a kill instead of taking the test machine down.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import wave
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgemm.cli import main

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def bad(tmp_path_factory, converted_teacher, demo_media):
    """A directory of broken inputs next to good ones."""
    import keras

    root = tmp_path_factory.mktemp("bad")
    out, _ = converted_teacher
    model = root / "good_model"
    shutil.copytree(out, model)
    (root / "empty.keras").write_bytes(b"")
    (root / "random.onnx").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "model.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    inp = keras.Input((4,), name="x")
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(inp)).save(root / "tiny.keras")
    np.savez(root / "nan.npz", x=np.full((10, 4), np.nan, np.float32))
    np.savez(root / "empty.npz", x=np.zeros((0, 4), np.float32))
    np.savez(root / "shape.npz", x=np.zeros((10, 5), np.float32))
    np.savez(root / "wrong_name.npz", y=np.zeros((10, 4), np.float32))
    np.savez(root / "tiny_calib.npz", x=np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    (root / "student.yaml").write_text("architecture: narrow\n")
    (root / "spec_shape.yaml").write_text("inputs: {x: {source: camera, size: [4, 4], color: gray, layout: NHW}}\n")
    (root / "spec_key.yaml").write_text("inputs: {x: {source: mic, n_mel: 40}}\n")
    (root / "spec_bomb.yaml").write_text("a: &a [1, 1]\nb: &b [*a, *a]\nc: &c [*b, *b]\ninputs: *c\n")
    (root / "no_manifest").mkdir()
    (root / "bad_json").mkdir()
    (root / "bad_json" / "manifest.json").write_text("{not json")
    missing = root / "missing_artifact"
    shutil.copytree(model, missing)
    (missing / "int8.tflite").unlink()
    tampered = root / "tampered"
    shutil.copytree(model, tampered)
    with open(tampered / "int8.tflite", "r+b") as f:
        f.seek(2000)
        f.write(b"\xff\xff\xff\xff")
    for name, edit in (("io_shape", lambda inputs: inputs[1].update(shape=[1, 28, 28, 1])),
                       ("io_name", lambda inputs: inputs[0].update(name="microphone")),
                       ("io_dtype", lambda inputs: inputs[0].update(dtype="float32"))):
        _edit_manifest(shutil.copytree(model, root / name), lambda m, edit=edit: edit(m["artifacts"]["int8_tflite"]["inputs"]))
    truncated = shutil.copytree(model, root / "truncated")  # cut short, and the manifest updated to match it
    (truncated / "int8.tflite").write_bytes((model / "int8.tflite").read_bytes()[:60000])
    _edit_manifest(truncated, lambda m: m["artifacts"]["int8_tflite"].update(
        sha256=_digest(truncated / "int8.tflite"), size_bytes=60000))
    (root / "corrupt.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(500))
    (root / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(8))
    with wave.open(str(root / "stereo8k.wav"), "wb") as w:  # another rate and channel count: resampled, not refused
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(8000 * 2 * 2 * 3))
    (root / "video.avi").write_bytes(demo_media.video.read_bytes())
    (root / "audio.wav").write_bytes(demo_media.audio.read_bytes())
    _hostile_files(root)
    _typed_files(root, model)
    (root / "no_sound_server").mkdir(mode=0o700)
    (root / "stats.jsonl").write_text('{"t": 1.0, "earlier": "record"}\n')
    return root


def _write_wav(path, rate: int, frames: bytes, channels: int = 1) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(frames)


def _hostile_files(root):
    """Files that declare sizes they do not hold, data that breaks converters, inputs inside --out."""
    import keras
    import onnx
    from onnx import TensorProto, helper

    header = io.BytesIO()  # a stored .npz whose header declares 10^12 float32 values and holds 16 bytes
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)})
    with zipfile.ZipFile(root / "bomb.npz", "w") as z:
        z.writestr("x.npy", header.getvalue() + bytes(16))
    np.savez(root / "scalar.npz", x=np.float32(1.0))
    np.savez(root / "strings.npz", x=np.array(["a", "b"]))
    np.savez(root / "extreme.npz", x=np.random.default_rng(0).choice([-3e38, 3e38], (20, 4)).astype(np.float32))
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2**40])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), root / "huge_output.onnx")
    _write_wav(root / "one_hz.wav", 1, bytes(20000))  # 10000 s at 1 Hz: hours of audio once resampled
    _write_wav(root / "giga_hz.wav", 2_000_000_000, bytes(2000))
    _write_wav(root / "silent.wav", 16000, b"")
    os.mkfifo(root / "fifo")
    import cv2

    writer = cv2.VideoWriter(str(root / "one_frame.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    inside = root / "inside"  # --out holding the source model
    inside.mkdir()
    shutil.copy(root / "tiny.keras", inside / "student.keras")
    (root / "not_edgemm").mkdir()
    (root / "not_edgemm" / "thesis.tex").write_text("years of work")
    # a custom layer whose native code crashes: stands for a converter or runtime that segfaults on a model
    (root / "crash_layers.py").write_text(
        "import ctypes\nimport keras\n\n\n@keras.saving.register_keras_serializable(package='t')\n"
        "class Boom(keras.layers.Layer):\n    def call(self, x):\n        ctypes.string_at(0)\n        return x\n")

    @keras.saving.register_keras_serializable(package="t")
    class Boom(keras.layers.Layer):
        def call(self, x):
            return x

    x = keras.Input((4,), name="x")
    keras.Model(x, keras.layers.Dense(2, activation="softmax")(Boom()(x))).save(root / "boom.keras")


def _typed_files(root, model):
    """Manifests, reports and profiles that are well-formed JSON/YAML but hostile or of the wrong type."""
    deep = shutil.copytree(model, root / "deep_json")
    (deep / "manifest.json").write_text("[" * 200000 + "]" * 200000)
    _edit_manifest(shutil.copytree(model, root / "wrong_type"),
                   lambda m: m["artifacts"]["int8_tflite"].update(size_bytes="large"))
    _edit_manifest(shutil.copytree(model, root / "long_window"),
                   lambda m: m["spec"]["inputs"]["audio"].update(window=1e7))
    report = json.loads(REFERENCE_REPORT.read_text())
    (root / "report.json").write_text(json.dumps(report))
    for name, value in (("nan", float("nan")), ("zero", 0.0)):
        bad_report = json.loads(json.dumps(report))
        bad_report["results"][0]["latency_ms"]["p50"] = value
        (root / f"{name}_report.json").write_text(json.dumps(bad_report))
    (root / "malformed_report.json").write_text(json.dumps({**report, "results": {"not": "a list"}}))
    bomb = "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9) if i else '1'}]\n" for i in range(12))
    (root / "bomb_profile.yaml").write_text(bomb)
    (root / "spec_huge.yaml").write_text("inputs: {x: {source: camera, size: [1000000000, 1000000000]}}\n")


def _edit_manifest(directory, edit):
    manifest = json.loads((directory / "manifest.json").read_text())
    edit(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


REFERENCE_REPORT = Path(__file__).resolve().parents[1] / "benchmarks" / "reference_report" / "report.json"
LIMITED = "limited"  # run in a child process under MEMORY_LIMIT
MEMORY_LIMIT = 10 << 30  # bytes of address space: TensorFlow maps ~4 GB at import, the rows need no more
M = "{root}/good_model"
CAM = ["--camera", "{root}/video.avi"]
MIC = ["--mic", "{root}/audio.wav"]
MATRIX = [
    # convert
    (["convert", "{root}/nope.keras", "--out", "{root}/o"], 3, "no such model file"),
    (["convert", "{root}/empty.keras", "--out", "{root}/o"], 3, "not a .keras file"),
    (["convert", "{root}/random.onnx", "--out", "{root}/o"], 3, "not a valid ONNX model"),
    (["convert", "{root}/model.h5", "--out", "{root}/o"], 3, "not an HDF5 file"),
    (["convert", "{root}/corrupt.wav", "--out", "{root}/o"], 3, "unsupported model format .wav"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/nan.npz"], 3, "contains NaN or Inf"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/empty.npz"], 3, "non-zero number of samples"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/shape.npz"], 3, "the model wants (4,)"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/wrong_name.npz"], 3, "do not match the model inputs"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/nope.npz"], 3, "no such calibration file"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o"], 3, "give --calib"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--spec", "{root}/spec_shape.yaml"], 3,
     "x: spec gives 4x4 (NHW gray), model wants ?x4"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--spec", "{root}/spec_key.yaml"], 3, "unknown key(s) n_mel"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--spec", "{root}/spec_bomb.yaml"], 3, "unknown key(s) a, b, c"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--spec", "{root}/nope.yaml"], 3, "no such spec file"),
    (["spec", "{root}/nope.onnx"], 3, "no such model file"),
    (["spec", "{root}/random.onnx"], 3, "ONNX Runtime cannot load"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/tiny_calib.npz", "--val", "{root}/shape.npz"],
     3, "the model wants (4,)"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/tiny_calib.npz", "--prune", "0.5",
      "--train", "{root}/wrong_name.npz"], 3, "do not match the model inputs"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/tiny_calib.npz", "--distill",
      "--student", "{root}/student.yaml"], 3, "a student is a .keras model file"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--max-size", "12Q"], 2, "not a size"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/good_model/manifest.json"], 3, "exists and is not a directory"),
    (["convert", "{root}/good_model", "--out", "{root}/o"], 3, "a directory without saved_model.pb"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--target", "toaster"], 3, "unknown device profile"),
    # run
    (["run", "--model", "{root}/no_manifest", *CAM, *MIC], 3, "no manifest"),
    (["run", "--model", "{root}/bad_json", *CAM, *MIC], 3, "not a readable JSON manifest"),
    (["run", "--model", "{root}/missing_artifact", "--backend", "litert", *CAM, *MIC], 3, "artifact listed in the manifest is missing"),
    (["run", "--model", "{root}/tampered", "--backend", "litert", *CAM, *MIC], 3, "sha256 does not match"),
    (["run", "--model", "{root}/io_shape", "--backend", "litert", *CAM, *MIC], 3, "[1, 28, 28, 1] in the manifest"),
    (["run", "--model", "{root}/io_name", "--backend", "litert", *CAM, *MIC], 3, "do not match the manifest"),
    (["run", "--model", "{root}/io_dtype", "--backend", "litert", *CAM, *MIC], 3, "float32 [1, 49, 40, 1] in the manifest"),
    (["run", "--model", "{root}/truncated", "--backend", "litert", *CAM, *MIC], 3, "int8.tflite"),
    (["run", "--model", M, "--camera", "{root}/corrupt.avi", *MIC], 3, "corrupt.avi"),
    (["run", "--model", M, *CAM, "--mic", "{root}/corrupt.wav"], 3, "corrupt.wav"),
    (["run", "--model", M, "--camera", "http://127.0.0.1:9/x.mjpg", *MIC], 3, "cannot open stream"),
    (["run", "--model", M, "--camera", "7", *MIC], 3, "cannot open camera 7"),
    (["run", "--model", M, *CAM, "--mic", "no-such-microphone"], 3, "no audio input device"),
    (["run", "--model", M, *CAM, "--mic", "default"], 3, "audio input"),  # no sound server, no sound card
    (["run", "--model", M, "--backend", "ort-cuda", *CAM, *MIC], 5, "lacks CUDAExecutionProvider"),
    (["run", "--model", M, "--profile", "toaster", *CAM, *MIC], 3, "unknown device profile"),
    (["run", "--model", M], 3, "reads the mic: add --mic SRC"),
    (["run", "--model", M, *CAM, *MIC, "--source", "radar={root}/video.avi"], 3, "not a camera or mic input"),
    (["run", "--model", M, *CAM, *MIC, "--source", "image"], 2, "is not NAME=SRC"),
    (["run", "--model", M, *CAM, *MIC, "--outputs", "{root}"], 3, "--outputs"),
    (["run", "--model", M, *CAM, *MIC, "--stats", "{root}"], 3, "is a directory"),
    (["run", "--model", M, *CAM, *MIC, "--stats", "{root}/stats.jsonl/s.jsonl"], 3, "is not a directory"),
    (["run", "--model", M, *CAM, "--mic", "{root}/stereo8k.wav", "--unpaced", "--duration", "1"], 0, None),
    # bench, profiles
    (["bench", "{root}/no_manifest", "--report", "{root}/r"], 3, "no manifest"),
    (["bench", "--compare", "{root}/nope.json", "{root}/nope.json"], 3, "no such report"),
    (["bench", M], 2, "--report OUT is required"),
    (["bench", M, "--report", "{root}/stats.jsonl"], 3, "exists and is not a directory"),
    (["bench", M, "--report", "{root}/stats.jsonl/r"], 3, "is not a directory"),
    (["bench", "{root}/io_shape", "--report", "{root}/r", "--artifact", "int8_tflite", "--runs", "2", "--warmup", "0",
      "--duration", "0.1", "--threads", "1"], 3, "in the manifest"),
    (["bench", "{root}/truncated", "--report", "{root}/r", "--artifact", "int8_tflite"], 3, "not a valid Flatbuffer"),
    (["bench", M, "--report", "{root}/r", "--val", "{root}/wrong_name.npz"], 3, "do not match the model inputs"),
    (["bench", M, "--report", "{root}/r", "--val", "{root}/nope.npz"], 3, "no such validation file"),
    (["profiles", "show", "toaster"], 3, "unknown device profile"),
    # memory: sizes declared by files are checked before anything is allocated
    (["convert", "{root}/huge_output.onnx", "--out", "{root}/o", "--calib", "{root}/tiny_calib.npz"], 3,
     "output 'y' of shape [1, 1099511627776] would need", LIMITED),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/bomb.npz"], 3, "would need 4e+03 GB",
     LIMITED),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/scalar.npz"], 3, "'x' is a 0-d scalar"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/strings.npz"], 3, "'x' is not numeric"),
    (["bench", M, "--report", "{root}/r", "--val", "{root}/bomb.npz"], 3, "would need 4e+03 GB", LIMITED),
    (["run", "--model", M, *CAM, "--mic", "{root}/one_hz.wav", "--unpaced"], 3, "WAV header has rate 1 Hz", LIMITED),
    (["run", "--model", M, *CAM, "--mic", "{root}/giga_hz.wav", "--unpaced"], 3, "rate 2000000000 Hz", LIMITED),
    (["run", "--model", M, *CAM, "--mic", "{root}/silent.wav", "--unpaced"], 3, "holds no audio samples"),
    # crashes: the conversion runs in a child process
    (["convert", "{root}/boom.keras", "--out", "{root}/o", "--calib", "{root}/tiny_calib.npz", "--custom-code",
      "{root}/crash_layers.py"], 3, "convert crashed (killed by SIGSEGV)", LIMITED),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/extreme.npz"], 3, "has values up to 3e+38"),
    # lost or damaged work: the output directory is one unit
    (["convert", "{root}/inside/student.keras", "--out", "{root}/inside", "--calib", "{root}/tiny_calib.npz",
      "--prune", "0.5"], 3, "an input of this convert"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/good_model", "--calib", "{root}/good_model/int8.tflite"], 3,
     "an input of this convert"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/not_edgemm", "--calib", "{root}/tiny_calib.npz"], 3,
     "not an edgemm output"),
    (["convert", "{root}/tiny.keras", "--out", "{root}/locked", "--calib", "{root}/tiny_calib.npz"], 3,
     "another edgemm convert is writing it"),
    (["bench", M, "--report", M], 3, "a model directory"),
    (["run", "--model", M, *CAM, *MIC, "--stats", M + "/manifest.json"], 3, "model directory"),
    (["run", "--model", M, *CAM, *MIC, "--stats", M + "/decisions.jsonl"], 3, "model directory"),
    # hangs and tracebacks at run time
    (["run", "--model", M, *CAM, *MIC, "--stats", "{root}/fifo"], 3, "not a regular file"),
    (["run", "--model", M, *CAM, *MIC, "--stats", "/dev/full"], 3, "not a regular file"),
    (["run", "--model", M, "--camera", "99999999999999999999", *MIC], 3, "out of range"),
    (["run", "--model", M, *CAM, "--mic", "99999999999999999999"], 3, "99999999999999999999"),
    (["run", "--model", M, "--camera", "{root}/one_frame.avi", *MIC], 3, "holds a single frame"),
    (["run", "--model", "{root}/long_window", *CAM, *MIC], 3, "600"),
    # typed readers: manifests, reports, profiles, specs
    (["run", "--model", "{root}/deep_json", *CAM, *MIC], 3, "deep", LIMITED),
    (["run", "--model", "{root}/wrong_type", *CAM, *MIC], 3, "size_bytes"),
    (["bench", "--compare", "{root}/report.json", "{root}/nan_report.json"], 3, "p50"),
    (["bench", "--compare", "{root}/report.json", "{root}/zero_report.json"], 3, "p50"),
    (["bench", "--compare", "{root}/report.json", "{root}/malformed_report.json"], 3, "results"),
    (["profiles", "show", "{root}/bomb_profile.yaml"], 3, "bomb_profile.yaml", LIMITED),
    (["convert", "{root}/tiny.keras", "--out", "{root}/o", "--calib", "{root}/tiny_calib.npz", "--spec",
      "{root}/spec_huge.yaml"], 3, "16384"),
]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _limited(argv, env) -> tuple[int, str]:
    """`python -m edgemm ARGV` under an address-space limit: (exit code, stdout + stderr)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    proc = subprocess.run([sys.executable, "-m", "edgemm", *argv], capture_output=True, text=True, env=env,
                          preexec_fn=limit, timeout=300, stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def held_lock(bad):
    """Another convert writing {root}/locked: its lock is held."""
    with open(bad / ".locked.edgemm-lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@pytest.mark.parametrize("row", MATRIX, ids=[" ".join(r[0][:3]) + f" #{i}" for i, r in enumerate(MATRIX)])
def test_bad_input_matrix(bad, held_lock, row, record_property):
    args, code, message, *mode = row
    if mode == [LIMITED]:
        record_property("limited", 1)  # counted by benchmarks/reliability.py
    stats = bad / "stats.jsonl"
    protected = [stats, bad / "good_model" / "int8.tflite", bad / "good_model" / "manifest.json"]
    before = {p: _digest(p) for p in protected}
    argv = [a.format(root=bad) for a in args]
    if argv[0] == "run" and code != 0 and "--stats" not in argv:
        argv += ["--stats", str(stats)]
    # no sound server is reachable from the rows (a machine without audio devices)
    no_audio = {"XDG_RUNTIME_DIR": str(bad / "no_sound_server"), "PULSE_SERVER": None}
    if mode == [LIMITED]:
        exit_code, output = _limited(argv, no_audio)
        stderr = output
    else:
        result = CliRunner().invoke(main, argv, env=no_audio)
        exit_code, output, stderr = result.exit_code, result.output, result.stderr
    assert exit_code == code, output
    assert "Traceback" not in output
    if code:
        errors = [line for line in stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and message in errors[0], stderr
    for p in protected[1:]:
        assert _digest(p) == before[p]  # artifacts and manifest untouched
    assert stats.read_text().startswith('{"t": 1.0, "earlier": "record"}\n')  # earlier records never lost
    assert not list(bad.glob(".*.staging-*"))  # no half-written output directory left behind
    assert (bad / "inside" / "student.keras").is_file() and (bad / "not_edgemm" / "thesis.tex").is_file()


def test_matrix_size_is_recorded():
    assert len(MATRIX) >= 30
    json.dumps(MATRIX)
