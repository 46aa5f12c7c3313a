"""Small models of many shapes, built and trained in the tests, with their specs, data and media.

Every model learns the same synthetic task, so int8-vs-float agreement means something: class k is
a bright square in region k of the camera frame (its colour also depends on k) and/or a tone of
frequency 400 + 500 k Hz on the microphone. Data for calibration and validation is made from
rendered frames and audio through the spec's own transforms, as a user's data pipeline would.
"""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import numpy as np

from edgemm.spec import CameraInput, ConstantInput, MicInput, ModelSpec, StateInput, from_dict
from edgemm.wav import write_wav

CLASSES = 3
FRAME = (96, 128)  # camera frames (height, width)
FPS = 10.0


@dataclasses.dataclass(frozen=True)
class Zoo:
    name: str
    spec: dict  # the spec as the user writes it

    @property
    def model_spec(self) -> ModelSpec:
        return from_dict(self.spec)


def _logmel(**kw) -> dict:
    return {"source": "mic", "sample_rate": 16000, "window": 0.5, "features": "logmel", "n_fft": 512,
            "win_length": 400, "hop_length": 160, "n_mels": 32, "fmax": 8000.0, **kw}


MODELS = {z.name: z for z in (
    Zoo("fused_nchw", {  # PyTorch-style: NCHW RGB with ImageNet normalisation + Slaney log-mel in dB, centred
        "inputs": {"pixel_values": {"source": "camera", "layout": "NCHW", "color": "rgb", "size": [32, 32],
                                    "resize": "center-crop", "scale": 1 / 255, "mean": [0.485, 0.456, 0.406],
                                    "std": [0.229, 0.224, 0.225]},
                   "input_features": _logmel(center=True, mel_scale="slaney", mel_norm="slaney", log="db",
                                             top_db=80.0, mean=-30.0, std=11.0, axes=["channel", "mels", "time"])},
        "outputs": {"logits": {"head": "classify", "activation": "none", "labels": ["low", "mid", "high"]}}}),
    Zoo("gray_two_heads", {  # NHWC gray, image only; a class and an embedding
        "inputs": {"image": {"source": "camera", "layout": "NHWC", "color": "gray", "size": [24, 24],
                             "resize": "stretch", "scale": 1 / 255}},
        "outputs": {"label": {"head": "classify", "activation": "none"}, "embedding": {"head": "raw"}}}),
    Zoo("bgr_raw", {  # Caffe-style BGR 0..255 minus a per-channel mean, letterboxed; a raw (detector-like) output
        "inputs": {"data": {"source": "camera", "layout": "NHWC", "color": "bgr", "size": [32, 48],
                            "resize": "letterbox", "scale": 1.0, "mean": [104.0, 117.0, 123.0], "std": [58.0]}},
        "outputs": {"grid": {"head": "raw"}}}),
    Zoo("waveform", {  # raw waveform, audio only
        "inputs": {"wave": {"source": "mic", "sample_rate": 8000, "window": 0.5, "features": "waveform",
                            "axes": ["time"]}},
        "outputs": {"class": {"head": "classify", "activation": "none"}}}),
    Zoo("mfcc_multilabel", {  # MFCC, audio only, multilabel head
        "inputs": {"mfcc": {**_logmel(center=True), "features": "mfcc", "n_mfcc": 13, "mean": -16.0,
                            "std": 47.0, "axes": ["mels", "time"]}},
        "outputs": {"tags": {"head": "multilabel", "activation": "none", "labels": ["low", "mid", "high"],
                             "threshold": 0.5}}}),
    Zoo("stateful", {  # camera + mic + recurrent state + constant; TensorFlow-convention HTK log-mel, natural log
        "inputs": {"image": {"source": "camera", "layout": "NHWC", "color": "rgb", "size": [16, 16]},
                   "audio": _logmel(convention="tensorflow", center=False, mel_scale="htk", mel_norm="none",
                                    log="ln", top_db=None, n_mels=24, mean=-1.2, std=2.6,
                                    axes=["time", "mels", "channel"]),
                   "state": {"source": "state", "from": "state_out"},
                   "gain": {"source": "constant", "value": [0.5]}},
        "outputs": {"class": {"head": "classify", "activation": "none"}, "state_out": {"head": "state"}}}),
)}


# --- media ----------------------------------------------------------------------------------------------

def frame_of(label: int, rng: np.random.Generator) -> np.ndarray:
    """A BGR frame: a bright square in region `label`, its colour depending on the label, plus noise."""
    h, w = FRAME
    frame = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    side = 30
    x = 10 + label * (w - side - 20) // max(1, CLASSES - 1)
    y = int(rng.integers(10, h - side - 10))
    colour = np.array([[255, 60, 60], [60, 255, 60], [60, 60, 255]][label % 3], np.uint8)
    frame[y : y + side, x : x + side] = colour
    return frame


