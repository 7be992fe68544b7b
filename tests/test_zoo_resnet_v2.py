"""ResNet-50/101/152 v2 (He et al. 2016, "Identity Mappings in Deep Residual Networks"),
written in the open spec language: `resnet50_v2.yaml` defines keras' pre-activation
bottleneck (`define:` with `if:` for its three shortcuts: a biased 1x1 conv of the
pre-activated input, the input itself, or keras' unnamed 1x1/2 max pool of it) and the
network; `resnet101_v2` and `resnet152_v2` extend it and change only `vars` (blocks per stage).

Against references archspec did not write:
- keras.applications.ResNet50V2/101V2/152V2's parameter totals (recorded in each spec's
  `reference.keras_params`), and a count by hand from keras' residual_block_v2 (static: no Keras);
- keras.applications.ResNet50V2 (weights=None, a fresh session), built once for the module:
  its randomized weights saved as keras.applications releases them (legacy .h5) and in Keras 3's
  .weights.h5, loaded through `archspec build --weights` and `archspec.build(weights=...)`: the
  same layer names (keras' unnamed max pools included), weight shapes, layer configurations and
  outputs. The two bigger networks are only checked statically (their Keras build costs seconds
  and checks nothing the static counts and the shared definition do not).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import yaml

from archspec.api import analyze, load, lower_spec
from archspec.language.loader import bundled_spec_dir

# blocks per stage (keras' stack_fn) and keras' count_params() / trainable weights, weights=None
LAYOUT = {"resnet50_v2": (3, 4, 6, 3), "resnet101_v2": (3, 4, 23, 3), "resnet152_v2": (3, 8, 36, 3)}
KERAS_PARAMS = {"resnet50_v2": 25_613_800, "resnet101_v2": 44_675_560, "resnet152_v2": 60_380_648}
KERAS_TRAINABLE = {"resnet50_v2": 25_568_360, "resnet101_v2": 44_577_896, "resnet152_v2": 60_236_904}
KERAS_LAYERS = {"resnet50_v2": 192, "resnet101_v2": 379, "resnet152_v2": 566}  # len(model.layers)
CONSTRUCTOR = {"resnet50_v2": "ResNet50V2", "resnet101_v2": "ResNet101V2", "resnet152_v2": "ResNet152V2"}
FILTERS = (64, 128, 256, 512)


def by_hand(layout, classes=1000):
    """(params, trainable) from keras' ResNet(preact=True, use_bias=True) and residual_block_v2:
    a biased 7x7 stem conv; per block a pre-activation BN, a biased 1x1 shortcut conv in a
    stage's first block, 1x1 and 3x3 convs without bias (each with BN), a biased 1x1 conv;
    post_bn; the classifier. Batch norms count 4 per channel, 2 of them trainable."""
    params = trainable = 0

    def w(n):
        nonlocal params, trainable
        params, trainable = params + n, trainable + n

    def bn(c):
        nonlocal params, trainable
        params, trainable = params + 4 * c, trainable + 2 * c

    w(7 * 7 * 3 * 64 + 64)
    cin = 64
    for n, f in zip(layout, FILTERS):
        for b in range(n):
            bn(cin)
            if b == 0:
                w(cin * 4 * f + 4 * f)
            w(cin * f)
            bn(f)
            w(9 * f * f)
            bn(f)
            w(f * 4 * f + 4 * f)
            cin = 4 * f
    bn(cin)
    w(cin * classes + classes)
    return params, trainable


# ---------------------------------------------------------------- static: no Keras


@pytest.mark.parametrize("name", sorted(LAYOUT))
def test_counts_match_keras_and_the_block_by_hand(name):
    g = lower_spec(name)
    assert by_hand(LAYOUT[name]) == (KERAS_PARAMS[name], KERAS_TRAINABLE[name])
    assert (g.params, g.trainable_params) == (KERAS_PARAMS[name], KERAS_TRAINABLE[name])
    spec = load(name)
    assert spec.reference["keras_params"] == KERAS_PARAMS[name]
    assert spec.keras.constructor == CONSTRUCTOR[name]
    assert spec.input.preprocess == "tf"  # keras.applications.resnet_v2.preprocess_input
    assert len(g.nodes) == KERAS_LAYERS[name]
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))
    # each stage downsamples in its last block (conv5 does not); its shortcut is keras' unnamed
    # MaxPooling2D(1, strides=2), numbered as a fresh Keras session numbers it
    for s, (n, f) in enumerate(zip(LAYOUT[name], FILTERS)):
        side = 56 // 2 ** s
        out = 4 * f
        assert g.node(f"conv{s + 2}_block1_out").shape == (side, side, out)
        last = g.node(f"conv{s + 2}_block{n}_out")
        assert last.shape == ((side // 2, side // 2, out) if s < 3 else (7, 7, out))
        assert f"conv{s + 2}_block{n + 1}_out" not in names
        assert g.node(f"conv{s + 2}_block1_0_conv").attrs["use_bias"]  # conv shortcut only in block 1
        assert f"conv{s + 2}_block2_0_conv" not in names
    pools = [n for n in g.nodes if n.op == "max_pool"]
    assert [p.name for p in pools] == ["pool1_pool", "max_pooling2d", "max_pooling2d_1", "max_pooling2d_2"]
    assert [p.inputs for p in pools[1:]] == [[f"conv{s}_block{LAYOUT[name][s - 2] - 1}_out"] for s in (2, 3, 4)]
    assert g.node("post_relu").shape == (7, 7, 2048)
    assert g.node("predictions").shape == (1000,)


def test_block_nodes_as_keras_writes_them():
    """A stage's first block (conv shortcut from the pre-activated input) and its last
    (stride 2 on the padded 3x3 conv, max-pool shortcut of the raw input), node by node."""
    g = lower_spec("resnet50_v2")
    rows = [(x.name, x.op, x.shape, x.inputs) for x in g.nodes
            if x.name.startswith(("conv3_block1_", "conv2_block3_")) or x.name == "max_pooling2d"]
    assert rows == [
        ("max_pooling2d", "max_pool", (28, 28, 256), ["conv2_block2_out"]),
        ("conv2_block3_preact_bn", "batch_norm", (56, 56, 256), ["conv2_block2_out"]),
        ("conv2_block3_preact_relu", "activation", (56, 56, 256), ["conv2_block3_preact_bn"]),
        ("conv2_block3_1_conv", "conv2d", (56, 56, 64), ["conv2_block3_preact_relu"]),
        ("conv2_block3_1_bn", "batch_norm", (56, 56, 64), ["conv2_block3_1_conv"]),
        ("conv2_block3_1_relu", "activation", (56, 56, 64), ["conv2_block3_1_bn"]),
        ("conv2_block3_2_pad", "zero_padding", (58, 58, 64), ["conv2_block3_1_relu"]),
        ("conv2_block3_2_conv", "conv2d", (28, 28, 64), ["conv2_block3_2_pad"]),
        ("conv2_block3_2_bn", "batch_norm", (28, 28, 64), ["conv2_block3_2_conv"]),
        ("conv2_block3_2_relu", "activation", (28, 28, 64), ["conv2_block3_2_bn"]),
        ("conv2_block3_3_conv", "conv2d", (28, 28, 256), ["conv2_block3_2_relu"]),
        ("conv2_block3_out", "add", (28, 28, 256), ["max_pooling2d", "conv2_block3_3_conv"]),
        ("conv3_block1_preact_bn", "batch_norm", (28, 28, 256), ["conv2_block3_out"]),
        ("conv3_block1_preact_relu", "activation", (28, 28, 256), ["conv3_block1_preact_bn"]),
        ("conv3_block1_0_conv", "conv2d", (28, 28, 512), ["conv3_block1_preact_relu"]),
        ("conv3_block1_1_conv", "conv2d", (28, 28, 128), ["conv3_block1_preact_relu"]),
        ("conv3_block1_1_bn", "batch_norm", (28, 28, 128), ["conv3_block1_1_conv"]),
        ("conv3_block1_1_relu", "activation", (28, 28, 128), ["conv3_block1_1_bn"]),
        ("conv3_block1_2_pad", "zero_padding", (30, 30, 128), ["conv3_block1_1_relu"]),
        ("conv3_block1_2_conv", "conv2d", (28, 28, 128), ["conv3_block1_2_pad"]),
        ("conv3_block1_2_bn", "batch_norm", (28, 28, 128), ["conv3_block1_2_conv"]),
        ("conv3_block1_2_relu", "activation", (28, 28, 128), ["conv3_block1_2_bn"]),
        ("conv3_block1_3_conv", "conv2d", (28, 28, 512), ["conv3_block1_2_relu"]),
        ("conv3_block1_out", "add", (28, 28, 512), ["conv3_block1_0_conv", "conv3_block1_3_conv"]),
    ]
    a = {x.name: x.attrs for x in g.nodes}
    assert a["max_pooling2d"]["pool"] in (1, (1, 1)) and a["max_pooling2d"]["strides"] in (2, (2, 2))
    assert a["conv2_block3_2_conv"]["strides"] in (2, (2, 2)) and a["conv2_block3_2_conv"]["padding"] == "valid"
    assert not a["conv2_block3_1_conv"]["use_bias"] and not a["conv2_block3_2_conv"]["use_bias"]
    assert a["conv2_block3_3_conv"]["use_bias"] and a["conv1_conv"]["use_bias"]
    assert a["conv2_block3_1_bn"]["epsilon"] == 1.001e-5
    # the stem: a biased 7x7/2 conv straight into the max pool (no BN, no ReLU: pre-activation)
    assert [x.name for x in g.nodes[:5]] == ["input_layer", "conv1_pad", "conv1_conv", "pool1_pad", "pool1_pool"]
    assert a["conv1_conv"]["activation"] is None


def test_101_and_152_change_only_the_blocks_per_stage():
    """Their files hold no network, only keras' names, figures and `vars`; the blocks they
    share with ResNet-50 v2 are its nodes exactly."""
    base = {x.name: x for x in lower_spec("resnet50_v2").nodes}
    for name in ("resnet101_v2", "resnet152_v2"):
        raw = yaml.safe_load((bundled_spec_dir() / f"{name}.yaml").read_text())
        assert set(raw) == {"format", "extends", "name", "description", "reference", "keras", "vars"}
        assert raw["extends"] == "resnet50_v2"
        other = {x.name: x for x in lower_spec(name).nodes}
        shared = [n for n in base if n.startswith(("conv2_", "conv5_", "conv1", "pool1", "post", "avg", "pred"))]
        assert len(shared) > 60
        for n in shared:
            a, b = base[n], other[n]
            assert (a.op, a.shape, a.params, a.attrs) == (b.op, b.shape, b.params, b.attrs), n
            if n != "conv5_block1_preact_bn":  # the one node whose input is conv4's last block
                assert a.inputs == b.inputs, n
    # the var is the depth: ResNet-50 v2 with 23 blocks in conv4 is ResNet-101 v2
    g = lower_spec("resnet50_v2", ["vars.conv4_blocks=23"])
    assert [n.name for n in g.nodes] == [n.name for n in lower_spec("resnet101_v2").nodes]
    assert g.params == KERAS_PARAMS["resnet101_v2"]


def test_width_and_depth_scaling():
    base = analyze("resnet50_v2")
    half = analyze("resnet50_v2", ["scaling.width=0.5"])
    assert half["params"] < base["params"] / 3 and half["macs"] < base["macs"] / 3
    g = lower_spec("resnet50_v2", ["scaling.width=0.5"])
    assert g.node("conv2_block1_0_conv").shape == (56, 56, 128)  # still a conv shortcut: 32 -> 128
    assert g.node("conv3_block2_1_conv").shape == (28, 28, 64)
    deep = lower_spec("resnet50_v2", ["scaling.depth=2"])
    names = [n.name for n in deep.nodes]
    assert len(names) == len(set(names)) and deep.params > base["params"]
    assert [n.name for n in deep.nodes if n.op == "max_pool"][1:] == ["max_pooling2d", "max_pooling2d_1",
                                                                      "max_pooling2d_2"]


# ---------------------------------------------------------------- Keras: parity with keras.applications


from parity import save_legacy  # noqa: E402  keras.applications' .h5 format


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """keras.applications.ResNet50V2 (weights=None) in a fresh session (its unnamed max pools get
    their first automatic names), randomized, saved in both formats keras' weights come in."""
    keras = pytest.importorskip("keras")
    from parity import randomize

    keras.backend.clear_session()
    ref = keras.applications.ResNet50V2(weights=None)
    randomize(ref, seed=3)
    d = tmp_path_factory.mktemp("resnet50_v2")
    ref.save_weights(d / "w.weights.h5")
    files = {"keras3": d / "w.weights.h5", "legacy": save_legacy(ref, d / "resnet50v2.h5")}
    yield keras, ref, files
    del ref
    keras.backend.clear_session()
    gc.collect()


