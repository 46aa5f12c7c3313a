"""Artifact layouts (edgemm.layout) and fixing dynamic ONNX shapes (converters.shapes)."""

from __future__ import annotations

import numpy as np
import pytest

from converters import shapes
from edgemm import layout
from edgemm.binding import Tensor, bind
from edgemm.errors import InputError
from edgemm.spec import from_dict

SPEC = from_dict({
    "inputs": {
        "pixels": {"source": "camera", "layout": "NCHW", "color": "rgb", "size": [8, 12]},
        "mel": {"source": "mic", "sample_rate": 8000, "window": 0.5, "n_fft": 256, "hop_length": 128, "n_mels": 16,
                "axes": ["channel", "mels", "time"]},
        "bias": {"source": "constant", "value": [[1.0], [2.0], [3.0]]},
    },
    "outputs": {"logits": {"head": "classify"}},
})


def test_adapted_spec_writes_the_artifact_layout_and_binds_to_its_tensors():
    mel_time = SPEC.inputs["mel"].transform.output_shape[2]
    perms = {"pixels": (0, 2, 3, 1), "mel": (0, 2, 3, 1), "bias": (1, 0)}
    spec = layout.adapt_spec(SPEC, perms, {"bias": (3, 1)})
    assert spec.inputs["pixels"].transform.layout == "NHWC"
    assert spec.inputs["mel"].transform.axes == ("mels", "time", "channel")
    assert spec.inputs["bias"].value == [[1.0, 2.0, 3.0]]
    artifact = [Tensor("pixels", (1, 8, 12, 3), "float32"), Tensor("mel", (1, 16, mel_time, 1), "float32"),
                Tensor("bias", (1, 3), "float32")]
    binding = bind(spec, artifact, [Tensor("logits", (1, 10), "float32")])
    assert binding.inputs["pixels"].shape == (1, 8, 12, 3)
    with pytest.raises(InputError, match="pixels: spec gives 3x8x12"):  # the source spec does not fit the artifact
        bind(SPEC, artifact, [Tensor("logits", (1, 10), "float32")])


def test_transform_output_in_the_artifact_layout_equals_the_transposed_source_output():
    frame = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    adapted = layout.adapt_spec(SPEC, {"pixels": (0, 2, 3, 1)}, {})
    source = SPEC.inputs["pixels"].transform.apply(frame)
    np.testing.assert_array_equal(adapted.inputs["pixels"].transform.apply(frame), source.transpose(1, 2, 0))
    audio = np.random.default_rng(1).normal(size=4000).astype(np.float32)
    adapted = layout.adapt_spec(SPEC, {"mel": (0, 2, 3, 1)}, {})
    np.testing.assert_allclose(adapted.inputs["mel"].transform.features_of(audio),
                               SPEC.inputs["mel"].transform.features_of(audio).transpose(1, 2, 0), rtol=1e-6)


def test_layouts_no_transform_writes_are_refused_in_one_line():
    with pytest.raises(InputError, match="pixels: the artifact wants the image axes as HCW"):
        layout.adapt_spec(SPEC, {"pixels": (0, 2, 1, 3)}, {})
    stateful = from_dict({"inputs": {"h": {"source": "state", "from": "h_out"}}, "outputs": {"h_out": {"head": "state"}}})
    with pytest.raises(InputError, match="h: a state input"):
        layout.adapt_spec(stateful, {"h": (0, 2, 1)}, {})


def test_to_artifact_transposes_samples_with_or_without_a_batch_axis():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # 2 samples of 3x4x5
    out = layout.to_artifact({"x": x, "y": x}, {"x": (0, 2, 3, 1), "y": (1, 2, 0)})
    np.testing.assert_array_equal(out["x"], x.transpose(0, 2, 3, 1))  # model 1x3x4x5: samples replace the batch
    np.testing.assert_array_equal(out["y"], x.transpose(0, 2, 3, 1))  # model 3x4x5, no batch axis


