"""The op table: every primitive of the graph IR (`ir.graph.OPS`) described once, in one
`Primitive` entry of `PRIMITIVES`:

- `layer`: its Keras layer, as a class and constructor arguments (`Arg`). The builder
  (`keras.build.make_layer`) instantiates it and codegen (`codegen._layer`) writes it, so the
  generated source and the built model cannot disagree;
- `classes` and `from_keras`: the Keras classes that map back to the op, and their config ->
  the op's attributes (`onnx.via_ir._layer_attrs`, which rebuilds a Graph from any Keras model);
- `onnx`: the name of its emitter in `backends/onnx/ops.py` (`onnx_ops.EMITTERS` is made from it);
- `label`: its short label in the diagram (`views.diagram.op_label`);
- `merge`: whether the layer takes a list of tensors (add, multiply, concat).

The IR's own shape / parameter / MAC inference stays in `ir.graph` (the IR does not depend on
backends); tests/test_optable.py checks that this table covers exactly `ir.graph.OPS`, that
every entry is complete, and that each op's Keras layer maps back to its attributes.

Importing this module imports neither Keras, TensorFlow, ONNX nor numpy: the Keras classes are
named here (``"layers.Conv2D"``, as the generated source writes them) and resolved by
`keras_class` when a framework is at hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..core.errors import ArchspecError
from ..ir.graph import OPS


class _Sentinel:
    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


#: an `Arg` without a Keras default (always written)
REQUIRED = _Sentinel("<required>")
#: the entries of `input` that the graph walkers handle themselves: the builder makes it with
#: ``keras.Input``, `via_ir` reads ``InputLayer`` and adds the input's NHWC -> NCHW transpose,
#: the codegen template writes ``keras.Input``
BY_WALKER = _Sentinel("<the graph walker's>")


@dataclass(frozen=True)
class Arg:
    """One constructor argument of a Keras layer: keyword, value, whether it is written
    positionally, and Keras' default (codegen leaves out a keyword equal to it). `kind`
    "initializer" or "regularizer": the value is the IR's (a name, a config, an L2 factor),
    the builder makes the Keras object from it and codegen writes the expression."""

    key: str
    value: Any
    positional: bool = False
    default: Any = REQUIRED
    kind: str = ""


@dataclass(frozen=True)
class Primitive:
    op: str
    #: attrs -> (Keras class as written in source, constructor args); BY_WALKER for input
    layer: Callable[[dict], tuple[str, list[Arg]]] | _Sentinel
    #: the Keras classes (as in `layer`) whose layers map back to this op
    classes: tuple[str, ...] | _Sentinel
    #: (layer, its config, its class as in `classes`) -> the op's attributes
    from_keras: Callable[[Any, dict, str], dict] | _Sentinel
    #: the name of the op's emitter in backends/onnx/ops.py
    onnx: str | _Sentinel
    #: attrs -> the diagram's short label
    label: Callable[[dict], str]
    merge: bool = False


# ---------------------------------------------------------------- helpers


def compact(v) -> Any:
    """(3, 3) -> 3; (1, 7) stays; Keras reads both the same."""
    if isinstance(v, (list, tuple)):
        t = tuple(v)
        return t[0] if len(t) == 2 and t[0] == t[1] else t
    return v


def short_padding(v) -> Any:
    """ZeroPadding2D's ((t, b), (l, r)) in its shortest equivalent form."""
    (t, b), (l, r) = v
    if t == b == l == r:
        return t
    if t == b and l == r:
        return (t, l)
    return ((t, b), (l, r))


def act_name(v) -> str | None:
    """A Keras activation (name or function) as the IR's name; None for linear."""
    if v is None:
        return None
    name = v if isinstance(v, str) else getattr(v, "__name__", None) or str(v)
    return None if name == "linear" else name


def _t(v):
    return tuple(v) if isinstance(v, (list, tuple)) else v


def _k(v) -> str:
    a, b = (v if isinstance(v, (list, tuple)) else (v, v))
    return f"{a}\u00d7{b}"


def _s(v) -> str:
    a = v[0] if isinstance(v, (list, tuple)) else v
    return f"/{a}" if a and a != 1 else ""


def _undilated(layer, c, what: str) -> None:
    if tuple(_t(c["dilation_rate"])) not in ((1, 1), 1):
        raise ArchspecError(f"layer {layer.name!r}: dilated {what} convolutions have no IR op")


