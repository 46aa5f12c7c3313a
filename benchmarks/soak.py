"""Soak: `edgemm run` at full rate from loopback sources for a long time -> benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/soak.py --model DIR [--duration 600] [--no-write]

Live 30 fps MJPEG camera on 127.0.0.1 + the PulseAudio virtual microphone (speech looping). Checks:
peak RSS growth after the first minute (warm-up) under 5 %, p99 loop latency of the last minute
within 20 % of the first minute's, and stats records == inferences (nothing lost).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loopback import MjpegServer, VirtualMic  # noqa: E402
from benchmarks.results_md import update_section  # noqa: E402
from edgemm.manifest import load_manifest  # noqa: E402
from edgemm.runtime import session  # noqa: E402
from edgemm.runtime.stats import read_stats  # noqa: E402
from edgemm.wav import read_wav, write_wav  # noqa: E402
from examples.av_digits import demo_media  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/soak.py --model DIR"


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--duration", type=float, default=600.0)
    parser.add_argument("--window", type=float, default=60.0, help="seconds compared at the start and the end")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    window = min(args.window, args.duration / 3)
    with tempfile.TemporaryDirectory(prefix="edgemm-soak-") as tmp:
        tmp = Path(tmp)
        media = demo_media.render(tmp / "media")
        speech, rate = read_wav(media.audio)
        write_wav(tmp / "long.wav", np.tile(speech, int(np.ceil((args.duration + 30) * rate / speech.size))), rate)
        camera, mic = MjpegServer.from_video(media.video, fps=30.0, hold=2), VirtualMic()
        samples, stop = [], threading.Event()

        def sample_rss():
            start = time.monotonic()
            while not stop.wait(1.0):
                samples.append((time.monotonic() - start, rss_mb()))

        threading.Thread(target=sample_rss, daemon=True).start()
        stats = tmp / "soak.jsonl"
        try:
            player = mic.play(tmp / "long.wav")
            summary = session.run_session(load_manifest(args.model), camera=camera.url, mic="default", backend="litert",
                                          threads=1, duration=args.duration, stats=stats, emit=lambda s: None,
                                          note=lambda s: None)
            player.terminate()
        finally:
            stop.set()
            camera.close()
            mic.close()
        records, written = read_stats(stats)
    t_rel = np.array([r["t"] for r in records]) - records[0]["t"]
    work = np.array([r["loop"] - (r.get("audio_wait") or 0) for r in records])
    outside = np.array([r["outside_invoke"] for r in records])
    minute = (t_rel // window).astype(int)
    windows = range(max(1, int(args.duration // window)))  # whole windows only: the run ends mid-window
    p99_work = [float(np.percentile(work[minute == m], 99)) for m in windows if np.any(minute == m)]
    p99_outside = [float(np.percentile(outside[minute == m], 99)) for m in windows if np.any(minute == m)]
    first_mask, last_mask = t_rel <= window, t_rel >= args.duration - window
    p99_first, p99_last = float(np.percentile(work[first_mask], 99)), float(np.percentile(work[last_mask], 99))
    out_first, out_last = float(np.percentile(outside[first_mask], 99)), float(np.percentile(outside[last_mask], 99))
    after_warmup = [m for t, m in samples if t >= window]
    growth = (max(after_warmup) - after_warmup[0]) / after_warmup[0] if after_warmup else float("nan")
    c = summary["counters"]
    lines = [
        "## Soak: `edgemm run` at full rate from loopback sources",
        "",
        f"Command: `{COMMAND} --duration {args.duration:g}` (live 30 fps HTTP camera + PulseAudio virtual microphone, "
        f"int8 TFLite, 1 thread; windows of {window:g} s compared).",
        "",
        f"* {summary['inferences']} inferences in {summary['wall_seconds']:.0f} s; stats records {len(records)} "
        f"(**{'=' if len(records) == summary['inferences'] else '!='} inferences**), summary line written: {written is not None}",
        f"* RSS after warm-up: {after_warmup[0]:.1f} MB -> peak {max(after_warmup):.1f} MB: **growth {100 * growth:.2f} %** (limit 5 %)",
        f"* p99 of the loop's own work (loop - audio wait): first {window:g} s {p99_first:.3f} ms, last {window:g} s "
        f"{p99_last:.3f} ms: **ratio {p99_last / p99_first:.3f}** (limit 1.2)",
        f"* p99 of edgemm's own time outside the model call: first {out_first:.3f} ms, last {out_last:.3f} ms: "
        f"ratio {out_last / out_first:.3f}",
        f"* p99 of the loop's work per {window:g} s window, in order: {', '.join(f'{v:.2f}' for v in p99_work)} ms "
        f"(spread max/min {max(p99_work) / min(p99_work):.2f}: the noise floor of this machine)",
        f"* p99 outside the model call per window: {', '.join(f'{v:.2f}' for v in p99_outside)} ms",
        f"* audio overflows {c['audio_overflows']}, audio stream reopens {c.get('audio_reopens', 0)}, "
        f"frames dropped {c['frames_dropped']}, camera reconnects "
        f"{c['camera_reconnects']}, backend errors {c['backend_errors']}",
    ]
    body = "\n".join(lines)
    print(body)
    print(json.dumps({"growth": growth, "p99_first": p99_first, "p99_last": p99_last, "p99_windows": p99_work,
                      "outside_first": out_first, "outside_last": out_last, "records": len(records),
                      "inferences": summary["inferences"]}))
    if not args.no_write:
        update_section("soak", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
