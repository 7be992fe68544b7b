"""Hostile and broken inputs of `archspec train` and its run directory (issue 18, items 10,
14, 15): bad `--out` paths, a full disk at the checkpoint, garbage or mismatching
`--weights`, damaged run.json / history.csv / classes.json, a SPEC that is not the run's own
with `--resume`, and temporaries of a killed process. Each is one line naming the path, exit
2 for bad input and 1 for a failure while running, never the CLI's internal-error guard,
and nothing on disk is lost or half-written.

A tiny network (two 3x3 convolutions) on 120 random 8x8 images; a run of an epoch takes a
second or two."""

from __future__ import annotations

import errno
import json
import os
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from archspec.cli import main

SPEC = textwrap.dedent("""\
    format: 1
    name: tiny
    input:
      shape: [8, 8, 1]
      preprocessing: [{type: rescaling, name: scale, scale: 0.0625}]
    defaults: {activation: relu}
    stem:
      - {type: conv, name: c1, filters: 4, kernel: 3, padding: same}
      - {type: conv, name: c2, filters: 4, kernel: 3, padding: same}
    head:
      classes: 4
      layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]
    """)

RECIPE = textwrap.dedent("""\
    format: 1
    name: tiny_recipe
    optimizer: {name: adam, learning_rate: 0.01}
    epochs: 2
    data: {batch_size: 32}
    """)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 16, (120, 8, 8, 1)).astype("uint8")
    y = np.arange(120) % 4
    np.savez(d / "d.npz", x_train=x[:96], y_train=y[:96], x_test=x[96:], y_test=y[96:])
    (d / "spec.yaml").write_text(SPEC)
    (d / "wide.yaml").write_text(SPEC.replace("name: c1, filters: 4", "name: c1, filters: 6"))
    (d / "head5.yaml").write_text(SPEC.replace("classes: 4", "classes: 5"))
    (d / "r.yaml").write_text(RECIPE)
    return d


def train(d, out, *extra, spec="spec.yaml"):
    return main(["train", str(d / spec), "--recipe", str(d / "r.yaml"), "--data", str(d / "d.npz"),
                 "--out", str(out), "--json", *extra])


def one_line(capsys, code, want_code, *words) -> str:
    err = capsys.readouterr().err.strip()
    lines = [l for l in err.splitlines() if l.startswith("archspec:") or ": " in l]
    last = err.splitlines()[-1] if err else ""
    assert code == want_code, (code, err)
    assert "internal error" not in err and "Traceback" not in err, err
    assert len(last) < 600, last
    for w in words:
        assert w in last, last
    # the error is the one line of its kind: nothing of Keras' warnings, no arrays
    assert "value=[[" not in err and not any(l.startswith("  File ") for l in lines), err
    return last


@pytest.fixture(scope="module")
def done(d, tmp_path_factory):
    """A finished run of one epoch."""
    out = tmp_path_factory.mktemp("done") / "run"
    assert train(d, out, "--epochs", "1") == 0
    return out


