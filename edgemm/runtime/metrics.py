"""The Prometheus endpoint of `edgemm run --metrics-port`: prometheus_client metrics on a private registry
(per-stage latency histograms, the recorder's counters, the model's identity, process metrics), every series
labelled with the device, served by a small http.server with a bounded number of threads and socket timeouts
(a scraper, or anything else that connects, can never hold up the loop or pile up threads)."""

from __future__ import annotations

import re
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, Info, ProcessCollector,
                               generate_latest)
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from edgemm import __version__
from edgemm.errors import InputError, quote
from edgemm.runtime.stats import STAGES, StatsRecorder, peak_rss_mb

# 0.1 ms (a small model's invoke) .. 1 s (a stalled frame); histogram_quantile is exact to one bucket
LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# pairing_error is a signed offset, not a latency: a histogram's sum must never go down
LATENCY_STAGES = tuple(s for s in STAGES if s != "pairing_error")
MAX_DEVICE_ID = 64
_DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")  # a host name fits; nothing to escape in a label


def device_id(value: str | None = None) -> str:
    """The `device` label of every series: `value`, or this machine's host name; one line says why not."""
    flag = "--device-id"
    if value is None:
        value, flag = socket.gethostname(), "the host name (give --device-id NAME)"
    if not value:
        raise InputError(f"{flag}: empty; give this device a name (A-Z, a-z, 0-9, '.', '_', ':', '-')")
    if len(value) > MAX_DEVICE_ID:
        raise InputError(f"{flag} {quote(value)}: {len(value)} characters; at most {MAX_DEVICE_ID}")
    if not _DEVICE_ID.fullmatch(value):
        raise InputError(f"{flag} {quote(value)}: only A-Z, a-z, 0-9, '.', '_', ':' and '-', starting with a "
                         "letter or 0-9 (it becomes the Prometheus label device=...)")
    return value


@dataclass(frozen=True)
class ModelInfo:
    """The labels of `edgemm_model_info` (what runs, so that a latency change can be traced to a model)."""

    model_sha256: str = ""
    artifact: str = ""
    backend: str = ""
    profile: str = ""


class StageHistograms:
    """The recorder's observer: each steady-state record's stage times (ms) into one histogram (seconds)."""

    def __init__(self, registry: CollectorRegistry):
        self._histogram = Histogram("edgemm_stage_latency_seconds", "Time of each stage of an inference "
                                    "(the warm-up inference excluded).", ["stage"], buckets=LATENCY_BUCKETS_S,
                                    registry=registry)
        self._stages: dict = {}  # stage -> its child, made on the first value (unmeasured stages stay absent)

    def observe(self, record: dict) -> None:
        for stage in LATENCY_STAGES:
            value = record.get(stage)
            if value is None:
                continue
            child = self._stages.get(stage)
            if child is None:
                child = self._stages[stage] = self._histogram.labels(stage=stage)
            child.observe(max(value, 0.0) / 1e3)  # a difference of rounded times can be a hair below zero


class _RecorderCounters:
    """The recorder's counters, read at scrape time (the loop keeps them as plain numbers), plus `live()`:
    counters the loop only copies into the summary at its end (camera and microphone), read as it goes."""

    def __init__(self, recorder: StatsRecorder, live: Callable[[], dict] | None):
        self.recorder, self.live = recorder, live

    def collect(self) -> Iterator[Metric]:
        # dict() copies a str-keyed dict without running Python code, so the loop thread cannot change it
        # midway (its writers take no lock either)
        counters = dict(self.recorder.counters)
        if self.live is not None:
            counters.update(self.live())
        yield CounterMetricFamily("edgemm_inferences", "Inferences run (the warm-up one included).",
                                  value=self.recorder.count)
        for name, value in sorted(counters.items()):
            yield CounterMetricFamily(f"edgemm_{name}", f"The run's {name.replace('_', ' ')}.", value=value)
        yield GaugeMetricFamily("edgemm_peak_rss_bytes", "Peak resident set size of this process (VmHWM).",
                                value=round(peak_rss_mb() * 2**20))


class _DeviceLabelled:
    """Every sample of `inner` with device=DEVICE added, so that a fleet's series never collide."""

    def __init__(self, inner: CollectorRegistry, device: str):
        self.inner, self.device = inner, device

    def collect(self) -> Iterator[Metric]:
        for family in self.inner.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            out.samples = [s._replace(labels={**s.labels, "device": self.device}) for s in family.samples]
            yield out


