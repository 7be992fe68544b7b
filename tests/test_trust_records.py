"""Issue 26, items 6-9: what archspec records it uses, and what it cannot know it refuses.

6. `build` records `input.preprocess` in its `.keras` (archspec.json), and `predict`,
   `evaluate` and `export --bake-preprocessing` use it; a file archspec wrote without the
   record (an older archspec) or with a damaged one is refused, one line naming it; a plain
   Keras `.keras` (no archspec.json) keeps taking its inputs as given.
7. Static int8 with check images but no test split calibrates on images set apart from the
   checked ones (never generated noise), and says how; too few images are refused with the
   numbers.
8. A run directory's truncated history.csv or checkpoint, and a garbage best.keras: one
   line naming the file, exit 2, nothing changed.
9. caffe (and torch) mode on an input of other than 3 channels: `validate` refuses it where it
   is declared.

Every comparison of outputs is with keras.applications' own `preprocess_input` (caffe:
`resnet50.preprocess_input`), never with archspec's function. One tiny run (a 3x3 conv on
scikit-learn's digits at 16x16x3, caffe mode, 1 epoch) is trained once for the module; the
CLI is called in-process."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("onnxruntime")

from archspec.cli import main  # noqa: E402

SPEC = textwrap.dedent("""\
    format: 1
    name: tiny_caffe
    input:
      shape: [16, 16, 3]
      preprocess: caffe
      preprocessing: [{type: rescaling, name: scale, scale: 0.015625}]
    defaults: {activation: relu}
    stem:
      - {type: conv, name: conv1, filters: 8, kernel: 3, padding: same}
      - {type: conv, name: conv2, filters: 8, kernel: 3, stride: 2, padding: same}
    head:
      classes: 10
      layers: [{type: flatten, name: flat}, {type: classifier, name: predictions}]
    """)

RECIPE = textwrap.dedent("""\
    format: 1
    name: quick
    optimizer: {name: adam, learning_rate: 0.01}
    epochs: 1
    data: {batch_size: 16}
    """)


def _digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.clip(np.kron(d.images, np.ones((1, 2, 2))) * 16, 0, 255).astype("uint8")[..., None].repeat(3, -1)
    return x, d.target.astype("int64")


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    """The spec, the recipe, the digits (.npz with a test split; 24 and 10 PNGs in flat
    folders) and a run of one epoch."""
    from PIL import Image

    d = tmp_path_factory.mktemp("trust")
    x, y = _digits()
    np.savez(d / "d.npz", x_train=x[:1200], y_train=y[:1200], x_test=x[1200:1280], y_test=y[1200:1280])
    (d / "spec.yaml").write_text(SPEC)
    (d / "r.yaml").write_text(RECIPE)
    for name, n in (("imgs", 24), ("few", 10)):
        (d / name).mkdir()
        for i in range(n):
            Image.fromarray(x[1300 + i]).save(d / name / f"{i:02d}.png")
    assert main(["train", str(d / "spec.yaml"), "--recipe", str(d / "r.yaml"), "--data", str(d / "d.npz"),
                 "--out", str(d / "run"), "--json"]) == 0
    return d


def one_line(capsys, code, want, *words) -> str:
    """The command failed with exit `want` in one line (the last of stderr: progress lines
    may precede it) holding `words`, no traceback, no internal error."""
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert code == want, (code, err)
    assert "internal error" not in err and "Traceback" not in err, err
    errors = [line for line in err.splitlines() if not line.startswith("archspec: ")]
    assert len(errors) == 1, err
    for w in words:
        assert w in errors[0], errors[0]
    return errors[0]


def snapshot(run: Path) -> dict:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def keras_caffe(x):
    """keras.applications' caffe preprocessing (ResNet50's preprocess_input) of RGB 0..255."""
    from archspec.backends.keras import keras

    keras()
    from keras.applications.resnet50 import preprocess_input

    return np.asarray(preprocess_input(np.array(x, dtype="float32")))


def record(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("archspec.json"))


def rewrite_record(src: Path, dst: Path, change) -> None:
    """`src` copied to `dst` with its archspec.json changed by `change(doc)` (None: removed)."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w") as zo:
        for item in zi.infolist():
            data = zi.read(item)
            if item.filename == "archspec.json":
                doc = change(json.loads(data))
                if doc is None:
                    continue
                data = json.dumps(doc).encode()
            zo.writestr(item, data)


# ---------------------------------------------------------------- item 6: build records the mode


