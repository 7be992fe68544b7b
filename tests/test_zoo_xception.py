"""Xception, written in the open spec language (specs/xception.yaml: a `define:`d unit,
`parallel` (add-merged) and `sequence` compositions, `separable_conv`), against
keras.applications.Xception.

- Static (no Keras): the parameter count is keras' 22,910,480, and the same count follows
  from Chollet's Figure 5 by formula, which also gives the counts after width and depth
  scaling (`--set scaling.width=0.5`, `scaling.depth=2`); keras' unnamed layers carry
  their automatic names.
- Parity (slow): the reference is built once for the module, in a fresh Keras session (its
  unnamed shortcut layers get their first automatic names); same layer names, weight
  shapes and parameter counts, every static shape equal to Keras', and with the
  reference's randomized weights copied over, the same features and outputs.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from archspec import analyze
from archspec.api import lower_spec
from archspec.language.rounding import make_divisible

SPEC = "xception"
KERAS_PARAMS = 22_910_480  # keras.applications.Xception(weights=None).count_params()

# (block, first separable conv's filters, second's, shortcut index k): entry and exit flow
DOWN = [("block2", 128, 128, 0), ("block3", 256, 256, 1), ("block4", 728, 728, 2), ("block13", 728, 1024, 3)]


# ---------------------------------------------------------------- counts by formula (Figure 5)


def _bn(c):
    return 4 * c  # gamma, beta, moving mean, moving variance


def _sep(cin, cout, k=3):
    return k * k * cin + cin * cout  # depthwise + pointwise, no bias


def xception_params(width=1.0, middle=8, classes=1000):
    """Xception's parameter count from the architecture (Figure 5 / keras' code): every
    channel count rounded as width scaling rounds it (make_divisible(c * width, 8))."""
    w = (lambda c: make_divisible(c * width, 8)) if width != 1.0 else (lambda c: c)
    p = 3 * 3 * 3 * w(32) + _bn(w(32)) + 3 * 3 * w(32) * w(64) + _bn(w(64))  # block1 (valid 3x3, no bias)
    cin = w(64)
    for _, f1, f2, _k in DOWN[:3]:
        f1, f2 = w(f1), w(f2)
        p += _sep(cin, f1) + _bn(f1) + _sep(f1, f2) + _bn(f2) + cin * f2 + _bn(f2)  # + 1x1/2 shortcut
        cin = f2
    m = w(728)
    p += middle * 3 * (_sep(m, m) + _bn(m))
    _, f1, f2, _k = DOWN[3]
    f1, f2 = w(f1), w(f2)
    p += _sep(m, f1) + _bn(f1) + _sep(f1, f2) + _bn(f2) + m * f2 + _bn(f2)
    p += _sep(f2, w(1536)) + _bn(w(1536)) + _sep(w(1536), w(2048)) + _bn(w(2048))  # block14
    p += w(2048) * classes + classes
    return p


def test_params_match_keras_and_the_formula():
    g = lower_spec(SPEC)
    assert g.params == KERAS_PARAMS == xception_params()
    a = analyze(SPEC)
    assert a["params"] == KERAS_PARAMS
    # non-trainable: the batch norms' moving mean and variance
    bn_channels = (32 + 64 + 128 * 3 + 256 * 3 + 728 * 3 + 8 * 3 * 728 + 728 + 1024 * 2 + 1536 + 2048)
    assert a["trainable_params"] == KERAS_PARAMS - 2 * bn_channels
    assert g.node("predictions").shape == (1000,)
    assert g.node("block14_sepconv2_act").shape == (10, 10, 2048)
    # Chollet (2017), Table 3: 22,855,952 parameters (the trainable ones: keras' count adds
    # the batch norms' moving statistics); Figure 5: the entry flow ends at 19x19x728
    assert g.trainable_params == 22_855_952
    assert g.node("add_2").shape == (19, 19, 728)
    assert g.macs == xception_macs()


def xception_macs():
    """Multiply-accumulates at 299x299: 149 and 147 after the valid 3x3 convs, then 74,
    37, 19 and 10 after each 3x3/2 'same' max pool (and its 1x1/2 shortcut conv)."""
    def sep(side, cin, cout):
        return side * side * (9 * cin + cin * cout)

    m = 149 * 149 * 27 * 32 + 147 * 147 * 9 * 32 * 64
    m += sep(147, 64, 128) + sep(147, 128, 128) + 74 * 74 * 64 * 128
    m += sep(74, 128, 256) + sep(74, 256, 256) + 37 * 37 * 128 * 256
    m += sep(37, 256, 728) + sep(37, 728, 728) + 19 * 19 * 256 * 728
    m += 8 * 3 * sep(19, 728, 728)
    m += sep(19, 728, 728) + sep(19, 728, 1024) + 10 * 10 * 728 * 1024
    m += sep(10, 1024, 1536) + sep(10, 1536, 2048)
    return m + 2048 * 1000


def test_keras_automatic_names_are_given_explicitly():
    g = lower_spec(SPEC)
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))
    sc = [n for n in g.nodes if n.op == "conv2d" and n.name.startswith("conv2d")]
    assert [n.name for n in sc] == ["conv2d", "conv2d_1", "conv2d_2", "conv2d_3"]
    assert all(n.attrs["strides"] in (2, (2, 2), [2, 2]) for n in sc)
    adds = [n.name for n in g.nodes if n.op == "add"]
    assert adds == ["add"] + [f"add_{i}" for i in range(1, 12)]
    bns = [n.name for n in g.nodes if n.name.startswith("batch_normalization")]
    assert bns == ["batch_normalization"] + [f"batch_normalization_{i}" for i in range(1, 4)]
    # the middle flow: blocks 5..12, three separable convs each, added to their input
    for b in range(5, 13):
        assert g.node(f"block{b}_sepconv3_bn").shape == (19, 19, 728)
        assert g.node(f"add_{b - 2}").inputs == [f"block{b}_sepconv3_bn", f"add_{b - 3}"]  # body first, as keras
    # block2 has no ReLU before its first separable conv
    assert "block2_sepconv1_act" not in names and "block3_sepconv1_act" in names


def test_width_and_depth_scaling():
    base = analyze(SPEC)
    half = analyze(SPEC, overrides=["scaling.width=0.5"])
    deep = analyze(SPEC, overrides=["scaling.depth=2"])
    assert half["params"] == xception_params(width=0.5)
    assert deep["params"] == xception_params(middle=16)
    # depth repeats the middle flow only: 8 more blocks of 3 x (sepconv 728 + BN)
    assert deep["params"] - base["params"] == 8 * 3 * (_sep(728, 728) + _bn(728))
    assert half["params"] < base["params"] / 3  # the 1x1 convs dominate: ~1/4
    assert half["macs"] < base["macs"] / 3
    assert deep["macs"] > base["macs"] * 1.5
    g = lower_spec(SPEC, ["scaling.depth=2"])
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))
    assert "block20_sepconv3_bn" in names and "block22_sepconv2_act" in names
    assert g.node("block20_sepconv3_bn").shape == (19, 19, 728)
    assert [n.name for n in g.nodes if n.op == "add"][-1] == "add_19"
    h = lower_spec(SPEC, ["scaling.width=0.5"])
    assert h.node("block5_sepconv1").shape[-1] == make_divisible(728 * 0.5, 8) == 368
    assert h.node("block14_sepconv2_act").shape == (10, 10, 1024)


# ---------------------------------------------------------------- parity with keras.applications


@pytest.fixture(scope="module")
def models():
    keras = pytest.importorskip("keras")
    from archspec.api import build

    keras.backend.clear_session()  # the reference's unnamed layers get their first automatic names
    ref = keras.applications.Xception(weights=None)
    g = lower_spec(SPEC)
    ours = build(g, seed=1)
    yield keras, g, ours, ref
    del ours, ref
    keras.backend.clear_session()
    gc.collect()


def _randomize(keras, model, seed=0):
    """Fan-in-scaled random weights (std sqrt(1 / fan-in)), batch-norm scales and
    variances in [0.5, 1.5]. In inference the batch norms do not renormalize, so He
    scaling (2 / fan-in per kernel: x4 in variance for each separable conv) would grow the
    activations to ~1e7 over the 12 residual adds and saturate the softmax; with these,
    each middle-flow body has a gain of ~0.2 and the features stay O(1)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        new = []
        for w, v in zip(layer.weights, layer.get_weights()):
            short = w.name.split("/")[-1]
            if short in ("gamma", "moving_variance"):
                new.append(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))
            elif v.ndim <= 1:
                new.append((rng.standard_normal(v.shape) * 0.1).astype(v.dtype))
            else:
                # separable convs: the depthwise kernel (3, 3, C, 1) sees 9 inputs, the pointwise (1, 1, C, F) C
                fan_in = v.shape[0] * v.shape[1] if short == "depthwise_kernel" else int(np.prod(v.shape[:-1]))
                new.append((rng.standard_normal(v.shape) * np.sqrt(1.0 / fan_in)).astype(v.dtype))
        layer.set_weights(new)