def _last_axis(layer, c, what: str, extra: bool = False) -> None:
    last = len(layer.input.shape) - 1
    if c["axis"] not in (-1, [-1], last, [last]) or extra:
        raise ArchspecError(f"layer {layer.name!r}: {what} on axis {c['axis']} (the IR's is the last)")


A = Arg


# ---------------------------------------------------------------- convolutions and dense


def _conv2d(a):
    return "layers.Conv2D", [
        A("filters", a["filters"], True), A("kernel_size", compact(a["kernel"]), True),
        A("strides", compact(a["strides"]), default=1), A("padding", a["padding"], default="valid"),
        A("dilation_rate", compact(a["dilation"]), default=1), A("groups", a["groups"], default=1),
        A("use_bias", a["use_bias"], default=True), A("activation", a["activation"], default=None),
        A("kernel_initializer", a["kernel_initializer"], default="glorot_uniform", kind="initializer"),
        A("bias_initializer", a["bias_initializer"], default="zeros", kind="initializer"),
        A("kernel_regularizer", a["kernel_regularizer"], default=None, kind="regularizer")]


def _conv2d_back(layer, c, cls):
    return dict(filters=c["filters"], kernel=_t(c["kernel_size"]), strides=_t(c["strides"]), padding=c["padding"],
                dilation=_t(c["dilation_rate"]), groups=c["groups"], use_bias=c["use_bias"],
                activation=act_name(c["activation"]))


def _conv2d_label(a):
    g = a.get("groups", 1)
    return f"conv {_k(a['kernel'])}{_s(a.get('strides', 1))} {a['filters']}" + (f" g{g}" if g > 1 else "")


def _depthwise(a):
    return "layers.DepthwiseConv2D", [
        A("kernel_size", compact(a["kernel"]), True), A("strides", compact(a["strides"]), default=1),
        A("padding", a["padding"], default="valid"), A("depth_multiplier", a["depth_multiplier"], default=1),
        A("use_bias", a["use_bias"], default=True), A("activation", a["activation"], default=None),
        A("depthwise_initializer", a["depthwise_initializer"], default="glorot_uniform", kind="initializer"),
        A("depthwise_regularizer", a["depthwise_regularizer"], default=None, kind="regularizer")]


def _depthwise_back(layer, c, cls):
    _undilated(layer, c, "depthwise")
    return dict(kernel=_t(c["kernel_size"]), strides=_t(c["strides"]), padding=c["padding"],
                depth_multiplier=c["depth_multiplier"], use_bias=c["use_bias"], activation=act_name(c["activation"]))


def _separable(a):
    return "layers.SeparableConv2D", [
        A("filters", a["filters"], True), A("kernel_size", compact(a["kernel"]), True),
        A("strides", compact(a["strides"]), default=1), A("padding", a["padding"], default="valid"),
        A("depth_multiplier", a["depth_multiplier"], default=1), A("use_bias", a["use_bias"], default=True),
        A("activation", a["activation"], default=None),
        A("depthwise_initializer", a["kernel_initializer"], default="glorot_uniform", kind="initializer"),
        A("pointwise_initializer", a["kernel_initializer"], default="glorot_uniform", kind="initializer"),
        A("pointwise_regularizer", a["kernel_regularizer"], default=None, kind="regularizer")]


def _separable_back(layer, c, cls):
    _undilated(layer, c, "separable")
    return dict(filters=c["filters"], kernel=_t(c["kernel_size"]), strides=_t(c["strides"]), padding=c["padding"],
                depth_multiplier=c["depth_multiplier"], use_bias=c["use_bias"], activation=act_name(c["activation"]))


def _conv_transpose(a):
    return "layers.Conv2DTranspose", [
        A("filters", a["filters"], True), A("kernel_size", compact(a["kernel"]), True),
        A("strides", compact(a["strides"]), default=1), A("padding", a["padding"], default="valid"),
        A("use_bias", a["use_bias"], default=True), A("activation", a["activation"], default=None),
        A("kernel_initializer", a["kernel_initializer"], default="glorot_uniform", kind="initializer"),
        A("bias_initializer", a["bias_initializer"], default="zeros", kind="initializer"),
        A("kernel_regularizer", a["kernel_regularizer"], default=None, kind="regularizer")]


def _conv_transpose_back(layer, c, cls):
    _undilated(layer, c, "transposed")
    if c.get("output_padding") is not None:
        raise ArchspecError(f"layer {layer.name!r}: a transposed convolution with output_padding "
                            f"{c['output_padding']} has no IR op")
    return dict(filters=c["filters"], kernel=_t(c["kernel_size"]), strides=_t(c["strides"]), padding=c["padding"],
                use_bias=c["use_bias"], activation=act_name(c["activation"]))


