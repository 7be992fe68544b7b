"""Smaller ONNX variants: float16 weights and compute (onnxruntime's converter), and int8
quantization (onnxruntime's static QDQ with calibration, or dynamic weights-only)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SpecError
from . import onnx_passes
from .progress import Heartbeat, short
from .source import random_inputs


def to_fp16(proto):
    """float16 weights and compute; inputs and outputs stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    meta = {p.key: p.value for p in proto.metadata_props}
    out = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    out = onnx_passes.toposort(out)  # the converter appends its input casts at the end
    return onnx_passes.set_metadata(out, {**meta, "archspec.variant": "fp16"})


def quantize(src: Path, dst: Path, mode, calibration, model, seed, input_name, say, report):
    """Quantize the float32 ONNX file `src` into `dst` (`mode` is int8 or int8_dynamic)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    if mode == "int8_dynamic":
        say("quantizing weights to int8 (dynamic)…")
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
        return
    data = calibration_data(calibration, model, seed)
    report["calibration"] = {"images": int(len(data)), "source": "generated" if calibration is None else
                             (os.fspath(calibration) if isinstance(calibration, (str, os.PathLike)) else "array")}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{input_name: data[i:i + 1]} for i in range(len(data))])

        def get_next(self):
            return next(self._it, None)

    with Heartbeat(say, f"quantizing to int8 (static, {len(data)} calibration images)…"):
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def calibration_data(calibration, model, seed, n: int = 16):
    """None (generated random images), a `.npy` file or array (N, H, W, C), or a directory
    of images (decoded as RGB 0-255 and resized to the input size)."""
    import numpy as np

    shape = tuple(model.inputs[0].shape[1:])
    if calibration is None:
        return random_inputs(model, n, seed + 99)
    if isinstance(calibration, np.ndarray):
        arr = calibration
    else:
        p = Path(os.fspath(calibration))
        if p.is_dir():
            arr = _load_images(p, shape)
        elif p.suffix == ".npy" and p.is_file():
            arr = np.load(p, allow_pickle=False)
        else:
            raise SpecError(f"{p}: calibration data must be a .npy file or a directory of images")
    arr = np.asarray(arr, dtype="float32")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != shape or len(arr) == 0:
        raise SpecError(f"calibration data must have shape (N, {', '.join(map(str, shape))}) "
                        f"(got {tuple(arr.shape)})")
    return arr


def _load_images(d: Path, shape):
    import numpy as np
    import tensorflow as tf

    files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".gif"))
    if not files:
        raise SpecError(f"{d}: no images (.jpg, .png, .bmp, .gif) for calibration")
    out = []
    for f in files:
        try:
            img = tf.io.decode_image(tf.io.read_file(str(f)), channels=shape[-1], expand_animations=False)
        except Exception as exc:
            raise SpecError(f"{f}: cannot decode image ({short(exc)})") from None
        out.append(tf.image.resize(tf.cast(img, tf.float32), shape[:2]).numpy())
    return np.stack(out)
