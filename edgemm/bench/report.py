"""Benchmark reports: JSON (the data), Markdown (a summary), HTML with inline SVG plots (offline, no scripts)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from edgemm.atomic import atomic_path, read_json_object, write_json
from edgemm.errors import InputError, quote

READABLE_SCHEMAS = (1,)  # the one edgemm.bench.run writes (its SCHEMA_VERSION)
STATS = ("count", "mean", "std", "min", "p50", "p90", "p99", "max")  # latency_ms, as runtime.stats.describe gives
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _ok(report: dict) -> list[dict]:
    return [r for r in report["results"] if "latency_ms" in r]


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# edgemm bench report", "",
        f"Created {report['created']} on {env['cpu']} ({env['cores']} cores, governor {env['governor']}), "
        f"{env['platform']}, Python {env['python']}; "
        + ", ".join(f"{k} {v}" for k, v in env["libraries"].items()), "",
        f"Settings: {report['settings']['warmup']} warm-up, {report['settings']['runs']} timed runs, "
        f"{report['settings']['duration_s']} s throughput; baseline `{report['settings']['baseline']}`.", "",
        "| configuration | precision | size | accuracy | init ms | first ms | p50 ms | p90 ms | p99 ms | mean ± std | "
        "throughput /s | peak RSS MB | vs baseline |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["results"]:
        if "latency_ms" not in r:
            lines.append(f"| {r['id']} | {r['precision']} | {r['size_bytes'] / 1024:.1f} KiB | - | - | - | - | - | - | - | - | - "
                         f"| skipped: {r.get('error')} |")
            continue
        lat = r["latency_ms"]
        acc = "-" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f} %"
        lines.append(f"| {r['id']} | {r['precision']} | {r['size_bytes'] / 1024:.1f} KiB | {acc} | {r['init_ms']:.1f} | "
                     f"{r['first_inference_ms']:.3f} | {lat['p50']:.3f} | {lat['p90']:.3f} | {lat['p99']:.3f} | "
                     f"{lat['mean']:.3f} ± {lat['std']:.3f} | {r['throughput_per_s']} | {r['peak_rss_mb']} | "
                     f"{r['ratio_p50_vs_baseline']:.2f}x |")
    for p in report.get("pipeline", []):
        s = p["summary"]
        lines += ["", f"## Pipeline: `edgemm run` on {Path(p['media'][0]).name} + {Path(p['media'][1]).name} ({p['model']}, "
                  f"{p['backend']}, unpaced)", "", f"{s['inferences']} inferences; counters: "
                  + ", ".join(f"{k} {v}" for k, v in s["counters"].items()), "",
                  "| stage (ms) | count | p50 | p90 | p99 | max |", "|---|---|---|---|---|---|"]
        lines += [f"| {k} | {d['count']} | {d['p50']:.3f} | {d['p90']:.3f} | {d['p99']:.3f} | {d['max']:.3f} |"
                  for k, d in s["stages_ms"].items() if d.get("count")]
    return "\n".join(lines) + "\n"


CHAR_PX = 7.2  # width of one character of the 12 px sans-serif labels, generous (labels are measured with it)
MAX_LABEL = 56  # characters shown of a configuration id; the whole id is in the row's tooltip


def short(label: str, limit: int = MAX_LABEL) -> str:
    return label if len(label) <= limit else label[: limit - 1] + "…"


def latency_svg(rows: list[dict], width: int = 900, label=lambda r: r["id"]) -> str:
    """Per configuration: a box from p50 to p90, whiskers min..p99, a tick at max; log-free linear axis. The
    label column is as wide as the longest (shortened) label, so labels never run into the plot."""
    row_h, right = 26, 40
    left = int(12 + CHAR_PX * max(len(short(label(r))) for r in rows))
    width = max(width, left + 300)
    height = 40 + row_h * len(rows)
    top = max(r["latency_ms"]["p99"] for r in rows) * 1.1 or 1.0
    x = lambda v: left + (width - left - right) * v / top  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="latency distribution per configuration">']
    for i in range(6):
        v = top * i / 5
        parts.append(f'<line x1="{x(v):.1f}" y1="20" x2="{x(v):.1f}" y2="{height - 15}" stroke="#ddd"/>'
                     f'<text x="{x(v):.1f}" y="{height - 2}" font-size="11" text-anchor="middle">{v:.2f} ms</text>')
    for i, r in enumerate(rows):
        lat, y = r["latency_ms"], 25 + i * row_h
        c = COLOURS[i % len(COLOURS)]
        parts.append(f'<text x="{left - 6}" y="{y + 13}" font-size="12" text-anchor="end">{html.escape(short(label(r)))}</text>'
                     f'<line x1="{x(lat["min"]):.1f}" y1="{y + 9}" x2="{x(lat["p99"]):.1f}" y2="{y + 9}" stroke="{c}"/>'
                     f'<rect x="{x(lat["p50"]):.1f}" y="{y + 2}" width="{max(1.0, x(lat["p90"]) - x(lat["p50"])):.1f}" '
                     f'height="14" fill="{c}" fill-opacity="0.5" stroke="{c}"/>'
                     f'<line x1="{x(lat["p50"]):.1f}" y1="{y}" x2="{x(lat["p50"]):.1f}" y2="{y + 18}" stroke="#000" stroke-width="2"/>'
                     f'<title>{html.escape(label(r))}: min {lat["min"]} p50 {lat["p50"]} p90 {lat["p90"]} p99 {lat["p99"]} '
                     f'max {lat["max"]} ms</title>')
    parts.append("</svg>")
    return "".join(parts)


MARKERS = ("circle", "square", "triangle", "diamond")  # x 10 colours: 40 points told apart without text


def _marker(kind: str, x: float, y: float, r: float, colour: str, title: str) -> str:
    style = f'fill="{colour}" fill-opacity="0.6" stroke="{colour}"'
    if kind == "circle":
        shape = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" {style}>'
        end = "</circle>"
    elif kind == "square":
        shape = f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" {style}>'
        end = "</rect>"
    else:
        corners = ([(x, y - r), (x + r, y + r), (x - r, y + r)] if kind == "triangle"
                   else [(x, y - r), (x + r, y), (x, y + r), (x - r, y)])
        shape = f'<polygon points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in corners)}" {style}>'
        end = "</polygon>"
    return f"{shape}<title>{html.escape(title)}</title>{end}"


def _style(i: int) -> tuple[str, str]:
    return MARKERS[(i // len(COLOURS)) % len(MARKERS)], COLOURS[i % len(COLOURS)]


def tradeoff_svg(rows: list[dict], width: int = 900, height: int = 420, label=lambda r: r["id"]) -> str:
    """Accuracy (y) vs median latency (x); marker area ~ model size. No text beside the points (labels of
    close points overlap): each point has its own colour and shape, named in a legend below the plot, one
    row per point."""
    pts = [r for r in rows if r.get("accuracy") is not None]
    if not pts:
        return "<p>No accuracy figures (no reference data on this machine).</p>"
    left, bottom, pad, legend_row = 70, 50, 30, 18
    plot_h = height
    height = plot_h + 10 + legend_row * len(pts)
    xs, ys = [r["latency_ms"]["p50"] for r in pts], [100 * r["accuracy"] for r in pts]
    x0, x1 = 0.0, max(xs) * 1.15
    y0, y1 = min(ys) - 1.0, max(ys) + 1.0
    sx = lambda v: left + (width - left - pad) * (v - x0) / (x1 - x0)  # noqa: E731
    sy = lambda v: plot_h - bottom - (plot_h - bottom - pad) * (v - y0) / (y1 - y0)  # noqa: E731
    biggest = max(r["size_bytes"] for r in pts)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             'aria-label="accuracy versus latency and size">',
             f'<line x1="{left}" y1="{plot_h - bottom}" x2="{width - pad}" y2="{plot_h - bottom}" stroke="#000"/>',
             f'<line x1="{left}" y1="{pad}" x2="{left}" y2="{plot_h - bottom}" stroke="#000"/>',
             f'<text x="{(left + width) / 2:.0f}" y="{plot_h - 10}" font-size="12" text-anchor="middle">median latency (ms)</text>',
             f'<text x="15" y="{plot_h / 2:.0f}" font-size="12" transform="rotate(-90 15 {plot_h / 2:.0f})" '
             'text-anchor="middle">accuracy (%)</text>']
    for i in range(6):
        vx, vy = x0 + (x1 - x0) * i / 5, y0 + (y1 - y0) * i / 5
        parts.append(f'<text x="{sx(vx):.1f}" y="{plot_h - bottom + 16}" font-size="11" text-anchor="middle">{vx:.2f}</text>'
                     f'<text x="{left - 6}" y="{sy(vy) + 4:.1f}" font-size="11" text-anchor="end">{vy:.1f}</text>')
    for i, r in enumerate(pts):
        kind, colour = _style(i)
        radius = 4 + 14 * (r["size_bytes"] / biggest) ** 0.5
        summary = (f'{label(r)}: {100 * r["accuracy"]:.2f} %, p50 {r["latency_ms"]["p50"]:.3f} ms, '
                   f'{r["size_bytes"] / 1024:.0f} KiB')
        parts.append(_marker(kind, sx(r["latency_ms"]["p50"]), sy(100 * r["accuracy"]), radius, colour, summary))
        y = plot_h + 10 + legend_row * i
        parts.append(_marker(kind, left + 6, y + 6, 5, colour, summary)
                     + f'<text x="{left + 18}" y="{y + 10}" font-size="12">{html.escape(short(summary, 110))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def html_page(report: dict) -> str:
    rows = _ok(report)
    md_table = markdown(report)
    body_rows = []
    for line in md_table.splitlines():
        if line.startswith("| ") and not line.startswith("|---"):
            cells = [html.escape(c.strip()) for c in line.strip("|").split("|")]
            tag = "th" if line.startswith("| configuration") or line.startswith("| stage") else "td"
            body_rows.append("<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>")
    env = report["environment"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgemm bench report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#f3f3f3}}</style></head>
<body>
<h1>edgemm bench report</h1>
<p>Created {html.escape(report['created'])} on {html.escape(str(env['cpu']))} ({env['cores']} cores, governor
{html.escape(str(env['governor']))}); baseline <code>{html.escape(report['settings']['baseline'])}</code>.</p>
<h2>Latency distribution per configuration</h2>
<p>Box: median to p90; whisker: min to p99; black tick: median.</p>
{latency_svg(rows)}
<h2>Accuracy vs latency vs size</h2>
<p>Marker area grows with the artifact size.</p>
{tradeoff_svg(rows)}
<h2>Results</h2>
<table>{''.join(body_rows)}</table>
{layers_html(report.get("layers") or {})}
</body></html>
"""


