"""LiteRT (TensorFlow Lite) backend: CPU with XNNPACK, or a delegate such as the Edge TPU."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import numpy as np

from edgemm import logs
from edgemm.backends import Backend, TensorInfo, require
from edgemm.errors import DependencyError, InputError

_SERVING_NAME = re.compile(r"^(?:serving_default_)?(.+?)(?::\d+)?$")


def check_flatbuffer(path: Path) -> None:
    """Refuses files that are not TFLite flatbuffers before the interpreter sees them (a malformed
    flatbuffer can crash the interpreter outright): size, root offset and the "TFL3" identifier."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
    if size < 16 or head[4:8] != b"TFL3":
        raise InputError(f"{path}: not a TFLite model (no TFL3 flatbuffer identifier)")
    root = int.from_bytes(head[:4], "little")
    if root < 8 or root >= size:
        raise InputError(f"{path}: truncated or corrupt TFLite flatbuffer (root offset {root}, file size {size})")


_FAILED_NODE = re.compile(r"Node number (\d+) \((\w+)\) failed to invoke")


class InvokeError(RuntimeError):
    """LiteRT could not run the model: the one-line message of invoke_error, with the op that failed by its
    first output tensor's name (`op`, as the converter's denylist takes ops) and its type (`op_type`), None
    where LiteRT did not say."""

    def __init__(self, message: str, op: str | None = None, op_type: str | None = None):
        super().__init__(message)
        self.op, self.op_type = op, op_type


def invoke_error(interpreter, error: Exception) -> InvokeError:
    """LiteRT's invoke error as one line that names the op it could not run by its output tensor (as the
    converter's reports name ops), and says why where the kernel's check is known: int8 DIV refuses a
    divisor that quantized to its zero point (0), which happens to any divisor below half its int8 step."""
    text = " ".join(str(error).split())
    match = _FAILED_NODE.search(text)
    if match is None:
        return InvokeError(f"LiteRT could not run the model ({text[:300]})")
    node, op_type = int(match.group(1)), match.group(2)
    kernel = text[: match.start()].strip().rstrip(".") or "no reason given"
    try:  # LiteRT's op table: private, but the only way from a node number to its tensors
        op = next(o for o in interpreter._get_ops_details() if o["index"] == node)
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    except (AttributeError, StopIteration, ValueError):
        return InvokeError(f"LiteRT could not run op {op_type} (node {node}): {kernel}", op_type=op_type)
    name = tensors[int(op["outputs"][0])]["name"] if len(op["outputs"]) else None
    line = f"LiteRT could not run op {op_type} {name or f'node {node}'!r} (node {node}): {kernel}"
    if op_type == "DIV" and "zero_point" in kernel and len(op["inputs"]) == 2:
        divisor = tensors[int(op["inputs"][1])]
        scale, zero_point = divisor["quantization"]
        line += (f"; its divisor {divisor['name']!r} quantized to its zero point ({zero_point}), i.e. 0: with an "
                 f"int8 step of {scale:.3g}, divisor values below {scale / 2:.3g} become 0 and int8 DIV refuses to "
                 "divide by 0 (floor the divisor in the model above that, or keep the division out of int8)")
    return InvokeError(line, name, op_type)


def _info(name: str, detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorInfo(
        name=name,
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


class LiteRTBackend(Backend):
    """Runs a .tflite file in ai-edge-litert, batch 1, via set_tensor/invoke/get_tensor.

    Args:
        path: the .tflite file.
        threads: CPU threads (None: LiteRT's default).
        delegate: path or name of a delegate library (e.g. "libedgetpu.so.1"), or None.
        xnnpack: apply LiteRT's default XNNPACK delegate on the CPU.
    """

    def __init__(self, path, threads: int | None = None, delegate: str | None = None, xnnpack: bool = True):
        interpreter_mod = require("ai_edge_litert.interpreter", "pip install ai-edge-litert")
        path = Path(path)
        if not path.is_file():
            raise InputError(f"{path}: no such TFLite model")
        check_flatbuffer(path)
        self.name = "litert" + (f"+{Path(delegate).name}" if delegate else "")
        delegates = []
        if delegate:
            try:
                delegates.append(interpreter_mod.load_delegate(delegate))
            except (ValueError, OSError, RuntimeError) as e:
                raise DependencyError(f"cannot load delegate {delegate} ({e})") from None
        resolver = (
            interpreter_mod.OpResolverType.AUTO
            if xnnpack
            else interpreter_mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        try:
            with logs.native_stderr_quieted():  # LiteRT's "INFO: Created ... XNNPACK delegate" line
                self._interp = interpreter_mod.Interpreter(
                    model_path=os.fspath(path),
                    num_threads=threads,
                    experimental_delegates=delegates or None,
                    experimental_op_resolver_type=resolver,
                )
                self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise InputError(f"{path}: LiteRT cannot load this model ({str(e).splitlines()[0]})") from None
        self._in, self._out = self._tensor_map()
        self.inputs = tuple(info for info, _ in self._in.values())
        self.outputs = tuple(info for info, _ in self._out.values())

    def _tensor_map(self):
        """Logical names from the model's signature (fallback: tensor names)."""
        signatures = self._interp.get_signature_list()
        if len(signatures) == 1:
            runner = self._interp.get_signature_runner(next(iter(signatures)))
            ins = {n: (_info(n, d), d["index"]) for n, d in sorted(runner.get_input_details().items())}
            outs = {n: (_info(n, d), d["index"]) for n, d in sorted(runner.get_output_details().items())}
            return ins, outs

        def by_name(details):
            return {
                (n := _SERVING_NAME.match(d["name"]).group(1)): (_info(n, d), d["index"]) for d in details
            }

        return by_name(self._interp.get_input_details()), by_name(self._interp.get_output_details())

    def tensor_names(self) -> tuple[dict[str, str], dict[str, str]]:
        """{logical name: tensor name in the flatbuffer} for the inputs and the outputs."""
        names = {d["index"]: d["name"] for d in self._interp.get_tensor_details()}
        return ({n: names[i] for n, (_, i) in self._in.items()}, {n: names[i] for n, (_, i) in self._out.items()})

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        for name, (info, index) in self._in.items():
            self._interp.set_tensor(index, info.quantize(feeds[name]))
        start = time.perf_counter()
        try:
            self._interp.invoke()
        except RuntimeError as e:
            raise invoke_error(self._interp, e) from None
        self.last_invoke_s = time.perf_counter() - start
        return {name: info.dequantize(self._interp.get_tensor(index)) for name, (info, index) in self._out.items()}
