"""Bring your own model: every source kind gives the same artifact set and manifest.

Each source is a small model built in the test and saved the way its users save it: Keras 3 .h5, a legacy
TF 2.x .h5 with a custom layer (written by tf_keras in a child process), a SavedModel from model.export,
a float .tflite from the TFLite converter, and ONNX files shaped like PyTorch exports (NCHW, two inputs,
dynamic batch; height and width sharing one symbolic dimension). Real TensorFlow, tf_keras, onnx2tf,
ai-edge-quantizer, LiteRT and ONNX Runtime throughout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from edgemm.cli import main
from edgemm.runtime.stats import read_stats
from tests import zoo

pytestmark = [pytest.mark.convert, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
GRAY = zoo.MODELS["gray_two_heads"]  # NHWC gray image; a classify head and a raw embedding head


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _check_artifacts(out: Path, kind: str) -> dict:
    """Every artifact is there and loads; the int8 TFLite is full int8 (int8 I/O, no float tensor) with its
    Edge TPU report; the gates held (per-head agreement / SQNR against the source model)."""
    from ai_edge_litert.interpreter import Interpreter

    report = json.loads((out / "report.json").read_text())
    assert set(report["artifacts"]) == {"float_tflite", "int8_tflite", "float_onnx", "int8_onnx"}
    assert report["source"]["kind"] == kind and all(g["passed"] for g in report["gates"]), report["gates"]
    interpreter = Interpreter(model_path=str(out / "int8.tflite"))
    details = interpreter.get_tensor_details()
    assert [d["name"] for d in details if d["dtype"] == np.float32] == []
    assert {d["dtype"] for d in interpreter.get_input_details() + interpreter.get_output_details()} == {np.int8}
    assert (out / "int8_edgetpu_report.txt").is_file() and "edgetpu" in report["artifacts"]["int8_tflite"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["spec"] is not None and set(manifest["artifacts"]) == set(report["artifacts"])
    return report


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    """The trained Keras model, its spec and data."""
    work = tmp_path_factory.mktemp("sources")
    model = zoo.train(GRAY, work / "gray.keras")
    calib, val = zoo.write_data(GRAY, work)
    return work, model, calib, val


def _spec_beside(model: Path) -> None:
    model.with_suffix(".yaml").write_text(yaml.safe_dump(GRAY.spec, sort_keys=False))


@pytest.mark.parametrize("kind", ["h5", "saved_model", "tflite"])
def test_keras_h5_savedmodel_and_float_tflite_sources_give_every_artifact(gray, kind, tmp_path):
    import keras
    import tensorflow as tf

    work, keras_file, calib, val = gray
    model = keras.saving.load_model(keras_file)
    if kind == "h5":
        source = tmp_path / "model.h5"
        model.save(source)  # Keras 3 writes (and reads) HDF5 too
        expected = "keras"
    else:
        source = tmp_path / "model_sm"
        model.export(str(source), verbose=False)  # a user's SavedModel: dynamic batch
        expected = "saved_model"
        if kind == "tflite":
            flat = tf.lite.TFLiteConverter.from_saved_model(str(source)).convert()
            source = tmp_path / "model.tflite"
            source.write_bytes(flat)
            expected = "tflite"
    _spec_beside(source)
    result = _invoke("convert", source, "--out", tmp_path / "out", "--calib", calib, "--val", val)
    assert result.exit_code == 0, result.output
    report = _check_artifacts(tmp_path / "out", expected)
    for key in ("int8_tflite", "int8_onnx"):
        heads = report["artifacts"][key]["heads"]
        assert heads["label"]["agreement"] >= 0.95 and heads["embedding"]["sqnr_db"] >= 20, (key, heads)


@pytest.fixture(scope="module")
def legacy(gray, tmp_path_factory):
    _, _, calib, val = gray
    d = tmp_path_factory.mktemp("legacy")
    zoo.write_legacy_h5(d, GRAY)
    return d, calib, val


def test_legacy_h5_with_a_custom_layer_loads_with_tf_keras_only_with_custom_code(legacy, tmp_path):
    d, calib, val = legacy
    refused = _invoke("convert", d / "legacy.h5", "--out", tmp_path / "no", "--calib", calib, "--val", val)
    assert refused.exit_code == 3, refused.output
    assert "Keras cannot load this model" in refused.output and "--custom-code FILE.py" in refused.output
    result = _invoke("convert", d / "legacy.h5", "--out", tmp_path / "out", "--calib", calib, "--val", val,
                     "--custom-code", d / "custom.py")
    assert result.exit_code == 0, result.output
    report = _check_artifacts(tmp_path / "out", "saved_model")
    assert "tf_keras" in report["source"]["format"]
    assert report["artifacts"]["int8_tflite"]["agreement"] >= 0.95


def test_lambda_and_weights_only_h5_files_are_one_line_errors(legacy, tmp_path):
    d, calib, _ = legacy
    result = _invoke("convert", d / "lambda.h5", "--out", tmp_path / "a", "--calib", calib)
    assert result.exit_code == 3 and "--custom-code" in result.output and "Traceback" not in result.output
    result = _invoke("convert", d / "lambda.h5.weights.h5", "--out", tmp_path / "b", "--calib", calib)
    assert result.exit_code == 3 and "weights only" in result.output
    assert result.output.count("Error:") == 1


def test_pruning_an_onnx_source_says_which_sources_support_it(gray, tmp_path):
    work, _, calib, _ = gray
    onnx_model = tmp_path / "m.onnx"
    onnx_model.write_bytes(zoo.shared_hw_onnx())
    result = _invoke("convert", onnx_model, "--out", tmp_path / "out", "--calib", calib, "--prune", "0.5",
                     "--input-shape", "x=1,3,24,40")
    assert result.exit_code == 3
    assert "--prune, --distill and --student need a Keras source (.keras, or an .h5 that Keras 3 loads)" in result.output


# -- ONNX: dynamic shapes ----------------------------------------------------------------------------------

def test_onnx_with_shared_symbolic_height_and_width_needs_and_takes_input_shape(tmp_path):
    source = tmp_path / "ocr.onnx"
    source.write_bytes(zoo.shared_hw_onnx())
    calib = zoo.shared_hw_data(tmp_path, 240, 24, 40)
    result = _invoke("convert", source, "--out", tmp_path / "no", "--calib", calib)
    assert result.exit_code == 3
    assert "input 'x' has dynamic dimensions (1x3x?x?); fix them with --input-shape x=1,3,N,N" in result.output
    result = _invoke("convert", source, "--out", tmp_path / "out", "--calib", calib, "--input-shape", "x=1,3,24,40")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["artifacts"]["int8_tflite"]["agreement"] >= 0.95 and report["artifacts"]["int8_onnx"]["accuracy"] == 1.0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    tflite = manifest["artifacts"]["int8_tflite"]
    assert tflite["inputs"][0]["shape"] == [1, 24, 40, 3] and tflite["layout"] == {"inputs": {"x": {"perm": [0, 2, 3, 1]}}}
    assert manifest["artifacts"]["float_onnx"]["inputs"][0]["shape"] == [1, 3, 24, 40]


# -- ONNX from PyTorch: NCHW, two inputs, dynamic batch, fed through the spec -------------------------------

@pytest.fixture(scope="module")
def pytorch_style(tmp_path_factory):
    """The NCHW RGB + log-mel model as torch.onnx.export writes it (two NCHW inputs, dynamic batch), with its
    spec beside it, converted to all four artifacts."""
    z = zoo.MODELS["fused_nchw"]
    work = tmp_path_factory.mktemp("pytorch_style")
    model = zoo.train(z, work / "av_keras.keras")
    calib, val = zoo.write_data(z, work)
    first = _invoke("convert", model, "--out", work / "keras_out", "--format", "onnx", "--calib", calib)
    assert first.exit_code == 0, first.output
    source = work / "av.onnx"
    source.write_bytes((work / "keras_out" / "float.onnx").read_bytes())
    source.with_suffix(".yaml").write_text(yaml.safe_dump(z.spec, sort_keys=False))
    result = _invoke("convert", source, "--out", work / "out", "--calib", calib, "--val", val)
    assert result.exit_code == 0, result.output
    return z, work, val


def test_pytorch_style_onnx_gives_an_nhwc_int8_tflite_without_edge_transposes(pytorch_style):
    from edgemm.backends.isolated import describe_tflite

    _, work, _ = pytorch_style
    report = _check_artifacts(work / "out", "onnx")
    manifest = json.loads((work / "out" / "manifest.json").read_text())
    tflite = manifest["artifacts"]["int8_tflite"]
    assert tflite["layout"]["inputs"] == {"pixel_values": {"perm": [0, 2, 3, 1]},
                                          "input_features": {"perm": [0, 2, 3, 1]}}
    shapes = {t["name"]: t["shape"] for t in tflite["inputs"]}
    assert shapes["pixel_values"] == [1, 32, 32, 3] and shapes["input_features"][-1] == 1
    ops = describe_tflite(work / "out" / "int8.tflite")
    edges = set(shapes) | {t["name"] for t in tflite["outputs"]}
    assert not [op for op in ops if op["name"] == "TRANSPOSE"
                and {t.get("name") for t in op["inputs"] + op["outputs"]} & edges]
    for key in ("int8_tflite", "int8_onnx"):
        assert report["artifacts"][key]["heads"]["logits"]["agreement"] >= 0.95


def test_run_and_bench_feed_the_onnx_made_tflite_through_the_spec(pytorch_style, tmp_path):
    z, work, val = pytorch_style
    video, wav, order = zoo.write_media(tmp_path)
    stats = tmp_path / "stats.jsonl"
    result = _invoke("run", "--model", work / "out", "--backend", "litert", "--camera", video, "--mic", wav,
                     "--unpaced", "--stats", stats)
    assert result.exit_code == 0, result.output
    assert "running int8.tflite" in result.output
    records, summary = read_stats(stats)
    assert summary["counters"]["backend_errors"] == 0
    last = {}
    for r in records:  # the decision of the last inference inside each second
        if r.get("media_t") is not None and "label" in r:
            last[int(r["media_t"])] = r["label"]
    labels = z.spec["outputs"]["logits"]["labels"]
    assert [last.get(i) for i in range(len(order))] == [labels[i] for i in order]
    report = tmp_path / "report"
    bench = _invoke("bench", work / "out", "--report", report, "--backend", "litert", "--threads", "1", "--runs", "20",
                    "--warmup", "2", "--duration", "0.2", "--val", val)
    assert bench.exit_code == 0, bench.output
    rows = json.loads((report / "report.json").read_text())["results"]
    int8 = next(r for r in rows if r["artifact"] == "int8_tflite")
    assert int8["accuracy"] >= 0.95 and int8["latency_ms"]["p50"] > 0
