"""Reliability: fuzzed parsers, random model files, faults during `edgemm run` (camera drop, backend errors,
audio overflow), all with real components except the fault injectors, which are named as such."""

from __future__ import annotations

import io
import json
import struct
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgemm import profiles
from edgemm.transforms import v1 as preprocess
from edgemm.errors import DataError, InputError
from edgemm.manifest import load_manifest
from edgemm.runtime.stats import read_stats
from edgemm.wav import read_wav

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                           max_leaves=20)


# -- fuzzing the parsers ----------------------------------------------------------------------------------

@FUZZ
@given(data=st.dictionaries(st.sampled_from(["schema_version", "artifacts", "preprocess", "labels", "x"]), json_values))
def test_manifest_parser_only_raises_input_errors(tmp_path, data):
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    try:
        load_manifest(tmp_path)
    except InputError:
        pass


INPUT_KEYS = ["source", "layout", "color", "size", "resize", "mean", "std", "frames", "sample_rate", "window",
              "features", "n_fft", "hop_length", "n_mels", "axes", "from", "value", "bogus"]
SOURCES = st.sampled_from(["camera", "mic", "state", "constant", "radar"])


@FUZZ
@given(inputs=st.dictionaries(st.text(max_size=6), st.dictionaries(st.sampled_from(INPUT_KEYS), json_values | SOURCES),
                              max_size=3),
       outputs=st.dictionaries(st.text(max_size=6), st.dictionaries(
           st.sampled_from(["head", "activation", "labels", "threshold", "x"]), json_values), max_size=2))
def test_model_spec_parser_only_raises_input_errors(inputs, outputs):
    from edgemm.spec import from_dict

    for source in ("camera", "mic", "state", "constant"):  # also fuzz the keys of each kind of input
        try:
            from_dict({"inputs": {k: {**v, "source": v.get("source", source)} for k, v in inputs.items()},
                       "outputs": outputs})
        except InputError:
            pass


@FUZZ
@given(data=st.dictionaries(st.sampled_from(["name", "description", "accelerator", "artifacts", "backends", "threads",
                                             "camera", "budgets", "telemetry", "libraries", "bogus"]), json_values))
def test_profile_parser_only_raises_input_errors(tmp_path, data):
    try:
        profiles.parse_profile(data, tmp_path / "p.yaml")
    except InputError:
        pass


@FUZZ
@given(blob=st.binary(max_size=300))
def test_wav_reader_on_random_bytes(tmp_path, blob):
    path = tmp_path / "x.wav"
    path.write_bytes(blob)
    try:
        samples, rate = read_wav(path)
        assert samples.dtype == np.float32 and rate > 0
    except InputError:
        pass


@FUZZ
@given(channels=st.integers(1, 3), width=st.sampled_from([1, 2, 3, 4]), rate=st.integers(1000, 96000),
       frames=st.integers(0, 200), cut=st.integers(0, 40))
def test_wav_reader_on_valid_and_truncated_files(tmp_path, channels, width, rate, frames, cut):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(bytes(frames * channels * width))
    data = buf.getvalue()
    path = tmp_path / "x.wav"
    path.write_bytes(data[: len(data) - cut] if cut else data)
    try:
        samples, got_rate = read_wav(path)
        assert got_rate == rate and samples.ndim == 1
    except InputError:
        assert cut > 0 or frames == 0


@FUZZ
@given(blob=st.binary(max_size=200))
def test_idx_reader_on_random_bytes(tmp_path, blob):
    from examples.av_digits.dataset import read_idx

    path = tmp_path / "x.idx"
    path.write_bytes(blob)
    try:
        read_idx(path)
    except DataError:
        pass


@FUZZ
@given(h=st.integers(1, 64), w=st.integers(1, 64), c=st.sampled_from([1, 3, 4]), value=st.integers(0, 255))
def test_image_preprocessing_on_any_frame_size(h, w, c, value):
    frame = np.full((h, w, c) if c > 1 else (h, w), value, np.uint8)
    x = preprocess.preprocess_image(frame, preprocess.ImageSpec())
    assert x.shape == (32, 32, 1) and np.isfinite(x).all()


@FUZZ
@given(n=st.integers(0, 20000), rate=st.sampled_from([8000, 16000, 22050, 44100, 48000]),
       scale=st.sampled_from([0.0, 1e-9, 1.0, 1e6]))
