"""DenseNet-121/169/201 written in the open spec language: `densenet121.yaml` defines the
dense layer and the transition (`define:`) and the network from them; `densenet169` and
`densenet201` extend it and change only the number of dense layers per block.

Against references archspec did not write:
- keras.applications.DenseNet121/169/201 (built in the tests with weights=None): same
  layer names, weight shapes and parameter counts, and, with the reference's randomized
  weights copied over by layer name, the same outputs (logits, to 1e-5);
- keras' parameter totals (also recorded as each spec's `reference.keras_params`) and a
  count derived by hand from the paper's layout (Huang et al. 2017, Table 1), checked
  statically, without Keras.

Each keras reference is built once (module-scoped fixture); DenseNet-169/201 are `slow`.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from archspec.api import analyze, load, lower_spec

LAYOUT = {"densenet121": [6, 12, 24, 16], "densenet169": [6, 12, 32, 32], "densenet201": [6, 12, 48, 32]}
# keras.applications 3.x, DenseNet121/169/201(weights=None): count_params() and trainable weights
KERAS_PARAMS = {"densenet121": 8_062_504, "densenet169": 14_307_880, "densenet201": 20_242_984}
KERAS_TRAINABLE = {"densenet121": 7_978_856, "densenet169": 14_149_480, "densenet201": 20_013_928}
FEATURES = {"densenet121": 1024, "densenet169": 1664, "densenet201": 1920}


def by_hand(blocks, growth=32, bottleneck=4, stem=64, classes=1000, reduction=0.5):
    """(params, trainable params, final channels) of DenseNet-BC from its layout, counted as
    keras counts (batch norm: gamma, beta and the two moving statistics), no conv bias."""
    params = trainable = 0

    def bn(c):
        nonlocal params, trainable
        params, trainable = params + 4 * c, trainable + 2 * c

    def weights(n):
        nonlocal params, trainable
        params, trainable = params + n, trainable + n

    weights(7 * 7 * 3 * stem)
    bn(stem)
    c, inner = stem, bottleneck * growth
    for s, n in enumerate(blocks):
        for _ in range(n):
            bn(c)
            weights(c * inner)  # 1x1 conv
            bn(inner)
            weights(3 * 3 * inner * growth)  # 3x3 conv
            c += growth
        if s < len(blocks) - 1:  # transition
            bn(c)
            weights(c * int(c * reduction))
            c = int(c * reduction)
    bn(c)
    weights(c * classes + classes)
    return params, trainable, c


# ---------------------------------------------------------------- static: no Keras


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_counts_match_keras_and_the_paper(name):
    g = lower_spec(name)
    params, trainable, c = by_hand(LAYOUT[name])
    assert (params, trainable, c) == (KERAS_PARAMS[name], KERAS_TRAINABLE[name], FEATURES[name])
    assert (g.params, g.trainable_params) == (params, trainable)
    assert load(name).reference["keras_params"] == KERAS_PARAMS[name]
    # Table 1: dense blocks at 56, 28, 14, 7; the transitions halve the channels and the size
    for s, n in enumerate(LAYOUT[name]):
        stage = f"conv{s + 2}"
        concats = [x for x in g.nodes if x.name.startswith(f"{stage}_block") and x.op == "concat"]
        assert len(concats) == n
        assert concats[-1].name == f"{stage}_block{n}_concat"
        size = 56 // 2 ** s
        assert [x.shape[:2] for x in concats] == [(size, size)] * n
        assert g.node(f"{stage}_block1_2_conv").shape[-1] == 32
        assert g.node(f"{stage}_block1_1_conv").shape[-1] == 128
        if s < 3:
            before = concats[-1].shape[-1]
            assert g.node(f"pool{s + 2}_pool").shape == (size // 2, size // 2, before // 2)
    assert g.node("relu").shape == (7, 7, FEATURES[name])
    assert g.outputs == ["predictions"]
    # no bias anywhere but the classifier; every 3x3 is 'same', every pool 2x2/2 in transitions
    convs = [x for x in g.nodes if x.op == "conv2d"]
    assert not any(x.attrs["use_bias"] for x in convs)
    assert all(x.attrs["activation"] is None for x in convs)


def test_dense_layer_and_transition_nodes():
    """One dense layer and one transition, node by node as keras writes them."""
    g = lower_spec("densenet121")
    rows = [(x.name, x.op, x.shape, x.inputs) for x in g.nodes
            if x.name.startswith("conv2_block2_") or x.name.startswith("pool2_")]
    assert rows == [
        ("conv2_block2_0_bn", "batch_norm", (56, 56, 96), ["conv2_block1_concat"]),
        ("conv2_block2_0_relu", "activation", (56, 56, 96), ["conv2_block2_0_bn"]),
        ("conv2_block2_1_conv", "conv2d", (56, 56, 128), ["conv2_block2_0_relu"]),
        ("conv2_block2_1_bn", "batch_norm", (56, 56, 128), ["conv2_block2_1_conv"]),
        ("conv2_block2_1_relu", "activation", (56, 56, 128), ["conv2_block2_1_bn"]),
        ("conv2_block2_2_conv", "conv2d", (56, 56, 32), ["conv2_block2_1_relu"]),
        ("conv2_block2_concat", "concat", (56, 56, 128), ["conv2_block1_concat", "conv2_block2_2_conv"]),
        ("pool2_bn", "batch_norm", (56, 56, 256), ["conv2_block6_concat"]),
        ("pool2_relu", "activation", (56, 56, 256), ["pool2_bn"]),
        ("pool2_conv", "conv2d", (56, 56, 128), ["pool2_relu"]),
        ("pool2_pool", "avg_pool", (28, 28, 128), ["pool2_conv"]),
    ]
    assert g.node("conv2_block2_2_conv").attrs["kernel"] == (3, 3)
    assert g.node("conv2_block2_1_bn").attrs["epsilon"] == 1.001e-5


def test_169_and_201_share_121s_definitions():
    """The bigger networks define nothing themselves: their dense layers are 121's, node for node."""
    a = {x.name: x for x in lower_spec("densenet121").nodes}
    for name in ("densenet169", "densenet201"):
        b = {x.name: x for x in lower_spec(name).nodes}
        for n in [n for n in a if n.startswith("conv2_") or n.startswith("conv3_")]:
            assert (b[n].op, b[n].shape, b[n].params, b[n].attrs) == (a[n].op, a[n].shape, a[n].params, a[n].attrs)


