"""Primitives of the networks after ResNet: separable convs (Xception), layer norm and
layer scale (ConvNeXt), squeeze-and-excitation (SENet, MobileNetV3), identity and
upsampling. Each maps to one Keras layer, except `squeeze_excite`, which is the usual
pool -> 1x1 conv -> 1x1 conv -> gate -> multiply.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ...core.units import pair
from ..common import Activation, BlockBase, Bool, Float, Initializer, IntOrPair, PosFloat, PosInt, initializer_config
from ..rounding import make_divisible
from .layers import ConvLike, conv_like
from .registry import register


class SeparableConv(ConvLike):
    """A depthwise-separable convolution as one Keras `SeparableConv2D`, optionally with
    zero padding before it and batch norm and an activation after it (without `bn`, the
    activation is fused into the layer; `activation: linear` for none)."""

    width_fields = ("filters",)
    type: Literal["separable_conv"]
    filters: PosInt
    depth_multiplier: PosInt = 1


@register(SeparableConv)
def lower_separable_conv(g, b: SeparableConv, x: str, name: str) -> str:
    return conv_like(g, b, x, name, lambda x, n, act: g.add(
        "separable_conv2d", n, [x], filters=int(b.filters), kernel=pair(b.kernel), strides=pair(b.stride),
        padding=b.padding, depth_multiplier=b.depth_multiplier,
        use_bias=g.defaults.conv_bias if b.bias is None else b.bias, activation=act,
        kernel_initializer=initializer_config(g.defaults.kernel_initializer), kernel_regularizer=g.regularizer()))


class LayerNorm(BlockBase):
    """Layer normalization over the channels (channels-last), as Keras' LayerNormalization."""

    type: Literal["layer_norm"]
    epsilon: PosFloat = 1e-6
    center: Bool = True
    scale: Bool = True


@register(LayerNorm)
def lower_layer_norm(g, b: LayerNorm, x: str, name: str) -> str:
    return g.add("layer_norm", name, [x], epsilon=b.epsilon, center=b.center, scale=b.scale)


class LayerScale(BlockBase):
    """A learned per-channel scale (ConvNeXt, CaiT), initialised to `init`."""

    type: Literal["layer_scale"]
    init: Float = 1e-6


@register(LayerScale)
def lower_layer_scale(g, b: LayerScale, x: str, name: str) -> str:
    return g.add("layer_scale", name, [x], init=b.init)


class Identity(BlockBase):
    """Passes its input on (a named no-op layer)."""

    type: Literal["identity"]


@register(Identity)
def lower_identity(g, b: Identity, x: str, name: str) -> str:
    return g.add("identity", name, [x])


class Upsample(BlockBase):
    type: Literal["upsample"]
    size: IntOrPair = 2
    interpolation: Literal["nearest", "bilinear"] = "nearest"


@register(Upsample)
def lower_upsample(g, b: Upsample, x: str, name: str) -> str:
    return g.add("upsample", name, [x], size=pair(b.size), interpolation=b.interpolation)


class SqueezeExcite(BlockBase):
    """Squeeze-and-excitation (Hu et al. 2018): global average pool, a 1x1 conv to the
    squeeze width with `activation`, a 1x1 conv back to the input width with the `gate`,
    and the input multiplied by it.

    The squeeze width is `filters` when given, else `ratio` x the input channels:
    ``max(1, int(c * ratio))`` (EfficientNet), or ``make_divisible(c * ratio, divisor)``
    with a `divisor` (MobileNetV3). `separate_activations` puts the two activations in
    their own layers (`act_name`, `gate_name`) instead of fusing them into the convs.
    """

    width_fields = ("filters",)
    type: Literal["squeeze_excite"]
    ratio: Float = Field(default=0.25, gt=0, le=1)
    filters: PosInt | None = None
    divisor: PosInt | None = None
    activation: Activation = "relu"
    gate: Literal["sigmoid", "hard_sigmoid"] = "sigmoid"
    separate_activations: Bool = False
    bias: Bool = True
    kernel_initializer: Initializer | None = None
    pool_name: str = "{name}_squeeze"
    reduce_name: str = "{name}_reduce"
    act_name: str = "{name}_reduce_act"
    expand_name: str = "{name}_expand"
    gate_name: str = "{name}_gate"
    excite_name: str = "{name}_excite"

    @model_validator(mode="after")
    def _one_width(self):
        if self.filters is not None and "ratio" in self.model_fields_set:
            raise ValueError("give ratio or filters, not both")
        return self


@register(SqueezeExcite)
def lower_squeeze_excite(g, b: SqueezeExcite, x: str, name: str) -> str:
    shape = g.shape(x)
    if len(shape) != 3:
        raise g.error(f"squeeze_excite needs a (H, W, C) input (got shape {tuple(shape)})")
    c = shape[2]
    if b.filters is not None:
        squeeze = b.filters
    elif b.divisor is not None:
        squeeze = make_divisible(c * b.ratio, b.divisor)
    else:
        squeeze = max(1, int(c * b.ratio))
    sep = b.separate_activations
    s = g.add("global_pool", g.fmt(b.pool_name, name), [x], mode="avg", keepdims=True)
    s = g.conv(s, squeeze, 1, g.fmt(b.reduce_name, name), padding="same", use_bias=b.bias,
               activation=None if sep else b.activation, kernel_initializer=b.kernel_initializer)
    if sep:
        s = g.act(s, b.activation, g.fmt(b.act_name, name))
    s = g.conv(s, c, 1, g.fmt(b.expand_name, name), padding="same", use_bias=b.bias,
               activation=None if sep else b.gate, kernel_initializer=b.kernel_initializer)
    if sep:
        s = g.act(s, b.gate, g.fmt(b.gate_name, name))
    return g.add("multiply", g.fmt(b.excite_name, name), [x, s])