def tone_of(label: int, seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    freq = 400.0 + 500.0 * label
    return (0.3 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.28)) + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def samples(zoo: Zoo, n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """n labelled samples keyed by input name (first axis = samples), through the spec's transforms."""
    spec = zoo.model_spec
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, size=n)
    arrays: dict[str, list] = {name: [] for name in spec.inputs}
    for label in labels:
        for name, item in spec.inputs.items():
            if isinstance(item, CameraInput):
                arrays[name].append(item.transform.apply(frame_of(int(label), rng)))
            elif isinstance(item, MicInput):
                t = item.transform
                arrays[name].append(t.features_of(tone_of(int(label), t.window, t.sample_rate, rng)[: t.window_samples]))
    out = {k: np.stack(v).astype(np.float32) for k, v in arrays.items() if v}
    for name, item in spec.inputs.items():
        if isinstance(item, StateInput):  # states the model meets when its tanh state output is fed back
            out[name] = rng.uniform(-1.0, 1.0, size=(n, 8)).astype(np.float32)
        elif isinstance(item, ConstantInput):
            out[name] = np.broadcast_to(np.asarray(item.value, np.float32), (n, 1)).copy()
    return out, labels


def write_media(directory: Path, seconds_per_class: float = 1.0) -> tuple[Path, Path, list[int]]:
    """A video (FPS) and a 16 kHz WAV that show / sound classes 0, 1, 2 in turn; the label of each second."""
    import cv2

    rng = np.random.default_rng(3)
    video, wav = directory / "zoo.avi", directory / "zoo.wav"
    h, w = FRAME
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (w, h))
    order = list(range(CLASSES))
    for label in order:
        for _ in range(int(seconds_per_class * FPS)):
            writer.write(frame_of(label, rng))
    writer.release()
    audio = np.concatenate([tone_of(label, seconds_per_class, 16000, rng) for label in order])
    write_wav(wav, audio, 16000)
    return video, wav, order


# --- models ---------------------------------------------------------------------------------------------

def _branch(item, tensor):
    from keras import layers

    t = item.transform
    if isinstance(item, CameraInput):
        x = layers.Permute((2, 3, 1))(tensor) if t.layout == "NCHW" else tensor
        if t.layout == "NHW":
            x = layers.Reshape((*t.size, 1))(x)
        x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
        x = layers.Conv2D(16, 3, strides=2, activation="relu")(x)
        return layers.GlobalAveragePooling2D()(x)
    if t.features == "waveform":
        x = layers.Reshape((t.window_samples, 1))(tensor)
        x = layers.Conv1D(8, 32, strides=8, activation="relu")(x)
        x = layers.Conv1D(16, 8, strides=4, activation="relu")(x)
        return layers.GlobalAveragePooling1D()(x)
    return layers.Dense(24, activation="relu")(layers.Flatten()(tensor))  # the spec normalises (mean, std)


def build(zoo: Zoo):
    """A small Keras model whose inputs are shaped by the spec and whose outputs its heads name."""
    import keras
    from keras import layers

    spec = zoo.model_spec
    inputs, features = {}, []
    for name, item in spec.inputs.items():
        if isinstance(item, (CameraInput, MicInput)):
            inputs[name] = keras.Input(item.transform.output_shape, name=name)
            features.append(_branch(item, inputs[name]))
    x = layers.Concatenate()(features) if len(features) > 1 else features[0]
    state = gain = None
    for name, item in spec.inputs.items():
        if isinstance(item, StateInput):
            state = inputs[name] = keras.Input((8,), name=name)
        elif isinstance(item, ConstantInput):
            gain = inputs[name] = keras.Input((1,), name=name)
    if state is not None:
        x = layers.Concatenate()([x, layers.Dense(8)(state)])
    if gain is not None:
        spread = layers.Dense(x.shape[-1], use_bias=False, kernel_initializer="ones", trainable=False)(gain)
        x = layers.Multiply()([x, spread])
    hidden = layers.Dense(32, activation="relu")(x)
    outputs = {}
    for name, out in spec.outputs.items():
        if out.head == "classify":
            outputs[name] = layers.Dense(CLASSES, activation="softmax", name=name)(hidden)
        elif out.head == "multilabel":
            outputs[name] = layers.Dense(CLASSES, activation="sigmoid", name=name)(hidden)
        elif out.head == "state":
            outputs[name] = layers.Dense(8, activation="tanh", name=name)(hidden)
        elif name == "embedding":
            outputs[name] = layers.Identity(name=name)(hidden)
        else:
            outputs[name] = layers.Reshape((CLASSES, 4), name=name)(layers.Dense(CLASSES * 4)(hidden))
    return keras.Model(inputs=inputs, outputs=outputs, name=zoo.name)


def _targets(zoo: Zoo, labels: np.ndarray) -> dict[str, np.ndarray]:
    onehot = np.eye(CLASSES, dtype=np.float32)[labels]
    targets = {}
    for name, out in zoo.model_spec.outputs.items():
        if out.head == "classify":
            targets[name] = labels
        elif out.head == "multilabel":
            targets[name] = onehot
        elif out.head == "state":
            targets[name] = np.zeros((len(labels), 8), np.float32)
        elif name == "embedding":
            targets[name] = np.zeros((len(labels), 32), np.float32)
        else:
            targets[name] = np.repeat(onehot[:, :, None], 4, axis=2) * 4.0
    return targets


