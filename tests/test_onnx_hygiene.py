"""ONNX int8 hygiene (converters/export.py write_onnx_int8, converters/onnx_prep.py) and the memory of
calibration and of the per-layer error report (converters/layer_error.py).

Invariants: int8.onnx loads in ONNX Runtime, gives outputs close to float.onnx, and is never larger than it;
peak memory of calibration and of the layer report does not grow with the number of samples.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

from converters import onnx_prep
from converters.export import write_onnx_int8
from converters.layer_error import layer_errors

pytestmark = pytest.mark.convert
REPO = Path(__file__).resolve().parents[1]


# --- models -------------------------------------------------------------------------------------------

def _classifier(opset: int = 17, constant_weights: bool = False, batch_norm: bool = False) -> onnx.ModelProto:
    """x (N,3,16,16) -> Conv -> [BatchNormalization] -> Relu -> Conv -> Relu -> GlobalAveragePool -> MatMul
    -> y (N,4)."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(0, 0.3, (16, 3, 3, 3)), "w2": rng.normal(0, 0.1, (32, 16, 3, 3)),
               "wf": rng.normal(0, 0.2, (32, 4))}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1")]
    if batch_norm:
        weights.update({"bn_scale": rng.uniform(0.5, 1.5, 16), "bn_bias": rng.normal(0, 0.1, 16),
                        "bn_mean": rng.normal(0, 0.1, 16), "bn_var": rng.uniform(0.5, 1.5, 16)})
        nodes.append(helper.make_node("BatchNormalization", ["c1", "bn_scale", "bn_bias", "bn_mean", "bn_var"],
                                      ["b1"], name="bn"))
    nodes += [helper.make_node("Relu", [nodes[-1].output[0]], ["r1"], name="relu1"),
              helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
              helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
              helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="pool"),
              helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
              helper.make_node("MatMul", ["f", "wf"], ["y"], name="fc")]
    tensors = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()]
    if constant_weights:  # as some exporters write them: Constant nodes, not initializers
        nodes = [helper.make_node("Constant", [], [t.name], value=t, name=f"const_{t.name}") for t in tensors] + nodes
        tensors = []
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7  # readable by every ONNX Runtime this project supports
    onnx.checker.check_model(model)
    return model


