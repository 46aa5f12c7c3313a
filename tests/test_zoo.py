"""Any model the spec describes: six models of different shapes (tests/zoo.py) are converted, checked for
int8 agreement per head, run on recorded media and on the loopback camera / virtual microphone, and
benchmarked. Real components throughout: TensorFlow for conversion, LiteRT and ONNX Runtime, OpenCV,
PulseAudio through PyAudio."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgemm.cli import main
from edgemm.runtime.stats import read_stats
from tests import zoo

pytestmark = [pytest.mark.convert, pytest.mark.slow]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return zoo.write_media(tmp_path_factory.mktemp("zoo-media"))


@pytest.fixture(scope="module", params=list(zoo.MODELS))
def converted(request, tmp_path_factory):
    z = zoo.MODELS[request.param]
    work = tmp_path_factory.mktemp(z.name)
    model = zoo.train(z, work / f"{z.name}.keras")
    calib, val = zoo.write_data(z, work)
    result = CliRunner().invoke(main, ["convert", str(model), "--out", str(work / "out"), "--calib", str(calib),
                                       "--val", str(val)])
    assert result.exit_code == 0, result.output
    return z, work, json.loads((work / "out" / "report.json").read_text())


def test_int8_artifacts_agree_with_the_float_model_per_head(converted):
    z, _, report = converted
    for key in ("int8_tflite", "int8_onnx"):
        heads = report["artifacts"][key]["heads"]
        assert set(heads) >= {n for n, o in z.spec["outputs"].items() if o["head"] != "state"}
        for name, h in heads.items():
            if h["head"] in ("classify", "multilabel"):
                assert h["agreement"] >= 0.95, (key, name, h)
            else:
                assert h["sqnr_db"] >= 20.0 and h["cosine"] >= 0.99, (key, name, h)
    manifest = json.loads((converted[1] / "out" / "manifest.json").read_text())
    assert manifest["schema_version"] == 2 and set(manifest["spec"]["inputs"]) == set(z.spec["inputs"])


def _segment_labels(records: list[dict], order: list[int]) -> list:
    """The decision of the last inference inside each second (one class per second)."""
    last = {}
    for r in records:
        if r.get("media_t") is not None and "label" in r:
            last[int(r["media_t"])] = r["label"]
    return [last.get(i) for i in range(len(order))]


@pytest.mark.parametrize("backend", ["litert", "ort-cpu"])
def test_runs_on_recorded_media_and_decides_each_segment(converted, media, tmp_path, backend):
    z, work, _ = converted
    video, wav, order = media
    stats, outputs = tmp_path / "stats.jsonl", tmp_path / "outputs.jsonl"
    result = CliRunner().invoke(main, ["run", "--model", str(work / "out"), "--camera", str(video), "--mic", str(wav),
                                       "--unpaced", "--backend", backend, "--stats", str(stats),
                                       "--outputs", str(outputs), "--json"])
    assert result.exit_code == 0, result.output
    records, summary = read_stats(stats)
    assert summary["inferences"] >= 10 and summary["counters"]["backend_errors"] == 0
    lines = [json.loads(line) for line in outputs.read_text().splitlines()]
    assert len(lines) == summary["inferences"]
    names = {n for n in z.spec["outputs"]}
    assert set(lines[0]["outputs"]) == names
    heads = z.spec["outputs"]
    if any(o["head"] == "classify" for o in heads.values()):
        labels = next(o.get("labels") for o in heads.values() if o["head"] == "classify") or ["0", "1", "2"]
        assert _segment_labels(records, order) == [labels[i] for i in order]
    if any(o["head"] == "multilabel" for o in heads.values()):
        on = [r.get("labels") for r in records]
        assert any(x == ["low"] for x in on) and any(x == ["high"] for x in on), on[::5]
    if "grid" in names:
        assert np.asarray(lines[-1]["outputs"]["grid"]).shape == (1, zoo.CLASSES, 4)


def test_runs_live_on_the_loopback_camera_and_virtual_microphone(converted, media, virtual_mic, tmp_path):
    from benchmarks.loopback import MjpegServer

    z, work, _ = converted
    video, wav, _ = media
    stats = tmp_path / "live.jsonl"
    server = MjpegServer.from_video(video, fps=10.0, max_frames=30)
    player = virtual_mic.play(wav)
    try:
        result = CliRunner().invoke(main, ["run", "--model", str(work / "out"), "--camera", server.url, "--mic",
                                           "default", "--duration", "2.5", "--stats", str(stats)])
    finally:
        player.kill()
        server.close()
    assert result.exit_code == 0, result.output
    _, summary = read_stats(stats)
    assert summary["inferences"] >= 3 and summary["counters"]["backend_errors"] == 0
    uses_audio = any(i["source"] == "mic" for i in z.spec["inputs"].values())
    assert (summary["counters"].get("audio_samples", 0) > 16000) == uses_audio


def test_bench_measures_every_artifact_with_accuracy_and_the_pipeline(converted, media, tmp_path):
    z, work, _ = converted
    video, wav, _ = media
    report = tmp_path / "report"
    result = CliRunner().invoke(main, ["bench", str(work / "out"), "--report", str(report), "--runs", "20",
                                       "--warmup", "2", "--duration", "0.2", "--threads", "1",
                                       "--val", str(work / f"{z.name}_val.npz"), "--pipeline", str(video), str(wav)])
    assert result.exit_code == 0, result.output
    data = json.loads((report / "report.json").read_text())
    measured = {r["artifact"] for r in data["results"] if "latency_ms" in r}
    assert measured == {"float_tflite", "int8_tflite", "float_onnx", "int8_onnx"}
    assert {p["backend"].split(":")[0] for p in data["pipeline"]} == {"litert", "onnxruntime"}
    assert all(p["summary"]["inferences"] > 0 for p in data["pipeline"])


def test_spec_template_lists_every_tensor_and_binds(converted, tmp_path):
    from edgemm.binding import bind
    from edgemm.spec import read_spec_file
    from edgemm.spec_template import model_tensors

    z, work, _ = converted
    for model in (work / "out" / "float.onnx", work / "out" / "int8.tflite"):
        result = CliRunner().invoke(main, ["spec", str(model)])
        assert result.exit_code == 0, result.output
        path = tmp_path / f"{model.stem}.yaml"
        path.write_text(result.output)
        inputs, outputs = model_tensors(model)
        spec = read_spec_file(path)
        assert set(spec.inputs) == {t.name for t in inputs} and set(spec.outputs) == {t.name for t in outputs}
        bind(spec, inputs, outputs)
        assert "GUESS" in result.output
