"""Training data, read from disk only (never downloaded): an image folder with one
sub-folder per class, the CIFAR-10/100 python-pickle directories as distributed, or an
`.npz` with ``x_train, y_train, x_test, y_test``. Everything is checked before training
starts (a missing folder, an empty class, an unreadable image named by its file, labels
out of range, images a fixed-input spec cannot take) and each problem is one located
error (exit 2). `datasets` turns the data into `tf.data` pipelines (parallel decode,
augmentation, prefetch); the rest of this module needs no TensorFlow.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import Location, SpecError
from ..language.common import MAX_COUNT

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
# Bounds, checked before anything is allocated (issue 18): a data set has at most MAX_CLASSES
# classes (the largest head.classes a spec can have); an image file at most MAX_IMAGE_PIXELS
# pixels (read from its header before it is decoded); the arrays of an .npz or a CIFAR
# directory, as their headers and file sizes declare them, at most half the memory this
# process may use (`memory_limit`).
MAX_CLASSES = MAX_COUNT
MAX_IMAGE_PIXELS = 1 << 26  # 67,108,864: 8192 x 8192


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
    """Find and check the data at `path` (TensorFlow only to decode an image folder's files)."""
    p = Path(path)
    kind = source_kind(p)
    return _npz(p) if kind == "npz" else _cifar(p) if kind == "cifar" else _folder(p)


def source_kind(p: Path) -> str:
    """What `open_source` reads at `p`: "npz", "cifar" or "folder"; a missing path or a file
    that is not an .npz is an error."""
    if not p.exists():
        raise _bad("no such file or directory", p)
    if p.is_file():
        if p.suffix != ".npz":
            raise _bad("expected an image folder, a CIFAR directory or an .npz file", p)
        return "npz"
    if (p / "batches.meta").is_file() or (p / "meta").is_file():
        return "cifar"
    return "folder"


def memory_limit() -> int:
    """Bytes the arrays of a data set may take: half of this machine's memory, or of the
    process's address-space limit (RLIMIT_AS) when that is lower."""
    total = 1 << 40
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - not POSIX
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY and soft > 0:
            total = min(total, soft)
    except (ImportError, OSError, ValueError):  # pragma: no cover - not POSIX
        pass
    return total // 2


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _npz_headers(p: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """Each member's (shape, dtype), read from its .npy header without reading the array;
    an array that its member cannot hold (truncated), one of objects (a pickle), or arrays
    larger together than `memory_limit` are refused here, before anything is allocated."""
    from numpy.lib import format as npy

    out: dict[str, tuple[tuple, np.dtype]] = {}
    total, limit = 0, memory_limit()
    try:
        with zipfile.ZipFile(p) as z:
            members = z.infolist()
            if len(members) > 1000:
                raise _bad(f"not a data set .npz: it has {len(members):,} members", p)
            for info in members:
                name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                key = name if name.isprintable() and len(name) <= 100 else repr(name[:100])
                with z.open(info) as fh:
                    version = npy.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = npy.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, _, dtype = npy.read_array_header_2_0(fh)
                    else:
                        shape, _, dtype = npy._read_array_header(fh, version)  # 3.0: utf-8 field names
                    header = fh.tell()
                if dtype.hasobject:
                    raise _bad(f"{key} holds Python objects (a pickle); expected numbers (or names for "
                               f"class_names)", p)
                count = int(np.prod(shape, dtype=object))
                nbytes = count * dtype.itemsize
                if nbytes > limit:
                    raise _bad(f"{key} declares shape {tuple(shape)} of {dtype}: {_gib(nbytes)}, more than the "
                               f"{_gib(limit)} a data set may take here (half of the memory)", p)
                if info.file_size < header + nbytes:
                    raise _bad(f"{key} is truncated: its header declares shape {tuple(shape)} of {dtype} "
                               f"({nbytes:,} bytes) but it holds {max(0, info.file_size - header):,}", p)
                total += nbytes
                out[name] = (tuple(shape), dtype)
    except SpecError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError,
            KeyError, RuntimeError) as exc:
        raise _bad(f"cannot read the .npz file: {type(exc).__name__}: {_words(exc)}", p) from None
    if total > limit:
        raise _bad(f"the arrays declare {_gib(total)} together, more than the {_gib(limit)} a data set may take "
                   f"here (half of the memory)", p)
    return out


def _words(exc: BaseException, limit: int = 160) -> str:
    """An exception's message on one bounded line (it may quote what a file holds)."""
    msg = " ".join(str(exc).split())
    return msg[:limit] + " ..." if len(msg) > limit else msg


def _show(name: str) -> str:
    """A name from the data (a file, a class) as it is shown in a message: as written when
    it is printable, else escaped."""
    return name if name.isprintable() else ascii(name)


def _npz(p: Path) -> Source:
    _npz_headers(p)
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except MemoryError:
        raise _bad("not enough memory to read the .npz file", p) from None
    except Exception as exc:  # noqa: BLE001 - numpy and zipfile raise many kinds for a broken file
        raise _bad(f"cannot read the .npz file: {type(exc).__name__}: {_words(exc)}", p) from None
    return npz_source(p, arrays)


def npz_source(p: Path, arrays: dict) -> Source:
    """The checks of an .npz's arrays (`arrays`: its members by name) and the Source they
    make; pure (no file read), so `precheck` runs them on stand-ins of the image arrays."""
    missing = [k for k in ("x_train", "y_train") if k not in arrays]
    if missing:
        held = ", ".join(_show(k) for k in list(arrays)[:10]) + (", ..." if len(arrays) > 10 else "")
        raise _bad(f"the .npz has no {', '.join(missing)} (it holds {held or 'nothing'}); expected "
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
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "USiu":
            raise _bad(f"class_names must be a list of names (N,) (got shape {names.shape}, dtype {names.dtype})", p)
        if len(names) > MAX_CLASSES:
            raise _bad(f"class_names has {len(names):,} names; at most {MAX_CLASSES:,} classes", p)
        text = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in names.tolist()]
        if len(text) < n or len(set(text)) != len(text):
            raise _bad(f"class_names must be distinct names, one per class 0..{n - 1} (got {len(text)}"
                       f"{', with repeats' if len(set(text)) != len(text) else ''})", p)
        bad = next((c for c in text if not c or len(c) > 200), None)
        if bad is not None:
            raise _bad(f"class_names[{text.index(bad)}] must be 1 to 200 characters (got {len(bad)})", p)
        class_names = text
    else:
        class_names = [str(k) for k in range(n)]
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
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError, OverflowError) as exc:  # ragged lists, mixed types
        raise _bad(f"{labels_key} must be integer class indices (N,) ({_words(exc, 80)})", where) from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise _bad(f"{labels_key} must be integer class indices (N,) (got shape {y.shape}, dtype {y.dtype})", where)
    if y.size and y.min() < 0:
        i = int(np.argmax(y < 0))
        raise _bad(f"{labels_key}[{i}] is {int(y[i])}: a label must be a class index >= 0", where)
    if y.size and y.max() >= MAX_CLASSES:  # before anything is sized by the number of classes
        i = int(np.argmax(y >= MAX_CLASSES))
        raise _bad(f"{labels_key}[{i}] is {int(y[i])}: a label must be a class index < {MAX_CLASSES:,} (the "
                   f"most classes a head can have)", where)
    y = y.astype("int64")
    x = None
    if images is not None:
        try:
            x = np.asarray(images)
        except (ValueError, TypeError, OverflowError) as exc:
            raise _bad(f"{images_key} must be images (N, H, W) or (N, H, W, 1 or 3) ({_words(exc, 80)})",
                       where) from None
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise _bad(f"{images_key} must be images (N, H, W) or (N, H, W, 1 or 3) (got shape {x.shape})", where)
        if x.dtype.kind not in "uif":
            raise _bad(f"{images_key} must hold numbers (got dtype {x.dtype})", where)
        if x.shape[1] == 0 or x.shape[2] == 0:
            raise _bad(f"{images_key} holds images of {x.shape[1]}x{x.shape[2]} pixels (got shape {x.shape}); an "
                       f"image needs at least one pixel", where)
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
            _check_images(files, where)
    if n_images != len(y):
        what = images_key if images is not None else "images"
        raise _bad(f"{what} has {n_images} images but {labels_key} {len(y)} labels", where)
    return x, y


