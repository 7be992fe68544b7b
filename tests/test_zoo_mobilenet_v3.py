"""MobileNetV3-Small and -Large written in the open spec language alone (primitives,
composition blocks and `define:`d types; no MobileNetV3 block family in Python):
`mobilenet_v3_small.yaml` defines keras' inverted residual block in pieces and the network
from them, `mobilenet_v3_large.yaml` extends it and gives its own stages and conv_2.

Against references archspec did not write:
- keras.applications.MobileNetV3Small/Large (keras/src/applications/mobilenet_v3.py, built
  in the tests with weights=None, include_preprocessing=True): the same weighted layers
  (names, weight shapes, order), every layer keras names explicitly (in order), the same
  layer configurations, the same activation function at every position (keras' own
  activations are unnamed layers, its hard_sigmoid a ReLU(6) between two bare ops), and,
  with the reference's randomized weights copied over by name, the same outputs;
- keras' parameter totals (recorded as each spec's `reference.keras_params`, and read from
  the live references too) and keras' stack_fn, block by block, checked statically without
  Keras; with `scaling.width=0.75` (keras' alpha=0.75) too, and MobileNetV3Small(alpha=0.75)
  built for real (structure and outputs).

Outputs are compared under random weights that keep the network input-dependent
(`randomize_calibrated`). Each keras reference is built once per module (module-scoped
fixture).
"""

from __future__ import annotations

import gc

import numpy as np
import pytest

from archspec.api import load, lower_spec

NAMES = ("mobilenet_v3_small", "mobilenet_v3_large")
REFS = {"mobilenet_v3_small": "MobileNetV3Small", "mobilenet_v3_large": "MobileNetV3Large"}
# keras.applications 3.x, MobileNetV3Small/Large(weights=None): count_params() and the
# trainable part, at alpha 1.0 and 0.75 (both also asserted against live models below)
KERAS_PARAMS = {"mobilenet_v3_small": 2_554_968, "mobilenet_v3_large": 5_507_432}
KERAS_TRAINABLE = {"mobilenet_v3_small": 2_542_856, "mobilenet_v3_large": 5_483_032}
KERAS_PARAMS_075 = {"mobilenet_v3_small": 2_051_552, "mobilenet_v3_large": 4_012_616}
# include_top=False, pooling="avg": the features (conv_1 and its activation, 576 / 960 wide)
KERAS_FEATURES = {"mobilenet_v3_small": (939_120, 576), "mobilenet_v3_large": (2_996_352, 960)}
# the paper's multiply-adds (Howard et al. 2019, Tables 1 and 2): 219M and 56M
PAPER_MACS = {"mobilenet_v3_small": 56e6, "mobilenet_v3_large": 219e6}
# keras' stack_fn (mobilenet_v3.py): (expansion, filters, kernel, stride, squeeze-excite,
# activation) of each _inverted_res_block call, block_id 0, 1, ...
BLOCKS = {
    "mobilenet_v3_small": [
        (1, 16, 3, 2, True, "relu"), (72.0 / 16, 24, 3, 2, False, "relu"), (88.0 / 24, 24, 3, 1, False, "relu"),
        (4, 40, 5, 2, True, "hard_swish"), (6, 40, 5, 1, True, "hard_swish"), (6, 40, 5, 1, True, "hard_swish"),
        (3, 48, 5, 1, True, "hard_swish"), (3, 48, 5, 1, True, "hard_swish"), (6, 96, 5, 2, True, "hard_swish"),
        (6, 96, 5, 1, True, "hard_swish"), (6, 96, 5, 1, True, "hard_swish")],
    "mobilenet_v3_large": [
        (1, 16, 3, 1, False, "relu"), (4, 24, 3, 2, False, "relu"), (3, 24, 3, 1, False, "relu"),
        (3, 40, 5, 2, True, "relu"), (3, 40, 5, 1, True, "relu"), (3, 40, 5, 1, True, "relu"),
        (6, 80, 3, 2, False, "hard_swish"), (2.5, 80, 3, 1, False, "hard_swish"),
        (2.3, 80, 3, 1, False, "hard_swish"), (2.3, 80, 3, 1, False, "hard_swish"),
        (6, 112, 3, 1, True, "hard_swish"), (6, 112, 3, 1, True, "hard_swish"),
        (6, 160, 5, 2, True, "hard_swish"), (6, 160, 5, 1, True, "hard_swish"),
        (6, 160, 5, 1, True, "hard_swish")],
}
LAST_POINT = {"mobilenet_v3_small": 1024, "mobilenet_v3_large": 1280}


