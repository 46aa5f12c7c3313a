"""`edgemm bench` on the converted teacher -> benchmarks/reference_report/ and benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_teacher.py [--model DIR] [--runs 300] [--duration 3] [--report DIR] [--no-write]

Float and int8, TFLite (LiteRT) and ONNX (ONNX Runtime CPU), 1 and 2 threads, accuracy on the AV-digits
test set (`python -m examples.av_digits data`'s val.npz; the demo frames without the data), plus the `edgemm run` pipeline over the demo media (unpaced). The report written to
benchmarks/reference_report/ is the committed reference for this machine kind: compare a new run with
`edgemm bench --compare benchmarks/reference_report/report.json NEW/report.json`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from edgemm.bench.report import markdown, write_reports  # noqa: E402
from edgemm.bench.run import run_bench  # noqa: E402
from examples.av_digits import demo_media  # noqa: E402
from examples.av_digits.data import write_data  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_teacher.py"
REFERENCE = ROOT / "benchmarks" / "reference_report"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--report", type=Path, default=REFERENCE)
    parser.add_argument("--no-write", action="store_true", help="leave RESULTS.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgemm-bench-teacher-") as tmp:
        tmp = Path(tmp)
        model = args.model
        media = demo_media.render(tmp / "media")
        files = write_data(tmp / "data", train_epochs=0, media=media, log=lambda s: print(s, file=sys.stderr))
        if model is None:
            model = tmp / "teacher"
            subprocess.run([sys.executable, "-m", "edgemm", "convert", "examples/av_digits/av_digits_teacher.keras",
                            "--out", str(model), "--calib", str(files.calib), "--val", str(files.val)],
                           cwd=ROOT, check=True, capture_output=True)
        report = run_bench([model], runs=args.runs, duration=args.duration, val=files.val,
                           pipeline_media=(media.video, media.audio), log=lambda s: print(s, file=sys.stderr, flush=True))
    for entry in report["pipeline"]:  # the temporary paths mean nothing later
        entry["media"] = [Path(p).name for p in entry["media"]]
    write_reports(report, args.report)
    body = "\n".join([
        "## `edgemm bench` on the converted teacher (reference report for this machine kind)",
        "",
        f"Command: `{COMMAND} --runs {args.runs} --duration {args.duration:g}`; full report (JSON, Markdown, HTML with "
        "plots) in `benchmarks/reference_report/`.",
        "",
        markdown(report).split("\n", 2)[2].strip(),
    ])
    print(body)
    if not args.no_write:
        update_section("bench_teacher", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