class _NdarrayClass:
    """What a pickle gets for `numpy.ndarray`: a token that `_reconstruct` takes (the one
    use numpy's own pickles make of it) and that cannot be called to allocate an array."""

    def __repr__(self):
        return "numpy.ndarray"


_NDARRAY = _NdarrayClass()


def _numpy_core():
    try:
        import numpy._core as core  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        import numpy.core as core
    return core
_DTYPE_CODE = re.compile(r"[<>|=]?[?bBhHiIlLqQefdgFDGSUaVOuicf][0-9]{0,4}")


def _reconstruct(subtype, shape, dtype):
    """numpy's `_reconstruct` (an empty array that the pickle then fills with its own
    bytes), for ndarrays of no elements only: a shape of 2**40 would be allocated."""
    real = _numpy_core().multiarray._reconstruct

    if subtype is not _NDARRAY or not isinstance(shape, tuple) or int(np.prod(shape, dtype=object)) != 0:
        raise pickle.UnpicklingError("refused: numpy._reconstruct of anything but an empty ndarray")
    return real(np.ndarray, shape, dtype)


def _dtype(spec, align=False, copy=True):
    """numpy.dtype of a plain type code ('u1', '<i8', 'S10', 'O8'), nothing else."""
    text = spec.decode("latin-1") if isinstance(spec, bytes) else spec
    if not isinstance(text, str) or not _DTYPE_CODE.fullmatch(text):
        raise pickle.UnpicklingError(f"refused: numpy.dtype({_words(repr(spec), 40)})")
    try:
        dt = np.dtype(text)
    except (TypeError, ValueError):
        raise pickle.UnpicklingError(f"refused: numpy.dtype({_words(repr(spec), 40)})") from None
    if dt.itemsize > 1 << 20:
        raise pickle.UnpicklingError(f"refused: numpy.dtype({_words(repr(spec), 40)}) of {dt.itemsize:,} bytes")
    return dt


