"""Issue 30: a mistake in the data, the recipe, their combination with the spec, or a path
is found from the files alone, before TensorFlow is imported, and every such mistake is
reported in one run, one located line each (exit 2). The command-line cases run in one
subprocess (TensorFlow must not be in its `sys.modules` after any of them); the rest call
the prechecks in-process and import no framework."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from archspec.core.errors import SpecError, SpecErrors, error_lines
from archspec.training import precheck

from test_bad_input import GOOD as SPEC  # noqa: E402 - the tiny basic-block spec of the bad-input tests


@pytest.fixture(autouse=True)
def _strict(monkeypatch):
    """A precheck that fails other than with a SpecError is a bug here (in use it steps aside)."""
    monkeypatch.setenv("ARCHSPEC_PRECHECK_STRICT", "1")


def _png(path: Path, size: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 100, np.uint8)).save(path)


def _fake_model(path: Path, classes: int, shape=(32, 32, 3), names=None) -> Path:
    """A `.keras` archive as archspec writes it (config, record), with no weights: enough for a
    precheck, which never loads a model."""
    config = {"class_name": "Functional", "config": {"name": "tiny", "layers": [
        {"class_name": "InputLayer", "name": "input_layer", "config": {"batch_shape": [None, *shape]}},
        {"class_name": "GlobalAveragePooling2D", "name": "gap", "config": {"name": "gap"}},
        {"class_name": "Dense", "name": "predictions", "config": {"name": "predictions", "units": classes},
         "build_config": {"input_shape": [None, shape[2]]}}],
        "input_layers": ["input_layer", 0, 0], "output_layers": ["predictions", 0, 0]}}
    record = {"archspec.input": {"shape": [None, *shape]}, "archspec.preprocessing": {"mode": "none", "baked": False}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("archspec.json", json.dumps(record))
        z.writestr("model.weights.h5", b"")
    if names is not None:
        (path.parent / "classes.json").write_text(json.dumps(names))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("precheck")
    (d / "tiny.yaml").write_text(SPEC)
    (d / "flat.yaml").write_text(SPEC.replace("{type: global_pool, name: gap}", "{type: flatten, name: flat}"))
    (d / "plain.yaml").write_text("format: 1\nname: plain\n")
    (d / "at48.yaml").write_text("format: 1\nname: at48\ndata: {image_size: [48, 48]}\n")
    (d / "phased.yaml").write_text("format: 1\nname: phased\nphases:\n  - {name: head, epochs: 2, freeze: "
                                   "all_but_head}\n  - {name: all, epochs: 3}\n")
    for c in ("cat", "dog"):
        for i in range(2):
            _png(d / "imgs48" / c / f"{i}.png", 48)
    x = np.zeros((8, 32, 32, 3), np.uint8)
    np.savez(d / "past.npz", x_train=x, y_train=np.array([0, 1, 2, 3, 4, 5, 6, 12]))
    np.savez(d / "good.npz", x_train=x, y_train=np.arange(8) % 10)
    _fake_model(d / "model" / "tiny.keras", 10)
    return d


# ---------------------------------------------------------------- on the command line, TensorFlow never loaded

CASES = {
    # 1. images at a size the spec cannot take (its flatten fixes the input; the recipe feeds 48x48)
    "size": ["train", "flat.yaml", "--recipe", "at48.yaml", "--data", "imgs48", "--out", "runs/a"],
    # 2. --epochs on a phased recipe
    "epochs": ["train", "tiny.yaml", "--recipe", "phased.yaml", "--data", "imgs48", "--out", "runs/b", "--epochs",
               "1"],
    # 3. labels past the spec's classes
    "labels": ["train", "tiny.yaml", "--recipe", "plain.yaml", "--data", "past.npz", "--out", "runs/c"],
    # 4. a predict image that does not exist
    "image": ["predict", "model/tiny.keras", "missing.png"],
    # two mistakes at once: labels past the classes and --epochs on a phased recipe
    "two": ["train", "tiny.yaml", "--recipe", "phased.yaml", "--data", "past.npz", "--out", "runs/d", "--epochs",
            "2"],
    "evaluate": ["evaluate", "model/tiny.keras", "--data", "past.npz"],
    "export": ["export", "tiny.yaml", "-o", "out.onnx", "--opset", "3", "--check-data", "past.npz"],
}

RUNNER = """
import contextlib, io, json, sys
from archspec.cli import main
out = {}
for name, argv in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv)
    out[name] = {"rc": rc, "lines": err.getvalue().splitlines(), "tensorflow": "tensorflow" in sys.modules}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cli(files):
    env = {**os.environ, "ARCHSPEC_PRECHECK_STRICT": "1"}
    r = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(CASES)], cwd=files, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1])


