"""The open spec language without any framework: composition blocks, references,
defined blocks with expressions, the new primitives, scaling of defined blocks, and the
located errors of each. (Keras agreement for these is in test_language_build.py.)"""

import json
import subprocess
import sys
import textwrap

import pytest

from archspec.api import analyze, lower_spec
from archspec.core.errors import SpecError
from archspec.language.expr import ExprError, evaluate, render
from archspec.language import loads, validate

HEAD = """\
format: 1
name: t
input: {shape: [32, 32, 3]}
defaults: {conv_bias: false}
"""
TAIL = """\
head:
  classes: 10
  layers: [{type: global_pool, name: gap}, {type: classifier, name: predictions}]
"""


def graph(body: str, tmp_path, overrides=None):
    p = tmp_path / "t.yaml"
    p.write_text(HEAD + textwrap.dedent(body) + TAIL)
    return lower_spec(str(p), overrides)


def error(body: str, tmp_path) -> SpecError:
    with pytest.raises(SpecError) as exc:
        graph(body, tmp_path)
    e = exc.value
    return getattr(e, "errors", [e])


def one_error(body, tmp_path) -> str:
    errs = error(body, tmp_path)
    assert len(errs) >= 1
    return errs[0].one_line()


# ---------------------------------------------------------------- expressions


@pytest.mark.parametrize("text,env,value", [
    ("growth * 4", {"growth": 32}, 128),
    ("in_channels // 2 + 1", {"in_channels": 64}, 33),
    ("max(8, int(c * 0.25))", {"c": 20}, 8),
    ("make_divisible(in_channels * 4.5)", {"in_channels": 16}, 72),
    ("in_shape[0] ** 2", {"in_shape": [7, 7, 3]}, 49),
    ("-(a - 3) % 5", {"a": 1}, 2),
    ("ceil(a / 3) + floor(a / 3) + round(2.6)", {"a": 10}, 4 + 3 + 3),
])
def test_expressions_evaluate(text, env, value):
    assert evaluate(text, env) == value


@pytest.mark.parametrize("text,words", [
    ("__import__('os')", "not allowed"),
    ("a.__class__", "Attribute is not allowed"),
    ("[1, 2]", "List is not allowed"),
    ("'abc'", "only numbers"),
    ("a if a else 1", "IfExp is not allowed"),
    ("b", "unknown name 'b'; known: a"),
    ("a / 0", "division by zero"),
    ("10 ** 100", "power too large"),
    ("a +", "syntax error"),
    ("lambda: 1", "Lambda is not allowed"),
    ("open('x')", "function 'open' is not allowed"),
])
def test_bad_expressions_are_refused(text, words):
    with pytest.raises(ExprError, match=None) as exc:
        evaluate(text, {"a": 2})
    assert words in str(exc.value)


def test_render_keeps_types_and_formats_inside_strings():
    assert render("${k * 2}", {"k": 3}) == 6
    assert render("${k / 2}", {"k": 3}) == 1.5
    assert render("{name}_${k}x${k}", {"k": 3}) == "{name}_3x3"
    assert render("s${k / 1}", {"k": 3}) == "s3"


# ---------------------------------------------------------------- composition


def test_residual_auto_projects_when_stride_or_width_changes(tmp_path):
    g = graph("""
    stages:
      - name: s
        blocks:
          - type: residual
            body:
              - {type: conv, name: "{name}_1", filters: 16, stride: 2, bn: true}
              - {type: conv, name: "{name}_2", filters: 16, bn: true, activation: linear}
            post: [{type: activation, name: "{name}_out"}]
          - type: residual
            body: [{type: conv, name: "{name}_1", filters: 16, bn: true}]
    """, tmp_path)
    names = [n.name for n in g.nodes]
    # the projection comes first (keras builds the shortcut before the body)
    assert names.index("s_block1_0_conv") < names.index("s_block1_1")
    proj = g.node("s_block1_0_conv")
    assert proj.attrs["strides"] == (2, 2) and proj.attrs["kernel"] == (1, 1) and proj.shape == (16, 16, 16)
    assert g.node("s_block1_add").inputs == ["s_block1_0_bn", "s_block1_2_bn"]
    assert g.node("s_block1_out").inputs == ["s_block1_add"]
    # same shape: identity shortcut, no projection layers
    assert "s_block2_0_conv" not in names
    assert g.node("s_block2_add").inputs == ["s_block1_out", "s_block2_1_relu"]