def _conv_transpose_label(a):
    s = a.get("strides", 1)
    s = s[0] if isinstance(s, (list, tuple)) else s
    return f"convT {_k(a['kernel'])}" + (f" \u00d7{s}" if s and s != 1 else "") + f" {a['filters']}"


def _dense(a):
    return "layers.Dense", [
        A("units", a["units"], True), A("activation", a["activation"], default=None),
        A("use_bias", a["use_bias"], default=True),
        A("kernel_initializer", a["kernel_initializer"], default="glorot_uniform", kind="initializer"),
        A("bias_initializer", a["bias_initializer"], default="zeros", kind="initializer"),
        A("kernel_regularizer", a["kernel_regularizer"], default=None, kind="regularizer"),
        A("bias_regularizer", a.get("bias_regularizer"), default=None, kind="regularizer")]


def _dense_back(layer, c, cls):
    return dict(units=c["units"], use_bias=c["use_bias"], activation=act_name(c["activation"]))


def _dense_label(a):
    return f"dense {a['units']}" + (f" {a['activation']}" if a.get("activation") not in (None, "linear") else "")


# ---------------------------------------------------------------- normalizations


def _batch_norm(a):
    return "layers.BatchNormalization", [
        A("axis", -1, default=-1), A("epsilon", a["epsilon"], default=1e-3),
        A("momentum", a["momentum"], default=0.99), A("center", a["center"], default=True),
        A("scale", a["scale"], default=True)]


def _batch_norm_back(layer, c, cls):
    _last_axis(layer, c, "batch norm")
    return dict(epsilon=c["epsilon"], momentum=c["momentum"], center=c["center"], scale=c["scale"])


def _layer_norm(a):
    return "layers.LayerNormalization", [
        A("axis", -1, default=-1), A("epsilon", a["epsilon"], default=1e-3), A("center", a["center"], default=True),
        A("scale", a["scale"], default=True)]


def _layer_norm_back(layer, c, cls):
    _last_axis(layer, c, "layer norm", bool(c.get("rms_scaling")))
    return dict(epsilon=c["epsilon"], center=c["center"], scale=c["scale"])


def _group_norm(a):
    return "layers.GroupNormalization", [
        A("groups", a["groups"], default=32), A("axis", -1, default=-1), A("epsilon", a["epsilon"], default=1e-3),
        A("center", a["center"], default=True), A("scale", a["scale"], default=True)]


def _group_norm_back(layer, c, cls):
    _last_axis(layer, c, "group norm")
    groups = c["groups"]
    if groups == -1:  # Keras' instance normalization: one group a channel
        groups = int(layer.input.shape[-1])
    return dict(groups=groups, epsilon=c["epsilon"], center=c["center"], scale=c["scale"])


def _normalization(a):
    return "layers.Normalization", [A("axis", -1, default=-1), A("mean", a.get("mean"), default=None),
                                    A("variance", a.get("variance"), default=None)]


def _normalization_back(layer, c, cls):
    if c.get("invert"):
        raise ArchspecError(f"layer {layer.name!r}: an inverted Normalization has no IR op")
    return dict(mean=c.get("mean"), variance=c.get("variance"))


def _lrn(a):
    return "LocalResponseNormalization", [
        A("depth", int(a["depth"]), default=5), A("k", float(a["k"]), default=2.0),
        A("alpha", float(a["alpha"]), default=1e-4), A("beta", float(a["beta"]), default=0.75)]


# ---------------------------------------------------------------- activations, merges, pooling


def _activation(a):
    if a["fn"] == "relu6":
        return "layers.ReLU", [A("max_value", 6.0, True)]
    return "layers.Activation", [A("activation", a["fn"], True)]


def _activation_back(layer, c, cls):
    if cls == "layers.Activation":
        return dict(fn=act_name(c["activation"]) or "linear")
    if not c.get("negative_slope") and not c.get("threshold"):  # ReLU
        if c.get("max_value") == 6.0:
            return dict(fn="relu6")
        if c.get("max_value") is None:
            return dict(fn="relu")
    raise ArchspecError(f"layer {layer.name!r}: ReLU({c}) has no IR op")


def _concat(a):
    axis = a.get("axis", -1)
    return "layers.Concatenate", [A("axis", axis if axis < 0 else axis + 1, default=-1)]


