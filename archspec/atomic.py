"""Atomic writes: a file is produced under a temporary name beside its target and renamed
onto it, so the target is either untouched or complete (a kill in between leaves at most a
hidden temporary, never a half-written target)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temporary path beside `path` (same suffix); on success rename it onto
    `path`, on any failure remove it, so `path` is either untouched or complete."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(Path(path)) as tmp:
        tmp.write_text(text)
