"""ConvNeXt-S/B/L/XL (Liu et al. 2022, "A ConvNet for the 2020s"): `convnext_small` extends
`convnext_tiny` (its ConvNeXt block, prestem, stem, downsampling layers and head) and
changes only `vars` (keras' model name, the depths); `convnext_base`, `convnext_large` and
`convnext_xlarge` extend `convnext_small` and change only the model name and the widths.

Against references archspec did not write:
- keras.applications.ConvNeXtSmall/Base/Large/XLarge's parameter totals (each spec's
  `reference.keras_params`), the count by formula from keras' convnext.py
  (tests/test_zoo_convnext.py's), and the paper's FLOPs (multiply-adds) at 224 (static: no Keras);
- keras.applications.ConvNeXtSmall (weights=None), built once for the module at 64x64 (the
  weights do not depend on the input size; at 224 the two forward passes alone took ~10 s of a
  2-core machine): its randomized weights saved as keras.applications releases them (legacy
  .h5) and in Keras 3's .weights.h5. The bundled spec (224x224) built by
  `archspec.build(weights=<.weights.h5>)` has keras' layer names (through keras' nested
  Sequential stem and downsampling models), weight shapes, configurations and every weight;
  `archspec build --set input.shape=[64,64,3] --weights <.h5>` gives keras' features and
  outputs. Base, Large and XLarge (89M to 350M parameters) are checked statically only.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
import yaml

from archspec.api import analyze, load, lower_spec
from archspec.language.loader import bundled_spec_dir
from test_zoo_convnext import block_params, convnext_params

# keras' convnext.py MODEL_CONFIGS, keras' count_params() (weights=None), the paper's GFLOPs at 224
SIZES = {
    "convnext_small": ("ConvNeXtSmall", (3, 3, 27, 3), (96, 192, 384, 768), 50_223_688, 8.7),
    "convnext_base": ("ConvNeXtBase", (3, 3, 27, 3), (128, 256, 512, 1024), 88_591_464, 15.4),
    "convnext_large": ("ConvNeXtLarge", (3, 3, 27, 3), (192, 384, 768, 1536), 197_767_336, 34.4),
    "convnext_xlarge": ("ConvNeXtXLarge", (3, 3, 27, 3), (256, 512, 1024, 2048), 350_196_968, 60.9),
}
KERAS_LEAF_LAYERS = 265  # every size: keras' layers with the nested Sequential models' own


# ---------------------------------------------------------------- static: no Keras


@pytest.mark.parametrize("name", sorted(SIZES))
def test_counts_match_keras_the_formula_and_the_paper(name):
    constructor, depths, dims, keras_params, gflops = SIZES[name]
    g = lower_spec(name)
    assert g.params == keras_params == convnext_params(depths, dims)
    assert g.trainable_params == keras_params  # no batch norm: all trainable
    spec = load(name)
    assert spec.reference["keras_params"] == keras_params and spec.keras.constructor == constructor
    assert spec.input.preprocess == "none"  # keras normalizes inside the model (the prestem)
    assert g.macs / 1e9 == pytest.approx(gflops, rel=0.01)  # Liu et al. (2022), Table 1/10: FLOPs at 224
    # keras' leaf layers and one add per block (keras' bare `inputs + x`), each named from the model
    assert len(g.nodes) == KERAS_LEAF_LAYERS + sum(depths)
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))
    assert all(n.startswith(f"{name}_") for n in names[1:]), [n for n in names[1:] if not n.startswith(name)][:5]
    assert names[:4] == ["input_layer", f"{name}_prestem_normalization", f"{name}_stem_conv",
                         f"{name}_stem_layernorm"]
    assert g.node(f"{name}_stem_layernorm").shape == (56, 56, dims[0])
    for i, (d, c) in enumerate(zip(depths, dims)):
        side = 56 // 2 ** i
        last = f"{name}_stage_{i}_block_{d - 1}"
        assert g.node(f"{last}_identity").shape == (side, side, c)
        assert g.node(f"{last}_pointwise_conv_1").shape == (side, side, 4 * c)
        assert f"{name}_stage_{i}_block_{d}_identity" not in names
        dw = g.node(f"{name}_stage_{i}_block_0_depthwise_conv")
        assert dw.op == "conv2d" and dw.attrs["groups"] == c and dw.params == 49 * c + c
        assert g.node(f"{name}_stage_{i}_block_0_layer_scale").params == c
        if i:
            assert g.node(f"{name}_downsampling_conv_{i - 1}").shape == (side, side, c)
    assert g.node(f"{name}_head_dense").shape == (1000,)


def test_sizes_change_only_the_name_depths_and_widths():
    """The variant files hold no network, only keras' names, figures and `vars`; renamed,
    ConvNeXt-S holds every node of ConvNeXt-T as it is (stage 2 has 18 blocks more), and
    B/L/XL are ConvNeXt-S node for node, with their widths."""
    for name, (_, _, dims, _, _) in SIZES.items():
        raw = yaml.safe_load((bundled_spec_dir() / f"{name}.yaml").read_text())
        assert set(raw) == {"format", "extends", "name", "description", "reference", "keras", "vars"}, name
        assert raw["extends"] == ("convnext_tiny" if name == "convnext_small" else "convnext_small")
        assert raw["vars"]["model"] == name
    tiny = lower_spec("convnext_tiny")
    small = {n.name: n for n in lower_spec("convnext_small").nodes}

    def renamed(n, a, b):
        return n.replace(a, b) if n.startswith(a) else n

    for n in tiny.nodes:
        m = small[renamed(n.name, "convnext_tiny", "convnext_small")]
        assert (m.op, m.shape, m.params, m.attrs) == (n.op, n.shape, n.params, n.attrs), n.name
        assert m.inputs == [renamed(i, "convnext_tiny", "convnext_small") for i in n.inputs] or \
            n.name == "convnext_tiny_downsampling_layernorm_2", n.name  # after 9 blocks in T, 27 in S
    extra = set(small) - {renamed(n.name, "convnext_tiny", "convnext_small") for n in tiny.nodes}
    assert extra == {f"convnext_small_stage_2_block_{j}_{k}" for j in range(9, 27) for k in
                     ("depthwise_conv", "layernorm", "pointwise_conv_1", "gelu", "pointwise_conv_2", "layer_scale",
                      "identity", "add")}
    widths = dict(zip(SIZES["convnext_small"][2], range(4)))
    for name in ("convnext_base", "convnext_large", "convnext_xlarge"):
        dims = SIZES[name][2]
        nodes = lower_spec(name).nodes
        assert len(nodes) == len(small)
        for n, (sname, s) in zip(nodes, small.items()):
            assert n.name == renamed(sname, "convnext_small", name) and n.op == s.op
            assert n.shape[:-1] == s.shape[:-1]
            c = s.shape[-1]  # each width, or 4x it in the block's expansion, maps to the size's
            if c in widths:
                assert n.shape[-1] == dims[widths[c]], n.name
            elif c // 4 in widths and c % 4 == 0:
                assert n.shape[-1] == 4 * dims[widths[c // 4]], n.name
            else:
                assert n.shape[-1] == c, n.name  # the input and the classifier


def test_depth_var_and_scaling():
    small = analyze("convnext_small")
    # vars.depth_2 is ConvNeXt-S's depth: 9 gives ConvNeXt-T's counts at T's widths
    assert analyze("convnext_small", ["vars.depth_2=9"])["params"] == convnext_params((3, 3, 9, 3))
    deep = analyze("convnext_small", ["scaling.depth=2"])
    assert deep["params"] - small["params"] == sum(
        d * block_params(c) for d, c in zip(SIZES["convnext_small"][1], SIZES["convnext_small"][2]))
    half = analyze("convnext_base", ["scaling.width=0.5"])
    assert half["params"] == convnext_params((3, 3, 27, 3), (64, 128, 256, 512))


# ---------------------------------------------------------------- Keras: parity with keras.applications


from parity import save_legacy  # noqa: E402  keras.applications' .h5 format


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """keras.applications.ConvNeXtSmall (weights=None, 64x64), its weights randomized as
    test_zoo_convnext does (layer norms' gamma near 1, layer scales 0.3-0.6, so that every
    block changes the features), saved in both formats keras' weights come in."""
    keras = pytest.importorskip("keras")
    from test_zoo_convnext import _randomize

    keras.backend.clear_session()
    ref = keras.applications.ConvNeXtSmall(weights=None, input_shape=(SIZE, SIZE, 3))
    _randomize(keras, ref, seed=3)
    d = tmp_path_factory.mktemp("convnext_small")
    ref.save_weights(d / "w.weights.h5")
    files = {"keras3": d / "w.weights.h5", "legacy": save_legacy(ref, d / "convnext_small.h5")}
    yield keras, ref, files
    del ref
    keras.backend.clear_session()
    gc.collect()


