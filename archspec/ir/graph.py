"""The graph IR: an ordered list of primitive nodes, each mapping to exactly one Keras layer.

Shape, parameter and multiply-accumulate (MAC) inference is pure Python. Parameters are
counted the way Keras' ``count_params()`` counts them (batch-norm moving statistics and
Normalization's mean/variance/count included). MACs are those of convolutions (regular,
depthwise and transposed) and dense layers: what the papers call FLOPs.

Shapes exclude the batch dimension and are channels-last: ``(H, W, C)`` or ``(C,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from ..core.units import pair

OPS = (
    "input", "conv2d", "depthwise_conv2d", "batch_norm", "activation", "add", "multiply",
    "concat", "max_pool", "avg_pool", "global_pool", "zero_padding", "dense", "dropout",
    "flatten", "reshape", "rescaling", "normalization", "lrn", "separable_conv2d", "layer_norm",
    "layer_scale", "identity", "upsample", "cropping", "conv_transpose2d", "group_norm", "scaled_add",
)


class ShapeError(ValueError):
    """A layer cannot take its input (e.g. a spatial size that reaches zero)."""


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    attrs: dict[str, Any]
    shape: tuple = ()
    params: int = 0
    trainable: int = 0
    macs: int = 0
    block: str = ""  # name of the block this node belongs to
    block_type: str = ""
    path: tuple = ()  # spec path of the block, for error locations

    def to_dict(self) -> dict:
        return {
            "name": self.name, "op": self.op, "inputs": list(self.inputs), "attrs": _jsonable(self.attrs),
            "output_shape": list(self.shape), "params": self.params, "trainable_params": self.trainable,
            "macs": self.macs, "block": self.block,
        }


def _jsonable(v):
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


@dataclass
class BlockInfo:
    """A block as lowered: its name, type, spec path and the nodes it made (its children's
    included). `parent` is the index of the enclosing block in `Graph.blocks` (None for
    the blocks of the stem, stages and head)."""

    name: str
    type: str
    path: tuple
    nodes: list[str] = field(default_factory=list)
    parent: int | None = None
    depth: int = 0
    #: lowering state: whether the block's name was given in the spec (else generated, and
    #: its layers' names are made unique), and the fields its layer-name templates may use
    explicit: bool = field(default=True, compare=False, repr=False)
    fields: dict = field(default_factory=dict, compare=False, repr=False)


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    outputs: list[str]
    blocks: list[BlockInfo]
    meta: dict[str, Any] = field(default_factory=dict)

    def node(self, name: str) -> Node:
        return self._index()[name]

    def _index(self) -> dict[str, Node]:
        idx = self.__dict__.get("_idx")
        if idx is None or len(idx) != len(self.nodes):
            idx = {n.name: n for n in self.nodes}
            self.__dict__["_idx"] = idx
        return idx

    @property
    def inputs(self) -> list[Node]:
        return [n for n in self.nodes if n.op == "input"]

    @property
    def params(self) -> int:
        return sum(n.params for n in self.nodes)

    @property
    def trainable_params(self) -> int:
        return sum(n.trainable for n in self.nodes)

    @property
    def macs(self) -> int:
        return sum(n.macs for n in self.nodes)

    def block_rows(self, nested: bool = False) -> list[dict]:
        """One row per block (after repeats): name, type, output shape, params, MACs.
        Only the stem, stage and head blocks unless `nested`."""
        idx = self._index()
        rows = []
        for b in self.blocks:
            if b.depth and not nested:
                continue
            nodes = [idx[n] for n in b.nodes if n in idx]
            if not nodes:
                continue
            rows.append({
                "name": b.name, "type": b.type, "output_shape": list(nodes[-1].shape),
                "params": sum(n.params for n in nodes), "macs": sum(n.macs for n in nodes),
                "layers": len(nodes), **({"depth": b.depth} if nested else {}),
            })
        return rows

    def prune(self) -> None:
        """Drop nodes that no output depends on (a head left out, layers after the last tap)."""
        idx = self._index()
        keep: set[str] = set()
        stack = list(self.outputs)
        while stack:
            n = stack.pop()
            if n in keep:
                continue
            keep.add(n)
            stack.extend(idx[n].inputs)
        self.nodes = [n for n in self.nodes if n.name in keep or n.op == "input"]
        for b in self.blocks:
            b.nodes = [n for n in b.nodes if n in keep]
        old = self.blocks
        kept = [i for i, b in enumerate(old) if b.nodes]
        new_index = {i: k for k, i in enumerate(kept)}
        for i in kept:
            p = old[i].parent
            while p is not None and p not in new_index:
                p = old[p].parent
            old[i].parent = new_index.get(p) if p is not None else None
        self.blocks = [old[i] for i in kept]


# ---------------------------------------------------------------- inference


def conv_output_size(size: int, kernel: int, stride: int, padding: str, dilation: int = 1) -> int:
    """Output length of a convolution or pooling window along one axis (Keras' rule)."""
    if padding == "same":
        return -(-size // stride)
    eff = dilation * (kernel - 1) + 1
    return (size - eff) // stride + 1 if size >= eff else 0


def correct_pad(size: tuple[int, int], kernel) -> tuple[tuple[int, int], tuple[int, int]]:
    """keras.applications' `correct_pad`: the zero padding before a stride-2 'valid' conv."""
    kh, kw = pair(kernel)
    adjust = (1 - size[0] % 2, 1 - size[1] % 2)
    return ((kh // 2 - adjust[0], kh // 2), (kw // 2 - adjust[1], kw // 2))


def _spatial(op: str, name: str, shape: tuple, kernel, strides, padding, dilation=1) -> tuple[int, int]:
    if len(shape) != 3:
        raise ShapeError(f"{op} needs a (H, W, C) input (got shape {tuple(shape)})")
    (kh, kw), (sh, sw), (dh, dw) = pair(kernel), pair(strides), pair(dilation)
    if max(sh, sw) > 1 and max(dh, dw) > 1:  # keras' convolutions refuse it when the layer is made
        raise ShapeError(f"layer {name!r} ({op}): a stride above 1 cannot be combined with a dilation above 1 "
                         f"(Keras refuses it); got stride {strides} and dilation {dilation}")
    h = conv_output_size(shape[0], kh, sh, padding, dh)
    w = conv_output_size(shape[1], kw, sw, padding, dw)
    if h <= 0 or w <= 0:
        raise ShapeError(
            f"input too small: layer {name!r} ({op} {kh}x{kw}, stride {sh}, padding {padding}) gets "
            f"{shape[0]}x{shape[1]} and would output {max(h, 0)}x{max(w, 0)}")
    return h, w


def _infer_conv2d(n: Node, ins: list[tuple]) -> None:
    a, s = n.attrs, ins[0]
    h, w = _spatial("conv2d", n.name, s, a["kernel"], a.get("strides", 1), a.get("padding", "valid"),
                    a.get("dilation", 1))
    groups = a.get("groups", 1)
    cin, f = s[2], a["filters"]
    if cin % groups or f % groups:
        raise ShapeError(f"layer {n.name!r}: groups={groups} must divide input channels {cin} and filters {f}")
    kh, kw = pair(a["kernel"])
    n.shape = (h, w, f)
    n.params = n.trainable = kh * kw * (cin // groups) * f + (f if a.get("use_bias", True) else 0)
    n.macs = h * w * kh * kw * (cin // groups) * f


def _infer_depthwise(n: Node, ins: list[tuple]) -> None:
    a, s = n.attrs, ins[0]
    h, w = _spatial("depthwise_conv2d", n.name, s, a["kernel"], a.get("strides", 1), a.get("padding", "valid"),
                    a.get("dilation", 1))
    m, cin = a.get("depth_multiplier", 1), s[2]
    kh, kw = pair(a["kernel"])
    n.shape = (h, w, cin * m)
    n.params = n.trainable = kh * kw * cin * m + (cin * m if a.get("use_bias", True) else 0)
    n.macs = h * w * kh * kw * cin * m


def _infer_bn(n: Node, ins: list[tuple]) -> None:
    c = ins[0][-1]
    n.shape = ins[0]
    trainable = c * (int(n.attrs.get("center", True)) + int(n.attrs.get("scale", True)))
    n.params, n.trainable = trainable + 2 * c, trainable


def _same(n: Node, ins: list[tuple]) -> None:
    n.shape = ins[0]


def _broadcast(n: Node, ins: list[tuple]) -> None:
    out = list(ins[0])
    for s in ins[1:]:
        if len(s) != len(out):
            raise ShapeError(f"layer {n.name!r} ({n.op}): inputs of different ranks {[tuple(i) for i in ins]}")
        for k, (x, y) in enumerate(zip(out, s)):
            if x != y and 1 not in (x, y):
                raise ShapeError(f"layer {n.name!r} ({n.op}): shapes {[tuple(i) for i in ins]} do not match")
            out[k] = max(x, y)
    n.shape = tuple(out)


def _infer_concat(n: Node, ins: list[tuple]) -> None:
    rank = len(ins[0])
    axis = n.attrs.get("axis", -1)
    if any(len(s) != rank for s in ins):
        raise ShapeError(f"layer {n.name!r} (concat): inputs of different ranks {[tuple(i) for i in ins]}")
    if not -rank <= axis < rank:
        raise ShapeError(f"layer {n.name!r} (concat): axis {axis} out of range for shapes of rank {rank}")
    axis %= rank
    base = [d for k, d in enumerate(ins[0]) if k != axis]
    for s in ins[1:]:
        if [d for k, d in enumerate(s) if k != axis] != base:
            raise ShapeError(f"layer {n.name!r} (concat on axis {axis}): shapes {[tuple(i) for i in ins]} "
                             f"differ outside that axis")
    out = list(ins[0])
    out[axis] = sum(s[axis] for s in ins)
    n.shape = tuple(out)


def _infer_separable(n: Node, ins: list[tuple]) -> None:
    a, s = n.attrs, ins[0]
    h, w = _spatial("separable_conv2d", n.name, s, a["kernel"], a.get("strides", 1), a.get("padding", "valid"))
    m, cin, f = a.get("depth_multiplier", 1), s[2], a["filters"]
    kh, kw = pair(a["kernel"])
    n.shape = (h, w, f)
    n.params = n.trainable = kh * kw * cin * m + cin * m * f + (f if a.get("use_bias", True) else 0)
    n.macs = h * w * (kh * kw * cin * m + cin * m * f)


def _infer_layer_norm(n: Node, ins: list[tuple]) -> None:
    n.shape = ins[0]
    n.params = n.trainable = ins[0][-1] * (int(n.attrs.get("center", True)) + int(n.attrs.get("scale", True)))


def _infer_layer_scale(n: Node, ins: list[tuple]) -> None:
    n.shape = ins[0]
    n.params = n.trainable = ins[0][-1]


def _infer_upsample(n: Node, ins: list[tuple]) -> None:
    s = ins[0]
    if len(s) != 3:
        raise ShapeError(f"layer {n.name!r} (upsample) needs a (H, W, C) input (got {tuple(s)})")
    fh, fw = pair(n.attrs["size"])
    n.shape = (s[0] * fh, s[1] * fw, s[2])


def transpose_output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length of a transposed convolution along one axis, Keras' rule (no output
    padding, no dilation): "same" ``size * stride``; "valid" ``(size - 1) * stride +
    max(kernel, stride)`` (``(size - 1) * stride + kernel`` unless the kernel is smaller than
    the stride, where Keras pads the output to ``size * stride``)."""
    if padding == "same":
        return size * stride
    return (size - 1) * stride + max(kernel, stride)


def _infer_conv_transpose(n: Node, ins: list[tuple]) -> None:
    a, s = n.attrs, ins[0]
    if len(s) != 3:
        raise ShapeError(f"layer {n.name!r} (conv_transpose2d) needs a (H, W, C) input (got shape {tuple(s)})")
    (kh, kw), (sh, sw) = pair(a["kernel"]), pair(a.get("strides", 1))
    padding = a.get("padding", "valid")
    cin, f = s[2], a["filters"]
    n.shape = (transpose_output_size(s[0], kh, sh, padding), transpose_output_size(s[1], kw, sw, padding), f)
    n.params = n.trainable = kh * kw * cin * f + (f if a.get("use_bias", True) else 0)
    # counted as Keras-based profilers and the papers count a transposed convolution: every
    # input pixel times the whole kernel (kh * kw * cin * filters), i.e. the MACs of the
    # convolution it is the gradient of; the output positions the padding crops are included
    n.macs = s[0] * s[1] * kh * kw * cin * f


def _infer_cropping(n: Node, ins: list[tuple]) -> None:
    (t, b), (l, r) = n.attrs["cropping"]
    s = ins[0]
    if len(s) != 3:
        raise ShapeError(f"layer {n.name!r} (cropping) needs a (H, W, C) input (got shape {tuple(s)})")
    h, w = s[0] - t - b, s[1] - l - r
    if h <= 0 or w <= 0:
        raise ShapeError(f"input too small: layer {n.name!r} (cropping {t}+{b} rows, {l}+{r} columns) gets "
                         f"{s[0]}x{s[1]} and would output {max(h, 0)}x{max(w, 0)}")
    n.shape = (h, w, s[2])


def _infer_group_norm(n: Node, ins: list[tuple]) -> None:
    s, groups = ins[0], n.attrs.get("groups", 32)
    c = s[-1]
    if groups > c or c % groups:
        raise ShapeError(f"layer {n.name!r} (group_norm): groups={groups} must divide the input channels "
                         f"(got {c} channels, groups={groups})")
    n.shape = s
    n.params = n.trainable = c * (int(n.attrs.get("center", True)) + int(n.attrs.get("scale", True)))


def _infer_scaled_add(n: Node, ins: list[tuple]) -> None:
    """``inputs[0] + inputs[1] * scale`` (Inception-ResNet's scaled residual): two inputs,
    broadcast as an add."""
    if len(ins) != 2:
        raise ShapeError(f"layer {n.name!r} (scaled_add) takes two inputs, the shortcut and the branch it scales "
                         f"(got {len(ins)})")
    _broadcast(n, ins)


def _infer_pool(n: Node, ins: list[tuple]) -> None:
    a = n.attrs
    pool = a["pool"]
    h, w = _spatial(n.op, n.name, ins[0], pool, a.get("strides") or pool, a.get("padding", "valid"))
    n.shape = (h, w, ins[0][2])


def _infer_global_pool(n: Node, ins: list[tuple]) -> None:
    s = ins[0]
    if len(s) != 3:
        raise ShapeError(f"layer {n.name!r} (global_pool) needs a (H, W, C) input (got {tuple(s)})")
    n.shape = (1, 1, s[2]) if n.attrs.get("keepdims") else (s[2],)


def _infer_zero_padding(n: Node, ins: list[tuple]) -> None:
    (t, b), (l, r) = n.attrs["padding"]
    s = ins[0]
    if len(s) != 3:
        raise ShapeError(f"layer {n.name!r} (zero_padding) needs a (H, W, C) input (got {tuple(s)})")
    n.shape = (s[0] + t + b, s[1] + l + r, s[2])


def _infer_dense(n: Node, ins: list[tuple]) -> None:
    s, u = ins[0], n.attrs["units"]
    cin = s[-1]
    n.shape = tuple(s[:-1]) + (u,)
    n.params = n.trainable = cin * u + (u if n.attrs.get("use_bias", True) else 0)
    n.macs = math.prod(s[:-1]) * cin * u


def _infer_flatten(n: Node, ins: list[tuple]) -> None:
    n.shape = (math.prod(ins[0]),)


def _infer_reshape(n: Node, ins: list[tuple]) -> None:
    target = tuple(n.attrs["target_shape"])
    if math.prod(target) != math.prod(ins[0]):
        raise ShapeError(f"layer {n.name!r} (reshape): cannot reshape {tuple(ins[0])} to {target}")
    n.shape = target


def _infer_normalization(n: Node, ins: list[tuple]) -> None:
    n.shape = ins[0]
    c = ins[0][-1]
    # keras keeps mean, variance and count as (non-trainable) weights unless they are given
    n.params = 0 if n.attrs.get("mean") is not None else 2 * c + 1
    n.trainable = 0


INFER: dict[str, Callable[[Node, list[tuple]], None]] = {
    "conv2d": _infer_conv2d, "depthwise_conv2d": _infer_depthwise, "batch_norm": _infer_bn,
    "activation": _same, "add": _broadcast, "multiply": _broadcast, "concat": _infer_concat,
    "max_pool": _infer_pool, "avg_pool": _infer_pool, "global_pool": _infer_global_pool,
    "zero_padding": _infer_zero_padding, "dense": _infer_dense, "dropout": _same,
    "flatten": _infer_flatten, "reshape": _infer_reshape, "rescaling": _same,
    "normalization": _infer_normalization, "lrn": _same, "separable_conv2d": _infer_separable,
    "layer_norm": _infer_layer_norm, "layer_scale": _infer_layer_scale, "identity": _same,
    "upsample": _infer_upsample, "cropping": _infer_cropping, "conv_transpose2d": _infer_conv_transpose,
    "group_norm": _infer_group_norm, "scaled_add": _infer_scaled_add,
}


def infer(node: Node, input_shapes: list[tuple]) -> Node:
    """Fill in `node.shape`, `params`, `trainable` and `macs` from its inputs' shapes."""
    INFER[node.op](node, input_shapes)
    return node
