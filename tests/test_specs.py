"""Every bundled spec: the static analysis equals what Keras builds (parameter count and
every layer's output shape, MACs counted from Keras' kernels and shapes), and the block
registry and the union agree."""

import math
import typing

import numpy as np
import pytest

import archspec
from archspec.api import lower_spec
from archspec.language.blocks import BLOCK_MODELS, REGISTRY
from archspec.language.loader import bundled_names
from archspec.language.schema import Spec

NAMES = bundled_names()


def test_zoo_is_bundled():
    for name in ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50_cifar100"):
        assert name in NAMES


@pytest.mark.parametrize("name", [n for n in NAMES if n not in __import__("conftest").KERAS_BUILT_BY_FAMILY])
def test_static_analysis_equals_keras(name):
    graph = lower_spec(name)
    model = archspec.build(graph)
    assert model.count_params() == graph.params
    assert sum(int(w.numpy().size) for w in model.trainable_weights) == graph.trainable_params
    for node in graph.nodes:
        if node.op == "input":
            continue
        layer = model.get_layer(node.name)
        assert tuple(layer.output.shape[1:]) == tuple(node.shape), node.name
    assert len(model.layers) == len(graph.nodes)
    assert keras_macs(model) == graph.macs


def keras_macs(model) -> int:
    """Multiply-accumulates of the conv and dense layers, from Keras' own output shapes and
    kernels (one MAC per kernel weight per output position), not from archspec's graph."""
    import keras

    total = 0
    for layer in model.layers:
        positions = math.prod(layer.output.shape[1:-1])  # output pixels (dense: leading axes)
        if isinstance(layer, keras.layers.SeparableConv2D):
            total += positions * (int(np.prod(layer.depthwise_kernel.shape)) + int(np.prod(layer.pointwise_kernel.shape)))
        elif isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            total += positions * int(np.prod(layer.kernel.shape))
        else:
            assert not getattr(layer, "kernel", None), f"{layer.name}: a {type(layer).__name__} with a kernel"
    return total


def test_registry_and_union_agree():
    """The union has one member per registered family, tagged with its type, plus the
    member for the uses of types a spec defines itself."""
    from archspec.language.blocks import DEFINED_TAG, DefinedUse

    union = typing.get_args(typing.get_args(Spec.model_fields["stem"].annotation)[0])[0]
    members = {}
    for m in typing.get_args(union):
        model, tag = typing.get_args(m)[0], typing.get_args(m)[1].tag
        members[tag] = model
    assert members.pop(DEFINED_TAG) is DefinedUse
    assert set(members.values()) == set(BLOCK_MODELS) == {f.model for f in REGISTRY.values()}
    for tag, fam in REGISTRY.items():
        assert members[tag] is fam.model
        assert fam.model.model_fields["type"].annotation == typing.Literal[tag]
