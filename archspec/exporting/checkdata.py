"""The export check's real images: ``check_data`` (``--check-data``), a run directory's own
training data, or the user's calibration images, read into the model's input the way
`archspec evaluate` feeds them (`training.data.evaluation_dataset`: resized to the input
size, channels converted, float32 pixel values as stored, then the spec's
`input.preprocess`, unless it is baked into the exported model).

Why: random weights on random inputs give a near-uniform softmax, where top-1 "agreement"
means nothing, and random inputs miss what only real activations show (a float16 overflow,
an int8 range calibrated on noise). On real images, top-1 agreement with the float32 model
(and accuracy, when the data has labels) is what a deployment will see.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..core.errors import SpecError
from .options import CHECK_IMAGES


@dataclass
class CheckData:
    x: np.ndarray  # (N, H, W, C) float32, the model's input
    y: np.ndarray | None  # (N,) integer labels, when the data has them
    source: str  # what it was read from (a path, "array", "calibration")
    x_calib: np.ndarray | None = None  # images of the same data not in `x` (int8 calibration)
    calib_rule: str | None = None  # how they were set apart from `x` (the report's calibration.split)
    held_out: bool = False  # `x` is the data's test split (held out from training), not images of its training split


#: static int8 calibrates on at most this many images of the check data (apart from those checked)
CALIBRATION_IMAGES = 64
#: and, without its own calibration images, needs at least this many to calibrate on and at
#: least this many to check, apart: fewer is refused (never calibrated on noise instead)
MIN_SPLIT_IMAGES = 8


def split_pool(n: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(check indices, calibration indices) of one pool of `n` images (data without a test
    split) for static int8: calibration gets min(`CALIBRATION_IMAGES`, n // 2) images evenly
    spaced over the pool (so over its classes, in folder order), the check at most `limit`
    of the others, evenly spaced. Disjoint: the check never sees a calibration image."""
    calib = _spread(n, min(CALIBRATION_IMAGES, n // 2)) if n >= 2 else np.arange(0)
    rest = np.setdiff1d(np.arange(n), calib)
    return rest[_spread(len(rest), limit)], calib


def _too_few(where, what: str, pool: bool = True) -> SpecError:
    rule = (f"without a test split, half of the images at most (and at most {CALIBRATION_IMAGES}) calibrate and "
            f"the others are checked: give at least {2 * MIN_SPLIT_IMAGES} images" if pool else
            f"the test split is checked and the training split calibrates: give at least {MIN_SPLIT_IMAGES} "
            f"training images")
    return SpecError(f"{where}: {what}; static int8 calibrates on images apart from those it is checked on, at "
                     f"least {MIN_SPLIT_IMAGES} of each ({rule}), or calibration images of their own "
                     f"(--calibration DIR|FILE.npy)")


def _pool_rule(n: int, check: int, calib: int) -> str:
    return (f"no test split: {calib} of the {n} images (evenly spaced, at most {CALIBRATION_IMAGES} and half) "
            f"calibrate, {check} of the others are checked")


def _spread(n: int, k: int) -> np.ndarray:
    """`k` indices evenly spaced over range(n) (all of them when k >= n)."""
    if k >= n:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def load(ref, model, limit: int = CHECK_IMAGES, say=lambda m: None, preprocess: str = "none",
         calibrate: bool = False) -> CheckData:
    """The check images for `model` from `ref`: an ``.npz`` (x_train, y_train[, x_test,
    y_test]), a CIFAR directory or a folder of class sub-folders (read by
    `training.data.open_source`, labels included), a flat folder of images (no labels), or
    an array (N, H, W, C). At most `limit` images, evenly spaced over the test split (the
    training split when there is none). Every image is given as stored (RGB 0..255) and
    gets `preprocess` (the spec's `input.preprocess`; ``none`` when the model has it baked
    in), as training and evaluate give it.

    With `calibrate` (static int8 without calibration images of its own), `x_calib` holds
    images apart from the checked ones: up to `CALIBRATION_IMAGES` of the training split
    when there is a test split, else the pool is split by `split_pool` (the rule in
    `calib_rule`); fewer than `MIN_SPLIT_IMAGES` of either is a SpecError with the numbers,
    never a calibration on generated noise."""
    from ..language.preprocess import preprocess as _pre

    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    _check_mode(preprocess, shape)
    if isinstance(ref, np.ndarray):
        arr = _as_input(ref, shape, "check data")
        if not calibrate:
            return CheckData(_pre(arr, preprocess), None, "array")
        idx, cal = _split_or_refuse("the check data array", len(arr), limit)
        return CheckData(_pre(arr[idx], preprocess), None, "array", _pre(arr[cal], preprocess),
                         _pool_rule(len(arr), len(idx), len(cal)))
    if not isinstance(ref, (str, os.PathLike)):
        raise SpecError(f"check data must be a directory, an .npz file or an array (got {type(ref).__name__})")
    p = Path(os.fspath(ref))
    if not p.exists():
        raise SpecError(f"{p}: no such file or directory (check data)")
    if p.is_dir() and _flat_images(p):
        files = _flat_images(p)
        if not calibrate:
            idx = _spread(len(files), limit)
            say(f"reading {len(idx)} check images from {p}…")
            return CheckData(_pre(_decode([files[i] for i in idx], shape), preprocess), None, str(p))
        idx, cal = _split_or_refuse(p, len(files), limit)
        say(f"reading {len(idx)} check images and {len(cal)} calibration images from {p}…")
        return CheckData(_pre(_decode([files[i] for i in idx], shape), preprocess), None, str(p),
                         _pre(_decode([files[i] for i in cal], shape), preprocess),
                         _pool_rule(len(files), len(idx), len(cal)))
    from ..training import data as data_mod

    src = data_mod.open_source(p)
    say(f"reading check images from {p}…")
    calib, rule = None, None
    if src.kind == "folder":
        n = len(src.files)
        if calibrate:
            idx, j = _split_or_refuse(p, n, limit)
            rule = _pool_rule(n, len(idx), len(j))
            calib = dataclasses.replace(src, files=[src.files[i] for i in j], labels=[src.labels[i] for i in j])
        else:
            idx = _spread(n, limit)
        check = dataclasses.replace(src, files=[src.files[i] for i in idx], labels=[src.labels[i] for i in idx])
    elif src.x_test is not None and len(src.x_test):
        idx = _spread(len(src.x_test), limit)
        check = dataclasses.replace(src, x_test=src.x_test[idx], y_test=src.y_test[idx])
        if calibrate:
            n = len(src.x_train) if src.x_train is not None else 0
            if n < MIN_SPLIT_IMAGES:
                raise _too_few(p, f"the training split has {n} image{'s' if n != 1 else ''}", pool=False)
            j = _spread(n, CALIBRATION_IMAGES)
            rule = (f"test split: {len(idx)} of its {len(src.x_test)} images are checked; {len(j)} of the "
                    f"{n} training images (evenly spaced, at most {CALIBRATION_IMAGES}) calibrate")
            calib = dataclasses.replace(src, x_test=src.x_train[j], y_test=src.y_train[j])
    else:
        n = len(src.x_train)
        if calibrate:
            idx, j = _split_or_refuse(p, n, limit)
            rule = _pool_rule(n, len(idx), len(j))
            calib = dataclasses.replace(src, x_test=src.x_train[j], y_test=src.y_train[j])
        else:
            idx = _spread(n, limit)
        check = dataclasses.replace(src, x_test=src.x_train[idx], y_test=src.y_train[idx])
    x, y = _through_input(check, shape, data_mod, preprocess)
    classes = int(model.outputs[0].shape[-1])
    if y is not None:
        from ..training.rules import check_label_range

        check_label_range(y, classes, str(p), check_data=True)
    x_calib = _through_input(calib, shape, data_mod, preprocess)[0] if calib is not None else None
    held_out = src.kind != "folder" and src.x_test is not None and len(src.x_test) > 0
    return CheckData(x, y, str(p), x_calib, rule, held_out)


def _split_or_refuse(where, n: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    idx, cal = split_pool(n, limit)
    if len(cal) < MIN_SPLIT_IMAGES or len(idx) < MIN_SPLIT_IMAGES:
        raise _too_few(where, f"{n} image{'s' if n != 1 else ''} and no test split")
    return idx, cal


def _check_mode(preprocess: str, shape) -> None:
    from ..language.preprocess import check_channels

    problem = check_channels(preprocess, shape[-1])
    if problem:
        raise SpecError(problem)


def _through_input(src, shape, data_mod, preprocess: str = "none"):
    """(images, labels) of `src`'s evaluation split at the model's input, as evaluate reads them."""
    labels = src.labels if src.kind == "folder" else src.y_test
    classes = int(np.max(labels)) + 1 if len(labels) else 1
    ds, y = data_mod.evaluation_dataset(src, shape[:2], shape[2], classes, 64, preprocess=preprocess)
    x = np.concatenate([np.asarray(b, dtype="float32") for b, _ in ds])
    return x, np.asarray(y, dtype=np.int64)


def _flat_images(p: Path) -> list[Path]:
    from ..training.data import IMAGE_SUFFIXES

    return sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _decode(files, shape) -> np.ndarray:
    from ..training.data import read_images  # the check reads images as training does

    return read_images(files, shape[-1], tuple(shape[:2]))


def _as_input(arr, shape, what) -> np.ndarray:
    arr = np.asarray(arr, dtype="float32")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(shape) or len(arr) == 0:
        raise SpecError(f"{what} must have shape (N, {', '.join(map(str, shape))}) (got {tuple(arr.shape)})")
    return arr


def calibration_data(calibration, model, seed, n: int = 16, preprocess: str = "none"):
    """None (generated random images), a `.npy` file or array (N, H, W, C), or a directory
    of images (decoded as RGB 0-255 and resized to the input size); the user's images get
    `preprocess` (the spec's `input.preprocess`), as the check's images do."""
    import numpy as np

    from ..backends.keras import files

    shape = tuple(model.inputs[0].shape[1:])
    if calibration is None:
        return files.random_inputs(model, n, seed + 99)
    if isinstance(calibration, np.ndarray):
        arr = calibration
    else:
        p = Path(os.fspath(calibration))
        if p.is_dir():
            arr = _load_images(p, shape)
        elif p.suffix == ".npy" and p.is_file():
            arr = np.load(p, allow_pickle=False)
        else:
            raise SpecError(f"{p}: calibration data must be a .npy file or a directory of images")
    arr = np.asarray(arr, dtype="float32")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != shape or len(arr) == 0:
        raise SpecError(f"calibration data must have shape (N, {', '.join(map(str, shape))}) "
                        f"(got {tuple(arr.shape)})")
    if preprocess != "none":
        from ..language.preprocess import preprocess as _pre

        _check_mode(preprocess, shape)
        arr = _pre(arr, preprocess)
    return arr


def _load_images(d: Path, shape):
    from ..training.data import IMAGE_SUFFIXES, read_images  # calibration reads images as training does

    files = sorted(f for f in d.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SpecError(f"{d}: no images ({', '.join(IMAGE_SUFFIXES)}) for calibration")
    return read_images(files, shape[-1], tuple(shape[:2]), d)
