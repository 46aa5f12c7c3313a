"""Quantization-aware fine-tuning on the converter's own graph (converters/qat.py, converters/tflite_graph.py),
on small models built here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests import quant_models

pytestmark = pytest.mark.convert


def _calibrated(keras_model, shape: tuple[int, ...], calib: dict[str, np.ndarray], folder) -> bytes:
    """The converter's calibrated float model (min/max statistics on every activation), as tflite_ranges gets it."""
    from converters import export, saved_model
    from edgemm.binding import Tensor

    path = export.export_saved_model(keras_model, folder / "sm")
    converter = export.tflite_converter(saved_model.Graph(path, [Tensor("x", shape, "float32")]), calib)
    converter._experimental_calibrate_only = True
    return converter.convert()


def test_the_graph_computes_the_calibrated_model_with_every_op_it_knows(tmp_path):
    """The TensorFlow version of the TFLite graph gives LiteRT's outputs (to float rounding) on a model with
    18 kinds of op, and every weight is a variable at its tensor's index."""
    import tensorflow as tf
    from tensorflow.lite.tools import flatbuffer_utils

    from converters import tflite_graph, tflite_ranges

    calib = {"x": quant_models.cnn_images(16, 1)}
    calibrated = _calibrated(quant_models.many_ops_cnn(), (1, 16, 16, 3), calib, tmp_path)
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = tflite_graph.Graph(model)
    names = {v: k for k, v in vars(graph.builtin).items() if not k.startswith("_")}
    ops = {names[graph.codes[op.opcodeIndex]] for op in model.subgraphs[0].operators}
    assert len(ops) >= 18 and {"PRELU", "ABS", "HARD_SWISH", "CONCATENATION", "TRANSPOSE", "MEAN", "SOFTMAX"} <= ops, ops
    weight_ops = sum(names[graph.codes[op.opcodeIndex]] in tflite_graph.WEIGHT_AXIS for op in model.subgraphs[0].operators)
    assert len(graph.channel_axis) == weight_ops == 9 and set(graph.channel_axis) <= set(graph.weights)

    values = graph.run({int(model.subgraphs[0].inputs[0]): tf.constant(calib["x"])})
    ours = values[int(model.subgraphs[0].outputs[0])].numpy()
    litert = tflite_ranges._outputs(calibrated, calib, range(16), tmp_path)["probs"]
    assert np.abs(ours - litert).max() < 1e-5


def test_an_op_it_does_not_compute_leaves_the_model_as_post_training_made_it(tmp_path):
    """EXP is not among the graph's ops: no fine-tuning, the reason in the report, the int8 TFLite made as
    without it."""
    import keras

    from converters import export, saved_model
    from edgemm.binding import Tensor

    x = keras.Input((32,), name="x")
    h = keras.layers.Activation(keras.ops.exp, name="exp")(keras.layers.Dense(8, name="d")(x))
    path = export.export_saved_model(keras.Model(x, keras.layers.Dense(4, name="logits")(h)), tmp_path / "sm")
    graph = saved_model.Graph(path, [Tensor("x", (1, 32), "float32")])
    calib = {"x": quant_models.glitchy_data(100, 1)}
    plain = export.write_tflite(graph, tmp_path / "plain.tflite", calib, method="auto")
    tuned = export.write_tflite(graph, tmp_path / "tuned.tflite", calib, method="auto", qat_seconds=60)
    assert tuned["qat"] == {"skipped": "op EXP"} and "qat" not in plain, tuned["qat"]
    assert (tmp_path / "plain.tflite").read_bytes() == (tmp_path / "tuned.tflite").read_bytes()


def test_fine_tuning_brings_the_int8_tflite_closer_and_convert_keeps_it(tmp_path):
    """small_cnn's int8 error is spread over its layers. Fine-tuned with fake quantization on the calibration
    samples, its full-int8 TFLite is closer to the float model on the validation samples (31.1 -> 32.7 dB
    when written); `edgemm convert --qat on` keeps it, says so, and its manifest says how it was made. Within
    the time bound: --qat-seconds 1 leaves time for one epoch at most (the first one's time is guessed)."""
    import yaml

    from converters.convert import ConvertOptions, convert

    model = quant_models.small_cnn()
    model.save(tmp_path / "cnn.keras")
    (tmp_path / "cnn.yaml").write_text(yaml.safe_dump({
        "version": 2, "inputs": {"x": {"source": "constant", "value": 0}}, "outputs": {"logits": {"head": "raw"}}}))
    np.savez(tmp_path / "calib.npz", x=quant_models.cnn_images(300, 1))
    np.savez(tmp_path / "val.npz", x=quant_models.cnn_images(300, 2))
    db = {}
    for qat in ("off", "on"):
        options = ConvertOptions(calib=tmp_path / "calib.npz", val=tmp_path / "val.npz", formats=("tflite",),
                                 qat=qat, int16x8="off", min_sqnr_db=0.0)
        convert(tmp_path / "cnn.keras", tmp_path / qat, options, log=lambda line: None)
        report = json.loads((tmp_path / qat / "report.json").read_text())
        db[qat] = report["artifacts"]["int8_tflite"]["sqnr_db"]
    assert db["on"] > db["off"] + 0.5, db
    int8 = report["artifacts"]["int8_tflite"]
    assert int8["quantization"]["ranges"]["qat"]["epochs"] >= 1, int8["quantization"]["ranges"]["qat"]
    assert any("quantization-aware fine-tuning" in n and n.endswith("kept") for n in report["notes"]), report["notes"]
    manifest = json.loads((tmp_path / "on" / "manifest.json").read_text())
    assert manifest["artifacts"]["int8_tflite"]["quantization"]["scheme"] == "full-int8, quantization-aware fine-tuned"
    assert manifest["artifacts"]["int8_tflite"]["precision"] == "int8"

    options = ConvertOptions(calib=tmp_path / "calib.npz", val=tmp_path / "val.npz", formats=("tflite",),
                             qat="on", qat_seconds=1.0, int16x8="off", min_sqnr_db=0.0)
    convert(tmp_path / "cnn.keras", tmp_path / "short", options, log=lambda line: None)
    report = json.loads((tmp_path / "short" / "report.json").read_text())
    assert report["artifacts"]["int8_tflite"]["quantization"]["ranges"]["qat"]["epochs"] <= 1


def test_a_graph_that_computes_otherwise_than_litert_is_not_trained(tmp_path, monkeypatch):
    """Fine-tuning towards a function the model does not compute would train the wrong thing: the graph is
    checked against LiteRT's run of the same float model first. Here its fused activations are made to do
    nothing (an op read wrong, which the real op table must never do)."""
    from converters import export, saved_model, tflite_graph
    from edgemm.binding import Tensor

    monkeypatch.setattr(tflite_graph, "_activation", lambda tf, x, fused: x)
    path = export.export_saved_model(quant_models.small_cnn(), tmp_path / "sm")
    graph = saved_model.Graph(path, [Tensor("x", (1, 16, 16, 3), "float32")])
    chosen = export.write_tflite(graph, tmp_path / "m.tflite", {"x": quant_models.cnn_images(64, 1)}, method="auto",
                                 qat_seconds=60)
    assert chosen["qat"]["skipped"].startswith("its graph computed here is "), chosen["qat"]
    assert "dB from LiteRT's" in chosen["qat"]["skipped"]
