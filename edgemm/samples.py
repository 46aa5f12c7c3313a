"""Sample files: .npz with one array per model input, keyed by the input's name (first axis = samples),
and an optional `label` array of class indices. Read by convert (--calib, --val, --train) and bench (--val)."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from edgemm import limits
from edgemm.errors import InputError

_NUMERIC = "biuf"  # bool, signed, unsigned, float


def _check_headers(path: Path, what: str) -> None:
    """Reads every member's .npy header (not its data): numeric arrays of at least one axis, whose declared
    sizes together fit the memory budget. A few-MB compressed .npz can declare gigabytes."""
    total = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            with archive.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                else:  # 3.0 exists only for structured dtypes with non-latin-1 field names
                    raise ValueError(f"'{info.filename[:60]}' is not a plain numeric array (.npy {version})")
            name = info.filename.removesuffix(".npy")[:60]
            if dtype.kind not in _NUMERIC or dtype.fields is not None:
                raise InputError(f"{path}: '{name}' is not numeric ({str(dtype)[:40]}); {what} arrays hold numbers")
            if len(shape) == 0:
                raise InputError(f"{path}: '{name}' is a 0-d scalar; {what} arrays have a first axis of samples")
            total += math.prod(shape) * dtype.itemsize
    limits.check_bytes(total, f"{path}: its arrays")


def check_npz(path: Path, what: str = "calibration") -> None:
    """Refuses a file read_npz would refuse for its headers alone (missing, not an .npz, a 0-d, string or
    oversized array), without reading any data: a fraction of a second, before any heavy work."""
    read_npz(path, what, headers_only=True)


def read_npz(path: Path, what: str = "calibration",
             headers_only: bool = False) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(arrays by name, labels or None); never unpickles (allow_pickle=False)."""
    path = Path(path)
    try:
        _check_headers(path, what)
        if headers_only:
            return {}, None
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a {what} .npz file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz of arrays ({str(e)[:200]})") from None
    labels = arrays.pop("label", None)
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
    return arrays, labels


def sample(arrays: dict[str, np.ndarray], i: int, ranks: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Sample i of every stacked input (first axis = samples), with a batch axis of 1 where the model's input
    has one: its rank (`ranks`, by input name) equals the stacked array's. A recurrent state of shape
    (2, 1, 128) has none. Used by calibration, validation and bench alike."""
    ranks = ranks or {}
    return {name: a[i : i + 1] if ranks.get(name, a.ndim) == a.ndim else a[i] for name, a in arrays.items()}


def model_ranks(tensors) -> dict[str, int]:
    """Each model input's rank, by name, from a backend's (or session's) input tensors."""
    return {t.name: len(t.shape) for t in tensors}