def _only(cli, name) -> list[str]:
    r = cli[name]
    assert r["rc"] == 2, r
    assert not r["tensorflow"], f"{name}: TensorFlow was imported before the error"
    return r["lines"]


def test_an_image_size_the_spec_cannot_take(cli):
    assert _only(cli, "size") == ["imgs48: the spec takes 32x32 images only ('flat' fixes its input size) but "
                                  "data.image_size is 48x48"]


def test_epochs_on_a_phased_recipe(cli):
    assert _only(cli, "epochs") == ["--epochs 1: sets the epochs of a recipe without phases; phased has 2 (use "
                                    "--recipe-set phases[K].epochs=N)"]


def test_labels_past_the_classes(cli):
    assert _only(cli, "labels") == ["past.npz: labels go up to 12 but the spec's head has 10 classes; pass --set "
                                    "head.classes=13"]
    assert _only(cli, "evaluate") == ["past.npz: the data has label 12 but the model has 10 classes (0..9)"]


def test_a_predict_image_that_does_not_exist(cli):
    assert _only(cli, "image") == ["missing.png: no such image"]


def test_two_mistakes_are_both_reported(cli):
    assert _only(cli, "two") == [
        "past.npz: labels go up to 12 but the spec's head has 10 classes; pass --set head.classes=13",
        "--epochs 2: sets the epochs of a recipe without phases; phased has 2 (use --recipe-set "
        "phases[K].epochs=N)"]
    assert _only(cli, "export") == ["opset must be an integer from 13 to 18 (got 3)",
                                    "past.npz: the check data has labels up to 12 but the model has 10 classes"]


def test_nothing_was_written(cli, files):
    assert not (files / "runs").exists() and not (files / "out.onnx").exists()


# ---------------------------------------------------------------- in-process: what passes, what is found


def _train(files, spec="tiny.yaml", recipe="plain.yaml", data="good.npz", **kw):
    from archspec.training import loop

    precheck.check_train(str(files / spec), str(files / recipe) if recipe.endswith(".yaml") else recipe,
                         str(files / data), files / "runs" / "new", rules=loop, **kw)


def test_a_correct_command_passes(files):
    _train(files)
    _train(files, data="imgs48")  # other sizes are resized for a spec that takes any size: not refused
    _train(files, spec="flat.yaml", data="imgs48")  # ... and to the spec's own size for a fixed one
    _train(files, recipe="at48.yaml", data="imgs48", epochs=2)
    assert not (files / "runs").exists()


