"""Device profiles: validation, `profiles check`, backend selection, engine-cache keys, convert --target."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from edgemm import profiles
from edgemm.cli import main
from edgemm.errors import InputError
from edgemm.runtime.trt_cache import cache_key

BOARDS = {"jetson-nano", "jetson-orin-nano", "jetson-xavier-nx", "jetson-agx-orin", "coral-usb", "coral-dev-board",
          "raspberry-pi-5", "x86-cpu"}


def test_every_shipped_profile_validates():
    assert BOARDS <= set(profiles.available())
    for name in profiles.available():
        p = profiles.load_profile(name)
        assert p.backends and p.artifacts and p.name == name
    coral = profiles.load_profile("coral-usb")
    assert coral.backends[0].name == "edgetpu" and coral.require_edgetpu_mappable and "libedgetpu.so.1" in coral.libraries
    orin = profiles.load_profile("jetson-orin-nano")
    assert [b.name for b in orin.backends] == ["ort-tensorrt", "ort-cuda", "ort-cpu"]
    assert orin.backends[0].options["trt_int8_enable"] is True and orin.camera.uri == "csi://0"


@pytest.mark.parametrize("text,key,problem", [
    ("name: bad\ndescription: x\naccelerator: cpu\nartifacts: [int8_tflite]\nbackends: [litert]\ncolour: red\n",
     "colour", "unknown key"),
    ("name: bad\ndescription: x\naccelerator: fpga\nartifacts: [int8_tflite]\nbackends: [litert]\n",
     "accelerator", "'fpga' is not one of"),
    ("name: bad\ndescription: x\naccelerator: cpu\nartifacts: [int8_tflite]\nbackends: [litert]\nthreads: two\n",
     "threads", "must be int"),
    ("name: bad\ndescription: x\naccelerator: cpu\nartifacts: [int8_tflite]\nbackends: [litert]\ncamera: {fps: -3}\n",
     "camera.fps", "must be positive"),
    ("name: bad\ndescription: x\naccelerator: cpu\nartifacts: [int8_tflite]\nbackends: [{name: turbo}]\n",
     "backends[0].name", "'turbo' is not one of"),
    ("name: bad\ndescription: x\naccelerator: cpu\nbackends: [litert]\n", "artifacts", "missing"),
    ("name: [unclosed\n", "line", "not valid YAML"),
])
def test_malformed_profile_is_a_one_line_error_naming_file_key_and_problem(tmp_path, text, key, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        profiles.load_profile(str(path))
    message = str(err.value)
    assert str(path) in message and key in message and problem in message and "\n" not in message
    result = CliRunner().invoke(main, ["profiles", "show", str(path)])
    assert result.exit_code == 3 and len(result.stderr.strip().splitlines()) == 1


def test_check_x86_passes_and_coral_names_what_is_missing():
    ok = CliRunner().invoke(main, ["profiles", "check", "x86-cpu"])
    assert ok.exit_code == 0, ok.output
    assert "meets x86-cpu" in ok.output
    coral = CliRunner().invoke(main, ["profiles", "check", "coral-usb"])
    assert coral.exit_code == 1
    assert "MISSING  library libedgetpu.so.1" in coral.output and "libedgetpu1-std" in coral.output
    assert "camera 0" in coral.output and "no /dev/video0" in coral.output
    assert "missing library libedgetpu.so.1" in coral.stderr


def test_engine_cache_key_changes_with_model_versions_and_device():
    base = cache_key("a" * 64, "1.32.0", "10.3.0", "NVIDIA Jetson Orin Nano Developer Kit")
    assert base == "aaaaaaaaaaaaaaaa-ort1.32.0-trt10.3.0-nvidia-jetson-orin-nano-developer-kit"
    others = {cache_key("b" * 64, "1.32.0", "10.3.0", "NVIDIA Jetson Orin Nano Developer Kit"),
              cache_key("a" * 64, "1.31.0", "10.3.0", "NVIDIA Jetson Orin Nano Developer Kit"),
              cache_key("a" * 64, "1.32.0", "8.6.1", "NVIDIA Jetson Orin Nano Developer Kit"),
              cache_key("a" * 64, "1.32.0", "10.3.0", "NVIDIA H100 80GB HBM3")}
    assert base not in others and len(others) == 4


@pytest.mark.convert
def test_profile_chain_falls_back_when_the_edge_tpu_is_missing(converted_teacher, demo_media):
    from edgemm.manifest import load_manifest
    from edgemm.runtime import session

    out, _ = converted_teacher
    notes = []
    summary = session.run_session(load_manifest(out), camera=str(demo_media.video), mic=str(demo_media.audio),
                                  unpaced=True, duration=2.0, profile=profiles.load_profile("coral-usb"),
                                  emit=lambda s: None, note=notes.append)
    assert summary["backend"] == "litert" and summary["profile"] == "coral-usb"
    assert any(n.startswith("backend edgetpu not used") and "int8_edgetpu.tflite" in n for n in notes)
    x86 = session.run_session(load_manifest(out), camera=str(demo_media.video), mic=str(demo_media.audio),
                              unpaced=True, duration=1.0, profile=profiles.load_profile("x86-cpu"),
                              emit=lambda s: None, note=lambda s: None)
    assert x86["backend"] == "litert"


@pytest.mark.convert
def test_edge_tpu_delegate_missing_is_a_clear_error(converted_teacher, demo_media, tmp_path):
    out, _ = converted_teacher
    model = tmp_path / "model"
    shutil.copytree(out, model)
    shutil.copy(model / "int8.tflite", model / "int8_edgetpu.tflite")  # as if edgetpu_compiler had run
    result = CliRunner().invoke(main, ["run", "--model", str(model), "--backend", "edgetpu", "--camera",
                                       str(demo_media.video), "--mic", str(demo_media.audio), "--unpaced"])
    assert result.exit_code == 5, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "cannot load delegate libedgetpu.so.1" in errors[0]


@pytest.mark.convert
@pytest.mark.slow
@pytest.mark.parametrize("target,expect,absent", [
    ("coral-usb", {"float_tflite", "int8_tflite"}, {"int8_onnx"}),
    ("jetson-orin-nano", {"float_onnx", "int8_onnx", "fp16_onnx"}, {"int8_tflite"}),
])
def test_convert_for_a_target(av_digits_files, tmp_path, target, expect, absent):
    result = CliRunner().invoke(main, ["convert", "examples/av_digits/av_digits_teacher.keras", "--out",
                                       str(tmp_path), "--target", target, "--calib", str(av_digits_files.calib),
                                       "--val", str(av_digits_files.val), "--calib-samples", "100"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert expect <= set(manifest["artifacts"]) and not absent & set(manifest["artifacts"])
    assert manifest["target"]["profile"] == target
    if target == "jetson-orin-nano":
        trt = manifest["target"]["backends"][0]
        assert trt["name"] == "ort-tensorrt" and trt["options"]["trt_int8_enable"] is True
        assert manifest["artifacts"]["fp16_onnx"]["precision"] == "float16"
    else:
        report = json.loads((tmp_path / "report.json").read_text())
        assert any(g["gate"] == "require_edgetpu_mappable" and g["passed"] for g in report["gates"])


@pytest.mark.convert
def test_convert_fails_clearly_when_the_model_cannot_meet_the_profile(tmp_path):
    import keras
    import numpy as np

    inp = keras.Input((8, 8, 1), name="x")
    h = keras.layers.LeakyReLU(0.1)(keras.layers.Conv2D(4, 3, padding="same")(inp))
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(h))).save(tmp_path / "m.keras")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(40, 8, 8, 1)))
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "m.keras"), "--out", str(tmp_path / "out"),
                                       "--calib", str(tmp_path / "calib.npz"), "--target", "coral-usb"])
    assert result.exit_code == 1
    assert "gate require_edgetpu_mappable failed" in result.stderr and "LEAKY_RELU" in result.stderr
