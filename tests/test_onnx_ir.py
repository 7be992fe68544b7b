"""ONNX from the graph IR (archspec/backends/onnx/via_ir.py, ops.py): every op's emitter
alone against its Keras layer on a tiny graph (max |ONNX - Keras| <= 1e-5), the emitter
table against `graph.OPS`, the layout decision, opsets, the graph rebuilt from a Keras
model, external data, the variants, export without TensorFlow (JAX backend), and small
bundled specs end to end. (Every bundled spec is exported both ways and the two files
compared in test_export.py::test_bundled_spec_exports_to_onnx.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

import archspec  # noqa: E402
import archspec.exporting as ex  # noqa: E402
from archspec.backends.onnx import ops as onnx_ops, via_ir
from archspec.backends import keras as keras_backend  # noqa: E402
from archspec.exporting import options, source  # noqa: E402
from archspec.ir.graph import OPS, Graph, Node, infer  # noqa: E402
from archspec.language.common import ACTIVATIONS  # noqa: E402

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- tiny graphs

DEFAULTS = {
    "conv2d": dict(strides=(1, 1), padding="valid", dilation=(1, 1), groups=1, use_bias=True, activation=None,
                   kernel_initializer=None, bias_initializer=None, kernel_regularizer=None),
    "depthwise_conv2d": dict(strides=(1, 1), padding="valid", depth_multiplier=1, use_bias=False, activation=None,
                             depthwise_initializer=None, depthwise_regularizer=None),
    "separable_conv2d": dict(strides=(1, 1), padding="valid", depth_multiplier=1, use_bias=False, activation=None,
                             kernel_initializer=None, kernel_regularizer=None),
    "batch_norm": dict(epsilon=1e-3, momentum=0.99, center=True, scale=True),
    "dense": dict(activation=None, use_bias=True, kernel_initializer=None, bias_initializer=None,
                  kernel_regularizer=None),
    "max_pool": dict(strides=None, padding="valid"), "avg_pool": dict(strides=None, padding="valid"),
    "dropout": dict(rate=0.5), "layer_norm": dict(epsilon=1e-6, center=True, scale=True),
    "rescaling": dict(offset=0.0), "normalization": dict(mean=None, variance=None),
    "layer_scale": dict(init=0.5), "upsample": dict(interpolation="nearest"), "concat": dict(axis=-1),
    "lrn": dict(depth=5, k=2.0, alpha=1e-2, beta=0.75), "global_pool": dict(mode="avg", keepdims=False),
    "conv_transpose2d": dict(strides=(1, 1), padding="valid", use_bias=True, activation=None, kernel_initializer=None,
                             bias_initializer=None, kernel_regularizer=None),
    "group_norm": dict(groups=2, epsilon=1e-3, center=True, scale=True),
}


def net(in_shape, *layers, outputs=None, name="tiny"):
    """A Graph: an input of `in_shape`, then `layers` as (op, attrs) or (op, attrs, inputs)
    (inputs default to the previous node; "x" is the input)."""
    nodes = [Node("x", "input", [], {"shape": tuple(in_shape)}, shape=tuple(in_shape))]
    shapes = {"x": tuple(in_shape)}
    for i, layer in enumerate(layers):
        op, attrs = layer[0], {**DEFAULTS.get(layer[0], {}), **layer[1]}
        inputs = list(layer[2]) if len(layer) > 2 else [nodes[-1].name]
        n = infer(Node(attrs.pop("name", f"{op}_{i}"), op, inputs, attrs), [shapes[x] for x in inputs])
        nodes.append(n)
        shapes[n.name] = n.shape
    return Graph(name, nodes, outputs or [nodes[-1].name], [])


def keras_model(graph, seed=0):
    from parity import randomize

    model = archspec.build(graph, seed=seed)
    randomize(model, seed=seed)
    return model


def inputs_for(model, n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, *model.inputs[0].shape[1:])).astype("float32")


def run_proto(proto, x, input_name="x"):
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(proto.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {input_name: x})


def emitted(model, graph, opset=options.DEFAULT_OPSET):
    proto = via_ir.convert(model, opset, model.inputs[0].name, list(model.output_names), graph)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def assert_matches_keras(graph, opset=options.DEFAULT_OPSET, x=None, tol=TOL):
    model = keras_model(graph)
    x = inputs_for(model) if x is None else x
    proto = emitted(model, graph, opset)
    want = model(x, training=False)
    want = [np.asarray(w) for w in (want if isinstance(want, (list, tuple)) else [want])]
    got = run_proto(proto, x, model.inputs[0].name)
    for w, g in zip(want, got):
        assert w.shape == g.shape
        assert np.std(w) > 0 or graph.nodes[-1].op == "activation"
        np.testing.assert_allclose(g, w, atol=tol * max(1.0, float(np.abs(w).max())), rtol=0)
    return model, proto


def op_types(proto) -> list[str]:
    return [n.op_type for n in proto.graph.node]


# One case per op and per mode that takes another code path; ids name them.
CASES = {
    "conv2d-valid": net((9, 10, 3), ("conv2d", dict(filters=4, kernel=(3, 3)))),
    "conv2d-same-stride2-odd": net((9, 10, 3), ("conv2d", dict(filters=4, kernel=(3, 5), strides=(2, 2),
                                                               padding="same", activation="relu"))),
    "conv2d-same-even-kernel": net((8, 8, 3), ("conv2d", dict(filters=4, kernel=(4, 4), strides=(2, 2),
                                                              padding="same", use_bias=False))),
    "conv2d-dilated-same": net((11, 11, 2), ("conv2d", dict(filters=3, kernel=(3, 3), dilation=(2, 2),
                                                            padding="same"))),
    "conv2d-grouped": net((6, 6, 4), ("conv2d", dict(filters=6, kernel=(3, 3), groups=2, padding="same"))),
    "depthwise-same-stride2": net((9, 9, 3), ("depthwise_conv2d", dict(kernel=(3, 3), strides=(2, 2),
                                                                       padding="same", use_bias=True))),
    "depthwise-multiplier": net((7, 7, 3), ("depthwise_conv2d", dict(kernel=(5, 5), depth_multiplier=2,
                                                                     activation="relu6"))),
    "separable": net((9, 8, 3), ("separable_conv2d", dict(filters=5, kernel=(3, 3), strides=(2, 2),
                                                          padding="same", depth_multiplier=2, use_bias=True))),
    "batch_norm-4d": net((5, 5, 4), ("batch_norm", dict(epsilon=1.001e-5))),
    "batch_norm-2d-no-scale": net((5, 5, 4), ("global_pool", {}), ("batch_norm", dict(scale=False))),
    "batch_norm-no-center": net((5, 5, 4), ("batch_norm", dict(center=False))),
    "add-three": net((4, 4, 3), ("conv2d", dict(filters=3, kernel=1), ["x"]),
                     ("conv2d", dict(filters=3, kernel=1), ["x"]), ("add", {}, ["x", "conv2d_0", "conv2d_1"])),
    "scaled_add": net((4, 4, 3), ("conv2d", dict(filters=3, kernel=1), ["x"]),
                      ("scaled_add", dict(scale=0.17), ["x", "conv2d_0"])),
    "multiply-broadcast": net((4, 4, 3), ("global_pool", dict(keepdims=True), ["x"]),
                              ("multiply", {}, ["x", "global_pool_0"])),
    "concat-channels": net((4, 4, 3), ("conv2d", dict(filters=2, kernel=1), ["x"]),
                           ("concat", dict(axis=-1), ["x", "conv2d_0"])),
    "concat-height": net((4, 4, 3), ("conv2d", dict(filters=3, kernel=1), ["x"]),
                         ("concat", dict(axis=0), ["x", "conv2d_0"])),
    "concat-width": net((4, 4, 3), ("conv2d", dict(filters=3, kernel=1), ["x"]),
                        ("concat", dict(axis=1), ["conv2d_0", "x"])),
    "concat-2d": net((4, 4, 3), ("global_pool", {}, ["x"]), ("dense", dict(units=2)),
                     ("concat", dict(axis=-1), ["global_pool_0", "dense_1"])),
    "max_pool-valid": net((9, 9, 2), ("max_pool", dict(pool=(3, 3), strides=(2, 2)))),
    "max_pool-same": net((9, 10, 2), ("max_pool", dict(pool=(3, 3), strides=(2, 2), padding="same"))),
    "max_pool-same-stride1": net((5, 5, 2), ("max_pool", dict(pool=(2, 2), strides=(1, 1), padding="same"))),
    "avg_pool-valid": net((8, 8, 2), ("avg_pool", dict(pool=(2, 2)))),
    "avg_pool-same": net((9, 9, 2), ("avg_pool", dict(pool=(3, 3), strides=(2, 2), padding="same"))),
    "global_pool-avg": net((5, 6, 3), ("global_pool", {})),
    "global_pool-max-keepdims": net((5, 6, 3), ("global_pool", dict(mode="max", keepdims=True))),
    "zero_padding": net((4, 5, 2), ("zero_padding", dict(padding=((1, 2), (0, 3))))),
    "dense-2d": net((3, 3, 4), ("flatten", {}), ("dense", dict(units=5, activation="softmax"))),
    "dense-4d": net((3, 4, 4), ("dense", dict(units=5))),
    "dense-no-bias": net((3, 3, 4), ("global_pool", {}), ("dense", dict(units=5, use_bias=False))),
    "dropout": net((4, 4, 3), ("dropout", dict(rate=0.3)), ("conv2d", dict(filters=2, kernel=1))),
    "identity": net((4, 4, 3), ("identity", {}), ("conv2d", dict(filters=2, kernel=1))),
    "flatten-spatial": net((3, 4, 5), ("flatten", {})),  # NHWC element order, not NCHW
    "flatten-1x1": net((3, 3, 5), ("global_pool", dict(keepdims=True)), ("flatten", {})),
    "reshape-to-1x1": net((3, 3, 6), ("global_pool", {}), ("reshape", dict(target_shape=(1, 1, 6)))),
    "reshape-to-spatial": net((3, 3, 8), ("global_pool", {}), ("reshape", dict(target_shape=(2, 2, 2)))),
    "reshape-spatial-to-spatial": net((2, 3, 4), ("reshape", dict(target_shape=(3, 2, 4)))),
    "reshape-to-flat": net((2, 3, 4), ("reshape", dict(target_shape=(24,)))),
    "rescaling": net((4, 4, 3), ("rescaling", dict(scale=1 / 127.5, offset=-1.0))),
    "normalization-given": net((4, 4, 3), ("normalization", dict(mean=[1.0, -2.0, 0.5], variance=[4.0, 0.25, 0.0]))),
    "normalization-adapted": net((4, 4, 3), ("normalization", {})),
    "lrn-odd": net((4, 4, 7), ("lrn", dict(depth=5, k=2.0, alpha=1e-2, beta=0.75))),
    "lrn-even": net((4, 4, 7), ("lrn", dict(depth=4, k=1.0, alpha=0.5, beta=0.6))),
    "layer_norm-4d": net((4, 4, 6), ("layer_norm", {})),
    "layer_norm-2d-no-center": net((4, 4, 6), ("global_pool", {}), ("layer_norm", dict(center=False))),
    "layer_scale": net((4, 4, 3), ("layer_scale", dict(init=0.5))),
    "upsample-nearest": net((3, 4, 2), ("upsample", dict(size=(2, 3)))),
    "upsample-bilinear": net((3, 4, 2), ("upsample", dict(size=(2, 2), interpolation="bilinear"))),
    "cropping": net((6, 7, 2), ("cropping", dict(cropping=((1, 2), (0, 3))))),
    # Keras' output size for odd and even inputs, kernels above, at and below the stride
    # (the last ones need ONNX's output_padding), non-square kernels and strides
    **{f"conv_transpose2d-{p}-k{k}-s{st}-{hw[0]}x{hw[1]}": net(
        (*hw, 3), ("conv_transpose2d", dict(filters=4, kernel=(k, k), strides=(st, st), padding=p,
                                           use_bias=k != 4, activation="relu" if k == 3 else None)))
       for p in ("same", "valid") for k, st, hw in [(3, 2, (5, 7)), (4, 2, (4, 6)), (3, 2, (4, 4)),
                                                    (4, 2, (5, 5)), (1, 2, (3, 5)), (2, 3, (3, 4))]},
    "conv_transpose2d-nonsquare": net((5, 6, 3), ("conv_transpose2d", dict(filters=2, kernel=(3, 5), strides=(2, 1),
                                                                          padding="same"))),
    "group_norm-4d": net((4, 5, 6), ("group_norm", dict(groups=3))),
    "group_norm-4d-instance-no-affine": net((4, 5, 6), ("group_norm", dict(groups=6, center=False, scale=False)),
                                            ("conv2d", dict(filters=2, kernel=1))),
    "group_norm-2d-no-center": net((4, 4, 6), ("global_pool", {}), ("group_norm", dict(groups=2, center=False))),
    "group_norm-3d": net((4, 4, 6), ("reshape", dict(target_shape=(16, 6))), ("group_norm", dict(groups=3))),
    **{f"activation-{fn}": net((4, 4, 3), ("activation", dict(fn=fn))) for fn in ACTIVATIONS},
    "activation-softmax-2d": net((4, 4, 3), ("global_pool", {}), ("activation", dict(fn="softmax"))),
    "multi-output-taps": net((6, 6, 3), ("conv2d", dict(filters=4, kernel=3, padding="same")),
                             ("global_pool", {}), outputs=["conv2d_0", "global_pool_1"]),
}


def test_every_op_has_an_emitter_and_a_case():
    assert set(onnx_ops.EMITTERS) | {"input"} == set(OPS)
    covered = {n.op for g in CASES.values() for n in g.nodes}
    assert covered == set(OPS), set(OPS) - covered
    assert set(ACTIVATIONS) <= set(onnx_ops.ACTIVATIONS)


@pytest.mark.parametrize("case", list(CASES))
def test_emitter_matches_keras(case):
    graph = CASES[case]
    x = None
    if case == "rescaling":
        x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    if case.startswith("activation-"):  # where the piecewise activations bend
        x = np.random.default_rng(0).uniform(-8, 8, (2, 4, 4, 3)).astype("float32")
    model, proto = assert_matches_keras(graph, x=x)
    ops = op_types(proto)
    if case in ("dropout", "identity"):
        assert ops == ["Transpose", "Conv", "Transpose"]  # nothing for the layer itself
    if case == "conv2d-grouped":
        assert [a.i for n in proto.graph.node for a in n.attribute if a.name == "group"] == [2]
    if case.startswith("depthwise"):
        cin = graph.inputs[0].shape[-1]
        assert [a.i for n in proto.graph.node for a in n.attribute if a.name == "group"] == [cin]
    if case == "lrn-odd":
        assert "LRN" in ops
    if case == "lrn-even":
        assert "LRN" not in ops and ops.count("Pow") == 1
    if case == "multi-output-taps":
        assert [o.name for o in proto.graph.output] == ["conv2d_0", "global_pool_1"]


PAD = dict(padding=((1, 2), (3, 0)))
POOL_PAD = dict(padding=((1, 2), (2, 0)))  # below the 3x3 window: ONNX' MaxPool takes it


@pytest.mark.parametrize("case,pads_left", [
    # a zero padding before a 'valid' convolution is the Conv's pads; before a depthwise or a
    # separable one (NASNet's reductions) too
    ("conv", 0), ("depthwise", 0), ("separable", 0),
    # before a max pool only over non-negative values (after a ReLU): a zero never wins the max
    ("relu-max-pool", 0), ("max-pool-of-signed-values", 1), ("max-pool-padded-past-its-window", 1),
    # a padding read by two layers, or before a 'same' conv, stays a Pad
    ("two-readers", 1), ("same-conv", 1),
])
def test_zero_padding_folds_into_the_layer_after_it(case, pads_left):
    """tf2onnx's conv2d_with_pad rewrite, on the IR: fewer nodes, the outputs Keras'."""
    conv = ("conv2d", dict(filters=4, kernel=(3, 3)))
    graph = {
        "conv": net((9, 10, 3), ("zero_padding", PAD), conv),
        "depthwise": net((9, 10, 3), ("zero_padding", PAD), ("depthwise_conv2d", dict(kernel=(3, 3), strides=(2, 2)))),
        "separable": net((9, 10, 3), ("zero_padding", PAD),
                         ("separable_conv2d", dict(filters=5, kernel=(5, 5), strides=(2, 2)))),
        "relu-max-pool": net((9, 10, 3), ("conv2d", dict(filters=4, kernel=(1, 1))), ("activation", dict(fn="relu")),
                             ("zero_padding", POOL_PAD), ("max_pool", dict(pool=(3, 3), strides=(2, 2)))),
        "max-pool-of-signed-values": net((9, 10, 3), ("conv2d", dict(filters=4, kernel=(1, 1))),
                                         ("zero_padding", POOL_PAD), ("max_pool", dict(pool=(3, 3), strides=(2, 2)))),
        "max-pool-padded-past-its-window": net((9, 10, 3), ("conv2d", dict(filters=4, kernel=(1, 1))),
                                               ("activation", dict(fn="relu")), ("zero_padding", PAD),
                                               ("max_pool", dict(pool=(3, 3), strides=(2, 2)))),
        "two-readers": net((9, 10, 3), ("zero_padding", PAD), conv,
                           ("conv2d", dict(filters=4, kernel=(3, 3)), ["zero_padding_0"]),
                           ("add", {}, ["conv2d_1", "conv2d_2"])),
        "same-conv": net((9, 10, 3), ("zero_padding", PAD), ("conv2d", dict(filters=4, kernel=(3, 3), padding="same"))),
    }[case]
    _, proto = assert_matches_keras(graph)
    assert op_types(proto).count("Pad") == pads_left


def test_no_bundled_spec_has_a_pad_feeding_a_convolution():
    """Issue 29: in every bundled spec's ONNX (from the IR, without building it), each zero
    padding that a convolution reads is folded into that convolution's pads."""
    from archspec.backends.onnx.via_ir import _readers, foldable_pads
    from archspec.ir.pipeline import lower_spec
    from archspec.language.loader import bundled_names

    convs = ("conv2d", "depthwise_conv2d", "separable_conv2d", "conv_transpose2d")
    left, padded = {}, 0
    for name in bundled_names():
        g = lower_spec(name)
        readers, folds = _readers(g), foldable_pads(g)
        ops = {n.name: n.op for n in g.nodes}
        for n in g.nodes:
            if n.op == "zero_padding" and any(ops[r] in convs for r in readers.get(n.name, [])):
                padded += 1
                if n.name not in folds:
                    left.setdefault(name, []).append(n.name)
    assert padded >= 50 and left == {}, left  # ResNets, EfficientNets, MobileNets, NASNets pad before convs


