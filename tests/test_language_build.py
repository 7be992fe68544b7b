"""The open language against Keras: every new primitive and composition block builds a
model whose parameters and per-layer output shapes equal the static analysis, the
outputs follow the formulas (residual = shortcut + body, parallel concat/add), and a
property-based test does the same for random networks (hypothesis).

Run a long campaign with ``HYPOTHESIS_PROFILE=long python -m pytest tests/test_language_build.py``.
"""

import os
import textwrap

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archspec
from archspec.api import lower_spec
from archspec.core.errors import SpecError
from archspec.language import loads, validate

settings.register_profile("ci", max_examples=12, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=400, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def assert_static_equals_keras(graph):
    model = archspec.build(graph, seed=0)
    assert model.count_params() == graph.params
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == graph.trainable_params
    for node in graph.nodes:
        if node.op == "input":
            continue
        assert tuple(model.get_layer(node.name).output.shape[1:]) == tuple(node.shape), node.name
    assert len(model.layers) == len(graph.nodes)
    return model


def test_every_new_primitive_and_composition_block_builds_as_counted(tmp_path):
    p = tmp_path / "all.yaml"
    p.write_text(textwrap.dedent("""\
        format: 1
        name: all_new
        input: {shape: [24, 24, 3]}
        define:
          unit:
            params: {f: required, ratio: 0.5}
            width_params: [f]
            body:
              - type: residual
                body:
                  - {type: separable_conv, name: "{name}_sep", filters: "${f}", bn: true}
                  - {type: squeeze_excite, name: "{name}_se", ratio: "${ratio}", gate: hard_sigmoid,
                     separate_activations: true}
                post: [{type: activation, name: "{name}_out", activation: hard_swish}]
        stem: [{type: conv, name: stem, filters: 8, stride: 2, bn: true}]
        stages:
          - name: a
            blocks:
              - {type: unit, f: 16, repeats: 2}
              - type: parallel
                merge: concat
                branches: [[], [{type: conv, filters: 8, name: "{name}_c"}], [{type: upsample, name: "{name}_up"},
                           {type: max_pool, name: "{name}_mp", pool: 2}]]
              - type: sequence
                repeats: 2
                stride: 2
                body: [{type: conv, filters: 16, name: "{name}_c"}, {type: layer_norm, name: "{name}_ln"},
                       {type: layer_scale, name: "{name}_ls", init: 0.5}]
              - {type: identity, name: idn}
              - {type: conv, name: side, filters: 16, stride: 2, inputs: [a_block1]}
              - {type: multiply, name: gated, inputs: [idn, side]}
              - {type: add, name: summed, inputs: [gated]}
              - {type: mbconv, name: mb_, filters: 16, expand_ratio: 2.5, se_ratio: 0.25}
              - {type: inverted_residual, name: ir_, filters: 16, expansion: 4.5}
        head:
          classes: 5
          layers: [{type: global_pool, name: gap}, {type: classifier, name: predictions}]
        """))
    g = lower_spec(str(p))
    ops = {n.op for n in g.nodes}
    assert {"separable_conv2d", "layer_norm", "layer_scale", "identity", "upsample", "concat", "add",
            "multiply"} <= ops
    assert_static_equals_keras(g)


def test_residual_output_is_shortcut_plus_body_and_parallel_concatenates(tmp_path):
    import keras

    p = tmp_path / "f.yaml"
    p.write_text(textwrap.dedent("""\
        format: 1
        name: f
        input: {shape: [8, 8, 4]}
        stages:
          - name: s
            blocks:
              - type: residual
                body: [{type: conv, name: "{name}_c", filters: 4, activation: linear}]
              - type: parallel
                branches: [[], [{type: conv, name: "{name}_c", filters: 2, kernel: 1, activation: linear}]]
        head: {include_top: false}
        """))
    model = archspec.build(lower_spec(str(p)), seed=1)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 4)).astype("float32")
    conv1 = keras.Model(model.inputs, model.get_layer("s_block1_c").output)
    from parity import infer

    res = x + infer(conv1, x)
    out = infer(model, x)
    np.testing.assert_allclose(out[..., :4], res, atol=1e-5)
    w, b = model.get_layer("s_block2_c").get_weights()
    np.testing.assert_allclose(out[..., 4:], res @ w[0, 0] + b, atol=1e-4)


# ---------------------------------------------------------------- random networks

_counter = iter(range(10**9))


def _name(prefix):
    """A name unique in the network (templated on the enclosing block, so that the
    repeats of a sequence name their layers apart)."""
    return "{name}_" + f"{prefix}{next(_counter)}"


prim = st.one_of(
    st.builds(lambda f, k, s, bn: {"type": "conv", "filters": f, "kernel": k, "stride": s, "bn": bn,
                                    "name": _name("c")},
              st.integers(1, 8), st.sampled_from([1, 3]), st.sampled_from([1, 1, 2]), st.booleans()),
    st.builds(lambda f, s: {"type": "separable_conv", "filters": f, "stride": s, "name": _name("sep")},
              st.integers(1, 8), st.sampled_from([1, 2])),
    st.builds(lambda: {"type": "depthwise_conv", "name": _name("dw")}),
    st.builds(lambda: {"type": "layer_norm", "name": _name("ln")}),
    st.builds(lambda: {"type": "batch_norm", "name": _name("bn")}),
    st.builds(lambda a: {"type": "activation", "activation": a, "name": _name("act")},
              st.sampled_from(["relu", "hard_swish", "hard_sigmoid", "gelu"])),
    st.builds(lambda: {"type": "squeeze_excite", "ratio": 0.5, "name": _name("se")}),
    st.builds(lambda: {"type": "layer_scale", "name": _name("ls")}),
    st.builds(lambda: {"type": "identity", "name": _name("id")}),
    st.builds(lambda: {"type": "max_pool", "pool": 2, "padding": "same", "stride": 1, "name": _name("mp")}),
)


def _blocks(children):
    return st.lists(children, min_size=1, max_size=3)


def _composite(children):
    return st.one_of(
        st.builds(lambda body, r: {"type": "sequence", "body": body, "repeats": r, "name": _name("seq") + "_{i}"},
                  _blocks(children), st.integers(1, 2)),
        st.builds(lambda body, post, sc: {"type": "residual", "body": body, "shortcut": sc, "name": _name("res"),
                                          **({"post": [{"type": "activation", "name": "{name}_out"}]} if post else {})},
                  _blocks(children), st.booleans(), st.sampled_from(["auto", "projection"])),
        st.builds(lambda brs, m: {"type": "parallel", "merge": m, "name": _name("par"),
                                  "branches": [[dict(b, stride=1) if "stride" in b else b for b in br] for br in brs]},
                  st.lists(st.lists(prim, max_size=2), min_size=2, max_size=3), st.just("concat")),
    )


block = st.recursive(prim, _composite, max_leaves=8)


@given(blocks=st.lists(block, min_size=1, max_size=4), size=st.sampled_from([8, 12, 16]))
def test_random_networks_static_analysis_equals_keras(blocks, size):
    data = {"format": 1, "name": "rand", "input": {"shape": [size, size, 3]},
            "stages": [{"name": "s", "blocks": blocks}], "head": {"include_top": False, "pooling": "avg"}}
    import yaml

    raw = loads(yaml.safe_dump(data))
    try:
        graph = archspec.api.lower_spec(validate(raw))
    except SpecError as exc:
        # the only refusals a random network may get: a size that reaches zero or a
        # concat of branches whose strides differ
        assert "input too small" in exc.message or "do not match" in exc.message or "differ" in exc.message, \
            exc.one_line()
        return
    assert_static_equals_keras(graph)
