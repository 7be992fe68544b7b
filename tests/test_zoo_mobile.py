"""Parity of the bundled MobileNet V1, MobileNet V2 and EfficientNet-B0 specs with
keras.applications (built with weights=None): same layer names, layer configurations,
weight shapes and parameter counts, and, with the reference's (randomized) weights
copied over by layer name, the same outputs.

Where the reference numbers come from: every expected value below is read from a model
that keras.applications builds in the test itself (`keras.applications.MobileNet`,
`MobileNetV2`, `EfficientNetB0`; sources in keras/src/applications/), never typed in.
The one exception is the cross-check of the alpha-1 / B0 totals against the
`reference.keras_params` each spec records (from DESIGN.md's keras.applications 3.x
table), which must agree with the live reference too.

Input sizes: 224 where the spec's default is being checked; smaller (and some
non-multiple-of-32) sizes elsewhere to keep the file fast and to reach keras'
`correct_pad` with odd feature maps.
"""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from archspec.api import build, load, lower_spec  # noqa: E402
from parity import assert_same_structure, copy_weights_by_name, infer  # noqa: E402

BATCH = 2


# ---------------------------------------------------------------- helpers


def _randomize(model, seed=0):
    """Random weights that keep activations O(1) through a deep net: He-scaled kernels,
    batch-norm scales and variances in [0.5, 1.5], small shifts. (`parity.randomize`
    recognizes batch norms by "bn" in the layer name, which misses keras' `_BN` and
    `normalization` layers: their variances could go negative and every output NaN.)"""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        new = []
        for w in layer.weights:
            v = np.asarray(w.numpy())
            short = w.name.split("/")[-1]
            if v.dtype.kind in "iu" or short == "count":
                new.append(v)
            elif short in ("gamma", "moving_variance", "variance"):
                new.append(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))
            elif v.ndim <= 1:
                new.append((rng.standard_normal(v.shape) * 0.1).astype(v.dtype))
            else:
                if isinstance(layer, keras.layers.DepthwiseConv2D):
                    fan_in = v.shape[0] * v.shape[1]
                else:
                    fan_in = int(np.prod(v.shape[:-1]))
                new.append((rng.standard_normal(v.shape) * np.sqrt(2.0 / fan_in)).astype(v.dtype))
        layer.set_weights(new)


def _config(layer):
    c = dict(layer.get_config())
    c.pop("name", None)
    # keras.applications writes the channel axis as 3 (rank-4, channels-last); archspec as -1
    ax = c.get("axis")
    if ax == 3 or ax == (3,) or ax == [3]:
        c["axis"] = -1 if isinstance(ax, int) else type(ax)([-1])
    return type(layer).__name__, c


def assert_same_configs(ours, ref):
    """Every layer (in order) has the same class and configuration, apart from its name:
    strides, paddings, epsilons, momenta, initializers, dropout rates and noise shapes."""
    assert len(ours.layers) == len(ref.layers)
    for a, b in zip(ours.layers, ref.layers):
        assert _config(a) == _config(b), f"layer {a.name!r} differs from keras' {b.name!r}"


def _with_features(model):
    """The model returning (the classifier's input, the output): the features are checked
    too, so that a match is not just two near-uniform softmaxes agreeing."""
    feats = model.get_layer(index=len(model.layers) - 2).output
    return keras.Model(model.inputs, [feats, model.output])


