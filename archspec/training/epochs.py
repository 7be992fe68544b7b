"""What the training loop (`loop`) and its Keras callback (`callbacks`) both need at an
epoch's end: the scheduled learning rate, history.csv's writer and the best row so far.
It sits below both, so the callback never imports the loop back (no import cycle;
tests/test_layers.py checks). No Keras, no TensorFlow."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..core.atomic import write_text_atomic

HISTORY = "history.csv"


def schedule_lr(recipe, base: float, epoch_in_phase: int, phase_epochs: int) -> float:
    """The learning rate of an epoch (0-based within its phase) under the recipe's schedule
    (plateau is handled by its callback and starts at `base`)."""
    s = recipe.schedule
    if s.warmup_epochs and epoch_in_phase < s.warmup_epochs and s.name in ("step", "cosine"):
        return base * (epoch_in_phase + 1) / (s.warmup_epochs + 1)
    if s.name == "step":
        return base * s.factor ** sum(1 for b in s.boundaries if epoch_in_phase >= b)
    if s.name == "cosine":
        span = max(1, phase_epochs - s.warmup_epochs)
        t = min(1.0, (epoch_in_phase - s.warmup_epochs) / span)
        return s.min_learning_rate + (base - s.min_learning_rate) * 0.5 * (1 + math.cos(math.pi * t))
    return base


def write_history(out: Path, rows: list[dict]) -> None:
    """RUN/history.csv from the rows of the complete epochs (an empty file for none, once it exists)."""
    if not rows:
        if (out / HISTORY).is_file():  # no complete epoch (left): no row either
            write_text_atomic(out / HISTORY, "")
        return
    keys = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k, "") for k in keys})
    write_text_atomic(out / HISTORY, buf.getvalue())


def best_row(rows: list[dict], monitor: str, mode: str):
    """The row with the best value of `monitor` (`mode` as the checkpoint's), NaNs skipped; None if none."""
    rows = [r for r in rows if monitor in r and r[monitor] == r[monitor]]
    if not rows:
        return None
    from .recipe import maximizes

    return (max if maximizes(monitor, mode) else min)(rows, key=lambda r: r[monitor])
