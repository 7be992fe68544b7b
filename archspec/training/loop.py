"""`archspec train`: a spec trained from a recipe with Keras `fit`, into a run directory
that can always be resumed.

A run is a short sequence of named steps passing one `Run` along: `train` checks every input
(`precheck`, before TensorFlow) and, for a multi-worker run, starts this worker's process;
`_train` prepares the run (loads and checks the spec, recipe, data, weights; makes and locks
the run directory); `_fit` places it on its engine (`engines`: one TensorFlow process under a
tf.distribute strategy, or one worker of Keras' own distribution over JAX: the one step in
which the two differ, with the checkpoints each can write), then `build_model`, `read_data`,
the engine's resume point, and per phase `compile_phase`, `phase_callbacks`, `fit_phase` and
`end_phase`; `_finish` writes metrics.json and judges a collapse.

The run directory::

    RUN/
      spec.yaml        the resolved spec (self-contained: a run is reproducible)
      recipe.yaml      the resolved recipe
      run.json         what resume needs: the data path, classes, overrides, the plan
      classes.json     class names in label order (for predict)
      checkpoints/     tf.train.CheckpointManager: model, optimizer, epoch, batches trained of
                       the next epoch; every epoch and on SIGINT/SIGTERM (max_to_keep from the
                       recipe); a multi-worker run's: Keras' files, epoch-N/ per complete epoch
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

import fcntl
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..backends.keras.files import save_keras
from ..core.atomic import write_text_atomic
from ..core.errors import ArchspecError, Location, SpecError
# what the callback needs of the loop lives below both (`epochs`), so it never imports the
# loop back (no cycle); importable from here as before
from .epochs import HISTORY, schedule_lr, write_history  # noqa: F401
from .epochs import best_row as _best_row
# the rules the precheck applies too, written once (`rules`); importable from here as before
from .rules import (LOCK, check_aux_weights, check_crop_padding, check_distribute, check_include_top,  # noqa: F401
                    check_replaceable, check_size_agrees, plan, scaled_warmup)


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
    if a.crop_padding:  # zeros around, then a random crop back (tf.pad: a Keras layer that is no tf.data layer
        pad = a.crop_padding  # would run on the model's backend, JAX in a multi-worker run, inside tf.data's graph)
        layers += [lambda x, training=True: tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]]),
                   keras.layers.RandomCrop(*size, seed=seed + 1)]
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
    return _fit(Run(out=out, spec=spec, recipe=recipe, graph=graph, src=src, size=tuple(size), phases=phases,
                    weights=weights if not resume else None, weights_skip=tuple(weights_skip), resume=resume,
                    distribute=distribute, say=say, verbose=verbose, allow_collapse=allow_collapse,
                    extra_callbacks=tuple(extra_callbacks), kb=kb))


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


# ---------------------------------------------------------------- the steps of a run


@dataclass
class Run:
    """One run as the steps pass it along: what `_train` checked and made (the spec, recipe,
    graph, data source, image size, phases, run directory), then what each step adds."""

    out: Path
    spec: Any
    recipe: Any
    graph: Any
    src: Any
    size: tuple
    phases: list
    weights: str | None  # initial weights of a new run; None on resume
    weights_skip: tuple
    resume: bool
    distribute: str | None
    say: Callable[[str], None]
    verbose: Any
    allow_collapse: bool = False
    extra_callbacks: tuple = ()
    kb: Any = None  # the Keras backend of archspec (`backends.keras`)
    engine: Any = None  # `engines.OneProcess` or `engines.Workers`: the one step the paths differ in
    global_batch: int = 0
    model: Any = None
    pipes: Any = None
    loss_weights: list | None = None
    monitor: str = ""
    history: list = field(default_factory=list)
    run_json: dict = field(default_factory=dict)
    stopped: set = field(default_factory=set)
    completed: int = 0
    state: dict = field(default_factory=lambda: {"interrupted": False, "nan": None})


def _fit(run: Run) -> dict:
    """Train a prepared run (its directory made and locked by `_train`): the engine places it,
    then the same steps for one process and for each worker of a multi-worker run."""
    from .engines import engine_of

    engine = run.engine = engine_of(run.distribute, run.out, run.say)  # the placement: the one step that differs
    try:
        build_model(run)
        read_data(run)
        engine.resume_point(run)
        with engine.signals(run):
            for pi, ph in enumerate(run.phases):
                if run.completed >= ph["end"] or ph["name"] in run.stopped or engine.skipped_phase(pi):
                    continue
                phase = compile_phase(run, pi, ph)
                fit_phase(run, ph, phase, phase_callbacks(run, ph, phase))
                end_phase(run, ph, phase)
            engine.end(run)
            save_keras(run.model, run.out / "final.keras", run.graph, file="final", epochs_completed=run.completed)
    finally:
        engine.close()
    return _finish(run.out, run.spec, run.recipe, run.pipes, run.phases, run.loss_weights, run.monitor,
                   run.allow_collapse, run.say)


def build_model(run: Run) -> None:
    """The network in the engine's scope, the same initial weights on every worker (the
    recipe's seed), and the initial weights file strictly loaded (a new run's)."""
    import keras

    engine, recipe = run.engine, run.recipe
    keras.utils.set_random_seed(recipe.seed)
    with engine.scope():
        run.model = run.kb.build_model(run.graph, precision=None if recipe.precision == "float32" else recipe.precision,
                                       seed=recipe.seed)
        if run.weights:  # pretrained weights, strictly: the report's summary line said; a new head re-initialised
            from .rundir import load_initial_weights

            with _quiet_tf():  # (on every worker: the file must be on every machine)
                load_initial_weights(run.model, run.graph, run.weights, run.weights_skip, engine.say)


def read_data(run: Run) -> None:
    """The training and validation pipelines at the global batch (batch_size x replicas), the
    metric best.keras follows, the loss weights of auxiliary outputs."""
    from . import data as data_mod

    spec, recipe, engine = run.spec, run.recipe, run.engine
    run.global_batch = recipe.data.batch_size * engine.replicas
    run.pipes = pipes = data_mod.datasets(run.src, recipe, run.size, spec.input.shape[2], spec.head.classes,
                                          len(run.graph.outputs), run.global_batch, recipe.seed,
                                          augmenter(recipe, run.size, recipe.seed), engine.say,
                                          preprocess=spec.input.preprocess)
    for note in engine.data_notes(pipes, run.global_batch):
        engine.say(note)
    if pipes.val is None:
        engine.say("no validation data (the data has no test set and data.validation_split is 0): val_* metrics "
                   "are absent")
    # A list in the model's output order: Keras 3.15 pairs a dict of loss weights with a list of
    # outputs in sorted-name order, so {loss3: 1, loss1: .3, loss2: .3} would weigh loss2 by 1.
    run.loss_weights = _loss_weights(run.graph, run.recipe)
    run.monitor = _monitor(recipe.callbacks.checkpoint.monitor, pipes)


@dataclass
class Phase:
    """A phase being trained: its optimizer, rate, stateful callbacks and checkpoint."""

    index: int
    base_lr: float
    optimizer: Any
    early: Any
    fit_state: Any
    epoch_var: Any
    step_var: Any
    save: Callable
    start: int = 0
    run_cb: Any = None


def compile_phase(run: Run, pi: int, ph: dict) -> Phase:
    """The phase's frozen layers, its optimizer at the phase's rate x replicas, the model
    compiled, the stateful callbacks (early stopping, reduce-on-plateau), its checkpoint and
    the resume point restored into it."""
    import numpy as np

    from .callbacks import FitState
    from .recipe import frozen_layers

    engine, recipe, spec, model = run.engine, run.recipe, run.spec, run.model
    frozen = frozen_layers(run.graph, spec, ph["phase"], None, pi)
    for layer in model.layers:
        layer.trainable = layer.name not in frozen
    base_lr = (ph["phase"].learning_rate or recipe.optimizer.learning_rate) * engine.replicas
    outputs = len(run.graph.outputs)
    with engine.scope():
        opt = make_optimizer(recipe, base_lr, recipe.precision)
        loss = loss_object(recipe, spec.head.classifier_activation)
        mets = metric_objects(recipe, spec.head.classes)
        model.compile(optimizer=opt, loss=[loss] * outputs if outputs > 1 else loss, loss_weights=run.loss_weights,
                      metrics=[mets] + [[] for _ in range(outputs - 1)] if outputs > 1 else mets,
                      **engine.compile_options(recipe))
        opt.build(model.trainable_variables)
        epoch_var, step_var = engine.counters(run.completed)
        early, plateau = _stateful_callbacks(recipe, run.monitor, run.pipes)
        fit_state = FitState(pi, model, early, plateau)
    fit_state.start()
    save = engine.phase_checkpoints(run, pi, ph, opt, fit_state, epoch_var, step_var)
    start = max(run.completed, ph["start"])
    run.history[:] = [r for r in run.history if int(r["epoch"]) < start]
    write_history(run.out, run.history)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    run.say(f"phase {ph['name']}: epochs {start + 1}-{ph['end']} of {run.phases[-1]['end']}, {trainable:,} trainable "
            f"params, learning rate {base_lr:g}, global batch {run.global_batch}" + engine.describe())
    return Phase(pi, base_lr, opt, early, fit_state, epoch_var, step_var, save, start)


def phase_callbacks(run: Run, ph: dict, phase: Phase) -> list:
    """Keras' progress bar (rank 0), the loss guard, archspec's epoch callback (history row,
    stateful callbacks, checkpoint, best.keras), the caller's callbacks, TensorBoard (rank 0)."""
    from .callbacks import LossGuard, RunCallback

    engine, recipe, spec, model, monitor = run.engine, run.recipe, run.spec, run.model, run.monitor

    def write_best(epoch, value):  # on every worker (a Keras save), each into its own out
        save_keras(model, run.out / "best.keras", run.graph, file="best", epoch=epoch + 1, monitor=monitor,
                   value=value)

    phase.run_cb = RunCallback(run.out, recipe, ph, phase.base_lr, phase.epoch_var, phase.step_var, run.history,
                               run.state, run.pipes.steps_per_epoch, run.graph.outputs[0], monitor, engine.say,
                               fit_state=phase.fit_state, save_checkpoint=phase.save,
                               write_best=write_best, write_history=write_history)
    # first: RunCallback must see an exploded epoch as incomplete
    callbacks = [LossGuard(chance_loss(spec.head.classifier_activation, spec.head.classes)
                           * (sum(run.loss_weights) if run.loss_weights else 1.0), spec.head.classes, run.state),
                 phase.run_cb, *run.extra_callbacks]
    if run.verbose and engine.chief:  # Keras' bar ends its line (finalized first) before archspec's epoch line
        from keras.callbacks import ProgbarLogger

        callbacks.insert(0, ProgbarLogger())
    if recipe.callbacks.tensorboard is not None and engine.chief:
        from .callbacks import EpochTensorBoard

        callbacks.append(EpochTensorBoard(str(run.out / "tensorboard"),
                                          histogram_freq=recipe.callbacks.tensorboard.histogram_freq))
    return callbacks