@pytest.fixture(scope="module")
def built(d):
    """`archspec build spec.yaml -o m.keras` (random weights, seed 3)."""
    out = d / "built" / "m.keras"
    out.parent.mkdir()
    assert main(["build", str(d / "spec.yaml"), "-o", str(out), "--seed", "3", "--json"]) == 0
    return out


def test_build_records_the_mode(built, capsys):
    rec = record(built)["archspec.preprocessing"]
    assert (rec["mode"], rec["baked"]) == ("caffe", False)
    assert rec["mode_from"] == "the spec (input.preprocess)"
    assert "caffe" in rec["expects"]


def test_predict_and_evaluate_of_a_built_file_preprocess_as_keras(d, built, capsys):
    """predict and evaluate of build's .keras (outside any run directory) give the model's
    outputs on keras' caffe preprocess_input of the images, not on the raw pixels."""
    import keras

    model = keras.models.load_model(built, compile=False)
    img = d / "imgs" / "00.png"
    from PIL import Image

    raw = np.asarray(Image.open(img).convert("RGB"), dtype="float32")[None]
    want = np.asarray(model(keras_caffe(raw), training=False))[0]
    assert np.abs(np.asarray(model(raw, training=False))[0] - want).max() > 1e-3  # the mode matters here
    capsys.readouterr()
    assert main(["predict", str(built), str(img), "--json", "--top", "10"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    got = np.zeros(10)
    for t in top:
        got[t["class"]] = t["probability"]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)

    assert main(["evaluate", str(built), "--data", str(d / "d.npz"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["preprocess"] == {"mode": "caffe", "from": "m.keras (archspec.json)"}
    x, y = _digits()
    by_hand = np.asarray(model(keras_caffe(x[1200:1280]), training=False))
    assert r["top1"] == pytest.approx(float(np.mean(by_hand.argmax(1) == y[1200:1280])))


def test_export_bakes_the_mode_a_built_file_records(d, built, tmp_path, capsys):
    """`export m.keras --bake-preprocessing` (it refused: "carries no record"): the ONNX file
    on raw pixels equals Keras on keras' caffe preprocessing."""
    import keras
    import onnxruntime as ort

    out = tmp_path / "b.onnx"
    assert main(["export", str(built), "-o", str(out), "--bake-preprocessing", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["preprocessing"] == {"mode": "caffe", "from": "m.keras (archspec.json)", "baked": True}
    raw = np.random.default_rng(1).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: raw})[0]
    model = keras.models.load_model(built, compile=False)
    np.testing.assert_allclose(got, np.asarray(model(keras_caffe(raw), training=False)), rtol=0, atol=1e-4)


@pytest.mark.parametrize("damage,words", [
    (lambda doc: {**doc, "archspec.preprocessing": {k: v for k, v in doc["archspec.preprocessing"].items()
                                                    if k not in ("mode", "mode_from", "baked")}},
     ["no record of its spec's input.preprocess"]),
    (lambda doc: {**doc, "archspec.preprocessing": {**doc["archspec.preprocessing"], "mode": "bgr\x1b[31m"}},
     ["not one of none, caffe, torch, tf", "damaged"]),
    (lambda doc: {**doc, "archspec.preprocessing": {**doc["archspec.preprocessing"], "baked": "yes"}},
     ["damaged"]),
])
def test_an_archspec_file_without_a_sound_record_is_refused(d, built, tmp_path, capsys, damage, words):
    """A .keras archspec wrote with no record of the mode (an older archspec) or a damaged
    one, outside a run directory: predict, evaluate and export refuse it in one line naming
    it (exit 2; the file's own text is not quoted), and write nothing."""
    m = tmp_path / "old.keras"
    rewrite_record(built, m, damage)
    img = str(d / "imgs" / "00.png")
    csv = tmp_path / "cm.csv"
    for argv in (["predict", str(m), img],
                 ["evaluate", str(m), "--data", str(d / "d.npz"), "--confusion", str(csv)],
                 ["export", str(m), "-o", str(tmp_path / "o.onnx"), "--bake-preprocessing"],
                 ["export", str(m), "-o", str(tmp_path / "o.onnx")]):
        line = one_line(capsys, main(argv), 2, str(m), *words)
        assert "\x1b" not in line and "bgr" not in line and "yes" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.keras"]


def test_an_old_record_in_a_run_directory_takes_the_runs_spec(d, tmp_path, capsys):
    """A run of an archspec before the record: its spec.yaml says the mode, as before."""
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    for f in ("best.keras", "final.keras"):
        (run / f).rename(run / "tmp.keras")
        rewrite_record(run / "tmp.keras", run / f, lambda doc: {
            **doc, "archspec.preprocessing": {"in_model": [], "expects": "..."}})
        (run / "tmp.keras").unlink()
    assert main(["evaluate", str(run), "--data", str(d / "d.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["preprocess"] == {"mode": "caffe", "from": str(run / "spec.yaml")}


def test_a_plain_keras_file_keeps_taking_its_inputs_as_given(d, built, tmp_path, capsys):
    """A .keras that no archspec wrote (no archspec.json) records no spec: predict takes the
    image as stored (today's behaviour), and baking refuses for want of a mode."""
    import keras

    m = tmp_path / "plain.keras"
    rewrite_record(built, m, lambda doc: None)
    model = keras.models.load_model(m, compile=False)
    img = d / "imgs" / "03.png"
    from PIL import Image

    raw = np.asarray(Image.open(img).convert("RGB"), dtype="float32")[None]
    assert main(["predict", str(m), str(img), "--json", "--top", "1"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"][0]
    assert top["probability"] == pytest.approx(float(np.asarray(model(raw, training=False))[0].max()), abs=1e-5)
    one_line(capsys, main(["export", str(m), "-o", str(tmp_path / "o.onnx"), "--bake-preprocessing"]), 2,
             "carries no record")
    assert not (tmp_path / "o.onnx").exists()


# ---------------------------------------------------------------- item 7: int8 calibration apart from the check


def test_int8_calibrates_on_the_images_the_check_does_not_see(d, tmp_path, monkeypatch, capsys):
    """24 images, no test split, baked caffe: 12 calibrate, the 12 others are checked
    (before: all 24 checked, calibration on generated noise, agreement 33%). The images
    quantize_static saw and the images the check ran are disjoint and together the folder."""
    from PIL import Image

    from archspec.backends.onnx import variants
    from archspec.exporting import verify

    seen = {}
    real_q, real_run = variants.quantize, verify.run

    def quantize(src, dst, mode, data, what, *a, **k):
        seen["calib"] = np.array(data)
        return real_q(src, dst, mode, data, what, *a, **k)

    def run(fmt, path, x, *a, **k):
        seen["check"] = np.array(x)
        return real_run(fmt, path, x, *a, **k)

    monkeypatch.setattr(variants, "quantize", quantize)
    monkeypatch.setattr(verify, "run", run)
    out = tmp_path / "q.onnx"
    assert main(["export", str(d / "run" / "best.keras"), "-o", str(out), "--bake-preprocessing", "--quantize",
                 "int8", "--check-data", str(d / "imgs"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["calibration"]["images"] == 12 and r["samples"] == 12
    assert r["calibration"]["source"] == "check data (images not checked)"
    assert r["calibration"]["split"].startswith("no test split: 12 of the 24 images")
    assert r["top1_agreement"] >= 0.95 and r["passed"]
    folder = [np.asarray(Image.open(p).convert("RGB"), dtype="float32") for p in sorted((d / "imgs").iterdir())]

    def which(batch):  # baked: the images reach the model as stored
        return [next(i for i, f in enumerate(folder) if np.array_equal(f, b)) for b in batch]

    calib, check = which(seen["calib"]), which(seen["check"])
    assert len(set(calib)) == 12 and len(set(check)) == 12
    assert not set(calib) & set(check) and set(calib) | set(check) == set(range(24))


def test_int8_with_too_few_images_to_split_is_refused(d, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    one_line(capsys, main(["export", str(d / "run" / "best.keras"), "-o", str(out), "--quantize", "int8",
                           "--check-data", str(d / "few")]), 2,
             str(d / "few"), "10 images and no test split", "at least 8 of each", "--calibration")
    assert list(tmp_path.iterdir()) == []


def test_unchecked_int8_of_a_run_calibrates_on_the_runs_data(d, tmp_path, capsys):
    """--no-check on a run directory: real images exist (the run's data), so calibration
    takes them (the training split, as the check would set it apart), not generated noise;
    a spec with no images at all keeps the generated ones (tests/test_export.py)."""
    out = tmp_path / "q.onnx"
    assert main(["export", str(d / "run"), "-o", str(out), "--quantize", "int8", "--no-check", "--json"]) == 0
    cal = json.loads(capsys.readouterr().out)["calibration"]
    assert cal["images"] == 64 and cal["source"] == f"the run's data {d / 'd.npz'} (images the check would not use)"
    assert cal["split"].startswith("test split: ") and "64 of the 1200 training images" in cal["split"]


# ---------------------------------------------------------------- item 8: a run directory's damaged files


@pytest.mark.parametrize("cut", ["header-only", "mid-line", "empty"])
def test_a_truncated_history_is_refused_on_resume(d, tmp_path, capsys, cut):
    """The checkpoint has 1 epoch complete; a history.csv without its row resumed with exit 0
    and wrote metrics.json with epochs_completed 0. Now one line naming it, nothing changed."""
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    text = (run / "history.csv").read_text()
    (run / "history.csv").write_text({"header-only": text.splitlines(True)[0], "empty": "",
                                      "mid-line": text[:len(text) - 5]}[cut])
    before = snapshot(run)
    words = ["line 2 ends without a newline", "truncated"] if cut == "mid-line" else [
        "holds no row for epoch 1", "ckpt-1", "truncated or damaged"]
    one_line(capsys, main(["train", "--resume", str(run)]), 2, str(run / "history.csv"), *words)
    assert snapshot(run) == before


@pytest.mark.parametrize("damage", ["truncated", "empty", "flipped"])
def test_a_damaged_checkpoint_is_refused_on_resume(d, tmp_path, capsys, damage):
    """A truncated .data file ended in "internal error: IndexError" (exit 1)."""
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    data = run / "checkpoints" / "ckpt-1.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    if damage == "flipped":  # TensorFlow's checksum of the tensor catches it
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    else:
        os.truncate(data, 0 if damage == "empty" else len(raw) // 3)
    before = snapshot(run)
    one_line(capsys, main(["train", "--resume", str(run)]), 2, str(data), "cannot read the checkpoint",
             "truncated or damaged")
    assert snapshot(run) == before


def test_a_damaged_checkpoint_index_is_refused_on_resume(d, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    index = run / "checkpoints" / "ckpt-1.index"
    os.truncate(index, 40)
    before = snapshot(run)
    one_line(capsys, main(["train", "--resume", str(run)]), 2, str(index), "cannot read the checkpoint's index")
    assert snapshot(run) == before


@pytest.mark.parametrize("garbage", [b"garbage, not a zip", "zip without a model", "zip with a bad config"])
def test_a_garbage_best_keras_is_not_a_valid_keras_file(d, tmp_path, capsys, garbage):
    """evaluate said "File not found" (exit 1) for a best.keras that exists."""
    run = tmp_path / "run"
    shutil.copytree(d / "run", run)
    best = run / "best.keras"
    if isinstance(garbage, bytes):
        best.write_bytes(garbage)
    else:
        with zipfile.ZipFile(best, "w") as z:
            z.writestr("archspec.json" if garbage == "zip without a model" else "config.json", "{\"x\": [1, 2")
            if garbage == "zip with a bad config":
                z.writestr("model.weights.h5", b"not hdf5")
    img = str(d / "imgs" / "00.png")
    for argv in (["evaluate", str(run), "--data", str(d / "d.npz")], ["predict", str(run), img]):
        line = one_line(capsys, main(argv), 2, str(best), "not a valid .keras file" if "config" in str(garbage)
                        else "not a .keras file")
        assert "File not found" not in line


# ---------------------------------------------------------------- item 9: caffe on one channel


@pytest.mark.parametrize("mode,channels", [("caffe", 1), ("torch", 1), ("caffe", 4)])
def test_a_per_rgb_mode_on_other_channels_is_refused_where_declared(tmp_path, capsys, mode, channels):
    """`validate` said ok; the error is located at the mode (line 5, column 15 of the file)."""
    spec = tmp_path / "grey.yaml"
    spec.write_text(SPEC.replace("shape: [16, 16, 3]", f"shape: [16, 16, {channels}]").replace(
        "preprocess: caffe", f"preprocess: {mode}"))
    line = one_line(capsys, main(["validate", str(spec)]), 2)
    assert line.startswith(f"{spec}:5:15: input.preprocess: {mode} needs RGB images (3 channels"), line
    assert f"the input has {channels} channel" in line
    out = tmp_path / "m.keras"
    one_line(capsys, main(["build", str(spec), "-o", str(out)]), 2, f"{spec}:5:15: input.preprocess")
    assert not out.exists()


def test_an_override_to_one_channel_is_refused_and_tf_or_none_pass(capsys):
    one_line(capsys, main(["validate", "resnet50", "--set", "input.shape=[64,64,1]"]), 2,
             "input.preprocess: caffe needs RGB images", "set input.preprocess: none (or tf)")
    for mode in ("none", "tf"):
        assert main(["validate", "resnet50", "--set", "input.shape=[64,64,1]", "--set",
                     f"input.preprocess={mode}"]) == 0
    capsys.readouterr()
