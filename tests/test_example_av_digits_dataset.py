import gzip

import numpy as np
import pytest

from edgemm.errors import DataError
from edgemm.transforms.v1 import PreprocessSpec
from examples.av_digits import dataset as avdigits


def test_read_idx_round_trip_and_bad_files(tmp_path):
    payload = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "x-idx3-ubyte.gz"
    with gzip.open(good, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + b"".join(int(n).to_bytes(4, "big") for n in payload.shape) + payload.tobytes())
    assert np.array_equal(avdigits.read_idx(good), payload)
    truncated = tmp_path / "t-idx3-ubyte"
    truncated.write_bytes(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big"))
    with pytest.raises(DataError, match="truncated"):
        avdigits.read_idx(truncated)
    wrong = tmp_path / "w-idx1-ubyte"
    wrong.write_bytes(b"\x00\x00\x0d\x01" + (1).to_bytes(4, "big") + b"\x00" * 4)  # float IDX
    with pytest.raises(DataError, match="unsigned bytes"):
        avdigits.read_idx(wrong)


def test_data_dir_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(avdigits.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DataError, match=str(tmp_path)):
        avdigits.resolve_data_dir()
    with pytest.raises(DataError, match="elsewhere"):
        avdigits.resolve_data_dir(tmp_path / "elsewhere")


def test_splits_are_disjoint_and_balanced(data_dir):
    raw = avdigits.load_raw(data_dir)
    assert len(raw.clips) == 3000 and raw.images.shape == (10000, 28, 28)
    test_clips, test_pools = avdigits._split_members(raw, "test")
    train_clips, train_pools = avdigits._split_members(raw, "train")
    assert set(raw.clip_takes[test_clips]) == {0, 1, 2, 3, 4}
    assert raw.clip_takes[train_clips].min() == 5
    assert test_clips.size == 300 and train_clips.size == 2700
    for digit in range(10):
        assert not set(test_pools[digit]) & set(train_pools[digit])
        assert np.all(raw.image_labels[test_pools[digit]] == digit)
    assert sum(p.size for p in test_pools) == avdigits.IMAGE_TEST_POOL


@pytest.mark.slow
def test_test_split_is_reproducible_and_corrupted(data_dir):
    spec = PreprocessSpec()
    a = avdigits.make_split(data_dir, "test", spec, pairs_per_clip=1)
    b = avdigits.make_split(data_dir, "test", spec, pairs_per_clip=1)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.audio, b.audio)
    assert np.array_equal(np.bincount(a.label), np.full(10, 30))
    clean = avdigits.make_split(data_dir, "test", spec, pairs_per_clip=1,
                                corruption=avdigits.Corruption(occlusion=0, image_noise=0.0, snr_db=60.0))
    assert np.array_equal(clean.label, a.label)
    assert np.abs(clean.image - a.image).mean() > 0.05  # noise and occlusion really change the frames
    assert np.abs(clean.audio - a.audio).mean() > 0.1


def test_corrupt_frame_is_seeded():
    frame = np.full((28, 28), 255, np.uint8)
    frame[10:18, 10:18] = 0
    c = avdigits.Corruption(occlusion=14, image_noise=0.0)
    a = avdigits.corrupt_frame(frame, c, np.random.default_rng(1))
    b = avdigits.corrupt_frame(frame, c, np.random.default_rng(1))
    assert np.array_equal(a, b)
    assert (a == 0).sum() < (frame == 0).sum()  # part of the ink is blanked to paper


def test_noisy_window_hits_the_snr():
    rng = np.random.default_rng(0)
    clip = np.sin(np.arange(4000) / 5).astype(np.float32)
    window = avdigits.noisy_window(clip, 8000, 0.0, rng, random_offset=False)
    noise = window.copy()
    noise[2000:6000] -= clip
    snr = 10 * np.log10(np.mean(clip**2) / np.mean(noise**2))
    assert abs(snr) < 0.2