def fit_phase(run: Run, ph: dict, phase: Phase, callbacks: list) -> None:
    """Keras `fit` over the phase's epochs, each epoch's batches in the order its seed and
    number give (`data.epoch_order`), this process's part of them; an epoch a signal stopped
    mid-way is finished first, from the batch after the last one trained."""
    engine, pipes, model = run.engine, run.pipes, run.model
    steps, start, skip = pipes.steps_per_epoch, phase.start, engine.take_skip()
    fits = [(start, ph["end"], 0)]  # (first epoch, end, batches of the first already trained)
    if skip and start == run.completed:  # a signal stopped epoch `start` after `skip` batches: its rest first
        run.say(f"epoch {start + 1}: continuing after batch {skip} of {steps}; its training loss, metrics and "
                f"images/s cover batches {skip + 1}-{steps}")
        fits = [(start, start + 1, skip)] + ([(start + 1, ph["end"], 0)] if start + 1 < ph["end"] else [])
    val = engine.batches(pipes.val) if pipes.val is not None else None
    for first, end, offset in fits:
        phase.run_cb.offset, phase.run_cb.images = offset, pipes.train_size - offset * run.global_batch
        data = pipes.train_from(first).skip(offset) if offset else pipes.train_from(first)
        with _quiet_tf():  # "tf.function retracing" notices stay off the root logger
            model.fit(engine.batches(data), validation_data=val, epochs=end, initial_epoch=first,
                      steps_per_epoch=steps - offset, callbacks=callbacks,
                      verbose=run.verbose if engine.chief else 0, shuffle=False)
        if model.stop_training:  # a signal, a NaN or early stopping
            break


