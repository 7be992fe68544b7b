"""Graph -> keras.Model. The only module of the core that imports Keras.

Each graph node becomes exactly one `keras.layers` layer with the node's name. Only
`keras.layers` and `keras.ops` are used, so the model runs on the TensorFlow, JAX and
PyTorch backends of Keras 3. Custom layers (local response normalization) are
registered as serializable, so `.keras` files reopen after ``import archspec``.
"""

from __future__ import annotations

import random
import time

import keras
from keras import layers, ops

from ...ir.graph import Graph, Node


@keras.saving.register_keras_serializable(package="archspec")
class LocalResponseNormalization(layers.Layer):
    """Across-channel LRN (AlexNet, GoogLeNet), written with `keras.ops`:
    ``x / (k + alpha * sum_{depth channels around c} x**2) ** beta`` (as
    ``tf.nn.local_response_normalization`` with depth_radius = depth // 2)."""

    def __init__(self, depth: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth, self.k, self.alpha, self.beta = int(depth), float(k), float(alpha), float(beta)

    def call(self, x):
        r = self.depth // 2
        sq = ops.square(x)
        padded = ops.pad(sq, [[0, 0], [0, 0], [0, 0], [r, r]])
        c = ops.shape(x)[-1]
        total = padded[..., 0:c]
        for i in range(1, self.depth):
            total = total + padded[..., i:i + c]
        return x / ops.power(self.k + self.alpha * total, self.beta)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "depth": self.depth, "k": self.k, "alpha": self.alpha, "beta": self.beta}


