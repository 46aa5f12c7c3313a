"""Float .tflite sources.

A .tflite file has no graph the TFLite converter can read back. Its int8 TFLite goes the ONNX way:
tf2onnx -> onnx2tf -> the TFLite converter (converters.onnx_tflite), the same quantizer as every
other source. Measured on a gray image model with a classify and a raw head (tests/test_sources.py):
ai-edge-quantizer 0.10's static_wi8_ai8 on the float .tflite gave the raw head 12.4 dB SQNR and 98.3 %
top-1 agreement; this route 43.0 dB and 100 %.
"""

from __future__ import annotations

from pathlib import Path

from edgemm.atomic import atomic_path
from edgemm.errors import InputError


def static_copy(source: Path, path: Path) -> Path:
    """The model with static shapes: every tensor's shape_signature (where -1 marks a dynamic batch) dropped,
    so the shapes the interpreter allocates (batch 1) are the model's. The Edge TPU compiler maps no
    dynamic tensor. (Edited with the flatbuffer schema LiteRT ships: no converter reads a .tflite back.)"""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(Path(source).read_bytes(), 0)
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            signature = tensor.shapeSignature
            if signature is not None and len(signature) and any(d < 0 for d in signature[1:]):
                raise InputError(f"{source}: tensor {tensor.name.decode(errors='replace')} has dynamic dimensions "
                                 f"{list(signature)} beyond the batch; export the model with static shapes")
            tensor.shapeSignature = None
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(builder.Output()))
    return path
