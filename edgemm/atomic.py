"""Files: written atomically (a reader sees the old file or the new one, never half of one), read with
one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgemm.errors import InputError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path beside `target`; renames it over `target` on success.

    On any error the temporary file is removed and `target` is left untouched.
    """
    target = Path(target)
    suffix = "".join(target.suffixes) or ".tmp"  # some writers (Keras) insist on the extension
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would make shipped files private
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(target: str | os.PathLike, data: Any) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json_object(path: str | os.PathLike, what: str, missing: str | None = None) -> dict:
    """Reads a user-given JSON file that must hold an object; anything else is a one-line InputError.

    `what` names the file in the messages ("manifest", "report"); `missing` replaces "no such <what>".
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: {missing or f'no such {what}'}") from None
    except (OSError, ValueError) as e:  # ValueError: bad JSON and undecodable bytes alike
        raise InputError(f"{path}: not a readable JSON {what} ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a JSON object")
    return data


def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Says in one line why `path` (given by `option`) cannot become an output directory; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"{option} {path}: exists and is not a directory")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise InputError(f"{option} {path}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{option} {path}: {existing} is not writable")
    return path