def test_audio_features_on_extreme_signals(n, rate, scale):
    x = (np.random.default_rng(n).normal(size=n) * scale).astype(np.float32)
    feats = preprocess.audio_features(x, rate, preprocess.AudioSpec())
    assert feats.shape == (49, 40, 1) and np.isfinite(feats).all()


# -- random bytes as model files -----------------------------------------------------------------------------

@pytest.mark.parametrize("suffix,head", [(".tflite", b""), (".tflite", b"\x10\x00\x00\x00TFL3"), (".onnx", b"")])
def test_random_model_files_never_crash_the_caller(tmp_path, suffix, head, record_property):
    from edgemm.backends.isolated import run_isolated

    rng = np.random.default_rng(0)
    record_property("files", 5)
    for i in range(5):
        path = tmp_path / f"m{i}{suffix}"
        path.write_bytes(head + rng.bytes(int(rng.integers(16, 4000))))
        with pytest.raises(InputError):
            run_isolated("litert" if suffix == ".tflite" else "ort-cpu", path, {"x": np.zeros((1, 4), np.float32)})


MUTATED_LOAD = r"""
import sys
import numpy as np
from edgemm.backends.registry import open_backend
from edgemm.errors import EdgemmError
for path in sys.argv[2:]:
    try:
        backend = open_backend(sys.argv[1], path)
        backend.run({t.name: np.zeros([d if d > 0 else 1 for d in t.shape], np.float32) for t in backend.inputs})
        print("loaded")
    except EdgemmError as e:
        print("refused", str(e).splitlines()[0][:60])
"""