def _depth(v, divisor=8):
    """keras' mobilenet_v3._depth, copied here so the expectations do not use archspec's."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def keras_blocks(name, alpha=1.0):
    """What keras' _inverted_res_block builds for each block at `alpha`: (prefix, input width,
    expansion width, output width, kernel, stride, squeeze-excite, activation, adds the input)."""
    out, cin = [], 16  # the stem: 16 channels for every alpha
    for i, (e, f, k, s, se, act) in enumerate(BLOCKS[name]):
        filters = _depth(f * alpha)
        out.append(("expanded_conv_" if i == 0 else f"expanded_conv_{i}_", cin, _depth(cin * e), filters, k, s,
                    se, act, s == 1 and cin == filters))
        cin = filters
    return out


def check_blocks(g, name, alpha):
    nodes = {x.name: x for x in g.nodes}
    size = g.node("conv").shape[0]
    assert nodes["conv"].attrs["filters"] == 16 and nodes["conv"].attrs["strides"] == (2, 2)
    assert nodes["conv_hard_swish"].attrs["fn"] == "hard_swish"
    for i, (p, cin, exp, out, k, s, se, act, res) in enumerate(keras_blocks(name, alpha)):
        if i == 0:
            assert f"{p}expand" not in nodes and exp == cin  # keras' block_id 0 has no expansion
        else:
            assert nodes[f"{p}expand"].shape == (size, size, exp)
            assert nodes[f"{p}expand_{act}"].attrs["fn"] == act
        dw = nodes[f"{p}depthwise"]
        assert dw.attrs["kernel"] == (k, k) and dw.attrs["strides"] == (s, s)
        assert dw.attrs["padding"] == ("valid" if s == 2 else "same")
        assert (f"{p}depthwise_pad" in nodes) == (s == 2)
        size = -(-size // s)
        assert nodes[f"{p}depthwise_{act}"].shape == (size, size, exp)
        assert nodes[f"{p}depthwise_{act}"].attrs["fn"] == act
        if se:
            assert nodes[f"{p}squeeze_excite_conv"].attrs["filters"] == _depth(exp * 0.25)
            assert nodes[f"{p}squeeze_excite_relu"].attrs["fn"] == "relu"
            assert nodes[f"{p}squeeze_excite_hard_sigmoid"].attrs["fn"] == "hard_sigmoid"
            assert nodes[f"{p}squeeze_excite_mul"].inputs == [f"{p}depthwise_{act}",
                                                             f"{p}squeeze_excite_hard_sigmoid"]
        else:
            assert not any(n.startswith(f"{p}squeeze_excite") for n in nodes)
        assert nodes[f"{p}project_bn"].shape == (size, size, out)
        if res:
            assert nodes[f"{p}add"].inputs[1] == f"{p}project_bn"
        else:
            assert f"{p}add" not in nodes
    assert nodes["conv_1"].shape == (size, size, _depth(out * 6))
    last = LAST_POINT[name] if alpha <= 1 else _depth(LAST_POINT[name] * alpha)
    assert nodes["conv_2"].shape == (1, 1, last)


# ---------------------------------------------------------------- static: no Keras


@pytest.mark.parametrize("name", NAMES)
def test_counts(name):
    g = lower_spec(name)
    assert (g.params, g.trainable_params) == (KERAS_PARAMS[name], KERAS_TRAINABLE[name])
    assert load(name).reference["keras_params"] == KERAS_PARAMS[name]
    assert abs(g.macs / PAPER_MACS[name] - 1) < 0.02  # 56.5M / 216.6M multiply-accumulates
    assert g.outputs == ["predictions"] and g.node("predictions").shape == (1000,)
    # without the top: conv_1 (part of keras' feature extractor) and keras' avg_pool
    f = lower_spec(name, ["head.include_top=false", "head.pooling=avg"])
    assert (f.params, f.node(f.outputs[0]).shape) == (KERAS_FEATURES[name][0], (KERAS_FEATURES[name][1],))
    assert f.outputs == ["avg_pool"]


@pytest.mark.parametrize("name", NAMES)
def test_blocks_as_keras_writes_them(name):
    """Every block's widths, kernel, stride, padding, squeeze-excite, activations and shortcut."""
    g = lower_spec(name)
    check_blocks(g, name, 1.0)
    convs = [x for x in g.nodes if x.op in ("conv2d", "depthwise_conv2d")]
    biased = {x.name for x in convs if x.attrs["use_bias"]}
    assert biased == {"conv_2", "logits"} | {x.name for x in convs if "squeeze_excite" in x.name}
    assert all((x.attrs["epsilon"], x.attrs["momentum"]) == (1e-3, 0.999) for x in g.nodes if x.op == "batch_norm")
    assert g.node("rescaling").attrs["scale"] == 1.0 / 127.5 and g.node("rescaling").attrs["offset"] == -1.0
    assert g.node("dropout").attrs["rate"] == 0.2


