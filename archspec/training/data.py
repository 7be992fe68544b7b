"""Training data, read from disk only (never downloaded): an image folder with one
sub-folder per class, the CIFAR-10/100 python-pickle directories as distributed, or an
`.npz` with ``x_train, y_train, x_test, y_test``. Everything is checked before training
starts (a missing folder, an empty class, an unreadable image named by its file, labels
out of range, images a fixed-input spec cannot take) and each problem is one located
error (exit 2). `datasets` turns the data into `tf.data` pipelines (parallel decode,
augmentation, prefetch); the rest of this module needs no TensorFlow.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import Location, SpecError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class Source:
    """What was found at `--data PATH`: in-memory arrays (npz, CIFAR) or image files."""

    kind: str  # "folder", "cifar", "npz"
    path: str
    class_names: list[str]
    x_train: np.ndarray | None = None  # (N, H, W, C) uint8/float
    y_train: np.ndarray | None = None  # (N,) int
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    files: list[str] = field(default_factory=list)  # folder: image paths
    labels: list[int] = field(default_factory=list)  # folder: their labels
    named: bool = True  # class_names are the data's own (folder names, CIFAR meta, an npz's class_names),
    # not the indices an npz without class_names is given ("0", "1", ...)

    @property
    def classes(self) -> int:
        return len(self.class_names)

    @property
    def train_size(self) -> int:
        return len(self.files) if self.kind == "folder" else len(self.y_train)


def _bad(message: str, where: str | os.PathLike) -> SpecError:
    return SpecError(message, Location(str(where)))


def open_source(path: str | os.PathLike) -> Source:
    """Find and check the data at `path` (no TensorFlow)."""
    p = Path(path)
    if not p.exists():
        raise _bad("no such file or directory", p)
    if p.is_file():
        if p.suffix != ".npz":
            raise _bad("expected an image folder, a CIFAR directory or an .npz file", p)
        return _npz(p)
    if (p / "batches.meta").is_file() or (p / "meta").is_file():
        return _cifar(p)
    return _folder(p)


def _npz(p: Path) -> Source:
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise _bad(f"cannot read the .npz file: {exc}", p) from None
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        raise _bad(f"the .npz has no {', '.join(missing)} (it holds {', '.join(arrays) or 'nothing'}); expected "
                   f"x_train, y_train and optionally x_test, y_test", p)
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise _bad("the .npz has only one of x_test and y_test (give both or neither)", p)
    x_train, y_train = check_examples(p, arrays["y_train"], "y_train", arrays["x_train"], "x_train")
    x_test, y_test = (check_examples(p, arrays["y_test"], "y_test", arrays["x_test"], "x_test")
                      if "x_test" in arrays else (None, None))
    if len(x_train) == 0:
        raise _bad("no training images (x_train is empty)", p)
    names = arrays.get("class_names")
    ys = [y for y in (y_train, y_test) if y is not None and y.size]
    n = int(max(int(y.max()) for y in ys) + 1) if ys else 0
    if names is not None and (names.ndim != 1 or len(names) < n or len(set(map(str, names))) != len(names)):
        raise _bad(f"class_names must be distinct names, one per class 0..{n - 1} (got shape {names.shape}"
                   f"{', with repeats' if names.ndim == 1 and len(set(map(str, names))) != len(names) else ''})", p)
    class_names = [str(c) for c in names] if names is not None else [str(k) for k in range(n)]
    return Source("npz", str(p), class_names, x_train, y_train, x_test, y_test, named=names is not None)


def check_examples(where: str | os.PathLike, labels, labels_key: str, images=None, images_key: str = "images",
                   files: list[str] | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """The one check of training/evaluation examples, whatever their source (.npz, CIFAR
    batch, image folder): labels are integer class indices >= 0, one per image; images
    are (N, H, W) or (N, H, W, 1 or 3) arrays of numbers, every pixel finite (NaN or
    infinity would train without a word), or image files a decoder can read. A problem is a
    located error naming the file and the label or image (``y_train[17]``).

    Args:
        where: the file the examples come from (the .npz, the CIFAR batch, the folder).
        labels: the labels; labels_key: their name in messages (``y_train``, ``labels``).
        images: an image array; images_key: its name in messages (``x_train``, ``data``).
        files: image files instead of an array (an image folder).

    Returns:
        (images with a channel axis, or None for files; labels as int64 (N,)).
    """
    y = np.asarray(labels)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise _bad(f"{labels_key} must be integer class indices (N,) (got shape {y.shape}, dtype {y.dtype})", where)
    if y.size and y.min() < 0:
        i = int(np.argmax(y < 0))
        raise _bad(f"{labels_key}[{i}] is {int(y[i])}: a label must be a class index >= 0", where)
    y = y.astype("int64")
    x = None
    if images is not None:
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise _bad(f"{images_key} must be images (N, H, W) or (N, H, W, 1 or 3) (got shape {x.shape})", where)
        if x.dtype.kind not in "uif":
            raise _bad(f"{images_key} must hold numbers (got dtype {x.dtype})", where)
        if x.dtype.kind == "f":
            for start in range(0, len(x), 1024):  # a chunk at a time: no copy of the whole array
                bad = ~np.isfinite(x[start:start + 1024]).reshape(min(1024, len(x) - start), -1).all(axis=1)
                if bad.any():
                    i = start + int(np.argmax(bad))
                    raise _bad(f"{images_key}[{i}] has NaN or infinite pixel values", where)
        n_images = len(x)
    else:
        n_images = len(files or [])
        if files:
            _check_images(files)
    if n_images != len(y):
        what = images_key if images is not None else "images"
        raise _bad(f"{what} has {n_images} images but {labels_key} {len(y)} labels", where)
    return x, y


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's pickles hold dicts of lists, bytes and numpy arrays: nothing else is
    constructed (a pickle naming any other callable is refused, not run)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to construct {module}.{name}")


def _unpickle(f: Path) -> dict:
    try:
        with open(f, "rb") as fh:
            d = _ArraysOnly(fh, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise _bad(f"not a CIFAR batch file: {exc}", f) from None
    if not isinstance(d, dict):
        raise _bad("not a CIFAR batch file (not a dict)", f)
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar(p: Path) -> Source:
    """CIFAR-10 (`data_batch_1..5`, `test_batch`, `batches.meta`) or CIFAR-100
    (`train`, `test`, `meta`, fine labels)."""
    if (p / "batches.meta").is_file():
        meta, label_key, names_key = _unpickle(p / "batches.meta"), "labels", "label_names"
        train_files = sorted(p.glob("data_batch_*"))
        test_files = [p / "test_batch"] if (p / "test_batch").is_file() else []
    else:
        meta, label_key, names_key = _unpickle(p / "meta"), "fine_labels", "fine_label_names"
        train_files = [p / "train"] if (p / "train").is_file() else []
        test_files = [p / "test"] if (p / "test").is_file() else []
    if not train_files:
        raise _bad("a CIFAR directory without training batches (data_batch_* or train)", p)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(names_key, [])]

    def read(files):
        xs, ys = [], []
        for f in files:
            d = _unpickle(f)
            if "data" not in d or label_key not in d:
                raise _bad(f"not a CIFAR batch file (no 'data' or '{label_key}')", f)
            x = np.asarray(d["data"])
            if x.ndim != 2 or x.shape[1] != 3072 or x.dtype.kind not in "iu" or (
                    x.size and (x.min() < 0 or x.max() > 255)):
                raise _bad(f"CIFAR data must be (N, 3072) bytes 0..255 (got shape {x.shape}, dtype {x.dtype})", f)
            x = x.astype(np.uint8, copy=False)
            x, y = check_examples(f, d[label_key], label_key, x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1),
                                  "data")
            xs.append(x)
            ys.append(y)
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = read(train_files)
    x_test, y_test = read(test_files) if test_files else (None, None)
    if len(x_train) == 0:
        raise _bad("no training images (the training batches are empty)", p)
    named = bool(names)
    n = int(max(y_train.max(), y_test.max() if y_test is not None and y_test.size else 0)) + 1
    if len(names) < n:
        names = names + [str(k) for k in range(len(names), n)]
    return Source("cifar", str(p), names, x_train, y_train, x_test, y_test, named=named)


def _folder(p: Path) -> Source:
    classes = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise _bad("no class folders: expected one sub-folder of images per class", p)
    files, labels = [], []
    for k, c in enumerate(classes):
        imgs = sorted(f for f in (p / c).rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not imgs:
            raise _bad(f"class {c!r} has no images ({', '.join(IMAGE_SUFFIXES)})", p / c)
        files += [str(f) for f in imgs]
        labels += [k] * len(imgs)
    check_examples(p, np.asarray(labels, np.int64), "labels", files=files)
    return Source("folder", str(p), classes, files=files, labels=labels)


def _check_images(files: list[str]) -> None:
    """Every file must be an image a decoder can read: checked now, naming the file, rather
    than as a decode error in the middle of an epoch."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return
    for f in files:
        try:
            with Image.open(f) as im:
                im.verify()
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise _bad(f"unreadable image: {type(exc).__name__}: {exc}", f) from None


