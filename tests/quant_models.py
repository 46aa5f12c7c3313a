"""Small models on which a quantization technique measurably matters, built in code (tests/test_quantization.py
and benchmarks/quantization_techniques.py use them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def glitchy_data(n: int, seed: int) -> np.ndarray:
    """Inputs in a modest range; feature 0 is a glitchy sensor: near 0, and at +-6 in 5 % of the samples."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, 32)).astype(np.float32)
    x[:, 0] *= 0.1
    spikes = rng.random(n) < 0.05
    x[spikes, 0] = 6 * np.sign(x[spikes, 0])
    return x


def glitchy_dense_model():
    """Dense(64, relu) -> Dense(10) on glitchy_data, whose one glitch-following unit the output ignores."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32,), name="x")
    h = keras.layers.Dense(64, activation="relu", name="d1")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(h))
    kernel, bias = model.get_layer("d1").get_weights()
    kernel[0, 0] = 30.0  # one unit amplifies the glitches: they set d1's per-tensor min/max range (the outlier
    model.get_layer("d1").set_weights([kernel, bias])  # channel of real networks) ...
    kernel, bias = model.get_layer("logits").get_weights()
    kernel[0] = 0.0  # ... and the network has learnt to ignore that unit
    model.get_layer("logits").set_weights([kernel, bias])
    return model


def glitchy_model_with_square():
    """glitchy_dense_model's logits through sqrt(logits^2 + 1): TFLite has no 16x8 kernel for SQUARE."""
    import keras

    model = glitchy_dense_model()
    return keras.Model(model.input, keras.ops.sqrt(keras.ops.square(model.output) + 1.0))


def divide_by_peak_model():
    """x (N,64) divided by its peak |x| (+1e-6), then Dense(4): a per-window normalisation in the graph, as
    basic-pitch has. In int8 the divisor of a quiet window quantizes to 0, which TFLite's int8 DIV refuses."""
    import keras

    x = keras.Input((64,), name="x")
    peak = keras.ops.max(keras.ops.abs(x), axis=-1, keepdims=True) + 1e-6
    return keras.Model(x, keras.layers.Dense(4, name="logits")(x / peak))


def peak_data(n: int, seed: int) -> np.ndarray:
    """Windows at levels from -80 to 0 dB."""
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 1, (n, 64)) * 10 ** rng.uniform(-4, 0, (n, 1))).astype(np.float32)


