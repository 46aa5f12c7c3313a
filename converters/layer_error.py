"""Layer-by-layer quantization error: which tensors int8 hurts most.

Runs the float ONNX model and its QDQ int8 version on the same samples with
every intermediate tensor exposed (ONNX Runtime's qdq_loss_debug), and gives,
per activation tensor, the signal-to-quantization-noise ratio (SQNR, dB) of
the int8 model's tensor against the float model's: the error accumulated up to
that layer. Low SQNR = large error. The report names the worst layers and the
ONNX nodes that produce them (candidates to keep in float).

Two departures from qdq_loss_debug, both found on DNSMOS (a spectrum, then a log, in the graph):
  * the reference is the float model as the quantizer was given it (converters/onnx_prep.py): ONNX
    Runtime's pre-processing renames some tensors, and qdq_loss_debug's name matching then leaves them out
    of the report (there: the power spectrum, the tensor that did the harm);
  * a layer's own error is its float tensor against that tensor through its own scale and zero point,
    not the int8 model's tensor before and after its Q/DQ pair: downstream of a large error the int8
    model's tensors leave their calibrated ranges and every Q/DQ pair there seems to add all the error
    (there: every Relu at 0.0 dB, while the error came from the spectrum before the log). This is the
    error TFLite's ranking (converters/ranges.py own_sqnr_db) measures too.

qdq_loss_debug.collect_activations keeps every intermediate tensor of every
sample of both models (> 8 GB for a ResNet-50 and 64 samples); here the models
run one sample at a time and only running sums of signal and noise power per
tensor are kept, with qdq_loss_debug's tensor matching and SQNR definition.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from pathlib import Path

import numpy as np

from converters import graphs
from edgemm.progress import Update
from edgemm.samples import model_ranks, sample

_EPS = float(np.finfo(float).eps)  # qdq_loss_debug's floor on both norms


def _writers_and_readers(model_path: Path) -> tuple[dict[str, object], dict[str, list]]:
    """Per tensor of the model: the node writing it; the nodes reading it (onnx NodeProtos)."""
    import onnx

    graph = onnx.load(os.fspath(model_path), load_external_data=False).graph
    readers: dict[str, list] = {}
    for node in graph.node:
        for name in dict.fromkeys(node.input):
            readers.setdefault(name, []).append(node)
    return {out: node for node in graph.node for out in node.output}, readers


def augmented_session(model: Path, work: Path):
    """A session of `model` with every float tensor also an output (qdq_loss_debug's augmentation), graph
    optimisations off as collect_activations runs it (the QDQ graph in float: fake quantization)."""
    import onnxruntime as ort
    from onnxruntime.quantization import qdq_loss_debug as dbg

    augmented = work / f"{model.stem}_augmented.onnx"
    dbg.modify_model_output_intermediate_tensors(os.fspath(model), os.fspath(augmented))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(os.fspath(augmented), options, providers=["CPUExecutionProvider"])
    augmented.unlink()
    return session


def saved_outputs(session) -> dict[str, str]:
    """Tensor name -> the output that exposes it, in the session's output order."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    postfix = getattr(dbg, "_TENSOR_SAVE_POSTFIX", "_ReshapedSavedOutput")
    return {o.name[: -len(postfix)]: o.name for o in session.get_outputs() if o.name.endswith(postfix)}


@dataclasses.dataclass(frozen=True)
class _Pair:
    """An activation's QuantizeLinear -> DequantizeLinear pair in the int8 model."""

    pre: str  # the tensor quantized
    post: str  # the tensor dequantized
    scale: float
    zero_point: np.ndarray  # its dtype gives the integer range

    def fake_quantized(self, x: np.ndarray) -> np.ndarray:
        """x through this pair's quantization, as QuantizeLinear/DequantizeLinear compute it (round half to
        even, saturate)."""
        info = np.iinfo(self.zero_point.dtype)
        zero = float(self.zero_point)
        q = np.clip(np.rint(x.astype(np.float32) / np.float32(self.scale)) + zero, info.min, info.max)
        return ((q - zero) * self.scale).astype(np.float32)


def _qdq_pairs(int8_onnx: Path, float_tensors: set[str]) -> dict[str, _Pair]:
    """Activation -> its Q/DQ pair in the int8 model, named by whichever end carries the float model's
    tensor name (edgemm's int8 ONNX: the dequantized end, converters/onnx_names.py; ONNX Runtime's own names:
    the quantized end, or the dequantized end for a graph output); a later pair replaces an earlier one, as
    in qdq_loss_debug. Pairs whose scale is not a constant scalar are left out."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(os.fspath(int8_onnx), load_external_data=False).graph
    constants = {i.name: i for i in graph.initializer}
    quantizers = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    pairs: dict[str, _Pair] = {}
    for node in graph.node:
        quantizer = quantizers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if quantizer is None or quantizer.input[1] not in constants:
            continue
        pre, post = quantizer.input[0], node.output[0]
        activation = post if post in float_tensors else pre
        scale = numpy_helper.to_array(constants[quantizer.input[1]])
        zero = quantizer.input[2] if len(quantizer.input) > 2 else ""
        zero_point = numpy_helper.to_array(constants[zero]) if zero in constants else np.uint8(0)  # ONNX default
        if activation in float_tensors and scale.size == 1:
            pairs[activation] = _Pair(pre, post, float(scale), np.asarray(zero_point).reshape(()))
    return pairs


@dataclasses.dataclass
class _Power:
    """Running sums of squares over all samples: ||reference||^2 and ||reference - other||^2."""

    signal: float = 0.0
    noise: float = 0.0

    def add(self, reference: np.ndarray, other: np.ndarray) -> None:
        reference = reference.astype(np.float32, copy=False).ravel()  # float16 sums would overflow
        diff = reference - other.astype(np.float32, copy=False).ravel()
        self.signal += float(np.dot(reference, reference))
        self.noise += float(np.dot(diff, diff))

    def sqnr_db(self) -> float:
        return 20 * math.log10(max(math.sqrt(self.signal), _EPS) / max(math.sqrt(self.noise), _EPS))


def layer_errors(float_onnx: Path, int8_onnx: Path, samples: dict[str, np.ndarray], limit: int = 64,
                 progress: Update | None = None) -> list[dict]:
    """Per activation tensor: SQNR of the int8 model, ranked by the error the tensor's own quantization adds
    (local_sqnr_db, lowest first; then the accumulated error). `float_onnx`: the model int8_onnx was
    quantized from, before converters/onnx_prep.py (it is prepared here the same way).

    sqnr_db: the float model's tensor against the int8 model's (dequantized) one, over the first `limit`
    samples; local_sqnr_db: the float model's tensor against itself through the tensor's own Q/DQ pair.
    node: the node writing the tensor; readers: the nodes reading it. ONNX Runtime quantizes a tensor for
    any int8 node that writes or reads it, so the tensor stays float only with all of them in float
    (keep_in_float).
    """
    from converters import onnx_prep

    count = min(limit, len(next(iter(samples.values()))))
    with tempfile.TemporaryDirectory(prefix="edgemm-layers-") as tmp:
        reference = onnx_prep.prepare(Path(float_onnx), Path(tmp), per_channel=True).path
        writers, readers = _writers_and_readers(reference)
        float_session = augmented_session(reference, Path(tmp))
        qdq_session = augmented_session(Path(int8_onnx), Path(tmp))
    float_saved, qdq_saved = saved_outputs(float_session), saved_outputs(qdq_session)
    ranks = model_ranks(float_session.get_inputs())
    pairs = {a: p for a, p in _qdq_pairs(Path(int8_onnx), set(float_saved)).items()
             if p.post in qdq_saved and a in writers}
    if not pairs:  # every layer kept in float (and run([]) would return every output)
        return []
    qdq_names = sorted({qdq_saved[p.post] for p in pairs.values()})
    float_names = [float_saved[a] for a in pairs]
    model_err = {a: _Power() for a in pairs}
    local_err = {a: _Power() for a in pairs}
    for i in range(count):  # one sample at a time: memory does not grow with `count`
        feed = sample(samples, i, ranks)
        qdq = dict(zip(qdq_names, qdq_session.run(qdq_names, feed), strict=True))
        floats = dict(zip(float_names, float_session.run(float_names, feed), strict=True))
        for activation, pair in pairs.items():
            reference_tensor = floats[float_saved[activation]]
            model_err[activation].add(reference_tensor, qdq[qdq_saved[pair.post]])
            local_err[activation].add(reference_tensor, pair.fake_quantized(reference_tensor))
        if progress is not None:
            progress(i + 1, count)
    rows = []
    for tensor in pairs if count else ():
        writer = writers[tensor]
        rows.append({"tensor": tensor, "node": writer.name, "op_type": writer.op_type,
                     "readers": [n.name for n in readers.get(tensor, [])],
                     "sqnr_db": round(model_err[tensor].sqnr_db(), 2),
                     "local_sqnr_db": round(local_err[tensor].sqnr_db(), 2)})
    rows.sort(key=lambda r: (r["local_sqnr_db"], r["sqnr_db"]))  # by the error the layer itself adds
    return rows


_WEIGHT_LAYERS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


def keep_in_float(row: dict) -> list[str]:
    """The nodes to keep in float so that a row's tensor is not quantized: its writer and its readers.
    The writer alone is not enough when an int8 reader quantizes the tensor as its input: measured on
    openWakeWord's embedding, 8 ranked steps 20.4 -> 23.7 dB with writers alone, -> 26.2 dB with readers."""
    return list(dict.fromkeys([row["node"], *row.get("readers", [])]))


def before_log(float_onnx: Path) -> list[str]:
    """The nodes that compute what a Log takes when a network of weight layers follows the Log (a model that
    computes its own features: a spectrum, then its log, then the network), as nodes of the model the
    quantizer is given (converters/onnx_prep.py); [] when no Log is followed by a Conv/MatMul/Gemm (a log at
    the output, as in a log-softmax: what computes its input is the whole model).

    ONNX Runtime leaves Log in float but quantizes its input, and a log turns the int8 error of small values
    into large errors. Measured (int8 ONNX, min/max ranges): DNSMOS 6.5 dB with its layers ranked one by one
    in float, 33.3 dB with the 10 nodes before its Log in float; basic-pitch 6.3 -> 30.3 dB with its CQT (172
    of 236 nodes, mostly reshapes and pads) in float."""
    from converters import onnx_prep

    with tempfile.TemporaryDirectory(prefix="edgemm-front-") as tmp:
        prepared = onnx_prep.prepare(Path(float_onnx), Path(tmp), per_channel=True).path
        writers, readers = _writers_and_readers(prepared)

    def downstream(tensor: str) -> list:
        return readers.get(tensor, [])

    def upstream(tensor: str) -> list:
        return [writers[tensor]] if tensor in writers else []

    logs = [node for node in writers.values() if node.op_type == "Log" and any(  # a Log has one output
        n.op_type in _WEIGHT_LAYERS for n in graphs.walk(node.output, downstream, lambda n: n.output))]
    return [n.name for n in graphs.walk([t for log in logs for t in log.input], upstream, lambda n: n.input)][::-1]


def format_rows(rows: list[dict], top: int = 5) -> list[str]:
    lines = [f"  {'SQNR dB':>8} {'local':>7}  {'op':<18} tensor"]
    for r in rows[:top]:
        lines.append(f"  {r['sqnr_db']:>8.1f} {r['local_sqnr_db']:>7.1f}  {r['op_type']:<18} {r['tensor']}")
    return lines
