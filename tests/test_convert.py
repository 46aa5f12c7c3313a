"""`edgemm convert`: real conversions with TensorFlow, LiteRT and ONNX Runtime.

The reference teacher is converted once per session (about a minute); small
third-party models are built and trained here to cover single-input models,
ONNX sources, the multi-input calibration trap, gates and the Edge TPU report.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgemm.cli import main
from edgemm.manifest import load_manifest

pytestmark = pytest.mark.convert


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


# -- small third-party models, built and trained in the test ------------------------------------------

def _image_task(n: int, seed: int = 0):
    """Learnable 3-class task on 16x16 images: where the bright blob is (left, middle, right)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    x = rng.normal(0, 0.2, (n, 16, 16, 1)).astype(np.float32)
    for i, c in enumerate(labels):
        x[i, 4:12, 1 + 5 * c : 6 + 5 * c, 0] += 2.0
    return x, labels


@pytest.fixture(scope="module")
def image_classifier(tmp_path_factory):
    """A single-input Keras classifier (input 'pixels'), trained for a few epochs, with a calibration .npz."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((16, 16, 1), name="pixels")
    h = keras.layers.Conv2D(8, 3, activation="relu")(inp)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(16, 3, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(3, activation="softmax", name="where")(h)
    model = keras.Model(inp, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    x, y = _image_task(600)
    model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    root = tmp_path_factory.mktemp("image_classifier")
    model.save(root / "blob.keras")
    xc, yc = _image_task(300, seed=1)
    np.savez(root / "calib.npz", pixels=xc, label=yc)
    return root


def test_single_input_keras_model_converts_to_both_int8_formats(image_classifier, tmp_path):
    result = _invoke("convert", image_classifier / "blob.keras", "--out", tmp_path,
                     "--calib", image_classifier / "calib.npz", "--calib-samples", 200)
    assert result.exit_code == 0, result.output
    manifest = load_manifest(tmp_path)
    assert set(manifest.artifacts) == {"float_tflite", "int8_tflite", "float_onnx", "int8_onnx"}
    int8 = manifest.artifacts["int8_tflite"]
    assert [t["name"] for t in int8.inputs] == ["pixels"] and int8.inputs[0]["dtype"] == "int8"
    assert int8.outputs[0]["dtype"] == "int8" and int8.outputs[0]["scale"] > 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["data"]["validation_samples"] == 100  # the 100 samples calibration never saw
    for key in ("int8_tflite", "int8_onnx"):
        assert report["artifacts"][key]["agreement"] >= 0.95
    assert manifest.spec is None and manifest.data["schema_version"] == 2  # no spec given: convertible, not runnable
    assert "int8_tflite" in result.output and "stage seconds" in result.output


def test_nhwc_onnx_source_without_a_spec_gives_every_artifact(image_classifier, tmp_path):
    """An ONNX file written by tf2onnx (NHWC): onnx2tf takes rank-4 inputs for NCHW without a spec, which the
    manifest records as the artifact's layout; the validation feeds it that way and the gates hold."""
    first = tmp_path / "first"
    assert _invoke("convert", image_classifier / "blob.keras", "--out", first, "--format", "onnx",
                   "--calib", image_classifier / "calib.npz").exit_code == 0
    result = _invoke("convert", first / "float.onnx", "--out", tmp_path / "second",
                     "--calib", image_classifier / "calib.npz", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["artifacts"]) == {"float_tflite", "int8_tflite", "float_onnx", "int8_onnx"}
    assert report["source"]["kind"] == "onnx"
    assert report["artifacts"]["int8_onnx"]["agreement"] >= 0.95
    assert report["artifacts"]["int8_tflite"]["agreement"] >= 0.95


def test_gate_tighter_than_measured_fails_and_keeps_the_artifacts(image_classifier, tmp_path):
    result = _invoke("convert", image_classifier / "blob.keras", "--out", tmp_path, "--format", "tflite",
                     "--calib", image_classifier / "calib.npz", "--max-size", "1K")
    assert result.exit_code == 1
    assert "gate max_size failed for int8_tflite" in result.output
    assert (tmp_path / "int8.tflite").is_file() and (tmp_path / "report.json").is_file()
    load_manifest(tmp_path).artifact_path("int8_tflite")  # manifest written and consistent


def test_calibration_with_nan_is_refused(image_classifier, tmp_path):
    bad = tmp_path / "bad.npz"
    x, y = _image_task(20)
    x[3, 0, 0, 0] = np.nan
    np.savez(bad, pixels=x, label=y)
    result = _invoke("convert", image_classifier / "blob.keras", "--out", tmp_path / "out", "--calib", bad)
    assert result.exit_code == 3
    assert "'pixels' contains NaN or Inf" in result.output
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, pixels=x[:, :8])
    result = _invoke("convert", image_classifier / "blob.keras", "--out", tmp_path / "out", "--calib", wrong)
    assert result.exit_code == 3 and "shape (8, 16, 1)" in result.output


