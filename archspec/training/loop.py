"""`archspec train`: a spec trained from a recipe with Keras `fit`, into a run directory
that can always be resumed.

The run directory::

    RUN/
      spec.yaml        the resolved spec (self-contained: a run is reproducible)
      recipe.yaml      the resolved recipe
      run.json         what resume needs: the data path, classes, overrides, the plan
      classes.json     class names in label order (for predict)
      checkpoints/     tf.train.CheckpointManager: model, optimizer, epoch, batches trained of
                       the next epoch; every epoch and on SIGINT/SIGTERM (max_to_keep from the
                       recipe)
      best.keras       the best epoch on the monitored metric
      final.keras      the model after the last epoch
      history.csv      one row per completed epoch
      tensorboard/     scalars (loss, metrics, learning rate), histograms on request
      metrics.json     epochs_completed, best_epoch, val_loss, val_top1, val_top5, images_per_second,
                       collapse (null, or where the network collapsed: `callbacks.find_collapse`)
      .lock            flock'ed by the process training or resuming the run, for the whole run

Every file of ours is written atomically (temporary name, then rename); the checkpoint is
the truth about progress: on resume the epoch counter restored from the latest checkpoint
says which epochs are complete, and history rows past it are dropped. The checkpoint also
holds early stopping's and reduce-on-plateau's state (`callbacks.FitState`), so a resumed
run stops and lowers its rate where an uninterrupted one does. best.keras and final.keras
carry the provenance that `export` writes (spec name and sha256) and the epoch they hold;
a resume rewrites best.keras from the checkpoint of the best epoch when a kill left it
older than the history's best, and final.keras is always the model the checkpoint ends
with (for a finished run: the same weights again). A signal's checkpoint
also says how many batches of the epoch it stopped were trained; the resumed run trains the
rest of that epoch only. The data order of each epoch depends on the seed and the epoch alone
(`data.epoch_order`), so the resumed run sees the batches the uninterrupted one would have.

Learning-rate schedules work per epoch (so the position in the schedule is the epoch
restored from the checkpoint). With `distribute`, `data.batch_size` is per replica: the
global batch is batch_size x replicas, and the learning rate is scaled by the number of
replicas (the linear scaling rule).
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import shutil
import signal
from pathlib import Path
from typing import Any, Callable

from ..backends.keras.files import keras_training_info, save_keras
from ..core.atomic import write_text_atomic
from ..core.errors import ArchspecError, Location, SpecError
# what the callback needs of the loop lives below both (`epochs`), so it never imports the
# loop back (no cycle); importable from here as before
from .epochs import HISTORY, schedule_lr, write_history  # noqa: F401
from .epochs import best_row as _best_row
# the rules the precheck applies too, written once (`rules`); importable from here as before
from .rules import (LOCK, check_aux_weights, check_crop_padding, check_include_top, check_replaceable,  # noqa: F401
                    check_size_agrees, plan, scaled_warmup)


class Interrupted(ArchspecError):
    """Training stopped by SIGINT/SIGTERM; a checkpoint was saved (exit 130)."""

    exit_code = 130


class DivergedError(ArchspecError):
    """The loss became NaN or infinite; the last good checkpoint is kept (exit 1)."""


class CollapsedError(ArchspecError):
    """The network collapsed to chance (`callbacks.find_collapse`); the run directory is
    complete and says so in metrics.json's `collapse` (exit 1)."""


# ---------------------------------------------------------------- the plan


# ---------------------------------------------------------------- the run directory


def _dump_yaml(data: dict, comment: str) -> str:
    import yaml

    return "".join(f"# {line}\n" for line in comment.splitlines()) + yaml.safe_dump(
        data, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)


def _recipe_data(recipe) -> dict:
    data = recipe.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    data.pop("extends", None)
    return {"format": 1, "name": recipe.name, **{k: v for k, v in data.items() if k not in ("format", "name")}}


class RunLock:
    """An exclusive `flock` on RUN/.lock, held from the start of a run (or resume) to its end.
    The kernel releases it when the process ends however it ends, so a killed run leaves no
    stale lock; a second process is refused (one line, exit 2) before it touches anything."""

    def __init__(self, out: Path):
        self.out, self.fh = Path(out), None

    def acquire(self) -> "RunLock":
        try:
            fh = open(self.out / LOCK, "a+")
        except OSError as exc:
            from .rundir import os_error

            raise os_error(self.out, exc, f"cannot lock the run directory ({LOCK})") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip()[:20]
            fh.close()
            raise SpecError(f"in use by another archspec train (pid {holder or '?'}): wait for it to end or stop it",
                            Location(str(self.out))) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self.fh = fh
        return self

    def release(self) -> None:
        if self.fh is not None:
            self.fh.close()  # closing the descriptor releases the flock
            self.fh = None


def prepare_run_dir(out: Path, *, force: bool, resume: bool, inputs: list = ()) -> RunLock:
    """The run directory `out`, locked (the lock is returned; release it at the end): an
    existing run (`resume`), a new directory (its missing parents too), or, with `force`, a
    run directory or empty directory emptied (see `check_replaceable`) under the lock."""
    where = Location(str(out))
    if resume:
        if not (out / "run.json").is_file():
            raise SpecError("not a run directory of archspec train (no run.json): nothing to resume", where)
        lock = RunLock(out).acquire()
        if not (out / "run.json").is_file():  # a --force emptied it and then failed
            lock.release()
            raise SpecError("not a run directory of archspec train (no run.json): nothing to resume", where)
        return lock
    if out.exists() or out.is_symlink():
        if not force:
            raise SpecError("exists; pass --force to start over (its contents are deleted) or --resume to continue",
                            where)
        check_replaceable(out, inputs)
        lock = RunLock(out).acquire()
        try:
            check_replaceable(out, inputs)  # again, now that no other run can change it
            for p in out.iterdir():
                if p.name == LOCK:
                    continue
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        except BaseException:
            lock.release()
            raise
        return lock
    try:
        out.mkdir(parents=True)
    except FileExistsError:
        raise SpecError("exists; pass --force to start over (its contents are deleted) or --resume to continue",
                        where) from None
    except OSError as exc:
        from .rundir import os_error

        raise os_error(out, exc, "cannot create the run directory") from None
    return RunLock(out).acquire()


def remove_stale_temporaries(out: Path) -> None:
    """Our temporaries (`.NAME.tmp-PID.EXT`) that a killed process left in the run directory
    (called under the run's lock, so no live writer owns one)."""
    for p in out.iterdir():
        if p.name.startswith(".") and ".tmp-" in p.name and p.is_file() and not p.is_symlink():
            p.unlink()


