"""NASNet-A, written in the open spec language (specs/nasnet_mobile.yaml: keras' four
helpers `define:`d once, their shape and stride branches as `if:`, the adjust block's
shifted pool path with the `cropping` primitive, keras' unnamed layers as `{auto}`;
specs/nasnet_large.yaml: the same spec with other `vars`), against
keras.applications.NASNetMobile and NASNetLarge.

- Static (no Keras): keras' parameter counts (5,326,716 and 88,949,818), layer counts,
  the papers' multiply-adds (564M and 23.8G), keras' automatic names, the cells' wiring
  where the two networks differ (skip_reduction), and that the large network is a short
  file of vars over the mobile one.
- Parity (slow): NASNetMobile at 224 x 224 (the size keras gives it), built once for the
  module in a fresh Keras session and given random weights, saved as keras.applications
  releases them (legacy .h5) and as Keras 3 .weights.h5. Ours is built through the command
  line (`archspec build --weights nasnet_mobile.h5`): the same layer names in the same order,
  weight shapes, layer settings, static shapes, features and outputs; the Keras 3 file loads
  every layer (static report) and, into the same model, gives the same outputs.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from archspec import analyze
from archspec.api import lower_spec

MOBILE_PARAMS = 5_326_716  # keras.applications.NASNetMobile(weights=None).count_params()
LARGE_PARAMS = 88_949_818  # keras.applications.NASNetLarge(weights=None).count_params()
SPECS = Path(__file__).resolve().parents[1] / "specs"


# ---------------------------------------------------------------- static (no Keras)


@pytest.fixture(scope="module")
def graphs():
    return {name: lower_spec(name) for name in ("nasnet_mobile", "nasnet_large")}


@pytest.mark.parametrize("name,params,layers,side,width,macs,last", [
    # Zoph et al. (2018), Table 2: 564M and 23.8G multiply-adds
    ("nasnet_mobile", MOBILE_PARAMS, 771, 7, 1056, 564e6, "activation_187"),
    ("nasnet_large", LARGE_PARAMS, 1041, 11, 4032, 23.8e9, "activation_259"),
])
def test_params_layers_and_macs_match_keras_and_the_paper(graphs, name, params, layers, side, width, macs, last):
    g = graphs[name]
    assert g.params == params
    from archspec.language import load

    spec = load(name)[0]
    assert spec.reference["keras_params"] == params
    assert len(g.nodes) == layers
    assert g.macs == pytest.approx(macs, rel=0.002)
    names = [n.name for n in g.nodes]
    assert len(names) == len(set(names))
    # the head: keras' unnamed final ReLU and pooling, then its classifier
    assert names[-3:] == [last, "global_average_pooling2d", "predictions"]
    assert g.node(last).shape == (side, side, width)
    assert g.node("predictions").shape == (1000,)
    assert g.node("stem_conv1").params == 3 * 3 * 3 * spec.vars["stem_filters"]
    # non-trainable: the batch norms' moving means and variances
    bn = sum(n.shape[-1] for n in g.nodes if n.op == "batch_norm")
    assert g.trainable_params == params - 2 * bn
    assert analyze(name)["params"] == params


def test_cells_are_named_and_sized_as_keras_names_them(graphs):
    g = graphs["nasnet_mobile"]  # filters 1056 // 24 = 44; cells 11, 22, 44, 88, 176 wide
    for cell, side, width in [("reduction_concat_stem_1", 56, 4 * 11), ("reduction_concat_stem_2", 28, 4 * 22),
                              ("normal_concat_0", 28, 6 * 44), ("normal_concat_3", 28, 6 * 44),
                              ("reduction_concat_reduce_4", 14, 4 * 88), ("normal_concat_8", 14, 6 * 88),
                              ("reduction_concat_reduce_8", 7, 4 * 176), ("normal_concat_12", 7, 6 * 176)]:
        assert g.node(cell).shape == (side, side, width), cell
    names = {n.name for n in g.nodes}
    assert "normal_concat_4" not in names and "normal_concat_13" not in names
    # a stride-2 separable block pads as keras' correct_pad: 111 is odd, 56 even
    assert g.node("separable_conv_1_pad_reduction_left1_stem_1").attrs["padding"] == ((2, 2), (2, 2))
    assert g.node("separable_conv_1_pad_reduction_right1_reduce_4").attrs["padding"] == ((2, 3), (2, 3))
    # keras names the reduction cells' 4th average pool and their 5th separable block alike
    assert g.node("reduction_left4_reduce_4").op == "avg_pool"
    relu = g.node(g.node("separable_conv_1_reduction_left4_reduce_4").inputs[0])
    assert relu.op == "activation" and relu.inputs == ["reduction_add_1_reduce_4"]
    assert g.node("reduction_add4_reduce_4").inputs == ["separable_conv_2_bn_reduction_left4_reduce_4",
                                                        "reduction_right5_reduce_4"]


def test_keras_automatic_names(graphs):
    """keras leaves the cells' ReLUs, the adjust block's padding, crop and concatenation and
    the reduction cells' 4th add unnamed; `{auto}` numbers them as a fresh Keras session."""
    for name, shifted in [("nasnet_mobile", ["stem_2", "0", "5", "9"]), ("nasnet_large", ["stem_2", "0", "7", "13"])]:
        g = graphs[name]
        by_op = {}
        for n in g.nodes:
            by_op.setdefault(n.op, []).append(n.name)
        # the shifted average-pool path of each adjust block that halves p: pad, crop, pool
        crops = by_op["cropping"]
        assert crops == ["cropping2d"] + [f"cropping2d_{k}" for k in range(1, len(shifted))]
        for k, cell in enumerate(shifted):
            crop = g.node(crops[k])
            assert crop.attrs["cropping"] == ((1, 0), (1, 0))
            pad = g.node(crop.inputs[0])
            assert pad.name == ("zero_padding2d" if k == 0 else f"zero_padding2d_{k}")
            assert pad.attrs["padding"] == ((0, 1), (0, 1)) and pad.inputs == [f"adjust_relu_1_{cell}"]
            pool = g.node(f"adjust_avg_pool_2_{cell}")
            assert pool.inputs == [crop.name] and pool.attrs["pool"] == (1, 1) and pool.attrs["strides"] == (2, 2)
            assert crop.shape == g.node(f"adjust_relu_1_{cell}").shape
        assert by_op["add"].count("add") == 1 and "add_3" in by_op["add"] and "add_4" not in by_op["add"]
        concats = [c for c in by_op["concat"] if c.startswith("concatenate")]
        assert concats == ["concatenate", "concatenate_1", "concatenate_2", "concatenate_3"]
        acts = [a for a in by_op["activation"] if a.startswith("activation")]
        assert acts == ["activation"] + [f"activation_{k}" for k in range(1, len(acts))]


