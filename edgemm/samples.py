"""Sample files: .npz with one array per model input, keyed by the input's name (first axis = samples),
and an optional `label` array of class indices. Read by convert (--calib, --val, --train) and bench (--val)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edgemm.errors import InputError


def read_npz(path: Path, what: str = "calibration") -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """(arrays by name, labels or None); never unpickles (allow_pickle=False)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise InputError(f"{path}: not a readable .npz of arrays ({e})") from None
    labels = arrays.pop("label", None)
    if labels is not None:
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
    return arrays, labels
