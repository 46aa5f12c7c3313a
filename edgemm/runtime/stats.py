"""Latency statistics: one JSON line per inference, a summary, and a Prometheus text endpoint.

Stages (milliseconds unless named otherwise):
  frame_age      camera capture -> the loop took the frame
  audio_age      end of the paired audio window -> the loop took the frame
  pairing_error  audio window end - frame capture time (signed; hop grid and late audio)
  image_pre      image preprocessing (live sources: done by the capture thread, off the loop)
  audio_wait     waiting for the microphone to deliver audio up to the frame's capture time
  audio_features log-mel of the new hops (incremental), wait excluded
  inference      the backend's run (set inputs, invoke, read outputs)
  invoke         the interpreter's invoke alone, where the backend can tell
  postprocess    softmax, smoothing, top-k, decision
  loop           one whole iteration, frame taken -> decision (audio wait included)
  outside_invoke the loop's own work: loop - invoke - audio wait
  sensor_to_decision  frame capture -> decision ready
"""

from __future__ import annotations

import json
import math
import os
import resource
import threading
from array import array
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from edgemm.atomic import check_output_dir
from edgemm.errors import InputError

STAGES = ("frame_age", "audio_age", "pairing_error", "image_pre", "audio_wait", "audio_features", "inference",
          "invoke", "postprocess", "loop", "outside_invoke", "sensor_to_decision")
WARMUP = 1  # the first inference is reported apart from the steady state


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM; ru_maxrss would include the parent's before exec)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kilobytes


def describe(values) -> dict:
    """count, mean, std, min, p50, p90, p99, max of a sequence (empty -> count 0)."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return {"count": 0}
    p50, p90, p99 = np.percentile(x, [50, 90, 99])
    return {"count": int(x.size), "mean": round(float(x.mean()), 4), "std": round(float(x.std()), 4),
            "min": round(float(x.min()), 4), "p50": round(float(p50), 4), "p90": round(float(p90), 4),
            "p99": round(float(p99), 4), "max": round(float(x.max()), 4)}


def check_stats_path(path: Path, flag: str = "--stats") -> None:
    """Says in one line why `path` cannot take appended JSON lines (before anything starts)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a directory; give a file (records are appended to it)")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path}: not writable")
    check_output_dir(path.parent, flag)


class StatsRecorder:
    """Appends each per-inference record to a JSON-lines file (flushed) and keeps, for the summary,
    only the stage timings as compact float arrays (8 bytes per stage per inference), so memory
    stays flat over long runs."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else None
        self._file = None
        if self.path:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._file = open(self.path, "a", buffering=1)  # line-buffered: complete lines reach the disk
            except OSError as e:
                raise InputError(f"--stats {self.path}: cannot append to it ({e.strerror or e})") from None
        self.count = 0
        self._first: dict | None = None  # the first inference, reported apart from the steady state
        self._steady = {name: array("d") for name in STAGES}
        self._t_first_steady: float | None = None
        self._t_last: float | None = None
        self.counters: dict[str, float] = {}
        self.info: dict = {}
        self._lock = threading.Lock()

    def add(self, record: dict) -> None:
        with self._lock:
            self.count += 1
            if self.count <= WARMUP:
                self._first = {k: record.get(k) for k in ("inference", "loop", "sensor_to_decision")}
            else:
                for name, values in self._steady.items():
                    value = record.get(name)
                    if value is not None:
                        values.append(value)
                if self._t_first_steady is None:
                    self._t_first_steady = record.get("t")
                self._t_last = record.get("t")
            if self._file:
                self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
                self._file.flush()

    def summary(self) -> dict:
        with self._lock:
            stages = {name: describe(values) for name, values in self._steady.items()}
            steady = self.count - min(self.count, WARMUP)
            out = {"type": "summary", "inferences": self.count, **self.info, "counters": dict(self.counters),
                   "first_inference": self._first, "stages_ms": stages, "peak_rss_mb": round(peak_rss_mb(), 1)}
            if steady >= 2 and self._t_first_steady is not None and self._t_last is not None:
                span = self._t_last - self._t_first_steady
                out["inference_rate_hz"] = round((steady - 1) / span, 2) if span > 0 else None
        return out

    def close(self, summary: dict | None = None) -> None:
        if self._file:
            if summary is not None:
                self._file.write(json.dumps(summary, separators=(",", ":")) + "\n")
            self._file.close()
            self._file = None


def read_stats(path: Path) -> tuple[list[dict], dict | None]:
    """Records and summary from a stats file; a partial last line (killed writer) is ignored."""
    records, summary = [], None
    with open(path) as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("type") == "summary":
                summary = obj
            else:
                records.append(obj)
    return records, summary


def prometheus_text(recorder: StatsRecorder) -> str:
    s = recorder.summary()
    lines = ["# TYPE edgemm_inferences_total counter", f"edgemm_inferences_total {s['inferences']}"]
    for name, value in s["counters"].items():
        lines += [f"# TYPE edgemm_{name}_total counter", f"edgemm_{name}_total {value}"]
    lines.append("# TYPE edgemm_stage_latency_ms summary")
    for stage, d in s["stages_ms"].items():
        for q, key in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99")):
            if d.get(key) is not None and math.isfinite(d[key]):
                lines.append(f'edgemm_stage_latency_ms{{stage="{stage}",quantile="{q}"}} {d[key]}')
        if d.get("count"):
            lines.append(f'edgemm_stage_latency_ms_count{{stage="{stage}"}} {d["count"]}')
    lines += ["# TYPE edgemm_peak_rss_megabytes gauge", f"edgemm_peak_rss_megabytes {s['peak_rss_mb']}"]
    return "\n".join(lines) + "\n"


def serve_metrics(recorder: StatsRecorder, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Prometheus endpoint at http://HOST:PORT/metrics (loopback unless told otherwise)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") not in ("/metrics", ""):
                self.send_error(404)
                return
            body = prometheus_text(recorder).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        server = ThreadingHTTPServer((host, port), Handler)
    except OSError as e:
        raise InputError(f"cannot serve metrics on {host}:{port} ({e.strerror or e})") from None
    threading.Thread(target=server.serve_forever, name="edgemm-metrics", daemon=True).start()
    return server



