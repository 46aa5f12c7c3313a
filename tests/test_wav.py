import wave

import numpy as np
import pytest

from edgemm.errors import InputError
from edgemm.wav import read_wav, write_wav


def _write_pcm(path, frames: bytes, width: int, channels: int, rate: int):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(frames)


def test_round_trip(tmp_path):
    x = 0.5 * np.sin(np.linspace(0, 20, 1000)).astype(np.float32)
    write_wav(tmp_path / "a.wav", x, 22050)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 22050 and np.abs(x - y).max() < 1e-4


@pytest.mark.parametrize("width,dtype", [(1, np.uint8), (2, "<i2"), (4, "<i4")])
def test_reads_other_bit_depths_and_downmixes(tmp_path, width, dtype):
    info = np.iinfo(np.dtype(dtype))
    left = np.array([info.max, info.min], dtype)
    right = np.array([info.min, info.max], dtype)
    _write_pcm(tmp_path / "s.wav", np.stack([left, right], 1).tobytes(), width, 2, 8000)
    y, rate = read_wav(tmp_path / "s.wav")
    assert rate == 8000 and y.shape == (2,) and np.abs(y).max() < 0.01  # full-scale opposite channels cancel


def test_reads_24_bit(tmp_path):
    value = -(1 << 22)  # -0.5 full scale
    frame = (value & 0xFFFFFF).to_bytes(3, "little")
    _write_pcm(tmp_path / "p.wav", frame * 4, 3, 1, 16000)
    y, _ = read_wav(tmp_path / "p.wav")
    assert np.allclose(y, -0.5)


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00", b"not a wav file at all" * 10])
def test_corrupt_files_raise_input_error(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(InputError, match="bad.wav"):
        read_wav(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="no such WAV"):
        read_wav(tmp_path / "nope.wav")


def test_failed_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "keep.wav"
    write_wav(target, np.zeros(100, np.float32), 16000)
    before = target.read_bytes()
    with pytest.raises(TypeError):
        write_wav(target, np.zeros(100, np.float32), rate=None)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]
