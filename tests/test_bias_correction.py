"""Bias correction (converters/bias_correction.py) on a small model built here where per-tensor int8 weights
shift the outputs: the corrected model's int8 ONNX is closer to the original float model."""

from __future__ import annotations

import numpy as np
import pytest

from converters import bias_correction
from tests.quant_models import biased_conv_bn_gemm, biased_images

def _run(path, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    runs = [session.run(None, {k: v[i : i + 1] for k, v in inputs.items()}) for i in range(len(inputs["x"]))]
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]


def _sqnr(reference: np.ndarray, test: np.ndarray) -> float:
    reference = reference.astype(np.float64)
    return float(10 * np.log10((reference ** 2).sum() / ((reference - test) ** 2).sum()))


@pytest.fixture(scope="module")
def corrected(tmp_path_factory):
    """The model, its correction for per-tensor weights, and both quantized by the repo's int8 ONNX path."""
    from converters.export import write_onnx_int8

    work = tmp_path_factory.mktemp("bias")
    calib = biased_images(32, 1)
    original = biased_conv_bn_gemm(work / "float.onnx")
    count = bias_correction.correct(original, work / "corrected.onnx", calib, per_channel=False)
    for name in ("float", "corrected"):
        write_onnx_int8(work / f"{name}.onnx", work / f"{name}_int8.onnx", calib, method="minmax", per_channel=False)
    return work, count


def test_every_layer_is_corrected(corrected):
    import onnx

    work, count = corrected
    assert count == 4  # conv, dw (its BatchNormalization folded in), pw (bias added), fc (C added)
    graph = onnx.load(str(work / "corrected.onnx")).graph
    assert "BatchNormalization" not in {n.op_type for n in graph.node}
    assert {n.name: len(n.input) for n in graph.node if n.name in ("dw", "pw", "fc")} == {"dw": 3, "pw": 3, "fc": 3}
    assert not {"gamma", "beta", "mean", "var"} & {t.name for t in graph.initializer}


def test_corrected_int8_is_closer_to_the_float_model(corrected):
    """Measured: y 31.5 -> 37.4 dB, logits 33.7 -> 39.2 dB (+5.9, +5.5)."""
    work, _ = corrected
    held_out = biased_images(32, 2)
    reference = _run(work / "float.onnx", held_out)
    plain = [_sqnr(r, t) for r, t in zip(reference, _run(work / "float_int8.onnx", held_out), strict=True)]
    fixed = [_sqnr(r, t) for r, t in zip(reference, _run(work / "corrected_int8.onnx", held_out), strict=True)]
    assert all(after >= before + 3 for before, after in zip(plain, fixed, strict=True)), (plain, fixed)


def test_the_correction_changes_the_float_model_little(corrected):
    """Measured: 33.0 dB (y), 37.2 dB (logits); the int8 error it removes is larger (31.5, 33.7 dB)."""
    work, _ = corrected
    held_out = biased_images(32, 2)
    reference = _run(work / "float.onnx", held_out)
    moved = [_sqnr(r, t) for r, t in zip(reference, _run(work / "corrected.onnx", held_out), strict=True)]
    assert min(moved) > 30, moved


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("reduce_range", [False, True])
def test_rounding_is_onnx_runtimes(tmp_path, per_channel, reduce_range):
    """The weights quantize_static writes, dequantized, equal `rounded` of the (folded) weights: eps is exact."""
    import onnx
    from onnx import numpy_helper

    from converters.export import write_onnx_int8

    calib = biased_images(8, 1)
    corrected_path = tmp_path / "corrected.onnx"
    bias_correction.correct(biased_conv_bn_gemm(tmp_path / "float.onnx"), corrected_path, calib, per_channel, reduce_range)
    write_onnx_int8(corrected_path, tmp_path / "int8.onnx", calib, method="minmax", per_channel=per_channel,
                    reduce_range=reduce_range)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(corrected_path)).graph.initializer}
    int8 = onnx.load(str(tmp_path / "int8.onnx")).graph
    stored = {t.name: numpy_helper.to_array(t) for t in int8.initializer}
    dequantize = {n.output[0]: n.input for n in int8.node if n.op_type == "DequantizeLinear"}  # float name -> int8
    for name, axis in (("w1", 0), ("w2", 0), ("w3", 0), ("w4", 0)):
        q, scale = stored[dequantize[name][0]].astype(np.float32), stored[dequantize[name][1]]
        shape = [-1 if i == axis else 1 for i in range(q.ndim)] if per_channel else []
        expected = bias_correction.rounded(weights[name], axis if per_channel else None, reduce_range)
        np.testing.assert_array_equal(q * scale.reshape(shape), expected, err_msg=name)


