"""onnx2tf's command line, stopped once the float SavedModel is written. Run by onnx2tf's own Python.

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

if __name__ == "__main__":
    from onnx2tf import main

    sys.argv[0] = "onnx2tf"
    try:
        sys.exit(main())
    except _SavedModelWritten:
        sys.exit(0)