def test_one_block_node_by_node():
    g = lower_spec("mobilenet_v3_small")
    p = "expanded_conv_4_"
    rows = [(x.name[len(p):], x.op, x.shape) for x in g.nodes if x.name.startswith(p)]
    assert rows == [
        ("expand", "conv2d", (14, 14, 240)),
        ("expand_bn", "batch_norm", (14, 14, 240)),
        ("expand_hard_swish", "activation", (14, 14, 240)),
        ("depthwise", "depthwise_conv2d", (14, 14, 240)),
        ("depthwise_bn", "batch_norm", (14, 14, 240)),
        ("depthwise_hard_swish", "activation", (14, 14, 240)),
        ("squeeze_excite_avg_pool", "global_pool", (1, 1, 240)),
        ("squeeze_excite_conv", "conv2d", (1, 1, 64)),
        ("squeeze_excite_relu", "activation", (1, 1, 64)),
        ("squeeze_excite_conv_1", "conv2d", (1, 1, 240)),
        ("squeeze_excite_hard_sigmoid", "activation", (1, 1, 240)),
        ("squeeze_excite_mul", "multiply", (14, 14, 240)),
        ("project", "conv2d", (14, 14, 40)),
        ("project_bn", "batch_norm", (14, 14, 40)),
        ("add", "add", (14, 14, 40)),
    ]
    assert g.node(f"{p}add").inputs == ["expanded_conv_3_project_bn", f"{p}project_bn"]


def test_large_defines_nothing_itself():
    """The large spec takes every block type from the small one's `define:`."""
    import yaml

    from archspec.language.loader import bundled_spec_dir

    raw = yaml.safe_load((bundled_spec_dir() / "mobilenet_v3_large.yaml").read_text())
    assert raw["extends"] == "mobilenet_v3_small" and "define" not in raw
    a, b = lower_spec("mobilenet_v3_small"), lower_spec("mobilenet_v3_large")
    # the same stem, the same kind of block: expanded_conv_2_ is a stride-1 relu block in both
    for n in ("conv", "conv_bn", "expanded_conv_2_depthwise", "expanded_conv_2_add"):
        x, y = a.node(n), b.node(n)
        assert (x.op, x.attrs) == (y.op, y.attrs)


@pytest.mark.parametrize("name", NAMES)
def test_width_075_is_keras_alpha_075(name):
    # keras MobileNetV3*(alpha=0.75): blocks at _depth(f * 0.75), expansions from the actual
    # input, the stem at 16, conv_2 at 1024 / 1280 (only alpha > 1 widens it)
    g = lower_spec(name, ["scaling.width=0.75"])
    assert g.params == KERAS_PARAMS_075[name]
    check_blocks(g, name, 0.75)


def test_width_above_one_widens_conv_2():
    g = lower_spec("mobilenet_v3_small", ["scaling.width=1.25"])
    check_blocks(g, "mobilenet_v3_small", 1.25)  # the stem stays at 16, conv_2 is _depth(1024 * 1.25)
    assert g.params > KERAS_PARAMS["mobilenet_v3_small"]


def test_large_first_block_adds_only_while_the_width_is_kept():
    """keras adds the input to Large's first block only while _depth(16 * alpha) == 16 (the
    stem stays at 16): an `optional` residual, so alpha 0.5 builds without that add."""
    assert _depth(16 * 0.5) == 8
    names = {n.name for n in lower_spec("mobilenet_v3_large", ["scaling.width=0.5"]).nodes}
    assert "expanded_conv_add" not in names and "expanded_conv_project" in names
    assert "expanded_conv_add" in {n.name for n in lower_spec("mobilenet_v3_large").nodes}


