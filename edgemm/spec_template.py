"""`edgemm spec MODEL`: a model spec template for any model, every input and output listed with its
shape and dtype, and a guessed source/layout/front-end that the user checks and edits.

The guesses come from shapes and names only (say so in the file): a rank-4 input with 1 or 3 channels
is a camera, a long rank-1 input is a waveform, a 2-D one beside a mel-sized axis is a log-mel, an
input whose shape matches an output's is recurrent state, a scalar is a constant.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from edgemm import logs
from edgemm.binding import Tensor
from edgemm.errors import InputError
from edgemm.transforms.audio import AudioTransform
from edgemm.transforms.image import ImageTransform

MEL_SIZES = (13, 20, 32, 40, 49, 64, 80, 96, 128)
RATE, HOP = 16000, 160
AUDIO_NAMES = ("audio", "wav", "mel", "spec", "feat", "sound", "input_values", "mfcc", "speech")


def model_tensors(path: Path) -> tuple[list[Tensor], list[Tensor]]:
    """Input and output tensors of a .onnx, .tflite, .keras/.h5/.hdf5 model or a SavedModel directory."""
    path = Path(path)
    if path.is_dir() and (path / "saved_model.pb").is_file():
        try:
            from converters.saved_model import signature_io
        except ImportError as e:
            raise InputError(f"{path}: reading a SavedModel needs the converter extra ({e})") from None
        with logs.native_stderr_quieted():  # TensorFlow's C++ start-up lines (unless -v)
            return signature_io(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file or SavedModel directory")
    suffix = path.suffix.lower()
    if suffix in (".onnx", ".tflite"):
        from edgemm.backends.registry import open_backend

        backend = open_backend("ort-cpu" if suffix == ".onnx" else "litert", path)
        return [Tensor.of(t) for t in backend.inputs], [Tensor.of(t) for t in backend.outputs]
    if suffix in (".keras", ".h5", ".hdf5"):
        try:
            from converters.sources import keras_tensors
        except ImportError as e:
            raise InputError(f"{path}: reading a Keras model needs the converter extra ({e})") from None
        with logs.native_stderr_quieted():
            return keras_tensors(path)
    raise InputError(f"{path}: give a .onnx, .tflite, .keras, .h5 model or a SavedModel directory")


def _core(t: Tensor) -> tuple[int, ...]:
    return t.shape[1:] if len(t.shape) >= 2 and t.shape[0] in (-1, 1) else t.shape


def _camera(t: Tensor) -> dict | None:
    core = _core(t)
    if len(core) == 3 and core[0] in (1, 3) and core[2] > 4:
        layout, channels, size = "NCHW", core[0], core[1:]
    elif len(core) == 3 and core[2] in (1, 3) and core[0] > 4:
        layout, channels, size = "NHWC", core[2], core[:2]
    elif len(core) == 2 and any(k in t.name.lower() for k in ("image", "img", "pixel", "frame")):
        layout, channels, size = "NHW", 1, core
    else:
        return None
    if any(d <= 0 for d in size):
        size = (224, 224)
    guess = ImageTransform(layout=layout, color="rgb" if channels == 3 else "gray", size=tuple(size))
    return {"source": "camera", **_plain(guess)}


def _audio(t: Tensor) -> dict | None:
    core = [d for d in _core(t)]
    named = any(k in t.name.lower() for k in AUDIO_NAMES)
    if len(core) == 1 and (core[0] >= 1000 or named):
        samples = core[0] if core[0] > 0 else RATE
        guess = AudioTransform(sample_rate=RATE, window=samples / RATE, features="waveform", axes=("time",))
        return {"source": "mic", **_plain(guess)}
    axes = ["channel" if d == 1 else "?" for d in core]
    sized = [i for i, d in enumerate(core) if d != 1]
    if len(sized) != 2 or not named and len(core) > 3:
        return None
    a, b = sized
    mel_axis = a if core[a] in MEL_SIZES and core[b] not in MEL_SIZES else (b if core[b] in MEL_SIZES else min(
        sized, key=lambda i: core[i]))
    time_axis = b if mel_axis == a else a
    axes[mel_axis], axes[time_axis] = "mels", "time"
    frames, bins = max(core[time_axis], 2), max(core[mel_axis], 1)
    mfcc = bins in (13, 20) or "mfcc" in t.name.lower()  # the usual MFCC counts; mel bands are 32 and up
    guess = AudioTransform(sample_rate=RATE, window=(frames - 1) * HOP / RATE, n_fft=512, win_length=400,
                           hop_length=HOP, features="mfcc" if mfcc else "logmel", n_mels=max(bins, 40) if mfcc else bins,
                           n_mfcc=bins, fmax=RATE / 2, axes=tuple(axes))
    return {"source": "mic", **_plain(guess)}


def _plain(obj) -> dict:
    from edgemm.config import to_dict

    return to_dict(obj)


def _input_entry(t: Tensor, outputs: list[Tensor]) -> tuple[dict, str]:
    state_of = [o for o in outputs if o.shape == t.shape and o.name != t.name and len(t.shape) > 1]
    if state_of and not _camera(t):
        return {"source": "state", "from": state_of[0].name}, f"same shape as output {state_of[0].name}"
    if len(_core(t)) == 0 or all(d == 1 for d in _core(t)):
        value = RATE if t.name.lower() in ("sr", "sample_rate", "sampling_rate") else 0
        return {"source": "constant", "value": value}, "a scalar"
    audio_named = any(k in t.name.lower() for k in AUDIO_NAMES)
    entry = (_audio(t) or _camera(t)) if audio_named else (_camera(t) or _audio(t))
    if entry is None:
        return {"source": "constant", "value": 0}, "shape not recognised: set the source yourself"
    return entry, "from the shape and name"


def _output_entry(t: Tensor, state_outputs: set[str]) -> dict:
    if t.name in state_outputs:
        return {"head": "state"}
    core = _core(t)
    if len(core) == 1 and core[0] > 1:
        return {"head": "classify", "activation": "auto", "labels": [str(i) for i in range(core[0])]}
    return {"head": "raw"}


def template(path: Path) -> str:
    """The spec template for the model at `path`, as YAML text with the guesses marked."""
    inputs, outputs = model_tensors(path)
    lines = [f"# edgemm model spec for {Path(path).name}: generated by `edgemm spec`; every source, layout and",
             "# front-end value below is a GUESS from shapes and names: check each against your training code.",
             "version: 2", "inputs:"]
    states = set()
    for t in inputs:
        entry, why = _input_entry(t, outputs)
        if entry["source"] == "state":
            states.add(entry["from"])
        lines.append(f"  # {t.name}: {t.dtype} {list(t.shape)}; source guessed {why}")
        lines += ["  " + line for line in yaml.safe_dump({t.name: entry}, sort_keys=False,
                                                          default_flow_style=None).splitlines()]
    lines.append("outputs:")
    for t in outputs:
        lines.append(f"  # {t.name}: {t.dtype} {list(t.shape)}")
        lines += ["  " + line for line in yaml.safe_dump({t.name: _output_entry(t, states)}, sort_keys=False,
                                                          default_flow_style=None).splitlines()]
    return "\n".join(lines) + "\n"
