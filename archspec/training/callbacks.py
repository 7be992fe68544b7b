"""The training loop's own Keras callback (imported only when training: it needs Keras)."""

from __future__ import annotations

import math
import time

import keras

from ..atomic import atomic_output
from . import loop


class RunCallback(keras.callbacks.Callback):
    """Per epoch: the scheduled learning rate; after a complete epoch, in this order, the
    history row, the checkpoint (the truth about progress), best.keras. An epoch whose mean
    loss is NaN/inf, or one a signal stopped before its last batch (the loop's handler sets
    `stop_training`), counts as incomplete: no row, no checkpoint. Per batch only a counter
    (`step_in_epoch`: the batches of the current epoch trained so far, which the loop saves
    when a signal stops the run); the loss is not read, which would make each step wait for
    the device.

    Args:
        run: the run directory; recipe; phase: this phase's plan entry; base_lr: its rate;
        manager, epoch_var, step_var: the CheckpointManager, its epoch counter and its
        batch-in-epoch counter; history: the rows so far (appended to); state: {"nan",
        "interrupted"} shared with the loop; steps: batches per epoch; main_output: the
        output whose metrics are reported as top1/top5; monitor: best.keras's metric; say:
        progress messages. Set by the loop before each fit: `images` (training images per
        epoch) and `offset` (batches of the first epoch trained before a resume).
    """

    def __init__(self, run, recipe, phase, base_lr, manager, epoch_var, step_var, history, state, steps,
                 main_output, monitor, say):
        super().__init__()
        self.run, self.recipe, self.phase, self.base_lr = run, recipe, phase, base_lr
        self.manager, self.epoch_var, self.step_var = manager, epoch_var, step_var
        self.history, self.state, self.steps = history, state, steps
        self.main_output, self.monitor, self.say = main_output, monitor, say
        self.images, self.offset, self.step_in_epoch = 0, 0, 0
        best = loop._best_row(history, monitor, recipe.callbacks.checkpoint.mode)
        self.best = best[monitor] if best else None

    def on_epoch_begin(self, epoch, logs=None):
        if self.recipe.schedule.name != "plateau":
            self.model.optimizer.learning_rate = loop.schedule_lr(
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
        loop.write_history(self.run, self.history)
        self.epoch_var.assign(epoch + 1)
        self.step_var.assign(0)
        self.step_in_epoch = 0
        self.manager.save(checkpoint_number=epoch + 1)
        value = row.get(self.monitor)
        if value is not None and value == value:
            maximize = self.recipe.callbacks.checkpoint.mode == "max" or (
                self.recipe.callbacks.checkpoint.mode == "auto" and ("top" in self.monitor or "acc" in self.monitor))
            if self.best is None or (value > self.best if maximize else value < self.best):
                self.best = value
                with atomic_output(self.run / "best.keras") as tmp:
                    self.model.save(tmp)
        self.say(f"epoch {epoch + 1}: " + ", ".join(f"{k} {row[k]:.4g}" for k in row
                                                   if k in ("loss", "top1", "val_loss", "val_top1", "val_top5")))


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
