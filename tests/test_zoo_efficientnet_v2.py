"""EfficientNetV2 B0..B3, S, M, L written in the open spec language: `efficientnet_v2_b0.yaml`
defines keras' FusedMBConvBlock and MBConvBlock (`define:` with `if:`), its squeeze-excite
and keras' round_filters conv, and B0's stage table scaled by `vars.width` / `vars.depth`;
B1..B3 extend it and change width, depth and input size; S, M, L extend it and replace the
stage table and the preprocessing.

Against references archspec did not write:
- static, no Keras (all seven): keras' parameter totals and layer counts
  (keras.applications.EfficientNetV2*(weights=None), computed once and written here and in
  each spec's `reference.keras_params`), and every block as keras' code builds it from its
  table (transcribed below): channels by keras' round_filters (divisor 8, min_depth 8, no
  90% rule), repeats by ceil, the residual and its stochastic-depth rate
  0.2 * b / (blocks before depth scaling), squeeze widths, strides, preprocessing;
- keras' module itself (imported, no model built): the transcribed tables, round_filters
  and the released weights' urls and hashes are keras' own;
- numerically, the smallest member, EfficientNetV2-B0 at its default 224x224, built once
  for the module: keras' model with random weights saved in keras.applications' legacy
  .h5 format (loaded through `archspec build NAME --weights FILE` in-process) and in
  Keras 3's .weights.h5 (through `archspec.build(NAME, weights=FILE)`); both give keras'
  outputs and features, with keras' exact layer names and configurations.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from archspec.api import load, lower_spec

ROOT = Path(__file__).resolve().parents[1]

# keras constructor -> (spec, width_coefficient, depth_coefficient, default size, table,
# count_params(), trainable parameters, len(model.layers)); keras.applications 3.x, weights=None
VARIANTS = {
    "EfficientNetV2B0": ("efficientnet_v2_b0", 1.0, 1.0, 224, "b", 7_200_312, 7_139_704, 273),
    "EfficientNetV2B1": ("efficientnet_v2_b1", 1.0, 1.1, 240, "b", 8_212_124, 8_141_052, 337),
    "EfficientNetV2B2": ("efficientnet_v2_b2", 1.1, 1.2, 260, "b", 10_178_374, 10_096_086, 352),
    "EfficientNetV2B3": ("efficientnet_v2_b3", 1.2, 1.4, 300, "b", 14_467_622, 14_358_406, 412),
    "EfficientNetV2S": ("efficientnet_v2_s", 1.0, 1.0, 384, "s", 21_612_360, 21_458_488, 516),
    "EfficientNetV2M": ("efficientnet_v2_m", 1.0, 1.0, 480, "m", 54_431_388, 54_139_356, 743),
    "EfficientNetV2L": ("efficientnet_v2_l", 1.0, 1.0, 480, "l", 119_027_848, 118_515_272, 1031),
}

# keras' DEFAULT_BLOCKS_ARGS (efficientnet_v2.py), one row a stage: (conv_type 1 = fused,
# num_repeat, input_filters, output_filters, expand_ratio, strides, se_ratio); kernel_size 3
TABLES = {
    "b": [(1, 1, 32, 16, 1, 1, 0), (1, 2, 16, 32, 4, 2, 0), (1, 2, 32, 48, 4, 2, 0),
          (0, 3, 48, 96, 4, 2, 0.25), (0, 5, 96, 112, 6, 1, 0.25), (0, 8, 112, 192, 6, 2, 0.25)],
    "s": [(1, 2, 24, 24, 1, 1, 0), (1, 4, 24, 48, 4, 2, 0), (1, 4, 48, 64, 4, 2, 0),
          (0, 6, 64, 128, 4, 2, 0.25), (0, 9, 128, 160, 6, 1, 0.25), (0, 15, 160, 256, 6, 2, 0.25)],
    "m": [(1, 3, 24, 24, 1, 1, 0), (1, 5, 24, 48, 4, 2, 0), (1, 5, 48, 80, 4, 2, 0),
          (0, 7, 80, 160, 4, 2, 0.25), (0, 14, 160, 176, 6, 1, 0.25), (0, 18, 176, 304, 6, 2, 0.25),
          (0, 5, 304, 512, 6, 1, 0.25)],
    "l": [(1, 4, 32, 32, 1, 1, 0), (1, 7, 32, 64, 4, 2, 0), (1, 7, 64, 96, 4, 2, 0),
          (0, 10, 96, 192, 4, 2, 0.25), (0, 19, 192, 224, 6, 1, 0.25), (0, 25, 224, 384, 6, 2, 0.25),
          (0, 7, 384, 640, 6, 1, 0.25)],
}
KERAS_TABLE_NAMES = {"b": ["b0", "b1", "b2", "b3"], "s": ["s"], "m": ["m"], "l": ["l"]}


def round_filters(filters, width, divisor=8, min_depth=8):
    """keras' efficientnet_v2.round_filters, as written there (no "never below 90%" rule)."""
    filters *= width
    return int(max(min_depth or divisor, int(filters + divisor / 2) // divisor * divisor))


def round_repeats(repeats, depth):
    """keras' efficientnet_v2.round_repeats."""
    return int(math.ceil(depth * repeats))


def keras_blocks(table, width, depth):
    """The blocks keras' EfficientNetV2() builds from a table: (name, fused, input channels,
    output channels, expand_ratio, stride, se_ratio, drop rate or None for no residual)."""
    rows = TABLES[table]
    total = float(sum(r[1] for r in rows))  # keras: the table's blocks, before depth scaling
    out, b = [], 0
    for i, (fused, num, fin, fout, e, stride, se) in enumerate(rows):
        fin, fout = round_filters(fin, width), round_filters(fout, width)
        for j in range(round_repeats(num, depth)):
            if j > 0:
                stride, fin = 1, fout
            rate = 0.2 * b / total if stride == 1 and fin == fout else None
            out.append((f"block{i + 1}{chr(j + 97)}_", bool(fused), fin, fout, e, stride, se, rate))
            b += 1
    return out


@pytest.mark.parametrize("ctor", list(VARIANTS))
def test_counts_equal_keras(ctor):
    spec, _w, _d, size, _t, params, trainable, layers = VARIANTS[ctor]
    g = lower_spec(spec)
    assert g.params == load(spec).reference["keras_params"] == params
    assert g.trainable_params == trainable
    assert len(g.nodes) == layers  # keras' layers, the input layer included
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))
    assert g.node("predictions").shape == (1000,)
    assert g.node("top_activation").shape == (math.ceil(size / 32), math.ceil(size / 32), round_filters(1280, _w))
    assert load(spec).keras.constructor == ctor
    assert lower_spec(ctor).params == params  # `archspec build EfficientNetV2S` finds the spec


