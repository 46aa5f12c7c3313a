"""The AV-digits reference teacher: a Keras 3 functional model with two named inputs.

image (32x32x1) -> VGG-style conv branch
audio (49x40x1 log-mel) -> DS-CNN branch (Zhang et al., "Hello Edge")
both -> concatenate -> dense head -> softmax over the 10 digits

It is deliberately "full size" (~0.3 M parameters, ~13 M multiply-accumulates) so that pruning and
distillation have room later. Layers carry stable names; later stages
(pruning, quantization reports) refer to them.
"""

from __future__ import annotations

import keras
from keras import layers

from edgemm.transforms.v1 import PreprocessSpec

NUM_CLASSES = 10
# Keras' default 0.99 leaves the moving statistics far from the data after a
# few hundred CPU training steps; 0.9 converges within ~50.
BN_MOMENTUM = 0.9


def _conv_bn_relu(x, filters: int, name: str, kernel=(3, 3), strides=(1, 1)):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _ds_block(x, filters: int, name: str, strides=(1, 1)):
    x = layers.DepthwiseConv2D((3, 3), strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    return _conv_bn_relu(x, filters, f"{name}_pw", kernel=(1, 1))


def image_branch(image, width: int = 16):
    x = _conv_bn_relu(image, width, "img1")
    x = layers.MaxPooling2D(name="img_pool1")(x)
    x = _conv_bn_relu(x, 2 * width, "img2")
    x = _conv_bn_relu(x, 2 * width, "img3")
    x = layers.MaxPooling2D(name="img_pool2")(x)
    x = _conv_bn_relu(x, 4 * width, "img4")
    x = _conv_bn_relu(x, 4 * width, "img5")
    x = layers.MaxPooling2D(name="img_pool3")(x)
    return layers.Flatten(name="img_flat")(x)


def audio_branch(audio, width: int = 64):
    x = _conv_bn_relu(audio, width, "aud0", kernel=(10, 4), strides=(2, 2))
    x = _ds_block(x, width, "aud1")
    x = _ds_block(x, width, "aud2", strides=(2, 2))
    x = _ds_block(x, width, "aud3")
    x = _ds_block(x, width, "aud4")
    return layers.GlobalAveragePooling2D(name="aud_gap")(x)


def _head(features, hidden: int, dropout: float):
    x = layers.Dense(hidden, name="head_fc")(features)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    return layers.Dense(NUM_CLASSES, activation="softmax", name="digit")(x)


def build_teacher(spec: PreprocessSpec, hidden: int = 256, dropout: float = 0.3, image_width: int = 16,
                  audio_width: int = 64, name: str = "av_digits_teacher") -> keras.Model:
    """The fused two-input teacher (smaller widths give the same architecture as a student)."""
    image = keras.Input(spec.image.input_shape, name="image")
    audio = keras.Input(spec.audio.feature_shape, name="audio")
    fused = layers.Concatenate(name="fuse")([image_branch(image, image_width), audio_branch(audio, audio_width)])
    return keras.Model({"image": image, "audio": audio}, _head(fused, hidden, dropout), name=name)


def build_single(modality: str, spec: PreprocessSpec, hidden: int = 256, dropout: float = 0.3) -> keras.Model:
    """A one-modality baseline with the same branch and head, to measure what fusion adds."""
    if modality == "image":
        inp = keras.Input(spec.image.input_shape, name="image")
        features = image_branch(inp)
    elif modality == "audio":
        inp = keras.Input(spec.audio.feature_shape, name="audio")
        features = audio_branch(inp)
    else:
        raise ValueError(f"modality must be 'image' or 'audio', got {modality!r}")
    return keras.Model({modality: inp}, _head(features, hidden, dropout), name=f"av_digits_{modality}_only")
