"""The output directory of `edgemm convert` is one unit: it holds the previous good set of artifacts or the
new one, never a mix.

convert writes into a staging directory beside `--out` and swaps it in at the end with one atomic
rename(2)-family call; an interrupted or failed convert leaves the previous directory as it was and no
staging directory behind. A lock file beside `--out` refuses a second convert into the same directory
while one runs. Because the whole directory is replaced, convert refuses an `--out` that holds one of its
own inputs, or an existing non-empty directory that is not an edgemm output.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import shutil
import tempfile
from pathlib import Path

from edgemm.errors import InputError
from edgemm.manifest import MANIFEST_NAME, is_model_dir

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swaps two paths (Linux renameat2 RENAME_EXCHANGE); False where the kernel, libc or
    file system lacks it. Python's os module has no binding for it, hence ctypes."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except AttributeError:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _inside(path: Path, directory: Path) -> bool:
    return path.resolve() == directory or directory in path.resolve().parents


class OutputDir:
    """`with OutputDir(out, inputs) as staging: ...write into staging...; commit()`.

    inputs: every file the conversion reads (model, spec, data, code); none may live inside `out`.
    """

    def __init__(self, out: Path, inputs: list[Path | None]):
        self.out = Path(out)
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.staging: Path | None = None
        self._lock = None

    def __enter__(self) -> Path:
        out = self.out
        if out.exists() and not out.is_dir():
            raise InputError(f"--out {out}: exists and is not a directory")
        resolved = out.resolve()
        for path in self.inputs:
            if _inside(path, resolved):
                raise InputError(f"--out {out}: holds {path}, an input of this convert; convert replaces the "
                                 "whole directory: give another --out")
        if out.exists() and any(out.iterdir()) and not is_model_dir(out):
            raise InputError(f"--out {out}: a non-empty directory that is not an edgemm output (no "
                             f"{MANIFEST_NAME}); convert replaces the whole directory: give a new or empty one")
        out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(out.parent / f".{out.name}.edgemm-lock", "a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise InputError(f"--out {out}: another edgemm convert is writing it (lock "
                             f"{out.parent / f'.{out.name}.edgemm-lock'}); wait for it or use another --out") from None
        self.staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.staging-"))
        os.chmod(self.staging, 0o777 & ~_umask())  # mkdtemp's 0700 would make the shipped directory private
        return self.staging

    def commit(self) -> None:
        """Puts the staging directory in place of `out`; the previous one (if any) is removed afterwards."""
        if not self.out.exists():
            os.rename(self.staging, self.out)
        elif _exchange(self.staging, self.out):
            shutil.rmtree(self.staging, ignore_errors=True)  # now the previous directory
        else:  # two renames: an interruption between them leaves the previous directory under .old-*
            old = Path(tempfile.mkdtemp(dir=self.out.parent, prefix=f".{self.out.name}.old-"))
            os.rename(self.out, old / "previous")
            os.rename(self.staging, self.out)
            shutil.rmtree(old, ignore_errors=True)
        self.staging = None

    def __exit__(self, *exc) -> None:
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()  # releases the flock


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
