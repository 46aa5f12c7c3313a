"""Loading the source model (Keras or ONNX) and what travels with it (spec, labels)."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

from edgemm.atomic import read_json_object
from edgemm.errors import InputError
from edgemm.manifest import sha256_file
from edgemm.preprocess import PreprocessSpec


@dataclasses.dataclass
class SourceModel:
    path: Path
    kind: str  # "keras" or "onnx"
    sha256: str
    inputs: dict[str, tuple[int, ...]]  # logical name -> shape without the batch axis
    outputs: tuple[str, ...]
    labels: tuple[str, ...]
    spec: PreprocessSpec | None
    keras_model: object = None  # keras.Model for kind == "keras"


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


def _onnx_io(path: Path):
    import onnx

    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # onnx raises DecodeError, ValidationError, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: not a valid ONNX model ({reason[:300]})") from None
    initializers = {init.name for init in model.graph.initializer}
    inputs = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
        if any(d <= 0 for d in dims[1:]):
            raise InputError(f"{path}: input {value.name!r} has a dynamic shape {dims} beyond the batch axis; "
                             "export it with static shapes")
        inputs[value.name] = tuple(dims[1:])
    return inputs, tuple(o.name for o in model.graph.output)


def load_source(path: Path, sidecar: Path | None = None, labels: tuple[str, ...] | None = None) -> SourceModel:
    """Loads MODEL (.keras or .onnx) and its sidecar (MODEL.json beside it, or `sidecar`).

    The sidecar gives the preprocessing spec ("preprocess") and the labels
    ("labels"); `labels` overrides them. Without a sidecar the labels are the
    class indices and the artifacts carry no preprocessing spec.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a directory; give a .keras or .onnx model file")
    if not path.is_file():
        raise InputError(f"{path}: no such model file")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        model = load_keras(path)
        inputs = {t.name.split(":")[0]: tuple(int(d) for d in t.shape[1:]) for t in model.inputs}
        outputs = tuple(model.output_names)
        kind = "keras"
    elif suffix == ".onnx":
        model = None
        inputs, outputs = _onnx_io(path)
        kind = "onnx"
    else:
        raise InputError(f"{path}: unsupported model format {suffix or '(none)'}; give a .keras or .onnx file")
    if len(outputs) != 1:
        raise InputError(f"{path}: edgemm converts classifiers with one output; this model has {len(outputs)}")

    side = Path(sidecar) if sidecar else path.with_suffix(".json")
    data = read_json_object(side, "sidecar") if (sidecar or side.is_file()) else {}
    spec = None
    if "preprocess" in data:
        try:
            spec = PreprocessSpec.from_dict(data["preprocess"])
        except InputError as e:
            raise InputError(f"{side}: {e}") from None
    n_classes = _output_classes(model, path, kind)
    labels = tuple(labels or data.get("labels") or (str(i) for i in range(n_classes)))
    if n_classes and len(labels) != n_classes:
        raise InputError(f"{side}: {len(labels)} labels for a model with {n_classes} outputs")
    return SourceModel(path=path, kind=kind, sha256=sha256_file(path), inputs=inputs, outputs=outputs,
                       labels=labels, spec=spec, keras_model=model)


def _output_classes(model, path: Path, kind: str) -> int:
    if kind == "keras":
        shape = model.outputs[0].shape
    else:
        import onnx

        dims = onnx.load(str(path)).graph.output[0].type.tensor_type.shape.dim
        shape = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return int(shape[-1]) if shape and shape[-1] else 0
