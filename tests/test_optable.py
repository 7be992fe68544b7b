"""The op table (archspec/backends/optable.py) describes each IR primitive once: its Keras
layer (which the builder instantiates and codegen writes), the Keras layer -> attributes
inverse, its ONNX emitter and its diagram label. These tests check that it covers exactly the
IR's ops, that every entry is complete, and that each op's Keras layer maps back to the
attributes it was made from."""

import dataclasses
import subprocess
import sys

import pytest

from archspec.backends import optable
from archspec.backends.optable import BY_WALKER, PRIMITIVES
from archspec.ir.graph import INFER, OPS, Node

#: attributes the Keras config does not give back as the IR holds them (initial weights and
#: their regularizers, dropout's noise shape, the mixed-precision flag)
NOT_MAPPED_BACK = {"kernel_initializer", "bias_initializer", "depthwise_initializer", "kernel_regularizer",
                   "bias_regularizer", "depthwise_regularizer", "noise_shape", "float32"}

_CONV = dict(filters=8, kernel=(3, 3), strides=(2, 2), padding="same", dilation=(1, 1), groups=2, use_bias=False,
             activation="relu", kernel_initializer="he_normal", bias_initializer="zeros", kernel_regularizer=1e-4)

#: (op, attrs, input shapes): at least one per op of the IR but `input`, attributes as lowered
CASES = [
    ("conv2d", _CONV, [(8, 8, 4)]),
    ("conv2d", {**_CONV, "kernel": (1, 7), "strides": (1, 1), "dilation": (2, 2), "groups": 1, "use_bias": True,
                "activation": None, "padding": "valid"}, [(9, 16, 4)]),
    ("depthwise_conv2d", dict(kernel=(3, 3), strides=(2, 2), padding="same", depth_multiplier=2, use_bias=True,
                              activation="relu6", depthwise_initializer="glorot_uniform",
                              depthwise_regularizer=None), [(8, 8, 4)]),
    ("separable_conv2d", dict(filters=6, kernel=(3, 3), strides=(1, 1), padding="same", depth_multiplier=1,
                              use_bias=False, activation=None, kernel_initializer="glorot_uniform",
                              kernel_regularizer=None), [(8, 8, 4)]),
    ("dense", dict(units=5, activation="softmax", use_bias=True, kernel_initializer="glorot_uniform",
                   bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None), [(6,)]),
    ("batch_norm", dict(epsilon=1.001e-5, momentum=0.9, center=True, scale=False), [(8, 8, 4)]),
    ("layer_norm", dict(epsilon=1e-6, center=False, scale=True), [(8, 8, 4)]),
    ("normalization", dict(mean=[1.0, 2.0, 3.0], variance=[4.0, 5.0, 6.0]), [(8, 8, 3)]),
    ("rescaling", dict(scale=1 / 255, offset=-1.0), [(8, 8, 3)]),
    ("layer_scale", dict(init=1e-6), [(8, 8, 4)]),
    ("lrn", dict(depth=5, k=2.0, alpha=1e-4, beta=0.75), [(8, 8, 4)]),
    ("activation", dict(fn="relu6"), [(8, 8, 4)]),
    ("activation", dict(fn="relu"), [(8, 8, 4)]),
    ("activation", dict(fn="gelu"), [(8, 8, 4)]),
    ("add", {}, [(8, 8, 4), (8, 8, 4)]),
    ("multiply", {}, [(8, 8, 4), (1, 1, 4)]),
    ("concat", dict(axis=-1), [(8, 8, 4), (8, 8, 2)]),
    ("concat", dict(axis=0), [(4, 8, 4), (2, 8, 4)]),
    ("max_pool", dict(pool=(3, 3), strides=(2, 2), padding="valid"), [(9, 9, 4)]),
    ("avg_pool", dict(pool=(2, 2), strides=(1, 1), padding="same"), [(8, 8, 4)]),
    ("global_pool", dict(mode="avg", keepdims=False), [(8, 8, 4)]),
    ("global_pool", dict(mode="max", keepdims=True), [(8, 8, 4)]),
    ("zero_padding", dict(padding=((1, 2), (0, 3))), [(8, 8, 4)]),
    ("dropout", dict(rate=0.25, noise_shape=None), [(8, 8, 4)]),
    ("flatten", {}, [(2, 2, 4)]),
    ("reshape", dict(target_shape=(1, 1, 16)), [(16,)]),
    ("identity", {}, [(8, 8, 4)]),
    ("upsample", dict(size=(2, 3), interpolation="bilinear"), [(4, 4, 4)]),
    ("cropping", dict(cropping=((1, 2), (0, 3))), [(8, 8, 4)]),
    ("cropping", dict(cropping=((1, 1), (1, 1))), [(8, 8, 4)]),
    ("conv_transpose2d", {**{k: v for k, v in _CONV.items() if k not in ("dilation", "groups")}, "kernel": (4, 4)},
     [(5, 5, 4)]),
    ("conv_transpose2d", dict(filters=3, kernel=(3, 5), strides=(1, 2), padding="valid", use_bias=True,
                              activation=None, kernel_initializer="glorot_uniform", bias_initializer="zeros",
                              kernel_regularizer=None), [(5, 6, 4)]),
    ("group_norm", dict(groups=2, epsilon=1e-5, center=False, scale=True), [(8, 8, 4)]),
    ("group_norm", dict(groups=32, epsilon=1e-3, center=True, scale=True), [(4, 4, 64)]),
    ("scaled_add", dict(scale=0.17), [(8, 8, 4), (8, 8, 4)]),
]


