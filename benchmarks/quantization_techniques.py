"""Each quantization technique of `edgemm convert` on the small model built to need it (tests/quant_models.py):
int8 output SQNR (dB) against the float model on held-out samples, with the technique and without.

    .venv/bin/python benchmarks/quantization_techniques.py [--no-write]

  activation ranges  --method minmax vs auto (converters/ranges.py), int8 TFLite (LiteRT) and int8 ONNX
                     (ONNX Runtime), on a Dense model whose one glitch-following unit sets min/max
  equalisation       an ONNX Conv -> ReLU -> depthwise Conv -> ReLU -> Conv chain with 2500x channel imbalance,
                     before and after converters/equalize.py, quantized by ONNX Runtime with per-tensor and
                     per-channel weights
  int16x8            the Dense model's int8 TFLite against its int16x8 TFLite (export.write_tflite_int16x8)
  front end in float a Keras spectrum -> log -> Conv1D model's int8 TFLite against the same with the ops computing
                     its LOG's input in float (tflite_ranges.before_log), as mixed.tflite's first step makes it
  bias correction    an ONNX Conv -> depthwise Conv -> BN -> Conv -> Gemm model with one outlier weight, before
                     and after converters/bias_correction.py, quantized by ONNX Runtime (min/max ranges) with
                     per-tensor and per-channel weights; worst of its two outputs
  weight rounding    a Conv chain on smooth signals with 16-bit activations, its weights rounded to nearest
                     against converters/weight_rounding.py's rounding with bias correction
What the same techniques do on real third-party models: the quantization_zoo section.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from converters import bias_correction, equalize, export, saved_model  # noqa: E402
from converters.metrics import sqnr_db  # noqa: E402
from edgemm.backends.litert import LiteRTBackend  # noqa: E402
from edgemm.binding import Tensor  # noqa: E402
from tests import quant_models  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/quantization_techniques.py"


def _ort(path: Path, feeds: np.ndarray) -> np.ndarray:
    return _ort_all(path, feeds)[0]


def _litert(path: Path, feeds: np.ndarray) -> np.ndarray:
    backend = LiteRTBackend(path)
    return np.concatenate([next(iter(backend.run({"x": x[None]}).values())) for x in feeds])


def dense_rows(tmp: Path) -> list[tuple[str, str, float, float]]:
    model = quant_models.glitchy_dense_model()
    calib, val = quant_models.glitchy_data(300, 1), quant_models.glitchy_data(300, 2)
    reference = model.predict(val, verbose=0)
    graph = saved_model.Graph(export.export_saved_model(model, tmp / "sm"), [Tensor("x", (1, 32), "float32")])
    tflite, chosen = {}, {}
    for method in ("minmax", "auto"):
        chosen[method] = export.write_tflite(graph, tmp / f"{method}.tflite", {"x": calib}, True, True, method=method)
        tflite[method] = sqnr_db(reference, _litert(tmp / f"{method}.tflite", val))
    float_onnx = export.write_onnx_from_keras(model, tmp / "float.onnx")
    onnx = {m: sqnr_db(reference, _ort(export.write_onnx_int8(float_onnx, tmp / f"{m}.onnx", {"x": calib},
                                                              method=m).path, val)) for m in ("minmax", "auto")}
    export.write_tflite_int16x8(graph, tmp / "int16x8.tflite", {"x": calib})
    int16 = sqnr_db(reference, _litert(tmp / "int16x8.tflite", val))
    return [("activation ranges (min/max -> auto)", "int8 TFLite", tflite["minmax"], tflite["auto"]),
            ("activation ranges (min/max -> auto)", "int8 ONNX", onnx["minmax"], onnx["auto"]),
            ("int16x8 activations (int8 -> int16x8)", "TFLite", tflite["auto"], int16)]


def front_end_rows(tmp: Path) -> list[tuple[str, str, float, float]]:
    """The log-spectrum Keras model's int8 TFLite against the same with the ops computing its LOG's input in
    float (float inputs and outputs), as mixed.tflite's first step makes it."""
    model = quant_models.log_spectrum_keras()
    calib, val = quant_models.log_spectrum_data(200, 1)["x"], quant_models.log_spectrum_data(200, 2)["x"]
    reference = model.predict(val, verbose=0)
    graph = saved_model.Graph(export.export_saved_model(model, tmp / "spectrum"), [Tensor("x", (1, 1, 512), "float32")])
    chosen = export.write_tflite(graph, tmp / "spectrum.tflite", {"x": calib}, True, True, method="minmax")
    export.write_tflite(graph, tmp / "spectrum_mixed.tflite", {"x": calib}, True, True, method="minmax",
                        float_nodes=tuple(chosen["before_log"]))
    return [(f"front end before a LOG kept in float ({len(chosen['before_log'])} ops, min/max ranges)",
             "mixed TFLite", sqnr_db(reference, _litert(tmp / "spectrum.tflite", val)),
             sqnr_db(reference, _litert(tmp / "spectrum_mixed.tflite", val)))]


