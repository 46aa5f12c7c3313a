"""What `edgemm run` prints and records for each output head, per inference.

classify     a line when the smoothed decision changes (every inference with --every):
               "    1.23s       7  (0.91)   top: 7 0.91, 1 0.05, 9 0.02"
multilabel   a line when the set of labels over the threshold changes: "    1.23s  [speech 0.93, music 0.61]"
raw          one line per second (every inference with --every): "    1.23s  embedding [1, 128] min .. max .."
With several heads each line starts with the output's name. --json prints the same as JSON objects.
`--outputs FILE.jsonl` records every output tensor of every inference (one JSON line each).
"""

from __future__ import annotations

import json

import numpy as np

from edgemm.binding import Binding
from edgemm.runtime.postprocess import MultiLabel, Smoother, summarize


class Heads:
    def __init__(self, binding: Binding, options, emit, outputs_file=None):
        self.options, self.emit, self.outputs_file = options, emit, outputs_file
        self.readers = {}
        for name, out in binding.outputs.items():
            head = out.spec.head
            if head == "classify":
                self.readers[name] = Smoother(out.labels, options.smoothing, options.threshold, options.top_k,
                                              out.spec.activation)
            elif head == "multilabel":
                self.readers[name] = MultiLabel(out.labels, options.smoothing, out.spec.threshold, out.spec.activation)
            elif head == "raw":
                self.readers[name] = None
        self.named = len(self.readers) > 1
        self._last_raw_print = -1e9

    def update(self, outputs: dict[str, np.ndarray], media_t: float, rec: dict):
        """Reads every head, prints what changed, fills the stats record; returns the first decision (or None)."""
        first = None
        raw_due = self.options.every or media_t - self._last_raw_print >= 1.0
        for name, reader in self.readers.items():
            value = outputs[name]
            if isinstance(reader, Smoother):
                d = reader.update(value)
                first = first or d
                rec.setdefault("label", d.label)
                rec.setdefault("confidence", round(d.confidence, 4))
                if d.changed or self.options.every:
                    self._say(name, media_t, {"label": d.label, "confidence": round(d.confidence, 4), "top": d.top},
                              f"{d.label:>6}  ({d.confidence:.2f})   top: "
                              + ", ".join(f"{label} {p:.2f}" for label, p in d.top))
            elif isinstance(reader, MultiLabel):
                s = reader.update(value)
                rec.setdefault("labels", [label for label, _ in s.labels])
                if s.changed or self.options.every:
                    self._say(name, media_t, {"labels": s.labels},
                              "[" + ", ".join(f"{label} {p:.2f}" for label, p in s.labels) + "]")
            elif raw_due:
                info = summarize(value)
                self._say(name, media_t, info, f"{list(info['shape'])} " + " ".join(
                    f"{k} {v}" for k, v in info.items() if k not in ("shape", "size")))
        if raw_due and any(r is None for r in self.readers.values()):
            self._last_raw_print = media_t
        if self.outputs_file is not None:
            self._write_outputs(outputs, media_t, rec)
        return first

    def _say(self, name: str, media_t: float, data: dict, text: str) -> None:
        if self.options.json_lines:
            kind = "decision" if "label" in data or "labels" in data else "output"
            self.emit(json.dumps({"type": kind, "t": round(media_t, 3), **({"output": name} if self.named else {}),
                                  **data}))
        else:
            self.emit(f"{media_t:8.2f}s  " + (f"{name}: " if self.named else "") + text)

    def _write_outputs(self, outputs: dict[str, np.ndarray], media_t: float, rec: dict) -> None:
        line = {"t": round(media_t, 4), "seq": rec.get("seq"),
                "outputs": {k: np.asarray(v, np.float32).round(6).tolist() for k, v in outputs.items()}}
        self.outputs_file.write(json.dumps(line) + "\n")
        self.outputs_file.flush()

    def close(self) -> None:
        if self.outputs_file is not None:
            self.outputs_file.close()
            self.outputs_file = None
