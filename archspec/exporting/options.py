"""What `export` accepts: the formats (the target table, `targets`), opsets, variants,
tolerances, every option of an export (`ExportOptions`) and the checks on them (bad options
are a SpecError, exit 2, before anything is built or written)."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

from ..core.atomic import check_output
from ..core.errors import SpecError
from .targets import FORMATS, TARGETS

#: the layer dtype policies a model is built with (the classifier and its softmax stay float32)
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
QUANTIZE_MODES = ("int8", "int8_dynamic")
#: every variant a target may have (each target's own are in its `targets` row)
VARIANTS = ("fp16", *QUANTIZE_MODES)
#: how an ONNX file is made: from the graph IR (default), or through TensorFlow and tf2onnx
ONNX_PATHS = ("ir", "tf2onnx")
#: float32 weights above this many bytes are written as ONNX external data by default
#: (protobuf cannot serialize a message of 2 GiB or more; the margin is for the graph)
EXTERNAL_DATA_ABOVE = 2**31 - 2**26
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 13, 18
#: max |difference| allowed, by the compute dtype of the exported model
TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
#: the format a path's suffix asks for (`format_for`); any other suffix needs an explicit format
SUFFIX_FORMATS = {s: t.name for t in TARGETS.values() for s in t.suffixes}
#: a variant (float16, int8) fails its check when its top-1 agrees with the float32 model's on
#: fewer than this share of the check images (real data only: see `export`)
MIN_AGREEMENT = {"fp16": 0.99, "int8": 0.95, "int8_dynamic": 0.95}
#: at most this many images of the check data are run (evenly spaced over its test split)
CHECK_IMAGES = 256


@dataclass(frozen=True)
class ExportOptions:
    """Every option of an export, with its default (the keyword arguments of `export`).

    Attributes:
        format: a `targets.FORMATS` name; None (default): from the suffix of the path
            (`format_for`, the rule the command line uses too).
        opset: ONNX opset (13-18).
        check: run the result next to the Keras model and fail (nothing written) when it
            differs: float32 formats beyond the tolerance; fp16 beyond float16's tolerance or,
            on real images, below `min_agreement` top-1 agreement; int8 below it.
        force: replace an existing path.
        fp16: float16 weights (ONNX: and compute, inputs and outputs float32, batch norms
            folded into their convolutions, nodes that overflow float16 kept float32;
            LiteRT: float16 weights, dequantized at load).
        quantize: ``"int8"`` (static, calibrated on `calibration`, else on check-data images
            not checked, else on generated images: ONNX Runtime's QDQ, LiteRT's full-integer
            kernels) or ``"int8_dynamic"`` (weights only). Its check needs real images:
            `check_data`, a run directory's data, or (static) the calibration images.
        int8_io: LiteRT static int8: int8 input and output tensors too (their scale and
            zero point in the file); default float32 in and out.
        calibration: static int8's images: a `.npy` file or array (N, H, W, C), or a
            directory of images (decoded as RGB 0-255, resized to the input size).
        overrides: `--set` style overrides, when the source is a spec.
        progress: called with a short message at each step (and every 15 s of a long one).
        samples: random inputs for the check without check data (variants use at least 16).
        seed: seeds the random weights (of a spec) and the random inputs.
        via: how ONNX is made: ``"ir"`` (default: emitted from the graph IR and the weights)
            or ``"tf2onnx"`` (traced by TensorFlow, converted by tf2onnx; the cross-check).
        external_data: ONNX weights in ``<path>.data`` beside the file: True, False, or None
            (default: above `EXTERNAL_DATA_ABOVE`, protobuf's 2 GiB limit less a margin).
        check_data: real images for the check (`checkdata.load`): an ``.npz`` (x_train,
            y_train[, x_test, y_test]), a CIFAR directory, a folder of class sub-folders, a
            flat folder of images, or an array (N, H, W, C); at most `CHECK_IMAGES` of its
            test split. Default: a run directory's data, else random inputs.
        min_agreement: the top-1 agreement a variant needs on real images (default
            `MIN_AGREEMENT` of the variant).
        bake_preprocessing: put the spec's `input.preprocess` in front of the network as
            fixed layers (`bake`), so the artefact takes RGB images 0..255, recorded in the
            metadata's ``archspec.preprocessing``.
        weights: with a spec, a weights file loaded by the one strict loader
            (`archspec.backends.keras.weights`), ``imagenet``, or a URL.
        weights_skip: fnmatch globs of layers left at their initial weights (reported).
        phi, preset: a spec compound-scaled first, as `archspec build` scales it (the paper's
            formula by phi, or a row of the spec's official table such as ``b3``).
    """

    format: str | None = None
    opset: int = DEFAULT_OPSET
    check: bool = True
    force: bool = False
    fp16: bool = False
    quantize: str | None = None
    int8_io: bool = False
    calibration: Any = None
    overrides: list[str] | None = None
    progress: Callable[[str], None] | None = None
    samples: int = 3
    seed: int = 0
    via: str = "ir"
    external_data: bool | None = None
    check_data: Any = None
    min_agreement: float | None = None
    bake_preprocessing: bool = False
    weights: Any = None
    weights_skip: tuple = ()
    phi: float | None = None
    preset: str | None = None

    @classmethod
    def of(cls, format: str | None, kwargs: dict) -> "ExportOptions":
        """The options of ``export(..., format, **kwargs)``; an unknown keyword is a SpecError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise SpecError(f"unknown export option {unknown[0]!r}; valid: {', '.join(sorted(known))}")
        return cls(format=format, **kwargs)

    @property
    def variant(self) -> str | None:
        return "fp16" if self.fp16 else self.quantize

    def say(self, msg: str) -> None:
        if self.progress is not None:
            self.progress(msg)


def from_command_line(args: dict) -> dict:
    """The `ExportOptions` keywords of `archspec export`'s parsed arguments (`vars(args)`):
    each option named as its field, ``--no-check`` as ``check``, ``--set`` as ``overrides``,
    ``--quantize int8-dynamic`` as ``int8_dynamic``."""
    names = {f.name for f in fields(ExportOptions)} - {"progress"}
    o = {k: v for k, v in args.items() if k in names}
    o.update(check=not args["no_check"], overrides=args["set"] or None,
             quantize=args["quantize"] and args["quantize"].replace("-", "_"),
             external_data=True if args["external_data"] else None)
    return o


def format_for(path, format=None) -> str:
    """The export format: `format` when given, else the one the suffix of `path` names
    (``.onnx``, ``.keras``, ``.tflite``). An unknown suffix without a format, or a format that
    contradicts the suffix (ONNX bytes in ``x.keras``), is a SpecError. The one rule, for the
    library and the command line alike."""
    suffix = Path(os.fspath(path)).suffix.lower()
    implied = SUFFIX_FORMATS.get(suffix)
    if format is None:
        if implied is None:
            raise SpecError(f"cannot tell the export format from the path {os.fspath(path)!r} (suffix "
                            f"{suffix or 'none'!r}); name a {', '.join(list(SUFFIX_FORMATS)[:-1])} or {list(SUFFIX_FORMATS)[-1]} "
                            f"file, or pass --format "
                            f"(format=) {'|'.join(FORMATS)}")
        return implied
    if format not in FORMATS:
        raise SpecError(f"unknown export format {format!r}; valid formats: {', '.join(FORMATS)}")
    if implied is not None and implied != format:
        raise SpecError(f"the path {os.fspath(path)!r} ends in {suffix} but the format is {format!r}; "
                        f"name the file for its format (or leave the format out: it follows the suffix)")
    return format


def check_options(path, o: ExportOptions, model_or_spec) -> Path:
    """Check every option of `o` (its format already from `format_for`) against its target's
    row; returns the target path."""
    format, variant = o.format, o.variant
    t = TARGETS[format]
    if o.min_agreement is not None and (isinstance(o.min_agreement, bool)
                                        or not isinstance(o.min_agreement, (int, float))
                                        or not 0.0 <= o.min_agreement <= 1.0):
        raise SpecError(f"min_agreement must be a number from 0 to 1 (got {o.min_agreement!r})")
    if o.min_agreement is not None and not variant:
        raise SpecError("min_agreement (--min-agreement) applies to the fp16 and int8 variants")
    if o.via not in ONNX_PATHS:
        raise SpecError(f"unknown ONNX path via={o.via!r}; valid: {', '.join(ONNX_PATHS)}")
    if o.external_data not in (None, True, False):
        raise SpecError(f"external_data must be True, False or None (got {o.external_data!r})")
    if o.external_data and format != "onnx":
        raise SpecError(f"external data applies to ONNX exports (got format {format!r})")
    if not isinstance(o.opset, int) or isinstance(o.opset, bool) or not MIN_OPSET <= o.opset <= MAX_OPSET:
        raise SpecError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET} (got {o.opset!r})")
    if o.fp16 and o.quantize:
        raise SpecError("choose one of fp16 and quantize")
    if o.quantize is not None and o.quantize not in QUANTIZE_MODES:
        raise SpecError(f"unknown quantization {o.quantize!r}; valid: {', '.join(QUANTIZE_MODES)}")
    if variant and variant not in t.variants:
        has = [f for f, r in TARGETS.items() if variant in r.variants]
        raise SpecError(f"--fp16 and --quantize apply to {' and '.join(has)} exports (got format {format!r})")
    if o.int8_io and not (format == "tflite" and o.quantize == "int8"):
        raise SpecError("--int8-io (int8_io) applies to a tflite export with --quantize int8")
    if o.calibration is not None and o.quantize != "int8":
        raise SpecError("calibration data is used by static quantization only (quantize='int8')")
    if not isinstance(o.samples, int) or isinstance(o.samples, bool) or o.samples < 1:
        raise SpecError(f"samples must be a positive integer (got {o.samples!r})")
    if not isinstance(o.bake_preprocessing, bool):
        raise SpecError(f"bake_preprocessing must be True or False (got {o.bake_preprocessing!r})")
    for what, given in (("overrides (--set)", o.overrides), ("phi and preset (--phi, --preset)",
                                                              o.phi is not None or o.preset is not None)):
        if given and not _is_spec(model_or_spec) and not (
                isinstance(model_or_spec, (str, os.PathLike)) and not _is_model_file(model_or_spec)):
            raise SpecError(f"{what} apply to a spec, not to a built model")
    if o.phi is not None and o.preset is not None:
        raise SpecError("choose one of phi and preset")
    target = Path(os.fspath(path))
    if not target.name:
        raise SpecError(f"export path must name a file or directory (got {os.fspath(path)!r})")
    if format == "keras" and target.suffix != ".keras":  # keras' own save refuses any other name
        raise SpecError(f"a .keras export needs a path ending in .keras (got {target})")
    # the one writer's rules (archspec.core.atomic): parent must exist, no replacing without force,
    # bad paths one line (exit 2); a symbolic link is written through
    return check_output(target, o.force, directory=t.directory)


def _is_model_file(obj) -> bool:
    """A `.keras` file or a run directory: a built model, which --set and scaling cannot change."""
    p = Path(os.fspath(obj))
    return p.suffix == ".keras" or (p.is_dir() and (p / "run.json").is_file())


def _is_spec(obj) -> bool:
    from ..language import Spec

    return isinstance(obj, Spec)
