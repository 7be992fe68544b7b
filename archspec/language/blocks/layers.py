"""Primitive blocks: one Keras layer each (or a conv with its padding, batch norm and
activation), so that a sequential network needs no special block.

Sub-layer names are templates over the block's ``{name}``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..common import (Activation, BlockBase, Bool, Float, Initializer, IntOrPair, PadSpec, Padding, PosFloat, PosInt,
    Rate, Strict)
from .registry import register
from ...core.units import pair


class BatchNormOptions(Strict):
    """Per-layer batch-norm settings; unset fields come from `defaults.batch_norm`."""

    epsilon: PosFloat | None = None
    momentum: Float | None = Field(default=None, ge=0, le=1)
    center: Bool | None = None
    scale: Bool | None = None


def _bn_kwargs(bn) -> dict:
    if isinstance(bn, BatchNormOptions):
        return bn.model_dump()
    return {}


def _act_name(g, template: str | None, name: str, fn: str | None) -> str:
    if template is None:
        template = "{name}_relu" if fn in ("relu", "relu6") else "{name}_activation"
    return g.fmt(template, name)


class ConvLike(BlockBase):
    """The fields conv, depthwise_conv and separable_conv share (lowered by `conv_like`):
    the window, the optional zero padding before the layer, batch norm and the activation
    after it, and the names of those layers."""

    kernel: IntOrPair = 3
    stride: IntOrPair = 1
    padding: Padding = "same"
    bias: Bool | None = Field(default=None, description="Default: defaults.conv_bias.")
    activation: Activation | None = Field(default=None, description="Default: defaults.activation; 'linear' for none.")
    bn: Bool | BatchNormOptions = False
    pad: PadSpec | None = Field(default=None, description="Zero padding layer before the conv.")
    conv_name: str = "{name}"
    bn_name: str = "{name}_bn"
    act_name: str | None = None
    pad_name: str = "{name}_pad"


class Conv(ConvLike):
    """A 2-D convolution, optionally with zero padding before it and batch norm and an
    activation after it. Without `bn` the activation is fused into the conv layer (as
    keras' VGG16 writes ``Conv2D(..., activation="relu")``)."""

    width_fields = ("filters",)
    type: Literal["conv"]
    filters: PosInt
    dilation: IntOrPair = 1
    groups: PosInt = 1
    kernel_initializer: Initializer | None = None

    @model_validator(mode="after")
    def _groups(self):
        if self.filters % self.groups:
            raise ValueError(f"filters must be divisible by groups (got filters={self.filters}, groups={self.groups})")
        return self


def conv_like(g, b, x: str, name: str, make) -> str:
    """What conv, depthwise_conv and separable_conv share: an optional zero padding, the
    layer itself (``make(x, layer_name, fused_activation)``), then batch norm and the
    activation, or, without `bn`, the activation fused into the layer."""
    fn = b.activation or g.defaults.activation
    if b.pad is not None:
        x = g.pad(x, b.pad, g.fmt(b.pad_name, name), kernel=b.kernel)
    x = make(x, g.fmt(b.conv_name, name), None if b.bn or fn == "linear" else fn)
    if b.bn:
        x = g.bn(x, g.fmt(b.bn_name, name), **_bn_kwargs(b.bn))
        x = g.act(x, fn, _act_name(g, b.act_name, name, fn))
    return x


@register(Conv)
def lower_conv(g, b: Conv, x: str, name: str) -> str:
    return conv_like(g, b, x, name, lambda x, n, act: g.conv(
        x, b.filters, b.kernel, n, strides=b.stride, padding=b.padding, use_bias=b.bias, groups=b.groups,
        dilation=b.dilation, kernel_initializer=b.kernel_initializer, activation=act))


class DepthwiseConv(ConvLike):
    """A depthwise convolution, with optional padding before and batch norm / activation after."""

    type: Literal["depthwise_conv"]
    depth_multiplier: PosInt | None = Field(default=None, description="Default: defaults.depth_multiplier.")
    kernel_initializer: Initializer | None = None


@register(DepthwiseConv)
def lower_depthwise_conv(g, b: DepthwiseConv, x: str, name: str) -> str:
    return conv_like(g, b, x, name, lambda x, n, act: g.dwconv(
        x, b.kernel, n, strides=b.stride, padding=b.padding,
        depth_multiplier=b.depth_multiplier or g.defaults.depth_multiplier, use_bias=b.bias,
        initializer=b.kernel_initializer, activation=act))


class BatchNorm(BlockBase, BatchNormOptions):
    type: Literal["batch_norm"]


@register(BatchNorm)
def lower_batch_norm(g, b: BatchNorm, x: str, name: str) -> str:
    return g.bn(x, name, epsilon=b.epsilon, momentum=b.momentum, center=b.center, scale=b.scale)


class ActivationBlock(BlockBase):
    type: Literal["activation"]
    activation: Activation | None = None


@register(ActivationBlock)
def lower_activation(g, b: ActivationBlock, x: str, name: str) -> str:
    fn = b.activation or g.defaults.activation
    if fn == "linear":
        raise g.error("an activation block with activation 'linear' does nothing; remove it")
    return g.act(x, fn, name)


class _Pool(BlockBase):
    """Max or average pooling, with an optional zero padding layer before it."""

    pool: IntOrPair = 2
    stride: IntOrPair | None = Field(default=None, description="Default: the pool size.")
    padding: Padding = "valid"
    pad: PadSpec | None = None
    pool_name: str = "{name}"
    pad_name: str = "{name}_pad"


class MaxPool(_Pool):
    type: Literal["max_pool"]


class AvgPool(_Pool):
    type: Literal["avg_pool"]


@register(AvgPool)
@register(MaxPool)
def lower_pool(g, b: _Pool, x: str, name: str) -> str:
    if b.pad is not None:
        x = g.pad(x, b.pad, g.fmt(b.pad_name, name), kernel=b.pool)
    pool = pair(b.pool)
    return g.add(b.type, g.fmt(b.pool_name, name), [x], pool=pool,
                 strides=pair(b.stride) if b.stride is not None else pool, padding=b.padding)


class GlobalPool(BlockBase):
    type: Literal["global_pool"]
    mode: Literal["avg", "max"] = "avg"
    keepdims: Bool = False


@register(GlobalPool)
def lower_global_pool(g, b: GlobalPool, x: str, name: str) -> str:
    return g.add("global_pool", name, [x], mode=b.mode, keepdims=b.keepdims)


class ZeroPadding(BlockBase):
    type: Literal["zero_padding"]
    padding: PadSpec = 1
    kernel: IntOrPair = Field(default=3, description="Kernel that padding 'correct' is computed for.")


@register(ZeroPadding)
def lower_zero_padding(g, b: ZeroPadding, x: str, name: str) -> str:
    return g.pad(x, b.padding, name, kernel=b.kernel)


class Dense(BlockBase):
    width_fields = ("units",)
    type: Literal["dense"]
    units: PosInt
    activation: Activation | None = Field(default=None, description="Default: defaults.activation; 'linear' for none.")
    bias: Bool = True
    kernel_initializer: Initializer | None = None


@register(Dense)
def lower_dense(g, b: Dense, x: str, name: str) -> str:
    return g.dense(x, b.units, name, activation=b.activation or g.defaults.activation, use_bias=b.bias,
                   kernel_initializer=b.kernel_initializer)


class Dropout(BlockBase):
    type: Literal["dropout"]
    rate: Rate
    spatial: Bool = Field(default=False, description="Drop whole examples' residual branch (noise shape (N,1,1,1)).")


@register(Dropout)
def lower_dropout(g, b: Dropout, x: str, name: str) -> str:
    if b.rate == 0:
        return x
    return g.add("dropout", name, [x], rate=b.rate, noise_shape=(None, 1, 1, 1) if b.spatial else None)


class Flatten(BlockBase):
    type: Literal["flatten"]


@register(Flatten)
def lower_flatten(g, b: Flatten, x: str, name: str) -> str:
    return g.add("flatten", name, [x])


class Reshape(BlockBase):
    type: Literal["reshape"]
    shape: list[PosInt] = Field(min_length=1, max_length=3)


@register(Reshape)
def lower_reshape(g, b: Reshape, x: str, name: str) -> str:
    return g.add("reshape", name, [x], target_shape=tuple(b.shape))


class Rescaling(BlockBase):
    """``x * scale + offset`` (keras' Rescaling); `scale` may be one value per channel."""

    type: Literal["rescaling"]
    scale: Float | list[Float] = 1.0
    offset: Float | list[Float] = 0.0


@register(Rescaling)
def lower_rescaling(g, b: Rescaling, x: str, name: str) -> str:
    return g.add("rescaling", name, [x], scale=b.scale, offset=b.offset)


class Normalization(BlockBase):
    """keras' Normalization layer: ``(x - mean) / sqrt(variance)``, its statistics stored as
    (non-trainable) weights. Unset mean/variance are weights to `adapt` or load."""

    type: Literal["normalization"]
    mean: list[Float] | None = None
    variance: list[Float] | None = None

    @model_validator(mode="after")
    def _both(self):
        if (self.mean is None) != (self.variance is None):
            raise ValueError("give both mean and variance, or neither")
        if self.variance is not None and any(v <= 0 for v in self.variance):
            raise ValueError(f"variance must be > 0 (got {self.variance})")
        return self


@register(Normalization)
def lower_normalization(g, b: Normalization, x: str, name: str) -> str:
    c = g.channels(x)
    for field in ("mean", "variance"):
        v = getattr(b, field)
        if v is not None and len(v) not in (1, c):
            raise g.error(f"{field} needs 1 or {c} values (got {len(v)})")
    return g.add("normalization", name, [x], mean=b.mean, variance=b.variance)


class LRN(BlockBase):
    """Local response normalization across channels (AlexNet, GoogLeNet):
    ``x / (k + alpha/n * sum_{window n} x^2) ** beta`` — with `alpha_scaled: false`
    the sum is multiplied by alpha itself (as AlexNet's paper writes it)."""

    type: Literal["lrn"]
    depth: PosInt = Field(default=5, description="n: the number of channels summed over.")
    k: Float = 2.0
    alpha: Float = 1e-4
    beta: Float = 0.75
    alpha_scaled: Bool = Field(default=False, description="Divide alpha by n (Caffe's convention).")

    @model_validator(mode="after")
    def _odd(self):
        if self.depth % 2 == 0:
            raise ValueError(f"depth must be odd (got depth={self.depth})")
        return self


@register(LRN)
def lower_lrn(g, b: LRN, x: str, name: str) -> str:
    alpha = b.alpha / b.depth if b.alpha_scaled else b.alpha
    return g.add("lrn", name, [x], depth=b.depth, k=b.k, alpha=alpha, beta=b.beta)


class Classifier(BlockBase):
    """The classification layer: `head.classes` outputs with `head.classifier_activation`,
    after a dropout of `head.dropout` when that is > 0.

    `style: conv` is MobileNet's 1x1-conv classifier (conv, reshape, activation layer);
    `separate_activation` puts the activation in its own layer named `name` (the
    source notes' ResNet-50 keeps its softmax in float32 that way).
    """

    type: Literal["classifier"]
    style: Literal["dense", "conv"] = "dense"
    separate_activation: Bool = False
    dropout_name: str = "{name}_dropout"
    dense_name: str = "{name}_dense"
    reshape_name: str = "{name}_reshape"
    kernel_initializer: Initializer | None = None
    bias_initializer: Initializer | None = None


@register(Classifier)
def lower_classifier(g, b: Classifier, x: str, name: str) -> str:
    head = g.spec.head
    g.classifiers += 1
    fn = head.classifier_activation
    if head.dropout > 0:
        x = g.add("dropout", g.fmt(b.dropout_name, name), [x], rate=head.dropout, noise_shape=None)
    if b.style == "conv":
        if len(g.shape(x)) != 3:
            raise g.error(f"a conv classifier needs a (H, W, C) input, e.g. global_pool with keepdims "
                          f"(got shape {g.shape(x)})")
        x = g.conv(x, head.classes, 1, g.fmt(b.dense_name, name), padding="same", use_bias=True,
                   kernel_initializer=b.kernel_initializer, bias_initializer=b.bias_initializer)
        x = g.add("reshape", g.fmt(b.reshape_name, name), [x], target_shape=(head.classes,))
        out = g.add("activation", name, [x], fn=fn or "linear", float32=True)
        return out
    if b.separate_activation:
        x = g.dense(x, head.classes, g.fmt(b.dense_name, name), activation=None,
                    kernel_initializer=b.kernel_initializer, bias_initializer=b.bias_initializer)
        return g.add("activation", name, [x], fn=fn or "linear", float32=True)
    out = g.dense(x, head.classes, name, activation=fn, kernel_initializer=b.kernel_initializer,
                  bias_initializer=b.bias_initializer)
    g.index[out].attrs["float32"] = True
    return out
