"""The v1 preprocessing schema and its parity with tf.signal (the tensorflow convention of the transforms)."""

import dataclasses

import numpy as np
import pytest

from edgemm.errors import InputError
from edgemm.transforms import signal, v1
from edgemm.transforms.audio import tf_mel_filterbank
from edgemm.transforms.v1 import AudioSpec, ImageSpec, PreprocessSpec, audio_from_v1

# Log-mel parity with tf.signal: the largest difference measured was 7.5e-5 (natural-log units)
# on a chirp in noise; 1e-3 leaves room for BLAS differences, yet a wrong window, mel scale,
# band edge or power would miss it by orders of magnitude.
LOG_MEL_TOLERANCE = 1e-3


def _chirp(rate=16000, seconds=1.0, seed=0):
    t = np.arange(int(rate * seconds)) / rate
    noise = np.random.default_rng(seed).standard_normal(t.size)
    return (0.3 * np.sin(2 * np.pi * (200 + 1500 * t) * t) + 0.05 * noise).astype(np.float32)


def _tf_log_mel(x, spec: AudioSpec):
    import tensorflow as tf

    stft = tf.signal.stft(x, spec.frame_length, spec.frame_step, spec.fft_length,
                          window_fn=tf.signal.hann_window, pad_end=False)
    spectrum = tf.abs(stft) ** spec.power
    weights = tf.signal.linear_to_mel_weight_matrix(
        spec.n_mels, spec.fft_length // 2 + 1, spec.sample_rate, spec.fmin, spec.fmax)
    return np.log(tf.matmul(spectrum, weights).numpy() + spec.log_offset)


@pytest.mark.convert
@pytest.mark.parametrize("spec", [
    AudioSpec(),
    AudioSpec(frame_length=400, frame_step=160, fft_length=512, n_mels=64, fmin=60.0, fmax=7600.0, power=1.0),
], ids=["default", "64mel-magnitude"])
def test_log_mel_matches_tf_signal(spec):
    x = _chirp()
    ours = _log_mel(x, spec)
    ref = _tf_log_mel(x, spec)
    assert ours.shape == ref.shape == (spec.num_frames, spec.n_mels)
    assert np.abs(ours - ref).max() < LOG_MEL_TOLERANCE


@pytest.mark.convert
def test_log_mel_matches_tf_signal_on_real_speech(data_dir):
    from edgemm.wav import read_wav

    samples, rate = read_wav(data_dir / "fsdd" / "recordings" / "7_jackson_0.wav")
    spec = AudioSpec()
    x = signal.fit_window(signal.resample(samples, rate, spec.sample_rate), spec.window_samples)
    assert np.abs(_log_mel(x, spec) - _tf_log_mel(x, spec)).max() < LOG_MEL_TOLERANCE


def _log_mel(x, spec: AudioSpec) -> np.ndarray:
    """The spec transform of a v1 spec (tensorflow convention), without normalisation."""
    return audio_from_v1(dataclasses.replace(spec, mean=0.0, std=1.0)).features_of(x)[..., 0]


@pytest.mark.convert
def test_tensorflow_convention_filterbank_equals_tf_signal():
    import tensorflow as tf

    for n_mels, fmin, fmax in ((40, 20.0, 4000.0), (64, 60.0, 7600.0)):
        ref = tf.signal.linear_to_mel_weight_matrix(n_mels, 257, 16000, fmin, fmax).numpy()
        np.testing.assert_allclose(tf_mel_filterbank(16000, 512, n_mels, fmin, fmax).T, ref, atol=1e-5)  # TF: float32


def test_mel_filterbank_triangles_cover_the_band():
    spec = AudioSpec()
    weights = tf_mel_filterbank(spec.sample_rate, spec.fft_length, spec.n_mels, spec.fmin, spec.fmax).T
    assert weights.shape == (spec.fft_length // 2 + 1, spec.n_mels)
    assert np.all(weights[0] == 0)  # DC carries no speech
    assert np.all(weights.max(axis=0) > 0.5)  # every band sees at least one bin near its centre
    freqs = np.arange(weights.shape[0]) * spec.sample_rate / spec.fft_length
    assert np.all(weights[freqs > spec.fmax] == 0)


@pytest.mark.parametrize("orig", [8000, 22050, 44100, 48000])
def test_resample_keeps_a_tone(orig):
    target = 16000
    t = np.arange(orig) / orig
    y = signal.resample(np.sin(2 * np.pi * 440 * t).astype(np.float32), orig, target)
    assert y.size == target
    tt = np.arange(target) / target
    core = slice(400, -400)  # the filter's edge transients
    assert np.abs(y[core] - np.sin(2 * np.pi * 440 * tt[core])).max() < 5e-3


def test_resample_removes_what_the_target_rate_cannot_hold():
    t = np.arange(48000) / 48000
    y = signal.resample(np.sin(2 * np.pi * 12000 * t).astype(np.float32), 48000, 16000)
    assert np.abs(y[400:-400]).max() < 0.01  # 12 kHz is above the 8 kHz Nyquist: no aliasing


def test_audio_features_keep_the_newest_window():
    spec = AudioSpec()
    tone = np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000).astype(np.float32)
    long = np.concatenate([tone, np.zeros(8000, np.float32)])  # 2 s at 8 kHz: tone, then silence
    feats = v1.audio_features(long, 8000, spec)
    silent = v1.audio_features(np.zeros(8000, np.float32), 8000, spec)
    assert feats.shape == spec.feature_shape
    assert np.allclose(feats[5:-5], silent[5:-5], atol=1e-3)  # the last second is the silent one


def test_to_float_audio_scales_integer_pcm():
    pcm = np.array([-32768, 0, 32767], np.int16)
    assert np.allclose(signal.to_float_audio(pcm), [-1.0, 0.0, 32767 / 32768], atol=1e-6)
    stereo = np.array([[1.0, 0.0], [0.5, 0.5]], np.float32)
    assert np.allclose(signal.to_float_audio(stereo), [0.5, 0.5])


def test_image_preprocess_handles_bgr_crop_and_invert():
    spec = ImageSpec()
    frame = np.full((240, 320, 3), 255, np.uint8)
    frame[:, :40] = 0  # dark border outside the centred square: cropped away
    frame[100:140, 140:180] = 0  # dark ink in the middle
    x = v1.preprocess_image(frame, spec)
    assert x.shape == (32, 32, 1) and x.dtype == np.float32
    assert x[16, 16, 0] == pytest.approx(1.0)  # ink becomes bright
    assert x[0, 0, 0] == pytest.approx(0.0)  # paper becomes dark, the border is gone
    gray = v1.preprocess_image(frame[:, :, 0], spec)
    assert np.allclose(gray, x)


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros((0, 5), np.uint8), np.zeros((4, 4, 2), np.uint8)])
def test_image_preprocess_rejects_bad_frames(bad):
    with pytest.raises(InputError):
        v1.preprocess_image(bad, ImageSpec())


def test_spec_round_trips_and_rejects_unknown_keys():
    spec = PreprocessSpec(audio=AudioSpec(mean=1.5, std=2.0), image=ImageSpec(invert=False))
    assert PreprocessSpec.from_dict(spec.to_dict()) == spec
    data = spec.to_dict()
    data["audio"]["n_mel"] = 40
    with pytest.raises(InputError, match="n_mel"):
        PreprocessSpec.from_dict(data)
    data = spec.to_dict()
    data["audio"]["n_mels"] = "40"
    with pytest.raises(InputError, match="n_mels"):
        PreprocessSpec.from_dict(data)


@pytest.mark.parametrize("change", [
    {"fmax": 9000.0}, {"frame_length": 1024}, {"power": 3.0}, {"std": 0.0}, {"window_seconds": 0.01},
])
def test_audio_spec_validates(change):
    with pytest.raises(InputError):
        dataclasses.replace(AudioSpec(), **change)