def test_layout_one_transpose_at_the_input_nchw_inside():
    """The layout decision: NHWC in (as Keras), one Transpose to NCHW, convolutions and
    pools on NCHW without per-layer transposes, NHWC again only before flatten (and for
    4-D outputs)."""
    g = net((8, 8, 3), ("conv2d", dict(filters=4, kernel=3, padding="same")), ("batch_norm", {}),
            ("activation", dict(fn="relu")), ("max_pool", dict(pool=(2, 2))),
            ("conv2d", dict(filters=4, kernel=3, padding="same")), ("flatten", {}), ("dense", dict(units=3)))
    model, proto = assert_matches_keras(g)
    ops = op_types(proto)
    assert ops.count("Transpose") == 2 and ops[0] == "Transpose"
    perms = [list(a.ints) for n in proto.graph.node if n.op_type == "Transpose" for a in n.attribute]
    assert perms == [[0, 3, 1, 2], [0, 2, 3, 1]]
    assert ops.index("Flatten") == ops.index("Transpose", 1) + 1  # back to NHWC just before flatten
    inp = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in inp] == ["batch", 8, 8, 3]
    out = proto.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in out] == ["batch", 3]
    # and the batch is dynamic in fact
    x = inputs_for(model, 5)
    np.testing.assert_allclose(run_proto(proto, x)[0], np.asarray(model(x)), atol=TOL)


