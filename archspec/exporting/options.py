"""What `export` accepts: formats, opsets, variants, tolerances, and the checks on them
(bad options are a SpecError, exit 2, before anything is built or written)."""

from __future__ import annotations

import os
from pathlib import Path

from ..core.atomic import check_output
from ..core.errors import SpecError

FORMATS = ("onnx", "saved_model", "keras")
#: the layer dtype policies a model is built with (the classifier and its softmax stay float32)
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
QUANTIZE_MODES = ("int8", "int8_dynamic")
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
SUFFIX_FORMATS = {".onnx": "onnx", ".keras": "keras"}
#: a variant (float16, int8) fails its check when its top-1 agrees with the float32 model's on
#: fewer than this share of the check images (real data only: see `export`)
MIN_AGREEMENT = {"fp16": 0.99, "int8": 0.95, "int8_dynamic": 0.95}
#: at most this many images of the check data are run (evenly spaced over its test split)
CHECK_IMAGES = 256


def format_for(path, format=None) -> str:
    """The export format: `format` when given, else the one the suffix of `path` names
    (``.onnx``, ``.keras``). An unknown suffix without a format, or a format that contradicts
    the suffix (ONNX bytes in ``x.keras``), is a SpecError. The one rule, for the library
    and the command line alike."""
    suffix = Path(os.fspath(path)).suffix.lower()
    implied = SUFFIX_FORMATS.get(suffix)
    if format is None:
        if implied is None:
            raise SpecError(f"cannot tell the export format from the path {os.fspath(path)!r} (suffix "
                            f"{suffix or 'none'!r}); name a .onnx or .keras file, or pass --format "
                            f"(format=) {'|'.join(FORMATS)}")
        return implied
    if format not in FORMATS:
        raise SpecError(f"unknown export format {format!r}; valid formats: {', '.join(FORMATS)}")
    if implied is not None and implied != format:
        raise SpecError(f"the path {os.fspath(path)!r} ends in {suffix} but the format is {format!r}; "
                        f"name the file for its format (or leave the format out: it follows the suffix)")
    return format


def check_options(path, format, opset, force, fp16, quantize, calibration, overrides, samples,
                  model_or_spec, via="ir", external_data=None, min_agreement=None) -> Path:
    """Check every option (`format` already from `format_for`); returns the target path."""
    if format not in FORMATS:
        raise SpecError(f"unknown export format {format!r}; valid formats: {', '.join(FORMATS)}")
    if min_agreement is not None and (isinstance(min_agreement, bool) or not isinstance(min_agreement, (int, float))
                                      or not 0.0 <= min_agreement <= 1.0):
        raise SpecError(f"min_agreement must be a number from 0 to 1 (got {min_agreement!r})")
    if min_agreement is not None and not (fp16 or quantize):
        raise SpecError("min_agreement (--min-agreement) applies to the fp16 and int8 variants")
    if via not in ONNX_PATHS:
        raise SpecError(f"unknown ONNX path via={via!r}; valid: {', '.join(ONNX_PATHS)}")
    if external_data not in (None, True, False):
        raise SpecError(f"external_data must be True, False or None (got {external_data!r})")
    if external_data and format != "onnx":
        raise SpecError(f"external data applies to ONNX exports (got format {format!r})")
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise SpecError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET} (got {opset!r})")
    if (fp16 or quantize) and format != "onnx":
        raise SpecError(f"--fp16 and --quantize apply to ONNX exports (got format {format!r})")
    if fp16 and quantize:
        raise SpecError("choose one of fp16 and quantize")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise SpecError(f"unknown quantization {quantize!r}; valid: {', '.join(QUANTIZE_MODES)}")
    if calibration is not None and quantize != "int8":
        raise SpecError("calibration data is used by static quantization only (quantize='int8')")
    if not isinstance(samples, int) or samples < 1:
        raise SpecError(f"samples must be a positive integer (got {samples!r})")
    if overrides and not isinstance(model_or_spec, (str, os.PathLike)) and not _is_spec(model_or_spec):
        raise SpecError("overrides (--set) apply to a spec, not to a built model")
    target = Path(os.fspath(path))
    if not target.name:
        raise SpecError(f"export path must name a file or directory (got {os.fspath(path)!r})")
    if format == "keras" and target.suffix != ".keras":
        raise SpecError(f"a .keras export needs a path ending in .keras (got {target})")
    # the one writer's rules (archspec.core.atomic): parent must exist, no replacing without force,
    # bad paths one line (exit 2); a symbolic link is written through
    return check_output(target, force, directory=format == "saved_model")


def _is_spec(obj) -> bool:
    from ..language import Spec

    return isinstance(obj, Spec)