def test_skip_reduction_is_where_the_two_networks_differ(graphs):
    """The first normal cell after a reduction takes p from the cell before the reduction
    (NASNetMobile, skip_reduction=False) or from the reduction's own p (NASNetLarge, True)."""
    mobile, large = graphs["nasnet_mobile"], graphs["nasnet_large"]
    assert mobile.node("adjust_relu_1_5").inputs == ["normal_concat_3"]
    assert mobile.node("adjust_relu_1_9").inputs == ["normal_concat_8"]
    assert large.node("adjust_relu_1_7").inputs == ["normal_concat_4"]
    assert large.node("adjust_relu_1_13").inputs == ["normal_concat_11"]
    # the second one takes the reduction's output in both, projected (same size, other width)
    assert mobile.node(mobile.node("adjust_conv_projection_6").inputs[0]).inputs == ["reduction_concat_reduce_4"]
    assert large.node(large.node("adjust_conv_projection_8").inputs[0]).inputs == ["reduction_concat_reduce_6"]
    # the first stem cell has no p (keras' p=None): no adjust layer at all
    assert not [n for n in mobile.nodes if n.name.endswith("_stem_1") and n.name.startswith("adjust")]


def test_the_cells_are_written_once_and_large_is_vars_over_mobile():
    import yaml

    mobile = yaml.safe_load((SPECS / "nasnet_mobile.yaml").read_text())
    large_text = (SPECS / "nasnet_large.yaml").read_text()
    large = yaml.safe_load(large_text)
    assert set(mobile["define"]) == {"nasnet_sep", "nasnet_adjust", "nasnet_normal", "nasnet_reduction"}
    assert large["extends"] == "nasnet_mobile" and "define" not in large and "stages" not in large
    assert large["vars"] == {"penultimate_filters": 4032, "num_blocks": 6, "stem_filters": 96, "skip_reduction": 1}
    assert large["input"] == {"shape": [331, 331, 3]}
    assert len([ln for ln in large_text.splitlines() if ln.strip() and not ln.startswith("#")]) < 20
    # the shifted pool path (an outside user wrote 12 layers for it): 4 items, written once
    text = (SPECS / "nasnet_mobile.yaml").read_text()
    assert text.count("type: cropping") == 1 and text.count("type: zero_padding") == 3
    for name, constructor, digest in [("nasnet_mobile", "NASNetMobile", "020fb642bf7360b370c678b08e0adf61"),
                                      ("nasnet_large", "NASNetLarge", "11577c9a518f0070763c2b964a382f17")]:
        from archspec.language import load

        spec = load(name)[0]
        assert spec.keras.constructor == constructor
        assert spec.keras.weights["imagenet"].top.hash == digest
        assert spec.input.preprocess == "tf"
    assert load("nasnet_large")[0].keras.weights["imagenet"].no_top.url.endswith("/nasnet/NASNet-large-no-top.h5")


