"""EfficientNet's MBConv block (Tan & Le, 2019): an inverted residual with
squeeze-and-excitation and stochastic depth.

Lowered exactly as keras.applications' `block()` (`keras/src/applications/efficientnet.py`),
layer names included, with the block's name as their prefix (``block{s}{letter}_``):
``expand_conv``, ``expand_bn``, ``expand_activation`` (when expand_ratio != 1),
``dwconv_pad`` (stride 2), ``dwconv``, ``bn``, ``activation``, ``se_squeeze``,
``se_reshape``, ``se_reduce``, ``se_expand``, ``se_excite`` (when 0 < se_ratio <= 1),
``project_conv``, ``project_bn``, then ``drop`` and ``add`` for an identity block.

The drop rate of block b (0-based, of B stage blocks after depth scaling) is
``defaults.drop_connect_rate * b / B``; a rate of 0 adds no layer, as in keras.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..common import Activation, BlockBase, Bool, Float, IntOrPair, PosFloat, PosInt
from ..rounding import expanded_width
from .registry import register


class MBConv(BlockBase):
    """Mobile inverted bottleneck with squeeze-and-excitation."""

    width_fields = ("filters",)
    type: Literal["mbconv"]
    filters: PosInt = Field(description="Output channels (keras' filters_out).")
    kernel: IntOrPair = 3
    stride: PosInt = 1
    expand_ratio: PosInt | PosFloat = Field(default=6, description=(
        "Expansion of the block's input channels (a non-integer one: make_divisible(c * ratio, 8))."))
    se_ratio: Float = Field(default=0.25, ge=0, le=1,
                            description="Squeeze width as a fraction of the input channels; 0: no SE.")
    id_skip: Bool = Field(default=True, description="Identity shortcut when stride 1 and the width is unchanged.")
    activation: Activation | None = Field(default=None, description="Default: defaults.activation.")


@register(MBConv)
def lower_mbconv(g, b: MBConv, x: str, name: str) -> str:
    fn = b.activation or g.defaults.activation
    inputs, filters_in = x, g.channels(x)
    filters = expanded_width(filters_in, b.expand_ratio)
    if b.expand_ratio != 1:
        x = g.conv(x, filters, 1, f"{name}expand_conv", padding="same", use_bias=False)
        x = g.act(g.bn(x, f"{name}expand_bn"), fn, f"{name}expand_activation")
    if b.stride == 2:
        x = g.pad(x, "correct", f"{name}dwconv_pad", kernel=b.kernel)
        conv_pad = "valid"
    else:
        conv_pad = "same"
    x = g.dwconv(x, b.kernel, f"{name}dwconv", strides=b.stride, padding=conv_pad, use_bias=False)
    x = g.act(g.bn(x, f"{name}bn"), fn, f"{name}activation")
    if 0 < b.se_ratio <= 1:
        filters_se = max(1, int(filters_in * b.se_ratio))
        se = g.add("global_pool", f"{name}se_squeeze", [x], mode="avg", keepdims=False)
        se = g.add("reshape", f"{name}se_reshape", [se], target_shape=(1, 1, filters))
        se = g.conv(se, filters_se, 1, f"{name}se_reduce", padding="same", use_bias=True, activation=fn)
        se = g.conv(se, filters, 1, f"{name}se_expand", padding="same", use_bias=True, activation="sigmoid")
        x = g.add("multiply", f"{name}se_excite", [x, se])
    x = g.conv(x, b.filters, 1, f"{name}project_conv", padding="same", use_bias=False)
    x = g.bn(x, f"{name}project_bn")
    if b.id_skip and b.stride == 1 and filters_in == b.filters:
        x = g.drop_path(x, f"{name}drop")
        x = g.add("add", f"{name}add", [x, inputs])
    return x
