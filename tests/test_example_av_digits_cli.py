"""The example's command group (`python -m examples.av_digits`): help, one-line errors, the data files."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from examples.av_digits.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", [None, "demo", "eval", "train", "data", "student"])
def test_help_of_every_command(name):
    result = CliRunner().invoke(main, ([name] if name else []) + ["--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_runs_as_a_module_from_the_repository_root():
    proc = subprocess.run([sys.executable, "-m", "examples.av_digits", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in ("demo", "eval", "train", "data", "student"))


@pytest.mark.convert
def test_missing_data_dir_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["eval", "--data-dir", str(tmp_path / "none")])
    assert result.exit_code == 4
    assert result.output.strip().count("\n") == 0 and result.output.startswith("Error: AV-digits data not found")
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.convert
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", b"random bytes" * 100])
def test_bad_model_file_is_a_one_line_error(tmp_path, content):
    model = tmp_path / "bad.keras"
    model.write_bytes(content)
    model.with_suffix(".json").write_text(json.dumps({"preprocess": {}}))
    result = CliRunner().invoke(main, ["eval", "--model", str(model)])
    assert result.exit_code == 3, result.output
    assert result.output.startswith("Error: ") and "bad.keras" in result.output
    assert result.output.strip().count("\n") == 0


@pytest.mark.convert
def test_model_without_sidecar_is_a_one_line_error(tmp_path):
    model = tmp_path / "lonely.keras"
    model.write_bytes(b"")
    result = CliRunner().invoke(main, ["eval", "--model", str(model)])
    assert result.exit_code == 3 and "sidecar" in result.output


@pytest.mark.slow
def test_data_files_are_the_calibration_and_test_sets(av_digits_files, data_dir):
    """calib.npz: 300 seeded training pairs; val.npz: the 900-pair test set; both keyed by input name."""
    from examples.av_digits import dataset, teacher_files

    spec, _ = teacher_files.load_sidecar(teacher_files.TEACHER_MODEL)
    with np.load(av_digits_files.calib) as calib, np.load(av_digits_files.val) as val:
        assert sorted(calib.files) == sorted(val.files) == ["audio", "image", "label"]
        assert calib["image"].shape == (300, *spec.image.input_shape) and calib["audio"].dtype == np.float32
        test = dataset.make_split(data_dir, "test", spec)
        assert np.array_equal(val["label"], test.label) and np.array_equal(val["audio"], test.audio)
        assert np.array_equal(np.bincount(calib["label"], minlength=10) > 0, np.ones(10, bool))
    assert av_digits_files.train is None and "AV-digits" in av_digits_files.source


def test_data_falls_back_to_the_demo_media(tmp_path, demo_media):
    from examples.av_digits.data import write_data

    files = write_data(tmp_path / "d", tmp_path / "no_data", calib_samples=300, train_epochs=2, media=demo_media,
                       log=lambda line: None)
    assert files.source.startswith("demo media")
    assert files.counts == {"calib.npz": 300, "val.npz": 150, "train.npz": 300}  # 450 frames; a quarter held out
    with np.load(files.calib) as calib, np.load(files.train) as train:
        assert np.array_equal(calib["image"], train["image"])


@pytest.mark.convert
def test_student_is_a_narrower_keras_file_with_the_teachers_inputs(tmp_path):
    from converters.sources import load_keras
    from examples.av_digits import teacher_files

    result = CliRunner().invoke(main, ["student", "--out", str(tmp_path / "s.keras")])
    assert result.exit_code == 0, result.output
    student, teacher = load_keras(tmp_path / "s.keras"), teacher_files.load_teacher()
    shapes = lambda m: {t.name: tuple(t.shape) for t in m.inputs}  # noqa: E731
    assert shapes(student) == shapes(teacher)
    assert student.count_params() < 0.4 * teacher.count_params()
    bad = CliRunner().invoke(main, ["student", "--out", str(tmp_path / "s.yaml")])
    assert bad.exit_code == 3 and "must end in .keras" in bad.output
