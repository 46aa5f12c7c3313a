"""A float TFLite model (the converter's calibrated model) computed with TensorFlow ops, so it can be trained.

Quantization-aware fine-tuning (converters/qat.py) needs the graph the converter quantizes, not the source
model: the converter folds batch norm into the conv weights, fuses activations and splits a separable conv
into a depthwise and a pointwise conv with an int8 tensor between them (fer_emotion's four worst tensors are
such tensors). A Keras clone of the source has neither those weights nor those tensors, so what it learns
cannot be carried over; here every tensor and weight is the TFLite model's own, by index, and the trained
weights and ranges go back into the same flatbuffer. No library computes a TFLite flatbuffer with
differentiable ops, hence this module; it covers the ops of common vision and audio CNNs and refuses others.
"""

from __future__ import annotations

import numpy as np

# ops with trainable weights (input 1, bias input 2) -> the output-channel axis of the weights
WEIGHT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}
_FLOAT32, _INT32, _INT64 = 0, 2, 4


class Unsupported(Exception):
    """The model has something this module does not compute (an op, control flow, non-float inputs)."""


def _activation(tf, x, fused: int):
    if fused == 0:
        return x
    if fused == 1:
        return tf.nn.relu(x)
    if fused == 2:
        return tf.clip_by_value(x, -1.0, 1.0)
    if fused == 3:
        return tf.nn.relu6(x)
    raise Unsupported(f"fused activation {fused}")


def _padding(p: int) -> str:
    return "SAME" if p == 0 else "VALID"