def _features_and_outputs(keras, model, x):
    from parity import infer

    return infer(keras.Model(model.inputs, [model.get_layer("avg_pool").output, model.output]), x)


def test_structure_and_weights_match_keras_applications(reference):
    """Built by the library with the Keras 3 .weights.h5: keras' exact layer names (unnamed
    layers included) in keras' order, weight shapes, layer configurations, and every weight."""
    keras, ref, files = reference
    import archspec
    from parity import assert_same_structure

    said = []
    ours = archspec.build("resnet50_v2", weights=files["keras3"], say=said.append)
    assert any("103 of 103 layers load" in m for m in said), said
    assert_same_structure(ours, ref)
    assert [l.name for l in ours.layers] == [l.name for l in ref.layers]
    assert ours.count_params() == ref.count_params() == KERAS_PARAMS["resnet50_v2"]
    for a, b in zip(ours.layers, ref.layers):
        assert type(a).__name__ == type(b).__name__, a.name
        ca, cb = a.get_config(), b.get_config()
        for k in ("strides", "padding", "kernel_size", "pool_size", "epsilon", "momentum", "use_bias",
                  "activation"):
            if k in cb:
                assert ca.get(k) == cb[k], (a.name, k)
        for u, v in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(u, v, err_msg=a.name)


def test_outputs_match_keras_applications_through_the_cli(reference, tmp_path, capsys):
    """`archspec build resnet50_v2 --weights <keras.applications-format .h5>`: the .keras it
    writes gives keras' features and outputs on two images in preprocess_input's range."""
    keras, ref, files = reference
    from archspec.cli import main
    from parity import assert_not_degenerate

    out = tmp_path / "r.keras"
    code = main(["build", "resnet50_v2", "--weights", str(files["legacy"]), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and "103 of 103 layers load" in err, err
    ours = keras.models.load_model(out)
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype("float32")  # tf mode's range
    f_ours, y_ours = _features_and_outputs(keras, ours, x)
    f_ref, y_ref = _features_and_outputs(keras, ref, x)
    assert_not_degenerate([f_ref, y_ref])
    scale = float(np.max(np.abs(f_ref)))
    assert np.max(np.abs(f_ref[0] - f_ref[1])) > 1e-2 * scale  # the two images differ, not by rounding
    diff_f = float(np.max(np.abs(f_ours - f_ref))) / max(1.0, scale)
    diff_y = float(np.max(np.abs(y_ours - y_ref)))
    print(f"resnet50_v2: max |output diff| {diff_y:.3g}, max relative feature diff {diff_f:.3g}")
    assert diff_f <= 1e-4
    assert diff_y <= 1e-4 * float(np.max(y_ref))  # probabilities ~1e-3: relative to their size
