"""The Prometheus text endpoint of `edgemm run --metrics-port`: the recorder's summary, served by a small
http.server with a bounded number of threads and socket timeouts (a scraper, or anything else that
connects, can never hold up the loop or pile up threads)."""

from __future__ import annotations

import math
import selectors
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer

from edgemm.errors import InputError
from edgemm.runtime.stats import StatsRecorder


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


def serve_metrics(recorder: StatsRecorder, port: int, host: str = "127.0.0.1") -> MetricsServer:
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
        server = MetricsServer((host, port), Handler)
    except OSError as e:
        raise InputError(f"cannot serve metrics on {host}:{port} ({e.strerror or e})") from None
    threading.Thread(target=server.serve_forever, name="edgemm-metrics", daemon=True).start()
    return server