def _concat_back(layer, c, cls):
    axis = c["axis"]
    return dict(axis=axis if axis < 0 else axis - 1)


def _pool(cls):
    def layer(a):
        pool = compact(a["pool"])
        return cls, [A("pool_size", pool, True), A("strides", compact(a["strides"]), default=pool),
                     A("padding", a["padding"], default="valid")]
    return layer


def _pool_back(layer, c, cls):
    return dict(pool=_t(c["pool_size"]), strides=_t(c["strides"]), padding=c["padding"])


def _pool_label(kind):
    return lambda a: f"{kind} pool {_k(a['pool'])}{_s(a.get('strides') or a['pool'])}"


def _global_pool(a):
    cls = "layers.GlobalAveragePooling2D" if a["mode"] == "avg" else "layers.GlobalMaxPooling2D"
    return cls, [A("keepdims", bool(a.get("keepdims", False)), default=False)]


def _global_pool_back(layer, c, cls):
    return dict(mode="avg" if cls == "layers.GlobalAveragePooling2D" else "max", keepdims=bool(c.get("keepdims")))


def _crop_label(a):
    (t, b), (l, r) = a["cropping"]
    if t == b and l == r:
        return f"crop {t}\u00d7{l}"
    return f"crop {t},{b},{l},{r}"


def _no_args(cls):
    return lambda a: (cls, [])


def _no_attrs(layer, c, cls):
    return {}


def _plain(op):
    label = op.replace("_", " ")
    return lambda a: label


# ---------------------------------------------------------------- the table


def _p(op, layer, classes, from_keras, onnx, label=None, merge=False) -> Primitive:
    return Primitive(op, layer, classes, from_keras, onnx, label or _plain(op), merge)


