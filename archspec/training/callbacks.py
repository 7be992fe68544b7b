"""The training loop's own Keras callback (imported only when training: it needs Keras)."""

from __future__ import annotations

import math
import time

import keras
import tensorflow as tf

from ..core.atomic import atomic_output
from . import epochs  # not the loop, which imports this module: no cycle
from .recipe import maximizes


class RunCallback(keras.callbacks.Callback):
    """Per epoch: the scheduled learning rate; after a complete epoch, in this order, the
    history row, the stateful callbacks' step (early stopping, reduce-on-plateau: they run
    here, on complete epochs only, not as callbacks of `fit`), the checkpoint (the truth
    about progress, with their state), best.keras. An epoch whose mean loss is NaN/inf, or
    one a signal stopped before its last batch (the loop's handler sets `stop_training`),
    counts as incomplete: no row, no callback step, no checkpoint. Per batch only a counter
    (`step_in_epoch`: the batches of the current epoch trained so far, which the loop saves
    when a signal stops the run); the loss is not read, which would make each step wait for
    the device.

    Args:
        run: the run directory; recipe; phase: this phase's plan entry; base_lr: its rate;
        epoch_var, step_var: the epoch counter and the batch-in-epoch counter the
        checkpoint holds (the engine's: `engines`); history: the rows so far (appended to); state: {"nan",
        "interrupted"} shared with the loop; steps: batches per epoch; main_output: the
        output whose metrics are reported as top1/top5; monitor: best.keras's metric; say:
        progress messages; fit_state: the `FitState` of the stateful callbacks (saved with
        the checkpoint); save_checkpoint: called with the epochs complete to save it;
        write_best: called with (epoch, value) to write best.keras; write_history: called
        with (run, rows) to write history.csv (the loop passes its own). Set by the loop before
        each fit: `images` (training images per epoch) and `offset` (batches of the first
        epoch trained before a resume).
    """

    def __init__(self, run, recipe, phase, base_lr, epoch_var, step_var, history, state, steps,
                 main_output, monitor, say, *, save_checkpoint, fit_state=None, write_best=None,
                 write_history=None):
        super().__init__()
        self.run, self.recipe, self.phase, self.base_lr = run, recipe, phase, base_lr
        self.epoch_var, self.step_var = epoch_var, step_var
        self.history, self.state, self.steps = history, state, steps
        self.main_output, self.monitor, self.say = main_output, monitor, say
        self.fit_state = fit_state
        self.save_checkpoint = save_checkpoint
        self.write_best = write_best
        self.write_history = write_history or epochs.write_history
        self.images, self.offset, self.step_in_epoch = 0, 0, 0
        best = epochs.best_row(history, monitor, recipe.callbacks.checkpoint.mode)
        self.best = best[monitor] if best else None

    def on_epoch_begin(self, epoch, logs=None):
        if self.recipe.schedule.name != "plateau":
            self.model.optimizer.learning_rate = epochs.schedule_lr(
                self.recipe, self.base_lr, epoch - self.phase["start"], self.phase["end"] - self.phase["start"])
        self.step_in_epoch = self.offset
        self.t0 = time.perf_counter()
        self.t_train = None

    def on_train_batch_end(self, batch, logs=None):
        self.step_in_epoch += 1

    def on_test_begin(self, logs=None):  # fit's validation: the epoch's training part has ended
        if self.t_train is None:
            self.t_train = time.perf_counter()

    def _row(self, epoch, logs) -> dict:
        prefix = f"{self.main_output}_"
        row = {"epoch": epoch, "phase": self.phase["name"]}
        for k, v in logs.items():
            key = k
            for head in ("val_", ""):
                if k.startswith(head + prefix) and not k.endswith("_loss"):
                    key = head + k[len(head + prefix):]
            row[key] = float(v)
        return row

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.state["nan"] = epoch
            self.model.stop_training = True
        if self.state["nan"] is not None or (self.state["interrupted"] and self.step_in_epoch < self.steps):
            return  # an incomplete epoch: no row, no checkpoint
        seconds = (self.t_train or time.perf_counter()) - self.t0
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        logs["learning_rate"] = lr  # TensorBoard, after this callback, logs it too
        row = {**self._row(epoch, logs), "learning_rate": lr, "seconds": seconds,
               "images_per_second": self.images / seconds if seconds > 0 else 0.0}
        self.history.append(row)
        self.write_history(self.run, self.history)
        if self.fit_state is not None:  # after the row (its rate is the epoch's, before a plateau drop)
            self.fit_state.epoch_end(epoch, logs)
        self.epoch_var.assign(epoch + 1)
        self.step_var.assign(0)
        self.step_in_epoch = 0
        try:
            self.save_checkpoint(epoch + 1)
        except BaseException:  # a full disk: the epoch is not complete, its row goes (the checkpoint is the truth)
            self.history.pop()
            try:
                self.write_history(self.run, self.history)
            except Exception:  # noqa: BLE001 - a resume drops a row past the checkpoint anyway
                pass
            raise
        value = row.get(self.monitor)
        if value is not None and value == value:
            maximize = maximizes(self.monitor, self.recipe.callbacks.checkpoint.mode)
            if self.best is None or (value > self.best if maximize else value < self.best):
                self.best = value
                if self.write_best is not None:
                    self.write_best(epoch, value)
                else:
                    with atomic_output(self.run / "best.keras") as tmp:
                        self.model.save(tmp)
        self.say(f"epoch {epoch + 1}: " + ", ".join(f"{k} {row[k]:.4g}" for k in row
                                                   if k in ("loss", "top1", "val_loss", "val_top1", "val_top5")))


