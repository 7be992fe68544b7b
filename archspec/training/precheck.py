"""Every mistake that the files alone show, found before TensorFlow is imported, all at once.

`train`, `evaluate`, `predict` and `export` call these first. They read only what needs no
framework: the spec (loaded and lowered: pure Python), the recipe, the data's listing and
headers (an image folder's class folders and each file's image header, read by PIL without
decoding; an .npz's array headers, its labels and class names, never its images; a CIFAR
directory's batches, which its reader takes without TensorFlow), the paths, and of a
trained model its `archspec.json` and `config.json` (input shape, classes), `classes.json`
and the run's `spec.yaml`. Each problem is one located line; all of them are raised together
(`Problems`, exit 2), where the commands used to stop at the first, and most of them only
after TensorFlow had loaded (10 to 50 seconds).

A precheck refuses nothing that the command would accept: every rule is the command's own
function, called here on the same inputs (`data.check_against_spec`, `recipe.load_recipe`,
`training.rules`: the plan, the sizes, what --force replaces, ...). The loop and evaluate
modules import this one, so what remains of their own (`check_distribute` as the loop
exports it, evaluate's `model_file`, `label_map`, ...) is passed in (`rules=`: the calling
module) rather than imported back. A check that fails in an
unexpected way (not a SpecError) is left to the command itself, which meets the same input
and reports it as it always has.

What stays after TensorFlow: whether each image decodes (TensorFlow's decoder is the
judge; PIL reads the header only), an .npz's NaN or infinite pixels (the arrays are not
read here), what Keras makes of a model file it loads, and the checks that need the built
model (the export check's agreement, weights a model file holds).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..core.errors import Location, SpecError, SpecErrors
from .rules import check_label_range

#: a `.keras` member read to learn the model's input and classes is at most this large
MAX_RECORD_BYTES = 64 << 20


class Problems(SpecErrors):
    """The problems a precheck found: each SpecError on its own line (exit 2). As an
    exception it is raised only when there are two or more; one is raised as itself."""

    def __init__(self, errors: list[SpecError] | None = None):
        self.errors = list(errors or [])
        if self.errors:
            super().__init__(self.errors)

    def add(self, exc: SpecError) -> None:
        for e in (exc.errors if isinstance(exc, SpecErrors) else [exc]):
            if e.one_line() not in {x.one_line() for x in self.errors}:
                self.errors.append(e)

    def catch(self, where: Location | None = None, strip: str | None = None) -> "_Catch":
        """A context in which a SpecError is recorded (at `where` when it names no place;
        `strip`: the words of its message that `where` now says) and the block is left."""
        return _Catch(self, where, strip)

    def reworded(self, option: str) -> "Problems":
        """The lines as the command line words them (an existing output names `option`)."""
        return Problems([e.reworded(option) if hasattr(e, "reworded") else e for e in self.errors])

    def raise_if_any(self) -> None:
        if len(self.errors) == 1:
            raise self.errors[0]
        if self.errors:
            raise Problems(self.errors)


class _Catch:
    def __init__(self, problems: Problems, where: Location | None, strip: str | None):
        self.problems, self.where, self.strip = problems, where, strip

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None:
            return False
        if isinstance(exc, SpecError):
            if exc.location is None and self.where is not None and not isinstance(exc, SpecErrors):
                msg = exc.message
                for words in (str(self.where), self.strip):  # what the place now says, said once
                    if words and msg.startswith(words + " "):
                        msg = msg[len(words):].lstrip(" :")
                        break
                exc = SpecError(msg, self.where, exc.path)
            self.problems.add(exc)
            return True
        return _unexpected(exc)


def _unexpected(exc: BaseException) -> bool:
    """Whether to pass over `exc`, a failure of a precheck that is not a SpecError: it is the
    command's to meet and report, as it always has (ARCHSPEC_PRECHECK_STRICT=1: raised,
    for the tests)."""
    return isinstance(exc, Exception) and not os.environ.get("ARCHSPEC_PRECHECK_STRICT")


def _never_in_the_way(check: Callable) -> Callable:
    """A precheck that raises only its SpecErrors; any other failure is passed over (see
    `_unexpected`): the command then runs as it would have without it."""
    import functools

    @functools.wraps(check)
    def run(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except SpecError:
            raise
        except Exception as exc:  # noqa: BLE001 - see _unexpected
            if not _unexpected(exc):
                raise
            return None
    return run


# ---------------------------------------------------------------- data


def scan_data(path) -> Any:
    """The data at `path` as `data.open_source` finds it, checked by its own rules, without
    TensorFlow and without reading images: an image folder's listing and every image's
    header (`data.header_problems`), an .npz's headers, labels and class names with
    zero-cost stand-ins for its image arrays (`data.npz_source`), a CIFAR directory read by
    its reader. Returns a `data.Source` (its images not loaded) or raises the SpecError."""
    from . import data as data_mod

    p = Path(path)
    kind = data_mod.source_kind(p)
    if kind == "cifar":  # its reader needs no TensorFlow; the pickles hold labels and images together
        return data_mod.open_source(p)
    if kind == "npz":
        return _npz_preview(p)
    classes, files, labels = data_mod.list_folder(p)
    error = data_mod.unreadable_images(data_mod.header_problems(files), files, p)
    if error is not None:
        raise error
    return data_mod.Source("folder", str(p), classes, files=files, labels=labels)


def _npz_preview(p: Path):
    """An .npz checked as `data._npz` checks it, its image arrays never read: each member's
    shape and dtype from its header, the labels and class names read (small), every other
    member a read-only broadcast of one zero to its declared shape (no memory)."""
    from . import data as data_mod

    headers = data_mod._npz_headers(p)  # bounds, truncation, objects: refused before anything is read
    arrays = {}
    with np.load(p, allow_pickle=False) as z:
        for k in z.files:
            if k in ("y_train", "y_test", "class_names"):
                arrays[k] = z[k]
                continue
            shape, dtype = headers[k]
            if dtype.kind == "f":  # finite or not is known only from the pixels: checked when read
                dtype = np.dtype("u1")
            arrays[k] = np.broadcast_to(np.zeros((), dtype), shape)
    return data_mod.npz_source(p, arrays)


# ---------------------------------------------------------------- train


@_never_in_the_way
def check_train(spec_ref, recipe_ref, data, out, *, overrides=None, recipe_overrides=None, epochs=None,
                batch_size=None, weights=None, weights_skip=(), resume=False, force=False, distribute=None,
                workers=None, rank=None, rules) -> None:
    """Every problem of `archspec train` that the files show (see the module's docstring),
    raised together, by the rules the loop applies (`training.rules`) and the cluster of
    multi_worker (`multiworker.cluster_of`); `rules`: the training loop's module (its
    `check_distribute`, as it exports it), passed in because it imports this one."""
    from ..ir.pipeline import lower_spec
    from ..language import load, raw_of
    from . import data as data_mod
    from . import rules as shared
    from . import rundir
    from .recipe import frozen_layers, load_recipe

    found = Problems()
    out = Path(out)
    spec = recipe = recipe_raw = src = None
    if resume:
        if not (out / "run.json").is_file():
            return  # not a run directory: the command says so
        run = {}
        with found.catch():
            run = rundir.read_run_json(out)
        with found.catch():
            spec = load(str(out / "spec.yaml"))[0]
        with found.catch():
            recipe, recipe_raw = load_recipe(str(out / "recipe.yaml"))
        data = data or run.get("data")
        epochs = run.get("epochs")
        distribute = distribute or run.get("distribute")
        if not data:
            return found.raise_if_any()
    else:
        with found.catch():
            rundir.check_new_run_path(out)
            if out.exists() or out.is_symlink():
                if not force:
                    raise SpecError("exists; pass --force to start over (its contents are deleted) or --resume to "
                                    "continue", rundir.where(out))
                shared.check_replaceable(out, [data, spec_ref, recipe_ref, weights])
        if weights:
            with found.catch(Location("--weights")):
                rundir.check_weights_file(weights)
        with found.catch():
            spec = load(spec_ref, overrides)[0] if not hasattr(spec_ref, "model_dump") else spec_ref
        with found.catch():
            extra = [f"data.batch_size={batch_size}"] if batch_size else []
            recipe, recipe_raw = load_recipe(recipe_ref, list(recipe_overrides or []) + extra)
        if data is None:
            found.add(SpecError("--data is required: an image folder, a CIFAR directory or an .npz"))
    if data is not None:
        with found.catch():
            src = scan_data(data)
    graph = size = None
    if spec is not None:
        with found.catch():
            shared.check_include_top(spec, raw_of(spec))
        if spec.taps:
            spec = spec.model_copy(update={"taps": []})
        if recipe is not None:
            with found.catch():
                shared.check_size_agrees(spec, overrides, recipe, recipe_raw, resume)
        with found.catch():
            graph = lower_spec(spec)
    if graph is not None and recipe is not None and data is not None and spec.head.include_top:
        fixed = next((n.name for n in graph.nodes if n.op in ("flatten", "reshape")), None)
        if src is not None:
            with found.catch():
                size = data_mod.check_against_spec(src, spec.head.classes, spec.input.shape,
                                                   recipe.data.image_size, fixed)
        if size is None:  # its first problem was the labels, or the data is unreadable: the size all the same
            stand_in = src or data_mod.Source("folder", str(data), ["0"], files=[""], labels=[0])
            with found.catch():
                size = data_mod.check_against_spec(stand_in, 1 << 62, spec.input.shape, recipe.data.image_size,
                                                   fixed)
    if recipe is not None and src is not None:
        with found.catch():
            data_mod.check_split(src, recipe.data.validation_split)
    if size is not None and tuple(size) != tuple(spec.input.shape[:2]):  # the network at the size it is fed
        spec = spec.model_copy(update={"input": spec.input.model_copy(
            update={"shape": (size[0], size[1], spec.input.shape[2])})})
        graph = None
        with found.catch():
            graph = lower_spec(spec)
    if recipe is not None:
        if size is not None:
            with found.catch():
                shared.check_crop_padding(recipe, recipe_raw, size)
        planned, phases = recipe, []
        with found.catch():
            planned = shared.scaled_warmup(recipe, epochs)
        with found.catch(Location(f"--epochs {epochs}"), strip="--epochs"):
            phases = shared.plan(planned, epochs)
        # each phase's freeze rule (the recipe's own phases when --epochs could not plan them)
        for i, phase in enumerate([ph["phase"] for ph in phases] or planned.planned_phases()):
            if graph is not None:
                with found.catch():
                    frozen_layers(graph, spec, phase, recipe_raw, i)
        if graph is not None:
            with found.catch():
                shared.check_aux_weights(recipe, recipe_raw, len(graph.outputs))
    with found.catch(Location(f"--distribute {distribute}"), strip="--distribute"):
        rules.check_distribute(distribute)
    with found.catch():  # --workers and --rank (or TF_CONFIG) of multi_worker
        from .multiworker import cluster_of

        cluster_of(distribute, workers, rank)
    if weights and not resume and graph is not None and os.path.isfile(os.fspath(weights)):
        with found.catch(Location(os.fspath(weights))):  # a file as it is (a name or a URL is resolved later)
            rundir.check_initial_weights(graph, weights, weights_skip)
    found.raise_if_any()


# ---------------------------------------------------------------- a trained model


def model_facts(model_path: Path) -> dict:
    """What a `.keras` file says of its model without Keras: ``shape``, its input (H, W, C)
    (archspec's record, else the input layer's config), and ``classes``, the width of its
    first output when that is a Dense layer; None where the file does not say (or says it
    in a way this does not read: the command, which loads the model, judges then)."""
    facts: dict = {"shape": None, "classes": None}
    try:
        with zipfile.ZipFile(model_path) as z:
            record, config = _member(z, "archspec.json"), _member(z, "config.json")
    except (OSError, zipfile.BadZipFile, ValueError, RecursionError, UnicodeDecodeError):
        return facts
    shape = None
    if isinstance(record, dict) and isinstance(record.get("archspec.input"), dict):
        shape = record["archspec.input"].get("shape")
    inner = config.get("config") if isinstance(config, dict) else None
    layers = inner.get("layers") if isinstance(inner, dict) else None
    by_name = {l.get("name") or (l.get("config") or {}).get("name"): l for l in layers
               if isinstance(l, dict)} if isinstance(layers, list) else {}
    if shape is None and by_name:
        first = next((l for l in by_name.values() if l.get("class_name") == "InputLayer"), None)
        cfg = first.get("config") if isinstance(first, dict) else None
        if isinstance(cfg, dict):
            shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if isinstance(shape, list) and len(shape) == 4 and all(_count(d) for d in shape[1:]):
        facts["shape"] = tuple(int(d) for d in shape[1:])
    outs = inner.get("output_layers") if isinstance(inner, dict) else None
    if isinstance(outs, list) and outs and isinstance(outs[0], list):
        outs = outs[0]
    if isinstance(outs, list) and outs and isinstance(outs[0], str):
        layer = by_name.get(outs[0])
        cfg = layer.get("config") if isinstance(layer, dict) else None
        built = (layer.get("build_config") or {}).get("input_shape") if isinstance(layer, dict) else None
        if (isinstance(layer, dict) and layer.get("class_name") == "Dense" and isinstance(cfg, dict)
                and _count(cfg.get("units")) and (not isinstance(built, list) or len(built) == 2)):
            facts["classes"] = int(cfg["units"])  # a classifier's (batch, classes), as evaluate reads it
    return facts


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _member(z: zipfile.ZipFile, name: str):
    if name not in z.namelist():
        return None
    info = z.getinfo(name)
    if info.file_size > MAX_RECORD_BYTES:
        return None
    return json.loads(z.read(info))


def _model(found: Problems, model_ref, rules):
    """(model path, class names, facts) of a run directory or `.keras` file, each problem
    recorded; (None, None, {}) when it cannot be used."""
    from ..backends.keras.files import check_keras_archive

    model_path, names = None, None
    with found.catch():
        model_path, names = rules.model_file(model_ref)
    if model_path is None:
        return None, None, {}
    with found.catch():
        check_keras_archive(model_path)
        return model_path, names, model_facts(model_path)
    return None, None, {}


@_never_in_the_way
def check_evaluate(model_ref, data, *, batch_size=64, confusion_csv=None, force=False, rules) -> None:
    """Every problem of `archspec evaluate` that the files show, raised together. `rules`:
    the evaluate module (its `model_file`, `label_map`, `preprocess_of`, `check_batch_size`)."""
    from ..core.atomic import check_output

    found = Problems()
    if confusion_csv is not None:
        with found.catch():
            check_output(confusion_csv, force)
    with found.catch(Location(f"--batch-size {batch_size}"), strip="--batch-size"):
        rules.check_batch_size(batch_size)
    model_path, names, facts = _model(found, model_ref, rules)
    src = None
    with found.catch():
        src = scan_data(data)
    classes = facts.get("classes")
    if src is not None and model_path is not None and classes is not None:
        with found.catch():
            relabel = rules.label_map(src, names, classes, model_path)
            ys = (np.asarray(src.labels) if src.kind == "folder" else
                  (src.y_test if src.y_test is not None else src.y_train))
            check_label_range(relabel[ys] if len(ys) else ys, classes, str(data))
    if model_path is not None:
        with found.catch():
            rules.preprocess_of(model_path)
    found.raise_if_any()


@_never_in_the_way
def check_predict(model_ref, images, *, top=5, rules) -> None:
    """Every problem of `archspec predict` that the files show, raised together: the model,
    each image (missing, or one PIL cannot read, as predict reads it), the preprocessing
    against the model's channels. `rules`: the evaluate module."""
    found = Problems()
    with found.catch(Location(f"--top {top}"), strip="--top"):
        rules.check_top(top)
    model_path, names, facts = _model(found, model_ref, rules)
    shape = facts.get("shape")
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - pillow is a dependency; predict says so
        Image = None
    for f in images:
        if not Path(f).is_file():
            found.add(SpecError("no such image", Location(str(f))))
        elif Image is not None:
            try:
                with Image.open(f) as im:
                    if shape is not None:
                        im.convert("L" if shape[2] == 1 else "RGB")
                    else:
                        im.load()
            except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
                found.add(SpecError(f"unreadable image: {type(exc).__name__}: {exc}", Location(str(f))))
    if model_path is not None:
        with found.catch():
            mode, _ = rules.preprocess_of(model_path)
            from ..language.preprocess import check_channels

            problem = check_channels(mode, shape[2]) if shape is not None else None
            if problem:
                raise SpecError(problem)
    found.raise_if_any()


