"""Export a compiled network for deployment: ONNX, SavedModel, `.keras`.

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

The package, by concern:

- `options`: formats, `format_for`, opsets, variants, tolerances and the checks on them;
- `source`: the Keras model to export (given, a `.keras` file, a run directory's model, or a
  spec built through `archspec.ir.pipeline` and the Keras backend; with ``weights``, loaded
  by the one strict loader);
- `checkdata`: the check's real images, read as `archspec evaluate` reads data (and
  preprocessed as the spec's `input.preprocess` says, as training and evaluate do), and
  static int8's calibration images;
- `bake`: ``bake_preprocessing``: that preprocessing as fixed layers in front of the
  exported network, recorded in the metadata (``archspec.preprocessing``);
- `writers`: each format written to its staging path, through the backends:
  `archspec.backends.onnx` (`via_ir` from the graph IR, the default; `via_tf2onnx`, the
  cross-check; `passes`; `variants`: float16 and int8) and
  `archspec.backends.keras.files` (`.keras` with its provenance);
- `verify`: running the artefact and comparing it with Keras;
- `build_file`: `archspec build` (a spec built, weights loaded, saved with provenance);
- `archspec.core.atomic` (the one writer of every output) and `archspec.core.progress`
  (heartbeat lines during long steps).

TensorFlow, Keras, tf2onnx, onnx and onnxruntime are imported inside functions only;
TensorFlow only by the tf2onnx and SavedModel paths.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ..core.errors import ArchspecError, SpecError
from ..core import atomic
from ..backends.keras import files
from . import source, verify, writers
from .options import (CHECK_IMAGES, DEFAULT_OPSET, EXTERNAL_DATA_ABOVE, FORMATS, MAX_OPSET, MIN_AGREEMENT, MIN_OPSET,
    ONNX_PATHS, QUANTIZE_MODES, TOLERANCES, check_options, format_for)
from ..core.progress import Progress, short

__all__ = ["export", "format_for", "FORMATS", "QUANTIZE_MODES", "DEFAULT_OPSET", "MIN_OPSET", "MAX_OPSET",
           "TOLERANCES", "ONNX_PATHS", "EXTERNAL_DATA_ABOVE", "MIN_AGREEMENT", "CHECK_IMAGES"]


def export(model_or_spec, path: str | os.PathLike, format: str | None = None, *, opset: int = DEFAULT_OPSET,
           check: bool = True, force: bool = False, fp16: bool = False, quantize: str | None = None,
           calibration=None, overrides: list[str] | None = None, progress: Progress | None = None,
           samples: int = 3, seed: int = 0, via: str = "ir", external_data: bool | None = None,
           check_data=None, min_agreement: float | None = None, bake_preprocessing: bool = False, weights=None,
           weights_skip=()) -> dict[str, Any]:
    """Export a Keras model, a `.keras` file, a run directory or a spec to ONNX, SavedModel
    or `.keras`.

    Args:
        model_or_spec: a `keras.Model`, a path to a `.keras` file, a run directory of
            `archspec train` (its best.keras, else final.keras; checked on the run's data), a
            spec path, a bundled spec name or a `Spec` (built with random weights first).
        path: where to write (a file; a directory for ``saved_model``).
        format: ``"onnx"``, ``"saved_model"`` or ``"keras"``; None (default): from the
            suffix of `path` (``.onnx``, ``.keras``; `options.format_for`, the rule the
            command line uses too). A suffix that names another format is an error.
        opset: ONNX opset (13-18).
        check: run the result next to the Keras model and fail (nothing written) when it
            differs: float32 formats beyond the tolerance; fp16 beyond float16's tolerance or,
            on real images, below `min_agreement` top-1 agreement; int8 below it.
        force: replace an existing `path`.
        fp16: ONNX with float16 weights and compute (inputs and outputs stay float32; batch
            norms folded into their convolutions, nodes that overflow float16 kept float32).
        quantize: ``"int8"`` (static quantization, ONNX Runtime, calibrated on
            `calibration`, else on check-data images not checked, else on generated images)
            or ``"int8_dynamic"`` (weights only, no calibration). Its check needs real
            images: `check_data`, a run directory's data, or (static) the calibration images.
        calibration: for ``quantize="int8"``: None, a `.npy` file or array of shape
            (N, H, W, C), or a directory of images (decoded as RGB 0-255 and resized to the
            input size).
        overrides: `--set` style overrides, when `model_or_spec` is a spec.
        progress: called with a short message at each step (and every 15 s of a long one).
        samples: random inputs for the check when there is no check data (variants use
            at least 16).
        seed: seeds the random weights (of a spec) and the random inputs.
        via: how ONNX is made: ``"ir"`` (default: emitted from the graph IR and the model's
            weights, no TensorFlow) or ``"tf2onnx"`` (traced by TensorFlow, converted by
            tf2onnx; the cross-check).
        external_data: ONNX weights in an external ``<path>.data`` file beside `path`:
            True, False, or None (default: when the float32 weights exceed
            `EXTERNAL_DATA_ABOVE`, protobuf's 2 GiB limit less a margin).
        check_data: real images for the check (`checkdata.load`): an ``.npz`` (x_train,
            y_train[, x_test, y_test]), a CIFAR directory, a folder of class sub-folders, a
            flat folder of images, or an array (N, H, W, C); at most `CHECK_IMAGES` of its
            test split. Default: a run directory's data, else random inputs.
        min_agreement: the top-1 agreement a variant needs on real images (default
            `MIN_AGREEMENT` of the variant).
        bake_preprocessing: put the spec's `input.preprocess` (keras.applications'
            caffe / torch / tf `preprocess_input`) in front of the exported network as fixed
            layers (`bake`), so the artefact takes RGB images 0..255; the network's own
            layers, names and weights are unchanged. ``none`` bakes nothing. Recorded in
            the metadata's ``archspec.preprocessing`` (``mode``, ``baked``, ``expects``). Without
            it the artefact takes preprocessed images, and the metadata says which mode.
        weights: with a spec, a weights file loaded into the built model by the one strict
            loader (`archspec.backends.keras.weights`: a keras.applications .h5, a Keras 3
            .weights.h5 or .keras, an .npz); a load the policy refuses is a SpecError.
        weights_skip: fnmatch globs of layers left at their initial weights (reported).

    Returns:
        A report: path, format, bytes, seconds, preprocessing (mode, from, baked), max_abs_diff,
        tolerance, passed, checked,
        check_inputs ("random", or where the images came from), samples, top1_agreement,
        accuracy (keras, export: with labelled check data), input_names, output_names,
        metadata, for ONNX via, opset and external_data (the data file, or None), and for
        variants variant, float32_bytes, size_ratio, min_agreement (when judged), and
        float32_nodes (fp16: the nodes kept float32, and why).

    Raises:
        SpecError: bad input (unknown format, existing path without force, int8 without
            images to check it on, ...). Exit 2.
        ArchspecError: the conversion or the check failed; nothing is written. Exit 1.
    """
    t_start = time.perf_counter()
    say = progress or (lambda msg: None)
    format = format_for(path, format)
    target = check_options(path, format, opset, force, fp16, quantize, calibration, overrides, samples,
                           model_or_spec, via, external_data, min_agreement)
    variant = "fp16" if fp16 else quantize
    if not isinstance(bake_preprocessing, bool):
        raise SpecError(f"bake_preprocessing must be True or False (got {bake_preprocessing!r})")
    data_ref = _check_data_ref(model_or_spec, check_data, check, variant, calibration)
    model, info, t_build = source.model_to_export(model_or_spec, overrides, seed, say, weights, weights_skip)
    if len(model.inputs) != 1:
        raise ArchspecError(f"export supports single-input models (got {len(model.inputs)} inputs)")
    mode, mode_from = _preprocess_mode(model_or_spec, model)
    baked = bake_preprocessing and mode != "none"
    if bake_preprocessing and mode_from is None:
        raise SpecError("bake_preprocessing: this Keras model carries no record of its spec's input.preprocess; "
                        "export the spec, the run directory or the .keras file instead")
    if baked:
        from . import bake

        say(f"baking the {mode} preprocessing into the model…")
        model = bake.bake(model, mode)
    data_mode = "none" if baked else mode  # what the check's images get before the (baked) model
    input_name = model.inputs[0].name
    output_names = list(model.output_names)
    input_shape = tuple(model.inputs[0].shape[1:])
    tolerance = TOLERANCES["float16"] if fp16 else (
        None if variant else TOLERANCES.get(files.compute_dtype(model), 1e-4))
    metadata = files.metadata(model, info, input_name, input_shape, output_names)
    from ..backends.keras.files import record_preprocess

    record_preprocess(metadata, mode, baked, mode_from or "unknown")
    report: dict[str, Any] = {
        "path": str(target), "format": format, "spec": info.get("spec_name"), "input_names": [input_name],
        "output_names": output_names, "input_shape": [None, *input_shape], "metadata": metadata,
        "tolerance": tolerance, "checked": bool(check),
        "preprocessing": {"mode": mode, "from": mode_from, "baked": baked},
    }
    if calibration is not None and data_mode != "none":  # the user's images, as stored: preprocessed like the data
        from . import checkdata

        calibration = checkdata.calibration_data(calibration, model, seed, preprocess=data_mode)
    data = None
    # static int8 without its own calibration images calibrates on real images set apart
    # from the checked ones (`checkdata.load`'s split, or a refusal with the numbers); on
    # generated images only where no real image exists (unchecked, and not a run directory)
    calibrate = quantize == "int8" and calibration is None
    calib_from = None
    if check and data_ref is not None:
        data = _load_check_data(data_ref, model, seed, say, calibration, data_mode, calibrate)
        if calibrate:
            calib_from = (data.x_calib, data.calib_rule, "check data (images not checked)")
    elif calibrate:
        calib_from = _run_calibration(model_or_spec, model, say, data_mode)
    if check:
        n_random = max(samples, 16) if variant else samples
        x = data.x if data is not None else (_random_pixels(model, n_random, seed) if baked else
                                             files.random_inputs(model, n_random, seed))
        report["check_inputs"] = data.source if data is not None else "random"
    else:
        x = None
    external = False
    if format == "onnx":
        from ..backends.onnx.via_ir import estimated_bytes, external_data_name

        report["opset"] = opset
        report["via"] = via
        external = bool(external_data) if external_data is not None else estimated_bytes(model) > EXTERNAL_DATA_ABOVE
        data_target = target.with_name(external_data_name(target))
        if external:
            data_target = atomic.check_output(data_target, force)
        if external and quantize:
            raise SpecError("int8 quantization of a model with external data is not supported")
        report["external_data"] = None
    if variant:
        report["variant"] = variant

    atomic.remove_stale(target)  # what a killed export left beside it
    if external:
        atomic.remove_stale(data_target)
    stage = tmp = atomic.staging_path(target, ".keras" if format == "keras" else "")
    if external:  # the model and its data file under their final names in a staging directory
        stage.mkdir()
        tmp = stage / target.name
    try:
        timings = {"build": t_build}
        if format == "onnx":
            writers.write_onnx(model, tmp, opset, input_name, input_shape, output_names, metadata, fp16, quantize,
                               calibration, seed, say, timings, report, via=via, graph=source.graph_of(model),
                               external=external, probe=x,
                               calib_fallback=calib_from)
        elif format == "saved_model":
            writers.write_saved_model(model, tmp, input_name, input_shape, output_names, metadata, say, timings)
        else:
            files.write_keras(model, tmp, metadata, say, timings)
        if check:
            _check(model, tmp, format, target, input_name, output_names, variant, tolerance, x, data,
                   min_agreement, say, timings, report)
        else:
            report["max_abs_diff"] = None
            report["passed"] = None
        report["bytes"] = atomic.size(stage)
        if variant and "float32_bytes" in report:
            report["size_ratio"] = report["bytes"] / report["float32_bytes"]
        say(f"writing {target}")
        if external:
            atomic.commit(tmp.with_name(data_target.name), data_target, force)
        atomic.commit(tmp, target, force)
    except (ArchspecError, KeyboardInterrupt):
        atomic.remove(stage)
        raise
    except OSError as exc:  # a full disk, a read-only file system: one line naming the output
        atomic.remove(stage)
        raise atomic.os_error(target, exc) from None
    except Exception as exc:
        atomic.remove(stage)
        raise ArchspecError(f"{format} export failed: {type(exc).__name__}: {short(exc)}") from exc
    finally:
        writers.remove_side_files(tmp)
        if external:
            atomic.remove(stage)
    report["timings"] = {k: round(v, 3) for k, v in timings.items()}
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    return report


def _check_data_ref(model_or_spec, check_data, check, variant, calibration):
    """Where the check's real images come from: `check_data`, else a run directory's data,
    else (static int8) the calibration images ("calibration"), else None (random inputs).
    Bad combinations are SpecErrors, raised before anything is built."""
    if check_data is not None and not check:
        raise SpecError("check data is what the check runs on; it has no use with --no-check (check=False)")
    if not check:
        return None
    if check_data is not None:
        if isinstance(check_data, (str, os.PathLike)) and not os.path.exists(check_data):
            raise SpecError(f"{os.fspath(check_data)}: no such file or directory (check data)")
        return check_data
    run = source.run_dir(model_or_spec)
    if run is not None:
        d = source.run_data(run)
        if d is not None:
            if not os.path.exists(d):
                raise SpecError(f"{run}: the run's data {d} (run.json) is gone; pass --check-data DIR|FILE.npz")
            return d
    if variant in ("int8", "int8_dynamic"):
        if variant == "int8" and calibration is not None:
            return _CALIBRATION
        raise SpecError(f"an {variant} export is checked by its top-1 agreement with float32 on real images, and "
                        "random inputs cannot show it (a near-uniform softmax agrees by chance): pass --check-data "
                        "DIR|FILE.npz (check_data=), or --no-check (check=False) to export it unchecked")
    return None


_CALIBRATION = object()  # the check runs on the calibration images


def _load_check_data(ref, model, seed, say, calibration=None, preprocess: str = "none", calibrate: bool = False):
    from . import checkdata

    if ref is _CALIBRATION:  # static int8 with the user's calibration images (preprocessed already)
        return checkdata.CheckData(checkdata.calibration_data(calibration, model, seed), None, "calibration images")
    return checkdata.load(ref, model, say=say, preprocess=preprocess, calibrate=calibrate)


def _run_calibration(model_or_spec, model, say, preprocess: str):
    """Static int8 of a run directory exported unchecked: calibration images of the run's
    own data (as the check would set them apart), or None when it is not a run directory or
    its data is gone (then generated images, as for a spec: no real image exists)."""
    run = source.run_dir(model_or_spec)
    d = source.run_data(run) if run is not None else None
    if d is None or not os.path.exists(d):
        return None
    from . import checkdata

    c = checkdata.load(d, model, say=say, preprocess=preprocess, calibrate=True)
    return c.x_calib, c.calib_rule, f"the run's data {c.source} (images the check would not use)"


def _preprocess_mode(model_or_spec, model) -> tuple[str, str | None]:
    """(the spec's `input.preprocess`, where it was read; None when nothing records it): a
    spec's from its graph, a run directory's from its spec.yaml, a `.keras` file's from its
    archspec.json (``none`` once baked) or its run's spec.yaml (`evaluate.preprocess_of`)."""
    from pathlib import Path

    graph = source.graph_of(model)
    if graph is not None:
        return graph.meta.get("preprocess") or "none", "the spec (input.preprocess)"
    ref = model_or_spec
    run = source.run_dir(ref)
    if run is not None:
        from ..training.evaluate import model_file

        ref = model_file(run)[0]
    if isinstance(ref, (str, os.PathLike)) and os.fspath(ref).endswith(".keras"):
        from ..training.evaluate import preprocess_of

        mode, where = preprocess_of(Path(os.fspath(ref)))
        return mode, (where if where != "no record of the model's spec" else None)
    return "none", None


def _random_pixels(model, n: int, seed: int):
    """Random RGB pixels 0..255: the check inputs of a model with its preprocessing baked in."""
    import numpy as np

    rng = np.random.default_rng(seed + 1234)
    return rng.uniform(0.0, 255.0, size=(n, *model.inputs[0].shape[1:])).astype("float32")


def _check(model, tmp, format, target, input_name, output_names, variant, tolerance, x, data, min_agreement,
           say, timings, report) -> None:
    """Run the staged artefact next to Keras on `x` (the check data's images, or random
    inputs); raise (exit 1) when it differs: float formats and fp16 beyond `tolerance`,
    variants on real images below their minimum top-1 agreement."""
    t0 = time.perf_counter()
    what = "random inputs" if data is None else "check images"
    say(f"running the Keras model on {len(x)} {what}…")
    ref = verify.keras_outputs(model, x)
    say(f"checking with {verify.RUNTIMES[format]}…")
    got = verify.run(format, tmp, x, input_name, output_names)
    diffs = verify.compare(ref, got, output_names)
    timings["check"] = time.perf_counter() - t0
    report["max_abs_diff"] = max(d["max_abs_diff"] for d in diffs.values())
    report["outputs"] = diffs
    report["samples"] = len(x)
    agreement = verify.top1(ref[-1], got[-1])
    report["top1_agreement"] = agreement
    if data is not None and data.y is not None:
        report["accuracy"] = {"keras": verify.accuracy(ref[-1], data.y), "export": verify.accuracy(got[-1], data.y)}
    problems = []
    if tolerance is not None:
        problem = verify.mismatch(diffs, tolerance)
        if problem:
            problems.append(problem)
    if variant and data is not None:
        need = MIN_AGREEMENT[variant] if min_agreement is None else float(min_agreement)
        report["min_agreement"] = need
        if agreement is None:
            problems.append(f"no class-score output to compare top-1 on (outputs {output_names})")
        elif agreement < need:
            problems.append(f"top-1 agreement with float32 {agreement:.1%} on {len(x)} {what} from "
                            f"{data.source} (needs {need:.0%})")
    report["passed"] = not problems
    if problems:
        name = f"{format} {variant} export" if variant else f"{format} export"
        raise ArchspecError(f"{name} does not match Keras: {'; '.join(problems)}; nothing written to {target}")
