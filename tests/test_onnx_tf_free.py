"""ONNX from a spec and a weights file, without TensorFlow (issue 29): the file read with h5py
and numpy (`weights.read_weights`), mapped onto the IR (`via_ir.ArrayWeights`) and emitted by
the IR exporter (`via_ir.convert`); the check's reference built on JAX
(`keras.reference.reference_outputs`). In this process (TensorFlow loaded, the reference
Keras' own `model.load_weights`): the ONNX equals Keras within 1e-5 from a Keras 3
.weights.h5, a legacy .h5 and an .npz, and the providers agree node by node. In a
subprocess where importing TensorFlow fails: the whole path, TensorFlow never imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from archspec.backends import keras as keras_backend  # noqa: E402
from archspec.backends.keras import reference  # noqa: E402
from archspec.backends.keras.weights import load_weights, read_weights  # noqa: E402
from archspec.backends.onnx import passes as onnx_passes, via_ir  # noqa: E402
from archspec.core.errors import ArchspecError  # noqa: E402
from archspec.ir.pipeline import lower_spec  # noqa: E402
from parity import assert_not_degenerate, leaf_layers, randomize, save_legacy  # noqa: E402

TOL = 1e-5
ROOT = Path(__file__).resolve().parents[1]
OPSET = 17

# What ONNX from arrays must get right: a Normalization whose statistics are weights in the
# file and two whose statistics the spec gives (one broadcast from a single value), batch
# norms, a residual add, a dropout, a dense head (logits, so that a difference shows).
SPEC = """\
format: 1
name: tf_free_tiny
input:
  shape: [32, 32, 3]
  preprocessing:
    - {type: normalization, name: norm_file}
    - {type: normalization, name: norm_given, mean: [0.5], variance: [2.0]}
    - {type: normalization, name: norm_rgb, mean: [0.1, -0.2, 0.3], variance: [1.5, 0.5, 3.0]}
stem:
  - {type: conv, name: stem, filters: 16, kernel: 3, bn: true}
stages:
  - name: res
    blocks:
      - type: residual
        stride: 2
        body:
          - {type: conv, name: "{name}_1", filters: 32, kernel: 3, bn: true}
          - {type: conv, name: "{name}_2", filters: 32, kernel: 3, bn: true, activation: linear}
        post: [{type: activation, name: "{name}_out"}]
head:
  classes: 10
  classifier_activation: linear
  dropout: 0.2
  layers:
    - {type: global_pool, name: avg_pool}
    - {type: classifier, name: predictions}
"""


def _within(ref, got) -> float:
    """max |got - ref| over the outputs, asserted within TOL (relative above 1)."""
    worst = 0.0
    for r, g in zip(ref, got):
        assert r.shape == g.shape
        d = float(np.max(np.abs(r - g)))
        assert d <= TOL * max(1.0, float(np.max(np.abs(r)))), d
        worst = max(worst, d)
    return worst


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The spec, its graph, one set of random weights in the three formats, 4 random inputs
    and the outputs of a model that Keras itself loaded the .weights.h5 into."""
    d = tmp_path_factory.mktemp("tf_free")
    spec = d / "tiny.yaml"
    spec.write_text(SPEC)
    graph = lower_spec(spec, None)
    build = keras_backend.load()
    src = build.build_model(graph, seed=0)
    randomize(src, seed=1)
    files = {"weights_h5": d / "w.weights.h5", "legacy_h5": d / "w.h5", "npz": d / "w.npz"}
    src.save_weights(files["weights_h5"])
    save_legacy(src, files["legacy_h5"])
    np.savez(files["npz"], **{f"{l.name}/{w.name}": v for l in leaf_layers(src)
                              for w, v in zip(l.weights, l.get_weights())})
    ref = build.build_model(graph, seed=7)
    ref.load_weights(files["weights_h5"])  # Keras' own loader (it finalizes the Normalization)
    x = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype("float32")
    out = ref(x, training=False)
    outs = [np.asarray(o, np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])]
    assert_not_degenerate(outs)
    return {"dir": d, "spec": spec, "graph": graph, "files": files, "x": x, "ref": outs, "model": ref}