# ---------------------------------------------------------------- export


@_never_in_the_way
def check_export(model_or_spec, found: Problems, *, overrides=None, phi=None, preset=None, check_data=None,
                 spread: Callable | None = None, limit: int = 0, rules=None) -> None:
    """What `export` would find only after TensorFlow, recorded in `found` (the caller adds
    its options' problems and raises them all): a spec that does not load or lower (as
    scaled by `phi`/`preset`), a model file or run directory that cannot be used, and check
    data (`check_data`: a path) that its reader refuses or whose labels, on the images the
    check takes (`spread(n, limit)` of its test split, else of all), pass the model's
    classes. `rules`: the evaluate module (`model_file`)."""
    from ..ir.pipeline import lower_spec
    from ..language import Spec, load

    classes = None
    is_path = isinstance(model_or_spec, (str, os.PathLike))
    p = Path(os.fspath(model_or_spec)) if is_path else None
    if is_path and (p.suffix == ".keras" or (p.is_dir() and (p / "run.json").is_file())):
        model_path, _, facts = _model(found, p, rules)
        classes = facts.get("classes")
    elif is_path or isinstance(model_or_spec, Spec):
        spec = None
        with found.catch():
            spec = model_or_spec if isinstance(model_or_spec, Spec) else load(model_or_spec, overrides)[0]
        if spec is not None and (phi is not None or preset is not None):
            from ..resolving.compound import apply_scaling

            scaled = None
            with found.catch():
                scaled = apply_scaling(spec, phi, preset, lambda m: None)
            spec = scaled
        if spec is not None:
            with found.catch():
                lower_spec(spec)
            if spec.head.include_top and not spec.taps:
                classes = spec.head.classes
    if not isinstance(check_data, (str, os.PathLike)):
        return
    d = Path(os.fspath(check_data))
    from . import data as data_mod

    if d.is_dir() and any(f.is_file() and f.suffix.lower() in data_mod.IMAGE_SUFFIXES for f in d.iterdir()):
        return  # a folder of images (no classes): the check reads a few of them, checked when it does
    src = None
    with found.catch():
        src = scan_data(d)
    if src is None or classes is None or spread is None:
        return
    ys = (np.asarray(src.labels, np.int64) if src.kind == "folder" else
          src.y_test if src.y_test is not None and len(src.y_test) else src.y_train)
    y = np.asarray(ys)[spread(len(ys), limit)] if len(ys) else ys
    with found.catch():
        check_label_range(y, classes, str(d), check_data=True)
