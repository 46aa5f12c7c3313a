"""The model spec: parsing, v1 migration, binding to a model's tensors, heads, template."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemm import spec as specs
from edgemm.binding import Tensor, bind
from edgemm.errors import InputError
from edgemm.runtime.postprocess import MultiLabel, Smoother, activate

FULL = """
inputs:
  pixel_values:
    source: camera
    layout: NCHW
    color: rgb
    size: [224, 224]
    resize: center-crop
    scale: 0.00392156862745098
    mean: [0.485, 0.456, 0.406]
    std: [0.229, 0.224, 0.225]
  input_features:
    source: mic
    sample_rate: 16000
    window: 1.0
    features: logmel
    n_fft: 512
    win_length: 400
    hop_length: 160
    center: true
    n_mels: 64
    fmax: 8000
    axes: [channel, mels, time]
  state:
    source: state
    from: stateN
  sr:
    source: constant
    value: 16000
outputs:
  logits:
    head: classify
    activation: softmax
    labels: labels.txt
  stateN:
    head: state
"""


def _full(tmp_path):
    (tmp_path / "labels.txt").write_text("yes\nno\nmaybe\n")
    path = tmp_path / "model.yaml"
    path.write_text(FULL)
    return specs.read_spec_file(path)


def test_full_example_parses_with_labels_from_a_file(tmp_path):
    spec = _full(tmp_path)
    assert list(spec.inputs) == ["pixel_values", "input_features", "state", "sr"]
    assert spec.inputs["pixel_values"].transform.mean == (0.485, 0.456, 0.406)
    assert spec.outputs["logits"].labels == ("yes", "no", "maybe")
    assert spec.inputs["state"].from_output == "stateN"
    again = specs.from_dict(json.loads(json.dumps(spec.to_dict())))  # what the manifest carries
    assert again == spec


def _tensors():
    inputs = [Tensor("pixel_values", (1, 3, 224, 224), "float32"), Tensor("input_features", (1, 1, 64, 101), "float32"),
              Tensor("state", (2, 1, 128), "float32"), Tensor("sr", (), "int64")]
    outputs = [Tensor("logits", (1, 3), "float32"), Tensor("stateN", (2, 1, 128), "float32")]
    return inputs, outputs


def test_binding_settles_shapes_batch_axes_state_and_constants(tmp_path):
    binding = bind(_full(tmp_path), *_tensors())
    assert binding.inputs["pixel_values"].shape == (1, 3, 224, 224) and binding.inputs["pixel_values"].batch_axis
    assert binding.inputs["input_features"].shape == (1, 1, 64, 101)
    assert binding.inputs["state"].zeros().shape == (2, 1, 128)
    sr = binding.inputs["sr"].constant()
    assert sr.dtype == np.int64 and sr.shape == () and int(sr) == 16000
    assert [o.spec.head for o in binding.heads] == ["classify"]


@pytest.mark.parametrize("change, message", [
    (("pixel_values", (1, 224, 224, 3)), "pixel_values: spec gives 3x224x224 (NCHW rgb), model wants 1x224x224x3"),
    (("input_features", (1, 1, 64, 100)), "input_features: spec gives 1x64x101 (logmel, axes channel/mels/time), model wants 1x1x64x100"),
    (("state", (2, 1, 64)), "state: state input is 2x1x64 but output stateN is 2x1x128"),
])
def test_binding_names_the_input_and_both_shapes(tmp_path, change, message):
    inputs, outputs = _tensors()
    inputs = [Tensor(t.name, change[1], t.dtype) if t.name == change[0] else t for t in inputs]
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        bind(_full(tmp_path), inputs, outputs)


def test_binding_refuses_missing_inputs_wrong_label_counts_and_unknown_outputs(tmp_path):
    spec = _full(tmp_path)
    inputs, outputs = _tensors()
    with pytest.raises(InputError, match="not in the spec: extra"):
        bind(spec, inputs + [Tensor("extra", (1, 4), "float32")], outputs)
    with pytest.raises(InputError, match="3 labels for an output of 5 values"):
        bind(spec, inputs, [Tensor("logits", (1, 5), "float32"), outputs[1]])
    with pytest.raises(InputError, match="spec output"):
        bind(spec, inputs, [Tensor("other", (1, 3), "float32"), outputs[1]])


@pytest.mark.parametrize("text, message", [
    ("inputs: {x: {source: camera, colour: rgb}}", "unknown key"),
    ("inputs: {x: {source: radar}}", "source must be one of"),
    ("inputs: {x: {source: camera, size: [224]}}", "size"),
    ("inputs: {x: {source: state, from: y}}", "must be an output with head: state"),
    ("inputs: {x: {source: constant, value: [.nan]}}", "finite"),
    ("inputs: {x: {source: camera}}\noutputs: {y: {head: boxes}}", "head 'boxes'"),
    ("inputs: [1, 2]", "inputs must map"),
    ("a: &a [1]\nb: &b [*a, *a]\n", "unknown key"),
])
def test_bad_specs_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message) as e:
        specs.read_spec_file(path)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(path))


def test_v1_sidecar_is_migrated_to_the_tensorflow_convention():
    v1 = {"preprocess": {"image": {"height": 32, "width": 32}, "audio": {"n_mels": 40}}, "labels": ["a", "b"]}
    spec = specs.from_v1(v1, ["image", "audio"], ["digit"])
    image, audio = spec.inputs["image"].transform, spec.inputs["audio"].transform
    assert image.size == (32, 32) and image.color == "gray" and image.invert and image.layout == "NHWC"
    assert audio.convention == "tensorflow" and audio.log == "ln" and not audio.center
    assert audio.axes == ("time", "mels", "channel") and audio.output_shape == (49, 40, 1)
    assert spec.outputs["digit"].labels == ("a", "b")


def test_heads_activation_smoothing_and_multilabel():
    assert np.allclose(activate(np.array([0.2, 0.8]), "auto"), [0.2, 0.8])  # already probabilities
    assert np.allclose(activate(np.array([0.0, 0.0]), "softmax"), [0.5, 0.5])
    assert np.allclose(activate(np.array([0.0]), "sigmoid", True), [0.5])
    s = Smoother(("a", "b"), alpha=1.0, threshold=0.6, activation="none")
    assert not s.update(np.array([0.55, 0.45])).changed  # below the threshold: nothing announced
    d = s.update(np.array([0.1, 0.9]))
    assert d.changed and d.label == "b"
    m = MultiLabel(("speech", "music", "dog"), alpha=1.0, threshold=0.5, activation="none")
    first = m.update(np.array([0.9, 0.7, 0.1]))
    assert first.changed and [label for label, _ in first.labels] == ["speech", "music"]
    assert not m.update(np.array([0.8, 0.6, 0.2])).changed


def test_product_code_knows_no_particular_task():
    """AV-digits is an example: no name of it in the product packages."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"av.?digits|mnist|fsdd|spoken|digit", re.IGNORECASE)
    hits = [f"{p.relative_to(root)}:{i}" for package in ("edgemm", "converters") for p in (root / package).rglob("*.py")
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_head_gates_fail_a_meaningless_conversion():
    from converters.gates import check_gates, gate_message
    from converters.convert import ConvertOptions

    artifacts = {"int8_onnx": {"size_bytes": 10, "heads": {"boxes": {"head": "classify", "agreement": 0.07},
                                                           "embedding": {"head": "raw", "sqnr_db": 31.0}}}}
    gates = check_gates(artifacts, ConvertOptions())
    assert [(g["artifact"], g["passed"]) for g in gates] == [("int8_onnx/boxes", False), ("int8_onnx/embedding", True)]
    message = gate_message({"gates": gates, "artifacts": artifacts}, Path("out"))
    assert "0.07 is below the limit 0.9" in message and "--min-agreement" in message
    lowered = check_gates(artifacts, ConvertOptions(min_agreement=0.05, min_sqnr_db=35.0))
    assert [g["passed"] for g in lowered] == [True, False]


def test_video_input_stacks_the_newest_frames_in_the_loop_feed():
    """A camera input with frames: 3 (a video model, N,T,H,W,C): the loop's feed stacks the newest three
    transformed frames, oldest first, behind the batch axis; the spec binds to the model's 5-D input."""
    from edgemm.capture.camera import Frame
    from edgemm.runtime.feeds import CameraFeed

    spec = specs.from_dict({"inputs": {"clip": {"source": "camera", "layout": "NHWC", "color": "gray",
                                                "size": [4, 4], "scale": 1.0, "frames": 3, "frame_axis": 1}}})
    binding = bind(spec, [Tensor("clip", (1, 3, 4, 4, 1), "float32")], [Tensor("score", (1, 2), "float32")])
    feed = CameraFeed(binding.inputs["clip"], camera=None)
    frames = [Frame(np.full((8, 8), value, np.uint8), float(i), i) for i, value in enumerate((10, 20, 30, 40))]
    first, _ = feed.value(frames[0])
    assert first.shape == (1, 3, 4, 4, 1) and np.all(first == 10)  # the first frame stands in for the missing ones
    for f in frames[1:]:
        latest, _ = feed.value(f)
    assert [float(latest[0, t].mean()) for t in range(3)] == [20.0, 30.0, 40.0]