def end_phase(run: Run, ph: dict, phase: Phase) -> None:
    """After the phase's fit: a NaN loss is an error keeping the last good checkpoint, a
    signal saves a checkpoint with the batches trained and stops, early stopping is recorded
    (run.json), and early stopping's best weights come back as fit's on_train_end does."""
    run.completed = completed = int(phase.epoch_var.numpy())
    state = run.state
    if state["nan"] is not None:
        why = state.get("diverged") or (f"the loss became NaN or infinite in epoch {state['nan'] + 1}; lower "
                                        f"the learning rate (--recipe-set optimizer.learning_rate=...)")
        raise DivergedError(f"{why}; training stopped. The last good checkpoint is kept{run.engine.kept()}; start "
                            f"over (--force) once the cause is changed")
    if state["interrupted"]:
        done = phase.run_cb.step_in_epoch
        phase.step_var.assign(done)
        phase.save(None)
        raise Interrupted(f"{state['interrupted']}: stopped in epoch {completed + 1}; checkpoint saved after "
                          f"{completed} complete epochs" + (f" and {done} batches of epoch {completed + 1}"
                                                            if done else "")
                          + f". Continue with: archspec train --resume {run.out}")
    phase.fit_state.end()  # the phase is over: early stopping's best weights back, as fit's on_train_end does
    if completed < ph["end"] and phase.early is not None and phase.early.stopped_epoch:
        run.say(f"early stopping ended phase {ph['name']} after epoch {completed}")
        run.stopped.add(ph["name"])
        write_json(run.out / "run.json", {**run.run_json, "stopped_early": sorted(run.stopped)})


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