def test_inspect_json_through_the_cli(capsys):
    import json

    from archspec.cli import main

    assert main(["inspect", "nasnet_large", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["params"] == LARGE_PARAMS and out["preprocess"]["mode"] == "tf"


# ---------------------------------------------------------------- parity with keras.applications


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """keras.applications.NASNetMobile in a fresh session (its unnamed layers get their first
    automatic names), random weights, saved in both formats."""
    keras = pytest.importorskip("keras")
    from parity import randomize, save_legacy

    d = tmp_path_factory.mktemp("nasnet")
    keras.backend.clear_session()
    ref = keras.applications.NASNetMobile(weights=None)
    randomize(ref, seed=3)
    dense = ref.get_layer("predictions")  # logits spread out: a softmax far from uniform
    k, b = dense.get_weights()
    dense.set_weights([k * 30.0, b])
    files = {"legacy": d / "nasnet_mobile.h5", "keras3": d / "nasnet_mobile.weights.h5"}
    save_legacy(ref, files["legacy"])  # keras.applications' own format, keyed by layer name
    ref.save_weights(files["keras3"])
    yield keras, ref, files, d
    del ref
    keras.backend.clear_session()
    gc.collect()


def _compare(keras, ours, ref):
    from parity import assert_not_degenerate, assert_same_structure, infer

    assert_same_structure(ours, ref)
    assert [l.name for l in ours.layers] == [l.name for l in ref.layers]  # unnamed layers included
    assert ours.count_params() == ref.count_params() == MOBILE_PARAMS
    x = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype("float32")  # preprocess_input's range

    def with_features(m):
        return keras.Model(m.inputs, [m.get_layer("global_average_pooling2d").output, m.output])

    f_ours, y_ours = infer(with_features(ours), x)
    f_ref, y_ref = infer(with_features(ref), x)
    assert_not_degenerate([f_ref, y_ref])
    assert np.std(f_ref) > 1e-2 and y_ref.max() > 5.0 / y_ref.shape[-1]
    diff_y = float(np.max(np.abs(y_ours - y_ref)))
    diff_f = float(np.max(np.abs(f_ours - f_ref)) / np.max(np.abs(f_ref)))
    assert diff_y <= 1e-4 and diff_f <= 1e-4
    return diff_y, diff_f


@pytest.mark.slow
def test_cli_build_with_keras_applications_h5_equals_keras(reference, capsys):
    """`archspec build nasnet_mobile --weights nasnet_mobile.h5` (keras.applications' format):
    every layer loads, and the model written is keras' layer for layer and output for output."""
    keras, ref, files, d = reference
    from archspec.cli import main

    out = d / "ours.keras"
    code = main(["build", "nasnet_mobile", "--weights", str(files["legacy"]), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    n = len([l for l in ref.layers if l.weights])
    assert n == 389 and f"{n} of {n} layers load" in err, err
    ours = keras.models.load_model(out)
    g = lower_spec("nasnet_mobile")
    for node in g.nodes:  # every static shape is Keras'
        if node.op != "input":
            assert tuple(ref.get_layer(node.name).output.shape[1:]) == tuple(node.shape), node.name
    for a, b in zip(ours.layers, ref.layers):  # strides, paddings, crops, epsilons, momenta, activations
        ca, cb = a.get_config(), b.get_config()
        assert type(a).__name__ == type(b).__name__, a.name
        for key in ("strides", "padding", "kernel_size", "pool_size", "cropping", "epsilon", "momentum", "use_bias",
                    "activation", "depth_multiplier", "axis"):
            if key in cb:
                assert ca.get(key) == cb[key], (a.name, key)
    diff_y, diff_f = _compare(keras, ours, ref)
    print(f"nasnet_mobile keras.applications .h5 via the CLI: max |output diff| {diff_y:.3g}, "
          f"relative features {diff_f:.3g}")
    # the same weights saved by Keras 3 (`save_weights`): the static load report (no build)
    # finds every weighted layer, and the one loader puts them into our model (its weights
    # scrambled first, so a load that did nothing would not pass): keras' outputs again
    from archspec.api import weights_report
    from archspec.backends.keras.weights import load_weights
    from parity import randomize

    report = weights_report("nasnet_mobile", files["keras3"])
    assert report.loadable and report.summary() == "389 of 389 layers load"
    randomize(ours, seed=11)
    load_weights(ours, g, files["keras3"], say=lambda m: None)
    diff_y, diff_f = _compare(keras, ours, ref)
    print(f"nasnet_mobile Keras 3 .weights.h5 via archspec.build: max |output diff| {diff_y:.3g}, "
          f"relative features {diff_f:.3g}")