KITCHEN = net((12, 12, 3), ("rescaling", dict(scale=1 / 255.0)), ("normalization", {}),
              ("conv2d", dict(filters=8, kernel=3, strides=2, padding="same", activation="swish")),
              ("layer_norm", {}), ("lrn", {}), ("depthwise_conv2d", dict(kernel=3, padding="same")),
              ("batch_norm", {}), ("activation", dict(fn="hard_swish")), ("layer_scale", {}),
              ("upsample", dict(size=(2, 2))), ("max_pool", dict(pool=(2, 2))),
              ("global_pool", {}), ("dense", dict(units=6, activation="softmax")))


SHAPING = net((9, 10, 4), ("cropping", dict(cropping=((1, 0), (2, 1)))),
              ("conv_transpose2d", dict(filters=8, kernel=(3, 3), strides=(2, 2), padding="same", activation="relu")),
              ("group_norm", dict(groups=4)),
              ("conv_transpose2d", dict(filters=4, kernel=(4, 4), strides=(2, 2), padding="valid")),
              ("group_norm", dict(groups=2, center=False)))


@pytest.mark.parametrize("opset", [options.MIN_OPSET, options.DEFAULT_OPSET, options.MAX_OPSET])
def test_cropping_conv_transpose_and_group_norm_at_every_opset(opset):
    """Group norm is written out (ONNX's GroupNormalization of opset 18 has a scale per
    group, not per channel as Keras): Reshape, ReduceMean (axes an input from 18), per-channel
    affine; a transposed conv is one ConvTranspose, a crop one Slice."""
    model, proto = assert_matches_keras(SHAPING, opset=opset)
    ops = op_types(proto)
    assert "GroupNormalization" not in ops and ops.count("ConvTranspose") == 2 and ops.count("Slice") == 1
    means = [n for n in proto.graph.node if n.op_type == "ReduceMean"]
    assert len(means) == 4 and all((len(n.input) == 2) == (opset >= 18) for n in means)


