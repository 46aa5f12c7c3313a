"""The student for distillation, given as a Keras file.

    --student small.keras     any Keras model with the source model's inputs (names and shapes) and classes

Architectures are the user's business: build the student in Keras (narrower widths of the
teacher, another family) and save it as a .keras file.
"""

from __future__ import annotations

from pathlib import Path

from edgemm.errors import InputError


def _inputs(model) -> dict[str, tuple]:
    return {t.name.split(":")[0]: tuple(t.shape[1:]) for t in model.inputs}


def build(path: Path, teacher):
    """The student model from `path`, checked against the teacher's inputs and number of classes."""
    from converters.sources import load_keras

    path = Path(path)
    if path.suffix != ".keras":
        raise InputError(f"{path}: a student is a .keras model file (build it in Keras and save it with model.save)")
    student = load_keras(path)
    want, got = _inputs(teacher), _inputs(student)
    if got != want:
        raise InputError(f"{path}: student inputs {got} do not match the source model's {want}")
    classes, teacher_classes = student.outputs[0].shape[-1], teacher.outputs[0].shape[-1]
    if classes != teacher_classes:
        raise InputError(f"{path}: student has {classes} classes, the source model {teacher_classes}")
    return student
