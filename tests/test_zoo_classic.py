"""The classic ImageNet networks (AlexNet, VGG16/19, GoogLeNet) and the two CIFAR-100
models of the source notes.

- VGG16/VGG19: parity with keras.applications (names, weight shapes, outputs).
- AlexNet, GoogLeNet (not in keras.applications): static counts == Keras', static
  shapes == Keras' layer by layer, and counts derived by hand from the papers.
- CIFAR-100 CNN and VGG-16: the totals the notes' printed summaries give.

Big models are built once each, at batch 1-2, to keep this file quick on a small CPU.
"""

from __future__ import annotations

import gc
import math

import numpy as np
import pytest

from archspec.api import analyze, build, lower_spec
from archspec.core.errors import SpecError

keras = pytest.importorskip("keras")

from parity import assert_same_outputs, assert_same_structure, copy_weights_by_name, infer, randomize  # noqa: E402


def _free():
    keras.backend.clear_session()
    gc.collect()


def _assert_static_matches_keras(graph, model):
    """Static params == count_params(); every node's static shape == its Keras layer's output shape."""
    assert graph.params == model.count_params()
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert graph.trainable_params == trainable
    checked = 0
    for node in graph.nodes:
        if node.op == "input":
            continue
        out = model.get_layer(node.name).output
        assert tuple(out.shape[1:]) == tuple(node.shape), node.name
        checked += 1
    assert checked == len(model.layers) - 1  # every layer but the input


# ---------------------------------------------------------------- VGG: parity with keras.applications


@pytest.mark.parametrize("spec, ref_name", [("vgg16", "VGG16"), ("vgg19", "VGG19")])
def test_vgg_parity_with_keras_applications(spec, ref_name):
    ref = getattr(keras.applications, ref_name)(weights=None)
    ours = build(f"specs/{spec}.yaml", seed=1)
    try:
        assert_same_structure(ours, ref)
        assert ours.count_params() == lower_spec(f"specs/{spec}.yaml").params
        randomize(ref, seed=3)
        assert copy_weights_by_name(ref, ours) == len([l for l in ref.layers if l.weights])
        diff = assert_same_outputs(ours, ref, (224, 224, 3), atol=1e-5, batch=1)
        assert diff <= 1e-5
    finally:
        del ours, ref
        _free()


def test_vgg_counts_match_keras_reference_figures():
    # DESIGN.md's reference counts, from keras.applications 3.x
    assert lower_spec("specs/vgg16.yaml").params == 138_357_544
    assert lower_spec("specs/vgg19.yaml").params == 143_667_240
    # Simonyan & Zisserman quote ~15.5 / ~19.6 GFLOPs (multiply-adds) at 224x224
    assert lower_spec("specs/vgg16.yaml").macs / 1e9 == pytest.approx(15.5, rel=0.01)
    assert lower_spec("specs/vgg19.yaml").macs / 1e9 == pytest.approx(19.6, rel=0.01)


def test_too_small_input_names_the_layer_and_the_line():
    with pytest.raises(SpecError) as info:
        lower_spec("specs/vgg16.yaml", ["input.shape=[16,16,3]"])
    err = info.value
    # 16 -> 8 -> 4 -> 2 -> 1 after block4_pool; block5_pool (2x2/2) gets 1x1
    assert "block5_pool" in err.message
    assert "too small" in err.message
    assert err.location is not None and err.location.line is not None
    assert err.location.source.endswith("vgg16.yaml")
    assert err.path == "stages[4].blocks[1]"


# ---------------------------------------------------------------- the source notes' CIFAR-100 models