@pytest.mark.slow
def test_structure_matches_keras_applications(models):
    keras, g, ours, ref = models
    from parity import assert_same_structure

    assert_same_structure(ours, ref)
    # not only the same stems: the exact names, unnamed layers included
    assert [l.name for l in ours.layers] == [l.name for l in ref.layers]
    assert ours.count_params() == ref.count_params() == g.params == KERAS_PARAMS
    assert g.trainable_params == sum(int(np.prod(w.shape)) for w in ref.trainable_weights)
    for node in g.nodes:  # every static shape is Keras'
        if node.op != "input":
            assert tuple(ref.get_layer(node.name).output.shape[1:]) == tuple(node.shape), node.name
    for a, b in zip(ours.layers, ref.layers):  # strides, paddings, epsilons, momenta, activations
        ca, cb = a.get_config(), b.get_config()
        for k in ("strides", "padding", "kernel_size", "epsilon", "momentum", "use_bias", "activation",
                  "depth_multiplier", "pool_size"):
            if k in cb:
                assert ca.get(k) == cb[k], (a.name, k)
        assert type(a).__name__ == type(b).__name__, a.name


@pytest.mark.slow
def test_outputs_match_keras_applications(models):
    keras, g, ours, ref = models
    from parity import assert_not_degenerate, copy_weights_by_name, infer

    _randomize(keras, ref, seed=3)
    assert copy_weights_by_name(ref, ours) == len([l for l in ref.layers if l.weights])
    x = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype("float32")  # preprocess_input's range

    def with_features(m):
        return keras.Model(m.inputs, [m.get_layer("avg_pool").output, m.output])

    f_ours, y_ours = infer(with_features(ours), x)
    f_ref, y_ref = infer(with_features(ref), x)
    assert_not_degenerate([f_ref, y_ref])
    assert np.std(f_ref) > 1e-2 and y_ref.max() > 5.0 / y_ref.shape[-1]  # a far from uniform softmax
    diff_y = float(np.max(np.abs(y_ours - y_ref)))
    diff_f = float(np.max(np.abs(f_ours - f_ref)) / np.max(np.abs(f_ref)))
    print(f"xception: max |output diff| {diff_y:.3g}, max relative feature diff {diff_f:.3g}")
    assert diff_y <= 1e-5
    assert diff_f <= 1e-4