@pytest.mark.parametrize("ctor", list(VARIANTS))
def test_every_block_is_the_one_keras_builds(ctor):
    """Each block from keras' table and rules: channels (round_filters), repeats (ceil),
    fused or not, expansion, squeeze width, stride, the residual and its drop rate."""
    spec, width, depth, size, table, *_ = VARIANTS[ctor]
    g = lower_spec(spec)
    blocks = keras_blocks(table, width, depth)
    prefixes = {n.name.split("_")[0] + "_" for n in g.nodes if n.name.startswith("block")}
    assert prefixes == {b[0] for b in blocks}  # no block more or less than keras'
    stem = round_filters(TABLES[table][0][2], width)
    assert g.node("stem_conv").shape == (math.ceil(size / 2), math.ceil(size / 2), stem)
    assert g.node("stem_conv").attrs["strides"] == (2, 2) and g.node("stem_conv").attrs["padding"] == "same"
    side = math.ceil(size / 2)
    drops = []
    for name, fused, fin, fout, e, stride, se, rate in blocks:
        side = math.ceil(side / stride)
        assert g.node(f"{name}project_conv").shape == (side, side, fout), name
        assert g.node(f"{name}project_bn").attrs["momentum"] == 0.9
        expanded = fin * e
        names = {n.name for n in g.nodes if n.name.startswith(name)}
        assert (f"{name}expand_conv" in names) == (e != 1), name
        if fused:
            assert not any("dwconv" in n for n in names), name
            k = g.node(f"{name}expand_conv" if e != 1 else f"{name}project_conv").attrs
            assert k["kernel"] == (3, 3) and k["strides"] == (stride, stride), name
            # without an expansion the kxk projection has keras' project_activation
            assert (f"{name}project_activation" in names) == (e == 1), name
        else:
            dw = g.node(f"{name}dwconv2")
            assert dw.op == "depthwise_conv2d" and dw.attrs["strides"] == (stride, stride), name
            assert g.node(f"{name}expand_conv").shape[-1] == expanded, name
            assert f"{name}project_activation" not in names
        if se:
            assert g.node(f"{name}se_reduce").shape == (1, 1, max(1, int(fin * se))), name
            assert g.node(f"{name}se_reshape").shape == (1, 1, expanded), name
            assert g.node(f"{name}se_excite").inputs[0] == f"{name}activation"
        else:
            assert not any("_se_" in n for n in names), name
        assert (f"{name}add" in names) == (rate is not None), name
        assert (f"{name}drop" in names) == bool(rate), name  # keras: no layer at rate 0
        if rate:
            d = g.node(f"{name}drop")
            assert tuple(d.attrs["noise_shape"]) == (None, 1, 1, 1)
            drops.append((d.attrs["rate"], rate))
    assert drops
    for ours, keras_rate in drops:
        if depth == 1.0:
            assert ours == keras_rate  # exactly keras' rate
        else:  # divided by the scaled block count, times the ratio: one rounding apart
            assert ours == pytest.approx(keras_rate, rel=1e-14, abs=0)


