"""Training recipes: reviewable YAML, validated like specs (format 1).

A recipe says how to train a network: the data and its pipeline, augmentation, the
optimizer, the learning-rate schedule, the loss, metrics, epochs, precision, callbacks,
and optional `phases` (fine-tuning: each phase with its epochs, learning rate and what is
frozen). It is loaded by the spec loader (safe YAML, positions kept, `extends:` of a
bundled recipe or a path, `--recipe-set` overrides) and every problem is a located
one-line error. Everything here is static (no TensorFlow): `phase_counts` gives the
trainable and frozen parameters of each phase from the graph IR.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, Field, ValidationError, model_validator

from ..core.errors import SpecError, SpecErrors
from ..ir.graph import Graph
from ..language.common import Bool, Float, NonNegInt, PosFloat, PosInt, Rate, Strict
from ..language.loader import RawSpec, apply_overrides, find_document, format_path, load_with_extends

Fraction = Rate  # in [0, 1)


class Data(Strict):
    """Where the images come from is given on the command line (`--data PATH`: an image
    folder with one sub-folder per class, a CIFAR-10/100 python directory, or an `.npz`
    with x_train, y_train, x_test, y_test); how they are fed is given here."""

    image_size: tuple[PosInt, PosInt] | None = Field(
        default=None, description="Height, width the images are resized to (default: the spec's input).")
    batch_size: PosInt = 32
    validation_split: Fraction = Field(
        default=0.0, description="Fraction of the training data held out for validation (when the data has no "
                                 "validation or test set of its own).")
    shuffle_buffer: NonNegInt = Field(default=10_000, description="Examples shuffled at a time (tf.data's "
                                      "buffer algorithm over example indices, so its size costs no image memory; "
                                      "the order depends on the seed and the epoch only); 0 or 1: no shuffling "
                                      "(the data's own order).")
    cache: Bool = Field(default=False, description="Image folders: decode every image once, before the first "
                                                   "epoch, into memory (float32 at the fed size); arrays (.npz, "
                                                   "CIFAR) are in memory anyway.")


class Augmentation(Strict):
    """Keras preprocessing layers, applied to the training batches on the device."""

    flip: Literal["none", "horizontal", "vertical", "horizontal_and_vertical"] = "none"
    translate: Fraction | None = Field(default=None, description="Random translation, a fraction of the size.")
    crop_padding: NonNegInt | None = Field(
        default=None, description="Pad by this many pixels, then crop back at random (CIFAR's 4-pixel crop).")
    rotation: Fraction | None = Field(default=None, description="Random rotation, a fraction of a full turn.")
    zoom: Fraction | None = None
    contrast: Fraction | None = None
    mixup: PosFloat | None = Field(default=None, description="Mixup's Beta(alpha, alpha).")
    cutmix: PosFloat | None = Field(default=None, description="CutMix's Beta(alpha, alpha).")


class Optimizer(Strict):
    name: Literal["sgd", "adam", "adamw", "rmsprop"] = "sgd"
    learning_rate: PosFloat = 0.01
    momentum: Fraction = Field(default=0.9, description="sgd and rmsprop.")
    nesterov: Bool = False
    weight_decay: Float = Field(default=0.0, ge=0, description="Decoupled weight decay (adamw, sgd).")
    clipnorm: PosFloat | None = None


class Schedule(Strict):
    """The learning rate over the epochs (of a phase, when there are phases)."""

    name: Literal["constant", "step", "cosine", "plateau"] = "constant"
    warmup_epochs: NonNegInt = Field(default=0, description="Linear warm-up from 0 (step and cosine).")
    boundaries: list[PosInt] = Field(default_factory=list, description="step: the epochs where the rate drops.")
    factor: PosFloat = Field(default=0.1, description="step and plateau: what the rate is multiplied by.")
    patience: PosInt = Field(default=5, description="plateau: epochs without improvement before a drop.")
    min_learning_rate: Float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _boundaries_increase(self):
        if self.boundaries != sorted(set(self.boundaries)):
            raise ValueError(f"boundaries must increase (got {self.boundaries})")
        return self


class Loss(Strict):
    label_smoothing: Fraction = 0.0
    aux_weights: list[Float] | None = Field(
        default=None, description="Weights of auxiliary outputs after the main one (GoogLeNet: [0.3, 0.3]); "
                                  "default: the spec's head.aux loss weights.")


class Checkpoint(Strict):
    monitor: str = "val_loss"
    mode: Literal["auto", "min", "max"] = "auto"
    max_to_keep: PosInt = 3


class EarlyStopping(Strict):
    monitor: str = "val_loss"
    patience: PosInt = 10
    restore_best: Bool = True


class TensorBoard(Strict):
    histogram_freq: NonNegInt = Field(default=0, description="Weight histograms every N epochs (0: none).")


class Callbacks(Strict):
    checkpoint: Checkpoint = Field(default_factory=Checkpoint, description="best.keras on the monitored metric; "
                                                                           "checkpoints/ every epoch.")
    early_stopping: EarlyStopping | None = None
    csv_log: Bool = True
    tensorboard: TensorBoard | None = Field(default_factory=TensorBoard)
    terminate_on_nan: Bool = True
    allow_collapse: Bool = Field(default=False, description=(
        "Accept a run whose network collapsed (its last 3 or more epochs at chance, after an earlier one was "
        "better; `archspec.training.callbacks.find_collapse`): a warning instead of exit 1 (as `train "
        "--allow-collapse`)."))


class FreezeUntil(Strict):
    until: str = Field(min_length=1, description="Freeze every layer before this one (in the order of the model's "
                                                 "layers); it and later layers train.")


class FreezeFrom(Strict):
    from_: str = Field(alias="from", min_length=1, description="Freeze this layer and every later one (in the "
                                                               "order of the model's layers).")


class FreezeStages(Strict):
    stages: list[str] = Field(min_length=1, description="Freeze these parts: `stem`, stage names, `head`.")


Freeze = Union[Literal["none", "all_but_head"], FreezeUntil, FreezeFrom, FreezeStages]


class Phase(Strict):
    name: str = Field(min_length=1, max_length=100)
    epochs: PosInt
    learning_rate: PosFloat | None = Field(default=None, description="Default: optimizer.learning_rate.")
    freeze: Freeze = Field(default="none", description=(
        "What does not train: none, all_but_head, {until: LAYER} (layers before LAYER), {from: LAYER} "
        "(LAYER and later), {stages: [...]}. Batch-norm layers of a frozen part run in inference mode."))


class Recipe(Strict):
    format: Literal[1] = 1
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str = ""
    extends: str | None = Field(default=None, description="A recipe (bundled name or path) this one overrides.")
    data: Data = Field(default_factory=Data)
    augmentation: Augmentation = Field(default_factory=Augmentation)
    optimizer: Optimizer = Field(default_factory=Optimizer)
    schedule: Schedule = Field(default_factory=Schedule)
    loss: Loss = Field(default_factory=Loss)
    metrics: list[Literal["top1", "top5"]] = Field(default_factory=lambda: ["top1", "top5"])
    epochs: PosInt = Field(default=10, description="Without phases: the number of epochs.")
    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] = "float32"
    jit_compile: Bool = False
    seed: NonNegInt = 0
    callbacks: Callbacks = Field(default_factory=Callbacks)
    phases: list[Phase] = Field(default_factory=list, description="Fine-tuning phases, run in order.")

    @model_validator(mode="after")
    def _phase_names_unique(self):
        names = [p.name for p in self.phases]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"phase names must be unique (got {', '.join(dup)} more than once)")
        return self

    def planned_phases(self) -> list[Phase]:
        """The phases to run: the recipe's, or one phase of `epochs` with nothing frozen."""
        return list(self.phases) or [Phase(name="train", epochs=self.epochs)]