@pytest.mark.convert
@pytest.mark.parametrize("artifact,kind", [("int8.tflite", "litert"), ("int8.onnx", "ort-cpu")])
def test_mutated_real_models_load_or_are_refused_in_process(converted_teacher, tmp_path, artifact, kind, record_property):
    """Real converted models with bytes flipped in their structure (the flatbuffer/protobuf header and tail),
    loaded by edgemm's backends in-process as `edgemm run` does: each one runs or is refused with an
    EdgemmError; none crashes the process or escapes as another exception (checked from outside)."""
    import subprocess
    import sys

    out, _ = converted_teacher
    original = (out / artifact).read_bytes()
    rng = np.random.default_rng(7)
    paths = []
    for i in range(25):
        blob = bytearray(original)
        for _ in range(int(rng.integers(1, 20))):
            pos = int(rng.integers(0, 3000) if rng.random() < 0.5 else rng.integers(len(blob) - 6000, len(blob)))
            blob[pos] = int(rng.integers(0, 256))
        paths.append(tmp_path / f"m{i}{Path(artifact).suffix}")
        paths[-1].write_bytes(bytes(blob))
    record_property("files", len(paths))
    proc = subprocess.run([sys.executable, "-c", MUTATED_LOAD, kind, *map(str, paths)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]  # no signal, no uncaught exception
    outcomes = [line.split()[0] for line in proc.stdout.splitlines()]
    assert len(outcomes) == len(paths) and set(outcomes) <= {"loaded", "refused"}, proc.stdout
    assert "refused" in outcomes


# -- faults during edgemm run --------------------------------------------------------------------------------

class FaultInjectingBackend:
    """Test double around a real backend: raises on the calls listed in `fail_on`."""

    def __init__(self, real, fail_on):
        self._real, self._fail_on, self.calls = real, set(fail_on), 0

    def run(self, feeds):
        self.calls += 1
        if self.calls in self._fail_on:
            raise RuntimeError(f"injected failure on call {self.calls}")
        return self._real.run(feeds)

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.convert
def test_backend_error_on_one_input_is_counted_and_the_run_goes_on(converted_teacher, demo_media, tmp_path,
                                                                   record_property):
    record_property("fault", "backend raises on 2 inputs (policy continue), then on 1 (policy stop)")
    record_property("injected", 3)
    from edgemm.runtime import session

    out, _ = converted_teacher
    lines = []
    summary = session.run_session(load_manifest(out), camera=str(demo_media.video), mic=str(demo_media.audio),
                                  unpaced=True, duration=3.0, stats=tmp_path / "s.jsonl", emit=lines.append,
                                  note=lambda s: None, backend_wrapper=lambda b: FaultInjectingBackend(b, {5, 9}))
    assert summary["counters"]["backend_errors"] == 2
    assert summary["inferences"] == 60 - 2  # 3 s at 20 fps, two failed
    assert sum("injected failure" in line for line in lines) == 2
    with pytest.raises(InputError, match="backend failed 1 time"):
        session.run_session(load_manifest(out), camera=str(demo_media.video), mic=str(demo_media.audio), unpaced=True,
                            stats=tmp_path / "stop.jsonl", on_error="stop", emit=lambda s: None, note=lambda s: None,
                            backend_wrapper=lambda b: FaultInjectingBackend(b, {3}))
    records, stop_summary = read_stats(tmp_path / "stop.jsonl")
    assert stop_summary["interrupted"] and len(records) == 2  # what was measured before the stop is kept


@pytest.mark.convert
def test_network_camera_that_disappears_and_returns(converted_teacher, demo_media, record_property):
    record_property("fault", "HTTP camera goes away for 1.5 s and comes back")
    record_property("injected", 1)
    import threading

    from benchmarks.loopback import MjpegServer
    from edgemm.runtime import session

    out, _ = converted_teacher
    first = MjpegServer.from_video(demo_media.video, max_frames=30)
    port = first.server.server_address[1]
    result = {}

    def outage():
        time.sleep(1.5)
        first.close()  # the camera goes away ...
        time.sleep(1.5)
        result["second"] = MjpegServer.from_video(demo_media.video, max_frames=30, port=port)  # ... and comes back

    threading.Thread(target=outage, daemon=True).start()
    notes = []
    summary = session.run_session(load_manifest(out), camera=first.url, mic=str(demo_media.audio), duration=7.0,
                                  emit=lambda s: None, note=notes.append)
    result["second"].close()
    c = summary["counters"]
    assert c["camera_reconnects"] >= 1 and c["camera_read_errors"] >= 1
    assert any("reconnecting" in n for n in notes) and any(n.endswith("reconnected") for n in notes), notes
    assert summary["inferences"] > 60  # before and after the outage


def test_audio_overflow_and_callback_errors_are_counted(record_property):
    """The PyAudio callback on a real ring buffer, fed with PortAudio's overflow flag and a bad chunk."""
    record_property("fault", "PortAudio input overflow + a malformed chunk in the audio callback")
    record_property("injected", 2)
    import pyaudio

    from edgemm.capture.audio import MicSource
    from edgemm.runtime.ring import AudioRing

    mic = object.__new__(MicSource)  # the callback alone: no audio device needed
    mic._pyaudio, mic.ring, mic.input_latency, mic.callback_errors = pyaudio, AudioRing(16000), 0.01, 0
    chunk = struct.pack("<320h", *([1000] * 320))
    assert mic._callback(chunk, 320, {}, 0) == (None, pyaudio.paContinue)
    mic._callback(chunk, 320, {}, pyaudio.paInputOverflow)
    mic._callback(b"\x00", 1, {}, 0)  # an odd byte count: counted, the stream goes on
    assert mic.ring.overflows == 1 and mic.callback_errors == 1 and mic.ring.total == 640


@pytest.mark.convert
def test_sound_server_that_dies_and_returns(converted_teacher, demo_media, virtual_mic, tmp_path, record_property):
    """PulseAudio is killed mid-run (every PortAudio stream on it breaks) and restarted: the microphone
    watchdog reopens the device, the hole becomes silence, and the loop keeps deciding throughout."""
    record_property("fault", "PulseAudio killed mid-run (PortAudio stream dies), restarted 1.5 s later")
    record_property("injected", 1)
    import threading

    from benchmarks.loopback import MjpegServer
    from edgemm.runtime import session

    out, _ = converted_teacher
    camera = MjpegServer.from_video(demo_media.video, max_frames=30)
    players = [virtual_mic.play(demo_media.audio)]

    def outage():
        time.sleep(2.0)
        virtual_mic.restart(down_seconds=1.5)
        players.append(virtual_mic.play(demo_media.audio))

    threading.Thread(target=outage, daemon=True).start()
    notes = []
    try:
        summary = session.run_session(load_manifest(out), camera=camera.url, mic="default", duration=9.0,
                                      stats=tmp_path / "s.jsonl", emit=lambda s: None, note=notes.append)
    finally:
        camera.close()
        for player in players:
            player.terminate()
    c = summary["counters"]
    assert c["audio_stream_errors"] >= 1 and c["audio_reopens"] >= 1, c
    assert any("stopped delivering audio" in n for n in notes) and any("microphone reopened" in n for n in notes)
    records, _ = read_stats(tmp_path / "s.jsonl")
    late = [r for r in records if r["t"] - records[0]["t"] > 7.0]
    assert late, "no inferences after the sound server came back"
    # after the reopen the audio is live again: frames pair with audio captured within a hop of them
    assert np.median([abs(r["pairing_error"]) for r in late]) <= 20.0
    assert c["audio_samples"] >= 16000 * 7  # silence fills the outage, so the sample clock keeps time


def test_usb_camera_that_disappears_and_returns(monkeypatch, record_property):
    """A V4L2 camera cannot exist on this machine, so ScriptedCapture stands in for cv2.VideoCapture:
    5 frames, unplugged (reads fail, two reopen attempts fail), replugged, 5 frames."""
    record_property("fault", "USB camera unplugged, 2 failed reopens, replugged (scripted VideoCapture: no V4L2 here)")
    record_property("injected", 1)
    from edgemm.capture.camera import CameraSource

    class ScriptedCapture:  # mock of a USB camera's cv2.VideoCapture
        def __init__(self, opened, frames):
            self.opened, self.frames = opened, frames

        def isOpened(self):  # noqa: N802 (OpenCV's naming)
            return self.opened

        def read(self):
            if self.frames:
                self.frames -= 1
                time.sleep(0.01)
                return True, np.zeros((8, 8, 3), np.uint8)
            return False, None

        def get(self, prop):
            return 30.0

        def release(self):
            self.opened = False

    script = iter([ScriptedCapture(True, 5), ScriptedCapture(False, 0), ScriptedCapture(False, 0),
                   ScriptedCapture(True, 5)])
    monkeypatch.setattr(CameraSource, "_capture",
                        lambda self: (next(script, None) or ScriptedCapture(False, 0), "camera 0"))
    camera = CameraSource("0", max_backoff=0.3).start()
    deadline = time.monotonic() + 10
    while camera.frames_captured < 10 and time.monotonic() < deadline:
        camera.next_frame(timeout=0.2)
    camera.stop()
    assert camera.frames_captured == 10 and camera.reconnects == 1 and camera.read_errors >= 1


# -- untrusted files and endpoints ---------------------------------------------------------------------------

@pytest.mark.convert
def test_a_keras_lambda_layer_runs_no_code_on_convert(tmp_path):
    """A .keras file whose Lambda layer would write a file when called: convert refuses it (Keras safe mode)
    and the code never runs."""
    import keras
    from click.testing import CliRunner

    from edgemm.cli import main

    marker = tmp_path / "code_ran"
    inp = keras.Input((4,), name="x")
    target = str(marker)  # a plain string: Keras serialises the lambda's closure with it
    out = keras.layers.Lambda(lambda t: (open(target, "w").write("ran"), t * 2.0)[1])(inp)
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(out)).save(tmp_path / "lambda.keras")
    marker.unlink()  # building the model called the lambda once; loading it must not
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "lambda.keras"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert "safe" in result.stderr.lower() and not marker.exists()


