"""The model spec: where each model input comes from and how it is transformed; what each output means.

A spec is a YAML or JSON file beside the model (MODEL.yaml / MODEL.json) or given with --spec.
It is the public contract between the user's model and edgemm: convert checks it against the
model before any work and writes it into the manifest; run and bench feed the model from it.

    inputs:
      NAME: {source: camera, layout, color, size, resize, scale, mean, std, frames, ...}   ImageTransform
      NAME: {source: mic, sample_rate, window, features, n_fft, hop_length, n_mels, ...}  AudioTransform
      NAME: {source: state, from: OUTPUT}      recurrent state: zeros first, then that output
      NAME: {source: constant, value: V}       fed as given (scalar or nested list), every step
    outputs:
      NAME: {head: classify | multilabel | raw | state, activation: auto | softmax | sigmoid | none,
             labels: [..] or FILE, threshold: 0.5}

The first (v1) sidecar format, {"preprocess": {"image": .., "audio": ..}, "labels": [..]}, is
migrated on read (:func:`from_v1`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from edgemm.config import build, parse_yaml, read_text, require, to_dict
from edgemm.errors import InputError, quote
from edgemm.transforms.audio import AudioTransform
from edgemm.transforms.image import ImageTransform
from edgemm.transforms.v1 import audio_from_v1, image_from_v1

SPEC_VERSION = 2
SOURCES = ("camera", "mic", "state", "constant")
HEADS = ("classify", "multilabel", "raw", "state")
ACTIVATIONS = ("auto", "softmax", "sigmoid", "none")
MAX_SPEC_BYTES = 1 << 20  # a spec is a few hundred bytes; refuse anything that is not one before parsing
MAX_SPEC_VALUES = 1 << 21  # YAML values after aliases: room for a constant of 2^20 numbers, not for an alias bomb
MAX_LABELS_BYTES = 1 << 20  # a labels file: one label per line

# Preprocessing sizes: generous for any real model, and small enough that a typo cannot make edgemm allocate
# gigabytes per frame (a 10^9 x 10^9 image) or overflow while it computes the input shapes.
MAX_IMAGE_SIDE = 16384  # pixels, height and width
MAX_FRAMES = 64  # stacked video frames
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1000, 768000  # Hz
MAX_WINDOW_S = 600  # seconds of audio one inference sees
MAX_STFT = 65536  # samples: n_fft, win_length, hop_length
MAX_N_MELS = 1024  # mel bands, and MFCC coefficients
MAX_INPUT_VALUES = 1 << 30  # values in one model input (4 GiB of float32)

_BOUNDS = {  # key: (lowest, highest, unit); the spec's keys and the v1 sidecar's names for the same sizes
    **{k: (1, MAX_IMAGE_SIDE, "pixels") for k in ("size", "height", "width")},
    "frames": (1, MAX_FRAMES, "frames"),
    "sample_rate": (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE, "Hz"),
    **{k: (0, MAX_WINDOW_S, "seconds") for k in ("window", "window_seconds")},
    **{k: (1, MAX_STFT, "samples") for k in ("n_fft", "win_length", "hop_length", "fft_length", "frame_length",
                                              "frame_step")},
    **{k: (1, MAX_N_MELS, "bands") for k in ("n_mels", "n_mfcc")},
}


@dataclasses.dataclass(frozen=True)
class CameraInput:
    name: str
    transform: ImageTransform
    source: str = "camera"


@dataclasses.dataclass(frozen=True)
class MicInput:
    name: str
    transform: AudioTransform
    source: str = "mic"


@dataclasses.dataclass(frozen=True)
class StateInput:
    name: str
    from_output: str
    source: str = "state"


@dataclasses.dataclass(frozen=True)
class ConstantInput:
    name: str
    value: Any  # a number or a nested list of numbers
    source: str = "constant"


InputSpec = CameraInput | MicInput | StateInput | ConstantInput


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """What one model output means.

    Attributes:
        head: classify (one class), multilabel (labels over threshold), raw (any tensor: embeddings,
            detector outputs), state (fed back into a state input; not printed).
        activation: applied to the output before decisions; auto = softmax unless the output already
            sums to one (classify) / sigmoid unless already within [0, 1] (multilabel).
        labels: one per class; empty = the class indices.
        threshold: multilabel: a label is on at this probability.
    """

    name: str
    head: str = "classify"
    activation: str = "auto"
    labels: tuple[str, ...] = ()
    threshold: float = 0.5

    def __post_init__(self) -> None:
        require(self.head in HEADS, f"head {self.head!r} is not one of {', '.join(HEADS)}")
        require(self.activation in ACTIVATIONS, f"activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        require(0.0 <= self.threshold <= 1.0, "threshold must be within [0, 1]")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    inputs: dict[str, InputSpec]
    outputs: dict[str, OutputSpec]

    def of_source(self, source: str) -> list:
        return [i for i in self.inputs.values() if i.source == source]

    @property
    def heads(self) -> list[OutputSpec]:
        """The outputs that mean something to a user (not state), in spec order."""
        return [o for o in self.outputs.values() if o.head != "state"]

    def to_dict(self) -> dict:
        inputs = {}
        for name, i in self.inputs.items():
            if isinstance(i, (CameraInput, MicInput)):
                inputs[name] = {"source": i.source, **to_dict(i.transform)}
            elif isinstance(i, StateInput):
                inputs[name] = {"source": "state", "from": i.from_output}
            else:
                inputs[name] = {"source": "constant", "value": i.value}
        outputs = {name: {k: v for k, v in to_dict(o).items() if k != "name"} for name, o in self.outputs.items()}
        return {"version": SPEC_VERSION, "inputs": inputs, "outputs": outputs}


# --- parsing ------------------------------------------------------------------------------------------


def _labels(value: Any, base: Path | None, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        if base is None:  # a spec carried in a manifest: its labels are inline, never a path read from it
            raise InputError(f"{where} must be a list of labels")
        path = Path(value) if Path(value).is_absolute() else base / value
        try:
            text = read_text(path, "labels file", MAX_LABELS_BYTES)
        except InputError as e:
            raise InputError(f"{where}: {e}") from None
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    if isinstance(value, list) and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        return tuple(str(v) for v in value)
    raise InputError(f"{where} must be a list of labels or a file with one label per line")


def _constant(value: Any, where: str) -> Any:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError):
        raise InputError(f"{where}.value must be a number or a nested list of numbers") from None
    require(array.size > 0 and array.size <= 1 << 20 and bool(np.isfinite(array).all()),
            f"{where}.value must hold 1 to 2^20 finite numbers")
    return value


def _input(name: str, data: Any, where: str) -> InputSpec:
    if not isinstance(data, Mapping):
        raise InputError(f"{where} must be a mapping")
    source = data.get("source")
    rest = {k: v for k, v in data.items() if k != "source"}
    if source == "camera":
        _check_bounds(rest, where)
        return CameraInput(name, _check_values(build(ImageTransform, rest, where), where))
    if source == "mic":
        _check_bounds(rest, where)
        return MicInput(name, _check_values(build(AudioTransform, rest, where), where))
    if source == "state":
        if set(rest) != {"from"} or not isinstance(rest["from"], str):
            raise InputError(f"{where}: a state input takes exactly one key, 'from: OUTPUT_NAME'")
        return StateInput(name, rest["from"])
    if source == "constant":
        if set(rest) != {"value"}:
            raise InputError(f"{where}: a constant input takes exactly one key, 'value'")
        return ConstantInput(name, _constant(rest["value"], where))
    raise InputError(f"{where}.source must be one of {', '.join(SOURCES)}, got {quote(source)}")


def _check_bounds(raw: Any, where: str) -> None:
    """Refuses a size outside `_BOUNDS` before a transform is built: building computes with the sizes."""
    if not isinstance(raw, Mapping):
        return  # the typed build says what is wrong
    for key, (low, high, unit) in _BOUNDS.items():
        values = raw.get(key)
        for v in values if isinstance(values, (list, tuple)) else [values]:
            # NaN is refused too; values of other types are left to the typed build, which names them
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not low <= v <= high:
                raise InputError(f"{where}.{key}: {quote(v)} is outside {low}..{high} {unit}")


def _check_values(transform, where: str):
    """Refuses a transform whose output (sizes within bounds, in a combination that is not) is too large."""
    values = math.prod(transform.output_shape)
    if values > MAX_INPUT_VALUES:
        shape = "x".join(map(str, transform.output_shape))
        raise InputError(f"{where}: the input would hold {values} values ({shape}), more than {MAX_INPUT_VALUES}")
    return transform


def from_dict(data: Any, base: Path | None = None, where: str = "spec") -> ModelSpec:
    """Builds and cross-checks a spec; `base` resolves relative label files."""
    if not isinstance(data, Mapping):
        raise InputError(f"{where} must be a mapping with 'inputs' and 'outputs'")
    if "preprocess" in data:  # the first sidecar format
        raise InputError(f"{where}: a v1 sidecar ('preprocess'); it is migrated only when read as a file")
    unknown = sorted(set(data) - {"inputs", "outputs", "version"})
    require(not unknown, f"{where}: unknown key(s) {', '.join(map(str, unknown))} (known: inputs, outputs, version)")
    require(data.get("version", SPEC_VERSION) == SPEC_VERSION, f"{where}.version must be {SPEC_VERSION}")
    raw_inputs, raw_outputs = data.get("inputs"), data.get("outputs", {}) or {}
    require(isinstance(raw_inputs, Mapping) and len(raw_inputs) > 0, f"{where}.inputs must map each model input")
    require(isinstance(raw_outputs, Mapping), f"{where}.outputs must be a mapping")
    inputs = {str(k): _input(str(k), v, f"inputs.{k}") for k, v in raw_inputs.items()}
    outputs = {}
    for key, value in raw_outputs.items():
        where_out = f"outputs.{key}"
        value = dict(value) if isinstance(value, Mapping) else value
        if isinstance(value, dict) and "labels" in value:
            value["labels"] = list(_labels(value["labels"], base, f"{where_out}.labels"))
        outputs[str(key)] = build(OutputSpec, value if value is not None else {}, where_out, name=str(key))
    spec = ModelSpec(inputs, outputs)
    _cross_check(spec)
    return spec


def _cross_check(spec: ModelSpec) -> None:
    for i in spec.of_source("state"):
        out = spec.outputs.get(i.from_output)
        require(out is not None and out.head == "state",
                f"inputs.{i.name}.from names {i.from_output!r}, which must be an output with head: state")


def from_v1(data: Mapping, input_names: list[str], output_names: list[str], where: str = "sidecar") -> ModelSpec:
    """The first sidecar format ({"preprocess": {"image", "audio"}, "labels"}) as a spec: input 'image' from
    the camera, 'audio' from the microphone (TensorFlow-convention log-mel), one classify output."""
    pre = data.get("preprocess") or {}
    if not isinstance(pre, Mapping):
        raise InputError(f"{where}: 'preprocess' must be a mapping")
    for name in ("image", "audio"):
        _check_bounds(pre.get(name), f"{where}: preprocess.{name}")
    inputs: dict[str, InputSpec] = {}
    for name in input_names:
        if name == "image" and "image" in pre:
            inputs[name] = CameraInput(name, _check_values(image_from_v1(pre["image"]), where))
        elif name == "audio" and "audio" in pre:
            inputs[name] = MicInput(name, _check_values(audio_from_v1(pre["audio"]), where))
        else:
            raise InputError(f"{where}: a v1 sidecar describes inputs 'image' and 'audio' only; "
                             f"write a spec (edgemm spec MODEL) for input {name!r}")
    labels = _labels(data.get("labels", []), None, f"{where}.labels")
    outputs = {n: OutputSpec(n, "classify", "auto", labels) for n in output_names[:1]}
    return ModelSpec(inputs, outputs)


def read_spec_file(path: Path, input_names: list[str] | None = None,
                   output_names: list[str] | None = None) -> ModelSpec:
    """Reads a .yaml/.yml/.json spec (or a v1 sidecar, which needs the model's input/output names)."""
    path = Path(path)
    text = read_text(path, "spec file", MAX_SPEC_BYTES)
    data = _parse(text, path)
    if isinstance(data, Mapping) and "preprocess" in data:
        return from_v1(data, input_names or ["image", "audio"], output_names or ["output"], str(path))
    try:
        return from_dict(data, path.parent, str(path))
    except InputError as e:
        message = str(e)
        raise InputError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def _parse(text: str, path: Path) -> Any:
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except (ValueError, RecursionError) as e:
            raise InputError(f"{path}: not valid JSON ({str(e)[:120]})") from None
    return parse_yaml(text, str(path), MAX_SPEC_VALUES)


def find_spec_file(model: Path) -> Path | None:
    """MODEL.yaml, MODEL.yml or MODEL.json beside the model, if there is one."""
    for suffix in (".yaml", ".yml", ".json"):
        candidate = Path(model).with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None
