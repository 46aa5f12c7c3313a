"""`edgemm convert`: load -> quantize -> export -> validate -> gate, with a report.

Artifacts (in the output directory):
  float.tflite, int8.tflite    float and full-int8 TFLite (Keras sources only)
  float.onnx, int8.onnx        float and int8 QDQ ONNX (per-channel weights)
  manifest.json                what the runtime needs (edgemm.manifest)
  report.json                  everything measured, also printed as a summary
  int8_edgetpu_report.txt      predicted Edge TPU mapping, compiler-log style
Every artifact is validated by running it in the runtime the device uses
(LiteRT, ONNX Runtime) in a separate process, on held-out samples.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.metadata
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from converters import calibration, export, layer_error, metrics, qat, saved_model
from converters.child import run_in_child
from converters.gates import check_gates, gate_message, summary_table  # noqa: F401 (summary_table: CLI)
from converters.output_dir import OutputDir
from converters.shapes import parse_input_shapes
from converters.sources import SourceModel, check_model_path, load_source
from edgemm import __version__, cpu_features, edgetpu, layout, samples
from edgemm.atomic import atomic_path, write_json
from edgemm.backends.isolated import describe_tflite, run_isolated
from edgemm.errors import GateError, InputError
from edgemm.manifest import MANIFEST_NAME, SCHEMA_VERSION, sha256_file
from edgemm.progress import Update, throttled

REPORT_SCHEMA_VERSION = 1
TOOLS = ("tensorflow", "keras", "tf2onnx", "onnx", "ort-cpu", "ai-edge-litert", "numpy")
# An int8 ONNX model that agrees less with the float model when run with ONNX Runtime's int8
# kernels than when its QDQ graph is evaluated in float (fake quantization) by more than this
# many points has met kernel saturation, not quantization error.
SATURATION_POINTS = 0.5
# Samples per float-model batch: large batches of a ResNet-50-class model hold gigabytes of activations, and
# peak memory must not depend on how many samples are validated.
PREDICT_BATCH = 32
# The precision target an int8 artifact is held to (issue-level goal, not a gate): top-1/per-label agreement
# with the float model, or SQNR of raw heads; and the accuracy budget when --max-accuracy-drop is not given.
TARGET_AGREEMENT, TARGET_SQNR_DB, DEFAULT_BUDGET_POINTS = 0.99, 30.0, 0.5
ACTIVATIONS_DOMINATE_DB = 6.0  # int16x8 this far below its weights alone: better-rounded weights cannot help
_NO_CALIB = "give --calib FILE.npz with one array per model input (first axis = samples; optional 'label')"


@dataclasses.dataclass(frozen=True)
class ConvertOptions:
    calib: Path | None = None  # .npz keyed by input name (+ optional 'label'); required
    val: Path | None = None  # .npz for validation; default: the part of `calib` not used to calibrate
    train: Path | None = None  # .npz for fine-tuning/distillation; default: the calibration samples
    calib_samples: int = 300
    method: str = "auto"  # activation ranges: export.CALIBRATION_METHODS
    per_channel: bool = True  # ONNX weights
    tflite_weights: str = "auto"  # auto | per-tensor | per-channel
    reduce_range: str = "auto"  # auto | on | off
    keep_float: tuple[str, ...] | str = ()  # ONNX node names, or "auto"
    keep_float_steps: int = 8  # most re-quantizations "auto" tries
    max_accuracy_drop: float | None = None  # accuracy points, int8 artifacts vs float source
    max_size: int | None = None  # bytes, each int8 artifact
    require_edgetpu_mappable: bool = False
    formats: tuple[str, ...] = ("tflite", "onnx")
    spec: Path | None = None  # the model spec [default: MODEL.yaml/.yml/.json beside the model]
    min_agreement: float = metrics.DEFAULT_MIN_AGREEMENT  # gate: classify/multilabel heads vs the float model
    min_sqnr_db: float = metrics.DEFAULT_MIN_SQNR_DB  # gate: raw/state heads vs the float model
    input_shapes: tuple[str, ...] = ()  # --input-shape NAME=D0,D1,... (fixes dynamic dimensions)
    custom_code: Path | None = None  # --custom-code FILE.py: custom/Lambda layers of a Keras source (runs the file)
    fp16_onnx: bool = False  # also write fp16.onnx (TensorRT / CUDA targets)
    compare_stock: bool = False  # also quantize with the stock tools' defaults, for the report only
    equalize: bool = True  # cross-layer equalisation of ONNX sources (Conv -> ReLU -> Conv)
    bias_correction: str = "auto"  # auto | on | off: int8 ONNX from a bias-corrected float model; auto: when the
    # int8 ONNX misses the target, kept only if closer
    qat: str = "auto"  # auto | on | off: quantization-aware fine-tuning of the int8 TFLite; auto: when it misses
    qat_seconds: float = 300.0  # at most this long
    int16x8: str = "auto"  # auto | on | off: int16x8.tflite (16-bit activations); auto: when int8 misses and the
    # target is not the Edge TPU
    target: str | None = None  # device profile name (firmware_configs/NAME.yaml)
    max_latency_ms: float | None = None  # gate on the int8 artifacts' median invoke here (CPU targets)
    # compression before quantization (Keras sources)
    prune: float | None = None  # fraction of channels removed per prunable layer
    distill: bool = False  # train the student on the source model's soft outputs
    student: Path | None = None  # a student architecture (.keras or .json/.yaml config) instead of the source's
    epochs: int = 12  # fine-tuning / distillation epochs
    temperature: float = 4.0
    alpha: float = 0.7


def tool_versions() -> dict[str, str]:
    versions = {"edgemm": __version__, "python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def _load_npz(path: Path, source: SourceModel) -> calibration.Samples:
    return calibration.check_samples(calibration.load_npz(path), source.sample_shapes, str(path))


def _load_data(source: SourceModel, options: ConvertOptions) -> tuple[calibration.Samples, calibration.Samples]:
    if options.calib is None:
        raise InputError(_NO_CALIB)
    calib = _load_npz(options.calib, source)
    if options.val is not None:
        return calib.take(slice(0, options.calib_samples)), _load_npz(options.val, source)
    return calibration.split_npz(calib, options.calib_samples)


def _match(outputs: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """An artifact's outputs keyed by the source model's output names (by name, else by position)."""
    if set(names) <= set(outputs):
        return {n: outputs[n] for n in names}
    if len(outputs) == len(names):
        return dict(zip(names, outputs.values()))
    raise InputError(f"the artifact's outputs {sorted(outputs)} do not match the model's {names}")


def _accuracy(heads: dict, reference: dict[str, np.ndarray], labels: np.ndarray | None) -> float | None:
    """Top-1 accuracy of the first classify head, when the validation set has labels."""
    name = next((n for n, h in heads.items() if h.head == "classify"), None)
    if name is None or labels is None:
        return None
    return float(np.mean(reference[name].reshape(len(labels), -1).argmax(1) == labels))


def still_int8(ranked: list[dict], in_float, top: int = 20) -> list[dict]:
    """The report's per-layer rows: the `top` worst of the ranking (layer_error.layer_errors) whose layer is
    not kept in float. One ranking serves every version: a layer's range, and so its own error, is calibrated
    on the float model and does not change when other layers are kept in float."""
    in_float = set(in_float)
    return [r for r in ranked if r["node"] not in in_float][:top]


def closeness(entry: dict) -> str:
    """An artifact's agreement with the float model, or its SQNR where it has no classify head."""
    return f"agreement {entry['agreement']}" if entry.get("agreement") is not None else f"SQNR {entry['sqnr_db']} dB"


