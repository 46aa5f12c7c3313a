"""The example's demo (README set-up command), end to end: media rendered from registry packages, decisions printed."""

import re
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from edgemm.errors import InputError
from edgemm.wav import read_wav
from examples.av_digits import demo_media
from examples.av_digits.cli import main

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed (install.sh installs it)")


@needs_espeak
def test_render_keeps_video_and_audio_aligned(tmp_path):
    config = demo_media.DemoConfig(digits=(7, 2, 1), segment_seconds=1.0, fps=10)
    media = demo_media.render(tmp_path, config)
    capture = cv2.VideoCapture(str(media.video))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 30 and capture.get(cv2.CAP_PROP_FPS) == 10
    samples, rate = read_wav(media.audio)
    assert rate == 16000 and samples.size == 3 * 16000
    for i in range(3):  # each word is spoken inside its own segment, away from its edges
        segment = samples[i * rate : (i + 1) * rate]
        assert np.abs(segment).max() > 0.1
        loud = np.flatnonzero(np.abs(segment) > 0.02)
        assert loud[0] > 0.02 * rate and loud[-1] < 0.98 * rate
        middle = (loud[0] + loud[-1]) / 2  # centred in the window that ends with the segment
        assert abs(middle - rate / 2) < 0.15 * rate
    truth = demo_media.load_truth(media.truth)
    assert [s["digit"] for s in truth] == [7, 2, 1]


def test_config_rejects_misaligned_frames():
    with pytest.raises(InputError, match="whole number of frames"):
        demo_media.DemoConfig(segment_seconds=1.55, fps=15)


@pytest.mark.convert
@pytest.mark.slow
@needs_espeak
def test_demo_command_converts_and_runs(tmp_path, data_dir):
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path), "--fast", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    out = result.output
    section1 = out.split("== 2.")[0]
    rows = [line for line in section1.splitlines() if re.match(r"\s+\d+\.\d\ds\s", line)]
    assert len(rows) == len(demo_media.DemoConfig().digits)
    correct = int(re.search(r"correct: fused (\d+)/", out).group(1))
    assert correct == sum(line.rstrip().endswith("ok") for line in rows)
    assert correct >= 0.8 * len(rows)  # the float teacher on clean digits
    assert (tmp_path / "model" / "manifest.json").is_file() and "int8_tflite" in out
    int8 = re.search(r"int8 decisions at the end of each segment: (\d+)/(\d+) correct", out)
    assert int(int8.group(1)) >= 0.8 * int(int8.group(2))
    assert "summary:" in out and (tmp_path / "run_stats.jsonl").is_file()
    again = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path), "--fast", "--data-dir", str(data_dir)])
    assert again.exit_code == 0 and "already converted" in again.output