def _onnx(graph, provider, path: Path, fold_bn=False) -> Path:
    """`provider`'s ONNX of `graph`, streamed into `path` as the export writes it."""
    sink = via_ir.StreamedData(path)
    try:
        name = graph.inputs[0].name
        proto = via_ir.convert(provider, OPSET, name, graph.outputs, graph, sink, fold_bn=fold_bn)
        sink.finish(onnx_passes.finish(proto, name, graph.outputs, {}))
    finally:
        sink.close()
    onnx.checker.check_model(str(path))
    return path


def _run(path: Path, graph, x) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(list(graph.outputs), {graph.inputs[0].name: x})


# ---------------------------------------------------------------- in this process


def test_read_weights_is_what_load_weights_sets(made):
    """read_weights' arrays are the ones load_weights sets, and it says nothing unless asked;
    load_weights says its one line as before."""
    g, f = made["graph"], made["files"]["weights_h5"]
    said = []
    report, arrays = read_weights(g, f)
    _, again = read_weights(g, f, say=said.append)
    assert report.loadable and len(arrays) == len(report.loading) == 10
    model = keras_backend.load().build_model(g, seed=3)
    lines = []
    load_weights(model, g, f, say=lines.append)
    assert lines == said == [f"weights from {f}: 10 of 10 layers load"]
    for name, got in arrays.items():
        for a, b, c in zip(got, model.get_layer(name).get_weights(), again[name]):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)


def test_array_weights_are_keras_weights_node_by_node(made):
    """ArrayWeights gives every node what layer_weights gives for the loaded model: the same
    dtypes, shapes and values (the Normalizations' broadcast statistics included); and the
    graph's bytes are the model's."""
    g, model = made["graph"], made["model"]
    _, arrays = read_weights(g, made["files"]["weights_h5"])
    ours, theirs = via_ir.ArrayWeights(g, arrays), via_ir.KerasWeights(model)
    for node in g.nodes:
        a, b = ours.node_weights(node), theirs.node_weights(node)
        assert [(x.dtype, x.shape) for x in a] == [(y.dtype, y.shape) for y in b], node.name
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    assert via_ir.graph_bytes(g) == via_ir.estimated_bytes(model)


@pytest.mark.parametrize("fold_bn", [False, True], ids=["plain", "bn-folded"])
def test_onnx_from_the_file_equals_keras(made, tmp_path, fold_bn):
    """read_weights -> ArrayWeights -> convert: ONNX Runtime's outputs are Keras' within 1e-5."""
    g = made["graph"]
    _, arrays = read_weights(g, made["files"]["weights_h5"])
    path = _onnx(g, via_ir.ArrayWeights(g, arrays), tmp_path / "t.onnx", fold_bn)
    _within(made["ref"], _run(path, g, made["x"]))


def test_every_format_gives_the_same_onnx(made, tmp_path):
    """A legacy .h5 and an .npz of the same weights give the .weights.h5's ONNX outputs exactly."""
    g, x = made["graph"], made["x"]
    outs = {}
    for fmt, f in made["files"].items():
        _, arrays = read_weights(g, f)
        outs[fmt] = _run(_onnx(g, via_ir.ArrayWeights(g, arrays), tmp_path / f"{fmt}.onnx"), g, x)
    _within(made["ref"], outs["weights_h5"])
    for fmt in ("legacy_h5", "npz"):
        for a, b in zip(outs["weights_h5"], outs[fmt]):
            np.testing.assert_array_equal(a, b)


def test_reference_outputs_are_keras_own_load(made):
    """reference_outputs (the model built, the arrays set, run in batches, dropped) equals the
    model Keras loaded itself: the Normalization whose statistics the file holds included;
    with `release` the caller's dict is emptied, the outputs the same."""
    g = made["graph"]
    _, arrays = read_weights(g, made["files"]["weights_h5"])
    got = reference.reference_outputs(g, arrays, made["x"], batch=3)
    assert [o.dtype for o in got] == [np.float32]
    _within(made["ref"], got)
    assert len(arrays) == 10 and all(a is not None for got in arrays.values() for a in got)
    again = reference.reference_outputs(g, arrays, made["x"], release=True)
    assert arrays == {}
    np.testing.assert_array_equal(again[0], got[0])