class _Closest:
    """The version of an artifact closest to the float model among those a loop makes (one more layer in float
    can move other ranges and end further away): file and report entry, kept aside in `work`."""

    def __init__(self, run: "_Run", key: str, path: Path):
        self.run, self.key, self.path = run, key, path
        self.aside = run.work / f"closest_{path.name}"
        self.entry: dict | None = None

    def offer(self) -> None:
        """The artifact as it is now, if it is closer than the best so far."""
        entry = self.run.artifacts[self.key]
        if self.entry is None or self.run.distance(entry) < self.run.distance(self.entry):
            self.entry = copy.deepcopy(entry)
            shutil.copyfile(self.path, self.aside)

    def restore(self) -> bool:
        """Puts the closest version back in place; whether it was not the last one made."""
        if self.entry["sha256"] == self.run.artifacts[self.key]["sha256"]:
            return False
        with atomic_path(self.path) as tmp:
            shutil.copyfile(self.aside, tmp)
        self.run.artifacts[self.key] = self.entry
        return True


class _Run:
    """One conversion: holds the source, data, output directory and what was measured."""

    def __init__(self, model: Path, out_dir: Path, options: ConvertOptions, log: Callable[[str], None], work: Path,
                 progress: Callable[[str, int, int], None] | None = None):
        self.options, self.log, self.out = options, log, Path(out_dir)
        self.progress = progress
        self.stages: dict[str, float] = {}
        self.artifacts: dict[str, dict] = {}
        self.notes: list[str] = []
        self.model_path = Path(model)
        self.int16x8_error: str | None = None  # why int16x8.tflite could not be made
        self.float_layers_tried = 0  # int8 ONNX layers --keep-float auto tried in float
        self.float_steps_ran_out = False  # it stopped at --keep-float-steps with layers left to try
        self.qat_tried: str | None = None  # what quantization-aware fine-tuning of the int8 TFLite came to
        self.work = Path(work)  # intermediate files (removed by the caller)

    def counter(self, step: str) -> Update | None:
        """(done, total) of a long step, for the progress bar on the user's terminal."""
        if self.progress is None:
            return None
        return throttled(lambda done, total: self.progress(step, done, total))

    def stage(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        self.stages[name] = round(self.stages.get(name, 0.0) + time.perf_counter() - start, 2)
        return result

    # -- validation -------------------------------------------------------------------------------
    def validate(self, key: str, kind: str, path: Path, backend_options: dict | None = None,
                 lay: layout.ArtifactLayout = layout.ArtifactLayout()) -> dict:
        self.log(f"  validating {path.name} in {kind} on {len(self.val)} held-out samples")
        inputs = layout.to_artifact(self.val.inputs, lay.inputs)
        outputs, info = self.stage("validate", run_isolated, kind, path, inputs, backend_options,
                                   progress=self.counter(f"validating {path.name}"))
        outputs = layout.to_source(outputs, lay.outputs)
        entry = self.artifacts.setdefault(key, {})
        entry.update(self.compare(outputs))
        entry.update({"backend": info["backend"], "inputs": info["inputs"], "outputs": info["outputs"],
                      "median_invoke_ms": info["median_ms"]})
        return entry

    def compare(self, outputs: dict[str, np.ndarray]) -> dict:
        """Per-head metrics of an artifact's outputs against the float reference, and their summary."""
        outputs = _match(outputs, list(self.reference))
        heads = {n: metrics.head_metrics(h, self.reference[n], outputs[n], self.val.labels)
                 for n, h in self.source.heads.items() if h.head != "state"}
        return {**metrics.summary(heads), "heads": heads}

    def record(self, key: str, path: Path, fmt: str, precision: str, **extra) -> None:
        entry = self.artifacts.setdefault(key, {})
        entry.update({"file": path.name, "format": fmt, "precision": precision,
                      "size_bytes": path.stat().st_size, "sha256": sha256_file(path)}, **extra)

    # -- the steps --------------------------------------------------------------------------------
    def steps(self) -> dict:
        o = self.options
        started = time.perf_counter()
        self.log(f"loading {self.model_path}")
        self.source = source = self.stage("load", load_source, self.model_path, o.spec,
                                          parse_input_shapes(o.input_shapes), o.custom_code, self.work)
        shapes = ", ".join(f"{t.name} {'x'.join(map(str, t.shape))}" for t in source.inputs)
        heads = ", ".join(f"{n} ({h.head})" for n, h in source.heads.items())
        self.log(f"  {source.format}, inputs {shapes}; outputs {heads}; spec: {source.spec_file or 'none'}")
        if (o.prune or o.distill or o.student) and source.kind != "keras":
            raise InputError(f"{source.path}: --prune, --distill and --student need a Keras source (.keras, or an "
                             f".h5 that Keras 3 loads); this is a {source.format}")
        self.calib, self.val = self.stage("data", _load_data, source, o)
        self.log(f"calibration: {self.calib.source}; validation: {self.val.source}")
        self.reference = self.stage("float_reference", self.float_reference)
        self.ref_acc = self.source_acc = source_acc = _accuracy(source.heads, self.reference, self.val.labels)
        if o.equalize and source.kind == "onnx":
            source = self.equalize()
        compression = None
        if o.prune or o.distill or o.student:
            compression = self.compress(source_acc)
            source = self.source
            self.reference = self.stage("float_reference", self.float_reference)
            self.ref_acc = _accuracy(source.heads, self.reference, self.val.labels)

        if "tflite" in o.formats:
            self.tflite()
        if "onnx" in o.formats:
            self.onnx()
        if o.compare_stock:
            self.stock()

        report = {
            "schema_version": REPORT_SCHEMA_VERSION,
            "source": {"path": str(source.path), "kind": source.kind, "format": source.format, "sha256": source.sha256,
                       "inputs": {t.name: list(t.shape) for t in source.inputs},
                       "outputs": {t.name: list(t.shape) for t in source.outputs},
                       "spec_file": None if source.spec_file is None else str(source.spec_file)},
            "data": {"calibration": self.calib.source, "validation": self.val.source,
                     "calibration_samples": len(self.calib), "validation_samples": len(self.val)},
            "float_accuracy": None if source_acc is None else round(source_acc, 4),
            "converted_float_accuracy": None if self.ref_acc is None else round(self.ref_acc, 4),
            "compression": compression,
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(o).items()},
            "cpu": {"model": cpu_features.cpu_model(), "int8_dot_product": cpu_features.has_int8_dot_product()},
            "artifacts": self.artifacts,
            "notes": self.notes,
            "tools": tool_versions(),
        }
        for entry in self.artifacts.values():  # drops are against the model the user gave
            if source_acc is not None and entry.get("accuracy") is not None:
                entry["accuracy_drop_points"] = round(100 * (source_acc - entry["accuracy"]), 2)
        report["precision_target"] = self.explain_misses()
        report["gates"] = check_gates(self.artifacts, o)
        self.stages["total"] = round(time.perf_counter() - started, 2)
        report["stage_seconds"] = self.stages
        self.write_manifest(report)
        write_json(self.out / "report.json", report)
        return report

    def equalize(self) -> SourceModel:
        """Cross-layer equalisation of an ONNX source (converters/equalize.py): both formats are made from the
        equalised model; the float reference stays the user's model, so validation checks the equivalence."""
        from converters import equalize

        path = self.work / "equalized.onnx"
        pairs = self.stage("equalize", equalize.equalize, self.source.graph, path)
        if pairs:
            self.notes.append(f"cross-layer equalisation: {pairs} Conv -> ReLU -> Conv pairs rescaled per channel "
                              "(the same function; per-channel ranges evened out for int8)")
            self.log("  " + self.notes[-1])
            self.source = dataclasses.replace(self.source, graph=path)
        return self.source

    def compress(self, source_acc: float | None) -> dict:
        """Prune and/or distill the Keras source into a student, which is then what gets quantized."""
        from converters import distill, prune, students
        from converters.model_stats import count_macs
        from converters.sources import save_keras

        o = self.options
        if [h.head for h in self.source.heads.values()] != ["classify"]:
            raise InputError(f"{self.source.path}: pruning and distillation support models with one classify output "
                             f"(this one has {', '.join(f'{n}: {h.head}' for n, h in self.source.heads.items())})")
        teacher = self.source.keras_model
        rows = []

        def row(stage: str, model, seconds: float | None = None) -> None:
            probs = model.predict(self._x(model, self.val.inputs), batch_size=PREDICT_BATCH,
                                  verbose=0).reshape(len(self.val), -1)
            acc = None if self.val.labels is None else round(float(np.mean(probs.argmax(1) == self.val.labels)), 4)
            rows.append({"stage": stage, "parameters": int(model.count_params()), "macs": count_macs(model),
                         "float32_weight_bytes": 4 * int(model.count_params()), "accuracy": acc,
                         "seconds": None if seconds is None else round(seconds, 1)})
            self.log(f"  {stage}: {rows[-1]['parameters']:,} parameters, {rows[-1]['macs'] / 1e6:.2f} M MACs"
                     + ("" if acc is None else f", float accuracy {100 * acc:.2f}%"))

        self.train = self.calib
        if o.train is not None:
            self.train = self.stage("data", _load_npz, o.train, self.source)
            self.log(f"training data: {o.train} ({len(self.train)} samples)")
        row("source", teacher)
        result: dict = {"stages": rows}
        student = teacher
        if o.student:
            student = students.build(o.student, teacher)
            row(f"student from {Path(o.student).name} (untrained)", student)
        if o.prune:
            self.log(f"pruning {o.prune:.0%} of the channels of every prunable layer")
            t = time.perf_counter()
            student, summary = self.stage("prune", prune.prune, student, o.prune)
            result["prune"] = summary
            row("pruned (before fine-tuning)", student, time.perf_counter() - t)
        config = distill.DistillConfig(epochs=o.epochs, temperature=o.temperature,
                                       alpha=o.alpha if o.distill else 0.0)
        title = "distill" if o.distill else "fine-tune"
        self.log(f"{title}: {o.epochs} epochs" + (f", temperature {o.temperature}, alpha {o.alpha}" if o.distill else ""))
        t = time.perf_counter()
        result["training"] = self.stage(title.replace("-", "_"), distill.train_student, student, self.training_data,
                                        config, teacher if o.distill else None, self.log, title)
        row("distilled" if o.distill else "fine-tuned", student, time.perf_counter() - t)
        student = self._named_like_source(student)
        path = save_keras(student, self.out / "student.keras")
        self.source = dataclasses.replace(self.source, keras_model=student, path=path, sha256=sha256_file(path))
        result["student_file"] = path.name
        return result

    def _named_like_source(self, student):
        """The student with the source model's output names, which the spec and the artifacts use."""
        import keras

        names = [t.name for t in self.source.outputs]
        if list(student.output_names) == names:
            return student
        return keras.Model(student.input, dict(zip(names, student.outputs)))

    def training_data(self, epoch: int):
        """Training samples for fine-tuning/distillation, the same every epoch: --train, else the calibration set."""
        return self.train.inputs, self.train.labels

    @staticmethod
    def _x(model, inputs: dict):
        return inputs[model.inputs[0].name.split(":")[0]] if len(model.inputs) == 1 else inputs

    def float_reference(self) -> dict[str, np.ndarray]:
        """The source model's outputs on the validation set, keyed by output name (first axis = samples)."""
        names = [t.name for t in self.source.outputs]
        if self.source.kind == "keras":
            model = export.named_outputs(self.source.keras_model)
            outputs = model.predict(self._x(model, self.val.inputs), batch_size=PREDICT_BATCH, verbose=0)
            return {n: np.asarray(outputs[n], np.float32) for n in names}
        if self.source.kind == "saved_model":
            return _match(saved_model.run(self.source.graph, self.val.inputs), names)
        runtime = "litert" if self.source.kind == "tflite" else "ort-cpu"
        outputs, _ = run_isolated(runtime, self.source.graph, self.val.inputs)
        return _match(outputs, names)

    def shortfall(self, entry: dict) -> float:
        """How far an artifact is from the float model, in points: accuracy drop, else disagreement, else
        the dB its worst raw head's SQNR is below 30."""
        if self.ref_acc is not None and entry.get("accuracy") is not None:
            return 100 * (self.ref_acc - entry["accuracy"])
        if entry.get("agreement") is not None:
            return 100 * (1 - entry["agreement"])
        return max(0.0, TARGET_SQNR_DB - entry["sqnr_db"])

    def distance(self, entry: dict) -> tuple[float, float]:
        """For choosing between two versions of an artifact: the shortfall, then the disagreement (or the
        negated SQNR). Smaller is closer to the float model."""
        second = 1 - entry["agreement"] if entry.get("agreement") is not None else -(entry.get("sqnr_db") or 0.0)
        return round(self.shortfall(entry), 6), second

    def tflite_graph(self) -> tuple[saved_model.Graph, layout.ArtifactLayout]:
        """The SavedModel the TFLite artifacts are made from, and how its layout differs from the source's."""
        source = self.source
        if source.kind == "keras":
            path = self.work / "keras_saved_model"
            if not path.exists():
                self.stage("export_saved_model", export.export_saved_model, source.keras_model, path, source.inputs)
            return saved_model.Graph(path, source.inputs), layout.ArtifactLayout()
        if source.kind == "saved_model":
            return saved_model.Graph(source.graph, source.inputs), layout.ArtifactLayout()
        from converters import onnx_tflite

        if source.kind == "tflite":  # no graph to read back: the ONNX way (converters/tflite_source.py says why)
            source = dataclasses.replace(source, graph=self.onnx_of_tflite())
        self.log("converting ONNX to a TensorFlow graph with onnx2tf")
        return self.stage("onnx2tf", onnx_tflite.to_saved_model, source, self.work / "onnx2tf", self.log,
                          keep_layout=self.source.kind == "tflite")

    def float_onnx(self) -> Path:
        """The source as a float ONNX, made once: the source itself, or exported with tf2onnx."""
        source, path = self.source, self.work / "float.onnx"
        if source.kind == "onnx":
            return source.graph
        if source.kind == "tflite":
            return self.onnx_of_tflite()
        if path.exists():
            return path
        if source.kind == "keras":
            self.log("exporting float ONNX (tf2onnx)")
            self.stage("export_onnx", export.write_onnx_from_keras, source.keras_model, path)
        else:
            self.log(f"exporting float ONNX from the {source.format} (tf2onnx)")
            self.stage("export_onnx", export.write_onnx_from_tf, source.graph, source.kind, path,
                       [t.name for t in source.inputs], [t.name for t in source.outputs])
        return path

    def onnx_of_tflite(self) -> Path:
        """The float ONNX of a .tflite source (tf2onnx), made once for both formats."""
        path = self.work / "from_tflite.onnx"
        if not path.exists():
            s = self.source
            self.log(f"exporting float ONNX from the {s.format} (tf2onnx)")
            self.stage("export_onnx", export.write_onnx_from_tf, s.graph, s.kind, path,
                       [t.name for t in s.inputs], [t.name for t in s.outputs])
        return path

    def tflite(self) -> None:
        float_path, int8_path = self.out / "float.tflite", self.out / "int8.tflite"
        graph, lay = self.tflite_made_from = self.tflite_graph()
        if self.source.kind == "tflite":  # the user's own float model, with static shapes
            from converters import tflite_source

            self.stage("export_tflite", tflite_source.static_copy, self.source.graph, float_path)
            self.record("float_tflite", float_path, "tflite", "float32")
            self.validate("float_tflite", "litert", float_path)
        else:
            self.log("exporting float TFLite")
            self.stage("export_tflite", export.write_tflite, graph, float_path, None)
            self.record("float_tflite", float_path, "tflite", "float32", **lay.entry())
            self.validate("float_tflite", "litert", float_path, lay=lay)
        mode = self.options.tflite_weights
        self.quantize_tflite(int8_path, mode == "per-channel", graph, lay)
        entry = self.artifacts["int8_tflite"]
        drop = self.shortfall(entry)
        if mode == "auto" and self.misses(entry):
            self.log(f"  int8 TFLite with per-tensor weights lost {drop:.2f} points (agreement {entry['agreement']}, "
                     f"SQNR {entry['sqnr_db']} dB); trying per-channel weights")
            # per-channel is not always better (it was worse on a real OCR classifier): keep the closer
            new, kept = self.keep_closer("int8_tflite", int8_path,
                                         lambda: self.quantize_tflite(int8_path, True, graph, lay), ties_to_new=True)
            lost = self.shortfall(new)
            self.notes.append(f"int8 TFLite: per-tensor weights lost {drop:.2f} points; per-channel weights "
                              f"lose {lost:.2f}: kept per-channel" if kept else
                              f"int8 TFLite: per-channel weights lost {lost:.2f} points, per-tensor {drop:.2f}: "
                              "kept per-tensor")
            self.log("  " + self.notes[-1])
        for failed in (self.artifacts["int8_tflite"]["quantization"]["ranges"] or {}).get("failed_in_int8", []):
            self.notes.append(f"int8 TFLite: {failed['type']} {failed['op']!r} kept in float, it does not run in int8 "
                              f"({failed['why']}); the Edge TPU runs only the ops before it")
            self.log("  " + self.notes[-1])
        o = self.options
        if o.qat == "on" or (o.qat == "auto" and self.misses(self.artifacts["int8_tflite"])):
            self.tflite_qat(int8_path, graph, lay)
        self.edgetpu(int8_path)
        self.int16x8(graph, lay)
        if o.keep_float == "auto" and o.max_accuracy_drop is not None and self.misses(self.artifacts["int8_tflite"]):
            if self.for_edgetpu():
                self.notes.append("int8 TFLite misses the accuracy budget; the Edge TPU has no float ops, so no "
                                  "TFLite layer is kept in float for this target")
            else:
                self.mixed_tflite(graph, lay)

    def mixed_tflite(self, graph: saved_model.Graph, lay: layout.ArtifactLayout, max_tensors: int = 8) -> None:
        """mixed.tflite: the int8 TFLite with ops kept in float until it is not `short`: first the ops that
        compute a LOG's input (a feature front end, tflite_ranges.before_log), then with them the worst 1, 2,
        4, 8 tensors (by the error their own quantization adds) with the ops writing and reading them. For
        CPU/GPU TFLite targets; int8.tflite stays full int8 (the Edge TPU has no float ops)."""
        q = self.artifacts["int8_tflite"]["quantization"]
        front = (q.get("ranges") or {}).get("before_log", [])
        worst = (q.get("ranges") or {}).get("worst_after_front" if front else "worst", [])
        counts = sorted({min(c, len(worst)) for c in (1, 2, 4, 8) if c <= max_tensors} - {0})
        plans = ([0] if front else []) + counts
        if not plans:
            return
        path, budget = self.out / "mixed.tflite", self.options.max_accuracy_drop
        calib = layout.to_artifact(self.calib.inputs, lay.inputs)
        closest = _Closest(self, "mixed_tflite", path)
        for count in plans:
            tensors = [w["tensor"] for w in worst[:count]]
            nodes = tuple(dict.fromkeys([*front, *(n for w in worst[:count] for n in w["nodes"])]))
            what = " and ".join(filter(None, [f"the {len(front)} ops computing a LOG's input" if front else "",
                                              f"{count} tensors ({', '.join(tensors)})" if count else ""]))
            self.log(f"  int8 TFLite loses {self.drop(self.artifacts['int8_tflite']):.2f} points > {budget}: "
                     f"mixed.tflite with {what} in float ({len(nodes)} ops)")
            start = time.perf_counter()
            self.stage("quantize_tflite", export.write_tflite, graph, path, calib, True, "per-channel" in q["weights"],
                       self.counter("calibrating mixed TFLite"), self.options.method, nodes)
            self.record("mixed_tflite", path, "tflite", "mixed", quantize_seconds=round(time.perf_counter() - start, 2),
                        quantization={"scheme": "int8 PTQ with layers in float", "weights": q["weights"],
                                      "io": "float32", "method": self.options.method,
                                      "before_log_in_float": len(front),
                                      "tensors_in_float": tensors, "nodes_in_float": list(nodes)}, **lay.entry())
            entry = self.validate("mixed_tflite", "litert", path, lay=lay)
            closest.offer()
            if not self.short(entry):
                break
        tried = len(nodes)
        if closest.restore():
            entry = self.artifacts["mixed_tflite"]
            nodes = entry["quantization"]["nodes_in_float"]
        if self.distance(entry) >= self.distance(self.artifacts["int8_tflite"]):
            del self.artifacts["mixed_tflite"]
            path.unlink()
            self.notes.append(f"mixed.tflite not kept: with up to {tried} ops in float it was no closer to the "
                              f"float model than int8.tflite ({closeness(entry)})")
            self.log("  " + self.notes[-1])
            return
        int8_drop = self.drop(self.artifacts["int8_tflite"])
        self.notes.append(f"mixed.tflite: {len(nodes)} ops in float for CPU/GPU TFLite targets, {closeness(entry)}, "
                          f"{self.drop(entry):.2f} points lost (int8.tflite: {int8_drop:.2f})")
        self.log("  " + self.notes[-1])

    def drop(self, entry: dict) -> float:
        """Points an artifact loses against the model the user gave (as the gate counts them): accuracy where
        there are labels, else the shortfall."""
        if self.source_acc is not None and entry.get("accuracy") is not None:
            return 100 * (self.source_acc - entry["accuracy"])
        return self.shortfall(entry)

    def keep_closer(self, key: str, path: Path, make: Callable[[], None],
                    ties_to_new: bool = False) -> tuple[dict, bool]:
        """Makes another version of artifact `key` at `path` (`make` writes, records and validates it) and keeps
        whichever is closer to the float model (see distance). Returns the new version's entry and whether it
        was kept."""
        aside = path.with_name(f"{path.stem}.previous{path.suffix}")
        path.replace(aside)
        old = self.artifacts.pop(key)
        make()
        new = self.artifacts[key]
        kept = self.distance(new) < self.distance(old) or (ties_to_new and self.distance(new) == self.distance(old))
        if kept:
            aside.unlink()
        else:
            aside.replace(path)
            self.artifacts[key] = old
        return new, kept

    def misses(self, entry: dict) -> bool:
        """An int8 artifact is short of the precision target: >= 99 % agreement (classify, multilabel) or
        >= 30 dB SQNR (raw), and no more accuracy lost than the budget (0.5 points or --max-accuracy-drop)."""
        close = (entry["agreement"] >= TARGET_AGREEMENT if entry.get("agreement") is not None
                 else (entry.get("sqnr_db") or 0) >= TARGET_SQNR_DB)
        return self.shortfall(entry) > self.budget() or not close

    def short(self, entry: dict) -> bool:
        """What --keep-float auto goes on for: more accuracy lost than --max-accuracy-drop, or short of the
        precision target (iris_landmark stopped at 29.73 dB: within 0.5 of 30 dB, but not 30)."""
        return self.drop(entry) > self.budget() or self.misses(entry)

    def budget(self) -> float:
        """Accuracy points an int8 artifact may lose: --max-accuracy-drop, else DEFAULT_BUDGET_POINTS."""
        drop = self.options.max_accuracy_drop
        return DEFAULT_BUDGET_POINTS if drop is None else drop

    def for_edgetpu(self) -> bool:
        """The --target profile is an Edge TPU (full int8 only)."""
        profile = self.target_entry()
        return profile is not None and profile["accelerator"] == "edgetpu"

    def explain_misses(self) -> list[dict]:
        """For each int8 artifact short of the precision target (see misses): what it measured, the layer whose
        own quantization adds the most error (the int8 ONNX per-layer report), and the option that would fix
        it; each also becomes a note in the report."""
        layers = (self.artifacts.get("int8_onnx") or {}).get("layers") or []
        worst = layers[0] if layers else None
        budget, edgetpu_target = self.budget(), self.for_edgetpu()
        explained = []
        for key in ("int8_tflite", "int8_onnx"):
            entry = self.artifacts.get(key)
            if entry is None or not self.misses(entry):
                continue
            tensors = ((entry.get("quantization") or {}).get("ranges") or {}).get("worst") or []
            if key == "int8_tflite" and tensors:
                layer = f"{tensors[0]['tensor']} (its own quantization: {tensors[0]['own_sqnr_db']} dB SQNR)"
            elif worst:
                layer = f"{worst['node']} ({worst['op_type']}; its own quantization: {worst['local_sqnr_db']} dB SQNR)"
            else:
                layer = "not measured (--method minmax TFLite has no per-layer report; --format onnx has)"
            measured = f"{closeness(entry)}, {self.shortfall(entry):.2f} points short"
            tried = max(len((entry.get("quantization") or {}).get("nodes_in_float") or []), self.float_layers_tried)
            if key == "int8_onnx" and tried and self.float_steps_ran_out:
                steps = self.options.keep_float_steps
                fix = (f"up to {tried} nodes kept in float in {steps} steps were not enough: --keep-float-steps "
                       f"{2 * steps} tries the next ranked layers (each step one more quantization), or fp16.onnx "
                       "on GPU targets")
            elif key == "int8_onnx" and tried:
                fix = (f"up to {tried} nodes kept in float were not enough (the error is spread over the model): "
                       "fp16.onnx on GPU targets, or quantization-aware training (not built into edgemm)")
            elif key == "int8_onnx":
                fix = ((f"--keep-float {','.join(layer_error.keep_in_float(worst))}" if worst else "--keep-float NODE")
                       + f" (or --keep-float auto --max-accuracy-drop {budget}): those layers then run in fp16/fp32")
            elif edgetpu_target:
                fix = self.edgetpu_fix(entry)
            else:
                fix = self.tflite_fix(entry, budget)
            explained.append({"artifact": key, "measured": measured, "layer": layer, "fix": fix})
            self.notes.append(f"{key} misses the precision target (>= {100 * TARGET_AGREEMENT:g} % agreement or "
                              f">= {TARGET_SQNR_DB:g} dB, <= {budget} "
                              f"points): {measured}; layer adding the most error: {layer}; fix: {fix}")
        return explained

    def edgetpu_fix(self, entry: dict) -> str:
        """The fix an Edge TPU target has when int8.tflite misses. It runs full int8 only; when the model
        computes its own features before a LOG (DNSMOS's power spectrum, basic-pitch's CQT), computing them
        on the CPU outside the model is the fix that is not training (mixed.tflite, made for other targets,
        measures it: DNSMOS 6.5 -> 32.4 dB)."""
        front = ((entry.get("quantization") or {}).get("ranges") or {}).get("before_log") or []
        training = self.training_fix()
        if not front:
            return f"none for the Edge TPU, which runs full int8 only: {training}"
        return (f"the Edge TPU runs full int8 only, and this model computes its own features: {len(front)} ops "
                f"before a LOG ({front[0]} ... {front[-1]}); export the model from the LOG's output on and compute "
                "the features on the CPU (the spec's input transforms), so that the rest runs in int8 "
                "(--keep-float auto without an Edge TPU --target measures it: mixed.tflite keeps those ops in "
                f"float); else {training}")

    def training_fix(self) -> str:
        """What training can still do for a full-int8 TFLite that misses: --qat when it did not run; when it
        ran, what it came to, and that training the source model itself (on its training data, for longer) is
        the step beyond it."""
        if self.qat_tried is None:
            return (f"--qat on (quantization-aware fine-tuning of the int8 TFLite on the calibration samples, at most "
                    f"--qat-seconds {self.options.qat_seconds:g})")
        return (f"{self.qat_tried}; quantization-aware training of the source model on its training data (not "
                "built into edgemm)")

    def tflite_fix(self, entry: dict, budget: float) -> str:
        """The fix a CPU/GPU TFLite target has when int8.tflite misses: the artifacts made beside it that meet
        the target, closest first; else what was not tried (mixed.tflite with --keep-float auto, int16x8);
        else the closest of them, which is not enough (DNSMOS: int16x8 6.8 dB, its power spectrum spans more
        than 16 bits)."""
        made = sorted((k for k in ("mixed_tflite", "int16x8_tflite") if k in self.artifacts),
                      key=lambda k: self.distance(self.artifacts[k]))
        named = [f"{self.artifacts[k]['file']} ({closeness(self.artifacts[k])})" for k in made]
        if passing := [n for k, n in zip(made, named, strict=True) if not self.misses(self.artifacts[k])]:
            return "on CPU/GPU targets run " + " or ".join(passing)
        missing = f"; {' and '.join(named)} miss{'es' if len(named) == 1 else ''} it too" if named else ""
        if "mixed_tflite" not in self.artifacts and self.options.keep_float != "auto":
            front = len(((entry.get("quantization") or {}).get("ranges") or {}).get("before_log") or [])
            return (f"--keep-float auto --max-accuracy-drop {budget} (mixed.tflite: "
                    + (f"the {front} ops computing a LOG's input, then " if front else "")
                    + "the worst tensors in float), for CPU/GPU TFLite targets" + missing
                    + (f"; not int16x8: {self.int16x8_error}" if self.int16x8_error else ""))
        if "int16x8_tflite" not in self.artifacts and not self.int16x8_error:
            return "--int16x8 on, for CPU/GPU TFLite targets" + missing
        return (f"none found: closest on CPU/GPU targets {named[0]}; {self.training_fix()}" if named
                else f"none found: {self.int16x8_error}")

    def int16x8(self, graph: saved_model.Graph, lay: layout.ArtifactLayout) -> None:
        """int16x8.tflite: always (on), never (off), or when the int8 TFLite misses the target on a target that
        is not the Edge TPU (auto)."""
        mode, edgetpu_target = self.options.int16x8, self.for_edgetpu()
        if mode == "off" or (mode == "auto" and (edgetpu_target or not self.misses(self.artifacts["int8_tflite"]))):
            if mode == "auto" and edgetpu_target and self.misses(self.artifacts["int8_tflite"]):
                self.notes.append("int8 TFLite misses the precision target, and the Edge TPU runs full int8 only: "
                                  "no int16x8 artifact for this target")
            return
        self.log("quantizing to int16x8 TFLite (16-bit activations, 8-bit weights)")
        try:
            self.write_int16x8(graph, lay)
        except InputError as e:
            self.int16x8_error = str(e)
            self.notes.append(f"{e} (int16x8 skipped)")
            self.log("  " + self.notes[-1])
            return
        if float_ops := self.artifacts["int16x8_tflite"]["quantization"]["float_ops"]:
            self.notes.append(f"int16x8 TFLite: {', '.join(float_ops)} run in float (no 16x8 kernel)")
        if self.misses(self.artifacts["int16x8_tflite"]) and self.options.bias_correction != "off":
            self.int16x8_rounded()

    def write_int16x8(self, graph: saved_model.Graph, lay: layout.ArtifactLayout, **quantization) -> None:
        path = self.out / "int16x8.tflite"
        start = time.perf_counter()
        float_ops = self.stage("quantize_tflite", export.write_tflite_int16x8, graph, path,
                               layout.to_artifact(self.calib.inputs, lay.inputs),
                               self.counter("calibrating int16x8 TFLite"))
        self.record("int16x8_tflite", path, "tflite", "int16x8", quantize_seconds=round(time.perf_counter() - start, 2),
                    quantization={"scheme": "int16x8 PTQ", "weights": "int8 per-channel symmetric",
                                  "activations": "int16 per-tensor symmetric", "io": "float32",
                                  "float_ops": float_ops} | quantization, **lay.entry())
        self.validate("int16x8_tflite", "litert", path, lay=lay)

    def int16x8_rounded(self) -> None:
        """int16x8.tflite again from the float ONNX with its weights rounded to TFLite's per-channel int8 grid
        by converters/weight_rounding.py and its biases corrected for it (bias_correction.correct), through
        onnx2tf: with 16-bit activations the weights' rounding is most of the error (openWakeWord's embedding,
        weights alone: 22.6 dB rounded to nearest, 38.3 dB). Kept if closer to the float model. An ONNX
        exported from a TensorFlow or TFLite source is channels-last already: its layout is kept.
        Not tried for a raw head whose int16x8 SQNR is ACTIVATIONS_DOMINATE_DB below what its weights rounded
        to nearest alone give: the error is the activations' (DNSMOS: its spectrum spans more than 16 bits),
        and the try costs a second int16x8 validation (DNSMOS: 6.4 s per sample on this CPU)."""
        from converters import bias_correction, onnx_ranges, onnx_tflite

        rounded, nearest = self.work / "int16x8_weights.onnx", self.work / "int16x8_nearest.onnx"
        current = self.artifacts["int16x8_tflite"]["sqnr_db"]
        try:  # tf2onnx or onnx2tf may refuse a model
            if current is not None and self.stage("weight_rounding", bias_correction.correct, self.float_onnx(),
                                                  nearest, self.calib.inputs, True, False, False, False):
                alone = onnx_ranges.held_out_sqnr_db(self.float_onnx(), {"nearest": nearest}, self.calib.inputs)
                alone = round(alone["nearest"], 2)
                if alone >= current + ACTIVATIONS_DOMINATE_DB:
                    self.notes.append(f"int16x8 TFLite {current} dB: weights rounded to nearest alone give {alone} dB "
                                      "(float activations): the error is its activations', so better-rounded "
                                      "weights were not tried")
                    self.log("  " + self.notes[-1])
                    return
            layers = self.stage("weight_rounding", bias_correction.correct, self.float_onnx(), rounded,
                                self.calib.inputs, True, False, True)
            if not layers:
                return
            self.log(f"  int16x8 TFLite {closeness(self.artifacts['int16x8_tflite'])}: again with the weights of "
                     f"{layers} layers rounded to the int8 grid by their inputs' statistics (GPTQ), biases corrected")
            graph, lay = self.stage("onnx2tf", onnx_tflite.to_saved_model,
                                    dataclasses.replace(self.source, kind="onnx", graph=rounded),
                                    self.work / "onnx2tf_rounded", self.log, keep_layout=self.source.kind != "onnx")
        except InputError as e:
            self.notes.append(f"int16x8 TFLite with rounded weights not made: {e}")
            return
        before = self.artifacts["int16x8_tflite"]
        after, kept = self.keep_closer("int16x8_tflite", self.out / "int16x8.tflite", lambda: self.write_int16x8(
            graph, lay, weight_rounding={"method": "GPTQ with bias correction", "layers": layers}))
        self.notes.append(f"int16x8 TFLite with GPTQ-rounded, bias-corrected weights ({layers} layers): "
                          f"{closeness(before)} -> {closeness(after)}: " + ("kept" if kept else "not kept (no closer)"))
        self.log("  " + self.notes[-1])

    def tflite_qat(self, int8_path: Path, graph: saved_model.Graph, lay: layout.ArtifactLayout) -> None:
        """int8.tflite made again with quantization-aware fine-tuning as a candidate (converters/qat.py); the
        version closer to the float model on the validation samples is kept."""
        old = self.artifacts["int8_tflite"]
        per_channel = "per-channel" in old["quantization"]["weights"]
        new, kept = self.keep_closer("int8_tflite", int8_path, lambda: self.quantize_tflite(
            int8_path, per_channel, graph, lay, qat_seconds=self.options.qat_seconds))
        tuned = new["quantization"]["ranges"].get("qat") or {}
        if "skipped" in tuned:
            self.qat_tried = f"--qat could not run ({tuned['skipped']})"
            self.notes.append(f"int8 TFLite: no quantization-aware fine-tuning: {tuned['skipped']}")
        else:
            self.qat_tried = f"quantization-aware fine-tuning (--qat) came to {closeness(new)}"
            if tuned["epochs"] < qat.EPOCHS:
                self.qat_tried += (f" in {tuned['epochs']} of {qat.EPOCHS} epochs: --qat-seconds "
                                   f"{2 * self.options.qat_seconds:g} gives it more")
            held = tuned["held_out_sqnr_db"]
            self.notes.append(f"int8 TFLite: quantization-aware fine-tuning ({tuned['epochs']} epochs, {tuned['seconds']} s "
                              f"on the calibration samples; held-out {held['before']} -> {held['after']} dB simulated): "
                              f"{closeness(new)} against {closeness(old)} without, " + ("kept" if kept else "not kept"))
        self.log("  " + self.notes[-1])

    def quantize_tflite(self, int8_path: Path, per_channel: bool, graph: saved_model.Graph,
                        lay: layout.ArtifactLayout, qat_seconds: float = 0.0) -> None:
        granularity = "per-channel" if per_channel else "per-tensor"
        method = self.options.method
        self.log(f"quantizing to full-int8 TFLite ({len(self.calib)} calibration samples keyed by input name, "
                 f"{granularity} weights, {method} activation ranges"
                 + (f", quantization-aware fine-tuning for at most {qat_seconds:g} s)" if qat_seconds else ")"))
        calib = layout.to_artifact(self.calib.inputs, lay.inputs)
        start = time.perf_counter()
        chosen = self.stage("quantize_tflite", export.write_tflite, graph, int8_path, calib, True, per_channel,
                            self.counter("calibrating int8 TFLite"), method, qat_seconds=qat_seconds)
        failed = (chosen or {}).get("failed_in_int8", [])
        scheme = f"int8 PTQ, {len(failed)} ops in float (they do not run in int8)" if failed else "full-int8 PTQ"
        if qat_seconds and "skipped" not in (chosen or {}).get("qat", {"skipped": ""}):
            scheme = "full-int8, quantization-aware fine-tuned"
        self.record("int8_tflite", int8_path, "tflite", "mixed" if failed else "int8",
                    quantize_seconds=round(time.perf_counter() - start, 2),
                    quantization={"scheme": scheme, "weights": f"int8 {granularity} symmetric",
                                  "activations": "int8 per-tensor asymmetric", "method": method, "ranges": chosen},
                    **lay.entry())
        self.validate("int8_tflite", "litert", int8_path, lay=lay)

    def edgetpu(self, int8_path: Path) -> None:
        ops = [edgetpu.Op(op["index"], op["name"],
                          tuple(edgetpu.Tensor(t["dtype"], tuple(t["shape"]), t["constant"]) for t in op["inputs"]),
                          tuple(edgetpu.Tensor(t["dtype"], tuple(t["shape"]), t["constant"]) for t in op["outputs"]))
               for op in describe_tflite(int8_path)]
        verdicts = edgetpu.analyze(ops)
        log_path = self.out / "int8_edgetpu_report.txt"
        with atomic_path(log_path) as tmp:
            tmp.write_text(f"edgemm Edge TPU compatibility (predicted from published constraints): {int8_path.name}\n\n"
                           + edgetpu.format_log(verdicts) + "\n")
        result = edgetpu.summary(verdicts) | {"report": log_path.name, "compiler": None}
        compiler = shutil.which("edgetpu_compiler")
        if compiler:
            proc = subprocess.run([compiler, "-s", "-o", str(self.out), str(int8_path)], capture_output=True, text=True)
            compiler_log = self.out / "int8_edgetpu_compiler.log"
            with atomic_path(compiler_log) as tmp:
                tmp.write_text(proc.stdout + proc.stderr)
            result["compiler"] = {"exit_code": proc.returncode, "log": compiler_log.name,
                                  "model": "int8_edgetpu.tflite" if (self.out / "int8_edgetpu.tflite").is_file() else None}
        self.artifacts["int8_tflite"]["edgetpu"] = result
        self.log(f"  Edge TPU: {result['mapped']}/{result['ops']} ops mappable"
                 + ("" if result["fully_mappable"] else f", first unmapped: {result['first_unmapped']['op']} "
                    f"({result['first_unmapped']['reason']})"))

    def onnx(self) -> None:
        o = self.options
        float_path, int8_path = self.out / "float.onnx", self.out / "int8.onnx"
        with atomic_path(float_path) as tmp:
            shutil.copyfile(self.float_onnx(), tmp)
        self.record("float_onnx", float_path, "onnx", "float32")
        self.validate("float_onnx", "ort-cpu", float_path)

        reduce_range = o.reduce_range == "on"
        excluded: tuple[str, ...] = () if o.keep_float == "auto" else tuple(o.keep_float)
        self.quantize_onnx(float_path, int8_path, reduce_range, excluded)
        entry = self.artifacts["int8_onnx"]
        if self.saturated(entry) and not reduce_range:
            why = ("ONNX Runtime's int8 kernels saturate on this CPU: it has no VNNI/dot-product instructions, so "
                   "u8 x s8 products are summed in 16 bits with saturation (with int8 kernels: agreement "
                   f"{entry['agreement']}, SQNR {entry['sqnr_db']} dB; the same graph in float: agreement "
                   f"{entry['fake_quant_agreement']}, SQNR {entry['fake_quant_sqnr_db']} dB)")
            if o.reduce_range == "auto":
                self.notes.append(why + "; re-quantized with reduce_range (7-bit weights), which avoids it")
                self.log("  " + self.notes[-1])
                self.quantize_onnx(float_path, int8_path, True, excluded)
            else:
                self.notes.append(why + "; fix: --reduce-range on (or auto)")
                self.log("  WARNING: " + self.notes[-1])
        quantized_from = float_path
        if o.bias_correction == "on" or (o.bias_correction == "auto" and self.misses(self.artifacts["int8_onnx"])):
            quantized_from = self.bias_correct(float_path, int8_path, excluded)
        if o.fp16_onnx:
            self.fp16(float_path)
        ranked = self.stage("layer_report", layer_error.layer_errors, quantized_from, int8_path, self.calib.inputs,
                            progress=self.counter("per-layer error report"))
        self.artifacts["int8_onnx"]["layers"] = still_int8(ranked, excluded)
        if o.keep_float == "auto" and o.max_accuracy_drop is not None:
            self.keep_sensitive_layers_in_float(quantized_from, int8_path, ranked)

    def bias_correct(self, float_path: Path, int8_path: Path, excluded: tuple[str, ...]) -> Path:
        """int8 ONNX from the bias-corrected float model (converters/bias_correction.py), for the weight
        granularity and range the int8 ONNX has; --bias-correction auto keeps it only if it is closer to the
        float model. Returns the float model the kept int8 ONNX was quantized from."""
        from converters import bias_correction

        q = self.artifacts["int8_onnx"]["quantization"]
        granularity = "per-channel" if q["per_channel"] else "per-tensor"
        corrected = self.work / "bias_corrected.onnx"
        layers = self.stage("bias_correction", bias_correction.correct, float_path, corrected, self.calib.inputs,
                            q["per_channel"], q["reduce_range"])
        if not layers:
            self.notes.append("bias correction: no Conv/Gemm/MatMul layer with constant weights to correct")
            return float_path
        self.log(f"  bias correction of {layers} layers for {granularity} int8 weights; quantizing again")
        before = self.artifacts["int8_onnx"]

        def make() -> None:
            self.quantize_onnx(corrected, int8_path, q["reduce_range"], excluded)

        if self.options.bias_correction == "on":
            del self.artifacts["int8_onnx"]
            make()
            after, kept = self.artifacts["int8_onnx"], True
        else:
            after, kept = self.keep_closer("int8_onnx", int8_path, make)
        self.notes.append(f"bias correction ({layers} layers, {granularity} weights): int8 ONNX {closeness(before)} "
                          f"-> {closeness(after)}: " + ("kept" if kept else "not kept (no closer)"))
        self.log("  " + self.notes[-1])
        if not kept:
            return float_path
        self.artifacts["int8_onnx"]["quantization"]["bias_correction"] = {"layers": layers}
        return corrected

    @staticmethod
    def saturated(entry: dict) -> bool:
        """The int8 kernels lose clearly more than the same QDQ graph evaluated in float."""
        if entry.get("agreement") is not None:
            return entry["fake_quant_agreement"] - entry["agreement"] > SATURATION_POINTS / 100
        return entry["fake_quant_sqnr_db"] - entry["sqnr_db"] > 6.0

    def fp16(self, float_path: Path) -> None:
        """fp16 weights and activations, float32 inputs/outputs (what TensorRT/CUDA run fastest without int8)."""
        import onnx
        from onnxruntime.transformers.float16 import convert_float_to_float16

        path = self.out / "fp16.onnx"
        self.log("converting float ONNX to fp16 (inputs/outputs stay float32)")
        model = convert_float_to_float16(onnx.load(str(float_path)), keep_io_types=True)
        with atomic_path(path) as tmp:
            onnx.save(model, str(tmp))
        self.record("fp16_onnx", path, "onnx", "float16")
        try:
            self.validate("fp16_onnx", "ort-cpu", path)
        except InputError as e:
            self.artifacts["fp16_onnx"].update({"accuracy": None, "agreement": None, "max_abs_diff": None,
                                                "backend": None, "median_invoke_ms": None, "inputs": [], "outputs": []})
            self.notes.append(f"fp16.onnx not validated on this CPU ({e}); it is meant for a GPU")

    def quantize_onnx(self, float_path: Path, int8_path: Path, reduce_range: bool, excluded: tuple[str, ...]) -> None:
        o = self.options
        self.log(f"quantizing to int8 QDQ ONNX ({o.method}, per-channel={o.per_channel}, reduce_range={reduce_range}"
                 + (f", {len(excluded)} nodes kept in float" if excluded else "") + ")")
        start = time.perf_counter()
        result = self.stage("quantize_onnx", export.write_onnx_int8, float_path, int8_path, self.calib.inputs,
                            o.method, o.per_channel, reduce_range, excluded,
                            progress=self.counter("calibrating int8 ONNX"))
        self.notes.extend(n for n in result.notes if n not in self.notes)  # what the ONNX preparation changed
        granularity = "per-channel" if result.per_channel else "per-tensor"
        self.record("int8_onnx", int8_path, "onnx", "mixed" if excluded else "int8",
                    quantize_seconds=round(time.perf_counter() - start, 2),
                    quantization={"format": "QDQ", "method": o.method, "ranges": result.ranges,
                                  "per_channel": result.per_channel,
                                  "reduce_range": reduce_range, "weights": f"int8 {granularity} symmetric",
                                  "activations": "int8 asymmetric", "nodes_in_float": list(excluded)})
        self.validate("int8_onnx", "ort-cpu", int8_path)
        fake, _ = self.stage("validate", run_isolated, "ort-cpu", int8_path, self.val.inputs, {"optimize": False})
        fake_metrics = self.compare(fake)
        self.artifacts["int8_onnx"]["fake_quant_agreement"] = fake_metrics["agreement"]
        self.artifacts["int8_onnx"]["fake_quant_sqnr_db"] = fake_metrics["sqnr_db"]

    def keep_sensitive_layers_in_float(self, float_path: Path, int8_path: Path, ranked: list[dict],
                                       max_steps: int | None = None) -> None:
        """Keeps layers in float while the int8 ONNX is `short`: first what computes the input of a Log (a
        feature front end, layer_error.before_log), then the tensors of the ranking (`ranked`, all of it:
        basic-pitch's 20 worst were all in its front end) one at a time, each with its writer and readers; the
        version closest to the float model is kept (fer_emotion: 97.67 % with none, 96.67 % with 8)."""
        budget = self.options.max_accuracy_drop
        max_steps = self.options.keep_float_steps if max_steps is None else max_steps
        entry = self.artifacts["int8_onnx"]
        corrected = entry["quantization"].get("bias_correction")
        closest = _Closest(self, "int8_onnx", int8_path)
        closest.offer()
        excluded: list[str] = []
        front = layer_error.before_log(float_path)
        steps = [(f"the {len(front)} nodes that compute the Log's input", front)] if front else []
        steps += [(f"{r['tensor']} (the nodes writing and reading it)", layer_error.keep_in_float(r))
                  for r in ranked if r["node"] not in front]

        def next_step() -> tuple[str, list[str]] | None:
            """The next step's nodes not in float yet (a tensor's readers may be the next one's writer)."""
            while steps:
                what, nodes = steps.pop(0)
                nodes = [n for n in nodes if n not in excluded]
                if nodes:
                    return what, nodes
            return None

        while self.short(entry) and max_steps and (step := next_step()):
            (what, nodes), max_steps = step, max_steps - 1
            excluded += nodes
            self.log(f"  accuracy drop {self.drop(entry):.2f} points > {budget}: keeping {what} in float")
            self.quantize_onnx(float_path, int8_path, entry["quantization"]["reduce_range"], tuple(excluded))
            entry = self.artifacts["int8_onnx"]
            entry["layers"] = still_int8(ranked, excluded)
            if corrected:
                entry["quantization"]["bias_correction"] = corrected
            closest.offer()
        self.float_steps_ran_out = (self.short(entry) and not max_steps
                                    and any(n not in excluded for _, nodes in steps for n in nodes))
        if closest.restore():
            kept = len(closest.entry["quantization"]["nodes_in_float"])
            self.notes.append(f"keeping up to {len(excluded)} nodes in float got no closer than "
                              f"{closeness(closest.entry)} with {kept}: kept that")
            self.log("  " + self.notes[-1])
        self.float_layers_tried = len(excluded)
        entry = self.artifacts["int8_onnx"]
        if entry["quantization"]["nodes_in_float"]:
            entry["mixed_precision_cost"] = (
                f"{len(entry['quantization']['nodes_in_float'])} nodes run in float: on TensorRT they run in "
                "fp16/fp32 beside int8 layers (reformat layers at each boundary, slower than all-int8); on CPU "
                "they use float kernels. The Edge TPU has no float ops: the TFLite artifact stays full-int8 so it "
                "still maps.")
            self.notes.append(entry["mixed_precision_cost"])

    def stock(self) -> None:
        """The stock tools on the same model and samples, validated the same way (report rows stock_*; not in
        the manifest): the TFLite converter's full-int8 PTQ with its defaults (per-channel weights, min/max
        ranges) from the same TF graph, and ONNX Runtime's quantize_static with its defaults."""
        if "int8_tflite" in self.artifacts:
            graph, lay = self.tflite_made_from
            self.log("stock TFLite full-int8 PTQ (converter defaults) for comparison")
            calib = layout.to_artifact(self.calib.inputs, lay.inputs)
            self.stock_row("stock_int8_tflite", self.out / "stock_int8.tflite", "stock TFLiteConverter full-int8 PTQ",
                           lambda path: export.write_tflite(graph, path, calib), "litert", lay)
        if "int8_onnx" in self.artifacts:
            self.log("stock ONNX Runtime quantize_static (defaults) for comparison")
            self.stock_row("stock_int8_onnx", self.out / "stock_int8.onnx", "stock onnxruntime quantize_static",
                           lambda path: export.write_onnx_int8(self.out / "float.onnx", path, self.calib.inputs,
                                                               stock=True), "ort-cpu")

    def stock_row(self, key: str, path: Path, scheme: str, make: Callable[[Path], object], runtime: str,
                  lay: layout.ArtifactLayout = layout.ArtifactLayout()) -> None:
        """One stock comparison row; a stock tool that fails on this model is a note, not a failed conversion."""
        start = time.perf_counter()
        try:
            self.stage("stock", make, path)
            self.record(key, path, path.suffix[1:], "int8", quantize_seconds=round(time.perf_counter() - start, 2),
                        quantization={"scheme": scheme}, **lay.entry())
            self.validate(key, runtime, path, lay=lay)
        except InputError as e:
            self.artifacts.pop(key, None)
            path.unlink(missing_ok=True)
            self.notes.append(f"{key} not made: {e}")
            self.log("  " + self.notes[-1])

    # -- gates and files --------------------------------------------------------------------------
    def target_entry(self) -> dict | None:
        """The device profile the artifacts were made for: backend chain and options for edgemm run."""
        if not self.options.target:
            return None
        from edgemm.profiles import load_profile

        p = load_profile(self.options.target)
        return {"profile": p.name, "accelerator": p.accelerator, "artifacts": list(p.artifacts),
                "backends": [{"name": b.name, "options": b.options} for b in p.backends], "threads": p.threads,
                "budgets": {k: v for k, v in vars(p.budgets).items() if v is not None}}

    def write_manifest(self, report: dict) -> None:
        artifacts = {}
        for key, e in self.artifacts.items():
            if key.startswith("stock_"):  # comparisons, not for the device
                continue
            artifacts[key] = {k: e[k] for k in ("file", "format", "precision", "size_bytes", "sha256", "inputs", "outputs")}
            artifacts[key].update({k: e[k] for k in ("quantization", "layout", "accuracy", "agreement", "sqnr_db")
                                   if k in e})
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "artifacts": artifacts,
            "spec": None if self.source.spec is None else self.source.spec.to_dict(),
            "source": report["source"] | {"inputs": report["source"]["inputs"]},
            "float_accuracy": report["float_accuracy"],
            "target": self.target_entry(),
            "tools": report["tools"],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json(self.out / MANIFEST_NAME, manifest)


