"""The ONNX emitters of the graph IR: one small function per op (`EMITTERS`, keyed by every
op of `graph.OPS`, each named by the op's entry in `backends.optable`), each reproducing the
inference semantics of the Keras layer that `keras_build.make_layer` makes for that op, and
tested alone against that layer on a tiny graph (tests/test_onnx_ir.py).

Layout (a decision, tested): the ONNX graph takes the NHWC input the Keras model takes;
one ``Transpose`` at the input makes it NCHW, and **every 4-D tensor inside the graph is
NCHW** (ONNX's native convolution layout, so ``Conv``, ``MaxPool``, ``BatchNormalization``,
``LRN``, ``Resize`` run without per-layer transposes). Every other tensor ((N, C), (N, L, C))
keeps Keras' layout. A tensor goes back to NHWC only where Keras' semantics depend on the
element order: ``flatten`` and ``reshape`` of a spatial tensor (skipped when H = W = 1,
where both orders are the same) and a 4-D graph output. Channel-axis ops (concat, softmax,
layer norm, per-channel constants) use axis 1 on 4-D tensors and the last axis otherwise.

Batch norm stays a ``BatchNormalization`` node (not folded into the convolution before it
here): ONNX Runtime folds it itself, and its optimized graph of the IR's file has the same
nodes as that of tf2onnx's file, which folds it (bench/bench_export.py compares them).

Emitters signature: ``emit(b, node, xs, weights) -> tensor``, where `b` is the `Builder`
(adds ONNX nodes and initializers), `xs` the ONNX tensor names of the node's inputs, and
`weights` the Keras layer's weights as float32 numpy arrays, in `layer.get_weights()` order
(for `normalization`: its mean and variance, given or adapted). Dropout and identity emit
nothing: their output is their input.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ...core.errors import ArchspecError
from ...ir.graph import OPS, Node
from ..optable import PRIMITIVES
from ...core.units import pair

#: Keras' SELU constants (keras.ops.selu), not ONNX's defaults
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
#: keras.backend.epsilon(): the floor of Normalization's standard deviation
KERAS_EPSILON = 1e-7


class Builder:
    """Collects ONNX nodes and initializers; knows each tensor's Keras shape (batch excluded),
    hence its rank and layout (4-D = NCHW)."""

    def __init__(self, opset: int, initializer: Callable | None = None, reserved=(), graph=None):
        from onnx import GraphProto, helper

        self.helper = helper
        self.opset = opset
        self.nodes: list = []
        #: initializers are made in place in this GraphProto (the model's own, so that the
        #: weights are not copied again by make_graph / make_model)
        self.graph = graph if graph is not None else GraphProto()
        self.shapes: dict[str, tuple] = {}
        self._used: set[str] = set(reserved)
        #: (GraphProto, name, array): adds the initializer to the graph, or writes it to a file
        self._initializer = initializer or add_tensor

    # -- naming
    def unique(self, name: str) -> str:
        base, k = name, 0
        while name in self._used:
            k += 1
            name = f"{base}:{k}"
        self._used.add(name)
        return name

    # -- graph content
    def op(self, op_type: str, inputs: list[str], name: str, shape: tuple | None = None, **attrs) -> str:
        """Add one node; its output tensor has the node's (unique) name. `shape` is the
        output's Keras shape, when the op changes it."""
        out = self.unique(name)
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        self.shapes[out] = tuple(shape) if shape is not None else self.shapes.get(inputs[0], ())
        return out

    def const(self, name: str, value) -> str:
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np.float32, copy=False)
        name = self.unique(name)
        self._initializer(self.graph, name, arr)
        return name

    def ints(self, name: str, values) -> str:
        return self.const(name, np.asarray(values, dtype=np.int64))

    # -- layout
    def rank(self, x: str) -> int:
        return len(self.shapes[x]) + 1

    def channel_axis(self, x: str) -> int:
        return 1 if self.rank(x) == 4 else -1

    def channel_const(self, name: str, vec, x: str) -> str:
        """A per-channel vector (or a scalar) shaped to broadcast against `x`."""
        v = np.asarray(vec, dtype=np.float32)
        if v.ndim and self.rank(x) == 4:
            v = v.reshape(-1, 1, 1)
        return self.const(name, v)

    def to_nhwc(self, x: str, name: str) -> str:
        return self.op("Transpose", [x], name, perm=[0, 2, 3, 1])

    def reduce(self, op_type: str, x: str, axes: list[int], name: str, keepdims: int = 1) -> str:
        """ReduceMean & co.: `axes` an attribute before opset 18, an input from 18."""
        if self.opset >= 18:
            return self.op(op_type, [x, self.ints(f"{name}/axes", axes)], name, keepdims=keepdims)
        return self.op(op_type, [x], name, axes=axes, keepdims=keepdims)