def equalisation_rows(tmp: Path) -> list[tuple[str, str, float, float]]:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    source = quant_models.imbalanced_conv_chain(tmp / "chain.onnx")
    equalize.equalize(source, tmp / "equalized.onnx")
    x = np.random.default_rng(6).normal(0, 1, (64, 3, 16, 16)).astype(np.float32)
    reference = _ort(source, x[48:])
    rows = []
    for per_channel in (False, True):
        sqnr = {}
        for name in ("chain", "equalized"):
            out = tmp / f"{name}_{per_channel}.onnx"
            quantize_static(str(tmp / f"{name}.onnx"), str(out), export._Reader({"x": x[:48]}),
                            quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8)
            sqnr[name] = sqnr_db(reference, _ort(out, x[48:]))
        weights = "per-channel" if per_channel else "per-tensor"
        rows.append(("cross-layer equalisation", f"int8 ONNX, {weights} weights", sqnr["chain"], sqnr["equalized"]))
    return rows


def bias_correction_rows(tmp: Path) -> list[tuple[str, str, float, float]]:
    source = quant_models.biased_conv_bn_gemm(tmp / "biased.onnx", outlier=6.0)
    calib, val = quant_models.biased_images(64, 1), quant_models.biased_images(64, 2)
    reference = _ort_all(source, val["x"])
    rows = []
    for per_channel in (False, True):
        sqnr = {}
        for name in ("biased", "corrected"):
            if name == "corrected":
                bias_correction.correct(source, tmp / f"corrected_{per_channel}.onnx", calib, per_channel)
            model = source if name == "biased" else tmp / f"corrected_{per_channel}.onnx"
            int8 = export.write_onnx_int8(model, tmp / f"{name}_{per_channel}_int8.onnx", calib, method="minmax",
                                          per_channel=per_channel).path
            sqnr[name] = min(sqnr_db(r, t) for r, t in zip(reference, _ort_all(int8, val["x"]), strict=True))
        weights = "per-channel" if per_channel else "per-tensor"
        rows.append(("bias correction", f"int8 ONNX, {weights} weights", sqnr["biased"], sqnr["corrected"]))
    return rows


def weight_rounding_rows(tmp: Path) -> list[tuple[str, str, float, float]]:
    """The smooth Conv chain with 16-bit activations (ONNX Runtime's int16 QDQ, what int16x8 TFLite computes)
    and per-channel int8 weights: the model as given, and its weights rounded by converters/weight_rounding.py
    with the bias corrected (what int16x8.tflite is made from when it misses)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    source = quant_models.smooth_conv_chain(tmp / "smooth.onnx")
    calib, val = quant_models.smooth_signals(100, 1), quant_models.smooth_signals(100, 2)
    bias_correction.correct(source, tmp / "rounded.onnx", calib, per_channel=True, hessian=True)
    reference = _ort(source, val["x"])

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.samples = iter(calib["x"])

        def get_next(self):
            return next(({"x": x[None]} for x in self.samples), None)

    sqnr = {}
    for name, model in (("nearest", source), ("rounded", tmp / "rounded.onnx")):
        quantize_static(str(model), str(tmp / f"{name}_a16.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt16, weight_type=QuantType.QInt8, per_channel=True)
        sqnr[name] = sqnr_db(reference, _ort(tmp / f"{name}_a16.onnx", val["x"]))
    return [("weight rounding (GPTQ) and bias correction", "16-bit activations, per-channel int8 weights",
             sqnr["nearest"], sqnr["rounded"])]


def _ort_all(path: Path, feeds: np.ndarray) -> list[np.ndarray]:
    """Every output of the model, one sample at a time."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    runs = [session.run(None, {name: x[None]}) for x in feeds]
    return [np.concatenate([r[k] for r in runs]) for k in range(len(runs[0]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgemm-techniques-") as tmp:
        rows = (dense_rows(Path(tmp)) + front_end_rows(Path(tmp)) + equalisation_rows(Path(tmp))
                + bias_correction_rows(Path(tmp)) + weight_rounding_rows(Path(tmp)))
    lines = ["## Quantization techniques on the models built to need them", "",
             f"Command: `{COMMAND}`. Output SQNR in dB against the float model on held-out samples (higher is "
             "better); models from tests/quant_models.py, the same the tests use.", "",
             "| technique | artifact | without | with | gain |", "|---|---|---:|---:|---:|"]
    lines += [f"| {t} | {a} | {w:.1f} | {v:.1f} | {v - w:+.1f} |" for t, a, w, v in rows]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        update_section("quantization_techniques", body)


if __name__ == "__main__":
    main()
