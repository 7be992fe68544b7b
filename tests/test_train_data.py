"""The training data order: `epoch_order` is tf.data's shuffle-buffer algorithm drawn from
a generator seeded by (seed, epoch) alone, so a resumed run sees the order of an
uninterrupted one; and the pipeline built on it yields, per epoch, every training example
exactly once in that order (no TensorFlow needed for the first tests)."""

from __future__ import annotations

import pickle

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
    from archspec.core.errors import SpecError
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
    from archspec.core.errors import SpecError
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


# ---------------------------------------------------------------- hostile and broken data (issue 18, items 7, 8, 13)

BOUNDED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
from archspec.core.errors import SpecError
from archspec.training.data import open_source
try:
    src = open_source(sys.argv[1])
    print("OK", src.kind, src.classes)
except SpecError as exc:
    print("ERR", exc.one_line())
"""


def open_bounded(path) -> str:
    """open_source in a subprocess limited to 3 GiB of address space (a hostile file must
    not reach the test process's memory): its one line ("OK ..." or "ERR <message>")."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", BOUNDED, str(path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    return lines[0]


def _npy_member(header: dict, payload: bytes = b"") -> bytes:
    import io

    from numpy.lib import format as npy

    buf = io.BytesIO()
    npy.write_array_header_1_0(buf, header)
    return buf.getvalue() + payload


def test_npz_bounds_are_checked_before_anything_is_allocated(tmp_path):
    """Labels of 10**12 (no class names) made a list of 10**12 names; a header claiming
    (100000, 1000, 1000, 3) was a MemoryError traceback. Both are one located line, read in
    a process limited to 3 GiB."""
    import zipfile

    p = tmp_path / "huge_labels.npz"
    np.savez(p, x_train=np.zeros((2, 4, 4), "uint8"), y_train=np.array([0, 10**12]))
    assert open_bounded(p) == (f"ERR {p}: y_train[1] is 1000000000000: a label must be a class index < 1,048,576 "
                               f"(the most classes a head can have)")
    p = tmp_path / "huge_header.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x_train.npy", _npy_member({"descr": "|u1", "fortran_order": False,
                                               "shape": (100000, 1000, 1000, 3)}, b"\0" * 64))
        z.writestr("y_train.npy", _npy_member({"descr": "<i8", "fortran_order": False, "shape": (1,)}, b"\0" * 8))
    line = open_bounded(p)
    assert line.startswith(f"ERR {p}: x_train declares shape (100000, 1000, 1000, 3) of uint8: 279.4 GiB, more than"), line
    p = tmp_path / "short.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x_train.npy", _npy_member({"descr": "|u1", "fortran_order": False, "shape": (10, 4, 4)}, b"\0" * 9))
    assert "x_train is truncated: its header declares shape (10, 4, 4) of uint8 (160 bytes) but it holds 9" in open_bounded(p)


def test_cifar_declared_lengths_are_not_allocated(tmp_path):
    """A pickle's BINBYTES8 of length 2**62 was allocated before it was read (a MemoryError
    traceback): every declared length is checked against the bytes that follow it first."""
    import struct

    root = _cifar(tmp_path / "c", [0, 1])
    (root / "data_batch_2").write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"abc")
    line = open_bounded(root)
    assert line == (f"ERR {root / 'data_batch_2'}: not a CIFAR batch file: UnpicklingError: expected "
                    f"4611686018427387904 bytes in a bytes8, but only 3 remain"), line


def _npz_case(kind):
    x, y = np.zeros((3, 4, 4), "uint8"), np.array([0, 1, 2])
    arrays = {"x_train": x, "y_train": y}
    if kind == "nan labels":
        arrays["y_train"] = np.array([0, np.nan, 1])
    elif kind == "string labels":
        arrays["y_train"] = np.array(["a", "b", "c"])
    elif kind == "0-d class_names":
        arrays["class_names"] = np.array("cat")
    elif kind == "string pixels":
        arrays["x_train"] = np.full((3, 4, 4), "p")
    elif kind == "0x0 images":
        arrays["x_train"] = np.zeros((3, 0, 0), "uint8")
    elif kind == "2**63 labels":
        arrays["y_train"] = np.array([0, 2**63, 1], np.uint64)
    return arrays


