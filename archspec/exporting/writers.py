"""Writing each format to its staging path (checked and renamed into place by `export`)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..core import atomic
from ..backends.onnx import passes as onnx_passes, variants
from ..core.progress import Heartbeat
from ..backends.keras import keras, tensorflow
from ..backends.keras.files import METADATA_FILE, metadata_doc


def write_onnx(model, tmp: Path, opset, input_name, input_shape, output_names, metadata, fp16, quantize,
               calibration, seed, say, timings, report, via: str = "ir", graph=None, external: bool = False,
               probe=None, calib_fallback=None):
    """Convert (`via` "ir": from the graph IR, `via_ir`; "tf2onnx": `via_tf2onnx`), finish,
    check and write to `tmp`, with the variant if one is asked for. With `external`, the
    weights go to the external data file ``<tmp's name>.data`` beside `tmp`. The IR path
    writes the weights to the file as it emits them (`via_ir.StreamedData`, or
    `ExternalData`), so its conversion time includes the write. float16: batch norms folded
    into their convolutions first (IR path), and the nodes that overflow float16 on the
    check inputs `probe` kept float32 (`variants.float32_nodes`). int8 static without
    `calibration`: calibrated on `calib_fallback` ((images, rule, where from): images of the
    check data set apart from the checked ones) when given."""
    import onnx

    from ..backends.onnx import via_ir

    data_name = via_ir.external_data_name(tmp)
    t0 = time.perf_counter()
    streamed = via == "ir" and not (fp16 or quantize)
    if via == "ir":
        sink = None
        if streamed:
            sink = via_ir.ExternalData(tmp.with_name(data_name), data_name) if external else via_ir.StreamedData(tmp)
        try:
            proto = via_ir.convert(model, opset, input_name, output_names, graph, sink, say, fold_bn=bool(fp16 or quantize))
            proto = onnx_passes.finish(proto, input_name, output_names, metadata)
            if isinstance(sink, via_ir.ExternalData):
                sink.finish(proto, tmp)
            elif sink is not None:
                sink.finish(proto)
        finally:
            if sink is not None:
                sink.close()
    else:
        from ..backends.onnx import via_tf2onnx

        proto = via_tf2onnx.convert(model, opset, input_name, input_shape, say)
        proto = onnx_passes.finish(proto, input_name, output_names, metadata)
    timings["convert"] = time.perf_counter() - t0
    if fp16:
        report["float32_bytes"] = proto.ByteSize()
        say("checking with onnx.checker…")
        onnx.checker.check_model(proto)
        t0 = time.perf_counter()
        say("finding the nodes that overflow float16…")
        keep = variants.float32_nodes(proto, probe, input_name)
        report["float32_nodes"] = keep
        say(f"converting weights and compute to float16 ({len(keep)} nodes kept float32)…")
        proto = variants.to_fp16(proto, keep)
        onnx.checker.check_model(proto)
        timings["fp16"] = time.perf_counter() - t0
        _save(proto, tmp, data_name if external else None)
    elif quantize:
        report["float32_bytes"] = proto.ByteSize()
        say("checking with onnx.checker…")
        onnx.checker.check_model(proto)
        t0 = time.perf_counter()
        f32 = side_file(tmp, "f32")
        onnx.save(proto, str(f32))
        data, what, rule = calibration_images(quantize, calibration, model, seed, calib_fallback)
        variants.quantize(f32, tmp, quantize, data, what, input_name, say, report)
        if rule and "calibration" in report:  # how the images were set apart from the checked ones
            report["calibration"]["split"] = rule
        q = onnx.load(str(tmp))
        onnx.checker.check_model(q)
        if not q.metadata_props:
            onnx.save(onnx_passes.set_metadata(q, metadata), str(tmp))
        timings["quantize"] = time.perf_counter() - t0
    elif streamed:  # written already, the weights with it
        say("checking with onnx.checker…")
        onnx.checker.check_model(str(tmp))
    else:
        if not external:
            say("checking with onnx.checker…")
            onnx.checker.check_model(proto)
        _save(proto, tmp, data_name if external else None)
        if external:
            say("checking with onnx.checker…")
            onnx.checker.check_model(str(tmp))
    if external:
        report["external_data"] = str(Path(report["path"]).with_name(data_name))


def _save(proto, tmp: Path, data_name: str | None) -> None:
    import onnx

    if data_name is None:
        onnx.save(proto, str(tmp))
    else:
        onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)


def write_saved_model(model, tmp: Path, input_name, input_shape, output_names, metadata, say, timings):
    k = keras()
    tf = tensorflow()

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


def side_file(tmp: Path, what: str) -> Path:
    """A scratch file beside the staging file (removed by `remove_side_files`; a killed
    process's are removed by `atomic.remove_stale`, which knows them by the staging name)."""
    return tmp.with_name(f"{tmp.name}.{what}.onnx")


def remove_side_files(tmp: Path) -> None:
    for f in tmp.parent.glob(f"{tmp.name}.*.onnx"):
        atomic.remove(f)
    # onnxruntime's calibrator writes augmented models next to the source
    for f in tmp.parent.glob(f"{tmp.name}*augmented*"):
        atomic.remove(f)


def calibration_images(mode, calibration, model, seed, fallback):
    """(images, where they came from, how they were set apart from the check's or None) for
    static int8: the user's `calibration`, else `fallback` ((images, rule, where from): images
    of the check data, or of a run's data, that the check does not use), else generated random
    images, only when there is no real image at all (an unchecked export of a spec or a
    plain .keras file)."""
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
