"""`edgemm bench`: the matrix, the reports (opened in headless Chromium when installed) and --compare."""

from __future__ import annotations

import copy
import html.parser
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgemm.cli import main

pytestmark = pytest.mark.convert


@pytest.fixture(scope="module")
def bench_report(converted_teacher, av_digits_files, tmp_path_factory):
    out, _ = converted_teacher
    report_dir = tmp_path_factory.mktemp("bench")
    result = CliRunner().invoke(main, ["bench", str(out), "--runs", "30", "--warmup", "5", "--duration", "0.2",
                                       "--val", str(av_digits_files.val), "--report", str(report_dir)])
    assert result.exit_code == 0, result.output
    return report_dir, json.loads((report_dir / "report.json").read_text())


def test_matrix_covers_float_and_int8_tflite_and_onnx_at_1_and_2_threads(bench_report):
    _, report = bench_report
    ids = {r["id"].split("/", 1)[1] for r in report["results"]}
    assert ids == {f"{a}/{b}/t{n}" for a, b in (("float_tflite", "litert"), ("int8_tflite", "litert"),
                                                ("float_onnx", "ort-cpu"), ("int8_onnx", "ort-cpu")) for n in (1, 2)}
    for r in report["results"]:
        lat = r["latency_ms"]
        assert lat["count"] == 30 and lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["init_ms"] > 0 and r["first_inference_ms"] > 0 and r["throughput_per_s"] > 0
        assert r["peak_rss_mb"] > 10 and len(r["sha256"]) == 64 and 0.8 < r["accuracy"] <= 1.0
    assert report["results"][0]["ratio_p50_vs_baseline"] == 1.0
    env = report["environment"]
    assert env["cores"] and "ai-edge-litert" in env["libraries"] and "onnxruntime" in env["libraries"]
    assert report["schema_version"] == 1