def _check_cheaply(model: Path, options: ConvertOptions) -> None:
    """What is refused in a fraction of a second, before the child spends seconds loading TensorFlow: a
    missing model, unreadable .npz headers. (A model that does not load, or no --calib, needs the model.)"""
    check_model_path(model)
    for path in (options.calib, options.val):  # read as calibration files by _load_data, so named the same
        if path is not None:
            samples.check_npz(path, "calibration")


def convert(model: Path, out_dir: Path, options: ConvertOptions = ConvertOptions(),
            log: Callable[[str], None] = print, progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Runs the conversion; returns the report. Raises GateError (after writing everything) if a gate fails.

    The conversion runs in a child process (converters/child.py) and writes into a staging directory that
    replaces `out_dir` only when it has finished (converters/output_dir.py).
    """
    inputs = [model, options.spec, options.calib, options.val, options.train, options.student, options.custom_code]
    target = OutputDir(Path(out_dir), inputs)
    with target as staging, tempfile.TemporaryDirectory(prefix="edgemm-convert-") as work:
        _check_cheaply(Path(model), options)
        report = run_in_child(Path(model), Path(out_dir), staging, Path(work), options, log, progress)
        target.commit()
    message = gate_message(report, out_dir)
    if message:
        raise GateError(message)
    return report