def test_b3_rounds_as_keras_not_as_make_divisible():
    """keras' EfficientNetV2 round_filters has no "never below 90%" rule: 16 * 1.2 = 19.2
    becomes 16 (make_divisible, EfficientNet V1's and archspec's `scaling.width`, gives 24)."""
    from archspec.language.rounding import make_divisible

    assert round_filters(16, 1.2) == 16 and make_divisible(16 * 1.2, 8) == 24
    g = lower_spec("efficientnet_v2_b3")
    assert g.node("block1b_project_conv").shape[-1] == 16
    assert g.node("stem_conv").shape[-1] == 40 and g.node("top_conv").shape[-1] == 1536
    # depth: ceil(1.4 * [1, 2, 2, 3, 5, 8]) = [2, 3, 3, 5, 7, 12] blocks
    counts = [sum(n.name.startswith(f"block{s}") and n.name.endswith("_project_conv") for n in g.nodes)
              for s in range(1, 7)]
    assert counts == [2, 3, 3, 5, 7, 12]
    # --set vars.width / vars.depth are keras' width / depth coefficients: B3 from B0
    assert lower_spec("efficientnet_v2_b0", ["vars.width=1.2", "vars.depth=1.4",
                                              "input.shape=[300,300,3]"]).params == VARIANTS["EfficientNetV2B3"][5]


@pytest.mark.parametrize("ctor", ["EfficientNetV2B2", "EfficientNetV2M"])
def test_preprocessing_is_keras(ctor):
    g = lower_spec(VARIANTS[ctor][0])
    assert [n.name for n in g.nodes[:3]][1:] == (["rescaling", "normalization"] if "B" in ctor[-2:]
                                                 else ["rescaling", "stem_conv"])
    r = g.node("rescaling").attrs
    if ctor.endswith("B2"):  # the B variants: 1/255, then ImageNet's mean and std (constants)
        assert r["scale"] == 1.0 / 255 and r["offset"] == 0.0
        n = g.node("normalization")
        assert n.attrs["mean"] == [0.485, 0.456, 0.406]
        assert n.attrs["variance"] == [0.229 ** 2, 0.224 ** 2, 0.225 ** 2] and n.params == 0
    else:  # S, M, L: [0, 255] -> [-1, 1)
        assert r["scale"] == 1.0 / 128 and r["offset"] == -1.0
    assert load(VARIANTS[ctor][0]).input.preprocess == "none"  # keras' preprocess_input is a pass-through