def test_optional_residual_adds_only_when_the_body_keeps_the_shape(tmp_path):
    g = graph("""
    stages:
      - name: s
        blocks:
          - {type: residual, optional: true, body: [{type: conv, filters: 8, name: "{name}_c"}]}
          - {type: residual, optional: true, body: [{type: conv, filters: 8, name: "{name}_c"}]}
    """, tmp_path)
    names = {n.name for n in g.nodes}
    assert "s_block1_add" not in names and "s_block1_0_conv" not in names  # 3 -> 8 channels: just the body
    assert g.node("s_block2_add").inputs == ["s_block1_c", "s_block2_c"]


def test_identity_shortcut_refuses_a_shape_change_naming_both_shapes(tmp_path):
    msg = one_error("""
    stages:
      - blocks:
          - {type: residual, shortcut: identity, body: [{type: conv, filters: 16, stride: 2}]}
    """, tmp_path)
    assert "(32, 32, 3)" in msg and "(16, 16, 16)" in msg and ":8:" in msg


def test_parallel_concat_and_empty_branch_is_identity(tmp_path):
    g = graph("""
    stages:
      - name: s
        blocks:
          - type: parallel
            branches:
              - []
              - [{type: conv, name: "{name}_a", filters: 5}]
              - [{type: conv, name: "{name}_b", filters: 7, kernel: 5}]
    """, tmp_path)
    cat = g.node("s_block1_concat")
    assert cat.inputs == ["input_layer", "s_block1_a", "s_block1_b"]
    assert cat.shape == (32, 32, 3 + 5 + 7)


def test_parallel_branches_that_cannot_merge_name_both_shapes(tmp_path):
    msg = one_error("""
    stages:
      - blocks:
          - type: parallel
            merge: add
            branches: [[{type: conv, filters: 4}], [{type: conv, filters: 4, stride: 2}]]
    """, tmp_path)
    assert "(32, 32, 4)" in msg and "(16, 16, 4)" in msg


def test_sequence_repeats_as_a_unit_and_its_stride_goes_to_the_first_repeat(tmp_path):
    g = graph("""
    stages:
      - name: s
        blocks:
          - type: sequence
            stride: 2
            repeats: 3
            body:
              - {type: conv, filters: 8, name: "{name}_a"}
              - {type: conv, filters: 8, name: "{name}_b"}
    """, tmp_path)
    convs = [n for n in g.nodes if n.op == "conv2d"]
    assert [c.name for c in convs] == [f"s_block{i}_{x}" for i in (1, 2, 3) for x in "ab"]
    assert [c.attrs["strides"] for c in convs] == [(2, 2)] + [(1, 1)] * 5
    assert g.node(g.outputs[0]).shape == (10,)


def test_nested_composition_and_unnamed_blocks_get_unique_names(tmp_path):
    g = graph("""
    stages:
      - name: s
        blocks:
          - type: residual
            body:
              - type: parallel
                merge: add
                merge_name: "{name}_sum"
                branches:
                  - [{type: conv, filters: 3}, {type: batch_norm}]
                  - [{type: conv, filters: 3, kernel: 1}]
              - {type: conv, filters: 3}
    """, tmp_path)
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))
    assert {"s_block1_conv", "s_block1_conv_1", "s_block1_conv_2", "s_block1_batch_norm", "s_block1_sum",
            "s_block1_add"} <= set(names)