def test_every_mistake_in_one_error(files, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    bad = tmp_path / "data"
    _png(bad / "a" / "0.png", 8)
    (bad / "a" / "1.png").write_bytes(b"not an image")
    with pytest.raises(SpecErrors) as e:
        _train(files, recipe="finetune", data=bad, epochs=3, distribute="multi_worker",
               recipe_overrides=["phases[1].freeze.until=nope", "augmentation.crop_padding=500"])
    code, lines = error_lines(e.value)
    assert code == 2 and len(lines) == 5, lines
    assert lines[0].startswith(f"{bad / 'a' / '1.png'}: unreadable image: UnidentifiedImageError")
    assert "augmentation.crop_padding: is 500, more than the images' size 224x224" in lines[1]
    assert lines[2].startswith("--epochs 3: sets the epochs")
    assert "phases[1].freeze.until: tiny has no layer named 'nope'" in lines[3]
    assert lines[4].startswith("--distribute multi_worker needs --workers HOST:PORT,HOST:PORT,...")


def test_evaluate_and_predict(files, tmp_path):
    from archspec.training import evaluate

    model = _fake_model(tmp_path / "run" / "m.keras", 2, names=["cat", "dog"])
    precheck.check_evaluate(model, files / "imgs48", rules=evaluate)  # classes matched by name: passes
    precheck.check_predict(model, [files / "imgs48" / "cat" / "0.png"], rules=evaluate)
    other = _fake_model(tmp_path / "other" / "m.keras", 2, names=["cat", "cow"])
    (tmp_path / "out.csv").write_text("")
    with pytest.raises(SpecErrors) as e:
        precheck.check_evaluate(other, files / "imgs48", confusion_csv=tmp_path / "out.csv", rules=evaluate)
    _, lines = error_lines(e.value)
    assert lines[0].endswith("out.csv: exists; pass --force to replace it")  # the command line's words
    assert "class 'dog' of the data is not one the model was trained on" in lines[1]
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(SpecErrors) as e:
        precheck.check_predict(tmp_path / "nothing", [tmp_path / "bad.png", tmp_path / "gone.png"], rules=evaluate)
    assert [x.message.split(":")[0] for x in e.value.errors] == ["no such file or directory", "unreadable image",
                                                                  "no such image"]


def test_the_npz_preview_reads_no_image_and_agrees_with_the_loader(files, tmp_path):
    from archspec.training import data

    seen, real = precheck.scan_data(files / "good.npz"), data.open_source(files / "good.npz")
    assert seen.class_names == real.class_names and np.array_equal(seen.y_train, real.y_train)
    assert seen.x_train.shape == real.x_train.shape and seen.x_train.strides == (0, 0, 0, 0)  # a stand-in
    nan = tmp_path / "nan.npz"
    np.savez(nan, x_train=np.full((2, 4, 4, 3), np.nan, np.float32), y_train=np.array([0, 1]))
    assert precheck.scan_data(nan).train_size == 2  # pixels are the loader's to judge
    with pytest.raises(SpecError, match=r"x_train\[0\] has NaN"):
        data.open_source(nan)
    short = tmp_path / "short.npz"
    np.savez(short, x_train=np.zeros((3, 4, 4), np.uint8), y_train=np.array([0, 1]))
    with pytest.raises(SpecError, match="x_train has 3 images but y_train 2 labels"):
        precheck.scan_data(short)


def test_export_options_and_files_at_once(files, tmp_path):
    from archspec.exporting.job import Job

    with pytest.raises(SpecErrors) as e:
        Job.start(str(files / "flat.yaml"), tmp_path / "x.onnx", None,
                  {"opset": 3, "check_data": str(files / "past.npz"), "overrides": ["head.classes=5"]})
    assert [x.one_line() for x in e.value.errors] == [
        "opset must be an integer from 13 to 18 (got 3)",
        f"{files / 'past.npz'}: the check data has labels up to 12 but the model has 5 classes"]
    with pytest.raises(SpecError, match=r"stem\[0\]\.filters: must be > 0"):
        Job.start(str(files / "tiny.yaml"), tmp_path / "x.onnx", None, {"overrides": ["stem[0].filters=-1"]})


def test_a_precheck_that_breaks_steps_aside(files, monkeypatch):
    """Not a SpecError: the command meets the input itself (strict mode, the tests', raises)."""
    class Broken:
        def __getattr__(self, name):
            raise RuntimeError("a rule that broke")
    with pytest.raises(RuntimeError):
        _train_with(files, Broken())
    monkeypatch.delenv("ARCHSPEC_PRECHECK_STRICT")
    assert _train_with(files, Broken()) is None


def _train_with(files, rules):
    return precheck.check_train(str(files / "tiny.yaml"), str(files / "plain.yaml"), str(files / "good.npz"),
                                files / "runs" / "x",
                                rules=rules)
