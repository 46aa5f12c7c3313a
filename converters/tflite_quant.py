"""Full-int8 TFLite from a float .tflite source, with ai-edge-quantizer.

A .tflite file has no graph the TFLite converter can read again, so its int8 model comes from
Google's ai-edge-quantizer (the quantizer LiteRT's own PyTorch path uses): the static_wi8_ai8
recipe gives int8 weights, activations, inputs and outputs, with no float op left.
Calibration is keyed by signature input name, like every other calibration in edgemm.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from converters.sources import first_line
from edgemm.atomic import atomic_path
from edgemm.errors import InputError


def quantize(float_path: Path, path: Path, calib: dict[str, np.ndarray]) -> Path:
    """Writes the full-int8 model of `float_path` to `path`; calib: {input: samples on the first axis}."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import quantizer, recipe

    signatures = Interpreter(model_path=os.fspath(float_path)).get_signature_list()
    if len(signatures) != 1:
        raise InputError(f"{float_path}: quantizing a .tflite needs exactly one signature (it has {len(signatures)}); "
                         "export the model with a serving signature, or give its SavedModel/Keras/ONNX source")
    key, names = next(iter(signatures.items()))
    runner = Interpreter(model_path=os.fspath(float_path)).get_signature_runner(key)
    ranks = {n: len(d["shape"]) for n, d in runner.get_input_details().items()}
    if set(calib) != set(names["inputs"]):
        raise InputError(f"calibration arrays {sorted(calib)} do not match the model's inputs {sorted(names['inputs'])}")
    count = len(next(iter(calib.values())))
    samples = [{n: (v[i:i + 1] if v.ndim == ranks[n] else v[i]).astype(np.float32) for n, v in calib.items()}
               for i in range(count)]
    try:
        q = quantizer.Quantizer(os.fspath(float_path))
        q.load_quantization_recipe(recipe.static_wi8_ai8())
        result = q.quantize(q.calibrate({key: samples}))
        with atomic_path(path) as tmp:
            result.export_model(os.fspath(tmp), overwrite=True)
    except InputError:
        raise
    except Exception as e:  # the quantizer raises ValueError, RuntimeError, KeyError... for what it cannot handle
        raise InputError(f"{float_path}: ai-edge-quantizer cannot quantize this model ({first_line(e)})") from None
    return path
