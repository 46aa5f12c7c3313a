"""Structured pruning: tied channels, exactness, and conversion of the pruned model."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.convert

TIED = [1, 2, 5, 6]  # channels of the residual group (c1 + c2), zeroed before pruning
C3_ZERO = [0, 3, 4, 7]
FC_ZERO = [1, 2, 4, 7]
SIDE_ZERO = [0, 3]


def _model():
    """Two inputs; a residual Add ties c1 and c2; GAP and Flatten of c3 meet a Dense side branch in a Concatenate."""
    import keras
    from keras import layers as L

    x, y = keras.Input((8, 8, 3), name="x"), keras.Input((5,), name="y")
    a = L.ReLU()(L.BatchNormalization(name="b1")(L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(x)))
    b = L.BatchNormalization(name="b2")(L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(a))
    r = L.Add(name="add")([a, L.Conv2D(8, 1, name="c2")(b)])
    f = L.Conv2D(8, 3, padding="same", activation="relu", name="c3")(r)
    h = L.Concatenate(name="cat")([
        L.GlobalAveragePooling2D()(f), L.Flatten()(L.MaxPooling2D()(f)), L.Dense(4, name="side")(y)])
    out = L.Dense(3, activation="softmax", name="out")(L.Dense(8, name="fc")(h))
    model = keras.Model({"x": x, "y": y}, out)
    rng = np.random.default_rng(0)
    for layer in model.layers:  # non-trivial BN statistics, so the test sees them sliced correctly
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 2.0, n)])
    return model


def _zero(model):
    def cols(name, idx, bias=True):
        layer = model.get_layer(name)
        w = layer.get_weights()
        w[0][..., idx] = 0
        if bias and len(w) > 1:
            w[1][idx] = 0
        layer.set_weights(w)

    cols("c1", TIED)
    bn = model.get_layer("b1").get_weights()
    bn[0][TIED] = 0  # gamma
    bn[1][TIED] = 0  # beta: the channel is exactly 0 after BN and ReLU
    model.get_layer("b1").set_weights(bn)
    bn2 = model.get_layer("b2").get_weights()
    bn2[0][TIED] = 0
    bn2[1][TIED] = 0
    model.get_layer("b2").set_weights(bn2)
    cols("c2", TIED)
    cols("c3", C3_ZERO)
    cols("fc", FC_ZERO)
    cols("side", SIDE_ZERO)


def _inputs(n=16):
    rng = np.random.default_rng(1)
    return {"x": rng.normal(size=(n, 8, 8, 3)).astype("float32"), "y": rng.normal(size=(n, 5)).astype("float32")}


def test_pruning_already_zero_channels_keeps_outputs_and_ties_residual_channels():
    from converters.prune import prune

    model = _model()
    _zero(model)
    pruned, summary = prune(model, 0.5, round_to=2, min_channels=2)
    ch = summary["channels"]
    assert ch["c1"] == [8, 4] and ch["c2"] == [8, 4]  # tied by the Add: pruned together
    assert ch["c3"] == [8, 4] and ch["fc"] == [8, 4] and ch["side"] == [4, 2]
    assert ch["out"] == [3, 3]  # the output keeps its classes
    assert pruned.get_layer("dw").get_weights()[0].shape[-2] == 4
    assert pruned.get_layer("fc").get_weights()[0].shape[0] == 4 + 4 * 16 + 2  # GAP + flattened 4x4 + side
    x = _inputs()
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    assert pruned.count_params() < 0.5 * model.count_params()


def test_pruning_removes_the_least_important_channels():
    from converters.prune import plan

    model = _model()
    _zero(model)
    p = plan(model, 0.5, round_to=2, min_channels=2)
    kept = p.keep[p.groups.find(p.group_of["c1"])]
    assert not set(kept) & set(TIED)


def test_shared_or_unknown_layers_keep_their_channels():
    import keras
    from keras import layers as L

    from converters.prune import prune

    x = keras.Input((6,), name="x")
    h = L.Dense(8, name="d1")(x)
    h = L.Reshape((2, 4))(h)  # unknown to the pruner: d1 must keep all 8 units
    out = L.Dense(2, activation="softmax", name="o")(L.Flatten()(h))
    pruned, summary = prune(keras.Model(x, out), 0.5)
    assert summary["channels"]["d1"] == [8, 8]


def test_pruned_model_converts_to_both_int8_formats(tmp_path):
    from converters.prune import prune
    from edgemm.cli import main
    from edgemm.manifest import load_manifest

    pruned, _ = prune(_model(), 0.5, round_to=2, min_channels=2)
    pruned.save(tmp_path / "pruned.keras")
    x = _inputs(48)
    np.savez(tmp_path / "calib.npz", **x)
    result = CliRunner().invoke(main, ["convert", str(tmp_path / "pruned.keras"), "--out", str(tmp_path / "out"),
                                       "--calib", str(tmp_path / "calib.npz")])
    assert result.exit_code == 0, result.output
    manifest = load_manifest(tmp_path / "out")
    assert {"int8_tflite", "int8_onnx"} <= set(manifest.artifacts)
    assert {t["name"] for t in manifest.artifacts["int8_tflite"].inputs} == {"x", "y"}
