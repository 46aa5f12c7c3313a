"""An independent bare inference loop, for comparison with `edgemm bench` (no edgemm code inside).

    .venv/bin/python benchmarks/bare_loop.py MODEL.tflite|MODEL.onnx [--threads 1] [--runs 300] [--warmup 20]

LiteRT: set the (already quantized) inputs, invoke, read the output. ONNX Runtime: session.run on
prepared inputs. Prints one JSON object with the median and p90 in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def litert_loop(path: str, threads: int, runs: int, warmup: int) -> list[float]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads)
    interp.allocate_tensors()
    rng = np.random.default_rng(0)
    inputs = []
    for d in interp.get_input_details():
        info = np.iinfo(d["dtype"]) if np.issubdtype(d["dtype"], np.integer) else None
        value = (rng.integers(info.min, info.max, d["shape"]) if info else rng.normal(size=d["shape"])).astype(d["dtype"])
        inputs.append((d["index"], value))
    out = interp.get_output_details()[0]["index"]
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        for index, value in inputs:
            interp.set_tensor(index, value)
        interp.invoke()
        interp.get_tensor(out)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def ort_loop(path: str, threads: int, runs: int, warmup: int) -> list[float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.normal(size=[1 if not isinstance(d, int) else d for d in i.shape]).astype(np.float32)
             for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    times = []
    for i in range(warmup + runs):
        t0 = time.perf_counter()
        session.run(names, feeds)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    loop = litert_loop if args.path.endswith(".tflite") else ort_loop
    times = np.array(loop(args.path, args.threads, args.runs, args.warmup)) * 1e3
    print(json.dumps({"p50_ms": round(float(np.median(times)), 4), "p90_ms": round(float(np.percentile(times, 90)), 4),
                      "count": int(times.size)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
