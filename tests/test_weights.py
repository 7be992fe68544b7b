"""Pretrained weights as data (issue 20): the static load report, the one strict loader
(`archspec.backends.keras.weights`) behind `build/train/export --weights`, input-channel
adaptation by timm's rule, and keras.applications' files in both formats loading into the
bundled twins. No downloads: the files are saved here from keras.applications models built
with ``weights=None`` and given random weights."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from archspec.api import lower_spec, weights_report
from archspec.backends.keras import weights as W
from archspec.cli import main
from archspec.core.errors import SpecError
from parity import infer, leaf_layers, randomize

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers


from parity import save_legacy  # noqa: E402  keras.applications' .h5 format


def save(model, path: Path) -> Path:
    if path.name.endswith(".weights.h5"):
        model.save_weights(path)
    elif path.suffix == ".keras":
        model.save(path)
    elif path.suffix == ".npz":
        np.savez(path, **{f"{l.name}/{w.name}": v for l in leaf_layers(model) for w, v in zip(l.weights,
                                                                                            l.get_weights())})
    else:
        save_legacy(model, path)
    return path


def randomize_leaves(model, seed=0):
    """Random weights in every leaf layer (nested sub-models included), fan-in scaled, norms'
    scales near 1, so that outputs are far from uniform and a wrong weight shows."""
    rng = np.random.default_rng(seed)
    for layer in leaf_layers(model):
        if not layer.weights:
            continue
        new = []
        for w, v in zip(layer.weights, layer.get_weights()):
            if v.dtype.kind in "iu" or w.name == "count":
                new.append(v)
            elif "variance" in w.name or "gamma" in w.name or type(layer).__name__ == "LayerScale":
                new.append(rng.uniform(0.5, 1.0, v.shape).astype(v.dtype))
            elif v.ndim <= 1:
                new.append((rng.standard_normal(v.shape) * 0.1).astype(v.dtype))
            else:
                fan_in = int(np.prod(v.shape[:-1]))
                if isinstance(layer, keras.layers.DepthwiseConv2D):
                    fan_in = int(np.prod(v.shape[:2]))
                new.append((rng.standard_normal(v.shape) * np.sqrt(1.0 / fan_in)).astype(v.dtype))
        layer.set_weights(new)


def build_cli(capsys, spec, weights, out, *args):
    code = main(["build", spec, "--weights", str(weights), "-o", str(out), *args])
    err = capsys.readouterr().err
    return code, err


def outputs_equal(ours, ref, shape, atol=1e-4, seed=1, layer=None):
    """Outputs within `atol`, and the pooled features before the classifier (or `layer`'s
    output) within a relative 1e-3: random weights give a near-uniform softmax, which alone
    would hide a wrong layer. Returns the largest output difference."""
    x = np.random.default_rng(seed).uniform(0, 1, (2, *shape)).astype("float32")
    pools = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D, keras.layers.Flatten)
    mine = {l.name for l in ours.layers}
    name = layer or [l.name for l in ref.layers if isinstance(l, pools) and l.name in mine][-1]

    def run(m):
        return infer(keras.Model(m.inputs, [m.get_layer(name).output, m.output]), x)

    (fa, a), (fb, b) = run(ours), run(ref)
    scale = float(np.max(np.abs(fb)))
    assert scale > 1e-3 and np.std(fb) > 1e-2 * scale  # features that vary: a wrong layer would show
    np.testing.assert_allclose(fa, fb, rtol=1e-3, atol=1e-4 * scale)
    if layer:  # another head (fine-tuning): the features are the comparison
        return float(np.max(np.abs(fa - fb)))
    diff = float(np.max(np.abs(a - b)))
    assert diff <= atol, diff
    return diff


def timm_rule(kernel: np.ndarray, c: int) -> np.ndarray:
    """timm's adapt_input_conv, written again here on (kh, kw, in, out) kernels."""
    if c == 1:
        return kernel.sum(axis=2, keepdims=True)
    idx = [i % 3 for i in range(c)]  # R, G, B, R, G, ...
    return kernel[:, :, idx, :] * (3.0 / c)


# ---------------------------------------------------------------- the static side


