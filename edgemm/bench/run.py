"""Benchmark matrix: artifacts x backends x threads, accuracy beside latency, environment recorded.

Report JSON schema (version 1), written by `edgemm bench --report OUT` as OUT/report.json:
  schema_version: 1
  created: ISO time (UTC)
  environment: {cpu, cores, governor, platform, python, libraries: {name: version}}
  settings: {runs, warmup, duration_s, threads, backends, baseline}
  results: [ {id: "model/artifact/backend/tN", model, artifact, format, precision, size_bytes, sha256,
              backend, threads, init_ms, first_inference_ms, warmup{...}, latency_ms{count, mean, std,
              min, p50, p90, p99, max}, latencies_ms[...], throughput_per_s, peak_rss_mb, accuracy|null,
              ratio_p50_vs_baseline} ]
  pipeline: [ {model, backend, media, summary (the edgemm run summary: stages_ms, counters, ...)} ]
Latencies are milliseconds of one backend.run() (inputs set, invoke, outputs read), batch 1.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgemm import cpu_features
from edgemm.errors import InputError
from edgemm.manifest import check_inputs, load_manifest

SCHEMA_VERSION = 1
FORMAT_BACKENDS = {"tflite": ("litert",), "onnx": ("ort-cpu", "ort-cuda", "ort-tensorrt")}
LIBRARIES = ("numpy", "ai-edge-litert", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless", "edgemm")


def environment() -> dict:
    governor = None
    try:
        governor = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        pass
    libraries = {}
    for name in LIBRARIES:
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu_features.cpu_model(), "cores": os.cpu_count(), "governor": governor,
            "int8_dot_product": cpu_features.has_int8_dot_product(), "platform": platform.platform(),
            "python": platform.python_version(), "libraries": libraries}


def _sample_inputs(manifest, data_dir) -> tuple[dict[str, np.ndarray], object]:
    """One real AV-digits test sample when the data is there (else seeded noise), and the test split."""
    artifact = next(iter(manifest.artifacts.values()))
    shapes = {t["name"]: tuple(t["shape"]) for t in artifact.inputs}
    spec = manifest.preprocess
    test = None
    if spec is not None and set(shapes) == {"image", "audio"}:
        from edgemm.datasets import avdigits
        from edgemm.errors import DataError

        try:
            test = avdigits.make_split(avdigits.resolve_data_dir(data_dir), "test", spec)
        except DataError:
            test = None
    if test is not None:
        return {k: v[:1] for k, v in test.inputs().items()}, test
    rng = np.random.default_rng(0)
    return {name: rng.normal(size=(1, *shape[1:])).astype(np.float32) for name, shape in shapes.items()}, None


def _run_worker(job: dict, timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgemm-bench-") as tmp:
        job = dict(job, result=str(Path(tmp) / "result.json"))
        (Path(tmp) / "job.json").write_text(json.dumps(job))
        proc = subprocess.run([sys.executable, "-m", "edgemm.bench.worker", str(Path(tmp) / "job.json")],
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            from edgemm.backends.isolated import child_failure

            return {"error": child_failure(proc)}
        return json.loads((Path(tmp) / "result.json").read_text())


def run_bench(model_dirs: list[Path], backends: tuple[str, ...] = ("litert", "ort-cpu"), threads: tuple[int, ...] = (1, 2),
              runs: int = 200, warmup: int = 20, duration: float = 2.0, artifacts: tuple[str, ...] | None = None,
              data_dir: Path | None = None, pipeline_media: tuple[Path, Path] | None = None,
              baseline: str | None = None, log: Callable[[str], None] = print) -> dict:
    from edgemm.backends.isolated import run_isolated

    results, pipeline = [], []
    for model_dir in model_dirs:
        manifest = load_manifest(model_dir)
        name = Path(model_dir).resolve().name
        sample, test = _sample_inputs(manifest, data_dir)
        with tempfile.TemporaryDirectory(prefix="edgemm-bench-in-") as tmp:
            inputs_path = Path(tmp) / "inputs.npz"
            np.savez(inputs_path, **sample)
            for key, art in manifest.artifacts.items():
                if artifacts and key not in artifacts:
                    continue
                path = manifest.artifact_path(key)  # sha256 checked
                accuracy = None
                if test is not None:
                    log(f"accuracy of {name}/{key} on {len(test)} AV-digits test samples")
                    kind = "litert" if art.format == "tflite" else "onnxruntime"
                    outputs, info = run_isolated(kind, path, test.inputs())
                    check_inputs(art.inputs, info["inputs"], path)
                    accuracy = round(float(np.mean(next(iter(outputs.values())).reshape(len(test), -1).argmax(1)
                                                   == test.label)), 4)
                for backend in FORMAT_BACKENDS[art.format]:
                    if backend not in backends:
                        continue
                    for n in threads:
                        config_id = f"{name}/{key}/{backend}/t{n}"
                        log(f"benchmarking {config_id}: {warmup} warm-up, {runs} runs, {duration:g} s throughput")
                        options = {}
                        if backend == "ort-cuda":
                            options = {"providers": ["CUDAExecutionProvider"]}
                        elif backend == "ort-tensorrt":
                            options = {"providers": [["TensorrtExecutionProvider", {
                                "trt_int8_enable": art.precision in ("int8", "mixed"), "trt_fp16_enable": True,
                                "trt_engine_cache_enable": True,
                                "trt_engine_cache_path": str(Path(model_dir) / "trt_cache")}]]}
                        measured = _run_worker({"backend": backend, "path": str(path), "threads": n, "options": options,
                                                "inputs": str(inputs_path), "runs": runs, "warmup": warmup,
                                                "duration": duration}, timeout=600 + duration)
                        if "error" in measured:
                            log(f"  skipped: {measured['error']}")
                        else:
                            check_inputs(art.inputs, measured.pop("inputs"), path)
                        results.append({"id": config_id, "model": name, "artifact": key, "format": art.format,
                                        "precision": art.precision, "size_bytes": art.size_bytes, "sha256": art.sha256,
                                        "backend": backend, "threads": n, "accuracy": accuracy, **measured})
        if pipeline_media is not None and manifest.preprocess is not None:
            from edgemm.runtime import session

            video, wav = pipeline_media
            log(f"pipeline: edgemm run on {video.name} + {wav.name}, unpaced, {name}")
            summary = session.run_session(manifest, camera=str(video), mic=str(wav), backend="litert", unpaced=True,
                                          emit=lambda s: None, note=lambda s: None)
            pipeline.append({"model": name, "backend": summary["backend"], "media": [str(video), str(wav)],
                             "summary": summary})
    ok = [r for r in results if "latency_ms" in r]
    if not ok:
        raise InputError("no configuration could be benchmarked (see the messages above)")
    base = next((r for r in ok if r["id"] == baseline), None) if baseline else ok[0]
    if baseline and base is None:
        raise InputError(f"--baseline {baseline!r} is not one of: {', '.join(r['id'] for r in ok)}")
    for r in ok:
        r["ratio_p50_vs_baseline"] = round(r["latency_ms"]["p50"] / base["latency_ms"]["p50"], 3)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(),
        "settings": {"runs": runs, "warmup": warmup, "duration_s": duration, "threads": list(threads),
                     "backends": list(backends), "baseline": base["id"]},
        "results": results,
        "pipeline": pipeline,
    }


def compare(old: dict, new: dict, tolerance: float = 0.10, accuracy_points: float = 0.5) -> list[dict]:
    """Configurations of `new` slower than in `old` by more than `tolerance` (median), or less accurate."""
    for report, which in ((old, "old"), (new, "new")):
        if report.get("schema_version") != SCHEMA_VERSION:
            raise InputError(f"{which} report: schema_version {report.get('schema_version')!r} is not {SCHEMA_VERSION}")
    before = {r["id"]: r for r in old["results"] if "latency_ms" in r}
    findings = []
    for r in new["results"]:
        o = before.get(r["id"])
        if o is None or "latency_ms" not in r:
            continue
        ratio = r["latency_ms"]["p50"] / o["latency_ms"]["p50"]
        row = {"id": r["id"], "old_p50_ms": o["latency_ms"]["p50"], "new_p50_ms": r["latency_ms"]["p50"],
               "ratio": round(ratio, 3), "regression": ratio > 1.0 + tolerance}
        if r.get("accuracy") is not None and o.get("accuracy") is not None:
            row["accuracy_change_points"] = round(100 * (r["accuracy"] - o["accuracy"]), 2)
            row["regression"] = row["regression"] or row["accuracy_change_points"] < -accuracy_points
        findings.append(row)
    return findings
