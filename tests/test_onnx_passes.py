"""Each named ONNX pass of archspec.backends.onnx.passes on a tiny graph made with
onnx.helper, run in ONNX Runtime where the pass changes what runs. No TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from archspec.core.errors import ArchspecError
from archspec.backends.onnx import passes as P


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _add_model(batch=None):
    """y = x + w, z = relu(y): input x, outputs (y, z)."""
    w = numpy_helper.from_array(np.full((3,), 2.0, "float32"), "w")
    nodes = [helper.make_node("Add", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])]
    return _model(nodes, [_vi("x", [batch, 3])], [_vi("y", [batch, 3]), _vi("z", [batch, 3])], [w])


def _run(proto, **feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def test_check_inputs_accepts_the_one_input_and_rejects_constants_left_as_inputs():
    m = _add_model()
    assert P.check_inputs(m, "x") is m
    with pytest.raises(ArchspecError, match=r"inputs \['x'\], expected only 'image'"):
        P.check_inputs(m, "image")
    # a constant that became a graph input (the EfficientNet Normalization trap)
    m.graph.input.append(_vi("mean", [3]))
    with pytest.raises(ArchspecError, match=r"inputs \['x', 'mean'\].*constants left as graph inputs"):
        P.check_inputs(m, "x")
    # an input that also has an initializer is a constant, not an input
    m.graph.initializer.append(numpy_helper.from_array(np.zeros(3, "float32"), "mean"))
    assert P.check_inputs(m, "x") is m


def test_check_outputs_wants_the_models_names_in_its_order():
    m = _add_model()
    assert P.check_outputs(m, ["y", "z"]) is m
    with pytest.raises(ArchspecError, match=r"outputs \['y', 'z'\], expected \['z', 'y'\]"):
        P.check_outputs(m, ["z", "y"])


def test_order_outputs_reorders_and_the_graph_still_runs():
    m = P.order_outputs(_add_model(), ["z", "y"])
    assert [o.name for o in m.graph.output] == ["z", "y"]
    z, y = _run(m, x=np.array([[-5.0, 0.0, 1.0]], "float32"))
    np.testing.assert_array_equal(y, [[-3.0, 2.0, 3.0]])
    np.testing.assert_array_equal(z, [[0.0, 2.0, 3.0]])
    # other names: left alone (check_outputs reports it)
    assert [o.name for o in P.order_outputs(m, ["a", "b"]).graph.output] == ["z", "y"]


def test_dynamic_batch_names_unknown_first_dimensions_only():
    m = P.dynamic_batch(_add_model(batch=None))
    for vi in list(m.graph.input) + list(m.graph.output):
        assert vi.type.tensor_type.shape.dim[0].dim_param == "batch"
    fixed = P.dynamic_batch(_add_model(batch=4))
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 4
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_param == ""
    (y, _) = _run(m, x=np.zeros((5, 3), "float32"))  # any batch runs
    assert y.shape == (5, 3)


def test_set_metadata_replaces_props_and_writes_a_doc_string():
    m = _add_model()
    helper.set_model_props(m, {"stale": "1"})
    P.set_metadata(m, {"archspec.spec_name": "tiny", "archspec.version": "9.9"})
    assert {p.key: p.value for p in m.metadata_props} == {"archspec.spec_name": "tiny", "archspec.version": "9.9"}
    assert m.doc_string == "tiny exported by archspec 9.9"


def test_inputs_to_initializers_makes_weight_inputs_constants():
    nodes = [helper.make_node("MatMul", ["x", "k"], ["y"])]
    m = _model(nodes, [_vi("x", [None, 2]), _vi("k", [2, 2])], [_vi("y", [None, 2])])
    k = np.array([[1.0, 2.0], [3.0, 4.0]], "float32")
    P.inputs_to_initializers(m, {"k": k})
    assert [i.name for i in m.graph.input] == ["x"]
    np.testing.assert_array_equal(numpy_helper.to_array(m.graph.initializer[0]), k)
    onnx.checker.check_model(m)
    (y,) = _run(m, x=np.array([[1.0, 1.0]], "float32"))
    np.testing.assert_array_equal(y, [[4.0, 6.0]])
    with pytest.raises(ArchspecError, match=r"lacks the weight inputs \['q'\]"):
        P.inputs_to_initializers(m, {"q": k})


def test_toposort_orders_nodes_after_their_producers_and_rejects_cycles():
    m = _add_model()
    nodes = list(m.graph.node)[::-1]  # Relu before the Add that feeds it
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(m)
    P.toposort(m)
    assert [n.op_type for n in m.graph.node] == ["Add", "Relu"]
    onnx.checker.check_model(m)
    cyc = _model([helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
                 [_vi("x", [1])], [_vi("a", [1])])
    with pytest.raises(ArchspecError, match="cannot be ordered"):
        P.toposort(cyc)


def test_finish_runs_the_checks_then_names_the_batch_and_stores_metadata():
    m = P.finish(_add_model(), "x", ["y", "z"], {"archspec.spec_name": "tiny"})
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert {p.key for p in m.metadata_props} == {"archspec.spec_name"}
    with pytest.raises(ArchspecError, match="expected only 'image'"):
        P.finish(_add_model(), "image", ["y", "z"], {})


def test_the_passes_need_no_tensorflow():
    code = ("import sys; from archspec.backends.onnx import passes; import onnx; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
