"""Runs the conversion in a child process, so that a converter or runtime that crashes on the user's model
or data (TFLite's quantizer segfaults on calibration values near float32's limit, for one) becomes one
`Error:` line instead of taking `edgemm convert` down with it.

The parent sends a JSON job; the child runs every step (load, calibrate, quantize, export, validate) and
reports on a pipe, one JSON object per line: {"log": line}, {"progress": [step, done, total]}, then {"report": {...}} or
{"error": class name, "message": ...}. The child runs in its own session, so the parent can stop it and
every process it started (onnx2tf, tf2onnx, validation runners) at once, and with TMPDIR inside the
parent's work directory, so nothing a library leaves in /tmp survives a crash.

    python -m converters.child JOB.json FD
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Callable

from edgemm import errors, logs
from edgemm.errors import EdgemmError, InputError

_PATH_FIELDS = ("calib", "val", "train", "spec", "custom_code", "student")


def _options_json(options) -> dict:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(options).items()}


def _options(data: dict):
    from converters.convert import ConvertOptions

    fixed = {k: (Path(v) if k in _PATH_FIELDS and v is not None else tuple(v) if isinstance(v, list) else v)
             for k, v in data.items()}
    return ConvertOptions(**fixed)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code).name
    except ValueError:
        return f"signal {code}"


def run_in_child(model: Path, out: Path, staging: Path, work: Path, options, log: Callable[[str], None],
                 progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Runs `_Run(model, staging, options)` in a child; returns its report or raises its EdgemmError.

    Messages name `out`, where the files will be, not the staging directory they are written to.
    """
    def shown(text: str) -> str:
        for path in (staging.resolve(), staging):
            text = text.replace(os.fspath(path), os.fspath(out))
        return text

    job = work / "job.json"
    (work / "tmp").mkdir(exist_ok=True)
    job.write_text(json.dumps({"model": os.fspath(model), "out": os.fspath(staging), "work": os.fspath(work),
                               "options": _options_json(options)}))
    read_fd, write_fd = os.pipe()
    # TF_ENABLE_ONEDNN_OPTS=0: TensorFlow 2.21's oneDNN kernels segfault on the weight gradient of a 1x1
    # stride-2 Conv2D over an even-sized input (a ResNet shortcut) on AVX-512 CPUs, which kills fine-tuning,
    # --prune and --distill (a segfault, not an error); Eigen's kernels do not, and converted the real zoo models
    # as fast (49.5 s vs 48.8 s end to end). A value the user sets is kept.
    env = logs.quiet_env({"TF_ENABLE_ONEDNN_OPTS": "0", **os.environ, "TMPDIR": os.fspath(work / "tmp")})
    libraries = logs.library_output(work / "libraries.log")  # TensorFlow's C++ logs and the like, unless -v
    try:
        proc = subprocess.Popen([sys.executable, "-m", "converters.child", os.fspath(job), str(write_fd)],
                                pass_fds=(write_fd,), start_new_session=True, env=env, stdout=libraries,
                                stderr=libraries)
    finally:
        os.close(write_fd)
        if libraries is not None:
            libraries.close()
    result, last = None, "starting"
    try:
        with os.fdopen(read_fd) as channel:
            for line in channel:
                message = json.loads(line)
                if "log" in message:
                    last = shown(message["log"]).strip()
                    log(shown(message["log"]))
                elif "progress" in message:
                    if progress is not None:
                        progress(*message["progress"])
                else:
                    result = message
        code = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C, SIGTERM, an error here): stop the child's whole session
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if result is not None and "report" in result:
        return result["report"]
    if result is not None and "error" in result:
        cls = getattr(errors, result["error"], None)
        cls = cls if isinstance(cls, type) and issubclass(cls, EdgemmError) else InputError
        raise cls(shown(result["message"]))
    why = (f"killed by {_signal_name(-code)}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
           if code < 0 else f"exit status {code}")
    hint = "" if logs.verbose() else " (--verbose shows the libraries' own log)"
    raise InputError(f"{model}: convert crashed ({why}) after: {last[:200]}; nothing was written to the output"
                     + hint)


def _main(job_path: str, fd: int) -> int:
    job = json.loads(Path(job_path).read_text())
    channel = os.fdopen(fd, "w", buffering=1)

    def send(**message) -> None:
        channel.write(json.dumps(message) + "\n")

    try:
        from converters.convert import _Run

        run = _Run(Path(job["model"]), Path(job["out"]), _options(job["options"]), lambda line: send(log=line),
                   work=Path(job["work"]), progress=lambda step, done, total: send(progress=[step, done, total]))
        send(report=run.steps())
    except EdgemmError as e:
        message = str(e)
        named = message.split(": ", 1)[0]
        if not (os.path.isabs(named) or Path(named).exists()):  # say which model ("TFLite conversion failed: ...")
            message = f"{job['model']}: {message}"
        send(error=type(e).__name__, message=message)
    except Exception as e:  # a converter's own exception on this model: one line; the trace with EDGEMM_DEBUG=1
        if os.environ.get("EDGEMM_DEBUG"):
            traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:300]
        send(error="InputError", message=f"{job['model']}: conversion failed ({type(e).__name__}: {first})")
    channel.close()
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], int(sys.argv[2])))
