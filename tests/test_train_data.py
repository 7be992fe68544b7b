"""The training data order: `epoch_order` is tf.data's shuffle-buffer algorithm drawn from
a generator seeded by (seed, epoch) alone, so a resumed run sees the order of an
uninterrupted one; and the pipeline built on it yields, per epoch, every training example
exactly once in that order (no TensorFlow needed for the first tests)."""

from __future__ import annotations

import numpy as np
import pytest

from archspec.training.data import epoch_order


@pytest.mark.parametrize("buffer", [2, 7, 100, 10_000])
def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch(buffer):
    idx = np.arange(100) * 3
    a = epoch_order(idx, buffer, seed=5, epoch=2)
    assert sorted(a) == sorted(idx)
    assert np.array_equal(a, epoch_order(idx, buffer, seed=5, epoch=2))  # a pure function of (seed, epoch)
    assert not np.array_equal(a, epoch_order(idx, buffer, seed=5, epoch=3))
    assert not np.array_equal(a, epoch_order(idx, buffer, seed=6, epoch=2))
    assert not np.array_equal(a, idx)


@pytest.mark.parametrize("buffer", [0, 1])
def test_a_buffer_of_one_keeps_the_data_order(buffer):
    idx = np.array([4, 2, 9, 1])
    assert np.array_equal(epoch_order(idx, buffer, seed=0, epoch=7), idx)


def test_a_small_buffer_only_reaches_that_far_ahead():
    """Position i can only hold one of the first i + buffer examples (what a shuffle buffer
    means), and a buffer as large as the data reaches everywhere."""
    n, b = 1000, 10
    order = epoch_order(np.arange(n), b, seed=1, epoch=0)
    assert all(order[i] < i + b for i in range(n))
    full = epoch_order(np.arange(n), n, seed=1, epoch=0)
    assert max(full[i] - i for i in range(n)) > n // 2


def test_the_training_stream_is_each_epoch_once_in_its_order():
    """`Pipelines.train_from(e)`: per epoch every example once, in `epoch_order`'s order for
    that epoch, batches never spanning two epochs (the last one short); starting at epoch 3
    gives what the stream from epoch 0 gives from its fourth epoch on."""
    from archspec.training.data import Source, datasets
    from archspec.training.recipe import load_recipe

    n, batch, classes = 10, 4, 3
    x = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1) * np.ones((1, 2, 2, 1), np.uint8)
    src = Source("npz", "mem.npz", [str(k) for k in range(classes)], x, np.arange(n) % classes)
    recipe, _ = load_recipe("cifar100", ["data.validation_split=0", "data.shuffle_buffer=4", "augmentation={}"])
    pipes = datasets(src, recipe, (2, 2), 1, classes, 1, batch, seed=3)
    assert pipes.steps_per_epoch == 3 and pipes.val is None

    def epochs(start, count):
        it = iter(pipes.train_from(start))
        out = []
        for _ in range(count):
            batches = [next(it) for _ in range(pipes.steps_per_epoch)]
            assert [len(b[0]) for b in batches] == [4, 4, 2]
            ids = np.concatenate([b[0].numpy()[:, 0, 0, 0] for b in batches]).astype(int)
            labels = np.concatenate([b[1].numpy().argmax(-1) for b in batches])
            assert np.array_equal(labels, ids % classes)  # images and labels stay paired
            out.append(ids)
        return out

    from_zero = epochs(0, 5)
    for e, ids in enumerate(from_zero):
        assert np.array_equal(ids, epoch_order(np.arange(n), 4, 3, e))
    assert all(np.array_equal(a, b) for a, b in zip(epochs(3, 2), from_zero[3:]))
    assert not np.array_equal(from_zero[0], from_zero[1])