class FitState(tf.Module):
    """The state of the stateful callbacks of a phase, early stopping (`wait`, `best`,
    `best_epoch`, `stopped_epoch` and, with `restore_best_weights`, the best weights) and
    reduce-on-plateau (`wait`, `best`, `cooldown_counter`; the reduced rate itself is the
    optimizer's, which the checkpoint holds), as variables tracked by the checkpoint, so a
    resumed run continues them instead of starting them over.

    The Keras callbacks are Keras' own, driven by `RunCallback` on complete epochs only
    (`epoch_end`: their step, then their state into the variables); `start` begins a phase
    (their `on_train_begin`, once, not per `fit`), `load` puts restored variables back into
    them, and `end` ends the phase (early stopping's `on_train_end`: the best weights back
    into the model with `restore_best_weights`, as `fit` would have done).

    Args:
        phase_index: the phase (0-based); saved, so a checkpoint says whose state it holds.
        model: the model being trained.
        early: a keras.callbacks.EarlyStopping, or None.
        plateau: a keras.callbacks.ReduceLROnPlateau, or None.
    """

    def __init__(self, phase_index: int, model, early=None, plateau=None):
        super().__init__(name="fit_state")
        self._early, self._plateau, self._model = early, plateau, model
        i64, f64 = tf.int64, tf.float64
        self.phase = tf.Variable(phase_index, dtype=i64, trainable=False)
        self.es_wait = tf.Variable(0, dtype=i64, trainable=False)
        self.es_best = tf.Variable(0.0, dtype=f64, trainable=False)
        self.es_has_best = tf.Variable(0, dtype=i64, trainable=False)
        self.es_best_epoch = tf.Variable(0, dtype=i64, trainable=False)
        self.es_stopped_epoch = tf.Variable(0, dtype=i64, trainable=False)
        self.es_has_weights = tf.Variable(0, dtype=i64, trainable=False)
        self.es_weights = ([tf.Variable(tf.zeros(w.shape, w.dtype), trainable=False) for w in model.weights]
                           if early is not None and early.restore_best_weights else [])
        self.lr_wait = tf.Variable(0, dtype=i64, trainable=False)
        self.lr_best = tf.Variable(0.0, dtype=f64, trainable=False)
        self.lr_has_best = tf.Variable(0, dtype=i64, trainable=False)
        self.lr_cooldown = tf.Variable(0, dtype=i64, trainable=False)
        self._synced_weights = None

    def start(self) -> None:
        for cb in (self._early, self._plateau):
            if cb is not None:
                cb.set_model(self._model)
                cb.on_train_begin()

    def epoch_end(self, epoch: int, logs: dict) -> None:
        for cb in (self._early, self._plateau):
            if cb is not None:
                cb.on_epoch_end(epoch, logs)
        self.save()

    def end(self) -> None:
        if self._early is not None:
            self._early.on_train_end()

    @property
    def stopped(self) -> bool:
        return bool(self._early is not None and self._early.stopped_epoch)

    def save(self) -> None:
        """The callbacks' state into the variables (before each checkpoint)."""
        es, lr = self._early, self._plateau
        if es is not None:
            self.es_wait.assign(int(es.wait))
            self.es_has_best.assign(int(es.best is not None))
            self.es_best.assign(float(es.best) if es.best is not None else 0.0)
            self.es_best_epoch.assign(int(es.best_epoch))
            self.es_stopped_epoch.assign(int(es.stopped_epoch))
            if self.es_weights and es.best_weights is not None and es.best_weights is not self._synced_weights:
                for v, w in zip(self.es_weights, es.best_weights):
                    v.assign(w)
                self._synced_weights = es.best_weights
            self.es_has_weights.assign(int(bool(self.es_weights) and es.best_weights is not None))
        if lr is not None:
            self.lr_wait.assign(int(lr.wait))
            self.lr_has_best.assign(int(lr.best is not None))
            self.lr_best.assign(float(lr.best) if lr.best is not None else 0.0)
            self.lr_cooldown.assign(int(lr.cooldown_counter))

    def load(self) -> None:
        """Restored variables back into the callbacks (after `start`, after a restore)."""
        es, lr = self._early, self._plateau
        if es is not None:
            es.wait = int(self.es_wait.numpy())
            es.best = float(self.es_best.numpy()) if int(self.es_has_best.numpy()) else None
            es.best_epoch = int(self.es_best_epoch.numpy())
            es.stopped_epoch = int(self.es_stopped_epoch.numpy())
            if self.es_weights and int(self.es_has_weights.numpy()):
                es.best_weights = [v.numpy() for v in self.es_weights]
                self._synced_weights = es.best_weights
        if lr is not None:
            lr.wait = int(self.lr_wait.numpy())
            lr.best = float(self.lr_best.numpy()) if int(self.lr_has_best.numpy()) else None
            lr.cooldown_counter = int(self.lr_cooldown.numpy())


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback as archspec uses it (`update_freq="epoch"`): epoch
    scalars, the graph, weight histograms on request. Keras' own calls `tf.summary.scalar`
    for every metric after every batch even then, with no writer to take them (0.12 ms a
    batch here, about 1% of a small CNN's step); this one skips that per-batch work and
    keeps the one-time graph write."""

    def on_train_batch_begin(self, batch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        if getattr(self, "_should_write_train_graph", False):
            super().on_train_batch_end(batch, None)


class LossGuard(keras.callbacks.Callback):
    """Stops a run whose training loss explodes, after the batch where it does.

    The rule ("explodes"): after every batch and at the end of every epoch, the training
    loss Keras reports (the running mean of the epoch so far) is checked; it has exploded
    when it is NaN or infinite, or larger than `FACTOR` (1,000) times `reference`: the loss
    of a uniform guess, ln(classes) for softmax and logit heads, ln 2 for sigmoid heads
    (times the sum of the loss weights when there are auxiliary outputs). An untrained
    network whose inputs are scaled as it expects starts near that loss, and a mean loss
    1,000 times higher is never a state training recovers from usefully: the learning rate
    is too high, or the inputs are not scaled as the spec expects (its `input.preprocessing`).
    Reading the loss per batch costs nothing more: Keras converts the logs for every batch.

    The epoch counts as incomplete (`state["nan"]` is the epoch, which `RunCallback`, after
    this one in the list, reads: no history row, no checkpoint), so the run directory keeps
    its last complete epoch; `state["diverged"]` says why, for the loop's message.

    Args:
        reference: the uniform guess's loss.
        classes: the classifier's width (for the message).
        state: the loop's shared state.
    """

    FACTOR = 1000.0

    def __init__(self, reference: float, classes: int, state: dict):
        super().__init__()
        self.reference, self.classes, self.state = reference, classes, state
        self.first = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._check((logs or {}).get("loss"), f"epoch {self.epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._check((logs or {}).get("loss"), f"epoch {epoch + 1}")

    def _check(self, loss, where: str) -> None:
        if loss is None or self.state.get("nan") is not None:
            return
        loss = float(loss)
        if self.first is None:
            self.first = loss
        if not math.isfinite(loss):
            what = f"the loss became NaN or infinite in {where} (it started at {self.first:.3g})"
        elif loss > self.FACTOR * self.reference:
            what = (f"the loss exploded in {where}: it rose from {self.first:.3g} to {loss:.3g}, over "
                    f"{self.FACTOR:g}x the {self.reference:.3g} of a uniform guess over {self.classes} classes")
        else:
            return
        why = (f"{what}. The learning rate is too high (--recipe-set optimizer.learning_rate=...) or the inputs are "
               f"not scaled as the spec expects (its input.preprocessing, e.g. [{{type: rescaling, scale: "
               f"0.00392156862745098}}] for 0..255 pixels)")
        self.state["nan"] = self.epoch
        self.state["diverged"] = why
        self.model.stop_training = True


COLLAPSE_EPOCHS = 3  # `find_collapse`: the epochs at chance, to the end of the run, that make a collapse
COLLAPSE_TOLERANCE = 0.05  # and how far (relatively) below the constant prediction's loss "at chance" reaches


def constant_loss(activation: str | None, classes: int, label_smoothing: float = 0.0) -> float:
    """The loss of a network that has stopped using its inputs: it outputs the same
    prediction for every image, at best the class frequencies, for balanced classes the
    uniform guess. Softmax and logit heads: ln(classes) (label smoothing changes nothing:
    smoothed targets still sum to 1); sigmoid heads: the binary entropy of the rate a class
    is the target (1/classes, smoothed), averaged over the classes as binary cross-entropy is."""
    c = max(classes, 2)
    if activation != "sigmoid":
        return math.log(c)
    p = (1.0 / c) * (1.0 - label_smoothing) + label_smoothing / 2.0
    return -(p * math.log(p) + (1.0 - p) * math.log(1.0 - p))


def find_collapse(rows: list[dict], classes: int, reference: float, images: int | None = None) -> dict | None:
    """A run whose network collapsed: after being better than chance, it ended at chance.

    The rule, on the figures of complete epochs (the history rows; the validation figures
    `val_loss`, `val_top1` when the rows have them, else the training `loss`, `top1`):

    - an epoch is *at chance* when its top-1 is at most 1/C + min(0.5/C, 0.05 (1 - 1/C))
      (C classes: 0.145 for 10, 0.015 for 100, 0.525 for 2) and its loss is no better than
      a constant prediction's, `reference` (`constant_loss`: ln C for softmax heads, times
      the sum of the loss weights with auxiliary outputs), less 5%: at least 0.95 x
      reference. A network whose units died sits at the reference (2.303 = ln 10); one the
      rate threw about sits above it, and so does the loss of a spec with weight decay,
      whose L2 term Keras adds to the loss;
    - the run *collapsed* when its last `COLLAPSE_EPOCHS` (3) or more epochs are at chance and
      an epoch before them was clearly better: top-1 at least 1/C + min(1/C, 0.2 (1 - 1/C))
      (0.2 for 10 classes, 0.02 for 100, 0.6 for 2), and, with `images` (how many images the
      figures are measured on), 3 standard errors above chance, sqrt((1/C)(1 - 1/C)/images):
      a lucky guess on a handful of images is no better (0.42 for 10 classes on 8 images; on
      81 or more, the first bound). It collapsed at the first epoch at
      chance after the last clearly better one (an epoch between chance and clearly better,
      a flicker of a dead network, does not move it).

    A run that was never better than chance did not collapse (it did not learn: another
    failure, which this rule does not name), and neither did one that dipped to chance for
    a few epochs and recovered, nor one that ends with one or two epochs at chance: the
    model it ends with is not what this rule is about then. Rows without top-1 (a recipe
    whose metrics leave it out) are never a collapse.

    Returns:
        None, or the collapse: `epoch` (1-based, where it collapsed), its `learning_rate`,
        `epochs_at_chance` (from there to the last epoch) of `epochs_after` (the epochs from
        there on), their mean `loss` and `top1`, `reference_loss`, `chance_top1` (the top-1
        bound), `figures` ("validation" or "training") and `best_before` ({`epoch`, `top1`}:
        the best epoch before).
    """
    if not rows:
        return None
    val = all("val_top1" in r and "val_loss" in r for r in rows)
    top_key, loss_key = ("val_top1", "val_loss") if val else ("top1", "loss")
    if not all(top_key in r and loss_key in r for r in rows):
        return None
    c = max(classes, 2)
    chance = 1.0 / c + min(0.5 / c, 0.05 * (1.0 - 1.0 / c))
    better = 1.0 / c + min(1.0 / c, 0.2 * (1.0 - 1.0 / c))
    if images:
        better = max(better, 1.0 / c + 3.0 * math.sqrt((1.0 / c) * (1.0 - 1.0 / c) / images))

    def at_chance(r: dict) -> bool:
        top, loss = float(r[top_key]), float(r[loss_key])
        return top == top and loss == loss and top <= chance and loss >= (1.0 - COLLAPSE_TOLERANCE) * reference

    n = 0
    while n < len(rows) and at_chance(rows[len(rows) - 1 - n]):
        n += 1
    if n < COLLAPSE_EPOCHS or n == len(rows):
        return None
    start = len(rows) - n  # back over the epochs not clearly better, to the first at chance after the last better
    while start > 0 and not float(rows[start - 1][top_key]) >= better:
        start -= 1
    while not at_chance(rows[start]):
        start += 1
    before = [r for r in rows[:start] if float(r[top_key]) == float(r[top_key])]
    best = max(before, key=lambda r: float(r[top_key]), default=None)
    if best is None or float(best[top_key]) < better:
        return None
    after = rows[start:]
    first = after[0]
    return {"epoch": int(first["epoch"]) + 1,
            "learning_rate": float(first["learning_rate"]) if first.get("learning_rate") not in (None, "") else None,
            "epochs_at_chance": sum(1 for r in after if at_chance(r)), "epochs_after": len(after),
            "loss": sum(float(r[loss_key]) for r in after) / len(after),
            "top1": sum(float(r[top_key]) for r in after) / len(after),
            "reference_loss": reference, "chance_top1": chance,
            "figures": "validation" if val else "training",
            "best_before": {"epoch": int(best["epoch"]) + 1, "top1": float(best[top_key])}}


def collapse_message(c: dict, classes: int) -> str:
    """One line for a collapse `find_collapse` found: where, at which rate, and how."""
    ref, loss = c["reference_loss"], c["loss"]
    uniform = abs(ref - math.log(max(classes, 2))) < 1e-9
    what = f"ln({classes})" if uniform else "a constant guess's loss"
    if abs(loss - ref) <= COLLAPSE_TOLERANCE * ref:
        shown = f"loss {loss:.3f} = {what}" if uniform else f"loss {loss:.3f} = {what} ({ref:.3f})"
    else:
        shown = f"loss {loss:.4g}, above {what} = {ref:.3f}"
    lr = f" (learning rate {c['learning_rate']:.3g})" if c.get("learning_rate") is not None else ""
    on = "" if c["figures"] == "validation" else " (training figures: no validation data)"
    n, m = c["epochs_at_chance"], c.get("epochs_after", c["epochs_at_chance"])
    b = c["best_before"]
    span = f"{n} epochs" if n == m else f"{n} of {m} epochs"
    return (f"the network collapsed at epoch {c['epoch']}{lr}: {shown}, top-1 {c['top1']:.2f} = chance, for {span} "
            f"after reaching {b['top1']:.2f} at epoch {b['epoch']}{on}")
