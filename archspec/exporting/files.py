"""Safe writes: every artefact is produced under a temporary name beside its target,
checked there, then renamed into place; a failure leaves the target as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path

from ..errors import SpecError


def staging_name(target: Path, format: str) -> Path:
    suffix = ".keras" if format == "keras" else ""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def commit(tmp: Path, target: Path, force: bool) -> None:
    """Rename the checked temporary into place; an existing target only with force (a
    directory is moved aside first and restored if the rename fails)."""
    if target.exists() or target.is_symlink():
        if not force:
            raise SpecError(f"{target} exists; pass --force (force=True) to replace it")
        if tmp.is_file() and target.is_file() and not target.is_symlink():
            os.replace(tmp, target)
            return
        backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, backup)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(backup, target)
            raise
        remove(backup)
        return
    os.rename(tmp, target)


def remove(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def side_file(tmp: Path, what: str) -> Path:
    """A scratch file beside the staging file (removed by `remove_side_files`)."""
    return tmp.with_name(f"{tmp.name}.{what}.onnx")


def remove_side_files(tmp: Path) -> None:
    for f in tmp.parent.glob(f"{tmp.name}.*.onnx"):
        remove(f)
    # onnxruntime's calibrator writes augmented models next to the source
    for f in tmp.parent.glob(f"{tmp.name}*augmented*"):
        remove(f)


def size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size