def layers_html(layers: dict[str, list[dict]]) -> str:
    """Per model: the int8 layers ranked by the quantization error they add (from the convert report)."""
    parts = []
    for model, rows in layers.items():
        if not rows:
            continue
        ranks: dict[str, int] = {}
        cells = ""
        for r in rows:
            artifact = str(r.get("artifact", "int8_onnx"))
            ranks[artifact] = ranks.get(artifact, 0) + 1
            cells += (f"<tr><td>{html.escape(artifact)}</td><td>{ranks[artifact]}</td>"
                      f"<td style='text-align:left'>{html.escape(str(r['op_type']))}</td>"
                      f"<td style='text-align:left'>{html.escape(str(r['node']))}</td>"
                      f"<td>{html.escape(str(r['local_sqnr_db']))}</td><td>{html.escape(str(r['sqnr_db']))}</td></tr>")
        parts.append(f"<h3>{html.escape(model)}</h3><table><tr><th>artifact</th><th>rank</th><th>op</th>"
                     f"<th>node / tensor</th><th>own error: SQNR dB</th><th>accumulated: SQNR dB</th></tr>{cells}"
                     "</table>")
    if not parts:
        return ""
    return ("<h2>int8 layers that add the most error</h2><p>From <code>edgemm convert</code>'s per-layer report, "
            "on calibration samples. int8 ONNX: a layer's own error is the float model's tensor against that tensor "
            "through its own quantize/dequantize pair; the accumulated one is the float model's tensor against the "
            "int8 model's. "
            "int8 TFLite: each activation tensor against its own quantization error (from the calibration "
            "histograms). Candidates for <code>--keep-float</code> (ONNX) and <code>mixed.tflite</code>.</p>"
            + "".join(parts))


