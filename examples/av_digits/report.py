"""What the example's `eval` and `demo` commands print: the teacher judged on real inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from edgemm.transforms import v1 as preprocess
from edgemm.errors import InputError
from edgemm.wav import read_wav
from examples.av_digits import dataset, teacher_files
from examples.av_digits.demo_media import DemoMedia, load_truth
from examples.av_digits.evaluate import evaluate_teacher


def evaluate_on_test_set(model_path: Path | None, data_dir: Path | None) -> dict:
    """Accuracies of a teacher on the AV-digits test split, plus a printable table."""
    model_path = Path(model_path or teacher_files.TEACHER_MODEL)
    spec, sidecar = teacher_files.load_sidecar(model_path)
    model = teacher_files.load_teacher(model_path)
    test = dataset.make_split(dataset.resolve_data_dir(data_dir), "test", spec)
    metrics = evaluate_teacher(model, test, dataset.blank_inputs(spec))
    rows = [
        ("image only (audio blanked)", metrics["image_only_accuracy"]),
        ("audio only (image blanked)", metrics["audio_only_accuracy"]),
    ]
    recorded = sidecar.get("metrics", {})
    for kind in ("image", "audio"):  # dedicated one-modality models, measured when the teacher was trained
        if f"{kind}_baseline_accuracy" in recorded:
            rows.append((f"{kind}-only model (at training)", float(recorded[f"{kind}_baseline_accuracy"])))
    best_single = max(acc for _, acc in rows)
    gain = round(100.0 * (metrics["fused_accuracy"] - best_single), 2)
    rows.append(("fused", metrics["fused_accuracy"]))
    table = [f"AV-digits test set: {metrics['test_samples']} pairs, model {model_path.name} "
             f"({model.count_params()} parameters)"]
    table += [f"  {name:<30} {100 * acc:6.2f} %" for name, acc in rows]
    table.append(f"  fusion gain over the best single modality: {gain:+.2f} points")
    return dict(metrics, model=str(model_path), parameters=int(model.count_params()),
                fusion_gain_points=gain, table="\n".join(table))


def _frames_at(video: Path, indices: list[int]) -> list[np.ndarray]:
    import cv2

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise InputError(f"{video}: OpenCV cannot open this video")
    wanted, frames, index = set(indices), {}, 0
    try:
        while len(frames) < len(wanted):
            ok, frame = capture.read()
            if not ok:
                break
            if index in wanted:
                frames[index] = frame
            index += 1
    finally:
        capture.release()
    missing = sorted(wanted - set(frames))
    if missing:
        raise InputError(f"{video}: ends before frame {missing[0]}")
    return [frames[i] for i in indices]


def decide_on_media(media: DemoMedia, model_path: Path | None) -> Iterator[str]:
    """One decision per demo segment: the segment's last frame and the audio window ending with it."""
    import cv2

    model_path = Path(model_path or teacher_files.TEACHER_MODEL)
    spec, sidecar = teacher_files.load_sidecar(model_path)
    model = teacher_files.load_teacher(model_path)
    segments = load_truth(media.truth)
    samples, rate = read_wav(media.audio)
    fps = cv2.VideoCapture(str(media.video)).get(cv2.CAP_PROP_FPS) or 0.0
    if fps <= 0:
        raise InputError(f"{media.video}: no frame rate")
    ends = [float(s["end"]) for s in segments]
    frames = _frames_at(media.video, [int(round(end * fps)) - 1 for end in ends])
    image = np.stack([preprocess.preprocess_image(f, spec.image) for f in frames])
    audio = np.stack(
        [preprocess.audio_features(samples[: int(round(end * rate))], rate, spec.audio) for end in ends]
    )
    blanks = dataset.blank_inputs(spec)
    n = len(segments)
    fused = model.predict({"image": image, "audio": audio}, verbose=0)
    image_only = model.predict({"image": image, "audio": np.repeat(blanks["audio"][None], n, 0)}, verbose=0)
    audio_only = model.predict({"image": np.repeat(blanks["image"][None], n, 0), "audio": audio}, verbose=0)
    labels = sidecar.get("labels", dataset.LABELS)
    yield f"demo: {media.video.name} + {media.audio.name}, {n} segments, model {model_path.name}"
    yield "  time    decision  conf   image-only  audio-only  truth"
    truth = np.array([int(s["digit"]) for s in segments])
    for i in range(n):
        top = int(np.argmax(fused[i]))
        yield (f"  {ends[i]:5.2f}s  {labels[top]:>8}  {fused[i][top]:.2f}   {labels[int(np.argmax(image_only[i]))]:>10}"
               f"  {labels[int(np.argmax(audio_only[i]))]:>10}  {truth[i]:>5}  {'ok' if top == truth[i] else 'WRONG'}")
    score = {name: int(np.sum(np.argmax(p, axis=1) == truth)) for name, p in
             (("fused", fused), ("image-only", image_only), ("audio-only", audio_only))}
    yield "correct: " + ", ".join(f"{name} {count}/{n}" for name, count in score.items())
