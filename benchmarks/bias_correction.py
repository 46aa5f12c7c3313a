"""Bias correction (converters/bias_correction.py) on real third-party models of the quantization zoo: int8
ONNX with min/max ranges from the float model and from its bias-corrected copy, both against the float model.

    .venv/bin/python benchmarks/bias_correction.py [--only NAME[,NAME]] [--samples N] [--cache DIR]
        [--data-dir DIR] [--no-write]

Each model (default: text_direction, doc_orientation, oww_embedding, dnsmos) is fetched into --cache as
benchmarks/quantization_zoo.py does, gets its entry's input shapes and N calibration (seed 1) + N validation
(seed 2) samples from the zoo's media builders, and for per-tensor and per-channel weights is bias-corrected
for that granularity and quantized by export.write_onnx_int8(method="minmax"), corrected and not. Measured on
the validation samples, always against the original float model: the worst output SQNR, for classifiers the
SQNR of the logits (the Softmax input), top-1 agreement and accuracy where the media have labels; and the
seconds the correction took and how many layers it corrected. A model or granularity that fails is one row
with its error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import zoo_models  # noqa: E402
from benchmarks.results_md import update_section  # noqa: E402
from converters import bias_correction, shapes  # noqa: E402
from converters.export import write_onnx_int8  # noqa: E402
from converters.metrics import sqnr_db  # noqa: E402
from edgemm.samples import model_ranks, sample  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/bias_correction.py"
DEFAULT_MODELS = ("text_direction", "doc_orientation", "oww_embedding", "dnsmos")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def softmax_input(path: Path) -> str | None:
    """The logits of a classifier that ends in a Softmax: the classify output saturates, the logits do not."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    name = next((n.input[0] for n in reversed(graph.node) if n.op_type == "Softmax"), None)
    producers = {o: n for n in graph.node for o in n.output}
    while name in producers and producers[name].op_type == "Identity":  # ONNX Runtime's pre-processing drops them
        name = producers[name].input[0]
    return name