@pytest.mark.parametrize("spec", ["resnet50", "mobilenet_v2", "convnext_tiny", "xception", "efficientnet",
                                  "densenet121", "googlenet", "two_branch", "mobilenet_v3_small"])
def test_static_weight_shapes_are_the_built_models(spec):
    """The report reads weight shapes from the IR: they must be Keras' (names, order, shapes)."""
    from archspec.backends.keras import load

    g = lower_spec(spec)
    model = load().build_model(g)
    layers = {l.name: l for l in model.layers}
    nodes = W.weighted_nodes(g)
    assert len(nodes) == len([l for l in model.layers if l.weights])
    for n in nodes:
        specs = W.weight_specs(g, n)
        assert [s for _, s in specs] == [tuple(w.shape) for w in layers[n.name].weights], n.name
        assert [k for k, _ in specs] == [w.name for w in layers[n.name].weights], n.name


def test_report_needs_no_tensorflow(tmp_path):
    """`archspec weights` reads the file with h5py: neither TensorFlow nor Keras is imported."""
    m = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    path = save_legacy(m, tmp_path / "m.h5")
    code = ("import sys; from archspec.api import weights_report; "
            f"r = weights_report('mobilenet_v2', {str(path)!r}, ['input.shape=[96,96,3]', 'head.classes=2']); "
            "print(r.summary()); assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TF'")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "104 of 105 layers load; classifier re-initialised (1000 → 2 classes)" in p.stdout


# ---------------------------------------------------------------- keras.applications into the twins


def test_resnet50_legacy_h5_loads_through_build(tmp_path, capsys):
    ref = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    randomize(ref, seed=5)
    w = save_legacy(ref, tmp_path / "resnet50.h5")
    code, err = build_cli(capsys, "resnet50", w, tmp_path / "r.keras", "--set", "input.shape=[64,64,3]")
    assert code == 0, err
    assert "107 of 107 layers load" in err, err
    print("resnet50 legacy .h5:", outputs_equal(keras.models.load_model(tmp_path / "r.keras"), ref, (64, 64, 3)))


@pytest.mark.parametrize("suffix", [".weights.h5", ".h5", ".npz"])
def test_mobilenet_v2_loads_from_every_format(tmp_path, capsys, suffix):
    ref = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    randomize(ref, seed=6)
    w = save(ref, tmp_path / f"mnv2{suffix}")
    code, err = build_cli(capsys, "mobilenet_v2", w, tmp_path / "m.keras", "--set", "input.shape=[96,96,3]")
    assert code == 0, err
    assert "105 of 105 layers load" in err, err
    print(f"mobilenet_v2 {suffix}:", outputs_equal(keras.models.load_model(tmp_path / "m.keras"), ref,
                                                   (96, 96, 3)))


@pytest.fixture(scope="module")
def convnext_files(tmp_path_factory):
    """keras.applications.ConvNeXtTiny nests Sequential sub-models (stem, downsampling);
    archspec's twin is flat: the leaf layers match by name."""
    d = tmp_path_factory.mktemp("convnext")
    ref = keras.applications.ConvNeXtTiny(weights=None, input_shape=(64, 64, 3))
    assert any(isinstance(l, keras.Sequential) for l in ref.layers)
    randomize_leaves(ref, seed=7)
    return ref, {s: save(ref, d / f"convnext_tiny{s}") for s in (".weights.h5", ".keras", ".h5")}


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras", ".h5"])
def test_convnext_tiny_nested_submodels_load(convnext_files, tmp_path, capsys, suffix):
    ref, files = convnext_files
    code, err = build_cli(capsys, "convnext_tiny", files[suffix], tmp_path / "c.keras", "--set",
                          "input.shape=[64,64,3]")
    assert code == 0, err
    assert "100 of 100 layers load" in err, err
    print(f"convnext_tiny {suffix}:", outputs_equal(keras.models.load_model(tmp_path / "c.keras"), ref,
                                                    (64, 64, 3), seed=2))


@pytest.mark.slow
def test_vgg16_imagenet_size_legacy_h5_loads(tmp_path, capsys):
    ref = keras.applications.VGG16(weights=None)
    randomize(ref, seed=8)
    w = save_legacy(ref, tmp_path / "vgg16.h5")
    code, err = build_cli(capsys, "vgg16", w, tmp_path / "v.keras")
    assert code == 0, err
    assert "16 of 16 layers load" in err, err
    print("vgg16 legacy .h5:", outputs_equal(keras.models.load_model(tmp_path / "v.keras"), ref, (224, 224, 3)))


