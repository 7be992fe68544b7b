"""`archspec train --distribute multi_worker`: one run over several processes (machines), on
Keras 3's own `keras.distribution` with the JAX backend.

Why this engine: TensorFlow's MultiWorkerMirroredStrategy cannot run Keras 3's `fit`
(keras#20585: a `PerReplica` value is converted to a tensor), and collective ops must be
configured before TensorFlow starts. Keras' `DataParallel` distribution on JAX, with JAX's
distributed runtime (gloo collectives on CPU), trains the same model to the same weights as
one process with the whole global batch (tests/test_train_distribute.py).

The pieces, each a function of its own (the training loop's steps reuse them):

- **the cluster** (`Cluster`, `cluster_of`): `--workers HOST:PORT,...` (the first is the
  coordinator, where JAX's coordination service listens) and `--rank K`, or a `TF_CONFIG`
  environment variable as an alternative; checked before anything heavy (one line, exit 2).
- **the process** (`supervise`, `worker.child_main`): the command starts the worker in a fresh
  interpreter with `KERAS_BACKEND=jax` (so it does not matter what the calling process imported)
  and relays its progress, result and errors. The worker dies with its parent (a killed
  `archspec train` takes its worker along). When another worker dies, JAX's distributed runtime
  ends the surviving ones (it aborts the process, with a C++ stack trace); the parent turns that
  into one line naming the cause, on every rank. A dead worker is seen by the coordinator when
  its heartbeats stop (`HEARTBEAT_SECONDS`, 10 s, `ARCHSPEC_HEARTBEAT_SECONDS` to change), and a
  dead coordinator by every worker at once (its connection closes). A worker that stops
  responding with its connections open (paused, SIGSTOP) is named by the coordinator after the
  heartbeat timeout; a paused coordinator by every worker, when its heartbeat answers stop.
- **the placement** (`initialize`): gloo collectives on CPU, `jax.distributed.initialize`, a
  `DataParallel` distribution over every device of every process, with
  `auto_shard_dataset=False`: the model is replicated, each batch is split over the devices.
- **the batch** (`local_part`): every process builds the same global batches (the epoch order
  depends on the seed and the epoch alone, `data.epoch_order`) and takes its own contiguous
  part of each: the global batch is `data.batch_size` x replicas, the learning rate is scaled
  by the replicas (the rule of `--distribute mirrored`). A batch that does not split evenly
  (the last of an epoch) leaves its remainder out; said at the start.
- **lockstep writing** (`Writer`): every Keras save runs on every process, in the same order
  (a Keras save can create a variable, which under a distribution is a collective); rank 0
  writes into the run directory, the other ranks into their own `--out`, which is scratch:
  spec.yaml, recipe.yaml, run.json (so `--resume` finds its run), the history and the .keras
  files, never checkpoints.
- **the checkpoint** (`save_checkpoint`, `latest_checkpoint`, `restore_state`): Keras' own
  format, one directory per complete epoch, `checkpoints/epoch-NNNN/` with
  `model.weights.h5` (`Model.save_weights`), `optimizer.npz` (the optimizer's variables in
  order) and `state.json` (the epoch, the phase, early stopping's and reduce-on-plateau's
  state), written under a temporary name and renamed, so a kill never leaves half of one.
  Rank 0 reads the last complete one on `--resume` and broadcasts it to every worker.
  A resumed run continues from the last complete epoch (not mid-epoch: a kill loses the
  epoch it was in), and the epochs it trains see the batches the uninterrupted run saw.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..core.errors import ArchspecError, MissingDependency, SpecError

HEARTBEAT_SECONDS = 10  # a worker silent this long is dead (JAX's coordination service)
CONNECT_SECONDS = 300  # how long the workers wait for each other at the start
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")


class WorkerLost(ArchspecError):
    """Another worker (or the coordinator) of a multi-worker run stopped (exit 1)."""


# ---------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class Cluster:
    addresses: tuple[str, ...]
    rank: int
    source: str = "--workers"

    @property
    def size(self) -> int:
        return len(self.addresses)

    @property
    def coordinator(self) -> str:
        return self.addresses[0]

    @property
    def chief(self) -> bool:
        return self.rank == 0


def _tf_config() -> tuple[list[str], int] | None:
    text = os.environ.get("TF_CONFIG")
    if not text:
        return None
    try:
        doc = json.loads(text)
        workers = doc["cluster"]["worker"]
        task = doc.get("task", {})
        if task.get("type", "worker") != "worker" or not isinstance(workers, list):
            raise ValueError("not a worker task")
        return [str(w) for w in workers], int(task["index"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SpecError(f"TF_CONFIG must be {{\"cluster\": {{\"worker\": [\"HOST:PORT\", ...]}}, \"task\": "
                        f"{{\"type\": \"worker\", \"index\": K}}}} ({type(exc).__name__}: {str(exc)[:80]})") from None


def cluster_of(distribute: str | None, workers: str | list | None, rank: int | None) -> Cluster | None:
    """The cluster of `--distribute multi_worker --workers HOST:PORT,... --rank K` (or of
    `TF_CONFIG` when neither is given), checked: None without multi_worker. Pure: raises
    SpecError (exit 2) for bad input, before anything is made."""
    if distribute != "multi_worker":
        given = [o for o, v in (("--workers", workers), ("--rank", rank)) if v is not None]
        if given:
            raise SpecError(f"{' and '.join(given)} {'belong' if len(given) > 1 else 'belongs'} to --distribute "
                            f"multi_worker (got --distribute {distribute or 'none'})")
        return None
    source = "--workers"
    if workers is None and rank is None and _tf_config() is not None:
        addresses, rank = _tf_config()
        source = "TF_CONFIG"
    elif workers is None:
        raise SpecError("--distribute multi_worker needs --workers HOST:PORT,HOST:PORT,... (every worker, the "
                        "first the coordinator) and --rank K (this worker's place in them)")
    else:
        addresses = workers.split(",") if isinstance(workers, str) else list(workers)
    addresses = [a.strip() for a in addresses]
    for a in addresses:
        m = _ADDRESS.match(a)
        if not m or not 0 < int(m.group(2)) < 65536:
            raise SpecError(f"{source}: {a!r} is not HOST:PORT (a host name or address and a port 1-65535)")
    if len(set(addresses)) != len(addresses):
        raise SpecError(f"{source}: a worker is named twice in {','.join(addresses)}")
    if rank is None:
        raise SpecError(f"--distribute multi_worker needs --rank K: this worker's place in {source} "
                        f"(0 to {len(addresses) - 1}; 0 is the coordinator)")
    if not 0 <= int(rank) < len(addresses):
        raise SpecError(f"--rank must be 0 to {len(addresses) - 1}, a place in {source}'s {len(addresses)} "
                        f"worker{'s' if len(addresses) != 1 else ''} (got {rank})")
    return Cluster(tuple(addresses), int(rank), source)


# ---------------------------------------------------------------- the process


def _seconds(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, default)))
    except ValueError:
        return default


_NOISE = re.compile(r"^(I\d{4} |WARNING: All log messages before absl|\[Gloo\] |E0000 |W0000 |To enable the following "
                    r"instructions)")
_FATAL = re.compile(r"^F\d{4} |^terminate called|^\*\*\* Check failure")


_UNHEALTHY = re.compile(r"stopped sending heartbeats\)?:?\s*((?:(?:/job:[^/\s]+/replica:\d+/)?(?:task:)?\d+[\s,;]*)+)")


def _tasks(listing: str) -> list[int]:
    return sorted({int(n) for n in re.findall(r"(?:task:)?(\d+)(?=[\s,;]|$)", listing)})


def _reason(fatal: list[str], cluster: Cluster) -> str:
    """What JAX's runtime said when it ended the worker (the lines of its fatal log message),
    in words. The coordination service (on the coordinator) names the tasks whose heartbeats
    stopped ("The following tasks are unhealthy (stopped sending heartbeats):\n1\n", and
    every other worker hears it through its error poll); a worker whose own heartbeats to the
    coordinator go unanswered sees its Heartbeat RPC fail."""
    text = " ".join(" ".join(fatal).split()).partition("*** Check failure stack trace")[0].strip()
    beat = _seconds("ARCHSPEC_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS)

    def named(ks: list[int]) -> str:
        ks = [k for k in ks if 0 <= k < cluster.size]
        if not ks:
            return "a worker"
        return " and ".join(f"worker {k} ({cluster.addresses[k]})" for k in ks)
    m = _UNHEALTHY.search(text)
    ks = _tasks(m.group(1)) if m else [int(k) for k in re.findall(r"[Tt]ask (\d+) heartbeat timeout", text)]
    if ks or m:
        if ks == [cluster.rank]:
            return (f"this worker was paused or too slow: it sent no heartbeat for {beat} s, and the coordinator "
                    f"ended the run")
        if 0 in ks and cluster.rank != 0:
            return f"the coordinator, worker 0 ({cluster.coordinator}), stopped responding (no heartbeat for {beat} s)"
        return f"{named(ks)} stopped responding (no heartbeat for {beat} s)"
    if "CoordinationService/Heartbeat" in text and re.search(r"DEADLINE_EXCEEDED|Deadline Exceeded", text):
        return (f"the coordinator, worker 0 ({cluster.coordinator}), stopped responding (no answer to a heartbeat "
                f"for {beat} s)")
    if cluster.rank != 0 and re.search(r"coordination service|leader task|Socket closed|Connection refused|"
                                       r"UNAVAILABLE", text, re.IGNORECASE):
        return f"the coordinator, worker 0 ({cluster.coordinator}), is gone"
    if "Barrier" in text or "barrier" in text:
        return "a worker did not reach the end of the run"
    words = text.partition("absl::Status:")[2].strip() or re.sub(r"^F\d{4} \S+\s+\d+ \S+\] ", "", text)
    words = words if len(words) <= 200 else words[:197].rstrip() + "..."
    return f"JAX's distributed runtime ended it ({words or 'no message'})"


_LOST = re.compile(r"Gloo \w+ failed|Connection reset by peer|Connection closed by peer|Broken pipe|heartbeat "
                   r"timeout|coordination service|Socket closed", re.IGNORECASE)


def lost_message(exc: BaseException, cluster: Cluster) -> str | None:
    """The line for a collective that failed because another worker is gone (gloo sees the
    connection close at once), or None for any other failure."""
    text = " ".join(str(exc).split())
    if not _LOST.search(text):
        return None
    text = re.sub(r"^[A-Z_]+: ", "", re.sub(r"\[[^\]\s]+\.(?:cc|cpp|h):\d+\]\s*", "", text))  # status, source line
    if len(text) > 160:
        text = text[:157].rstrip() + "..."
    return (f"worker {cluster.rank} of {cluster.size}: the run stopped: another worker is gone (a collective "
            f"failed: {text}); the run directory keeps the last complete epoch's checkpoint: start every "
            f"worker again with --resume")


def supervise(kwargs: dict, cluster: Cluster, say: Callable[[str], None]) -> dict:
    """Run this worker of a multi-worker run in a fresh interpreter (`child_main`) and relay
    its progress to `say`, its Keras progress bar to stdout and its result or error; a worker
    ended by JAX's runtime (another worker died) is one `WorkerLost` line."""
    import importlib.util

    if importlib.util.find_spec("jax") is None:
        raise MissingDependency("--distribute multi_worker trains on JAX, which is not installed: "
                                "pip install 'archspec[jax]' (or jax with your accelerator's plugin)")
    r, w = os.pipe()
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    cmd = [sys.executable, "-c", "from archspec.training.worker import child_main; child_main()", str(w)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(w,), env=env,
                            text=True, bufsize=1)
    os.close(w)
    fatal: list[str] = []

    def relay_stderr():
        for line in proc.stderr:
            if fatal or _FATAL.match(line):
                fatal.append(line.strip())
            elif not _NOISE.match(line):
                sys.stderr.write(line)
                sys.stderr.flush()
    t = threading.Thread(target=relay_stderr, daemon=True)
    t.start()
    proc.stdin.write(json.dumps({"kwargs": kwargs, "cluster": [list(cluster.addresses), cluster.rank,
                                                               cluster.source]}) + "\n")
    proc.stdin.flush()  # stdin stays open: the worker ends when it closes (this process gone)
    result = error = None
    try:
        with os.fdopen(r, "r") as messages:
            for line in messages:
                kind, _, body = line.rstrip("\n").partition(" ")
                if kind == "SAY":
                    say(json.loads(body))
                elif kind == "RESULT":
                    result = json.loads(body)
                elif kind == "ERROR":
                    error = json.loads(body)
        code = proc.wait()
    except KeyboardInterrupt:  # Ctrl-C reached the worker too: it stops on its own
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    finally:
        t.join(timeout=5)
    if result is not None:
        return result
    if error is not None:
        if error["code"] == 2:
            raise SpecError(error["message"])
        exc = ArchspecError(error["message"])
        exc.exit_code = error["code"]
        raise exc
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    raise WorkerLost(f"worker {cluster.rank} of {cluster.size}: the run stopped: "
                     f"{_reason(fatal, cluster) if fatal else f'its process ended ({how})'}; the run directory keeps "
                     f"the last complete epoch's checkpoint: start every worker again with --resume")


