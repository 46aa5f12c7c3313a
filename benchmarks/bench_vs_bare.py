"""`edgemm bench` medians vs an independent bare loop, measured alternately in one run -> benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/bench_vs_bare.py MODEL_DIR [--rounds 3] [--runs 300] [--val F.npz] [--no-write]

For each artifact (LiteRT for .tflite, ONNX Runtime CPU for .onnx, 1 thread): `rounds` times, the
edgemm bench worker (backend.run: quantize, set, invoke, read, dequantize) and then
benchmarks/bare_loop.py (no edgemm code), each in its own process; the medians of the per-round
medians are compared. Both time the same input: the first sample of --val, as `edgemm bench` does, else
seeded random inputs of the model's shapes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from edgemm.bench.run import _run_worker, _sample_inputs, load_val  # noqa: E402
from edgemm.manifest import load_manifest  # noqa: E402
from edgemm.layout import to_artifact  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bench_vs_bare.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--val", type=Path, default=None, help="validation .npz; its first sample is timed")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    manifest = load_manifest(args.model_dir)
    val_inputs = None
    if args.val is not None:
        val_inputs, _ = load_val(args.val, {t["name"] for t in next(iter(manifest.artifacts.values())).inputs})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for key, art in manifest.artifacts.items():
            path = manifest.artifact_path(key)
            inputs = Path(tmp) / f"{key}.npz"  # the timed sample, in this artifact's layout
            in_layout = None if val_inputs is None else to_artifact(val_inputs, manifest.perms(key))
            np.savez(inputs, **_sample_inputs(art, in_layout))
            backend = "litert" if art.format == "tflite" else "ort-cpu"
            edge, bare = [], []
            for _ in range(args.rounds):
                r = _run_worker({"backend": backend, "path": str(path), "threads": 1, "options": {},
                                 "inputs": str(inputs), "runs": args.runs, "warmup": 20, "duration": 0.0}, 600)
                edge.append(r["latency_ms"]["p50"])
                out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bare_loop.py"), str(path), "--threads", "1",
                                      "--runs", str(args.runs)], capture_output=True, text=True, check=True)
                bare.append(json.loads(out.stdout.strip().splitlines()[-1])["p50_ms"])
            rows.append((key, backend, float(np.median(edge)), float(np.median(bare))))
    lines = [
        "## `edgemm bench` vs an independent bare loop",
        "",
        f"Command: `{COMMAND} MODEL_DIR --rounds {args.rounds} --runs {args.runs}` on the shipped teacher converted by "
        "`edgemm convert`. 1 thread; edgemm's worker and `benchmarks/bare_loop.py` alternate, each in its own process.",
        "",
        "| artifact | backend | edgemm bench p50 | bare loop p50 | ratio |",
        "|---|---|---|---|---|",
        *[f"| {k} | {b} | {e:.4f} ms | {r:.4f} ms | {e / r:.3f} |" for k, b, e, r in rows],
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        update_section("bench_vs_bare", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