def test_the_table_covers_exactly_the_ir_ops():
    assert set(PRIMITIVES) == set(OPS), sorted(set(PRIMITIVES) ^ set(OPS))
    assert list(PRIMITIVES) == list(OPS)
    # the IR infers every op but its input; the table has nothing the IR cannot analyse
    assert set(PRIMITIVES) - {"input"} == set(INFER)


@pytest.mark.parametrize("op", OPS)
def test_every_entry_is_complete(op):
    p = PRIMITIVES[op]
    assert p.op == op
    assert callable(p.label) and isinstance(p.label({}) if op in ("input", "add") else "", str)
    if op == "input":  # made, read and emitted by the graph walkers themselves
        assert (p.layer, p.classes, p.from_keras, p.onnx) == (BY_WALKER,) * 4
        return
    assert callable(p.layer), "keras / codegen: the layer's class and constructor arguments"
    assert callable(p.from_keras), "from_keras: the Keras config -> the op's attributes"
    assert isinstance(p.classes, tuple) and p.classes and all(isinstance(c, str) for c in p.classes)
    assert isinstance(p.onnx, str) and p.onnx, "onnx: the emitter's name in backends/onnx/ops.py"


def test_each_op_has_a_round_trip_case():
    assert {op for op, _, _ in CASES} == set(OPS) - {"input"}


def test_onnx_emitters_are_the_tables():
    from archspec.backends.onnx import ops as onnx_ops

    for op, p in PRIMITIVES.items():
        if op == "input":
            assert op not in onnx_ops.EMITTERS
            continue
        assert callable(getattr(onnx_ops, p.onnx, None)), (op, p.onnx)
        assert onnx_ops.EMITTERS[op] is getattr(onnx_ops, p.onnx)


def test_merge_ops_are_the_tables():
    from archspec.backends import codegen
    from archspec.views import diagram

    assert set(optable.MERGE_OPS) == {"add", "multiply", "concat", "scaled_add"}
    assert codegen.MERGE_OPS is optable.MERGE_OPS and diagram.MERGE_OPS is optable.MERGE_OPS


