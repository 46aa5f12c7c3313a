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
  layers: {model: [ {tensor, node, op_type, sqnr_db, local_sqnr_db} ]}  the int8 ONNX layers that add the most
          quantization error, from the model directory's convert report (report.json), when it has them
Latencies are milliseconds of one backend.run() (inputs set, invoke, outputs read), batch 1.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgemm import cpu_features
from edgemm.backends import registry
from edgemm.errors import InputError
from edgemm.layout import to_artifact, to_source
from edgemm.samples import read_npz
from edgemm.manifest import check_inputs, load_manifest

SCHEMA_VERSION = 1
LIBRARIES = ("numpy", "ai-edge-litert", "onnxruntime", "onnxruntime-gpu", "opencv-python-headless", "edgemm")


def _usable_cores() -> int:
    """The cores this process may run on (taskset, cgroup cpusets), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def environment(device: str | None = None) -> dict:
    """Where a report was measured; `device` names the machine in merged reports [default: host name]."""
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
    return {"device": device or socket.gethostname(), "cpu": cpu_features.cpu_model(), "cores": _usable_cores(),
            "governor": governor,
            "int8_dot_product": cpu_features.has_int8_dot_product(), "platform": platform.platform(),
            "python": platform.python_version(), "libraries": libraries}


def load_val(path: Path, input_names: set[str]) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """A validation .npz: one array per model input (first axis = samples) and an optional 'label'."""
    arrays, labels = read_npz(path, "validation")
    if set(arrays) != input_names:
        raise InputError(f"{path}: arrays {sorted(arrays)} do not match the model inputs {sorted(input_names)}")
    counts = {len(a) for a in arrays.values()} | ({len(labels)} if labels is not None else set())
    if len(counts) != 1 or 0 in counts:
        raise InputError(f"{path}: every array needs the same, non-zero number of samples (got {sorted(counts)})")
    arrays = {k: np.ascontiguousarray(v, np.float32) if np.issubdtype(v.dtype, np.floating) else v
              for k, v in arrays.items()}
    return arrays, labels


def _sample_inputs(artifact, val_inputs: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """The timing input: the first validation sample (in the artifact's layout), else seeded random inputs of
    the artifact's shapes and dtypes."""
    if val_inputs is not None:
        return {k: v[:1] for k, v in val_inputs.items()}
    rng = np.random.default_rng(0)
    sample = {}
    for t in artifact.inputs:  # one sample (first axis = samples) of the model's whole shape, dynamic dims 1:
        # the worker feeds it as the model declares it, batch axis or none (a state input such as 2x1x128)
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in t["shape"])
        dtype = np.dtype(t.get("dtype") or "float32")
        if np.issubdtype(dtype, np.integer) and not t.get("scale"):  # ids, indices: not quantized floats
            sample[t["name"]] = rng.integers(0, 2, size=(1, *shape)).astype(dtype)
        else:  # float inputs, and quantized ones (the backend quantizes float feeds)
            sample[t["name"]] = rng.normal(size=(1, *shape)).astype(np.float32)
    return sample


def _accuracy(manifest, art, path: Path, val_inputs: dict, labels: np.ndarray) -> float | None:
    """Top-1 accuracy of the first classify head (the spec's; a model without a spec: its only output)."""
    from edgemm.backends.isolated import run_isolated

    outputs, info = run_isolated("litert" if art.format == "tflite" else "ort-cpu", path,
                                 to_artifact(val_inputs, manifest.perms(art.name)))
    outputs = to_source(outputs, manifest.perms(art.name, "outputs"))
    check_inputs(art.inputs, info["inputs"], path)
    heads = manifest.spec.outputs if manifest.spec is not None else {}
    name = next((n for n, o in heads.items() if o.head == "classify"), None)
    if name is None and len(outputs) == 1 and not heads:
        name = next(iter(outputs))
    if name is None or name not in outputs:
        return None
    return round(float(np.mean(outputs[name].reshape(len(labels), -1).argmax(1) == labels)), 4)


def _pipeline(manifest, name: str, media: tuple[Path, Path], backends: tuple[str, ...], log) -> list[dict]:
    """The edgemm run loop over recorded media (unpaced), once per CPU runtime asked for: per-stage timings."""
    from edgemm.runtime import session

    if manifest.spec is None:
        log(f"pipeline: skipped for {name} (its manifest has no model spec)")
        return []
    video, wav = media
    rows = []
    for backend in [b for b in ("litert", "ort-cpu") if b in backends]:
        log(f"pipeline: edgemm run on {video.name} + {wav.name}, unpaced, {name}, {backend}")
        summary = session.run_session(manifest, camera=str(video), mic=str(wav), backend=backend, unpaced=True,
                                      emit=lambda s: None, note=lambda s: None)
        rows.append({"model": name, "backend": summary["backend"], "media": [str(video), str(wav)],
                     "summary": summary})
    return rows


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


def _count_configurations(model_dirs, backends, threads, artifacts) -> int:
    """How many configurations run_bench will measure (for its progress bar)."""
    count = 0
    for model_dir in model_dirs:
        for key, art in load_manifest(model_dir).artifacts.items():
            if not artifacts or key in artifacts:
                count += len([b for b in registry.for_format(art.format) if b in backends]) * len(threads)
    return count