def _latin1(text=None, encoding=None, *rest):
    """Python 3's protocol-2 pickles write `bytes` as `_codecs.encode(text, 'latin1')`."""
    if rest or not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("refused: _codecs.encode other than of text to latin1 (how protocol 2 writes "
                                     "bytes)")
    return text.encode("latin-1")


def _empty_bytes(*args):
    """Protocol 2 writes b'' as `bytes()`; bytes(2**62) would be allocated."""
    if args:
        raise pickle.UnpicklingError("refused: bytes() with arguments (protocol 2 writes only b'' so)")
    return b""


def _scalar(dtype, data=None):
    scalar = _numpy_core().multiarray.scalar
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("refused: numpy scalar of objects")
    return scalar(dtype, data)


class _ArraysOnly(pickle.Unpickler):
    """CIFAR's pickles hold dicts of lists, bytes and numpy arrays: nothing else is
    constructed (a pickle naming any other callable is refused, not run). numpy's own
    constructors are replaced by checked ones (no allocation from a declared size), and the
    two callables Python 3's protocol 2 uses for bytes are taken in exactly that use."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
               ("numpy", "ndarray"): _NDARRAY, ("numpy", "dtype"): _dtype,
               ("numpy.core.multiarray", "scalar"): _scalar, ("numpy._core.multiarray", "scalar"): _scalar,
               ("_codecs", "encode"): _latin1, ("builtins", "bytes"): _empty_bytes,
               ("__builtin__", "bytes"): _empty_bytes}

    def find_class(self, module, name):
        found = self.ALLOWED.get((module, name)) if isinstance(module, str) and isinstance(name, str) else None
        if found is not None:
            return found
        raise pickle.UnpicklingError(f"refused to construct {_words(f'{module}.{name}', 80)}")


def _scan_pickle(data: bytes) -> None:
    """Every length the pickle declares (BINBYTES8 of 2**62) is checked against the bytes
    that follow it, before the unpickler (which allocates a declared length before it reads
    it) sees the data; pickletools reads the opcodes without building anything."""
    import pickletools

    try:
        for _ in pickletools.genops(io.BytesIO(data)):
            pass
    except ValueError as exc:
        raise pickle.UnpicklingError(_words(exc, 120)) from None


def _unpickle(f: Path) -> dict:
    """A CIFAR batch: its bytes read whole (at most `memory_limit`), so a length the pickle
    declares (BINBYTES8 of 2**62) can only be cut short, never allocated."""
    limit = memory_limit()
    try:
        size = f.stat().st_size
        if size > limit:
            raise _bad(f"a CIFAR batch of {_gib(size)} is more than the {_gib(limit)} a data set may take here "
                       f"(half of the memory)", f)
        from ..language.loader import read_bounded

        data = read_bounded(f, str(f), limit=limit, what="a CIFAR batch")
        _scan_pickle(data)
        d = _ArraysOnly(io.BytesIO(data), encoding="bytes").load()
    except SpecError:
        raise
    except MemoryError:
        raise _bad("not a CIFAR batch file: it needs more memory than there is", f) from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError,
            IndexError, OverflowError, RecursionError, UnicodeDecodeError, ImportError) as exc:
        raise _bad(f"not a CIFAR batch file: {type(exc).__name__}: {_words(exc)}", f) from None
    if not isinstance(d, dict):
        raise _bad(f"not a CIFAR batch file (a {type(d).__name__}, not a dict)", f)
    return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _names(value, where: Path, key: str) -> list[str]:
    """CIFAR meta's class names: a list (or 1-D array) of distinct, non-empty text or bytes."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in value):
        what = type(value).__name__ if not isinstance(value, (list, tuple)) else "a list with items that are not text"
        raise _bad(f"{key} must be a list of class names (got {what})", where)
    if len(value) > MAX_CLASSES:
        raise _bad(f"{key} has {len(value):,} names; at most {MAX_CLASSES:,} classes", where)
    names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in value]
    bad = next((i for i, n in enumerate(names) if not n or len(n) > 200), None)
    if bad is not None:
        raise _bad(f"{key}[{bad}] must be 1 to 200 characters (got {len(names[bad])})", where)
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise _bad(f"{key} has {_show(dup)!r} more than once: class names must be distinct", where)
    return names


