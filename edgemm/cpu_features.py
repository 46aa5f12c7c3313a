"""What this CPU offers for int8 inference (read from /proc/cpuinfo, no dependencies)."""

from __future__ import annotations

import platform
from pathlib import Path

INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_int8_dot_product() -> bool:
    """True when the CPU has int8 dot-product instructions (VNNI on x86, SDOT on Arm).

    Without them, ONNX Runtime's x86 int8 kernels multiply u8 x s8 pairs with
    16-bit saturating adds (vpmaddubsw), which can overflow with full-range 8-bit
    weights: the reason for `reduce_range` (7-bit weights) on such CPUs.
    """
    flags = cpu_flags()
    return any(f in flags for f in INT8_DOT_FLAGS)