def test_a_layer_without_arrays_is_an_error_naming_it(made, tmp_path):
    """A re-initialised or skipped layer has no arrays to export: an error naming it, before a
    file is finished; a provider with no graph is an error too."""
    g = made["graph"]
    _, arrays = read_weights(g, made["files"]["weights_h5"], skip=["predictions"])
    assert "predictions" not in arrays
    with pytest.raises(ArchspecError, match="'predictions'"):
        via_ir.convert(via_ir.ArrayWeights(g, arrays), OPSET, g.inputs[0].name, g.outputs, g)
    arrays.pop("norm_file")
    with pytest.raises(ArchspecError, match="'norm_file'"):
        via_ir.convert(via_ir.ArrayWeights(g, arrays), OPSET, g.inputs[0].name, g.outputs, g)
    with pytest.raises(ArchspecError, match="needs the graph"):
        via_ir.convert(via_ir.ArrayWeights(g, arrays), OPSET, g.inputs[0].name, g.outputs)


def test_choose_backend_keeps_an_imported_keras(monkeypatch):
    """With Keras imported, its backend (here TensorFlow, conftest's), whatever the environment says."""
    import keras

    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert reference.choose_backend() == keras.backend.backend()


# ---------------------------------------------------------------- without TensorFlow

CHILD = textwrap.dedent("""\
    import importlib.abc, json, sys

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError("tensorflow is blocked in this test")
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    from archspec.cli import main

    rc = main(sys.argv[1:])
    import keras
    print("RESULT " + json.dumps({"rc": rc, "keras_backend": keras.backend.backend(),
        "tensorflow": "tensorflow" in sys.modules or any(m.startswith("tensorflow.") for m in sys.modules)}))
""")


def test_spec_and_weights_to_onnx_without_tensorflow(made, tmp_path):
    """Issue 29: `archspec export SPEC --weights FILE -o F.onnx` in a process where importing
    TensorFlow fails and KERAS_BACKEND is unset: exit 0, checked by the CLI against Keras on
    JAX (chosen by the export), TensorFlow never in sys.modules; and the file equals, in
    ONNX Runtime here, the outputs of the model that Keras on TensorFlow loaded the same file
    into (its own `load_weights`), within 1e-5."""
    pytest.importorskip("jax")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update({"PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"})
    out = tmp_path / "child.onnx"
    p = subprocess.run([sys.executable, "-c", CHILD, "export", str(made["spec"]), "--weights",
                        str(made["files"]["weights_h5"]), "-o", str(out), "--json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])
    assert res == {"rc": 0, "keras_backend": "jax", "tensorflow": False}, res
    report = json.loads(p.stdout[:p.stdout.index("RESULT ")])
    assert report["model"] == "graph" and report["passed"] and report["tolerance"] == 1e-4
    assert f"weights from {made['files']['weights_h5']}: 10 of 10 layers load" in p.stderr, p.stderr[-2000:]
    _within(made["ref"], _run(out, made["graph"], made["x"]))  # the child's file, against Keras on TensorFlow


def test_export_with_weights_in_process_takes_the_graph_path(made, tmp_path):
    """The library call of the same export (TensorFlow loaded here): the graph path too, its
    reference Keras on TensorFlow; a re-initialised classifier (initial weights exist only in a
    built model) takes the model path, and both files equal their references."""
    import archspec

    r = archspec.export(made["spec"], tmp_path / "a.onnx", weights=made["files"]["legacy_h5"])
    assert r["model"] == "graph" and r["passed"]
    _within(made["ref"], _run(tmp_path / "a.onnx", made["graph"], made["x"]))
    r = archspec.export(made["spec"], tmp_path / "b.onnx", weights=made["files"]["npz"],
                        overrides=["head.classes=3"])
    assert r["model"] == "keras" and r["passed"]
