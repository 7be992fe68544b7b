"""ConvNeXt-T, written in the open spec language (specs/convnext_tiny.yaml: a `define:`d
block over `residual`, `layer_norm`, `layer_scale`, `identity`, a grouped conv and dense
layers on 4-D tensors), against keras.applications.ConvNeXtTiny.

- Static (no Keras): keras' 28,589,128 parameters, the same count from the architecture by
  formula, which also gives the counts after width and depth scaling.
- Parity (slow): the reference is built once for the module. keras builds the stem and
  the downsampling layers as nested Sequential models and ends each block with a bare
  `inputs + x`, so the structure is compared through the nested models' leaf layers
  (`parity.assert_same_named_structure`); then, with the reference's randomized weights
  copied over, the same features and outputs.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from archspec import analyze
from archspec.api import lower_spec

SPEC = "convnext_tiny"
KERAS_PARAMS = 28_589_128  # keras.applications.ConvNeXtTiny(weights=None).count_params()
DEPTHS = (3, 3, 9, 3)
DIMS = (96, 192, 384, 768)
P = "convnext_tiny"


# ---------------------------------------------------------------- counts by formula


def block_params(c):
    """7x7 depthwise (groups=c, bias) + LN + dense c->4c + dense 4c->c + layer scale."""
    return (49 * c + c) + 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c) + c


def convnext_params(depths=DEPTHS, dims=DIMS, classes=1000):
    p = 4 * 4 * 3 * dims[0] + dims[0] + 2 * dims[0]  # stem: 4x4/4 conv + LN (the prestem has no weights)
    for i, (d, c) in enumerate(zip(depths, dims)):
        if i:
            p += 2 * dims[i - 1] + 2 * 2 * dims[i - 1] * c + c  # downsampling: LN + 2x2/2 conv
        p += d * block_params(c)
    return p + 2 * dims[-1] + dims[-1] * classes + classes  # head: LN + dense


def test_params_match_keras_and_the_formula():
    g = lower_spec(SPEC)
    assert g.params == KERAS_PARAMS == convnext_params()
    a = analyze(SPEC)
    assert a["params"] == a["trainable_params"] == KERAS_PARAMS  # no batch norm: all trainable
    # Liu et al. (2022) give ConvNeXt-T 28M params and 4.5G FLOPs (multiply-adds) at 224
    assert g.macs / 1e9 == pytest.approx(4.5, rel=0.02)
    assert g.node(f"{P}_stem_layernorm").shape == (56, 56, 96)
    for i, (d, c) in enumerate(zip(DEPTHS, DIMS)):
        side = 56 // 2 ** i
        last = f"{P}_stage_{i}_block_{d - 1}"
        assert g.node(f"{last}_identity").shape == (side, side, c)
        assert g.node(f"{last}_pointwise_conv_1").shape == (side, side, 4 * c)  # dense on the 4-D tensor
        dw = g.node(f"{P}_stage_{i}_block_0_depthwise_conv")
        assert dw.op == "conv2d" and dw.attrs["groups"] == c and dw.params == 49 * c + c
        assert g.node(f"{P}_stage_{i}_block_0_layer_scale").params == c
    assert g.node(f"{P}_head_dense").shape == (1000,)
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))


def test_width_and_depth_scaling():
    base = analyze(SPEC)
    half = analyze(SPEC, overrides=["scaling.width=0.5"])
    deep = analyze(SPEC, overrides=["scaling.depth=2"])
    assert half["params"] == convnext_params(dims=tuple(c // 2 for c in DIMS))
    assert deep["params"] == convnext_params(depths=tuple(2 * d for d in DEPTHS))
    # depth repeats the blocks only, not the stem or the downsampling layers
    assert deep["params"] - base["params"] == sum(d * block_params(c) for d, c in zip(DEPTHS, DIMS))
    assert half["params"] < base["params"] / 3 and half["macs"] < base["macs"] / 3
    assert deep["macs"] > base["macs"] * 1.9
    g = lower_spec(SPEC, ["scaling.depth=2"])
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))
    assert f"{P}_stage_2_block_17_layer_scale" in names and f"{P}_stage_2_block_18_layer_scale" not in names
    assert sum(n.startswith(f"{P}_downsampling_conv_") for n in names) == 3
    h = lower_spec(SPEC, ["scaling.width=0.5"])
    assert h.node(f"{P}_stage_3_block_2_pointwise_conv_1").shape == (7, 7, 4 * 384)
    assert h.node(f"{P}_stage_0_block_0_depthwise_conv").attrs["groups"] == 48


# ---------------------------------------------------------------- parity with keras.applications


@pytest.fixture(scope="module")
def models():
    keras = pytest.importorskip("keras")
    from archspec.api import build

    keras.backend.clear_session()
    ref = keras.applications.ConvNeXtTiny(weights=None)
    g = lower_spec(SPEC)
    ours = build(g, seed=1)
    # keras' initial layer scale, read before any test copies weights over
    init_scale = ours.get_layer(f"{P}_stage_3_block_2_layer_scale").get_weights()[0]
    yield keras, g, ours, ref, init_scale
    del ours, ref
    keras.backend.clear_session()
    gc.collect()


def _randomize(keras, model, seed=0):
    """Fan-in-scaled random weights, in every leaf layer (nested models included).
    `parity.randomize` would draw layer norms' gamma and the layer scales around 0
    (0.05 * N(0, 1)), which would shrink every residual branch to almost nothing and let
    the head's layer norm amplify rounding: here gamma is in [0.8, 1.2], the layer
    scales in [0.3, 0.6], so every block changes the features."""
    from parity import leaf_layers

    rng = np.random.default_rng(seed)
    n = 0
    for layer in leaf_layers(model):
        if not layer.weights:
            continue
        new = []
        for w, v in zip(layer.weights, layer.get_weights()):
            if isinstance(layer, keras.layers.LayerNormalization):
                if w.name == "gamma":
                    new.append(rng.uniform(0.8, 1.2, v.shape).astype(v.dtype))
                else:
                    new.append((rng.standard_normal(v.shape) * 0.1).astype(v.dtype))
            elif type(layer).__name__ == "LayerScale":
                new.append(rng.uniform(0.3, 0.6, v.shape).astype(v.dtype))
            elif v.ndim <= 1:  # biases
                new.append((rng.standard_normal(v.shape) * 0.1).astype(v.dtype))
            else:  # conv kernels (grouped: (7, 7, 1, C), fan-in 49) and dense kernels on 4-D tensors
                fan_in = int(np.prod(v.shape[:-1]))
                new.append((rng.standard_normal(v.shape) * np.sqrt(1.0 / fan_in)).astype(v.dtype))
        layer.set_weights(new)
        n += 1
    return n


@pytest.mark.slow
def test_structure_matches_keras_applications(models):
    keras, g, ours, ref, init_scale = models
    from parity import assert_same_named_structure, leaf_layers

    assert_same_named_structure(ours, ref)
    assert ours.count_params() == ref.count_params() == g.params == KERAS_PARAMS
    ref_leaves = {l.name: l for l in leaf_layers(ref)}
    ours_leaves = {l.name: l for l in leaf_layers(ours)}
    # ours has only the adds (keras' bare `inputs + x`) besides keras' layers
    extra = set(ours_leaves) - set(ref_leaves)
    assert extra == {f"{P}_stage_{i}_block_{j}_add" for i, d in enumerate(DEPTHS) for j in range(d)}
    checked = 0
    for node in g.nodes:  # static shapes are Keras'
        if node.name in ref_leaves and node.op != "input":
            assert tuple(ref_leaves[node.name].output.shape[1:]) == tuple(node.shape), node.name
            checked += 1
    assert checked == len(ref_leaves) - 1
    # the layers keras writes, with its configuration (grouped conv, dense on 4-D, epsilons)
    for name, b in ref_leaves.items():
        a = ours_leaves[name]
        cb, ca = b.get_config(), a.get_config()
        if name.endswith("_identity"):  # keras' Activation("linear"), the `identity` primitive here
            assert cb["activation"] == "linear" and not a.weights
            continue
        assert type(a).__name__ == type(b).__name__, name
        for k in ("filters", "kernel_size", "strides", "padding", "groups", "use_bias", "units", "epsilon",
                  "activation", "mean", "variance", "axis"):
            if k in cb:
                assert ca.get(k) == cb[k], (name, k, ca.get(k), cb[k])
    dw = ours_leaves[f"{P}_stage_1_block_0_depthwise_conv"]
    assert tuple(dw.kernel.shape) == (7, 7, 1, 192)
    # keras' initial layer scale (1e-6, before any weights are copied); identities without weights
    assert init_scale.shape == (768,) and np.all(init_scale == np.float32(1e-6))
    assert not ours_leaves[f"{P}_stage_0_block_0_identity"].weights


@pytest.mark.slow
def test_outputs_match_keras_applications(models):
    keras, g, ours, ref, init_scale = models
    from parity import assert_not_degenerate, copy_leaf_weights_by_name, infer, leaf_layers

    n = _randomize(keras, ref, seed=3)
    assert copy_leaf_weights_by_name(ref, ours) == n == len([l for l in leaf_layers(ref) if l.weights])
    # pixels in [0, 255]: the model normalizes them itself (the prestem)
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")

    def with_features(m):
        return keras.Model(m.inputs, [m.get_layer(f"{P}_head_layernorm").output, m.output])

    f_ours, y_ours = infer(with_features(ours), x)
    f_ref, y_ref = infer(with_features(ref), x)
    assert_not_degenerate([f_ref, y_ref])
    assert np.std(f_ref) > 0.5 and y_ref.max() > 5.0 / y_ref.shape[-1]  # a far from uniform softmax
    # the two images give different features, not only rounding apart
    assert np.max(np.abs(f_ref[0] - f_ref[1])) > 0.1
    diff_y = float(np.max(np.abs(y_ours - y_ref)))
    diff_f = float(np.max(np.abs(f_ours - f_ref)))
    print(f"convnext_tiny: max |output diff| {diff_y:.3g}, max |feature diff| {diff_f:.3g}")
    assert diff_y <= 1e-5
    assert diff_f <= 1e-4