def metrics_registry(recorder: StatsRecorder, device: str, info: ModelInfo | None = None,
                     live: Callable[[], dict] | None = None) -> CollectorRegistry:
    """A private registry (never prometheus_client's global one: two runs in one process stay apart) for
    `recorder`, which gets the stage histograms as its observer."""
    inner = CollectorRegistry()
    recorder.observer = StageHistograms(inner).observe
    Info("edgemm_model", "The model this device runs.", registry=inner).info(
        {"version": __version__, **asdict(info or ModelInfo())})
    ProcessCollector(registry=inner)
    inner.register(_RecorderCounters(recorder, live))
    registry = CollectorRegistry()
    registry.register(_DeviceLabelled(inner, device))
    return registry


class MetricsServer(HTTPServer):
    """http.server with a bounded number of threads: a new connection waits in one selector, holding no
    thread, until it sends its request; then one of WORKERS threads serves it, each read and write under a
    TIMEOUT_S socket timeout. A connection silent for TIMEOUT_S is closed, and so is the oldest waiting one
    when MAX_WAITING are already waiting."""

    WORKERS = 2
    TIMEOUT_S = 2.0
    MAX_WAITING = 64
    request_queue_size = 64  # listen backlog: a burst of scrapes waits in the kernel

    def __init__(self, address, handler):
        super().__init__(address, handler)
        self.socket.setblocking(False)  # a client gone between select() and accept() must not block the loop
        self._pool = ThreadPoolExecutor(self.WORKERS, thread_name_prefix="edgemm-metrics-worker")
        self._waiting: dict[socket.socket, tuple] = {}  # connection -> (client address, deadline), oldest first
        self._stop, self._stopped = threading.Event(), threading.Event()

    def serve_forever(self, poll_interval: float = 0.2) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            try:
                while not self._stop.is_set():
                    for key, _ in selector.select(poll_interval):
                        if key.fileobj is self.socket:
                            self._accept(selector)
                        else:  # the request has arrived: a worker reads it without waiting
                            selector.unregister(key.fileobj)
                            address, _ = self._waiting.pop(key.fileobj)
                            self._pool.submit(self._serve, key.fileobj, address)
                    now = time.monotonic()
                    for conn in [c for c, (_, deadline) in self._waiting.items() if deadline <= now]:
                        self._drop(selector, conn)
            finally:
                for conn in list(self._waiting):
                    self._drop(selector, conn)
                self._stopped.set()

    def _accept(self, selector) -> None:
        try:
            conn, address = self.get_request()
        except OSError:
            return
        if len(self._waiting) >= self.MAX_WAITING:
            self._drop(selector, next(iter(self._waiting)))
        conn.settimeout(self.TIMEOUT_S)
        self._waiting[conn] = (address, time.monotonic() + self.TIMEOUT_S)
        selector.register(conn, selectors.EVENT_READ)

    def _drop(self, selector, conn) -> None:
        selector.unregister(conn)
        del self._waiting[conn]
        self.shutdown_request(conn)

    def _serve(self, conn, address) -> None:
        try:
            self.finish_request(conn, address)
        except OSError:  # the client went away or timed out mid-request
            pass
        except Exception:  # noqa: BLE001 (a bug: shown, where the pool would swallow it)
            self.handle_error(conn, address)
        finally:
            self.shutdown_request(conn)

    def shutdown(self) -> None:
        """Stops serving and frees the port (the session calls only this)."""
        self._stop.set()
        self._stopped.wait(5.0)
        self._pool.shutdown(wait=False)
        self.server_close()


def serve_metrics(recorder: StatsRecorder, port: int, host: str = "127.0.0.1", device: str | None = None,
                  info: ModelInfo | None = None, live: Callable[[], dict] | None = None) -> MetricsServer:
    """Prometheus endpoint at http://HOST:PORT/metrics (loopback unless told otherwise); `device` defaults
    to the host name, `live` gives counters kept outside the recorder (see metrics_registry)."""
    registry = metrics_registry(recorder, device_id(device), info, live)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") not in ("/metrics", ""):
                self.send_error(404)
                return
            body = generate_latest(registry)
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    try:
        server = MetricsServer((host, port), Handler)
    except OSError as e:
        raise InputError(f"cannot serve metrics on {host}:{port} ({e.strerror or e})") from None
    threading.Thread(target=server.serve_forever, name="edgemm-metrics", daemon=True).start()
    return server
