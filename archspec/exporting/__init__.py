"""Export a compiled network for deployment: ONNX, SavedModel, `.keras`, LiteRT (TFLite).

Every export is verified by running it (unless ``check=False``): the written artefact is
reloaded (ONNX Runtime, ``tf.saved_model.load``, ``keras.models.load_model``) and run next
to the Keras model on the check inputs: real images (``check_data``, a run directory's own
data, or static int8's calibration images; `checkdata`) or else random inputs. It fails,
leaving nothing at the path, above the tolerance (1e-4 for float32, 1e-2 for fp16, relative
to the output's magnitude when that exceeds 1), or, for a variant on real images, below its
minimum top-1 agreement with the float32 model (`MIN_AGREEMENT`). Random inputs prove the
conversion only (random weights give a near-uniform softmax, where agreement is chance), so
an int8 export without real images is refused. Writes are atomic: everything is produced
under a temporary name next to the target, checked there, then renamed into place; an
existing path is only replaced with ``force=True``.

`export` is an orchestrator over a table of targets (`targets.TARGETS`): it checks the
options (`job.Job.start`, nothing built), prepares the model and the check's inputs
(`job.prepare`), has the target's module write the artefact to a staging path, runs the one
check (`verify.check`) and renames the artefact into place. A target is a row of the table
and a module with ``write`` and ``run``: `to_onnx`, `to_savedmodel`, `to_keras`, `to_tflite`.

The package, by concern:

- `targets`: the table (formats, suffixes, variants, runtimes, modules; no framework);
- `options`: `ExportOptions` (every keyword of `export`, documented), `format_for`, opsets,
  variants, tolerances and the checks on them;
- `job`: one export's state: the options, the model, its names and metadata, the check's
  inputs and static int8's calibration images;
- `source`: the Keras model to export (given, a `.keras` file, a run directory's model, or a
  spec built through `archspec.ir.pipeline` and the Keras backend; with ``weights``, loaded
  by the one strict loader);
- `checkdata`: the check's real images, read as `archspec evaluate` reads data (and
  preprocessed as the spec's `input.preprocess` says, as training and evaluate do), and
  static int8's calibration images;
- `bake`: ``bake_preprocessing``: that preprocessing as fixed layers in front of the
  exported network, recorded in the metadata (``archspec.preprocessing``);
- the targets' modules, through the backends: `archspec.backends.onnx` (`via_ir` from the
  graph IR, the default; `via_tf2onnx`, the cross-check; `passes`; `variants`: float16 and
  int8), `archspec.backends.keras.files` (`.keras` with its provenance), TensorFlow's
  SavedModel and LiteRT converter; `writers`: what they share (scratch files, calibration);
- `verify`: the one check: running the artefact and judging it against Keras;
- `build_file`: `archspec build` (a spec built, weights loaded, saved with provenance);
- `archspec.core.atomic` (the one writer of every output) and `archspec.core.progress`
  (heartbeat lines during long steps).

TensorFlow, Keras, tf2onnx, onnx and onnxruntime are imported inside functions only;
TensorFlow only by the tf2onnx, SavedModel and LiteRT paths.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..core import atomic
from ..core.errors import ArchspecError
from ..core.progress import short
from . import verify, writers
from .job import Job, prepare
from .options import (CHECK_IMAGES, DEFAULT_OPSET, EXTERNAL_DATA_ABOVE, FORMATS, MAX_OPSET, MIN_AGREEMENT, MIN_OPSET,
                      ONNX_PATHS, QUANTIZE_MODES, TOLERANCES, ExportOptions, format_for)

__all__ = ["export", "format_for", "ExportOptions", "FORMATS", "QUANTIZE_MODES", "DEFAULT_OPSET", "MIN_OPSET",
           "MAX_OPSET", "TOLERANCES", "ONNX_PATHS", "EXTERNAL_DATA_ABOVE", "MIN_AGREEMENT", "CHECK_IMAGES"]


def export(model_or_spec, path: str | os.PathLike, format: str | None = None, **options) -> dict[str, Any]:
    """Export a Keras model, a `.keras` file, a run directory (checked on its own data) or a
    spec (path, bundled name or `Spec`, built first) to `format` (a `targets.FORMATS` name;
    None: from the suffix of `path`), checked by running it next to Keras. `options`: the
    fields of `ExportOptions`. Returns the report (path, format, bytes, seconds, the check's
    figures, metadata, ...). Raises SpecError for bad input (exit 2, before anything is
    built) and ArchspecError when the conversion or the check fails (exit 1); either way
    nothing is written at `path` (the staged artefact is removed)."""
    t_start = time.perf_counter()
    job = Job.start(model_or_spec, path, format, options)
    prepare(job)
    target, writer = job.target, job.target.writer()
    stage, tmp = _staging(job)
    try:
        writer.write(job, tmp)
        if job.opts.check:
            verify.check(job, tmp)
        else:
            job.report.update(max_abs_diff=None, passed=None)
        job.report["bytes"] = atomic.size(stage)
        if job.variant and "float32_bytes" in job.report:
            job.report["size_ratio"] = job.report["bytes"] / job.report["float32_bytes"]
        job.say(f"writing {job.path}")
        if job.external:
            atomic.commit(tmp.with_name(job.data_target.name), job.data_target, job.opts.force)
        atomic.commit(tmp, job.path, job.opts.force)
    except (ArchspecError, KeyboardInterrupt):
        atomic.remove(stage)
        raise
    except OSError as exc:  # a full disk, a read-only file system: one line naming the output
        atomic.remove(stage)
        raise atomic.os_error(job.path, exc) from None
    except Exception as exc:
        atomic.remove(stage)
        raise ArchspecError(f"{target.name} export failed: {type(exc).__name__}: {short(exc)}") from exc
    finally:
        writers.remove_side_files(tmp)
        if job.external:
            atomic.remove(stage)
    job.report["timings"] = {k: round(v, 3) for k, v in job.timings.items()}
    job.report["seconds"] = round(time.perf_counter() - t_start, 3)
    return job.report


def _staging(job: Job):
    """(what to remove on failure, the path the writer writes): a staging file or directory
    next to the target (what a killed export left there removed first); an ONNX file with
    external data is staged in a directory, under its final name beside its data file."""
    atomic.remove_stale(job.path)
    if job.external:
        atomic.remove_stale(job.data_target)
    stage = atomic.staging_path(job.path, ".keras" if job.format == "keras" else "")
    if not job.external:
        return stage, stage
    stage.mkdir()
    return stage, stage / job.path.name