def copy_run(done, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(done, run)
    return run


# ---------------------------------------------------------------- item 10: --out


def test_out_under_a_file_is_one_line(d, tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    out = tmp_path / "afile" / "run"
    one_line(capsys, train(d, out), 2, str(tmp_path / "afile"), "is a file, not a directory")
    assert (tmp_path / "afile").read_text() == "mine"


def test_out_name_too_long_is_one_short_line(d, tmp_path, capsys):
    out = tmp_path / ("x" * 5000)
    line = one_line(capsys, train(d, out), 2, "File name too long", "5,0")
    assert len(line) < 400


def test_out_dangling_symlink_is_one_line(d, tmp_path, capsys):
    out = tmp_path / "link"
    out.symlink_to(tmp_path / "nowhere")
    for extra in ((), ("--force",)):
        one_line(capsys, train(d, out, *extra), 2, str(out), "symbolic link", "does not exist")
        assert out.is_symlink() and not (tmp_path / "nowhere").exists()


def test_out_on_a_read_only_parent_is_one_line(d, tmp_path, monkeypatch, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.mkdir

    def mkdir(p, *a, **k):
        if os.fspath(p).startswith(str(ro)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(p))
        return real(p, *a, **k)

    monkeypatch.setattr(os, "mkdir", mkdir)
    out = ro / "runs" / "r1"
    one_line(capsys, train(d, out), 1, str(out), "cannot create the run directory", "Read-only file system")
    assert list(ro.iterdir()) == []


def test_full_disk_at_the_checkpoint_stops_in_one_line_and_resumes(d, tmp_path, monkeypatch, capsys):
    """TensorFlow's checkpoint save raises ResourceExhaustedError ("No space left on device")
    in epoch 2: one line naming the checkpoints, exit 1; the last good checkpoint (epoch 1),
    history.csv and best.keras agree; --resume then finishes the run."""
    import tensorflow as tf

    from test_run_dir import training_record

    real = tf.train.CheckpointManager.save
    calls = []

    def save(self, *a, **k):
        calls.append(k.get("checkpoint_number"))
        if len(calls) == 2:
            raise tf.errors.ResourceExhaustedError(None, None, f"{self.directory}/ckpt-2_temp/part-00000: No space "
                                                               f"left on device")
        return real(self, *a, **k)

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    run = tmp_path / "run"
    one_line(capsys, train(d, run), 1, str(run / "checkpoints"), "no space left on the device", "ckpt-1",
             "--resume")
    monkeypatch.undo()
    from archspec.training.loop import read_history

    assert [r["epoch"] for r in read_history(run)] == [0]
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-1")
    assert training_record(run / "best.keras")["archspec.training"]["epoch"] == 1
    assert not (run / "final.keras").exists()
    assert main(["train", "--resume", str(run), "--json"]) == 0
    assert "1 epochs complete" in capsys.readouterr().err
    assert [r["epoch"] for r in read_history(run)] == [0, 1]
    assert (run / "final.keras").is_file()


# ---------------------------------------------------------------- item 14: --weights


def build_weights(d, spec: str, path: Path) -> Path:
    from archspec.backends import keras as keras_backend
    from archspec.api import lower_spec

    kb = keras_backend.load()
    model = kb.build_model(lower_spec(str(d / spec)), seed=1)
    if path.name.endswith(".weights.h5") or path.suffix == ".keras":
        model.save_weights(path) if path.name.endswith(".weights.h5") else model.save(path)
    else:
        model.save(path)  # a legacy .h5, as keras.applications ships its weights
    return path


@pytest.mark.parametrize("kind", ["garbage.keras", "truncated.keras", "text.h5", "text.weights.h5"])
def test_weights_that_are_not_weights_are_one_line(d, done, tmp_path, capsys, kind):
    w = tmp_path / kind
    if kind == "truncated.keras":
        w.write_bytes((done / "final.keras").read_bytes()[:5000])
    else:
        w.write_text("these are not weights\n" * 10)
    out = tmp_path / "run"
    one_line(capsys, train(d, out, "--weights", str(w)), 2, str(w))
    assert not out.exists()


@pytest.mark.parametrize("name", ["wide.weights.h5", "wide.h5", "wide.keras"])
def test_weight_shape_mismatch_is_one_line_naming_the_layer(d, tmp_path, capsys, name):
    """Weights of another network (c1 has 6 filters, so c2's input differs too): one line
    naming c1, both shapes and the other mismatching layer, before the run directory (the
    load report's summary: `archspec.backends.keras.weights`)."""
    w = build_weights(d, "wide.yaml", tmp_path / name)
    capsys.readouterr()
    out = tmp_path / "run"
    one_line(capsys, train(d, out, "--weights", str(w)), 2, str(w), "2 with other shapes: c1, c2",
             "(3, 3, 1, 6), (6,) in the file", "(3, 3, 1, 4), (4,) in the spec")
    assert not out.exists()


def test_weights_with_another_classifier_load_and_say_so(d, tmp_path, capsys):
    w = build_weights(d, "head5.yaml", tmp_path / "h5.weights.h5")
    capsys.readouterr()
    out = tmp_path / "run"
    assert train(d, out, "--weights", str(w), "--epochs", "1") == 0
    err = capsys.readouterr().err
    assert "2 of 3 layers load; classifier re-initialised (5 → 4 classes)" in err, err
    assert "value=[[" not in err and "could not be loaded" not in err


def test_weights_skip_leaves_the_named_layers_at_init_and_says_so(d, tmp_path, capsys):
    """Weights of another network load only with the mismatching layers skipped by name."""
    w = build_weights(d, "wide.yaml", tmp_path / "wide.weights.h5")
    capsys.readouterr()
    out = tmp_path / "run"
    assert train(d, out, "--weights", str(w), "--weights-skip", "c?", "--epochs", "1") == 0
    err = capsys.readouterr().err
    assert "1 of 3 layers load; 2 skipped (--weights-skip): c1, c2" in err, err


# ---------------------------------------------------------------- item 14: a run directory's files


@pytest.mark.parametrize("file,text,words", [
    ("run.json", '{"data": "x", "epochs": ', ["run.json", "not valid JSON"]),
    ("run.json", '["a list"]', ["run.json", "JSON object"]),
    ("run.json", '{"data": 3}', ["run.json", "'data'"]),
    ("run.json", b"\xff\xfe garbage", ["run.json", "not UTF-8"]),
    ("history.csv", "epoch,phase,loss\n0,train,abc\n", ["history.csv", "line 2", "'loss'", "'abc'"]),
    ("history.csv", "epoch,phase,loss\n0,train\n", ["history.csv", "line 2", "2 cells for 3 columns"]),
    ("history.csv", "\x00\x01\x02 garbage\n1,2\n", ["history.csv", "no 'epoch' column"]),
])
def test_damaged_run_files_are_one_line_on_resume(done, tmp_path, capsys, file, text, words):
    run = copy_run(done, tmp_path)
    (run / file).write_bytes(text if isinstance(text, bytes) else text.encode())
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    one_line(capsys, main(["train", "--resume", str(run)]), 2, *words)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_damaged_classes_json_is_one_line(d, done, tmp_path, capsys, command):
    from PIL import Image

    run = copy_run(done, tmp_path)
    (run / "classes.json").write_text('["a", "b", ')
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(img)
    argv = {"evaluate": ["evaluate", str(run), "--data", str(d / "d.npz")],
            "predict": ["predict", str(run), str(img)],
            "export": ["export", str(run), "-o", str(tmp_path / "m.keras"), "--format", "keras", "--no-check"]}
    one_line(capsys, main(argv[command]), 2, "classes.json")
    assert not (tmp_path / "m.keras").exists()


# ---------------------------------------------------------------- item 15: SPEC with --resume


def test_resume_refuses_another_spec_and_accepts_its_own(d, done, tmp_path, capsys):
    run = copy_run(done, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    code = main(["train", str(d / "wide.yaml"), "--resume", str(run)])
    one_line(capsys, code, 2, str(d / "wide.yaml"), "not the spec", "trained with")
    one_line(capsys, main(["train", str(d / "spec.yaml"), "--set", "stem[0].filters=8", "--resume", str(run)]),
             2, "not the spec")
    one_line(capsys, main(["train", "--set", "stem[0].filters=8", "--resume", str(run)]), 2, "--set")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert json.loads((run / "run.json").read_text())["spec_sha256"]
    assert main(["train", str(d / "spec.yaml"), "--resume", str(run), "--json"]) == 0
    assert "1 epochs complete" in capsys.readouterr().err


def test_resume_refuses_another_recipe_or_weights_and_accepts_its_own(d, done, tmp_path, capsys):
    """`train --resume RUN --recipe R` ignored R (and --recipe-set, --batch-size, --weights)."""
    run = copy_run(done, tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    (d / "r_lr.yaml").write_text(RECIPE.replace("learning_rate: 0.01", "learning_rate: 0.5"))
    assert "learning_rate: 0.5" in (d / "r_lr.yaml").read_text()
    one_line(capsys, main(["train", "--resume", str(run), "--recipe", str(d / "r_lr.yaml")]), 2,
             "not the recipe run", "leave --recipe")
    one_line(capsys, main(["train", "--resume", str(run), "--recipe-set", "optimizer.learning_rate=0.5"]), 2,
             "not the recipe run")
    one_line(capsys, main(["train", "--resume", str(run), "--batch-size", "7"]), 2, "not the recipe run")
    one_line(capsys, main(["train", "--resume", str(run), "--weights", str(run / "final.keras")]), 2,
             "--weights starts a new run")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before
    assert main(["train", "--resume", str(run), "--recipe", str(d / "r.yaml"), "--json"]) == 0


# ---------------------------------------------------------------- item 15: temporaries of a killed process


STALE = [".best.tmp-999999.keras", ".history.tmp-999999.csv", ".best.keras.tmp-999999-0123abcd.keras",
         ".history.csv.tmp-999999-0123abcd.csv"]


@pytest.mark.parametrize("how", ["resume", "force"])
def test_temporaries_of_a_killed_process_are_removed_on_the_next_start(d, done, tmp_path, capsys, how):
    run = copy_run(done, tmp_path)
    for name in STALE:
        (run / name).write_bytes(b"half a file")
    if how == "resume":
        assert main(["train", "--resume", str(run), "--json"]) == 0
    else:
        assert train(d, run, "--force", "--epochs", "1") == 0
    capsys.readouterr()
    assert [p.name for p in run.iterdir() if ".tmp-" in p.name] == []
    assert (run / "final.keras").is_file()


def test_a_crop_padding_beyond_the_image_is_refused_before_the_run(d, tmp_path, capsys):
    """Issue 18.11: crop_padding=1000000 ran out of memory after the run directory was made."""
    out = tmp_path / "run"
    code = train(d, out, "--recipe-set", "augmentation.crop_padding=1000000")
    one_line(capsys, code, 2, "augmentation.crop_padding: is 1000000, more than the images' size 8x8")
    assert not out.exists()