def run_bench(model_dirs: list[Path], backends: tuple[str, ...] = ("litert", "ort-cpu"), threads: tuple[int, ...] = (1, 2),
              runs: int = 200, warmup: int = 20, duration: float = 2.0, artifacts: tuple[str, ...] | None = None,
              val: Path | None = None, pipeline_media: tuple[Path, Path] | None = None,
              baseline: str | None = None, log: Callable[[str], None] = print,
              progress: Callable[[str, int, int], None] | None = None, device: str | None = None) -> dict:
    results, pipeline, layers = [], [], {}
    planned = _count_configurations(model_dirs, backends, threads, artifacts)
    for model_dir in model_dirs:
        manifest = load_manifest(model_dir)
        name = Path(model_dir).resolve().name
        if _convert_layers(model_dir):
            layers[name] = _convert_layers(model_dir)
        val_inputs, labels = None, None
        if val is not None:
            val_inputs, labels = load_val(val, {t["name"] for t in next(iter(manifest.artifacts.values())).inputs})
        with tempfile.TemporaryDirectory(prefix="edgemm-bench-in-") as tmp:
            for key, art in manifest.artifacts.items():
                if artifacts and key not in artifacts:
                    continue
                path = manifest.artifact_path(key)  # sha256 checked
                inputs_path = Path(tmp) / f"{key}.npz"
                in_layout = None if val_inputs is None else to_artifact(val_inputs, manifest.perms(key))
                np.savez(inputs_path, **_sample_inputs(art, in_layout))
                accuracy = None
                if labels is not None:
                    log(f"accuracy of {name}/{key} on {len(labels)} samples of {Path(val).name}")
                    accuracy = _accuracy(manifest, art, path, val_inputs, labels)
                for backend in registry.for_format(art.format):
                    if backend not in backends:
                        continue
                    for n in threads:
                        config_id = f"{name}/{key}/{backend}/t{n}"
                        log(f"benchmarking {config_id}: {warmup} warm-up, {runs} runs, {duration:g} s throughput")
                        if progress is not None:
                            progress("configurations measured", len(results), planned)
                        options = {}
                        if backend == "ort-tensorrt":
                            options = {"provider_options": registry.tensorrt_options(
                                art.precision, Path(model_dir) / "trt_cache")}
                        measured = _run_worker({"backend": backend, "path": str(path), "threads": n, "options": options,
                                                "inputs": str(inputs_path), "declared": list(art.inputs), "runs": runs, "warmup": warmup,
                                                "duration": duration}, timeout=600 + duration)
                        if "error" in measured:
                            log(f"  skipped: {measured['error']}")
                        else:
                            check_inputs(art.inputs, measured.pop("inputs"), path)
                        results.append({"id": config_id, "model": name, "artifact": key, "format": art.format,
                                        "precision": art.precision, "size_bytes": art.size_bytes, "sha256": art.sha256,
                                        "backend": backend, "threads": n, "accuracy": accuracy, **measured})
        if progress is not None:
            progress("configurations measured", len(results), planned)
        if pipeline_media is not None:
            pipeline += _pipeline(manifest, name, pipeline_media, backends, log)
    ok = [r for r in results if "latency_ms" in r]
    if not ok:
        first = next((r["error"] for r in results if "error" in r), "nothing matched --artifact/--backend")
        raise InputError(f"no configuration could be benchmarked; the first: {first}")
    base = next((r for r in ok if r["id"] == baseline), None) if baseline else ok[0]
    if baseline and base is None:
        raise InputError(f"--baseline {baseline!r} is not one of: {', '.join(r['id'] for r in ok)}")
    for r in ok:
        r["ratio_p50_vs_baseline"] = round(r["latency_ms"]["p50"] / base["latency_ms"]["p50"], 3)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "environment": environment(device),
        "settings": {"runs": runs, "warmup": warmup, "duration_s": duration, "threads": list(threads),
                     "backends": list(backends), "baseline": base["id"]},
        "results": results,
        "pipeline": pipeline,
        "layers": layers,
    }


def _convert_layers(model_dir: Path, top: int = 10) -> list[dict]:
    """The per-layer quantization error `edgemm convert` measured (worst first), read from the convert report
    beside the manifest: the int8 ONNX layers (own and accumulated SQNR) and the int8 TFLite tensors (own
    SQNR), `top` of each; [] when there is none or the report is unreadable."""
    try:
        artifacts = json.loads((Path(model_dir) / "report.json").read_text())["artifacts"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    rows = []
    try:
        rows += [{"artifact": "int8_onnx", **r} for r in list(artifacts["int8_onnx"]["layers"])[:top]]
    except (KeyError, TypeError):
        pass
    try:
        worst = artifacts["int8_tflite"]["quantization"]["ranges"]["worst"][:top]
        rows += [{"artifact": "int8_tflite", "op_type": "-", "node": w["tensor"], "local_sqnr_db": w["own_sqnr_db"],
                  "sqnr_db": "-"} for w in worst]
    except (KeyError, TypeError):
        pass
    return rows


def compare(old: dict, new: dict, tolerance: float = 0.10, accuracy_points: float = 0.5) -> list[dict]:
    """Configurations of `new` slower than in `old` by more than `tolerance` (median), or less accurate.

    Both reports are checked first (edgemm.bench.report.check_report; load_report has checked them already
    when they come from files): a NaN, zero or negative median, or a NaN accuracy, would compare as "ok".
    """
    from edgemm.bench.report import check_report

    check_report(old, "old report")
    check_report(new, "new report")
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
