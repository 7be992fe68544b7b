"""Inception-v3 and Inception-ResNet-v2, written in the open spec language
(specs/inception_v3.yaml, specs/inception_resnet_v2.yaml: keras' conv2d_bn `define:`d, the
modules as `parallel` compositions, Inception-ResNet's scaled residual as the
`scaled_residual` block and its `scaled_add` primitive), against keras.applications.

- Static (no Keras): keras' parameter counts (23,851,784 and 55,873,736), trainable counts
  and layer counts; keras' automatic names of the unnamed conv2d_bn layers, pools and
  CustomScaleLayers, in keras' order; the residual blocks' scales, inputs and parameters
  by formula; `archspec inspect` without TensorFlow.
- The `scaled_residual` block on a tiny network: x + scale * body(x) in Keras, its layer
  reopens from a `.keras` file, a body that changes the shape is a located error.
- Parity: InceptionV3 (the smaller) once for the module, at its 299x299 input: the
  keras.applications reference (fresh session, randomized weights) saved in keras'
  released legacy `.h5` and in Keras 3's `.weights.h5`, loaded into ours through
  `archspec build InceptionV3 --weights FILE.h5` (in-process; the `.keras` it writes is
  read back) and through `archspec.build(..., weights=FILE.weights.h5)`: exactly keras'
  layer names, weight shapes and outputs. InceptionResNetV2 (slow: 12-16 s) the same way, at
  its 299x299 input too, through the legacy `.h5` and `archspec.build`.
"""

from __future__ import annotations

import contextlib
import gc
import io
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from archspec.api import analyze, load, lower_spec
from archspec.core.errors import SpecError

# keras.applications 3.x, weights=None: count_params(), trainable weights, len(model.layers),
# layers with weights
KERAS = {
    "inception_v3": ("InceptionV3", 23_851_784, 23_817_352, 313, 189),
    "inception_resnet_v2": ("InceptionResNetV2", 55_873_736, 55_813_192, 782, 449),
}
URLS = {
    "inception_v3": ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
                     "inception_v3_weights_tf_dim_ordering_tf_kernels",
                     "9a0d58056eeedaa3f26cb7ebd46da564", "bcbd6486424b2319ff4ef7d526e38f63"),
    "inception_resnet_v2": ("https://storage.googleapis.com/tensorflow/keras-applications/inception_resnet_v2/"
                            "inception_resnet_v2_weights_tf_dim_ordering_tf_kernels",
                            "e693bd0210a403b3192acc6073ad2e96", "d19885ff4a710c122648d3b5c3b684e4"),
}


def _auto(prefix, n):
    """Keras' first n automatic names of a class: conv2d, conv2d_1, ..., conv2d_{n-1}."""
    return [prefix] + [f"{prefix}_{i}" for i in range(1, n)]


# ---------------------------------------------------------------- static (no Keras)


@pytest.mark.parametrize("name", sorted(KERAS))
def test_counts_and_twin_match_keras(name):
    ctor, params, trainable, layers, weighted = KERAS[name]
    g = lower_spec(name)
    assert (g.params, g.trainable_params, len(g.nodes)) == (params, trainable, layers)
    assert sum(1 for n in g.nodes if n.params) == weighted
    spec = load(name)
    assert spec.reference["keras_params"] == params
    assert spec.input.preprocess == "tf" and tuple(spec.input.shape) == (299, 299, 3)
    assert spec.keras.constructor == ctor
    url, top, no_top = URLS[name]
    w = spec.keras.weights["imagenet"]
    assert (w.top.url, w.top.hash) == (url + ".h5", top)
    assert (w.no_top.url, w.no_top.hash) == (url + "_notop.h5", no_top)
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))
    # keras' conv2d_bn: no conv bias, batch norms without scale (epsilon 1e-3), ReLU
    bns = [n for n in g.nodes if n.op == "batch_norm"]
    assert all(not n.attrs["scale"] and n.attrs["center"] and n.attrs["epsilon"] == 1e-3 for n in bns)


