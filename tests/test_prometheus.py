"""The metrics endpoint against the real thing: prometheus_client's own parser reads it, promtool lints it, and a
real Prometheus (/usr/bin/prometheus, installed by install.sh) scrapes two `edgemm run` processes standing for
two devices; its histogram_quantile must put the fleet p99 in the bucket of the p99 pooled from their stats
files. The shipped Grafana dashboard may name only series edgemm exports, and each of its queries must return
data in that Prometheus."""

from __future__ import annotations

import bisect
import json
import math
import re
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from edgemm import __version__
from edgemm.cli import main
from edgemm.errors import InputError
from edgemm.manifest import load_manifest
from edgemm.runtime import session
from edgemm.runtime.metrics import LATENCY_BUCKETS_S, ModelInfo, device_id, serve_metrics
from edgemm.runtime.stats import StatsRecorder, read_stats

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "examples" / "grafana" / "edgemm-fleet.json"
SCRAPE_CONFIG = ROOT / "examples" / "prometheus" / "prometheus.yml"
PROMETHEUS, PROMTOOL = Path("/usr/bin/prometheus"), Path("/usr/bin/promtool")
SHA = "0123456789abcdef" * 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(port: int) -> tuple[str, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def _samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _dashboard_queries() -> list[str]:
    """Every PromQL expression of the dashboard (its panels' targets) and of its variables."""
    board = json.loads(DASHBOARD.read_text())
    panels = [p for top in board["panels"] for p in [top, *top.get("panels", [])]]  # rows hold panels too
    queries = [t["expr"] for p in panels for t in p.get("targets", [])]
    queries += [v["definition"] for v in board["templating"]["list"] if v["type"] == "query"]
    return queries


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:edgemm|process)_[a-z0-9_]+", expr))


def _as_promql(expr: str) -> str:
    """A dashboard query as Prometheus takes it: all devices, a 5 s rate window (10 scrapes here)."""
    return expr.replace("$device", ".*").replace("$__rate_interval", "5s")


# -- the endpoint, without a model ------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["jetson-01", "cam_a.lab:2", "x" * 64])
def test_a_device_id_that_fits_a_label_is_kept(value):
    assert device_id(value) == value


@pytest.mark.parametrize("value,message", [
    ("", "empty"), ("x" * 65, "65 characters"), ("two words", "only A-Z"), ('a"b', "only A-Z"),
    ("line\nbreak", "only A-Z"), ("-lead", "only A-Z"), ("caméra", "only A-Z"), ("a{b}", "only A-Z"),
])
def test_a_device_id_that_is_no_safe_label_is_a_one_line_error(value, message):
    with pytest.raises(InputError) as error:
        device_id(value)
    text = str(error.value)
    assert "\n" not in text and message in text and text.startswith("--device-id")


def test_the_endpoint_parses_as_prometheus_text_with_the_device_on_every_series():
    rec = StatsRecorder(None)
    rec.counters["frames_dropped"] = 3
    server = serve_metrics(rec, 0, device="unit-1", info=ModelInfo(SHA, "int8_tflite", "litert", "none"))
    other = serve_metrics(StatsRecorder(None), 0, device="unit-2")  # a second registry in the same process
    try:
        inference_ms = [0.05, 0.3, 0.3, 2.0, 7.0, 40.0, 2000.0]
        for i, ms in enumerate([99.0, *inference_ms]):  # the first is the warm-up, kept apart
            rec.add({"t": float(i), "inference": ms, "loop": ms + 1.0, "pairing_error": -5.0, "invoke": None})
        content_type, text = _scrape(server.server_address[1])
        assert content_type.startswith("text/plain")
        samples = _samples(text)
        assert {s.labels.get("device") for s in samples} == {"unit-1"}
        value = {(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "device"))): s.value
                 for s in samples}
        assert value[("edgemm_inferences_total", ())] == 8
        assert value[("edgemm_frames_dropped_total", ())] == 3
        buckets = {float(s.labels["le"]): s.value for s in samples
                   if s.name == "edgemm_stage_latency_seconds_bucket" and s.labels["stage"] == "inference"}
        assert sorted(buckets) == [*LATENCY_BUCKETS_S, math.inf]
        expected = {le: sum(ms / 1e3 <= le for ms in inference_ms) for le in buckets}
        assert buckets == expected  # one observation per steady record, in seconds
        assert value[("edgemm_stage_latency_seconds_count", (("stage", "inference"),))] == len(inference_ms)
        assert value[("edgemm_stage_latency_seconds_sum", (("stage", "inference"),))] == \
            pytest.approx(sum(inference_ms) / 1e3)
        stages = {s.labels["stage"] for s in samples if s.name == "edgemm_stage_latency_seconds_count"}
        assert stages == {"inference", "loop"}  # no signed pairing_error, nothing for a stage never measured
        info = next(s for s in samples if s.name == "edgemm_model_info")
        assert info.labels == {"device": "unit-1", "version": __version__, "model_sha256": SHA,
                               "artifact": "int8_tflite", "backend": "litert", "profile": "none"}
        names = {s.name for s in samples}
        assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "edgemm_peak_rss_bytes"} <= names
        assert value[("edgemm_peak_rss_bytes", ())] > 1e6
        _, text2 = _scrape(other.server_address[1])
        count2 = {s.name: s.value for s in _samples(text2) if s.labels == {"device": "unit-2"}}
        assert count2["edgemm_inferences_total"] == 0 and "edgemm_stage_latency_seconds_count" not in count2
    finally:
        server.shutdown()
        other.shutdown()