# ---------------------------------------------------------------- loading


def bundled_recipe_dir() -> Path:
    """The bundled recipes: installed package data, else the source tree's recipes/."""
    from ..core.package_data import package_data

    return package_data("recipes")


def bundled_recipes() -> list[str]:
    return sorted(p.stem for p in bundled_recipe_dir().glob("*.yaml"))


def find_recipe(ref: str | os.PathLike, relative_to: Path | None = None) -> Path:
    return find_document(ref, relative_to, bundled_recipe_dir(), "recipe")


def load_recipe(ref: str | os.PathLike, overrides: list[str] | None = None) -> tuple[Recipe, RawSpec]:
    """Load and validate a recipe (path or bundled name) with `--recipe-set` overrides;
    every problem is a located error worded for recipes (the keys a recipe takes, the
    metrics a monitor can watch)."""
    from ..language import spec_errors

    try:
        raw = apply_overrides(load_with_extends(ref, find=find_recipe), list(overrides or []), flag="--recipe-set")
    except SpecError as exc:
        raise _for_recipes(exc) from None
    try:
        recipe = Recipe.model_validate(raw.data)
    except ValidationError as exc:
        raise _for_recipes(spec_errors(exc, raw), exc, raw.data) from None
    check_monitors(recipe, raw)
    return recipe, raw