def check_parity(spec, overrides, ref, size):
    """Static counts, structure, configs, then outputs with the weights copied over.
    Returns (max abs diff of the output, max abs diff of the features, params)."""
    g = lower_spec(spec, overrides)
    ours = build(g)

    # static graph counts are what Keras counts
    assert g.params == ours.count_params() == ref.count_params()
    assert g.trainable_params == sum(int(np.prod(w.shape)) for w in ref.trainable_weights)
    assert_same_structure(ours, ref)
    assert_same_configs(ours, ref)

    _randomize(ref)
    n = copy_weights_by_name(ref, ours)
    assert n == len([l for l in ref.layers if l.weights]) > 0

    x = np.random.default_rng(1).uniform(0, 255 if "efficientnet" in spec else 1,
                                         (BATCH, size, size, 3)).astype("float32")
    f_ours, y_ours = infer(_with_features(ours), x)
    f_ref, y_ref = infer(_with_features(ref), x)
    assert np.all(np.isfinite(y_ref)) and np.all(np.isfinite(f_ref))
    # the comparison is not vacuous: features vary, the softmax is far from uniform
    assert np.std(f_ref) > 1e-2
    assert np.max(y_ref) > 5.0 / y_ref.shape[-1]
    np.testing.assert_allclose(y_ours, y_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(f_ours, f_ref, atol=1e-4 * max(1.0, float(np.max(np.abs(f_ref)))), rtol=0)
    return float(np.max(np.abs(y_ours - y_ref))), float(np.max(np.abs(f_ours - f_ref))), g.params


def fresh():
    """Reset keras' auto-naming so that the reference's unnamed layers get their first
    names (`normalization`, not `normalization_3` after an earlier EfficientNet)."""
    keras.backend.clear_session()


def _reference_count(spec):
    return load(spec).reference["keras_params"]


# ---------------------------------------------------------------- MobileNet V1

# (alpha, depth_multiplier, input size); keras.applications.MobileNet(alpha, depth_multiplier)
# alpha 0.6 (not a pretrained one) makes keras' int(f * alpha) differ from make_divisible:
# 32 * 0.6 -> 19 channels
MOBILENET_CASES = [(1.0, 1, 224), (0.75, 1, 128), (0.5, 1, 160), (0.25, 1, 128), (0.6, 2, 96)]


@pytest.mark.parametrize("alpha,dm,size", MOBILENET_CASES, ids=[f"a{a}-dm{d}-{s}" for a, d, s in MOBILENET_CASES])
def test_mobilenet_v1_parity(alpha, dm, size):
    # reference: keras/src/applications/mobilenet.py, MobileNet(weights=None)
    fresh()
    ref = keras.applications.MobileNet(input_shape=(size, size, 3), alpha=alpha, depth_multiplier=dm,
                                       weights=None)
    overrides = [f"scaling.width={alpha}", f"defaults.depth_multiplier={dm}", f"input.shape=[{size},{size},3]"]
    diff, fdiff, params = check_parity("mobilenet", overrides, ref, size)
    if alpha == 1.0 and dm == 1:
        assert params == _reference_count("mobilenet")
    print(f"mobilenet alpha={alpha} dm={dm} {size}px: params={params} max|dy|={diff:.2e} max|df|={fdiff:.2e}")


# ---------------------------------------------------------------- MobileNet V2

MOBILENET_V2_CASES = [(1.0, 224), (0.35, 96), (0.5, 136), (1.3, 112), (1.4, 104)]


@pytest.mark.parametrize("alpha,size", MOBILENET_V2_CASES, ids=[f"a{a}-{s}" for a, s in MOBILENET_V2_CASES])
def test_mobilenet_v2_parity(alpha, size):
    # reference: keras/src/applications/mobilenet_v2.py, MobileNetV2(weights=None); alpha > 1
    # exercises keras' "last conv 1280 unless alpha > 1" rule (min_filters in the spec)
    fresh()
    ref = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=alpha, weights=None)
    overrides = [f"scaling.width={alpha}", f"input.shape=[{size},{size},3]"]
    diff, fdiff, params = check_parity("mobilenet_v2", overrides, ref, size)
    if alpha == 1.0:
        assert params == _reference_count("mobilenet_v2")
    print(f"mobilenet_v2 alpha={alpha} {size}px: params={params} max|dy|={diff:.2e} max|df|={fdiff:.2e}")


# ---------------------------------------------------------------- EfficientNet-B0


def test_efficientnet_b0_parity():
    # reference: keras/src/applications/efficientnet.py, EfficientNetB0(weights=None), 224px;
    # assert_same_configs also checks every stochastic-depth rate (blockNx_drop) and the
    # VarianceScaling initializers
    fresh()
    ref = keras.applications.EfficientNetB0(weights=None)
    diff, fdiff, params = check_parity("efficientnet", [], ref, 224)
    assert params == _reference_count("efficientnet")
    print(f"efficientnet-b0 224px: params={params} max|dy|={diff:.2e} max|df|={fdiff:.2e}")


def test_efficientnet_drop_rates_follow_schedule():
    # keras: drop_connect_rate * b / B over the B = 16 stage blocks; the top conv (a fixed
    # stage) is not one of them, and a rate of 0 (block 0, or drop_connect_rate 0) adds no layer
    g = lower_spec("efficientnet")
    drops = {n.name: n.attrs["rate"] for n in g.nodes if n.op == "dropout" and n.name.endswith("_drop")}
    assert drops["block2b_drop"] == pytest.approx(0.2 * 2 / 16)
    assert drops["block6d_drop"] == pytest.approx(0.2 * 14 / 16)
    assert len(drops) == 9
    g0 = lower_spec("efficientnet", ["defaults.drop_connect_rate=0.0"])
    assert not any(n.name.endswith("_drop") for n in g0.nodes)
    assert g0.params == g.params


# ---------------------------------------------------------------- scaled EfficientNets (static)

# keras.applications 3.x totals (DESIGN.md; keras' own EfficientNetB1..B7 count_params());
# the spec's presets table gives width, depth and resolution
EFFICIENTNET_PARAMS = {"b0": 5330571, "b1": 7856239, "b2": 9177569, "b3": 12320535, "b4": 19466823,
                       "b5": 30562527, "b6": 43265143, "b7": 66658687}


@pytest.mark.parametrize("preset", sorted(EFFICIENTNET_PARAMS))
def test_efficientnet_presets_count(preset):
    p = load("efficientnet").scaling.presets[preset]
    r = p.resolution
    g = lower_spec("efficientnet", [f"scaling.width={p.width}", f"scaling.depth={p.depth}",
                                    f"input.shape=[{r},{r},3]"])
    assert g.params == EFFICIENTNET_PARAMS[preset]
    # the top conv is not repeated by depth scaling
    assert sum(1 for n in g.nodes if n.name.startswith("top_conv")) == 1


def test_efficientnet_b1_structure_against_keras():
    # one scaled variant built for real: keras.applications.EfficientNetB1(weights=None)
    # at a small input (structure and configs only, no forward pass)
    fresh()
    ref = keras.applications.EfficientNetB1(input_shape=(64, 64, 3), weights=None)
    p = load("efficientnet").scaling.presets["b1"]
    g = lower_spec("efficientnet", [f"scaling.width={p.width}", f"scaling.depth={p.depth}",
                                    "input.shape=[64,64,3]"])
    ours = build(g)
    assert g.params == ours.count_params() == ref.count_params()
    assert_same_structure(ours, ref)
    assert_same_configs(ours, ref)