def train(zoo: Zoo, path: Path, n: int = 360, epochs: int = 12) -> Path:
    """Builds, trains on the synthetic task and saves MODEL.keras with its spec (MODEL.yaml) beside it."""
    import keras
    import yaml

    model = build(zoo)
    x, labels = samples(zoo, n, seed=1)
    losses, weights = {}, {}
    for name, out in zoo.model_spec.outputs.items():
        losses[name] = {"classify": "sparse_categorical_crossentropy", "multilabel": "binary_crossentropy"}.get(
            out.head, "mse")
        weights[name] = 0.0 if out.head == "state" or name == "embedding" else 1.0
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=losses, loss_weights=weights)
    model.fit(x, _targets(zoo, labels), epochs=epochs, batch_size=32, verbose=0)
    model.save(path)
    path.with_suffix(".yaml").write_text(yaml.safe_dump(zoo.spec, sort_keys=False))
    return path


def write_data(zoo: Zoo, directory: Path) -> tuple[Path, Path]:
    """calib.npz and val.npz (with 'label') for the model."""
    calib, labels = samples(zoo, 96, seed=2)
    val, val_labels = samples(zoo, 120, seed=4)
    np.savez(directory / f"{zoo.name}_calib.npz", **calib, label=labels)
    np.savez(directory / f"{zoo.name}_val.npz", **val, label=val_labels)
    return directory / f"{zoo.name}_calib.npz", directory / f"{zoo.name}_val.npz"


# --- sources saved the way other tools save them (tests/test_sources.py, benchmarks/byom_sources.py) ---------

_LEGACY_TRAIN = textwrap.dedent('''
    """Builds, trains and saves a TF 2.x Keras model with a custom layer (run with TF_USE_LEGACY_TRAIN_KERAS=1)."""
    import sys

    import numpy as np
    import tf_keras

    sys.path.insert(0, sys.argv[3])
    from custom import Scale

    data = np.load(sys.argv[1])
    x, y = data["image"], data["label"]
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input(x.shape[1:], name="image")
    h = tf_keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    h = Scale(name="scale")(h)
    h = tf_keras.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    h = tf_keras.layers.GlobalAveragePooling2D()(h)
    outputs = tf_keras.layers.Dense(3, activation="softmax", name="label")(h)
    model = tf_keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    model.save(sys.argv[2])
    if len(sys.argv) > 4:  # the same model with a Python lambda in it
        lam = tf_keras.Model(inputs, tf_keras.layers.Lambda(lambda t: t * 1.0)(outputs))
        lam.save(sys.argv[4])
        model.save_weights(sys.argv[4] + ".weights.h5")
''')

_LEGACY_CUSTOM = textwrap.dedent('''
    """The custom layer, written for TF 2.x Keras (tf_keras), as a user's project has it."""
    import tf_keras


    class Scale(tf_keras.layers.Layer):
        def build(self, shape):
            self.gain = self.add_weight(name="gain", shape=(shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.gain
''')


def write_legacy_h5(directory: Path, zoo: Zoo) -> tuple[Path, Path]:
    """A TF 2.x Keras model with a custom layer, trained on `zoo`'s image input and saved by tf_keras (in a
    child process, TF_USE_LEGACY_KERAS=1) as legacy.h5; also lambda.h5 (a Python lambda in it) and its
    weights only (lambda.h5.weights.h5). Returns legacy.h5 and the custom layer's code (custom.py); both
    models get a spec beside them."""
    import os
    import subprocess
    import sys

    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "custom.py").write_text(_LEGACY_CUSTOM)
    (directory / "train.py").write_text(_LEGACY_TRAIN)
    x, labels = samples(zoo, 240, seed=1)
    np.savez(directory / "train.npz", image=x["image"], label=labels)
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, str(directory / "train.py"), str(directory / "train.npz"),
                    str(directory / "legacy.h5"), str(directory), str(directory / "lambda.h5")],
                   env=env, check=True, timeout=600, capture_output=True)
    spec = {"inputs": {"image": zoo.spec["inputs"]["image"]}, "outputs": {"label": {"head": "classify"}}}
    for name in ("legacy", "lambda"):
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(spec))
    return directory / "legacy.h5", directory / "custom.py"


def shared_hw_onnx() -> bytes:
    """An OCR-style classifier exported with H and W sharing one symbolic name: x is 1x3xSxS. Class k is
    the brightest of the three channels (1x1 conv, ReLU, global average pool, softmax)."""
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w = np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1) * 4 + rng.normal(0, 0.05, (3, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Softmax", ["f"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "ocr", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "size", "size"])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor("w", TensorProto.FLOAT, w.shape, w.flatten().tolist())])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def shared_hw_data(directory: Path, n: int, height: int, width: int) -> Path:
    """calib.npz for shared_hw_onnx() at one fixed size: random images whose class channel is brightest."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, n)
    x = rng.uniform(0, 0.5, (n, 3, height, width)).astype(np.float32)
    x[np.arange(n), labels] += 0.5
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "calib.npz", x=x, label=labels)
    return directory / "calib.npz"
