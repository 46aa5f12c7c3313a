"""Median single-inference latency of .tflite files in LiteRT, measured side by side (interleaved rounds).

    .venv/bin/python benchmarks/litert_latency.py A.tflite B.tflite [--threads 1] [--rounds 20] [--runs 50]

Prints one JSON object: per file, the median and p90 of `invoke()` in ms over rounds x runs calls.
Files are alternated round by round so that machine noise hits all of them alike. Runs without TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgemm.backends.litert import LiteRTBackend  # noqa: E402


def measure(paths: list[Path], threads: int, rounds: int, runs: int, warmup: int = 20) -> dict:
    rng = np.random.default_rng(0)
    models = []
    for path in paths:
        backend = LiteRTBackend(path, threads=threads)
        feeds = {t.name: rng.normal(size=t.shape).astype(np.float32) for t in backend.inputs}
        for _ in range(warmup):
            backend.run(feeds)
        models.append((path, backend, feeds, []))
    for _ in range(rounds):
        for _, backend, feeds, times in models:
            for _ in range(runs):
                start = time.perf_counter()
                backend._interp.invoke()  # the kernel alone, as benchmark_model measures it
                times.append(time.perf_counter() - start)
    return {str(p): {"median_ms": round(1e3 * float(np.median(t)), 4), "p90_ms": round(1e3 * float(np.percentile(t, 90)), 4),
                     "count": len(t), "threads": threads} for p, _, _, t in models}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(measure(args.paths, args.threads, args.rounds, args.runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
