"""No hang on bad input or a stuck peer: a network camera that stalls or never answers, odd camera URIs, stats
paths that are not regular files or lie in a model directory, a full disk, idle metrics connections. Real
OpenCV, real sockets and HTTP servers, a real kernel file-size limit; no mocks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.stalled_camera import StallingMjpegServer, unanswering_server, wait_until as _wait
from edgemm.capture.camera import CameraSource, classify
from edgemm.errors import InputError
from edgemm.runtime.metrics import serve_metrics
from edgemm.runtime.stats import StatsRecorder, check_stats_path, read_stats

ROOT = Path(__file__).resolve().parents[1]


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text, repr(text)
    return text


# -- network cameras ---------------------------------------------------------------------------------------

def test_stalled_network_camera_is_noticed_within_2_5_s_and_frames_resume():
    server = StallingMjpegServer()
    camera = CameraSource(server.url, max_backoff=1.0)
    notes = []
    camera.note = notes.append
    camera.start()
    try:
        assert _wait(lambda: camera.frames_captured >= 10, 10), "no frames from the loopback camera"
        server.stall()
        stalled_at = time.monotonic()
        assert _wait(lambda: camera.stalls >= 1, 4.0), "the stall was not noticed"
        assert time.monotonic() - stalled_at <= 2.5
        assert any("stalled" in n for n in notes), notes
        last_seq = camera.latest().seq
        server.resume()
        assert _wait(lambda: camera.latest().seq > last_seq + 5, 6.0), "frames did not resume"
        assert camera.reconnects >= 1 and any(n.endswith("reconnected") for n in notes), notes
    finally:
        stop_started = time.monotonic()
        camera.stop()
        server.close()
    assert time.monotonic() - stop_started < 3.0


def test_stop_returns_promptly_while_a_reconnect_waits_on_a_hung_server():
    server = StallingMjpegServer()
    camera = CameraSource(server.url, max_backoff=1.0).start()
    try:
        assert _wait(lambda: camera.frames_captured >= 5, 10)
        server.stall()
        assert _wait(lambda: camera.stalls >= 1, 4.0)
        time.sleep(0.5)  # the reopen is under way now, against a server that does not answer
        started = time.monotonic()
        camera.stop()
        assert time.monotonic() - started < 3.0  # --duration and Ctrl-C end the run while a camera hangs
    finally:
        server.close()


def test_opening_a_stream_whose_server_never_answers_is_a_one_line_error_within_seconds():
    with unanswering_server() as listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/video"
        started = time.monotonic()
        with pytest.raises(InputError) as error:
            CameraSource(url)
        assert time.monotonic() - started < 4.0
    assert "cannot open stream" in _one_line(error.value)


# -- camera URIs ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("uri", ["99999999999999999999", "/dev/video99999999999999999999"])
def test_a_huge_camera_index_is_a_one_line_error(uri):
    with pytest.raises(InputError) as error:
        CameraSource(uri)
    assert "out of range" in _one_line(error.value)


def test_an_existing_file_with_a_bang_in_its_name_is_a_file(tmp_path):
    import cv2

    path = tmp_path / "clip!1.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 24))
    for i in range(3):
        writer.write(np.full((24, 32, 3), 80 * i, np.uint8))
    writer.release()
    assert classify(str(path)) == "file"
    assert classify("videotestsrc ! appsink") == "gstreamer"  # a pipeline that is no file stays a pipeline
    camera = CameraSource(str(path), realtime=False)
    try:
        assert camera.read_next() is not None
    finally:
        camera.stop()


# -- the stats file ------------------------------------------------------------------------------------------

def _open_within(path: Path, seconds: float) -> BaseException | None:
    """StatsRecorder(path) in a thread: what it raised (None: nothing), failing the test if it blocks."""
    outcome: list = []

    def target():
        try:
            StatsRecorder(path).close()
            outcome.append(None)
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            outcome.append(e)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with open(path, "rb"):  # a reader unblocks the writer's open
            pass
        pytest.fail(f"StatsRecorder({path}) blocked")
    return outcome[0]


def test_a_fifo_as_stats_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "stats.fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError) as error:
        check_stats_path(fifo)
    assert "not a regular file" in _one_line(error.value)
    assert isinstance(_open_within(fifo, 3.0), InputError)  # also when nobody checked the path first


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full on this system")
def test_a_character_device_as_stats_file_is_refused():
    with pytest.raises(InputError) as error:
        check_stats_path(Path("/dev/full"))
    assert "not a regular file" in _one_line(error.value)
    assert isinstance(_open_within(Path("/dev/full"), 3.0), InputError)


@pytest.mark.parametrize("name", ["manifest.json", "x.jsonl"])
def test_a_stats_file_inside_a_model_directory_is_refused(tmp_path, name):
    model = tmp_path / "model"
    model.mkdir()
    manifest = model / "manifest.json"
    manifest.write_text('{"schema_version": 1}\n')
    for path in (model / name, tmp_path / "." / "model" / name):
        with pytest.raises(InputError) as error:
            check_stats_path(path)
        assert "model directory" in _one_line(error.value)
    with pytest.raises(InputError):
        StatsRecorder(model / name)
    assert manifest.read_text() == '{"schema_version": 1}\n'
    check_stats_path(tmp_path / "x.jsonl")  # beside the model directory is fine


def test_a_partial_line_left_by_kill_9_is_terminated_before_appending(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"t":0.0,"loop":1.0}\n{"t":1.0,"lo')  # the previous run was killed mid-line
    rec = StatsRecorder(path)
    rec.add({"t": 2.0, "loop": 3.0})
    rec.close(rec.summary())
    lines = path.read_text().splitlines()
    assert lines[1] == '{"t":1.0,"lo' and json.loads(lines[2])["t"] == 2.0
    records, summary = read_stats(path)
    assert [r["t"] for r in records] == [0.0, 2.0] and summary["inferences"] == 1


DISK_FULL = """
import json, resource, signal, sys
from edgemm.runtime.stats import StatsRecorder
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
rec = StatsRecorder(sys.argv[1])
for i in range(200):
    rec.add({"t": float(i), "inference": 1.0, "loop": 2.0, "pad": "x" * 50})
