"""The bad-input matrix: every command against broken paths, files, manifests, data, devices and options.

Each row: the command line, the documented exit code (README "Exit codes") and a fragment of the one-line
error. Every failing row must print exactly one `Error:` line (or click's usage error), no traceback, and
leave an existing stats file, artifact and manifest exactly as they were.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import wave

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
    (root / "no_sound_server").mkdir(mode=0o700)
    (root / "stats.jsonl").write_text('{"t": 1.0, "earlier": "record"}\n')
    return root


def _edit_manifest(directory, edit):
    manifest = json.loads((directory / "manifest.json").read_text())
    edit(manifest)
    (directory / "manifest.json").write_text(json.dumps(manifest))


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
]


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("args,code,message", MATRIX, ids=[" ".join(a[:3]) + f" #{i}" for i, (a, _, _) in enumerate(MATRIX)])
def test_bad_input_matrix(bad, args, code, message):
    stats = bad / "stats.jsonl"
    protected = [stats, bad / "good_model" / "int8.tflite", bad / "good_model" / "manifest.json"]
    before = {p: _digest(p) for p in protected}
    argv = [a.format(root=bad) for a in args]
    if argv[0] == "run" and code != 0 and "--stats" not in argv:
        argv += ["--stats", str(stats)]
    # no sound server is reachable from the rows (a machine without audio devices)
    no_audio = {"XDG_RUNTIME_DIR": str(bad / "no_sound_server"), "PULSE_SERVER": None}
    result = CliRunner().invoke(main, argv, env=no_audio)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code:
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert len(errors) == 1 and message in errors[0], result.stderr
    for p in protected[1:]:
        assert _digest(p) == before[p]  # artifacts and manifest untouched
    assert stats.read_text().startswith('{"t": 1.0, "earlier": "record"}\n')  # earlier records never lost


def test_matrix_size_is_recorded():
    assert len(MATRIX) >= 30
    json.dumps(MATRIX)
