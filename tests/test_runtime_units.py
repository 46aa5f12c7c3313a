"""Runtime building blocks without a model: ring buffer, incremental features, smoothing, stats."""

from __future__ import annotations

import json

import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgemm.runtime.postprocess import Smoother, activate
from edgemm.runtime.ring import AudioRing
from edgemm.transforms import v1 as preprocess
from edgemm.transforms.audio import IncrementalFeatures
from edgemm.runtime.metrics import metrics_registry
from edgemm.runtime.stats import StatsRecorder, describe, read_stats


def test_ring_maps_time_to_samples_and_wraps():
    ring = AudioRing(16000, seconds=1.0)
    x = np.arange(40000, dtype=np.float32)
    for i in range(0, 40000, 320):
        ring.write(x[i : i + 320], t_end=10.0 + (i + 320) / 16000)
    assert ring.total == 40000
    assert ring.index_at(10.0 + 1.5) == pytest.approx(24000)
    np.testing.assert_array_equal(ring.read(39000, 40000), x[39000:40000])
    assert not ring.read(1000, 1010).any()  # overwritten long ago: zeros, never stale data
    assert not ring.read(40000, 40010).any()  # not yet written


def test_ring_repairs_missing_and_backward_timestamps():
    ring = AudioRing(1000)
    ring.write(np.zeros(100), 1.0)
    ring.write(np.zeros(100), None)  # missing: continues the sample clock
    ring.write(np.zeros(100), 0.5)  # backwards: continues the sample clock
    assert ring.index_at(1.2) == pytest.approx(300)
    assert ring.gaps == 2


def test_ring_fills_a_dropout_with_silence_so_indices_keep_matching_time():
    ring = AudioRing(1000, seconds=2.0)
    ring.write(np.ones(100), 1.0)  # samples 0..99 end at t = 1.0
    ring.write(np.ones(100), 2.1)  # the stream came back 1 s later: 1000 samples are missing
    assert ring.dropouts == 1 and ring.total == 1200
    assert ring.index_at(2.0) == pytest.approx(1100)
    assert ring.index_at(1.0) == pytest.approx(100)  # the old audio keeps its capture time
    assert not ring.read(100, 1100).any() and ring.read(1100, 1200).all()
    ring.write(np.ones(100), 2.2 + 0.3)  # jitter below max_gap is not a dropout
    assert ring.dropouts == 1


def test_ring_time_of_inverts_index_at():
    ring = AudioRing(1000)
    ring.write(np.zeros(500), 3.0)
    assert ring.time_of(250) == pytest.approx(2.75) and ring.index_at(ring.time_of(123)) == pytest.approx(123)


def test_ring_keeps_the_newest_samples_of_an_oversized_write():
    ring = AudioRing(1000, seconds=1.0)
    ring.write(np.zeros(300), 0.3)
    x = np.arange(2500, dtype=np.float32)
    ring.write(x, 2.8)
    np.testing.assert_array_equal(ring.read(1800, 2800), x[-1000:])


def test_incremental_features_equal_the_reference_and_compute_only_new_hops():
    spec = preprocess.AudioSpec()
    rng = np.random.default_rng(0)
    signal = rng.normal(0, 0.1, 3 * 16000).astype(np.float32)
    ring = AudioRing(16000)
    ring.write(signal, 3.0)
    inc = IncrementalFeatures(preprocess.audio_from_v1(spec))
    for end in (16000, 16320, 20000 // 320 * 320, 3 * 16000):
        got = inc.features(ring, end)
        want = preprocess.audio_features(signal[:end], 16000, spec)
        np.testing.assert_allclose(got, want, atol=1e-5)
    before = inc.computed
    inc.features(ring, 3 * 16000)
    assert inc.computed == before  # nothing new: nothing computed
    early = inc.features(ring, 3200)  # before a full second: left-padded with silence like the reference
    np.testing.assert_allclose(early, preprocess.audio_features(signal[:3200], 16000, spec), atol=1e-5)


def test_smoother_announces_changes_once_and_respects_the_threshold():
    s = Smoother(("a", "b", "c"), alpha=0.5, threshold=0.6)
    d1 = s.update(np.array([0.9, 0.05, 0.05]))
    d2 = s.update(np.array([0.9, 0.05, 0.05]))
    assert d1.changed and d1.label == "a" and not d2.changed
    d3 = s.update(np.array([0.0, 1.0, 0.0]))  # smoothed: a 0.45, b 0.525 -> below threshold
    assert d3.label == "b" and not d3.changed
    assert s.update(np.array([0.0, 1.0, 0.0])).changed
    np.testing.assert_allclose(activate(np.array([1.0, 1.0]), "auto"), [0.5, 0.5])


def test_stats_file_lines_parse_and_a_partial_last_line_is_ignored(tmp_path):
    path = tmp_path / "s.jsonl"
    rec = StatsRecorder(path)
    for i in range(5):
        rec.add({"t": float(i), "inference": 1.0 + i, "loop": 2.0})
    rec.close(rec.summary())
    with open(path, "a") as f:
        f.write('{"t": 5.0, "infer')  # a writer killed mid-line
    records, summary = read_stats(path)
    assert len(records) == 5 and summary["inferences"] == 5
    assert summary["stages_ms"]["inference"]["count"] == 4  # the first inference is reported apart
    assert summary["first_inference"]["inference"] == 1.0
    families = text_string_to_metric_families(generate_latest(metrics_registry(rec, "unit")).decode())
    assert [s.value for f in families for s in f.samples if s.name == "edgemm_inferences_total"] == [5]
    assert describe([])["count"] == 0
    assert json.loads(path.read_text().splitlines()[0])["t"] == 0.0