@pytest.mark.parametrize("opset", [options.MIN_OPSET, options.DEFAULT_OPSET, options.MAX_OPSET])
def test_opsets(opset):
    """Default, lowest and highest opset: a net with the opset-sensitive ops (ReduceMean's
    axes move from attribute to input at 18; no op newer than the minimum is used)."""
    x = np.random.default_rng(1).uniform(0, 255, (2, 12, 12, 3)).astype("float32")
    model, proto = assert_matches_keras(KITCHEN, opset=opset, x=x)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert proto.ir_version <= onnx.helper.VERSION_TABLE[[r[2] for r in onnx.helper.VERSION_TABLE].index(opset)][1]
    means = [n for n in proto.graph.node if n.op_type == "ReduceMean"]
    assert means and all((len(n.input) == 2) == (opset >= 18) for n in means)


# ---------------------------------------------------------------- the graph read back from Keras


_ALIASES = {"hard_silu": "hard_swish", "silu": "swish"}  # the names Keras serializes the activations under
_PAIRS = ("kernel", "strides", "pool", "dilation", "size")


def _same_attr(key, want, got) -> bool:
    """An attribute of the lowered graph against the rebuilt one (ints as pairs where Keras
    keeps pairs, lists as tuples, activation aliases)."""
    def norm(v):
        if key in _PAIRS and isinstance(v, int):
            return (v, v)
        if isinstance(v, list):
            return tuple(norm(x) if isinstance(x, list) else x for x in v)
        return _ALIASES.get(v, v) if isinstance(v, str) else v
    return norm(want) == norm(got)