def test_width_and_depth_scaling():
    base = analyze("densenet121")
    # width 0.5: the growth rate (a width param of the defined dense layer) and the stem halve;
    # the transitions follow their input's channels
    half = analyze("densenet121", overrides=["scaling.width=0.5"])
    params, trainable, c = by_hand(LAYOUT["densenet121"], growth=16, stem=32)
    assert (half["params"], half["trainable_params"]) == (params, trainable)
    layers = {x["name"]: x for x in half["layers"]}
    assert layers["conv2_block1_2_conv"]["output_shape"][-1] == 16
    assert layers["conv2_block1_1_conv"]["output_shape"][-1] == 64
    assert layers["relu"]["output_shape"] == [7, 7, c]
    assert half["macs"] < base["macs"] / 3
    # depth 2: twice the dense layers per block, still three transitions and one final BN
    deep = analyze("densenet121", overrides=["scaling.depth=2"])
    params, trainable, c = by_hand([12, 24, 48, 32])
    assert (deep["params"], deep["trainable_params"]) == (params, trainable)
    names = {x["name"] for x in deep["layers"]}
    assert {"conv2_block12_concat", "conv5_block32_concat"} <= names
    assert "conv2_block13_concat" not in names
    assert sum(1 for n in names if n.endswith("_pool") and n.startswith("pool")) == 3
    assert sum(1 for x in deep["layers"] if x["op"] == "batch_norm") == 1 + 2 * 116 + 3 + 1


# ---------------------------------------------------------------- Keras: parity with keras.applications

REFS = {"densenet121": "DenseNet121", "densenet169": "DenseNet169", "densenet201": "DenseNet201"}
# 121 at its default input; the bigger two at a smaller one (the weights do not depend on it;
# 96 -> 3x3 features after conv5) to keep the forward passes quick
SIZE = {"densenet121": 224, "densenet169": 96, "densenet201": 96}


def same_outputs(ours, ref, shape, atol, seed=0, batch=2):
    from parity import same_outputs_eager

    return same_outputs_eager(ours, ref, shape, atol, seed, batch)


@pytest.fixture(scope="module", params=[
    "densenet121",
    pytest.param("densenet169", marks=pytest.mark.slow),
    pytest.param("densenet201", marks=pytest.mark.slow),
])
def pair(request):
    """(name, ours, reference, layers copied) for one DenseNet, each built once, the
    reference's randomized weights copied into ours. Both end in logits (no softmax): with
    random weights the 1000-way softmax of a deep DenseNet is nearly uniform, and DenseNet-201's
    differs between two images by less than 1e-6, too little for a comparison to mean anything."""
    keras = pytest.importorskip("keras")
    from parity import copy_weights_by_name, randomize

    from archspec.api import build

    name = request.param
    size = SIZE[name]
    ref = getattr(keras.applications, REFS[name])(weights=None, classifier_activation=None,
                                                  input_shape=(size, size, 3))
    ours = build(name, ["head.classifier_activation=null", f"input.shape=[{size},{size},3]"], seed=1)
    randomize(ref, seed=3)
    copied = copy_weights_by_name(ref, ours)
    yield name, ours, ref, copied
    del ours, ref
    keras.backend.clear_session()
    gc.collect()


def test_same_structure_as_keras(pair):
    from parity import assert_same_structure

    name, ours, ref, copied = pair
    assert_same_structure(ours, ref)  # names, weight shapes in order, count_params
    assert ours.count_params() == KERAS_PARAMS[name] == lower_spec(name).params  # any input size
    assert copied == len([l for l in ref.layers if l.weights])
    # keras leaves the stem's two paddings unnamed; ours carry the names keras gives them
    assert [l.name for l in ours.layers[1:7]] == [
        "zero_padding2d", "conv1_conv", "conv1_bn", "conv1_relu", "zero_padding2d_1", "pool1"]


def test_same_outputs_as_keras(pair):
    name, ours, ref, _ = pair
    diff = same_outputs(ours, ref, (SIZE[name], SIZE[name], 3), atol=1e-5)
    assert diff <= 1e-5
    print(f"{name}: max |logit diff| {diff:.3g}")
