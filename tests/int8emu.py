"""A numpy emulation of onnxruntime's u8 * s8 convolution on x86 CPUs without VNNI (issue 25).

There MLAS multiplies uint8 activations by int8 weights with VPMADDUBSW, which adds each
adjacent pair of products along the reduction axis into an int16 *with saturation*, then
sums the int16s in int32. A VNNI CPU adds in int32 directly. So the same int8 file can agree
99% with the float model on one CPU and 77% on another. This module computes, for the
quantized convolutions of a QDQ ONNX file, the accumulators both ways on real inputs, without
depending on the CPU the tests run on:

- `qdq_convs(proto)`: the convolutions fed by DequantizeLinear on both data and weights;
- `pair_overflows(conv, x_q)`: how many pair sums leave int16 on the quantized input x_q,
  for both orders of the reduction axis MLAS may pack (channels innermost, as NHWC, or the
  kernel window innermost, as NCHW);
- `conv_output(conv, x_q, saturate)`: the convolution's float output computed from the
  integers, with or without the int16 pair saturation;
- `run_from(proto, name, value)`: the rest of the network run by onnxruntime from one
  convolution's output, to see what the saturation does to the predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

INT16 = (-32768, 32767)


@dataclass
class QConv:
    node: onnx.NodeProto
    x_q: str           # the uint8 tensor the convolution's input is dequantized from
    x_scale: float
    x_zero: int
    w_q: np.ndarray    # (M, C, kh, kw) int8
    w_scale: np.ndarray  # (M,)
    bias: np.ndarray | None  # (M,) float
    strides: tuple
    pads: tuple        # (top, left, bottom, right)
    dilations: tuple

    @property
    def output(self) -> str:
        return self.node.output[0]


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            return tuple(a.ints) if a.ints else a.i
    return default


def qdq_convs(proto) -> list[QConv]:
    """The Conv nodes of `proto` whose data and weight inputs are DequantizeLinear outputs."""
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    producer = {o: n for n in proto.graph.node for o in n.output}

    def const(name):
        if name in init:
            return init[name]
        n = producer.get(name)
        if n is not None and n.op_type == "Constant":
            return numpy_helper.to_array(n.attribute[0].t)
        raise KeyError(name)

    def dequant(name):
        n = producer.get(name)
        if n is None or n.op_type != "DequantizeLinear":
            return None
        zero = const(n.input[2]) if len(n.input) > 2 and n.input[2] else np.zeros((), "uint8")
        return n.input[0], const(n.input[1]), zero

    out = []
    for n in proto.graph.node:
        if n.op_type != "Conv":
            continue
        x, w = dequant(n.input[0]), dequant(n.input[1])
        if x is None or w is None:
            continue
        assert _attr(n, "group", 1) == 1, f"{n.name}: grouped convolutions are not emulated"
        w_q, w_scale, w_zero = const(w[0]), w[1], w[2]
        assert w_q.dtype == np.int8 and not np.any(w_zero), f"{n.name}: weights are not symmetric int8"
        assert x[2].dtype == np.uint8, f"{n.name}: activations are not uint8"
        bias = None
        if len(n.input) > 2 and n.input[2]:
            b = dequant(n.input[2])
            bias = const(b[0]).astype("float64") * b[1] if b else const(n.input[2]).astype("float64")
        kh, kw = w_q.shape[2:]
        pads = _attr(n, "pads", (0, 0, 0, 0))
        auto = next((a.s for a in n.attribute if a.name == "auto_pad"), b"NOTSET")
        assert auto in (b"NOTSET", b"VALID"), f"{n.name}: auto_pad {auto!r} is not emulated"
        out.append(QConv(n, x[0], float(x[1]), int(x[2]), w_q, np.broadcast_to(w_scale, (w_q.shape[0],)),
                         bias, _attr(n, "strides", (1, 1)), pads, _attr(n, "dilations", (1, 1))))
    return out


def tensors(proto, names, feed) -> dict[str, np.ndarray]:
    """The values of the intermediate tensors `names` on the input `feed` (onnxruntime, the
    tensors made graph outputs; optimizations off, so each is computed as written)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    have = {o.name for o in probe.graph.output}
    for name in names:
        if name not in have:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(list(names), feed)))


