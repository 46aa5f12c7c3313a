"""Student architectures for distillation, given as a small config or a Keras file.

    --student small.keras     any Keras model with the teacher's input names and number of classes
    --student student.yaml    {"architecture": "av_digits", "image_width": 8, "audio_width": 32, "hidden": 128}

The "av_digits" family is the reference teacher's architecture at other widths.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgemm.errors import InputError

AV_DIGITS_KEYS = {"architecture", "image_width", "audio_width", "hidden", "dropout"}


def _read_config(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(f"{path}: cannot read student config ({e.strerror})") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as e:  # yaml.YAMLError, json.JSONDecodeError
        raise InputError(f"{path}: not valid {path.suffix[1:].upper()} ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: student config must be a mapping")
    return data


def build(path: Path, teacher):
    """A fresh student model, checked against the teacher's inputs and classes."""
    from converters.sources import load_keras

    path = Path(path)
    if path.suffix == ".keras":
        student = load_keras(path)
    else:
        config = _read_config(path)
        unknown = set(config) - AV_DIGITS_KEYS
        if unknown:
            raise InputError(f"{path}: unknown key(s) {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(AV_DIGITS_KEYS))})")
        if config.get("architecture") != "av_digits":
            raise InputError(f"{path}: 'architecture' must be 'av_digits' (or give a .keras student)")
        from converters.reference.model import build_teacher
        from edgemm.preprocess import PreprocessSpec

        spec = PreprocessSpec()
        shapes = {t.name.split(":")[0]: tuple(t.shape[1:]) for t in teacher.inputs}
        if shapes != {"image": spec.image.input_shape, "audio": spec.audio.feature_shape}:
            raise InputError(f"{path}: the av_digits student needs a teacher with the AV-digits inputs, not {shapes}")
        try:
            student = build_teacher(spec, hidden=int(config.get("hidden", 128)), dropout=float(config.get("dropout", 0.3)),
                                    image_width=int(config.get("image_width", 8)),
                                    audio_width=int(config.get("audio_width", 32)), name="av_digits_student")
        except (TypeError, ValueError) as e:
            raise InputError(f"{path}: bad student config ({e})") from None
    names = lambda m: sorted(t.name.split(":")[0] for t in m.inputs)  # noqa: E731
    if names(student) != names(teacher) or student.outputs[0].shape[-1] != teacher.outputs[0].shape[-1]:
        raise InputError(f"{path}: student inputs {names(student)} / {student.outputs[0].shape[-1]} classes do not "
                         f"match the teacher's {names(teacher)} / {teacher.outputs[0].shape[-1]}")
    return student