def _emitter_view(graph):
    return [(n.name, n.op, list(n.inputs), tuple(n.shape)) for n in graph.nodes]


@pytest.mark.parametrize("case", ["conv2d-same-stride2-odd", "separable", "concat-height", "lrn-even",
                                  "normalization-given", "reshape-to-spatial", "multi-output-taps", "cropping",
                                  "conv_transpose2d-same-k4-s2-4x6", "group_norm-2d-no-center"])
def test_graph_from_keras_rebuilds_the_graph(case):
    graph = CASES[case]
    model = keras_model(graph)
    back = via_ir.graph_from_keras(model)
    assert _emitter_view(back) == _emitter_view(graph) and back.outputs == graph.outputs
    for a, b in zip(graph.nodes, back.nodes):
        for key, value in b.attrs.items():  # every attribute the rebuilt graph has, the IR has alike
            want = a.attrs.get(key, DEFAULTS.get(a.op, {}).get(key))
            assert _same_attr(key, want, value), (a.name, key, want, value)
    x = inputs_for(model)
    np.testing.assert_array_equal(run_proto(emitted(model, back), x)[0], run_proto(emitted(model, graph), x)[0])


def test_graph_from_keras_equals_the_lowered_graph_of_bundled_specs():
    """For networks of many block types (not built: the IR's lowering and the Keras model
    agree op by op, attribute by attribute)."""
    for name, sets in [("mobilenet_v3_small", ["input.shape=[64,64,3]"]), ("googlenet", []),
                       ("efficientnet", ["input.shape=[64,64,3]", "scaling.depth=0.25"])]:
        g = archspec.lower_spec(name, sets or None)
        model = archspec.build(g)
        back = via_ir.graph_from_keras(model)
        # the same nodes (model.layers may list parallel branches in another topological order)
        assert sorted((n.name, n.op, n.inputs, tuple(n.shape)) for n in back.nodes) == \
            sorted((n.name, n.op, n.inputs, tuple(n.shape)) for n in g.nodes), name
        assert back.outputs == g.outputs
        pos = {n.name: i for i, n in enumerate(back.nodes)}
        assert all(pos[i] < pos[n.name] for n in back.nodes for i in n.inputs)
        by_name = {n.name: n for n in back.nodes}
        for a in g.nodes:
            b = by_name[a.name]
            for key, value in b.attrs.items():
                want = a.attrs.get(key, DEFAULTS.get(a.op, {}).get(key))
                assert _same_attr(key, want, value), (name, a.name, key, want, value)
        del model


