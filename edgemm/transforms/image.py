"""Camera frames (OpenCV uint8 gray, BGR or BGRA) to float model inputs (NCHW, NHWC or NHW).

Runs once per camera frame, so the geometry (crop, resize, letterbox) is done on uint8 pixels
and the float conversion is a single multiply-add per channel.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
from typing import Any, Mapping

import cv2
import numpy as np

from edgemm import config
from edgemm.config import require
from edgemm.errors import InputError

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST,
                  "cubic": cv2.INTER_CUBIC}
_RESIZE = ("stretch", "center-crop", "letterbox")


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """A camera frame to the model's image input.

    Attributes:
        layout: "NCHW", "NHWC" or "NHW" (no channel axis); the batch axis is not part of the output.
        color: "rgb", "bgr" or "gray" (frames arrive as OpenCV BGR/BGRA/gray uint8).
        size: (height, width) of the model input.
        resize: "stretch"; "center-crop" (the largest centred region with the target aspect ratio, then
            resize); "letterbox" (keep the aspect ratio, pad centred with pad_value, a 0..255 pixel value
            that invert/scale/mean/std then apply to like any pixel).
        interpolation: "linear", "area", "nearest" or "cubic" (OpenCV INTER_*).
        invert: pixels p -> 255 - p first (dark ink on light paper for models trained bright-on-dark).
        scale, mean, std: x = (p * scale - mean) / std; mean/std one value or one per channel in `color` order.
        frames: > 1 stacks the newest N frames (see FrameStack) on a new axis at `frame_axis`, counted in
            the model input with its batch axis (1 for N, T, C, H, W).
    """

    layout: str = "NHWC"
    color: str = "rgb"
    size: tuple[int, int] = (224, 224)
    resize: str = "stretch"
    interpolation: str = "linear"
    pad_value: int = 114
    invert: bool = False
    scale: float = 1 / 255
    mean: float | tuple[float, ...] = 0.0
    std: float | tuple[float, ...] = 1.0
    frames: int = 1
    frame_axis: int = 1

    def __post_init__(self) -> None:
        # Lists given in code would make the transform unhashable.
        for name in ("mean", "std"):
            if not np.isscalar(getattr(self, name)):
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "size", tuple(self.size))
        require(self.layout in ("NCHW", "NHWC", "NHW"), f"layout must be NCHW, NHWC or NHW, got {self.layout!r}")
        require(self.color in ("rgb", "bgr", "gray"), f"color must be rgb, bgr or gray, got {self.color!r}")
        require(self.layout != "NHW" or self.color == "gray", "layout NHW has no channel axis: color must be gray")
        require(len(self.size) == 2 and min(self.size) > 0, "size must be two positive integers (height, width)")
        require(self.resize in _RESIZE, f"resize must be one of {', '.join(_RESIZE)}, got {self.resize!r}")
        require(self.interpolation in _INTERPOLATION,
                f"interpolation must be one of {', '.join(_INTERPOLATION)}, got {self.interpolation!r}")
        require(0 <= self.pad_value <= 255, "pad_value must be in 0..255")
        require(math.isfinite(self.scale) and self.scale != 0, "scale must be finite and non-zero")
        for name in ("mean", "std"):
            values = np.atleast_1d(np.asarray(getattr(self, name), np.float64))
            require(values.size in (1, self.channels), f"{name} needs 1 or {self.channels} values, got {values.size}")
            require(bool(np.all(np.isfinite(values))), f"{name} must be finite")
        require(bool(np.all(np.asarray(self.std) > 0)), "std must be positive")
        require(self.frames >= 1, "frames must be >= 1")
        rank = len(self.frame_shape) + 1
        require(self.frames == 1 or 1 <= self.frame_axis <= rank,
                f"frame_axis must be in 1..{rank} (axis 0 is the batch)")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "image") -> "ImageTransform":
        """Builds a transform from a parsed mapping; unknown keys and mistyped values raise InputError."""
        return config.build(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """The fields as plain JSON/YAML values."""
        return config.to_dict(self)

    @property
    def channels(self) -> int:
        """1 for gray, 3 for rgb/bgr."""
        return 1 if self.color == "gray" else 3

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """The shape `apply` returns: HWC, CHW or HW."""
        h, w = self.size
        return {"NHWC": (h, w, self.channels), "NCHW": (self.channels, h, w), "NHW": (h, w)}[self.layout]

    @property
    def output_shape(self) -> tuple[int, ...]:
        """The model input shape without the batch axis (with the frame axis when frames > 1)."""
        shape = self.frame_shape
        if self.frames == 1:
            return shape
        return shape[: self.frame_axis - 1] + (self.frames,) + shape[self.frame_axis - 1 :]

    @functools.cached_property
    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        # ((255 - p if invert else p) * scale - mean) / std as p * a + b, per channel.
        std = np.asarray(self.std, np.float64)
        a = np.broadcast_to(self.scale / std * (-1.0 if self.invert else 1.0), (self.channels,))
        b = (255.0 * self.scale if self.invert else 0.0) - np.asarray(self.mean, np.float64)
        b = np.broadcast_to(b / std, (self.channels,))
        return a.astype(np.float32), b.astype(np.float32)

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """One uint8 camera frame, (H, W), (H, W, 1), (H, W, 3) BGR or (H, W, 4) BGRA, to `frame_shape` float32."""
        img = _checked(frame)
        if self.resize == "center-crop":
            img = _center_crop(img, self.size)
        code = _COLOR_CODES.get((self.color == "gray", img.shape[2] if img.ndim == 3 else 1))
        if code is not None:  # before resizing: the gray conversion rounds, and v1 converted first
            img = cv2.cvtColor(img, code)
        img = self._letterbox(img) if self.resize == "letterbox" else self._resized(img, self.size)
        if self.color != "gray" and img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if self.color == "rgb":
            img = img[..., ::-1]
        a, b = self._affine
        x = np.multiply(img, a if img.ndim == 3 else a[0], dtype=np.float32)
        x += b if img.ndim == 3 else b[0]
        if self.layout == "NCHW":
            return np.ascontiguousarray(x.transpose(2, 0, 1) if x.ndim == 3 else x[None])
        return x[..., None] if self.layout == "NHWC" and x.ndim == 2 else x

    def _resized(self, img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if img.shape[:2] == tuple(size):
            return img
        return cv2.resize(img, (size[1], size[0]), interpolation=_INTERPOLATION[self.interpolation])

    def _letterbox(self, img: np.ndarray) -> np.ndarray:
        (h, w), (height, width) = img.shape[:2], self.size
        ratio = min(width / w, height / h)
        new_h, new_w = min(height, max(1, round(h * ratio))), min(width, max(1, round(w * ratio)))
        out = np.full((height, width) + img.shape[2:], self.pad_value, np.uint8)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        out[top : top + new_h, left : left + new_w] = self._resized(img, (new_h, new_w))
        return out


# (to gray, input channels) -> the conversion to apply before resizing
_COLOR_CODES = {(True, 3): cv2.COLOR_BGR2GRAY, (True, 4): cv2.COLOR_BGRA2GRAY, (False, 4): cv2.COLOR_BGRA2BGR}


def _checked(frame: np.ndarray) -> np.ndarray:
    img = np.asarray(frame)
    if img.dtype != np.uint8:
        raise InputError(f"camera frames must be uint8, got {img.dtype}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))) or min(img.shape[:2]) == 0:
        raise InputError(f"camera frame must be (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got shape {img.shape}")
    return img


def _center_crop(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The largest centred region of img with the aspect ratio of size (a view)."""
    (h, w), (height, width) = img.shape[:2], size
    if w * height > h * width:  # wider than the target
        crop_h, crop_w = h, max(1, round(h * width / height))
    else:
        crop_h, crop_w = max(1, round(w * height / width)), w
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return img[top : top + crop_h, left : left + crop_w]


class FrameStack:
    """The newest `transform.frames` transformed frames, oldest first, stacked on the frame axis."""

    def __init__(self, transform: ImageTransform):
        self.transform = transform
        self._frames: collections.deque[np.ndarray] = collections.deque(maxlen=transform.frames)

    def push(self, x: np.ndarray) -> np.ndarray:
        """Adds one `apply` output; returns the model input (`output_shape`).

        Until `frames` frames were pushed, the oldest one stands in for the missing ones.
        """
        if x.shape != self.transform.frame_shape:
            raise InputError(f"FrameStack expects frames of shape {self.transform.frame_shape}, got {x.shape}")
        self._frames.append(x)
        if self.transform.frames == 1:
            return x
        frames = [self._frames[0]] * (self.transform.frames - len(self._frames)) + list(self._frames)
        return np.stack(frames, axis=self.transform.frame_axis - 1)

    def reset(self) -> None:
        """Forgets the frames seen (e.g. after the camera reopened)."""
        self._frames.clear()
