"""Issue 30, a newcomer's first hour. "The recipe follows the spec": `--set input.shape`
against a recipe's own `data.image_size` is an error before anything runs, and `--epochs`
within a schedule's warm-up scales the warm-up so the learning rate still reaches the
recipe's peak (history.csv's learning_rate column, read back here). "Quiet, readable
output": train, evaluate, predict and export print no TensorFlow / absl / LiteRT notices,
and archspec's epoch lines start lines of their own, in a real process whose two streams
are one (as on a terminal)."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from archspec.cli import main
from archspec.training.loop import scaled_warmup
from archspec.training.recipe import load_recipe

SPEC = textwrap.dedent("""\
    format: 1
    name: tiny_follow
    input: {shape: [16, 16, 3], preprocessing: [{type: rescaling, scale: 0.00392156862745098}]}
    stem: [{type: conv, name: conv1, filters: 8, kernel: 3, stride: 2, bn: true}]
    head: {classes: 10, layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]}
    """)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("follow")
    digits = load_digits()
    x = np.clip(np.kron(digits.images, np.ones((1, 2, 2))) * 16, 0, 255).astype("uint8")[..., None].repeat(3, -1)
    np.savez(d / "digits.npz", x_train=x[:400], y_train=digits.target[:400], x_test=x[1500:1600],
             y_test=digits.target[1500:1600])
    (d / "spec.yaml").write_text(SPEC)
    (d / "warm.yaml").write_text("format: 1\nname: warm\noptimizer: {name: sgd, learning_rate: 0.05, momentum: 0.9}\n"
                                 "schedule: {name: cosine, warmup_epochs: 5}\nepochs: 100\ndata: {batch_size: 64}\n")
    return d


def test_set_input_shape_against_the_recipes_image_size_is_an_error_before_anything(files, tmp_path, capsys):
    """A recipe that reads images at 32x32 (data.image_size) and `--set input.shape=[24,24,3]`:
    the recipe's size used to win silently. Now one located line, exit 2, no run directory."""
    (tmp_path / "sized.yaml").write_text("format: 1\nname: sized\ndata:\n  image_size: [32, 32]\n")
    out = tmp_path / "run"
    assert main(["train", str(files / "spec.yaml"), "--recipe", str(tmp_path / "sized.yaml"), "--set",
                 "input.shape=[24,24,3]", "--data", str(files / "digits.npz"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{tmp_path / 'sized.yaml'}:4:15: data.image_size: is 32x32, but --set input.shape=[24,24,3] "
                   f"asks for 24x24 images: leave one out, or --recipe-set data.image_size=[24,24]"], err
    assert not out.exists()


def test_warm_up_scales_with_epochs_below_it():
    recipe, _ = load_recipe("cifar100")  # cosine, 5 warm-up epochs of 100
    said = []
    assert scaled_warmup(recipe, 3, said.append).schedule.warmup_epochs == 0
    assert "--epochs 3 is within the schedule's 5-epoch warm-up (of the recipe's 100 epochs): the warm-up is " \
           "scaled with it to 0 epochs, so the learning rate reaches the recipe's peak (0.05)" == said[0]
    assert scaled_warmup(recipe, 12).schedule.warmup_epochs == 5  # past the warm-up: the recipe's own
    assert scaled_warmup(recipe, None) is recipe
    long_warm = recipe.model_copy(update={"schedule": recipe.schedule.model_copy(update={"warmup_epochs": 40})})
    assert scaled_warmup(long_warm, 10).schedule.warmup_epochs == 4  # 40% of the epochs, as in the recipe


def test_three_epochs_of_a_five_epoch_warm_up_reach_the_peak(files, tmp_path, capsys):
    """Before: 3 epochs ran at 1/6, 2/6 and 3/6 of the peak. Now history.csv's learning_rate column
    reaches the recipe's 0.05, and the run said why."""
    out = tmp_path / "run"
    assert main(["train", str(files / "spec.yaml"), "--recipe", str(files / "warm.yaml"), "--data",
                 str(files / "digits.npz"), "--out", str(out), "--epochs", "3", "--json"]) == 0
    err = capsys.readouterr().err
    assert "the warm-up is scaled with it to 0 epochs, so the learning rate reaches the recipe's peak (0.05)" in err
    with open(out / "history.csv") as f:
        lrs = [float(r["learning_rate"]) for r in csv.DictReader(f)]
    assert len(lrs) == 3 and max(lrs) == pytest.approx(0.05) and lrs[0] == pytest.approx(0.05)
    assert "warmup_epochs: 5" in (out / "recipe.yaml").read_text()  # the recipe as given; a resume scales it again


CHILD = """\
import sys
from archspec.cli import main
d = sys.argv[1]
for argv in (["train", d + "/spec.yaml", "--recipe", "cifar100", "--data", d + "/digits", "--out", d + "/run",
              "--epochs", "2", "--force"],
             ["evaluate", d + "/run", "--data", d + "/digits"],
             ["predict", d + "/run", d + "/one.png"],
             ["export", d + "/run", "-o", d + "/m.tflite", "--quantize", "int8", "--force", "--min-agreement", "0"]):
    print("COMMAND", argv[0], flush=True)
    assert main(argv) == 0, argv
"""


def test_commands_print_no_native_notices_and_epoch_lines_start_their_own_line(files, tmp_path):
    from PIL import Image

    from archspec.core.quiet import NOISE

    d = tmp_path
    (d / "spec.yaml").write_bytes((files / "spec.yaml").read_bytes())
    arrays = np.load(files / "digits.npz")
    for i, (x, y) in enumerate(zip(arrays["x_train"][:200], arrays["y_train"][:200])):  # a folder: decoded by
        (d / "digits" / str(y)).mkdir(parents=True, exist_ok=True)                      # TensorFlow, whose first
        Image.fromarray(x).save(d / "digits" / str(y) / f"{i}.png")                      # import printed notices
    Image.fromarray(arrays["x_test"][0]).save(d / "one.png")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ARCHSPEC_DEBUG")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    p = subprocess.run([sys.executable, "-c", CHILD, str(d)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, env=env, timeout=600)
    out = p.stdout
    assert p.returncode == 0, out[-3000:]
    assert out.count("COMMAND") == 4 and "archspec: epoch 2:" in out
    noisy = [ln for ln in out.splitlines() if NOISE.search(ln) or re.search(
        r"tensorflow|absl|oneDNN|XNNPACK|cuda|xla|fully_quantize|WARNING", ln, re.I)]
    assert noisy == [], noisy
    glued = [ln for ln in out.splitlines() if "archspec:" in ln and not ln.lstrip("\r").startswith("archspec:")]
    assert glued == [], glued  # a Keras progress bar ends its line before archspec's epoch line