def test_unsupported_layer_names_it_and_points_to_tf2onnx():
    import keras

    inp = keras.Input((4, 4, 3), name="inp")
    model = keras.Model(inp, keras.layers.UnitNormalization(name="unit")(inp))
    with pytest.raises(archspec.ArchspecError, match=r"'unit' \(UnitNormalization\).*--via tf2onnx"):
        via_ir.graph_from_keras(model)
    # a layer of a class the table has, with a configuration its op cannot hold
    for layer, what in [(keras.layers.Conv2DTranspose(2, 3, dilation_rate=2, name="deconv"), "dilated transposed"),
                        (keras.layers.Conv2DTranspose(2, 3, strides=2, output_padding=1, name="deconv"),
                         "output_padding")]:
        model = keras.Model(inp, layer(inp))
        with pytest.raises(archspec.ArchspecError, match=f"'deconv': .*{what}"):
            via_ir.graph_from_keras(model)


# ---------------------------------------------------------------- export end to end


TWO_SPECS = {"two_branch": None, "cifar100_cnn": None,
             "mobilenet_v3_small": ["input.shape=[96,96,3]"], "efficientnet": [
                 "input.shape=[64,64,3]", "scaling.depth=0.25", "scaling.width=0.25", "head.classes=10"]}


@pytest.mark.parametrize("name", list(TWO_SPECS))
def test_small_bundled_specs_export_through_the_ir(name, tmp_path):
    """A few specs in the fast loop (every spec, both ways, in test_export's slow set):
    max |ONNX - Keras| <= 1e-5 on fan-in-scaled random weights, metadata, dynamic batch."""
    _export_small(name, TWO_SPECS[name], tmp_path)


