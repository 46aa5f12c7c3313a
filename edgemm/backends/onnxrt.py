"""ONNX Runtime backend: CPU, CUDA or TensorRT execution providers."""

from __future__ import annotations

import contextlib
import io
import os
import time
from pathlib import Path

import numpy as np

from edgemm import logs
from edgemm.backends import Backend, TensorInfo, require
from edgemm.errors import DependencyError, InputError

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32"}


def _info(node) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else -1 for d in node.shape)
    return TensorInfo(name=node.name, shape=shape, dtype=_ORT_TYPES.get(node.type, node.type))


def available_providers() -> list[str]:
    """ONNX Runtime's execution providers in this install ([] without ONNX Runtime)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


class OnnxRuntimeBackend(Backend):
    """Runs a .onnx file in ONNX Runtime, batch 1.

    Args:
        path: the .onnx file.
        providers: execution providers in order of preference, as names or (name, options) pairs
            (default: CPUExecutionProvider).
        threads: intra-op threads (None: ORT's default).
        optimize: False disables graph optimisations: a QDQ model then runs as float
            "fake quantization", the reference against which the int8 kernels are checked.
    """

    def __init__(self, path, providers=None, threads: int | None = None, optimize: bool = True):
        ort = require("onnxruntime", "pip install onnxruntime (onnxruntime-gpu on Jetson)")
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such ONNX model")
        providers = list(providers or ["CPUExecutionProvider"])
        available = set(ort.get_available_providers())
        missing = [p if isinstance(p, str) else p[0] for p in providers]
        missing = [p for p in missing if p not in available]
        if missing:
            raise DependencyError(
                f"ONNX Runtime here lacks {', '.join(missing)} (available: {', '.join(sorted(available))})"
            )
        options = ort.SessionOptions()
        if not logs.verbose():
            options.log_severity_level = 3  # errors only: its warnings are not edgemm's lines (-v shows them)
        if threads:
            options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        if not optimize:
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            # on a failed load ORT prints an "EP Error ... retrying" banner to stdout; the error below says it once
            with contextlib.redirect_stdout(io.StringIO()):
                self._session = ort.InferenceSession(os.fspath(path), options, providers=providers)
        except Exception as e:  # ORT raises its own exception types (Fail, InvalidGraph, ...)
            raise InputError(f"{path}: ONNX Runtime cannot load this model ({str(e).splitlines()[0]})") from None
        self.name = "onnxruntime:" + ",".join(self._session.get_providers())
        self.inputs = tuple(_info(n) for n in self._session.get_inputs())
        self.outputs = tuple(_info(n) for n in self._session.get_outputs())
        self._output_names = [t.name for t in self.outputs]

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        prepared = {info.name: np.asarray(feeds[info.name], dtype=info.dtype) for info in self.inputs}
        start = time.perf_counter()
        values = self._session.run(self._output_names, prepared)
        self.last_invoke_s = time.perf_counter() - start
        return {name: np.asarray(v, np.float32) for name, v in zip(self._output_names, values)}