def run(path: Path, val: dict[str, np.ndarray], logits: str | None) -> dict[str, np.ndarray]:
    """Every output (and `logits`) of the model over the validation samples, one row per sample."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    if logits and logits not in {o.name for o in model.graph.output}:
        model.graph.output.extend([onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None)])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names, ranks = [o.name for o in session.get_outputs()], model_ranks(session.get_inputs())
    runs = [session.run(names, sample(val, i, ranks)) for i in range(len(next(iter(val.values()))))]
    return {name: np.concatenate([np.reshape(r[k], (1, -1)) for r in runs]) for k, name in enumerate(names)}


def compare(ref: dict, out: dict, heads: list[str], logits: str | None, labels: np.ndarray | None) -> dict:
    m = {"sqnr": min(sqnr_db(ref[k], out[k]) for k in ref if k != logits)}
    if logits:
        m["logit_sqnr"] = sqnr_db(ref[logits], out[logits])
    if heads:
        m["agreement"] = float(np.mean([np.mean(ref[h].argmax(1) == out[h].argmax(1)) for h in heads]))
        if labels is not None:
            m["accuracy"] = float(np.mean(out[heads[0]].argmax(1) == labels))
    return m


def measure(name: str, args, tmp: Path) -> list[dict]:
    entry = zoo_models.MODELS[name]
    try:
        files = zoo_models.prepare(entry, args.cache)
        media = zoo_models.Media(files, args.data_dir if args.data_dir.is_dir() else None, args.cache / "work")
        log(f"{name}: building {args.samples} + {args.samples} samples")
        calib, val = entry.media(entry, media, args.samples, 1), entry.media(entry, media, args.samples, 2)
        calib.pop("label", None)
        labels = val.pop("label", None)
        model = files["model"]
        given = [v for flag, v in zip(entry.flags[::2], entry.flags[1::2]) if flag == "--input-shape"]
        if given:
            model = shapes.fix_onnx(model, shapes.parse_input_shapes(given), tmp / f"{name}.onnx")
        heads = [o for o, spec in entry.spec["outputs"].items() if spec["head"] == "classify"]
        logits = softmax_input(model) if heads else None
        ref = run(model, val, logits)
    except Exception as e:  # noqa: BLE001 -- not fetched, a media builder's missing tool: this model's row only
        return [{"model": name, "error": f"{type(e).__name__}: {e}"}]
    float_accuracy = float(np.mean(ref[heads[0]].argmax(1) == labels)) if heads and labels is not None else None
    rows = []
    for per_channel in (False, True):
        row = {"model": name, "per_channel": per_channel, "float_accuracy": float_accuracy}
        try:
            corrected = tmp / f"{name}-corrected-{per_channel}.onnx"
            start = time.perf_counter()
            row["layers"] = bias_correction.correct(model, corrected, calib, per_channel=per_channel)
            row["correct_s"] = time.perf_counter() - start
            for tag, source in (("plain", model), ("corrected", corrected)):
                q = write_onnx_int8(source, tmp / f"{name}-int8-{tag}-{per_channel}.onnx", calib, method="minmax",
                                    per_channel=per_channel)
                if q.per_channel != per_channel:  # the correction was for the other granularity
                    raise RuntimeError("ONNX Runtime could not give this model per-channel weights")
                row[tag] = compare(ref, run(q.path, val, logits), heads, logits, labels)
        except Exception as e:  # noqa: BLE001 -- e.g. ONNX Runtime cannot load the int8 model: this row only
            row["error"] = f"{type(e).__name__}: {e}"
        log(f"{name} per_channel={per_channel}: {row}")
        rows.append(row)
    return rows


def _cell(row: dict, key: str, fmt) -> str:
    a, b = row["plain"].get(key), row["corrected"].get(key)
    return "-" if a is None else f"{fmt(a)} -> {fmt(b)}"


def table(rows: list[dict]) -> str:
    lines = [("| model | weights | layers corrected | correction s | worst output SQNR dB | logit SQNR dB "
              "| top-1 agreement | accuracy (float) |"), "|---|---|---:|---:|---|---|---|---|"]
    db, pct = (lambda x: f"{x:.1f}"), (lambda x: f"{100 * x:.1f} %")
    for r in rows:
        weights = "-" if "per_channel" not in r else "per-channel" if r["per_channel"] else "per-tensor"
        if "error" in r:
            error = " ".join(r["error"].split())[:200].replace("|", "/")
            lines.append(f"| {r['model']} | {weights} | | | failed: {error} | | | |")
            continue
        accuracy = _cell(r, "accuracy", pct)
        if r["float_accuracy"] is not None:
            accuracy += f" ({pct(r['float_accuracy'])})"
        lines.append(f"| {r['model']} | {weights} | {r['layers']} | {r['correct_s']:.1f} | {_cell(r, 'sqnr', db)} "
                     f"| {_cell(r, 'logit_sqnr', db)} | {_cell(r, 'agreement', pct)} | {accuracy} |")
    return "\n".join(lines)


def section(rows: list[dict], command: str, seconds: dict[str, float], samples: int) -> str:
    times = ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items())
    return "\n".join([
        "## Bias correction on zoo models (int8 ONNX, min/max ranges)", "",
        f"Command: `{command}` (one run on this machine; {samples} calibration + {samples} validation samples).", "",
        ("Rounding a layer's weights to int8 leaves each output channel with a fixed error that, times the "
         "non-zero mean of the layer's input, shifts the channel's output by a constant; bias correction "
         "(converters/bias_correction.py, Nagel et al. 2019) measures the input means on the calibration samples "
         "and subtracts that shift from the float model's biases, for the rounding ONNX Runtime will apply. "
         "Both int8 models use ONNX Runtime's min/max activation ranges, so the difference is the correction "
         "alone. The rounding depends on the weight granularity: per-tensor weights (one scale per layer) "
         "round the small channels of a layer coarsely, per-channel weights (one scale per output channel) "
         "round every channel finely and leave less to correct; each model is corrected for the granularity "
         "it is quantized with. Each cell is int8 -> int8 of the corrected model, both "
         "against the original float model on the validation media of benchmarks/zoo_models.py (different "
         "seed from calibration); logit SQNR is the classifier's Softmax input."), "",
        table(rows), "",
        f"Wall time per model (media, correction, quantization, evaluation): {times}.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated names of {', '.join(zoo_models.MODELS)}")
    parser.add_argument("--samples", type=int, default=100, help="calibration samples, and as many validation")
    parser.add_argument("--cache", type=Path, default=ROOT / ".zoo-cache", help="wheels, models, espeak WAVs")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data",
                        help="holds fsdd/recordings (speech); without it espeak-ng speech only")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(DEFAULT_MODELS)
    unknown = [n for n in names if n not in zoo_models.MODELS]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(zoo_models.MODELS)}")
    args.cache, args.data_dir = args.cache.resolve(), args.data_dir.resolve()
    rows, seconds = [], {}
    with tempfile.TemporaryDirectory(prefix="edgemm-bias-correction-") as tmp:
        for name in names:
            start = time.perf_counter()
            rows += measure(name, args, Path(tmp))
            seconds[name] = time.perf_counter() - start
    command = COMMAND + "".join(f" {a}" for a in sys.argv[1:] if a != "--no-write")
    body = section(rows, command, seconds, args.samples)
    print(body)
    if not args.no_write:
        update_section("bias_correction", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
