"""CI gates on a conversion report, the one-line reason for the first failed one, and the summary table."""

from __future__ import annotations

from pathlib import Path


def head_gates(artifacts: dict[str, dict], o) -> list[dict]:
    """Every head of every artifact against the float model: agreement (classify, multilabel) or SQNR (raw)."""
    results = []
    for key, entry in artifacts.items():
        if key.startswith("stock_"):  # --compare-stock rows are measured, not gated
            continue
        for name, h in (entry.get("heads") or {}).items():
            gate, limit, value = (("min_agreement", o.min_agreement, h["agreement"]) if "agreement" in h
                                  else ("min_sqnr_db", o.min_sqnr_db, h["sqnr_db"]))
            results.append({"gate": gate, "artifact": f"{key}/{name}", "limit": limit, "value": value,
                            "passed": bool(value >= limit)})
    return results


def check_gates(artifacts: dict[str, dict], o) -> list[dict]:
    """Each CI gate set in `o` (ConvertOptions), applied to each int8 artifact (and the head gates to every artifact and
    head): limit, measured value, passed."""
    results = head_gates(artifacts, o)
    for key, entry in artifacts.items():
        if not key.startswith("int8"):
            continue
        if o.max_accuracy_drop is not None and entry.get("accuracy_drop_points") is not None:
            results.append({"gate": "max_accuracy_drop", "artifact": key, "limit": o.max_accuracy_drop,
                            "value": entry["accuracy_drop_points"],
                            "passed": entry["accuracy_drop_points"] <= o.max_accuracy_drop})
        if o.max_size is not None:
            results.append({"gate": "max_size", "artifact": key, "limit": o.max_size,
                            "value": entry["size_bytes"], "passed": entry["size_bytes"] <= o.max_size})
    if o.max_latency_ms is not None:
        for key, entry in artifacts.items():
            if key.startswith("int8") and entry.get("median_invoke_ms") is not None:
                results.append({"gate": "max_latency_ms", "artifact": key, "limit": o.max_latency_ms,
                                "value": entry["median_invoke_ms"], "passed": entry["median_invoke_ms"] <= o.max_latency_ms})
    if o.require_edgetpu_mappable:
        tpu = artifacts.get("int8_tflite", {}).get("edgetpu")
        results.append({"gate": "require_edgetpu_mappable", "artifact": "int8_tflite", "limit": True,
                        "value": None if tpu is None else tpu["fully_mappable"],
                        "passed": bool(tpu and tpu["fully_mappable"])})
    return results


def gate_message(report: dict, out_dir: Path) -> str | None:
    """One line naming the first failed gate, or None when all passed."""
    failed = [g for g in report["gates"] if not g["passed"]]
    if not failed:
        return None
    g = failed[0]
    if g["gate"] == "require_edgetpu_mappable":
        first = (report["artifacts"].get("int8_tflite", {}).get("edgetpu") or {}).get("first_unmapped")
        what = "no int8 TFLite was made" if first is None else f"op {first['index']} {first['op']}: {first['reason']}"
        reason = f"gate require_edgetpu_mappable failed: {what}"
    elif g["gate"] in ("min_agreement", "min_sqnr_db"):
        option = "--min-agreement" if g["gate"] == "min_agreement" else "--min-sqnr"
        reason = (f"gate {g['gate']} failed for {g['artifact']}: {g['value']} is below the limit {g['limit']} "
                  f"(a wrong head in the spec, or a model int8 breaks; lower it with {option} if this is expected)")
    else:
        unit = {"max_accuracy_drop": " points", "max_latency_ms": " ms"}.get(g["gate"], " bytes")
        reason = f"gate {g['gate']} failed for {g['artifact']}: {g['value']}{unit} exceeds the limit {g['limit']}{unit}"
    more = f"; {len(failed) - 1} more gate(s) failed" if len(failed) > 1 else ""
    return f"{reason}{more} (artifacts and {Path(out_dir) / 'report.json'} kept)"


def summary_table(report: dict) -> str:
    rows = [f"{'artifact':<17} {'size':>9} {'accuracy':>9} {'drop pts':>8} {'agree/SQNR':>7} {'max|diff|':>9} {'ms':>7}  backend"]
    for key, e in report["artifacts"].items():
        acc = "-" if e.get("accuracy") is None else f"{100 * e['accuracy']:.2f}%"
        drop = "-" if e.get("accuracy_drop_points") is None else f"{e['accuracy_drop_points']:+.2f}"
        close = (f"{100 * e['agreement']:>6.2f}%" if e.get("agreement") is not None else
                 f"{e['sqnr_db']:>5.1f}dB" if e.get("sqnr_db") is not None else f"{'-':>7}")
        ms = "-" if e.get("median_invoke_ms") is None else f"{e['median_invoke_ms']:.3f}"
        diff = "-" if e.get("max_abs_diff") is None else f"{e['max_abs_diff']:.4f}"
        rows.append(f"{key:<17} {e['size_bytes'] / 1024:>7.1f}KB {acc:>9} {drop:>8} {close:>7} {diff:>9} {ms:>7}  "
                    f"{e['backend']}")
    if report["float_accuracy"] is not None:
        rows.append(f"float source accuracy: {100 * report['float_accuracy']:.2f}% on {report['data']['validation']}")
    for g in report["gates"]:
        if g["passed"] and g["gate"] in ("min_agreement", "min_sqnr_db"):
            continue  # one line per head and artifact would drown the table; failures are shown
        rows.append(f"gate {g['gate']} ({g['artifact']}): {'passed' if g['passed'] else 'FAILED'} "
                    f"(value {g['value']}, limit {g['limit']})")
    if report.get("compression"):
        rows.append("compression stages:")
        for r in report["compression"]["stages"]:
            acc = "-" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
            rows.append(f"  {r['stage']:<40} {r['parameters']:>9,} params {r['macs'] / 1e6:>7.2f} M MACs "
                        f"{r['float32_weight_bytes'] / 1024:>8.1f} KB fp32 {acc:>8}")
    rows += [f"note: {n}" for n in report["notes"]]
    rows.append("stage seconds: " + ", ".join(f"{k} {v}" for k, v in report["stage_seconds"].items()))
    return "\n".join(rows)
