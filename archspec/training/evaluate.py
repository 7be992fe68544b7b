"""`archspec evaluate` and `archspec predict`: a trained model (a run directory or a
`.keras` file) on data from disk: loss, top-1/top-5, per-class accuracy and the confusion
matrix; top-k classes of single images with the class names of the training data. Both
take images as stored (RGB 0..255) and apply the spec's `input.preprocess`
(`preprocess_of`) as training did."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.errors import ArchspecError, Location, SpecError
from ..views.text import csv_cell
from .rules import check_label_range


def model_file(ref: str | os.PathLike) -> tuple[Path, list[str] | None]:
    """A run directory (its best.keras, else final.keras) or a .keras file, and the class
    names of its training data when they are known (classes.json of the run)."""
    p = Path(ref)
    if p.is_dir():
        for name in ("best.keras", "final.keras"):
            if (p / name).is_file():
                model = p / name
                break
        else:
            raise SpecError("a run directory without best.keras or final.keras (did its training finish an epoch?)",
                            Location(str(p)))
    elif p.is_file() and p.suffix == ".keras":
        model = p
    else:
        raise SpecError("expected a run directory of archspec train or a .keras file" if p.exists() else
                        "no such file or directory", Location(str(p)))
    names_file = model.parent / "classes.json"
    names = read_class_names(names_file) if names_file.is_file() else None
    return model, names


def preprocess_of(model_path: Path) -> tuple[str, str]:
    """(mode, where it was read) of the `input.preprocess` a model's data gets: the file's
    own record (``archspec.preprocessing`` in its archspec.json, which every archspec writer
    makes: ``none`` when the preprocessing is baked into the model), else the spec of the
    run directory the model is in (its spec.yaml; a run of an archspec before the record),
    else ``none`` for a `.keras` file no archspec wrote (a plain Keras file takes its inputs
    as given).

    Raises:
        SpecError: archspec wrote the file (it has an archspec.json) but it records no mode,
            or a damaged one: the spec may have had caffe, torch or tf, and running it on
            images as stored would be silently wrong.
    """
    import zipfile

    from ..backends.keras.files import METADATA_FILE
    from ..language.preprocess import MODES

    doc, written = {}, False
    try:
        with zipfile.ZipFile(model_path) as z:
            info = z.getinfo(METADATA_FILE) if METADATA_FILE in z.namelist() else None
            if info is not None:
                written = True
                if info.file_size > 16 << 20:  # a record, not a payload
                    raise ValueError("larger than 16 MiB")
                doc = json.loads(z.read(info))
    except (ValueError, RecursionError, UnicodeDecodeError) as exc:
        raise SpecError(f"its {METADATA_FILE} (archspec's record of the model) is not readable "
                        f"({type(exc).__name__}); the file is damaged", Location(str(model_path))) from None
    except (OSError, zipfile.BadZipFile):  # the file itself is checked when it is loaded
        doc = {}
    rec = doc.get("archspec.preprocessing") if isinstance(doc, dict) else None
    if isinstance(rec, dict) and "mode" in rec:
        mode, baked = rec.get("mode"), rec.get("baked", False)
        if mode not in MODES or not isinstance(baked, bool):
            raise SpecError(f"its {METADATA_FILE} records an input.preprocess mode that is not one of "
                            f"{', '.join(MODES)} (or a 'baked' that is not true or false); the file is damaged",
                            Location(str(model_path)))
        return ("none" if baked else mode), f"{model_path.name} (archspec.json)"
    spec_file = model_path.parent / "spec.yaml"
    if spec_file.is_file() and (model_path.parent / "run.json").is_file():
        from ..language import load

        spec, _ = load(str(spec_file))
        return spec.input.preprocess, str(spec_file)
    if written:  # by an archspec before every writer recorded the mode (or the record was removed)
        raise SpecError(f"written by archspec with no record of its spec's input.preprocess, so the images it "
                        f"takes cannot be known (caffe, torch or tf mode, or none); write it again with this "
                        f"archspec (archspec build, or export), or use it from its run directory",
                        Location(str(model_path)))
    return "none", "no record of the model's spec"


def read_class_names(path: Path) -> list[str]:
    """A run's classes.json: a list of distinct class names, read bounded (a hostile file is
    one located error, never a traceback or a read of gigabytes)."""
    from ..language.common import MAX_COUNT
    from ..language.loader import read_bounded

    text = read_bounded(path, str(path), limit=64 << 20, what="a classes.json")
    try:
        names = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SpecError(f"not a JSON list of class names ({type(exc).__name__})", Location(str(path))) from None
    if (not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) > MAX_COUNT
            or len(set(names)) != len(names)):
        raise SpecError(f"expected a list of at most {MAX_COUNT:,} distinct class names (strings)",
                        Location(str(path)))
    return names


def _load(model_path: Path):
    """The Keras model of `model_path`: a file that is not a `.keras` archive (garbage, a
    truncated download) or that Keras cannot load is bad input, one line naming it (exit 2),
    never Keras' "File not found" for a file that exists."""
    from ..backends.keras import load as _keras_build
    from ..backends.keras.files import check_keras_archive
    from ..core.progress import short

    check_keras_archive(model_path)
    _keras_build()
    import keras

    try:
        return keras.models.load_model(model_path, compile=False)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for an unreadable file
        raise SpecError(f"cannot load as a Keras model: not a valid .keras file ({type(exc).__name__}: "
                        f"{short(exc)})", Location(str(model_path))) from None


