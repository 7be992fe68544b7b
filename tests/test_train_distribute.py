"""`archspec train --distribute` on CPU: MirroredStrategy over two logical CPU devices
gives the loss of one device with the same global batch and the (linearly scaled)
learning rate; `multi_worker` over two real processes on localhost (Keras' distribution on
JAX) ends with the weights of one plain TensorFlow process with the global batch, a killed
worker stops the other with one line, and both restarted with --resume end where an
uninterrupted run does. (The multi-worker tests are at the end of the file.)

The logical devices must be configured before TensorFlow initializes, so every run is a
fresh interpreter (the driver below) rather than this test process.

Why the comparison is meaningful: the spec has no batch norm (per-replica statistics
would differ from the global batch's unless synced) and no dropout, the recipe no
augmentation; the training set is a multiple of the global batch so every batch splits
evenly over the replicas (Keras averages the loss per replica and sums the replicas'
gradients, which is the global mean only for equal shares). The training set is shuffled
(a 500-example buffer): under a strategy Keras' `fit` first pulls one batch from a fresh
iterator to build the model symbolically and then starts the epochs on a new one, and
archspec's epoch order depends on the seed and the epoch only, so both runs see the same
batches. What remains is the order of floating-point reductions (the gradient all-reduce,
per-replica sums), hence a tolerance rather than equality. Measured: epoch 1 equal to the
last digit, then 2e-5 and 3e-4 relative (val_loss) in epochs 2 and 3. Such differences grow
fast once the loss leaves its 2.30 plateau (a fourth epoch at this rate put val_loss 1% apart,
the same on every repeat: both runs are deterministic), so the run stops at three epochs.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

DRIVER = textwrap.dedent("""\
    import sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    assert len(tf.config.list_logical_devices("CPU")) == 2
    from archspec.cli import main
    sys.exit(main(sys.argv[1:]))
    """)

SPEC = textwrap.dedent("""\
    format: 1
    name: tiny_no_bn
    input:
      shape: [8, 8, 1]
      preprocessing: [{type: rescaling, name: scale, scale: 0.0625}]
    defaults: {activation: relu}
    stem:
      - {type: conv, name: c1, filters: 16, kernel: 3, padding: same}
      - {type: conv, name: c2, filters: 32, kernel: 3, stride: 2, padding: same}
    head:
      classes: 10
      layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]
    """)

# learning_rate is the per-replica (unscaled) rate; the single-device run doubles it.
RECIPE = textwrap.dedent("""\
    format: 1
    name: dist
    optimizer: {name: sgd, learning_rate: 0.1, momentum: 0.9}
    epochs: 3
    seed: 7
    data: {batch_size: 32, shuffle_buffer: 500}
    callbacks:
      checkpoint: {monitor: val_loss}
      tensorboard: null
    """)

PER_REPLICA = 32
REPLICAS = 2
EPOCHS = 3
N_TRAIN = 1536  # 24 global batches of 64: every batch splits 32 + 32
RTOL = 1e-3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("dist")
    data = load_digits()
    x = data.images.astype("uint8")
    y = data.target.astype("int64")
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:N_TRAIN], idx[N_TRAIN:N_TRAIN + 256]
    np.savez(d / "digits.npz", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])
    (d / "spec.yaml").write_text(SPEC)
    (d / "recipe.yaml").write_text(RECIPE)
    (d / "driver.py").write_text(DRIVER)
    return d


def train(files: Path, out: Path, *extra: str, two_cpus: bool = True) -> subprocess.CompletedProcess:
    """`archspec train` in a fresh interpreter: with two logical CPUs (the driver), or the
    plain CLI."""
    e = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}  # no run here is multi-worker
    e.update({"TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"})
    cmd = [str(files / "driver.py")] if two_cpus else ["-m", "archspec"]
    return subprocess.run([sys.executable, *cmd, "train", str(files / "spec.yaml"), "--recipe",
                           str(files / "recipe.yaml"), "--data", str(files / "digits.npz"), "--out", str(out),
                           "--json", *extra], capture_output=True, text=True, env=e, timeout=240)


def history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_mirrored_matches_one_device_with_the_global_batch(files, tmp_path):
    mirrored = train(files, tmp_path / "mirrored", "--distribute", "mirrored")
    assert mirrored.returncode == 0, mirrored.stderr[-3000:]
    # the loop reports the strategy's replicas, the global batch and the scaled rate
    assert f"global batch {PER_REPLICA * REPLICAS} over {REPLICAS} replicas" in mirrored.stderr, mirrored.stderr
    assert "learning rate 0.2," in mirrored.stderr, mirrored.stderr
    assert json.loads((tmp_path / "mirrored" / "run.json").read_text())["distribute"] == "mirrored"

    single = train(files, tmp_path / "single", "--batch-size", str(PER_REPLICA * REPLICAS),
                   "--recipe-set", "optimizer.learning_rate=0.2")
    assert single.returncode == 0, single.stderr[-3000:]
    assert "replicas" not in single.stderr and "global batch 64" in single.stderr, single.stderr

    m, s = history(tmp_path / "mirrored"), history(tmp_path / "single")
    assert [r["epoch"] for r in m] == [r["epoch"] for r in s] == [str(e) for e in range(EPOCHS)]
    for key in ("loss", "val_loss", "top1", "val_top1"):
        got, want = np.array([float(r[key]) for r in m]), np.array([float(r[key]) for r in s])
        if key.endswith("loss"):
            np.testing.assert_allclose(got, want, rtol=RTOL, err_msg=key)
        else:  # accuracies: at most a couple of borderline examples may flip
            np.testing.assert_allclose(got, want, atol=3 / 256, err_msg=key)
    # the comparison can fail: the loss moves far more over the run than the tolerance
    losses = [float(r["loss"]) for r in s]
    assert abs(losses[0] - losses[-1]) > 10 * RTOL * losses[0], losses
    # both runs trained on every image once per epoch (images/s x seconds = images)
    for row in m + s:
        assert float(row["images_per_second"]) * float(row["seconds"]) == pytest.approx(N_TRAIN, rel=1e-6)


# ---------------------------------------------------------------- multi_worker (two real processes)
#
# Why the comparison is meaningful: the same spec and data (no batch norm, no dropout, no
# augmentation), the same initial weights for both runs (`--weights`, written once: Keras'
# seeded initializers draw differently on TensorFlow and JAX), a training set that is a
# multiple of the global batch (every batch splits 32 + 32), and a reference computed by
# what the multi-worker path does not use: the plain `archspec train` on TensorFlow, one
# process, batch 64, learning rate 2 x 0.005. Measured here: max |w - w_ref| 3.0e-7 on weights
# of up to 0.56 that moved up to ~0.05 from their initial values; the resumed run equals the
# uninterrupted one exactly (0.0: the same engine, the same batches, the same arithmetic).

MW_RECIPE = RECIPE.replace("name: dist", "name: mw").replace("{name: sgd, learning_rate: 0.1, momentum: 0.9}",
                                                            "{name: adam, learning_rate: 0.005}")
MW_TRAIN = 512  # 8 global batches of 64
MW_ATOL = 1e-5  # measured 3.0e-7 against the TensorFlow process


def free_ports(n: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


@pytest.fixture(scope="module")
def mw_files(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("mw")
    data = load_digits()
    x, y = data.images.astype("uint8"), data.target.astype("int64")
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:MW_TRAIN], idx[MW_TRAIN:MW_TRAIN + 128]
    np.savez(d / "digits.npz", x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te])
    (d / "spec.yaml").write_text(SPEC.replace("filters: 16", "filters: 8").replace("filters: 32", "filters: 16"))
    (d / "recipe.yaml").write_text(MW_RECIPE)
    from archspec.backends.keras import load as keras_backend
    from archspec.ir.pipeline import lower_spec

    keras_backend().build_model(lower_spec(str(d / "spec.yaml")), seed=1).save_weights(str(d / "init.weights.h5"))
    return d


def mw_env() -> dict:
    e = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "KERAS_BACKEND")}
    e.update({"TF_CPP_MIN_LOG_LEVEL": "3", "ARCHSPEC_HEARTBEAT_SECONDS": "3"})
    return e


def start_workers(files: Path, outs: list[Path], *extra: str, resume: bool = False) -> list[subprocess.Popen]:
    """`archspec train --distribute multi_worker` on localhost, one process per `outs` entry
    (rank K writes outs[K]; rank 0's is the run directory, the others scratch)."""
    workers = ",".join(f"127.0.0.1:{p}" for p in free_ports(len(outs)))
    procs = []
    for rank, out in enumerate(outs):
        what = ["--resume", str(out)] if resume else [
            str(files / "spec.yaml"), "--recipe", str(files / "recipe.yaml"), "--data", str(files / "digits.npz"),
            "--weights", str(files / "init.weights.h5"), "--out", str(out)]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "archspec", "train", *what, "--json", "--distribute", "multi_worker",
             "--workers", workers, "--rank", str(rank), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mw_env()))
    return procs