def test_large_width_05_counts_as_keras_alpha_05():
    import keras

    ref = keras.applications.MobileNetV3Large(alpha=0.5, weights=None, input_shape=(224, 224, 3))
    assert lower_spec("mobilenet_v3_large", ["scaling.width=0.5"]).params == ref.count_params()
    assert "expanded_conv_add" not in {l.name for l in ref.layers}


# ---------------------------------------------------------------- Keras: parity with keras.applications

# keras' unnamed activation layers: ReLU() -> re_lu_N, ReLU(6.0) of hard_sigmoid -> re_lu_N,
# Activation("hard_swish") -> activation_N; its Flatten after the logits -> flatten
GENERATED = ("re_lu", "activation", "flatten")


def _activation_kinds(model):
    """The activation function of every activation layer, in order (the classifier's softmax
    aside); keras' hard_sigmoid is its ReLU(6.0) between `x + 3` and `* 1/6`."""
    import keras

    out = []
    for layer in model.layers:
        if layer.name == "predictions":
            continue
        if isinstance(layer, keras.layers.ReLU):
            out.append("hard_sigmoid" if layer.max_value == 6.0 else "relu")
        elif isinstance(layer, keras.layers.Activation):
            fn = keras.activations.serialize(layer.activation)
            out.append({"hard_silu": "hard_swish"}.get(fn, fn))  # keras' name for hard_swish
    return out


def _config(layer):
    """A layer's config without its name and without initializer seeds (ours are built
    with a seed per initializer; the architecture is the same)."""
    def unseeded(v):
        if isinstance(v, dict):
            return {k: unseeded(x) for k, x in v.items() if k != "seed"}
        return v

    c = unseeded(dict(layer.get_config()))
    c.pop("name", None)
    return type(layer).__name__, c


def randomize_calibrated(model, shape, seed):
    """Random weights under which the network computes something input-dependent:
    `parity.randomize`'s fan-in-scaled weights, then every batch norm's moving mean and
    variance set to the statistics of its input on a random batch (so activations stay O(1)
    through 50-70 batch norms instead of vanishing or blowing up), and the logits conv
    scaled up so that the softmax is far from uniform."""
    import keras
    from parity import randomize

    randomize(model, seed=seed)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:  # one training-mode pass with momentum 0: moving statistics := batch statistics
        bn.momentum = 0.0
    x = np.random.default_rng(seed).uniform(0, 255, (4,) + tuple(shape)).astype("float32")
    model(x, training=True)
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    logits = model.get_layer("logits")
    kernel, bias = logits.get_weights()
    logits.set_weights([kernel * 20.0, bias])


@pytest.fixture(scope="module", params=NAMES)
def pair(request):
    """(name, ours, reference), each built once, the reference's randomized weights copied
    into ours."""
    keras = pytest.importorskip("keras")
    from parity import copy_weights_by_name

    from archspec.api import build

    name = request.param
    keras.backend.clear_session()
    ref = getattr(keras.applications, REFS[name])(input_shape=(224, 224, 3), weights=None,
                                                  include_preprocessing=True)
    ours = build(name, seed=1)
    randomize_calibrated(ref, (224, 224, 3), seed=3)
    copied = copy_weights_by_name(ref, ours)
    yield name, ours, ref, copied
    del ours, ref
    keras.backend.clear_session()
    gc.collect()