def _main_output(model):
    """The classifier output: the model's first (an archspec model lists its classifier
    first; GoogLeNet's auxiliary outputs follow it; training builds no taps)."""
    out = model.outputs[0] if isinstance(model.outputs, list) else model.outputs
    if len(out.shape) != 2:
        raise ArchspecError(f"the model's first output is not a classifier's (shape {tuple(out.shape)}); evaluate "
                            f"and predict need a model whose first output is (batch, classes)")
    return out


def head_activation(model) -> str:
    """The activation of the classifier output: softmax (probabilities), linear (logits)
    or sigmoid (an independent probability per class)."""
    layer = _main_output(model)._keras_history.operation
    act = getattr(layer, "activation", None)
    name = "linear" if act is None else getattr(act, "__name__", str(act))
    if name not in ("softmax", "linear", "sigmoid"):
        raise ArchspecError(f"the classifier output {layer.name!r} has activation {name!r}; evaluate and predict "
                            f"know softmax, linear (logits) and sigmoid")
    return name


def label_map(src, names: list[str] | None, classes: int, model_path: Path) -> np.ndarray:
    """For each label of the data, the model's output index of that class.

    Classes are matched by name when both sides have names (the run's classes.json, the
    data's folder names, CIFAR meta or an npz's class_names): a class the data lacks is
    fine, a name the model was not trained on is an error naming it. An npz without
    class_names holds class indices, taken as they are. An image folder evaluated with a
    model that has no classes.json beside it is matched only when its folders are named by
    index (0, 1, ...): sorted position would silently mislabel a folder that lacks a class."""
    if src.named and names is not None:
        index = {n: i for i, n in enumerate(names)}
        unknown = [n for n in src.class_names if n not in index]
        if unknown:
            where = Path(src.path) / unknown[0] if src.kind == "folder" else src.path
            known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
            raise SpecError(f"class {unknown[0]!r} of the data is not one the model was trained on "
                            f"({len(names)} classes: {known})", Location(str(where)))
        return np.asarray([index[n] for n in src.class_names], np.int64)
    if src.kind == "folder" and names is None:
        if not all(n.isdigit() for n in src.class_names):
            raise SpecError(f"the folder's classes ({', '.join(src.class_names[:5])}"
                            f"{', ...' if src.classes > 5 else ''}) cannot be matched to the model's outputs by "
                            f"name: there is no classes.json beside {model_path.name} (the run directory's class "
                            f"names in label order); add it, or name the folders by class index 0..{classes - 1}",
                            Location(src.path))
        return np.asarray([int(n) for n in src.class_names], np.int64)
    return np.arange(max(src.classes, 1), dtype=np.int64)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def loss_of(outputs: np.ndarray, y: np.ndarray, activation: str) -> float:
    """The loss training minimises, on the model's outputs (float64): categorical
    cross-entropy of softmax probabilities or of logits (linear), binary cross-entropy per
    class for sigmoid heads (one-hot targets), each as Keras computes it."""
    eps = 1e-7
    n, classes = outputs.shape
    if activation == "linear":
        return float(-np.mean(_log_softmax(outputs)[np.arange(n), y]))
    if activation == "sigmoid":
        p = np.clip(outputs, eps, 1 - eps)
        t = np.zeros_like(p)
        t[np.arange(n), y] = 1.0
        return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))
    p = outputs / outputs.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(np.clip(p[np.arange(n), y], eps, 1 - eps))))


def check_batch_size(batch_size) -> None:
    """evaluate's --batch-size: an integer from 1 to 2**20."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 1 << 20:
        raise SpecError(f"--batch-size must be an integer from 1 to {1 << 20:,} (got {batch_size!r})")


def check_top(top) -> None:
    """predict's --top: an integer >= 1."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise SpecError(f"--top must be an integer >= 1 (got {top!r})")


