"""Every backend edgemm runs, in one place: its name, the artifact format it runs, the artifacts it
prefers (in order) and how it is opened. `edgemm run`, `edgemm bench`, the converter's validation
and the benchmark worker all open backends through :func:`open_backend`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

from edgemm.backends import Backend
from edgemm.errors import InputError

EDGETPU_LIBRARY = "libedgetpu.so.1"


@dataclasses.dataclass(frozen=True)
class BackendKind:
    name: str
    format: str  # "tflite" | "onnx"
    artifacts: tuple[str, ...]  # manifest artifacts it runs, preferred first
    open: Callable[..., Backend]  # (path, threads, options) -> Backend


def _litert(path, threads, options) -> Backend:
    from edgemm.backends.litert import LiteRTBackend

    return LiteRTBackend(path, threads=threads, delegate=options.get("delegate"), xnnpack=options.get("xnnpack", True))


def _edgetpu(path, threads, options) -> Backend:
    return _litert(path, threads, {"delegate": EDGETPU_LIBRARY, **options})


def _ort(provider: str) -> Callable[..., Backend]:
    def open_(path, threads, options) -> Backend:
        from edgemm.backends.onnxrt import OnnxRuntimeBackend

        providers = [(provider, options["provider_options"])] if options.get("provider_options") else [provider]
        return OnnxRuntimeBackend(path, providers=providers, threads=threads, optimize=options.get("optimize", True))

    return open_


KINDS = {k.name: k for k in (
    BackendKind("edgetpu", "tflite", ("int8_tflite",), _edgetpu),
    BackendKind("ort-tensorrt", "onnx", ("int8_onnx", "fp16_onnx", "float_onnx"), _ort("TensorrtExecutionProvider")),
    BackendKind("ort-cuda", "onnx", ("int8_onnx", "fp16_onnx", "float_onnx"), _ort("CUDAExecutionProvider")),
    BackendKind("litert", "tflite", ("int8_tflite", "float_tflite"), _litert),
    BackendKind("ort-cpu", "onnx", ("int8_onnx", "float_onnx"), _ort("CPUExecutionProvider")),
)}
AUTO_ORDER = ("edgetpu", "ort-tensorrt", "ort-cuda", "litert", "ort-cpu")
NAMES = tuple(KINDS)


def kind(name: str) -> BackendKind:
    if name not in KINDS:
        raise InputError(f"unknown backend {name!r}: choose one of {', '.join(('auto', *NAMES))}")
    return KINDS[name]


def for_format(fmt: str) -> tuple[str, ...]:
    """The backends that run artifacts of this format."""
    return tuple(k.name for k in KINDS.values() if k.format == fmt)


def tensorrt_options(precision: str, cache: Path, overrides: dict | None = None) -> dict:
    """TensorRT execution-provider options: int8 for int8/mixed artifacts, fp16 allowed, engine and timing
    caches in `cache` (edgemm.runtime.trt_cache keys it by model sha256, versions and device)."""
    options = {"trt_int8_enable": precision in ("int8", "mixed"), "trt_fp16_enable": True,
               "trt_engine_cache_enable": True, **(overrides or {}), "trt_engine_cache_path": str(cache),
               "trt_timing_cache_path": str(cache)}
    return {k: v for k, v in options.items() if v is not None}


def open_backend(name: str, path, threads: int | None = None, **options) -> Backend:
    """Opens `path` with backend `name` (see NAMES); options: delegate, xnnpack (LiteRT), provider_options,
    optimize (ONNX Runtime)."""
    return kind(name).open(path, threads, options)