def check_against_spec(src: Source, classes: int, spec_shape: tuple, image_size: tuple | None,
                       fixed_input: str | None) -> tuple[int, int]:
    """The (height, width) images are fed at; errors when the data cannot train the spec.

    Args:
        src: the data.
        classes: the spec's classifier width (head.classes).
        spec_shape: the spec's input (H, W, C).
        image_size: the recipe's data.image_size, if any.
        fixed_input: the name of a layer that fixes the input size (a flatten), if any.
    """
    ys = [src.y_train if src.kind != "folder" else np.asarray(src.labels)]
    if src.y_test is not None:
        ys.append(src.y_test)
    top = max(int(y.max()) for y in ys)
    if top >= classes:
        raise _bad(f"labels go up to {top} but the spec's head has {classes} classes; pass --set "
                   f"head.classes={max(top + 1, src.classes)}", src.path)
    size = tuple(image_size) if image_size else tuple(spec_shape[:2])
    if fixed_input and size != tuple(spec_shape[:2]):
        raise _bad(f"the spec takes {spec_shape[0]}x{spec_shape[1]} images only ({fixed_input!r} fixes its input "
                   f"size) but data.image_size is {size[0]}x{size[1]}", src.path)
    return size


# ---------------------------------------------------------------- tf.data


@dataclass
class Pipelines:
    train_from: object  # epoch -> the training batches from that epoch on (endless)
    val: object | None
    steps_per_epoch: int
    train_size: int
    val_size: int