def _columns(conv: QConv, x_q: np.ndarray) -> tuple[np.ndarray, tuple]:
    """im2col of the uint8 NCHW input (padded with the zero point, which is real 0):
    (N, Ho, Wo, C, kh, kw) as int32."""
    n, c, h, w = x_q.shape
    kh, kw = conv.w_q.shape[2:]
    (sh, sw), (dh, dw) = conv.strides, conv.dilations
    top, left, bottom, right = conv.pads
    xp = np.full((n, c, h + top + bottom, w + left + right), conv.x_zero, np.int32)
    xp[:, :, top:top + h, left:left + w] = x_q
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    cols = np.empty((n, ho, wo, c, kh, kw), np.int32)
    for i in range(kh):
        for j in range(kw):
            cols[..., i, j] = xp[:, :, i * dh:i * dh + sh * ho:sh, j * dw:j * dw + sw * wo:sw].transpose(0, 2, 3, 1)
    return cols, (ho, wo)


def _orders(conv: QConv, cols: np.ndarray):
    """(name, activations (P, K), weights (K, M)) for both packings of the reduction axis."""
    n, ho, wo, c, kh, kw = cols.shape
    w = conv.w_q.astype(np.int32)  # |a * w| <= 255 * 128: a pair's sum fits int32
    yield "channels innermost", cols.transpose(0, 1, 2, 4, 5, 3).reshape(-1, kh * kw * c), \
        w.transpose(2, 3, 1, 0).reshape(kh * kw * c, -1)
    yield "window innermost", cols.reshape(-1, c * kh * kw), w.reshape(w.shape[0], -1).T


def _pair_sums(a: np.ndarray, w: np.ndarray):
    """The (rows, K/2, M) sums of adjacent products a[k] * w[k] + a[k+1] * w[k+1] (K padded to
    even), a block of rows of `a` at a time (bounded memory)."""
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        w = np.pad(w, ((0, 1), (0, 0)))
    rows = max(1, 2**26 // (a.shape[1] // 2 * w.shape[1]))
    for i in range(0, len(a), rows):
        b = a[i:i + rows]
        yield np.einsum("pk,km->pkm", b[:, 0::2], w[0::2]) + np.einsum("pk,km->pkm", b[:, 1::2], w[1::2])


def pair_overflows(conv: QConv, x_q: np.ndarray) -> dict[str, tuple[int, int]]:
    """{packing: (pair sums outside int16, pair sums)} of the convolution on x_q."""
    cols, _ = _columns(conv, x_q)
    out = {}
    for name, a, w in _orders(conv, cols):
        bad = total = 0
        for s in _pair_sums(a, w):
            bad += int(np.count_nonzero((s < INT16[0]) | (s > INT16[1])))
            total += s.size
        out[name] = (bad, total)
    return out


def conv_output(conv: QConv, x_q: np.ndarray, saturate: bool, packing: str = "channels innermost") -> np.ndarray:
    """The convolution's float output (N, M, Ho, Wo) from the integers: the u8 * s8
    accumulator (pairs saturated to int16 when `saturate`), less the activations' zero point
    times the weights' sum, scaled, plus the bias."""
    cols, (ho, wo) = _columns(conv, x_q)
    a, w = next((a, w) for name, a, w in _orders(conv, cols) if name == packing)
    if saturate:
        acc = np.concatenate([np.clip(s, *INT16).sum(axis=1) for s in _pair_sums(a, w)])
    else:
        acc = a.astype(np.int64) @ w
    acc = acc - conv.x_zero * w.sum(axis=0)[None, :]
    y = acc * (conv.x_scale * conv.w_scale.astype("float64"))[None, :]
    if conv.bias is not None:
        y = y + conv.bias[None, :]
    return y.reshape(x_q.shape[0], ho, wo, -1).transpose(0, 3, 1, 2).astype("float32")


def run_from(proto, name: str, value: np.ndarray) -> np.ndarray:
    """The network's last output computed by onnxruntime from the tensor `name` = value."""
    sub = onnx.utils.Extractor(proto).extract_model([name], [proto.graph.output[-1].name])
    sess = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {name: value})[0]
