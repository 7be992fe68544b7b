"""Where a run's model is placed, and the checkpoints that place can write: the one step in
which a single process and a multi-worker run differ (`loop._fit` runs the same steps over
either engine).

- `OneProcess`: TensorFlow in this process, under a tf.distribute strategy (MirroredStrategy
  over the local devices, or the default one); TensorFlow checkpoints
  (`tf.train.CheckpointManager`: the model, the optimizer, the epoch and batch counters,
  `callbacks.FitState`), saved every epoch and on SIGINT/SIGTERM, so a run resumes mid-epoch.
- `Workers`: one worker of `--distribute multi_worker`, Keras' own `DataParallel` over JAX
  (`multiworker`: the cluster, each worker's part of every batch, lockstep saves); Keras-format
  checkpoints, one per complete epoch, in rank 0's run directory, read there and broadcast on
  resume.

An engine says how many replicas the global batch is split over, opens the scope models and
optimizers are made in, cuts the batches this process feeds, reads the point a resumed run
starts from, restores it into each phase, saves checkpoints, and says (on rank 0 only) what
it does.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Callable

from ..backends.keras.files import keras_training_info, save_keras
from ..core.errors import ArchspecError, Location, SpecError
from .epochs import best_row as _best_row
from .rules import check_distribute


def engine_of(distribute: str | None, out: Path, say: Callable[[str], None]):
    """The engine of a run: `Workers` for multi_worker, else `OneProcess`."""
    return Workers(out, say) if distribute == "multi_worker" else OneProcess(distribute, out, say)


class _Engine:
    """What both engines keep of the resume point: the phase whose stateful callbacks the
    checkpoint holds, and whether early stopping had ended it."""

    ck_phase, ck_stopped = -1, False

    def skipped_phase(self, pi: int) -> bool:
        """Phase `pi` was ended by early stopping before the checkpoint (a resume skips it)."""
        return self.ck_stopped and self.ck_phase == pi


class OneProcess(_Engine):
    """This process, TensorFlow, a tf.distribute strategy; TensorFlow checkpoints (module
    docstring)."""

    chief = True

    def __init__(self, distribute: str | None, out: Path, say: Callable[[str], None]):
        self.strategy = strategy_of(distribute)
        self.replicas = self.strategy.num_replicas_in_sync
        self.say, self.out, self.ckpt_dir = say, Path(out), str(Path(out) / "checkpoints")
        self.latest, self.skip, self.manager = None, 0, None
        self.ck_state, self.ck_phase, self.ck_stopped = False, -1, False

    def scope(self):
        return self.strategy.scope()

    def batches(self, ds):
        return ds

    def data_notes(self, pipes, global_batch: int) -> list[str]:
        return []

    def compile_options(self, recipe) -> dict:
        return {"jit_compile": recipe.jit_compile}

    def describe(self) -> str:
        return f" over {self.replicas} replicas" if self.replicas > 1 else ""

    @contextlib.contextmanager
    def signals(self, run):
        """SIGINT/SIGTERM stop the epoch after its current batch (it counts as incomplete);
        the loop then saves a checkpoint with the batches trained."""
        def on_signal(signum, frame):
            run.state["interrupted"] = signal.Signals(signum).name
            run.model.stop_training = True
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def resume_point(self, run) -> None:
        """Where the run starts: the latest checkpoint (every file of it read back first), its
        epochs and batches, the stateful callbacks' phase and whether early stopping ended it;
        best.keras repaired from the checkpoint of the best epoch when a kill left it older."""
        import tensorflow as tf

        from .rundir import check_checkpoint, check_history, read_history, read_run_json

        run.history = read_history(run.out) if run.resume else []
        run.run_json = read_run_json(run.out)
        run.stopped = set(run.run_json.get("stopped_early", []))
        latest = self.latest = tf.train.latest_checkpoint(self.ckpt_dir) if run.resume else None
        if latest is not None:
            check_checkpoint(latest)
        run.completed = _saved_int(latest, "epoch") if latest else 0
        if latest is not None:  # the history has the checkpoint's last epoch (each row precedes its checkpoint)
            check_history(run.out, run.history, run.completed, latest)
        self.skip = _saved_int(latest, "step") if latest else 0  # batches of epoch `completed` trained before a signal
        self.ck_state = bool(latest) and _has_variable(latest, "callbacks/phase")
        self.ck_phase = _saved_int(latest, "callbacks/phase") if self.ck_state else -1
        self.ck_stopped = bool(self.ck_state and _saved_int(latest, "callbacks/es_stopped_epoch"))
        if run.resume:
            self.say(f"resuming {run.out}: {run.completed} epochs complete"
                     + (f" and {self.skip} batches of the next" if self.skip else "")
                     + (f" ({latest})" if latest else " (no checkpoint yet)"))
        if latest is not None:  # a kill between a checkpoint and best.keras: best.keras from that checkpoint
            _repair_best(run.model, run.graph, run.out, self.ckpt_dir, run.history, run.completed, run.monitor,
                         run.recipe, self.say)

    def counters(self, completed: int):
        """The epoch and batch counters the checkpoint holds (made in the scope)."""
        import tensorflow as tf

        return (tf.Variable(completed, dtype=tf.int64, trainable=False, name="epoch"),
                tf.Variable(0, dtype=tf.int64, trainable=False, name="step"))

    def phase_checkpoints(self, run, pi: int, ph: dict, opt, fit_state, epoch_var, step_var) -> Callable:
        """The checkpoint of this phase (its saver: called with the epochs complete, or None
        for a signal's); the resume point restored into the first phase that trains: mid-phase
        the weights, optimizer, counters and callbacks, at a boundary the weights the last
        phase ended with."""
        import tensorflow as tf

        ckpt = tf.train.Checkpoint(model=run.model, optimizer=opt, epoch=epoch_var, step=step_var,
                                   callbacks=fit_state)
        manager = self.manager = tf.train.CheckpointManager(ckpt, self.ckpt_dir,
                                                            max_to_keep=run.recipe.callbacks.checkpoint.max_to_keep)
        latest = self.latest
        if latest is not None:  # restored once, into the phase the run stopped in
            if run.completed > ph["start"] or self.skip:
                if self.ck_state:
                    ckpt.restore(latest).assert_existing_objects_matched()
                    fit_state.load()
                else:  # a checkpoint of an archspec before FitState: the callbacks start over
                    tf.train.Checkpoint(model=run.model, optimizer=opt, epoch=epoch_var, step=step_var).restore(
                        latest).assert_existing_objects_matched()
            else:
                _restore_ended(run.model, latest)
            self.latest = None
        return lambda n: save_checkpoint(manager, n)

    def take_skip(self) -> int:
        """Batches of the resumed epoch already trained (once)."""
        skip, self.skip = self.skip, 0
        return skip

    def kept(self) -> str:
        return f": {(self.manager.latest_checkpoint if self.manager else None) or 'none (no epoch completed)'}"

    def end(self, run) -> None:
        if self.latest is not None:  # nothing left to train (a finished run, or killed after its last checkpoint)
            _restore_ended(run.model, self.latest)  # the model the checkpoint ends with, not the untrained one

    def close(self) -> None:
        pass


class Workers(_Engine):
    """One worker of `--distribute multi_worker` (module docstring). Every worker runs the
    steps with its own `out`: rank 0's is the run directory, another rank's its scratch."""

    def __init__(self, out: Path, say: Callable[[str], None]):
        from . import multiworker as mw

        cluster = mw.current()
        if cluster is None:
            raise SpecError("this run was trained with --distribute multi_worker: resume it on every worker with "
                            "--distribute multi_worker --workers HOST:PORT,... --rank K", Location(str(out)))
        self.mw, self.cluster, self.chief = mw, cluster, cluster.chief
        self.writer = mw.Writer(cluster, out)
        self.replicas, self.local = mw.replicas()
        self.say = say if self.chief else (lambda m: None)
        self.out, self.ckpt_dir = Path(out), Path(out) / "checkpoints"
        self.scratch = self.out / f".checkpoint-of-rank-0-{os.getpid()}"
        self.latest, self.ck_phase, self.ck_fit, self.ck_stopped = None, -1, {}, False

    def scope(self):
        return contextlib.nullcontext()

    def batches(self, ds):
        return self.mw.local_part(ds, self.cluster.rank, self.local, self.replicas)

    def data_notes(self, pipes, global_batch: int) -> list[str]:
        notes = [self.mw.remainder_note(pipes.train_size, global_batch, self.replicas, "training set")]
        if pipes.val is not None:
            notes.append(self.mw.remainder_note(pipes.val_size, global_batch, self.replicas, "validation set"))
        return [n for n in notes if n]

    def compile_options(self, recipe) -> dict:
        return {}

    def describe(self) -> str:
        c = self.cluster
        return (f" over {self.replicas} replicas ({c.size} worker{'s' if c.size != 1 else ''}; this is rank {c.rank}"
                + (", writing the run directory)" if self.chief else ", its --out is scratch)"))

    def signals(self, run):
        return contextlib.nullcontext()

    def resume_point(self, run) -> None:
        """Rank 0 reads its run directory (the last complete checkpoint, the history, the
        phases early stopping ended) and every worker gets it, the checkpoint's files too."""
        from .rundir import check_history, read_history, read_run_json

        mw, latest, mine = self.mw, None, {}
        if self.chief:  # rank 0's run directory is the truth; every worker gets it
            mw.remove_stale(self.ckpt_dir)
            latest = mw.latest_checkpoint(self.ckpt_dir) if run.resume else None
            completed = json.loads((latest / "state.json").read_text())["epoch"] if latest else 0
            history = read_history(run.out) if run.resume else []
            if latest is not None:
                check_history(run.out, history, completed, str(latest))
            mine = {"completed": completed, "history": [r for r in history if int(r["epoch"]) < completed],
                    "stopped": sorted(read_run_json(run.out).get("stopped_early", [])),
                    "latest": str(latest) if latest else None}
        shared = mw.broadcast_json(mine, self.chief)
        run.completed, run.history, run.stopped = shared["completed"], shared["history"], set(shared["stopped"])
        run.run_json = read_run_json(run.out)
        self.latest = mw.share_checkpoint(self.writer, latest, self.scratch)
        ck = json.loads((self.latest / "state.json").read_text()) if self.latest is not None else {}
        self.ck_fit = ck.get("fit_state") or {}
        self.ck_phase, self.ck_stopped = ck.get("phase", -1), bool(self.ck_fit.get("es_stopped_epoch"))
        if run.resume:
            say = run.say  # every worker says where it resumes
            say(f"resuming {run.out}: {run.completed} epochs complete"
                + (f" ({shared['latest']}, rank 0's)" if shared["latest"] else " (no checkpoint yet)")
                + ("" if self.chief else "; this worker's --out is scratch, rank 0's run directory is the run"))

    def counters(self, completed: int):
        return self.mw.Counter(completed), self.mw.Counter()

    def phase_checkpoints(self, run, pi: int, ph: dict, opt, fit_state, epoch_var, step_var) -> Callable:
        """The checkpoint of this phase (its saver, in lockstep on every worker); the resume
        point restored into the first phase that trains (mid-phase the optimizer and callbacks
        too, at a boundary the weights)."""
        mw = self.mw
        if self.latest is not None:
            mid = run.completed > ph["start"]
            mw.restore_state(run.model, opt, self.latest, with_optimizer=mid)
            if mid and self.ck_phase == pi and self.ck_fit:
                mw.load_fit_state(fit_state, self.ck_fit)
            self.latest = None
            if not self.chief:
                shutil.rmtree(self.scratch, ignore_errors=True)

        def save(n):
            mw.save_checkpoint(self.writer, self.ckpt_dir, n, run.model, opt,
                               {"phase": pi, "fit_state": mw.fit_state_dict(fit_state)},
                               run.recipe.callbacks.checkpoint.max_to_keep)
        return save

    def take_skip(self) -> int:
        return 0  # a multi-worker run resumes from a complete epoch

    def kept(self) -> str:
        if not self.chief:
            return " in rank 0's run directory"
        last = self.mw.latest_checkpoint(self.ckpt_dir)
        return f": {last or 'none (no epoch completed)'}"

    def end(self, run) -> None:
        if self.latest is not None:  # nothing left to train: the model the checkpoint ends with
            self.mw.restore_state(run.model, None, self.latest, with_optimizer=False)

    def close(self) -> None:
        if self.scratch.exists():
            shutil.rmtree(self.scratch, ignore_errors=True)


# ---------------------------------------------------------------- TensorFlow checkpoints


def _saved_int(checkpoint: str, name: str) -> int:
    """An integer variable of a checkpoint (0 where the checkpoint predates it)."""
    import tensorflow as tf

    key = f"{name}/.ATTRIBUTES/VARIABLE_VALUE"
    return int(tf.train.load_variable(checkpoint, key)) if key in dict(tf.train.list_variables(checkpoint)) else 0


def strategy_of(distribute: str | None):
    """The tf.distribute strategy of the TensorFlow engine: MirroredStrategy over the local
    devices, or the default. (multi_worker runs on Keras' own distribution over JAX: `Workers`.)"""
    import tensorflow as tf

    check_distribute(distribute)
    if distribute == "mirrored":
        return tf.distribute.MirroredStrategy()
    if distribute == "multi_worker":
        raise ArchspecError("multi_worker does not run on a tf.distribute strategy (see archspec.training.multiworker)")
    return tf.distribute.get_strategy()


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