# the loader's words for specs, as they read for a recipe
_SPEC_WORDS = (("empty spec; expected a mapping with at least 'name' and 'input'",
                "empty recipe; expected a mapping with at least 'format: 1' and 'name'"),
               ("expected a YAML spec", "expected a YAML recipe"), ("for a spec", "for a recipe"),
               ("not a spec file", "not a recipe file"), ("of a spec (got", "of a recipe (got"),
               ("expected a spec file", "expected a recipe file"), ("read a spec", "read a recipe"))


def _for_recipes(exc: SpecError, validation: ValidationError | None = None, data=None) -> SpecError:
    """A loader or validation error reworded for a recipe: the spec's words replaced, and an
    unknown key answered with the keys the recipe takes at that place (and the closest)."""
    from ..language import _data_path

    labels = {m.__name__ for m in _all_models(Recipe)}  # a union member's name (FreezeUntil) is no key

    def clean(path: tuple) -> tuple:
        return tuple(p for p in path if p not in labels)

    unknown: dict[str, str] = {}
    unions: set[str] = set()
    for e in (validation.errors() if validation is not None else []):
        if e["type"] == "extra_forbidden":
            path = clean(_data_path(tuple(e["loc"]), data))
            unknown[format_path(path)] = unknown_recipe_key(path)
            if len(_models_at(path[:-1])) > 1:  # a union (freeze): its other members' missing keys are noise
                unions.add(format_path(path[:-1]))

    def fix(e: SpecError) -> SpecError:
        msg, path = e.message, e.path
        if path:
            path = ".".join(p for p in path.split(".") if p not in labels)
        if path in unknown and msg.startswith("unknown key"):
            msg = unknown[path]
        for spec_words, recipe_words in _SPEC_WORDS:
            msg = msg.replace(spec_words, recipe_words)
        return SpecError(msg, e.location, path)

    if isinstance(exc, SpecErrors):
        fixed, seen = [], set()
        for e in map(fix, exc.errors):
            if (e.message == "required key is missing" and (e.path or "").rpartition(".")[0] in unions
                    or e.path in unions and e.message.startswith("must be one of")):
                continue
            if (e.path, e.message) not in seen:
                seen.add((e.path, e.message))
                fixed.append(e)
        return SpecErrors(fixed)
    return fix(exc)


def _all_models(model: type[BaseModel], seen=None) -> set[type[BaseModel]]:
    seen = set() if seen is None else seen
    if model not in seen:
        seen.add(model)
        for f in model.model_fields.values():
            for m in _models(f.annotation):
                _all_models(m, seen)
    return seen


def _models(ann) -> list[type[BaseModel]]:
    import typing

    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return [ann]
    return [m for a in typing.get_args(ann) for m in _models(a)]


def _keys(model: type[BaseModel]) -> list[str]:
    return [f.alias or name for name, f in model.model_fields.items()]


def _models_at(path: tuple) -> list[type[BaseModel]]:
    """The recipe models that can sit at `path` (several for a union)."""
    models: list[type[BaseModel]] = [Recipe]
    for part in path:
        if isinstance(part, int):
            continue
        nxt = []
        for m in models:
            fields = {f.alias or n: f for n, f in m.model_fields.items()}
            if part in fields:
                nxt += _models(fields[part].annotation)
        models = list(dict.fromkeys(nxt))
    return models


def unknown_recipe_key(path: tuple) -> str:
    """'unknown key' at `path` of a recipe, with the keys that place takes and the closest."""
    key = path[-1] if path else "?"
    models = _models_at(path[:-1])
    keys = list(dict.fromkeys(k for m in models for k in _keys(m)))
    shown = key if isinstance(key, str) and key.isprintable() and len(key) <= 100 else str(key)[:100]
    if not keys:
        return f"unknown key {shown!r}"
    close = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = format_path(path[:-1]) or "a recipe's top level"
    return f"unknown key {shown!r}{hint}; {where} takes: {', '.join(keys)}"


def monitors(recipe: Recipe) -> list[str]:
    """What a checkpoint or early stopping can monitor: the loss and the recipe's metrics,
    on the training data or (val_) on the validation data (without validation data, a
    val_ name watches the training figure)."""
    names = ["loss", *dict.fromkeys(recipe.metrics)]
    return names + [f"val_{n}" for n in names]


def maximizes(monitor: str, mode: str) -> bool:
    """Whether a better `monitor` is a larger one: `mode` max, or auto for an accuracy
    (`top1`, `val_top5`, ...: Keras' own auto rule), else smaller (losses)."""
    return mode == "max" or (mode == "auto" and ("top" in monitor or "acc" in monitor))


