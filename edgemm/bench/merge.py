"""`edgemm bench --merge A.json B.json ... --report OUT`: bench reports from several devices (or several
models on one device) in one JSON / Markdown / HTML report, side by side.

Each input is a report `edgemm bench` wrote, checked field by field (edgemm.bench.report.check_report).
A report's device is the name it was measured under (`edgemm bench --device-id`, default the host name);
two reports with one name are told apart by their directory. A configuration is the same on two devices
when its id (model/artifact/backend/threads) is, so the side-by-side table has one row per configuration
and one column per device.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

from edgemm.bench import report as reports
from edgemm.errors import InputError, quote

MERGED_SCHEMA = 1
MAX_REPORTS = 64


def merge(paths: list[Path]) -> dict:
    """The merged report of the bench reports at `paths` (report.json files or the directories holding them)."""
    if len(paths) < 2:
        raise InputError("--merge needs two or more reports")
    if len(paths) > MAX_REPORTS:
        raise InputError(f"--merge takes at most {MAX_REPORTS} reports, got {len(paths)}")
    devices, results, seen = [], [], set()
    for path in paths:
        path = Path(path)
        file = path / "report.json" if path.is_dir() else path
        if file.resolve() in seen:
            raise InputError(f"{file}: given twice")
        seen.add(file.resolve())
        report = reports.load_report(file)  # refuses a merged report too
        env = report.get("environment") or {}
        name = str(env.get("device") or file.resolve().parent.name)[:60]
        taken = {d["device"] for d in devices}
        if name in taken:
            name = f"{name} ({file.resolve().parent.name})"[:80]
        if name in taken:
            raise InputError(f"{file}: a second report of device {quote(name)} from the same directory")
        devices.append({"device": name, "report": str(file), "created": report.get("created"),
                        "environment": env, "settings": report.get("settings", {})})
        results += [{**row, "device": name} for row in report["results"]]
    return {"schema_version": MERGED_SCHEMA, "merged": True,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "devices": devices,
            "results": results}


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    if "latency_ms" not in row:
        return "skipped"
    acc = "" if row.get("accuracy") is None else f", {100 * row['accuracy']:.2f} %"
    return f"{row['latency_ms']['p50']:.3f} / {row['latency_ms']['p99']:.3f}{acc}"


def _side_by_side(merged: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per configuration id, one column per device (p50 / p99 ms, accuracy)."""
    names = [d["device"] for d in merged["devices"]]
    by_key: dict[str, dict[str, dict]] = {}
    for row in merged["results"]:
        by_key.setdefault(row["id"], {})[row["device"]] = row
    header = ["configuration", *names]
    return header, [[key, *(_cell(cells.get(n)) for n in names)] for key, cells in by_key.items()]


def _environments(merged: dict) -> tuple[list[str], list[list[str]]]:
    header = ["device", "CPU", "cores", "int8 dot product", "platform", "Python", "libraries", "report created"]
    rows = []
    for d in merged["devices"]:
        env = d["environment"]
        libs = ", ".join(f"{k} {v}" for k, v in (env.get("libraries") or {}).items())
        rows.append([d["device"], str(env.get("cpu", "?")), str(env.get("cores", "?")),
                     str(env.get("int8_dot_product", "?")), str(env.get("platform", "?")),
                     str(env.get("python", "?")), libs, str(d.get("created") or "?")])
    return header, rows


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    clean = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    return (["| " + " | ".join(map(clean, header)) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(map(clean, r)) + " |" for r in rows])


def markdown(merged: dict) -> str:
    lines = ["# edgemm bench report: devices side by side", "",
             f"Merged {merged['created']} from {len(merged['devices'])} reports. Cells: median / p99 latency (ms), "
             "accuracy where the report has it.", "", "## Devices", ""]
    lines += _md_table(*_environments(merged))
    lines += ["", "## Configurations", ""]
    lines += _md_table(*_side_by_side(merged))
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(merged: dict) -> str:
    ok = [r for r in merged["results"] if "latency_ms" in r]
    label = lambda r: f"{r['device']}: {r['id']}"  # noqa: E731
    latency = reports.latency_svg(ok, label=label) if ok else "<p>No configuration was measured.</p>"
    tradeoff = reports.tradeoff_svg(ok, label=label) if ok else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgemm bench report: devices side by side</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1300px}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}th{{background:#f3f3f3}}</style></head>
<body>
<h1>edgemm bench report: devices side by side</h1>
<p>Merged {html.escape(merged['created'])} from {len(merged['devices'])} reports.
Cells: median / p99 latency (ms), accuracy where the report has it.</p>
<h2>Devices</h2>
{_html_table(*_environments(merged))}
<h2>Configurations</h2>
{_html_table(*_side_by_side(merged))}
<h2>Latency distribution per device and configuration</h2>
<p>Box: median to p90; whisker: min to p99; black tick: median.</p>
{latency}
<h2>Accuracy vs latency vs size</h2>
<p>Marker area grows with the artifact size; the legend names each marker.</p>
{tradeoff}
</body></html>
"""


def write_merged(paths: list[Path], out: Path) -> dict[str, Path]:
    merged = merge(paths)
    return reports.write_files(out, merged, markdown(merged), html_page(merged))
