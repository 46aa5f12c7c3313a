"""Pruning + distillation of the shipped teacher -> benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/prune_distill.py [--prune 0.5] [--epochs 12] [--train-epochs 1] [--data-dir DIR] [--no-write]

0. the example's data files (`python -m examples.av_digits data`): calib.npz, val.npz and train.npz
   (`--train-epochs` epochs' worth of augmented training pairs, the same every training epoch);
1. `edgemm convert TEACHER --calib --val --train --prune 0.5 --distill` (the whole chain, timed) and plain
   `edgemm convert TEACHER --calib --val`;
2. LiteRT median single-inference latency of both int8 TFLite files, side by side in one run
   (benchmarks/litert_latency.py in a process without TensorFlow, 1 and 2 threads);
3. the same student architecture trained four ways with the same epochs and data (train.npz): from scratch
   on hard labels, from scratch distilled, pruned-init fine-tuned on hard labels, pruned-init distilled.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_md import update_section  # noqa: E402
from converters import calibration, distill  # noqa: E402
from converters.convert import ConvertOptions, convert  # noqa: E402
from converters.sources import load_keras  # noqa: E402
from examples.av_digits import dataset, teacher_files  # noqa: E402
from examples.av_digits.data import write_data  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/prune_distill.py"


def latency(paths: list[Path], threads: int) -> dict:
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "litert_latency.py"), *map(str, paths),
                          "--threads", str(threads)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prune", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--train-epochs", type=int, default=1, help="epochs' worth of training pairs in train.npz")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--formats", default="tflite,onnx", help="convert's --format for both converts")
    parser.add_argument("--full", type=Path, default=None,
                        help="an edgemm convert output of the unpruned teacher to compare with, instead of converting it")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    data_dir = dataset.resolve_data_dir(args.data_dir)
    log = lambda s: print(s, flush=True)  # noqa: E731

    with tempfile.TemporaryDirectory(prefix="edgemm-bench-prune-") as tmp:
        tmp = Path(tmp)
        files = write_data(tmp / "data", data_dir, train_epochs=args.train_epochs, log=log)
        t = time.perf_counter()
        formats = tuple(f.strip() for f in args.formats.split(","))
        small = convert(teacher_files.TEACHER_MODEL, tmp / "pruned", ConvertOptions(
            calib=files.calib, val=files.val, train=files.train, prune=args.prune, distill=True, epochs=args.epochs,
            formats=formats), log=log)
        chain_seconds = time.perf_counter() - t
        full_dir = args.full or tmp / "full"
        if args.full is None:
            convert(teacher_files.TEACHER_MODEL, full_dir, ConvertOptions(calib=files.calib, val=files.val,
                                                                         formats=formats), log=log)
        full = json.loads((full_dir / "report.json").read_text())
        paths = [full_dir / "int8.tflite", tmp / "pruned" / "int8.tflite"]
        lat = {threads: latency(paths, threads) for threads in (1, 2)}

        # Same student architecture, same epochs and data, four ways.
        teacher = load_keras(teacher_files.TEACHER_MODEL)
        pruned_student = load_keras(tmp / "pruned" / "student.keras")
        test, train = calibration.load_npz(files.val), calibration.load_npz(files.train)

        def data(epoch: int):
            return train.inputs, train.labels

        from converters.prune import prune

        def accuracy(model) -> float:
            return float(np.mean(model.predict(test.inputs, batch_size=256, verbose=0).argmax(1) == test.labels))

        import keras

        ways = {}
        for name, init, use_teacher in (("from scratch, hard labels", "scratch", False),
                                        ("from scratch, distilled", "scratch", True),
                                        ("pruned init, hard labels (fine-tune)", "pruned", False),
                                        ("pruned init, distilled (edgemm --prune --distill)", "pruned", True)):
            if init == "scratch":
                keras.utils.set_random_seed(0)
                model = keras.Model.from_config(pruned_student.get_config())  # fresh random weights
            else:
                model, _ = prune(teacher, args.prune)
            config = distill.DistillConfig(epochs=args.epochs, alpha=0.7 if use_teacher else 0.0)
            t = time.perf_counter()
            distill.train_student(model, data, config, teacher if use_teacher else None, log=lambda s: None)
            ways[name] = {"accuracy": accuracy(model), "seconds": time.perf_counter() - t}
            log(f"{name}: {100 * ways[name]['accuracy']:.2f} %")

    teacher_acc = small["float_accuracy"]
    s_int8, f_int8 = small["artifacts"]["int8_tflite"], full["artifacts"]["int8_tflite"]
    stages = small["compression"]["stages"]
    lines = [
        "## Pruning + distillation of the reference teacher",
        "",
        f"Command: `{COMMAND} --prune {args.prune} --epochs {args.epochs} "
        f"--train-epochs {args.train_epochs}` (= `python -m examples.av_digits data --out D --train-epochs "
        f"{args.train_epochs}`, `edgemm convert examples/av_digits/av_digits_teacher.keras --calib D/calib.npz "
        f"--val D/val.npz --train D/train.npz --prune {args.prune} --distill --epochs {args.epochs}` and a plain "
        f"`edgemm convert` of the teacher). Test set: AV-digits, {len(test)} pairs.",
        "",
        "| stage | parameters | MACs | fp32 weights | float accuracy |",
        "|---|---|---|---|---|",
        *[f"| {r['stage']} | {r['parameters']:,} | {r['macs'] / 1e6:.2f} M | {r['float32_weight_bytes'] / 1024:.0f} KiB | "
          f"{100 * r['accuracy']:.2f} % |" for r in stages],
        "",
        "| int8 TFLite | size | accuracy | vs float teacher | LiteRT median, 1 thread | 2 threads |",
        "|---|---|---|---|---|---|",
    ]
    for label, art, path in (("teacher (unpruned)", f_int8, paths[0]), (f"pruned {args.prune:.0%} + distilled", s_int8, paths[1])):
        lines.append(f"| {label} | {art['size_bytes'] / 1024:.1f} KiB | {100 * art['accuracy']:.2f} % | "
                     f"{100 * (art['accuracy'] - teacher_acc):+.2f} points | {lat[1][str(path)]['median_ms']:.3f} ms | "
                     f"{lat[2][str(path)]['median_ms']:.3f} ms |")
    speed = {th: lat[th][str(paths[0])]["median_ms"] / lat[th][str(paths[1])]["median_ms"] for th in (1, 2)}
    lines += [
        "",
        f"* MACs of the student: {100 * stages[-1]['macs'] / stages[0]['macs']:.1f} % of the teacher's; "
        f"int8 latency speed-up (unpruned / pruned median): {speed[1]:.2f}x on 1 thread, {speed[2]:.2f}x on 2 threads "
        f"({lat[1][str(paths[0])]['count']} invokes each, interleaved)",
        f"* whole chain (load, prune, distill {args.epochs} epochs, quantize, export, validate): {chain_seconds:.0f} s "
        "on this machine (2 cores)",
        "",
        f"Same student architecture, same epochs, same training data (train.npz: {len(train)} augmented AV-digits "
        "pairs, the same every epoch):",
        "",
        "| training | float test accuracy |",
        "|---|---|",
        *[f"| {k} | {100 * v['accuracy']:.2f} % |" for k, v in ways.items()],
    ]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        update_section("prune_distill", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
