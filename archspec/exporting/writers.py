"""Writing each format to its staging path (checked and renamed into place by `export`)."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

from . import files, onnx_passes, variants
from .options import METADATA_FILE
from .progress import Heartbeat
from .source import keras, metadata_doc


def write_onnx(model, tmp: Path, opset, input_name, input_shape, output_names, metadata, fp16, quantize,
               calibration, seed, say, timings, report):
    import onnx

    from . import via_tf2onnx

    t0 = time.perf_counter()
    proto = via_tf2onnx.convert(model, opset, input_name, input_shape, say)
    proto = onnx_passes.finish(proto, input_name, output_names, metadata)
    timings["convert"] = time.perf_counter() - t0
    say("checking with onnx.checker…")
    onnx.checker.check_model(proto)
    if fp16:
        report["float32_bytes"] = proto.ByteSize()
        t0 = time.perf_counter()
        say("converting weights and compute to float16…")
        proto = variants.to_fp16(proto)
        onnx.checker.check_model(proto)
        timings["fp16"] = time.perf_counter() - t0
        onnx.save(proto, str(tmp))
    elif quantize:
        report["float32_bytes"] = proto.ByteSize()
        t0 = time.perf_counter()
        f32 = files.side_file(tmp, "f32")
        onnx.save(proto, str(f32))
        variants.quantize(f32, tmp, quantize, calibration, model, seed, input_name, say, report)
        q = onnx.load(str(tmp))
        onnx.checker.check_model(q)
        if not q.metadata_props:
            onnx.save(onnx_passes.set_metadata(q, metadata), str(tmp))
        timings["quantize"] = time.perf_counter() - t0
    else:
        onnx.save(proto, str(tmp))


def write_saved_model(model, tmp: Path, input_name, input_shape, output_names, metadata, say, timings):
    k = keras()
    import tensorflow as tf

    t0 = time.perf_counter()
    archive = k.export.ExportArchive()
    archive.track(model)

    def serve(x):
        outs = model(x, training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return {name: out for name, out in zip(output_names, outs)}

    with Heartbeat(say, "writing the SavedModel (serving_default signature)…"):
        archive.add_endpoint("serving_default", serve,
                             input_signature=[tf.TensorSpec((None, *input_shape), tf.float32, name=input_name)])
        archive.write_out(str(tmp), verbose=False)
    extra = tmp / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / METADATA_FILE).write_text(json.dumps(metadata_doc(metadata), indent=2))
    timings["convert"] = time.perf_counter() - t0


def write_keras(model, tmp: Path, metadata, say, timings):
    t0 = time.perf_counter()
    say("saving the .keras file…")
    model.save(str(tmp))
    with zipfile.ZipFile(tmp, "a") as z:
        z.writestr(METADATA_FILE, json.dumps(metadata_doc(metadata), indent=2))
    timings["convert"] = time.perf_counter() - t0