def _wide() -> onnx.ModelProto:
    """Small input, large activations (4 x 1 MiB float tensors per sample): what makes memory grow with samples."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.5, (16, 1, 3, 3)).astype(np.float32), "w1"),
               numpy_helper.from_array(rng.normal(0, 0.1, (16, 16, 3, 3)).astype(np.float32), "w2"),
               numpy_helper.from_array(rng.normal(0, 0.2, (16, 4)).astype(np.float32), "wf")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="pool"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("MatMul", ["f", "wf"], ["y"], name="fc")]
    graph = helper.make_graph(nodes, "wide",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 128, 128])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])], weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 7
    return model


def _calib(n: int = 32, shape=(3, 16, 16)) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(1).uniform(-1, 1, (n, *shape)).astype(np.float32)}


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])  # must load
    return session.run(None, {"x": x})[0]


def _weight_scale(path: Path, weight: str) -> onnx.TensorProto:
    """The scale of a weight's DequantizeLinear (its output carries the weight's float name)."""
    graph = onnx.load(str(path)).graph
    (scale,) = [n.input[1] for n in graph.node if n.op_type == "DequantizeLinear" and n.output[0] == weight]
    return next(i for i in graph.initializer if i.name == scale)


def _sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(reference**2) / max(np.sum((reference - other) ** 2), 1e-30)))


def _ops(path: Path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


# --- item 1: hygiene before quantization ------------------------------------------------------------

def test_constant_weights_are_quantized_int8_not_larger_than_float(tmp_path):
    float_path = _save(_classifier(constant_weights=True), tmp_path / "float.onnx")
    result = write_onnx_int8(float_path, tmp_path / "int8.onnx", _calib())
    x = _calib(8)["x"]
    assert _sqnr_db(_run(float_path, x), _run(tmp_path / "int8.onnx", x)) > 20
    # ~5.5k float weights: 22 KB as float, ~6 KB as int8 (plus scales); Constant weights would stay float
    assert (tmp_path / "int8.onnx").stat().st_size < 0.6 * float_path.stat().st_size
    assert "Constant" not in _ops(tmp_path / "int8.onnx")
    assert result.path == tmp_path / "int8.onnx"


def test_opset11_per_channel_raises_opset_and_loads(tmp_path):
    float_path = _save(_classifier(opset=11), tmp_path / "float.onnx")
    result = write_onnx_int8(float_path, tmp_path / "int8.onnx", _calib(), per_channel=True)
    x = _calib(8)["x"]
    assert _sqnr_db(_run(float_path, x), _run(tmp_path / "int8.onnx", x)) > 20  # loads (it did not before)
    model = onnx.load(str(tmp_path / "int8.onnx"))
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 13
    assert result.per_channel
    assert _weight_scale(tmp_path / "int8.onnx", "w2").dims == [32]  # one scale per output channel


def test_opset_raise_failure_falls_back_to_per_tensor_mocked_converter(tmp_path, monkeypatch):
    """Mocked: onnx's version converter fails only on ops it has no schema for, which ONNX Runtime cannot run
    either, so the converter is made to fail here."""
    def fail(model, target):
        raise RuntimeError("no adapter for this op")

    monkeypatch.setattr(onnx.version_converter, "convert_version", fail)
    float_path = _save(_classifier(opset=11), tmp_path / "float.onnx")
    result = write_onnx_int8(float_path, tmp_path / "int8.onnx", _calib(), per_channel=True)
    x = _calib(8)["x"]
    assert _sqnr_db(_run(float_path, x), _run(tmp_path / "int8.onnx", x)) > 20
    assert not result.per_channel
    assert any("per-tensor" in n and "no adapter" in n for n in result.notes)
    assert _weight_scale(tmp_path / "int8.onnx", "w2").dims == []


def test_a_shared_bias_does_not_take_a_tensor_name(tmp_path):
    """Three Convs share bias `b`, and the second one's output, read by a Neg, is named `b0` (basic-pitch's
    tf2onnx export has the same: a Conv output named like the shared bias + "2"). ONNX Runtime's quantizer
    copied the bias for the later Convs as `b0`, `b1`, checking only initializer names (onnxruntime issue
    24705): the int8 model did not load. Each Conv now gets its own copy under a free name."""
    rng = np.random.default_rng(0)
    tensors = [numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 3, 3)).astype(np.float32), f"w{i}") for i in (1, 2, 3)]
    tensors.append(numpy_helper.from_array(rng.normal(0, 0.1, 8).astype(np.float32), "b"))
    nodes = [helper.make_node("Conv", ["x", "w1", "b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Conv", ["c1", "w2", "b"], ["b0"], pads=[1, 1, 1, 1], name="conv2"),
             helper.make_node("Neg", ["b0"], ["n"], name="neg"),
             helper.make_node("Conv", ["n", "w3", "b"], ["y"], pads=[1, 1, 1, 1], name="conv3")]
    graph = helper.make_graph(nodes, "shared_bias", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 8, 8])], tensors)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 7
    float_path = _save(model, tmp_path / "float.onnx")
    calib = _calib(shape=(8, 8, 8))
    for method in ("minmax", "auto"):
        write_onnx_int8(float_path, tmp_path / "int8.onnx", calib, method=method)
        assert _sqnr_db(_run(float_path, calib["x"][:8]), _run(tmp_path / "int8.onnx", calib["x"][:8])) > 20


def test_pre_processing_folds_batch_norm(tmp_path):
    """ORT's quantization pre-processing (graph optimisation) folds BatchNormalization into the Conv before
    quantization: the BN's scale then goes into the int8 weights instead of staying a float op."""
    float_path = _save(_classifier(batch_norm=True), tmp_path / "float.onnx")
    write_onnx_int8(float_path, tmp_path / "int8.onnx", _calib())
    x = _calib(8)["x"]
    assert _sqnr_db(_run(float_path, x), _run(tmp_path / "int8.onnx", x)) > 20
    assert "BatchNormalization" not in _ops(tmp_path / "int8.onnx")
    assert (tmp_path / "int8.onnx").stat().st_size < float_path.stat().st_size


