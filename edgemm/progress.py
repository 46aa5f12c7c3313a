"""Progress of the long steps (validation, calibration, the per-layer report, bench configurations).

On a terminal each step gets a tqdm bar, with edgemm's lines printed above it; in a CI log (stderr not a
terminal) there is no bar: the step's own log line ("validating int8.tflite in litert on 900 held-out
samples") is its one line.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import click

Update = Callable[[int, int], None]  # (done, total) of the step under way


class Progress:
    """The CLI side: `line` prints one of edgemm's lines, `update(step, done, total)` moves the step's bar."""

    def __init__(self, err: bool = False, enabled: bool | None = None):
        self.err = err
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        self._step = None

    def line(self, text: str) -> None:
        if self._bar is not None:
            self._bar.clear()
        click.echo(text, err=self.err)
        if self._bar is not None:
            self._bar.refresh()

    def update(self, step: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        if step != self._step:
            self.close()
            self._bar = tqdm(total=total, desc=step, leave=False, file=sys.stderr, dynamic_ncols=True)
            self._step = step
        self._bar.total = total
        self._bar.update(done - self._bar.n)
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar = self._step = None


def throttled(send: Callable[[int, int], None], every_s: float = 0.25) -> Update:
    """`send` at most every `every_s` seconds, and always for the last item (a pipe is not flooded)."""
    last = [0.0]

    def update(done: int, total: int) -> None:
        now = time.monotonic()
        if done >= total or now - last[0] >= every_s:
            last[0] = now
            send(done, total)

    return update

