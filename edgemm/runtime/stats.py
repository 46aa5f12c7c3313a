"""Latency statistics: one JSON line per inference and a summary (served to Prometheus by runtime/metrics.py).

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
import os
import queue
import resource
import stat
import sys
import threading
from array import array
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edgemm.atomic import check_output_dir
from edgemm.errors import InputError
from edgemm.manifest import is_model_dir

STAGES = ("frame_age", "audio_age", "pairing_error", "image_pre", "audio_wait", "audio_features", "inference",
          "invoke", "postprocess", "loop", "outside_invoke", "sensor_to_decision")
WARMUP = 1  # the first inference is reported apart from the steady state
QUEUED_RECORDS = 4096  # records waiting for the stats writer; more are dropped (counted), the loop never waits
CLOSE_TIMEOUT_S = 5.0  # the end of a run waits this long at most for the stats file


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


def _refuse(path: Path, flag: str) -> None:
    if path.is_dir():
        raise InputError(f"{flag} {path}: is a directory; give a file (records are appended to it)")
    if path.exists() and not path.is_file():  # a FIFO blocks the run, a device (/dev/full) loses the records
        raise InputError(f"{flag} {path}: not a regular file; give a file (records are appended to it)")
    model = Path(path).resolve().parent
    if is_model_dir(model):
        raise InputError(f"{flag} {path}: inside the model directory {model} (it holds manifest.json); "
                         "write it elsewhere")


def check_stats_path(path: Path, flag: str = "--stats") -> None:
    """Says in one line why `path` cannot take appended JSON lines (before anything starts)."""
    path = Path(path)
    _refuse(path, flag)
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{flag} {path}: not writable")
    check_output_dir(path.parent, flag)


def _open_for_append(path: Path) -> int:
    """A descriptor appending to `path`, a regular file; a partial last line (a killed run) is ended first."""
    _refuse(path, "--stats")
    flags = os.O_APPEND | os.O_CREAT | os.O_NONBLOCK  # O_NONBLOCK: a FIFO made since the check fails, not blocks
    fd = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | flags, 0o666)  # read access only to look at the last byte
        except PermissionError:
            fd = os.open(path, os.O_WRONLY | flags, 0o666)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"--stats {path}: not a regular file; give a file (records are appended to it)")
        if info.st_size:
            try:
                last = os.pread(fd, 1, info.st_size - 1)
            except OSError:  # write-only: an empty line costs nothing (readers skip it)
                last = b""
            if last != b"\n":  # else the first record would be glued to the partial line and lost with it
                os.write(fd, b"\n")
        return fd
    except BaseException as e:
        if fd is not None:
            os.close(fd)
        if isinstance(e, OSError):
            raise InputError(f"--stats {path}: cannot append to it ({e.strerror or e})") from None
        raise


def _warn(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class StatsRecorder:
    """Keeps, for the summary, the stage timings as compact float arrays (8 bytes per stage per inference),
    and appends each per-inference record to a JSON-lines file from a writer thread, one whole line per
    write, so that the loop never waits on the disk and a killed run leaves only whole lines behind.

    A write error (disk full, I/O error) ends the file's records: one line goes to `warn` (stderr), the
    summary counts `stats_write_errors`, and the run and its printed summary go on. Records the writer
    could not keep up with are dropped and counted (`stats_records_dropped`)."""

    def __init__(self, path: Path | None = None, warn: Callable[[str], None] = _warn):
        self.path = Path(path) if path else None
        self.warn = warn
        # called with each steady-state record as it is added (the /metrics histograms attach it), so that
        # nothing is recomputed from all the samples per scrape
        self.observer: Callable[[dict], None] | None = None
        self._fd = _open_for_append(self.path) if self.path else None
        self.count = 0
        self._first: dict | None = None  # the first inference, reported apart from the steady state
        self._steady = {name: array("d") for name in STAGES}
        self._t_first_steady: float | None = None
        self._t_last: float | None = None
        # zeros in the summary and on /metrics too, so that a full disk can be alerted on
        self.counters: dict[str, float] = {"stats_write_errors": 0, "stats_records_dropped": 0} if self.path else {}
        self.info: dict = {}
        self._lock = threading.Lock()
        self._queue: queue.Queue[bytes | None] = queue.Queue(QUEUED_RECORDS)
        self._writer = None
        if self._fd is not None:
            self._writer = threading.Thread(target=self._write_lines, name="edgemm-stats", daemon=True)
            self._writer.start()

    def add(self, record: dict) -> None:
        with self._lock:
            self.count += 1
            steady = self.count > WARMUP
            if not steady:
                self._first = {k: record.get(k) for k in ("inference", "loop", "sensor_to_decision")}
            else:
                for name, values in self._steady.items():
                    value = record.get(name)
                    if value is not None:
                        values.append(value)
                if self._t_first_steady is None:
                    self._t_first_steady = record.get("t")
                self._t_last = record.get("t")
        if steady and self.observer is not None:  # outside the lock: a scrape never waits on it
            self.observer(record)
        if self._writer is not None:
            try:
                self._queue.put_nowait((json.dumps(record, separators=(",", ":")) + "\n").encode())
            except queue.Full:
                self._count("stats_records_dropped")

    def _count(self, name: str) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def _write_lines(self) -> None:
        while (line := self._queue.get()) is not None:
            self._write(line)

    def _write(self, line: bytes) -> None:
        if self._fd is None:  # an earlier write failed: the rest is not written
            return
        try:
            view = memoryview(line)
            while view:  # a write may be short (file size limit); the next one then raises
                view = view[os.write(self._fd, view):]
        except OSError as e:
            os.close(self._fd)
            self._fd = None
            self._count("stats_write_errors")
            self.warn(f"warning: --stats {self.path}: {e.strerror or e}; no more records are written to it "
                      "(the summary is still printed)")

    def summary(self) -> dict:
        with self._lock:  # copies: the percentiles are computed outside the lock, so add() never waits on a scrape
            steady = {name: values[:] for name, values in self._steady.items()}
            count, first, counters = self.count, self._first, dict(self.counters)
            t_first, t_last = self._t_first_steady, self._t_last
        n_steady = count - min(count, WARMUP)
        out = {"type": "summary", "inferences": count, **self.info, "counters": counters, "first_inference": first,
               "stages_ms": {name: describe(values) for name, values in steady.items()},
               "peak_rss_mb": round(peak_rss_mb(), 1)}
        if n_steady >= 2 and t_first is not None and t_last is not None:
            span = t_last - t_first
            out["inference_rate_hz"] = round((n_steady - 1) / span, 2) if span > 0 else None
        return out

    def close(self, summary: dict | None = None) -> None:
        """Waits CLOSE_TIMEOUT_S at most for the records to reach the file, adds the file's own counters to
        `summary` (the caller prints it too) and appends it as the last line."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            self._queue.put(None, timeout=CLOSE_TIMEOUT_S)
        except queue.Full:
            pass
        writer.join(CLOSE_TIMEOUT_S)
        if writer.is_alive():  # a hung file system: the descriptor stays with the writer
            self.warn(f"warning: --stats {self.path}: not written within {CLOSE_TIMEOUT_S:g} s; "
                      "the file may lack its last records and the summary")
            return
        if summary is not None:
            with self._lock:
                summary.setdefault("counters", {}).update(
                    {k: v for k, v in self.counters.items() if k.startswith("stats_")})
            self._write((json.dumps(summary, separators=(",", ":")) + "\n").encode())
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_stats(path: Path) -> tuple[list[dict], dict | None]:
    """Records and summary from a stats file; a partial line (killed writer) is ignored."""
    records, summary = [], None
    with open(path) as f:
        for line in f:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if obj.get("type") == "summary":
                summary = obj
            else:
                records.append(obj)
    return records, summary
