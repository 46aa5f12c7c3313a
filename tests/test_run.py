"""`edgemm run` with real components: LiteRT, OpenCV file and HTTP sources, PyAudio on a PulseAudio
virtual microphone, signals. The model is the shipped teacher converted once per session."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.loopback import MjpegServer

from edgemm.cli import main
from edgemm.manifest import load_manifest
from edgemm.runtime import session
from edgemm.runtime.stats import read_stats
from edgemm.wav import write_wav

pytestmark = pytest.mark.convert
FPS, RATE, HOP_MS = 30, 16000, 20.0
BURSTS = np.arange(0.2, 3.0, 0.5)  # tone bursts (known times, seconds)


# -- A/V alignment -------------------------------------------------------------------------------------

def _timestamped_media(tmp: Path, seconds: float = 3.0):
    """A video whose frames carry their index as 8 black/white stripes, and a WAV with 1 kHz bursts at BURSTS."""
    import cv2

    video = tmp / "stamped.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (320, 240))
    for i in range(int(seconds * FPS)):
        frame = np.zeros((240, 320, 3), np.uint8)
        for bit in range(8):
            if (i >> bit) & 1:
                frame[:, bit * 40 : (bit + 1) * 40] = 255
        writer.write(frame)
    writer.release()
    audio = np.zeros(int(seconds * RATE), np.float32)
    t = np.arange(int(0.03 * RATE)) / RATE
    for start in BURSTS:
        i = int(round(start * RATE))
        audio[i : i + t.size] = 0.5 * np.sin(2 * np.pi * 1000 * t)
    write_wav(tmp / "bursts.wav", audio, RATE)
    return video, tmp / "bursts.wav"


def _frame_index(image) -> int:
    row = image[120, 20::40].mean(axis=-1)
    return int(sum(1 << bit for bit, v in enumerate(row[:8]) if v > 128))


def _window_end_media_time(window: np.ndarray, frame_time: float) -> float | None:
    """Where the window ends on the media timeline, from the last burst onset inside it."""
    loud = np.flatnonzero(np.abs(window) > 0.05)
    if loud.size == 0:
        return None
    onsets = loud[np.concatenate([[True], np.diff(loud) > 100])]
    onset = onsets[-1]
    candidates = BURSTS + (window.size - onset) / RATE
    return float(candidates[np.argmin(np.abs(candidates - frame_time))])


@pytest.mark.parametrize("unpaced", [True, False], ids=["unpaced", "paced"])
def test_each_frame_is_paired_with_the_audio_ending_at_its_capture_time(converted_teacher, tmp_path, unpaced):
    out, _ = converted_teacher
    video, wav = _timestamped_media(tmp_path)
    errors = []

    def tap(frame, window, decision):
        end = _window_end_media_time(window, _frame_index(frame.image) / FPS)
        if end is not None:
            errors.append(1e3 * (end - _frame_index(frame.image) / FPS))

    summary = session.run_session(load_manifest(out), camera=str(video), mic=str(wav), unpaced=unpaced,
                                  emit=lambda s: None, note=lambda s: None, tap=tap)
    assert summary["inferences"] >= 60 and len(errors) >= 50
    errors = np.array(errors)
    # The window end is snapped down to the hop grid: between one hop early and exact.
    assert errors.max() <= 1.0 and errors.min() >= -HOP_MS - 1.0, (errors.min(), errors.max())
    print(f"pairing error ({'unpaced' if unpaced else 'paced'}): min {errors.min():.2f} ms, max {errors.max():.2f} ms")


# -- end to end on the demo media ------------------------------------------------------------------------

def _segment_end_labels(stats: Path, truth: list[dict], fps: float) -> list[tuple[str, str]]:
    from examples.av_digits.demo_media import segment_end_accuracy

    return segment_end_accuracy(read_stats(stats)[0], truth, fps)


def test_demo_media_decisions_match_the_labels(converted_teacher, demo_media, tmp_path):
    from examples.av_digits import demo_media as dm

    out, report = converted_teacher
    stats = tmp_path / "s.jsonl"
    result = CliRunner().invoke(main, ["run", "--model", str(out), "--camera", str(demo_media.video),
                                       "--mic", str(demo_media.audio), "--unpaced", "--stats", str(stats)])
    assert result.exit_code == 0, result.output
    pairs = _segment_end_labels(stats, dm.load_truth(demo_media.truth), dm.DemoConfig().fps)
    correct = sum(a == b for a, b in pairs)
    assert len(pairs) == len(dm.DemoConfig().digits)
    assert correct >= 0.8 * len(pairs), pairs
    records, summary = read_stats(stats)
    assert summary["inferences"] == len(records) > 400
    for stage in ("image_pre", "audio_features", "inference", "invoke", "postprocess", "loop", "pairing_error"):
        assert {"count", "mean", "std", "min", "p50", "p90", "p99", "max"} <= set(summary["stages_ms"][stage])
    assert summary["counters"]["audio_overflows"] == 0 and "peak_rss_mb" in summary


def test_onnx_runtime_backend_runs_the_int8_onnx(converted_teacher, demo_media, tmp_path):
    out, _ = converted_teacher
    result = CliRunner().invoke(main, ["run", "--model", str(out), "--backend", "ort-cpu", "--camera",
                                       str(demo_media.video), "--mic", str(demo_media.audio), "--unpaced",
                                       "--duration", "3", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["artifact"] == "int8_onnx" and summary["inferences"] >= 55


# -- live camera on loopback (MJPEG over HTTP) -----------------------------------------------------------

def test_live_http_camera_at_30_fps(converted_teacher, demo_media, tmp_path):
    out, _ = converted_teacher
    server = MjpegServer.from_video(demo_media.video, fps=30.0, max_frames=60)
    try:
        summary = session.run_session(load_manifest(out), camera=server.url, mic=str(demo_media.audio),
                                      duration=4.0, stats=tmp_path / "s.jsonl", emit=lambda s: None,
                                      note=lambda s: None)
    finally:
        server.close()
    c = summary["counters"]
    assert c["frames_captured"] >= 90  # ~30 fps for 4 s
    assert summary["inferences"] >= 80
    assert summary["stages_ms"]["frame_age"]["p50"] < 50  # the newest frame, not a queued one
    assert summary["stages_ms"]["sensor_to_decision"]["count"] >= 80


# -- real virtual microphone (PulseAudio null sink) ------------------------------------------------------

def test_virtual_microphone_through_pyaudio(converted_teacher, virtual_mic, tmp_path):
    from examples.av_digits import demo_media as dm

    out, _ = converted_teacher
    config = dm.DemoConfig(digits=(3, 1, 4, 1, 5, 9))
    media = dm.render(tmp_path / "media", config)
    stats = tmp_path / "s.jsonl"
    player = []

    def play_when_listening():
        time.sleep(0.05)
        player.append(virtual_mic.play(media.audio))

    summary = None
    threading.Thread(target=play_when_listening, daemon=True).start()
    summary = session.run_session(load_manifest(out), camera=str(media.video), mic="default", stats=stats,
                                  emit=lambda s: None, note=lambda s: None)
    for p in player:
        p.wait(timeout=30)
    assert "default" in summary["microphone"] or "pulse" in summary["microphone"]
    pairs = _segment_end_labels(stats, dm.load_truth(media.truth), config.fps)
    correct = sum(a == b for a, b in pairs)
    assert correct >= 4, pairs  # through a real audio stack, with its start-up offset
    assert summary["counters"]["audio_overflows"] == 0
    assert summary["counters"]["audio_samples"] > 0.8 * len(config.digits) * config.segment_seconds * RATE


# -- signals and bad input -------------------------------------------------------------------------------

def _run_process(out: Path, media, stats: Path):
    return subprocess.Popen([sys.executable, "-m", "edgemm", "run", "--model", str(out), "--camera", str(media.video),
                             "--mic", str(media.audio), "--stats", str(stats)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_records(stats: Path, n: int, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stats.exists() and len(stats.read_text().splitlines()) >= n:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {n} records in {stats}")


def test_sigterm_writes_the_summary(converted_teacher, demo_media, tmp_path, record_property):
    record_property("fault", "SIGTERM mid-run: summary written")
    record_property("injected", 1)
    out, _ = converted_teacher
    stats = tmp_path / "s.jsonl"
    proc = _run_process(out, demo_media, stats)
    _wait_for_records(stats, 20)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    records, summary = read_stats(stats)
    assert summary is not None and summary["inferences"] == len(records) >= 20
    assert "summary:" in stdout


def test_kill_9_leaves_complete_parseable_lines(converted_teacher, demo_media, tmp_path, record_property):
    record_property("fault", "kill -9 mid-run: every complete stats line parses")
    record_property("injected", 1)
    out, _ = converted_teacher
    stats = tmp_path / "s.jsonl"
    proc = _run_process(out, demo_media, stats)
    _wait_for_records(stats, 20)
    proc.kill()
    proc.wait(timeout=30)
    records, summary = read_stats(stats)
    assert summary is None and len(records) >= 20
    complete = stats.read_text().split("\n")[:-1]
    assert all(json.loads(line) for line in complete)


@pytest.mark.parametrize("args,message", [
    (["--camera", "missing.avi", "--mic", "x.wav"], "no such video file"),
    (["--camera", "http://127.0.0.1:9/none.mjpg"], "cannot open stream"),
    (["--camera", "/dev/video7"], "cannot open camera"),
    (["--camera", "demo", "--backend", "edgetpu"], "int8_edgetpu.tflite not found"),
])
def test_bad_run_inputs_are_one_line_errors(converted_teacher, demo_media, args, message):
    out, _ = converted_teacher
    args = [str(demo_media.video) if a == "demo" else a for a in args]
    if "--mic" not in args:
        args += ["--mic", str(demo_media.audio)]
    result = CliRunner().invoke(main, ["run", "--model", str(out), *args, "--duration", "1"])
    assert result.exit_code in (3, 5), result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.output
