"""Bias correction (converters/bias_correction.py) on a small model built here where per-tensor int8 weights
shift the outputs: the corrected model's int8 ONNX is closer to the original float model."""

from __future__ import annotations

import numpy as np
import pytest

from converters import bias_correction

CHANNELS = 16


def _conv_bn_gemm(path):
    """Conv(4->16, one weight 2x the others' largest: it sets the per-tensor step) -> ReLU -> depthwise Conv(16,
    channel ranges over 30x, no bias) -> BatchNormalization -> ReLU -> Conv 1x1(16->8, no bias) = `y`
    -> GlobalAveragePool -> Flatten -> Gemm(transB, no C) = `logits`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    w1 = rng.normal(0, 0.3, (CHANNELS, 4, 3, 3)).astype(np.float32)
    w1[0, 0, 1, 1] = 2 * np.abs(w1).max()
    scale = np.exp(rng.uniform(np.log(1 / 30), 0, CHANNELS)).astype(np.float32)
    arrays = {
        "w1": w1, "b1": rng.normal(0, 0.1, CHANNELS).astype(np.float32),
        "w2": (rng.normal(0, 0.3, (CHANNELS, 1, 3, 3)) * scale[:, None, None, None]).astype(np.float32),
        "gamma": rng.uniform(0.5, 2, CHANNELS).astype(np.float32),
        "beta": rng.normal(0, 0.05, CHANNELS).astype(np.float32),
        "mean": rng.normal(0, 0.05, CHANNELS).astype(np.float32),
        "var": (scale ** 2 * rng.uniform(0.5, 2, CHANNELS)).astype(np.float32),
        "w3": rng.normal(0, 0.3, (8, CHANNELS, 1, 1)).astype(np.float32),
        "w4": rng.normal(0, 0.3, (5, 8)).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=CHANNELS, name="dw"),
             helper.make_node("BatchNormalization", ["c2", "gamma", "beta", "mean", "var"], ["n2"], name="bn"),
             helper.make_node("Relu", ["n2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="pw"),
             helper.make_node("GlobalAveragePool", ["y"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w4"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "biased", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _images(n: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs with a clearly non-zero mean (pixels in [0.25, 1]): the weights' rounding errors, times the
    mean, shift the outputs."""
    return {"x": np.random.default_rng(seed).uniform(0.25, 1, (n, 4, 16, 16)).astype(np.float32)}


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
    calib = _images(32, 1)
    original = _conv_bn_gemm(work / "float.onnx")
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
    held_out = _images(32, 2)
    reference = _run(work / "float.onnx", held_out)
    plain = [_sqnr(r, t) for r, t in zip(reference, _run(work / "float_int8.onnx", held_out), strict=True)]
    fixed = [_sqnr(r, t) for r, t in zip(reference, _run(work / "corrected_int8.onnx", held_out), strict=True)]
    assert all(after >= before + 3 for before, after in zip(plain, fixed, strict=True)), (plain, fixed)


def test_the_correction_changes_the_float_model_little(corrected):
    """Measured: 33.0 dB (y), 37.2 dB (logits); the int8 error it removes is larger (31.5, 33.7 dB)."""
    work, _ = corrected
    held_out = _images(32, 2)
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

    calib = _images(8, 1)
    corrected_path = tmp_path / "corrected.onnx"
    bias_correction.correct(_conv_bn_gemm(tmp_path / "float.onnx"), corrected_path, calib, per_channel, reduce_range)
    write_onnx_int8(corrected_path, tmp_path / "int8.onnx", calib, method="minmax", per_channel=per_channel,
                    reduce_range=reduce_range)
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(corrected_path)).graph.initializer}
    stored = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "int8.onnx")).graph.initializer}
    for name, axis in (("w1", 0), ("w2", 0), ("w3", 0), ("w4", 0)):
        q, scale = stored[f"{name}_quantized"].astype(np.float32), stored[f"{name}_scale"]
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
