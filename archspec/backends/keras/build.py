"""Graph -> keras.Model. The only module of the core that imports Keras.

Each graph node becomes exactly one `keras.layers` layer with the node's name. Only
`keras.layers` and `keras.ops` are used, so the model runs on the TensorFlow, JAX and
PyTorch backends of Keras 3. Custom layers (local response normalization) are
registered as serializable, so `.keras` files reopen after ``import archspec``.
"""

from __future__ import annotations

import random
import weakref

import keras
from keras import layers, ops

from ...ir.graph import Graph, Node
from ..optable import MERGE_OPS, PRIMITIVES, keras_class
# archspec's own layers live beside the op table (which names them), so the table never
# imports this package back; importing this module still registers them, as before
from ..keras_layers import CUSTOM_OBJECTS, LayerScale, LocalResponseNormalization  # noqa: F401


def _reg(v):
    return keras.regularizers.L2(v) if v else None


#: the graph each model was built from (`load_weights` compares a weights file with it)
_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
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
    """The Keras layer for one graph node: its op's entry in the op table
    (`backends.optable`), which codegen writes as source too."""
    entry = PRIMITIVES.get(node.op)
    if entry is None or not callable(entry.layer):
        raise ValueError(f"no Keras layer for op {node.op!r}")
    if node.attrs.get("float32") and dtype is not None:
        dtype = "float32"
    kw = {"name": node.name}
    if dtype is not None:
        kw["dtype"] = dtype
    cls, args = entry.layer(node.attrs)
    positional = []
    for arg in args:  # in order: each initializer's seed follows its position
        v = _init(arg.value) if arg.kind == "initializer" else _reg(arg.value) if arg.kind == "regularizer" \
            else arg.value
        if arg.positional:
            positional.append(v)
        else:
            kw[arg.key] = v
    return keras_class(cls, keras)(*positional, **kw)


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
    _GRAPHS[model] = graph
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
        tensors[node.name] = layer(ins if node.op in MERGE_OPS else ins[0])
    inputs = [tensors[n.name] for n in graph.inputs]
    outputs = [tensors[o] for o in graph.outputs]
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs,
                       name=graph.name)


def warm_up() -> None:
    """Make the backend's first device context now (TensorFlow prints its native start-up
    notices then), so that they happen where archspec filters them."""
    ops.convert_to_tensor([0.0])


def load_weights(model: keras.Model, path, skip=(), say=None, graph: Graph | None = None):
    """Load a weights file into a model built here, strictly and said (`weights.load_weights`:
    legacy keras.applications `.h5` by layer name, Keras 3 `.weights.h5` / `.keras` by their
    leaf layers' names, `.npz`; every layer set by archspec, the classifier of another width
    re-initialised, a stem over other input channels adapted, `skip` globs left at init, any
    other difference an error naming the layers). `graph`: the one `model` was built from
    (by default the one `build_model` recorded); `say`: where the summary line goes (by
    default standard error, so that `--json` output stays JSON). Returns the report."""
    from ...core.errors import ArchspecError
    from .weights import load_weights as load

    graph = graph if graph is not None else _GRAPHS.get(model)
    if graph is None:
        raise ArchspecError("load_weights needs the graph the model was built from (graph=...)")
    return load(model, graph, path, skip=skip, say=say)
