"""How much memory one declared size may claim before edgemm allocates it.

Files state their sizes before their data (.npz/.npy headers, ONNX tensor shapes, WAV headers), and a
hostile or broken file can state anything. Every such size is checked against this budget first, so that
a bad file becomes a one-line error instead of a MemoryError or a kill by the kernel's OOM killer.
"""

from __future__ import annotations

import os
import resource

from edgemm.errors import InputError

# One declared array may take at most this share of the memory the process may use.
SHARE = 4


def memory_bytes() -> int:
    """Physical memory, or the process's address-space limit (ulimit -v) where that is lower."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    return physical if soft == resource.RLIM_INFINITY else min(physical, soft)


def budget_bytes() -> int:
    return memory_bytes() // SHARE


def check_bytes(nbytes: int, what: str) -> None:
    """Raises InputError when `what` would need more than the budget."""
    budget = budget_bytes()
    if nbytes > budget:
        raise InputError(f"{what} would need {_gb(nbytes)}, more than edgemm lets one file or tensor take "
                         f"({_gb(budget)}: a quarter of this machine's memory)")


def _gb(n: int) -> str:
    return f"{n / 1e9:.3g} GB" if n >= 1e8 else f"{n / 1e6:.3g} MB"
