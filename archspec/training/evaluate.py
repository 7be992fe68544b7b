"""`archspec evaluate` and `archspec predict`: a trained model (a run directory or a
`.keras` file) on data from disk: loss, top-1/top-5, per-class accuracy and the confusion
matrix; top-k classes of single images with the class names of the training data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import ArchspecError, Location, SpecError


def resolve_model(ref: str | os.PathLike) -> tuple[Path, list[str] | None]:
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
    names = json.loads(names_file.read_text()) if names_file.is_file() else None
    return model, names


def _load(model_path: Path):
    from ..api import _keras_build

    _keras_build()
    import keras

    try:
        return keras.models.load_model(model_path, compile=False)
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for an unreadable file
        raise ArchspecError(f"cannot load {model_path}: {exc}") from None


def _main_output(model):
    out = model.outputs[0] if isinstance(model.outputs, list) else model.outputs
    return out


def evaluate(model_ref, data, *, batch_size: int = 64, confusion_csv: str | os.PathLike | None = None) -> dict:
    """Loss, top-1 and top-5 accuracy, per-class accuracy and the confusion matrix on the
    data's test set (all of it when it has none).

    Args:
        model_ref: a run directory or a .keras file.
        data: an image folder, a CIFAR directory or an .npz (as for training).
        batch_size: images per batch.
        confusion_csv: also write the confusion matrix there (rows: true class, columns: predicted).
    """
    from . import data as data_mod

    model_path, names = resolve_model(model_ref)
    src = data_mod.open_source(data)
    model = _load(model_path)
    h, w, c = model.inputs[0].shape[1:]
    classes = int(_main_output(model).shape[-1])
    if max(int(np.max(src.y_test if src.y_test is not None else (src.y_train if src.kind != "folder" else
                                                                  src.labels))), 0) >= classes:
        raise SpecError(f"the data has labels the model cannot predict (it has {classes} classes)", Location(str(data)))
    ds, y = data_mod.evaluation_dataset(src, (h, w), c, classes, batch_size)
    probs = []
    for xb, _ in ds:
        out = model(xb, training=False)
        out = out[0] if isinstance(out, (list, tuple)) else out
        probs.append(np.asarray(out, dtype="float64"))
    p = np.concatenate(probs)
    eps = 1e-7
    loss = float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], eps, 1.0))))
    order = np.argsort(-p, axis=1)
    top1 = float(np.mean(order[:, 0] == y))
    k = min(5, classes)
    top5 = float(np.mean(np.any(order[:, :k] == y[:, None], axis=1)))
    pred = order[:, 0]
    cm = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    label_names = names or src.class_names
    label_names = list(label_names) + [str(i) for i in range(len(label_names), classes)]
    per_class = [{"class": i, "name": label_names[i], "images": int(cm[i].sum()),
                  "accuracy": float(cm[i, i] / cm[i].sum()) if cm[i].sum() else None} for i in range(classes)]
    if confusion_csv is not None:
        from ..atomic import write_text_atomic

        lines = ["true\\predicted," + ",".join(label_names[:classes])]
        lines += [label_names[i] + "," + ",".join(str(v) for v in cm[i]) for i in range(classes)]
        write_text_atomic(Path(confusion_csv), "\n".join(lines) + "\n")
    return {"model": str(model_path), "data": str(data), "images": int(len(y)), "loss": loss, "top1": top1,
            "top5": top5, "per_class": per_class, "confusion": cm.tolist(),
            **({"confusion_csv": str(confusion_csv)} if confusion_csv else {})}


def predict(model_ref, images: list[str], *, top: int = 5) -> list[dict]:
    """The top-k classes of each image (names from the run's classes.json when known)."""
    model_path, names = resolve_model(model_ref)
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
    out = model(np.stack(batch), training=False)
    out = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
    k = min(top, out.shape[-1])
    result = []
    for f, probs in zip(images, out):
        idx = np.argsort(-probs)[:k]
        result.append({"image": str(f), "top": [{"class": int(i), "name": (names[i] if names and i < len(names) else
                                                                             str(int(i))),
                                                 "probability": float(probs[i])} for i in idx]})
    return result