def test_two_merges_with_one_name_are_an_error_that_says_what_to_do(tmp_path):
    msg = one_error("""
    stages:
      - blocks:
          - type: residual
            body: [{type: parallel, merge: add, branches: [[{type: conv, filters: 3}], []]}]
    """, tmp_path)
    assert "layer name 'stage1_block1_add' is used twice" in msg and "name" in msg


def test_references_and_merge_primitives(tmp_path):
    g = graph("""
    stem: [{type: conv, name: stem, filters: 8, bn: true}]
    stages:
      - name: s
        blocks:
          - {type: conv, name: a, filters: 8}
          - {type: conv, name: b, filters: 8, inputs: [stem]}
          - {type: concat, name: ab, inputs: [a, b]}
          - {type: conv, name: c, filters: 16}
          - {type: add, name: c_plus_ab, inputs: [ab]}
          - {type: multiply, name: gated, inputs: [c, c_plus_ab]}
    """, tmp_path)
    assert g.node("b").inputs == ["stem_relu"]  # the block 'stem' stands for its output
    assert g.node("ab").inputs == ["a", "b"] and g.node("ab").shape == (32, 32, 16)
    assert g.node("c_plus_ab").inputs == ["c", "ab"]  # one name: the previous output and it
    assert g.node("gated").inputs == ["c", "c_plus_ab"]


@pytest.mark.parametrize("ref,words", [
    ("nowhere", "no layer or block named 'nowhere'"),
    ("stemm", "no layer or block named 'stemm' (did you mean 'stem'?)"),
    ("later", "'later' is defined later (at "),
])
def test_bad_references_are_located(tmp_path, ref, words):
    msg = one_error(f"""
    stem: [{{type: conv, name: stem, filters: 8}}]
    stages:
      - blocks:
          - {{type: conv, filters: 8, inputs: [{ref}]}}
          - {{type: conv, name: later, filters: 8}}
    """, tmp_path)
    assert words in msg and "stages[0].blocks[0].inputs[0]" in msg and ":9:" in msg


def test_a_name_used_twice_is_located_at_both(tmp_path):
    msg = one_error("""
    stages:
      - blocks:
          - {type: conv, name: x, filters: 8}
          - {type: conv, name: x, filters: 8}
    """, tmp_path)
    assert "layer name 'x' is used twice" in msg and ":9:" in msg and "first by the block at" in msg
    assert msg.split("first by the block at")[1].split(")")[0].endswith(":8:9")


def test_drop_path_follows_the_network_wide_linear_schedule(tmp_path):
    g = graph("""
    defaults: {conv_bias: false, drop_connect_rate: 0.4}
    stages:
      - name: s
        blocks:
          - {type: residual, repeats: 4, drop_path: true, body: [{type: conv, filters: 3, name: "{name}_c"}]}
    """.replace("    defaults: {conv_bias: false, drop_connect_rate: 0.4}\n", ""), tmp_path,
        overrides=["defaults.drop_connect_rate=0.4"])
    drops = [n for n in g.nodes if n.op == "dropout"]
    # block 0 has rate 0 (no layer); blocks 1..3: 0.4 * b / 4
    assert [n.name for n in drops] == ["s_block2_drop", "s_block3_drop", "s_block4_drop"]
    assert [round(n.attrs["rate"], 6) for n in drops] == [0.1, 0.2, 0.3]
    assert all(n.attrs["noise_shape"] == (None, 1, 1, 1) for n in drops)
    assert g.node("s_block2_add").inputs == ["s_block1_add", "s_block2_drop"]