# -- students and training data (--distill --student, --train) ----------------------------------------

def _student(path, input_name="pixels", shape=(16, 16, 1), classes=3):
    import keras

    inp = keras.Input(shape, name=input_name)
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu")(inp))
    keras.Model(inp, keras.layers.Dense(classes, activation="softmax")(h)).save(path)
    return path


def test_distill_into_a_keras_student_on_a_train_file(image_classifier, tmp_path):
    student = _student(tmp_path / "small.keras")
    x, y = _image_task(400, seed=2)
    np.savez(tmp_path / "train.npz", pixels=x, label=y)
    result = _invoke("convert", image_classifier / "blob.keras", "--out", tmp_path / "out", "--format", "tflite",
                     "--calib", image_classifier / "calib.npz", "--distill", "--student", student,
                     "--train", tmp_path / "train.npz", "--epochs", 3)
    assert result.exit_code == 0, result.output
    assert f"training data: {tmp_path / 'train.npz'} (400 samples)" in result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    stages = report["compression"]["stages"]
    assert stages[1]["stage"] == "student from small.keras (untrained)" and stages[-1]["stage"] == "distilled"
    assert stages[-1]["parameters"] < stages[0]["parameters"]
    assert report["compression"]["training"]["epochs"] == 3 and report["options"]["train"] == str(tmp_path / "train.npz")
    assert (tmp_path / "out" / "student.keras").is_file()


