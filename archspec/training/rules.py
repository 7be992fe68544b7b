"""The training commands' rules on their inputs, written once: the loop, evaluate and the
export's check data apply them as they run, and `precheck` applies the same functions to
the same inputs before TensorFlow is imported (so a precheck refuses nothing the command
would accept, and says it in the command's words). No framework here (NumPy only).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.errors import Location, SpecError

#: the run directory's lock file (`loop.RunLock`)
LOCK = ".lock"


def _at(raw, path: tuple):
    """The YAML location of `path` in a recipe or spec (None for one built in Python) and
    its dotted name."""
    from ..language.loader import format_path

    return (raw.locate(path) if raw is not None else None), format_path(path)


# ---------------------------------------------------------------- the plan


def scaled_warmup(recipe, epochs: int | None, say=lambda m: None):
    """`recipe` for a run of `epochs` (--epochs): when they are within the schedule's warm-up,
    the warm-up is scaled with them (by the share of the recipe's epochs they are, and at most
    `epochs - 1`), so the learning rate still reaches the recipe's peak; said in one line.
    Without --epochs, or past the warm-up, the recipe as it is."""
    s = recipe.schedule
    phases = recipe.planned_phases()
    if epochs is None or len(phases) != 1 or not s.warmup_epochs or epochs > s.warmup_epochs:
        return recipe
    w = min(epochs - 1, round(s.warmup_epochs * epochs / phases[0].epochs))
    say(f"--epochs {epochs} is within the schedule's {s.warmup_epochs}-epoch warm-up (of the recipe's "
        f"{phases[0].epochs} epochs): the warm-up is scaled with it to {w} epoch{'s' if w != 1 else ''}, so the "
        f"learning rate reaches the recipe's peak ({phases[0].learning_rate or recipe.optimizer.learning_rate:g})")
    return recipe.model_copy(update={"schedule": s.model_copy(update={"warmup_epochs": w})})


def plan(recipe, epochs: int | None = None) -> list[dict]:
    """The phases with their global epoch ranges: [{name, start, end, phase}, ...]."""
    phases = recipe.planned_phases()
    if epochs is not None:
        if len(phases) > 1:
            raise SpecError(f"--epochs sets the epochs of a recipe without phases; {recipe.name} has "
                            f"{len(phases)} (use --recipe-set phases[K].epochs=N)")
        phases = [phases[0].model_copy(update={"epochs": epochs})]
    out, start = [], 0
    for p in phases:
        out.append({"name": p.name, "start": start, "end": start + p.epochs, "phase": p})
        start += p.epochs
    return out


def check_distribute(distribute: str | None) -> None:
    """Refuse a strategy that does not exist (before the run directory is made); the cluster
    of multi_worker is checked by `multiworker.cluster_of`."""
    if distribute not in (None, "none", "mirrored", "multi_worker"):
        raise SpecError(f"--distribute must be none, mirrored or multi_worker (got {distribute!r})")


# ---------------------------------------------------------------- the spec, the recipe and the data


def check_include_top(spec, raw=None) -> None:
    """Training needs the spec's classifier."""
    if not spec.head.include_top:
        raise SpecError("training needs the spec's classifier: head.include_top is false",
                        *_at(raw, ("head", "include_top")))


def check_size_agrees(spec, overrides, recipe, recipe_raw, resume: bool) -> None:
    """`--set input.shape=...` sets the size the data is read at; a recipe that reads it at
    another (`data.image_size`) disagrees with the user, which is an error before anything
    runs (the recipe's size used to win silently, or fail later as a shape error)."""
    asked = [o for o in overrides or () if o.split("=", 1)[0].strip().startswith("input.shape")]
    size = recipe.data.image_size
    if resume or not asked or size is None or tuple(size) == tuple(spec.input.shape[:2]):
        return
    h, w = spec.input.shape[:2]
    raise SpecError(f"is {size[0]}x{size[1]}, but --set {asked[-1]} asks for {h}x{w} images: leave one out, or "
                    f"--recipe-set data.image_size=[{h},{w}]", *_at(recipe_raw, ("data", "image_size")))


def check_crop_padding(recipe, recipe_raw, size) -> None:
    """A pad larger than the images only adds zeros (a million-pixel pad was an out-of-memory
    error after the run directory was made)."""
    pad = recipe.augmentation.crop_padding
    if pad and pad > max(size):
        raise SpecError(f"is {pad}, more than the images' size {size[0]}x{size[1]} (a pad beyond the image only "
                        f"adds zeros; the notes pad 32x32 CIFAR images by 4)",
                        *_at(recipe_raw, ("augmentation", "crop_padding")))


def check_aux_weights(recipe, recipe_raw, outputs: int) -> None:
    """`loss.aux_weights` has one weight per auxiliary output of a model with `outputs`."""
    aux = recipe.loss.aux_weights
    if outputs > 1 and aux is not None and len(aux) != outputs - 1:
        raise SpecError(f"loss.aux_weights has {len(aux)} weights but the model has {outputs - 1} auxiliary outputs",
                        _at(recipe_raw, ("loss", "aux_weights"))[0])


def check_label_range(labels, classes: int, where: str, *, check_data: bool = False) -> None:
    """Every label names one of the model's `classes` (`labels` as the command reads them:
    evaluate's, already mapped to the model's class order, or the export check's images)."""
    top = int(np.max(labels)) if len(labels) else -1
    if top >= classes:
        if check_data:
            raise SpecError(f"{where}: the check data has labels up to {top} but the model has {classes} classes")
        raise SpecError(f"the data has label {top} but the model has {classes} classes (0..{classes - 1})",
                        Location(where))


# ---------------------------------------------------------------- the run directory


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def check_replaceable(out: Path, inputs: list = ()) -> None:
    """What `--force` may replace: a run directory (it holds run.json) or an empty directory,
    and never one holding an input of the run or the current directory. Raises SpecError."""
    where = Location(str(out))
    if out.is_symlink():
        raise SpecError("is a symbolic link: --force replaces only a run directory itself", where)
    if not out.is_dir():
        raise SpecError("is not a directory: --force replaces only a run directory (one with run.json) or an "
                        "empty directory", where)
    if not (out / "run.json").is_file() and any(p.name != LOCK for p in out.iterdir()):
        raise SpecError("is not a run directory of archspec train (no run.json) and not empty: --force replaces only "
                        "a run directory or an empty directory", where)
    root = out.resolve()
    if _inside(Path.cwd().resolve(), root):
        raise SpecError("holds the current directory: --force would delete it", where)
    for p in inputs:
        if p is not None and isinstance(p, (str, os.PathLike)) and os.path.lexists(p):
            if _inside(Path(p).resolve(), root):
                raise SpecError(f"holds {os.fspath(p)}, an input of this run: --force would delete it", where)