class Graph:
    """The first subgraph of a float TFLite model object (flatbuffer_utils' ModelT). `weights` maps the tensor
    index of every conv/dense weight and bias to a tf.Variable holding its float value."""

    def __init__(self, model):
        import tensorflow as tf
        from tensorflow.lite.python import schema_py_generated as schema

        if len(model.subgraphs) != 1:
            raise Unsupported(f"{len(model.subgraphs)} subgraphs (control flow)")
        self.tf, self.model, self.graph = tf, model, model.subgraphs[0]
        self.builtin = schema.BuiltinOperator
        self.codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        weight_axis = {getattr(self.builtin, name): axis for name, axis in WEIGHT_AXIS.items()}
        for op in self.graph.operators:
            if self.codes[op.opcodeIndex] not in self._ops():
                raise Unsupported(f"op {names.get(self.codes[op.opcodeIndex], self.codes[op.opcodeIndex])}")
        for t in self.graph.inputs:
            if self.graph.tensors[t].type != _FLOAT32:
                raise Unsupported(f"input {self.graph.tensors[t].name.decode()} is not float32")
        self.constants = {t: v for op in self.graph.operators for t in op.inputs if t >= 0
                          if (v := self._constant(int(t))) is not None}
        self.weights, self.channel_axis = {}, {}
        for op in self.graph.operators:
            code, inputs = self.codes[op.opcodeIndex], [int(t) for t in op.inputs]
            if code in weight_axis:
                self.channel_axis[inputs[1]] = weight_axis[code]
                for t in inputs[1:3]:
                    if t >= 0 and self.constants.get(t) is not None and self.constants[t].dtype == np.float32:
                        self.weights[t] = tf.Variable(self.constants[t])

    def _constant(self, t: int) -> np.ndarray | None:
        tensor = self.graph.tensors[t]
        data = self.model.buffers[tensor.buffer].data
        dtype = {_FLOAT32: np.float32, _INT32: np.int32, _INT64: np.int64}.get(tensor.type)
        if data is None or len(data) == 0 or dtype is None:
            return None
        return np.frombuffer(np.asarray(data, np.uint8).tobytes(), dtype).reshape(tensor.shape)

    def write_weights(self, model) -> None:
        """Puts the variables' values into `model` (a copy of this graph's model) as float32 buffers."""
        graph = model.subgraphs[0]
        for t, v in self.weights.items():
            model.buffers[graph.tensors[t].buffer].data = np.frombuffer(v.numpy().astype(np.float32).tobytes(),
                                                                        np.uint8)

    def run(self, feeds: dict[int, object], activation=None, weight=None) -> dict[int, object]:
        """Every tensor the graph computes, by index, from `feeds` (input tensor index -> a batch).
        activation(t, x) and weight(t, w) may replace a computed tensor and a weight (fake quantization)."""
        activation = activation or (lambda t, x: x)
        weight = weight or (lambda t, w: w)
        values = {t: activation(t, x) for t, x in feeds.items()}

        def value(t: int):
            if t in values:
                return values[t]
            if t in self.weights:
                return weight(t, self.weights[t]) if t in self.channel_axis else self.weights[t]
            return self.tf.constant(self.constants[t])

        ops = self._ops()
        for op in self.graph.operators:
            out = int(op.outputs[0])
            values[out] = activation(out, ops[self.codes[op.opcodeIndex]](
                op, [int(t) for t in op.inputs], value, op.builtinOptions))
        return values

    def _ops(self) -> dict:
        """TFLite op code -> fn(op, input indices, value, options) computing its output."""
        tf = self.tf

        def conv(op, i, v, o):
            y = tf.nn.conv2d(v(i[0]), tf.transpose(v(i[1]), (1, 2, 3, 0)), [1, o.strideH, o.strideW, 1],
                             _padding(o.padding), dilations=[1, o.dilationHFactor, o.dilationWFactor, 1])
            return _activation(tf, y + v(i[2]) if len(i) > 2 and i[2] >= 0 else y, o.fusedActivationFunction)

        def depthwise(op, i, v, o):
            w, channels = v(i[1]), self.graph.tensors[i[0]].shape[-1]  # w: [1, H, W, C * multiplier]
            w = tf.reshape(w, (w.shape[1], w.shape[2], channels, w.shape[3] // channels))
            y = tf.nn.depthwise_conv2d(v(i[0]), w, [1, o.strideH, o.strideW, 1], _padding(o.padding),
                                       dilations=[o.dilationHFactor, o.dilationWFactor])
            return _activation(tf, y + v(i[2]) if len(i) > 2 and i[2] >= 0 else y, o.fusedActivationFunction)

        def dense(op, i, v, o):
            x = v(i[0])
            y = tf.matmul(tf.reshape(x, (-1, x.shape[-1])), v(i[1]), transpose_b=True)
            y = _activation(tf, y + v(i[2]) if len(i) > 2 and i[2] >= 0 else y, o.fusedActivationFunction)
            return tf.reshape(y, (*x.shape[:-1], y.shape[-1])) if o.keepNumDims else y

        def pool(fn):
            return lambda op, i, v, o: _activation(tf, fn(v(i[0]), [o.filterHeight, o.filterWidth],
                                                          [o.strideH, o.strideW], _padding(o.padding)),
                                                   o.fusedActivationFunction)

        def binary(fn):
            return lambda op, i, v, o: _activation(tf, fn(v(i[0]), v(i[1])), o.fusedActivationFunction if o else 0)

        def reshape(op, i, v, o):
            return tf.reshape(v(i[0]), (-1, *self.graph.tensors[int(op.outputs[0])].shape[1:]))

        def concat(op, i, v, o):
            return _activation(tf, tf.concat([v(t) for t in i], o.axis), o.fusedActivationFunction)

        by_name = {
            "CONV_2D": conv, "DEPTHWISE_CONV_2D": depthwise, "FULLY_CONNECTED": dense,
            "MAX_POOL_2D": pool(tf.nn.max_pool2d), "AVERAGE_POOL_2D": pool(tf.nn.avg_pool2d),
            "ADD": binary(tf.add), "MUL": binary(tf.multiply), "SUB": binary(tf.subtract),
            "MAXIMUM": binary(tf.maximum), "MINIMUM": binary(tf.minimum),
            "MEAN": lambda op, i, v, o: tf.reduce_mean(v(i[0]), axis=[int(a) for a in np.ravel(self.constants[i[1]])],
                                                       keepdims=bool(o.keepDims)),
            "SOFTMAX": lambda op, i, v, o: tf.nn.softmax(v(i[0]) * o.beta),
            "PRELU": lambda op, i, v, o: tf.maximum(v(i[0]), 0.0) + v(i[1]) * tf.minimum(v(i[0]), 0.0),
            "LEAKY_RELU": lambda op, i, v, o: tf.nn.leaky_relu(v(i[0]), o.alpha),
            "RELU": lambda op, i, v, o: tf.nn.relu(v(i[0])),
            "RELU6": lambda op, i, v, o: tf.nn.relu6(v(i[0])),
            "RELU_0_TO_1": lambda op, i, v, o: tf.clip_by_value(v(i[0]), 0.0, 1.0),
            "HARD_SWISH": lambda op, i, v, o: v(i[0]) * tf.nn.relu6(v(i[0]) + 3.0) / 6.0,
            "LOGISTIC": lambda op, i, v, o: tf.sigmoid(v(i[0])),
            "TANH": lambda op, i, v, o: tf.tanh(v(i[0])),
            "ABS": lambda op, i, v, o: tf.abs(v(i[0])),  # onnx2tf writes PReLU with it (iris_landmark)
            "NEG": lambda op, i, v, o: -v(i[0]),
            "SQUARE": lambda op, i, v, o: tf.square(v(i[0])),
            "RESHAPE": reshape, "CONCATENATION": concat,
            "TRANSPOSE": lambda op, i, v, o: tf.transpose(v(i[0]), self.constants[i[1]]),
            "PAD": lambda op, i, v, o: tf.pad(v(i[0]), self.constants[i[1]]),
        }
        return {getattr(self.builtin, name): fn for name, fn in by_name.items()}
