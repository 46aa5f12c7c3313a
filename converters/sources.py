"""Loading the user's model, whatever it was saved as, and its model spec (edgemm.spec).

Source kinds and how each is read:
  .keras                      Keras 3, safe mode (no code from Lambda layers runs)
  .h5 / .hdf5                 Keras 3 when it can; a legacy (TF 2.x) file that needs tf_keras is
                              loaded in a child process (converters.legacy_keras) and becomes a SavedModel
  SavedModel directory        TensorFlow's serving signature (converters.saved_model)
  .tflite (float)             LiteRT
  .onnx (opset 11+)           ONNX Runtime; --input-shape fixes dynamic dimensions (converters.shapes)
Custom layers and Lambda layers run Python code: they load only with --custom-code FILE.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import zipfile
from pathlib import Path

from converters import shapes as shape_fix
from edgemm import limits
from edgemm.binding import Binding, Tensor, bind
from edgemm.errors import InputError
from edgemm.manifest import sha256_file
from edgemm.spec import ModelSpec, OutputSpec, find_spec_file, read_spec_file

KINDS = ("keras", "saved_model", "tflite", "onnx")
SUFFIXES = ".keras, .h5, .hdf5, .tflite, .onnx or a SavedModel directory"


@dataclasses.dataclass
class SourceModel:
    path: Path  # what the user gave
    kind: str  # how it is converted: one of KINDS
    format: str  # what the user gave, in words (e.g. "Keras .h5, loaded with tf_keras")
    sha256: str
    inputs: list[Tensor]  # the model's own tensors, dynamic dims fixed by --input-shape (batch may stay -1)
    outputs: list[Tensor]
    spec: ModelSpec | None  # None: no spec file (artifacts can be converted and benched, not run live)
    binding: Binding | None  # the spec checked against the tensors
    spec_file: Path | None = None
    keras_model: object = None  # keras.Model for kind == "keras"
    graph: Path | None = None  # the file/directory converters read: SavedModel dir, .tflite, (shape-fixed) .onnx

    @property
    def sample_shapes(self) -> dict[str, tuple[int, ...]]:
        """What one calibration sample of each input looks like (the model's shape without its batch axis)."""
        if self.binding is not None:
            return {n: b.shape[1:] if b.batch_axis else b.shape for n, b in self.binding.inputs.items()}
        return {t.name: t.shape[1:] for t in self.inputs}

    @property
    def heads(self) -> dict[str, OutputSpec]:
        """What each output means: from the spec, else one output is a classifier and several are raw."""
        if self.binding is not None:
            return {n: o.spec for n, o in self.binding.outputs.items()}
        head = "classify" if len(self.outputs) == 1 else "raw"
        return {t.name: OutputSpec(t.name, head) for t in self.outputs}


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


def custom_objects(code: Path | None) -> dict:
    """The classes and functions a --custom-code FILE.py defines (it is run: that is the opt-in)."""
    if code is None:
        return {}
    import importlib.util

    code = Path(code)
    if not code.is_file() or code.suffix != ".py":
        raise InputError(f"--custom-code {code}: give a Python file that defines the model's custom layers")
    spec = importlib.util.spec_from_file_location(f"edgemm_custom_{code.stem}", code)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: anything can go wrong
        raise InputError(f"--custom-code {code}: running it failed ({type(e).__name__}: {first_line(e)})") from None
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and callable(v)
            and getattr(v, "__module__", None) == module.__name__}


