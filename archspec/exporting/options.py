"""What `export` accepts: formats, opsets, variants, tolerances, and the checks on them
(bad options are a SpecError, exit 2, before anything is built or written)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SpecError

FORMATS = ("onnx", "saved_model", "keras")
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
#: the name of the metadata document inside `.keras` files and SavedModel assets
METADATA_FILE = "archspec.json"


def check_options(path, format, opset, force, fp16, quantize, calibration, overrides, samples,
                  model_or_spec, via="ir", external_data=None) -> Path:
    """Check every option; returns the target path."""
    if format not in FORMATS:
        raise SpecError(f"unknown export format {format!r}; valid formats: {', '.join(FORMATS)}")
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
    if not target.parent.is_dir():
        raise SpecError(f"{target.parent}: no such directory")
    if (target.exists() or target.is_symlink()) and not force:
        raise SpecError(f"{target} exists; pass --force (force=True) to replace it")
    return target


def _is_spec(obj) -> bool:
    from ..spec import Spec

    return isinstance(obj, Spec)