def test_nothing_to_correct_is_a_copy(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Add", ["r", "x"], ["y"])]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "plain", [value("x", TensorProto.FLOAT, [1, 4])],
                              [value("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, str(tmp_path / "plain.onnx"))
    calib = {"x": np.ones((2, 4), np.float32)}
    assert bias_correction.correct(tmp_path / "plain.onnx", tmp_path / "out.onnx", calib, per_channel=True) == 0
    assert (tmp_path / "out.onnx").read_bytes() == (tmp_path / "plain.onnx").read_bytes()


def test_shared_weights_are_left_alone(tmp_path):
    """A weight read by two layers would round once for both: correcting one layer's bias for it is wrong for
    the other's input."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 1, (4, 4)).astype(np.float32), "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"]), helper.make_node("Gemm", ["h", "w"], ["y"])]
    value = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "shared", [value("x", TensorProto.FLOAT, [1, 4])],
                              [value("y", TensorProto.FLOAT, [1, 4])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "shared.onnx"))
    calib = {"x": np.ones((2, 4), np.float32)}
    assert bias_correction.correct(tmp_path / "shared.onnx", tmp_path / "out.onnx", calib, per_channel=False) == 0


def _single_layer(path, op: str):
    """One layer whose weights round coarsely per tensor (one weight 10x the rest): a depthwise Conv with zero
    padding on 4x4 maps (most outputs are at a border), or MatMul -> Add."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    value = helper.make_tensor_value_info
    if op == "Conv":
        w = rng.normal(0, 0.1, (6, 1, 3, 3)).astype(np.float32)
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], group=6)]
        b, shape = rng.normal(0, 0.1, 6).astype(np.float32), [1, 6, 4, 4]
    else:
        w = rng.normal(0, 0.1, (6, 3)).astype(np.float32)
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
        b, shape = rng.normal(0, 0.1, (1, 3)).astype(np.float32), [1, 6]
    w.flat[0] = 10 * np.abs(w).max()
    graph = helper.make_graph(nodes, op, [value("x", TensorProto.FLOAT, shape)], [value("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path, shape


@pytest.mark.parametrize("op", ["Conv", "MatMul"])
def test_the_rounded_layer_keeps_the_float_mean_output(tmp_path, op):
    """b' = b - eps E[x]: on the calibration samples, the layer with rounded weights and the corrected bias has
    the float layer's mean output per channel, border outputs of a padded Conv included."""
    import onnx
    from onnx import numpy_helper

    path, shape = _single_layer(tmp_path / "layer.onnx", op)
    calib = {"x": np.random.default_rng(8).uniform(0, 1, (10, *shape[1:])).astype(np.float32)}
    assert bias_correction.correct(path, tmp_path / "corrected.onnx", calib, per_channel=False) == 1
    for source, target in ((path, "plain"), (tmp_path / "corrected.onnx", "fixed")):
        model = onnx.load(str(source))
        weights = next(t for t in model.graph.initializer if t.name == "w")
        weights.CopyFrom(numpy_helper.from_array(bias_correction.rounded(numpy_helper.to_array(weights), None), "w"))
        onnx.save(model, str(tmp_path / f"{target}_rounded.onnx"))

    def channel_means(name: str) -> np.ndarray:
        y = _run(tmp_path / name, calib)[0].astype(np.float64)
        return y.mean(axis=(0, 2, 3)) if op == "Conv" else y.mean(axis=0)

    reference = channel_means("layer.onnx")
    assert np.abs(channel_means("plain_rounded.onnx") - reference).max() > 1e-3  # the shift it corrects
    np.testing.assert_allclose(channel_means("fixed_rounded.onnx"), reference, atol=1e-6)


@pytest.mark.convert
def test_convert_keeps_the_bias_corrected_int8_onnx_when_int8_misses(tmp_path):
    """--bias-correction auto: the int8 ONNX misses 30 dB with per-tensor weights (an outlier weight 6x the
    others' largest), so edgemm convert quantizes the corrected model too and keeps it: 25.0 -> 32.2 dB measured."""
    from converters.convert import ConvertOptions, convert

    path = biased_conv_bn_gemm(tmp_path / "biased.onnx", outlier=6.0)
    np.savez(tmp_path / "calib.npz", **biased_images(64, 1))
    np.savez(tmp_path / "val.npz", **biased_images(64, 2))
    reports = {}
    for mode in ("off", "auto"):
        options = ConvertOptions(calib=tmp_path / "calib.npz", val=tmp_path / "val.npz", formats=("onnx",),
                                 per_channel=False, method="minmax", equalize=False, bias_correction=mode,
                                 min_sqnr_db=0.0)
        reports[mode] = convert(path, tmp_path / mode, options, log=lambda line: None)["artifacts"]["int8_onnx"]
    off, auto = reports["off"], reports["auto"]
    assert off["sqnr_db"] < 30.0 and "bias_correction" not in off["quantization"]  # the premise: int8 misses
    assert auto["quantization"]["bias_correction"] == {"layers": 4}
    assert auto["sqnr_db"] > off["sqnr_db"] + 4.0, (off["sqnr_db"], auto["sqnr_db"])
