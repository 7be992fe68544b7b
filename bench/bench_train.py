"""Training throughput, measured side by side in one run: `archspec train` against a
hand-written Keras loop (`model.fit` on NumPy arrays) on the same data, batch, optimizer
and model.

1. ResNet-50 at 64x64, 10 classes: archspec's bundled `resnet50` spec (`--set
   input.shape=[64,64,3] --set head.classes=10`) against
   `keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=10)`.
2. The notes' CIFAR CNN: archspec's bundled `cifar100_cnn` spec against the same network
   written by hand as a `keras.Sequential` (conv 16, pool, conv 32, pool, flatten,
   dense 256, dense 100; its parameter count is checked against the spec's 325,956).

Data: random uint8 images with random labels, written to an .npz (x_train, y_train,
x_test, y_test) that both sides read. Both sides: SGD (momentum 0.9), categorical
cross-entropy, top-1 and top-5 metrics, validation on the test split after each epoch.
archspec runs its own recipe defaults otherwise (shuffle buffer, checkpoints every epoch,
TensorBoard scalars); the hand-written loop shuffles in `fit`. Images/s is measured the
same way on both sides: from an epoch's start to the end of its last training batch
(validation and end-of-epoch work excluded), steps x batch / seconds; archspec's is
its own history.csv column, the hand-written loop's a callback doing the same. The
first epoch (tracing, compilation, warm-up) is excluded; the figure is the median of the
remaining epochs, pooled over rounds. Each side runs in a fresh interpreter, archspec and
the hand-written loop alternately, the side that goes first swapping every round (ABBA), so
that drift and load from other jobs fall on both. Beside the ratio of the pooled medians it
prints each round's ratio and a 90% bootstrap interval (rounds resampled as pairs, epochs
within them), and whether that interval puts archspec at or above the issue's 0.97x:
"established" (lower end >= 0.97), "not established" (the interval straddles it) or
"contradicted" (upper end below it). On a 2-core VM single epochs of the small CNN swing
by up to 2x on both sides, hence 16,384 images an epoch and four rounds by default.

Usage: python bench/bench_train.py [--rounds 4] [--resnet-epochs 4] [--cifar-epochs 6]
           [--resnet-images 1024] [--cifar-images 16384] [--resnet-batch 32] [--cifar-batch 128]
           [--only resnet50|cifar]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
LR = 0.01
TARGET = 0.97  # the bar: archspec at least this fraction of the hand-written loop's images/s

RECIPE = textwrap.dedent(f"""\
    format: 1
    name: bench
    optimizer: {{name: sgd, learning_rate: {LR}, momentum: 0.9}}
    metrics: [top1, top5]
    """)


def write_data(path: Path, n: int, size: int, classes: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    n_test = max(classes, n // 10)
    np.savez(path, x_train=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
             y_train=rng.integers(0, classes, n), x_test=rng.integers(0, 256, (n_test, size, size, 3), dtype=np.uint8),
             y_test=rng.integers(0, classes, n_test))


def steady(runs: list[dict]) -> float:
    """The median images/s of the epochs after the first, pooled over the rounds."""
    return statistics.median(v for r in runs for v in r["ips"][1:])


def interval(ours: list[dict], hand: list[dict], draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """A 90% bootstrap interval of the ratio steady(ours) / steady(hand): the rounds are
    resampled as pairs (the two runs of a round share the machine's state), and within each
    drawn run its steady epochs."""
    import random

    rng = random.Random(seed)
    ratios = []
    for _ in range(draws):
        picks = [rng.randrange(len(ours)) for _ in ours]

        def side(runs):
            return statistics.median(rng.choice(runs[k]["ips"][1:]) for k in picks for _ in runs[k]["ips"][1:])
        ratios.append(side(ours) / side(hand))
    ratios.sort()
    return ratios[int(0.05 * draws)], ratios[int(0.95 * draws) - 1]


def run_archspec(spec: str, sets: list[str], data: Path, out: Path, recipe: Path, epochs: int, batch: int) -> dict:
    cmd = [sys.executable, "-m", "archspec", "train", spec, "--recipe", str(recipe), "--data", str(data),
           "--out", str(out), "--force", "--epochs", str(epochs), "--batch-size", str(batch), "--json"]
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"archspec train failed ({r.returncode}):\n{r.stderr[-4000:]}")
    with open(out / "history.csv", newline="") as f:
        ips = [float(row["images_per_second"]) for row in csv.DictReader(f)]
    return {"ips": ips, "wall": wall}


def run_hand(model: str, data: Path, epochs: int, batch: int) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, str(HERE), "--hand", model, "--data", str(data), "--epochs", str(epochs),
                        "--batch", str(batch)], capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"hand-written loop failed ({r.returncode}):\n{r.stderr[-4000:]}")
    return {**json.loads(r.stdout.strip().splitlines()[-1]), "wall": wall}


def hand_main(model_name: str, data: str, epochs: int, batch: int) -> None:
    """The hand-written side (run in its own interpreter): what a user writes without archspec."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import numpy as np

    z = np.load(data)
    x, y = z["x_train"].astype("float32"), z["y_train"]
    xv, yv = z["x_test"].astype("float32"), z["y_test"]
    keras.utils.set_random_seed(0)
    if model_name == "resnet50":
        classes = 10
        model = keras.applications.ResNet50(weights=None, input_shape=x.shape[1:], classes=classes)
    else:
        classes = 100
        model = keras.Sequential([
            keras.Input(x.shape[1:]),
            keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(2),
            keras.layers.Flatten(), keras.layers.Dense(256, activation="relu"),
            keras.layers.Dense(classes, activation="softmax")])
        assert model.count_params() == 325_956, model.count_params()  # the notes' summary, as the spec
    y1, yv1 = keras.utils.to_categorical(y, classes), keras.utils.to_categorical(yv, classes)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR, momentum=0.9),
                  loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="top1"),
                           keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")])
    steps = -(-len(x) // batch)

    class Timer(keras.callbacks.Callback):  # as archspec's RunCallback: epoch start to last training batch
        def __init__(self):
            super().__init__()
            self.ips: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = self.t1 = time.perf_counter()

        def on_train_batch_end(self, b, logs=None):
            self.t1 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.ips.append(steps * batch / (self.t1 - self.t0))

    timer = Timer()
    model.fit(x, y1, batch_size=batch, epochs=epochs, validation_data=(xv, yv1), shuffle=True, callbacks=[timer],
              verbose=0)
    print(json.dumps({"ips": timer.ips, "params": model.count_params()}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resnet-epochs", type=int, default=4, help="epochs per run (the first is excluded)")
    ap.add_argument("--cifar-epochs", type=int, default=6, help="epochs per run (the first is excluded)")
    ap.add_argument("--rounds", type=int, default=4,
                    help="archspec and the hand-written loop run alternately this many times each")
    ap.add_argument("--resnet-images", type=int, default=1024)
    ap.add_argument("--cifar-images", type=int, default=16384)
    ap.add_argument("--resnet-batch", type=int, default=32)
    ap.add_argument("--cifar-batch", type=int, default=128)
    ap.add_argument("--only", choices=["resnet50", "cifar"])
    ap.add_argument("--hand", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hand:
        return hand_main(args.hand, args.data, args.epochs, args.batch)
    if min(args.resnet_epochs, args.cifar_epochs) < 2:
        ap.error("--resnet-epochs and --cifar-epochs must be at least 2 (the first epoch is excluded)")

    cases = [("resnet50", "resnet50", ["input.shape=[64,64,3]", "head.classes=10"], args.resnet_images, 64, 10,
              args.resnet_batch, args.resnet_epochs, "ResNet-50 64x64"),
             ("cifar", "cifar100_cnn", [], args.cifar_images, 32, 100, args.cifar_batch, args.cifar_epochs,
              "CIFAR CNN 32x32")]
    rows = []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        tmp = Path(tmp)
        recipe = tmp / "bench.yaml"
        recipe.write_text(RECIPE)
        for key, spec, sets, n, size, classes, batch, epochs, label in cases:
            if args.only and args.only != key:
                continue
            data = tmp / f"{key}.npz"
            write_data(data, n, size, classes)
            ours, hand = [], []
            for k in range(args.rounds):  # ABBA: the side that runs first alternates
                sides = [(lambda: run_archspec(spec, sets, data, tmp / f"run_{key}", recipe, epochs, batch), ours),
                         (lambda: run_hand(key, data, epochs, batch), hand)]
                for run, into in (sides if k % 2 == 0 else sides[::-1]):
                    into.append(run())
                for who, r in (("archspec", ours[-1]), ("hand-written", hand[-1])):
                    print(f"{label} round {k + 1} {who}: {[round(v, 1) for v in r['ips']]} img/s per epoch "
                          f"({r['wall']:.0f} s)", file=sys.stderr, flush=True)
            a, h = steady(ours), steady(hand)
            paired = [steady([o]) / steady([q]) for o, q in zip(ours, hand)]
            rows.append((label, n, batch, epochs, a, h, a / h, interval(ours, hand), paired))

    import keras
    import tensorflow as tf

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"TensorFlow {tf.__version__}, Keras {keras.__version__}; {args.rounds} alternating rounds per side, "
          f"median images/s of every epoch but each run's first; wall {time.perf_counter() - t_start:.0f} s")
    print(f"{'model':<16} {'images':>6} {'batch':>5} {'epochs':>6} {'archspec img/s':>15} "
          f"{'hand-written img/s':>19} {'ratio':>6} {'90% interval':>14}  per-round ratios")
    for label, n, batch, epochs, a, h, ratio, (lo, hi), paired in rows:
        print(f"{label:<16} {n:>6} {batch:>5} {epochs:>6} {a:>15.1f} {h:>19.1f} {ratio:>5.3f}x "
              f"{lo:>6.3f}-{hi:.3f}x  {' '.join(f'{r:.3f}' for r in paired)}")
    for label, *_, ratio, (lo, hi), _paired in rows:
        verdict = ("established" if lo >= TARGET else "not established" if hi >= TARGET else "contradicted")
        print(f"{label}: archspec >= {TARGET}x of the hand-written loop {verdict} "
              f"(the interval's lower end {lo:.3f}x, upper {hi:.3f}x)")


if __name__ == "__main__":
    main()