_ENTRIES = [
    _p("input", BY_WALKER, BY_WALKER, BY_WALKER, BY_WALKER),
    _p("conv2d", _conv2d, ("layers.Conv2D",), _conv2d_back, "emit_conv2d", _conv2d_label),
    _p("depthwise_conv2d", _depthwise, ("layers.DepthwiseConv2D",), _depthwise_back, "emit_depthwise_conv2d",
       lambda a: f"dwconv {_k(a['kernel'])}{_s(a.get('strides', 1))}"),
    _p("separable_conv2d", _separable, ("layers.SeparableConv2D",), _separable_back, "emit_separable_conv2d",
       lambda a: f"sepconv {_k(a['kernel'])}{_s(a.get('strides', 1))} {a['filters']}"),
    _p("dense", _dense, ("layers.Dense",), _dense_back, "emit_dense", _dense_label),
    _p("batch_norm", _batch_norm, ("layers.BatchNormalization",), _batch_norm_back, "emit_batch_norm"),
    _p("layer_norm", _layer_norm, ("layers.LayerNormalization",), _layer_norm_back, "emit_layer_norm"),
    _p("normalization", _normalization, ("layers.Normalization",), _normalization_back, "emit_normalization"),
    _p("rescaling", lambda a: ("layers.Rescaling", [A("scale", a["scale"], True),
                                                    A("offset", a["offset"], default=0.0)]),
       ("layers.Rescaling",), lambda layer, c, cls: dict(scale=c["scale"], offset=c["offset"]), "emit_rescaling"),
    _p("layer_scale", lambda a: ("LayerScale", [A("init", float(a["init"]), True)]), ("LayerScale",),
       lambda layer, c, cls: dict(init=c["init"]), "emit_layer_scale"),
    _p("lrn", _lrn, ("LocalResponseNormalization",),
       lambda layer, c, cls: dict(depth=c["depth"], k=c["k"], alpha=c["alpha"], beta=c["beta"]), "emit_lrn"),
    _p("activation", _activation, ("layers.ReLU", "layers.Activation"), _activation_back, "emit_activation",
       lambda a: str(a.get("fn", "activation"))),
    _p("add", _no_args("layers.Add"), ("layers.Add",), _no_attrs, "emit_add", merge=True),
    _p("multiply", _no_args("layers.Multiply"), ("layers.Multiply",), _no_attrs, "emit_multiply", merge=True),
    _p("concat", _concat, ("layers.Concatenate",), _concat_back, "emit_concat", lambda a: "concatenate", merge=True),
    _p("max_pool", _pool("layers.MaxPooling2D"), ("layers.MaxPooling2D",), _pool_back, "emit_max_pool",
       _pool_label("max")),
    _p("avg_pool", _pool("layers.AveragePooling2D"), ("layers.AveragePooling2D",), _pool_back, "emit_avg_pool",
       _pool_label("avg")),
    _p("global_pool", _global_pool, ("layers.GlobalAveragePooling2D", "layers.GlobalMaxPooling2D"),
       _global_pool_back, "emit_global_pool", lambda a: f"global {a.get('mode', 'avg')} pool"),
    _p("zero_padding", lambda a: ("layers.ZeroPadding2D", [A("padding", short_padding(a["padding"]), True)]),
       ("layers.ZeroPadding2D",), lambda layer, c, cls: dict(padding=tuple(tuple(p) for p in c["padding"])),
       "emit_zero_padding"),
    _p("dropout", lambda a: ("layers.Dropout", [
        A("rate", a["rate"], True),
        A("noise_shape", tuple(a["noise_shape"]) if a.get("noise_shape") else None, default=None)]),
       ("layers.Dropout",), lambda layer, c, cls: dict(rate=c["rate"]), "emit_passthrough",
       lambda a: f"dropout {a.get('rate', 0):g}"),
    _p("flatten", _no_args("layers.Flatten"), ("layers.Flatten",), _no_attrs, "emit_flatten"),
    _p("reshape", lambda a: ("layers.Reshape", [A("target_shape", tuple(a["target_shape"]), True)]),
       ("layers.Reshape",), lambda layer, c, cls: dict(target_shape=tuple(c["target_shape"])), "emit_reshape"),
    _p("identity", _no_args("layers.Identity"), ("layers.Identity",), _no_attrs, "emit_passthrough"),
    _p("upsample", lambda a: ("layers.UpSampling2D", [A("size", tuple(a["size"]), True),
                                                      A("interpolation", a["interpolation"], default="nearest")]),
       ("layers.UpSampling2D",), lambda layer, c, cls: dict(size=_t(c["size"]), interpolation=c["interpolation"]),
       "emit_upsample"),
    _p("cropping", lambda a: ("layers.Cropping2D", [A("cropping", short_padding(a["cropping"]), True)]),
       ("layers.Cropping2D",), lambda layer, c, cls: dict(cropping=tuple(tuple(p) for p in c["cropping"])),
       "emit_cropping", _crop_label),
    _p("conv_transpose2d", _conv_transpose, ("layers.Conv2DTranspose",), _conv_transpose_back,
       "emit_conv_transpose2d", _conv_transpose_label),
    _p("group_norm", _group_norm, ("layers.GroupNormalization",), _group_norm_back, "emit_group_norm",
       lambda a: f"group norm {a.get('groups', 32)}"),
    # keras.applications InceptionResNetV2's CustomScaleLayer: [x, branch] -> x + branch * scale
    _p("scaled_add", lambda a: ("CustomScaleLayer", [A("scale", float(a["scale"]), True)]), ("CustomScaleLayer",),
       lambda layer, c, cls: dict(scale=float(c["scale"])), "emit_scaled_add",
       lambda a: f"add \u00d7{a.get('scale', 1.0):g}", merge=True),
]

#: op -> its entry, in the order of `ir.graph.OPS`
PRIMITIVES: dict[str, Primitive] = {p.op: p for p in sorted(_ENTRIES, key=lambda p: OPS.index(p.op))}
#: the ops whose layer takes a list of tensors
MERGE_OPS = tuple(op for op, p in PRIMITIVES.items() if p.merge)


def primitive(op: str) -> Primitive | None:
    return PRIMITIVES.get(op)


def label(op: str, attrs: dict) -> str:
    """The diagram's short label of a node (an op the table lacks: its name)."""
    p = PRIMITIVES.get(op)
    return p.label(attrs) if p is not None else op.replace("_", " ")


def keras_class(name: str, keras):
    """The Keras class a table entry names: ``layers.X`` from `keras.layers`, the others
    archspec's own layers (`backends.keras_layers`)."""
    if name.startswith("layers."):
        return getattr(keras.layers, name[len("layers."):])
    from .keras_layers import CUSTOM_OBJECTS

    return CUSTOM_OBJECTS[f"archspec>{name}"]


def keras_classes(keras) -> dict[type, tuple[Primitive, str]]:
    """{Keras class: (its entry, its name as in the table)}, for mapping a layer back."""
    out = {}
    for p in PRIMITIVES.values():
        if isinstance(p.classes, _Sentinel):
            continue
        for name in p.classes:
            out[keras_class(name, keras)] = (p, name)
    return out