def test_drop_path_schedule_skips_fixed_stages_in_index_and_total(tmp_path):
    """Issue 17.8: B counted only non-fixed blocks but b counted all, so a `fixed` stage in
    the middle (ConvNeXt's downsampling) pushed later rates up, the last past the rate.
    keras' rule (EfficientNet: drop_connect_rate * b / B) counts both over one list."""
    g = graph("""
    stages:
      - name: s1
        blocks: [{type: residual, repeats: 2, drop_path: true, body: [{type: conv, filters: 3, name: "{name}_c"}]}]
      - name: down
        fixed: true
        blocks: [{type: conv, name: down_conv, filters: 3, kernel: 1}]
      - name: s2
        blocks: [{type: residual, repeats: 2, drop_path: true, body: [{type: conv, filters: 3, name: "{name}_c"}]}]
    """, tmp_path, overrides=["defaults.drop_connect_rate=0.4"])
    drops = {n.name: n.attrs["rate"] for n in g.nodes if n.op == "dropout"}
    # B = 4 residual blocks; b = 0 (no layer), 1, 2, 3
    assert drops == pytest.approx({"s1_block2_drop": 0.4 * 1 / 4, "s2_block1_drop": 0.4 * 2 / 4,
                                   "s2_block2_drop": 0.4 * 3 / 4})
    assert max(drops.values()) < 0.4


# ---------------------------------------------------------------- defined blocks

DENSE = """
define:
  dense_layer:
    params: {growth: 8, bottleneck: 4}
    width_params: [growth]
    body:
      - type: parallel
        merge_name: "{name}_concat"
        branches:
          - []
          - - {type: batch_norm, name: "{name}_0_bn"}
            - {type: activation, name: "{name}_0_relu"}
            - {type: conv, name: "{name}_1", conv_name: "{name}_conv", filters: "${bottleneck * growth}",
               kernel: 1, bn: true}
            - {type: conv, name: "{name}_2_conv", filters: "${growth}", kernel: 3}
stages:
  - name: conv2
    blocks: [{type: dense_layer, growth: 12, repeats: 3}]
"""


def test_defined_block_expands_with_params_and_in_channels(tmp_path):
    g = graph(DENSE, tmp_path)
    assert g.node("conv2_block1_1_conv").attrs["filters"] == 48
    assert g.node("conv2_block3_concat").shape == (32, 32, 3 + 3 * 12)
    assert g.node("conv2_block2_concat").inputs == ["conv2_block1_concat", "conv2_block2_2_conv"]
    rows = analyze(g)["blocks"]
    assert [r["type"] for r in rows if r["name"].startswith("conv2")] == ["dense_layer"] * 3


def test_width_and_depth_scaling_reach_defined_blocks(tmp_path):
    base = graph(DENSE, tmp_path)
    wide = graph(DENSE, tmp_path, ["scaling.width=2", "scaling.divisor=1"])
    deep = graph(DENSE, tmp_path, ["scaling.depth=2"])
    assert wide.node("conv2_block1_2_conv").attrs["filters"] == 24
    assert wide.node("conv2_block1_1_conv").attrs["filters"] == 96
    assert len([n for n in deep.nodes if n.op == "concat"]) == 6
    assert base.params < wide.params and base.params < deep.params


def test_defined_param_left_at_its_default_is_width_scaled(tmp_path):
    g = graph(DENSE.replace("growth: 12, ", ""), tmp_path, ["scaling.width=2", "scaling.divisor=1"])
    assert g.node("conv2_block1_2_conv").attrs["filters"] == 16


def test_defined_stride_param_goes_to_the_first_repeat_only(tmp_path):
    g = graph("""
    define:
      down:
        params: {filters: required, stride: 1}
        body: [{type: conv, name: "{name}_c", filters: "${filters}", stride: "${stride}"}]
    stages:
      - name: s
        blocks: [{type: down, filters: 4, stride: 2, repeats: 3}]
    """, tmp_path)
    assert [g.node(f"s_block{i}_c").attrs["strides"] for i in (1, 2, 3)] == [(2, 2), (1, 1), (1, 1)]


def test_name_templates_take_expressions(tmp_path):
    g = graph("""
    stages:
      - name: s
        block_name: "blk${i + 4}"
        blocks: [{type: conv, filters: 4, repeats: 2}]
    """, tmp_path)
    assert {"blk5", "blk6"} <= {n.name for n in g.nodes}


