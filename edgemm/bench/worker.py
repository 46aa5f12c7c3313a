"""One benchmark configuration (artifact x backend x threads) in a fresh process.

A fresh process per configuration gives each its own init time and peak RSS, and keeps a
crashing runtime away from the caller.     python -m edgemm.bench.worker JOB.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np


def measure(job: dict) -> dict:
    from edgemm.backends.registry import open_backend
    from edgemm.runtime.stats import describe, peak_rss_mb
    from edgemm.samples import model_ranks, sample

    threads = int(job["threads"]) if job.get("threads") else None
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    backend = open_backend(job["backend"], job["path"], threads, **(job.get("options") or {}))
    if job.get("declared") is not None:  # the manifest's inputs, before feeding what it declares
        from edgemm.manifest import check_inputs

        check_inputs(job["declared"], [t.to_dict() for t in backend.inputs], job["path"])
    init_ms = (time.perf_counter() - t0) * 1e3
    with np.load(job["inputs"]) as data:
        feeds = sample({k: data[k] for k in data.files}, 0, model_ranks(backend.inputs))
    t0 = time.perf_counter()
    backend.run(feeds)
    first_ms = (time.perf_counter() - t0) * 1e3
    warm = []
    for _ in range(int(job["warmup"])):
        t0 = time.perf_counter()
        backend.run(feeds)
        warm.append((time.perf_counter() - t0) * 1e3)
    runs = []
    for _ in range(int(job["runs"])):
        t0 = time.perf_counter()
        backend.run(feeds)
        runs.append((time.perf_counter() - t0) * 1e3)
    count, start = 0, time.perf_counter()
    deadline = start + float(job["duration"])
    while time.perf_counter() < deadline:
        backend.run(feeds)
        count += 1
    elapsed = time.perf_counter() - start
    return {
        "backend": backend.name, "init_ms": round(init_ms, 3), "first_inference_ms": round(first_ms, 4),
        "warmup": describe(warm), "latency_ms": describe(runs), "latencies_ms": [round(x, 4) for x in runs],
        "throughput_per_s": round(count / elapsed, 2) if elapsed > 0 else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "rss_before_model_mb": round(rss_before, 1),
        "inputs": [t.to_dict() for t in backend.inputs],  # checked against the manifest by the caller
    }


def main(job_path: str) -> int:
    from edgemm.errors import EdgemmError

    job = json.loads(Path(job_path).read_text())
    try:
        result = measure(job)
    except EdgemmError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 3
    Path(job["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
