"""A network that collapses is no success (issue 30, part 2).

`callbacks.find_collapse` as a unit on history rows (the rule: the last 3 or more epochs at
chance, top-1 at most 1/C + min(0.5/C, 0.05 (1 - 1/C)) with a loss no better than a constant
prediction's, after an earlier epoch clearly better than chance), and one small real run
that collapses on purpose: a tiny spec on 500 of scikit-learn's digits, two good epochs,
one at an absurd learning rate that kills its ReLUs, three more at the first rate (which
cannot revive them). `archspec train` says so in one line, records it in metrics.json and
exits 1; `--allow-collapse` (or the recipe's `callbacks.allow_collapse: true`) turns that into a
warning and exit 0 (tested on a resume of the same run: nothing is trained again). About
10 s on two CPU cores."""

from __future__ import annotations

import json
import math
import re
import textwrap

import numpy as np
import pytest

from archspec.cli import main

LN10 = math.log(10)


def rows(figures, lrs=None, val=True):
    """History rows (0-based epochs) from (top1, loss) pairs."""
    lrs = lrs or [0.1] * len(figures)
    keys = ("val_top1", "val_loss") if val else ("top1", "loss")
    return [{"epoch": i, "phase": "train", keys[0]: t, keys[1]: loss, "learning_rate": lr}
            for i, ((t, loss), lr) in enumerate(zip(figures, lrs))]


# the issue's run: top-1 climbs to 0.60 in the warm-up, then sits at chance for 8 epochs
ISSUE = [(0.29, 2.0), (0.47, 1.4), (0.37, 1.9), (0.60, 1.2)] + [(0.10, 2.303), (0.09, 2.304), (0.12, 2.302),
                                                                   (0.10, 2.303), (0.11, 2.303), (0.10, 2.303),
                                                                   (0.10, 2.303), (0.09, 2.303)]
ISSUE_LR = [0.0167, 0.0333, 0.05, 0.0667, 0.1, 0.095, 0.081, 0.061, 0.039, 0.019, 0.005, 0.001]


def test_a_collapse_is_found_with_its_epoch_and_learning_rate():
    from archspec.training.callbacks import collapse_message, find_collapse

    c = find_collapse(rows(ISSUE, ISSUE_LR), 10, LN10)
    assert c is not None
    assert (c["epoch"], c["learning_rate"], c["epochs_at_chance"]) == (5, 0.1, 8)
    assert c["best_before"] == {"epoch": 4, "top1": 0.60} and c["figures"] == "validation"
    assert c["loss"] == pytest.approx(2.303, abs=1e-3) and c["top1"] == pytest.approx(0.10, abs=0.01)
    assert collapse_message(c, 10) == ("the network collapsed at epoch 5 (learning rate 0.1): loss 2.303 = ln(10), "
                                       "top-1 0.10 = chance, for 8 epochs after reaching 0.60 at epoch 4")


# measured (issue 30): the cifar100 recipe before its fix, 12 epochs on the digits (32x32 RGB, 180
# validation images); val top-1, val loss per epoch, and the warm-up + cosine learning rates
WARMUP_COSINE = [0.0167, 0.0333, 0.05, 0.0667, 0.0833, 0.1, 0.095, 0.0812, 0.0611, 0.0389, 0.0188, 0.005]
CNN_SEED7 = [(0.322, 2.064), (0.106, 3.587), (0.067, 2.365), (0.089, 2.285), (0.072, 2.312), (0.078, 2.31),
             (0.083, 2.307), (0.106, 2.307), (0.111, 2.306), (0.083, 2.309), (0.072, 2.312), (0.072, 2.31)]
VGG16_CLIP = [(0.278, 1.987), (0.172, 2.114), (0.133, 2.289), (0.228, 1.947), (0.106, 2.419), (0.083, 2.317),
              (0.083, 2.312), (0.094, 2.31), (0.172, 2.281), (0.083, 2.324), (0.083, 2.322), (0.083, 2.319)]


@pytest.mark.parametrize("curve, where", [
    (CNN_SEED7, (2, 0.0333, 11, 11, 1)),  # cifar100_cnn, seed 7: dead from epoch 2 on (loss 3.59 there: above)
    (VGG16_CLIP, (5, 0.0833, 7, 8, 1)),  # vgg16_cifar100 with clipnorm 1: one flicker (0.17) in epoch 9
])
def test_measured_collapses(curve, where):
    """Where a collapse is said to be: the first epoch at chance after the last clearly better
    one; an epoch between chance and clearly better (a dead network's flicker) does not move it."""
    from archspec.training.callbacks import collapse_message, find_collapse

    c = find_collapse(rows(curve, WARMUP_COSINE), 10, LN10)
    assert c is not None
    got = (c["epoch"], c["learning_rate"], c["epochs_at_chance"], c["epochs_after"], c["best_before"]["epoch"])
    assert got == where
    n, m = where[2], where[3]
    assert (f"for {n} epochs" if n == m else f"for {n} of {m} epochs") in collapse_message(c, 10)


