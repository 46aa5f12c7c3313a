"""Accuracy and size of the shipped AV-digits teacher -> benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/reference_teacher.py [--data-dir DIR] [--no-write]

Re-measures image-only, audio-only and fused test accuracy with `python -m examples.av_digits eval`'s code and
reports them beside the figures recorded at training time (incl. the one-modality baselines).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_md import update_section  # noqa: E402
from converters.model_stats import count_macs  # noqa: E402
from examples.av_digits import teacher_files  # noqa: E402
from examples.av_digits.report import evaluate_on_test_set  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/reference_teacher.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    measured = evaluate_on_test_set(None, args.data_dir)
    _, sidecar = teacher_files.load_sidecar(teacher_files.TEACHER_MODEL)
    recorded = sidecar["metrics"]
    macs = count_macs(teacher_files.load_teacher())
    pct = lambda v: f"{100 * v:.2f} %"  # noqa: E731
    rows = [
        ("fused (the teacher)", pct(measured["fused_accuracy"])),
        ("teacher, image only (audio = silence)", pct(measured["image_only_accuracy"])),
        ("teacher, audio only (image = blank paper)", pct(measured["audio_only_accuracy"])),
    ]
    if "image_baseline_accuracy" in recorded:
        rows += [
            ("image-only model, same branch + head, same epochs *", pct(recorded["image_baseline_accuracy"])),
            ("audio-only model, same branch + head, same epochs *", pct(recorded["audio_baseline_accuracy"])),
        ]
    lines = [
        "## Reference teacher (AV-digits)",
        "",
        f"Command: `{COMMAND}` (accuracies re-measured by `python -m examples.av_digits eval`; rows marked * were",
        "measured at training time by `python -m examples.av_digits train --out examples/av_digits --baselines`).",
        "",
        f"Test set: {measured['test_samples']} pairs (300 FSDD clips of takes 0-4 x 3 MNIST images each), seeded corruption.",
        "",
        "| model | test accuracy |",
        "|---|---|",
        *[f"| {name} | {value} |" for name, value in rows],
        "",
        f"* fusion gain over the best single-modality row: **{measured['fusion_gain_points']:+.2f} points** "
        "(the example's `eval` gate requires >= 3)",
    ]
    lines += [
        f"* parameters: {measured['parameters']:,}; multiply-accumulates per inference: {macs / 1e6:.2f} M; "
        f"file: {teacher_files.TEACHER_MODEL.stat().st_size / 1024:.0f} KiB",
        f"* training: {sidecar['training']['epochs']} epochs, {recorded.get('train_seconds', '?')} s on this machine "
        f"(incl. baselines: {sidecar['training'].get('baselines')}); python {platform.python_version()}, "
        f"{platform.machine()}",
    ]
    body = "\n".join(lines)
    print(body)
    print(json.dumps({k: v for k, v in measured.items() if k != "table"}))
    if not args.no_write:
        update_section("reference_teacher", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
