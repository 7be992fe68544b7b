"""`export(..., bake_preprocessing=True)`: the spec's `input.preprocess` put in front of the
exported network as fixed Keras layers, so the artefact takes images as stored (RGB
0..255). The network itself is unchanged: its layers are re-created from their configs
on the new input, with the same names and weights (so the artefact's layers still match
keras.applications'), and the steps of `archspec.language.preprocess` become:

- ``caffe``: one 1x1 `Conv2D` (``preprocess_caffe``): a kernel that reverses the channels
  (RGB -> BGR) and a bias of minus the BGR mean: x[c] * 1 + 0 + 0 - mean[c], exactly the
  float32 values keras' ``preprocess_input`` computes;
- ``torch``: `Rescaling` by 1/255 (``preprocess_torch_rescaling``), then `Normalization`
  with the mean and the std squared (``preprocess_torch_normalization``);
- ``tf``: `Rescaling` by 1/127.5 with offset -1 (``preprocess_tf``).

Every one of them is a layer the ONNX emitters, SavedModel and `.keras` already know, and
none is trainable. `none` bakes nothing.
"""

from __future__ import annotations

import numpy as np

from ..backends.keras import keras
from ..core.errors import ArchspecError
from ..language.preprocess import CAFFE_MEAN_BGR, TORCH_MEAN, TORCH_STD, check_channels, check_mode


def layers_for(mode: str, taken: set[str]) -> list:
    """The fixed Keras layers of `mode` (unbuilt), named ``preprocess_<mode>...`` (with a
    suffix when the network already has such a name)."""
    k = keras()
    check_mode(mode)

    def name(base: str) -> str:
        n, i = base, 1
        while n in taken:
            n, i = f"{base}_{i}", i + 1
        taken.add(n)
        return n

    if mode == "caffe":
        return [k.layers.Conv2D(3, 1, use_bias=True, name=name("preprocess_caffe"), trainable=False,
                                dtype="float32")]
    if mode == "torch":
        return [k.layers.Rescaling(1.0 / 255.0, name=name("preprocess_torch_rescaling"), dtype="float32"),
                k.layers.Normalization(mean=list(TORCH_MEAN), variance=[s * s for s in TORCH_STD],
                                       name=name("preprocess_torch_normalization"), dtype="float32")]
    if mode == "tf":
        return [k.layers.Rescaling(1.0 / 127.5, offset=-1.0, name=name("preprocess_tf"), dtype="float32")]
    return []


def bake(model, mode: str):
    """A new Keras model: `mode`'s preprocessing layers, then `model`'s layers re-created on
    their output (same names, configs and weights); `model` itself is untouched. `none`
    returns `model` as it is."""
    if check_mode(mode) == "none":
        return model
    k = keras()
    if len(model.inputs) != 1:
        raise ArchspecError(f"bake_preprocessing needs a single-input model (got {len(model.inputs)} inputs)")
    shape = tuple(model.inputs[0].shape[1:])
    problem = check_channels(mode, shape[-1])
    if problem:
        raise ArchspecError(f"bake_preprocessing: {problem}")
    pre = layers_for(mode, {layer.name for layer in model.layers})
    inp = k.Input(shape=shape, name=model.inputs[0].name, dtype="float32")
    x = inp
    for layer in pre:
        x = layer(x)
    if mode == "caffe":  # RGB -> BGR as a permutation kernel, minus the BGR mean as its bias
        kernel = np.zeros((1, 1, 3, 3), np.float32)
        for out in range(3):
            kernel[0, 0, 2 - out, out] = 1.0
        pre[0].set_weights([kernel, -np.asarray(CAFFE_MEAN_BGR, np.float32)])
    tensors = {id(model.inputs[0]): x}
    for layer in model.layers:
        if isinstance(layer, k.layers.InputLayer):
            continue
        if len(layer._inbound_nodes) != 1:
            raise ArchspecError(f"bake_preprocessing: layer {layer.name!r} is used {len(layer._inbound_nodes)} "
                                f"times; one use per layer is needed")
        node = layer._inbound_nodes[0]
        args, kwargs = node.arguments.fill_in(tensors)
        twin = layer.__class__.from_config(layer.get_config())
        outs = twin(*args, **kwargs)
        for old, new in zip(k.tree.flatten(node.output_tensors), k.tree.flatten(outs)):
            tensors[id(old)] = new
        if layer.weights:
            twin.set_weights(layer.get_weights())
    baked = k.Model(inp, [tensors[id(o)] for o in model.outputs], name=model.name)
    if list(baked.output_names) != list(model.output_names):  # a bug if it fires
        raise ArchspecError(f"bake_preprocessing: outputs {baked.output_names} differ from {model.output_names}")
    return baked