def add_tensor(graph, name: str, arr: np.ndarray) -> None:
    """An initializer holding `arr`, in `graph` itself."""
    fill_tensor(graph.initializer.add(), name, arr)


def fill_tensor(t, name: str, arr: np.ndarray) -> None:
    """Fill the TensorProto `t` with `arr` (little-endian raw data, one copy)."""
    from onnx import helper

    t.name = name
    t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
    t.dims.extend(arr.shape)
    t.raw_data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()


def pads_for(padding: str, in_hw, kernel, strides, dilation=(1, 1), folded=None) -> list[int]:
    """ONNX ``pads`` [top, left, bottom, right]: 0 for "valid"; for "same", TensorFlow's rule
    (output ceil(in / stride), the odd pixel of padding at the bottom / right); "valid" after
    a zero padding folded into the layer (`folded`, the same order): that padding."""
    if padding == "valid":
        return list(folded) if folded else [0, 0, 0, 0]
    if padding != "same":
        raise ArchspecError(f"unknown padding {padding!r}")
    before, after = [], []
    for size, k, s, d in zip(in_hw, pair(kernel), pair(strides), pair(dilation)):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return before + after


# ---------------------------------------------------------------- activations


def _act_relu6(b, x, name):
    return b.op("Clip", [x, b.const(f"{name}/min", np.float32(0)), b.const(f"{name}/max", np.float32(6))], name)


def _act_swish(b, x, name):
    return b.op("Mul", [x, b.op("Sigmoid", [x], f"{name}/sigmoid")], name)


def _act_gelu(b, x, name):  # Keras' gelu is the exact one: 0.5 x (1 + erf(x / sqrt 2))
    t = b.op("Div", [x, b.const(f"{name}/sqrt2", np.float32(math.sqrt(2.0)))], f"{name}/scaled")
    e = b.op("Add", [b.op("Erf", [t], f"{name}/erf"), b.const(f"{name}/one", np.float32(1))], f"{name}/1p")
    return b.op("Mul", [b.op("Mul", [x, e], f"{name}/x1p"), b.const(f"{name}/half", np.float32(0.5))], name)


def _act_hard_sigmoid(b, x, name):  # keras: relu6(x + 3) / 6
    return b.op("HardSigmoid", [x], name, alpha=1.0 / 6.0, beta=0.5)


def _act_hard_swish(b, x, name):  # HardSwish itself is opset 14: written as x * hard_sigmoid(x)
    return b.op("Mul", [x, _act_hard_sigmoid(b, x, f"{name}/hard_sigmoid")], name)


def _act_softmax(b, x, name):
    return b.op("Softmax", [x], name, axis=b.channel_axis(x))


def _act_mish(b, x, name):  # Mish is opset 18: x * tanh(softplus(x))
    return b.op("Mul", [x, b.op("Tanh", [b.op("Softplus", [x], f"{name}/softplus")], f"{name}/tanh")], name)


def _simple(op_type, **attrs):
    return lambda b, x, name: b.op(op_type, [x], name, **attrs)