SIZE = 64  # the forward passes' input: 2x2 features after stage 3
N_WEIGHTED = 190  # keras' leaf layers with weights (the prestem's Normalization included)


def test_structure_and_weights_match_keras_applications(reference):
    """The bundled spec (224x224) built by the library with the Keras 3 .weights.h5 of keras'
    64x64 model: keras' layer names through its nested models, weight shapes, layer
    configurations, and every weight."""
    keras, ref, files = reference
    import archspec
    from parity import assert_same_named_structure, leaf_layers

    said = []
    ours = archspec.build("convnext_small", weights=files["keras3"], say=said.append)
    assert any(f"{N_WEIGHTED} of {N_WEIGHTED} layers load" in m for m in said), said
    assert_same_named_structure(ours, ref)
    assert ours.count_params() == ref.count_params() == SIZES["convnext_small"][3]
    ours_leaves = {l.name: l for l in leaf_layers(ours)}
    ref_leaves = leaf_layers(ref)
    assert len(ref_leaves) == KERAS_LEAF_LAYERS
    assert set(ours_leaves) - {l.name for l in ref_leaves} == {
        f"convnext_small_stage_{i}_block_{j}_add" for i, d in enumerate(SIZES["convnext_small"][1]) for j in range(d)}
    for b in ref_leaves:
        a = ours_leaves[b.name]
        cb, ca = b.get_config(), a.get_config()
        if b.name.endswith("_identity"):  # keras' Activation("linear"), the `identity` primitive here
            assert cb["activation"] == "linear" and not a.weights
            continue
        assert type(a).__name__ == type(b).__name__, b.name
        for k in ("filters", "kernel_size", "strides", "padding", "groups", "use_bias", "units", "epsilon",
                  "activation", "mean", "variance", "axis"):
            if k in cb:
                assert ca.get(k) == cb[k], (b.name, k)
        for u, v in zip(a.get_weights(), b.get_weights()):
            np.testing.assert_array_equal(u, v, err_msg=b.name)


