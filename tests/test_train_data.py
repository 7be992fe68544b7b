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
