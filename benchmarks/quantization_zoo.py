"""Quantization zoo: `edgemm convert` on real third-party float models, against the stock quantizers.

    .venv/bin/python benchmarks/quantization_zoo.py [--only NAME[,NAME]] [--short] [--cache DIR]
        [--data-dir DIR] [--keep DIR] [--no-write]

Each model of benchmarks/zoo_models.py is fetched from its pinned PyPI wheel into --cache (default .zoo-cache/,
never committed), gets its model spec (YAML beside the model) and calibration + validation media built in code
with fixed seeds (300 + 300 samples, fewer where the entry says so; --short: 40 + 40), then

    python -m edgemm convert MODEL --spec SPEC --calib calib.npz --val val.npz --out OUT \\
        --min-agreement 0 --min-sqnr -100 [--compare-stock] [the entry's flags]

runs as a subprocess and OUT/report.json is read. What is measured, per int8 artifact, against the float model
on the held-out validation media, in the device runtimes (LiteRT, ONNX Runtime CPU): top-1 agreement of
classify heads (per-label agreement of multilabel heads), the accuracy drop in points where the media have
labels, the worst SQNR of raw heads, the file size and the quantization time. With `--compare-stock`
(when this edgemm has it) the same report also holds the stock TFLiteConverter full-int8 PTQ and ONNX
Runtime quantize_static (defaults) on the same float model and calibration samples. Targets: >= 99 %
agreement and <= 0.5 points accuracy drop; raw heads >= 30 dB SQNR.

A model that cannot be fetched is one line and a "not fetched" row; a convert that fails is its one-line
Error in the row; the script goes on with the next model.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import zoo_models  # noqa: E402
from benchmarks.results_md import update_section  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/quantization_zoo.py"
SHORT_SAMPLES = 40
ARTIFACTS = (("int8_tflite", "edgemm int8 TFLite"), ("stock_int8_tflite", "stock TFLite PTQ"),
             ("int8_onnx", "edgemm int8 ONNX"), ("stock_int8_onnx", "stock ORT quantize_static"),
             ("int16x8_tflite", "edgemm int16x8 TFLite"),  # the last two only when edgemm made them
             ("mixed_tflite", "edgemm mixed TFLite (layers in float)"))
MIN_AGREEMENT, MAX_DROP, MIN_SQNR = 0.99, 0.5, 30.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def has_compare_stock() -> bool:
    proc = subprocess.run([sys.executable, "-m", "edgemm", "convert", "--help"], cwd=ROOT, check=False,
                          capture_output=True, text=True)
    return "--compare-stock" in proc.stdout


def write_media(entry, files: dict[str, Path], args, n: int, work: Path) -> tuple[Path, Path]:
    media = zoo_models.Media(files, args.data_dir if args.data_dir.is_dir() else None, args.cache / "work")
    paths = []
    for part, seed in (("calib", 1), ("val", 2)):  # different seeds: validation media never calibrate
        path = work / f"{part}.npz"
        np.savez(path, **entry.media(entry, media, n, seed))
        paths.append(path)
    return paths[0], paths[1]


def convert(entry, files: dict[str, Path], calib: Path, val: Path, out: Path, stock: bool,
            formats: str = "tflite,onnx", extra: tuple[str, ...] = ()) -> tuple[dict | None, str, float, str]:
    """(report or None, error line or '', wall seconds, the command) of one `edgemm convert`."""
    args = [sys.executable, "-m", "edgemm", "convert", str(files["model"]), "--spec", str(files["spec"]),
            "--calib", str(calib), "--val", str(val), "--out", str(out), "--format", formats,
            "--min-agreement", "0", "--min-sqnr", "-100", *entry.flags, *(["--compare-stock"] if stock else []),
            *extra]
    start = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, check=False, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    command = shlex.join([".venv/bin/python", *args[1:]])
    report_file = out / "report.json"
    if proc.returncode not in (0, 1) or not report_file.is_file():  # 1: a gate failed, the report is there
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        return None, (lines or [f"exit {proc.returncode}"])[-1].strip(), seconds, command
    return json.loads(report_file.read_text()), "", seconds, command


def measure(entry, args, stock: bool) -> dict:
    row = {"name": entry.name, "package": entry.package, "licence": entry.licence, "kind": entry.kind,
           "note": entry.note}
    t0 = time.perf_counter()
    try:
        files = zoo_models.prepare(entry, args.cache)
    except (zoo_models.FetchError, OSError, subprocess.SubprocessError) as e:
        log(f"{entry.name}: not fetched: {e}")
        return {**row, "error": f"not fetched: {e}"}
    n = min(SHORT_SAMPLES, entry.samples) if args.short else entry.samples
    with tempfile.TemporaryDirectory(prefix=f"edgemm-zoo-{entry.name}-") as tmp:
        tmp = Path(tmp)
        data = args.keep / f"{entry.name}-data" if args.keep else tmp
        data.mkdir(parents=True, exist_ok=True)
        log(f"{entry.name}: building {n} + {n} samples")
        t1 = time.perf_counter()
        try:
            calib, val = write_media(entry, files, args, n, data)
        except Exception as e:  # noqa: BLE001 -- a media builder's bug or a missing tool (espeak-ng): this row only
            log(f"{entry.name}: media not built: {type(e).__name__}: {e}")
            return {**row, "error": f"media not built: {type(e).__name__}: {str(e)[:120]}"}
        media_s = time.perf_counter() - t1
        out = (args.keep / entry.name) if args.keep else tmp / "out"
        if args.keep and out.exists():
            shutil.rmtree(out)
        log(f"{entry.name}: edgemm convert {files['model'].name}")
        extra = tuple(shlex.split(args.convert_flags))
        report, error, seconds, row["command"] = convert(entry, files, calib, val, out, stock, extra=extra)
        if report is None and ("onnx2tf" in error or "TFLite" in error):  # measure the ONNX side alone
            log(f"{entry.name}: {error}\n{entry.name}: again with --format onnx")
            row["tflite_error"] = error
            report, error, more, row["command_onnx"] = convert(entry, files, calib, val, out, stock, "onnx", extra)
            seconds += more
    row.update({"samples": (n, n), "media_seconds": round(media_s, 1), "convert_seconds": round(seconds, 1),
                "total_seconds": round(time.perf_counter() - t0, 1)})
    if report is None:
        log(f"{entry.name}: {error}")
        return {**row, "error": error}
    row["samples"] = (report["data"]["calibration_samples"], report["data"]["validation_samples"])
    row["float_accuracy"] = report.get("float_accuracy")
    row["source_format"] = report["source"]["format"]
    row["artifacts"] = {key: artifact_row(report, key) for key, _ in ARTIFACTS if key in report["artifacts"]}
    row["float_sizes"] = {k: report["artifacts"][k]["size_bytes"] for k in ("float_tflite", "float_onnx")
                          if k in report["artifacts"]}
    row["stage_seconds"] = report.get("stage_seconds", {})
    row["notes"] = report.get("notes", [])
    log(f"{entry.name}: done in {row['total_seconds']} s")
    return row


def artifact_row(report: dict, key: str) -> dict:
    a = report["artifacts"][key]
    seconds = a.get("quantize_seconds")
    return {"agreement": a.get("agreement"), "accuracy": a.get("accuracy"),
            "drop": a.get("accuracy_drop_points"), "sqnr_db": a.get("sqnr_db"), "size_bytes": a.get("size_bytes"),
            "seconds": seconds, "heads": {n: {k: h.get(k) for k in ("head", "agreement", "sqnr_db")}
                                          for n, h in (a.get("heads") or {}).items()}}


def passes(a: dict) -> bool:
    heads = a["heads"].values() or [{"agreement": a["agreement"], "sqnr_db": a["sqnr_db"]}]
    ok = all((h["agreement"] >= MIN_AGREEMENT) if h.get("agreement") is not None else
             (h.get("sqnr_db") is not None and h["sqnr_db"] >= MIN_SQNR) for h in heads)
    return ok and (a["drop"] is None or a["drop"] <= MAX_DROP)


def _num(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _short(error: str, limit: int = 200) -> str:
    """An edgemm error line without its 'Error: MODEL_PATH: ' prefix, fit for a table cell."""
    text = error.removeprefix("Error: ")
    first, _, rest = text.partition(": ")
    text = rest if "/" in first else text  # the model's path: the row says which model
    return (text if len(text) <= limit else text[: limit - 3] + "...").replace("|", "/")


def _not_made(r: dict, key: str, limit: int = 160) -> str | None:
    """Why convert's notes say artifact `key` was not made, without file paths; None if they do not."""
    note = next((n for n in r.get("notes", []) if n.startswith(f"{key} not made: ")), None)
    if note is None:
        return None
    text = ": ".join(part for part in note.removeprefix(f"{key} not made: ").split(": ") if not part.startswith("/"))
    return (text if len(text) <= limit else text[: limit - 3] + "...").replace("|", "/")


