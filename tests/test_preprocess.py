"""`input.preprocess` (issue 20, item 5): keras.applications' preprocess_input modes in the
spec, applied to the data by train / evaluate / predict / the export check, shown by
inspect and the report, optionally baked into the exported graph. Every comparison is
with keras' own `preprocess_input`, never with archspec's function."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from archspec.language import load
from archspec.language.loader import bundled_names
from archspec.language.preprocess import MODES, preprocess

SPECS = Path(__file__).resolve().parent.parent / "specs"


def _images(n=4, h=9, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3)).astype("float32")


def _keras_pre(module: str):
    import importlib

    from archspec.backends.keras import keras

    keras()
    return importlib.import_module(f"keras.applications.{module}").preprocess_input


# keras' own modules and the mode each one's preprocess_input uses (keras/src/applications:
# resnet.py and vgg16/vgg19.py call imagenet_utils.preprocess_input(mode="caffe"),
# densenet.py mode="torch", mobilenet*.py / xception.py / inception_v3.py mode="tf";
# efficientnet.py, convnext.py and mobilenet_v3.py document theirs as a pass-through)
@pytest.mark.parametrize("mode,module", [("caffe", "resnet50"), ("caffe", "vgg16"), ("torch", "densenet"),
                                         ("tf", "mobilenet_v2"), ("none", "efficientnet")])
def test_mode_equals_keras_preprocess_input(mode, module):
    x = _images()
    before = x.copy()
    ours = preprocess(x, mode)
    theirs = np.asarray(_keras_pre(module)(x.copy()))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(x, before)  # the caller's array is not changed
    assert ours.dtype == np.float32
    # uint8 images as stored give the same
    np.testing.assert_allclose(preprocess(x.astype("uint8"), mode), theirs, rtol=0, atol=1e-5)
    if mode == "none":
        np.testing.assert_array_equal(ours, x)
    else:
        assert np.abs(ours - x).max() > 1  # the test can tell a mode from the identity


def test_modes_differ_and_channels_are_checked():
    x = _images()
    outs = [preprocess(x, m) for m in MODES]
    for i in range(len(outs)):
        for j in range(i):
            assert np.abs(outs[i] - outs[j]).max() > 1e-3
    with pytest.raises(ValueError, match="needs RGB images"):
        preprocess(np.zeros((1, 4, 4, 1), "float32"), "caffe")
    assert preprocess(np.full((1, 2, 2, 1), 255.0, "float32"), "tf").max() == pytest.approx(1.0)


# every bundled keras.applications twin and the keras module whose preprocess_input its
# weights expect (from keras' documentation of each application)
TWINS = {
    "resnet50": "resnet50", "resnet101": "resnet", "resnet152": "resnet", "resnet50_yaml": "resnet50",
    "vgg16": "vgg16", "vgg19": "vgg19", "vgg16_cifar100": "vgg16",
    "densenet121": "densenet", "densenet169": "densenet", "densenet201": "densenet",
    "mobilenet": "mobilenet", "mobilenet_v2": "mobilenet_v2", "xception": "xception",
    "efficientnet": "efficientnet", "convnext_tiny": "convnext",
    "mobilenet_v3_small": "mobilenet_v3", "mobilenet_v3_large": "mobilenet_v3",
    **{f"efficientnet_b{k}": "efficientnet" for k in range(1, 8)},
    **{f"efficientnet_v2_{k}": "efficientnet_v2" for k in ("b0", "b1", "b2", "b3", "s", "m", "l")},
    **{f"convnext_{k}": "convnext" for k in ("small", "base", "large", "xlarge")},
    **{f"resnet{k}_v2": "resnet_v2" for k in (50, 101, 152)},
    "inception_v3": "inception_v3", "inception_resnet_v2": "inception_resnet_v2",
    "nasnet_mobile": "nasnet", "nasnet_large": "nasnet",
}
EXPECTED = {  # the same table as modes, written out (keras' imagenet_utils modes)
    "resnet50": "caffe", "resnet101": "caffe", "resnet152": "caffe", "resnet50_yaml": "caffe", "vgg16": "caffe",
    "vgg19": "caffe", "vgg16_cifar100": "caffe", "densenet121": "torch", "densenet169": "torch",
    "densenet201": "torch", "mobilenet": "tf", "mobilenet_v2": "tf", "xception": "tf", "efficientnet": "none",
    "convnext_tiny": "none", "mobilenet_v3_small": "none", "mobilenet_v3_large": "none",
    **{f"efficientnet_b{k}": "none" for k in range(1, 8)},
    **{f"efficientnet_v2_{k}": "none" for k in ("b0", "b1", "b2", "b3", "s", "m", "l")},
    **{f"convnext_{k}": "none" for k in ("small", "base", "large", "xlarge")},
    **{f"resnet{k}_v2": "tf" for k in (50, 101, 152)},
    "inception_v3": "tf", "inception_resnet_v2": "tf", "nasnet_mobile": "tf", "nasnet_large": "tf",
}


def test_every_twin_is_in_the_table():
    """A bundled spec whose header says it is exactly a keras.applications model is a twin:
    a new one must be added to the table above (and given its mode)."""
    for name in bundled_names():
        head = "".join(line for line in (SPECS / f"{name}.yaml").read_text().splitlines(True)
                       if line.startswith("#"))
        if re.search(r"exactly as\s*(#\s*)?keras\.applications", head) or "\nkeras:" in head + \
                (SPECS / f"{name}.yaml").read_text():
            assert name in TWINS, name


@pytest.mark.parametrize("name", sorted(TWINS))
def test_bundled_twin_has_its_keras_family_mode(name):
    spec, _ = load(name)
    assert spec.input.preprocess == EXPECTED[name]
    x = _images(2, 5, 5, seed=3)
    np.testing.assert_allclose(preprocess(x, spec.input.preprocess), np.asarray(_keras_pre(TWINS[name])(x.copy())),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["alexnet", "googlenet", "resnet18", "resnet34", "cifar100_cnn", "two_branch",
                                  "resnet50_cifar100", "se_resnet50", "resnext50_32x4d"])
def test_specs_without_a_keras_twin_take_data_as_stored(name):
    assert load(name)[0].input.preprocess == "none"


def test_the_graph_does_not_change():
    """The mode is data preprocessing: the lowered graph (and so the Keras model) is the same."""
    from archspec.ir.pipeline import lower_spec

    a = lower_spec("resnet50")
    b = lower_spec("resnet50", ["input.preprocess=none"])
    assert [n.to_dict() for n in a.nodes] == [n.to_dict() for n in b.nodes]
    assert a.meta["preprocess"] == "caffe" and b.meta["preprocess"] == "none"


def test_bad_mode_is_a_located_error():
    from archspec.core.errors import SpecError

    with pytest.raises(SpecError, match="input.preprocess"):
        load("resnet50", ["input.preprocess=bgr"])


def _cli(*argv):
    from archspec.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            rc = main(list(argv))
        except SystemExit as exc:
            rc = exc.code
    return rc, out.getvalue()


def test_inspect_shows_the_mode():
    rc, out = _cli("inspect", "densenet121", "--json")
    assert rc == 0
    assert json.loads(out)["preprocess"]["mode"] == "torch"
    rc, out = _cli("inspect", "vgg16")
    assert rc == 0 and "preprocess: caffe" in out
    rc, out = _cli("inspect", "vgg16", "--set", "input.preprocess=tf", "--json")
    assert json.loads(out)["preprocess"]["mode"] == "tf"


def test_report_shows_the_mode():
    from archspec.views.report import html_report

    _, html = html_report("mobilenet_v2")
    assert '<div id="preprocess"><b>tf</b>' in html
    _, html = html_report("efficientnet")
    assert '<div id="preprocess"><b>none</b>' in html


TINY = """\
format: 1
name: tiny_caffe
input:
  shape: [8, 8, 3]
  preprocess: caffe