def test_three_epochs_at_chance_at_the_end_are_a_collapse():
    from archspec.training.callbacks import find_collapse

    c = find_collapse(rows(ISSUE[:7]), 10, LN10)
    assert c is not None and (c["epoch"], c["epochs_at_chance"]) == (5, 3)


@pytest.mark.parametrize("tail", [1, 2])
def test_one_or_two_epochs_at_chance_are_not_a_collapse(tail):
    """A dip that recovers, and a run that ends with a dip, are not a collapse."""
    from archspec.training.callbacks import find_collapse

    good = [(0.5, 1.5), (0.7, 0.9)]
    dip = [(0.1, 2.303)] * tail
    assert find_collapse(rows(good + dip + [(0.8, 0.6), (0.9, 0.4)]), 10, LN10) is None
    assert find_collapse(rows(good + dip), 10, LN10) is None


def test_a_run_that_recovers_after_several_epochs_at_chance_is_not_a_collapse():
    from archspec.training.callbacks import find_collapse

    assert find_collapse(rows([(0.5, 1.5)] + [(0.1, 2.303)] * 4 + [(0.6, 1.1), (0.8, 0.7)]), 10, LN10) is None


def test_a_run_never_better_than_chance_did_not_collapse():
    """Never learned is not collapsed: 0.19 < 0.2 (1/C + 1/C) is not clearly better than chance."""
    from archspec.training.callbacks import find_collapse

    assert find_collapse(rows([(0.11, 2.30), (0.19, 2.25)] + [(0.1, 2.303)] * 6), 10, LN10) is None
    assert find_collapse(rows([(0.1, 2.303)] * 8), 10, LN10) is None


def test_a_lucky_guess_on_a_few_images_is_not_better_than_chance():
    """On 8 validation images, 0.25 is 2 right: not clearly better (3 standard errors: 0.42)."""
    from archspec.training.callbacks import find_collapse

    noise = rows([(0.25, 2.2)] + [(0.125, 2.31)] * 3)
    assert find_collapse(noise, 10, LN10, images=8) is None
    assert find_collapse(noise, 10, LN10, images=180) is not None
    assert find_collapse(rows([(0.5, 1.5)] + [(0.125, 2.31)] * 3), 10, LN10, images=8) is not None


def test_chance_needs_both_the_loss_and_the_top1():
    from archspec.training.callbacks import find_collapse

    # top-1 at chance but a loss clearly below ln(10): the network still tells classes apart
    assert find_collapse(rows([(0.6, 1.2)] + [(0.12, 1.8)] * 4), 10, LN10) is None
    # a loss at ln(10) but top-1 above 0.145
    assert find_collapse(rows([(0.6, 1.2)] + [(0.2, 2.3)] * 4), 10, LN10) is None
    # a loss above the reference (thrown about by the rate, or weight decay's L2 term): at chance
    c = find_collapse(rows([(0.6, 1.2)] + [(0.1, 360.0)] * 4), 10, LN10)
    assert c is not None and c["epoch"] == 2


def test_training_figures_without_validation_data_and_other_class_counts():
    from archspec.training.callbacks import collapse_message, constant_loss, find_collapse

    c = find_collapse(rows([(0.05, 3.0), (0.3, 2.0)] + [(0.01, math.log(100))] * 3, val=False), 100,
                      math.log(100))
    assert c is not None and c["figures"] == "training" and c["chance_top1"] == pytest.approx(0.015)
    assert "no validation data" in collapse_message(c, 100)
    # 100 classes: 0.02 is clearly better than chance, 0.016 is not chance
    assert find_collapse(rows([(0.019, 4.0)] + [(0.01, 4.6)] * 3), 100, math.log(100)) is None
    assert find_collapse(rows([(0.3, 3.0)] + [(0.016, 4.6)] * 3), 100, math.log(100)) is None
    # 2 classes: chance is at most 0.525, better at least 0.6
    assert find_collapse(rows([(0.9, 0.3)] + [(0.5, math.log(2))] * 3), 2, math.log(2)) is not None
    assert find_collapse(rows([(0.58, 0.6)] + [(0.5, math.log(2))] * 3), 2, math.log(2)) is None
    # a sigmoid head's constant prediction (the class rate 1/C) scores the binary entropy of 1/C
    assert constant_loss("sigmoid", 10) == pytest.approx(-(0.1 * math.log(0.1) + 0.9 * math.log(0.9)))
    assert constant_loss("softmax", 10, 0.1) == pytest.approx(LN10)
    # rows without top-1 (a recipe without it) are never a collapse
    assert find_collapse([{"epoch": i, "val_loss": 2.303, "loss": 2.303} for i in range(5)], 10, LN10) is None


