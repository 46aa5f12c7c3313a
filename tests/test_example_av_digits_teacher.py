"""The shipped teacher: shape, size, provenance, and its accuracy claims re-measured."""

import json

import pytest
from click.testing import CliRunner

from edgemm.manifest import sha256_file
from examples.av_digits import teacher_files
from examples.av_digits.cli import main

pytestmark = pytest.mark.convert


def test_shipped_teacher_has_two_named_inputs_and_full_size():
    model = teacher_files.load_teacher()
    spec, sidecar = teacher_files.load_sidecar(teacher_files.TEACHER_MODEL)
    assert sorted(t.name for t in model.inputs) == ["audio", "image"]
    shapes = {t.name: tuple(t.shape[1:]) for t in model.inputs}
    assert shapes == {"image": spec.image.input_shape, "audio": spec.audio.feature_shape}
    assert model.count_params() >= 300_000
    assert sidecar["parameters"] == model.count_params()
    assert sidecar["sha256"] == sha256_file(teacher_files.TEACHER_MODEL)
    assert teacher_files.TEACHER_MODEL.stat().st_size < 2 * 1024 * 1024


@pytest.mark.slow
def test_eval_reproduces_the_recorded_metrics(data_dir):
    result = CliRunner().invoke(main, ["eval", "--json"])
    assert result.exit_code == 0, result.output
    measured = json.loads(result.output)
    _, sidecar = teacher_files.load_sidecar(teacher_files.TEACHER_MODEL)
    for key in ("fused_accuracy", "image_only_accuracy", "audio_only_accuracy"):
        assert measured[key] == pytest.approx(sidecar["metrics"][key], abs=0.005), key
    assert measured["fusion_gain_points"] >= 3.0
    assert measured["fused_accuracy"] > max(measured["image_only_accuracy"], measured["audio_only_accuracy"])


@pytest.mark.slow
def test_eval_gate_fails_when_the_gain_is_too_small(data_dir):
    result = CliRunner().invoke(main, ["eval", "--min-gain", "100"])
    assert result.exit_code == 1
    assert "below --min-gain" in result.output