def write_reports(report: dict, out: Path) -> dict[str, Path]:
    return write_files(out, report, markdown(report), html_page(report))


def write_files(out: Path, data: dict, markdown_text: str, html_text: str) -> dict[str, Path]:
    """OUT/report.json, report.md and report.html, each written atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
    write_json(paths["json"], data)
    for key, text in (("markdown", markdown_text), ("html", html_text)):
        with atomic_path(paths[key]) as tmp:
            tmp.write_text(text)
    return paths


def load_report(path: Path) -> dict:
    """A bench report (report.json), checked field by field by :func:`check_report`."""
    return check_report(read_json_object(path, "report"), str(path))


def _number(value: Any) -> bool:
    """A finite number >= 0 (NaN compares false with everything: it must be refused by name)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def check_report(report: Any, where: str) -> dict:
    """Refuses a report --compare could misread: every figure it compares must be a finite number, a median
    positive (a ratio against 0 or NaN says nothing, and NaN compares as "not slower"), accuracy within [0, 1].

    One InputError naming `where` (the report) and the configuration; returns `report`.
    """
    version = report.get("schema_version") if isinstance(report, dict) else None
    if version not in READABLE_SCHEMAS or isinstance(version, bool):
        raise InputError(f"{where}: not an edgemm bench report (schema_version {quote(version)} is not one of "
                         f"{READABLE_SCHEMAS})")
    if not isinstance(report.get("results"), list):
        raise InputError(f"{where}: not an edgemm bench report ('results' missing or not a list)")
    if report.get("merged"):
        raise InputError(f"{where}: a merged report (edgemm bench --merge); give one device's own report")
    for key, kind, what in (("environment", dict, "an object"), ("settings", dict, "an object"),
                            ("pipeline", list, "a list"), ("created", str, "a string")):
        if key in report and not isinstance(report[key], kind):
            raise InputError(f"{where}: '{key}' must be {what}")
    seen = set()
    for i, row in enumerate(report["results"]):
        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not row["id"]:
            raise InputError(f"{where}: results[{i}] must be an object with a configuration 'id'")
        if row["id"] in seen:
            raise InputError(f"{where}: configuration {quote(row['id'])} appears twice")
        seen.add(row["id"])
        problem = _row_problem(row)
        if problem:
            raise InputError(f"{where}: configuration {quote(row['id'])}: {problem}")
    return report


