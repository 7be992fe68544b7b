"""Smaller ONNX variants: float16 weights and compute (onnxruntime's converter), and int8
quantization (onnxruntime's static QDQ with calibration, or dynamic weights-only).

float16 holds values up to 65,504 only, and onnxruntime's converter clamps larger
initializers to that bound. So before the cast: batch norms are folded into their
convolutions (`via_ir.fold_batch_norm`, on the IR path), and the nodes that would overflow
stay float32 (`float32_nodes`): those with an initializer above float16's range (a batch
norm's moving variance of a first layer fed 0-255 pixels: 2.9e6 in a trained ResNet-18), and
those whose output, run in float32 on the check inputs, comes within a factor
`FP16_HEADROOM` of it.
"""

from __future__ import annotations

from pathlib import Path

from . import passes as onnx_passes
from ...core.progress import Heartbeat


FP16_MAX = 65504.0
#: a node stays float32 when its float32 output on the check inputs exceeds FP16_MAX / this
#: (inputs the check did not see may go further)
FP16_HEADROOM = 8.0
#: the float32 run that finds overflowing outputs sees at most this many check inputs
PROBE_IMAGES = 32


def float32_nodes(proto, x=None, input_name: str | None = None) -> dict[str, str]:
    """{node name: why} of the nodes of the float32 model `proto` that must stay float32 in
    the float16 variant: a float initializer input beyond float16's range, or (with inputs
    `x`) a float output above FP16_MAX / FP16_HEADROOM when run on them."""
    import numpy as np
    from onnx import numpy_helper

    big = {}
    for t in proto.graph.initializer:
        if t.data_type in (1, 11):  # FLOAT, DOUBLE
            a = numpy_helper.to_array(t)
            if a.size and float(np.max(np.abs(a))) > FP16_MAX:
                big[t.name] = float(np.max(np.abs(a)))
    out = {}
    for n in proto.graph.node:
        hits = [i for i in n.input if i in big]
        if hits:
            out[n.name] = f"initializer {hits[0]} reaches {big[hits[0]]:.3g}"
    if x is not None and len(x):
        for name, peak in _output_peaks(proto, x[:PROBE_IMAGES], input_name).items():
            if peak > FP16_MAX / FP16_HEADROOM and name not in out:
                out[name] = f"output reaches {peak:.3g} on the check inputs"
    return out


def _output_peaks(proto, x, input_name) -> dict[str, float]:
    """{node name: max |float output|} of `proto` run in float32 on `x` (ONNX Runtime, every
    float intermediate made a graph output; a few images at a time)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    inferred = onnx.shape_inference.infer_shapes(probe)
    floats = {v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    have = {o.name for o in probe.graph.output}
    producer = {}
    for n in probe.graph.node:
        for o in n.output:
            if o in floats or o in have:
                producer[o] = n.name
    for name in sorted(set(producer) - have):
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # every tensor as written
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    peaks: dict[str, float] = {}
    for i in range(0, len(x), 4):
        for name, v in zip(names, sess.run(names, {input_name: x[i:i + 4]})):
            v = np.asarray(v)
            if v.dtype.kind == "f" and v.size and name in producer:
                m = float(np.max(np.abs(v)))
                node = producer[name]
                peaks[node] = max(peaks.get(node, 0.0), m if np.isfinite(m) else float("inf"))
    return peaks


def to_fp16(proto, keep_float32=()):
    """float16 weights and compute, but for the nodes named in `keep_float32`; inputs and
    outputs stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    meta = {p.key: p.value for p in proto.metadata_props}
    out = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False,
                                   node_block_list=sorted(keep_float32) or None)
    out = onnx_passes.toposort(out)  # the converter appends its input casts at the end
    return onnx_passes.set_metadata(out, {**meta, "archspec.variant": "fp16"})


#: static int8's weights use 7 bits (onnxruntime's `reduce_range`): with uint8 activations
#: (0..255) and weights in -64..64, a pair of products sums to at most 2 * 255 * 64 = 32,640,
#: which fits int16. x86 CPUs without VNNI multiply u8 * s8 with VPMADDUBSW, which adds pairs
#: of products in int16 with saturation: with full 8-bit weights (2 * 255 * 127 = 64,770) a
#: trained first conv saturated 2% of its pairs there and the file agreed 77-82% with the
#: float model where a VNNI CPU gave 99% (issue 25). onnxruntime's advice for such CPUs.
INT8_WEIGHT_BOUND = 64


def quantize(src: Path, dst: Path, mode, data, what: str, input_name, say, report):
    """Quantize the float32 ONNX file `src` into `dst` (`mode` is int8 or int8_dynamic);
    static int8 is calibrated on the images `data` (N, H, W, C), which came from `what`
    (recorded in the report). Static int8 is QDQ, uint8 activations, int8 weights per
    channel in 7 bits (`INT8_WEIGHT_BOUND`), so no CPU's kernels saturate; dynamic int8 is
    uint8 weights with activations quantized at run time (u8 * u8 kernels, no pair
    saturation)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    from ...core.quiet import quantizer_quiet

    if mode == "int8_dynamic":
        say("quantizing weights to int8 (dynamic)…")
        with quantizer_quiet():
            quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
        return
    report["calibration"] = {"images": int(len(data)), "source": what}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{input_name: data[i:i + 1]} for i in range(len(data))])

        def get_next(self):
            return next(self._it, None)

    with Heartbeat(say, f"quantizing to int8 (static, {len(data)} calibration images)…"), quantizer_quiet():
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)