_CLUSTER: list = [None]


def current() -> Cluster | None:
    """The cluster this process is a worker of (set by `worker.child_main`), else None."""
    return _CLUSTER[0]


def set_current(cluster: Cluster | None) -> None:
    _CLUSTER[0] = cluster


# ---------------------------------------------------------------- the placement


def initialize(cluster: Cluster) -> None:
    """Join the cluster and place the model: gloo collectives on CPU, JAX's distributed runtime
    (heartbeat `HEARTBEAT_SECONDS`), a `DataParallel` distribution over every device of every
    worker, each worker feeding its own part of every batch. Before Keras computes anything."""
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    wait = _seconds("ARCHSPEC_CONNECT_SECONDS", CONNECT_SECONDS)
    try:
        jax.distributed.initialize(coordinator_address=cluster.coordinator, num_processes=cluster.size,
                                   process_id=cluster.rank, initialization_timeout=wait,
                                   heartbeat_timeout_seconds=_seconds("ARCHSPEC_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS),
                                   shutdown_timeout_seconds=60)
    except Exception as exc:  # noqa: BLE001 - jaxlib raises its own runtime errors
        msg = " ".join(str(exc).split())[:200]
        raise WorkerLost(f"worker {cluster.rank} of {cluster.size}: cannot join the run at the coordinator "
                         f"{cluster.coordinator} (it waits {wait} s for every worker, each started with the same "
                         f"--workers and its own --rank): {msg}") from None
    import keras

    if keras.backend.backend() != "jax":
        raise ArchspecError(f"multi_worker runs Keras on JAX, but Keras runs on {keras.backend.backend()} here "
                            f"(it was imported before KERAS_BACKEND=jax was set)")
    keras.distribution.set_distribution(keras.distribution.DataParallel(auto_shard_dataset=False))


def replicas() -> tuple[int, int]:
    """(devices of the whole run, devices of this worker)."""
    import jax

    return jax.device_count(), jax.local_device_count()


# ---------------------------------------------------------------- the batch


def local_part(ds, rank: int, local_devices: int, total_devices: int):
    """This worker's part of every global batch of `ds` (images, labels or a tuple of labels):
    the batch is cut into equal shares, one per device (a remainder is left out), and this
    worker takes its devices' shares, in order."""
    import tensorflow as tf

    def part(x, y):
        share = tf.shape(x)[0] // total_devices
        start, end = rank * local_devices * share, (rank + 1) * local_devices * share
        return x[start:end], tf.nest.map_structure(lambda t: t[start:end], y)
    return ds.map(part)


def remainder_note(images: int, global_batch: int, devices: int, what: str) -> str | None:
    last = images % global_batch or global_batch
    left = last % devices
    if not left:
        return None
    return (f"the last batch of the {what} ({last} images) does not split over {devices} replicas: its last {left} "
            f"image{'s are' if left != 1 else ' is'} left out")


# ---------------------------------------------------------------- lockstep writing


class Writer:
    """Keras saves in lockstep: `keras_save(fn, path)` runs `fn(target)` on every worker (a
    save may be a collective), the target being `path` on rank 0 and a scratch file (removed
    afterwards) elsewhere, unless `scratch_keeps` (the worker's own `--out` keeps it)."""

    def __init__(self, cluster: Cluster, out: Path):
        self.cluster, self.out = cluster, Path(out)

    @property
    def chief(self) -> bool:
        return self.cluster.chief

    def keras_save(self, fn: Callable[[Path], None], path: Path, scratch_keeps: bool = False) -> None:
        if self.chief or scratch_keeps:
            fn(path)
            return
        tmp = self.out / f".scratch-{os.getpid()}-{Path(path).name}"
        try:
            fn(tmp)
        finally:
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            elif tmp.exists():
                tmp.unlink()


# ---------------------------------------------------------------- the checkpoint

_CKPT = re.compile(r"^epoch-(\d{4,})$")


def checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """The complete checkpoints (epoch, directory), oldest first."""
    found = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = _CKPT.match(p.name)
            if m and p.is_dir() and not p.is_symlink() and all((p / f).is_file() for f in
                                                                 ("model.weights.h5", "optimizer.npz", "state.json")):
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(ckpt_dir: Path) -> Path | None:
    found = checkpoints(ckpt_dir)
    return found[-1][1] if found else None


def save_checkpoint(writer: Writer, ckpt_dir: Path, epoch: int, model, optimizer, state: dict, keep: int) -> Path:
    """Checkpoint `epoch` (epochs complete) as `ckpt_dir/epoch-NNNN/`: model.weights.h5 (Keras),
    optimizer.npz (the optimizer's variables in order) and state.json, staged and renamed into
    place whole by the one atomic writer (`core.atomic.atomic_output`); the oldest beyond
    `keep` removed. Every worker takes part in the weights' save; rank 0 alone writes."""
    import numpy as np

    from ..core.atomic import atomic_output

    final = ckpt_dir / f"epoch-{epoch:04d}"
    save_weights = lambda p: model.save_weights(str(p))  # noqa: E731
    if not writer.chief:  # the save is a collective: this worker's copy goes to its scratch and away
        writer.keras_save(save_weights, final / "model.weights.h5")
        return final
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    with atomic_output(final, directory=True, suffix="") as tmp:
        tmp.mkdir()
        writer.keras_save(save_weights, tmp / "model.weights.h5")
        values = [np.asarray(v.value if hasattr(v, "value") else v) for v in optimizer.variables]
        with open(tmp / "optimizer.npz", "wb") as fh:
            np.savez(fh, **{f"v{i:05d}": a for i, a in enumerate(values)})
        doc = {"format": 1, "epoch": epoch, **state, "optimizer_variables": [v.path for v in optimizer.variables]}
        (tmp / "state.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    for _, old in checkpoints(ckpt_dir)[:-max(1, keep)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


_STAGED = re.compile(r"^\.(epoch-\d{4,})\.(?:tmp|old)-")


def remove_stale(ckpt_dir: Path) -> None:
    """What a killed run left of a checkpoint it was writing (under the run's lock): the
    atomic writer's staged and moved-aside directories (`core.atomic.remove_stale`)."""
    from ..core.atomic import remove_stale as remove_stale_of

    if ckpt_dir.is_dir():
        for name in sorted({m.group(1) for p in ckpt_dir.iterdir() if (m := _STAGED.match(p.name))}):
            remove_stale_of(ckpt_dir / name)


def broadcast_json(obj, chief: bool):
    """`obj` of rank 0 on every worker (a collective: every worker calls it)."""
    data = broadcast_bytes(json.dumps(obj, default=float).encode() if chief else None, chief)
    return json.loads(data.decode())


def broadcast_bytes(data: bytes | None, chief: bool) -> bytes:
    import numpy as np
    from jax.experimental import multihost_utils

    n = np.array([len(data) if chief else 0], np.int64)
    n = int(np.asarray(multihost_utils.broadcast_one_to_all(n, is_source=chief))[0])
    buf = np.frombuffer(data, np.uint8) if chief else np.zeros(n, np.uint8)
    if n == 0:
        return b""
    return np.asarray(multihost_utils.broadcast_one_to_all(buf, is_source=chief)).astype(np.uint8).tobytes()


def share_checkpoint(writer: Writer, path: Path | None, into: Path) -> Path | None:
    """Rank 0's checkpoint `path` as files on every worker (`into` on the others): its bytes
    broadcast. None when rank 0 has none."""
    files = ("model.weights.h5", "optimizer.npz", "state.json")
    have = broadcast_json(path is not None, writer.chief)
    if not have:
        return None
    if writer.chief:
        for f in files:
            broadcast_bytes((path / f).read_bytes(), True)
        return path
    into.mkdir(parents=True, exist_ok=True)
    for f in files:
        (into / f).write_bytes(broadcast_bytes(None, False))
    return into


def restore_state(model, optimizer, path: Path, with_optimizer: bool) -> dict:
    """The checkpoint at `path` into `model` (and `optimizer`): its state.json."""
    import numpy as np

    model.load_weights(str(path / "model.weights.h5"))
    doc = json.loads((path / "state.json").read_text())
    if with_optimizer and optimizer is not None:
        with np.load(path / "optimizer.npz", allow_pickle=False) as z:
            values = [z[f"v{i:05d}"] for i in range(len(z.files))]
        names = doc.get("optimizer_variables", [])
        if len(values) != len(optimizer.variables):
            raise SpecError(f"{path}: the checkpoint holds {len(values)} optimizer variables, the run's optimizer has "
                            f"{len(optimizer.variables)}: not a checkpoint of this run")
        for v, a, name in zip(optimizer.variables, values, names or [None] * len(values)):
            if tuple(v.shape) != tuple(a.shape):
                raise SpecError(f"{path}: optimizer variable {name or v.path} has shape {a.shape} in the checkpoint "
                                f"and {tuple(v.shape)} in the run: not a checkpoint of this run")
            v.assign(a)
    return doc


def fit_state_dict(fit_state) -> dict:
    """`callbacks.FitState`'s scalars (its variables) as a dict for state.json."""
    fit_state.save()
    return {k: getattr(fit_state, k).numpy().item() for k in _FIT_SCALARS}


def load_fit_state(fit_state, doc: dict) -> None:
    for k in _FIT_SCALARS:
        if k in doc:
            getattr(fit_state, k).assign(doc[k])
    fit_state.es_has_weights.assign(0)  # the best weights are not kept across a resume of this path
    fit_state.load()


_FIT_SCALARS = ("phase", "es_wait", "es_best", "es_has_best", "es_best_epoch", "es_stopped_epoch", "lr_wait",
                "lr_best", "lr_has_best", "lr_cooldown")


class Counter:
    """What `callbacks.RunCallback` assigns the epoch and batch counters to (a plain int)."""

    def __init__(self, value: int = 0):
        self.value = int(value)

    def assign(self, value) -> None:
        self.value = int(value)

    def numpy(self) -> int:
        return self.value


def options_only(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`train`'s arguments as the worker process takes them (JSON), or a SpecError for one
    that cannot cross a process boundary."""
    for k in ("spec_ref", "recipe_ref", "data", "out", "weights"):
        v = kwargs.get(k)
        if v is not None and not isinstance(v, (str, os.PathLike)):
            raise SpecError(f"--distribute multi_worker takes {k} as a file or a bundled name (got a "
                            f"{type(v).__name__})")
        if v is not None:
            kwargs[k] = os.fspath(v)
    if kwargs.get("callbacks"):
        raise SpecError("--distribute multi_worker runs in a worker process of its own: Keras callbacks cannot be "
                        "passed to it")
    kwargs.pop("callbacks", None)
    return kwargs