def _export_small(name, overrides, tmp_path):
    from parity import randomize

    model = source.model_to_export(name, overrides, 0, lambda m: None)[0]
    randomize(model, seed=0)
    out = tmp_path / f"{name}.onnx"
    msgs = []
    r = ex.export(model, out, samples=2, progress=msgs.append)
    assert r["via"] == "ir" and r["passed"] and r["external_data"] is None
    assert any(m.startswith("emitting ONNX from the graph IR") for m in msgs)
    assert not any(m.startswith("converting with tf2onnx") for m in msgs)
    for o in r["outputs"].values():
        assert o["max_abs_diff"] <= TOL * max(1.0, o["max_abs_ref"]), r["outputs"]
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["archspec.spec_name"] == r["metadata"]["archspec.spec_name"]
    assert json.loads(meta["archspec.outputs"]) == r["output_names"] == [o.name for o in proto.graph.output]
    assert proto.graph.input[0].name == r["input_names"][0]
    if name == "efficientnet":
        assert [s["op"] for s in json.loads(meta["archspec.preprocessing"])["in_model"]] == \
            ["rescaling", "normalization"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet101", "resnet152"])
def test_specs_whose_tf2onnx_export_is_skipped_export_through_the_ir(name, tmp_path):
    """ResNet-101/152 have no export test in test_export.py (tf2onnx took 100 s and 85 s on
    them and covered no path ResNet-50's does not); through the IR they cost seconds."""
    _export_small(name, None, tmp_path)


def test_keras_file_exports_through_the_ir(tmp_path):
    """From a `.keras` file there is no Graph in hand: it is rebuilt from the model."""
    sys.path.insert(0, str(ROOT / "tests"))
    spec = tmp_path / "t.yaml"
    spec.write_text((ROOT / "tests" / "test_export.py").read_text().split('TINY = """\\\n')[1].split('"""')[0])
    ex.export(spec, tmp_path / "t.keras", "keras", samples=1)
    msgs = []
    r = ex.export(tmp_path / "t.keras", tmp_path / "t.onnx", samples=2, progress=msgs.append)
    assert r["passed"] and r["max_abs_diff"] <= TOL and "reading the graph from the Keras model…" in msgs
    assert r["output_names"] == ["lrn1", "pool", "predictions"]


def test_ir_and_tf2onnx_exports_agree_with_each_other(tmp_path):
    g = KITCHEN
    model = keras_model(g)
    a = ex.export(model, tmp_path / "ir.onnx", samples=2)
    b = ex.export(model, tmp_path / "tf.onnx", samples=2, via="tf2onnx")
    assert a["via"] == "ir" and b["via"] == "tf2onnx" and a["passed"] and b["passed"]
    x = np.random.default_rng(5).uniform(0, 255, (3, 12, 12, 3)).astype("float32")
    ya = run_proto(onnx.load(str(tmp_path / "ir.onnx")), x)
    yb = run_proto(onnx.load(str(tmp_path / "tf.onnx")), x)
    np.testing.assert_allclose(ya[0], yb[0], atol=TOL)


@pytest.mark.parametrize("variant", ["fp16", "int8", "int8_dynamic"])
def test_variants_of_the_ir_export(tmp_path, variant):
    g = net((16, 16, 3), ("conv2d", dict(filters=8, kernel=3, padding="same", activation="relu")),
            ("batch_norm", {}), ("global_pool", {}), ("dense", dict(units=10, activation="softmax")))
    model = keras_model(g)
    # int8 is checked on real images only (random weights: unchecked here; its check on
    # trained weights is test_export_trained.py's); fp16 on random inputs within 1e-2
    kw = {"fp16": True} if variant == "fp16" else {"quantize": variant, "check": False}
    r = ex.export(model, tmp_path / "v.onnx", **kw)
    assert r["variant"] == variant and r["via"] == "ir"
    assert r["passed"] is (True if variant == "fp16" else None)
    proto = onnx.load(str(tmp_path / "v.onnx"))
    kinds = {t.data_type for t in proto.graph.initializer}
    want = {onnx.TensorProto.FLOAT16} if variant == "fp16" else {onnx.TensorProto.INT8, onnx.TensorProto.UINT8}
    assert kinds & want
    assert {p.key for p in proto.metadata_props} >= {"archspec.spec_name", "archspec.version"}


# ---------------------------------------------------------------- external data


def _big_net():
    return net((8, 8, 4), ("conv2d", dict(filters=16, kernel=3)), ("flatten", {}), ("dense", dict(units=64)))


def test_streamed_file_is_the_in_memory_model(tmp_path):
    """The file `StreamedData` writes in pieces (each large initializer straight from its
    buffer, then the rest of the model) parses as the same ModelProto as the one built in
    memory, and the proto held in memory meanwhile lacks the large weights."""
    from onnx import numpy_helper

    model = keras_model(_big_net())
    whole = via_ir.convert(model, 17, "x", list(model.output_names), _big_net())
    sink = via_ir.StreamedData(tmp_path / "s.onnx")
    small = via_ir.convert(model, 17, "x", list(model.output_names), _big_net(), sink)
    sink.finish(small)
    loaded = onnx.load(str(tmp_path / "s.onnx"))
    assert [n.SerializeToString() for n in loaded.graph.node] == [n.SerializeToString() for n in whole.graph.node]
    assert loaded.graph.input == whole.graph.input and loaded.graph.output == whole.graph.output
    assert loaded.opset_import == whole.opset_import and loaded.ir_version == whole.ir_version
    arrays = {t.name: numpy_helper.to_array(t) for t in loaded.graph.initializer}
    want = {t.name: numpy_helper.to_array(t) for t in whole.graph.initializer}
    assert arrays.keys() == want.keys() and all(np.array_equal(arrays[k], want[k]) for k in want)
    assert len(small.graph.initializer) < len(whole.graph.initializer)
    assert small.ByteSize() * 10 < whole.ByteSize()
    onnx.checker.check_model(str(tmp_path / "s.onnx"), full_check=True)
    x = inputs_for(model)
    np.testing.assert_allclose(run_proto(loaded, x)[0], np.asarray(model(x)), atol=TOL)


@pytest.mark.parametrize("how", ["automatic", "asked", "asked-tf2onnx", "asked-fp16"])
def test_external_data(tmp_path, monkeypatch, how):
    """The mechanism with a lowered threshold (the real > 2 GB case is the slow test below):
    the weights in `<file>.data`, the model file small, ORT runs it, the check passes."""
    model = keras_model(_big_net())
    kw = {}
    if how == "automatic":
        monkeypatch.setattr(ex.options, "EXTERNAL_DATA_ABOVE", 10_000)
    else:
        kw["external_data"] = True
    if how == "asked-tf2onnx":
        kw["via"] = "tf2onnx"
    if how == "asked-fp16":
        kw["fp16"] = True
    out = tmp_path / "big.onnx"
    r = ex.export(model, out, samples=2, **kw)
    data = tmp_path / "big.onnx.data"
    assert r["external_data"] == str(data) and data.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]
    assert out.stat().st_size < 20_000 < data.stat().st_size
    assert r["bytes"] == out.stat().st_size + data.stat().st_size
    if how != "asked-fp16":
        assert r["passed"] and r["max_abs_diff"] <= TOL
    proto = onnx.load(str(out), load_external_data=False)
    ext = [t for t in proto.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert ext and {e.value for t in ext for e in t.external_data if e.key == "location"} == {"big.onnx.data"}
    onnx.checker.check_model(str(out))
    x = inputs_for(model)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], np.asarray(model(x)),
                               atol=2e-2 if how == "asked-fp16" else TOL)
    # an existing data file is not replaced without force (even when the model file is
    # gone); with it, both are (the library says force=True, the CLI --force)
    out.unlink()
    with pytest.raises(archspec.SpecError, match=r"big.onnx.data: exists; pass force=True"):
        ex.export(model, out, samples=1, **kw)
    r2 = ex.export(model, out, samples=1, force=True, **kw)
    assert r2["external_data"] == str(data) and out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.onnx", "big.onnx.data"]


