"""ONNX hygiene before static quantization: the float model ONNX Runtime's quantizer is given.

Four things, each a fix for a way `quantize_static` goes wrong on models as users export them:
  * weights held in Constant nodes become initializers: the quantizer only quantizes initializers, so
    Constant weights stayed float (and gained Q/DQ pairs): an int8.onnx larger than the float one;
  * per-channel weights need DequantizeLinear's `axis`, which exists from opset 13: below it the quantizer
    writes a model ONNX Runtime refuses to load, so the opset is raised (or per-tensor weights are used);
  * ONNX Runtime's own pre-processing (quant_pre_process: symbolic shape inference, basic graph
    optimisation such as BatchNormalization folding, ONNX shape inference), so folded weights are quantized
    once and every activation has a known type and shape;
  * a float bias shared by several Conv/Gemm nodes is copied, one per node, under names no tensor has: the
    quantizer copies it itself as NAME0, NAME1... checking only the initializers' names, and basic-pitch's
    tf2onnx export has a Conv output named like the bias + "2" (onnxruntime issue 24705, ORT 1.32): the copy
    took that name and the int8 model did not load.
Each step that cannot be done is skipped with a note saying why; the model is never made worse.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import logging
import os
from pathlib import Path

PER_CHANNEL_OPSET = 13  # DequantizeLinear's `axis` attribute (per-channel scales) appeared in opset 13


@dataclasses.dataclass(frozen=True)
class Prepared:
    path: Path  # the model to quantize
    per_channel: bool  # whether per-channel weights may be asked for
    notes: tuple[str, ...] = ()


def prepare(float_path: Path, work_dir: Path, per_channel: bool) -> Prepared:
    """The float model at `float_path`, cleaned for quantization, written into `work_dir`."""
    import onnx

    model = onnx.load(os.fspath(float_path))
    notes: list[str] = []
    constants_to_initializers(model.graph, model.ir_version)
    if per_channel and opset_of(model) < PER_CHANNEL_OPSET:
        model, per_channel, note = _raise_opset(model)
        notes.append(note)
    cleaned = work_dir / "cleaned.onnx"
    onnx.save(model, os.fspath(cleaned))
    del model  # a ResNet-50 is ~100 MB of protobuf: not kept while ONNX Runtime loads its own copy
    path, more = pre_process(cleaned, work_dir / "preprocessed.onnx")
    model = onnx.load(os.fspath(path))
    if own_biases(model.graph):  # after the pre-processing, whose optimiser shares equal initializers
        path = work_dir / "own_biases.onnx"
        onnx.save(model, os.fspath(path))
    return Prepared(path, per_channel, tuple(notes + more))


def own_biases(graph) -> int:
    """Gives each Conv/Gemm reading a float bias initializer that another node reads too its own copy, named
    by converters.graphs.fresh_name; returns how many copies were made."""
    from onnx import TensorProto

    from converters.graphs import fresh_name, tensor_names

    inits = {t.name: t for t in graph.initializer}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in set(node.input):
            readers[name] = readers.get(name, 0) + 1
    taken, seen, copies = tensor_names(graph), set(), 0
    for node in graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 3 or node.input[2] not in inits:
            continue
        bias = node.input[2]
        if readers[bias] < 2 or inits[bias].data_type not in (TensorProto.FLOAT, TensorProto.FLOAT16):
            continue
        if bias not in seen:  # the first reader keeps the original
            seen.add(bias)
            continue
        copy = TensorProto()
        copy.CopyFrom(inits[bias])
        copy.name = fresh_name(f"{bias}_{node.op_type.lower()}", taken)
        taken.add(copy.name)
        graph.initializer.append(copy)
        node.input[2] = copy.name
        copies += 1
    return copies


def opset_of(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def constants_to_initializers(graph, ir_version: int) -> int:
    """Moves the tensors of the main graph's Constant nodes into initializers; returns how many.

    Only Constant nodes holding a tensor (`value`, or a float/int scalar or list) are moved; one whose output
    is also a graph output stays a node (an initializer cannot be one everywhere).
    """
    from onnx import TensorProto, helper

    outputs = {o.name for o in graph.output}
    kept, moved = [], []
    for node in graph.node:
        tensor = None
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and len(node.attribute) == 1 \
                and node.output[0] not in outputs:
            attr = node.attribute[0]
            if attr.name == "value":
                tensor = TensorProto()
                tensor.CopyFrom(attr.t)
            elif attr.name in ("value_float", "value_floats", "value_int", "value_ints"):
                value = helper.get_attribute_value(attr)
                dtype = TensorProto.FLOAT if "float" in attr.name else TensorProto.INT64
                dims = [len(value)] if attr.name.endswith("s") else []
                tensor = helper.make_tensor("", dtype, dims, value if dims else [value])
        if tensor is None:
            kept.append(node)
            continue
        tensor.name = node.output[0]
        moved.append(tensor)
    if moved:
        del graph.node[:]
        graph.node.extend(kept)
        graph.initializer.extend(moved)
        if ir_version < 4:  # before IR 4 every initializer must also be a graph input
            graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in moved)
    return len(moved)


def _raise_opset(model):
    """(model at opset 13, True, note), or (the model unchanged, False, note) when onnx cannot convert it."""
    import onnx

    before = opset_of(model)
    try:
        converted = onnx.version_converter.convert_version(model, PER_CHANNEL_OPSET)
        # the converter keeps the IR version; opset 13 is defined from IR 7 on
        minimum = onnx.helper.find_min_ir_version_for([onnx.helper.make_opsetid("", PER_CHANNEL_OPSET)])
        converted.ir_version = max(converted.ir_version, minimum)
        onnx.checker.check_model(converted)
    except Exception as e:  # the converter raises RuntimeError/ValidationError/...
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        return model, False, (f"ONNX opset {before} is below the {PER_CHANNEL_OPSET} per-channel weights need, and "
                              f"onnx's version converter failed ({why}): quantized with per-tensor weights")
    return converted, True, (f"ONNX opset raised from {before} to {PER_CHANNEL_OPSET} for per-channel weights "
                             "(DequantizeLinear's axis)")


class _Errors(logging.Handler):
    """Collects the errors quant_pre_process only logs (a failed graph optimisation does not raise)."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _working_directory(path: Path):
    """ONNX Runtime's symbolic shape inference saves a debug model and its external data files into the
    current directory when it cannot infer every shape (sym_shape_infer_temp.onnx, UUID.data): they must
    land in the scratch directory, not in the user's."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def pre_process(src: Path, dst: Path) -> tuple[Path, list[str]]:
    """ONNX Runtime's quant_pre_process on `src` into `dst`: (dst, notes), or (src, notes) if it failed.

    Symbolic shape inference needs sympy (onnxruntime[symbolic]); without it, or if it fails on this model,
    the pre-processing runs without it (ONNX shape inference still runs).
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = src.resolve(), dst.resolve()  # the working directory changes around the call

    notes: list[str] = []
    attempts = [False, True] if importlib.util.find_spec("sympy") else [True]
    if attempts == [True]:
        notes.append("quantization pre-processing without symbolic shape inference (sympy is not installed)")
    logger = logging.getLogger(quant_pre_process.__module__)
    for skip_symbolic in attempts:
        errors = _Errors()
        logger.addHandler(errors)
        try:
            with _working_directory(dst.parent):
                quant_pre_process(os.fspath(src), os.fspath(dst), skip_symbolic_shape=skip_symbolic)
        except Exception as e:  # shape inference and ONNX Runtime raise many types
            why = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            notes.append(f"quantization pre-processing failed ({why})" if skip_symbolic else
                         f"quantization pre-processing: symbolic shape inference failed ({why}); ONNX shape "
                         "inference only")
            continue
        finally:
            logger.removeHandler(errors)
        if errors.messages:
            notes.append("quantization pre-processing: ONNX Runtime could not optimise the graph "
                         f"({errors.messages[0].splitlines()[0][:200]}); shape inference only")
        return dst, notes
    notes.append("quantizing the model as exported")
    return src, notes


def node_names(original_path: Path, prepared_path: Path, names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """`names` (nodes of the original model) as nodes of the prepared one, and notes for those that vanished.

    Pre-processing folds nodes into others (BatchNormalization into Conv): a folded node is replaced by the
    node of the prepared model that now produces its output tensor.
    """
    import onnx

    if not names:
        return [], []
    prepared = onnx.load(os.fspath(prepared_path), load_external_data=False).graph
    present = {n.name for n in prepared.node}
    if all(n in present for n in names):
        return list(names), []
    producers = {out: n.name for n in prepared.node for out in n.output}
    outputs = {n.name: list(n.output) for n in onnx.load(os.fspath(original_path), load_external_data=False).graph.node}
    result, notes = [], []
    for name in names:
        found = name if name in present else next(
            (producers[o] for o in outputs.get(name, []) if o in producers), None)
        if found is None:
            notes.append(f"node {name!r} to keep in float is not in the model after pre-processing: ignored")
        elif found not in result:
            result.append(found)
    return result, notes
