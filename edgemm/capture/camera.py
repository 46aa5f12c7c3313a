"""Camera sources by URI, each read by a thread that always holds the newest frame.

    0, /dev/video0          a V4L2 device
    path/to/file.avi        a video file, read at its native frame rate (or as fast as possible)
    http://..., rtsp://...  a network stream
    csi://0                 a Jetson CSI camera (nvarguscamerasrc GStreamer pipeline)
    "... ! appsink"         any GStreamer pipeline, where OpenCV was built with GStreamer (an existing file
                            whose name holds a "!" is a file)

Live sources (all but files) are reopened with backoff when they stop delivering frames: when a read fails,
and when no new frame came for STALL_SECONDS (2 s; the source is stalled, e.g. a network camera whose
connection stays open but sends nothing). Network streams give up opening after OPEN_TIMEOUT_S (2 s) and
a read after STALL_SECONDS, so a hung camera never holds up --duration, Ctrl-C or the end of the run.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time

import numpy as np

from edgemm.errors import DependencyError, InputError

STALL_SECONDS = 2.0  # no new frame for this long on a live source: stalled, released and reopened
OPEN_TIMEOUT_S = 2.0  # opening a network stream gives up after this (OpenCV's FFmpeg default is 30 s)
MAX_DEVICE_INDEX = 2**31 - 1  # OpenCV takes the index as a C int


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


def _stream_timeouts(cv2) -> list[int]:
    """FFmpeg open/read timeouts as VideoCapture params (OpenCV >= 4.5.2; an older system OpenCV, e.g. JetPack 4's,
    keeps its 30 s defaults and a stall is then noticed when the read finally returns)."""
    if not hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
        return []
    return [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(OPEN_TIMEOUT_S * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(STALL_SECONDS * 1000)]


def classify(uri: str) -> str:
    """'device', 'file', 'stream', 'gstreamer' or 'csi'."""
    if re.fullmatch(r"\d+", uri) or re.fullmatch(r"/dev/video\d+", uri):
        return "device"
    if uri.startswith("csi://"):
        return "csi"
    if re.match(r"^(https?|rtsp|rtmp|udp|tcp)://", uri):
        return "stream"
    if "!" in uri and not os.path.isfile(uri):  # os.path: a pipeline too long for a file name is no error
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
        self.frames_captured = self.frames_dropped = self.reconnects = self.read_errors = self.stalls = 0
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
        self._backoff = 0.25

    def _capture(self):
        """A new cv2.VideoCapture for the URI and what it is called in messages (not checked yet)."""
        cv2 = self._cv2
        if self.kind == "device":
            # V4L2 waits 10 s for a frame of a stalled camera and has no read-timeout param; OpenCV reads this
            # once, at the first V4L2 read of the process
            os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", str(int(STALL_SECONDS)))
            return cv2.VideoCapture(int(self.uri.removeprefix("/dev/video")), cv2.CAP_V4L2), f"camera {self.uri}"
        if self.kind in ("csi", "gstreamer"):
            pipeline = csi_pipeline(int(self.uri.removeprefix("csi://") or 0)) if self.kind == "csi" else self.uri
            return cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER), f"GStreamer pipeline for {self.uri}"
        if self.kind == "stream":
            params = _stream_timeouts(cv2)
            return cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, *([params] if params else [])), f"stream {self.uri}"
        return cv2.VideoCapture(self.uri), f"video file {self.uri}"

    def _open(self):
        if self.kind in ("csi", "gstreamer") and not _gstreamer_available(self._cv2):
            raise DependencyError(f"{self.uri}: this OpenCV has no GStreamer support (the PyPI wheels do not; "
                                  "use the system OpenCV, e.g. Debian's python3-opencv or JetPack's)")
        if self.kind == "file" and not os.path.isfile(self.uri):
            raise InputError(f"{self.uri}: no such video file (or use a camera index, /dev/videoN, http://, csi://N)")
        if self.kind == "device" and int(self.uri.removeprefix("/dev/video")) > MAX_DEVICE_INDEX:
            raise InputError(f"camera {self.uri}: device index out of range (N as in /dev/videoN, e.g. 0)")
        started = time.monotonic()
        cap, what = self._capture()
        if not cap.isOpened():
            waited = time.monotonic() - started
            raise InputError(f"cannot open {what}" + (f" (no answer within {OPEN_TIMEOUT_S:g} s)"
                                                       if self.kind == "stream" and waited >= OPEN_TIMEOUT_S else ""))
        if self.kind == "file":
            ok, _ = cap.read()
            if not ok:
                raise InputError(f"{self.uri}: no decodable frame (corrupt or unsupported video)")
            if not cap.read()[0]:  # a still image opens as a one-frame "video": one decision, then silence
                raise InputError(f"{self.uri}: holds a single frame; a camera input needs a video (or a camera)")
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
    def start(self) -> CameraSource:
        self._thread = threading.Thread(target=self._run, name="edgemm-camera", daemon=True)
        self._thread.start()
        return self

    def _publish(self, image: np.ndarray, t: float) -> None:
        prepared = prepare_ms = None
        if self.prepare is not None:
            start = time.perf_counter()
            prepared = self.prepare(image)
            prepare_ms = (time.perf_counter() - start) * 1e3
        frame = Frame(image, t, self._index, prepared, prepare_ms)
        self._index += 1
        with self._cond:
            if self._latest is not None and self._latest.seq > self._consumed_seq:
                self.frames_dropped += 1  # replaced before the loop took it
            self._latest = frame
            self.frames_captured += 1
            self._cond.notify_all()

    def _run(self) -> None:
        try:
            self._read_frames()
        finally:
            self._cap.release()  # here, not in stop(): OpenCV crashes when a capture is released during its read
            with self._cond:
                self.ended = True
                self._cond.notify_all()

    def _read_frames(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            ok, image = self._cap.read()
            waited = time.monotonic() - started  # the watchdog: the read timeouts make a hung source return here
            if self.kind == "file":
                if not ok:
                    return
                t = self.clock_start + self._index / self.fps
                delay = t - time.monotonic()
                if self.realtime and delay > 0 and self._stop.wait(delay):
                    return
            elif not ok or waited >= STALL_SECONDS:
                # a frame after a longer gap is dropped too: the stream behind it lags (buffered upstream)
                if not self._reopen(ok, stalled=waited >= STALL_SECONDS):
                    return
                continue
            else:
                t = time.monotonic()
            self._publish(image, t)

    def _reopen(self, read_ok: bool, stalled: bool) -> bool:
        """Releases a live source that failed or stalled and reopens it with backoff; False: stop capturing."""
        if self.reconnect_enabled:
            why = f"stalled (no new frame for {STALL_SECONDS:g} s)" if stalled else "stopped delivering frames"
            self._say(f"camera {self.uri} {why}; reconnecting with backoff")  # said before counted: a reader
        if not read_ok:                                                       # seeing the count sees the line
            self.read_errors += 1
        if stalled:
            self.stalls += 1
        if not self.reconnect_enabled:
            return False
        self._cap.release()
        while not self._stop.wait(self._backoff):  # unplugged USB camera, restarted or hung stream server, ...
            self._backoff = min(self.max_backoff, self._backoff * 2)
            cap, _ = self._capture()  # bounded: OPEN_TIMEOUT_S for streams
            if cap.isOpened():
                self._cap, self._backoff = cap, 0.25
                self._say(f"camera {self.uri} reconnected")
                self.reconnects += 1
                return True
            cap.release()
        return False

    def _say(self, line: str) -> None:
        if self.note is not None:
            self.note(line)

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
        """Ends the capture; returns within about 2.5 s, as a read or a reopen under way runs out first."""
        self._stop.set()
        if self._thread is None:
            self._cap.release()
            return
        # a backend without timeouts (GStreamer) may stay in its read longer: the thread releases it afterwards
        self._thread.join(timeout=max(STALL_SECONDS, OPEN_TIMEOUT_S) + 0.5)
