"""Real capture devices on a headless machine, for tests and benchmarks.

* VirtualMic: a PulseAudio daemon with a null sink `vmic` whose monitor is the default source, so PyAudio's
  `default` input hears whatever `paplay --device=vmic` plays (recipe: ../shared/notes/stack-findings.md).
* MjpegServer: a live network camera on 127.0.0.1 streaming JPEG frames over HTTP
  (multipart/x-mixed-replace) at a fixed frame rate.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

PULSE_CONFIG = """load-module module-native-protocol-unix auth-anonymous=1
load-module module-null-sink sink_name=vmic rate=16000 channels=1 format=s16le
load-module module-remap-source master=vmic.monitor source_name=vmic_src
load-module module-null-sink sink_name=keeper_sink rate=16000 channels=1 format=s16le
load-module module-loopback source=vmic.monitor sink=keeper_sink latency_msec=60 source_dont_move=true sink_dont_move=true
set-default-sink vmic
set-default-source vmic_src
"""


class VirtualMic:
    """Starts PulseAudio with the virtual microphone; sets XDG_RUNTIME_DIR for this process while it runs."""

    available = shutil.which("pulseaudio") is not None and shutil.which("paplay") is not None

    def __init__(self):
        self.runtime = Path(tempfile.mkdtemp(prefix="edgemm-pulse-"))
        self.runtime.chmod(0o700)
        config = self.runtime / "edgemm.pa"
        config.write_text(PULSE_CONFIG)
        self.config = config
        self.env = dict(os.environ, XDG_RUNTIME_DIR=str(self.runtime))
        self._old = os.environ.get("XDG_RUNTIME_DIR")
        os.environ["XDG_RUNTIME_DIR"] = str(self.runtime)
        self._start()

    def _start(self) -> None:
        subprocess.run(["pulseaudio", "--daemonize=yes", "-n", "-F", str(self.config), "--exit-idle-time=-1"],
                       env=self.env, check=True, capture_output=True, timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            sinks = subprocess.run(["pactl", "list", "sinks"], env=self.env, capture_output=True, text=True).stdout
            if "vmic" in sinks:
                break
            time.sleep(0.2)
        time.sleep(2.0)  # the null sink settles to small blocks (see the notes)

    def restart(self, down_seconds: float) -> None:
        """The sound server dies (every client stream breaks) and comes back `down_seconds` later."""
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True, timeout=30)
        time.sleep(down_seconds)
        self._start()

    def play(self, wav: Path) -> subprocess.Popen:
        return subprocess.Popen(["paplay", "--device=vmic", str(wav)], env=self.env)

    def close(self) -> None:
        subprocess.run(["pulseaudio", "--kill"], env=self.env, capture_output=True)
        if self._old is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = self._old
        shutil.rmtree(self.runtime, ignore_errors=True)


class MjpegServer:
    """Streams `jpegs` (a list of JPEG bytes, cycled, each shown `hold` times) at `fps` on 127.0.0.1."""

    def __init__(self, jpegs: list[bytes], fps: float = 30.0, hold: int = 1, port: int = 0):
        frames = list(jpegs)
        stopped = self._stopped = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                start, i = time.monotonic(), 0
                try:
                    while not stopped.is_set():  # closing the server drops its clients, as a camera going away does
                        jpg = frames[(i // hold) % len(frames)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n"
                                         + f"Content-Length: {len(jpg)}\r\n\r\n".encode() + jpg + b"\r\n")
                        i += 1
                        time.sleep(max(0.0, start + i / fps - time.monotonic()))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.server.serve_forever, name="mjpeg-server", daemon=True).start()

    @classmethod
    def from_video(cls, video: Path, fps: float = 30.0, max_frames: int = 600, hold: int = 1,
                   port: int = 0) -> "MjpegServer":
        import cv2

        cap = cv2.VideoCapture(str(video))
        jpegs = []
        while len(jpegs) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            jpegs.append(cv2.imencode(".jpg", frame)[1].tobytes())
        return cls(jpegs, fps, hold, port)

    def close(self) -> None:
        self._stopped.set()
        self.server.shutdown()
        self.server.server_close()
