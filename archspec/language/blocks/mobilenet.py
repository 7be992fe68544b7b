"""MobileNet blocks: `depthwise_separable` (MobileNet V1, Howard et al. 2017) and
`inverted_residual` (MobileNet V2, Sandler et al. 2018).

Both are lowered exactly as keras.applications builds them
(`keras/src/applications/mobilenet.py:_depthwise_conv_block`,
`keras/src/applications/mobilenet_v2.py:_inverted_res_block`), layer names included:

- ``depthwise_separable``, block name ``{id}``: ``conv_pad_{id}`` (stride 2 only),
  ``conv_dw_{id}``, ``conv_dw_{id}_bn``, ``conv_dw_{id}_relu``, ``conv_pw_{id}``,
  ``conv_pw_{id}_bn``, ``conv_pw_{id}_relu``.
- ``inverted_residual``, block name = the prefix (``block_{n}_``, keras' first block
  ``expanded_conv_``): ``{prefix}expand``, ``expand_BN``, ``expand_relu`` (not when
  expansion is 1), ``pad`` (stride 2), ``depthwise``, ``depthwise_BN``,
  ``depthwise_relu``, ``project``, ``project_BN``, ``add`` (stride 1 and same width).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..rounding import expanded_width
from ..common import Activation, BlockBase, Bool, IntOrPair, PadSpec, PosFloat, PosInt
from .registry import register


def _act_suffix(fn: str) -> str:
    return "relu" if fn in ("relu", "relu6") else "activation"


class DepthwiseSeparable(BlockBase):
    """MobileNet V1's block: depthwise kxk conv, BN, activation, then a pointwise 1x1 conv
    to `filters` channels, BN, activation. A strided block zero-pads first and uses a
    'valid' depthwise conv, as keras does."""

    width_fields = ("filters",)
    type: Literal["depthwise_separable"]
    filters: PosInt = Field(description="Output channels of the pointwise conv.")
    stride: PosInt = 1
    kernel: IntOrPair = 3
    depth_multiplier: PosInt | None = Field(default=None, description="Default: defaults.depth_multiplier.")
    activation: Activation | None = Field(default=None, description="Default: defaults.activation.")
    pad: PadSpec = Field(default=((0, 1), (0, 1)),
                         description="Zero padding before a strided depthwise conv (keras MobileNet: ((0,1),(0,1)); "
                                     "'correct' for keras' correct_pad).")
    dw_name: str = "conv_dw_{name}"
    pw_name: str = "conv_pw_{name}"
    pad_name: str = "conv_pad_{name}"


@register(DepthwiseSeparable)
def lower_depthwise_separable(g, b: DepthwiseSeparable, x: str, name: str) -> str:
    fn = b.activation or g.defaults.activation
    dw, pw = g.fmt(b.dw_name, name), g.fmt(b.pw_name, name)
    if b.stride != 1:
        x = g.pad(x, b.pad, g.fmt(b.pad_name, name), kernel=b.kernel)
    x = g.dwconv(x, b.kernel, dw, strides=b.stride, padding="same" if b.stride == 1 else "valid",
                 depth_multiplier=b.depth_multiplier or g.defaults.depth_multiplier, use_bias=False)
    x = g.act(g.bn(x, f"{dw}_bn"), fn, f"{dw}_{_act_suffix(fn)}")
    x = g.conv(x, b.filters, 1, pw, padding="same", use_bias=False)
    return g.act(g.bn(x, f"{pw}_bn"), fn, f"{pw}_{_act_suffix(fn)}")


class InvertedResidual(BlockBase):
    """MobileNet V2's block: 1x1 expansion to `expansion` x the input channels (none when
    expansion is 1), BN, activation; depthwise kxk conv, BN, activation; linear 1x1
    projection to `filters`, BN; plus the input when the stride is 1 and the width is
    unchanged. The block's name is the prefix of its layers' names."""

    width_fields = ("filters",)
    type: Literal["inverted_residual"]
    filters: PosInt = Field(description="Output channels (the projection's width).")
    expansion: PosInt | PosFloat = Field(default=6, description=(
        "Expansion of the input channels; a non-integer one is rounded to a multiple of 8 "
        "(make_divisible), as keras' MobileNetV3 does."))
    stride: PosInt = 1
    kernel: IntOrPair = 3
    activation: Activation | None = Field(default=None, description="Default: defaults.activation.")
    residual: Bool = Field(default=True, description="Add the input when the shapes allow it.")


@register(InvertedResidual)
def lower_inverted_residual(g, b: InvertedResidual, x: str, name: str) -> str:
    fn = b.activation or g.defaults.activation
    act = _act_suffix(fn)
    inp, cin = x, g.channels(x)
    if b.expansion != 1:
        x = g.conv(x, expanded_width(cin, b.expansion), 1, f"{name}expand", padding="same", use_bias=False)
        x = g.act(g.bn(x, f"{name}expand_BN"), fn, f"{name}expand_{act}")
    if b.stride != 1:
        x = g.pad(x, "correct", f"{name}pad", kernel=b.kernel)
    x = g.dwconv(x, b.kernel, f"{name}depthwise", strides=b.stride,
                 padding="same" if b.stride == 1 else "valid", use_bias=False)
    x = g.act(g.bn(x, f"{name}depthwise_BN"), fn, f"{name}depthwise_{act}")
    x = g.conv(x, b.filters, 1, f"{name}project", padding="same", use_bias=False)
    x = g.bn(x, f"{name}project_BN")
    if b.residual and b.stride == 1 and cin == b.filters:
        x = g.add("add", f"{name}add", [inp, g.drop_path(x, f"{name}drop")])
    return x