def imbalanced_conv_chain(path: Path) -> Path:
    """Conv(3->16) -> ReLU -> depthwise Conv(16) -> ReLU -> Conv(16->8), output channels of the first two
    scaled by factors from 0.02 to 50 (what batch-norm folding leaves in real mobile networks)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    scale = np.exp(rng.uniform(np.log(0.02), np.log(50), 16)).astype(np.float32)
    w1 = rng.normal(0, 0.3, (16, 3, 3, 3)).astype(np.float32) * scale[:, None, None, None]
    b1 = rng.normal(0, 0.1, 16).astype(np.float32) * scale
    w2 = rng.normal(0, 0.3, (16, 1, 3, 3)).astype(np.float32) / scale[:, None, None, None]
    w3 = rng.normal(0, 0.3, (8, 16, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=16, name="dw"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="pw")]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (w3, "w3"))])
    return _save(graph, path, 13)


def log_spectrum_model(path: Path, offset: float = 0.0) -> Path:
    """A spectrum and its log in the graph, as audio models compute them (DNSMOS, silero-vad): x (N,1,512) ->
    Conv1d(1->16, kernel 32, stride 16) "frontend" -> frames first -> Mul(itself) "power" -> Max(1e-6) -> Log
    -> channels first -> Conv1d(16->8) "conv1" -> Relu -> Conv1d(8->8) "conv2" -> Relu -> ReduceMean -> y
    (N,8). On log_spectrum_data the power spans decades: int8 steps zero the quiet bins and the log turns that
    into the largest error of the model, which every later layer then carries. ONNX Runtime's pre-processing
    removes the two Transposes and renames the tensors between them (as in DNSMOS).

    offset: added to conv1's bias and taken out again by conv2's, so that conv1's output varies by a few
    units on top of `offset`: its int8 step (the range includes 0) loses the variation, and the error stays
    unless conv2, which reads the tensor, is in float too. conv2's weights are exact in int8 (per-tensor or
    per-channel): the error is the activation's, not the weights' times the offset."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(8)
    weights = {"wf": rng.normal(0, 0.2, (16, 1, 32)), "w1": rng.normal(0, 0.3, (8, 16, 3)),
               "b1": rng.normal(0.5, 0.2, 8), "w2": rng.normal(0, 0.3, (8, 8, 1)), "eps": np.array(1e-6)}
    weights["w2"] = np.round(weights["w2"] / np.abs(weights["w2"]).max() * 127) / 127  # int8 weights: exact
    weights["b1"] += offset
    weights["b2"] = -offset * weights["w2"].sum(axis=(1, 2))
    nodes = [helper.make_node("Conv", ["x", "wf"], ["spectrum"], strides=[16], name="frontend"),
             helper.make_node("Transpose", ["spectrum"], ["frames"], perm=[0, 2, 1], name="to_frames"),
             helper.make_node("Mul", ["frames", "frames"], ["power"], name="power"),
             helper.make_node("Max", ["power", "eps"], ["floored"], name="floor"),
             helper.make_node("Log", ["floored"], ["log_power"], name="log"),
             helper.make_node("Transpose", ["log_power"], ["log_channels"], perm=[0, 2, 1], name="to_channels"),
             helper.make_node("Conv", ["log_channels", "w1", "b1"], ["c1"], pads=[1, 1], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("ReduceMean", ["r2"], ["y"], axes=[2], keepdims=0, name="mean")]
    graph = helper.make_graph(nodes, "log_spectrum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 512])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
                              [numpy_helper.from_array(v.astype(np.float32), k) for k, v in weights.items()])
    return _save(graph, path, 17)


def log_spectrum_keras(softplus_network: bool = False):
    """log_spectrum_model's front end and network in Keras, for the TFLite side: x (N,1,512) -> frames ->
    Conv1D(16, kernel 32, stride 16) "frontend" -> its square -> max(1e-6) -> log -> Conv1D(8, 3) relu ->
    Conv1D(8, 1) relu -> mean over time -> y (N,8). softplus_network: no log of the power; the network is
    Dense(16, softplus) -> Dense(8) -> log(+1e-6) instead (the converter writes a softplus as EXP, ADD 1,
    LOG, and the last log is at the output)."""
    import keras

    keras.utils.set_random_seed(8)
    x = keras.Input((1, 512), name="x")
    spectrum = keras.layers.Conv1D(16, 32, strides=16, use_bias=False, name="frontend")(keras.layers.Permute((2, 1))(x))
    power = spectrum * spectrum
    if softplus_network:
        h = keras.layers.Dense(16, activation="softplus", name="dense1")(keras.layers.Flatten()(power))
        return keras.Model(x, keras.ops.log(keras.layers.Dense(8, activation="softplus", name="y")(h) + 1e-6))
    h = keras.layers.Conv1D(8, 3, padding="same", activation="relu", name="conv1")(keras.ops.log(
        keras.ops.maximum(power, 1e-6)))
    h = keras.layers.Conv1D(8, 1, activation="relu", name="conv2")(h)
    return keras.Model(x, keras.layers.GlobalAveragePooling1D(name="y")(h))


def log_spectrum_data(n: int, seed: int) -> dict[str, np.ndarray]:
    """Noise at levels from -60 to 0 dB: quiet and loud windows, as a microphone gives them."""
    rng = np.random.default_rng(seed)
    level = 10 ** rng.uniform(-3, 0, (n, 1, 1))
    return {"x": (rng.normal(0, 1, (n, 1, 512)) * level).astype(np.float32)}


BIASED_CHANNELS = 16


def biased_conv_bn_gemm(path: Path, outlier: float = 2.0) -> Path:
    """Conv(4->16, one weight `outlier` x the others' largest: it sets the per-tensor step) -> ReLU -> depthwise Conv(16,
    channel ranges over 30x, no bias) -> BatchNormalization -> ReLU -> Conv 1x1(16->8, no bias) = `y`
    -> GlobalAveragePool -> Flatten -> Gemm(transB, no C) = `logits`."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    w1 = rng.normal(0, 0.3, (BIASED_CHANNELS, 4, 3, 3)).astype(np.float32)
    w1[0, 0, 1, 1] = outlier * np.abs(w1).max()
    scale = np.exp(rng.uniform(np.log(1 / 30), 0, BIASED_CHANNELS)).astype(np.float32)
    arrays = {
        "w1": w1, "b1": rng.normal(0, 0.1, BIASED_CHANNELS).astype(np.float32),
        "w2": (rng.normal(0, 0.3, (BIASED_CHANNELS, 1, 3, 3)) * scale[:, None, None, None]).astype(np.float32),
        "gamma": rng.uniform(0.5, 2, BIASED_CHANNELS).astype(np.float32),
        "beta": rng.normal(0, 0.05, BIASED_CHANNELS).astype(np.float32),
        "mean": rng.normal(0, 0.05, BIASED_CHANNELS).astype(np.float32),
        "var": (scale ** 2 * rng.uniform(0.5, 2, BIASED_CHANNELS)).astype(np.float32),
        "w3": rng.normal(0, 0.3, (8, BIASED_CHANNELS, 1, 1)).astype(np.float32),
        "w4": rng.normal(0, 0.3, (5, 8)).astype(np.float32),
    }
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=BIASED_CHANNELS, name="dw"),
             helper.make_node("BatchNormalization", ["c2", "gamma", "beta", "mean", "var"], ["n2"], name="bn"),
             helper.make_node("Relu", ["n2"], ["r2"]),
             helper.make_node("Conv", ["r2", "w3"], ["y"], name="pw"),
             helper.make_node("GlobalAveragePool", ["y"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "w4"], ["logits"], transB=1, name="fc")]
    graph = helper.make_graph(nodes, "biased", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16]),
                               helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])],
                              [numpy_helper.from_array(a, n) for n, a in arrays.items()])
    return _save(graph, path, 13)


def biased_images(n: int, seed: int) -> dict[str, np.ndarray]:
    """Inputs with a clearly non-zero mean (pixels in [0.25, 1]): the weights' rounding errors, times the
    mean, shift the outputs."""
    return {"x": np.random.default_rng(seed).uniform(0.25, 1, (n, 4, 16, 16)).astype(np.float32)}


def smooth_conv_chain(path: Path) -> Path:
    """Conv1d(1->16, kernel 9) -> Relu -> Conv1d(16->16, kernel 5) -> Relu -> Conv1d(16->8, kernel 3), "same"
    padding, on smooth_signals: neighbouring inputs are correlated (as a picture's or a spectrum's are), and
    one weight of each output channel is 6x the others, so that the per-channel int8 step is coarse for the
    rest. Nearest rounding's errors add up in the output; rounding that sees the inputs' correlation
    (converters/weight_rounding.py) cancels most of them."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(11)
    shapes = {"w1": (16, 1, 9), "w2": (16, 16, 5), "w3": (8, 16, 3)}
    weights = {}
    for name, shape in shapes.items():
        w = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape)
        flat = w.reshape(shape[0], -1)
        flat[np.arange(shape[0]), rng.integers(0, flat.shape[1], shape[0])] *= 6
        weights[name] = w.astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[4, 4], name="conv1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[2, 2], name="conv2"),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "w3"], ["y"], pads=[1, 1], name="conv3")]
    graph = helper.make_graph(nodes, "smooth_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 256])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 256])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    return _save(graph, path, 13)


def smooth_signals(n: int, seed: int) -> dict[str, np.ndarray]:
    """Random walks smoothed by a 16-tap moving average, one per sample: x (n, 1, 256)."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 1, (n, 256 + 15)), axis=1)
    smooth = np.stack([np.convolve(w, np.ones(16) / 16, mode="valid") for w in walk])
    smooth -= smooth.mean(axis=1, keepdims=True)
    return {"x": (smooth / smooth.std(axis=1, keepdims=True))[:, None, :].astype(np.float32)}


def _save(graph, path: Path, opset: int) -> Path:
    """An ONNX model of `graph` at `path` (IR 8, which this onnxruntime reads)."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def many_ops_cnn(classes: int = 8):
    """A small image classifier with the ops of common vision CNNs (conv + batch norm + ReLU, depthwise and
    separable convs, pools, residual add, gating multiply, concat, transpose, zero padding, abs, PReLU, leaky ReLU, ReLU6,
    hard swish, sigmoid, tanh, flatten, dense, softmax), random weights: converters/tflite_graph.py computes
    each of them."""
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((16, 16, 3), name="x")
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x), training=False))
    h = L.ZeroPadding2D(1)(h)
    h = L.DepthwiseConv2D(3, activation="relu6")(h)
    h = L.Add()([h, L.PReLU(shared_axes=[1, 2])(L.Conv2D(16, 1)(h))])
    h = L.Multiply()([L.Activation(keras.ops.abs)(h), L.Activation("sigmoid")(L.Conv2D(16, 1)(h))])
    h = L.Concatenate()([L.SeparableConv2D(8, 3, padding="same")(h), L.LeakyReLU(0.1)(L.Conv2D(8, 1)(h))])
    h = L.Activation("hard_swish")(L.MaxPooling2D(2)(h))
    h = L.Activation("tanh")(L.AveragePooling2D(2)(L.Permute((2, 1, 3))(h)))
    g = L.GlobalAveragePooling2D()(h)
    h = L.Dense(16, activation="relu")(L.Flatten()(h))
    return keras.Model(x, L.Dense(classes, activation="softmax", name="probs")(L.Concatenate()([h, g])))


def cnn_images(n: int, seed: int) -> np.ndarray:
    """Smooth random 16x16 RGB images (a few low-frequency components and noise)."""
    rng = np.random.default_rng(seed)
    u = np.linspace(0, np.pi, 16)
    waves = np.stack([np.outer(np.cos(a * u), np.cos(b * u)) for a in range(3) for b in range(3)])  # 9 x 16 x 16
    images = np.einsum("nkc,khw->nhwc", rng.normal(0, 1, (n, 9, 3)), waves)
    return (images + 0.1 * rng.normal(0, 1, images.shape)).astype(np.float32)


def small_cnn():
    """Conv + batch norm + ReLU -> separable conv -> max pool -> conv -> global average -> Dense(8), random
    weights: in int8 its error is spread over every layer, where fine-tuning with fake quantization helps."""
    import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    x = keras.Input((16, 16, 3), name="x")
    h = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x), training=False))
    h = L.MaxPooling2D(2)(L.SeparableConv2D(32, 3, padding="same", activation="relu")(h))
    h = L.GlobalAveragePooling2D()(L.Conv2D(32, 3, padding="same", activation="relu")(h))
    return keras.Model(x, L.Dense(8, name="logits")(h))