def test_define_merges_through_extends(tmp_path):
    (tmp_path / "lib.yaml").write_text(HEAD + textwrap.dedent(DENSE) + TAIL)
    (tmp_path / "child.yaml").write_text(textwrap.dedent("""\
        extends: lib.yaml
        name: child
        define:
          transition:
            params: {}
            body: [{type: conv, name: "{name}_conv", filters: "${in_channels // 2}", kernel: 1}]
        stages:
          - name: conv2
            blocks: [{type: dense_layer, repeats: 2}, {type: transition, name: pool2}]
        """))
    g = lower_spec(str(tmp_path / "child.yaml"))
    assert g.node("pool2_conv").attrs["filters"] == (3 + 2 * 8) // 2


@pytest.mark.parametrize("use,words,line", [
    ("{type: dense_layer, growht: 3}", "unknown param 'growht' of defined block 'dense_layer' (did you mean "
     "'growth'?); its params: growth, bottleneck", 22),
    ("{type: dense_layr}", "unknown block type 'dense_layr' (did you mean 'dense_layer'?)", 22),
])
def test_bad_uses_of_defined_blocks(tmp_path, use, words, line):
    text = DENSE.replace("{type: dense_layer, growth: 12, repeats: 3}", use)
    msg = one_error(text, tmp_path)
    assert words in msg and f":{line}:" in msg


def test_required_param_missing(tmp_path):
    msg = one_error("""
    define:
      unit:
        params: {filters: required}
        body: [{type: conv, filters: "${filters}"}]
    stages: [{blocks: [{type: unit}]}]
    """, tmp_path)
    assert "defined block 'unit' needs param 'filters'" in msg and ":10:" in msg


@pytest.mark.parametrize("expr,words", [
    ("${filters / 0}", "division by zero"),
    ("${filters * 2.5}", "must be an integer (got 7.5)"),
    ("${filtres}", "unknown name 'filtres'"),
    ("${(filters}", "syntax error"),
])
def test_bad_expressions_are_located_at_the_string_and_the_use(tmp_path, expr, words):
    errs = error(f"""
    define:
      unit:
        params: {{filters: 4}}
        body: [{{type: conv, name: "{{name}}_c", filters: "{expr}"}}]
    stages: [{{blocks: [{{type: unit, filters: 3}}]}}]
    """, tmp_path)
    msg = errs[0].one_line()
    assert words in msg
    assert ":9:" in msg and "define.unit.body[0].filters" in msg  # the definition's line
    assert "used at" in msg and ":10:" in msg  # and where it is used


def test_a_defined_block_that_uses_itself_is_a_cycle_error(tmp_path):
    msg = one_error("""
    define:
      a: {body: [{type: b}]}
      b: {body: [{type: sequence, body: [{type: a}]}]}
    stages: [{blocks: [{type: a}]}]
    """, tmp_path)
    assert "uses itself" in msg and "->" in msg


def test_unknown_key_in_a_body_names_the_keys_the_block_takes(tmp_path):
    msg = one_error("""
    define:
      unit: {body: [{type: conv, filter: 3}]}
    stages: [{blocks: [{type: unit}]}]
    """, tmp_path)
    assert "unknown key 'filter' (did you mean 'filters'?); a 'conv' block takes:" in msg


def test_error_inside_a_defined_body_at_lowering_names_both_places(tmp_path):
    msg = one_error("""
    define:
      unit:
        params: {k: 3}
        body: [{type: conv, filters: 4, kernel: "${k}", padding: valid}]
    stages: [{blocks: [{type: unit, k: 40}]}]
    """, tmp_path)
    assert "input too small" in msg and ":9:" in msg and "used at" in msg and ":10:" in msg