def _artifact_cells(r: dict, key: str, label: str, stock: bool) -> str | None:
    a = r["artifacts"].get(key)
    if a is None:
        if r.get("tflite_error") and key == "int8_tflite":
            return f"{label} | not made: {_short(r['tflite_error'])} | | | | |"
        if r.get("tflite_error") and key == "stock_int8_tflite":
            return f"{label} | not made (ONNX only, as above) | | | | |"
        if key.startswith("stock") and not stock:
            return f"{label} | n/a (this edgemm has no --compare-stock) | | | | |"
        if why := _not_made(r, key):  # the stock tool wrote a model that does not load or run
            return f"{label} | not made: {why} | | | | | MISS"
        return None
    agreement = "-" if a["agreement"] is None else f"{100 * a['agreement']:.2f} %"
    size = None if a["size_bytes"] is None else a["size_bytes"] / 1024
    return (f"{label} | {agreement} | {_num(a['drop'], '+.2f')} | {_num(a['sqnr_db'], '.1f')} | {_num(size, '.1f')} | "
            f"{_num(a['seconds'], '.1f')} | {'pass' if passes(a) else 'MISS'}")


def table(rows: list[dict], stock: bool) -> str:
    lines = [("| model (licence) | kind | samples calib / val | artifact | top-1 agreement | accuracy drop (points) "
              "| SQNR dB (worst raw head) | size KB | quantize s | target |"),
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        first = f"| `{r['package']}` {r['name']} ({r['licence']}) | {r['kind']} |"
        if "error" in r:
            error = _short(r["error"])
            if r.get("tflite_error"):
                error = f"TFLite: {_short(r['tflite_error'])}; ONNX (`--format onnx`): {error}"
            lines.append(f"{first} - | failed | {error} | | | | | |")
            continue
        samples = f" {r['samples'][0]} / {r['samples'][1]} |"
        cells = [c for key, label in ARTIFACTS if (c := _artifact_cells(r, key, label, stock)) is not None]
        for i, c in enumerate(cells):
            lines.append(f"{first if i == 0 else '| | |'}{samples if i == 0 else ' |'} {c} |")
    return "\n".join(lines)


def model_note(r: dict) -> str:
    parts = [r["note"]]
    if "source_format" in r:
        sizes = ", ".join(f"{k.replace('_', ' ')} {v / 1024:.1f} KB" for k, v in r["float_sizes"].items())
        parts.append(f"source {r['source_format']} ({sizes})")
    if r.get("float_accuracy") is not None:
        parts.append(f"float accuracy on the validation media {100 * r['float_accuracy']:.1f} %")
    parts += [f"edgemm int8 TFLite keeps {n.split(' kept in float')[0].removeprefix('int8 TFLite: ')} in float: "
              "it does not run in int8 on a calibration sample (the stock TFLite PTQ model, which has it in int8, "
              "fails on the device)" for n in r.get("notes", []) if "kept in float, it does not run in int8" in n]
    parts += [f"edgemm int8 TFLite: {n.removeprefix('int8 TFLite: ')}" for n in r.get("notes", [])
              if n.startswith("int8 TFLite:") and "quantization-aware fine-tuning" in n]
    for key, label in ARTIFACTS:
        a, kind = r.get("artifacts", {}).get(key), "float_onnx" if "onnx" in key else "float_tflite"
        if a and r["float_sizes"].get(kind) and a["size_bytes"] > r["float_sizes"][kind]:
            parts.append(f"**{label} is larger than the float model** ({a['size_bytes'] / 1024:.1f} KB)")
    return f"* **{r['name']}**: " + "; ".join(parts) + "."


def section(rows: list[dict], stock: bool, command: str) -> str:
    done = [r for r in rows if "error" not in r]
    times = ", ".join(f"{r['name']} {r['total_seconds']} s" for r in rows if "total_seconds" in r)
    notes = "\n".join(model_note(r) for r in rows)
    return "\n".join([
        "## Quantization zoo: real third-party models, edgemm vs stock int8",
        "",
        f"Command: `{command}` (one run on this machine; {len(done)} of {len(rows)} models converted).",
        "",
        ("Real float models fetched at run time from pinned PyPI wheels (not committed), each with a model spec "
        "and evaluation media built in code with fixed seeds: rendered and photographed text lines and document "
        "pages (labelled: the accuracy drop is measured), augmented face and eye crops of the two portraits in "
        "scikit-image's wheel, and speech (FSDD digits from the data directory, espeak-ng sentences in eight "
        "voices), synthesised music, noise and quiet rooms. Calibration and validation media come from different "
        "seeds. Agreement and SQNR are of each int8 artifact against the float model on the validation media, in "
        "LiteRT / ONNX Runtime CPU (multilabel: per-label agreement; silero_vad: speech yes/no at 0.5); stock "
        "rows are `edgemm convert --compare-stock`: the stock TFLiteConverter full-int8 PTQ and ONNX Runtime "
        "`quantize_static` defaults on the same float model and calibration samples. Target: >= 99 % agreement "
        "and <= 0.5 points drop; raw heads >= 30 dB SQNR. None of these models is audio-visual: no public "
        "audio-visual float model was found in a PyPI wheel, so there is no such row."),
        "",
        table(rows, stock),
        "",
        notes,
        "",
        f"Wall time per model (fetch from cache, media, convert): {times}.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help=f"comma-separated names: {', '.join(zoo_models.MODELS)}")
    parser.add_argument("--short", action="store_true", help=f"{SHORT_SAMPLES} + {SHORT_SAMPLES} samples (CI)")
    parser.add_argument("--cache", type=Path, default=ROOT / ".zoo-cache", help="wheels, models, espeak WAVs")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data",
                        help="holds fsdd/recordings (speech); without it espeak-ng speech only")
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep each convert's output in DIR/NAME and its media in DIR/NAME-data")
    parser.add_argument("--convert-flags", default="",
                        help="more edgemm convert options for every model, e.g. '--keep-float auto --max-accuracy-drop 0.5'")
    parser.add_argument("--no-write", action="store_true", help="print, do not update RESULTS.md")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(zoo_models.MODELS)
    unknown = [n for n in names if n not in zoo_models.MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(zoo_models.MODELS)}")
    args.cache = args.cache.resolve()
    args.data_dir = args.data_dir.resolve()
    args.keep = args.keep and args.keep.resolve()
    stock = has_compare_stock()
    if not stock:
        log("this edgemm convert has no --compare-stock: edgemm's own artifacts only")
    rows = [measure(zoo_models.MODELS[n], args, stock) for n in names]
    command = COMMAND + "".join(f" {shlex.quote(a)}" for a in sys.argv[1:] if a != "--no-write")
    body = section(rows, stock, command)
    print(body)
    print(json.dumps(rows, indent=1))
    if not args.no_write:
        update_section("quantization_zoo", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