def test_excluded_node_follows_its_output_through_fusion(tmp_path):
    """--keep-float names nodes of float.onnx (from the layer report); after BN folding the tensor 'b1' is made
    by the fused Conv, which must then stay float (its weight not quantized)."""
    float_path = _save(_classifier(batch_norm=True), tmp_path / "float.onnx")
    write_onnx_int8(float_path, tmp_path / "int8.onnx", _calib(), nodes_to_exclude=("bn",))
    model = onnx.load(str(tmp_path / "int8.onnx"))
    producer = next(n for n in model.graph.node if "b1" in n.output)
    assert producer.op_type == "Conv"
    assert not any(i.name.startswith("w1") and i.data_type == TensorProto.INT8 for i in model.graph.initializer)
    assert any(i.data_type == TensorProto.INT8 for i in model.graph.initializer)  # the rest is int8


def test_pre_processing_failure_is_noted(tmp_path):
    """A model ONNX Runtime cannot optimise (an op it does not know): prepare() still gives a model, and says why."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Mystery", ["r"], ["y"],
                                                                                            domain="example.custom")],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("example.custom", 1)])
    prepared = onnx_prep.prepare(_save(model, tmp_path / "float.onnx"), tmp_path, per_channel=True)
    assert prepared.path.is_file()
    assert any("pre-processing" in n for n in prepared.notes)


# --- items 2 and 3: memory does not grow with the number of samples ----------------------------------

_CHILD = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import numpy as np
    task, model, samples, method = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    x = np.random.default_rng(1).uniform(-1, 1, (samples, 1, 128, 128)).astype(np.float32)
    if task == "calibrate":
        from converters.export import write_onnx_int8
        write_onnx_int8(model, model.with_name(f"int8_{samples}.onnx"), {"x": x}, method=method)
    else:
        from converters.layer_error import layer_errors
        layer_errors(model, model.with_name("int8.onnx"), {"x": x}, limit=samples)
    print(json.dumps({"max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""")


