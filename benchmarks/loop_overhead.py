"""The run loop's own cost per inference (everything outside the backend's invoke), on live sources, for
the example's teacher (v1 front end: gray NHWC image, TensorFlow-convention log-mel) and for a PyTorch-style
NCHW RGB model with ImageNet normalisation and a Slaney log-mel in dB with centred frames (tests/zoo.py).

    .venv/bin/python benchmarks/loop_overhead.py [--duration 30] [--threads 1] [--no-write]

Camera: MJPEG over HTTP on 127.0.0.1 at 30 fps; microphone: PyAudio `default` on the PulseAudio virtual
microphone with audio played into it; backend LiteRT, int8 TFLite. Both models run in this process, one
after the other, with the same sources.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loopback import MjpegServer, VirtualMic  # noqa: E402
from benchmarks.results_md import update_section  # noqa: E402
from edgemm.manifest import load_manifest  # noqa: E402
from edgemm.runtime import session  # noqa: E402
from edgemm.wav import write_wav  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/loop_overhead.py"


def _convert(model: Path, out: Path, calib: Path, val: Path) -> Path:
    subprocess.run([sys.executable, "-m", "edgemm", "convert", str(model), "--out", str(out), "--format", "tflite",
                    "--calib", str(calib), "--val", str(val)], cwd=ROOT, check=True, capture_output=True)
    return out


def teacher(tmp: Path) -> Path:
    from examples.av_digits.data import write_data

    files = write_data(tmp / "data", train_epochs=0, log=lambda s: None)
    return _convert(ROOT / "examples/av_digits/av_digits_teacher.keras", tmp / "teacher", files.calib, files.val)


def nchw_slaney(tmp: Path) -> Path:
    from tests import zoo

    z = zoo.MODELS["fused_nchw"]
    model = zoo.train(z, tmp / "fused_nchw.keras")
    calib, val = zoo.write_data(z, tmp)
    return _convert(model, tmp / "fused_nchw", calib, val)


def measure(model_dir: Path, camera_url: str, threads: int, duration: float) -> dict:
    summary = session.run_session(load_manifest(model_dir), camera=camera_url, mic="default", backend="litert",
                                  threads=threads, duration=duration, emit=lambda s: None, note=lambda s: None)
    return summary


def row(name: str, summary: dict) -> str:
    st = summary["stages_ms"]

    def p(stage: str, q: str = "p50") -> str:
        return f"{st[stage][q]:.3f}" if st.get(stage, {}).get("count") else "-"

    return (f"| {name} | {summary['inferences']} | **{p('outside_invoke')}** | {p('outside_invoke', 'p90')} | "
            f"{p('outside_invoke', 'p99')} | {p('audio_features')} | {p('postprocess')} | {p('image_pre')} | "
            f"{p('invoke')} | {summary['counters'].get('audio_overflows', 0)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--teacher", type=Path, default=None,
                        help="an edgemm convert output of the teacher to use instead of converting it")
    parser.add_argument("--only-teacher", action="store_true", help="skip the NCHW model (CI's short version)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if not VirtualMic.available:
        print("pulseaudio/paplay missing: run install.sh", file=sys.stderr)
        return 5
    with tempfile.TemporaryDirectory(prefix="edgemm-loop-") as tmp:
        tmp = Path(tmp)
        models = {"example teacher (gray NHWC 32x32, TF-convention log-mel 49x40x1)": args.teacher or teacher(tmp)}
        if not args.only_teacher:
            models["NCHW RGB 3x32x32 ImageNet norm + Slaney log-mel dB, centred (1x32x51)"] = nchw_slaney(tmp)
        from tests import zoo

        video, wav, _ = zoo.write_media(tmp, seconds_per_class=2.0)
        rate = 16000
        from edgemm.wav import read_wav

        audio, _ = read_wav(wav)
        write_wav(tmp / "long.wav", np.tile(audio, int(len(models) * (args.duration + 10) * rate // audio.size + 1)),
                  rate)
        camera = MjpegServer.from_video(video, fps=30.0, hold=3)
        mic = VirtualMic()
        results = {}
        try:
            player = mic.play(tmp / "long.wav")
            for name, model_dir in models.items():
                results[name] = measure(model_dir, camera.url, args.threads, args.duration)
            player.terminate()
        finally:
            camera.close()
            mic.close()
    lines = [
        "## `edgemm run` loop overhead per model (any model the spec describes)",
        "",
        f"Command: `{COMMAND} --duration {args.duration:g} --threads {args.threads}`. Live 30 fps MJPEG camera on "
        "127.0.0.1 + PulseAudio virtual microphone, LiteRT int8 TFLite, "
        f"{args.threads} thread, {args.duration:g} s per model. Milliseconds per inference; *outside invoke* is the "
        "loop's own work (audio features, feeds, heads, stats) with the audio wait excluded; the image transform "
        "runs in the capture thread (image_pre, not in the loop).",
        "",
        "| model | inferences | outside invoke p50 | p90 | p99 | audio features p50 | heads p50 | image_pre p50 | "
        "invoke p50 | audio overflows |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *[row(name, s) for name, s in results.items()],
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        update_section("loop_overhead", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