def check_monitors(recipe: Recipe, raw: RawSpec | None = None) -> None:
    """callbacks.checkpoint.monitor and callbacks.early_stopping.monitor name a figure the
    recipe produces (before: an unknown one was a Keras error after the run had started)."""
    known = monitors(recipe)
    cbs = recipe.callbacks
    for key, cb in (("checkpoint", cbs.checkpoint), ("early_stopping", cbs.early_stopping)):
        if cb is None or cb.monitor in known:
            continue
        path = ("callbacks", key, "monitor")
        close = difflib.get_close_matches(cb.monitor, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        got = cb.monitor if cb.monitor.isprintable() and len(cb.monitor) <= 100 else cb.monitor[:100]
        raise SpecError(f"unknown metric {got!r}{hint}: the recipe's metrics ({', '.join(recipe.metrics) or 'none'}) "
                        f"and loss give {', '.join(known)}", raw.locate(path) if raw is not None else None,
                        format_path(path))


# ---------------------------------------------------------------- phases against a network


def _part_of(graph: Graph, spec) -> dict[str, str]:
    """Each layer's part of the network: `input`, `stem`, its stage's name, or `head`."""
    from ..language import stage_of

    part = {}
    for b in graph.blocks:
        if b.depth == 0:
            for n in b.nodes:
                part.setdefault(n, stage_of(spec, tuple(b.path)))
    return part


def frozen_layers(graph: Graph, spec, phase: Phase, raw: RawSpec | None = None, index: int = 0) -> set[str]:
    """The names of the layers a phase freezes; an unknown layer or stage is a located error."""
    names = [n.name for n in graph.nodes]
    f = phase.freeze
    where = ("phases", index, "freeze")

    def unknown(what: str, value: str, known: list[str], key: str):
        close = difflib.get_close_matches(value, known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        path = where + (key,)
        raise SpecError(f"{graph.name} has no {what} named {value!r}{hint}",
                        raw.locate(path) if raw is not None else None, format_path(path))

    if f == "none":
        return set()
    part = _part_of(graph, spec)
    if f == "all_but_head":
        return {n for n in names if part.get(n) != "head"}
    if isinstance(f, FreezeUntil):
        if f.until not in names:
            unknown("layer", f.until, names, "until")
        return set(names[:names.index(f.until)])
    if isinstance(f, FreezeFrom):
        if f.from_ not in names:
            unknown("layer", f.from_, names, "from")
        return set(names[names.index(f.from_):])
    parts = list(dict.fromkeys(part.values()))
    for k, s in enumerate(f.stages):
        if s not in parts:
            unknown("stage", s, parts, "stages")
    return {n for n in names if part.get(n) in set(f.stages)}


def describe_freeze(f) -> str:
    if f == "none":
        return "everything trains"
    if f == "all_but_head":
        return "the head trains, the rest is frozen"
    if isinstance(f, FreezeUntil):
        return f"frozen before {f.until}; {f.until} and later train"
    if isinstance(f, FreezeFrom):
        return f"frozen from {f.from_} on; earlier layers train"
    return f"frozen: {', '.join(f.stages)}"


def phase_counts(graph: Graph, spec, recipe: Recipe, raw: RawSpec | None = None) -> list[dict]:
    """Per phase: its epochs, learning rate, the rule, and the trainable and frozen
    parameters (static; batch-norm moving statistics are non-trainable in every phase)."""
    rows = []
    for i, phase in enumerate(recipe.planned_phases()):
        frozen = frozen_layers(graph, spec, phase, raw, i)
        trainable = sum(n.trainable for n in graph.nodes if n.name not in frozen)
        rows.append({"name": phase.name, "epochs": phase.epochs,
                     "learning_rate": phase.learning_rate or recipe.optimizer.learning_rate,
                     "rule": describe_freeze(phase.freeze), "trainable": trainable,
                     "frozen": graph.trainable_params - trainable,
                     "non_trainable": graph.params - graph.trainable_params,
                     "frozen_layers": sum(1 for n in graph.nodes if n.name in frozen and n.op != "input")})
    return rows


def recipe_phases(recipe_ref, recipe_overrides, spec, graph: Graph | None = None) -> list[dict] | None:
    """`inspect/report --recipe R`: the trainable and frozen counts of each phase of recipe
    `recipe_ref` (with `recipe_overrides`) on `spec` (lowered unless `graph` is given), or
    None without a recipe."""
    if not recipe_ref:
        return None
    from ..ir.pipeline import lower_spec

    recipe, raw = load_recipe(recipe_ref, recipe_overrides)
    return phase_counts(graph or lower_spec(spec), spec, recipe, raw)


def schema_text(of_recipe: bool = False) -> str:
    """`archspec schema`: the JSON Schema of the spec language (or of recipes), for editors."""
    import json

    from ..language.schema import Spec, editor_schema

    return json.dumps(editor_schema(Recipe if of_recipe else Spec), indent=2) + "\n"
