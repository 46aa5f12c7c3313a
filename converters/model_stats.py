"""Size figures of a Keras model: parameters and multiply-accumulates per inference."""

from __future__ import annotations

import numpy as np


def count_macs(model) -> int:
    """Multiply-accumulates of one inference (batch 1) in Conv2D, DepthwiseConv2D and Dense layers.

    These layers hold all but a negligible share of the work in the models edgemm handles;
    BatchNormalization folds into the preceding layer on export.
    """
    from keras import layers

    total = 0
    for layer in model.layers:
        if isinstance(layer, layers.DepthwiseConv2D):
            kh, kw = layer.kernel_size
            total += int(np.prod(layer.output.shape[1:])) * kh * kw
        elif isinstance(layer, layers.Conv2D):
            total += int(np.prod(layer.output.shape[1:3])) * int(np.prod(layer.kernel.shape))
        elif isinstance(layer, layers.Dense):
            total += int(np.prod(layer.kernel.shape))
    return total