@pytest.fixture(scope="module")
def vgg64(tmp_path_factory):
    """VGG16 at 64x64 (fc1 is 2048 -> 4096 there), random weights, keras.applications' format."""
    d = tmp_path_factory.mktemp("vgg")
    ref = keras.applications.VGG16(weights=None, input_shape=(64, 64, 3))
    randomize(ref, seed=9)
    return ref, save_legacy(ref, d / "vgg16.h5")


def test_vgg16_finetune_reinitialises_the_classifier_and_loads_the_rest(vgg64, tmp_path, capsys):
    """The notes' fine-tune: `--weights vgg16.h5 --set head.classes=2`."""
    ref, w = vgg64
    r = weights_report("vgg16", w, ["input.shape=[64,64,3]", "head.classes=2"])
    assert r.loadable
    assert r.summary() == "15 of 16 layers load; classifier re-initialised (1000 → 2 classes)"
    assert [(l.name, l.status) for l in r.layers if l.status != "loaded"] == [("predictions", "re-initialised")]
    code, err = build_cli(capsys, "vgg16", w, tmp_path / "v.keras", "--set", "input.shape=[64,64,3]",
                          "--set", "head.classes=2")
    assert code == 0 and "classifier re-initialised (1000 → 2 classes)" in err, err
    ours = keras.models.load_model(tmp_path / "v.keras")
    print("vgg16 fine-tune, fc2:", outputs_equal(ours, ref, (64, 64, 3), layer="fc2"))


def test_vgg16_other_input_size_names_fc1(vgg64, tmp_path, capsys):
    """A different input size: every conv loads; fc1 (after flatten) is named with both shapes
    and refused, unless --weights-skip leaves it at init."""
    ref, w = vgg64
    r = weights_report("vgg16", w, ["input.shape=[32,32,3]"])
    assert not r.loadable
    bad = [(l.name, l.status, l.file[0], l.spec[0]) for l in r.problems]
    assert bad == [("fc1", "mismatch", (2048, 4096), (512, 4096))]
    assert "after flatten" in r.problems[0].note
    assert r.summary().startswith("15 of 16 layers load; 1 with other shapes: fc1 (fc1: (2048, 4096), (4096,) "
                                  "in the file, (512, 4096), (4096,) in the spec"), r.summary()
    out = tmp_path / "v.keras"
    code, err = build_cli(capsys, "vgg16", w, out, "--set", "input.shape=[32,32,3]")
    assert code == 2 and "fc1" in err and "(2048, 4096)" in err and not out.exists(), err
    assert len([l for l in err.splitlines() if "weights do not load" in l]) == 1 and "Traceback" not in err, err
    r = weights_report("vgg16", w, ["input.shape=[32,32,3]"], skip=["fc1"])
    assert r.loadable and r.summary() == "15 of 16 layers load; 1 skipped (--weights-skip): fc1"


# ---------------------------------------------------------------- input channels


@pytest.mark.parametrize("channels", [1, 2, 4])
def test_other_input_channels_adapt_the_stem_by_timms_rule(tmp_path, channels):
    from archspec.api import build

    ref = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    randomize(ref, seed=10)
    w = save_legacy(ref, tmp_path / "r.h5")
    over = [f"input.shape=[64,64,{channels}]", "input.preprocess=none"]  # caffe needs 3 channels
    r = weights_report("resnet50", w, over)
    assert r.loadable and [(l.name, l.status) for l in r.layers if l.status != "loaded"] == [("conv1_conv",
                                                                                             "adapted")]
    assert f"conv1_conv adapted (3 → {channels} input channels" in r.summary()
    lines = []
    ours = build("resnet50", over, weights=w, say=lines.append)
    assert lines == [f"weights from {w}: {r.summary()}"]
    got = ours.get_layer("conv1_conv").get_weights()
    want = timm_rule(ref.get_layer("conv1_conv").get_weights()[0], channels)
    assert got[0].shape == (7, 7, channels, 64)
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[1], ref.get_layer("conv1_conv").get_weights()[1])
    # the rest loads unchanged: a grey image through the adapted stem gives the RGB network's features
    x = np.random.default_rng(0).uniform(0, 1, (2, 64, 64, 1)).astype("float32")
    if channels == 1:  # sum over RGB of a grey image = the grey image through the summed kernel
        a = infer(keras.Model(ours.inputs, ours.get_layer("conv1_conv").output), x)
        b = infer(keras.Model(ref.inputs, ref.get_layer("conv1_conv").output), np.repeat(x, 3, -1))
        np.testing.assert_allclose(a, b, atol=1e-4)