def test_external_data_failure_leaves_nothing(tmp_path, monkeypatch):
    from archspec.exporting import to_onnx

    real = to_onnx.run
    monkeypatch.setattr(to_onnx, "run", lambda *a, **k: [o + 1 for o in real(*a, **k)])
    with pytest.raises(archspec.ArchspecError, match="does not match Keras"):
        ex.export(keras_model(_big_net()), tmp_path / "big.onnx", samples=1, external_data=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_model_past_2gb_exports_with_external_data(tmp_path):
    """A real one: a synthetic wide network with a 2.16 GB Dense kernel (541M parameters),
    written with external data automatically, run in ONNX Runtime and checked. The whole
    test (build, export, check) peaked at 11.9 GB RSS and took 31 s on the 2-CPU machine."""
    spec = tmp_path / "wide.yaml"
    spec.write_text("format: 1\nname: wide\ninput: {shape: [1, 1, 16384]}\n"
                    "head: {classes: 33000, layers: [{type: flatten, name: flat},"
                    " {type: classifier, name: predictions}]}\n")
    out = tmp_path / "wide.onnx"
    r = ex.export(spec, out, samples=1)
    assert r["passed"] and r["external_data"] == str(tmp_path / "wide.onnx.data")
    assert (tmp_path / "wide.onnx.data").stat().st_size > 2**31 > out.stat().st_size * 1000


# ---------------------------------------------------------------- without TensorFlow


def test_export_on_jax_without_tensorflow(tmp_path):
    """KERAS_BACKEND=jax: `archspec export SPEC --format onnx` builds on JAX, emits ONNX from
    the IR and checks it in ONNX Runtime against the JAX model; TensorFlow never imported."""
    pytest.importorskip("jax")
    out = tmp_path / "t.onnx"
    code = (
        "import sys, json\n"
        "from archspec.cli import main\n"
        f"rc = main(['export', 'two_branch', '--format', 'onnx', '-o', {str(out)!r}, '--json', '--samples', '2'])\n"
        "import keras\n"
        "print('RESULT', rc, keras.backend.backend(), 'tensorflow' in sys.modules, 'tf2onnx' in sys.modules)\n")
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")][0]
    assert line.split()[1:] == ["0", "jax", "False", "False"], line
    report = json.loads(p.stdout[:p.stdout.index("RESULT")])
    assert report["passed"] and report["via"] == "ir" and report["max_abs_diff"] <= TOL
    assert out.is_file()


def test_tf2onnx_path_without_tensorflow_says_so(monkeypatch, tmp_path):
    """The message when the tf2onnx path meets a machine without TensorFlow."""
    import builtins

    real = builtins.__import__

    def no_tf(name, *a, **k):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError("No module named 'tensorflow'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tf)
    with pytest.raises(archspec.core.errors.MissingDependency, match=r"--via ir"):
        keras_backend.tensorflow()