def test_an_image_folder_gives_the_same_batches_decoded_per_batch_or_cached(tmp_path):
    """The two folder paths: files decoded within each batch's map, and `data.cache` (all
    decoded into memory first, then gathered); resized to the fed size either way."""
    from PIL import Image

    from archspec.training.data import datasets, open_source
    from archspec.training.recipe import load_recipe

    rng = np.random.default_rng(0)
    for k in range(3):
        (tmp_path / f"c{k}").mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (6 + i, 5, 3), dtype=np.uint8)).save(tmp_path / f"c{k}" / f"{i}.png")
    src = open_source(tmp_path)
    said = []
    got = {}
    for cache in (False, True):
        recipe, _ = load_recipe("cifar100", ["data.validation_split=0.25", f"data.cache={str(cache).lower()}",
                                             "augmentation={}"])
        pipes = datasets(src, recipe, (4, 4), 3, 3, 1, 5, seed=1, say=said.append)
        it = iter(pipes.train_from(0))
        train = [next(it) for _ in range(pipes.steps_per_epoch)]
        val = list(pipes.val)
        got[cache] = [(b[0].numpy(), b[1].numpy()) for b in train + val]
        assert pipes.train_size == 9 and pipes.val_size == 3
    assert [x.shape for x, _ in got[False]] == [(5, 4, 4, 3), (4, 4, 4, 3), (3, 4, 4, 3)]
    for (xa, ya), (xb, yb) in zip(got[False], got[True]):
        np.testing.assert_allclose(xa, xb, atol=1e-4)
        np.testing.assert_array_equal(ya, yb)
    assert any("decoding 12 images into memory" in m for m in said)


# ---------------------------------------------------------------- the one data check


def _cifar(root, labels, data=None):
    """A CIFAR-10 python directory with one training batch of `labels`."""
    import pickle

    root.mkdir()
    n = len(labels)
    data = np.zeros((n, 3072), np.uint8) if data is None else data
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": data, b"labels": list(labels)}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [f"c{k}".encode() for k in range(10)]}, f)
    return root


def test_negative_or_non_integer_cifar_labels_are_refused_by_name(tmp_path):
    from archspec.errors import SpecError
    from archspec.training.data import open_source

    with pytest.raises(SpecError) as e:
        open_source(_cifar(tmp_path / "neg", [0, 1, 2, -1, 4]))
    assert e.value.one_line() == f"{tmp_path / 'neg' / 'data_batch_1'}: labels[3] is -1: a label must be a class index >= 0"
    with pytest.raises(SpecError, match=r"labels must be integer class indices"):
        open_source(_cifar(tmp_path / "float", [0, 1.5, 2]))
    with pytest.raises(SpecError, match=r"data has 3 images but labels 2 labels"):
        open_source(_cifar(tmp_path / "short", [0, 1], np.zeros((3, 3072), np.uint8)))


@pytest.mark.parametrize("key, bad", [("x_train", np.nan), ("x_test", np.inf)])
def test_nan_or_infinite_pixels_are_refused_by_image(tmp_path, key, bad):
    from archspec.errors import SpecError
    from archspec.training.data import open_source

    arrays = {"x_train": np.ones((6, 4, 4), "float32"), "y_train": np.arange(6) % 3,
              "x_test": np.ones((3, 4, 4, 1), "float32"), "y_test": np.arange(3)}
    arrays[key][2 if key == "x_train" else 1, 1, 2] = bad
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(SpecError) as e:
        open_source(tmp_path / "d.npz")
    i = 2 if key == "x_train" else 1
    assert e.value.one_line() == f"{tmp_path / 'd.npz'}: {key}[{i}] has NaN or infinite pixel values"
    arrays[key][...] = 1
    arrays["y_train"] = np.array([0, 1, 2, 0, -3, 1])
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(SpecError, match=r"y_train\[4\] is -3"):
        open_source(tmp_path / "d.npz")


def test_bad_cifar_labels_stop_training_before_the_run_directory(tmp_path, capsys):
    from archspec.cli import main

    data = _cifar(tmp_path / "cifar", [0, 1, -2, 3])
    code = main(["train", "cifar100_cnn", "--recipe", "cifar100", "--set", "head.classes=10", "--data", str(data),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "labels[2] is -2" in err, err
    assert not (tmp_path / "run").exists()


def test_every_source_goes_through_the_one_check(tmp_path, monkeypatch):
    """npz, CIFAR and image folder: the same function checks labels and images."""
    from PIL import Image

    from archspec.training import data

    seen = []
    real = data.check_examples

    def spy(where, *args, **kwargs):
        seen.append(str(where))
        return real(where, *args, **kwargs)
    monkeypatch.setattr(data, "check_examples", spy)
    np.savez(tmp_path / "d.npz", x_train=np.zeros((2, 4, 4), "uint8"), y_train=np.array([0, 1]))
    data.open_source(tmp_path / "d.npz")
    data.open_source(_cifar(tmp_path / "cifar", [0, 1]))
    (tmp_path / "folder" / "a").mkdir(parents=True)
    Image.new("L", (4, 4)).save(tmp_path / "folder" / "a" / "x.png")
    data.open_source(tmp_path / "folder")
    assert seen == [str(tmp_path / "d.npz"), str(tmp_path / "cifar" / "data_batch_1"), str(tmp_path / "folder")]
