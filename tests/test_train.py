"""`archspec train`, `evaluate`, `predict` on data the tests make (scikit-learn's bundled
8x8 digits written as an image folder, an .npz and a CIFAR-format directory; generated
images): learning is real, fine-tuning freezes what it says, GoogLeNet's auxiliary losses
are weighted, a killed run resumes without repeating an epoch, a NaN stops the run, and
bad input is one located line with exit 2."""

from __future__ import annotations

import csv
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from archspec.cli import main

DIGITS_SPEC = textwrap.dedent("""\
    format: 1
    name: digits_cnn
    input:
      shape: [8, 8, 1]
      preprocessing: [{type: rescaling, name: scale, scale: 0.0625}]
    defaults: {activation: relu, batch_norm: {momentum: 0.9}}
    stem:
      - {type: conv, name: c1, filters: 32, kernel: 3, padding: same, bn: true}
      - {type: conv, name: c2, filters: 64, kernel: 3, stride: 2, padding: same, bn: true}
    head:
      classes: 10
      layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]
    """)

QUICK = textwrap.dedent("""\
    format: 1
    name: quick
    optimizer: {name: adam, learning_rate: 0.01}
    epochs: 8
    data: {batch_size: 64}
    callbacks:
      checkpoint: {monitor: val_top1, mode: max}
    """)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """The digits as an .npz (1,500 train / 297 test), an image folder and a CIFAR-10-style
    directory, with the spec and recipe files."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("digits")
    data = load_digits()
    x = data.images.astype("uint8")  # 0..16
    y = data.target.astype("int64")
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:1500], idx[1500:]
    np.savez(d / "digits.npz", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])
    folder = d / "folder"
    for k in range(10):
        (folder / f"digit{k}").mkdir(parents=True)
    for i in idx:
        Image.fromarray((x[i].astype(int) * 16).clip(0, 255).astype("uint8")).save(folder / f"digit{y[i]}" / f"{i}.png")
    (d / "spec.yaml").write_text(DIGITS_SPEC)
    (d / "folder_spec.yaml").write_text(DIGITS_SPEC.replace("scale: 0.0625", "scale: 0.0039215686"))
    (d / "quick.yaml").write_text(QUICK)
    return d


def cifar_dir(root: Path, n_train=200, n_test=50, classes=10) -> Path:
    """A CIFAR-10 python directory as distributed (pickled dicts of bytes keys)."""
    rng = np.random.default_rng(1)
    root.mkdir()
    protos = rng.integers(0, 256, (classes, 3072), dtype=np.uint8)

    def batch(n):
        labels = rng.integers(0, classes, n)
        data = np.clip(protos[labels].astype(int) + rng.integers(-30, 30, (n, 3072)), 0, 255).astype(np.uint8)
        return {b"data": data, b"labels": [int(v) for v in labels], b"batch_label": b"x"}

    for k in (1, 2):
        with open(root / f"data_batch_{k}", "wb") as f:
            pickle.dump(batch(n_train // 2), f)
    with open(root / "test_batch", "wb") as f:
        pickle.dump(batch(n_test), f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"class{k}".encode() for k in range(classes)]}, f)
    return root


def read_rows(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def no_half_written_files(run: Path) -> None:
    """Nothing of ours is left under a temporary name, and every file of ours parses."""
    leftovers = [p for p in run.rglob("*") if ".tmp-" in p.name]
    assert leftovers == []
    json.loads((run / "run.json").read_text())
    json.loads((run / "classes.json").read_text())
    read_rows(run)


def test_digits_npz_learns_and_evaluates(digits, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(digits / "spec.yaml"), "--recipe", str(digits / "quick.yaml"), "--data",
                 str(digits / "digits.npz"), "--out", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["epochs_completed"] == 8 and metrics["val_images"] == 297
    assert metrics["val_top1"] >= 0.95
    for f in ("spec.yaml", "recipe.yaml", "best.keras", "final.keras", "history.csv", "metrics.json", "checkpoints"):
        assert (run / f).exists(), f
    rows = read_rows(run)
    assert [int(r["epoch"]) for r in rows] == list(range(8))
    assert {"loss", "top1", "top5", "val_loss", "val_top1", "learning_rate", "images_per_second"} <= set(rows[0])
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    assert json.loads((run / "metrics.json").read_text())["best_epoch"] == metrics["best_epoch"]
    # evaluate the run: the same data's test set gives the best epoch's validation figures
    conf = tmp_path / "confusion.csv"
    assert main(["evaluate", str(run), "--data", str(digits / "digits.npz"), "--json", "--confusion", str(conf)]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["top1"] == pytest.approx(metrics["val_top1"], abs=1e-6)
    assert ev["loss"] == pytest.approx(metrics["val_loss"], rel=1e-4)
    cm = np.array(ev["confusion"])
    assert cm.sum() == 297 and np.trace(cm) / cm.sum() == pytest.approx(ev["top1"])
    import csv

    rows = list(csv.reader(conf.read_text().splitlines()))
    assert len(rows) == 11 and rows[0][0] == "true\\predicted"
    assert np.array_equal(np.array([[int(v) for v in r[1:]] for r in rows[1:]]), cm)  # the CSV holds the matrix
    # the run directory cannot be overwritten by accident
    assert main(["train", str(digits / "spec.yaml"), "--recipe", str(digits / "quick.yaml"), "--data",
                 str(digits / "digits.npz"), "--out", str(run)]) == 2
    assert "--force" in capsys.readouterr().err and (run / "best.keras").is_file()


def test_image_folder_trains_and_predicts_with_class_names(digits, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(digits / "folder_spec.yaml"), "--recipe", str(digits / "quick.yaml"), "--data",
                 str(digits / "folder"), "--out", str(run), "--recipe-set", "data.validation_split=0.2", "--batch-size", "32",
                 "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["train_images"] == 1438 and metrics["val_images"] == 359
    assert metrics["val_top1"] >= 0.95
    assert json.loads((run / "classes.json").read_text()) == [f"digit{k}" for k in range(10)]
    images = sorted((digits / "folder" / "digit3").glob("*.png"))[:3]
    assert main(["predict", str(run), *map(str, images), "--top", "3", "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert [len(p["top"]) for p in preds] == [3, 3, 3]
    assert sum(p["top"][0]["name"] == "digit3" for p in preds) >= 2
    assert all(abs(sum(t["probability"] for t in p["top"])) <= 1 + 1e-6 for p in preds)


def test_cifar_directory_trains_and_evaluates(tmp_path, capsys):
    data = cifar_dir(tmp_path / "cifar-10-batches-py")
    spec = tmp_path / "s.yaml"
    spec.write_text(textwrap.dedent("""\
        format: 1
        name: tiny32
        input: {shape: [32, 32, 3], preprocessing: [{type: rescaling, name: scale, scale: 0.0039215686}]}
        defaults: {activation: relu}
        stem: [{type: conv, name: c1, filters: 8, kernel: 3, stride: 2, padding: same}]
        head: {classes: 10, layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]}
        """))
    run = tmp_path / "run"
    assert main(["train", str(spec), "--recipe", "cifar100", "--data", str(data), "--out", str(run), "--epochs", "2",
                 "--batch-size", "32", "--recipe-set", "data.validation_split=0", "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["train_images"] == 200 and metrics["val_images"] == 50  # the test batch validates
    assert json.loads((run / "classes.json").read_text())[:2] == ["class0", "class1"]
    assert main(["evaluate", str(run / "final.keras"), "--data", str(data), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["images"] == 50 and 0 <= ev["top1"] <= 1 and ev["top5"] >= ev["top1"]


def test_bad_data_is_one_located_line(digits, tmp_path, capsys):
    base = ["train", str(digits / "spec.yaml"), "--recipe", str(digits / "quick.yaml"), "--out"]

    def fails(data, *extra, out="r"):
        code = main(base + [str(tmp_path / out), "--data", str(data), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert not (tmp_path / out).exists()  # a refused start leaves no run directory
        return err

    assert fails(tmp_path / "nowhere").endswith("no such file or directory")
    empty = tmp_path / "empty_class"
    (empty / "a").mkdir(parents=True)
    (empty / "b").mkdir()
    from PIL import Image

    Image.new("L", (8, 8)).save(empty / "a" / "x.png")
    assert "class 'b' has no images" in fails(empty)
    broken = tmp_path / "broken"
    (broken / "a").mkdir(parents=True)
    Image.new("L", (8, 8)).save(broken / "a" / "ok.png")
    (broken / "a" / "bad.png").write_bytes(b"\x89PNG not really")
    err = fails(broken)
    assert err.startswith(str(broken / "a" / "bad.png")) and "unreadable image" in err
    np.savez(tmp_path / "big.npz", x_train=np.zeros((4, 8, 8), "uint8"), y_train=np.array([0, 1, 12, 3]))
    assert "labels go up to 12 but the spec's head has 10 classes" in fails(tmp_path / "big.npz")
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(DIGITS_SPEC.replace("{type: global_pool, name: pool}", "{type: flatten, name: flat}"))
    code = main(["train", str(fixed), "--recipe", str(digits / "quick.yaml"), "--out", str(tmp_path / "f"), "--data",
                 str(digits / "digits.npz"), "--recipe-set", "data.image_size=[16,16]"])
    err = capsys.readouterr().err
    assert code == 2 and "takes 8x8 images only ('flat' fixes its input size)" in err
    code = main(base + [str(tmp_path / "r2"), "--data", str(digits / "digits.npz"), "--recipe-set",
                        "optimizer.nam=adam"])
    assert code == 2 and "--recipe-set optimizer.nam=adam: optimizer.nam: unknown key" in capsys.readouterr().err
    # --force replaces a run only once everything is checked: bad input loses nothing
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "run.json").write_text("{}")  # a run directory: the only kind --force may replace
    (kept / "best.keras").write_text("an earlier run")
    code = main(base + [str(kept), "--data", str(tmp_path / "big.npz"), "--force"])
    assert code == 2 and "labels go up to 12" in capsys.readouterr().err
    assert (kept / "best.keras").read_text() == "an earlier run"


def _train_cmd(digits, run, *extra):
    return [sys.executable, "-m", "archspec", "train", str(digits / "spec.yaml"), "--recipe", str(digits / "quick.yaml"),
            "--data", str(digits / "digits.npz"), "--out", str(run), *extra]


@pytest.fixture(scope="module")
def uninterrupted(digits, tmp_path_factory):
    """The run the killed and the stopped runs must end as: 3 epochs, batches of 4 (an epoch
    lasts about a second), uninterrupted (one process, shared by both tests)."""
    ref = tmp_path_factory.mktemp("uninterrupted") / "ref"
    r = subprocess.run(_train_cmd(digits, ref, "--epochs", "3", "--batch-size", "4"), capture_output=True, text=True,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return ref


def same_weights(run: Path, ref: Path) -> None:
    import keras

    final, want = keras.models.load_model(run / "final.keras"), keras.models.load_model(ref / "final.keras")
    for a, b in zip(final.weights, want.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5, err_msg=a.path)


def test_killed_run_resumes_without_repeating_an_epoch(digits, uninterrupted, tmp_path):
    """SIGKILL in the middle of an epoch (the last of three), then --resume: every planned
    epoch once, the completed ones untouched, and the run ends where an uninterrupted one
    ends (same data order per epoch, optimizer state, rates): its history and its weights."""
    run = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.Popen(_train_cmd(digits, run, "--epochs", "3", "--batch-size", "4", "--json"), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and p.poll() is None:
        if (run / "history.csv").is_file() and len(read_rows(run)) >= 2:
            break
        time.sleep(0.05)
    assert p.poll() is None, p.stderr.read()
    time.sleep(0.4)  # into the third epoch
    p.kill()
    p.wait()
    before = read_rows(run)
    assert len(before) == 2
    no_half_written_files(run)
    r = subprocess.run([sys.executable, "-m", "archspec", "train", "--resume", str(run), "--json"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resuming {run}: {len(before)} epochs complete" in r.stderr
    after = read_rows(run)
    assert [int(row["epoch"]) for row in after] == list(range(3))
    assert after[:len(before)] == before  # the completed epochs were not run again
    assert json.loads(r.stdout)["epochs_completed"] == 3
    no_half_written_files(run)
    for row, ref_row in zip(after, read_rows(uninterrupted)):
        for k in ("loss", "top1", "val_loss", "val_top1", "learning_rate"):
            assert float(row[k]) == pytest.approx(float(ref_row[k]), rel=1e-4, abs=1e-6), (row["epoch"], k)
    same_weights(run, uninterrupted)


def test_sigterm_saves_a_checkpoint_and_resume_finishes(digits, uninterrupted, tmp_path):
    """SIGTERM mid-epoch: the checkpoint holds the batches trained so far in that epoch, and
    the resumed run trains only the rest of it, so it ends where an uninterrupted run ends."""
    run = tmp_path / "run"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    p = subprocess.Popen(_train_cmd(digits, run, "--epochs", "3", "--batch-size", "4"), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (run / "history.csv").is_file():
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130, err[-2000:]
    assert "checkpoint saved" in err and f"archspec train --resume {run}" in err
    done = len(read_rows(run))
    r = subprocess.run([sys.executable, "-m", "archspec", "train", "--resume", str(run), "--json"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [int(row["epoch"]) for row in read_rows(run)] == list(range(3)) and done < 3
    if "batches of epoch" in err:  # stopped mid-epoch (not between an epoch's last batch and its end)
        assert "continuing after batch" in r.stderr, r.stderr
    same_weights(run, uninterrupted)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(digits, tmp_path, capsys):
    run = tmp_path / "run"
    # epoch 1 at a sane rate, then the step schedule multiplies it by 1e12
    code = main(["train", str(digits / "spec.yaml"), "--recipe", str(digits / "quick.yaml"), "--data",
                 str(digits / "digits.npz"), "--out", str(run), "--epochs", "4", "--recipe-set",
                 "optimizer={name: sgd, learning_rate: 0.05, momentum: 0.0}", "--recipe-set",
                 "schedule={name: step, boundaries: [1], factor: 1.0e+12}"])
    err = capsys.readouterr().err
    assert code == 1
    # the rate of 5e10 makes the loss explode (LossGuard) before it becomes NaN
    assert ("the loss became NaN or infinite in epoch 2" in err or "the loss exploded in epoch 2" in err) \
        and "ckpt-1" in err
    rows = read_rows(run)
    assert [int(r["epoch"]) for r in rows] == [0]
    import tensorflow as tf

    assert int(tf.train.load_variable(tf.train.latest_checkpoint(str(run / "checkpoints")),
                                      "epoch/.ATTRIBUTES/VARIABLE_VALUE")) == 1


@pytest.mark.slow
def test_finetune_phases_freeze_what_they_say(tmp_path, capsys):
    """The bundled finetune recipe on VGG16 (32x32, 2 classes, one epoch per phase): phase 1
    changes no weight of the base, phase 2 changes only block5_conv1 and later."""
    import keras
    import tensorflow as tf

    import archspec

    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    from parity import randomize

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (64, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 2, 64)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    # pretrained weights as keras.applications ships them: a legacy .h5 keyed by layer name,
    # of the base only (the 1000-class head is not the 2-class one)
    ref = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    randomize(ref, seed=3)
    h5 = tmp_path / "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    with h5py.File(h5, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    run = tmp_path / "run"
    sets = ["--set", "input.shape=[32,32,3]", "--set", "head.classes=2"]
    rs = ["--recipe-set", "phases[0].epochs=1", "--recipe-set", "phases[1].epochs=1", "--recipe-set",
          "data={batch_size: 16, validation_split: 0.25, image_size: [32, 32]}", "--recipe-set",
          "callbacks.early_stopping=null"]
    # a *_notop file has no fc1/fc2: under the strict policy they are named to stay at init
    assert main(["train", "vgg16", "--recipe", "finetune", "--data", str(tmp_path / "d.npz"), "--out", str(run),
                 *sets, *rs, "--weights", str(h5), "--weights-skip", "fc?", "--json"]) == 0
    capsys.readouterr()
    graph = archspec.lower_spec("vgg16", ["input.shape=[32,32,3]", "head.classes=2"])
    initial = archspec.build(graph, seed=0)  # the recipe's seed: the run's initial head
    for layer in ref.layers:  # and the pretrained base
        if layer.weights:
            initial.get_layer(layer.name).set_weights(layer.get_weights())
    after1 = archspec.build(graph)
    tf.train.Checkpoint(model=after1).restore(str(run / "checkpoints" / "ckpt-1")).expect_partial()
    final = keras.models.load_model(run / "final.keras")
    names = [layer.name for layer in initial.layers if layer.weights]
    base = [n for n in names if n.startswith("block")]
    top = names[names.index("block5_conv1"):]

    def same(a, b, name):
        return all(np.array_equal(u, v) for u, v in zip(a.get_layer(name).get_weights(), b.get_layer(name).get_weights()))

    assert all(same(initial, after1, n) for n in base)
    assert not any(same(initial, after1, n) for n in ("fc1", "fc2", "predictions"))
    assert all(same(after1, final, n) for n in names if n not in top)
    assert not any(same(after1, final, n) for n in top)


@pytest.mark.slow
def test_googlenet_with_aux_trains_three_outputs_with_their_weights(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 255, (32, 96, 96, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, 32))
    run = tmp_path / "run"
    assert main(["train", "googlenet", "--recipe", "cifar100", "--data", str(tmp_path / "d.npz"), "--out", str(run),
                 "--set", "head.aux=true", "--set", "input.shape=[96,96,3]", "--set", "head.classes=10", "--epochs",
                 "1", "--batch-size", "16", "--recipe-set", "data.validation_split=0", "--recipe-set",
                 "augmentation={}", "--json"]) == 0
    capsys.readouterr()
    row = read_rows(run)[0]
    losses = {k: float(v) for k, v in row.items() if k.endswith("_loss")}
    assert len(losses) == 3, row
    main_loss = losses.pop("loss3_classifier_loss")
    total = main_loss + 0.3 * sum(losses.values())
    # Exact up to float32 sums: the main output weighs 1 (a dict of weights handed to Keras
    # 3.15 with these unsorted output names put the 1 on loss2_classifier: 2-4% off)
    assert float(row["loss"]) == pytest.approx(total, rel=1e-5)


def test_frozen_batch_norm_keeps_its_statistics_and_mixed_precision_trains(digits, tmp_path, capsys):
    """A frozen part's batch norm runs in inference mode: its moving statistics do not move
    while the rest trains; the same run under mixed_float16 (loss scaling) learns too."""
    import keras

    import archspec

    recipe = tmp_path / "r.yaml"
    recipe.write_text(QUICK.replace("epochs: 8", "phases: [{name: top, epochs: 2, freeze: {until: c2}}]"))
    for precision in ("float32", "mixed_float16"):
        run = tmp_path / precision
        assert main(["train", str(digits / "spec.yaml"), "--recipe", str(recipe), "--data", str(digits / "digits.npz"),
                     "--out", str(run), "--recipe-set", f"precision={precision}", "--json"]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["epochs_completed"] == 2 and metrics["val_top1"] > 0.5
        initial = archspec.build(str(digits / "spec.yaml"), seed=0)
        final = keras.models.load_model(run / "final.keras")
        for name in ("c1", "c1_bn"):  # frozen: weights and moving statistics as initialised
            for a, b in zip(initial.get_layer(name).get_weights(), final.get_layer(name).get_weights()):
                np.testing.assert_array_equal(a, b)
        moved = [not np.array_equal(a, b) for a, b in zip(initial.get_layer("c2_bn").get_weights(),
                                                          final.get_layer("c2_bn").get_weights())]
        assert all(moved)  # gamma, beta and both moving statistics of the trained part
    assert final.get_layer("c2").compute_dtype == "float16" and final.get_layer("predictions").dtype == "float32"