# ---------------------------------------------------------------- the policy


VARIANT = """
name: tiny
input: {shape: [16, 16, 3]}
stem:
  - {type: conv, name: c1, filters: 4, kernel: 3}
stages:
  - blocks:
      - {type: conv, name: c2, filters: 8, kernel: 3, stride: 2}
head:
  classes: 5
  layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]
"""


def _variant(tmp_path, text=VARIANT, name="tiny.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_renamed_layer_is_missing_not_silently_random(tmp_path, capsys):
    from archspec.api import build

    spec = _variant(tmp_path)
    w = tmp_path / "tiny.weights.h5"
    build(str(spec), seed=1).save_weights(w)
    renamed = _variant(tmp_path, VARIANT.replace("name: c2", "name: c2_new"), "renamed.yaml")
    r = weights_report(str(renamed), w)
    assert not r.loadable
    assert [(l.name, l.status) for l in r.problems] == [("c2_new", "missing")]
    assert r.extra == ["c2"]
    assert "1 missing from the file: c2_new" in r.summary() and "1 in the file only: c2" in r.summary()
    out = tmp_path / "x.keras"
    code, err = build_cli(capsys, str(renamed), w, out)
    assert code == 2 and "c2_new" in err and not out.exists(), err
    # asked for: left at init, and said so
    r = weights_report(str(renamed), w, skip=["c2_*"])
    assert r.loadable and "1 skipped (--weights-skip): c2_new" in r.summary()


def test_skip_glob_that_matches_nothing_is_an_error(tmp_path):
    from archspec.api import build

    w = tmp_path / "t.weights.h5"
    build(str(_variant(tmp_path)), seed=1).save_weights(w)
    with pytest.raises(SpecError, match="--weights-skip 'fc9' matches no layer"):
        weights_report(str(_variant(tmp_path)), w, skip=["fc9"])


def test_report_counts_equal_the_layers_whose_weights_changed(tmp_path):
    """Loaded + adapted = the layers whose weights differ from their initial values after the
    load; re-initialised and skipped layers keep theirs exactly."""
    from archspec.backends.keras import load

    ref = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3))
    randomize(ref, seed=11)
    w = save_legacy(ref, tmp_path / "r.h5")
    g = lower_spec("resnet50", ["input.shape=[64,64,1]", "input.preprocess=none", "head.classes=7"])
    model = load().build_model(g, seed=3)
    before = {l.name: [v.copy() for v in l.get_weights()] for l in model.layers if l.weights}
    report = W.load_weights(model, g, w, skip=["conv5_block3_3_*"], say=lambda m: None)
    changed = {l.name for l in model.layers if l.weights
               and any(not np.array_equal(a, b) for a, b in zip(before[l.name], l.get_weights()))}
    assert changed == {l.name for l in report.loading}
    assert len(changed) == 107 - 3 == len(report.of("loaded")) + len(report.of("adapted"))
    assert {l.name for l in report.of("skipped")} == {"conv5_block3_3_conv", "conv5_block3_3_bn"}
    assert [l.name for l in report.of("re-initialised")] == ["predictions"]
    assert report.summary().startswith("104 of 107 layers load; classifier re-initialised (1000 → 7 classes); "
                                       "conv1_conv adapted")


