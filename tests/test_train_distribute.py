"""`archspec train --distribute` on CPU: MirroredStrategy over two logical CPU devices
gives the loss of one device with the same global batch and the (linearly scaled)
learning rate; `multi_worker` without TF_CONFIG is refused with exit 2.

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


@pytest.fixture(scope="module")
def refused(files):
    """`--distribute multi_worker` without TF_CONFIG (which `train()` never passes on)."""
    out = files / "mw"
    return out, train(files, out, "--distribute", "multi_worker", two_cpus=False)


def test_multi_worker_without_tf_config_is_refused(refused):
    _, r = refused
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "TF_CONFIG" in lines[0] and "multi_worker" in lines[0], r.stderr
    assert r.stdout == ""


def test_refused_multi_worker_leaves_no_run_directory(refused):
    out, r = refused
    assert r.returncode == 2
    assert not out.exists(), sorted(p.name for p in out.iterdir())
