"""onnx2tf's command line, stopped once the float SavedModel is written, and with MaxPool padding that
int8 can represent. Run by onnx2tf's own Python.

onnx2tf 1.29.24 always goes on to write float32 and float16 .tflite files from that SavedModel. edgemm
does not use them: it quantizes the SavedModel itself (converters/onnx_tflite.py). For a ResNet-50 that
export took the convert's peak memory to 6.2 GB (benchmarks/convert_memory.py), and onnx2tf has no flag
to skip it. So this script makes the first request for a TFLite converter, which onnx2tf makes right
after the SavedModel is written, end the run with exit 0.
"""

import sys

import tensorflow as tf


class _SavedModelWritten(BaseException):
    """BaseException: onnx2tf catches Exception around its converter calls."""


def _stop(*args, **kwargs):
    raise _SavedModelWritten


tf.lite.TFLiteConverter.from_keras_model = _stop
tf.lite.TFLiteConverter.from_concrete_functions = _stop

NON_NEGATIVE = {"Relu", "Sigmoid", "Softmax", "Softplus"}  # ops whose every output is >= 0


def _zero_padded_after_relu(make_node):
    """onnx2tf pads a MaxPool it cannot express in TensorFlow with the float32 minimum, a value the int8
    calibration then takes as the tensor's range: ResNet-50's Relu -> (Pad fused by onnxsim) -> MaxPool came
    out with scale 1.3e36, and XNNPACK refused the model. After an op whose outputs are >= 0, padding with 0
    gives the same maximum; onnx2tf does exactly that when told the model is for int8
    (output_integer_quantized_tflite), which it is here."""
    def wrapped(*, graph_node, **kwargs):
        producers = getattr(graph_node.inputs[0], "inputs", [])
        if producers and getattr(producers[0], "op", None) in NON_NEGATIVE:
            kwargs = {**kwargs, "output_integer_quantized_tflite": True}
        return make_node(graph_node=graph_node, **kwargs)
    return wrapped

if __name__ == "__main__":
    import onnx2tf.ops.MaxPool as max_pool
    from onnx2tf import main

    max_pool.make_node = _zero_padded_after_relu(max_pool.make_node)

    sys.argv[0] = "onnx2tf"
    try:
        sys.exit(main())
    except _SavedModelWritten:
        sys.exit(0)