def finish(procs, timeout=180) -> list[tuple[int, str, str]]:
    outs = [p.communicate(timeout=timeout) for p in procs]
    return [(p.returncode, *o) for p, o in zip(procs, outs)]


def final_weights(path: Path) -> list:
    import keras

    return keras.saving.load_model(path, compile=False).get_weights()


@pytest.fixture(scope="module")
def mw_runs(mw_files, tmp_path_factory):
    """The uninterrupted two-worker run and the plain TensorFlow process with the global batch."""
    d = tmp_path_factory.mktemp("mw_runs")
    results = finish(start_workers(mw_files, [d / "rank0", d / "rank1"]))
    single = subprocess.run(
        [sys.executable, "-m", "archspec", "train", str(mw_files / "spec.yaml"), "--recipe",
         str(mw_files / "recipe.yaml"), "--data", str(mw_files / "digits.npz"), "--weights",
         str(mw_files / "init.weights.h5"), "--out", str(d / "single"), "--json", "--batch-size", "64",
         "--recipe-set", "optimizer.learning_rate=0.01"],
        capture_output=True, text=True, env={**mw_env(), "KERAS_BACKEND": "tensorflow"}, timeout=180)
    return d, results, single


def test_two_workers_match_one_tensorflow_process_with_the_global_batch(mw_files, mw_runs):
    d, results, single = mw_runs
    for code, out, err in results:
        assert code == 0, err[-3000:]
    assert single.returncode == 0, single.stderr[-3000:]
    (_, out0, err0), (_, out1, err1) = results
    assert "global batch 64 over 2 replicas" in err0 and "learning rate 0.01," in err0, err0
    assert json.loads(out0)["epochs_completed"] == 3 and "Gloo" not in out0 + out1 + err0 + err1
    run = json.loads((d / "rank0" / "run.json").read_text())
    assert run["distribute"] == "multi_worker" and len(run["workers"]) == 2
    # rank 0 writes the run directory; rank 1's --out is scratch, without checkpoints
    assert sorted(p.name for p in (d / "rank0" / "checkpoints").iterdir())[-1] == "epoch-0003"
    assert sorted(p.name for p in (d / "rank0" / "checkpoints" / "epoch-0003").iterdir()) == [
        "model.weights.h5", "optimizer.npz", "state.json"]
    assert not (d / "rank1" / "checkpoints").exists()
    got, want = final_weights(d / "rank0" / "final.keras"), final_weights(d / "single" / "final.keras")
    init = final_weights_h5(mw_files / "init.weights.h5")
    diff = max(float(np.abs(a - b).max()) for a, b in zip(got, want))
    moved = max(float(np.abs(a - b).max()) for a, b in zip(want, init))
    assert diff <= MW_ATOL, diff
    assert moved > 100 * MW_ATOL, moved  # the comparison can fail: training moved the weights far more
    m, s = history(d / "rank0"), history(d / "single")
    np.testing.assert_allclose([float(r["loss"]) for r in m], [float(r["loss"]) for r in s], rtol=1e-5)


