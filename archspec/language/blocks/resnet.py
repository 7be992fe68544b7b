"""Residual blocks (He et al., 2015): `basic` (two 3x3 convs, ResNet-18/34) and
`bottleneck` (1x1-3x3-1x1, ResNet-50/101/152).

Naming follows keras.applications' ResNet (`{name}_1_conv`, `{name}_1_bn`,
`{name}_1_relu`, ..., `{name}_0_conv` for the projection shortcut, `{name}_add`,
`{name}_out`) or, with ``naming: caffe``, the original Caffe/TF-model-garden names
(`res{name}_branch2a`, `bn{name}_branch2a`, `res{name}_branch1`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..common import Activation, IntOrPair, PosInt, BlockBase
from .registry import register


class _Residual(BlockBase):
    width_fields = ("filters",)
    filters: PosInt = Field(description="Width of the inner convs; the block outputs filters * expansion.")
    stride: PosInt = 1
    kernel: IntOrPair = 3
    shortcut: Literal["auto", "projection", "identity"] = Field(
        default="auto", description="auto: a 1x1 projection when the stride or the width changes.")
    activation: Activation | None = None
    naming: Literal["keras", "caffe"] = "keras"


class Bottleneck(_Residual):
    """1x1 reduce, kxk, 1x1 expand (x `expansion`), plus the shortcut.

    `stride_at: first` puts the stride on the first 1x1 conv (the paper and
    keras.applications); `middle` puts it on the 3x3 (ResNet v1.5, TF model garden).
    """

    type: Literal["bottleneck"]
    expansion: PosInt = 4
    stride_at: Literal["first", "middle"] = "first"


class Basic(_Residual):
    """Two kxk convs plus the shortcut (ResNet-18/34)."""

    type: Literal["basic"]
    expansion: PosInt = 1


def _names(naming: str, name: str):
    if naming == "keras":
        return {
            "conv": lambda i: f"{name}_{i}_conv", "bn": lambda i: f"{name}_{i}_bn",
            "act": lambda i: f"{name}_{i}_relu", "add": f"{name}_add", "out": f"{name}_out",
            "drop": f"{name}_drop",
        }
    branch = {0: "1", 1: "2a", 2: "2b", 3: "2c"}
    return {
        "conv": lambda i: f"res{name}_branch{branch[i]}", "bn": lambda i: f"bn{name}_branch{branch[i]}",
        "act": lambda i: f"res{name}_branch{branch[i]}_relu", "add": f"res{name}_add", "out": f"res{name}_out",
        "drop": f"res{name}_drop",
    }


def _shortcut(g, b: _Residual, x: str, out_ch: int, nm) -> str:
    needs = b.stride != 1 or g.channels(x) != out_ch
    if b.shortcut == "identity" and needs:
        raise g.error(f"shortcut 'identity' cannot change the shape (stride {b.stride}, "
                      f"{g.channels(x)} -> {out_ch} channels); use 'projection' or 'auto'")
    if b.shortcut == "projection" or (b.shortcut == "auto" and needs):
        s = g.conv(x, out_ch, 1, nm["conv"](0), strides=b.stride, padding="valid")
        return g.bn(s, nm["bn"](0))
    return x


@register(Bottleneck)
def lower_bottleneck(g, b: Bottleneck, x: str, name: str) -> str:
    nm = _names(b.naming, name)
    fn = b.activation or g.defaults.activation
    out_ch = b.filters * b.expansion
    inp = x
    keras_order = b.naming == "keras"
    shortcut = _shortcut(g, b, inp, out_ch, nm) if keras_order else None
    s1, s2 = (b.stride, 1) if b.stride_at == "first" else (1, b.stride)
    x = g.conv(inp, b.filters, 1, nm["conv"](1), strides=s1, padding="valid")
    x = g.act(g.bn(x, nm["bn"](1)), fn, nm["act"](1))
    x = g.conv(x, b.filters, b.kernel, nm["conv"](2), strides=s2, padding="same")
    x = g.act(g.bn(x, nm["bn"](2)), fn, nm["act"](2))
    x = g.conv(x, out_ch, 1, nm["conv"](3), padding="valid")
    x = g.drop_path(g.bn(x, nm["bn"](3)), nm["drop"])
    if shortcut is None:
        shortcut = _shortcut(g, b, inp, out_ch, nm)
    x = g.add("add", nm["add"], [shortcut, x] if keras_order else [x, shortcut])
    return g.act(x, fn, nm["out"])


@register(Basic)
def lower_basic(g, b: Basic, x: str, name: str) -> str:
    nm = _names(b.naming, name)
    fn = b.activation or g.defaults.activation
    out_ch = b.filters * b.expansion
    inp = x
    shortcut = _shortcut(g, b, inp, out_ch, nm)
    x = g.conv(inp, b.filters, b.kernel, nm["conv"](1), strides=b.stride, padding="same")
    x = g.act(g.bn(x, nm["bn"](1)), fn, nm["act"](1))
    x = g.conv(x, out_ch, b.kernel, nm["conv"](2), padding="same")
    x = g.drop_path(g.bn(x, nm["bn"](2)), nm["drop"])
    x = g.add("add", nm["add"], [shortcut, x])
    return g.act(x, fn, nm["out"])
