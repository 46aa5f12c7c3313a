"""Where the shipped teacher lives, and how it and its sidecar are written and read.

The sidecar (`<model>.json`) carries what a converter needs besides the
weights: the preprocessing spec, the labels, the input names and the
measured metrics.
"""

from __future__ import annotations

from pathlib import Path

from edgemm.atomic import atomic_path, read_json_object, write_json
from edgemm.errors import InputError
from edgemm.manifest import sha256_file
from edgemm.transforms.v1 import PreprocessSpec
from examples.av_digits.dataset import LABELS

TEACHER_DIR = Path(__file__).resolve().parent
TEACHER_MODEL = TEACHER_DIR / "av_digits_teacher.keras"


def sidecar_path(model_path: Path) -> Path:
    return Path(model_path).with_suffix(".json")


def sidecar(model, spec: PreprocessSpec, metrics: dict, training: dict) -> dict:
    return {
        "task": "av-digits",
        "labels": list(LABELS),
        "inputs": {t.name: list(t.shape[1:]) for t in model.inputs},
        "output": model.output_names[0] if hasattr(model, "output_names") else "digit",
        "parameters": int(model.count_params()),
        "preprocess": spec.to_dict(),
        "metrics": metrics,
        "training": training,
    }


def save(model, data: dict, out_dir: Path) -> Path:
    """Writes `<out_dir>/av_digits_teacher.keras` (weights only, no optimizer state) and its sidecar."""
    import keras

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / TEACHER_MODEL.name
    # Rebuilt from its config: uncompiled, so the file carries no optimizer slots (clone_model keeps them).
    bare = keras.Model.from_config(model.get_config())
    bare.set_weights(model.get_weights())
    assert getattr(bare, "optimizer", None) is None
    with atomic_path(target) as tmp:
        bare.save(tmp)
    data = dict(data, sha256=sha256_file(target))
    write_json(sidecar_path(target), data)
    return target


def load_sidecar(model_path: Path) -> tuple[PreprocessSpec, dict]:
    path = sidecar_path(model_path)
    data = read_json_object(path, "sidecar", missing="sidecar with the preprocessing spec and labels is missing")
    if "preprocess" not in data:
        raise InputError(f"{path}: has no 'preprocess' section")
    return PreprocessSpec.from_dict(data["preprocess"]), data


def load_teacher(model_path: Path = TEACHER_MODEL):
    """Loads a .keras model with Keras' safe mode on (no code from Lambda layers)."""
    import keras

    path = Path(model_path)
    if not path.is_file():
        raise InputError(f"{path}: no such Keras model")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as e:  # Keras raises ValueError, OSError, zipfile errors, ... for bad files
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot load Keras model ({message})") from None
