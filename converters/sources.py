"""Loading the source model (Keras or ONNX) and its model spec (edgemm.spec)."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

from edgemm.binding import Binding, Tensor, bind
from edgemm.errors import InputError
from edgemm.manifest import sha256_file
from edgemm.spec import ModelSpec, OutputSpec, find_spec_file, read_spec_file


@dataclasses.dataclass
class SourceModel:
    path: Path
    kind: str  # "keras" or "onnx"
    sha256: str
    inputs: list[Tensor]  # the model's own tensors, batch axis included (-1: dynamic)
    outputs: list[Tensor]
    spec: ModelSpec | None  # None: no spec file (artifacts can be converted and benched, not run live)
    binding: Binding | None  # the spec checked against the tensors
    spec_file: Path | None = None
    keras_model: object = None  # keras.Model for kind == "keras"

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


def load_keras(path: Path):
    """Loads a .keras file with safe mode on (no code from Lambda layers); bad files are a clear error."""
    import keras

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such Keras model")
    if not zipfile.is_zipfile(path):
        raise InputError(f"{path}: not a .keras file (a .keras file is a zip archive; this one is truncated or another format)")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises ValueError, TypeError, KeyError, OSError... for bad archives
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: Keras cannot load this model ({reason[:300]})") from None


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


def _keras_io(model) -> tuple[list[Tensor], list[Tensor]]:
    names = list(getattr(model, "output_names", None) or [t.name.split(":")[0] for t in model.outputs])
    inputs = [Tensor(t.name.split(":")[0], _dims(t.shape), "float32") for t in model.inputs]
    return inputs, [Tensor(n, _dims(t.shape), "float32") for n, t in zip(names, model.outputs)]


def keras_tensors(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """Input and output tensors of a .keras model (for `edgemm spec`)."""
    return _keras_io(load_keras(path))


_ONNX_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 10: "float16", 9: "bool"}


def _onnx_io(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises DecodeError, ValidationError, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: not a valid ONNX model ({reason[:300]})") from None
    initializers = {init.name for init in model.graph.initializer}

    def tensor(value) -> Tensor:
        t = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
        return Tensor(value.name, dims, _ONNX_TYPES.get(t.elem_type, f"onnx type {t.elem_type}"))

    inputs = [tensor(v) for v in model.graph.input if v.name not in initializers]
    for t in inputs:
        if any(d <= 0 for d in t.shape[1:]):
            raise InputError(f"{path}: input {t.name!r} has a dynamic shape {list(t.shape)} beyond the batch axis; "
                             "export it with static shapes")
    return inputs, [tensor(v) for v in model.graph.output]


def load_source(path: Path, spec_path: Path | None = None) -> SourceModel:
    """Loads MODEL (.keras or .onnx) and its spec (`spec_path`, or MODEL.yaml/.yml/.json beside it), and
    checks the spec against the model's tensors before any work is done.

    A v1 sidecar (MODEL.json with "preprocess" and "labels") is migrated. Without a spec the model can be
    converted and benchmarked; `edgemm run` needs one.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a .keras or .onnx model file")
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        model = load_keras(path)
        inputs, outputs = _keras_io(model)
        kind = "keras"
    elif suffix == ".onnx":
        model = None
        inputs, outputs = _onnx_io(path)
        kind = "onnx"
    else:
        raise InputError(f"{path}: unsupported model format {suffix or '(none)'}; give a .keras or .onnx file")
    spec_file = Path(spec_path) if spec_path else find_spec_file(path)
    spec = binding = None
    if spec_file is not None:
        spec = read_spec_file(spec_file, [t.name for t in inputs], [t.name for t in outputs])
        binding = bind(spec, inputs, outputs, str(spec_file))
        spec = binding.spec
    return SourceModel(path=path, kind=kind, sha256=sha256_file(path), inputs=inputs, outputs=outputs, spec=spec,
                       binding=binding, spec_file=spec_file, keras_model=model)