def test_refused_load_changes_nothing(tmp_path):
    from archspec.backends.keras import load

    spec = _variant(tmp_path)
    w = tmp_path / "t.weights.h5"
    kb = load()
    kb.build_model(lower_spec(str(spec)), seed=1).save_weights(w)
    g = lower_spec(str(spec), ["stages[0].blocks[0].filters=6"])
    model = kb.build_model(g, seed=2)
    before = [v.copy() for v in model.get_weights()]
    with pytest.raises(SpecError) as e:
        W.load_weights(model, g, w)
    assert "c2" in str(e.value) and "(3, 3, 4, 8)" in str(e.value) and "\n" not in str(e.value)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_export_and_build_take_weights(tmp_path):
    from archspec.api import build, export

    spec = str(_variant(tmp_path))
    src = build(spec, seed=1)
    w = save(src, tmp_path / "t.npz")
    lines = []
    m = build(spec, seed=2, weights=w, say=lines.append)
    assert lines == [f"weights from {w}: 3 of 3 layers load"]
    assert all(np.array_equal(a, b) for a, b in zip(m.get_weights(), src.get_weights()))
    r = export(spec, tmp_path / "e.keras", weights=w, seed=5)
    assert r["passed"]
    e = keras.models.load_model(tmp_path / "e.keras")
    assert all(np.array_equal(a, b) for a, b in zip(e.get_weights(), src.get_weights()))
    with pytest.raises(SpecError, match="has its own weights"):
        export(tmp_path / "e.keras", tmp_path / "f.keras", weights=w)


def test_no_blanket_skip_mismatch_anywhere():
    hits = [str(p.relative_to(ROOT)) for p in (ROOT / "archspec").rglob("*.py") if "skip_mismatch" in p.read_text()]
    assert hits == []


def test_keras_file_without_weights_and_npz_without_arrays_are_one_line(tmp_path):
    k = tmp_path / "x.keras"
    with zipfile.ZipFile(k, "w") as z:
        z.writestr("config.json", "{}")
    with pytest.raises(SpecError, match="holds no model.weights.h5"):
        weights_report("two_branch", k)
    n = tmp_path / "x.npz"
    with zipfile.ZipFile(n, "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(SpecError, match="holds no .npy"):
        weights_report("two_branch", n)


def test_efficientnet_normalization_and_stem_adapt_to_one_channel(tmp_path):
    """keras' EfficientNet normalizes its input with stored RGB statistics: for a 1-channel
    input their mean is taken (the stem kernel is summed, timm's rule), both reported."""
    from archspec.api import build

    ref = keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3))
    randomize_leaves(ref, seed=12)
    w = save(ref, tmp_path / "e.weights.h5")
    r = weights_report("efficientnet", w, ["input.shape=[64,64,1]"])
    assert r.loadable and [l.name for l in r.of("adapted")] == ["normalization", "stem_conv"]
    ours = build("efficientnet", ["input.shape=[64,64,1]"], weights=w, say=lambda m: None)
    mean, var, count = ref.get_layer("normalization").get_weights()
    got = ours.get_layer("normalization").get_weights()
    np.testing.assert_allclose(got[0], [mean.mean()], rtol=1e-6)
    np.testing.assert_allclose(got[1], [var.mean()], rtol=1e-6)
    np.testing.assert_allclose(ours.get_layer("stem_conv").get_weights()[0],
                               timm_rule(ref.get_layer("stem_conv").get_weights()[0], 1), rtol=1e-6, atol=1e-7)


TWINS = [  # spec, keras.applications model, input size
    ("resnet50", "ResNet50", 64), ("resnet101", "ResNet101", 64), ("resnet152", "ResNet152", 64),
    ("vgg16", "VGG16", 64), ("vgg19", "VGG19", 64), ("mobilenet", "MobileNet", 96),
    ("mobilenet_v2", "MobileNetV2", 96), ("mobilenet_v3_small", "MobileNetV3Small", 96),
    ("mobilenet_v3_large", "MobileNetV3Large", 96), ("densenet121", "DenseNet121", 64),
    ("densenet169", "DenseNet169", 64), ("densenet201", "DenseNet201", 64), ("xception", "Xception", 96),
    ("efficientnet", "EfficientNetB0", 64), ("convnext_tiny", "ConvNeXtTiny", 64),
]