def test_fine_tuning_a_model_with_a_strided_1x1_shortcut_does_not_crash(tmp_path):
    """TensorFlow 2.21's oneDNN weight gradient of a 1x1 stride-2 Conv2D on a 64x64 input segfaults on AVX-512
    CPUs (a ResNet shortcut); the convert child runs with Eigen's kernels (converters/child.py)."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((64, 64, 4), name="frame")
    h = keras.layers.Conv2D(8, 1, strides=2, padding="same", activation="relu", name="shortcut")(inp)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c2")(h)
    out = keras.layers.Dense(3, activation="softmax", name="cls")(keras.layers.GlobalAveragePooling2D()(h))
    keras.Model(inp, out).save(tmp_path / "strided.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", frame=rng.random((48, 64, 64, 4), np.float32), label=rng.integers(0, 3, 48))
    result = _invoke("convert", tmp_path / "strided.keras", "--out", tmp_path / "out", "--format", "tflite",
                     "--calib", tmp_path / "calib.npz", "--prune", 0.5, "--epochs", 1, "--min-agreement", 0)
    assert result.exit_code == 0, result.output
    stages = json.loads((tmp_path / "out" / "report.json").read_text())["compression"]["stages"]
    assert stages[-1]["stage"] == "fine-tuned"


@pytest.mark.parametrize("kind,message", [
    ("name", "student inputs {'image': (16, 16, 1)} do not match the source model's {'pixels': (16, 16, 1)}"),
    ("shape", "student inputs {'pixels': (8, 8, 1)} do not match"),
    ("classes", "student has 4 classes, the source model 3"),
    ("yaml", "a student is a .keras model file"),
])
def test_student_that_does_not_fit_the_source_is_a_one_line_error(image_classifier, tmp_path, kind, message):
    if kind == "yaml":
        student = tmp_path / "student.yaml"
        student.write_text("architecture: narrow\n")
    else:
        student = _student(tmp_path / "s.keras", input_name="image" if kind == "name" else "pixels",
                           shape=(8, 8, 1) if kind == "shape" else (16, 16, 1), classes=4 if kind == "classes" else 3)
    result = _invoke("convert", image_classifier / "blob.keras", "--out", tmp_path / "out", "--calib",
                     image_classifier / "calib.npz", "--distill", "--student", student)
    assert result.exit_code == 3, result.output
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and message in errors[0], result.stderr


# -- the multi-input ordering trap --------------------------------------------------------------------

def test_multi_input_calibration_is_keyed_by_name(tmp_path):
    """Inputs 'b_loud' (range +-100) and 'a_quiet' (range +-1) of one shape: each must get its own scale.

    The TFLite converter orders inputs alphabetically ('a_quiet' first) while Keras keeps
    definition order ('b_loud' first): positional calibration would swap the two ranges.
    """
    import keras

    loud, quiet = keras.Input((8,), name="b_loud"), keras.Input((8,), name="a_quiet")
    h = keras.layers.Concatenate()([keras.layers.Dense(4)(loud), keras.layers.Dense(4)(quiet)])
    model = keras.Model([loud, quiet], keras.layers.Dense(2, activation="softmax", name="out")(h))
    model.save(tmp_path / "two.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", b_loud=rng.uniform(-100, 100, (64, 8)), a_quiet=rng.uniform(-1, 1, (64, 8)))
    result = _invoke("convert", tmp_path / "two.keras", "--out", tmp_path / "out", "--calib", tmp_path / "calib.npz")
    assert result.exit_code == 0, result.output
    inputs = {t["name"]: t for t in load_manifest(tmp_path / "out").artifacts["int8_tflite"].inputs}
    assert inputs["b_loud"]["scale"] == pytest.approx(200 / 255, rel=0.05)
    assert inputs["a_quiet"]["scale"] == pytest.approx(2 / 255, rel=0.05)


# -- Edge TPU report -----------------------------------------------------------------------------------

def test_edgetpu_report_names_the_first_op_that_cannot_map(tmp_path):
    import keras

    inp = keras.Input((8, 8, 1), name="x")
    h = keras.layers.Conv2D(4, 3, padding="same")(inp)
    h = keras.layers.LeakyReLU(0.1)(h)  # LEAKY_RELU: int8 in TFLite, not on the Edge TPU's list
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(h))
    keras.Model(inp, out).save(tmp_path / "leaky.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.normal(size=(40, 8, 8, 1)))
    result = _invoke("convert", tmp_path / "leaky.keras", "--out", tmp_path / "out", "--format", "tflite",
                     "--calib", tmp_path / "calib.npz", "--require-edgetpu-mappable")
    assert result.exit_code == 1
    assert "gate require_edgetpu_mappable failed" in result.output and "LEAKY_RELU" in result.output
    log = (tmp_path / "out" / "int8_edgetpu_report.txt").read_text()
    assert "LEAKY_RELU" in log and "Operation not supported by the Edge TPU" in log
    assert "not mapped due to an earlier unmapped operation" in log  # the second conv, after the cut
    tpu = json.loads((tmp_path / "out" / "report.json").read_text())["artifacts"]["int8_tflite"]["edgetpu"]
    assert tpu["mapped"] == 1 and not tpu["fully_mappable"]


# -- bad model files -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name,content", [
    ("empty.keras", b""),
    ("random.keras", bytes(range(256)) * 8),
    ("random.onnx", bytes(range(256)) * 8),
    ("model.h5", b"\x89HDF\r\n"),
])
def test_bad_model_files_are_one_line_errors(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    result = _invoke("convert", tmp_path / name, "--out", tmp_path / "out")
    assert result.exit_code == 3, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_truncated_keras_file_is_a_one_line_error(image_classifier, tmp_path):
    data = (image_classifier / "blob.keras").read_bytes()
    (tmp_path / "cut.keras").write_bytes(data[: len(data) // 2])
    result = _invoke("convert", tmp_path / "cut.keras", "--out", tmp_path / "out")
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert "cut.keras" in result.output


# -- the shipped teacher (the acceptance numbers) ----------------------------------------------

@pytest.mark.slow
def test_teacher_int8_artifacts_meet_the_budget(converted_teacher):
    out, report = converted_teacher
    arts = report["artifacts"]
    for key in ("int8_tflite", "int8_onnx"):
        assert arts[key]["accuracy_drop_points"] <= 0.5, (key, arts[key])
        assert arts[key]["agreement"] >= 0.99, (key, arts[key])
    assert arts["int8_tflite"]["size_bytes"] <= 0.27 * arts["float_tflite"]["size_bytes"]
    assert arts["int8_tflite"]["edgetpu"]["fully_mappable"]
    layers = arts["int8_onnx"]["layers"]
    assert layers and layers[0]["local_sqnr_db"] <= layers[-1]["local_sqnr_db"]
    manifest = load_manifest(out)
    spec = manifest.spec  # the teacher's first-format sidecar, migrated
    assert spec.inputs["image"].transform.color == "gray" and spec.inputs["audio"].transform.convention == "tensorflow"
    (head,) = spec.heads
    assert head.head == "classify" and head.labels == tuple(str(d) for d in range(10))
    assert [t["name"] for t in manifest.artifacts["int8_tflite"].outputs] == [head.name]  # Keras name kept
    for key in manifest.artifacts:
        manifest.artifact_path(key)  # sha256 verified


@pytest.mark.slow
def test_tampered_artifact_is_refused(converted_teacher, tmp_path):
    import shutil

    out, _ = converted_teacher
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with open(copy / "int8.tflite", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02")
    from edgemm.errors import InputError

    with pytest.raises(InputError, match="sha256 does not match"):
        load_manifest(copy).artifact_path("int8_tflite")