def read_history(out: Path) -> list[dict]:
    """RUN/history.csv, checked (`rundir.read_history`: a damaged file is one line naming it)."""
    from .rundir import read_history as read

    return read(out)


def write_json(path: Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, default=float) + "\n")


# ---------------------------------------------------------------- Keras pieces


def make_optimizer(recipe, lr: float, precision: str):
    import keras

    o = recipe.optimizer
    kw: dict[str, Any] = {"learning_rate": lr}
    if o.clipnorm:
        kw["clipnorm"] = o.clipnorm
    if o.name == "sgd":
        opt = keras.optimizers.SGD(momentum=o.momentum, nesterov=o.nesterov,
                                   weight_decay=o.weight_decay or None, **kw)
    elif o.name == "adam":
        opt = keras.optimizers.Adam(**kw)
    elif o.name == "adamw":
        opt = keras.optimizers.AdamW(weight_decay=o.weight_decay or 0.004, **kw)
    else:
        opt = keras.optimizers.RMSprop(momentum=o.momentum, **kw)
    if precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


def metric_objects(recipe, classes: int):
    import keras

    out = []
    for m in recipe.metrics:
        if m == "top1":
            out.append(keras.metrics.CategoricalAccuracy(name="top1"))
        else:
            out.append(keras.metrics.TopKCategoricalAccuracy(k=min(5, classes), name="top5"))
    return out


def loss_object(recipe, activation: str | None):
    """The loss of a classifier head: categorical cross-entropy on softmax probabilities,
    or on logits (`from_logits`) for a linear head; binary cross-entropy per class (one-hot
    targets, each class a yes/no) for a sigmoid head."""
    import keras

    smoothing = recipe.loss.label_smoothing
    if activation == "sigmoid":
        return keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    return keras.losses.CategoricalCrossentropy(from_logits=activation in (None, "linear"), label_smoothing=smoothing)


def chance_loss(activation: str | None, classes: int) -> float:
    """The loss of a uniform guess under `loss_object`: ln(classes), or ln 2 per class for a
    sigmoid head (the reference of `callbacks.LossGuard`)."""
    return math.log(2.0) if activation == "sigmoid" else math.log(max(classes, 2))


