"""Keras → ONNX through TensorFlow and tf2onnx (`tf2onnx.convert.from_keras` with an
explicit input signature, so EfficientNet's Normalization statistics are constants, not
extra graph inputs). The workarounds tf2onnx needs live here:

* Grouped convolutions (AlexNet): Keras runs ``Conv2D(groups=g)`` through an XLA-compiled
  function on TensorFlow's CPU, which tf2onnx cannot convert. For the conversion only, the
  model is cloned with those layers replaced by a subclass whose convolution calls
  ``tf.nn.convolution`` directly; tf2onnx turns that into an ONNX ``Conv`` with ``group``.
* Large Dense kernels (VGG's fc1 is 102.8M values): freezing them as constants makes
  TensorFlow and tf2onnx copy them over and over (VGG16 went past 24 GB); they are fed in
  as function inputs instead and made initializers afterwards (4.7 GB).
* ``Erfc`` (exact GELU, ConvNeXt): tf2onnx 1.17 has no handler; written as ``1 - Erf``.
"""

from __future__ import annotations

import numpy as np

from ...core.errors import MissingDependency
from . import passes as onnx_passes
from ...core.progress import Heartbeat
from ..keras import keras, tensorflow

#: Dense kernels at least this large are kept out of the TensorFlow graph during conversion
LARGE_WEIGHT = 4_000_000


def convert(model, opset: int, input_name: str, input_shape, say):
    """The model as an ONNX ModelProto (not yet finished: see `onnx_passes.finish`)."""
    tf = tensorflow()

    try:
        import tf2onnx
    except ImportError as exc:  # pragma: no cover
        raise MissingDependency(f"ONNX export needs tf2onnx ({exc}); pip install tf2onnx onnx onnxruntime") from None
    register_tf2onnx_handlers()
    conv_model = onnx_ready_model(model)
    sig = [tf.TensorSpec((None, *input_shape), tf.float32, name=input_name)]
    large = large_kernels(conv_model)
    if not large:
        with Heartbeat(say, f"converting with tf2onnx (opset {opset})…"):
            proto, _ = tf2onnx.convert.from_keras(conv_model, input_signature=sig, opset=opset)
        return proto
    return _convert_large_weights_as_inputs(conv_model, large, sig, opset, say)


def onnx_ready_model(model):
    """The model as tf2onnx can convert it: grouped `Conv2D` layers replaced by a subclass
    that calls ``tf.nn.convolution`` directly. Returns `model` itself when it has no
    grouped convolution."""
    k = keras()
    import tensorflow as tf

    def grouped(layer):
        return type(layer) is k.layers.Conv2D and getattr(layer, "groups", 1) > 1

    if not any(grouped(layer) for layer in model._flatten_layers(include_self=False)):
        return model

    class _GroupedConv2D(k.layers.Conv2D):
        def convolution_op(self, inputs, kernel):
            return tf.nn.convolution(inputs, kernel, strides=list(self.strides), padding=self.padding.upper(),
                                     dilations=list(self.dilation_rate),
                                     data_format="NHWC" if self.data_format == "channels_last" else "NCHW")

    def clone(layer):
        cls = _GroupedConv2D if grouped(layer) else layer.__class__
        return cls.from_config(layer.get_config())

    clone_model = k.models.clone_model(model, clone_function=clone)
    old = {layer.name: layer for layer in model.layers}
    for layer in clone_model.layers:
        w = old[layer.name].get_weights()
        if w:
            layer.set_weights(w)
    return clone_model


def large_kernels(model) -> list:
    k = keras()
    return [layer.kernel for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, k.layers.Dense) and int(np.prod(layer.kernel.shape)) >= LARGE_WEIGHT]


def _convert_large_weights_as_inputs(model, large, sig, opset, say):
    """Convert with the large kernels fed in as function inputs (through a Keras
    StatelessScope), then make those inputs ONNX initializers holding the weights."""
    import tensorflow as tf
    import tf2onnx

    k = keras()
    names = [f"archspec_weight_{i}" for i in range(len(large))]
    sig = sig + [tf.TensorSpec(v.shape, v.dtype, name=n) for v, n in zip(large, names)]
    out_names = list(model.output_names)

    @tf.function(input_signature=sig)
    def forward(x, *weights):
        with k.StatelessScope(state_mapping=list(zip(large, weights))):
            y = model(x, training=False)
        ys = y if isinstance(y, (list, tuple)) else [y]
        return dict(zip(out_names, ys))

    with Heartbeat(say, f"converting with tf2onnx (opset {opset}; {len(large)} large kernels as initializers)…"):
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=sig, opset=opset)
    weights = {n: k.ops.convert_to_numpy(v) for v, n in zip(large, names)}
    # tensors the function captured (Normalization's mean and variance) come back as graph
    # inputs too, the trap `from_keras` avoids: they are constants, stored as initializers
    inputs = {i.name for i in proto.graph.input}
    for outer, inner in forward.get_concrete_function().graph.captures:
        if inner.name in inputs and outer.dtype != tf.resource:
            weights[inner.name] = outer.numpy()
    proto = onnx_passes.inputs_to_initializers(proto, weights)
    return onnx_passes.order_outputs(proto, out_names)  # dict outputs come back sorted by name


_HANDLERS_REGISTERED = False


def register_tf2onnx_handlers() -> None:
    """TensorFlow ops tf2onnx 1.17 cannot convert, written with ONNX ops it has:

    - ``Erfc`` (exact GELU, ``tf.nn.gelu(approximate=False)``, as ConvNeXt uses):
      ``erfc(x) = 1 - erf(x)``; ONNX has ``Erf`` from opset 9.
    """
    global _HANDLERS_REGISTERED
    if _HANDLERS_REGISTERED:
        return
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class _Erfc:  # noqa: F841 - registered by the decorator
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            dtype = ctx.get_dtype(node.input[0])
            node.type = "Erf"
            out = node.output[0]
            one = ctx.make_const(utils.make_name("erfc_one"), np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype)))
            sub = ctx.insert_new_node_on_output("Sub", out, inputs=[one.output[0], out],
                                                name=utils.make_name(f"{node.name}_erfc"))
            ctx.set_dtype(sub.output[0], dtype)
            ctx.copy_shape(out, sub.output[0])

    _HANDLERS_REGISTERED = True