def split(src: Source, validation_split: float, seed: int):
    """Train/validation index split: the data's own test set when it has one and no split
    is asked for, else a seeded random split of the training data."""
    n = src.train_size
    if validation_split > 0:
        idx = np.random.default_rng(seed).permutation(n)
        k = max(1, int(round(n * validation_split)))
        return idx[k:], idx[:k], "split"
    return np.arange(n), None, "test" if src.x_test is not None else "none"


def epoch_order(indices: np.ndarray, buffer: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the training examples in one epoch: tf.data's shuffle-buffer algorithm
    (hold `buffer` examples, emit a random one, refill from the stream; a buffer as large as
    the data is a full permutation), drawn from a generator seeded by (seed, epoch) alone.
    So a resumed run, or a fresh iterator under a distribution strategy, sees exactly the
    order of an uninterrupted run. `buffer` 0 or 1: the given order."""
    n = len(indices)
    if buffer <= 1 or n <= 1:
        return np.asarray(indices)
    rng = np.random.default_rng([seed % 2**32, epoch])
    if buffer >= n:
        return rng.permutation(indices)
    out = np.empty(n, dtype=np.asarray(indices).dtype)
    held = np.array(indices[:buffer])
    for i, j in enumerate(rng.integers(0, buffer, n - buffer)):
        out[i] = held[j]
        held[j] = indices[buffer + i]
    out[n - buffer:] = rng.permutation(held)
    return out


def _decoder(channels: int, size: tuple[int, int]):
    """image file path -> float32 (H, W, channels) at `size` (graph code, for tf.data)."""
    import tensorflow as tf

    def load(f):
        img = tf.io.decode_image(tf.io.read_file(f), channels=channels, expand_animations=False)
        img.set_shape([None, None, channels])
        img = tf.cast(img, tf.float32)
        return img if tuple(img.shape[:2]) == tuple(size) else tf.image.resize(img, size)
    return load


def _converter(channels: int, size: tuple[int, int]):
    """images of an in-memory array (a batch or one) -> float32 with `channels` at `size`."""
    import tensorflow as tf

    def to_float(img):
        img = tf.cast(img, tf.float32)
        if img.shape[-1] != channels:
            img = tf.image.grayscale_to_rgb(img) if channels == 3 else tf.image.rgb_to_grayscale(img)
        if tuple(img.shape[-3:-1]) != tuple(size):
            img = tf.image.resize(img, size)
        return img
    return to_float


def decode_all(files: list[str], channels: int, size: tuple[int, int], say=lambda m: None) -> np.ndarray:
    """Every image of `files` decoded, at `size`, into one float32 array (`data.cache`)."""
    import tensorflow as tf

    say(f"data.cache: decoding {len(files):,} images into memory "
        f"({len(files) * size[0] * size[1] * channels * 4 / 2**20:,.0f} MiB)")
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(files)).map(_decoder(channels, size),
                                                                    num_parallel_calls=tf.data.AUTOTUNE)
    return np.concatenate([b.numpy() for b in ds.batch(256)])  # a folder has images (checked when read)


def datasets(src: Source, recipe, size: tuple[int, int], channels: int, classes: int, outputs: int,
             global_batch: int, seed: int, augment=None, say=lambda m: None) -> Pipelines:
    """`tf.data` pipelines. Training: per epoch, the example indices shuffled with that
    epoch's own seed (`epoch_order`) and batched (a batch never spans two epochs); then a
    batch is gathered from the in-memory arrays, or its files decoded in parallel, and
    converted in one vectorized map (float32, one-hot labels, one copy per model output,
    augmentation); prefetch. Shuffling indices rather than images keeps the shuffle buffer
    small whatever the image size. `Pipelines.train_from(epoch)` is the stream of batches
    from that epoch on, so its order does not depend on how many iterators came before.

    Args:
        src: the data.
        recipe: the recipe (its `data` section).
        size: (height, width) the images are fed at.
        channels: the model's input channels (grayscale and RGB are converted).
        classes: the classifier's width (labels are one-hot of that width).
        outputs: the model's outputs (GoogLeNet with aux classifiers: 3).
        global_batch: the batch over all replicas.
        seed: shuffling and the validation split.
        augment: a function (images, one-hot labels) -> (images, labels) for training
            batches, or None.
        say: progress messages (the decoding of `data.cache`).
    """
    import tensorflow as tf

    d = recipe.data
    tr, va, val_kind = split(src, d.validation_split, seed)
    AUTOTUNE = tf.data.AUTOTUNE
    to_float = _converter(channels, size)

    def finish(train: bool):
        """One vectorized map over each batch: one-hot labels, augmentation, output copies."""
        def f(images, y):
            oh = tf.one_hot(y, classes)
            if train and augment is not None:
                images, oh = augment(images, oh)
            return images, (tuple([oh] * outputs) if outputs > 1 else oh)
        return f

    if src.kind == "folder" and d.cache:  # decoded once, then the in-memory path
        x_all, y_all = decode_all(src.files, channels, size, say), np.asarray(src.labels, np.int64)
    elif src.kind == "folder":
        x_all, y_all = None, np.asarray(src.labels, np.int64)
    else:
        x_all, y_all = src.x_train, src.y_train

    consts: dict[int, object] = {}  # one tensor per array, shared by training and validation

    def const(a):
        if id(a) not in consts:
            consts[id(a)] = tf.constant(a)
        return consts[id(a)]

    def gatherer(x, y):
        """a batch of indices -> (float32 images, integer labels)."""
        yt = const(y)
        if x is None:  # image files, decoded in parallel within the batch's map
            files, load = const(src.files), _decoder(channels, size)
            spec = tf.TensorSpec((*size, channels), tf.float32)
            return lambda i: (tf.map_fn(load, tf.gather(files, i), fn_output_signature=spec), tf.gather(yt, i))
        xt = const(x)
        return lambda i: (to_float(tf.gather(xt, i)), tf.gather(yt, i))

    def train_from(epoch: int):
        def order(e):
            return epoch_order(tr, d.shuffle_buffer, seed, int(e)).astype(np.int64)

        def one_epoch(e):
            idx = tf.ensure_shape(tf.numpy_function(order, [e], tf.int64, stateful=False), [len(tr)])
            return tf.data.Dataset.from_tensor_slices(idx).batch(global_batch)
        ds = tf.data.Dataset.range(epoch, 2**62).flat_map(one_epoch)  # endless: fit's steps_per_epoch ends epochs
        post, grab = finish(True), gatherer(x_all, y_all)
        return ds.map(lambda i: post(*grab(i)), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)

    def fixed(indices=None, arrays=None):
        """Validation: one pass in order."""
        x, y = arrays if arrays is not None else (x_all, y_all)
        n = len(y) if indices is None else len(indices)
        grab, post = gatherer(x, y), finish(False)
        ds = tf.data.Dataset.from_tensor_slices(np.arange(n) if indices is None else indices).batch(global_batch)
        return ds.map(lambda i: post(*grab(i)), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE), n

    if va is not None:
        val, n_val = fixed(indices=va)
    elif val_kind == "test":
        val, n_val = fixed(arrays=(src.x_test, src.y_test))
    else:
        val, n_val = None, 0
    return Pipelines(train_from, val, steps(len(tr), global_batch), len(tr), n_val)


def evaluation_dataset(src: Source, size, channels: int, classes: int, batch: int, relabel: np.ndarray | None = None):
    """The data to evaluate on: the test set when the data has one, else all of it; as
    (dataset of (images, one-hot labels), integer labels in order). `relabel` maps each
    label of the data to the model's class index (classes matched by name)."""
    import tensorflow as tf

    if src.kind == "folder":
        ys = np.asarray(src.labels, np.int64)
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(src.files)).map(_decoder(channels, size),
                                                                            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        x, ys = (src.x_test, src.y_test) if src.x_test is not None else (src.x_train, src.y_train)
        ds = tf.data.Dataset.from_tensor_slices(x).map(_converter(channels, size), num_parallel_calls=tf.data.AUTOTUNE)
    if relabel is not None:
        ys = np.asarray(relabel)[ys]
    labels = tf.data.Dataset.from_tensor_slices(tf.one_hot(ys, classes))
    return tf.data.Dataset.zip((ds, labels)).batch(batch).prefetch(tf.data.AUTOTUNE), np.asarray(ys)


def steps(n: int, batch: int) -> int:
    return max(1, -(-n // batch))
