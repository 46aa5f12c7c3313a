"""edgemm.transforms: librosa parity, incremental == full window, image geometry, v1 equality.

Parity criterion (librosa): dB outputs and MFCCs (DCT of dB) within 10 log10(1 + 1e-4) dB, i.e. the mel
power they come from agrees to 1e-4 relative; ln outputs within ln(1 + 1e-4); linear mel power with
rtol 1e-4 (plus 1e-12 of the maximum for empty bands). Normalised outputs: the same bounds divided by
the smallest std. librosa computes in float64 from a float64 signal, with its float32 filterbank.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgemm.errors import InputError
from edgemm.runtime.ring import AudioRing
from edgemm.transforms import v1
from edgemm.transforms.audio import AudioTransform, IncrementalFeatures, dct_matrix, mel_filterbank, tf_mel_filterbank
from edgemm.transforms.image import FrameStack, ImageTransform
from edgemm.transforms.v1 import audio_from_v1, image_from_v1

RATE = 16000
DB_TOL = 10 * np.log10(1 + 1e-4)  # 4.3e-4 dB
LN_TOL = np.log(1 + 1e-4)


def speech_like(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """Noise bursts and voiced segments (gliding harmonics) between short silences, as float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    pitch = 120 + 40 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    syllables = np.clip(np.sin(2 * np.pi * 3.0 * t + rng.uniform(0, 6)), 0, None) ** 2
    bursts = rng.standard_normal(n) * (np.sin(2 * np.pi * 1.7 * t) > 0.8)
    x = 0.2 * voiced * syllables + 0.05 * bursts + 1e-4 * rng.standard_normal(n)
    return x.astype(np.float32)


BASE = dict(window=0.25, n_fft=512, hop_length=128, n_mels=40)
CASES = {
    "centred-constant-slaney-db": AudioTransform(**BASE),
    "centred-reflect-htk-none-db": AudioTransform(**BASE, pad_mode="reflect", mel_scale="htk", mel_norm="none",
                                                  fmin=50.0, fmax=7000.0),
    "uncentred-slaney-ln": AudioTransform(**{**BASE, "hop_length": 160}, center=False, log="ln"),
    "power1-amplitude-db": AudioTransform(**BASE, power=1.0, top_db=60.0, ref=0.5),
    "mfcc13": AudioTransform(**BASE, features="mfcc", n_mfcc=13),
    "win-lt-nfft": AudioTransform(**{**BASE, "hop_length": 160}, win_length=400),
    "odd-nfft-reflect-linear": AudioTransform(window=0.25, n_fft=511, win_length=301, hop_length=100, n_mels=32,
                                              pad_mode="reflect", log="none"),
    "per-bin-mean-std": AudioTransform(**BASE, mean=tuple(np.linspace(-60, -20, 40)),
                                       std=tuple(np.linspace(10, 20, 40))),
    "axes-mels-time": AudioTransform(**BASE, axes=("mels", "time")),
    "axes-channel-first": AudioTransform(**BASE, axes=("channel", "time", "mels")),
    "axes-channel-middle-mfcc": AudioTransform(**BASE, features="mfcc", n_mfcc=13, mean=(1.0,) * 13, std=3.0,
                                               axes=("mels", "channel", "time")),
}


def librosa_reference(t: AudioTransform, x: np.ndarray) -> tuple[np.ndarray, float]:
    """(frames, bins) features from librosa for t, and the tolerance for comparing them."""
    librosa = pytest.importorskip("librosa")
    y = x.astype(np.float64)
    kw = dict(sr=t.sample_rate, n_fft=t.n_fft, hop_length=t.hop_length, win_length=t.win_length, center=t.center,
              pad_mode=t.pad_mode, power=t.power, n_mels=t.n_mels, fmin=t.fmin, fmax=t.fmax,
              htk=t.mel_scale == "htk")
    norm = "slaney" if t.mel_norm == "slaney" else None
    if t.features == "mfcc":
        assert (t.log, t.power, t.ref, t.amin, t.top_db) == ("db", 2.0, 1.0, 1e-10, 80.0)  # mfcc's power_to_db
        return librosa.feature.mfcc(y=y, n_mfcc=t.n_mfcc, mel_norm=norm, **kw).T, DB_TOL
    mel = librosa.feature.melspectrogram(y=y, norm=norm, **kw)
    if t.log == "db":
        to_db = librosa.power_to_db if t.power == 2.0 else librosa.amplitude_to_db
        return to_db(mel, ref=t.ref, amin=t.amin, top_db=t.top_db).T, DB_TOL
    if t.log == "ln":
        return np.log(mel + t.log_offset).T, LN_TOL
    return mel.T, None