@pytest.mark.parametrize("kind, message", [
    ("nan labels", "y_train must be integer class indices (N,) (got shape (3,), dtype float64)"),
    ("string labels", "y_train must be integer class indices (N,) (got shape (3,), dtype <U1)"),
    ("0-d class_names", "class_names must be a list of names (N,) (got shape (), dtype <U3)"),
    ("string pixels", "x_train must hold numbers (got dtype <U1)"),
    ("0x0 images", "x_train holds images of 0x0 pixels (got shape (3, 0, 0, 1)); an image needs at least one pixel"),
    ("2**63 labels", "y_train[1] is 9223372036854775808: a label must be a class index < 1,048,576 (the most "
                     "classes a head can have)"),
])
def test_broken_npz_contents_are_one_located_line(tmp_path, kind, message):
    from archspec.core.errors import SpecError
    from archspec.training.data import open_source

    p = tmp_path / "d.npz"
    np.savez(p, **_npz_case(kind))
    with pytest.raises(SpecError) as e:
        open_source(p)
    assert e.value.one_line() == f"{p}: {message}"


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage", "truncated"])
def test_empty_or_truncated_npz_files_are_one_located_line(tmp_path, content):
    """An empty file was an EOFError traceback, a truncated one a BadZipFile traceback."""
    from archspec.core.errors import SpecError
    from archspec.training.data import open_source

    p = tmp_path / "d.npz"
    if content == "truncated":
        np.savez(p, x_train=np.zeros((30, 8, 8), "uint8"), y_train=np.arange(30) % 3)
        content = p.read_bytes()[:-200]
    p.write_bytes(content)
    with pytest.raises(SpecError) as e:
        open_source(p)
    assert e.value.one_line().startswith(f"{p}: cannot read the .npz file: "), e.value.one_line()


def _write_pickle(path, obj, protocol=pickle.DEFAULT_PROTOCOL):
    import pickle

    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.mark.parametrize("case, message", [
    ("data above 255", "CIFAR data must be (N, 3072) bytes 0..255 (got shape (2, 3072), dtype int64, values 0..300)"),
    ("data as bytes", "CIFAR data must be (N, 3072) bytes 0..255 (got a bytes)"),
    ("data as str", "CIFAR data must be (N, 3072) bytes 0..255 (got a str)"),
    ("labels None", "labels must be integer class indices (N,) (got a NoneType)"),
    ("labels str", "labels must be integer class indices (N,) (got a str)"),
    ("labels NaN", "labels must be integer class indices (N,) (got shape (2,), dtype float64)"),
    ("labels 2**63", "labels[1] is 9223372036854775808: a label must be a class index < 1,048,576 (the most classes "
                     "a head can have)"),
    ("labels empty", "data has 2 images but labels 0 labels"),
    ("labels 2-D", "labels must be integer class indices (N,) (got shape (2, 2), dtype int64)"),
    ("ragged data", "CIFAR data must be (N, 3072) bytes 0..255 ("),
])
def test_broken_cifar_batches_are_one_located_line(tmp_path, case, message):
    from archspec.core.errors import SpecError
    from archspec.training.data import open_source

    root = _cifar(tmp_path / "c", [0, 1])
    data, labels = np.zeros((2, 3072), np.uint8), [0, 1]
    if case == "data above 255":
        data = np.zeros((2, 3072), np.int64)
        data[1, 5] = 300
    elif case == "data as bytes":
        data = b"\0" * 6144
    elif case == "data as str":
        data = "pixels"
    elif case == "ragged data":
        data = [[0] * 3072, [0] * 3]
    labels = {"labels None": None, "labels str": "01", "labels NaN": [0, float("nan")],
              "labels 2**63": np.array([0, 2**63], np.uint64),
              "labels empty": [], "labels 2-D": [[0, 1], [1, 0]]}.get(case, labels)
    _write_pickle(root / "data_batch_1", {b"data": data, b"labels": labels})
    with pytest.raises(SpecError) as e:
        open_source(root)
    assert e.value.one_line().startswith(f"{root / 'data_batch_1'}: {message}"), e.value.one_line()