def test_inception_v3_names_are_keras():
    """The unnamed layers carry keras' automatic names in keras' order, the modules keras' own."""
    g = lower_spec("inception_v3")
    by_op = {}
    for n in g.nodes:
        by_op.setdefault(n.op, []).append(n.name)
    assert by_op["conv2d"] == _auto("conv2d", 94)
    assert by_op["batch_norm"] == _auto("batch_normalization", 94)
    assert by_op["activation"] == _auto("activation", 94)
    assert by_op["max_pool"] == _auto("max_pooling2d", 4)
    assert by_op["avg_pool"] == _auto("average_pooling2d", 9)
    mixed = [f"mixed{i}" for i in range(11)]
    assert by_op["concat"] == mixed[:9] + ["mixed9_0", "concatenate", "mixed9", "mixed9_1", "concatenate_1",
                                           "mixed10"]
    assert [g.node(m).shape for m in mixed] == (
        [(35, 35, 256)] + [(35, 35, 288)] * 2 + [(17, 17, 768)] * 5 + [(8, 8, 1280)] + [(8, 8, 2048)] * 2)
    # as keras wires them (the inputs of keras' own layers, read from its model)
    assert g.node("mixed9").inputs == ["activation_76", "mixed9_0", "concatenate", "activation_84"]
    assert g.node("mixed9_1").inputs == ["activation_87", "activation_88"]
    assert g.node("mixed3").inputs == ["activation_26", "activation_29", "max_pooling2d_2"]
    assert g.node("conv2d_11").inputs == ["average_pooling2d"]
    assert g.node("conv2d_4").attrs["padding"] == "valid" and g.node("conv2d_4").shape == (71, 71, 192)
    assert g.node("conv2d_32").attrs["kernel"] == (1, 7) and g.node("conv2d_33").attrs["kernel"] == (7, 1)
    assert not any(n.attrs["use_bias"] for n in g.nodes if n.op == "conv2d")
    assert g.node("avg_pool").inputs == ["mixed10"] and g.node("predictions").shape == (1000,)


def _cbn(cin, cout, kh=1, kw=1):
    return kh * kw * cin * cout + 3 * cout  # conv without bias + batch norm without scale


#: the residual branches of keras' inception_resnet_block, by block type: (params of the
#: branches from `c` input channels, channels they concatenate)
BRANCHES = {
    "block35": lambda c: (_cbn(c, 32) + _cbn(c, 32) + _cbn(32, 32, 3, 3) + _cbn(c, 32) + _cbn(32, 48, 3, 3)
                          + _cbn(48, 64, 3, 3), 32 + 32 + 64),
    "block17": lambda c: (_cbn(c, 192) + _cbn(c, 128) + _cbn(128, 160, 1, 7) + _cbn(160, 192, 7, 1), 192 + 192),
    "block8": lambda c: (_cbn(c, 192) + _cbn(c, 192) + _cbn(192, 224, 1, 3) + _cbn(224, 256, 3, 1), 192 + 256),
}


def test_inception_resnet_v2_scaled_residuals():
    """40 residual blocks: each adds its input and its 1x1 up-projection ({block}_conv, with a
    bias, back to the input's channels) scaled by 0.17, 0.1 or 0.2 (the last by 1.0, without
    ReLU), in keras' CustomScaleLayer, named as keras names it."""
    g = lower_spec("inception_resnet_v2")
    blocks = [(f"block35_{i}", 0.17) for i in range(1, 11)] + [(f"block17_{i}", 0.1) for i in range(1, 21)] + \
        [(f"block8_{i}", 0.2) for i in range(1, 10)] + [("block8_10", 1.0)]
    scaled = [n for n in g.nodes if n.op == "scaled_add"]
    assert [n.name for n in scaled] == _auto("custom_scale_layer", 40)
    top = {b.name: b for b in g.blocks if b.depth == 0}
    before = "mixed_5b"
    for (blk, scale), n in zip(blocks, scaled):
        before = {"block17_1": "mixed_6a", "block8_1": "mixed_7a"}.get(blk, before)  # after a reduction
        assert n.attrs["scale"] == scale
        assert n.inputs == [before, f"{blk}_conv"]
        c = g.node(before).shape[-1]
        assert n.shape == g.node(before).shape == ({"block35": (35, 35), "block17": (17, 17), "block8": (8, 8)}
                                                   [blk.split("_")[0]] + (c,))
        up = g.node(f"{blk}_conv")
        assert up.attrs["use_bias"] and up.attrs["activation"] is None and up.attrs["kernel"] == (1, 1)
        branches, mixed = BRANCHES[blk.split("_")[0]](c)
        assert g.node(f"{blk}_mixed").shape[-1] == mixed
        assert sum(g.node(x).params for x in top[blk].nodes) == branches + mixed * c + c
        before = f"{blk}_ac" if blk != "block8_10" else n.name
    assert "block8_10_ac" not in top["block8_10"].nodes and g.node("conv_7b").inputs == ["custom_scale_layer_39"]
    assert [g.node(m).shape for m in ("mixed_5b", "mixed_6a", "mixed_7a", "conv_7b_ac")] == [
        (35, 35, 320), (17, 17, 1088), (8, 8, 2080), (8, 8, 1536)]
    # keras' conv2d_bn without a name: every layer automatic (conv_7b, the only one named, aside)
    assert [n.name for n in g.nodes if n.op == "conv2d" and not n.name.endswith("_conv")] == \
        _auto("conv2d", 203) + ["conv_7b"]
    assert [n.name for n in g.nodes if n.op == "max_pool"] == _auto("max_pooling2d", 4)
    assert [n.name for n in g.nodes if n.op == "avg_pool"] == ["average_pooling2d"]


