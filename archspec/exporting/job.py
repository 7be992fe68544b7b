"""One export's state, made in the order the orchestrator needs it: the options checked
(`Job.start`, nothing built), the model to export with its names and metadata (`prepare`:
built, loaded, baked), and the check's inputs (real images or random ones) and static int8's
calibration images. A target's writer and the one check read everything from the `Job`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ArchspecError, SpecError
from . import source
from .options import TOLERANCES, ExportOptions, check_options, format_for
from .targets import TARGETS, Target


@dataclass
class Job:
    source_ref: Any  # what the user named: a model, a .keras file, a run directory, a spec
    path: Path  # the final path (checked: writable, replaced only with force)
    opts: ExportOptions
    target: Target
    data_ref: Any = None  # where the check's real images come from (`_check_data_ref`)
    model: Any = None
    info: dict = field(default_factory=dict)
    graph: Any = None  # the IR the model was built from, when archspec built it
    input_name: str = ""
    input_shape: tuple = ()
    output_names: list = field(default_factory=list)
    metadata: dict = field(default_factory=dict)
    tolerance: float | None = None
    x: Any = None  # the check's inputs
    data: Any = None  # `checkdata.CheckData` when they are real images
    calib_from: Any = None  # (images, rule, where from) for static int8 without --calibration
    calibration: Any = None  # the user's calibration images, preprocessed like the data
    timings: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    external: bool = False  # ONNX: the weights in an external data file (`to_onnx.prepare`)
    data_target: Path | None = None  # ... at this path

    @property
    def format(self) -> str:
        return self.target.name

    @property
    def variant(self) -> str | None:
        return self.opts.variant

    def say(self, msg: str) -> None:
        self.opts.say(msg)

    @classmethod
    def start(cls, model_or_spec, path, format, kwargs: dict) -> "Job":
        """Every option checked, and where the check's images come from: SpecErrors (exit 2)
        before anything is built."""
        opts = ExportOptions.of(format, kwargs)
        opts = dataclasses.replace(opts, format=format_for(path, opts.format))
        _precheck(model_or_spec, path, opts)  # every mistake the files show, at once, before TensorFlow (issue 30)
        target_path = check_options(path, opts, model_or_spec)
        if opts.phi is not None or opts.preset is not None:  # the spec scaled first, as `archspec build` does
            from ..language import Spec, load
            from ..resolving.compound import apply_scaling

            spec = model_or_spec if isinstance(model_or_spec, Spec) else load(model_or_spec, opts.overrides)[0]
            model_or_spec = apply_scaling(spec, opts.phi, opts.preset, opts.say)
            opts = dataclasses.replace(opts, overrides=None)
        job = cls(model_or_spec, target_path, opts, TARGETS[opts.format])
        job.data_ref = _check_data_ref(model_or_spec, opts)
        return job


def _precheck(model_or_spec, path, opts: ExportOptions) -> None:
    """The options' problems, and what the files show of the source and the check data
    (`archspec.training.precheck.check_export`), raised together before anything is built."""
    from ..training import evaluate, precheck
    from . import checkdata
    from .options import CHECK_IMAGES

    found = precheck.Problems()
    with found.catch():
        check_options(path, opts, model_or_spec)
    data_ref = None
    with found.catch():
        data_ref = _check_data_ref(model_or_spec, opts)
    calibrate = opts.quantize == "int8" and opts.calibration is None
    precheck.check_export(model_or_spec, found, overrides=opts.overrides, phi=opts.phi, preset=opts.preset,
                          check_data=data_ref if data_ref is not _CALIBRATION else None,
                          spread=None if calibrate else checkdata._spread, limit=CHECK_IMAGES, rules=evaluate)
    found.raise_if_any()


def prepare(job: Job) -> None:
    """The model to export (built, loaded, baked), its names, tolerance and metadata, and the
    check's inputs; the report's first fields."""
    from ..backends.keras import files

    o = job.opts
    model = None
    if source.tf_free(job.source_ref, o):  # no model built: the ONNX from the graph and the file's arrays
        from ..backends.keras.reference import choose_backend

        choose_backend()  # the check's Keras on JAX where installed, so TensorFlow is never imported
        model, job.info, job.timings["build"] = source.graph_model(job.source_ref, o.overrides, job.say, o.weights,
                                                                   o.weights_skip)
    if model is None:
        model, job.info, job.timings["build"] = source.model_to_export(job.source_ref, o.overrides, o.seed, job.say,
                                                                       o.weights, o.weights_skip)
    if len(model.inputs) != 1:
        raise ArchspecError(f"export supports single-input models (got {len(model.inputs)} inputs)")
    job.graph = model.graph if isinstance(model, source.GraphModel) else source.graph_of(model)
    mode, mode_from = _preprocess_mode(job.source_ref, model)
    baked = o.bake_preprocessing and mode != "none"
    if o.bake_preprocessing and mode_from is None:
        raise SpecError("bake_preprocessing: this Keras model carries no record of its spec's input.preprocess; "
                        "export the spec, the run directory or the .keras file instead")
    if baked:
        from . import bake

        job.say(f"baking the {mode} preprocessing into the model…")
        model, job.graph = bake.bake(model, mode), None
    job.model = model
    job.input_name = model.inputs[0].name
    job.output_names = list(model.output_names)
    job.input_shape = tuple(model.inputs[0].shape[1:])
    job.tolerance = TOLERANCES["float16"] if o.fp16 else (
        None if job.variant else TOLERANCES.get(files.compute_dtype(model), 1e-4))
    job.metadata = files.metadata(model, job.info, job.input_name, job.input_shape, job.output_names)
    files.record_preprocess(job.metadata, mode, baked, mode_from or "unknown")
    job.report.update({
        "path": str(job.path), "format": job.format, "spec": job.info.get("spec_name"), "input_names": [job.input_name],
        "output_names": job.output_names, "input_shape": [None, *job.input_shape], "metadata": job.metadata,
        "tolerance": job.tolerance, "checked": bool(o.check),
        "preprocessing": {"mode": mode, "from": mode_from, "baked": baked},
        # "graph": no model was built to write it (the graph and the weights file's arrays)
        "model": "graph" if isinstance(model, source.GraphModel) else "keras",
    })
    if job.variant:
        job.report["variant"] = job.variant
    _inputs(job, "none" if baked else mode)  # what the check's images get before the (baked) model
    target_prepare = getattr(job.target.writer(), "prepare", None)  # the target's own options
    if target_prepare is not None:
        target_prepare(job)


def _inputs(job: Job, data_mode: str) -> None:
    """The check's inputs (`job.x`: real images, else random ones) and static int8's
    calibration images: the user's (preprocessed like the data), else real images set apart
    from the checked ones (`checkdata.load`'s split, or a refusal with the numbers), else
    generated images only where no real image exists (unchecked, and not a run directory)."""
    from ..backends.keras import files

    o, model = job.opts, job.model
    job.calibration = o.calibration
    if o.calibration is not None and data_mode != "none":  # the user's images, as stored
        from . import checkdata

        job.calibration = checkdata.calibration_data(o.calibration, model, o.seed, preprocess=data_mode)
    calibrate = o.quantize == "int8" and o.calibration is None
    if o.check and job.data_ref is not None:
        job.data = _load_check_data(job, data_mode, calibrate)
        if calibrate:
            job.calib_from = (job.data.x_calib, job.data.calib_rule, "check data (images not checked)")
    elif calibrate:
        job.calib_from = _run_calibration(job.source_ref, model, job.say, data_mode)
    if o.check:
        n_random = max(o.samples, 16) if job.variant else o.samples
        baked = job.report["preprocessing"]["baked"]
        job.x = job.data.x if job.data is not None else (
            _random_pixels(model, n_random, o.seed) if baked else files.random_inputs(model, n_random, o.seed))
        job.report["check_inputs"] = job.data.source if job.data is not None else "random"
        job.report["check_held_out"] = bool(job.data is not None and job.data.held_out)  # the data's test split


def _check_data_ref(model_or_spec, o: ExportOptions):
    """Where the check's real images come from: `check_data`, else a run directory's data,
    else (static int8) the calibration images (`_CALIBRATION`), else None (random inputs).
    Bad combinations are SpecErrors, raised before anything is built."""
    if o.check_data is not None and not o.check:
        raise SpecError("check data is what the check runs on; it has no use with --no-check (check=False)")
    if not o.check:
        return None
    if o.check_data is not None:
        if isinstance(o.check_data, (str, os.PathLike)) and not os.path.exists(o.check_data):
            raise SpecError(f"{os.fspath(o.check_data)}: no such file or directory (check data)")
        return o.check_data
    run = source.run_dir(model_or_spec)
    if run is not None:
        d = source.run_data(run)
        if d is not None:
            if not os.path.exists(d):
                raise SpecError(f"{run}: the run's data {d} (run.json) is gone; pass --check-data DIR|FILE.npz")
            return d
    variant = o.variant
    if variant in ("int8", "int8_dynamic"):
        if variant == "int8" and o.calibration is not None:
            return _CALIBRATION
        raise SpecError(f"an {variant} export is checked by its top-1 agreement with float32 on real images, and "
                        "random inputs cannot show it (a near-uniform softmax agrees by chance): pass --check-data "
                        "DIR|FILE.npz (check_data=), or --no-check (check=False) to export it unchecked")
    return None


_CALIBRATION = object()  # the check runs on the calibration images


def _load_check_data(job: Job, preprocess: str, calibrate: bool):
    from . import checkdata

    if job.data_ref is _CALIBRATION:  # static int8 with the user's calibration images (preprocessed already)
        return checkdata.CheckData(checkdata.calibration_data(job.calibration, job.model, job.opts.seed), None,
                                   "calibration images")
    return checkdata.load(job.data_ref, job.model, say=job.say, preprocess=preprocess, calibrate=calibrate)


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