def arrange(t: AudioTransform, features: np.ndarray) -> np.ndarray:
    """(frames, bins) features normalised and put in t.axes order, written plainly."""
    x = (features - np.asarray(t.mean)) / np.asarray(t.std)
    order = list(t.axes) + ([] if "channel" in t.axes else ["channel"])
    x = np.transpose(x[:, :, None], [{"time": 0, "mels": 1, "channel": 2}[a] for a in order])
    return x.reshape(t.output_shape)


@pytest.mark.parametrize("name", sorted(CASES))
def test_audio_features_match_librosa(name):
    t = CASES[name]
    x = speech_like(t.window, seed=1)
    ref, tol = librosa_reference(t, x)
    ours = t.features_of(x)
    assert ours.dtype == np.float32 and ours.shape == t.output_shape
    expected = arrange(t, ref)
    if tol is None:
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-12 * np.abs(expected).max())
    else:
        assert np.abs(ours - expected).max() <= tol / np.min(t.std)


@pytest.mark.parametrize("args", [(16000, 512, 40, 0.0, 8000.0, "slaney", "slaney"),
                                  (22050, 2048, 128, 20.0, 8000.0, "htk", "none"),
                                  (16000, 511, 40, 50.0, 7000.0, "htk", "slaney"),
                                  (44100, 1024, 64, 300.0, 16000.0, "slaney", "none")])
def test_mel_filterbank_matches_librosa(args):
    librosa = pytest.importorskip("librosa")
    sr, n_fft, n_mels, fmin, fmax, scale, norm = args
    ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=scale == "htk",
                              norm="slaney" if norm == "slaney" else None, dtype=np.float64)
    np.testing.assert_allclose(mel_filterbank(*args), ref, rtol=1e-9, atol=1e-12 * ref.max())


def test_tf_filterbank_drops_dc_and_dct_is_orthonormal():
    ours = tf_mel_filterbank(16000, 512, 40, 20.0, 4000.0)  # equality with tf.signal: tests/test_v1.py
    assert not ours[:, 0].any()  # the DC bin carries no weight
    full = dct_matrix(40, 40)
    np.testing.assert_allclose(full @ full.T, np.eye(40), atol=1e-12)


def test_frame_counts_follow_librosa_and_tf():
    assert AudioTransform(window=1.0, n_fft=2048, hop_length=512).num_frames == 1 + 16000 // 512
    assert AudioTransform(window=1.0, n_fft=2048, hop_length=512, center=False).num_frames == 1 + (16000 - 2048) // 512
    tf = AudioTransform(window=1.0, n_fft=512, win_length=480, hop_length=320, center=False, convention="tensorflow",
                        mel_scale="htk", mel_norm="none")
    assert tf.num_frames == 1 + (16000 - 480) // 320 == 49
    waveform = AudioTransform(n_fft=512, window=0.5, features="waveform", axes=("channel", "time"))
    assert waveform.output_shape == (1, 8000)


# --- incremental == full window --------------------------------------------------------------------

INCREMENTAL = {
    **{k: CASES[k] for k in ("centred-constant-slaney-db", "centred-reflect-htk-none-db", "uncentred-slaney-ln",
                             "mfcc13", "win-lt-nfft", "odd-nfft-reflect-linear", "axes-mels-time")},
    "tf-uncentred": AudioTransform(window=0.25, n_fft=512, win_length=480, hop_length=160, center=False,
                                   convention="tensorflow", mel_scale="htk", mel_norm="none", log="ln", n_mels=40),
    "tf-centred-reflect": AudioTransform(window=0.25, n_fft=512, win_length=300, hop_length=128, pad_mode="reflect",
                                         convention="tensorflow", mel_scale="htk", mel_norm="none", n_mels=40),
    "waveform": AudioTransform(window=0.25, features="waveform", axes=("time", "channel"), mean=0.1, std=0.5),
}