def test_markdown_and_html_reports(bench_report, tmp_path):
    report_dir, report = bench_report
    md = (report_dir / "report.md").read_text()
    assert md.count("\n| ") >= 1 + len(report["results"]) and "vs baseline" in md
    page = (report_dir / "report.html").read_text()

    class Checker(html.parser.HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.svgs, self.scripts = [], 0, 0

        def handle_starttag(self, tag, attrs):
            self.svgs += tag == "svg"
            self.scripts += tag == "script"

    checker = Checker()
    checker.feed(page)
    assert checker.svgs == 2 and checker.scripts == 0  # two plots, nothing to execute, nothing to fetch
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    png = screenshot(report_dir / "report.html", tmp_path / "report.png")
    assert png.stat().st_size > 20_000


def test_reports_carry_the_layers_int8_hurts_most_from_the_convert_report(bench_report, converted_teacher):
    """Per model, the ten worst int8 ONNX layers and int8 TFLite tensors of its convert report.json, worst first,
    in report.json and as a table in report.html."""
    report_dir, report = bench_report
    out, _ = converted_teacher
    convert = json.loads((out / "report.json").read_text())["artifacts"]
    ((model, rows),) = report["layers"].items()
    onnx = [r for r in rows if r["artifact"] == "int8_onnx"]
    tflite = [r for r in rows if r["artifact"] == "int8_tflite"]
    assert [r["node"] for r in onnx] == [r["node"] for r in convert["int8_onnx"]["layers"][:10]]
    assert [r["node"] for r in tflite] == [w["tensor"] for w in convert["int8_tflite"]["quantization"]["ranges"]["worst"]]
    assert tflite and [r["local_sqnr_db"] for r in tflite] == sorted(r["local_sqnr_db"] for r in tflite)
    page = (report_dir / "report.html").read_text()
    assert "int8 layers that add the most error" in page
    assert html.escape(onnx[0]["node"]) in page and html.escape(tflite[0]["node"]) in page


def screenshot(page: Path, png: Path, size: str = "1200,1400") -> Path:
    """`page` rendered by headless Chromium into `png` (skips where Chromium is missing)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium not installed: the headless rendering check needs it (install.sh installs it)")
    proc = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={png.parent / 'chromium-profile'}", "--enable-logging=stderr", "--v=0",
                           "--hide-scrollbars", f"--screenshot={png}", f"--window-size={size}", page.as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr and "Failed to load resource" not in proc.stderr
    return png


def test_compare_flags_a_slowed_configuration(bench_report, tmp_path):
    _, report = bench_report
    old, same, slow = tmp_path / "old.json", tmp_path / "same.json", tmp_path / "slow.json"
    old.write_text(json.dumps(report))
    same.write_text(json.dumps(report))
    slowed = copy.deepcopy(report)
    target = slowed["results"][2]
    for key in ("min", "p50", "p90", "p99", "max", "mean"):
        target["latency_ms"][key] *= 1.5  # a configuration that got 50 % slower
    slow.write_text(json.dumps(slowed))
    ok = CliRunner().invoke(main, ["bench", "--compare", str(old), str(same)])
    assert ok.exit_code == 0 and "REGRESSION" not in ok.output
    bad = CliRunner().invoke(main, ["bench", "--compare", str(old), str(slow)])
    assert bad.exit_code == 1
    flagged = [line for line in bad.output.splitlines() if line.startswith("REGRESSION")]
    assert len(flagged) == 1 and target["id"] in flagged[0] and "(1.50x)" in flagged[0]
    assert "1 configuration(s) regressed" in bad.stderr


def test_compare_rejects_bad_reports(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").write_text(json.dumps({"results": [], "schema_version": 99}))
    result = CliRunner().invoke(main, ["bench", "--compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    assert result.exit_code == 3 and "not a readable JSON report" in result.stderr


def test_compare_matches_a_real_second_run_by_configuration(bench_report, converted_teacher, tmp_path):
    """A real second run of one configuration is matched to the same configuration in the first report.

    Whether it counts as slower is the tolerance's call; timing is not asserted here (shared, noisy machines:
    speed is checked by benchmarks/), so the tolerance is set wide enough that only the matching is tested.
    """
    out, _ = converted_teacher
    report_dir, _ = bench_report
    result = CliRunner().invoke(main, ["bench", str(out), "--artifact", "int8_tflite", "--backend", "litert",
                                       "--threads", "1", "--runs", "20", "--warmup", "2", "--duration", "0.1",
                                       "--report", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["results"][0]["accuracy"] is None  # no --val: seeded random inputs, no accuracy
    compared = CliRunner().invoke(main, ["bench", "--compare", str(report_dir / "report.json"),
                                         str(tmp_path / "again" / "report.json"), "--tolerance", "100"])
    assert compared.exit_code == 0, compared.output
    matched = [line for line in compared.output.splitlines() if line.startswith("ok ")]
    assert len(matched) == 1 and "int8_tflite/litert/t1" in matched[0], compared.output


# -- --merge: devices side by side --------------------------------------------------------------------------

def _text_boxes(svg: ET.Element) -> list[tuple[float, float, float, float]]:
    """Bounding boxes of the SVG's horizontal text (x0, y0, x1, y1), measured with the report's CHAR_PX."""
    from edgemm.bench.report import CHAR_PX

    boxes = []
    for t in svg.iter("{http://www.w3.org/2000/svg}text"):
        if "rotate" in t.get("transform", ""):
            continue
        size, x, y = float(t.get("font-size", 12)), float(t.get("x")), float(t.get("y"))
        width = CHAR_PX * size / 12 * len(t.text or "")
        x0 = {"end": x - width, "middle": x - width / 2}.get(t.get("text-anchor"), x)
        boxes.append((x0, y - size, x0 + width, y))
    return boxes


def test_merge_puts_two_devices_side_by_side(bench_report, converted_teacher, av_digits_files, tmp_path):
    """A second real bench run, named as another device, merged with the first: one row per configuration,
    one column per device, each device's environment; the HTML renders and its labels never overlap."""
    out, _ = converted_teacher
    report_dir, first = bench_report
    second = CliRunner().invoke(main, ["bench", str(out), "--artifact", "int8_tflite,int8_onnx", "--threads", "1",
                                       "--runs", "20", "--warmup", "2", "--duration", "0.1", "--val",
                                       str(av_digits_files.val), "--device-id", "edge-box-2",
                                       "--report", str(tmp_path / "second")])
    assert second.exit_code == 0, second.output
    result = CliRunner().invoke(main, ["bench", "--merge", str(report_dir), str(tmp_path / "second" / "report.json"),
                                       "--report", str(tmp_path / "merged")])
    assert result.exit_code == 0, result.output
    merged = json.loads((tmp_path / "merged" / "report.json").read_text())
    devices = [d["device"] for d in merged["devices"]]
    assert devices == [first["environment"]["device"], "edge-box-2"]
    assert merged["devices"][1]["environment"]["cpu"] and len(merged["results"]) == len(first["results"]) + 2
    md = (tmp_path / "merged" / "report.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| configuration"))
    assert header == f"| configuration | {devices[0]} | edge-box-2 |"
    int8_row = next(line for line in md.splitlines() if "/int8_tflite/litert/t1 |" in line)
    assert int8_row.count(" %") == 2  # measured on both devices, with accuracy
    float_row = next(line for line in md.splitlines() if "/float_tflite/litert/t1 |" in line)
    assert float_row.endswith("| - |")  # not measured on the second device
    page = (tmp_path / "merged" / "report.html").read_text()
    svgs = [ET.fromstring(chunk[: chunk.index("</svg>") + 6]) for chunk in page.split("<svg")[1:]
            for chunk in ["<svg" + chunk]]
    assert len(svgs) == 2
    for svg in svgs:
        boxes = _text_boxes(svg)
        assert all(b[0] >= 0 and b[2] <= float(svg.get("width")) for b in boxes)  # inside the picture
        overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
                    if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]]
        assert overlaps == []
    png = screenshot(tmp_path / "merged" / "report.html", tmp_path / "merged.png", "1300,2000")
    import cv2

    image = cv2.imread(str(png))
    assert image is not None and image.shape[:2] == (2000, 1300) and image.std() > 10  # drawn, not blank


def test_merge_refuses_one_report_the_same_report_twice_and_a_merged_report(bench_report, tmp_path):
    report_dir, _ = bench_report

    def merge(*paths):
        result = CliRunner().invoke(main, ["bench", "--merge", *map(str, paths), "--report", str(tmp_path / "m")])
        return result.exit_code, result.output.strip().splitlines()[-1]

    assert merge(report_dir) == (3, "Error: --merge needs two or more reports")
    code, line = merge(report_dir, report_dir / "report.json")
    assert code == 3 and line.endswith("report.json: given twice")
    copy_dir = tmp_path / "copy"
    shutil.copytree(report_dir, copy_dir)
    assert merge(report_dir, copy_dir)[0] == 0
    code, line = merge(tmp_path / "m", report_dir)
    assert code == 3 and "a merged report" in line