summary = rec.summary()
rec.close(summary)
print(json.dumps(summary))
"""


def test_a_write_error_during_the_run_keeps_the_summary_and_warns_once(tmp_path):
    path = tmp_path / "s.jsonl"
    proc = subprocess.run([sys.executable, "-c", DISK_FULL, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 1 and "stats" in warnings[0], proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["inferences"] == 200 and summary["counters"]["stats_write_errors"] == 1
    records, _ = read_stats(path)
    assert 0 < len(records) < 200  # what fitted is still there, each a whole line


# -- the metrics endpoint -------------------------------------------------------------------------------------

def test_idle_metrics_connections_take_no_thread_each_and_a_scrape_is_still_answered():
    rec = StatsRecorder(None)
    rec.add({"t": 0.0, "loop": 1.0})
    before = threading.active_count()
    server = serve_metrics(rec, 0)
    port = server.server_address[1]
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
    try:
        time.sleep(0.3)  # the server has seen them all
        started = time.monotonic()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert time.monotonic() - started < 3.0
        totals = [s.value for f in text_string_to_metric_families(body) for s in f.samples
                  if s.name == "edgemm_inferences_total"]
        assert totals == [1]
        assert threading.active_count() - before <= 6
        idle[0].settimeout(8)
        assert idle[0].recv(1) == b""  # a connection that sends nothing is closed after the timeout
    finally:
        for s in idle:
            s.close()
        server.shutdown()
        server.server_close()


def test_stalled_camera_benchmark_runs_short():
    """The script behind the stalled_camera section of benchmarks/RESULTS.md, in a short version (nothing written)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "stalled_camera.py"), "--stalls", "1", "--opens", "1",
                           "--no-write"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "last frame -> stall counted" in proc.stdout