# The notes' printed model.summary() (notes 001): (layer, output shape, params).
NOTES_CNN = [
    ("conv2d", (30, 30, 16), 448), ("max_pooling2d", (15, 15, 16), 0),
    ("conv2d_1", (13, 13, 32), 4640), ("max_pooling2d_1", (6, 6, 32), 0),
    ("flatten", (1152,), 0), ("dense", (256,), 295168), ("dense_1", (100,), 25700),
]
NOTES_CNN_TOTAL = 325_956
# VGG-16 on 32x32: the summary's conv names lack some underscores ("block2conv1"); its
# code, and keras, write block2_conv1. Shapes and params as printed.
NOTES_VGG = [
    ("block1_conv1", (32, 32, 64), 1792), ("block1_conv2", (32, 32, 64), 36928), ("block1_pool", (16, 16, 64), 0),
    ("block2_conv1", (16, 16, 128), 73856), ("block2_conv2", (16, 16, 128), 147584),
    ("block2_pool", (8, 8, 128), 0),
    ("block3_conv1", (8, 8, 256), 295168), ("block3_conv2", (8, 8, 256), 590080),
    ("block3_conv3", (8, 8, 256), 590080), ("block3_pool", (4, 4, 256), 0),
    ("block4_conv1", (4, 4, 512), 1180160), ("block4_conv2", (4, 4, 512), 2359808),
    ("block4_conv3", (4, 4, 512), 2359808), ("block4_pool", (2, 2, 512), 0),
    ("block5_conv1", (2, 2, 512), 2359808), ("block5_conv2", (2, 2, 512), 2359808),
    ("block5_conv3", (2, 2, 512), 2359808), ("block5_pool", (1, 1, 512), 0),
    ("flatten", (512,), 0), ("fc1", (4096,), 2101248), ("fc2", (4096,), 16781312),
    ("predictions", (100,), 409700),
]
NOTES_VGG_TOTAL = 34_006_948


@pytest.mark.parametrize("spec, rows, total", [
    ("cifar100_cnn", NOTES_CNN, NOTES_CNN_TOTAL),
    ("vgg16_cifar100", NOTES_VGG, NOTES_VGG_TOTAL),
])
def test_cifar100_models_match_the_notes(spec, rows, total):
    a = analyze(f"specs/{spec}.yaml")
    # the notes rescale before training; the spec does it in a first layer without parameters
    layers = [(l["name"], tuple(l["output_shape"]), l["params"]) for l in a["layers"]
              if l["op"] not in ("input", "rescaling")]
    assert layers == rows
    assert sum(p for _, _, p in rows) == total  # the printed rows add up to the printed total
    assert a["params"] == total
    assert a["trainable_params"] == total
    g = lower_spec(f"specs/{spec}.yaml")
    model = build(g, seed=0)
    try:
        _assert_static_matches_keras(g, model)
        y = infer(model, np.zeros((2, 32, 32, 3), "float32"))
        assert y.shape == (2, 100)
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)
    finally:
        del model
        _free()


def test_cifar_vgg_extends_vgg16():
    base = {n.name: n for n in lower_spec("specs/vgg16.yaml").nodes}
    cifar = lower_spec("specs/vgg16_cifar100.yaml")
    assert [n.name for n in cifar.nodes] == list(base)
    # the conv weights are the same as ImageNet VGG-16's; only fc1 (input 512, not 25088) and
    # the 100-way classifier change
    same = [n.name for n in cifar.nodes if n.params == base[n.name].params]
    assert set(base) - set(same) == {"fc1", "predictions"}


# ---------------------------------------------------------------- AlexNet