def test_same_structure_as_keras(pair):
    import keras
    from parity import assert_same_named_structure

    name, ours, ref, copied = pair
    assert_same_named_structure(ours, ref, generated=GENERATED)
    assert ours.count_params() == ref.count_params() == KERAS_PARAMS[name] == lower_spec(name).params
    assert sum(int(np.prod(w.shape)) for w in ref.trainable_weights) == KERAS_TRAINABLE[name]
    assert copied == len([l for l in ref.layers if l.weights])
    # one layer for each of keras' layers: its hard_sigmoid's two bare ops are not layers
    assert len(ours.layers) == len(ref.layers)
    # the same activation at every position (keras' are unnamed)
    kinds = _activation_kinds(ref)
    assert _activation_kinds(ours) == kinds
    assert kinds.count("hard_swish") > 0 and kinds.count("hard_sigmoid") == sum(b[4] for b in BLOCKS[name])
    # every other layer both have (by name) is configured the same: kernels, strides,
    # paddings, correct_pad paddings, biases, batch-norm epsilon and momentum, keepdims,
    # dropout rate (keras' squeeze_excite_relu is a ReLU layer, ours Activation("relu"))
    mine = {l.name: l for l in ours.layers}
    shared = [l for l in ref.layers if l.name in mine and not l.name.startswith("input")
              and not isinstance(l, (keras.layers.ReLU, keras.layers.Activation))]
    assert len(shared) > 100
    for layer in shared:
        assert _config(mine[layer.name]) == _config(layer), layer.name


def test_same_outputs_as_keras(pair):
    import keras
    from parity import assert_not_degenerate

    name, ours, ref, _ = pair
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")
    # the features (conv_1, after its batch norm), the logits and the softmax; the features
    # and logits compared relative to their size (1e-4, 1e-5), the softmax to 1e-5 absolute
    taps, rtols = ("conv_1_bn", "logits", "predictions"), (1e-4, 1e-5, None)

    def run(model):
        m = keras.Model(model.input, [model.get_layer(t).output for t in taps])
        return [keras.ops.convert_to_numpy(y) for y in m(x, training=False)]  # eager: no tracing

    got, want = run(ours), run(ref)
    assert_not_degenerate(want)
    assert np.std(want[0]) > 0.5 and np.std(want[1][0] - want[1][1]) > 0.5  # features vary, examples differ
    assert np.max(want[2]) > 5.0 / 1000  # the softmax is not flat
    diffs = []
    for t, rtol, a, b in zip(taps, rtols, got, want):
        atol = 1e-5 if rtol is None else rtol * max(1.0, float(np.max(np.abs(b))))
        np.testing.assert_allclose(a, b, atol=atol, rtol=0, err_msg=t)
        diffs.append(float(np.max(np.abs(a - b))))
    print(f"{name}: max |diff| conv_1_bn {diffs[0]:.3g} (max |x| {np.max(np.abs(want[0])):.3g}), "
          f"logits {diffs[1]:.3g} (max |x| {np.max(np.abs(want[1])):.3g}), softmax {diffs[2]:.3g} "
          f"(max p {np.max(want[2]):.3g})")


def test_width_075_against_keras_alpha_075():
    """`--set scaling.width=0.75` is keras' alpha=0.75 (a pretrained variant): same
    weighted layers, counts and outputs."""
    keras = pytest.importorskip("keras")
    from parity import assert_not_degenerate, assert_same_named_structure, copy_weights_by_name

    from archspec.api import build

    keras.backend.clear_session()
    ref = keras.applications.MobileNetV3Small(input_shape=(96, 96, 3), alpha=0.75, weights=None)
    g = lower_spec("mobilenet_v3_small", ["scaling.width=0.75", "input.shape=[96,96,3]"])
    ours = build(g)
    assert_same_named_structure(ours, ref, generated=GENERATED)
    assert g.params == ours.count_params() == ref.count_params()
    assert lower_spec("mobilenet_v3_small", ["scaling.width=0.75"]).params == KERAS_PARAMS_075["mobilenet_v3_small"]
    randomize_calibrated(ref, (96, 96, 3), seed=5)
    copy_weights_by_name(ref, ours)
    x = np.random.default_rng(2).uniform(0, 255, (2, 96, 96, 3)).astype("float32")
    # the logits relative to their size (1e-5) and the softmax to 1e-4 absolute (the export
    # tolerance): on this machine's oneDNN kernels the logits (up to 158) differ by 1.7e-4, 1.1e-6
    # of their size (summation order), which moves the peaky softmax (p 0.79) by 1.65e-5: 1e-5
    # absolute there failed here on the code of the start of this session as well
    def run(model):
        m = keras.Model(model.input, [model.get_layer("logits").output, model.output])
        return [keras.ops.convert_to_numpy(o) for o in m(x, training=False)]

    (la, a), (lb, b) = run(ours), run(ref)
    assert_not_degenerate(b)
    np.testing.assert_allclose(la, lb, atol=1e-5 * max(1.0, float(np.max(np.abs(lb)))), rtol=0)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
