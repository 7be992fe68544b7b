"""The ``onnx`` target: ONNX emitted from the graph IR (`archspec.backends.onnx.via_ir`,
the default) or through TensorFlow and tf2onnx (`via_tf2onnx`, the cross-check), finished by
the named passes (`archspec.backends.onnx.passes`), as float32, float16 or int8
(`archspec.backends.onnx.variants`); run back with ONNX Runtime."""

from __future__ import annotations

import time
from pathlib import Path

from ..backends.onnx import passes as onnx_passes, variants
from .source import GraphModel
from .writers import calibration_images, side_file


def prepare(job) -> None:
    """The ONNX options in the report, and whether the weights go to an external data file
    (asked for, or above `options.EXTERNAL_DATA_ABOVE`), checked like the target path."""
    from ..backends.onnx.via_ir import estimated_bytes, external_data_name
    from ..core import atomic
    from ..core.errors import SpecError
    from .options import EXTERNAL_DATA_ABOVE

    o = job.opts
    job.report.update(opset=o.opset, via=o.via, external_data=None)
    job.external = bool(o.external_data) if o.external_data is not None else (
        estimated_bytes(job.model) > EXTERNAL_DATA_ABOVE)
    if job.external:
        job.data_target = atomic.check_output(job.path.with_name(external_data_name(job.path)), o.force)
        if o.quantize:
            raise SpecError("int8 quantization of a model with external data is not supported")


def write(job, tmp: Path) -> None:
    """Convert, finish, check and write to `tmp`, with the variant if one is asked for. With
    external data, the weights go to ``<tmp's name>.data`` beside `tmp`. The IR path writes
    the weights to the file as it emits them (`via_ir.StreamedData`, or `ExternalData`), so
    its conversion time includes the write. float16: batch norms folded into their
    convolutions first (IR path), and the nodes that overflow float16 on the check inputs
    kept float32 (`variants.float32_nodes`). int8 static without calibration images:
    calibrated on images of the check data set apart from the checked ones."""
    import onnx

    from ..backends.onnx import via_ir

    o, report, say = job.opts, job.report, job.say
    external = job.external
    data_name = via_ir.external_data_name(tmp)
    t0 = time.perf_counter()
    streamed = o.via == "ir" and not job.variant
    if o.via == "ir":
        sink = None
        if streamed:
            sink = via_ir.ExternalData(tmp.with_name(data_name), data_name) if external else via_ir.StreamedData(tmp)
        try:
            weights = job.model.weights_provider() if isinstance(job.model, GraphModel) else job.model
            proto = via_ir.convert(weights, o.opset, job.input_name, job.output_names, job.graph, sink, say,
                                   fold_bn=bool(job.variant))
            proto = onnx_passes.finish(proto, job.input_name, job.output_names, job.metadata)
            if isinstance(sink, via_ir.ExternalData):
                sink.finish(proto, tmp)
            elif sink is not None:
                sink.finish(proto)
        finally:
            if sink is not None:
                sink.close()
    else:
        from ..backends.onnx import via_tf2onnx

        proto = via_tf2onnx.convert(job.model, o.opset, job.input_name, job.input_shape, say)
        proto = onnx_passes.finish(proto, job.input_name, job.output_names, job.metadata)
    job.timings["convert"] = time.perf_counter() - t0
    if o.fp16:
        report["float32_bytes"] = proto.ByteSize()
        say("checking with onnx.checker…")
        onnx.checker.check_model(proto)
        t0 = time.perf_counter()
        say("finding the nodes that overflow float16…")
        keep = variants.float32_nodes(proto, job.x, job.input_name)
        report["float32_nodes"] = keep
        say(f"converting weights and compute to float16 ({len(keep)} nodes kept float32)…")
        proto = variants.to_fp16(proto, keep)
        onnx.checker.check_model(proto)
        job.timings["fp16"] = time.perf_counter() - t0
        _save(proto, tmp, data_name if external else None)
    elif o.quantize:
        report["float32_bytes"] = proto.ByteSize()
        say("checking with onnx.checker…")
        onnx.checker.check_model(proto)
        t0 = time.perf_counter()
        f32 = side_file(tmp, "f32")
        onnx.save(proto, str(f32))
        data, what, rule = calibration_images(job)
        variants.quantize(f32, tmp, o.quantize, data, what, job.input_name, say, report)
        if rule and "calibration" in report:  # how the images were set apart from the checked ones
            report["calibration"]["split"] = rule
        q = onnx.load(str(tmp))
        onnx.checker.check_model(q)
        if not q.metadata_props:
            onnx.save(onnx_passes.set_metadata(q, job.metadata), str(tmp))
        job.timings["quantize"] = time.perf_counter() - t0
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


def session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run(path: Path, x, input_name, output_names) -> list:
    from .verify import BATCH, joined

    sess = session(path)  # one session for every batch
    return joined(sess.run(output_names, {input_name: x[i:i + BATCH]}) for i in range(0, len(x), BATCH))
