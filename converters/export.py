"""Writing artifacts: float and full-int8 TFLite, float and int8 QDQ ONNX.

Every file is written atomically: a failed export never leaves half a file.
Calibration data is always a dict keyed by input name; the TFLite converter
orders a multi-input model's inputs alphabetically, so a positional list would
calibrate the wrong tensor.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from edgemm.atomic import atomic_path
from edgemm.binding import Tensor
from edgemm.errors import InputError
from edgemm.progress import Update
from edgemm.samples import sample

ONNX_OPSET = 17
# auto: each activation tensor's range chosen among min/max, percentile, entropy and MSE by its error on
# held-out calibration samples (converters/ranges.py); the others: one method for every tensor.
CALIBRATION_METHODS = ("auto", "minmax", "entropy", "percentile")


def _batches(calib: dict[str, np.ndarray], progress: Update | None = None,
             ranks: dict[str, int] | None = None) -> Iterator[dict[str, np.ndarray]]:
    count = len(next(iter(calib.values())))
    for i in range(count):
        yield sample(calib, i, ranks)
        if progress is not None:
            progress(i + 1, count)


def export_saved_model(keras_model, path: Path, inputs: list[Tensor] | None = None) -> Path:
    """A SavedModel with batch size 1 and the Keras input and output names as signature keys.

    inputs: the settled input shapes (--input-shape), for models with dynamic dimensions.
    (TFLiteConverter.from_keras_model fails on Keras 3 models loaded from .keras files;
    a fixed batch of 1 gives the static shapes the Edge TPU compiler requires.)
    """
    import keras
    import tensorflow as tf

    settled = {t.name: t.shape for t in inputs or ()}

    def spec(t):
        name = t.name.split(":")[0]
        shape = settled.get(name, t.shape)
        return tf.TensorSpec((1, *shape[1:]), tf.float32, name=name)

    signature = keras.tree.map_structure(spec, keras_model.input)
    named_outputs(keras_model).export(os.fspath(path), format="tf_saved_model", input_signature=[signature],
                                      verbose=False)
    return path


def named_outputs(keras_model):
    """The model with its outputs as a dict keyed by the Keras output names: the TFLite signature then names
    each output as the spec and the ONNX artifact do (a list would become output_0, output_1, ...)."""
    import keras

    if isinstance(keras_model.output, dict):
        return keras_model
    names = list(keras_model.output_names)
    return keras.Model(keras_model.input, dict(zip(names, keras_model.outputs)))


def tflite_converter(graph, calib: dict[str, np.ndarray] | None, full_int8: bool = True, per_channel: bool = True,
                     progress: Update | None = None):
    """A TFLiteConverter for a SavedModel (converters.saved_model.Graph); with `calib`, int8 post-training
    quantization.

    A signature that is not already static with batch 1 and the source's names is traced again.
    full_int8: int8 weights, activations, inputs and outputs, builtin int8 ops only (what the Edge TPU
    compiler needs). False gives the stock converter's default PTQ (int8 where it can, float
    inputs/outputs, float fallback).
    """
    import tensorflow as tf

    static = graph.static_inputs
    if graph.as_is():
        converter = tf.lite.TFLiteConverter.from_saved_model(os.fspath(graph.path))
    else:
        function, loaded = graph.concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], loaded)
    if calib is not None:
        if set(calib) != set(static):
            raise InputError(f"calibration arrays {sorted(calib)} do not match model inputs {sorted(static)}")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        ranks = {name: len(shape) for name, shape in static.items()}
        converter.representative_dataset = lambda: _batches(calib, progress, ranks)  # keyed by name, never a list
        # The converter has no public switch for weight granularity; this attribute is the one it reads.
        converter._experimental_disable_per_channel = not per_channel
        if full_int8:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return converter


def write_tflite(graph, path: Path, calib: dict[str, np.ndarray] | None = None, full_int8: bool = True,
                 per_channel: bool = True, progress: Update | None = None, method: str | None = None,
                 float_nodes: tuple[str, ...] = (), qat_seconds: float = 0.0) -> dict | None:
    """TFLite from a SavedModel (see tflite_converter), written atomically; `progress` counts calibration.

    method (full int8 only): None is the converter's own calibration and quantization, as stock; a method
    name goes through converters/tflite_ranges.py, which also ranks the layers by their own error: "auto"
    chooses each tensor's range, "minmax", "entropy" and "percentile" use that method for every tensor.
    Returns what tflite_ranges measured (None for the converter's own).
    float_nodes: ops to leave in float (tflite_ranges.quantize); the model's inputs and outputs are then float
    too (for CPU/GPU targets: an int8 input quantizes a waveform before a front end kept in float could help,
    and DNSMOS's quiet speech is lost there).
    qat_seconds: also try quantization-aware fine-tuning for at most that long (tflite_ranges.quantize)."""
    chosen = None
    try:
        converter = tflite_converter(graph, calib, full_int8, per_channel, progress)
        if (method is not None or float_nodes) and calib is not None and full_int8:
            import tensorflow as tf

            from converters import ranges, tflite_ranges

            methods = ranges.CANDIDATES if method == "auto" else (method or "minmax",)
            io = tf.float32 if float_nodes else tf.int8  # float ops at an end: no int8 step on the waveform
            flatbuffer, chosen = tflite_ranges.quantize(converter, calib, per_channel, io, io, progress,
                                                        methods, float_nodes, qat_seconds)
        else:
            flatbuffer = converter.convert()
    except InputError:
        raise
    except Exception as e:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise InputError(f"TFLite conversion failed: {str(e).strip().splitlines()[0][:300]}") from None
    with atomic_path(path) as tmp:
        tmp.write_bytes(flatbuffer)
    return chosen


def write_tflite_int16x8(graph, path: Path, calib: dict[str, np.ndarray], progress: Update | None = None) -> list[str]:
    """TFLite with 16-bit activations and 8-bit weights (the converter's int16x8 mode), float inputs and
    outputs: 256 times finer activation steps than int8, for CPU/GPU targets where int8 loses too much.
    The Edge TPU runs int8 only. Ops without int16x8 kernels (SQRT, PRELU, ...) stay in float, with
    quantize/dequantize around them (TFLITE_BUILTINS beside the 16x8 set: the converter's documented
    fallback). Returns those ops' names, [] when every op computes in 16x8."""
    import tensorflow as tf

    converter = tflite_converter(graph, calib, full_int8=False, progress=progress)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                                           tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # ConverterError, RuntimeError
        raise InputError(f"int16x8 TFLite conversion failed: {str(e).strip().splitlines()[0][:300]}") from None
    with atomic_path(path) as tmp:
        tmp.write_bytes(flatbuffer)
    return _float_ops(flatbuffer)


def _float_ops(flatbuffer: bytes) -> list[str]:
    """The builtin ops of a TFLite model that compute in float (a float32 input), once each, by name."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    names = {code: name for name, code in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
    graph = model.subgraphs[0]
    found = []
    for op in graph.operators:
        c = model.operatorCodes[op.opcodeIndex]
        name = names.get(max(c.builtinCode, c.deprecatedBuiltinCode), "CUSTOM")
        if name not in ("QUANTIZE", "DEQUANTIZE") and any(
                i >= 0 and graph.tensors[i].type == schema.TensorType.FLOAT32 for i in op.inputs):
            found.append(name)
    return list(dict.fromkeys(found))


def write_onnx_from_keras(keras_model, path: Path) -> Path:
    """Float ONNX (Keras' own export, which uses tf2onnx), dynamic batch axis, Keras input and output names."""
    import tempfile

    import keras
    import onnx
    import tensorflow as tf

    def spec(t):
        return tf.TensorSpec((None, *t.shape[1:]), tf.float32, name=t.name.split(":")[0])

    signature = keras.tree.map_structure(spec, keras_model.input)
    with tempfile.TemporaryDirectory(prefix="edgemm-onnx-") as tmp:
        raw = Path(tmp) / "model.onnx"
        try:
            keras_model.export(os.fspath(raw), format="onnx", input_signature=[signature], verbose=False,
                               opset_version=ONNX_OPSET)
        except Exception as e:  # tf2onnx raises many types for unsupported ops
            raise InputError(f"ONNX export failed: {str(e).strip().splitlines()[0][:300]}") from None
        model = onnx.load(os.fspath(raw))
    names = [t.name.split(":")[0] for t in keras_model.outputs]
    names = list(getattr(keras_model, "output_names", None) or names)
    renames = {out.name: new for out, new in zip(model.graph.output, names)}
    for node in model.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    for out in model.graph.output:
        out.name = renames.get(out.name, out.name)
    onnx.checker.check_model(model)
    with atomic_path(path) as tmp:
        onnx.save(model, os.fspath(tmp))
    return path


def write_onnx_from_tf(graph: Path, kind: str, path: Path, input_names: list[str], output_names: list[str]) -> Path:
    """Float ONNX from a SavedModel directory or a float .tflite, with tf2onnx's command line (the route its
    documentation supports for both), inputs and outputs named as in the source model."""
    import subprocess
    import sys
    import tempfile

    import onnx

    if kind == "tflite":
        from edgemm.backends.litert import LiteRTBackend

        ins, outs = LiteRTBackend(graph).tensor_names()
        source = ["--tflite", os.fspath(graph),
                  "--inputs", ",".join(ins[n] for n in input_names), "--rename-inputs", ",".join(input_names),
                  "--outputs", ",".join(outs[n] for n in output_names), "--rename-outputs", ",".join(output_names)]
    else:
        source = ["--saved-model", os.fspath(graph), "--signature_def", "serving_default", "--tag", "serve"]
    with tempfile.TemporaryDirectory(prefix="edgemm-onnx-") as tmp:
        raw = Path(tmp) / "model.onnx"
        proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", *source, "--opset", str(ONNX_OPSET),
                               "--output", os.fspath(raw)], capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not raw.is_file():
            errors = [line for line in proc.stderr.splitlines() if "Error" in line or "error" in line]
            raise InputError(f"ONNX export (tf2onnx) failed: {(errors or proc.stderr.splitlines() or ['no output'])[-1][:300]}")
        model = onnx.load(os.fspath(raw))
    got = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    if sorted(got[0]) != sorted(input_names) or sorted(got[1]) != sorted(output_names):
        raise InputError(f"ONNX export (tf2onnx) named the tensors {got}, not the model's {input_names} / {output_names}")
    with atomic_path(path) as tmp:
        onnx.save(model, os.fspath(tmp))
    return path


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over a dict of arrays, one sample per batch.

    __len__ and set_range are what quantize_static's strided calibration (CalibStridedMinMax) uses to
    calibrate chunk by chunk.
    """

    def __init__(self, calib: dict[str, np.ndarray], progress: Update | None = None,
                 ranks: dict[str, int] | None = None):
        self._calib, self._ranks = calib, ranks
        self._count = len(next(iter(calib.values())))
        self._progress, self._done = progress, 0
        self.set_range(0, self._count)

    def __len__(self) -> int:
        return self._count

    def set_range(self, start_index: int, end_index: int) -> None:
        self._it = _batches({name: array[start_index:end_index] for name, array in self._calib.items()},
                            ranks=self._ranks)

    def get_next(self):
        batch = next(self._it, None)
        if batch is not None and self._progress is not None:
            self._done = min(self._done + 1, self._count)
            self._progress(self._done, self._count)
        return batch

    def rewind(self):
        self._done = 0
        self.set_range(0, self._count)


# Calibration samples whose intermediate outputs ONNX Runtime holds at once. MinMax keeps two reductions per
# tensor per sample; the histogram methods keep every intermediate tensor (~100 MB a sample for a
# ResNet-50), then copy them once more to build histograms.
_CALIB_CHUNK = {"auto": 64, "minmax": 64, "entropy": 4, "percentile": 4}


def _stride(count: int, chunk: int) -> int:
    """The largest chunk size <= `chunk` that divides `count` (quantize_static requires it to)."""
    return max(d for d in range(1, min(chunk, count) + 1) if count % d == 0)


def onnx_input_ranks(model: Path) -> dict[str, int]:
    """Each graph input's rank (samples.sample adds a batch axis only where the model has one)."""
    import onnx

    graph = onnx.load(os.fspath(model), load_external_data=False).graph
    return {v.name: len(v.type.tensor_type.shape.dim) for v in graph.input}


@dataclasses.dataclass(frozen=True)
class OnnxInt8:
    path: Path
    per_channel: bool  # what the weights got: per-tensor when the model could not be raised to opset 13
    notes: tuple[str, ...] = ()  # what the preparation changed or could not do, for the report
    ranges: dict | None = None  # method auto: what the range choice measured (converters/ranges.summary)


def write_onnx_int8(
    float_path: Path,
    path: Path,
    calib: dict[str, np.ndarray],
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool = False,
    nodes_to_exclude: tuple[str, ...] = (),
    stock: bool = False,
    progress: Update | None = None,
) -> OnnxInt8:
    """int8 QDQ ONNX with ONNX Runtime's static quantization, of the float model prepared by
    converters.onnx_prep (Constant weights made initializers, opset raised for per-channel weights, ONNX
    Runtime's pre-processing), calibrated in chunks so memory does not grow with the number of samples.

    method: "auto" quantizes twice, with the ranges converters/onnx_ranges.py chooses per tensor and with
    ONNX Runtime's min/max, and keeps the one closer to the float model on held-out calibration samples;
    the others are ONNX Runtime's calibration methods.
    nodes_to_exclude: nodes of the float model to keep in float (followed through node fusions).
    stock: ONNX Runtime's defaults (per-tensor weights, MinMax, no preparation), for comparisons.
    """
    try:
        return _write_onnx_int8(float_path, path, calib, method, per_channel, reduce_range, nodes_to_exclude, stock,
                                progress)
    except InputError:
        raise
    except Exception as e:  # ONNX Runtime's Fail, ValueError, onnx's checker errors... on this model
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise InputError(f"int8 ONNX quantization failed ({'stock ' if stock else ''}ONNX Runtime quantizer, "
                         f"{type(e).__name__}): {first}") from None


def _compact_names(path: Path) -> None:
    """The quantizer's long generated names made short (converters/onnx_names.py); not above protobuf's 2 GB."""
    import onnx

    from converters import onnx_names

    if path.stat().st_size < 2**31 - 2**26:
        model = onnx.load(os.fspath(path))
        if onnx_names.compact(model):
            onnx.save(model, os.fspath(path))


def _write_onnx_int8(float_path: Path, path: Path, calib: dict[str, np.ndarray], method: str, per_channel: bool,
                     reduce_range: bool, nodes_to_exclude: tuple[str, ...], stock: bool,
                     progress: Update | None) -> OnnxInt8:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from converters import onnx_prep

    if method not in CALIBRATION_METHODS:
        raise InputError(f"calibration method {method!r}: choose one of {', '.join(CALIBRATION_METHODS)}")
    ranks = onnx_input_ranks(Path(float_path))
    if stock:
        with atomic_path(path) as tmp:
            quantize_static(os.fspath(float_path), os.fspath(tmp), _Reader(calib, ranks=ranks))
        return OnnxInt8(path, False)
    methods = {"auto": CalibrationMethod.MinMax, "minmax": CalibrationMethod.MinMax,
               "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
    reader = _Reader(calib, progress, ranks)

    def quantize(prepared: onnx_prep.Prepared, out: Path, excluded: list[str], overrides: dict) -> Path:
        reader.rewind()
        quantize_static(
            os.fspath(prepared.path), os.fspath(out), reader,
            quant_format=QuantFormat.QDQ, per_channel=prepared.per_channel, reduce_range=reduce_range,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=methods[method], nodes_to_exclude=excluded or None,
            # Not CalibMaxIntermediateOutputs: in onnxruntime 1.32 it drops the collected outputs without
            # merging their ranges ("No data is collected."). The strided loop merges every chunk.
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "TensorQuantOverrides": overrides,
                           "CalibStridedMinMax": _stride(len(reader), _CALIB_CHUNK[method])},
        )
        return out

    with tempfile.TemporaryDirectory(prefix="edgemm-quantize-") as work, atomic_path(path) as tmp:
        prepared = onnx_prep.prepare(Path(float_path), Path(work), per_channel)
        excluded, notes = onnx_prep.node_names(Path(float_path), prepared.path, tuple(nodes_to_exclude))
        chosen = None
        if method == "auto":  # the chosen ranges against ONNX Runtime's min/max, on held-out samples
            from converters import onnx_ranges

            overrides, chosen = onnx_ranges.overrides(prepared.path, calib, progress)
            variants = {"chosen": quantize(prepared, Path(work) / "chosen.onnx", excluded, overrides),
                        "minmax": quantize(prepared, Path(work) / "minmax.onnx", excluded, {})}
            chosen |= onnx_ranges.keep_closer(prepared.path, variants, calib)
            shutil.copyfile(variants[chosen["kept"]], tmp)
        else:
            quantize(prepared, tmp, excluded, {})
        _compact_names(tmp)
    return OnnxInt8(path, prepared.per_channel, prepared.notes + tuple(notes), chosen)