@pytest.mark.slow
@pytest.mark.parametrize("spec,cls,size", TWINS)
def test_every_bundled_twin_loads_keras_applications_weights_from_both_formats(tmp_path, capsys, spec, cls, size):
    ref = getattr(keras.applications, cls)(weights=None, input_shape=(size, size, 3))
    randomize_leaves(ref, seed=13)
    n = len([l for l in leaf_layers(ref) if l.weights])
    from archspec.api import build

    diffs = []
    # the legacy .h5 through the command line and the .keras it writes, read back; the Keras 3
    # .weights.h5 through the library (the same loader, no file written and read again)
    w = save(ref, tmp_path / f"{spec}.h5")
    out = tmp_path / f"{spec}.h5.keras"
    code, err = build_cli(capsys, spec, w, out, "--set", f"input.shape=[{size},{size},3]")
    assert code == 0 and f"{n} of {n} layers load" in err, err
    diffs.append(f".h5 {outputs_equal(keras.models.load_model(out), ref, (size, size, 3)):.3g}")
    w = save(ref, tmp_path / f"{spec}.weights.h5")
    said = []
    ours = build(spec, [f"input.shape=[{size},{size},3]"], weights=w, say=said.append)
    assert any(f"{n} of {n} layers load" in m for m in said), said
    diffs.append(f".weights.h5 {outputs_equal(ours, ref, (size, size, 3)):.3g}")
    with capsys.disabled():
        print(f"{spec}: {n} layers, max |output diff| {', '.join(diffs)}")


def test_notop_file_reinitialises_the_classifier_and_the_text_lists_it(tmp_path):
    """keras' *_notop.h5 files have no classifier: re-initialised, and said so; the report's
    text has the summary line first, then the layers that do not load as they are."""
    from archspec.views.weights import format_weights

    ref = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    w = save_legacy(ref, tmp_path / "resnet50_notop.h5")
    r = weights_report("resnet50", w, ["input.shape=[64,64,3]", "head.classes=3"])
    assert r.loadable and r.summary() == "106 of 107 layers load; classifier re-initialised (not in the file)"
    text = format_weights(r.to_dict())
    lines = text.splitlines()
    assert lines[0] == r.summary()
    assert any(l.startswith("re-initialised  predictions") for l in lines), text
    assert "loads under the policy" in lines[-1]
    d = r.to_dict()
    assert d["counts"] == {"loaded": 106, "adapted": 0, "re-initialised": 1, "skipped": 0, "missing": 0,
                           "mismatch": 0}
    assert d["loadable"] and d["format"] == "legacy_h5" and len(d["layers"]) == 107


# ---------------------------------------------------------------- the command line