# Krizhevsky et al. 2012, section 3.5 and Figure 2: (name, kernel, input channels each
# filter sees, filters, output side). The two GPUs' halves: conv2, conv4 and conv5 see
# only their own GPU's half of the previous layer (groups=2: 96/2, 384/2, 384/2 inputs).
# Output sides at 227x227: (227-11)/4+1 = 55; pool 3/2: 27; conv2 pad 2: 27; pool: 13;
# conv3-5 pad 1: 13; pool: 6.
ALEXNET_PAPER = [
    ("conv1", 11, 3, 96, 55),
    ("conv2", 5, 96 // 2, 256, 27),
    ("conv3", 3, 256, 384, 13),
    ("conv4", 3, 384 // 2, 384, 13),
    ("conv5", 3, 384 // 2, 256, 13),
    ("fc6", 1, 6 * 6 * 256, 4096, 1),
    ("fc7", 1, 4096, 4096, 1),
    ("fc8", 1, 4096, 1000, 1),
]
# params = k*k*cin*f + f (bias); MACs = side*side * k*k*cin*f:
#   conv1: 11*11*3*96   + 96   =     34,944   MACs 55*55*34,848     = 105,415,200
#   conv2:  5*5*48*256  + 256  =    307,456   MACs 27*27*307,200    = 223,948,800
#   conv3:  3*3*256*384 + 384  =    885,120   MACs 13*13*884,736    = 149,520,384
#   conv4:  3*3*192*384 + 384  =    663,936   MACs 13*13*663,552    = 112,140,288
#   conv5:  3*3*192*256 + 256  =    442,624   MACs 13*13*442,368    =  74,760,192
#   fc6:     9216*4096  + 4096 = 37,752,832   MACs                  =  37,748,736
#   fc7:     4096*4096  + 4096 = 16,781,312   MACs                  =  16,777,216
#   fc8:     4096*1000  + 1000 =  4,097,000   MACs                  =   4,096,000
#   total                        60,965,224 ("60 million parameters")  724,406,816 MACs
ALEXNET_PARAMS = 60_965_224
ALEXNET_MACS = 724_406_816
# Section 3.5's neurons per layer, "253,440-186,624-64,896-64,896-43,264-4096-4096-1000";
# its first figure is a known slip (55*55*96 = 290,400), the others are checked.
ALEXNET_NEURONS = {"conv2": 186_624, "conv3": 64_896, "conv4": 64_896, "conv5": 43_264,
                   "fc6": 4096, "fc7": 4096, "fc8": 1000}


def test_alexnet_counts_from_the_paper():
    g = lower_spec("specs/alexnet.yaml")
    params = macs = 0
    for name, k, cin, f, side in ALEXNET_PAPER:
        n = g.node(name)
        p, m = k * k * cin * f + f, side * side * k * k * cin * f
        assert (n.params, n.macs) == (p, m), name
        params, macs = params + p, macs + m
        if name in ALEXNET_NEURONS:
            assert math.prod(n.shape) == ALEXNET_NEURONS[name], name
    assert (params, macs) == (ALEXNET_PARAMS, ALEXNET_MACS)
    assert (g.params, g.macs) == (ALEXNET_PARAMS, ALEXNET_MACS)
    assert g.params / 1e6 == pytest.approx(60, rel=0.02)  # the paper: "60 million parameters"
    assert g.node("conv2").attrs["groups"] == 2 and g.node("conv3").attrs["groups"] == 1
    lrn = g.node("norm1").attrs
    assert (lrn["depth"], lrn["k"], lrn["alpha"], lrn["beta"]) == (5, 2.0, 1e-4, 0.75)
    assert [n.name for n in g.nodes] == [
        "input_layer", "conv1", "norm1", "pool1", "conv2", "norm2", "pool2", "conv3", "conv4", "conv5",
        "pool5", "flatten", "fc6", "drop6", "fc7", "drop7", "fc8"]
    assert g.node("drop6").attrs["rate"] == g.node("drop7").attrs["rate"] == 0.5


def test_alexnet_builds_with_keras_counts_and_shapes():
    g = lower_spec("specs/alexnet.yaml")
    model = build(g, seed=0)
    try:
        _assert_static_matches_keras(g, model)
        assert model.get_layer("conv2").groups == 2
        y = infer(model, np.random.default_rng(0).uniform(0, 1, (1, 227, 227, 3)).astype("float32"))
        assert y.shape == (1, 1000) and np.isfinite(y).all()
        np.testing.assert_allclose(y.sum(), 1.0, rtol=1e-5)
    finally:
        del model
        _free()


# ---------------------------------------------------------------- GoogLeNet

INCEPTION_FIELDS = ("b1", "b3_reduce", "b3", "b5_reduce", "b5", "pool_proj")
# Szegedy et al. 2014, Table 1: block, output size, the depth columns (#1x1, #3x3 reduce,
# #3x3, #5x5 reduce, #5x5, pool proj), and the table's params (K) and ops (M) columns.
GOOGLENET_TABLE1 = [
    ("inception_3a", (28, 28, 256), (64, 96, 128, 16, 32, 32), 159, 128),
    ("inception_3b", (28, 28, 480), (128, 128, 192, 32, 96, 64), 380, 304),
    ("inception_4a", (14, 14, 512), (192, 96, 208, 16, 48, 64), 364, 73),
    ("inception_4b", (14, 14, 512), (160, 112, 224, 24, 64, 64), 437, 88),
    ("inception_4c", (14, 14, 512), (128, 128, 256, 24, 64, 64), 463, 100),
    ("inception_4d", (14, 14, 528), (112, 144, 288, 32, 64, 64), 580, 119),
    ("inception_4e", (14, 14, 832), (256, 160, 320, 32, 128, 128), 840, 170),
    ("inception_5a", (7, 7, 832), (256, 160, 320, 32, 128, 128), 1072, 54),
    ("inception_5b", (7, 7, 1024), (384, 192, 384, 48, 128, 128), 1388, 71),
]
# Table 1's other rows with parameters: conv 7x7/2 (112x112x64: 2.7K, 34M), conv 3x3/1
# with its 1x1 reduce (56x56x192, reduce 64: 112K, 360M), linear (1x1x1000: 1000K, 1M).
TABLE1_CONV1 = (2.7, 34)
TABLE1_CONV2 = (112, 360)
TABLE1_LINEAR = (1000, 1)
# The table's units, read off its own rows: params are weights without biases in K = 1024
# (3a: 163,328 weights = 159.5K; linear: 1024*1000 = 1000K), ops are multiply-adds in
# M = 10^6 (3a: 28*28*163,328 = 128.0M). Two of its params entries disagree with its own
# depth columns (4c: 497.5K computed vs 463K printed; 5a: 1018K vs 1072K, where the ops
# column also says 54M against 51.1M): these are the table's slips, checked loosely.
# Its conv1 row (2.7K, 34M) cannot be a 7x7 conv from 3 to 64 channels (9,408 weights,
# 118M multiply-adds at 112x112); it is checked by formula and left out of the
# comparison with the table's column sums.
TABLE1_SLIPS = {"inception_4c", "inception_5a"}
# The text (section 5): "a computational budget of 1.5 billion multiply-adds at inference";
# the params column sums to 6,797.7K (the "~6.8M" usually quoted).


def _inception_weights(cin, cols):
    b1, r3, b3, r5, b5, pp = cols
    return cin * b1 + cin * r3 + 9 * r3 * b3 + cin * r5 + 25 * r5 * b5 + cin * pp


def _inception_biases(cols):
    b1, r3, b3, r5, b5, pp = cols
    return b1 + r3 + b3 + r5 + b5 + pp


def test_googlenet_matches_table1():
    a = analyze("specs/googlenet.yaml")
    rows = {r["name"]: r for r in a["blocks"]}
    g = lower_spec("specs/googlenet.yaml")

    # every inception block is a block row, with the columns' exact params and MACs
    cin = 192  # the stem's output: conv 3x3/1 56x56x192, then max pool 3x3/2 -> 28x28x192
    weights_total = 0
    for name, out, cols, table_k, table_m in GOOGLENET_TABLE1:
        assert name in rows, name
        r = rows[name]
        assert r["type"] == "inception"
        assert tuple(r["output_shape"]) == out, name
        assert out[2] == cols[0] + cols[2] + cols[4] + cols[5]  # the concat's depth
        w = _inception_weights(cin, cols)
        assert r["params"] == w + _inception_biases(cols), name
        assert r["macs"] == out[0] * out[1] * w, name
        assert r["params"] > 0 and r["macs"] > 0
        # the table's printed columns
        tol = 0.08 if name in TABLE1_SLIPS else 0.02
        assert w / 1024 == pytest.approx(table_k, rel=tol), name
        assert r["macs"] / 1e6 == pytest.approx(table_m, rel=0.06 if name in TABLE1_SLIPS else 0.01), name
        for j, f in enumerate(INCEPTION_FIELDS):
            assert g.node(f"{name}_{'1x1' if f == 'b1' else f.replace('b3', '3x3').replace('b5', '5x5')}") \
                .shape[-1] == cols[j]
        assert g.node(f"{name}_output").op == "concat"
        weights_total += w
        cin = out[2]

    # stem rows
    conv1 = g.node("conv1_7x7_s2")
    assert conv1.shape == (112, 112, 64)
    assert conv1.params == 7 * 7 * 3 * 64 + 64 and conv1.macs == 112 * 112 * 7 * 7 * 3 * 64
    red, c3 = g.node("conv2_3x3_reduce"), g.node("conv2_3x3")
    assert c3.shape == (56, 56, 192)
    w2 = 64 * 64 + 3 * 3 * 64 * 192
    assert red.params + c3.params == w2 + 64 + 192
    assert (w2 / 1024, (red.macs + c3.macs) / 1e6) == (pytest.approx(TABLE1_CONV2[0], rel=0.01),
                                                     pytest.approx(TABLE1_CONV2[1], rel=0.01))
    lin = g.node("loss3_classifier")
    assert lin.params == 1024 * 1000 + 1000 and lin.shape == (1000,)
    assert (1024 * 1000 / 1024, lin.macs / 1e6) == (TABLE1_LINEAR[0], pytest.approx(TABLE1_LINEAR[1], rel=0.03))
    assert g.node("pool5_drop_7x7_s1").attrs["rate"] == 0.4
    assert g.node("pool5_7x7_s1").shape == (1024,)

    # totals against the table's column sums, conv1 aside
    table_k = sum(r[3] for r in GOOGLENET_TABLE1) + TABLE1_CONV2[0] + TABLE1_LINEAR[0]
    table_m = sum(r[4] for r in GOOGLENET_TABLE1) + TABLE1_CONV2[1] + TABLE1_LINEAR[1]
    assert table_k + TABLE1_CONV1[0] == pytest.approx(6797.7)  # "~6.8M"
    assert table_m + TABLE1_CONV1[1] == 1502  # "~1.5G"
    ours_w = weights_total + w2 + 1024 * 1000
    assert ours_w / 1024 == pytest.approx(table_k, rel=0.01)
    assert (g.macs - conv1.macs) / 1e6 == pytest.approx(table_m, rel=0.01)
    # whole network: 7.0M params with biases, 1.58G MACs (conv1's 118M instead of 34M)
    assert g.params / 1e6 == pytest.approx(6.8, rel=0.03)
    assert g.macs / 1e9 == pytest.approx(1.5, rel=0.06)
    assert a["params"] == g.params and a["macs"] == g.macs


def test_googlenet_builds_with_keras_counts_and_shapes():
    g = lower_spec("specs/googlenet.yaml")
    model = build(g, seed=0)
    try:
        _assert_static_matches_keras(g, model)
        assert len(model.outputs) == 1
        assert not any(l.name.startswith("loss1") or l.name.startswith("loss2") for l in model.layers)
    finally:
        del model
        _free()


def test_googlenet_aux_classifiers_train_one_step():
    on = lower_spec("specs/googlenet.yaml", ["head.aux=true"])
    off = lower_spec("specs/googlenet.yaml")
    assert on.outputs == ["loss3_classifier", "loss1_classifier", "loss2_classifier"]
    assert on.meta["loss_weights"] == {"loss3_classifier": 1.0, "loss1_classifier": 0.3, "loss2_classifier": 0.3}
    assert "loss_weights" not in off.meta
    # section 5: 5x5/3 avg pool -> 4x4x512 after 4a (4x4x528 after 4d), 1x1 conv 128, FC 1024, FC 1000
    assert on.node("loss1_ave_pool").shape == (4, 4, 512) and on.node("loss2_ave_pool").shape == (4, 4, 528)
    aux = lambda cin: (cin * 128 + 128) + (4 * 4 * 128 * 1024 + 1024) + (1024 * 1000 + 1000)  # noqa: E731
    assert on.params - off.params == aux(512) + aux(528)
    assert on.node("loss1_drop_fc").attrs["rate"] == 0.7
    assert on.node("loss1_conv").attrs["activation"] == "relu"
    assert on.node("loss1_fc").attrs["activation"] == "relu"
    # the main path is unchanged by the side branches
    assert on.node("inception_4b_1x1").inputs == off.node("inception_4b_1x1").inputs == ["inception_4a_output"]

    # a small input keeps the training step quick: 96 -> 48 -> 24 -> 12 -> 6 at 4a; 5x5/3 -> 1x1
    g = lower_spec("specs/googlenet.yaml", ["head.aux=true", "input.shape=[96,96,3]", "head.classes=10"])
    model = build(g, seed=0)
    try:
        assert len(model.outputs) == 3
        assert model.count_params() == g.params
        weights = g.meta["loss_weights"]
        model.compile(optimizer=keras.optimizers.SGD(0.01),
                      loss=["sparse_categorical_crossentropy"] * 3,
                      loss_weights=[weights[o] for o in g.outputs])
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 1, (2, 96, 96, 3)).astype("float32")
        y = rng.integers(0, 10, (2,))
        before = model.get_layer("loss1_fc").get_weights()[0].copy()
        logs = model.fit(x, [y, y, y], batch_size=2, epochs=1, verbose=0).history
        assert np.isfinite(logs["loss"][0]) and logs["loss"][0] > 0
        # the auxiliary branch got gradients: its weights moved
        assert not np.allclose(before, model.get_layer("loss1_fc").get_weights()[0])
        outs = infer(model, x)
        assert [o.shape for o in outs] == [(2, 10)] * 3
    finally:
        del model
        _free()


def test_aux_off_without_top():
    g = lower_spec("specs/googlenet.yaml", ["head.aux=true", "head.include_top=false"])
    assert g.outputs == ["inception_5b_output"]
    assert not any(n.name.startswith("loss") for n in g.nodes)


def test_inception_width_fields_cover_every_branch():
    from archspec.language.blocks.inception import Inception

    assert set(Inception.width_fields) == set(INCEPTION_FIELDS)