def test_inspect_without_tensorflow():
    code = textwrap.dedent("""\
        import contextlib, io, json, sys
        from archspec.cli import main
        for name in ("inception_v3", "inception_resnet_v2"):
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                assert main(["inspect", name, "--json"]) == 0
            print(name, json.loads(out.getvalue())["params"])
        print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
        """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split("\n")[:3] == ["inception_v3 23851784", "inception_resnet_v2 55873736", "[]"]


def test_depth_and_width_scaling():
    """Depth scaling repeats the 35x35 and 17x17 blocks, not the reductions nor the 8x8 blocks
    (v3's inner concatenations there are keras' mixed9_0, mixed9_1; IRv2's last block differs
    from the others); width scaling reaches the widths written at the use sites (stem,
    mixed_5b, conv_7b) and the up-projections follow their input (`${in_channels}`), so
    every scaled add still adds two tensors of one shape."""
    deep = lower_spec("inception_resnet_v2", ["scaling.depth=2"])
    assert [n.name for n in deep.nodes if n.op == "scaled_add"] == _auto("custom_scale_layer", 70)
    assert {"block35_20_ac", "block17_40_ac", "block8_9_ac", "block8_10_conv"} <= {n.name for n in deep.nodes}
    assert not {"block35_21_conv", "block17_41_conv", "block8_10_ac", "block8_11_conv"} & {n.name for n in deep.nodes}
    v3 = lower_spec("inception_v3", ["scaling.depth=2"])
    concats = [n.name for n in v3.nodes if n.op == "concat"]
    assert len(concats) == len(set(concats)) == 3 * 2 + 1 + 4 * 2 + 1 + 2 * 3
    assert concats[-6:] == ["mixed9_0", "concatenate", "mixed16", "mixed9_1", "concatenate_1", "mixed17"]
    assert v3.params > KERAS["inception_v3"][1]
    half = analyze("inception_resnet_v2", overrides=["scaling.width=0.5"])
    assert half["params"] < KERAS["inception_resnet_v2"][1]
    layers = {x["name"]: x for x in half["layers"]}
    assert layers["mixed_5b"]["output_shape"] == [35, 35, 160]
    assert layers["custom_scale_layer"]["output_shape"] == layers["block35_1_conv"]["output_shape"] == [35, 35, 160]
    assert layers["conv_7b"]["output_shape"] == [8, 8, 768]


# ---------------------------------------------------------------- the scaled_residual block

TINY = """\
format: 1
name: tiny_scaled
input: {shape: [6, 6, 3]}
stem:
  - {type: conv, name: c0, filters: 4}
  - type: scaled_residual
    name: r1
    scale: 0.25
    add_name: "{auto}"
    body: [{type: conv, name: "{name}_conv", filters: 4, kernel: 1, activation: linear}]
  - type: scaled_residual
    name: r2
    scale: -1.5
    body: [{type: conv, name: "{name}_conv", filters: %d, kernel: 1, activation: linear}]
head:
  layers: [{type: global_pool, name: gp}]
"""


def test_scaled_residual_block(tmp_path):
    keras = pytest.importorskip("keras")
    import archspec
    from archspec.backends.keras_layers import CustomScaleLayer
    from parity import infer

    spec = tmp_path / "tiny.yaml"
    spec.write_text(TINY % 4)
    g = lower_spec(spec)
    rows = [(n.name, n.inputs, n.attrs) for n in g.nodes if n.op == "scaled_add"]
    assert rows == [("custom_scale_layer", ["c0", "r1_conv"], {"scale": 0.25}),
                    ("r2_scaled_add", ["custom_scale_layer", "r2_conv"], {"scale": -1.5})]
    assert g.params == (27 * 4 + 4) + 2 * (4 * 4 + 4)  # no weights of its own
    # a body that changes the shape: a located error at the block
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY % 8)
    with pytest.raises(SpecError, match=r"body gives shape \(6, 6, 8\) but its input is \(6, 6, 4\)") as e:
        lower_spec(bad)
    assert "bad.yaml:11:" in str(e.value)
    # Keras: x + scale * body(x), in archspec's CustomScaleLayer, which reopens from .keras
    keras.backend.clear_session()
    m = archspec.build(g, seed=0)
    assert [type(m.get_layer(n)) for n in ("custom_scale_layer", "r2_scaled_add")] == [CustomScaleLayer] * 2
    x = np.random.default_rng(0).standard_normal((2, 6, 6, 3)).astype("float32")
    parts = keras.Model(m.inputs, [m.get_layer(n).output for n in ("c0", "r1_conv", "custom_scale_layer", "r2_conv",
                                                                      "r2_scaled_add")])
    c0, r1, s1, r2, s2 = infer(parts, x)
    np.testing.assert_allclose(s1, c0 + 0.25 * r1, rtol=0, atol=1e-6)
    np.testing.assert_allclose(s2, s1 - 1.5 * r2, rtol=0, atol=1e-6)
    m.save(tmp_path / "m.keras")
    back = keras.models.load_model(tmp_path / "m.keras")
    assert type(back.get_layer("r2_scaled_add")) is CustomScaleLayer and back.get_layer("r2_scaled_add").scale == -1.5
    np.testing.assert_array_equal(infer(back, x), infer(m, x))