stem:
  - {type: conv, name: conv1, filters: 4, kernel: 3, stride: 2}
head:
  classes: 3
  layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]
"""


@pytest.fixture
def tiny(tmp_path):
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY)
    return p


def _run_dir(tmp_path, spec_path):
    """A run directory as `archspec train` leaves it (spec.yaml, run.json, best.keras), with
    random weights: evaluate and predict read the mode from its spec.yaml."""
    from archspec.backends.keras import build_model
    from archspec.backends.keras.files import save_keras
    from archspec.ir.pipeline import lower_spec
    from archspec.language import dump_spec
    from archspec.resolving import resolve

    run = tmp_path / "run"
    run.mkdir()
    spec, _ = load(str(spec_path))
    (run / "spec.yaml").write_text(dump_spec(resolve(spec)))
    (run / "run.json").write_text("{}")
    graph = lower_spec(str(spec_path))
    model = build_model(graph, seed=1)
    save_keras(model, run / "best.keras", graph)
    return run, model


def test_evaluate_and_predict_apply_the_mode(tmp_path, tiny):
    from archspec.training.evaluate import evaluate, predict

    run, model = _run_dir(tmp_path, tiny)
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, size=(40, 8, 8, 3)).astype("uint8")
    y = rng.integers(0, 3, size=40)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    r = evaluate(run, tmp_path / "d.npz", batch_size=16)
    assert r["preprocess"]["mode"] == "caffe"
    by_hand = np.asarray(model(_keras_pre("resnet50")(x.astype("float32")), training=False), dtype="float64")
    raw = np.asarray(model(x.astype("float32"), training=False), dtype="float64")
    assert np.abs(by_hand - raw).max() > 1e-4  # the data's preprocessing shows in the outputs
    assert r["top1"] == pytest.approx(float(np.mean(by_hand.argmax(1) == y)))
    loss = float(-np.mean(np.log(np.clip(by_hand[np.arange(40), y], 1e-7, 1))))
    assert r["loss"] == pytest.approx(loss, abs=1e-5)

    from PIL import Image

    Image.fromarray(x[0]).save(tmp_path / "a.png")
    top = predict(run, [str(tmp_path / "a.png")], top=3)[0]["top"]
    assert top[0]["class"] == int(by_hand[0].argmax())
    assert top[0]["probability"] == pytest.approx(float(by_hand[0].max()), abs=1e-5)


def test_training_pipelines_apply_the_mode():
    from archspec.training.data import Source, datasets, evaluation_dataset
    from archspec.training.recipe import load_recipe

    x = _images(6, 4, 4, seed=7)
    y = np.arange(6) % 2
    src = Source("npz", "mem", ["a", "b"], x, y, x, y)
    recipe, _ = load_recipe("cifar100", ["data.validation_split=0", "data.shuffle_buffer=0", "augmentation={}"])
    want = _keras_pre("densenet")(x.copy())
    pipes = datasets(src, recipe, (4, 4), 3, 2, 1, 6, seed=0, preprocess="torch")
    batch, _ = next(iter(pipes.train_from(0)))
    np.testing.assert_allclose(np.asarray(batch), want, rtol=0, atol=1e-5)
    val, _ = next(iter(pipes.val))
    np.testing.assert_allclose(np.asarray(val), want, rtol=0, atol=1e-5)
    ds, _ = evaluation_dataset(src, (4, 4), 3, 2, 6, preprocess="torch")
    np.testing.assert_allclose(np.asarray(next(iter(ds))[0]), want, rtol=0, atol=1e-5)
    plain = datasets(src, recipe, (4, 4), 3, 2, 1, 6, seed=0)
    np.testing.assert_allclose(np.asarray(next(iter(plain.train_from(0)))[0]), x)


def test_export_check_images_get_the_mode(tmp_path, tiny):
    from archspec.backends.keras import build_model
    from archspec.exporting import checkdata

    model = build_model(str(tiny))
    x = _images(5, 8, 8, seed=2)
    np.savez(tmp_path / "c.npz", x_train=x.astype("uint8"), y_train=np.zeros(5, "int64"))
    got = checkdata.load(tmp_path / "c.npz", model, preprocess="caffe").x
    np.testing.assert_allclose(got, _keras_pre("vgg16")(x.copy()), rtol=0, atol=1e-5)
    np.testing.assert_allclose(checkdata.load(x, model, preprocess="caffe").x, _keras_pre("vgg16")(x.copy()),
                               rtol=0, atol=1e-5)


def test_bake_preprocessing_onnx_equals_keras_on_keras_preprocessed(tmp_path, tiny):
    """An export with bake_preprocessing, run by ONNX Runtime on raw images, equals the Keras
    model on keras-preprocessed images; the metadata says so; the network's layers keep
    their names; without it the export takes preprocessed images and says which mode."""
    import onnxruntime as ort

    from archspec.backends.keras import keras
    from archspec.exporting import export

    k = keras()
    r = export(str(tiny), tmp_path / "m.keras", seed=3)
    assert json.loads(r["metadata"]["archspec.preprocessing"])["mode"] == "caffe"
    assert r["preprocessing"] == {"mode": "caffe", "from": "the spec (input.preprocess)", "baked": False}
    model = k.models.load_model(tmp_path / "m.keras")
    r = export(tmp_path / "m.keras", tmp_path / "m.onnx", bake_preprocessing=True)
    assert r["passed"] and r["preprocessing"]["baked"] is True
    meta = json.loads(r["metadata"]["archspec.preprocessing"])
    assert meta["mode"] == "caffe" and meta["baked"] is True and "[0, 255]" in meta["expects"]
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    props = sess.get_modelmeta().custom_metadata_map
    assert json.loads(props["archspec.preprocessing"])["baked"] is True
    raw = _images(6, 8, 8, seed=11)
    got = sess.run(None, {sess.get_inputs()[0].name: raw})[0]
    want = np.asarray(model(_keras_pre("resnet50")(raw.copy()), training=False))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4)
    assert np.abs(np.asarray(model(raw, training=False)) - want).max() > 1e-4  # raw differs: the bake matters
    # the baked .keras: the same network's layers after the fixed ones, and evaluate would not
    # preprocess again (its record says baked)
    export(tmp_path / "m.keras", tmp_path / "b.keras", bake_preprocessing=True)
    baked = k.models.load_model(tmp_path / "b.keras")
    assert [la.name for la in baked.layers][1] == "preprocess_caffe"
    assert [la.name for la in baked.layers][2:] == [la.name for la in model.layers][1:]
    np.testing.assert_allclose(np.asarray(baked(raw)), want, rtol=0, atol=1e-4)
    from archspec.training.evaluate import preprocess_of

    assert preprocess_of(tmp_path / "b.keras")[0] == "none"
    assert preprocess_of(tmp_path / "m.keras")[0] == "caffe"


@pytest.mark.parametrize("mode,module", [("torch", "densenet"), ("tf", "mobilenet")])
def test_bake_other_modes(tmp_path, tiny, mode, module):
    import onnxruntime as ort

    from archspec.backends.keras import build_model
    from archspec.exporting import export

    over = [f"input.preprocess={mode}"]
    r = export(str(tiny), tmp_path / "m.onnx", overrides=over, seed=4, bake_preprocessing=True)
    assert r["passed"] and r["preprocessing"]["mode"] == mode
    model = build_model(str(tiny), over, seed=4)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    raw = _images(3, 8, 8, seed=12)
    got = sess.run(None, {sess.get_inputs()[0].name: raw})[0]
    np.testing.assert_allclose(got, np.asarray(model(_keras_pre(module)(raw.copy()))), rtol=0, atol=1e-4)


def test_bake_none_is_a_no_op_and_a_bare_model_is_refused(tmp_path):
    from archspec.backends.keras import build_model
    from archspec.core.errors import SpecError
    from archspec.exporting import export

    r = export("cifar100_cnn", tmp_path / "c.onnx", bake_preprocessing=True)
    assert r["preprocessing"] == {"mode": "none", "from": "the spec (input.preprocess)", "baked": False}
    with pytest.raises(SpecError, match="no record"):
        export(build_model("cifar100_cnn"), tmp_path / "d.onnx", bake_preprocessing=True)


@pytest.mark.parametrize("mode", ["none", "tf"])
def test_train_feeds_the_network_preprocessed_images(tmp_path, mode, monkeypatch):
    """`train` preprocesses as evaluate, predict and the export check do: the batches the
    model is fitted on are keras' tf preprocess_input of the raw pixels (the digits, 0..16:
    x / 127.5 - 1 is negative everywhere), and raw with mode none."""
    from test_train import DIGITS_SPEC, QUICK

    from archspec.cli import main
    from archspec.training import data as data_mod
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = d.images.astype("uint8")[..., None], d.target.astype("int64")
    np.savez(tmp_path / "d.npz", x_train=x[:256], y_train=y[:256], x_test=x[256:320], y_test=y[256:320])
    (tmp_path / "spec.yaml").write_text(DIGITS_SPEC)
    (tmp_path / "quick.yaml").write_text(QUICK)
    pipes = []
    real = data_mod.datasets
    monkeypatch.setattr(data_mod, "datasets", lambda *a, **k: pipes.append(real(*a, **k)) or pipes[-1])
    assert main(["train", str(tmp_path / "spec.yaml"), "--recipe", str(tmp_path / "quick.yaml"), "--data",
                 str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"), "--epochs", "1", "--json",
                 "--set", f"input.preprocess={mode}"]) == 0
    batch = np.asarray(next(iter(pipes[0].train_from(0)))[0])
    if mode == "tf":
        np.testing.assert_array_less(batch, 0.0)  # 0..16 / 127.5 - 1 < -0.87
        assert batch.min() >= -1.0
    else:
        assert batch.min() >= 0.0 and batch.max() > 1.0


def test_export_command_bakes_on_request(tmp_path, tiny, capsys):
    """`archspec export --bake-preprocessing`: the ONNX file takes raw pixels (its metadata
    says baked) and equals the same-seed Keras model on keras-preprocessed images; without
    the flag it records the mode and expects preprocessed images."""
    import onnxruntime as ort

    from archspec.backends.keras import build_model
    from archspec.cli import main

    for flag, baked in (([], False), (["--bake-preprocessing"], True)):
        out = tmp_path / f"m{int(baked)}.onnx"
        assert main(["export", str(tiny), "-o", str(out), "--seed", "5", "--json"] + flag) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["preprocessing"]["baked"] is baked and r["preprocessing"]["mode"] == "caffe"
    sess = ort.InferenceSession(str(tmp_path / "m1.onnx"), providers=["CPUExecutionProvider"])
    assert json.loads(sess.get_modelmeta().custom_metadata_map["archspec.preprocessing"])["baked"] is True
    raw = _images(4, 8, 8, seed=21)
    want = np.asarray(build_model(str(tiny), seed=5)(_keras_pre("resnet50")(raw.copy()), training=False))
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: raw})[0], want, rtol=0, atol=1e-4)
