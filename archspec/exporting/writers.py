"""What the targets' writers share: scratch files beside the staging path, and static int8's
calibration images."""

from __future__ import annotations

import os
from pathlib import Path

from ..core import atomic


def side_file(tmp: Path, what: str) -> Path:
    """A scratch file beside the staging file (removed by `remove_side_files`; a killed
    process's are removed by `atomic.remove_stale`, which knows them by the staging name)."""
    return tmp.with_name(f"{tmp.name}.{what}.onnx")


def remove_side_files(tmp: Path) -> None:
    for f in tmp.parent.glob(f"{tmp.name}.*.onnx"):
        atomic.remove(f)
    for f in tmp.parent.glob(f"{tmp.name}.*.savedmodel"):  # the tflite target's SavedModel
        atomic.remove(f)
    # onnxruntime's calibrator writes augmented models next to the source
    for f in tmp.parent.glob(f"{tmp.name}*augmented*"):
        atomic.remove(f)


def calibration_images(job):
    """(images, where they came from, how they were set apart from the check's or None) for
    static int8: the user's `calibration`, else `fallback` ((images, rule, where from): images
    of the check data, or of a run's data, that the check does not use), else generated random
    images, only when there is no real image at all (an unchecked export of a spec or a
    plain .keras file)."""
    mode, calibration, model, seed, fallback = (job.opts.quantize, job.calibration, job.model, job.opts.seed,
                                                job.calib_from)
    if mode != "int8":
        return None, None, None
    from .checkdata import calibration_data

    if calibration is None and fallback is not None:
        images, rule, what = fallback
        if images is None or not len(images):  # checkdata.load refuses first; a bug if it fires
            from ..core.errors import ArchspecError

            raise ArchspecError("static int8: no calibration images apart from the check's, and no random ones "
                                "are used in their place")
        return images, what, rule
    what = "generated" if calibration is None else (
        os.fspath(calibration) if isinstance(calibration, (str, os.PathLike)) else "array")
    return calibration_data(calibration, model, seed), what, None