@pytest.mark.skipif(not PROMTOOL.exists(), reason="promtool not installed (install.sh installs prometheus)")
def test_promtool_finds_nothing_to_lint_in_the_endpoint_and_accepts_the_example_config():
    rec = StatsRecorder(None)
    for i in range(3):
        rec.add({"t": float(i), "inference": 1.0, "loop": 2.0})
    server = serve_metrics(rec, 0, device="lint")
    try:
        _, text = _scrape(server.server_address[1])
    finally:
        server.shutdown()
    lint = subprocess.run([str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30,
                          check=False)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr
    config = subprocess.run([str(PROMTOOL), "check", "config", str(SCRAPE_CONFIG)], capture_output=True, text=True,
                            timeout=30, check=False)
    assert config.returncode == 0, config.stdout + config.stderr


# -- a real run --------------------------------------------------------------------------------------------

@pytest.mark.convert
def test_dashboard_queries_name_only_series_a_real_run_exports(converted_teacher, demo_media, tmp_path):
    out, _ = converted_teacher
    port, taps, scraped = _free_port(), [], []

    def tap(frame, window, decision):  # mid-run, from the loop thread: the server answers from its own
        taps.append(1)
        if len(taps) == 40:
            scraped.append(_scrape(port)[1])

    summary = session.run_session(load_manifest(out), camera=str(demo_media.video), mic=str(demo_media.audio),
                                  unpaced=True, duration=4.0, metrics_port=port, metrics_device="bench-1", tap=tap,
                                  stats=tmp_path / "s.jsonl", emit=lambda s: None, note=lambda s: None)
    assert scraped, "the endpoint was never scraped during the run"
    samples = _samples(scraped[0])
    exported = {s.name for s in samples}
    for expr in _dashboard_queries():
        assert _metric_names(expr), expr
        missing = _metric_names(expr) - exported
        assert not missing, f"{expr}: {sorted(missing)} not exported"
    # counters read live from the sources carry the names the summary gives them at the end
    counters = {s.name.removeprefix("edgemm_").removesuffix("_total") for s in samples
                if s.name.endswith("_total") and s.name.startswith("edgemm_")} - {"inferences"}
    assert counters <= set(summary["counters"]), sorted(counters - set(summary["counters"]))
    assert {"frames_dropped", "camera_reconnects", "camera_stalls", "audio_dropouts"} <= counters
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    assert config["scrape_configs"][0]["static_configs"][0]["targets"]


@pytest.mark.convert
@pytest.mark.parametrize("value", ["", "x" * 200, "bad id"])
def test_a_bad_device_id_is_one_error_line_before_anything_opens(converted_teacher, value):
    out, _ = converted_teacher
    result = CliRunner().invoke(main, ["run", "--model", str(out), "--camera", "missing.avi", "--mic", "x.wav",
                                       "--metrics-port", str(_free_port()), "--device-id", value])
    assert result.exit_code == 3, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--device-id" in errors[0] and "Traceback" not in result.output


# -- a fleet of two devices in a real Prometheus ---------------------------------------------------------------

class _Prometheus:
    """/usr/bin/prometheus on a free loopback port, its data in `tmp`, scraping `targets` every 0.5 s."""

    def __init__(self, tmp: Path, targets: list[str]):
        config = {"global": {"scrape_interval": "500ms", "scrape_timeout": "500ms"},
                  "scrape_configs": [{"job_name": "edgemm", "static_configs": [{"targets": targets}]}]}
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{_free_port()}"
        self.log = open(tmp / "prometheus.log", "w")
        self.proc = subprocess.Popen([str(PROMETHEUS), f"--config.file={tmp / 'prometheus.yml'}",
                                      f"--storage.tsdb.path={tmp / 'data'}",
                                      f"--web.listen-address={self.url.removeprefix('http://')}",
                                      "--web.console.templates=", "--web.console.libraries="],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self._ready():
            assert self.proc.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "Prometheus not ready within 20 s"
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            return urllib.request.urlopen(self.url + "/-/ready", timeout=1).status == 200
        except OSError:
            return False

    def query(self, expr: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.log.close()


def _wait(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def _bucket(seconds: float) -> int:
    """Index of the histogram bucket (upper bound inclusive, as Prometheus' le) holding `seconds`."""
    return bisect.bisect_left(LATENCY_BUCKETS_S, seconds)


@pytest.mark.convert
@pytest.mark.slow
@pytest.mark.skipif(not PROMETHEUS.exists(), reason="/usr/bin/prometheus missing (install.sh installs prometheus)")
def test_fleet_p99_in_prometheus_agrees_with_the_pooled_stats_files(converted_teacher, demo_media, tmp_path):
    started = time.monotonic()
    out, _ = converted_teacher
    manifest = load_manifest(out)
    devices = {"cam-a": _free_port(), "cam-b": _free_port()}
    prometheus = _Prometheus(tmp_path, [f"127.0.0.1:{port}" for port in devices.values()])
    runs = {}
    try:
        for device, port in devices.items():
            runs[device] = subprocess.Popen(
                [sys.executable, "-m", "edgemm", "run", "--model", str(out), "--camera", str(demo_media.video),
                 "--mic", str(demo_media.audio), "--duration", "9", "--stats", str(tmp_path / f"{device}.jsonl"),
                 "--metrics-port", str(port), "--device-id", device],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # while both run: every dashboard query returns data
        both_up = _wait(lambda: len(prometheus.query("edgemm_inferences_total > 20")) == 2, 30)
        assert both_up, {d: p.poll() for d, p in runs.items()}
        pending = {_as_promql(q) for q in _dashboard_queries() if not q.startswith("label_values")}
        deadline = time.monotonic() + 5
        while pending and time.monotonic() < deadline:
            pending = {q for q in pending if not prometheus.query(q)}
            time.sleep(0.2)
        assert not pending, f"no data in Prometheus for {sorted(pending)}"
        for device, proc in runs.items():
            _, stderr = proc.communicate(timeout=40)
            assert proc.returncode == 0, stderr[-3000:]
        # once both ended: the totals as last scraped
        last = "max_over_time({}[5m])"
        seen = {r["metric"]["device"]: int(float(r["value"][1]))
                for r in prometheus.query(last.format('edgemm_stage_latency_seconds_count{stage="inference"}'))}
        estimate = prometheus.query("histogram_quantile(0.99, sum by (le) ("
                                    + last.format('edgemm_stage_latency_seconds_bucket{stage="inference"}') + "))")
        info = prometheus.query("last_over_time(edgemm_model_info[5m])")
        by_device = prometheus.query("count by (device, instance) (last_over_time(edgemm_inferences_total[5m]))")
    finally:
        for proc in runs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        prometheus.close()

    # (b) the device labels and the model's identity
    assert set(seen) == set(devices)
    assert {(r["metric"]["device"], r["metric"]["instance"]) for r in by_device} == \
        {(d, f"127.0.0.1:{p}") for d, p in devices.items()}
    assert len(info) == 2
    for r in info:
        _, summary = read_stats(tmp_path / f"{r['metric']['device']}.jsonl")
        assert r["metric"]["model_sha256"] == manifest.artifacts[summary["artifact"]].sha256
        assert (r["metric"]["artifact"], r["metric"]["backend"]) == (summary["artifact"], summary["backend"])

    # (a) the fleet p99: the same observations (each file's steady records, as many as Prometheus last saw)
    pooled_seen, pooled_all = [], []
    for device in devices:
        records, summary = read_stats(tmp_path / f"{device}.jsonl")
        steady = [r["inference"] / 1e3 for r in records[1:]]  # the first is the warm-up, as in the summary
        assert summary["stages_ms"]["inference"]["count"] == len(steady)
        assert 0.8 * len(steady) <= seen[device] <= len(steady), (device, seen[device], len(steady))
        pooled_seen += steady[: seen[device]]
        pooled_all += steady
    promql_p99 = float(estimate[0]["value"][1])
    p99_seen = float(np.percentile(pooled_seen, 99, method="inverted_cdf"))  # histogram_quantile's rank
    p99_all = float(np.percentile(pooled_all, 99))
    assert _bucket(p99_seen) == _bucket(promql_p99), (p99_seen, promql_p99)
    assert abs(_bucket(p99_all) - _bucket(promql_p99)) <= 1, (p99_all, promql_p99)
    elapsed = time.monotonic() - started
    bounds = (0.0, *LATENCY_BUCKETS_S, math.inf)
    print(f"fleet inference p99: Prometheus {promql_p99 * 1e3:.3f} ms, pooled stats {p99_seen * 1e3:.3f} ms "
          f"(the {len(pooled_seen)} records scraped; {p99_all * 1e3:.3f} ms over all {len(pooled_all)}), "
          f"bucket ({bounds[_bucket(promql_p99)] * 1e3:g}, {bounds[_bucket(promql_p99) + 1] * 1e3:g}] ms; "
          f"test {elapsed:.1f} s")
    assert elapsed < 60