def test_the_recipe_field_is_validated(tmp_path):
    from archspec.core.errors import SpecError
    from archspec.training.recipe import load_recipe

    assert load_recipe("cifar100")[0].callbacks.allow_collapse is False
    assert load_recipe("cifar100", ["callbacks.allow_collapse=true"])[0].callbacks.allow_collapse is True
    with pytest.raises(SpecError):
        load_recipe("cifar100", ["callbacks.allow_collapse=sometimes"])


# ---------------------------------------------------------------- a real run that collapses

SPEC = textwrap.dedent("""\
    format: 1
    name: tiny_relu
    input:
      shape: [8, 8, 1]
      preprocessing: [{type: rescaling, name: scale, scale: 0.0625}]
    defaults: {activation: relu}
    stem:
      - {type: conv, name: c1, filters: 8, kernel: 3, padding: same}
    head:
      classes: 10
      layers:
        - {type: flatten, name: flat}
        - {type: dense, name: fc, units: 32}
        - {type: classifier, name: predictions}
    """)

# two good epochs at 0.1; one at 3, which kills the ReLUs (without a loss 1,000x ln(10), which
# LossGuard would stop); three more at 0.1, which cannot revive dead units
RECIPE = textwrap.dedent("""\
    format: 1
    name: blast
    optimizer: {name: sgd, learning_rate: 0.1, momentum: 0.9}
    data: {batch_size: 32}
    metrics: [top1]
    callbacks:
      checkpoint: {monitor: val_top1, mode: max}
      tensorboard: null
    phases:
      - {name: learn, epochs: 2}
      - {name: blast, epochs: 1, learning_rate: 3}
      - {name: after, epochs: 3}
    """)


@pytest.fixture(scope="module")
def blast(tmp_path_factory):
    """The spec, the recipe and 500 digits: 400 to train on, 100 to validate (10 of each
    class: a network that answers one class for every image scores exactly 0.10)."""
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("blast")
    digits = load_digits()
    x, y = digits.images[..., None].astype("float32"), digits.target
    order = np.random.default_rng(0).permutation(len(y))
    val = np.concatenate([order[y[order] == k][:10] for k in range(10)])
    train = np.setdiff1d(order, val)[:400]
    np.savez(d / "digits.npz", x_train=x[train], y_train=y[train], x_test=x[val], y_test=y[val])
    (d / "spec.yaml").write_text(SPEC)
    (d / "recipe.yaml").write_text(RECIPE)
    return d


LINE = re.compile(r"^archspec: (error|warning): the network collapsed at epoch 3 \(learning rate 3\): loss [0-9.]+"
                  r"(, above ln\(10\) = 2\.303| = ln\(10\)), top-1 0\.\d\d = chance, for 4 epochs after reaching "
                  r"0\.\d\d at epoch [12]")


def test_a_run_that_collapses_exits_1_says_where_and_records_it(blast, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", str(blast / "spec.yaml"), "--recipe", str(blast / "recipe.yaml"), "--data",
            str(blast / "digits.npz"), "--out", str(run), "--json"]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert out == ""  # nothing claims success
    lines = [line for line in err.splitlines() if "collapsed" in line]
    assert len(lines) == 1 and LINE.match(lines[0]), err
    assert "--allow-collapse" in lines[0] and "best.keras holds epoch" in lines[0]
    metrics = json.loads((run / "metrics.json").read_text())
    c = metrics["collapse"]
    assert (c["epoch"], c["learning_rate"], c["epochs_at_chance"], c["allowed"]) == (3, 3.0, 4, False)
    assert c["best_before"]["epoch"] in (1, 2) and c["best_before"]["top1"] >= 0.5
    assert metrics["epochs_completed"] == 6 and metrics["best_epoch"] == c["best_before"]["epoch"]
    assert (run / "best.keras").is_file() and (run / "final.keras").is_file()

    # the run directory stays valid: a resume (nothing left to train) meets the same collapse,
    # and --allow-collapse accepts it: a warning, exit 0, metrics.json says it was allowed
    assert main(["train", "--resume", str(run), "--json"]) == 1
    assert "the network collapsed at epoch 3" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--allow-collapse", "--json"]) == 0
    out, err = capsys.readouterr()
    warned = [line for line in err.splitlines() if "collapsed" in line]
    assert len(warned) == 1 and LINE.match(warned[0]) and warned[0].startswith("archspec: warning: "), err
    printed = json.loads(out)
    assert printed["collapse"]["allowed"] is True and printed["collapse"]["epoch"] == 3
    assert json.loads((run / "metrics.json").read_text())["collapse"]["allowed"] is True

