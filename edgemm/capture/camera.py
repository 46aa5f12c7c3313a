"""Camera sources by URI, each read by a thread that always holds the newest frame.

    0, /dev/video0          a V4L2 device
    path/to/file.avi        a video file, read at its native frame rate (or as fast as possible)
    http://..., rtsp://...  a network stream

Live sources (all but files) are reopened with backoff when they stop delivering frames.
    csi://0                 a Jetson CSI camera (nvarguscamerasrc GStreamer pipeline)
    "... ! appsink"         any GStreamer pipeline, where OpenCV was built with GStreamer
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from pathlib import Path

import numpy as np

from edgemm.errors import DependencyError, InputError


@dataclasses.dataclass(frozen=True)
class Frame:
    image: np.ndarray  # BGR uint8 as OpenCV delivers it
    t: float  # capture time on the session clock (seconds)
    seq: int  # 0, 1, 2, ... in capture order
    prepared: dict | None = None  # input name -> the model's image input, when the capture thread preprocessed it
    prepare_ms: float | None = None


def csi_pipeline(sensor: int, width: int = 1280, height: int = 720, fps: int = 30) -> str:
    return (f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
            f"framerate={fps}/1 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
            "appsink drop=true max-buffers=1")


def _gstreamer_available(cv2) -> bool:
    info = cv2.getBuildInformation()
    match = re.search(r"GStreamer:\s*(\w+)", info)
    return bool(match and match.group(1).upper() == "YES")


def classify(uri: str) -> str:
    """'device', 'file', 'stream', 'gstreamer' or 'csi'."""
    if re.fullmatch(r"\d+", uri) or re.fullmatch(r"/dev/video\d+", uri):
        return "device"
    if uri.startswith("csi://"):
        return "csi"
    if re.match(r"^(https?|rtsp|rtmp|udp|tcp)://", uri):
        return "stream"
    if "!" in uri:
        return "gstreamer"
    return "file"


class CameraSource:
    """Opens `uri`; a capture thread publishes the newest frame (older unconsumed frames count as dropped).

    prepare: a function applied to every frame in the capture thread (the image preprocessing), so that
    it runs on another core while the loop runs the model on the previous frame.

    realtime: files are paced at their native frame rate (False: the loop pulls frames as fast as it can,
    with media timestamps, see `read_next`).
    """

    def __init__(self, uri: str, realtime: bool = True, clock_start: float | None = None,
                 reconnect: bool = True, max_backoff: float = 5.0, prepare=None):
        try:
            import cv2
        except ImportError as e:
            raise DependencyError(f"OpenCV is not importable ({e}): pip install opencv-python-headless") from None
        self._cv2 = cv2
        self.uri, self.kind = str(uri), classify(str(uri))
        self.realtime = realtime
        self.prepare = prepare  # run on every captured frame in the capture thread (pipelined preprocessing)
        self.clock_start = time.monotonic() if clock_start is None else clock_start
        self.reconnect_enabled = reconnect and self.kind != "file"  # live sources come back; files end
        self.max_backoff = max_backoff
        self.frames_captured = self.frames_dropped = self.reconnects = self.read_errors = 0
        self.ended = False
        self.note = None  # callable for one-line messages (the session sets it)
        self._cap = self._open()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 30.0
        self._latest: Frame | None = None
        self._consumed_seq = -1
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = 0

    def _capture(self):
        """A new cv2.VideoCapture for the URI and what it is called in messages (not checked yet)."""
        cv2 = self._cv2
        if self.kind == "device":
            return cv2.VideoCapture(int(self.uri.removeprefix("/dev/video")), cv2.CAP_V4L2), f"camera {self.uri}"
        if self.kind in ("csi", "gstreamer"):
            pipeline = csi_pipeline(int(self.uri.removeprefix("csi://") or 0)) if self.kind == "csi" else self.uri
            return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER), f"GStreamer pipeline for {self.uri}"
        if self.kind == "stream":
            return cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG), f"stream {self.uri}"
        return cv2.VideoCapture(self.uri), f"video file {self.uri}"

    def _open(self):
        if self.kind in ("csi", "gstreamer") and not _gstreamer_available(self._cv2):
            raise DependencyError(f"{self.uri}: this OpenCV has no GStreamer support (the PyPI wheels do not; "
                                  "use the system OpenCV, e.g. Debian's python3-opencv or JetPack's)")
        if self.kind == "file" and not Path(self.uri).is_file():
            raise InputError(f"{self.uri}: no such video file (or use a camera index, /dev/videoN, http://, csi://N)")
        cap, what = self._capture()
        if not cap.isOpened():
            raise InputError(f"cannot open {what}")
        if self.kind == "file":
            ok, _ = cap.read()
            if not ok:
                raise InputError(f"{self.uri}: no decodable frame (corrupt or unsupported video)")
            cap.set(self._cv2.CAP_PROP_POS_FRAMES, 0)
        return cap

    # -- synchronous use (files, as fast as possible) -------------------------------------------------
    def read_next(self) -> Frame | None:
        """The next frame of a file with its media timestamp, or None at the end."""
        ok, image = self._cap.read()
        if not ok:
            self.ended = True
            return None
        frame = Frame(image, self.clock_start + self._index / self.fps, self._index)
        self._index += 1
        self.frames_captured += 1
        return frame

    # -- threaded use -------------------------------------------------------------------------------
    def start(self) -> "CameraSource":
        self._thread = threading.Thread(target=self._run, name="edgemm-camera", daemon=True)
        self._thread.start()
        return self

    def _publish(self, frame: Frame) -> None:
        with self._cond:
            if self._latest is not None and self._latest.seq > self._consumed_seq:
                self.frames_dropped += 1  # replaced before the loop took it
            self._latest = frame
            self.frames_captured += 1
            self._cond.notify_all()

    def _run(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            ok, image = self._cap.read()
            if not ok:
                if self.kind == "file":
                    break
                self.read_errors += 1
                if not self.reconnect_enabled:
                    break
                self._cap.release()
                if self.note is not None:
                    self.note(f"camera {self.uri} stopped delivering frames; reconnecting with backoff")
                while not self._stop.is_set():  # unplugged USB camera, restarted stream server, ...
                    self._stop.wait(backoff)
                    backoff = min(self.max_backoff, backoff * 2)
                    cap, _ = self._capture()
                    if cap.isOpened():
                        self._cap, backoff = cap, 0.25
                        self.reconnects += 1
                        if self.note is not None:
                            self.note(f"camera {self.uri} reconnected")
                        break
                    cap.release()
                continue
            if self.kind == "file":
                t = self.clock_start + self._index / self.fps
                if self.realtime:
                    delay = t - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
            else:
                t = time.monotonic()
            prepared = prepare_ms = None
            if self.prepare is not None:
                start = time.perf_counter()
                prepared = self.prepare(image)
                prepare_ms = (time.perf_counter() - start) * 1e3
            self._publish(Frame(image, t, self._index, prepared, prepare_ms))
            self._index += 1
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    def next_frame(self, timeout: float = 1.0) -> Frame | None:
        """The newest frame not yet taken, waiting up to `timeout`; None on timeout or end of source."""
        with self._cond:
            self._cond.wait_for(lambda: (self._latest is not None and self._latest.seq > self._consumed_seq)
                                or self.ended, timeout)
            if self._latest is None or self._latest.seq <= self._consumed_seq:
                return None
            self._consumed_seq = self._latest.seq
            return self._latest

    def latest(self) -> Frame | None:
        """The newest frame, taken or not (a second camera read beside the one that triggers)."""
        with self._cond:
            return self._latest

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2.0)
        self._cap.release()
