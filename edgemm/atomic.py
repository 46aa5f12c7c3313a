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


MAX_JSON_BYTES = 64 << 20  # manifests and bench reports; a manifest with a 2^20-value constant is ~20 MB
MAX_JSON_DEPTH = 64  # nested arrays/objects; the deepest edgemm writes is about 10


def read_json_object(path: str | os.PathLike, what: str, missing: str | None = None,
                     max_bytes: int = MAX_JSON_BYTES) -> dict:
    """Reads a user-given JSON file that must hold an object; anything else is a one-line InputError.

    `what` names the file in the messages ("manifest", "report"); `missing` replaces "no such <what>".
    The file is read up to `max_bytes` and nested at most MAX_JSON_DEPTH deep: json's parser recurses
    once per level, so 100000 '[' would end in a RecursionError.
    """
    path = Path(path)
    try:
        if path.exists() and not path.is_file():  # a device (/dev/zero) or a FIFO would never end
            raise InputError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            blob = f.read(max_bytes + 1)
        if len(blob) > max_bytes:
            raise InputError(f"{path}: too large for a {what} (more than {max_bytes} bytes)")
        data = json.loads(blob)  # bytes: UTF-8/16/32 detected as the JSON standard says
    except FileNotFoundError:
        raise InputError(f"{path}: {missing or f'no such {what}'}") from None
    except RecursionError:
        raise InputError(f"{path}: not a readable JSON {what} (nested deeper than {MAX_JSON_DEPTH} levels)") from None
    except (OSError, ValueError) as e:  # ValueError: bad JSON and undecodable bytes alike
        raise InputError(f"{path}: not a readable JSON {what} ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: {what} must be a JSON object")
    if _depth(data) > MAX_JSON_DEPTH:
        raise InputError(f"{path}: not a readable JSON {what} (nested deeper than {MAX_JSON_DEPTH} levels)")
    return data


def _depth(value: Any) -> int:
    """How deep lists and dicts nest in `value` (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


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
