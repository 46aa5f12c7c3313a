"""Full-int8 TFLite with activation ranges chosen per tensor (converters/ranges.py says how).

The TFLite converter cannot be given ranges, but its post-training quantization is two steps with a file in
between, the same two its own quantization debugger (tf.lite.experimental.QuantizationDebugger) uses:
calibration writes each activation tensor's min/max into a float model, and `mlir_quantize` turns those
statistics into int8 scales. Here the float calibrated model also runs in LiteRT with every intermediate
tensor kept, the chosen ranges replace the min/max statistics, and then the same `mlir_quantize` call the
converter would make quantizes it. The model with min/max ranges is made too, and the one whose outputs are
closer to the float model's on the held-out calibration samples is kept.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from converters import ranges
from edgemm.errors import InputError
from edgemm.progress import Update
from edgemm.samples import model_ranks, sample


def _statistics(model, ends: bool = False) -> dict[int, object]:
    """Tensor index -> tensor, for the activations of the first subgraph that have calibration statistics; the
    graph's inputs and outputs only with `ends`."""
    graph = model.subgraphs[0]
    left_out = set() if ends else set(map(int, graph.inputs)) | set(map(int, graph.outputs))
    return {i: t for i, t in enumerate(graph.tensors)
            if i not in left_out and t.quantization is not None and t.quantization.min is not None
            and len(t.quantization.min) == 1}


def _links(graph) -> tuple[dict[int, object], dict[int, list]]:
    """Per tensor index of a subgraph: the op writing it; the ops reading it, each once, in graph order."""
    writers = {int(t): op for op in graph.operators for t in op.outputs if t >= 0}
    readers: dict[int, list] = {}
    for op in graph.operators:
        for t in dict.fromkeys(int(t) for t in op.inputs if t >= 0):
            readers.setdefault(t, []).append(op)
    return writers, readers


def _op_name(graph, op) -> str | None:
    """An op by the name `mlir_quantize`'s denylist takes: its first output tensor's; None without outputs."""
    outputs = [int(t) for t in op.outputs if t >= 0]
    return graph.tensors[outputs[0]].name.decode() if outputs else None


def _nodes_around(model) -> dict[int, list[str]]:
    """Tensor index -> the ops that write and read it, by the names `mlir_quantize`'s denylist takes, the
    writer first. Keeping a tensor in float takes all of them: an op left in float alone still hands an int8
    reader a quantized tensor."""
    graph = model.subgraphs[0]
    writers, readers = _links(graph)
    around = {}
    for t in dict.fromkeys([*writers, *readers]):
        ops = ([writers[t]] if t in writers else []) + readers.get(t, [])
        around[t] = list(dict.fromkeys(n for n in (_op_name(graph, op) for op in ops) if n is not None))
    return around


def before_log(model) -> list[str]:
    """The ops that compute what a LOG takes, and the LOG, when weight layers follow it (a spectrum, then its
    log, then the network), by the names `mlir_quantize`'s denylist takes; [] when no LOG is followed by one
    (a log at the output: what computes its input is the whole model). The TFLite side of
    converters/layer_error.py before_log: int8 steps zero the small values a log then magnifies."""
    from tensorflow.lite.python import schema_py_generated as schema

    from converters import graphs

    builtin = schema.BuiltinOperator
    weight_ops = {builtin.CONV_2D, builtin.DEPTHWISE_CONV_2D, builtin.FULLY_CONNECTED, builtin.TRANSPOSE_CONV,
                  builtin.BATCH_MATMUL, builtin.CONV_3D}
    graph = model.subgraphs[0]
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    writers, readers = _links(graph)

    def downstream(tensor: int) -> list:
        return readers.get(tensor, [])

    def upstream(tensor: int) -> list:
        return [writers[tensor]] if tensor in writers else []

    def outputs(op) -> list[int]:
        return [int(t) for t in op.outputs if t >= 0]

    def inputs(op) -> list[int]:
        return [int(t) for t in op.inputs if t >= 0]

    def writers_of(op, code: int) -> list:
        return [w for t in inputs(op) for w in upstream(t) if codes[w.opcodeIndex] == code]

    def softplus(log) -> bool:
        """The converter writes a softplus as LOG(ADD(EXP(x), 1)): an activation, not a feature front end."""
        return any(writers_of(add, builtin.EXP) for add in writers_of(log, builtin.ADD))

    logs = [op for op in graph.operators if codes[op.opcodeIndex] == builtin.LOG and not softplus(op) and any(
        codes[n.opcodeIndex] in weight_ops for n in graphs.walk(outputs(op), downstream, outputs))]
    front = graphs.walk([t for log in logs for t in inputs(log)], upstream, inputs)[::-1] + logs
    return list(dict.fromkeys(n for n in (_op_name(graph, op) for op in front) if n is not None))