def _row_problem(row: dict) -> str | None:
    """What is wrong with one result row, or None."""
    if "latency_ms" not in row:
        return None if isinstance(row.get("error"), str) else "neither 'latency_ms' nor an 'error'"
    accuracy = row.get("accuracy")
    if accuracy is not None and not (_number(accuracy) and accuracy <= 1):
        return f"accuracy must be null or a number within [0, 1], got {quote(accuracy)}"
    lat = row["latency_ms"]
    if not isinstance(lat, dict):
        return "latency_ms must be an object"
    for key in STATS:
        value = lat.get(key)
        if key == "count" and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            return f"latency_ms.count must be a positive integer, got {quote(value)}"
        if key != "count" and not _number(value):
            return f"latency_ms.{key} must be a finite number of milliseconds >= 0, got {quote(value)}"
    if lat["p50"] <= 0:
        return f"latency_ms.p50 (the median) must be positive, got {quote(lat['p50'])}"
    for key in ("init_ms", "first_inference_ms", "peak_rss_mb", "ratio_p50_vs_baseline", "size_bytes", "threads"):
        if key in row and not _number(row[key]):
            return f"{key} must be a finite number >= 0, got {quote(row[key])}"
    throughput = row.get("throughput_per_s")
    if throughput is not None and not _number(throughput):
        return f"throughput_per_s must be null or a finite number >= 0, got {quote(throughput)}"
    return None