@keras.saving.register_keras_serializable(package="archspec")
class LayerScale(layers.Layer):
    """A learned per-channel scale ``x * gamma`` (ConvNeXt), gamma initialised to `init`;
    its one weight is named `gamma`, as in keras.applications' ConvNeXt."""

    def __init__(self, init: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init = float(init)

    def build(self, input_shape):
        self.gamma = self.add_weight(name="gamma", shape=(input_shape[-1],),
                                     initializer=keras.initializers.Constant(self.init), trainable=True)

    def call(self, x):
        return x * ops.cast(self.gamma, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "init": self.init}


CUSTOM_OBJECTS = {"archspec>LocalResponseNormalization": LocalResponseNormalization,
                  "archspec>LayerScale": LayerScale}


def _reg(v):
    return keras.regularizers.L2(v) if v else None


_SEED: list = [None]  # (base seed, counter) while build_model(seed=...) runs


def _init(v):
    """A Keras initializer; under `build_model(seed=...)` each one gets its own seed,
    derived from the build's seed and its position, instead of a reseeded global RNG."""
    if v is None:
        return None
    state = _SEED[0]
    if state is None:
        return keras.initializers.get(v)
    py_state = random.getstate()  # an unseeded initializer draws its seed from Python's RNG
    init = keras.initializers.get(v)
    random.setstate(py_state)
    if state is not None and "seed" in init.get_config():
        state[1] += 1
        init = type(init).from_config({**init.get_config(), "seed": (state[0] * 1_000_003 + state[1]) % 2**31})
    return init


def make_layer(node: Node, dtype=None) -> layers.Layer:
    """The Keras layer for one graph node."""
    a, name, op = node.attrs, node.name, node.op
    if a.get("float32") and dtype is not None:
        dtype = "float32"
    kw = {"name": name}
    if dtype is not None:
        kw["dtype"] = dtype
    if op == "conv2d":
        return layers.Conv2D(a["filters"], a["kernel"], strides=a["strides"], padding=a["padding"],
                             dilation_rate=a["dilation"], groups=a["groups"], use_bias=a["use_bias"],
                             activation=a["activation"], kernel_initializer=_init(a["kernel_initializer"]),
                             bias_initializer=_init(a["bias_initializer"]),
                             kernel_regularizer=_reg(a["kernel_regularizer"]), **kw)
    if op == "depthwise_conv2d":
        return layers.DepthwiseConv2D(a["kernel"], strides=a["strides"], padding=a["padding"],
                                      depth_multiplier=a["depth_multiplier"], use_bias=a["use_bias"],
                                      activation=a["activation"],
                                      depthwise_initializer=_init(a["depthwise_initializer"]),
                                      depthwise_regularizer=_reg(a["depthwise_regularizer"]), **kw)
    if op == "batch_norm":
        return layers.BatchNormalization(axis=-1, epsilon=a["epsilon"], momentum=a["momentum"],
                                         center=a["center"], scale=a["scale"], **kw)
    if op == "activation":
        if a["fn"] == "relu6":
            return layers.ReLU(6.0, **kw)
        return layers.Activation(a["fn"], **kw)
    if op == "add":
        return layers.Add(**kw)
    if op == "multiply":
        return layers.Multiply(**kw)
    if op == "concat":
        axis = a.get("axis", -1)
        return layers.Concatenate(axis=axis if axis < 0 else axis + 1, **kw)
    if op == "max_pool":
        return layers.MaxPooling2D(a["pool"], strides=a["strides"], padding=a["padding"], **kw)
    if op == "avg_pool":
        return layers.AveragePooling2D(a["pool"], strides=a["strides"], padding=a["padding"], **kw)
    if op == "global_pool":
        cls = layers.GlobalAveragePooling2D if a["mode"] == "avg" else layers.GlobalMaxPooling2D
        return cls(keepdims=a.get("keepdims", False), **kw)
    if op == "zero_padding":
        return layers.ZeroPadding2D(a["padding"], **kw)
    if op == "dense":
        return layers.Dense(a["units"], activation=a["activation"], use_bias=a["use_bias"],
                            kernel_initializer=_init(a["kernel_initializer"]),
                            bias_initializer=_init(a["bias_initializer"]),
                            kernel_regularizer=_reg(a["kernel_regularizer"]),
                            bias_regularizer=_reg(a.get("bias_regularizer")), **kw)
    if op == "dropout":
        ns = a.get("noise_shape")
        return layers.Dropout(a["rate"], noise_shape=tuple(ns) if ns else None, **kw)
    if op == "flatten":
        return layers.Flatten(**kw)
    if op == "reshape":
        return layers.Reshape(tuple(a["target_shape"]), **kw)
    if op == "rescaling":
        return layers.Rescaling(a["scale"], a["offset"], **kw)
    if op == "normalization":
        return layers.Normalization(axis=-1, mean=a.get("mean"), variance=a.get("variance"), **kw)
    if op == "separable_conv2d":
        return layers.SeparableConv2D(a["filters"], a["kernel"], strides=a["strides"], padding=a["padding"],
                                      depth_multiplier=a["depth_multiplier"], use_bias=a["use_bias"],
                                      activation=a["activation"],
                                      depthwise_initializer=_init(a["kernel_initializer"]),
                                      pointwise_initializer=_init(a["kernel_initializer"]),
                                      pointwise_regularizer=_reg(a["kernel_regularizer"]), **kw)
    if op == "layer_norm":
        return layers.LayerNormalization(axis=-1, epsilon=a["epsilon"], center=a["center"], scale=a["scale"], **kw)
    if op == "layer_scale":
        return LayerScale(a["init"], **kw)
    if op == "identity":
        return layers.Identity(**kw)
    if op == "upsample":
        return layers.UpSampling2D(tuple(a["size"]), interpolation=a["interpolation"], **kw)
    if op == "lrn":
        return LocalResponseNormalization(a["depth"], a["k"], a["alpha"], a["beta"], **kw)
    raise ValueError(f"no Keras layer for op {op!r}")


def build_model(graph: Graph, *, precision: str | None = None, seed: int | None = None) -> keras.Model:
    """Build the Keras model of a graph.

    Args:
        graph: the lowered network.
        precision: None/"float32", "mixed_float16" or "mixed_bfloat16". Under mixed
            precision the classifier layer (and its softmax) stays in float32.
        seed: makes the initial weights reproducible.
    """
    _SEED[0] = [int(seed), 0] if seed is not None else None
    try:
        model = _build(graph, precision)
    finally:
        _SEED[0] = None
    if model.count_params() != graph.params:  # the IR and Keras read the same graph: a bug if it fires
        from ...core.errors import ArchspecError

        raise ArchspecError(f"Keras counts {model.count_params():,} params, the analysis {graph.params:,} "
                            f"(a bug in archspec: please report it with the spec)")
    return model


def _build(graph: Graph, precision: str | None) -> keras.Model:
    dtype = None
    if precision not in (None, "float32"):
        dtype = keras.DTypePolicy(precision)
    tensors = {}
    for node in graph.nodes:
        if node.op == "input":
            tensors[node.name] = keras.Input(shape=tuple(node.shape), name=node.name)
            continue
        layer = make_layer(node, dtype)
        ins = [tensors[i] for i in node.inputs]
        tensors[node.name] = layer(ins if node.op in ("add", "multiply", "concat") else ins[0])
    inputs = [tensors[n.name] for n in graph.inputs]
    outputs = [tensors[o] for o in graph.outputs]
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs,
                       name=graph.name)


def warm_up() -> None:
    """Make the backend's first device context now (TensorFlow prints its native start-up
    notices then), so that they happen where archspec filters them."""
    ops.convert_to_tensor([0.0])


def timed_build(graph: Graph, **kw) -> tuple[keras.Model, float]:
    t0 = time.perf_counter()
    model = build_model(graph, **kw)
    return model, time.perf_counter() - t0


def load_weights(model: keras.Model, path: str, skip_mismatch: bool = False) -> None:
    """Load weights into a built model: Keras 3 `.weights.h5` / `.keras` files, or legacy
    `.h5` files (the format keras.applications ships its weights in) matched by layer name,
    so a variant that keeps the names loads pretrained weights. `skip_mismatch` leaves the
    layers whose shapes differ as they are (a new classifier when fine-tuning)."""
    import os

    from ...core.errors import ArchspecError, Location, SpecError

    if not os.path.isfile(path):
        raise SpecError("no such weights file", Location(path))
    legacy = path.endswith((".h5", ".hdf5")) and not path.endswith(".weights.h5")
    try:
        if legacy:
            model.load_weights(path, by_name=True, skip_mismatch=skip_mismatch)
        else:
            model.load_weights(path, skip_mismatch=skip_mismatch)
    except (ValueError, KeyError, OSError) as exc:
        raise ArchspecError(f"cannot load weights from {path}: {exc}") from None
