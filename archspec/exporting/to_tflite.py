"""The ``tflite`` target: a LiteRT (TFLite) flatbuffer, made by the supported path: the
model's SavedModel (the ``saved_model`` target's, written to a scratch directory beside the
staging file) converted by ``tf.lite.TFLiteConverter.from_saved_model``, with archspec's
metadata in the flatbuffer's ``metadata`` table under ``archspec`` (JSON, as in the other
formats). Variants, as for ONNX:

- ``fp16``: float16 weights (the converter's float16 quantization; the interpreter computes
  in float32), judged by float16's tolerance and, on real images, top-1 agreement;
- ``int8``: full-integer quantization (every op an int8 kernel, ``TFLITE_BUILTINS_INT8``),
  its ranges calibrated on representative images that the check never uses (the user's
  ``--calibration``, else the check data's own training split); float32 input and output
  unless ``int8_io`` (then int8 tensors, with their scale and zero point in the file);
- ``int8_dynamic``: int8 weights, activations quantized at run time (dynamic range).

Run back by the LiteRT interpreter (``ai_edge_litert``, from PyPI), or TensorFlow's own
``tf.lite.Interpreter`` where that is not installed, through the ``serving_default``
signature, so the input and outputs keep the Keras names.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from ..core.errors import ArchspecError
from ..core.progress import Heartbeat
from ..core.quiet import native_stderr_filtered
from .writers import calibration_images

#: the flatbuffer's metadata entry that holds archspec's metadata (JSON)
METADATA_NAME = "archspec"
SIGNATURE = "serving_default"


def write(job, tmp: Path) -> None:
    from ..backends.keras import tensorflow
    from ..backends.keras.files import metadata_doc
    from . import to_savedmodel

    tf = tensorflow()
    o, say = job.opts, job.say
    t0 = time.perf_counter()
    saved = tmp.with_name(f"{tmp.name}.tflite.savedmodel")  # removed with the side files
    to_savedmodel.save(job.model, saved, job.input_name, job.input_shape, job.output_names, say)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if o.fp16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif o.quantize:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if o.quantize == "int8":
        images, what, rule = calibration_images(job)
        job.report["calibration"] = {"images": int(len(images)), "source": what}
        if rule:
            job.report["calibration"]["split"] = rule

        def representative():
            for i in range(len(images)):
                yield [np.asarray(images[i:i + 1], np.float32)]

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if o.int8_io:
            converter.inference_input_type = converter.inference_output_type = tf.int8
    with Heartbeat(say, f"converting to LiteRT{' ' + job.variant if job.variant else ''}…"), \
            native_stderr_filtered():  # the converter's own notices
        flat = converter.convert()
    job.timings["convert"] = time.perf_counter() - t0
    if o.int8_io:  # the file's input is int8: its metadata says so, with the scale and zero point
        detail = _interpreter(model_content=flat).get_signature_runner(SIGNATURE).get_input_details()[job.input_name]
        scale, zero = detail["quantization"]
        spec = dict(json.loads(job.metadata["archspec.input"]), dtype="int8",
                    quantization={"scale": float(scale), "zero_point": int(zero)})
        job.metadata["archspec.input"] = json.dumps(spec)
    flat = with_metadata(flat, json.dumps(metadata_doc(job.metadata), sort_keys=True))
    tmp.write_bytes(flat)
    job.report["runtime"] = runtime_name()


def with_metadata(flat: bytes, text: str) -> bytes:
    """`flat` with `text` in its metadata table under `METADATA_NAME` (one new buffer)."""
    import flatbuffers

    schema = _schema()
    m = schema.ModelT.InitFromPackedBuf(bytearray(flat), 0)
    buf = schema.BufferT()
    buf.data = np.frombuffer(text.encode(), np.uint8)
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(m.buffers) - 1
    m.metadata = [e for e in (m.metadata or []) if e.name not in (METADATA_NAME, METADATA_NAME.encode())] + [entry]
    b = flatbuffers.Builder(len(flat) + len(text) + 1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def metadata_of(flat: bytes) -> dict | None:
    """archspec's metadata written in a LiteRT file (`with_metadata`), or None."""
    schema = _schema()
    m = schema.Model.GetRootAsModel(flat, 0)
    for i in range(m.MetadataLength()):
        e = m.Metadata(i)
        if e.Name() == METADATA_NAME.encode():
            return json.loads(bytes(m.Buffers(e.Buffer()).DataAsNumpy()).decode())
    return None


def _schema():
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:  # pragma: no cover - TensorFlow's own copy
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


def _interpreter(**kw):
    """The LiteRT interpreter (ai_edge_litert; tf.lite.Interpreter as a fallback) of `kw`:
    ``model_path=`` or ``model_content=``."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the fallback the issue allows
        from ..backends.keras import tensorflow

        Interpreter = tensorflow().lite.Interpreter
    with native_stderr_filtered():  # "Created TensorFlow Lite XNNPACK delegate for CPU."
        return Interpreter(**kw)


def runtime_name() -> str:
    import importlib.util

    return "ai_edge_litert" if importlib.util.find_spec("ai_edge_litert") else "tf.lite.Interpreter"


def run(path: Path, x, input_name, output_names) -> list:
    """The outputs on `x` through the file's signature: float32 in and out (an int8 input is
    quantized by its scale and zero point, an int8 output dequantized)."""
    from .verify import BATCH, joined

    runner = _interpreter(model_path=str(path)).get_signature_runner(SIGNATURE)
    ins, outs = runner.get_input_details(), runner.get_output_details()
    if input_name not in ins or any(n not in outs for n in output_names):
        raise ArchspecError(f"the LiteRT signature takes {sorted(ins)} and returns {sorted(outs)}, not "
                            f"{input_name!r} -> {list(output_names)}")

    def one(xb):
        got = runner(**{input_name: quantized(xb, ins[input_name])})
        return [dequantized(got[n], outs[n]) for n in output_names]

    with native_stderr_filtered():  # the delegate's notice comes with the first run
        return joined(one(x[i:i + BATCH]) for i in range(0, len(x), BATCH))


def quantized(x, detail) -> np.ndarray:
    """`x` as the input tensor takes it: float32 as it is, int8/uint8 by its scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.asarray(x, dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(np.asarray(x, np.float32) / scale + zero), info.min, info.max).astype(dtype)


def dequantized(y, detail) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return np.asarray(y, np.float32)
    scale, zero = detail["quantization"]
    return ((np.asarray(y, np.float32) - zero) * scale).astype(np.float32)
