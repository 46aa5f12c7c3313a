"""Reliability figures -> benchmarks/RESULTS.md: bad inputs tried, fuzzing, faults injected and survived.

    .venv/bin/python benchmarks/reliability.py [--no-write] [-k EXPR]

Runs the reliability tests (the bad-input matrix, fuzzing, random and mutated model files, faults
during `edgemm run` against the loopback camera and the virtual microphone) under pytest and counts
what they tried from pytest's JUnit XML (test outcomes, and the `fault` / `injected` / `files`
properties the tests record) and from Hypothesis' statistics (examples per fuzz target).
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from tests.test_bad_inputs import MEMORY_LIMIT  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/reliability.py"
# Hardening tests by the class of fault they cover (issue 14), besides the bad-input matrix.
CLASSES = {"test_output_dir": "output directory as one unit (SIGTERM, racing converts, swap)",
           "test_typed_readers": "typed readers (manifest, reports, profiles, specs, JSON depth)",
           "test_no_hang": "no hang (stalled cameras, FIFOs, stats, metrics server)",
           "test_onnx_hygiene": "ONNX hygiene and bounded-memory reports"}
TESTS = [*(f"tests/{name}.py" for name in CLASSES),
         "tests/test_bad_inputs.py", "tests/test_reliability.py", "tests/test_run.py::test_sigterm_writes_the_summary",
         "tests/test_run.py::test_kill_9_leaves_complete_parseable_lines",
         "tests/test_run.py::test_bad_run_inputs_are_one_line_errors"]


def parse_junit(path: Path) -> list[dict]:
    """One dict per test case: file, name, outcome (passed/failed/skipped) and its recorded properties."""
    cases = []
    for case in ET.parse(path).iter("testcase"):
        outcome = "passed"
        for tag, value in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            if case.find(tag) is not None:
                outcome = value
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        cases.append({"file": case.get("classname", "").split(".")[-1], "name": case.get("name"),
                      "outcome": outcome, "props": props})
    return cases


def parse_hypothesis(text: str) -> dict[str, int]:
    """Passing examples per fuzz target, summed over Hypothesis' phases (--hypothesis-show-statistics)."""
    counts: dict[str, int] = collections.Counter()
    target = None
    for line in text.splitlines():
        header = re.match(r"^\S+::(\w+):$", line.strip())
        if header:
            target = header.group(1)
            continue
        passing = re.search(r"(\d+) passing", line)
        if target and passing:
            counts[target] += int(passing.group(1))
    return dict(counts)


def summarise(cases: list[dict], examples: dict[str, int]) -> str:
    matrix_tests = ("test_bad_input_matrix[", "test_bad_run_inputs_are_one_line_errors[")
    bad = [c for c in cases if c["name"].startswith(matrix_tests)]
    by_command = collections.defaultdict(lambda: [0, 0])
    for c in bad:
        command = c["name"].split("[", 1)[1].split()[0] if c["name"].startswith("test_bad_input_matrix") else "run"
        by_command[command][0] += 1
        by_command[command][1] += c["outcome"] == "passed"
    fuzz = [c for c in cases if c["name"] in examples]
    models = [c for c in cases if "files" in c["props"]]
    faults = [c for c in cases if "fault" in c["props"]]
    injected = sum(int(c["props"].get("injected", 1)) for c in faults)
    survived = sum(int(c["props"].get("injected", 1)) for c in faults if c["outcome"] == "passed")
    lines = [
        "## Reliability: bad inputs, fuzzing, faults",
        "",
        f"Command: `{COMMAND}` (runs the reliability tests under pytest; every count below is read from their "
        "JUnit XML and Hypothesis' statistics).",
        "",
        f"* **Bad inputs tried: {len(bad)}**, handled as documented (one-line error, documented exit code, no "
        f"traceback, earlier stats/artifacts/manifest byte-for-byte intact): "
        f"**{sum(c['outcome'] == 'passed' for c in bad)}**. "
        "By command: " + ", ".join(f"{cmd} {ok}/{n}" for cmd, (n, ok) in sorted(by_command.items())) + ".",
        f"* **Fuzzing (Hypothesis): {len(fuzz)} targets, {sum(examples.get(c['name'], 0) for c in fuzz)} generated "
        f"examples**, targets passing: {sum(c['outcome'] == 'passed' for c in fuzz)}/{len(fuzz)}: "
        + ", ".join(f"{c['name'].removeprefix('test_')} {examples.get(c['name'], 0)}" for c in fuzz) + ".",
        f"* **Random and mutated model files: {sum(int(c['props']['files']) for c in models)}** "
        f"({len(models)} kinds), none crashed the caller: "
        f"{sum(int(c['props']['files']) for c in models if c['outcome'] == 'passed')} handled.",
        f"* **Faults injected during `edgemm run`: {injected}, survived: {survived}** (counted, the run went on or "
        "stopped as its policy says, the summary and stats written):",
        "",
        "| fault | injected | result |",
        "|---|---|---|",
    ]
    for c in faults:
        lines.append(f"| {c['props']['fault']} | {c['props'].get('injected', 1)} | {c['outcome']} |")
    lines += ["", "| hardening tests | tests | passed |", "|---|---|---|"]
    for name, title in CLASSES.items():
        mine = [c for c in cases if c["file"] == name]
        lines.append(f"| {title} | {len(mine)} | {sum(c['outcome'] == 'passed' for c in mine)} |")
    limited = [c for c in bad if c["props"].get("limited")]
    lines += ["", f"Bad-input rows run under a {MEMORY_LIMIT >> 30} GiB address-space limit (hostile sizes): "
              f"{len(limited)}, passed {sum(c['outcome'] == 'passed' for c in limited)}."]
    skipped = [c["name"] for c in cases if c["outcome"] == "skipped"]
    if skipped:
        lines += ["", f"Skipped here (missing tools): {', '.join(skipped)}"]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("-k", dest="select", help="pytest -k expression (a short run)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgemm-reliability-") as tmp:
        junit = Path(tmp) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}",
                   "--hypothesis-show-statistics", *TESTS] + (["-k", args.select] if args.select else [])
        proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        if not junit.exists():
            print(proc.stdout[-3000:] + proc.stderr[-3000:], file=sys.stderr)
            return 1
        cases = parse_junit(junit)
    body = summarise(cases, parse_hypothesis(proc.stdout))
    print(body)
    if not args.no_write:
        update_section("reliability", body)
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