def _cifar(p: Path) -> Source:
    """CIFAR-10 (`data_batch_1..5`, `test_batch`, `batches.meta`) or CIFAR-100
    (`train`, `test`, `meta`, fine labels)."""
    if (p / "batches.meta").is_file():
        meta_file, label_key, names_key = p / "batches.meta", "labels", "label_names"
        train_files = sorted(p.glob("data_batch_*"))
        test_files = [p / "test_batch"] if (p / "test_batch").is_file() else []
    else:
        meta_file, label_key, names_key = p / "meta", "fine_labels", "fine_label_names"
        train_files = [p / "train"] if (p / "train").is_file() else []
        test_files = [p / "test"] if (p / "test").is_file() else []
    meta = _unpickle(meta_file)
    train_files = [f for f in train_files if f.is_file()]
    if not train_files:
        raise _bad("a CIFAR directory without training batches (data_batch_* or train)", p)
    names = _names(meta.get(names_key, []), meta_file, names_key)
    budget = [memory_limit()]

    def read(files):
        xs, ys = [], []
        for f in files:
            d = _unpickle(f)
            if "data" not in d or label_key not in d:
                raise _bad(f"not a CIFAR batch file (no 'data' or '{label_key}')", f)
            raw = d["data"]
            if not isinstance(raw, (np.ndarray, list, tuple)):
                raise _bad(f"CIFAR data must be (N, 3072) bytes 0..255 (got a {type(raw).__name__})", f)
            try:
                x = np.asarray(raw)
            except (ValueError, TypeError, OverflowError) as exc:
                raise _bad(f"CIFAR data must be (N, 3072) bytes 0..255 ({_words(exc, 80)})", f) from None
            if x.ndim != 2 or x.shape[1] != 3072 or x.dtype.kind not in "iu" or (
                    x.size and (x.min() < 0 or x.max() > 255)):
                raise _bad(f"CIFAR data must be (N, 3072) bytes 0..255 (got shape {x.shape}, dtype {x.dtype}"
                           f"{', values ' + str(x.min()) + '..' + str(x.max()) if x.size and x.dtype.kind in 'iu' else ''})",
                           f)
            budget[0] -= x.shape[0] * 3072
            if budget[0] < 0:
                raise _bad(f"the CIFAR batches hold more images than fit in the memory a data set may take here "
                           f"({_gib(memory_limit())})", f)
            x = x.astype(np.uint8, copy=False)
            labels = d[label_key]
            if not isinstance(labels, (np.ndarray, list, tuple)):
                raise _bad(f"{label_key} must be integer class indices (N,) (got a {type(labels).__name__})", f)
            x, y = check_examples(f, labels, label_key, x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), "data")
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
        if named:
            raise _bad(f"{names_key} has {len(names)} names but the labels go up to {n - 1}", meta_file)
        names = [str(k) for k in range(n)]
    return Source("cifar", str(p), names, x_train, y_train, x_test, y_test, named=named)