def _runner(calibrated: bytes, calib: dict[str, np.ndarray], indices: list[int]):
    """run(i): the float calibrated model on sample i, every intermediate tensor of `indices` by index."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgemm import logs

    with logs.native_stderr_quieted():
        interpreter = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    details = interpreter.get_signature_runner().get_input_details()
    feeds = {name: d["index"] for name, d in details.items()}
    ranks = {name: len(d["shape"]) for name, d in details.items()}

    def run(i: int) -> dict[str, np.ndarray]:
        for name, value in sample(calib, i, ranks).items():
            interpreter.set_tensor(feeds[name], value)
        interpreter.invoke()
        return {str(t): interpreter.get_tensor(t) for t in indices}

    return run


def _outputs(model: bytes, calib: dict[str, np.ndarray], samples, work: Path, keep: bool = True) -> dict[str, np.ndarray]:
    """The model's outputs on the given calibration samples, by output name (LiteRT, as the device runs it);
    with keep=False only run (a segmentation model's outputs for every sample would not fit): {}.
    Raises edgemm.backends.litert.InvokeError, with the sample, where LiteRT refuses to run an op."""
    from edgemm.backends.litert import InvokeError, LiteRTBackend

    path = work / "model.tflite"
    path.write_bytes(model)
    backend = LiteRTBackend(path)
    ranks = model_ranks(backend.inputs)
    runs = []
    for i in samples:
        try:
            outputs = backend.run(sample(calib, i, ranks))
        except InvokeError as e:  # a kernel check that int8 values fail
            raise InvokeError(f"calibration sample {i}: {e}", e.op, e.op_type) from None
        if keep:
            runs.append(outputs)
    return {name: np.concatenate([r[name] for r in runs]) for name in runs[0]} if runs else {}


MAX_FAILED_OPS = 4  # ops LiteRT refuses to run in int8 that are kept in float, one at a time


def _running(calibrated: bytes, sources: dict[str, bytes], quantize, calib: dict[str, np.ndarray], count: int,
             float_nodes: tuple[str, ...]) -> tuple[str, bytes, dict[str, float], list[dict]]:
    """Each calibrated model of `sources` quantized (`quantize(source, denylist)`), run on the held-out
    calibration samples and measured against the float model; the closest one ("chosen" on a tie) run on
    every calibration sample too. An op LiteRT refuses to run in int8 (int8 DIV by a divisor that quantized
    to 0: basic-pitch's per-window normalisation on a quiet window; the stock converter writes that model and
    it fails on the device) is kept in float with its quantize/dequantize and everything is quantized again,
    at most MAX_FAILED_OPS such ops. Returns the name and flatbuffer of the closest, every variant's held-out
    SQNR, and the ops kept in float to run."""
    from edgemm.backends.litert import InvokeError

    held, failed = ranges.held_out_samples(count), []
    with tempfile.TemporaryDirectory(prefix="edgemm-ranges-") as tmp:
        reference = _outputs(calibrated, calib, held, Path(tmp))  # the calibrated model computes in float
        while True:
            denylist = [*float_nodes, *(f["op"] for f in failed)]
            variants = {name: quantize(source, denylist) for name, source in sources.items()}
            try:
                sqnr = {name: ranges.output_error_db(reference, _outputs(v, calib, held, Path(tmp)))
                        for name, v in variants.items()}
                kept = max(sqnr, key=lambda name: (sqnr[name], name == "chosen"))
                _outputs(variants[kept], calib, sorted(set(range(count)) - set(held)), Path(tmp), keep=False)
                return kept, variants[kept], sqnr, failed
            except InvokeError as e:
                if e.op is None or e.op in denylist or len(failed) == MAX_FAILED_OPS:
                    onnx = "; the int8 ONNX (--format onnx) leaves Div in float" if e.op_type == "DIV" else ""
                    raise InputError(f"the int8 TFLite does not run on {e}{onnx}") from None
                failed.append({"op": e.op, "type": e.op_type, "why": str(e)})


WORST = 10  # tensors listed in the report, and the candidates for keeping layers in float


def _tuned(sources: dict[str, bytes], calib: dict[str, np.ndarray], per_channel: bool,
           seconds: float) -> tuple[bytes | None, dict]:
    """A calibrated model after quantization-aware fine-tuning (converters/qat.py), from the ranges of
    whichever of `sources` is closer: its weights and ranges trained, the graph's inputs and outputs keeping
    theirs. (None, why) for a model qat cannot compute."""
    from tensorflow.lite.tools import flatbuffer_utils

    from converters import qat, tflite_graph

    def stats(source: bytes) -> dict[int, tuple[float, float]]:
        model = flatbuffer_utils.convert_bytearray_to_object(bytearray(source))
        return {i: (float(t.quantization.min[0]), float(t.quantization.max[0]))
                for i, t in _statistics(model, ends=True).items()}

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(sources["minmax"]))
    held = ranges.held_out_samples(len(next(iter(calib.values()))))
    with tempfile.TemporaryDirectory(prefix="edgemm-qat-") as tmp:
        litert = _outputs(sources["minmax"], calib, held, Path(tmp))  # what the graph must compute
    try:
        measured = qat.tune(model, calib, {name: stats(s) for name, s in sources.items()}, set(_statistics(model)),
                            per_channel, seconds, litert)
    except tflite_graph.Unsupported as e:
        return None, {"skipped": str(e)}
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), measured


def quantize(converter, calib: dict[str, np.ndarray], per_channel: bool, input_type, output_type,
             progress: Update | None = None, methods: tuple[str, ...] = ranges.CANDIDATES,
             float_nodes: tuple[str, ...] = (), qat_seconds: float = 0.0) -> tuple[bytes, dict]:
    """int8 TFLite from a configured converter (optimizations, representative dataset, supported ops set):
    calibrate, choose ranges among `methods`, quantize, and keep whichever of that and min/max ranges is
    closer to the float model on the held-out samples. Returns the flatbuffer and what was measured,
    including the WORST tensors by the error their own quantization adds (and the WORST of those outside the
    ops before a LOG, `before_log`).

    float_nodes: ops (named by their output tensors, as the converter's quantization debugger names them)
    left in float, with quantize/dequantize around them: `mlir_quantize`'s denylist. Ops LiteRT refuses to
    run in int8 on a calibration sample are added to it (`failed_in_int8`, see _running)."""
    from tensorflow.lite.python import convert as tflite_convert
    from tensorflow.lite.tools import flatbuffer_utils

    converter._experimental_calibrate_only = True  # the converter's own switch for step one
    calibrated = converter.convert()
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    tensors = _statistics(model)
    count = len(next(iter(calib.values())))
    run = _runner(calibrated, calib, list(tensors))
    hists = ranges.histograms(run, map(str, tensors), count, progress)
    choices = {}
    for index, tensor in tensors.items():
        choice = choices[str(index)] = ranges.choose(hists[str(index)], methods)
        tensor.quantization.min = np.array([choice.low], np.float32)
        tensor.quantization.max = np.array([choice.high], np.float32)
    sources = {"minmax": calibrated}
    if tuple(methods) != ("minmax",):  # else the chosen ranges are the calibrated min/max
        sources["chosen"] = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    tuned = None
    if qat_seconds > 0 and not float_nodes:
        tuned, qat_measured = _tuned(sources, calib, per_channel, qat_seconds)

    def quantize(source: bytes, denylist: list[str]) -> bytes:
        return tflite_convert.mlir_quantize(source, not per_channel, input_data_type=input_type,
                                            output_data_type=output_type, denylisted_nodes=denylist or None)

    variants = {"qat": tuned} if tuned is not None else sources
    kept, flatbuffer, sqnr, failed = _running(calibrated, variants, quantize, calib, count, float_nodes)
    own = {int(i): ranges.own_sqnr_db(hists[i], c.error if kept != "minmax" else c.minmax_error)
           for i, c in choices.items()}
    nodes, front = _nodes_around(model), before_log(model)
    ranked = [{"tensor": tensors[i].name.decode(), "own_sqnr_db": round(db, 2), "nodes": nodes.get(i, [])}
              for i, db in sorted(own.items(), key=lambda item: item[1])]
    qat = {"qat": qat_measured} if qat_seconds > 0 and not float_nodes else {}
    return flatbuffer, ranges.summary(choices) | qat | {
        "held_out_output_sqnr_db": {k: round(v, 2) for k, v in sqnr.items()}, "kept": kept,
        "worst": ranked[:WORST], "before_log": front, "failed_in_int8": failed,
        # the candidates for float after the front end: basic-pitch's 10 worst are all in its CQT
        "worst_after_front": [w for w in ranked if not set(w["nodes"]) <= set(front)][:WORST] if front else []}
