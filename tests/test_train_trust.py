"""Trust in training and evaluation (issue 17, part 1): no wrong answer with exit 0.

`evaluate` matches classes by name (checked against scikit-learn's accuracy_score on the
model's own outputs computed here with Keras); heads that are not softmax train and
evaluate on their own loss (checked against keras.losses); a spec with taps trains its
classifier; the bundled recipes learn with the bundled specs; a loss that explodes stops
the run with a message (exit 1). Data: scikit-learn's 8x8 digits."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from archspec.cli import main

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

SPEC = textwrap.dedent("""\
    format: 1
    name: digits_small
    input:
      shape: [8, 8, 1]
      preprocessing: [{type: rescaling, name: scale, scale: 0.0625}]
    defaults: {activation: relu}
    stem:
      - {type: conv, name: c1, filters: 32, kernel: 3, padding: same}
      - {type: conv, name: c2, filters: 64, kernel: 3, stride: 2, padding: same}
    head:
      classes: 10
      layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]
    """)

RECIPE = textwrap.dedent("""\
    format: 1
    name: quick
    optimizer: {name: adam, learning_rate: 0.01}
    epochs: 10
    data: {batch_size: 64}
    callbacks:
      checkpoint: {monitor: val_top1, mode: max}
      tensorboard: null
    """)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits: an .npz (1,500 train / 297 test) whose class_names are the words
    zero..nine (so the run's classes.json is not in sorted order), the test images as PNG
    files with the same pixel values (0..16), the spec and recipe."""
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("trust")
    data = load_digits()
    x, y = data.images.astype("uint8"), data.target.astype("int64")
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:1500], idx[1500:]
    np.savez(d / "digits.npz", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], class_names=np.array(NAMES))
    np.savez(d / "test.npz", x=x[te], y=y[te])
    (d / "spec.yaml").write_text(SPEC)
    (d / "quick.yaml").write_text(RECIPE)
    return d


def test_images(digits) -> tuple[np.ndarray, np.ndarray]:
    z = np.load(digits / "test.npz")
    return z["x"], z["y"]


test_images.__test__ = False  # a helper, not a test


def image_folder(root: Path, x: np.ndarray, y: np.ndarray, names: dict[int, str]) -> Path:
    """The images of the classes in `names` as PNGs under one folder per class name."""
    from PIL import Image

    for k, name in names.items():
        (root / name).mkdir(parents=True)
    for i, (img, label) in enumerate(zip(x, y)):
        if int(label) in names:
            Image.fromarray(img).save(root / names[int(label)] / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def softmax_run(digits, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "softmax"
    assert main(["train", str(digits / "spec.yaml"), "--recipe", str(digits / "quick.yaml"), "--data",
                 str(digits / "digits.npz"), "--out", str(run), "--json"]) == 0
    assert json.loads((run / "classes.json").read_text()) == NAMES
    return run


def keras_outputs(model_file: Path, x: np.ndarray) -> np.ndarray:
    """The model's own outputs on images (N, 8, 8) computed here with Keras."""
    import keras

    model = keras.models.load_model(model_file, compile=False)
    return np.asarray(model.predict(x[..., None].astype("float32"), batch_size=64, verbose=0), dtype="float64")


@pytest.mark.parametrize("drop", [None, 3])
def test_evaluate_matches_classes_by_name(digits, softmax_run, tmp_path, capsys, drop):
    """The folder's classes are the words zero..nine (sorted: eight, five, four, ...), one of
    them possibly missing: top-1 is scikit-learn's accuracy of the model's own predictions,
    and the loss is keras' categorical cross-entropy on its outputs."""
    import keras
    from sklearn.metrics import accuracy_score

    x, y = test_images(digits)
    names = {k: n for k, n in enumerate(NAMES) if k != drop}
    folder = image_folder(tmp_path / "folder", x, y, names)
    keep = np.isin(y, list(names))
    assert main(["evaluate", str(softmax_run), "--data", str(folder), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    probs = keras_outputs(softmax_run / "best.keras", x[keep])
    want = accuracy_score(y[keep], probs.argmax(axis=1))
    assert want > 0.8  # the model learned: a mislabelled folder would be far below this
    assert ev["images"] == int(keep.sum())
    assert ev["top1"] == pytest.approx(want, abs=1.5 / keep.sum())
    ref = float(keras.losses.CategoricalCrossentropy()(keras.ops.one_hot(y[keep], 10), probs))
    assert ev["loss"] == pytest.approx(ref, rel=1e-4)
    assert [c["name"] for c in ev["per_class"]] == NAMES
    if drop is not None:
        assert ev["per_class"][drop]["images"] == 0 and ev["per_class"][drop]["accuracy"] is None
    cm = np.array(ev["confusion"])
    assert np.array_equal(cm.sum(axis=1), np.bincount(y[keep], minlength=10))  # rows are the true classes


def test_evaluate_refuses_a_class_the_model_does_not_know(digits, softmax_run, tmp_path, capsys):
    x, y = test_images(digits)
    names = {k: n for k, n in enumerate(NAMES)}
    names[3] = "drei"
    folder = image_folder(tmp_path / "folder", x, y, names)
    assert main(["evaluate", str(softmax_run), "--data", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'drei'" in err and str(folder / "drei") in err, err


def test_a_bare_model_file_matches_a_folder_only_by_class_index(digits, softmax_run, tmp_path, capsys):
    """Without classes.json the folder names cannot be matched: refused, unless the folders
    are named by class index."""
    from sklearn.metrics import accuracy_score

    bare = tmp_path / "bare" / "model.keras"
    bare.parent.mkdir()
    shutil.copy(softmax_run / "best.keras", bare)
    x, y = test_images(digits)
    words = image_folder(tmp_path / "words", x, y, {k: n for k, n in enumerate(NAMES)})
    assert main(["evaluate", str(bare), "--data", str(words)]) == 2
    assert "no classes.json" in capsys.readouterr().err
    numbers = image_folder(tmp_path / "numbers", x, y, {k: str(k) for k in range(10) if k != 1})
    assert main(["evaluate", str(bare), "--data", str(numbers), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    keep = y != 1
    want = accuracy_score(y[keep], keras_outputs(bare, x[keep]).argmax(axis=1))
    assert ev["top1"] == pytest.approx(want, abs=1.5 / keep.sum()) and want > 0.8
