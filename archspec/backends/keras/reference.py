"""The reference outputs of a network from its graph and a weights file's arrays, for checking
an export that was made without a model (`via_ir.ArrayWeights`): the Keras model built from
the graph (`build.build_model`), the arrays set on it (`weights.set_arrays`, as
`load_weights` sets them), run, and dropped. On the JAX backend nothing here imports
TensorFlow, so ``export SPEC --weights FILE --format onnx`` checks itself against Keras in a
process that never loads it.

`choose_backend` runs before Keras is imported: it keeps the backend a user or an earlier
import chose, and otherwise picks JAX when it is installed (Keras reads ``KERAS_BACKEND`` once,
when it is first imported).
"""

from __future__ import annotations

import gc
import os
import sys

import numpy as np

from ...ir.graph import Graph

#: inputs run at a time (`exporting.verify.BATCH`'s convention)
BATCH = 32


def choose_backend() -> str | None:
    """The Keras backend a TensorFlow-free export runs its reference on, chosen before Keras is
    imported: Keras' own when it is imported already; else ``KERAS_BACKEND`` when the
    environment sets it; else "jax" when JAX imports (``KERAS_BACKEND`` is set to it, so that
    Keras takes it, over ``~/.keras/keras.json`` too); else None (no backend without
    TensorFlow: the caller takes the TensorFlow path)."""
    if "keras" in sys.modules:
        return sys.modules["keras"].backend.backend()
    chosen = os.environ.get("KERAS_BACKEND", "").strip()
    if chosen:
        return chosen
    try:
        import jax  # noqa: F401
    except Exception:  # not installed, or an install that does not import: not a backend
        return None
    os.environ["KERAS_BACKEND"] = "jax"
    return "jax"


def reference_outputs(graph: Graph, arrays: dict, x, batch: int = BATCH, release: bool = False) -> list[np.ndarray]:
    """The outputs on `x` of the Keras model built from `graph` (seed 0) with `arrays` set
    (`weights.read_weights`' dict; a layer it lacks keeps its initial weights, a
    Normalization given its statistics in the spec has none to set): float32 arrays, one per
    output, run `batch` inputs at a time with ``training=False``. The model is dropped and
    Keras' session cleared before this returns, so its memory goes with it. With `release`,
    each array is dropped from `arrays` (the caller's dict, emptied) as soon as its variable
    holds its value, so the arrays and the model are not both held whole (VGG-16: 0.55 GB less
    at the peak); give it when nothing reads the arrays after (the ONNX written already).

    The model is the one `load_weights` would give (`build_model`, then the arrays set), made
    quicker (`_built_with`, `_forward`)."""
    from . import load

    build = load()
    import keras

    model = run = None
    try:
        model = _built_with(build, keras, graph, arrays, release)
        run = _forward(keras, model)
        outs = []
        for i in range(0, len(x), batch):
            y = run(x[i:i + batch])
            ys = list(y) if isinstance(y, (list, tuple)) else [y]
            outs.append([np.asarray(keras.ops.convert_to_numpy(o), dtype=np.float32) for o in ys])
            del y, ys
    finally:
        del model, run
        keras.backend.clear_session()
        gc.collect()
    return [np.concatenate([b[k] for b in outs]) for k in range(len(outs[0]))] if outs else []


def _built_with(build, keras, graph: Graph, arrays: dict, release: bool = False):
    """`build.build_model(graph, seed=0)` with `arrays` as the initial values of their layers'
    variables: the model is built in a ``keras.StatelessScope``, where Keras defers every
    variable's initial value to the scope's exit; the deferred initializers of the layers in
    `arrays` are replaced by their arrays (on JAX each random initializer compiles an XLA
    program per shape: 10 s of ResNet-50's 11 s build, for values thrown away). A variable
    that Keras initialized anyway is assigned after; every layer's shapes are checked before
    (`weights.layers_for_arrays`), and each layer that derives state from its weights (a
    Normalization) derives it again, as `weights.set_arrays` does. With `release`, each
    array leaves `arrays` once its variable holds it."""
    from .weights import layers_for_arrays

    taken: set[int] = set()

    def initial(var, got: list, j: int):
        def init(shape, dtype=None):
            taken.add(id(var))
            a = got[j]
            if release:
                got[j] = None  # this init goes with the variable's deferred initializer, the array with it
            return np.asarray(a, dtype=keras.backend.standardize_dtype(dtype) if dtype is not None else None)

        return init

    with keras.StatelessScope():
        model = build.build_model(graph, seed=0)
        layers = layers_for_arrays(model, arrays)
        for name, got in arrays.items():
            for j, var in enumerate(layers[name].weights):
                if getattr(var, "_initializer", None) is not None:
                    var._initializer = initial(var, got, j)
    for name, got in arrays.items():  # leaving the scope initialized the variables
        for var, a in zip(layers[name].weights, got):
            if id(var) not in taken:
                var.assign(a)
    if release:
        arrays.clear()
    for layer in model.layers:
        finalize = getattr(layer, "finalize_state", None)
        if finalize is not None:
            finalize()
    return model


def _forward(keras, model):
    """The model's forward pass with ``training=False``: on JAX one jitted ``stateless_call``
    (one XLA compilation per batch shape, where calling the model compiles each op's shapes
    one at a time: 1.6 s against 5 s for ResNet-50's first batch); else the model's call."""
    if keras.backend.backend() != "jax":
        return lambda xb: model(xb, training=False)
    import jax

    trainable = [v.value for v in model.trainable_variables]
    other = [v.value for v in model.non_trainable_variables]
    fn = jax.jit(lambda tv, ntv, xb: model.stateless_call(tv, ntv, xb, training=False)[0])
    return lambda xb: fn(trainable, other, xb)
