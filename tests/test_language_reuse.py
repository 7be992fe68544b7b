"""Writing a definition once (issue 27): `if:` in a defined block's body, `vars:` and
use-site expressions, `set:` edits of what `extends:` gave (named indexes, `[+]`), the
`{auto}` name template, the conditions of the expression language; each with the located
errors of its misuse. One network using all of them is compared with the same network
built by hand from keras.layers, unnamed layers and all."""

import textwrap

import numpy as np
import pytest

from archspec.api import lower_spec
from archspec.core.errors import SpecError
from archspec.language.expr import ExprError, evaluate


def write(tmp_path, text: str, name: str = "t.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def graph(tmp_path, text: str, overrides=None):
    return lower_spec(str(write(tmp_path, text)), overrides)


def one_error(tmp_path, text: str, overrides=None) -> str:
    with pytest.raises(SpecError) as exc:
        graph(tmp_path, text, overrides)
    errs = getattr(exc.value, "errors", [exc.value])
    assert len(errs) == 1, [e.one_line() for e in errs]
    return errs[0].one_line()


# ---------------------------------------------------------------- conditions


@pytest.mark.parametrize("text,value", [
    ("a > 0 and b is null", True), ("a > 3 or b is not null", False), ("not a == 3", False),
    ("1 < a <= 3", True), ("a != 3.0", False), ("s == 'relu'", True), ("s != \"relu\"", False),
    ("true and not false", True), ("a == true", False), ("b == null", True), ("(a > 1) == true", True),
    ("stride == 1 and in_channels == filters", True),
])
def test_conditions_evaluate_like_their_words(text, value):
    env = {"a": 3, "b": None, "s": "relu", "stride": 1, "in_channels": 16, "filters": 16}
    assert evaluate(text, env) is value


@pytest.mark.parametrize("text,words", [
    ("a and true", "each side of 'and' must be true or false (got 3"),
    ("not a", "the operand of 'not' must be true or false"),
    ("a is 3", "'is' only tests null"),
    ("a > 'x'", "the right side of > must be a real number"),
    ("b + 1", "must be a real number (got None)"),
    ("None", "write null, not None"),
    ("a in [1]", "not allowed"),
    ("'relu'", "quoted text only in a comparison"),
])
def test_bad_conditions_say_why(text, words):
    with pytest.raises(ExprError) as exc:
        evaluate(text, {"a": 3, "b": None})
    assert words in str(exc.value)


# ---------------------------------------------------------------- if: in a definition

UNIT = """\
format: 1
name: t
input: {shape: [16, 16, 3]}
define:
  unit:
    params: {filters: required, stride: 1, se_ratio: null}
    body:
      - {type: conv, name: "{name}_conv", filters: "${filters}", stride: "${stride}"}
      - {type: conv, name: "{name}_squeeze", kernel: 1, filters: "${int(filters * se_ratio)}",
         if: "${se_ratio is not null}"}
      - {type: conv, name: "{name}_add", kernel: 1, filters: "${filters}", if: "${stride == 1}"}
      - {type: max_pool, name: "{name}_pool", pool: 2, if: "${stride == 1 and filters > 8}"}
stages:
  - name: s
    blocks:
      - {type: unit, name: a, filters: 8, se_ratio: 0.5}
      - {type: unit, name: b, filters: 16, stride: 2}
      - {type: unit, name: c, filters: 16}
"""


def test_if_leaves_out_items_whose_condition_is_false(tmp_path):
    g = graph(tmp_path, UNIT)
    names = [n.name for n in g.nodes if n.op != "input"]
    # a: se, stride 1 -> squeeze and add, not the pool (8 filters); b: stride 2 -> conv only
    # (its squeeze would divide None: the item left out is never evaluated); c: add and pool
    assert names == ["a_conv", "a_squeeze", "a_add", "b_conv", "c_conv", "c_add", "c_pool"]
    assert g.node("a_squeeze").shape == (16, 16, 4)


def test_an_error_after_an_item_left_out_points_at_its_own_line(tmp_path):
    text = UNIT.replace('filters: "${filters}", if: "${stride == 1}"}', 'filters: "${filters}", if: "${stride == 1}",'
                        ' kernel: 40, padding: valid}').replace('kernel: 1, filters: "${filters}"', 'filters: "${filters}"')
    msg = one_error(tmp_path, text)
    assert "input too small" in msg and "t.yaml:11:" in msg and "define.unit.body[2]" in msg


@pytest.mark.parametrize("cond,words,line", [
    ('"${stride + 1}"', "if: must be true or false, or \"${...}\" that is", 11),  # at the use
    ("3", "if: must be true or false", 11),  # in the definition itself
    ('"${strid == 1}"', "unknown name 'strid'", 11),
])
def test_an_if_that_is_not_a_boolean_is_located(tmp_path, cond, words, line):
    msg = one_error(tmp_path, UNIT.replace('if: "${stride == 1}"', f"if: {cond}"))
    assert words in msg and f"t.yaml:{line}:" in msg and "define.unit.body[2].if" in msg


# ---------------------------------------------------------------- vars and use-site expressions

VARS = """\
format: 1
name: t
input: {shape: [16, 16, 3]}
vars: {width: 8, wide: "${width * 2}", rate: 0.25}
defaults: {drop_connect_rate: "${rate}"}
stem: [{type: conv, name: "stem${width}", filters: "${width}"}]
stages:
  - name: s
    blocks:
      - {type: conv, filters: "${wide}", repeats: "${width // 4}"}
head:
  classes: "${width + 2}"
  layers: [{type: global_pool, name: gap}, {type: classifier, name: predictions}]
"""


def test_vars_are_written_once_and_used_at_every_site(tmp_path):
    g = graph(tmp_path, VARS)
    assert g.node("stem8").attrs["filters"] == 8
    assert [n.attrs["filters"] for n in g.nodes if n.op == "conv2d" and n.block.startswith("s_")] == [16, 16]
    assert g.node("predictions").attrs["units"] == 10
    # one --set changes the number everywhere it is used
    g4 = graph(tmp_path, VARS, ["vars.width=4"])
    assert g4.node("stem4").attrs["filters"] == 4
    assert [n.attrs["filters"] for n in g4.nodes if n.op == "conv2d" and n.block.startswith("s_")] == [8]
    assert g4.node("predictions").attrs["units"] == 6


def test_a_stage_name_takes_vars(tmp_path):
    g = graph(tmp_path, VARS.replace("  - name: s\n", "  - name: \"s${width}\"\n"))
    assert [n.block for n in g.nodes if n.op == "conv2d"][1:] == ["s8_block1", "s8_block2"]


def test_a_child_spec_changes_a_var_of_the_one_it_extends(tmp_path):
    write(tmp_path, VARS, "base.yaml")
    g = graph(tmp_path, "extends: base.yaml\nname: child\nvars: {width: 12}\n")
    assert g.node("stem12").attrs["filters"] == 12 and g.node("predictions").attrs["units"] == 14


@pytest.mark.parametrize("old,new,words,line", [
    ('filters: "${wide}"', 'filters: "${wdie}"', "unknown name 'wdie'; vars: rate, wide, width", 10),
    ("vars: {width: 8,", "vars: {in_channels: 3, width: 8,", "var 'in_channels' is reserved", 4),
    ('wide: "${width * 2}"', 'wide: "${widht * 2}"', "unknown name 'widht'", 4),
])
def test_a_var_that_is_not_defined_is_located(tmp_path, old, new, words, line):
    msg = one_error(tmp_path, VARS.replace(old, new))
    assert words in msg and f"t.yaml:{line}:" in msg


def test_if_at_a_use_site_sees_vars_and_keeps_later_lines(tmp_path):
    text = VARS.replace("vars: {width: 8,", "vars: {drop: false, width: 8,").replace(
        "layers: [{type: global_pool, name: gap},",
        "layers: [{type: dropout, name: d, rate: 0.5, if: \"${drop}\"}, {type: global_pool, name: gap},")
    assert "d" not in {n.name for n in graph(tmp_path, text).nodes}
    assert graph(tmp_path, text, ["vars.drop=true"]).node("d").attrs["rate"] == 0.5
    # an error in the item after one left out is located at its own line and column
    bad = text.replace("name: gap}", "name: gap, mode: mean}")
    msg = one_error(tmp_path, bad)
    col = bad.splitlines()[12].index("mean") + 1
    assert f"t.yaml:13:{col}: head.layers[0].mode: must be one of 'avg' or 'max'" in msg


# ---------------------------------------------------------------- set: and --set paths

BASE = """\
format: 1
name: base
input: {shape: [16, 16, 3]}
stages:
  - name: conv4
    blocks: [{type: conv, filters: 8}]
  - name: conv5
    blocks: [{type: conv, filters: 16, stride: 2}]
head:
  classes: 100
  layers: [{type: global_pool, name: gap}, {type: classifier, name: predictions}]
"""


def test_set_edits_the_lists_of_the_spec_it_extends_by_name_and_appends(tmp_path):
    write(tmp_path, BASE, "base.yaml")
    g = graph(tmp_path, """\
        extends: base.yaml
        name: child
        set:
          head.classes: 10
          stages[conv5].blocks[0].repeats: 2
          stages[+]: {name: conv6, blocks: [{type: conv, filters: 32}]}
          stages[conv4].blocks[-1].filters: 4
        """)
    convs = [(n.block, n.attrs["filters"]) for n in g.nodes if n.op == "conv2d"]
    assert convs == [("conv4_block1", 4), ("conv5_block1", 16), ("conv5_block2", 16), ("conv6_block1", 32)]
    assert g.node("predictions").attrs["units"] == 10
    # --set takes the same paths
    g2 = graph(tmp_path, BASE, ["stages[conv5].blocks[0].filters=24", "stages[+]={blocks: [{type: conv, filters: 3}]}"])
    assert [n.attrs["filters"] for n in g2.nodes if n.op == "conv2d"] == [8, 24, 3]


@pytest.mark.parametrize("path,words", [
    ("stages[conv6].blocks[0].repeats", "no item named 'conv6' in stages (did you mean 'conv5'?); its names: conv4, "
                                        "conv5"),
    ("stages[+].name", "[+] appends, so it is the last part of a path"),
    ("stages[7].name", "no item [7] at stages (it has 2 items)"),
    ("head[gap]", "head is a mapping, so there is no item [gap] in it"),
])
def test_a_set_path_that_matches_nothing_is_located_at_its_key(tmp_path, path, words):
    write(tmp_path, BASE, "base.yaml")
    msg = one_error(tmp_path, f"extends: base.yaml\nname: child\nset:\n  {path}: 2\n")
    assert words in msg and "t.yaml:4:3" in msg
    with pytest.raises(SpecError) as exc:  # and on the command line, at the override
        graph(tmp_path, BASE, [f"{path}=2"])
    assert words in str(exc.value) and f"--set {path}=2" in str(exc.value)


# ---------------------------------------------------------------- {auto}


@pytest.mark.parametrize("block,words,path", [
    ('{type: add, inputs: ["{auto}"]}', "a reference names a layer that exists", "stem[1].inputs[0]"),
    ('{type: activation, activation: "{auto}"}', "only goes in a name", "stem[1].activation"),
])
def test_auto_outside_a_name_is_located(tmp_path, block, words, path):
    msg = one_error(tmp_path, f"""\
        format: 1
        name: t
        input: {{shape: [8, 8, 3]}}
        stem: [{{type: conv, name: c, filters: 3}}, {block}]
        """)
    assert words in msg and "t.yaml:4:" in msg and path in msg


def test_auto_names_are_keras_default_names_for_every_op():
    """For each op, the name `{auto}` gives is the one Keras gives an unnamed layer of the
    class the op table builds (relu6 is a ReLU layer: re_lu)."""
    import keras
    from test_optable import CASES

    from archspec.backends.keras.build import make_layer
    from archspec.ir.graph import Node
    from archspec.ir.lower import keras_default_prefix

    for op, attrs, _ in CASES:
        keras.backend.clear_session(free_memory=False)  # the name counters start again (no collection)
        layer = make_layer(Node(name=None, op=op, inputs=[], attrs=attrs))
        assert layer.name == keras_default_prefix(op, attrs), (op, attrs)


# ---------------------------------------------------------------- all of it against Keras

NET = """\
format: 1
name: reuse
input: {shape: [16, 16, 3]}
vars: {width: 8}
defaults: {conv_bias: false}
define:
  unit:
    params: {filters: required, stride: 1, se_ratio: null}
    width_params: [filters]
    body:
      - type: residual
        optional: true             # the input is added only when the shape is kept
        add_name: "{auto}"
        body:
          - {type: conv, name: "{auto}", filters: "${filters}", stride: "${stride}", bn: true, bn_name: "{auto}",
             act_name: "{auto}"}
          - {type: conv, name: "{auto}", kernel: 1, filters: "${int(filters * se_ratio)}",
             if: "${se_ratio is not null}"}
          - {type: conv, name: "{auto}", kernel: 1, filters: "${filters}", activation: linear,
             if: "${se_ratio is not null}"}
stem: [{type: conv, name: "{auto}", filters: "${width}", bn: true, bn_name: "{auto}", act_name: "{auto}"}]
stages:
  - name: s
    blocks:
      - {type: unit, filters: "${width}", se_ratio: 0.5}
head:
  classes: 1000
  layers: [{type: global_pool, name: "{auto}"}, {type: classifier, name: predictions}]
"""
#: NET's variant, one block longer and with 5 classes, without restating its lists
CHILD = """\
extends: net.yaml
name: reuse_child
set:
  stages[s].blocks[+]: {type: unit, filters: "${width * 2}", stride: 2}
  head.classes: 5
"""


def by_hand(keras):
    """NET as a person writes it with keras.layers, leaving the layers unnamed."""
    L = keras.layers
    keras.backend.clear_session()  # Keras' name counters start again
    inp = keras.Input((16, 16, 3), name="input_layer")
    x = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(inp)))
    y = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(8, 3, padding="same", use_bias=False)(x)))
    y = L.Conv2D(4, 1, padding="same", use_bias=False, activation="relu")(y)
    y = L.Conv2D(8, 1, padding="same", use_bias=False)(y)
    x = L.Add()([x, y])
    x = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(16, 3, strides=2, padding="same", use_bias=False)(x)))
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, L.Dense(5, activation="softmax", name="predictions")(x))