def _peak_mb(task: str, model: Path, samples: int, method: str = "minmax") -> float:
    proc = subprocess.run([sys.executable, "-c", _CHILD, task, str(model), str(samples), method], cwd=REPO,
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["max_rss_mb"]


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_calibration_memory_does_not_grow_with_samples(tmp_path, method):
    """Every calibration sample exposes ~5 MiB of intermediate tensors; 64 samples kept at once would add
    ~300 MiB over 8."""
    model = _save(_wide(), tmp_path / "float.onnx")
    growth = _peak_mb("calibrate", model, 64, method) - _peak_mb("calibrate", model, 8, method)
    assert growth < 40, f"peak RSS grew {growth:.0f} MiB from 8 to 64 calibration samples"


def test_layer_report_memory_does_not_grow_with_samples(tmp_path):
    model = _save(_wide(), tmp_path / "float.onnx")
    write_onnx_int8(model, tmp_path / "int8.onnx", {"x": np.random.default_rng(2).uniform(-1, 1, (8, 1, 128, 128))
                                                    .astype(np.float32)})
    growth = _peak_mb("layers", model, 64) - _peak_mb("layers", model, 8)
    assert growth < 40, f"peak RSS grew {growth:.0f} MiB from 8 to 64 samples"


# --- item 3: the streamed layer report gives what ONNX Runtime's qdq_loss_debug gives ----------------

def _oracle(float_path: Path, int8_path: Path, x: np.ndarray, tmp: Path) -> dict[str, tuple[float, float]]:
    """Per tensor: (accumulated SQNR as qdq_loss_debug computes it with every sample in memory, the SQNR of
    the float tensor through its own Q/DQ pair as ONNX Runtime's QuantizeLinear/DequantizeLinear compute it)."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    class Reader:
        def __iter__(self):
            return iter([{"x": x[i : i + 1]} for i in range(len(x))])

    dbg.modify_model_output_intermediate_tensors(str(float_path), str(tmp / "float_aug.onnx"))
    dbg.modify_model_output_intermediate_tensors(str(int8_path), str(tmp / "qdq_aug.onnx"))
    floats = dbg.collect_activations(str(tmp / "float_aug.onnx"), Reader())
    matched = dbg.create_activation_matching(dbg.collect_activations(str(tmp / "qdq_aug.onnx"), Reader()), floats)
    graph = onnx.load(str(int8_path)).graph
    quantizers = {n.input[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    by_output = {n.output[0]: n for n in quantizers.values()}
    quantizers |= {n.output[0]: by_output[n.input[0]] for n in graph.node  # graph outputs: the dequantized end
                   if n.op_type == "DequantizeLinear" and n.input[0] in by_output}
    constants = [i for i in graph.initializer if i.name in {t for n in quantizers.values() for t in n.input[1:]}]
    oracle = {}
    for tensor, e in dbg.compute_activation_error(matched).items():
        if "xmodel_err" not in e:
            continue
        q = quantizers[tensor]
        pair = helper.make_graph(
            [helper.make_node("QuantizeLinear", ["t", *q.input[1:]], ["q"]),
             helper.make_node("DequantizeLinear", ["q", *q.input[1:]], ["d"])], "qdq",
            [helper.make_tensor_value_info("t", TensorProto.FLOAT, None)],
            [helper.make_tensor_value_info("d", TensorProto.FLOAT, None)], constants)
        session = ort.InferenceSession(helper.make_model(pair, opset_imports=[helper.make_opsetid("", 17)])
                                       .SerializeToString(), providers=["CPUExecutionProvider"])
        reference = np.concatenate([a.ravel() for a in floats[tensor]])
        oracle[tensor] = (e["xmodel_err"], _sqnr_db(reference, session.run(None, {"t": reference})[0]))
    return oracle


def _without_compact_names(monkeypatch) -> None:
    """int8 ONNX with ONNX Runtime's own names, which qdq_loss_debug's tensor matching needs."""
    from converters import export

    monkeypatch.setattr(export, "_compact_names", lambda path: None)


def test_layer_errors_match_qdq_loss_debug(tmp_path, monkeypatch):
    float_path = _save(_classifier(), tmp_path / "float.onnx")
    write_onnx_int8(float_path, tmp_path / "int8.onnx", _calib())
    _without_compact_names(monkeypatch)
    write_onnx_int8(float_path, tmp_path / "ort_names.onnx", _calib())
    samples = _calib(12)
    rows = layer_errors(float_path, tmp_path / "int8.onnx", samples, limit=10)
    assert rows == layer_errors(float_path, tmp_path / "ort_names.onnx", samples, limit=10)
    oracle = _oracle(float_path, tmp_path / "ort_names.onnx", samples["x"][:10], tmp_path)
    producers = {o: n for n in _classifier().graph.node for o in n.output}
    assert {r["tensor"] for r in rows} == {t for t in oracle if t in producers} and len(rows) >= 4
    for r in rows:
        assert r["sqnr_db"] == pytest.approx(oracle[r["tensor"]][0], abs=0.02)
        assert r["local_sqnr_db"] == pytest.approx(oracle[r["tensor"]][1], abs=0.02)
        assert (r["node"], r["op_type"]) == (producers[r["tensor"]].name, producers[r["tensor"]].op_type)
    own = [r["local_sqnr_db"] for r in rows]
    assert own == sorted(own)  # the layer whose own quantization adds the most error first


def test_layer_report_finds_the_spectrum_a_log_amplifies_and_keeping_it_in_float_pays(tmp_path):
    """A spectrum and its log in the graph (as DNSMOS has): the int8 error comes from the power spectrum,
    which the log amplifies. ONNX Runtime's pre-processing renames the power tensor, and downstream of the
    error every Relu's Q/DQ pair in the int8 model seems to add all of it: the report used to leave the power
    out and rank the Relus first, and keeping them in float did nothing (5.8 -> 5.7 dB). Now the report ranks
    the front end first and keeping its two nodes in float takes the int8 model to ~48 dB."""
    from tests.quant_models import log_spectrum_data, log_spectrum_model

    float_path = log_spectrum_model(tmp_path / "float.onnx")
    calib, val = log_spectrum_data(64, 1), log_spectrum_data(64, 2)
    reference = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).run(None, val)[0]
    write_onnx_int8(float_path, tmp_path / "int8.onnx", calib, method="minmax")
    rows = layer_errors(float_path, tmp_path / "int8.onnx", val)
    assert {r["node"] for r in rows[:2]} == {"frontend", "power"}, rows
    write_onnx_int8(float_path, tmp_path / "kept.onnx", calib, method="minmax",
                    nodes_to_exclude=tuple(r["node"] for r in rows[:2]))
    plain = _sqnr_db(reference, _run(tmp_path / "int8.onnx", val["x"]))
    kept = _sqnr_db(reference, _run(tmp_path / "kept.onnx", val["x"]))
    assert plain < 10 and kept > plain + 25, (plain, kept)
    every = tuple(n.name for n in onnx.load(str(float_path)).graph.node)  # nothing left in int8: nothing to rank
    write_onnx_int8(float_path, tmp_path / "all_float.onnx", calib, method="minmax", nodes_to_exclude=every)
    assert layer_errors(float_path, tmp_path / "all_float.onnx", val) == []


def test_a_tensor_stays_float_only_with_its_writer_and_its_readers_in_float(tmp_path):
    """ONNX Runtime quantizes a tensor for any int8 node that reads it: keeping the layer that writes it in
    float leaves its Q/DQ pair (and the error) in place. Here conv1's output varies by a few units on top
    of 1000 (the int8 step loses the variation); keeping its writer in float changes nothing, keeping its
    reader conv2 too removes the error (here 23.8, 23.8, 44.1 dB; openWakeWord's embedding: 8 ranked steps 20.4 -> 23.7 dB with
    writers, 26.2 dB with writers and readers)."""
    from converters.layer_error import before_log, keep_in_float
    from tests.quant_models import log_spectrum_data, log_spectrum_model

    float_path = log_spectrum_model(tmp_path / "float.onnx", offset=1000.0)
    calib, val = log_spectrum_data(64, 1), log_spectrum_data(64, 2)
    reference = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).run(None, val)[0]
    front = tuple(before_log(float_path))  # the log's error out of the way
    write_onnx_int8(float_path, tmp_path / "front.onnx", calib, method="minmax", nodes_to_exclude=front)
    (row,) = [r for r in layer_errors(float_path, tmp_path / "front.onnx", val) if r["node"] == "relu1"]
    assert keep_in_float(row) == ["relu1", "conv2"], row
    sqnr = {}
    for name, nodes in {"front": (), "writer": ("relu1",), "writer_and_readers": tuple(keep_in_float(row))}.items():
        write_onnx_int8(float_path, tmp_path / f"{name}.onnx", calib, method="minmax", nodes_to_exclude=front + nodes)
        sqnr[name] = _sqnr_db(reference, _run(tmp_path / f"{name}.onnx", val["x"]))
    assert sqnr["front"] < 30 and abs(sqnr["writer"] - sqnr["front"]) < 1 and sqnr["writer_and_readers"] > 40, sqnr


def test_long_float_names_are_not_repeated_by_every_quantize_dequantize_pair(tmp_path, monkeypatch):
    """tf2onnx-like names (60 characters): edgemm's int8 ONNX computes exactly what ONNX Runtime's quantizer
    wrote, its dequantized tensors carry the float names once, everything the quantizer added is named short,
    and it is smaller than with the quantizer's names (13.7 -> 8.4 KB here; basic-pitch 309 -> 138 KiB)."""
    long = "StatefulPartitionedCall/model_1/a_rather_long_layer_name/"
    model = onnx.compose.add_prefix(_classifier(), long, rename_inputs=False, rename_outputs=False)
    float_path = _save(model, tmp_path / "float.onnx")
    write_onnx_int8(float_path, tmp_path / "int8.onnx", _calib())
    _without_compact_names(monkeypatch)
    write_onnx_int8(float_path, tmp_path / "ort_names.onnx", _calib())
    x = _calib(8)["x"]
    np.testing.assert_array_equal(_run(tmp_path / "int8.onnx", x), _run(tmp_path / "ort_names.onnx", x))
    graph = onnx.load(str(tmp_path / "int8.onnx")).graph
    dequantized = {n.output[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert {long + t for t in ("w1", "w2", "wf", "r1", "r2")} <= dequantized  # weights and activations
    added = [t for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
             for t in (n.name, *n.input, *n.output) if t not in dequantized and t != "x"]
    assert added and max(map(len, added)) <= 6, added
    sizes = {name: (tmp_path / f"{name}.onnx").stat().st_size for name in ("float", "int8", "ort_names")}
    assert sizes["int8"] < 0.7 * sizes["ort_names"] and sizes["int8"] < 0.5 * sizes["float"], sizes


def test_models_with_subgraphs_keep_their_names():
    """An If branch may read an outer tensor by name: such models are not renamed."""
    from converters import onnx_names

    branch = helper.make_graph([helper.make_node("Identity", ["c1"], ["b"])], "branch", [],
                               [helper.make_tensor_value_info("b", TensorProto.FLOAT, None)])
    model = _classifier()
    model.graph.node.append(helper.make_node("If", ["cond"], ["z"], then_branch=branch, else_branch=branch))
    before = model.SerializeToString()
    assert onnx_names.compact(model) == 0 and model.SerializeToString() == before


@pytest.mark.slow
def test_onnx2tf_stops_after_the_saved_model(tmp_path):
    """onnx2tf would go on to write float32/float16 .tflite files edgemm never uses (6.2 GB peak for a
    ResNet-50): run through onnx2tf_stop.py it writes the SavedModel only, which still matches the ONNX."""
    from converters import onnx_tflite
    from converters.sources import load_source

    try:
        command = onnx_tflite._command(onnx_tflite.find_onnx2tf())
    except Exception as e:  # DependencyError: install.sh installs it
        pytest.skip(str(e))
    assert command[-1].endswith("onnx2tf_stop.py")
    source = load_source(_save(_classifier(), tmp_path / "m.onnx"), work=tmp_path / "work")
    graph, layout = onnx_tflite.to_saved_model(source, tmp_path / "sm", log=lambda line: None)
    assert (tmp_path / "sm" / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.rglob("*.tflite")) == []
    import tensorflow as tf

    x = _calib(2)["x"]
    got = tf.saved_model.load(str(tmp_path / "sm")).signatures["serving_default"](
        **{graph.input_keys["x"]: tf.constant(x.transpose(0, 2, 3, 1)[:1])})
    np.testing.assert_allclose(got["output_0"].numpy(), _run(tmp_path / "m.onnx", x[:1]), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_max_pool_after_relu_quantizes_to_int8_that_xnnpack_loads(tmp_path):
    """onnx2tf pads an explicit-pad MaxPool with the float32 minimum, which int8 calibration took as the range
    (scale 1.3e36 on ResNet-50, refused by XNNPACK). After a Relu it pads with 0 (onnx2tf_stop.py)."""
    from ai_edge_litert.interpreter import Interpreter

    from converters import export, onnx_tflite
    from converters.sources import load_source
    from edgemm import layout

    try:
        onnx_tflite.find_onnx2tf()
    except Exception as e:  # DependencyError: install.sh installs it
        pytest.skip(str(e))
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                              name="pool"),
             helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["y"], name="flatten")]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                              [numpy_helper.from_array(rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 7
    source = load_source(_save(model, tmp_path / "pool.onnx"), work=tmp_path / "work")
    graph_sm, lay = onnx_tflite.to_saved_model(source, tmp_path / "sm", log=lambda line: None)
    calib = layout.to_artifact(_calib(16), lay.inputs)
    export.write_tflite(graph_sm, tmp_path / "int8.tflite", calib, True, True)
    interpreter = Interpreter(model_path=str(tmp_path / "int8.tflite"))  # XNNPACK applied: it must prepare
    interpreter.allocate_tensors()
    scales = [d["quantization"][0] for d in interpreter.get_tensor_details() if d["dtype"] == np.int8]
    assert scales and max(scales) < 10.0, max(scales)