def edge_rows(t: AudioTransform) -> int:
    """Frames whose windowed segment touches the centre padding (recomputed for every window)."""
    offset = (t.n_fft - t.win) // 2 if t.convention == "librosa" else 0
    starts = np.arange(t.num_frames) * t.hop + offset - (t.n_fft // 2 if t.center else 0)
    return int(np.sum((starts < 0) | (starts + t.win > t.window_samples)))


@pytest.mark.parametrize("name", sorted(INCREMENTAL))
def test_incremental_features_equal_full_window(name):
    t = INCREMENTAL[name]
    ring = AudioRing(RATE, seconds=2.0)
    stream = speech_like(1.2, seed=2)
    inc = IncrementalFeatures(t)
    ends = [inc.snap(e) for e in range(0, 6 * t.hop, t.hop)]  # the first windows (mostly before the stream)
    ends += list(range(t.window_samples, t.window_samples + 12 * t.hop, t.hop))  # on the hop grid
    ends += [t.window_samples + 12 * t.hop + 37, t.window_samples + 12 * t.hop + 37 + t.hop, 9001]  # off the grid
    ring.write(stream, None)
    for end in ends:
        full = t.features_of(ring.read(end - t.window_samples, end))
        np.testing.assert_allclose(inc.features(ring, end), full, rtol=1e-5, atol=1e-5)
    if t.features != "waveform":  # one hop further: only the edge rows and one new row are computed
        before = inc.computed
        inc.features(ring, ends[-1] + t.hop)
        assert inc.computed - before == edge_rows(t) + 1 < t.num_frames
        assert inc._rows.shape[0] == t.num_frames  # one window of rows is kept, never more


def test_incremental_does_not_keep_rows_of_samples_not_yet_written():
    t = CASES["centred-constant-slaney-db"]
    ring, inc = AudioRing(RATE, seconds=2.0), IncrementalFeatures(t)
    stream = speech_like(0.5, seed=3)
    ring.write(stream[:3000], None)
    end = 3000 + 5 * t.hop  # reads ahead of the stream: the tail is zeros for now
    inc.features(ring, end)
    ring.write(stream[3000:], None)
    np.testing.assert_allclose(inc.features(ring, end), t.features_of(ring.read(end - t.window_samples, end)),
                               rtol=1e-5, atol=1e-5)


def test_snap_is_the_last_hop_multiple():
    inc = IncrementalFeatures(AudioTransform(hop_length=320, n_fft=512))
    assert [inc.snap(i) for i in (0, 319.9, 320, 641, -1)] == [0, 0, 320, 640, -320]


# --- audio validation and dicts --------------------------------------------------------------------


def test_audio_from_dict_round_trips_and_names_bad_keys():
    t = CASES["per-bin-mean-std"]
    assert AudioTransform.from_dict(t.to_dict()) == t
    with pytest.raises(InputError, match=r"unknown key\(s\) n_mel\b"):
        AudioTransform.from_dict({"n_mel": 40})
    with pytest.raises(InputError, match=r"audio\.n_mels must be an integer"):
        AudioTransform.from_dict({"n_mels": "40"})
    with pytest.raises(InputError, match="mic: window must be positive"):
        AudioTransform.from_dict({"window": -1}, "mic")
    with pytest.raises(InputError, match="mean needs 1 or 40 values"):
        AudioTransform.from_dict({"n_mels": 40, "mean": [0.0, 1.0]})
    with pytest.raises(InputError, match="axes must be a permutation"):
        AudioTransform(axes=("time", "time"))
    with pytest.raises(InputError, match="convention tensorflow needs mel_scale htk"):
        AudioTransform(convention="tensorflow")


def test_features_of_refuses_wrong_windows():
    t = CASES["centred-constant-slaney-db"]
    with pytest.raises(InputError, match="4000 float samples"):
        t.features_of(np.zeros(3999, np.float32))
    with pytest.raises(InputError, match="float samples"):
        t.features_of(np.zeros(4000, np.int16))


def test_transforms_import_neither_librosa_nor_scipy():
    code = ("import sys, edgemm.transforms.audio, edgemm.transforms.image; "
            "print(sorted(m for m in ('librosa', 'scipy', 'tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# --- image -----------------------------------------------------------------------------------------


def reference_image(t: ImageTransform, frame: np.ndarray) -> np.ndarray:
    """The transform written plainly: colour, geometry, float64 arithmetic, layout."""
    img = frame[..., 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR) if img.shape[2] == 4 else img
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY) if t.color == "gray" else img
    elif t.color != "gray":
        img = np.repeat(img[:, :, None], 3, axis=2)
    img = np.ascontiguousarray(img[..., ::-1]) if t.color == "rgb" else img
    (h, w), (height, width) = img.shape[:2], t.size
    flag = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST,
            "cubic": cv2.INTER_CUBIC}[t.interpolation]
    if t.resize == "center-crop":
        aspect = width / height
        crop_w, crop_h = (round(h * aspect), h) if w / h > aspect else (w, round(w / aspect))
        img = img[(h - crop_h) // 2:][:crop_h, (w - crop_w) // 2:][:, :crop_w]
    if t.resize == "letterbox":
        s = min(width / w, height / h)
        new_w, new_h = round(w * s), round(h * s)
        canvas = np.full((height, width) + img.shape[2:], t.pad_value, np.uint8)
        top, left = (height - new_h) // 2, (width - new_w) // 2
        canvas[top:top + new_h, left:left + new_w] = cv2.resize(img, (new_w, new_h), interpolation=flag)
        img = canvas
    elif img.shape[:2] != (height, width):
        img = cv2.resize(img, (width, height), interpolation=flag)
    x = img.astype(np.float64)
    x = 255.0 - x if t.invert else x
    x = (x * t.scale - np.asarray(t.mean)) / np.asarray(t.std)
    if t.layout == "NHW":
        return x
    x = x if x.ndim == 3 else x[:, :, None]
    return np.moveaxis(x, 2, 0) if t.layout == "NCHW" else x


def camera_frame(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A smooth scene with edges (resizing then matters) plus sensor noise, uint8."""
    rng = np.random.default_rng(seed)
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 17.0) * np.cos(yy / 11.0) + 40 * ((xx // 40 + yy // 40) % 2)
    channels = shape[2] if len(shape) == 3 else 1
    img = np.stack([base + 25 * c for c in range(channels)], axis=-1) + rng.normal(0, 6, (h, w, channels))
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img.reshape(shape)


IMAGE_CASES = [
    (dict(layout="NHWC", color="rgb", resize="stretch"), (480, 640, 3)),
    (dict(layout="NCHW", color="rgb", resize="center-crop", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
     (480, 640, 3)),
    (dict(layout="NCHW", color="bgr", resize="letterbox", interpolation="area", mean=0.5, std=0.25), (480, 640, 4)),
    (dict(layout="NHWC", color="bgr", resize="center-crop", size=(96, 64), interpolation="cubic"), (200, 300, 3)),
    (dict(layout="NHWC", color="rgb", resize="letterbox", size=(64, 96), interpolation="nearest", invert=True),
     (300, 200, 3)),
    (dict(layout="NHW", color="gray", resize="stretch", size=(28, 28), interpolation="area", invert=True), (480, 640)),
    (dict(layout="NCHW", color="gray", resize="center-crop", size=(32, 48), scale=1.0, mean=127.5, std=127.5),
     (480, 640, 4)),
    (dict(layout="NHWC", color="gray", resize="letterbox", size=(40, 40), pad_value=0), (240, 320, 1)),
    (dict(layout="NCHW", color="rgb", resize="stretch", size=(50, 70), mean=(0.1, 0.2, 0.3)), (120, 160)),
]


@pytest.mark.parametrize("fields,shape", IMAGE_CASES)
def test_image_transform_matches_a_plain_reference(fields, shape):
    t = ImageTransform(**fields)
    frame = camera_frame(shape)
    x = t.apply(frame)
    assert x.dtype == np.float32 and x.shape == t.output_shape == t.frame_shape and x.flags.c_contiguous
    np.testing.assert_allclose(x, reference_image(t, frame), rtol=1e-5, atol=1e-5)


def test_letterbox_and_center_crop_geometry():
    frame = np.full((100, 200, 3), 200, np.uint8)
    frame[:, :50] = 0  # the left and right quarters are cut off by a centred square crop
    frame[:, 150:] = 0
    boxed = ImageTransform(color="gray", size=(64, 64), resize="letterbox", pad_value=114, scale=1.0).apply(frame)
    assert boxed.shape == (64, 64, 1)
    assert np.all(boxed[:16] == 114) and np.all(boxed[48:] == 114)  # 200x100 -> 64x32, centred
    cropped = ImageTransform(color="gray", size=(10, 10), resize="center-crop", scale=1.0).apply(frame)
    assert np.all(cropped == 200)


def test_frame_stack_repeats_the_oldest_then_keeps_the_newest():
    t = ImageTransform(layout="NCHW", size=(8, 8), frames=4, frame_axis=2)  # N, C, T, H, W
    assert t.output_shape == (3, 4, 8, 8)
    stack = FrameStack(t)
    frames = [t.apply(camera_frame((16, 16, 3), seed=i)) for i in range(6)]
    first = stack.push(frames[0])
    assert first.shape == t.output_shape and all(np.array_equal(first[:, k], frames[0]) for k in range(4))
    for f in frames[1:]:
        out = stack.push(f)
    assert all(np.array_equal(out[:, k], frames[2 + k]) for k in range(4))
    assert ImageTransform(layout="NHW", color="gray", frames=3, frame_axis=1).output_shape == (3, 224, 224)
    with pytest.raises(InputError, match="FrameStack expects"):
        stack.push(np.zeros((8, 8, 3), np.float32))


@pytest.mark.parametrize("bad", [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 2), np.uint8),
                                 np.zeros((2, 8, 8, 3), np.uint8), np.zeros((0, 8, 3), np.uint8),
                                 np.zeros(8, np.uint8)])
def test_bad_frames_raise_input_error(bad):
    with pytest.raises(InputError) as info:
        ImageTransform().apply(bad)
    assert "\n" not in str(info.value)


def test_image_from_dict_round_trips_and_names_bad_keys():
    t = ImageTransform(layout="NCHW", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), size=(96, 128))
    assert ImageTransform.from_dict(t.to_dict()) == t
    with pytest.raises(InputError, match=r"unknown key\(s\) colour"):
        ImageTransform.from_dict({"colour": "rgb"})
    with pytest.raises(InputError, match=r"image\.size must be a list of 2 values"):
        ImageTransform.from_dict({"size": [224]})
    with pytest.raises(InputError, match=r"image\.invert must be true/false"):
        ImageTransform.from_dict({"invert": "yes"})
    with pytest.raises(InputError, match="std needs 1 or 3 values"):
        ImageTransform.from_dict({"std": [0.2, 0.2]})
    with pytest.raises(InputError, match="layout NHW has no channel axis"):
        ImageTransform(layout="NHW", color="rgb")


# --- the v1 front-end ------------------------------------------------------------------------------


GOLDEN = Path(__file__).parent / "data" / "v1_front_end.npz"  # made by the released v1 implementation


def test_v1_front_end_equals_what_the_released_v1_implementation_computed():
    """Features and images of a chirp in noise, an 8 kHz tone and a photographed digit, as v1 computed them
    (float32) before the spec existed; the spec's transforms must give the same model inputs."""
    golden = np.load(GOLDEN)
    spec = v1.PreprocessSpec(audio=v1.AudioSpec(mean=-0.0225, std=2.2286))
    np.testing.assert_allclose(v1.audio_features(golden["audio"], 16000, spec.audio), golden["audio_features"],
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(v1.audio_features(golden["audio8k"], 8000, spec.audio), golden["audio8k_features"],
                               rtol=1e-5, atol=1e-5)
    t = audio_from_v1(spec.audio)
    assert t.output_shape == golden["audio_features"].shape
    np.testing.assert_allclose(t.features_of(golden["audio"]), golden["audio_features"], rtol=1e-5, atol=1e-5)
    image = image_from_v1(spec.image)
    np.testing.assert_allclose(image.apply(golden["frame"]), golden["image"], atol=1e-6)
    np.testing.assert_allclose(image.apply(golden["frame"][:, :, 0]), golden["gray_image"], atol=1e-6)


def test_v1_non_square_center_crop_is_refused():
    with pytest.raises(InputError, match="non-square"):
        image_from_v1({"height": 32, "width": 48, "crop": "center"})
    with pytest.raises(InputError, match=r"unknown key\(s\) size"):
        image_from_v1({"size": [32, 32]})
