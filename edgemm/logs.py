"""Who writes to the terminal: edgemm's own lines by default, the libraries' logs only with -v/--verbose.

TensorFlow, absl, LiteRT and ONNX Runtime log from C++ straight to file descriptor 2 (`I0000 00:00...`,
`W0000 ...`, "INFO: Created TensorFlow Lite XNNPACK delegate"), ONNX Runtime's quantizer logs on the root
logger (`WARNING:root`), and TensorFlow, Keras and NumPy raise deprecation warnings. Only part of it obeys
TF_CPP_MIN_LOG_LEVEL, so the processes that load those libraries for convert and bench (the convert child,
bench workers) get their stdout and stderr sent to a file instead (`library_output`); edgemm's own lines
reach the terminal through the parent, which never imports them.

The switch is the environment variable EDGEMM_VERBOSE, which the CLI sets for -v, so that every process
edgemm starts follows it. EDGEMM_DEBUG=1 (tracebacks) implies it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

VERBOSE_ENV = "EDGEMM_VERBOSE"


def verbose() -> bool:
    return bool(os.environ.get(VERBOSE_ENV) or os.environ.get("EDGEMM_DEBUG"))


def set_verbose(on: bool) -> None:
    if on:
        os.environ[VERBOSE_ENV] = "1"


def library_output(path: Path):
    """Where a child process that loads TensorFlow / ONNX Runtime sends its stdout and stderr: the terminal
    when verbose (None: inherited), else a file at `path` (the caller closes it)."""
    if verbose():
        return None
    return open(path, "ab")


def quiet_env(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child that loads TensorFlow: its C++ log level lowered unless verbose (what obeys it is
    then not even formatted)."""
    if verbose():
        return env
    return {**env, "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "3")}



@contextlib.contextmanager
def native_stderr_quieted():
    """File descriptor 2 sent to /dev/null for the duration, unless verbose: for a library call that logs
    from C++ with no switch to stop it (LiteRT prints "INFO: Created TensorFlow Lite XNNPACK delegate for
    CPU." when it builds an interpreter, whatever TF_CPP_MIN_LOG_LEVEL says; ALSA and JACK print dozens of
    lines about absent sound cards while PortAudio probes devices). Python-level errors still surface as
    exceptions. The descriptor is the process's: keep the call short (lines other threads write to stderr
    meanwhile are lost too)."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 to save (a daemon): nothing to quiet
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
