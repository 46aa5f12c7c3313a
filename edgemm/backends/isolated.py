"""Runs a model in a separate Python process, one sample at a time.

Used by the converter's validation: the artifact is executed by the same
backend class as on the device, in a process that has not imported TensorFlow
(TF and LiteRT in one process is a known source of aborts), and a model file
that crashes its runtime cannot take the caller down with it.

    python -m edgemm.backends.isolated JOB.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgemm import logs
from edgemm.errors import InputError
from edgemm.samples import model_ranks, sample


def child_failure(proc: subprocess.CompletedProcess) -> str:
    """Why a child process failed, in one line: the signal that killed it, or its last stderr line."""
    if proc.returncode < 0:
        return f"the runtime crashed (signal {-proc.returncode})"
    lines = [ln for ln in (proc.stderr or "").strip().splitlines() if ln.strip()]
    return lines[-1].removeprefix("Error: ") if lines else f"exit status {proc.returncode}"


def run_isolated(
    kind: str, path, inputs: dict[str, np.ndarray], options: dict | None = None, timeout: float = 600.0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, np.ndarray], dict]:
    """Runs every sample of `inputs` (arrays keyed by input name, first axis = sample).

    `kind` is a backend name of edgemm.backends.registry (litert, ort-cpu, ...).

    Returns:
        (outputs keyed by output name, each stacked over samples; info with the backend's
        name, input/output tensor descriptions and the median invoke time in ms).
    progress: called with (samples done, samples) as the child reports them.
    """
    with tempfile.TemporaryDirectory(prefix="edgemm-run-") as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "inputs.npz", **inputs)
        job = {"kind": kind, "path": os.fspath(Path(path).resolve()), "options": options or {},
               "inputs": str(tmp / "inputs.npz"), "outputs": str(tmp / "outputs.npz"), "info": str(tmp / "info.json")}
        (tmp / "job.json").write_text(json.dumps(job))
        env = logs.quiet_env(dict(os.environ))
        proc = _run_reporting([sys.executable, "-m", "edgemm.backends.isolated", str(tmp / "job.json")],
                              env, timeout, progress, tmp / "stderr.txt")
        if proc.returncode != 0:
            raise InputError(f"{path}: running it in {kind} failed: {child_failure(proc)}")
        with np.load(tmp / "outputs.npz") as data:
            outputs = {k: data[k] for k in data.files}
        info = json.loads((tmp / "info.json").read_text())
    return outputs, info


def _run_reporting(args: list[str], env: dict, timeout: float, progress, stderr_path: Path):
    """Runs the child, passing each "done total" line it prints to `progress`; stderr is kept in a file (a
    pipe could fill up while stdout is read). Returns a CompletedProcess with that stderr."""
    deadline = time.monotonic() + timeout
    with open(stderr_path, "w+") as stderr:
        with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env) as proc:
            timer = threading.Timer(timeout, proc.kill)  # readline() below cannot time out by itself
            timer.start()
            try:
                for line in proc.stdout:
                    counts = line.split()
                    if progress is not None and len(counts) == 2 and all(map(str.isdecimal, counts)):
                        progress(int(counts[0]), int(counts[1]))
                code = proc.wait()
            finally:
                timer.cancel()
        if time.monotonic() >= deadline and code < 0:
            raise subprocess.TimeoutExpired(args, timeout)
        stderr.seek(0)
        return subprocess.CompletedProcess(args, code, "", stderr.read())


def describe_tflite(path, timeout: float = 120.0) -> list[dict]:
    """The ops of a .tflite model in execution order, with their tensors (read by LiteRT in a child process)."""
    with tempfile.TemporaryDirectory(prefix="edgemm-describe-") as tmp:
        job = {"kind": "describe_tflite", "path": os.fspath(Path(path).resolve()), "info": str(Path(tmp) / "ops.json")}
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        proc = subprocess.run([sys.executable, "-m", "edgemm.backends.isolated", str(Path(tmp) / "job.json")],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise InputError(f"{path}: cannot read its ops: {child_failure(proc)}")
        return json.loads((Path(tmp) / "ops.json").read_text())


def _describe(job: dict) -> None:
    from edgemm.backends import require

    interpreter_mod = require("ai_edge_litert.interpreter", "pip install ai-edge-litert")
    try:
        interp = interpreter_mod.Interpreter(model_path=job["path"])
    except (ValueError, RuntimeError) as e:
        raise InputError(f"{job['path']}: LiteRT cannot load this model ({str(e).splitlines()[0]})") from None
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # public API has no op list; this one is stable since TF 2.5
    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = {d["index"] for d in interp.get_input_details()}

    def tensor(i: int) -> dict:
        t = tensors[int(i)]
        shape = t.get("shape_signature", t["shape"])
        return {"dtype": np.dtype(t["dtype"]).name, "shape": [int(d) for d in shape],
                "constant": int(i) not in produced and int(i) not in graph_inputs}

    described = [{"index": int(op["index"]), "name": op["op_name"],
                  "inputs": [tensor(i) for i in op["inputs"] if int(i) >= 0],
                  "outputs": [tensor(i) for i in op["outputs"]]} for op in ops]
    Path(job["info"]).write_text(json.dumps(described))


def _main(job_path: str) -> int:
    from edgemm.backends.registry import open_backend
    from edgemm.errors import EdgemmError

    job = json.loads(Path(job_path).read_text())
    if job["kind"] == "describe_tflite":
        try:
            _describe(job)
        except EdgemmError as e:
            print(f"Error: {e}", file=sys.stderr)
            return 3
        return 0
    try:
        backend = open_backend(job["kind"], job["path"], **job["options"])
        with np.load(job["inputs"]) as data:
            inputs = {k: data[k] for k in data.files}
        count = len(next(iter(inputs.values())))
        results: dict[str, list] = {}
        times = []
        for i in range(count):
            feeds = sample(inputs, i, model_ranks(backend.inputs))
            start = time.perf_counter()
            try:
                out = backend.run(feeds)
            except RuntimeError as e:  # the runtime refused an op on this sample (LiteRT's InvokeError, ORT's Fail)
                print(f"Error: sample {i}: {' '.join(str(e).split())}", file=sys.stderr)
                return 3
            times.append(time.perf_counter() - start)
            for name, value in out.items():
                results.setdefault(name, []).append(value.reshape(value.shape[1:]) if value.shape[:1] == (1,) else value)
            print(i + 1, count, flush=True)  # progress, read by run_isolated
    except EdgemmError as e:
        print(f"Error: {e}", file=sys.stderr)
        return 3
    np.savez(job["outputs"], **{k: np.stack(v) for k, v in results.items()})
    info = {
        "backend": backend.name,
        "inputs": [t.to_dict() for t in backend.inputs],
        "outputs": [t.to_dict() for t in backend.outputs],
        "median_ms": round(float(np.median(times)) * 1e3, 4) if times else None,
    }
    Path(job["info"]).write_text(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