def final_weights_h5(path: Path) -> list:
    from archspec.backends.keras import load as keras_backend
    from archspec.ir.pipeline import lower_spec

    model = keras_backend().build_model(lower_spec(str(path.parent / "spec.yaml")), seed=2)
    model.load_weights(str(path))
    return model.get_weights()


def test_killed_worker_stops_the_run_and_resume_ends_as_uninterrupted(mw_files, mw_runs, tmp_path):
    import signal
    import time

    d, _, _ = mw_runs
    outs = [tmp_path / "rank0", tmp_path / "rank1"]
    procs = start_workers(mw_files, outs)
    first = outs[0] / "checkpoints" / "epoch-0001"
    t_end = time.monotonic() + 150
    while not first.is_dir() and procs[0].poll() is None and time.monotonic() < t_end:
        time.sleep(0.01)
    assert first.is_dir(), procs[0].communicate()[1][-3000:]
    procs[1].send_signal(signal.SIGKILL)  # mid-run: epochs 2 and 3 are still to train
    killed_at = time.monotonic()
    (code0, out0, err0), (code1, _, _) = finish(procs, timeout=60)
    waited = time.monotonic() - killed_at
    assert code1 == -signal.SIGKILL
    assert code0 == 1, (code0, err0[-3000:])
    lines = [ln for ln in err0.splitlines() if "error" in ln]
    assert len(lines) == 1 and "worker 0 of 2: the run stopped" in lines[0] and "--resume" in lines[0], err0
    assert "Traceback" not in err0 and "Check failure" not in err0 and out0 == ""
    assert waited < 30, waited
    done = sorted(p.name for p in (outs[0] / "checkpoints").iterdir())
    assert "epoch-0003" not in done and not (outs[0] / "final.keras").exists(), done
    resumed = finish(start_workers(mw_files, outs, resume=True))
    for code, out, err in resumed:
        assert code == 0, err[-3000:]
    assert any(f"resuming {outs[0]}: {n} epochs complete" in resumed[0][2] for n in (1, 2)), resumed[0][2]
    got, want = final_weights(outs[0] / "final.keras"), final_weights(d / "rank0" / "final.keras")
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, want)) <= 1e-6
    assert [r["loss"] for r in history(outs[0])] == [r["loss"] for r in history(d / "rank0")]