@pytest.mark.parametrize("names, message", [
    (5, "label_names must be a list of class names (got int)"),
    (None, "label_names must be a list of class names (got NoneType)"),
    ("abc", "label_names must be a list of class names (got str)"),
    ([b"a", 3], "label_names must be a list of class names (got a list with items that are not text)"),
    ([b"a", b"a"], "label_names has 'a' more than once: class names must be distinct"),
])
def test_cifar_label_names_of_the_wrong_type_are_refused(tmp_path, names, message):
    from archspec.core.errors import SpecError
    from archspec.training.data import open_source

    root = _cifar(tmp_path / "c", [0, 1])
    _write_pickle(root / "batches.meta", {b"label_names": names})
    with pytest.raises(SpecError) as e:
        open_source(root)
    assert e.value.one_line() == f"{root / 'batches.meta'}: {message}"


def test_the_cifar_unpickler_takes_protocol_2_bytes_and_refuses_the_rest(tmp_path):
    """Python 3 writes bytes in protocol 2 as `_codecs.encode(text, 'latin1')` (and b'' as
    `bytes()`): such a CIFAR directory was refused, though harmless. Exactly that use is
    allowed; a dtype('os.'), a call of os.system or of _codecs.encode to another codec, and a
    bytes(2**40) are still refused, naming the file."""
    from archspec.core.errors import SpecError
    from archspec.training.data import open_source

    root = tmp_path / "p2"
    root.mkdir()
    data = np.arange(3 * 3072).reshape(3, 3072).astype(np.uint8)
    _write_pickle(root / "data_batch_1", {b"data": data, b"labels": [0, 1, 2], b"batch_label": b""}, protocol=2)
    _write_pickle(root / "batches.meta", {b"label_names": [b"cat", b"dog", b"\xc3\xa9lan"]}, protocol=2)
    assert b"_codecs" in (root / "batches.meta").read_bytes()  # what made it refused before
    src = open_source(root)
    assert src.class_names == ["cat", "dog", "\u00e9lan"] and src.x_train.shape == (3, 32, 32, 3)
    assert np.array_equal(src.x_train[1].transpose(2, 0, 1).reshape(-1), data[1])

    def refused(payload: bytes, words: str):
        (root / "data_batch_1").write_bytes(payload)
        with pytest.raises(SpecError) as e:
            open_source(root)
        line = e.value.one_line()
        assert line.startswith(f"{root / 'data_batch_1'}: not a CIFAR batch file: UnpicklingError: ") and words in line, line

    refused(b"\x80\x02cnumpy\ndtype\nX\x03\x00\x00\x00os.\x85R.", "refused: numpy.dtype('os.')")
    refused(b"\x80\x02cos\nsystem\nX\x04\x00\x00\x00true\x85R.", "refused to construct os.system")
    refused(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.", "_codecs.encode other than")
    refused(b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.", "bytes() with arguments")


def _png_with_garbage_idat(path):
    """A PNG whose chunks all have valid CRCs but whose image data is not zlib."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"garbage, not zlib")
                     + chunk(b"IEND", b""))


def test_images_pil_accepts_but_tensorflow_cannot_decode_are_all_reported(tmp_path):
    """A TIFF named .png, a truncated JPEG and a PNG with valid CRCs but garbage image data
    pass PIL's check and failed mid-epoch with InvalidArgumentError. The check decodes with
    training's decoder and names every bad file in one message."""
    from PIL import Image

    from archspec.core.errors import SpecError
    from archspec.training.data import open_source

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / c / f"ok{i}.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a" / "tiff.png", format="TIFF")
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "b" / "cut.jpg", quality=90)
    jpeg = (tmp_path / "b" / "cut.jpg").read_bytes()
    (tmp_path / "b" / "cut.jpg").write_bytes(jpeg[:len(jpeg) // 2])
    _png_with_garbage_idat(tmp_path / "b" / "idat.png")
    for f in ("a/tiff.png", "b/cut.jpg", "b/idat.png"):
        with Image.open(tmp_path / f) as im:
            im.verify()  # what the check used to ask
    with pytest.raises(SpecError) as e:
        open_source(tmp_path)
    line = e.value.one_line()
    assert line.startswith(f"{tmp_path}: 3 of 9 images cannot be read by training's decoder: a/tiff.png "
                           f"(TensorFlow cannot decode it: Unknown image file format"), line
    assert "; b/cut.jpg (TensorFlow cannot decode it: " in line and "; b/idat.png (TensorFlow cannot decode it" in line
    for f in ("a/tiff.png", "b/cut.jpg"):
        (tmp_path / f).unlink()
    with pytest.raises(SpecError) as e:
        open_source(tmp_path)
    assert e.value.one_line().startswith(f"{tmp_path / 'b' / 'idat.png'}: unreadable image: TensorFlow cannot decode")
    (tmp_path / "b" / "idat.png").unlink()
    assert open_source(tmp_path).train_size == 6


def test_gif_and_bmp_images_feed_a_one_channel_network(tmp_path):
    """TensorFlow's GIF and BMP decoders refuse channels=1: a grayscale network on a folder
    of GIFs failed mid-epoch. The decoder reads them as stored and converts."""
    from PIL import Image

    from archspec.training.data import _decoder

    img = np.random.default_rng(1).integers(0, 256, (5, 6), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "g.gif")
    Image.fromarray(img).save(tmp_path / "g.bmp")
    Image.fromarray(np.stack([img] * 3, -1)).save(tmp_path / "rgb.bmp")
    for f in ("g.gif", "g.bmp", "rgb.bmp"):
        one = _decoder(1, (5, 6))(str(tmp_path / f)).numpy()
        three = _decoder(3, (5, 6))(str(tmp_path / f)).numpy()
        assert one.shape == (5, 6, 1) and three.shape == (5, 6, 3)
        np.testing.assert_allclose(one[..., 0], img, atol=1.0)
        np.testing.assert_allclose(three, np.stack([img] * 3, -1), atol=1.0)


@pytest.mark.parametrize("n, split, held", [(1, 0.5, 1), (24, 0.999999, 24)])
def test_a_validation_split_leaving_nothing_to_train_on_is_refused(tmp_path, n, split, held):
    """`data.validation_split=0.5` on 1 image (0.999999 on 24) left no training example and
    training waited for a first batch forever, ignoring SIGTERM. Refused before the run
    directory (a subprocess with a timeout guards against the hang)."""
    import subprocess
    import sys

    (tmp_path / "r.yaml").write_text(f"format: 1\nname: r\nepochs: 1\ndata: {{validation_split: {split}}}\n"
                                     f"callbacks: {{tensorboard: null}}\n")
    (tmp_path / "s.yaml").write_text("format: 1\nname: s\ninput: {shape: [4, 4, 1]}\nhead:\n  classes: 2\n  layers: "
                                     "[{type: global_pool, name: pool}, {type: classifier, name: predictions}]\n")
    np.savez(tmp_path / "d.npz", x_train=np.zeros((n, 4, 4), "uint8"), y_train=np.arange(n) % 2)
    r = subprocess.run([sys.executable, "-m", "archspec.cli", "train", str(tmp_path / "s.yaml"), "--recipe",
                        str(tmp_path / "r.yaml"), "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=300)
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1, err
    assert err == (f"{tmp_path / 'd.npz'}: data.validation_split={split:g} of {n} training image{'s' if n > 1 else ''} "
                   f"holds out {held} for validation and leaves 0 to train on; at least one of each is needed (lower "
                   f"data.validation_split or give more images)")
    assert not (tmp_path / "run").exists()