@pytest.mark.parametrize("value, message", [
    ("x", "give NAME=D0,D1"), ("x=1,3,a", "give NAME=D0,D1"), ("x=1,0,4", "positive"), ("=1,2", "give NAME"),
])
def test_bad_input_shape_flags(value, message):
    with pytest.raises(InputError, match=message):
        shapes.parse_input_shapes([value])


def test_settle_fixes_each_dimension_by_position_and_names_the_flag_when_missing():
    inputs = [Tensor("x", (-1, 3, -1, -1), "float32"), Tensor("ids", (-1, 16), "int64")]
    settled = shapes.settle(inputs, shapes.parse_input_shapes(["x=1,3,48,192"]), "m.onnx")
    assert settled[0].shape == (1, 3, 48, 192) and settled[1].shape == (-1, 16)
    with pytest.raises(InputError, match=r"input 'x' has dynamic dimensions \(\?x3x\?x\?\); fix them with "
                                         r"--input-shape x=1,3,N,N"):
        shapes.settle(inputs, {}, "m.onnx")
    with pytest.raises(InputError, match="keep its rank and static dimensions"):
        shapes.settle(inputs, {"x": (1, 4, 48, 192)}, "m.onnx")
    with pytest.raises(InputError, match="no such input"):
        shapes.settle(inputs, {"z": (1,)}, "m.onnx")


def test_fix_onnx_unties_a_symbol_shared_by_height_and_width(tmp_path):
    onnx = pytest.importorskip("onnx")
    import onnxruntime as ort
    from onnx import TensorProto, helper

    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], np.ones(4 * 27, np.float32).tolist())
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "size", "size"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, "size", "size"])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.shape_inference.infer_shapes(model)
    src = tmp_path / "m.onnx"
    onnx.save(model, src)
    fixed = shapes.fix_onnx(src, {"x": (1, 3, 48, 192)}, tmp_path / "fixed.onnx")
    loaded = onnx.load(fixed)
    assert [d.dim_value for d in loaded.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 48, 192]
    assert [d.dim_value for d in loaded.graph.output[0].type.tensor_type.shape.dim] == [1, 4, 48, 192]
    session = ort.InferenceSession(str(fixed), providers=["CPUExecutionProvider"])
    assert session.run(None, {"x": np.ones((1, 3, 48, 192), np.float32)})[0].shape == (1, 4, 48, 192)


def test_outputs_come_back_in_the_source_layout_as_views():
    from edgemm.backends import TensorInfo

    class FakeBackend:  # stands in for a LiteRT model whose 4D output onnx2tf made NHWC
        name, last_invoke_s = "fake", 0.001
        inputs = (TensorInfo("x", (1, 4), "float32"),)
        outputs = (TensorInfo("fmap", (1, 16, 16, 8), "float32"), TensorInfo("cls", (1, 5), "float32"))

        def run(self, feeds):
            return {"fmap": np.arange(16 * 16 * 8, dtype=np.float32).reshape(1, 16, 16, 8), "cls": np.ones((1, 5))}

    fake = FakeBackend()
    assert layout.SourceLayoutOutputs.wrap(fake, {"cls": (0, 1)}) is fake  # nothing permuted: no wrapper
    wrapped = layout.SourceLayoutOutputs.wrap(fake, {"fmap": (0, 2, 3, 1)})
    assert [t.shape for t in wrapped.outputs] == [(1, 8, 16, 16), (1, 5)]
    out = wrapped.run({"x": np.zeros((1, 4), np.float32)})
    np.testing.assert_array_equal(out["fmap"], fake.run({})["fmap"].transpose(0, 3, 1, 2))
    assert wrapped.last_invoke_s == 0.001 and wrapped.name == "fake"
    entry = layout.ArtifactLayout({"x": (0, 1)}, {"fmap": (0, 2, 3, 1)}).entry()
    assert entry == {"layout": {"outputs": {"fmap": {"perm": [0, 2, 3, 1]}}}}
    assert layout.read_perms(entry["layout"], "outputs") == {"fmap": (0, 2, 3, 1)}
