"""A narrower student of the teacher's architecture, saved as a .keras file.

    python -m examples.av_digits student --out student.keras [--image-width 8] [--audio-width 32] [--hidden 128]
    edgemm convert examples/av_digits/av_digits_teacher.keras --out DIR --calib calib.npz --distill --student student.keras

Same branches, head and input names as the teacher, fewer channels; freshly initialised (distillation trains it).
"""

from __future__ import annotations

from pathlib import Path

from examples.av_digits import teacher_files


def build_student(out: Path, model: Path | None = None, image_width: int = 8, audio_width: int = 32,
                  hidden: int = 128, dropout: float = 0.3, seed: int = 0) -> Path:
    """Writes the untrained student to `out` (.keras) and returns its path; the spec comes from the teacher's sidecar."""
    import keras

    from converters.sources import save_keras
    from edgemm.errors import InputError
    from examples.av_digits.model import build_teacher

    out = Path(out)
    if out.suffix != ".keras":
        raise InputError(f"{out}: the student file must end in .keras")
    spec, _ = teacher_files.load_sidecar(Path(model or teacher_files.TEACHER_MODEL))
    keras.utils.set_random_seed(seed)
    student = build_teacher(spec, hidden=hidden, dropout=dropout, image_width=image_width, audio_width=audio_width,
                            name="av_digits_student")
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_keras(student, out)
