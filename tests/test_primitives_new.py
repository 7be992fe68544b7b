"""The primitives `cropping`, `conv_transpose` and `group_norm`, and `concat` / `parallel` on
a spatial axis, at the spec level: each tiny spec's model against the same network written by
hand with keras.layers (Cropping2D, Conv2DTranspose, GroupNormalization, Concatenate) — the
same weights copied over, the same outputs, parameter counts, output shapes — and its ONNX
export (from the IR) against Keras in ONNX Runtime; its static MACs and weight layout; its
codegen file and its diagram; and the located errors of their misuse.

(Each op alone, against its Keras layer and at every opset, is in test_onnx_ir.py; the op
table round trip in test_optable.py.)"""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from archspec.api import lower_spec
from archspec.core.errors import SpecError
from archspec.language import loads, validate

TOL = 1e-5

CROP = """\
format: 1
name: crop
input: {shape: [8, 8, 4]}
stages:
  - name: s
    blocks:
      - {type: conv, name: c, filters: 4, kernel: 3, activation: linear}
      - {type: cropping, name: crop1, cropping: 1}
      - {type: cropping, name: crop2, cropping: [1, 0]}
      - {type: cropping, name: crop3, cropping: [[1, 0], [0, 2]]}
head: {include_top: false}
"""

CONV_T = """\
format: 1
name: deconv
input: {shape: [5, 5, 4]}
stages:
  - name: s
    blocks:
      - {type: conv_transpose, name: up1, filters: 6, kernel: 3, stride: 2, bias: true, activation: relu}
      - {type: conv_transpose, name: up2, filters: 4, kernel: 4, stride: 2, padding: valid, bias: false,
         bn: true, activation: swish}
head: {include_top: false}
"""

GROUP = """\
format: 1
name: groups
input: {shape: [8, 8, 4]}
stages:
  - name: s
    blocks:
      - {type: conv, name: c, filters: 32, kernel: 3, activation: linear}
      - {type: group_norm, name: gn32}
      - {type: group_norm, name: gn4, groups: 4}
      - {type: group_norm, name: gn2, groups: 2, epsilon: 1.0e-5, center: false}
head: {include_top: false}
"""

# the spec's axis excludes the batch (0 = rows, 1 = columns, -1 = channels): Keras' axis + 1
CONCAT = """\
format: 1
name: cat
input: {shape: [8, 8, 4]}
stages:
  - name: s
    blocks:
      - type: parallel
        name: p
        axis: 0
        branches: [[], [{type: conv, name: "{name}_c", filters: 4, kernel: 3, activation: linear}]]
      - {type: conv, name: d, filters: 4, kernel: 1, activation: linear}
      - {type: concat, name: cat_w, axis: 1, inputs: [p_concat]}
head: {include_top: false}
"""


def by_hand(which):
    """The network of each spec, written with keras.layers."""
    import keras
    from keras import layers as L

    if which == "crop":
        x = keras.Input((8, 8, 4))
        y = L.Conv2D(4, 3, padding="same", name="c")(x)
        y = L.Cropping2D(1, name="crop1")(y)
        y = L.Cropping2D((1, 0), name="crop2")(y)
        y = L.Cropping2D(((1, 0), (0, 2)), name="crop3")(y)
    elif which == "deconv":
        x = keras.Input((5, 5, 4))
        y = L.Conv2DTranspose(6, 3, strides=2, padding="same", activation="relu", name="up1")(x)
        y = L.Conv2DTranspose(4, 4, strides=2, padding="valid", use_bias=False, name="up2")(y)
        y = L.BatchNormalization(name="up2_bn")(y)
        y = L.Activation("swish", name="up2_activation")(y)
    elif which == "groups":
        x = keras.Input((8, 8, 4))
        y = L.Conv2D(32, 3, padding="same", name="c")(x)
        y = L.GroupNormalization(name="gn32")(y)
        y = L.GroupNormalization(groups=4, name="gn4")(y)
        y = L.GroupNormalization(groups=2, epsilon=1e-5, center=False, name="gn2")(y)
    else:
        x = keras.Input((8, 8, 4))
        p = L.Concatenate(axis=1, name="p_concat")([x, L.Conv2D(4, 3, padding="same", name="p_c")(x)])
        y = L.Concatenate(axis=2, name="cat_w")([L.Conv2D(4, 1, name="d")(p), p])
    return keras.Model(x, y)