def augmenter(recipe, size: tuple[int, int], seed: int) -> Callable | None:
    """A function (images, one-hot labels) -> (images, labels) applying the recipe's
    augmentation to a training batch, or None when there is none."""
    a = recipe.augmentation
    import keras
    import tensorflow as tf

    layers = []
    if a.flip != "none":
        layers.append(keras.layers.RandomFlip(a.flip, seed=seed))
    if a.crop_padding:
        layers += [keras.layers.ZeroPadding2D(a.crop_padding), keras.layers.RandomCrop(*size, seed=seed + 1)]
    if a.translate:
        layers.append(keras.layers.RandomTranslation(a.translate, a.translate, seed=seed + 2))
    if a.rotation:
        layers.append(keras.layers.RandomRotation(a.rotation, seed=seed + 3))
    if a.zoom:
        layers.append(keras.layers.RandomZoom(a.zoom, seed=seed + 4))
    if a.contrast:
        layers.append(keras.layers.RandomContrast(a.contrast, seed=seed + 5))
    if not layers and not a.mixup and not a.cutmix:
        return None

    def beta(alpha, n):
        g1 = tf.random.gamma([n], alpha)
        g2 = tf.random.gamma([n], alpha)
        return g1 / (g1 + g2)

    def apply(x, y):
        for layer in layers:
            x = layer(x, training=True)
        n = tf.shape(x)[0]
        if a.mixup:
            lam = beta(a.mixup, n)
            perm = tf.random.shuffle(tf.range(n))
            lx = tf.reshape(lam, [-1, 1, 1, 1])
            x = lx * x + (1 - lx) * tf.gather(x, perm)
            y = lam[:, None] * y + (1 - lam[:, None]) * tf.gather(y, perm)
        if a.cutmix:
            lam = beta(a.cutmix, 1)[0]
            h, w = size
            ch = tf.cast(tf.round(h * tf.sqrt(1 - lam)), tf.int32)
            cw = tf.cast(tf.round(w * tf.sqrt(1 - lam)), tf.int32)
            cy = tf.random.uniform([], 0, h, tf.int32)
            cx = tf.random.uniform([], 0, w, tf.int32)
            y0, y1 = tf.clip_by_value(cy - ch // 2, 0, h), tf.clip_by_value(cy + ch // 2, 0, h)
            x0, x1 = tf.clip_by_value(cx - cw // 2, 0, w), tf.clip_by_value(cx + cw // 2, 0, w)
            rows = tf.logical_and(tf.range(h) >= y0, tf.range(h) < y1)
            cols = tf.logical_and(tf.range(w) >= x0, tf.range(w) < x1)
            box = tf.cast(tf.logical_and(rows[:, None], cols[None, :]), x.dtype)[None, :, :, None]
            perm = tf.random.shuffle(tf.range(n))
            x = x * (1 - box) + tf.gather(x, perm) * box
            frac = tf.reduce_mean(box)
            y = (1 - frac) * y + frac * tf.gather(y, perm)
        return x, y

    return apply


def _saved_int(checkpoint: str, name: str) -> int:
    """An integer variable of a checkpoint (0 where the checkpoint predates it)."""
    import tensorflow as tf

    key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
    return int(tf.train.load_variable(checkpoint, key)) if key in dict(tf.train.list_variables(checkpoint)) else 0


def check_distribute(distribute: str | None) -> None:
    """Refuse a strategy that does not exist (before the run directory is made); the cluster
    of multi_worker is checked by `multiworker.cluster_of`."""
    if distribute not in (None, "none", "mirrored", "multi_worker"):
        raise SpecError(f"--distribute must be none, mirrored or multi_worker (got {distribute!r})")


def strategy_of(distribute: str | None):
    """The tf.distribute strategy of the TensorFlow path: MirroredStrategy over the local
    devices, or the default. (multi_worker runs on Keras' own distribution over JAX:
    `_fit_multi_worker`.)"""
    import tensorflow as tf

    check_distribute(distribute)
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribute == "multi_worker":
        raise ArchspecError("multi_worker does not run on a tf.distribute strategy (see archspec.training.multiworker)")
    return tf.distribute.get_strategy()


# ---------------------------------------------------------------- train


def train(spec_ref, recipe_ref, data: str | os.PathLike | None, out: str | os.PathLike, *,
          overrides: list[str] | None = None, recipe_overrides: list[str] | None = None,
          epochs: int | None = None, batch_size: int | None = None, weights: str | None = None,
          weights_skip: list[str] | tuple = (), resume: bool = False, force: bool = False,
          distribute: str | None = None, workers: str | None = None, rank: int | None = None,
          allow_collapse: bool = False, callbacks: list | tuple = (),
          say: Callable[[str], None] = lambda m: None, verbose: int | str = "auto") -> dict:
    """Train a spec from a recipe into the run directory `out` (or resume it). The run
    directory is locked (`RunLock`) from the moment it is made or reopened to the end.

    Args:
        spec_ref: a spec path, bundled name or Spec (with `resume`: None, or the run's own
            spec, compared by the sha256 of the resolved spec; another is refused).
        recipe_ref: a recipe path or bundled name (ignored with `resume`).
        data: an image folder, a CIFAR directory or an .npz (with `resume`: default the run's).
        out: the run directory (must not exist unless `force` or `resume`; missing parents are
            made).
        overrides: `--set` overrides of the spec.
        recipe_overrides: `--recipe-set` overrides of the recipe.
        epochs, batch_size: shortcuts for the recipe's `epochs` and `data.batch_size`.
        weights: initial weights (a keras.applications .h5, a Keras 3 .weights.h5 or .keras, an
            .npz), checked before the run directory is made (`archspec weights`' report): every
            weighted layer must load, except the classifier when head.classes differs
            (re-initialised), a stem over other input channels (adapted by timm's rule) and
            the layers `weights_skip` names; anything else is an error naming the layers.
        weights_skip: fnmatch globs of layers left at their initial weights (reported).
        resume: continue `out` from its latest checkpoint.
        force: start over in an existing `out` (its contents are deleted): only a run
            directory (run.json) or an empty one, never one holding the data, the spec, the
            recipe, the weights or the current directory.
        distribute: None, "mirrored" or "multi_worker" (Keras' own distribution on JAX, one
            worker process per call: `multiworker`).
        workers, rank: with "multi_worker", every process's "host:port" (comma-separated, the
            first the coordinator) and this process's index in them (else TF_CONFIG's). Rank 0
            writes the run directory `out`; another rank's `out` is its own scratch directory.
        allow_collapse: a run whose network collapsed (`callbacks.find_collapse`) returns, with
            a warning, instead of raising `CollapsedError` (as the recipe's
            `callbacks.allow_collapse`).
        callbacks: Keras callbacks run after archspec's own in every `fit` (the epoch's
            checkpoint and history row are written before theirs run); one that raises ends
            the run there, its lock released (`archspec search` prunes a trial this way).
        say: progress messages.
        verbose: Keras' fit verbosity (progress bar).

    Returns:
        The run's metrics (as metrics.json) with `history`, one dict per completed epoch.
    """
    if not resume and (spec_ref is None or recipe_ref is None):
        raise SpecError("give SPEC and --recipe R (or --resume RUN_DIR to continue a run)")
    if out is None:
        raise SpecError("--out RUN_DIR is required (where checkpoints, logs and models are written)")
    import sys

    from . import multiworker

    from .precheck import check_train  # every mistake the files show, at once, before TensorFlow (issue 30)

    check_train(spec_ref, recipe_ref, data, out, overrides=overrides, recipe_overrides=recipe_overrides, epochs=epochs,
                batch_size=batch_size, weights=weights, weights_skip=tuple(weights_skip or ()), resume=resume,
                force=force, distribute=distribute, workers=workers, rank=rank, rules=sys.modules[__name__])
    cluster = multiworker.cluster_of(distribute, workers, rank)  # bad --workers/--rank: one line, nothing made
    if cluster is not None and multiworker.current() is None:  # this worker runs in a process of its own
        return multiworker.supervise(multiworker.options_only({
            "spec_ref": spec_ref, "recipe_ref": recipe_ref, "data": data, "out": out, "overrides": overrides,
            "recipe_overrides": recipe_overrides, "epochs": epochs, "batch_size": batch_size, "weights": weights,
            "weights_skip": list(weights_skip or ()), "resume": resume, "force": force, "distribute": distribute,
            "workers": ",".join(cluster.addresses), "rank": cluster.rank, "allow_collapse": allow_collapse,
            "callbacks": list(callbacks or ()), "verbose": verbose}), cluster, say)
    held: list[RunLock] = []
    try:
        return _train(spec_ref, recipe_ref, data, out, overrides=overrides, recipe_overrides=recipe_overrides,
                      epochs=epochs, batch_size=batch_size, weights=weights, weights_skip=tuple(weights_skip or ()),
                      resume=resume, force=force, allow_collapse=allow_collapse, extra_callbacks=tuple(callbacks),
                      distribute=distribute, say=say, verbose=verbose, held=held)
    finally:
        for lock in held:
            lock.release()


def _train(spec_ref, recipe_ref, data, out, *, overrides, recipe_overrides, epochs, batch_size, weights,
           weights_skip, resume, force, distribute, say, verbose, held: list, allow_collapse=False,
           extra_callbacks=()) -> dict:
    from ..backends.keras import load as _keras_build
    from ..ir.pipeline import lower_spec
    from ..language import load as _load, raw_of

    def load(ref, overrides=None):
        return _load(ref, overrides)[0]
    from . import data as data_mod
    from .recipe import frozen_layers, load_recipe

    from . import rundir

    out = Path(out)
    if resume:
        if overrides and spec_ref is None:
            raise SpecError("--set changes a spec, and a resumed run continues its own (RUN/spec.yaml): leave "
                            "--set out, or start a new run with --out", rundir.where(out))
        held.append(prepare_run_dir(out, force=False, resume=True))
        remove_stale_temporaries(out)
        run = rundir.read_run_json(out)
        spec = load(str(out / "spec.yaml"))
        if spec_ref is not None:  # a SPEC with --resume: accepted only when it is the run's own
            _check_same_spec(spec_ref, overrides, spec, run, out, load)
        recipe, recipe_raw = load_recipe(str(out / "recipe.yaml"))
        if recipe_ref is not None or recipe_overrides or batch_size:  # accepted only when it is the run's own
            extra = [f"data.batch_size={batch_size}"] if batch_size else []
            given, _ = load_recipe(recipe_ref if recipe_ref is not None else str(out / "recipe.yaml"),
                                   list(recipe_overrides or []) + extra)
            if _recipe_data(given) != _recipe_data(recipe):
                what = recipe_ref if recipe_ref is not None else "--recipe-set/--batch-size"
                raise SpecError(f"{what} is not the recipe run {out} was trained with (RUN/recipe.yaml): a resumed "
                                f"run continues its own recipe; leave --recipe, --recipe-set and --batch-size out, "
                                f"or start a new run with --out", rundir.where(out))
        if weights:
            raise SpecError("--weights starts a new run from those weights; a resumed run continues from its own "
                            "checkpoint: leave --weights out, or start a new run with --out", rundir.where(out))
        data = data or run["data"]
        epochs = run.get("epochs")
        distribute = distribute or run.get("distribute")
    else:
        rundir.check_new_run_path(out)  # a link to nothing, a parent that is a file, a name too long
        if out.exists() or out.is_symlink():  # refused before any work; emptied (with force) once all is checked
            if not force:
                raise SpecError("exists; pass --force to start over (its contents are deleted) or --resume to "
                                "continue", rundir.where(out))
            check_replaceable(out, [data, spec_ref, recipe_ref, weights])
        if weights:  # garbage, a truncated file, another format: one line, before anything is made
            rundir.check_weights_file(weights)
        spec = load(spec_ref, overrides) if not hasattr(spec_ref, "model_dump") else spec_ref
        extra = ([f"data.batch_size={batch_size}"] if batch_size else [])
        recipe, recipe_raw = load_recipe(recipe_ref, list(recipe_overrides or []) + extra)
        if data is None:
            raise SpecError("--data is required: an image folder, a CIFAR directory or an .npz")
    src = data_mod.open_source(data)
    check_include_top(spec, raw_of(spec))
    if spec.taps:  # feature outputs take no labels: the run trains (and saves) the classifier alone
        say(f"taps ({spec.taps if isinstance(spec.taps, str) else ', '.join(spec.taps)}) are not trained: the run's "
            f"models output the classifier only")
        spec = spec.model_copy(update={"taps": []})
    check_size_agrees(spec, overrides, recipe, recipe_raw, resume)
    graph = lower_spec(spec)
    fixed = next((n.name for n in graph.nodes if n.op in ("flatten", "reshape")), None)
    size = data_mod.check_against_spec(src, spec.head.classes, spec.input.shape, recipe.data.image_size, fixed)
    data_mod.check_split(src, recipe.data.validation_split)  # a split leaving nothing to train on hung
    if tuple(size) != tuple(spec.input.shape[:2]):  # fed at data.image_size: the network is built for it
        spec = spec.model_copy(update={"input": spec.input.model_copy(
            update={"shape": (size[0], size[1], spec.input.shape[2])})})
        graph = lower_spec(spec)
    check_crop_padding(recipe, recipe_raw, size)  # a million-pixel pad was an out-of-memory error after the run directory
    given_recipe, recipe = recipe, scaled_warmup(recipe, epochs, say)  # recipe.yaml keeps the recipe as given (a resume scales it again)
    phases = plan(recipe, epochs)
    for i, ph in enumerate(phases):  # unknown layers in freeze rules: refused before anything runs
        frozen_layers(graph, spec, ph["phase"], recipe_raw, i)
    check_distribute(distribute)
    kb = _keras_build()
    if weights and not resume:  # the weights against the network (static report), before the run directory
        from ..backends.keras.pretrained import resolve

        weights = resolve(weights, graph, say=say)  # `imagenet`: the spec's published file, from Keras' cache
        rundir.check_initial_weights(graph, weights, weights_skip)
    if not resume:
        held.append(prepare_run_dir(out, force=force, resume=False, inputs=[data, spec_ref, recipe_ref, weights]))
        from ..language import dump_spec
        from ..resolving import resolve

        write_text_atomic(out / "spec.yaml", dump_spec(resolve(spec), f"archspec train: the resolved spec "
                                                                      f"{spec.name}"))
        write_text_atomic(out / "recipe.yaml", _dump_yaml(_recipe_data(given_recipe), f"archspec train: the resolved "
                                                                                      f"recipe {recipe.name}"))
        write_json(out / "classes.json", src.class_names)
        from .multiworker import current

        cluster = current() if distribute == "multi_worker" else None
        write_json(out / "run.json", {"data": str(Path(data).resolve()), "epochs": epochs, "distribute": distribute,
                                      **({"workers": list(cluster.addresses), "rank": cluster.rank} if cluster else {}),
                                      "spec": spec.name, "spec_sha256": graph.meta.get("spec_sha256"),
                                      "recipe": recipe.name, "weights": weights,
                                      "image_size": list(size), "phases": [
                                          {k: v for k, v in p.items() if k != "phase"} for p in phases]})
    return _fit(kb, graph, spec, recipe, src, out, phases, size, weights if not resume else None, resume,
                distribute, say, verbose, weights_skip, allow_collapse, extra_callbacks)


def _quiet_tf():
    import contextlib

    try:
        from ..core.quiet import tf_retracing_quiet
    except ImportError:
        return contextlib.nullcontext()
    return tf_retracing_quiet()


def trained_spec(spec, image_size=None):
    """The spec a run trains and writes to RUN/spec.yaml: without taps, its input at the
    recipe's image size."""
    if spec.taps:
        spec = spec.model_copy(update={"taps": []})
    if image_size is not None and tuple(image_size) != tuple(spec.input.shape[:2]):
        spec = spec.model_copy(update={"input": spec.input.model_copy(
            update={"shape": (image_size[0], image_size[1], spec.input.shape[2])})})
    return spec


def _check_same_spec(spec_ref, overrides, own, run: dict, out: Path, load) -> None:
    """`train SPEC --resume RUN`: SPEC (with --set) must resolve to the spec the run was
    trained with (the sha256 run.json recorded, else its spec.yaml's); a run never continues
    another network."""
    from ..resolving import resolve
    from ..language import spec_hash
    from .rundir import where

    given = spec_ref if hasattr(spec_ref, "model_dump") else load(spec_ref, overrides)
    mine = spec_hash(resolve(trained_spec(given, run.get("image_size"))))
    recorded = run.get("spec_sha256") or spec_hash(resolve(own))
    if mine != recorded:
        shown_ref = spec_ref if isinstance(spec_ref, (str, os.PathLike)) else given.name
        raise SpecError(f"is not the spec run {out} was trained with ({given.name}, sha256 {mine[:12]}; the run's: "
                        f"{run.get('spec') or own.name}, sha256 {recorded[:12]}): a resumed run continues its own "
                        f"spec (RUN/spec.yaml); leave SPEC out, or start a new run with --out",
                        where(os.fspath(shown_ref)))


def _fit(kb, graph, spec, recipe, src, out: Path, phases, size, weights, resume, distribute, say, verbose,
         weights_skip=(), allow_collapse=False, extra_callbacks=()) -> dict:
    if distribute == "multi_worker":
        return _fit_multi_worker(kb, graph, spec, recipe, src, out, phases, size, weights, resume, say, verbose,
                                 weights_skip, allow_collapse)
    import keras
    import numpy as np
    import tensorflow as tf

    from . import data as data_mod
    from .recipe import frozen_layers

    strategy = strategy_of(distribute)
    replicas = strategy.num_replicas_in_sync
    global_batch = recipe.data.batch_size * replicas
    outputs = len(graph.outputs)
    classes = spec.head.classes
    keras.utils.set_random_seed(recipe.seed)
    with strategy.scope():
        model = kb.build_model(graph, precision=None if recipe.precision == "float32" else recipe.precision,
                               seed=recipe.seed)
        if weights:  # pretrained weights, strictly: the report's summary line said; a new head re-initialised
            from .rundir import load_initial_weights

            with _quiet_tf():
                load_initial_weights(model, graph, weights, weights_skip, say)
    pipes = data_mod.datasets(src, recipe, size, spec.input.shape[2], classes, outputs, global_batch, recipe.seed,
                              augmenter(recipe, size, recipe.seed), say, preprocess=spec.input.preprocess)
    if pipes.val is None:
        say("no validation data (the data has no test set and data.validation_split is 0): val_* metrics are absent")
    # A list in the model's output order: Keras 3.15 pairs a dict of loss weights with a list of
    # outputs in sorted-name order, so {loss3: 1, loss1: .3, loss2: .3} would weigh loss2 by 1.
    loss_weights = _loss_weights(graph, recipe)
    main_out = graph.outputs[0]
    monitor = _monitor(recipe.callbacks.checkpoint.monitor, pipes)
    history = read_history(out) if resume else []
    from .rundir import read_run_json

    run = read_run_json(out)
    stopped = set(run.get("stopped_early", []))
    state: dict[str, Any] = {"interrupted": False, "nan": None}
    ckpt_dir = str(out / "checkpoints")
    latest = tf.train.latest_checkpoint(ckpt_dir) if resume else None
    if latest is not None:  # every file of it reads back, before any of it is used
        from .rundir import check_checkpoint, check_history

        check_checkpoint(latest)
    completed = _saved_int(latest, "epoch") if latest else 0
    if latest is not None:  # the history has the checkpoint's last epoch (each row precedes its checkpoint)
        check_history(out, history, completed, latest)
    skip = _saved_int(latest, "step") if latest else 0  # batches of epoch `completed` trained before a signal
    # the phase whose callbacks' state the checkpoint holds, and whether early stopping ended it
    ck_state = bool(latest) and _has_variable(latest, "callbacks/phase")
    ck_phase = _saved_int(latest, "callbacks/phase") if ck_state else -1
    ck_stopped = bool(ck_state and _saved_int(latest, "callbacks/es_stopped_epoch"))
    if resume:
        say(f"resuming {out}: {completed} epochs complete" + (f" and {skip} batches of the next" if skip else "")
            + (f" ({latest})" if latest else " (no checkpoint yet)"))

    def on_signal(signum, frame):  # the epoch stops after its current batch and counts as incomplete
        state["interrupted"] = signal.Signals(signum).name
        model.stop_training = True
    if latest is not None:  # a kill between a checkpoint and best.keras: best.keras from that checkpoint
        _repair_best(model, graph, out, ckpt_dir, history, completed, monitor, recipe, say)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for pi, ph in enumerate(phases):
            if completed >= ph["end"] or ph["name"] in stopped or (ck_stopped and ck_phase == pi):
                continue
            frozen = frozen_layers(graph, spec, ph["phase"], None, pi)
            for layer in model.layers:
                layer.trainable = layer.name not in frozen
            base_lr = (ph["phase"].learning_rate or recipe.optimizer.learning_rate) * replicas
            with strategy.scope():
                opt = make_optimizer(recipe, base_lr, recipe.precision)
                loss = loss_object(recipe, spec.head.classifier_activation)
                mets = metric_objects(recipe, classes)
                model.compile(optimizer=opt, loss=[loss] * outputs if outputs > 1 else loss,
                              loss_weights=loss_weights,
                              metrics=[mets] + [[] for _ in range(outputs - 1)] if outputs > 1 else mets,
                              jit_compile=recipe.jit_compile)
                opt.build(model.trainable_variables)
                epoch_var = tf.Variable(completed, dtype=tf.int64, trainable=False, name="epoch")
                step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
                early, plateau = _stateful_callbacks(recipe, monitor, pipes)
                from .callbacks import FitState

                fit_state = FitState(pi, model, early, plateau)
            fit_state.start()
            ckpt = tf.train.Checkpoint(model=model, optimizer=opt, epoch=epoch_var, step=step_var, callbacks=fit_state)
            manager = tf.train.CheckpointManager(ckpt, ckpt_dir, max_to_keep=recipe.callbacks.checkpoint.max_to_keep)
            if latest is not None:  # restored once, into the phase the run stopped in
                if completed > ph["start"] or skip:  # mid-phase: weights, optimizer state, epoch, step, callbacks
                    if ck_state:
                        ckpt.restore(latest).assert_existing_objects_matched()
                        fit_state.load()
                    else:  # a checkpoint of an archspec before FitState: the callbacks start over
                        tf.train.Checkpoint(model=model, optimizer=opt, epoch=epoch_var, step=step_var).restore(
                            latest).assert_existing_objects_matched()
                else:  # at a phase boundary: the weights the last phase ended with (a new optimizer)
                    _restore_ended(model, latest)
                latest = None
            start = max(completed, ph["start"])
            history[:] = [r for r in history if int(r["epoch"]) < start]
            write_history(out, history)
            trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            say(f"phase {ph['name']}: epochs {start + 1}-{ph['end']} of {phases[-1]['end']}, {trainable:,} trainable "
                f"params, learning rate {base_lr:g}, global batch {global_batch}"
                + (f" over {replicas} replicas" if replicas > 1 else ""))
            from .callbacks import RunCallback

            def write_best(epoch, value, model=model):
                save_keras(model, out / "best.keras", graph, file="best", epoch=epoch + 1, monitor=monitor,
                           value=value)

            run_cb = RunCallback(out, recipe, ph, base_lr, manager, epoch_var, step_var, history, state,
                                 pipes.steps_per_epoch, main_out, monitor, say, fit_state=fit_state,
                                 save_checkpoint=lambda n, manager=manager: save_checkpoint(manager, n),
                                 write_best=write_best, write_history=write_history)
            callbacks = [run_cb, *extra_callbacks]
            from .callbacks import LossGuard  # first: RunCallback must see an exploded epoch as incomplete

            callbacks.insert(0, LossGuard(chance_loss(spec.head.classifier_activation, classes)
                                          * (sum(loss_weights) if loss_weights else 1.0), classes, state))
            if verbose:  # Keras' bar ends its line (finalized first) before archspec's epoch line, never glued to it
                from keras.callbacks import ProgbarLogger

                callbacks.insert(0, ProgbarLogger())
            if recipe.callbacks.tensorboard is not None:
                from .callbacks import EpochTensorBoard

                callbacks.append(EpochTensorBoard(
                    str(out / "tensorboard"), histogram_freq=recipe.callbacks.tensorboard.histogram_freq))
            steps = pipes.steps_per_epoch
            fits = [(start, ph["end"], 0)]  # (first epoch, end, batches of the first already trained)
            if skip and start == completed:  # a signal stopped epoch `start` after `skip` batches: its rest first
                say(f"epoch {start + 1}: continuing after batch {skip} of {steps}; its training loss, metrics and "
                    f"images/s cover batches {skip + 1}-{steps}")
                fits = [(start, start + 1, skip)] + ([(start + 1, ph["end"], 0)] if start + 1 < ph["end"] else [])
            skip = 0
            for first, end, offset in fits:
                run_cb.offset, run_cb.images = offset, pipes.train_size - offset * global_batch
                data = pipes.train_from(first).skip(offset) if offset else pipes.train_from(first)
                with _quiet_tf():  # "tf.function retracing" notices stay off the root logger
                    model.fit(data, validation_data=pipes.val, epochs=end, initial_epoch=first,
                              steps_per_epoch=steps - offset, callbacks=callbacks, verbose=verbose, shuffle=False)
                if model.stop_training:  # a signal, a NaN or early stopping
                    break
            completed = int(epoch_var.numpy())
            if state["nan"] is not None:
                why = state.get("diverged") or (f"the loss became NaN or infinite in epoch {state['nan'] + 1}; lower "
                                                f"the learning rate (--recipe-set optimizer.learning_rate=...)")
                raise DivergedError(
                    f"{why}; training stopped. The last good checkpoint is kept: "
                    f"{manager.latest_checkpoint or 'none (no epoch completed)'}; start over (--force) once the "
                    f"cause is changed")
            if state["interrupted"]:
                done = run_cb.step_in_epoch
                step_var.assign(done)
                save_checkpoint(manager, None)
                raise Interrupted(f"{state['interrupted']}: stopped in epoch {completed + 1}; checkpoint saved after "
                                  f"{completed} complete epochs" + (f" and {done} batches of epoch {completed + 1}"
                                                                    if done else "")
                                  + f". Continue with: archspec train --resume {out}")
            fit_state.end()  # the phase is over: early stopping's best weights back, as fit's on_train_end does
            if completed < ph["end"] and early is not None and early.stopped_epoch:
                say(f"early stopping ended phase {ph['name']} after epoch {completed}")
                stopped.add(ph["name"])
                write_json(out / "run.json", {**run, "stopped_early": sorted(stopped)})
        if latest is not None:  # nothing left to train (a finished run, or killed after its last checkpoint)
            _restore_ended(model, latest)  # the model the checkpoint ends with, not the untrained one
        save_keras(model, out / "final.keras", graph, file="final", epochs_completed=completed)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return _finish(out, spec, recipe, pipes, phases, loss_weights, monitor, allow_collapse, say)


def _fit_multi_worker(kb, graph, spec, recipe, src, out: Path, phases, size, weights, resume, say, verbose,
                      weights_skip=(), allow_collapse=False) -> dict:
    """`_fit` for one worker of `--distribute multi_worker`, on Keras' own distribution over
    JAX (`multiworker`: the cluster, the placement, each worker's part of every batch, lockstep
    saves, Keras-format checkpoints). Every worker runs this with its own `out`: rank 0's is the
    run directory, another rank's its scratch (no checkpoints there). A resume continues from
    the last complete epoch's checkpoint, which rank 0 reads and broadcasts."""
    from . import multiworker as mw

    cluster = mw.current()
    if cluster is None:
        raise SpecError("this run was trained with --distribute multi_worker: resume it on every worker with "
                        "--distribute multi_worker --workers HOST:PORT,... --rank K", Location(str(out)))
    import json as _json

    from . import data as data_mod
    from .callbacks import FitState, LossGuard, RunCallback
    from .recipe import frozen_layers
    from .rundir import check_history, load_initial_weights, read_run_json

    import keras
    import numpy as np

    chief, writer = cluster.chief, mw.Writer(cluster, out)
    devices, local = mw.replicas()
    global_batch = recipe.data.batch_size * devices
    outputs, classes = len(graph.outputs), spec.head.classes
    keras.utils.set_random_seed(recipe.seed)  # the same initial weights on every worker
    model = kb.build_model(graph, precision=None if recipe.precision == "float32" else recipe.precision,
                           seed=recipe.seed)
    if weights:  # every worker reads them (the file must be on every machine)
        load_initial_weights(model, graph, weights, weights_skip, say if chief else (lambda m: None))
    pipes = data_mod.datasets(src, recipe, size, spec.input.shape[2], classes, outputs, global_batch, recipe.seed,
                              augmenter(recipe, size, recipe.seed), say, preprocess=spec.input.preprocess)
    val = mw.local_part(pipes.val, cluster.rank, local, devices) if pipes.val is not None else None
    for note in (mw.remainder_note(pipes.train_size, global_batch, devices, "training set"),
                 mw.remainder_note(pipes.val_size, global_batch, devices, "validation set") if val is not None
                 else None):
        if note and chief:
            say(note)
    if pipes.val is None and chief:
        say("no validation data (the data has no test set and data.validation_split is 0): val_* metrics are absent")
    loss_weights = _loss_weights(graph, recipe)
    main_out = graph.outputs[0]
    monitor = _monitor(recipe.callbacks.checkpoint.monitor, pipes)
    ckpt_dir = out / "checkpoints"
    latest, mine = None, {}
    if chief:  # rank 0's run directory is the truth; every worker gets it
        mw.remove_stale(ckpt_dir)
        latest = mw.latest_checkpoint(ckpt_dir) if resume else None
        completed = _json.loads((latest / "state.json").read_text())["epoch"] if latest else 0
        history = read_history(out) if resume else []
        if latest is not None:
            check_history(out, history, completed, str(latest))
        run = read_run_json(out)
        mine = {"completed": completed, "history": [r for r in history if int(r["epoch"]) < completed],
                "stopped": sorted(run.get("stopped_early", [])), "latest": str(latest) if latest else None}
    shared = mw.broadcast_json(mine, chief)
    completed, history, stopped = shared["completed"], shared["history"], set(shared["stopped"])
    scratch = out / f".checkpoint-of-rank-0-{os.getpid()}"
    latest = mw.share_checkpoint(writer, latest, scratch)
    ck = _json.loads((latest / "state.json").read_text()) if latest is not None else {}
    ck_fit = ck.get("fit_state") or {}
    ck_phase, ck_stopped = ck.get("phase", -1), bool(ck_fit.get("es_stopped_epoch"))
    if resume:
        say(f"resuming {out}: {completed} epochs complete"
            + (f" ({shared['latest']}, rank 0's)" if shared["latest"] else " (no checkpoint yet)")
            + ("" if chief else "; this worker's --out is scratch, rank 0's run directory is the run"))
    state: dict[str, Any] = {"interrupted": False, "nan": None}
    run = read_run_json(out)
    try:
        for pi, ph in enumerate(phases):
            if completed >= ph["end"] or ph["name"] in stopped or (ck_stopped and ck_phase == pi):
                continue
            frozen = frozen_layers(graph, spec, ph["phase"], None, pi)
            for layer in model.layers:
                layer.trainable = layer.name not in frozen
            base_lr = (ph["phase"].learning_rate or recipe.optimizer.learning_rate) * devices
            opt = make_optimizer(recipe, base_lr, recipe.precision)
            mets = metric_objects(recipe, classes)
            loss = loss_object(recipe, spec.head.classifier_activation)
            model.compile(optimizer=opt, loss=[loss] * outputs if outputs > 1 else loss, loss_weights=loss_weights,
                          metrics=[mets] + [[] for _ in range(outputs - 1)] if outputs > 1 else mets)
            opt.build(model.trainable_variables)
            early, plateau = _stateful_callbacks(recipe, monitor, pipes)
            fit_state = FitState(pi, model, early, plateau)
            fit_state.start()
            if latest is not None:  # restored once: mid-phase the optimizer and callbacks too, else the weights
                mid = completed > ph["start"]
                mw.restore_state(model, opt, latest, with_optimizer=mid)
                if mid and ck_phase == pi and ck_fit:
                    mw.load_fit_state(fit_state, ck_fit)
                latest = None
                if not chief:
                    shutil.rmtree(scratch, ignore_errors=True)
            start = max(completed, ph["start"])
            history[:] = [r for r in history if int(r["epoch"]) < start]
            write_history(out, history)
            trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
            say(f"phase {ph['name']}: epochs {start + 1}-{ph['end']} of {phases[-1]['end']}, {trainable:,} trainable "
                f"params, learning rate {base_lr:g}, global batch {global_batch} over {devices} replicas "
                f"({cluster.size} worker{'s' if cluster.size != 1 else ''}; this is rank {cluster.rank}"
                + (", writing the run directory)" if chief else ", its --out is scratch)"))
            epoch_var, step_var = mw.Counter(completed), mw.Counter()

            def save_ckpt(n, pi=pi, opt=opt, fit_state=fit_state):
                mw.save_checkpoint(writer, ckpt_dir, n, model, opt, {"phase": pi,
                                                                     "fit_state": mw.fit_state_dict(fit_state)},
                                   recipe.callbacks.checkpoint.max_to_keep)

            def write_best(epoch, value):  # on every worker (a Keras save), each into its own out
                save_keras(model, out / "best.keras", graph, file="best", epoch=epoch + 1, monitor=monitor,
                           value=value)
            run_cb = RunCallback(out, recipe, ph, base_lr, None, epoch_var, step_var, history, state,
                                 pipes.steps_per_epoch, main_out, monitor, say if chief else (lambda m: None),
                                 fit_state=fit_state, save_checkpoint=save_ckpt, write_best=write_best,
                                 write_history=write_history)
            run_cb.offset, run_cb.images = 0, pipes.train_size
            callbacks = [LossGuard(chance_loss(spec.head.classifier_activation, classes)
                                   * (sum(loss_weights) if loss_weights else 1.0), classes, state), run_cb]
            if verbose and chief:
                from keras.callbacks import ProgbarLogger

                callbacks.insert(0, ProgbarLogger())
            if recipe.callbacks.tensorboard is not None and chief:
                from .callbacks import EpochTensorBoard

                callbacks.append(EpochTensorBoard(
                    str(out / "tensorboard"), histogram_freq=recipe.callbacks.tensorboard.histogram_freq))
            train = mw.local_part(pipes.train_from(start), cluster.rank, local, devices)
            model.fit(train, validation_data=val, epochs=ph["end"], initial_epoch=start,
                      steps_per_epoch=pipes.steps_per_epoch, callbacks=callbacks, verbose=verbose if chief else 0,
                      shuffle=False)
            completed = epoch_var.numpy()
            if state["nan"] is not None:
                why = state.get("diverged") or (f"the loss became NaN or infinite in epoch {state['nan'] + 1}; lower "
                                                f"the learning rate (--recipe-set optimizer.learning_rate=...)")
                last = mw.latest_checkpoint(ckpt_dir) if chief else None
                raise DivergedError(f"{why}; training stopped. The last good checkpoint is kept"
                                    + (f": {last}" if chief else " in rank 0's run directory")
                                    + "; start over (--force) once the cause is changed")
            fit_state.end()
            if completed < ph["end"] and early is not None and early.stopped_epoch:
                say(f"early stopping ended phase {ph['name']} after epoch {completed}")
                stopped.add(ph["name"])
                write_json(out / "run.json", {**run, "stopped_early": sorted(stopped)})
        if latest is not None:  # nothing left to train: the model the checkpoint ends with
            mw.restore_state(model, None, latest, with_optimizer=False)
        save_keras(model, out / "final.keras", graph, file="final", epochs_completed=completed)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
    return _finish(out, spec, recipe, pipes, phases, loss_weights, monitor, allow_collapse, say)


def _loss_weights(graph, recipe) -> list | None:
    """The loss weights of a model with auxiliary outputs, in the model's output order; None
    for one output."""
    outputs = len(graph.outputs)
    weights_by_name = graph.meta.get("loss_weights") or {}
    loss_weights = [weights_by_name.get(o, 1.0) for o in graph.outputs] if outputs > 1 else None
    if outputs > 1 and recipe.loss.aux_weights is not None:
        check_aux_weights(recipe, None, outputs)
        loss_weights = [1.0, *recipe.loss.aux_weights]
    return loss_weights


def _stateful_callbacks(recipe, monitor: str, pipes):
    """(early stopping, reduce-on-plateau): Keras' own, or None each; stepped by RunCallback on
    complete epochs, their state saved with the checkpoint (`callbacks.FitState`)."""
    import keras

    plateau = early = None
    if recipe.schedule.name == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=recipe.schedule.factor, patience=recipe.schedule.patience,
            min_lr=recipe.schedule.min_learning_rate)
    if recipe.callbacks.early_stopping:
        es = recipe.callbacks.early_stopping
        early = keras.callbacks.EarlyStopping(monitor=_monitor(es.monitor, pipes), patience=es.patience,
                                              restore_best_weights=es.restore_best)
    return early, plateau


def _finish(out: Path, spec, recipe, pipes, phases, loss_weights, monitor: str, allow_collapse: bool, say) -> dict:
    """After the last epoch: metrics.json (`summary`, the collapse check) and the result."""
    classes = spec.head.classes
    metrics = summary(out, recipe, pipes, phases)
    # a network that collapsed (its last epochs at chance after better ones) is no success (issue 30)
    from .callbacks import collapse_message, constant_loss, find_collapse

    reference = constant_loss(spec.head.classifier_activation, classes, recipe.loss.label_smoothing)
    collapse = find_collapse(read_history(out), classes, reference * (sum(loss_weights) if loss_weights else 1.0),
                             pipes.val_size if pipes.val is not None else pipes.train_size)
    allowed = bool(allow_collapse or recipe.callbacks.allow_collapse)
    metrics["collapse"] = {**collapse, "allowed": allowed} if collapse else None
    write_json(out / "metrics.json", metrics)
    if collapse:
        line = collapse_message(collapse, classes)
        if not allowed:
            raise CollapsedError(
                f"{line}. best.keras holds epoch {metrics['best_epoch']} (the best on {monitor}); lower the "
                f"learning rate (--recipe-set optimizer.learning_rate=...) or clip the gradients (--recipe-set "
                f"optimizer.clipnorm=1.0) and start over (--force), or accept the run with --allow-collapse")
        say(f"warning: {line} (accepted: --allow-collapse)" if allow_collapse else
            f"warning: {line} (accepted: the recipe's callbacks.allow_collapse)")
    return {**metrics, "history": read_history(out)}


def save_checkpoint(manager, epochs: int | None) -> None:
    """Save a checkpoint under a number no earlier checkpoint has: the epochs complete (so
    ckpt-N follows epoch N), or one past the latest when that is taken (an interrupted
    epoch's checkpoint took it). TensorFlow writes a checkpoint's files one after another,
    so writing over one that exists could leave it half old, half new."""
    import tensorflow as tf

    from .rundir import shown

    last = manager.latest_checkpoint
    number = int(last.rsplit("-", 1)[1]) + 1 if last else 1
    try:
        manager.save(checkpoint_number=max(number, epochs or 0))
    except (tf.errors.OpError, OSError) as exc:  # a full disk, a read-only file system, I/O
        msg = " ".join(str(getattr(exc, "message", None) or exc).split())
        full = isinstance(exc, tf.errors.ResourceExhaustedError) or "No space left" in msg or (
            isinstance(exc, OSError) and exc.errno == errno.ENOSPC)
        what = "no space left on the device" if full else f"{type(exc).__name__}: {msg[:160]}"
        kept = f"the last complete one, {Path(last).name}, is kept" if last else "there is none before it"
        run = Path(manager.directory).parent
        raise ArchspecError(f"{shown(manager.directory)}: cannot save the checkpoint ({what}); {kept} and the "
                            f"run's files agree with it. Free some space and continue with: archspec train "
                            f"--resume {shown(run)}" if full else
                            f"{shown(manager.directory)}: cannot save the checkpoint ({what}); {kept} and the "
                            f"run's files agree with it") from None


def _has_variable(checkpoint: str, name: str) -> bool:
    import tensorflow as tf

    return f"{name}/.ATTRIBUTES/VARIABLE_VALUE" in dict(tf.train.list_variables(checkpoint))


def _restore_ended(model, checkpoint: str) -> None:
    """Into `model`, the weights a phase ended with: the checkpoint's, or, where early
    stopping restores the best weights, the best weights saved with it (what `fit`'s
    on_train_end put into the model of the uninterrupted run)."""
    import tensorflow as tf

    tf.train.Checkpoint(model=model).restore(checkpoint).expect_partial()
    if _has_variable(checkpoint, "callbacks/es_has_weights") and _saved_int(checkpoint, "callbacks/es_has_weights"):
        for i, w in enumerate(model.weights):
            w.assign(tf.train.load_variable(checkpoint, f"callbacks/es_weights/{i}/.ATTRIBUTES/VARIABLE_VALUE"))


def _repair_best(model, graph, out: Path, ckpt_dir: str, history: list, completed: int, monitor: str, recipe,
                 say) -> None:
    """best.keras as the history says: when it is missing or holds another epoch than the best
    complete one (a kill between that epoch's checkpoint and best.keras), rewrite it from the
    checkpoint of that epoch. The caller restores the model's weights afterwards."""
    import tensorflow as tf

    best = _best_row([r for r in history if int(r["epoch"]) < completed], monitor, recipe.callbacks.checkpoint.mode)
    if best is None:
        return
    want = int(best["epoch"]) + 1
    held = keras_training_info(out / "best.keras")
    if held is not None and held.get("epoch", want) == want:
        return
    state = tf.train.get_checkpoint_state(ckpt_dir)
    from .rundir import check_checkpoint

    for path in reversed(list(state.all_model_checkpoint_paths) if state else []):
        try:
            if _saved_int(path, "epoch") != want or _saved_int(path, "step") != 0:
                continue
            check_checkpoint(path)  # a damaged older checkpoint is not restored
        except (tf.errors.OpError, ValueError, SpecError):
            continue
        tf.train.Checkpoint(model=model).restore(path).expect_partial()
        save_keras(model, out / "best.keras", graph, file="best", epoch=want, monitor=monitor, value=best[monitor])
        say(f"best.keras rewritten from {path}: epoch {want}, the best on {monitor} (it held "
            + (f"epoch {held['epoch']})" if held else "nothing readable)"))
        return
    say(f"warning: best.keras does not hold epoch {want}, the best on {monitor}, and its checkpoint is gone")


def _monitor(name: str, pipes) -> str:
    if name.startswith("val_") and pipes.val is None:
        return name[4:]
    return name


def summary(out: Path, recipe, pipes, phases) -> dict:
    """metrics.json: progress, the best epoch's figures on the monitored metric, throughput."""
    rows = read_history(out)
    monitor = _monitor(recipe.callbacks.checkpoint.monitor, pipes)
    best = _best_row(rows, monitor, recipe.callbacks.checkpoint.mode)
    ips = sorted(r["images_per_second"] for r in rows if r.get("images_per_second"))
    return {"epochs_completed": len(rows), "epochs_planned": phases[-1]["end"], "monitor": monitor,
            "best_epoch": int(best["epoch"]) + 1 if best else None,
            **{k: (best.get(k) if best else None) for k in ("val_loss", "val_top1", "val_top5", "loss", "top1", "top5")},
            "images_per_second": ips[len(ips) // 2] if ips else None,
            "train_images": pipes.train_size, "val_images": pipes.val_size}