def test_no_pickle_eval_or_unsafe_yaml_in_the_code():
    """Static guard over everything edgemm ships: no pickle, eval/exec, unsafe YAML or pickled NumPy."""
    import re

    root = Path(__file__).resolve().parents[1]
    banned = re.compile(r"\bimport pickle\b|\bpickle\.|\beval\(|\bexec\(|yaml\.load\(|yaml\.unsafe_load|"
                        r"allow_pickle=True|torch\.load\(|marshal\.loads")
    offenders = [f"{path.relative_to(root)}:{n}" for folder in ("edgemm", "converters", "benchmarks")
                 for path in sorted((root / folder).rglob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1) if banned.search(line)]
    assert not offenders, offenders


def test_metrics_endpoint_binds_to_loopback_and_a_busy_port_is_one_line():
    import urllib.request

    from edgemm.cli import main
    from edgemm.runtime.metrics import serve_metrics
    from edgemm.runtime.stats import StatsRecorder

    assert next(p for p in main.commands["run"].params if p.name == "metrics_host").default == "127.0.0.1"
    server = serve_metrics(StatsRecorder(None), 0)
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        assert b"edgemm" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        with pytest.raises(InputError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            serve_metrics(StatsRecorder(None), port)
    finally:
        server.shutdown()
        server.server_close()