@pytest.mark.parametrize("argv, words", [
    (["--distribute", "multi_worker"], "needs --workers"),
    (["--distribute", "multi_worker", "--workers", "127.0.0.1:1,127.0.0.1:2"], "needs --rank"),
    (["--distribute", "multi_worker", "--workers", "127.0.0.1:1,127.0.0.1:2", "--rank", "2"], "--rank must be 0 to 1"),
    (["--distribute", "multi_worker", "--workers", "127.0.0.1,127.0.0.1:2", "--rank", "0"], "is not HOST:PORT"),
    (["--workers", "127.0.0.1:1", "--rank", "0"], "belong to --distribute multi_worker"),
])
def test_bad_cluster_is_one_line_before_anything(files, tmp_path, capsys, monkeypatch, argv, words):
    from archspec.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = main(["train", str(files / "spec.yaml"), "--recipe", str(files / "recipe.yaml"), "--data",
                 str(files / "digits.npz"), "--out", str(tmp_path / "run"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


# What jaxlib 0.10's runtime printed (its fatal log lines, the stack trace cut) when a worker
# stopped responding without its connections closing (SIGSTOP on its process), recorded from
# two real workers with a 3 s heartbeat: the coordinator's service names the silent task, a
# worker whose coordinator is silent sees its Heartbeat RPC time out. (Starting two workers
# and pausing one takes ~25 s here; the parsing is what was wrong, so it is tested alone.)
STOPPED_WORKER_1 = [  # on rank 0, worker 1 paused
    "F1207 23:33:37.354638   30899 client.h:80] Terminating process because the JAX distributed service detected "
    "fatal errors. This most likely indicates that another task died; see the other task logs for more details. "
    "Disable Python buffering, i.e. `python -u`, to be sure to see all the previous output. absl::Status: "
    "UNAVAILABLE: The following tasks are unhealthy (stopped sending heartbeats):",
    "1",
    "The tasks have crashed. Check the task logs for an earlier error, or scheduler events (e.g. preemption, "
    "eviction) to debug further.",
    "",
    "RPC: /xla.coordination.CoordinationService/PollForError [type.googleapis.com/tensorflow.CoordinationServiceError='']",
    "*** Check failure stack trace: ***",
    "@     0x7f71e5440634  absl::lts_20260107::log_internal::LogMessage::SendToLog()",
]
STOPPED_COORDINATOR = [  # on rank 1, worker 0 paused
    "F1207 23:31:44.753791   28667 client.h:80] Terminating process because the JAX distributed service detected "
    "fatal errors. This most likely indicates that another task died; see the other task logs for more details. "
    "Disable Python buffering, i.e. `python -u`, to be sure to see all the previous output. absl::Status: "
    "DEADLINE_EXCEEDED: Deadline Exceeded",
    "",
    "RPC: /xla.coordination.CoordinationService/Heartbeat",
    "*** Check failure stack trace: ***",
    "@     0x7f5e39440634  absl::lts_20260107::log_internal::LogMessage::SendToLog()",
]


def test_a_stopped_worker_is_named_in_one_line(monkeypatch):
    from archspec.training import multiworker

    monkeypatch.setenv("ARCHSPEC_HEARTBEAT_SECONDS", "3")
    addresses = ("127.0.0.1:4000", "127.0.0.1:4001", "127.0.0.1:4002")
    rank = [multiworker.Cluster(addresses, k) for k in range(3)]
    assert multiworker._reason(STOPPED_WORKER_1, rank[0]) == \
        "worker 1 (127.0.0.1:4001) stopped responding (no heartbeat for 3 s)"
    assert multiworker._reason(STOPPED_WORKER_1, rank[2]) == \
        "worker 1 (127.0.0.1:4001) stopped responding (no heartbeat for 3 s)"
    assert multiworker._reason(STOPPED_WORKER_1, rank[1]).startswith("this worker was paused")
    assert multiworker._reason(STOPPED_COORDINATOR, rank[1]) == \
        "the coordinator, worker 0 (127.0.0.1:4000), stopped responding (no answer to a heartbeat for 3 s)"
    listed = [STOPPED_WORKER_1[0], "/job:jax_worker/replica:0/task:1", "/job:jax_worker/replica:0/task:2", "The"]
    assert multiworker._reason(listed, rank[0]).startswith("worker 1 (127.0.0.1:4001) and worker 2 (127.0.0.1:4002) ")
    # anything else is said in JAX's words, without the log prefix and the stack trace
    other = multiworker._reason(["F1207 23:31:44.753791   28667 client.h:80] x absl::Status: INTERNAL: boom",
                                 "*** Check failure stack trace: ***"], rank[0])
    assert other == "JAX's distributed runtime ended it (INTERNAL: boom)", other
    # a collective that failed because a peer's connection closed (gloo), without gloo's source line
    line = multiworker.lost_message(RuntimeError(
        "UNKNOWN: Gloo AllGather failed: [external/gloo/gloo/transport/tcp/pair.cc:538] Read error "
        "[127.0.0.1]:6543: Connection reset by peer"), rank[0])
    assert "(a collective failed: Gloo AllGather failed: Read error [127.0.0.1]:6543: Connection reset by peer)" in line


def test_a_checkpoint_a_killed_rank_0_was_writing_is_removed_and_a_moved_aside_one_put_back(tmp_path):
    """The checkpoint directory is written by the one atomic writer: what a kill left of it (a
    staged directory of a dead process; a complete checkpoint moved aside while its rewrite was
    renamed in) is cleaned up, or put back, when rank 0 resumes, and never read as a checkpoint."""
    from archspec.training import multiworker as mw

    ck = tmp_path / "checkpoints"
    done = ck / "epoch-0001"
    done.mkdir(parents=True)
    for f in ("model.weights.h5", "optimizer.npz", "state.json"):
        (done / f).write_text("x")
    staged = ck / ".epoch-0002.tmp-999999999-0123abcd"  # no such process
    staged.mkdir()
    (staged / "model.weights.h5").write_text("half")
    aside = ck / ".epoch-0003.old-999999999-0123abcd"  # killed between moving it aside and renaming the new in
    aside.mkdir()
    for f in ("model.weights.h5", "optimizer.npz", "state.json"):
        (aside / f).write_text("y")
    assert mw.latest_checkpoint(ck) == done
    mw.remove_stale(ck)
    assert sorted(p.name for p in ck.iterdir()) == ["epoch-0001", "epoch-0003"]
    assert mw.latest_checkpoint(ck) == ck / "epoch-0003"


AUGMENT_ON_JAX = textwrap.dedent("""\
    import sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax"
    from archspec.training import data as data_mod, loop
    from archspec.training.recipe import load_recipe
    recipe, _ = load_recipe("cifar100", ["augmentation.translate=0.1", "augmentation.rotation=0.1",
                                         "augmentation.zoom=0.1", "augmentation.contrast=0.2",
                                         "augmentation.mixup=0.2", "augmentation.cutmix=1.0"])
    src = data_mod.open_source(sys.argv[1])
    pipes = data_mod.datasets(src, recipe, (8, 8), 1, 10, 1, 64, 0, loop.augmenter(recipe, (8, 8), 0),
                              lambda m: None, preprocess="none")
    x, y = next(iter(pipes.train_from(0)))
    print("SHAPE", tuple(x.shape), tuple(y.shape), float(np.asarray(y).sum()))
    """)


def test_every_augmentation_runs_in_a_worker_on_jax(files, tmp_path):
    """A multi-worker run's Keras is on JAX while tf.data builds its batches: every augmentation of
    a recipe must run there (a Keras ZeroPadding2D for crop_padding ran on JAX inside tf.data's
    graph and failed: 'Cannot convert a symbolic tf.Tensor')."""
    (tmp_path / "aug.py").write_text(AUGMENT_ON_JAX)
    env = {**mw_env(), "KERAS_BACKEND": "jax"}
    r = subprocess.run([sys.executable, str(tmp_path / "aug.py"), str(files / "digits.npz")], capture_output=True,
                       text=True, env=env, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    shape = next(ln for ln in r.stdout.splitlines() if ln.startswith("SHAPE"))
    assert shape == "SHAPE (64, 8, 8, 1) (64, 10) 64.0", shape  # mixed labels still sum to one per image