def test_weights_command_prints_the_report_and_exits_by_the_policy(vgg64, capsys):
    import json

    _, w = vgg64
    assert main(["weights", "vgg16", str(w), "--set", "input.shape=[64,64,3]", "--set", "head.classes=2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "15 of 16 layers load; classifier re-initialised (1000 → 2 classes)"
    assert any(l.startswith("re-initialised  predictions") and "(4096, 1000), (1000,)" in l for l in out), out
    assert main(["weights", "vgg16", str(w), "--set", "input.shape=[64,64,3]", "--set", "head.classes=2",
                 "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["loadable"] and d["counts"]["loaded"] == 15 and d["counts"]["re-initialised"] == 1
    # another input size: fc1 named with both shapes, exit 2; skipped on request, exit 0
    assert main(["weights", "vgg16", str(w), "--set", "input.shape=[32,32,3]"]) == 2
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("15 of 16 layers load; 1 with other shapes: fc1")
    assert any(l.startswith("mismatch") and "fc1" in l and "(2048, 4096)" in l for l in out.splitlines()), out
    assert "does not load" in out.splitlines()[-1]
    assert main(["weights", "vgg16", str(w), "--set", "input.shape=[32,32,3]", "--weights-skip", "fc1"]) == 0
    assert "1 skipped (--weights-skip): fc1" in capsys.readouterr().out


def test_weights_command_names_a_renamed_layer(tmp_path, capsys):
    from archspec.api import build

    w = tmp_path / "tiny.weights.h5"
    build(str(_variant(tmp_path)), seed=1).save_weights(w)
    renamed = _variant(tmp_path, VARIANT.replace("name: c2", "name: c2_new"), "renamed.yaml")
    assert main(["weights", str(renamed), str(w)]) == 2
    out = capsys.readouterr().out
    assert "1 missing from the file: c2_new" in out and "in the file, not in the spec (1): c2" in out, out
    assert main(["weights", str(renamed), str(tmp_path / "nope.h5")]) == 2
    assert "nope.h5" in capsys.readouterr().err


def test_export_command_takes_weights(tmp_path, capsys):
    from archspec.api import build

    spec = str(_variant(tmp_path))
    src = build(spec, seed=1)
    w = save(src, tmp_path / "t.weights.h5")
    out = tmp_path / "e.keras"
    assert main(["export", spec, "-o", str(out), "--weights", str(w), "--weights-skip", "predictions"]) == 0
    err = capsys.readouterr().err
    assert "weights from" in err and "2 of 3 layers load; 1 skipped (--weights-skip): predictions" in err, err
    e = keras.models.load_model(out)
    for name in ("c1", "c2"):
        assert all(np.array_equal(a, b) for a, b in zip(e.get_layer(name).get_weights(),
                                                        src.get_layer(name).get_weights()))
    assert not np.array_equal(e.get_layer("predictions").get_weights()[0], src.get_layer("predictions").get_weights()[0])
    assert main(["export", spec, "-o", str(tmp_path / "f.keras"), "--weights-skip", "c1"]) == 2
    assert "give --weights" in capsys.readouterr().err


def test_npz_weights_are_taken_by_name(tmp_path):
    """An .npz names each array layer/weight: the order of its keys does not matter."""
    from archspec.api import build

    spec = str(_variant(tmp_path))
    src = build(spec, seed=1)
    arrays = {f"{l.name}/{w.name}": v for l in src.layers for w, v in zip(l.weights, l.get_weights())}
    w = tmp_path / "reversed.npz"
    np.savez(w, **dict(reversed(list(arrays.items()))))
    m = build(spec, seed=2, weights=w, say=lambda m: None)
    assert all(np.array_equal(a, b) for a, b in zip(m.get_weights(), src.get_weights()))


def test_report_model_takes_a_weights_file_through_the_one_loader(tmp_path, capsys):
    """`report --model` with a weights file: the spec built with those weights by the strict
    loader, its Keras counts beside the static ones and the load's summary line in the page;
    a file that does not load is the loader's one-line error (exit 2), nothing written."""
    from archspec.cli import main

    ref = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10)
    w = tmp_path / "m.weights.h5"
    ref.save_weights(w)
    over = ["--set", "input.shape=[96,96,3]", "--set", "scaling.width=0.35", "--set", "head.classes=10"]
    out = tmp_path / "r.html"
    assert main(["report", "mobilenet_v2", *over, "--model", str(w), "-o", str(out)]) == 0
    page = out.read_text()
    assert f"{ref.count_params():,}</b><span>parameters Keras counts in" in page
    assert "105 of 105 layers load" in page and "equal to the analysis" in page
    capsys.readouterr()
    bad = tmp_path / "bad.html"
    assert main(["report", "mobilenet_v2", *over[:2], "--model", str(w), "-o", str(bad)]) == 2  # width 1.0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "weights do not load" in err[0] and "Conv1" in err[0], err
    assert not bad.exists()


# ---------------------------------------------------------------- weights for another network (issue 30)


R18 = ["input.shape=[32,32,3]", "head.classes=100"]


@pytest.fixture(scope="module")
def r18_files(tmp_path_factory):
    """One ResNet-18 (32x32, 100 classes) in every format: a .weights.h5 (records no name), a
    .keras written by archspec's one writer (archspec.json names the spec), a legacy .h5 of
    the whole model (its model_config names it) and keras.applications' weights-only .h5."""
    import warnings

    from archspec.api import build
    from archspec.backends.keras.files import save_keras

    d = tmp_path_factory.mktemp("r18")
    m = build("resnet18", R18, seed=1)
    m.save_weights(d / "r18.weights.h5")
    save_keras(m, d / "r18.keras", lower_spec("resnet18", R18))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.save(d / "r18_model.h5")  # Keras' legacy whole-model .h5: model_config at the root
    save_legacy(m, d / "r18.h5")
    return d


def _another(capsys, w, *args):
    """`archspec weights` and `archspec build --weights` of ResNet-18's file into vgg16_cifar100."""
    code_w = main(["weights", "vgg16_cifar100", str(w), *args])
    out = capsys.readouterr().out
    code_b = main(["build", "vgg16_cifar100", "--weights", str(w), "-o", str(w.parent / "never.keras"), *args])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip() and not l.startswith("archspec: building")]
    assert (code_w, code_b) == (2, 2) and not (w.parent / "never.keras").exists(), (out, err)
    assert len(err) == 1 and err[0] == f"{w}: weights do not load: {out.splitlines()[0]}", (out, err)
    for text in (out, err[0]):
        assert "input size" not in text and "other shapes" not in text and "Traceback" not in text, text
    assert out.rstrip().endswith("into vgg16_cifar100: does not load: weights for another network"), out
    return out.splitlines()[0]


@pytest.mark.parametrize("name,recorded", [("r18.weights.h5", None), ("r18.h5", None), ("r18.keras", "resnet18"),
                                           ("r18_model.h5", "resnet18")])
def test_resnet18_weights_into_vgg16_say_another_network(r18_files, capsys, name, recorded):
    line = _another(capsys, r18_files / name)
    who = f" ({recorded!r} recorded in the file)" if recorded else ""
    assert line.startswith(f"weights for another network{who}, not for vgg16_cifar100: 0 of 16 layers load; "
                           f"1 of the spec's 16 is in the file by name (predictions); 40 of the file's 41 weighted "
                           f"layers are not in the spec: "), line
    r = weights_report("vgg16_cifar100", r18_files / name)
    assert r.foreign and not r.loadable and r.network == recorded
    assert r.to_dict()["another_network"] and r.to_dict()["file_network"] == recorded
    assert [(l.name, l.note) for l in r.of("mismatch")] == [("predictions", "another network's layer of this name")]
    # skipped layers are counted apart, and the rule holds over the rest
    line = _another(capsys, r18_files / name, "--weights-skip", "block1_*")
    assert "0 of 16 layers load; 2 skipped (--weights-skip): block1_conv1, block1_conv2; 1 of the spec's 14 is " \
           "in the file by name (predictions)" in line, line


def test_recorded_name_is_bounded_and_sanitized(r18_files, tmp_path, capsys):
    """A .keras archive's config.json names the model when archspec.json does not; the name
    is shown printable, at most 80 characters, quoted; a config that is not JSON names none."""
    src = r18_files / "r18.keras"

    def rewrite(config: bytes, out: Path) -> Path:
        with zipfile.ZipFile(src) as z, zipfile.ZipFile(out, "w") as o:
            for info in z.infolist():
                if info.filename != "archspec.json":
                    o.writestr(info, config if info.filename == "config.json" else z.read(info))
        return out

    evil = "net\x1b[31m\nname" + "x" * 200
    w = rewrite(('{"class_name": "Functional", "config": {"name": %s}}' % __import__("json").dumps(evil)).encode(),
                tmp_path / "evil.keras")
    r = weights_report("vgg16_cifar100", w)
    assert r.network.startswith("net\\x1b[31m name") and len(r.network) == 80 and r.network.isprintable()
    line = _another(capsys, w)
    assert line.startswith(f"weights for another network ({r.network!r} recorded in the file), not for "
                           f"vgg16_cifar100: "), line
    assert "\x1b" not in line
    w = rewrite(b'{"class_name": "Functional", "config": ', tmp_path / "broken.keras")
    assert _another(capsys, w).startswith("weights for another network, not for vgg16_cifar100: 0 of 16")


def test_a_partial_load_of_the_same_network_is_not_another_networks(r18_files, capsys):
    """A new head loads (re-initialised, said so); ResNet-18's file into ResNet-34 is refused
    as blocks missing from the file (most of its layers are in the file by name), never as
    another network's weights."""
    w = r18_files / "r18.keras"
    r = weights_report("resnet18", w, ["input.shape=[32,32,3]", "head.classes=10"])
    assert r.loadable and not r.foreign and r.network is None
    assert r.summary() == "40 of 41 layers load; classifier re-initialised (100 → 10 classes)", r.summary()
    assert main(["weights", "resnet18", str(w), "--set", "input.shape=[32,32,3]", "--set", "head.classes=10"]) == 0
    assert "another network" not in capsys.readouterr().out
    r = weights_report("resnet34", w, R18)
    assert not r.loadable and not r.foreign and "another network" not in r.summary()
    assert " missing from the file: " in r.summary(), r.summary()
