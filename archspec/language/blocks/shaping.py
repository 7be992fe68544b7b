"""Primitives that change a feature map's size or normalize it by groups: cropping
(U-Net's skip connections), the transposed convolution (decoders, GAN generators) and
group normalization (Wu & He 2018). Each maps to one Keras layer (`conv_transpose` with its
optional batch norm and activation, as `conv`); the fields are the Keras layer's arguments.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field

from ...core.units import pair
from ..common import BlockBase, Bool, Initializer, NonNegInt, PosFloat, PosInt, initializer_config
from .layers import ConvLike, conv_like
from .registry import register

#: rows and columns cropped: one number for all four sides, [rows, cols] (top = bottom,
#: left = right), or [[top, bottom], [left, right]], as Keras' Cropping2D takes them
CropSpec = Union[NonNegInt, tuple[NonNegInt, NonNegInt],
                 tuple[tuple[NonNegInt, NonNegInt], tuple[NonNegInt, NonNegInt]]]


def crop4(c) -> tuple[tuple[int, int], tuple[int, int]]:
    """A `CropSpec` as ((top, bottom), (left, right))."""
    if isinstance(c, int):
        return ((c, c), (c, c))
    if isinstance(c[0], (list, tuple)):
        return ((int(c[0][0]), int(c[0][1])), (int(c[1][0]), int(c[1][1])))
    return ((int(c[0]), int(c[0])), (int(c[1]), int(c[1])))


class Cropping(BlockBase):
    """Crops rows and columns off the borders, as Keras' Cropping2D. A crop that leaves
    no row or no column is an error."""

    type: Literal["cropping"]
    cropping: CropSpec = Field(default=0, description=(
        "An int (all sides), [rows, cols] (symmetric) or [[top, bottom], [left, right]]."))


@register(Cropping)
def lower_cropping(g, b: Cropping, x: str, name: str) -> str:
    return g.add("cropping", name, [x], cropping=crop4(b.cropping))


class ConvTranspose(ConvLike):
    """A 2-D transposed convolution (Keras' Conv2DTranspose): output ``H * stride`` with
    padding "same", ``(H - 1) * stride + max(kernel, stride)`` with "valid". Optional zero
    padding before it and batch norm and an activation after it, as `conv` (without `bn`
    the activation is fused into the layer). No dilation, no output padding.

    Its `stride` is an upsampling factor: a `sequence`'s or stage's `stride`, given to the
    first block that has one, would upsample here; give it to a `conv` instead."""

    takes_outer_stride = False

    width_fields = ("filters",)
    type: Literal["conv_transpose"]
    filters: PosInt
    kernel_initializer: Initializer | None = None


@register(ConvTranspose)
def lower_conv_transpose(g, b: ConvTranspose, x: str, name: str) -> str:
    d = g.defaults
    return conv_like(g, b, x, name, lambda x, n, act: g.add(
        "conv_transpose2d", n, [x], filters=int(b.filters), kernel=pair(b.kernel), strides=pair(b.stride),
        padding=b.padding, use_bias=d.conv_bias if b.bias is None else b.bias, activation=act,
        kernel_initializer=initializer_config(b.kernel_initializer or d.kernel_initializer),
        bias_initializer=initializer_config(d.bias_initializer), kernel_regularizer=g.regularizer()))


class GroupNorm(BlockBase):
    """Group normalization (Wu & He 2018), as Keras' GroupNormalization: the channels (last
    axis) in `groups` groups of consecutive channels, each normalized over its channels and
    all positions, then a learned per-channel scale and offset. The channels must be a
    multiple of `groups`; `groups` = channels is instance normalization, 1 is layer norm
    over all axes."""

    type: Literal["group_norm"]
    groups: PosInt = 32
    epsilon: PosFloat = 1e-3
    center: Bool = True
    scale: Bool = True


@register(GroupNorm)
def lower_group_norm(g, b: GroupNorm, x: str, name: str) -> str:
    return g.add("group_norm", name, [x], groups=b.groups, epsilon=b.epsilon, center=b.center, scale=b.scale)