def _folder(p: Path) -> Source:
    classes, files, labels = list_folder(p)
    check_examples(p, np.asarray(labels, np.int64), "labels", files=files)
    return Source("folder", str(p), classes, files=files, labels=labels)


def list_folder(p: Path) -> tuple[list[str], list[str], list[int]]:
    """An image folder's (class names, image files, their labels), checked: a class folder
    each, none empty (no image is opened)."""
    try:
        classes = sorted(d.name for d in p.iterdir() if d.is_dir() and not d.name.startswith("."))
    except OSError as exc:
        raise _bad(f"cannot read the folder: {exc.strerror or exc}", p) from None
    if not classes:
        raise _bad("no class folders: expected one sub-folder of images per class", p)
    if len(classes) > MAX_CLASSES:
        raise _bad(f"{len(classes):,} class folders; at most {MAX_CLASSES:,} classes", p)
    files, labels = [], []
    for k, c in enumerate(classes):
        try:
            imgs = sorted(f for f in (p / c).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        except OSError as exc:
            raise _bad(f"cannot read the folder: {exc.strerror or exc}", p / c) from None
        if not imgs:
            raise _bad(f"class {_show(c)!r} has no images ({', '.join(IMAGE_SUFFIXES)})", p / c)
        files += [str(f) for f in imgs]
        labels += [k] * len(imgs)
    return classes, files, labels


def _check_images(files: list[str], root: str | os.PathLike | None = None) -> None:
    """Every file must be an image that training's own decoder (`tf.io.decode_image`, as
    `_decoder` calls it) reads, of at least one pixel and at most MAX_IMAGE_PIXELS (read
    from its header before decoding). Checked now, all of them, rather than as a decode
    error in the middle of an epoch; every bad file is reported in one message (how many,
    and the first few by name)."""
    bad = header_problems(files)
    todo = [i for i in range(len(files)) if i not in bad]
    if todo:
        _decode_problems(files, todo, bad)
    error = unreadable_images(bad, files, root)
    if error is not None:
        raise error


def header_problems(files: list[str]) -> dict[int, str]:
    """{index: why} of the files whose image header PIL cannot read, or that declare no pixel
    or more than MAX_IMAGE_PIXELS: `_check_images`' first pass (nothing is decoded, no
    TensorFlow)."""
    bad: dict[int, str] = {}
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        return bad
    for i, f in enumerate(files):  # headers only: the size, before anything is decoded
        try:
            with Image.open(f) as im:
                w, h = im.size
        except Image.DecompressionBombError as exc:  # PIL's own bound (2 x its MAX_IMAGE_PIXELS)
            bad[i] = f"too large ({_words(exc, 60)})"
            continue
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            bad[i] = f"{type(exc).__name__}: {_words(exc, 80)}"
            continue
        if w * h > MAX_IMAGE_PIXELS:
            bad[i] = f"{w}x{h} pixels, more than {MAX_IMAGE_PIXELS:,}"
        elif w * h == 0:
            bad[i] = f"{w}x{h} pixels"
    return bad


def _decode_problems(files: list[str], todo: list[int], bad: dict[int, str]) -> None:
    """`_check_images`' second pass: the files `todo` decoded by training's decoder; each
    that fails is added to `bad`."""
    if todo:
        from ..backends.keras import tensorflow

        tf = tensorflow()  # imported with its native start-up notices filtered (often the first import)

        def decode(i, f):
            img = tf.io.decode_image(tf.io.read_file(f), channels=0, expand_animations=False)
            return i, tf.shape(img)[0] * tf.shape(img)[1]

        ds = tf.data.Dataset.from_tensor_slices((np.asarray(todo, np.int64), tf.constant([files[i] for i in todo])))
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
        good = {}
        for i, pixels in ds.batch(1024).as_numpy_iterator():
            good.update(zip(i.tolist(), pixels.tolist()))
        shown = 0
        for i in todo:
            if i in good and good[i] > 0:
                continue
            if i in good:
                bad[i] = "no pixels"
            elif shown < 3:  # the decoder's own words for the first few
                shown += 1
                try:
                    tf.io.decode_image(tf.io.read_file(files[i]), channels=0, expand_animations=False)
                    bad[i] = "TensorFlow cannot decode it"
                except Exception as exc:  # noqa: BLE001 - the decoder's errors, in words
                    words = str(getattr(exc, "message", exc)).split("[Op:")[0].split("}}")[-1]
                    bad[i] = f"TensorFlow cannot decode it: {_words(words, 100)}"
            else:
                bad[i] = "TensorFlow cannot decode it"


def unreadable_images(bad: dict[int, str], files: list[str], root=None) -> SpecError | None:
    """The one error for the unreadable files `bad` ({index: why}) of `files`, or None."""
    if bad:
        order = sorted(bad)
        base = Path(root) if root is not None else None

        def name(i):
            f = Path(files[i])
            try:
                f = f.relative_to(base) if base is not None else f
            except ValueError:
                pass
            return _show(str(f))
        first = "; ".join(f"{name(i)} ({bad[i]})" for i in order[:3])
        more = f"; and {len(order) - 3:,} more" if len(order) > 3 else ""
        if len(order) == 1:
            return _bad(f"unreadable image: {bad[order[0]]}", files[order[0]])
        return _bad(f"{len(order):,} of {len(files):,} images cannot be read by training's decoder: {first}{more}",
                    root if root is not None else files[order[0]])
    return None


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
        k = held_out(n, validation_split, src.path)
        idx = np.random.default_rng(seed).permutation(n)
        return idx[k:], idx[:k], "split"
    return np.arange(n), None, "test" if src.x_test is not None else "none"


def held_out(n: int, validation_split: float, where: str | os.PathLike) -> int:
    """How many of `n` training examples `data.validation_split` holds out (at least one);
    a split that leaves no training example is an error (training would wait forever for
    a first batch)."""
    k = max(1, int(round(n * validation_split)))
    if k >= n:
        raise _bad(f"data.validation_split={validation_split:g} of {n:,} training image{'s' if n != 1 else ''} "
                   f"holds out {k:,} for validation and leaves {n - k:,} to train on; at least one of each is "
                   f"needed (lower data.validation_split or give more images)", where)
    return k


def check_split(src: Source, validation_split: float) -> None:
    """Refuses, before training starts, a validation split that leaves no training example."""
    if validation_split > 0:
        held_out(src.train_size, validation_split, src.path)


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
        # decoded as stored (GIF and BMP decoders refuse channels=1), then converted: the one
        # decode `_check_images` checked every file with
        img = tf.io.decode_image(tf.io.read_file(f), channels=0, expand_animations=False)
        img.set_shape([None, None, None])
        c = tf.shape(img)[-1]
        if channels == 1:
            img = tf.cond(c < 3, lambda: img[..., :1], lambda: tf.image.rgb_to_grayscale(img[..., :3]))
        else:
            img = tf.cond(c < 3, lambda: tf.image.grayscale_to_rgb(img[..., :1]), lambda: img[..., :3])
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


def preprocessor(mode: str, channels: int):
    """`input.preprocess` as a tf function on float32 images (..., channels), or None for
    ``none``: the steps of `archspec.language.preprocess` (keras.applications'
    `preprocess_input`), in keras' order with its float32 constants, so a batch here equals
    `preprocess(x, mode)` on the same pixels. A mode that cannot take `channels` (caffe and
    torch need RGB) is a SpecError."""
    from ..language.preprocess import check_channels, steps

    problem = check_channels(mode, channels)
    if problem:
        raise SpecError(problem)
    todo = steps(mode)
    if not todo:
        return None
    import tensorflow as tf

    def apply(img):
        for step in todo:
            if step[0] == "flip":
                img = tf.reverse(img, axis=[-1])
            elif step[0] == "div":
                img = img / tf.constant(step[1], tf.float32)
            elif step[0] == "sub":
                img = img - tf.constant(step[1], tf.float32)
            else:  # "divc"
                img = img / tf.constant(step[1], tf.float32)
        return img
    return apply


def read_images(files: list, channels: int, size: tuple[int, int], root=None) -> np.ndarray:
    """Image files checked (`_check_images`: every bad one reported) and decoded by training's
    own decoder, at `size` with `channels`: what export's check and calibration images read."""
    files = [str(f) for f in files]
    _check_images(files, root)
    return decode_all(files, channels, size)


def decode_all(files: list[str], channels: int, size: tuple[int, int], say=lambda m: None) -> np.ndarray:
    """Every image of `files` decoded, at `size`, into one float32 array (`data.cache`)."""
    import tensorflow as tf

    say(f"data.cache: decoding {len(files):,} images into memory "
        f"({len(files) * size[0] * size[1] * channels * 4 / 2**20:,.0f} MiB)")
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(files)).map(_decoder(channels, size),
                                                                    num_parallel_calls=tf.data.AUTOTUNE)
    return np.concatenate([b.numpy() for b in ds.batch(256)])  # a folder has images (checked when read)