def test_new_primitives_count_like_keras(tmp_path):
    g = graph("""
    stages:
      - name: s
        blocks:
          - {type: separable_conv, name: sep, filters: 16, bn: true}
          - {type: layer_norm, name: ln}
          - {type: layer_scale, name: ls}
          - {type: squeeze_excite, name: se, ratio: 0.25}
          - {type: identity, name: idn}
          - {type: upsample, name: up, size: 2}
          - {type: mbconv, name: mb_, filters: 16, expand_ratio: 4.5, se_ratio: 0}
    """, tmp_path)
    assert g.node("sep").params == 3 * 3 * 3 + 3 * 16  # depthwise + pointwise, no bias
    assert g.node("ln").params == 32 and g.node("ls").params == 16
    assert g.node("se_reduce").attrs["filters"] == 4 and g.node("se_excite").inputs == ["ls", "se_expand"]
    assert g.node("up").shape == (64, 64, 16)
    assert g.node("mb_expand_conv").attrs["filters"] == 72  # make_divisible(16 * 4.5)


def test_inspect_densenet_sized_defined_network_stays_fast():
    """Timing lives in bench/; this only checks inspect never imports a framework."""
    code = ("import sys, archspec; archspec.analyze('two_branch'); "
            "print(any(m.split('.')[0] in ('tensorflow', 'keras', 'jax') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_schema_covers_define_and_composition():
    from archspec.language.schema import Spec

    text = str(Spec.model_json_schema())
    for word in ("Definition", "Residual", "Parallel", "Sequence", "DefinedUse", "width_params"):
        assert word in text


def test_resolving_twice_changes_nothing(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text(HEAD + textwrap.dedent(DENSE) + TAIL)
    from archspec.resolving import resolve

    raw = loads(p.read_text() + "scaling: {width: 0.5, depth: 2.0}\n")
    spec = validate(raw)
    once = resolve(spec)
    # resolve did scale (so the second call had something it could have applied again) ...
    assert once.scaling.applied == {"width": 0.5, "depth": 2.0}
    assert once.model_dump(exclude={"scaling"}) != spec.model_dump(exclude={"scaling"})
    # ... and a resolved spec is a fixed point
    assert resolve(once).model_dump() == once.model_dump()
    g1, g2 = lower_spec(once), lower_spec(resolve(once))
    assert [(n.name, n.attrs, n.shape) for n in g1.nodes] == [(n.name, n.attrs, n.shape) for n in g2.nodes]


def cli_schema(*extra) -> dict:
    """What `archspec schema` prints (what an editor checks a file with)."""
    import contextlib
    import io

    from archspec.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema", *extra]) == 0
    return json.loads(out.getvalue())


@pytest.fixture(scope="module")
def schema_validator():
    import jsonschema

    return jsonschema.Draft202012Validator(cli_schema())


@pytest.mark.parametrize("name", __import__("archspec.language.loader", fromlist=["x"]).bundled_names())
def test_json_schema_accepts_every_bundled_spec(name, schema_validator):
    """`archspec schema` is what editors check specs with: it must accept every bundled
    spec as the file is written (issue 18: the 7 that use `extends:` were rejected for
    lacking 'input'), and with extends applied, defined blocks and expressions included."""
    import yaml

    from archspec.language import load_raw
    from archspec.language.loader import bundled_spec_dir

    as_written = yaml.safe_load((bundled_spec_dir() / f"{name}.yaml").read_text())
    for doc in (as_written, load_raw(name).data):
        errors = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in schema_validator.iter_errors(doc)]
        assert errors == []


@pytest.mark.parametrize("name", ["cifar100", "finetune"])
def test_json_schema_accepts_every_bundled_recipe(name):
    import jsonschema
    import yaml

    from archspec.core.package_data import package_data

    doc = yaml.safe_load((package_data("recipes") / f"{name}.yaml").read_text())
    validator = jsonschema.Draft202012Validator(cli_schema("--recipe"))
    assert [e.message[:200] for e in validator.iter_errors(doc)] == []
    # and it is not a schema that accepts anything
    assert list(validator.iter_errors({**doc, "epochs": 0, "nope": 1}))


def test_json_schema_needs_input_only_without_extends(schema_validator):
    assert list(schema_validator.iter_errors({"name": "x", "stem": []}))  # no input, no extends
    assert not list(schema_validator.iter_errors({"name": "x", "extends": "resnet50", "head": {"classes": 10}}))
    assert list(schema_validator.iter_errors({"name": "x", "extends": "resnet50", "input": {}}))  # shape


def test_json_schema_rejects_what_the_cli_rejects():
    import jsonschema

    from archspec.language.schema import Spec

    data = {"format": 1, "name": "x", "input": {"shape": [8, 8, 3]},
            "stages": [{"blocks": [{"type": "residual", "body": [{"type": "conv", "filters": 0}]}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, Spec.model_json_schema())


YAML_ONLY = ["densenet121", "densenet169", "densenet201", "xception", "mobilenet_v3_small", "mobilenet_v3_large",
             "convnext_tiny", "resnext50_32x4d", "se_resnet50", "resnet50_yaml", "two_branch"]


@pytest.mark.parametrize("name", YAML_ONLY)
def test_yaml_only_specs_scale_in_width_and_depth(name):
    """Width scaling reaches defined blocks' width params, depth scaling their repeats."""
    base = analyze(name)
    narrow = analyze(name, ["scaling.width=0.5"])
    deep = analyze(name, ["scaling.depth=2"])
    assert narrow["params"] < base["params"] and narrow["macs"] < base["macs"]
    assert deep["params"] > base["params"] or name == "two_branch" and deep["params"] == base["params"]
    assert len(deep["layers"]) > len(base["layers"])


@pytest.mark.parametrize("name", YAML_ONLY)
def test_yaml_only_specs_use_no_python_family(name):
    """What makes them YAML-only: their blocks are primitives, composition blocks and
    defined types, never one of the Python families."""
    from archspec.language import load
    from archspec.language.define import raw_blocks, spec_blocks

    families = {"basic", "bottleneck", "inception", "aux_classifier", "depthwise_separable", "inverted_residual",
                "mbconv"}
    spec = load(name)[0]
    used = {b.type for b, _ in spec_blocks(spec)}
    for t, d in spec.define.items():
        used |= {b.get("type") for b, _ in raw_blocks(d.body, ())}
    assert not used & families, used & families


@pytest.mark.parametrize("name,last", [("resnet50", "conv5_block3_drop"), ("resnet18", "conv5_block2_drop"),
                                       ("mobilenet_v2", "block_15_drop"), ("two_branch", None)])
def test_drop_connect_rate_reaches_every_residual_family(name, last):
    """defaults.drop_connect_rate was honoured by mbconv only; every residual now takes it."""
    base = analyze(name)
    g = lower_spec(name, ["defaults.drop_connect_rate=0.2"])
    drops = [n for n in g.nodes if n.op == "dropout" and n.attrs.get("noise_shape") == (None, 1, 1, 1)]
    assert not [l for l in base["layers"] if l["op"] == "dropout" and l["attrs"].get("noise_shape")]
    if last is None:  # its residual is the only stage block: b = 0, rate 0, no layer
        assert drops == []
        return
    assert drops[-1].name == last
    rates = [n.attrs["rate"] for n in drops]
    assert rates == sorted(rates) and 0 < rates[-1] < 0.2
    assert g.params == base["params"]


def test_cli_reports_language_errors_on_one_located_line_with_exit_2(tmp_path, capsys):
    from archspec.cli import main

    p = tmp_path / "t.yaml"
    p.write_text(HEAD + textwrap.dedent("""
    define:
      unit:
        params: {f: 4}
        body: [{type: conv, name: "{name}_c", filters: "${f // 0}"}]
    stages:
      - blocks: [{type: unit}, {type: conv, filters: 3, inputs: [nowhere]}]
    """) + TAIL)
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{p}:9:") and "division by zero" in err[0]
    assert "Traceback" not in "\n".join(err)
