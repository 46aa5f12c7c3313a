"""TensorRT engine cache directories keyed so that a stale engine is never reused.

An engine is only valid for one model, one TensorRT version, one ONNX Runtime version (its
TensorRT execution provider writes the cache) and one GPU. The key is built from all four:
    <base>/<artifact sha256[:16]>-ort<version>-trt<version>-<device>/
"""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

from edgemm.profiles import find_library


def tensorrt_version() -> str:
    try:
        import tensorrt

        return str(tensorrt.__version__)
    except ImportError:
        pass
    lib = find_library("libnvinfer.so")
    if lib:
        try:
            v = int(ctypes.CDLL(lib).getInferLibVersion())  # e.g. 8601 (8.6.1) or 100300 (10.3.0)
            major = v // 10000 if v >= 100000 else v // 1000
            rest = v - major * (10000 if v >= 100000 else 1000)
            minor, patch = (rest // 100, rest % 100) if v >= 100000 else (rest // 100, rest % 100)
            return f"{major}.{minor}.{patch}"
        except (OSError, AttributeError):
            pass
    return "none"


def device_name() -> str:
    model = Path("/proc/device-tree/model")
    if model.is_file():  # Jetson / Arm boards
        return model.read_text(errors="replace").strip("\x00 \n")
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown-device"


def cache_key(artifact_sha256: str, ort_version: str, trt_version: str, device: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", device).strip("-").lower() or "device"
    return f"{artifact_sha256[:16]}-ort{ort_version}-trt{trt_version}-{slug}"


def engine_cache_dir(base: Path, artifact_sha256: str) -> Path:
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "none"
    return Path(base) / cache_key(artifact_sha256, ort_version, tensorrt_version(), device_name())


def has_engine(directory: Path) -> bool:
    return Path(directory).is_dir() and any(Path(directory).glob("*.engine"))
