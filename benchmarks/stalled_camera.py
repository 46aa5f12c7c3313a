"""How fast a network camera that hangs (connection open, no more bytes) is noticed and reopened.

    .venv/bin/python benchmarks/stalled_camera.py [--stalls 5] [--opens 3] [--no-write]

Camera: MJPEG over HTTP on 127.0.0.1 at 30 fps (StallingMjpegServer below), read by edgemm's CameraSource.
Each round the server stops sending on every connection without closing it and stops answering new
requests; the time from the last frame received to the stall being counted is the detection time. The
server then resumes and the time to the next frame (through a reconnect) is the recovery time. Also
timed: opening a stream whose server accepts the connection but never answers.
"""

from __future__ import annotations

import argparse
import http.server
import socket
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from edgemm.capture.camera import OPEN_TIMEOUT_S, STALL_SECONDS, CameraSource  # noqa: E402
from edgemm.errors import InputError  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/stalled_camera.py"


class StallingMjpegServer:
    """A live MJPEG camera on 127.0.0.1 that can hang: `stall()` stops the frames of every connection and the
    answers to new requests, keeping every socket open (a camera whose firmware froze); `resume()` goes on."""

    def __init__(self, fps: float = 30.0):
        import cv2

        jpeg = cv2.imencode(".jpg", np.full((96, 128, 3), 128, np.uint8))[1].tobytes()
        part = (b"--frame\r\nContent-Type: image/jpeg\r\n" + f"Content-Length: {len(jpeg)}\r\n\r\n".encode()
                + jpeg + b"\r\n")
        self.flowing, self.closed = threading.Event(), threading.Event()
        self.flowing.set()
        flowing, closed = self.flowing, self.closed

        def may_send() -> bool:  # waits out a stall; False once the server closes
            while not flowing.wait(0.05):
                if closed.is_set():
                    return False
            return not closed.is_set()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                if not may_send():  # a hung camera does not even answer new requests
                    return
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                    self.end_headers()
                    while may_send():
                        self.wfile.write(part)
                        time.sleep(1.0 / fps)
                except OSError:  # the client gave up on this connection (it reconnects)
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, name="stalling-mjpeg", daemon=True).start()

    def stall(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def close(self) -> None:
        self.closed.set()
        self.server.shutdown()
        self.server.server_close()


def unanswering_server() -> socket.socket:
    """A listening socket never accepted from: the kernel completes the TCP handshake, nobody ever answers."""
    return socket.create_server(("127.0.0.1", 0), backlog=16)


def wait_until(condition, timeout: float) -> bool:
    """Polls `condition` every 5 ms; False when it is still false after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def measure_stalls(rounds: int) -> tuple[list[float], list[float], int]:
    """(detection s per stall, recovery s per resume, frames captured)."""
    server = StallingMjpegServer()
    camera = CameraSource(server.url, max_backoff=1.0)
    noticed: list[float] = []
    camera.note = lambda line: noticed.append(time.monotonic()) if "stalled" in line else None
    detection, recovery = [], []
    camera.start()
    try:
        for _ in range(rounds):
            if not wait_until(lambda: camera.frames_captured > 0 and time.monotonic() - camera.latest().t < 0.2, 10):
                raise RuntimeError("the camera delivers no frames")
            time.sleep(0.5)  # steady frames before the stall
            seen = len(noticed)
            server.stall()
            if not wait_until(lambda seen=seen: len(noticed) > seen, 10 * STALL_SECONDS):
                raise RuntimeError("the stall was never noticed")
            detection.append(noticed[-1] - camera.latest().t)
            last_seq = camera.latest().seq
            resumed = time.monotonic()
            server.resume()
            if not wait_until(lambda last=last_seq: camera.latest().seq > last, 15):
                raise RuntimeError("no frame after the server resumed")
            recovery.append(camera.latest().t - resumed)
        return detection, recovery, camera.frames_captured
    finally:
        camera.stop()
        server.close()


def measure_open(rounds: int = 3) -> list[float]:
    """Seconds until opening a stream whose server never answers gives up (a one-line InputError)."""
    times = []
    with unanswering_server() as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/stream.mjpg"
        for _ in range(rounds):
            start = time.monotonic()
            try:
                CameraSource(url).stop()
            except InputError:
                times.append(time.monotonic() - start)
            else:
                raise RuntimeError(f"{url} opened, but its server never answers")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stalls", type=int, default=5)
    parser.add_argument("--opens", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    detection, recovery, frames = measure_stalls(args.stalls)
    opens = measure_open(args.opens)

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:.0f} ms (min {min(values) * 1e3:.0f}, max {max(values) * 1e3:.0f})"

    body = "\n".join([
        "## Stalled network camera: detection and recovery",
        "",
        (f"Command: `{COMMAND} --stalls {args.stalls} --opens {args.opens}`. MJPEG over HTTP on 127.0.0.1 at 30 fps, read by "
         "`CameraSource`; the server stops sending and answering while keeping every connection open, then "
         f"resumes. Stall time {STALL_SECONDS:g} s (no new frame for this long), open timeout "
         f"{OPEN_TIMEOUT_S:g} s; OpenCV's FFmpeg default for both is 30 s."),
        "",
        "| measure | median (min, max) | rounds |",
        "|---|---|---|",
        f"| last frame -> stall counted | **{ms(detection)}** | {len(detection)} |",
        f"| server resumes -> next frame (reconnected) | {ms(recovery)} | {len(recovery)} |",
        f"| open of a server that accepts but never answers -> InputError | {ms(opens)} | {len(opens)} |",
        "",
        f"Frames captured over the run: {frames}.",
    ])
    print(body)
    if not args.no_write:
        update_section("stalled_camera", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