def test_labels():
    def lab(op, **a):
        return optable.label(op, a)

    assert lab("conv2d", kernel=(3, 3), strides=(2, 2), filters=64, groups=1) == "conv 3\u00d73/2 64"
    assert lab("conv2d", kernel=(1, 7), strides=1, filters=8, groups=4) == "conv 1\u00d77 8 g4"
    assert lab("max_pool", pool=(3, 3), strides=(2, 2)) == "max pool 3\u00d73/2"
    assert lab("avg_pool", pool=(2, 2), strides=None) == "avg pool 2\u00d72/2"
    assert lab("dense", units=1000, activation="softmax") == "dense 1000 softmax"
    assert lab("concat", axis=-1) == "concatenate"
    assert lab("batch_norm") == "batch norm"
    assert lab("cropping", cropping=((1, 1), (2, 2))) == "crop 1\u00d72"
    assert lab("cropping", cropping=((1, 0), (2, 3))) == "crop 1,0,2,3"
    assert lab("conv_transpose2d", kernel=(4, 4), strides=(2, 2), filters=32) == "convT 4\u00d74 \u00d72 32"
    assert lab("conv_transpose2d", kernel=(3, 3), strides=(1, 1), filters=8) == "convT 3\u00d73 8"
    assert lab("group_norm", groups=8) == "group norm 8"
    assert lab("some_new_op") == "some new op"  # an op the table lacks: its name


def test_importing_the_table_and_the_diagram_imports_no_framework():
    code = ("import sys, archspec.backends.optable, archspec.views.diagram\n"
            "print(sorted(m for m in ('tensorflow', 'keras', 'onnx', 'jax', 'torch', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- Keras both ways


def _same(a, b) -> bool:
    """Equal, lists and tuples alike, floats to float32's precision (Keras keeps some as float32)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == pytest.approx(b, rel=1e-6)
    return type(a) is type(b) and a == b


def round_trip(op, attrs, shapes) -> list[str]:
    """Build the op's Keras layer (`make_layer`), call it, map it back (`_layer_attrs`) and
    list what does not match: the op, an attribute's value, an attribute not given back,
    the class codegen writes."""
    from archspec.backends.codegen import _layer
    from archspec.backends.keras import keras as load_keras, load
    from archspec.backends.onnx.via_ir import _layer_attrs

    k = load_keras()
    node = Node(f"t_{op}", op, [f"in{i}" for i in range(len(shapes))], dict(attrs))
    layer = load().make_layer(node)
    ins = [k.Input(shape=s) for s in shapes]
    layer(ins if op in optable.MERGE_OPS else ins[0])
    problems = []
    if optable.keras_class(_layer(node)[0], k) is not type(layer):
        problems.append(f"codegen writes {_layer(node)[0]}, the builder makes {type(layer).__name__}")
    back_op, back = _layer_attrs(layer, k)
    if back_op != op:
        problems.append(f"op {back_op!r}, not {op!r}")
    for key, v in back.items():
        if key not in attrs:
            problems.append(f"{key}: given back, not an attribute of the op")
        elif not _same(v, attrs[key]):
            problems.append(f"{key}: {v!r} back, {attrs[key]!r} made")
    for key in set(attrs) - set(back) - NOT_MAPPED_BACK:
        problems.append(f"{key}: not given back")
    return problems


@pytest.mark.parametrize("op,attrs,shapes", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_keras_layer_maps_back_to_its_attributes(op, attrs, shapes):
    assert round_trip(op, attrs, shapes) == []


def test_a_broken_inverse_is_caught(monkeypatch):
    """The round trip is not vacuous: an inverse that drops or changes an attribute fails."""
    p = PRIMITIVES["rescaling"]
    monkeypatch.setitem(PRIMITIVES, "rescaling",
                        dataclasses.replace(p, from_keras=lambda layer, c, cls: dict(scale=c["scale"])))
    assert round_trip("rescaling", dict(scale=0.5, offset=-1.0), [(4, 4, 3)]) == ["offset: not given back"]
    p = PRIMITIVES["concat"]
    monkeypatch.setitem(PRIMITIVES, "concat",
                        dataclasses.replace(p, from_keras=lambda layer, c, cls: dict(axis=c["axis"])))
    assert round_trip("concat", dict(axis=0), [(4, 8, 4), (2, 8, 4)]) == ["axis: 1 back, 0 made"]


def test_no_keras_class_maps_to_two_ops():
    from archspec.backends.keras import keras as load_keras

    k = load_keras()
    names = [c for p in PRIMITIVES.values() if p.classes is not BY_WALKER for c in p.classes]
    assert len(names) == len(set(names))
    assert len(optable.keras_classes(k)) == len(names)