# ---------------------------------------------------------------- parity with keras.applications


def _randomize(keras, model, seed):
    """He-scaled random weights (std sqrt(2 / fan-in): a ReLU follows every conv2d_bn, and
    these batch norms have no scale to make up for it), biases and means N(0, 0.1),
    variances in [0.5, 1.5], the classifier sqrt(1 / fan-in). `parity.randomize`'s
    sqrt(1 / fan-in) halves the signal's variance at each of InceptionV3's ~20 layers deep:
    its softmax is then uniform to 1e-3 and two images' outputs differ by 2e-8."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if not layer.weights:
            continue
        new = []
        for w, v in zip(layer.weights, layer.get_weights()):
            if w.name.split("/")[-1] == "moving_variance":
                new.append(rng.uniform(0.5, 1.5, v.shape).astype(v.dtype))
            elif v.ndim <= 1:
                new.append((rng.standard_normal(v.shape) * 0.1).astype(v.dtype))
            else:
                gain = 1.0 if isinstance(layer, keras.layers.Dense) else 2.0
                new.append((rng.standard_normal(v.shape) * np.sqrt(gain / np.prod(v.shape[:-1]))).astype(v.dtype))
        layer.set_weights(new)


from parity import save_legacy as _save_legacy  # noqa: E402  keras.applications' .h5 format


def _with_features(keras, m):
    return keras.Model(m.inputs, [m.get_layer("avg_pool").output, m.output])


def _compare(keras, ours, ref, x):
    """Max |output diff| and max relative feature (avg_pool) diff; the reference's outputs
    must be far from uniform and differ between the two images."""
    from parity import assert_not_degenerate, infer

    f_ref, y_ref = infer(_with_features(keras, ref), x)
    f_ours, y_ours = infer(_with_features(keras, ours), x)
    assert_not_degenerate([f_ref, y_ref])
    assert y_ref.max() > 20.0 / y_ref.shape[-1] and np.abs(f_ref[0] - f_ref[1]).max() > 1e-3 * np.abs(f_ref).max()
    return float(np.max(np.abs(y_ours - y_ref))), float(np.max(np.abs(f_ours - f_ref)) / np.max(np.abs(f_ref)))


def _assert_same_as_keras(ours, ref, g):
    from parity import assert_same_structure

    assert_same_structure(ours, ref)
    assert [l.name for l in ours.layers] == [l.name for l in ref.layers]  # automatic names included
    assert [type(l).__name__ for l in ours.layers] == [type(l).__name__ for l in ref.layers]
    assert ours.count_params() == ref.count_params() == g.params
    assert g.trainable_params == sum(int(np.prod(w.shape)) for w in ref.trainable_weights)
    for node in g.nodes:  # every static shape is Keras'
        if node.op != "input":
            assert tuple(ref.get_layer(node.name).output.shape[1:]) == tuple(node.shape), node.name
    for a, b in zip(ours.layers, ref.layers):  # kernels, strides, paddings, batch norms, wiring
        ca, cb = a.get_config(), b.get_config()
        for k in ("filters", "kernel_size", "strides", "padding", "use_bias", "activation", "epsilon", "momentum",
                  "center", "scale", "pool_size"):
            if k in cb:
                assert ca.get(k) == cb[k], (a.name, k)
        if b._inbound_nodes and not b.name.startswith("input"):
            assert [t._keras_history[0].name for t in a._inbound_nodes[0].input_tensors] == \
                [t._keras_history[0].name for t in b._inbound_nodes[0].input_tensors], a.name


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    """InceptionV3 once: the reference, its randomized weights in both formats, and ours
    loaded from each (the legacy .h5 through the command line, the .weights.h5 through the API)."""
    keras = pytest.importorskip("keras")
    import archspec
    from archspec.cli import main

    d = tmp_path_factory.mktemp("inception_v3")
    keras.backend.clear_session()  # the reference's unnamed layers get their first automatic names
    ref = keras.applications.InceptionV3(weights=None)
    _randomize(keras, ref, seed=3)
    legacy = _save_legacy(ref, d / "inception_v3.h5")
    keras3 = d / "inception_v3.weights.h5"
    ref.save_weights(keras3)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):  # the command line, by the constructor's name
        code = main(["build", "InceptionV3", "--weights", str(legacy), "-o", str(d / "cli.keras")])
    assert code == 0, err.getvalue()
    cli = keras.models.load_model(d / "cli.keras")
    said = []
    api = archspec.build("inception_v3", weights=keras3, say=said.append)
    yield keras, ref, cli, api, err.getvalue() + "\n".join(said)
    del ref, cli, api
    keras.backend.clear_session()
    gc.collect()


def test_inception_v3_structure_is_keras(v3):
    keras, ref, cli, api, log = v3
    assert log.count("189 of 189 layers load") == 2, log
    g = lower_spec("inception_v3")
    _assert_same_as_keras(cli, ref, g)
    assert [l.name for l in api.layers] == [l.name for l in ref.layers]


def test_inception_v3_outputs_are_keras(v3):
    keras, ref, cli, api, _ = v3
    x = np.random.default_rng(0).uniform(-1, 1, (2, 299, 299, 3)).astype("float32")  # preprocess_input's range
    for how, ours in (("legacy .h5, command line", cli), (".weights.h5, archspec.build", api)):
        diff_y, diff_f = _compare(keras, ours, ref, x)
        print(f"inception_v3 ({how}): max |output diff| {diff_y:.3g}, max relative feature diff {diff_f:.3g}")
        assert diff_y <= 1e-4 and diff_f <= 1e-4


@pytest.mark.slow
def test_inception_resnet_v2_is_keras(tmp_path):
    """InceptionResNetV2 at its 299x299 input (12-16 s on 2 cores): its released-format .h5
    loads layer for layer through `archspec.build`, the model is keras' layer for layer
    (CustomScaleLayers included) and its outputs are keras'."""
    keras = pytest.importorskip("keras")
    import archspec

    keras.backend.clear_session()
    ref = keras.applications.InceptionResNetV2(weights=None)
    _randomize(keras, ref, seed=4)
    legacy = _save_legacy(ref, tmp_path / "inception_resnet_v2.h5")
    said = []
    ours = archspec.build("inception_resnet_v2", weights=legacy, say=said.append)
    assert "449 of 449 layers load" in " ".join(said), said
    _assert_same_as_keras(ours, ref, lower_spec("inception_resnet_v2"))
    x = np.random.default_rng(1).uniform(-1, 1, (2, 299, 299, 3)).astype("float32")
    diff_y, diff_f = _compare(keras, ours, ref, x)
    print(f"inception_resnet_v2: max |output diff| {diff_y:.3g}, max relative feature diff {diff_f:.3g}")
    assert diff_y <= 1e-4 and diff_f <= 1e-4
    # the Keras 3 format through the same loader, into our model with its weights scrambled first
    from archspec.backends.keras.weights import load_weights
    from parity import randomize

    ref.save_weights(tmp_path / "inception_resnet_v2.weights.h5")
    randomize(ours, seed=9)
    load_weights(ours, lower_spec("inception_resnet_v2"), tmp_path / "inception_resnet_v2.weights.h5",
                 say=said.append)
    assert "449 of 449 layers load" in said[-1], said
    diff_y, diff_f = _compare(keras, ours, ref, x)
    assert diff_y <= 1e-4 and diff_f <= 1e-4
    del ours, ref
    keras.backend.clear_session()
    gc.collect()