def test_a_network_written_once_equals_keras_built_by_hand(tmp_path):
    import keras
    from parity import assert_same_outputs, copy_weights_by_name, randomize

    import archspec

    write(tmp_path, NET, "net.yaml")
    ours = archspec.build(graph(tmp_path, CHILD), seed=0)
    ref = by_hand(keras)
    assert [l.name for l in ours.layers] == [l.name for l in ref.layers]  # {auto}: conv2d_3, add, ...
    assert ours.count_params() == ref.count_params()
    randomize(ref)
    assert copy_weights_by_name(ref, ours) == 9
    assert assert_same_outputs(ours, ref, (16, 16, 3), atol=1e-5) < 1e-5


def test_the_editor_schema_accepts_what_the_language_accepts():
    """`archspec schema` (what editors check a spec with) takes expressions where numbers
    and booleans go and `if:` on blocks, and still refuses text that is not an expression."""
    import jsonschema
    import yaml

    from archspec.language.schema import editor_schema

    v = jsonschema.Draft202012Validator(editor_schema())
    for text in (VARS, UNIT, NET, CHILD):
        assert [e.message for e in v.iter_errors(yaml.safe_load(text))] == []
    bad = yaml.safe_load(VARS.replace('filters: "${width}"', 'filters: "width"'))
    assert [list(e.absolute_path) for e in v.iter_errors(bad)] == [["stem", 0]]