def load_keras(path: Path, code: Path | None = None):
    """Loads a .keras or .h5 file with Keras 3. Without `code`, safe mode is on (no code from Lambda
    layers runs) and custom layers are refused; bad files are a clear error."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such Keras model")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a .keras file (a .keras file is a zip archive; this one is truncated or another format)")
    objects = custom_objects(code)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=code is None, custom_objects=objects or None)
    except Exception as e:  # Keras raises ValueError, TypeError, KeyError, OSError... for bad archives
        hint = "" if code else " (custom or Lambda layers run Python code: give their code with --custom-code FILE.py)"
        unknown = "Unknown layer" in str(e) or "Lambda" in str(e) or "safe_mode" in str(e)
        raise InputError(f"{path}: Keras cannot load this model ({first_line(e)}){hint if unknown else ''}") from None


def save_keras(model, path: Path) -> Path:
    """Saves architecture and weights only (no optimizer state), atomically, with Keras input/output names."""
    import keras

    from edgemm.atomic import atomic_path

    bare = keras.Model.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    with atomic_path(path) as tmp:
        bare.save(tmp)
    return path


def _dims(shape) -> tuple[int, ...]:
    return tuple(-1 if d is None else int(d) for d in shape)


def keras_io(model) -> tuple[list[Tensor], list[Tensor]]:
    names = list(getattr(model, "output_names", None) or [t.name.split(":")[0] for t in model.outputs])
    inputs = [Tensor(t.name.split(":")[0], _dims(t.shape), "float32") for t in model.inputs]
    return inputs, [Tensor(n, _dims(t.shape), "float32") for n, t in zip(names, model.outputs)]


def keras_tensors(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """Input and output tensors of a .keras/.h5 model (for `edgemm spec`)."""
    return keras_io(load_keras(path))


_ONNX_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 10: "float16", 9: "bool"}
MIN_ONNX_OPSET = 11


def _onnx_io(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises DecodeError, ValidationError, ...
        raise InputError(f"{path}: not a valid ONNX model ({first_line(e)})") from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_ONNX_OPSET:
        raise InputError(f"{path}: ONNX opset {opset}; edgemm needs opset {MIN_ONNX_OPSET} or newer (re-export it, "
                         "e.g. torch.onnx.export(..., opset_version=17))")
    initializers = {init.name for init in model.graph.initializer}

    def tensor(value) -> Tensor:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return Tensor(value.name, dims, _ONNX_TYPES.get(t.elem_type, f"onnx type {t.elem_type}"))

    return [tensor(v) for v in model.graph.input if v.name not in initializers], [tensor(v) for v in model.graph.output]


def _tflite_io(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    from edgemm.backends.registry import open_backend

    backend = open_backend("litert", path)
    inputs, outputs = [Tensor.of(t) for t in backend.inputs], [Tensor.of(t) for t in backend.outputs]
    quantized = [t.name for t in inputs + outputs if t.scale or t.dtype in ("int8", "uint8")]
    if quantized:
        raise InputError(f"{path}: this TFLite model is already quantized ({', '.join(quantized)} is int8/uint8); "
                         "give the float model it was made from")
    return inputs, outputs


def sha256_tree(path: Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, in sorted order)."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode() + b"\0" + bytes.fromhex(sha256_file(f)))
    return digest.hexdigest()


def _open(path: Path, input_shapes: dict, code: Path | None, work: Path) -> SourceModel:
    """The model itself: kind, tensors and what the converters read."""
    suffix = path.suffix.lower()
    fields = {"path": path, "sha256": sha256_tree(path), "spec": None, "binding": None}
    if path.is_dir():
        from converters import saved_model

        inputs, outputs = saved_model.signature_io(path)
        return SourceModel(kind="saved_model", format="TensorFlow SavedModel", inputs=inputs, outputs=outputs,
                           graph=path, **fields)
    if suffix in (".keras", ".h5", ".hdf5"):
        if suffix != ".keras":
            from converters import legacy_keras

            legacy_keras.check_h5(path)
        try:
            model = load_keras(path, code)
        except InputError as keras3_error:
            if suffix == ".keras":
                raise
            from converters import legacy_keras, saved_model

            graph = legacy_keras.to_saved_model(path, work / "legacy_keras", code, keras3_error)
            inputs, outputs = saved_model.signature_io(graph)
            return SourceModel(kind="saved_model", format=f"Keras {suffix} (legacy: loaded with tf_keras)",
                               inputs=inputs, outputs=outputs, graph=graph, **fields)
        inputs, outputs = keras_io(model)
        return SourceModel(kind="keras", format=f"Keras {suffix}", inputs=inputs, outputs=outputs,
                           keras_model=model, **fields)
    if suffix == ".tflite":
        inputs, outputs = _tflite_io(path)
        return SourceModel(kind="tflite", format="float TFLite", inputs=inputs, outputs=outputs, graph=path, **fields)
    if suffix == ".onnx":
        inputs, outputs = _onnx_io(path)
        graph = path
        if input_shapes:
            graph = shape_fix.fix_onnx(path, input_shapes, work / "fixed_shapes.onnx")
        return SourceModel(kind="onnx", format="ONNX", inputs=inputs, outputs=outputs, graph=graph, **fields)
    raise InputError(f"{path}: unsupported model format {suffix or '(none)'}; give a {SUFFIXES}")


def _check_declared_sizes(source: SourceModel, path: Path) -> None:
    """Every tensor the model declares fits in memory as float32 samples, before anything is built from it
    (a 77-byte ONNX can declare an output of 2^40 values)."""
    for side, tensors in (("input", source.inputs), ("output", source.outputs)):
        for t in tensors:
            count = math.prod(d for d in t.shape if d > 0)
            limits.check_bytes(4 * count, f"{path}: {side} '{t.name[:60]}' of shape {list(t.shape)[:8]}")


def check_model_path(path: Path) -> None:
    """Refuses a path that is no model file or SavedModel directory (cheap: nothing is loaded)."""
    if not path.exists():
        raise InputError(f"{path}: no such model file or SavedModel directory")
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise InputError(f"{path}: a directory without saved_model.pb; give a {SUFFIXES}")


def load_source(path: Path, spec_path: Path | None = None, input_shapes: dict[str, tuple[int, ...]] | None = None,
                code: Path | None = None, work: Path | None = None) -> SourceModel:
    """Loads MODEL and its spec (`spec_path`, or MODEL.yaml/.yml/.json beside it), and checks the spec
    against the model's tensors before any work is done.

    input_shapes: --input-shape values (fixes dynamic dimensions). code: --custom-code FILE.py.
    work: a scratch directory for intermediate files (a SavedModel from a legacy .h5, a shape-fixed
    ONNX); it must outlive the conversion. A v1 sidecar (MODEL.json with "preprocess" and "labels")
    is migrated. Without a spec the model can be converted and benchmarked; `edgemm run` needs one.
    """
    path = Path(path)
    check_model_path(path)
    if work is None:
        import tempfile

        work = Path(tempfile.mkdtemp(prefix="edgemm-source-"))
    source = _open(path, dict(input_shapes or {}), code, Path(work))
    source.inputs = shape_fix.settle(source.inputs, dict(input_shapes or {}), str(path))
    _check_declared_sizes(source, path)
    spec_file = Path(spec_path) if spec_path else find_spec_file(path)
    if spec_file is not None:
        names = [t.name for t in source.inputs], [t.name for t in source.outputs]
        binding = bind(read_spec_file(spec_file, *names), source.inputs, source.outputs, str(spec_file))
        source.spec, source.binding, source.spec_file = binding.spec, binding, spec_file
    return source
