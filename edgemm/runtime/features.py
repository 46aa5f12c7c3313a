"""Audio features computed incrementally: only the hops that are new since the last inference.

The model's window is snapped to the hop grid of the stream (window end = a multiple of the
hop), so consecutive windows share frames; each frame's log-mel row is computed once and
cached by its absolute start index. The result equals `preprocess.audio_features` on the same
samples (a test checks it).
"""

from __future__ import annotations

import numpy as np

from edgemm import preprocess
from edgemm.runtime.ring import AudioRing


class IncrementalLogMel:
    def __init__(self, spec: preprocess.AudioSpec):
        self.spec = spec
        self._rows: dict[int, np.ndarray] = {}  # frame start index / hop -> normalised log-mel row
        self.computed = 0  # frames computed (for statistics)

    def snap(self, index: float) -> int:
        """The last hop-grid position at or before `index`."""
        hop = self.spec.frame_step
        return int(np.floor(index / hop)) * hop

    def features(self, ring: AudioRing, end: int) -> np.ndarray:
        """The model input (frames, mels, 1) for the window of the stream that ends at sample `end`."""
        spec, hop = self.spec, self.spec.frame_step
        if end % hop:
            raise ValueError("window end must be on the hop grid (use snap())")
        start = end - spec.window_samples
        first = start // hop
        keys = [first + i for i in range(spec.num_frames)]
        missing = [k for k in keys if k not in self._rows]
        if missing:
            lo, hi = missing[0] * hop, missing[-1] * hop + spec.frame_length
            samples = ring.read(lo, hi)
            rows = preprocess.log_mel(samples, spec)
            for i, k in enumerate(range(missing[0], missing[-1] + 1)):
                self._rows[k] = rows[i]
            self.computed += len(rows)
        for k in [k for k in self._rows if k < first]:
            del self._rows[k]
        return np.stack([self._rows[k] for k in keys])[..., None]