#: every activation of `spec.common.ACTIVATIONS` (and Keras' serialized names for them)
ACTIVATIONS: dict[str, Callable] = {
    "relu": _simple("Relu"), "relu6": _act_relu6, "swish": _act_swish, "silu": _act_swish,
    "sigmoid": _simple("Sigmoid"), "softmax": _act_softmax, "tanh": _simple("Tanh"), "gelu": _act_gelu,
    "elu": _simple("Elu", alpha=1.0), "selu": _simple("Selu", alpha=SELU_ALPHA, gamma=SELU_SCALE),
    "leaky_relu": _simple("LeakyRelu", alpha=0.2), "hard_sigmoid": _act_hard_sigmoid,
    "hard_swish": _act_hard_swish, "hard_silu": _act_hard_swish, "softplus": _simple("Softplus"),
    "mish": _act_mish, "linear": None,
}


def activation(b: Builder, x: str, fn, name: str) -> str:
    if fn in (None, "linear"):
        return x
    if fn not in ACTIVATIONS:
        raise ArchspecError(f"the ONNX exporter has no activation {fn!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[fn](b, x, f"{name}/{fn}")


# ---------------------------------------------------------------- convolutions


def _conv(b, x, name, weight, bias, attrs, shape, group=1, dilation=(1, 1)):
    kh, kw = weight.shape[2:]
    ins = [x, b.const(f"{name}/kernel", weight)]
    if bias is not None:
        ins.append(b.const(f"{name}/bias", bias))
    return b.op("Conv", ins, name, shape=shape, kernel_shape=[kh, kw], strides=list(pair(attrs.get("strides", 1))),
                dilations=list(pair(dilation)), group=group,
                pads=pads_for(attrs.get("padding", "valid"), b.shapes[x][:2], (kh, kw), attrs.get("strides", 1),
                              dilation, attrs.get("folded_pads")))


def emit_conv2d(b, n: Node, xs, w):
    a = n.attrs
    kernel = w[0]  # Keras (kh, kw, cin / groups, filters) -> ONNX (filters, cin / groups, kh, kw)
    y = _conv(b, xs[0], n.name, kernel.transpose(3, 2, 0, 1), w[1] if a.get("use_bias", True) else None, a,
              n.shape, group=a.get("groups", 1), dilation=a.get("dilation", 1))
    return activation(b, y, a.get("activation"), n.name)


def _depthwise_weight(k):
    """Keras (kh, kw, cin, m) -> ONNX (cin * m, 1, kh, kw): output channel c * m + j, as Keras."""
    kh, kw, cin, m = k.shape
    return k.reshape(kh, kw, cin * m).transpose(2, 0, 1)[:, None]


def emit_depthwise_conv2d(b, n: Node, xs, w):
    a = n.attrs
    cin = b.shapes[xs[0]][-1]
    y = _conv(b, xs[0], n.name, _depthwise_weight(w[0]), w[1] if a.get("use_bias", True) else None, a, n.shape,
              group=cin)  # keras_build makes DepthwiseConv2D without a dilation
    return activation(b, y, a.get("activation"), n.name)


def emit_separable_conv2d(b, n: Node, xs, w):
    a = n.attrs
    cin = b.shapes[xs[0]][-1]
    dw = _depthwise_weight(w[0])
    mid = (*n.shape[:2], dw.shape[0])
    y = _conv(b, xs[0], f"{n.name}/depthwise", dw, None, a, mid, group=cin)
    pw = w[1].transpose(3, 2, 0, 1)  # (1, 1, cin * m, filters) -> (filters, cin * m, 1, 1)
    y = _conv(b, y, n.name, pw, w[2] if a.get("use_bias", True) else None, {}, n.shape)
    return activation(b, y, a.get("activation"), n.name)


def transpose_pads(padding: str, kernel, strides) -> tuple[list[int], list[int]]:
    """ONNX ``ConvTranspose`` (pads [top, left, bottom, right], output_padding [h, w]) that
    give Keras' Conv2DTranspose output (`graph.transpose_output_size`): ONNX's full output is
    ``(size - 1) * stride + kernel``, cropped by the pads and extended (at the end) by the
    output padding. "same" crops TensorFlow's conv padding for that kernel and stride
    (``max(kernel - stride, 0)``, the odd pixel at the bottom / right) and pads a kernel
    smaller than the stride up to ``size * stride``; "valid" crops nothing and pads the same."""
    before, after, extra = [], [], []
    for k, s in zip(pair(kernel), pair(strides)):
        total = max(k - s, 0) if padding == "same" else 0
        before.append(total // 2)
        after.append(total - total // 2)
        extra.append(max(s - k, 0))
    return before + after, extra


def emit_conv_transpose2d(b, n: Node, xs, w):
    a = n.attrs
    kernel = w[0]  # Keras (kh, kw, filters, cin) -> ONNX (cin, filters, kh, kw); no flip: both scatter
    kh, kw = kernel.shape[:2]
    strides = pair(a.get("strides", 1))
    pads, extra = transpose_pads(a.get("padding", "valid"), (kh, kw), strides)
    ins = [xs[0], b.const(f"{n.name}/kernel", kernel.transpose(3, 2, 0, 1))]
    if a.get("use_bias", True):
        ins.append(b.const(f"{n.name}/bias", w[1]))
    y = b.op("ConvTranspose", ins, n.name, shape=n.shape, kernel_shape=[kh, kw], strides=list(strides),
             pads=pads, output_padding=extra)
    return activation(b, y, a.get("activation"), n.name)


def emit_dense(b, n: Node, xs, w):
    a, x = n.attrs, xs[0]
    kernel = w[0]  # (cin, units)
    bias = w[1] if a.get("use_bias", True) else None
    if b.rank(x) == 4:  # Dense on the channels of an NCHW tensor: a 1x1 convolution
        y = _conv(b, x, n.name, kernel.T[:, :, None, None], bias, {}, n.shape)
    elif b.rank(x) == 2 and bias is not None:
        y = b.op("Gemm", [x, b.const(f"{n.name}/kernel", kernel), b.const(f"{n.name}/bias", bias)], n.name,
                 shape=n.shape)
    else:
        y = b.op("MatMul", [x, b.const(f"{n.name}/kernel", kernel)], f"{n.name}/matmul" if bias is not None
                 else n.name, shape=n.shape)
        if bias is not None:
            y = b.op("Add", [y, b.const(f"{n.name}/bias", bias)], n.name)
    return activation(b, y, a.get("activation"), n.name)


# ---------------------------------------------------------------- normalizations


def _affine(b, x, name, scale, offset):
    """x * scale + offset with per-channel constants (None: left out)."""
    if scale is not None:
        x = b.op("Mul", [x, b.channel_const(f"{name}/scale", scale, x)], f"{name}/mul" if offset is not None
                 else name)
    if offset is not None:
        x = b.op("Add", [x, b.channel_const(f"{name}/offset", offset, x)], name)
    return x


def emit_batch_norm(b, n: Node, xs, w):
    a, x = n.attrs, xs[0]
    c = b.shapes[x][-1]
    w = list(w)
    gamma = w.pop(0) if a.get("scale", True) else np.ones(c, np.float32)
    beta = w.pop(0) if a.get("center", True) else np.zeros(c, np.float32)
    mean, var = w
    if b.rank(x) in (2, 4):  # channels on axis 1, as ONNX's BatchNormalization wants them
        return b.op("BatchNormalization", [x] + [b.const(f"{n.name}/{k}", v) for k, v in
                                                 (("gamma", gamma), ("beta", beta), ("moving_mean", mean),
                                                  ("moving_variance", var))],
                    n.name, epsilon=float(a["epsilon"]))
    # channels last on another rank: Keras' own formula, x * inv + (beta - mean * inv)
    inv = gamma / np.sqrt(var + np.float32(a["epsilon"]))
    return _affine(b, x, n.name, inv, beta - mean * inv)


def emit_layer_norm(b, n: Node, xs, w):
    a, x = n.attrs, xs[0]
    ax = b.channel_axis(x)
    w = list(w)
    gamma = w.pop(0) if a.get("scale", True) else None
    beta = w.pop(0) if a.get("center", True) else None
    mean = b.reduce("ReduceMean", x, [ax], f"{n.name}/mean")
    d = b.op("Sub", [x, mean], f"{n.name}/centered")
    var = b.reduce("ReduceMean", b.op("Mul", [d, d], f"{n.name}/sq"), [ax], f"{n.name}/variance")
    std = b.op("Sqrt", [b.op("Add", [var, b.const(f"{n.name}/epsilon", np.float32(a["epsilon"]))],
                             f"{n.name}/var_eps")], f"{n.name}/std")
    y = b.op("Div", [d, std], f"{n.name}/normalized" if gamma is not None or beta is not None else n.name)
    return _affine(b, y, n.name, gamma, beta) if gamma is not None or beta is not None else y


def emit_group_norm(b, n: Node, xs, w):
    """Keras' GroupNormalization, written out: ONNX's own GroupNormalization is opset 18 (the
    highest archspec emits) with a scale and bias per group, not per channel (fixed in 21).
    The channels are split into `groups` of consecutive channels, each group normalized over
    its channels and all positions, then scaled and shifted per channel: on NCHW
    ``(N, C, H, W) -> (N, G, C/G*H*W)``; channels-last (N, ..., C) -> (N, ..., G, C/G)."""
    a, x = n.attrs, xs[0]
    shape, groups = b.shapes[x], int(a["groups"])
    c, rank = shape[-1], b.rank(x)
    w = list(w)
    gamma = w.pop(0) if a.get("scale", True) else None
    beta = w.pop(0) if a.get("center", True) else None
    if rank == 4:
        grouped, back = (groups, c // groups * shape[0] * shape[1]), [0, c, *shape[:2]]
        axes = [2]
    else:
        grouped, back = (*shape[:-1], groups, c // groups), [0, *shape]
        axes = [k for k in range(1, len(grouped) + 1) if k != len(grouped) - 1]
    g = b.op("Reshape", [x, b.ints(f"{n.name}/groups", [0, *grouped])], f"{n.name}/grouped", shape=grouped)
    mean = b.reduce("ReduceMean", g, axes, f"{n.name}/mean")
    d = b.op("Sub", [g, mean], f"{n.name}/centered")
    var = b.reduce("ReduceMean", b.op("Mul", [d, d], f"{n.name}/sq"), axes, f"{n.name}/variance")
    std = b.op("Sqrt", [b.op("Add", [var, b.const(f"{n.name}/epsilon", np.float32(a["epsilon"]))],
                             f"{n.name}/var_eps")], f"{n.name}/std")
    y = b.op("Div", [d, std], f"{n.name}/normalized_groups")
    last = gamma is None and beta is None
    y = b.op("Reshape", [y, b.ints(f"{n.name}/shape", back)], n.name if last else f"{n.name}/normalized",
             shape=shape)
    return y if last else _affine(b, y, n.name, gamma, beta)


def emit_normalization(b, n: Node, xs, w):
    """Keras: (x - mean) / max(sqrt(variance), epsilon), the statistics given or adapted."""
    c = b.shapes[xs[0]][-1]
    mean = np.broadcast_to(np.asarray(w[0], np.float32).reshape(-1), (c,))
    std = np.maximum(np.sqrt(np.broadcast_to(np.asarray(w[1], np.float32).reshape(-1), (c,))),
                     np.float32(KERAS_EPSILON))
    y = b.op("Sub", [xs[0], b.channel_const(f"{n.name}/mean", mean, xs[0])], f"{n.name}/centered")
    return b.op("Div", [y, b.channel_const(f"{n.name}/std", std, xs[0])], n.name)


def emit_rescaling(b, n: Node, xs, w):
    scale, offset = n.attrs.get("scale", 1.0), n.attrs.get("offset", 0.0)
    return _affine(b, xs[0], n.name, scale, None if np.all(np.asarray(offset) == 0) else offset)


def emit_layer_scale(b, n: Node, xs, w):
    return b.op("Mul", [xs[0], b.channel_const(f"{n.name}/gamma", w[0], xs[0])], n.name)


def emit_lrn(b, n: Node, xs, w):
    """keras_build.LocalResponseNormalization: x / (k + alpha * sum of x^2 over the `depth`
    channels c - depth//2 .. c - depth//2 + depth - 1) ** beta. For an odd depth that is
    ONNX's LRN (which divides alpha by the size); for an even one, ONNX centres its window
    differently, so the window sum is a 1x1 convolution with a band of ones."""
    a, x = n.attrs, xs[0]
    depth, k, alpha, beta = int(a["depth"]), float(a["k"]), float(a["alpha"]), float(a["beta"])
    if depth % 2:
        return b.op("LRN", [x], n.name, size=depth, alpha=alpha * depth, beta=beta, bias=k)
    c, r = b.shapes[x][-1], depth // 2
    band = np.zeros((c, c, 1, 1), np.float32)
    for out in range(c):
        band[out, max(0, out - r):min(c, out - r + depth), 0, 0] = 1.0
    sq = b.op("Mul", [x, x], f"{n.name}/square")
    s = b.op("Conv", [sq, b.const(f"{n.name}/window", band)], f"{n.name}/window_sum", kernel_shape=[1, 1])
    d = b.op("Add", [b.op("Mul", [s, b.const(f"{n.name}/alpha", np.float32(alpha))], f"{n.name}/scaled"),
                     b.const(f"{n.name}/k", np.float32(k))], f"{n.name}/base")
    return b.op("Div", [x, b.op("Pow", [d, b.const(f"{n.name}/beta", np.float32(beta))], f"{n.name}/pow")], n.name)


# ---------------------------------------------------------------- element-wise and structure


def _chain(op_type):
    def emit(b, n: Node, xs, w):  # as Keras' merge layers: ((x0 op x1) op x2) ...
        y = xs[0]
        for i, x in enumerate(xs[1:], 1):
            y = b.op(op_type, [y, x], n.name if i == len(xs) - 1 else f"{n.name}/{i}", shape=n.shape)
        return y
    return emit


def emit_scaled_add(b, n: Node, xs, w):
    """keras' CustomScaleLayer (InceptionResNetV2): ``xs[0] + xs[1] * scale``, in that order."""
    scaled = b.op("Mul", [xs[1], b.const(f"{n.name}/scale", np.float32(n.attrs["scale"]))], f"{n.name}/mul",
                  shape=n.shape)
    return b.op("Add", [xs[0], scaled], n.name, shape=n.shape)


def emit_concat(b, n: Node, xs, w):
    rank = b.rank(xs[0])
    axis = n.attrs.get("axis", -1)
    axis = (axis if axis < 0 else axis + 1) % rank  # the IR's axis excludes the batch
    if rank == 4:
        axis = {0: 0, 1: 2, 2: 3, 3: 1}[axis]  # NHWC -> NCHW
    return b.op("Concat", list(xs), n.name, shape=n.shape, axis=axis)


def emit_activation(b, n: Node, xs, w):
    return activation(b, xs[0], n.attrs["fn"], n.name)


def _pool(op_type):
    def emit(b, n: Node, xs, w):
        a = n.attrs
        pool = pair(a["pool"])
        strides = pair(a.get("strides") or pool)
        attrs = {"kernel_shape": list(pool), "strides": list(strides),
                 "pads": pads_for(a.get("padding", "valid"), b.shapes[xs[0]][:2], pool, strides,
                                  folded=a.get("folded_pads"))}
        if op_type == "AveragePool":
            attrs["count_include_pad"] = 0  # TensorFlow averages over the pixels inside the image
        return b.op(op_type, [xs[0]], n.name, shape=n.shape, **attrs)
    return emit


def emit_global_pool(b, n: Node, xs, w):
    op_type = "GlobalAveragePool" if n.attrs.get("mode", "avg") == "avg" else "GlobalMaxPool"
    keep = bool(n.attrs.get("keepdims"))
    y = b.op(op_type, [xs[0]], n.name if keep else f"{n.name}/pool", shape=(1, 1, b.shapes[xs[0]][-1]))
    return y if keep else b.op("Flatten", [y], n.name, shape=n.shape, axis=1)


def emit_zero_padding(b, n: Node, xs, w):
    (t, bo), (l, r) = n.attrs["padding"]
    return b.op("Pad", [xs[0], b.ints(f"{n.name}/pads", [0, 0, t, l, 0, 0, bo, r])], n.name, shape=n.shape,
                mode="constant")


def _keras_order(b, x, name):
    """`x` with its elements in Keras' (NHWC) order: 4-D tensors transposed back, unless
    H = W = 1, where NCHW and NHWC hold the elements in the same order."""
    if b.rank(x) == 4 and tuple(b.shapes[x][:2]) != (1, 1):
        return b.to_nhwc(x, f"{name}/nhwc")
    return x


def emit_flatten(b, n: Node, xs, w):
    x = xs[0]
    if b.rank(x) == 2:
        return x
    return b.op("Flatten", [_keras_order(b, x, n.name)], n.name, shape=n.shape, axis=1)


def emit_reshape(b, n: Node, xs, w):
    x, target = xs[0], tuple(n.attrs["target_shape"])
    x = _keras_order(b, x, n.name)
    if len(target) == 3 and target[:2] != (1, 1):  # to a spatial tensor: reshape NHWC, then to NCHW
        y = b.op("Reshape", [x, b.ints(f"{n.name}/shape", [-1, *target])], f"{n.name}/nhwc", shape=(0, 0, 0, 0))
        return b.op("Transpose", [y], n.name, shape=target, perm=[0, 3, 1, 2])
    onnx_shape = [-1, target[2], 1, 1] if len(target) == 3 else [-1, *target]
    return b.op("Reshape", [x, b.ints(f"{n.name}/shape", onnx_shape)], n.name, shape=target)


def emit_upsample(b, n: Node, xs, w):
    fh, fw = pair(n.attrs["size"])
    scales = b.const(f"{n.name}/scales", np.asarray([1, 1, fh, fw], np.float32))
    if n.attrs.get("interpolation", "nearest") == "nearest":  # each pixel repeated (Keras' repeat)
        attrs = dict(mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    elif n.attrs["interpolation"] == "bilinear":  # tf.image.resize / jax.image.resize: half-pixel centres
        attrs = dict(mode="linear", coordinate_transformation_mode="half_pixel")
    else:
        raise ArchspecError(f"layer {n.name!r}: the ONNX exporter has no {n.attrs['interpolation']!r} upsampling")
    return b.op("Resize", [xs[0], "", scales], n.name, shape=n.shape, **attrs)


def emit_cropping(b, n: Node, xs, w):
    (t, bo), (l, r) = n.attrs["cropping"]
    h, wd = b.shapes[xs[0]][:2]
    return b.op("Slice", [xs[0], b.ints(f"{n.name}/starts", [t, l]), b.ints(f"{n.name}/ends", [h - bo, wd - r]),
                          b.ints(f"{n.name}/axes", [2, 3])], n.name, shape=n.shape)


def emit_passthrough(b, n: Node, xs, w):  # dropout and identity: nothing at inference
    return xs[0]


emit_add, emit_multiply = _chain("Add"), _chain("Mul")
emit_max_pool, emit_avg_pool = _pool("MaxPool"), _pool("AveragePool")

#: op -> emitter, named by the op table (`backends.optable`, entry `onnx`); "input" is the
#: graph input itself: via_ir.convert adds it and its transpose to NCHW
EMITTERS: dict[str, Callable] = {op: globals()[p.onnx] for op, p in PRIMITIVES.items() if isinstance(p.onnx, str)}
assert set(EMITTERS) | {"input"} == set(OPS), sorted(set(OPS) ^ set(EMITTERS) ^ {"input"})