def datasets(src: Source, recipe, size: tuple[int, int], channels: int, classes: int, outputs: int,
             global_batch: int, seed: int, augment=None, say=lambda m: None, preprocess: str = "none") -> Pipelines:
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
        preprocess: the spec's `input.preprocess` (keras.applications' `preprocess_input`
            mode), applied to every batch after augmentation (`preprocessor`): the data
            stays as stored (RGB 0..255), as evaluate, predict and the export check take it.
    """
    import tensorflow as tf

    pre = preprocessor(preprocess, channels)
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
            if pre is not None:
                images = pre(images)
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


def evaluation_dataset(src: Source, size, channels: int, classes: int, batch: int, relabel: np.ndarray | None = None,
                       preprocess: str = "none"):
    """The data to evaluate on: the test set when the data has one, else all of it; as
    (dataset of (images, one-hot labels), integer labels in order). `relabel` maps each
    label of the data to the model's class index (classes matched by name); `preprocess`
    is the spec's `input.preprocess`, applied as training applies it (`preprocessor`)."""
    import tensorflow as tf

    pre = preprocessor(preprocess, channels)

    if src.kind == "folder":
        ys = np.asarray(src.labels, np.int64)
        ds = tf.data.Dataset.from_tensor_slices(tf.constant(src.files)).map(_decoder(channels, size),
                                                                            num_parallel_calls=tf.data.AUTOTUNE)
    else:
        x, ys = (src.x_test, src.y_test) if src.x_test is not None else (src.x_train, src.y_train)
        ds = tf.data.Dataset.from_tensor_slices(x).map(_converter(channels, size), num_parallel_calls=tf.data.AUTOTUNE)
    if pre is not None:
        ds = ds.map(pre, num_parallel_calls=tf.data.AUTOTUNE)
    if relabel is not None:
        ys = np.asarray(relabel)[ys]
    labels = tf.data.Dataset.from_tensor_slices(tf.one_hot(ys, classes))
    return tf.data.Dataset.zip((ds, labels)).batch(batch).prefetch(tf.data.AUTOTUNE), np.asarray(ys)


def steps(n: int, batch: int) -> int:
    return max(1, -(-n // batch))
