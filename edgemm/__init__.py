"""edgemm: put a camera + microphone model on edge devices.

Importing this package must stay cheap and must never import TensorFlow or
Keras: the device runtime installs only LiteRT / ONNX Runtime, numpy, OpenCV
and PyAudio.
"""

__version__ = "0.1.0"