def evaluate(model_ref, data, *, batch_size: int = 64, confusion_csv: str | os.PathLike | None = None,
             force: bool = False) -> dict:
    """Loss, top-1 and top-5 accuracy, per-class accuracy and the confusion matrix on the
    data's test set (all of it when it has none). The data's classes are matched to the
    model's by name (see `label_map`); the loss is the one the head trains with (see
    `loss_of`).

    Args:
        model_ref: a run directory or a .keras file.
        data: an image folder, a CIFAR directory or an .npz (as for training).
        batch_size: images per batch.
        confusion_csv: also write the confusion matrix there (rows: true class, columns: predicted),
            checked before any work; an existing file is replaced only with `force`.
    """
    import sys

    from .precheck import check_evaluate  # every mistake the files show, at once, before TensorFlow (issue 30)

    check_evaluate(model_ref, data, batch_size=batch_size, confusion_csv=confusion_csv, force=force,
                   rules=sys.modules[__name__])
    if confusion_csv is not None:
        from ..core.atomic import check_output

        check_output(confusion_csv, force)
    from . import data as data_mod

    check_batch_size(batch_size)
    model_path, names = model_file(model_ref)
    src = data_mod.open_source(data)
    model = _load(model_path)
    h, w, c = model.inputs[0].shape[1:]
    classes = int(_main_output(model).shape[-1])
    activation = head_activation(model)
    relabel = label_map(src, names, classes, model_path)
    ys = np.asarray(src.labels) if src.kind == "folder" else (src.y_test if src.y_test is not None else src.y_train)
    check_label_range(relabel[ys] if len(ys) else ys, classes, str(data))  # the precheck's rule
    mode, mode_from = preprocess_of(model_path)
    ds, y = data_mod.evaluation_dataset(src, (h, w), c, classes, batch_size, relabel, preprocess=mode)
    outs = []
    for xb, _ in ds:
        out = model(xb, training=False)
        out = out[0] if isinstance(out, (list, tuple)) else out
        outs.append(np.asarray(out, dtype="float64"))
    p = np.concatenate(outs)
    loss = loss_of(p, y, activation)
    order = np.argsort(-p, axis=1, kind="stable")
    top1 = float(np.mean(order[:, 0] == y))
    k = min(5, classes)
    top5 = float(np.mean(np.any(order[:, :k] == y[:, None], axis=1)))
    pred = order[:, 0]
    cm = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    # the model's class names: the run's; else an npz's or CIFAR's (in label order); else indices
    label_names = names or (src.class_names if src.kind != "folder" else [])
    label_names = list(label_names)[:classes] + [str(i) for i in range(len(label_names), classes)]
    per_class = [{"class": i, "name": label_names[i], "images": int(cm[i].sum()),
                  "accuracy": float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None} for i in range(classes)]
    if confusion_csv is not None:
        import csv
        import io

        from ..core.atomic import write_text_atomic

        buf = io.StringIO()
        # every name quoted (commas, quotes, CR and LF inside stay in their cell), counts as numbers
        w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(["true\\predicted", *(csv_cell(n) for n in label_names[:classes])])
        w.writerows([csv_cell(label_names[i]), *(int(v) for v in cm[i])] for i in range(classes))
        write_text_atomic(Path(confusion_csv), buf.getvalue(), force=force)
    return {"model": str(model_path), "data": str(data), "images": int(len(y)), "head": activation,
            "preprocess": {"mode": mode, "from": mode_from}, "loss": loss,
            "top1": top1, "top5": top5, "per_class": per_class, "confusion": cm.tolist(),
            **({"confusion_csv": str(confusion_csv)} if confusion_csv else {})}


def predict(model_ref, images: list[str], *, top: int = 5, say: Callable[[str], None] = lambda m: None) -> list[dict]:
    """The top-k classes of each image (names from the run's classes.json when known), with
    their probability: the softmax (of the logits, for a linear head), or each class's own
    sigmoid probability for a sigmoid head (which need not add up to 1). `top` is at least
    1; above the number of classes, every class is given and `say` is told so."""
    import sys

    from .precheck import check_predict  # every mistake the files show, at once, before TensorFlow (issue 30)

    check_predict(model_ref, images, top=top, rules=sys.modules[__name__])
    check_top(top)
    model_path, names = model_file(model_ref)
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency
        raise ArchspecError("predict needs pillow: pip install pillow") from None
    model = _load(model_path)
    h, w, c = model.inputs[0].shape[1:]
    batch = []
    for f in images:
        if not Path(f).is_file():
            raise SpecError("no such image", Location(str(f)))
        try:
            with Image.open(f) as im:
                im = im.convert("L" if c == 1 else "RGB").resize((w, h), Image.BILINEAR)
                arr = np.asarray(im, dtype="float32")
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise SpecError(f"unreadable image: {type(exc).__name__}: {exc}", Location(str(f))) from None
        batch.append(arr[..., None] if c == 1 else arr)
    activation = head_activation(model)
    mode, _ = preprocess_of(model_path)
    from ..language.preprocess import check_channels, preprocess

    problem = check_channels(mode, int(c))
    if problem:
        raise SpecError(problem)
    out = model(preprocess(np.stack(batch), mode), training=False)
    out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out, dtype="float64")
    if activation == "linear":  # logits: their softmax
        out = np.exp(_log_softmax(out))
    k = min(top, out.shape[-1])
    if k < top:
        say(f"note: --top {top} is more than the model's {k} classes: all {k} are given")
    result = []
    for f, probs in zip(images, out):
        idx = np.argsort(-probs)[:k]
        result.append({"image": str(f), "top": [{"class": int(i), "name": (names[i] if names and i < len(names) else
                                                                             str(int(i))),
                                                 "probability": float(probs[i])} for i in idx]})
    return result
