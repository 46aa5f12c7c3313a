"""`python -m examples.av_digits`: the example's commands, each a thin wrapper around one function.

Errors edgemm reports (EdgemmError) become one line and their exit code, as with `edgemm` itself.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgemm.cli import EdgemmGroup
from edgemm.errors import DependencyError

DATA_DIR_HELP = "AV-digits data directory [default: $EDGEMM_DATA_DIR or ../shared/data]"
MODEL_HELP = "Keras teacher (with its .json sidecar) [default: the shipped teacher]"


def _require_keras() -> None:
    try:
        import converters.convert  # noqa: F401
        import keras  # noqa: F401
    except ImportError as e:
        raise DependencyError(f"this command needs the converter extra ({e.name} missing): pip install 'edgemm[convert]'")


@click.group(cls=EdgemmGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """AV-digits example: MNIST digit image + spoken digit -> digit, with a shipped Keras teacher."""


@main.command("eval")
@click.option("--model", type=click.Path(path_type=Path), default=None, help=MODEL_HELP)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=DATA_DIR_HELP)
@click.option("--min-gain", type=float, default=3.0, show_default=True,
              help="Fail (exit 1) unless fusion beats the best single modality by this many points.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def eval_command(model: Path | None, data_dir: Path | None, min_gain: float, as_json: bool) -> None:
    """Image-only, audio-only and fused test accuracy of a teacher on AV-digits."""
    _require_keras()
    from examples.av_digits.report import evaluate_on_test_set

    result = evaluate_on_test_set(model, data_dir)
    click.echo(json.dumps(result, indent=2) if as_json else result["table"])
    if result["fusion_gain_points"] < min_gain:
        click.echo(f"Error: fusion gain {result['fusion_gain_points']:.1f} points is below --min-gain {min_gain}", err=True)
        sys.exit(1)


@main.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for the .keras model and its sidecar.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=DATA_DIR_HELP)
@click.option("--epochs", type=click.IntRange(1), default=None, help="Training epochs [default: TrainConfig]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--baselines/--no-baselines", default=False, show_default=True,
              help="Also train image-only and audio-only models of the same shape (about doubles the time).")
def train(out: Path, data_dir: Path | None, epochs: int | None, seed: int, baselines: bool) -> None:
    """Train the AV-digits teacher on the CPU and write it with its metrics."""
    _require_keras()
    import dataclasses

    from examples.av_digits.dataset import resolve_data_dir
    from examples.av_digits.train import TrainConfig, train as run_train

    config = TrainConfig(seed=seed, baselines=baselines)
    if epochs is not None:
        config = dataclasses.replace(config, epochs=epochs)
    sidecar = run_train(resolve_data_dir(data_dir), out, config, log=click.echo)
    click.echo(json.dumps(sidecar["metrics"], indent=2))


@main.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Directory for calib.npz, val.npz, train.npz.")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help=DATA_DIR_HELP + "; without it, the demo media stand in.")
@click.option("--model", type=click.Path(path_type=Path), default=None, help=MODEL_HELP + ": its preprocessing.")
@click.option("--calib-samples", type=click.IntRange(1), default=300, show_default=True)
@click.option("--train-epochs", type=click.IntRange(0), default=3, show_default=True,
              help="Epochs' worth of fresh augmented training pairs in train.npz (0: no train.npz).")
def data(out: Path, data_dir: Path | None, model: Path | None, calib_samples: int, train_epochs: int) -> None:
    """Write the calibration, validation and training sets as .npz keyed by input name (with 'label').

    For `edgemm convert MODEL --calib OUT/calib.npz --val OUT/val.npz [--train OUT/train.npz]`
    and `edgemm bench DIR --val OUT/val.npz`.
    """
    from edgemm.atomic import check_output_dir
    from examples.av_digits.data import write_data

    check_output_dir(out, "--out")
    files = write_data(out, data_dir, model, calib_samples, train_epochs, log=click.echo)
    click.echo(f"samples from {files.source}:")
    for path in (files.calib, files.val, files.train):
        if path is not None:
            click.echo(f"  {path}  {files.counts[path.name]} samples")


@main.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The student's .keras file.")
@click.option("--model", type=click.Path(path_type=Path), default=None, help=MODEL_HELP + ": its preprocessing.")
@click.option("--image-width", type=click.IntRange(1), default=8, show_default=True, help="Teacher: 16.")
@click.option("--audio-width", type=click.IntRange(1), default=32, show_default=True, help="Teacher: 64.")
@click.option("--hidden", type=click.IntRange(1), default=128, show_default=True, help="Teacher: 256.")
def student(out: Path, model: Path | None, image_width: int, audio_width: int, hidden: int) -> None:
    """Write a narrower, untrained student of the teacher's architecture for `edgemm convert --distill --student`."""
    _require_keras()
    from examples.av_digits.student import build_student

    path = build_student(out, model, image_width=image_width, audio_width=audio_width, hidden=hidden)
    click.echo(f"wrote {path}")


@main.command()
@click.option("--workdir", type=click.Path(path_type=Path), default=Path("demo_out"), show_default=True,
              help="Where the demo media, converted model and stats are written.")
@click.option("--model", type=click.Path(path_type=Path), default=None, help=MODEL_HELP)
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=DATA_DIR_HELP)
@click.option("--rerender", is_flag=True, help="Render the demo media again even if present.")
@click.option("--reconvert", is_flag=True, help="Convert the model again even if converted before.")
@click.option("--fast", is_flag=True, help="Run unpaced (as fast as possible) instead of in real time.")
def demo(workdir: Path, model: Path | None, data_dir: Path | None, rerender: bool, reconvert: bool, fast: bool) -> None:
    """The whole chain on demo media (no reference data needed): convert the teacher, then `edgemm run`.

    Renders a video of handwritten digits and a WAV of the same digits spoken, shows what the float
    teacher decides, converts it to int8 (TFLite + ONNX), and runs the int8 TFLite on the video and WAV
    in real time through `edgemm run`, printing decisions and latency statistics.
    """
    _require_keras()
    from examples.av_digits.demo import run_demo

    run_demo(workdir, model, data_dir, rerender=rerender, reconvert=reconvert, fast=fast, echo=click.echo)