def test_outputs_match_keras_applications_through_the_cli(reference, tmp_path, capsys):
    """`archspec build convnext_small --set input.shape=[64,64,3] --weights <keras.applications-format
    .h5>`: the .keras it writes gives the features (the head's layer norm) and outputs of keras'
    model built with input_shape=(64, 64, 3), on two images (pixels 0..255: the model normalizes
    them itself)."""
    keras, ref, files = reference
    from archspec.cli import main
    from parity import assert_not_degenerate, infer

    out = tmp_path / "c.keras"
    code = main(["build", "convnext_small", "--set", f"input.shape=[{SIZE},{SIZE},3]", "--weights",
                 str(files["legacy"]), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0 and f"{N_WEIGHTED} of {N_WEIGHTED} layers load" in err, err
    ours = keras.models.load_model(out)
    assert tuple(ours.input_shape[1:]) == tuple(ref.input_shape[1:]) == (SIZE, SIZE, 3)
    x = np.random.default_rng(0).uniform(0, 255, (2, SIZE, SIZE, 3)).astype("float32")

    def run(m):
        return infer(keras.Model(m.inputs, [m.get_layer("convnext_small_head_layernorm").output, m.output]), x)

    f_ours, y_ours = run(ours)
    f_ref, y_ref = run(ref)
    assert_not_degenerate([f_ref, y_ref])
    assert np.std(f_ref) > 0.5 and y_ref.max() > 5.0 / y_ref.shape[-1]  # a far from uniform softmax
    assert np.max(np.abs(f_ref[0] - f_ref[1])) > 0.1  # the two images differ, not by rounding
    diff_y = float(np.max(np.abs(y_ours - y_ref)))
    diff_f = float(np.max(np.abs(f_ours - f_ref))) / max(1.0, float(np.max(np.abs(f_ref))))
    print(f"convnext_small at {SIZE}x{SIZE}: max |output diff| {diff_y:.3g}, max relative feature diff {diff_f:.3g}")
    assert diff_y <= 1e-5
    assert diff_f <= 1e-4