def test_inspect_needs_no_tensorflow():
    code = ("import sys; from archspec.api import analyze; "
            f"p = [analyze(n)['params'] for n in {[v[0] for v in VARIANTS.values()]!r}]; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; print(p)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == str([v[5] for v in VARIANTS.values()])


# ---------------------------------------------------------------- keras' own module


def test_tables_rounding_and_weights_are_keras_own():
    """What the static tests take as keras' is keras': its DEFAULT_BLOCKS_ARGS, round_filters,
    round_repeats, and each spec's `keras.weights` (keras' url and md5)."""
    ev2 = pytest.importorskip("keras.src.applications.efficientnet_v2")

    for table, names in KERAS_TABLE_NAMES.items():
        for n in names:
            rows = [(a["conv_type"], a["num_repeat"], a["input_filters"], a["output_filters"], a["expand_ratio"],
                     a["strides"], a["se_ratio"]) for a in ev2.DEFAULT_BLOCKS_ARGS[f"efficientnetv2-{n}"]]
            assert rows == TABLES[table], n
            assert all(a["kernel_size"] == 3 for a in ev2.DEFAULT_BLOCKS_ARGS[f"efficientnetv2-{n}"])
    for w in (1.0, 1.1, 1.2):
        for f in {x for rows in TABLES.values() for r in rows for x in r[2:4]} | {1280}:
            assert ev2.round_filters(f, w, 8, 8) == round_filters(f, w), (f, w)
    for d in (1.0, 1.1, 1.2, 1.4):
        assert [ev2.round_repeats(r, d) for r in range(1, 26)] == [round_repeats(r, d) for r in range(1, 26)]
    hashes = {"B0": "b0", "B1": "b1", "B2": "b2", "B3": "b3", "S": "-s", "M": "-m", "L": "-l"}
    for ctor, (spec, width, depth, size, table, *_) in VARIANTS.items():
        s = load(spec)
        key = ctor[len("EfficientNetV2"):]
        file = f"efficientnetv2-{hashes[key].lstrip('-')}"
        top, no_top = ev2.WEIGHTS_HASHES[hashes[key]]
        w = s.keras.weights["imagenet"]
        assert (w.top.url, w.top.hash) == (ev2.BASE_WEIGHTS_PATH + file + ".h5", top)
        assert (w.no_top.url, w.no_top.hash) == (ev2.BASE_WEIGHTS_PATH + file + "_notop.h5", no_top)
        # the spec's stage table is keras' (unscaled numbers; repeats ceil-scaled)
        rows = TABLES[table]
        assert s.vars["repeats"] == [r[1] for r in rows] and (s.vars["width"], s.vars["depth"]) == (width, depth)
        for st, r in zip(s.stages, rows):
            b = st.blocks[0]
            assert b.type == ("fused_mbconv_v2" if r[0] else "mbconv_v2")
            assert b.repeats == round_repeats(r[1], depth)
            p = {"expand_ratio": 1, "stride": 1, "se_ratio": 0, **b.params}
            assert (p["filters"], p["expand_ratio"], p["stride"], p["se_ratio"]) == r[3:], (spec, st.name)


# ---------------------------------------------------------------- numerically: EfficientNetV2-B0


@pytest.fixture(scope="module")
def b0(tmp_path_factory):
    keras = pytest.importorskip("keras")
    from parity import randomize, save_legacy

    keras.backend.clear_session()  # keras' unnamed layers get their first names (rescaling, ...)
    ref = keras.applications.EfficientNetV2B0(weights=None)
    randomize(ref, seed=7)
    # fan-in-scaled logits are ~0.1 apart: a near-uniform softmax would hide a wrong layer
    dense = ref.get_layer("predictions")
    kernel, bias = dense.get_weights()
    dense.set_weights([kernel * 40.0, bias])
    d = tmp_path_factory.mktemp("efficientnet_v2_b0")
    legacy = save_legacy(ref, d / "efficientnetv2-b0.h5")  # keras.applications' own format
    k3 = d / "w.weights.h5"
    ref.save_weights(k3)
    x = np.random.default_rng(0).uniform(0, 255, (2, 224, 224, 3)).astype("float32")  # pixels: in-model preprocessing
    yield keras, ref, legacy, k3, d, x


def _outputs(keras, model, x):
    from parity import infer

    return infer(keras.Model(model.inputs, [model.get_layer("avg_pool").output, model.output]), x)


def _assert_same(keras, ours, ref, x):
    from parity import assert_not_degenerate

    f_ours, y_ours = _outputs(keras, ours, x)
    f_ref, y_ref = _outputs(keras, ref, x)
    assert_not_degenerate([f_ref, y_ref])
    assert np.std(f_ref) > 1e-2 and y_ref.max() > 5.0 / y_ref.shape[-1]  # far from a uniform softmax
    diff_y = float(np.max(np.abs(y_ours - y_ref)))
    diff_f = float(np.max(np.abs(f_ours - f_ref)) / np.max(np.abs(f_ref)))
    assert diff_y <= 1e-4 and diff_f <= 1e-4, (diff_y, diff_f)
    return diff_y, diff_f


def test_b0_legacy_h5_through_the_command_line(b0, capsys):
    keras, ref, legacy, _k3, d, x = b0
    from archspec.cli import main
    from parity import assert_same_structure

    n = len([l for l in ref.layers if l.weights])
    out = d / "b0.keras"
    code = main(["build", "EfficientNetV2B0", "--weights", str(legacy), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and f"{n} of {n} layers load" in err, err
    ours = keras.models.load_model(out)
    assert_same_structure(ours, ref)
    assert [l.name for l in ours.layers] == [l.name for l in ref.layers]  # keras' names, exactly
    diff_y, diff_f = _assert_same(keras, ours, ref, x)
    with capsys.disabled():
        print(f"\nefficientnet_v2_b0 224px, legacy .h5 via the CLI: max |output diff| {diff_y:.3g}, "
              f"max relative feature diff {diff_f:.3g}")


def test_b0_keras3_weights_through_build_with_keras_configs(b0, capsys):
    keras, ref, _legacy, k3, _d, x = b0
    from archspec.api import build

    said = []
    ours = build("efficientnet_v2_b0", weights=k3, say=said.append)
    n = len([l for l in ref.layers if l.weights])
    assert any(f"{n} of {n} layers load" in m for m in said), said
    assert ours.count_params() == ref.count_params() == VARIANTS["EfficientNetV2B0"][5]
    # every layer's configuration is keras' (strides, paddings, momenta, initializers, the
    # stochastic-depth rates and noise shapes, the Normalization's constants), name apart
    assert len(ours.layers) == len(ref.layers)
    for a, b in zip(ours.layers, ref.layers):
        ca, cb = dict(a.get_config()), dict(b.get_config())
        for c in (ca, cb):
            c.pop("name", None)
            if c.get("axis") in (3, [3], (3,)):  # keras writes the channel axis as 3, archspec as -1
                c["axis"] = -1 if isinstance(c["axis"], int) else type(c["axis"])([-1])
        assert (type(a).__name__, ca) == (type(b).__name__, cb), a.name
    diff_y, diff_f = _assert_same(keras, ours, ref, x)
    with capsys.disabled():
        print(f"\nefficientnet_v2_b0 224px, .weights.h5 via build: max |output diff| {diff_y:.3g}, "
              f"max relative feature diff {diff_f:.3g}")