SPECS = {"crop": CROP, "deconv": CONV_T, "groups": GROUP, "cat": CONCAT}
#: output shape (batch excluded) and what Keras counts, by hand
WANT = {"crop": ((3, 4, 4), 4 * 9 * 4 + 4),
        "deconv": ((22, 22, 4), (3 * 3 * 4 * 6 + 6) + 4 * 4 * 6 * 4 + 4 * 4),
        "groups": ((8, 8, 32), (3 * 3 * 4 * 32 + 32) + 64 + 64 + 32),
        "cat": ((16, 16, 4), (3 * 3 * 4 * 4 + 4) + (4 * 4 + 4))}


def graph_of(text: str):
    return lower_spec(validate(loads(text, "t.yaml")))


@pytest.fixture(scope="module")
def built():
    """{name: (graph, archspec's model, the hand-written model with the same weights)}, built once."""
    import archspec
    from parity import copy_weights_by_name, randomize

    out = {}
    for name, text in SPECS.items():
        g = graph_of(text)
        ours = archspec.build(g, seed=0)
        randomize(ours, seed=1)
        ref = by_hand(name)
        assert copy_weights_by_name(ours, ref) == len([l for l in ours.layers if l.weights])
        out[name] = (g, ours, ref)
    return out


def _x(shape, n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype("float32")


@pytest.mark.parametrize("name", list(SPECS))
def test_spec_builds_the_network_written_by_hand(built, name):
    g, ours, ref = built[name]
    shape, params = WANT[name]
    assert g.params == ours.count_params() == ref.count_params() == params
    assert g.trainable_params == sum(int(np.prod(w.shape)) for w in ref.trainable_weights)
    assert tuple(g.node(g.outputs[0]).shape) == tuple(ours.output.shape[1:]) == tuple(ref.output.shape[1:]) == shape
    for n in g.nodes[1:]:  # every layer: same class, same output shape as the hand-written one
        assert type(ours.get_layer(n.name)) is type(ref.get_layer(n.name)), n.name
        assert tuple(n.shape) == tuple(ref.get_layer(n.name).output.shape[1:]), n.name
    x = _x(ref.input.shape[1:])
    want = np.asarray(ref(x, training=False))
    assert want.std() > 0 and not np.allclose(want[0], want[1])
    np.testing.assert_allclose(np.asarray(ours(x, training=False)), want, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", list(SPECS))
def test_onnx_export_matches_keras(built, name):
    """The IR's ONNX file of the spec's model in ONNX Runtime against the Keras output."""
    pytest.importorskip("onnxruntime")
    import onnx
    import onnxruntime as ort

    from archspec.backends.onnx import via_ir
    from archspec.exporting import options

    g, ours, _ = built[name]
    proto = via_ir.convert(ours, options.DEFAULT_OPSET, ours.inputs[0].name, list(ours.output_names), g)
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _x(ours.input.shape[1:], n=3, seed=2)
    got = sess.run(None, {ours.inputs[0].name: x})[0]
    want = np.asarray(ours(x, training=False))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL * max(1.0, float(np.abs(want).max())), rtol=0)


def test_conv_transpose_macs_and_sizes():
    """MACs of a transposed conv: every input pixel times the whole kernel (as the papers and
    Keras-based profilers count it); output sizes by Keras' rule, a kernel below the stride
    included ("valid": (H - 1) * s + max(k, s))."""
    g = graph_of(CONV_T)
    assert g.node("up1").macs == 5 * 5 * (3 * 3 * 4 * 6)
    assert g.node("up2").macs == 10 * 10 * (4 * 4 * 6 * 4)
    assert g.macs == g.node("up1").macs + g.node("up2").macs
    assert g.node("up1").shape == (10, 10, 6) and g.node("up2").shape == (22, 22, 4)
    small = graph_of(CONV_T.replace("kernel: 4, stride: 2, padding: valid", "kernel: 1, stride: 3, padding: valid"))
    assert small.node("up2").shape == (30, 30, 4)


def test_static_weight_layout_is_keras(built):
    """`weights.weight_specs` (what the report and the weights loader read) for the new ops."""
    from archspec.backends.keras import weights as W

    for name in ("deconv", "groups"):
        g, ours, _ = built[name]
        for n in W.weighted_nodes(g):
            layer = ours.get_layer(n.name)
            assert W.weight_specs(g, n) == [(w.name, tuple(w.shape)) for w in layer.weights], n.name


def test_codegen_writes_the_same_model(built, tmp_path):
    """The standalone Keras file (codegen, from the op table) builds the model archspec builds."""
    import archspec
    from archspec.backends.codegen import generate
    from test_codegen import assert_same_model, check_outputs, load_module

    spec = tmp_path / "all.yaml"
    spec.write_text(CONV_T.replace("head:", textwrap.indent(textwrap.dedent("""\
        - {type: cropping, name: crop, cropping: [[1, 0], [2, 1]]}
        - {type: group_norm, name: gn, groups: 2}
        - type: parallel
          name: p
          axis: -3
          branches: [[], [{type: conv, name: "{name}_c", filters: 4, kernel: 1, activation: linear}]]
        """), "      ") + "head:"))
    text = generate(str(spec))
    for cls in ("Cropping2D(((1, 0), (2, 1))", "Conv2DTranspose(6, 3, strides=2, padding=\"same\"",
                "GroupNormalization(groups=2", "Concatenate(axis=-3"):
        assert cls in text, cls
    ours = load_module(text, tmp_path / "gen.py").build_model()
    ref = archspec.build(str(spec))
    assert_same_model(ours, ref)
    check_outputs(ours, ref)


def test_diagram_draws_the_new_ops(built):
    from archspec.views.diagram import render_svg

    svg = render_svg(built["deconv"][0], expanded=True)
    assert "convT 3\u00d73 \u00d72 6" in svg and "convT 4\u00d74 \u00d72 4" in svg
    assert 'data-op="conv_transpose2d"' in svg
    svg = render_svg(built["crop"][0], expanded=True)
    assert "crop 1\u00d71" in svg and "crop 1\u00d70" in svg and "crop 1,0,0,2" in svg
    svg = render_svg(built["groups"][0], expanded=True)
    assert "group norm 32" in svg and "group norm 4" in svg
    svg = render_svg(built["cat"][0], expanded=True)
    assert "concatenate" in svg


# ---------------------------------------------------------------- misuse, located


def _error(text: str) -> SpecError:
    with pytest.raises(SpecError) as exc:
        graph_of(text)
    return exc.value


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("text,needle,message", [
    (CROP.replace("cropping: [1, 0]}", "cropping: [[3, 3], [0, 0]]}"), "name: crop2",
     "input too small: layer 'crop2' (cropping 3+3 rows, 0+0 columns) gets 6x6 and would output 0x6"),
    (CROP.replace("cropping: 1}", "cropping: 4}"), "name: crop1", "would output 0x0"),
    (GROUP.replace("groups: 4}", "groups: 5}"), "name: gn4",
     "layer 'gn4' (group_norm): groups=5 must divide the input channels (got 32 channels, groups=5)"),
    (GROUP.replace("filters: 32", "filters: 16"), "name: gn32",
     "groups=32 must divide the input channels (got 16 channels, groups=32)"),
    (CONCAT.replace("kernel: 3, activation: linear}", "kernel: 3, stride: 2, activation: linear}"), "type: parallel",
     "concat on axis 0"),
], ids=["crop-too-large", "crop-everything", "groups-not-dividing", "groups-above-channels", "concat-mismatch"])
def test_shape_errors_are_located(text, needle, message):
    err = _error(text)
    assert message in err.message
    assert err.location is not None and err.location.source == "t.yaml"
    assert err.location.line == _line_of(text, needle), err.one_line()


@pytest.mark.parametrize("text,needle,key,message", [
    (CONV_T.replace("kernel: 3, stride: 2,", "kernel: 3, stride: 2, dilation: 2,"), "name: up1", "dilation",
     "unknown key 'dilation'"),
    (GROUP.replace("groups: 4}", "groups: 4, group: 2}"), "name: gn4", "group", "unknown key 'group'"),
    (CROP.replace("cropping: 1}", "cropping: -1}"), "name: crop1", "cropping", "cropping"),
    (GROUP.replace("groups: 4}", "groups: 0}"), "name: gn4", "groups", "must be > 0"),
], ids=["conv_transpose-dilation", "group_norm-typo", "negative-crop", "zero-groups"])
def test_bad_fields_are_located(text, needle, key, message):
    err = _error(text)
    assert message in err.one_line()
    assert err.location is not None and err.location.line == _line_of(text, needle), err.one_line()
    assert err.path is not None and err.path.startswith("stages[0].blocks[")
