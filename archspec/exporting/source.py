"""What is exported: the Keras model (given, loaded from a `.keras` file, or built from a
spec through the one pipeline, `archspec.ir.pipeline`), what is known about its spec, the
metadata written beside it, and the random inputs the parity check feeds it."""

from __future__ import annotations

import json
import os
import time
import weakref
import zipfile
from pathlib import Path
from typing import Any

from ..backends.keras import keras
from ..backends.keras.files import METADATA_FILE, ModelStandIn, check_keras_archive
from ..core.errors import SpecError
from ..core.progress import short


# what export knows of the models it built (spec name, hash), kept beside them rather than
# as a private attribute on the Keras model
_MODEL_INFO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# and the graph IR each was built from (the IR's ONNX export reads it; for any other model
# it is rebuilt from the layers: via_ir.graph_from_keras)
_MODEL_GRAPH: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def graph_of(model):
    """The `Graph` `model` was built from by `model_to_export`, or None."""
    return _MODEL_GRAPH.get(model)


def run_dir(obj) -> Path | None:
    """`obj` as a run directory of `archspec train` (it holds run.json), else None."""
    if isinstance(obj, (str, os.PathLike)):
        p = Path(os.fspath(obj))
        if p.is_dir() and (p / "run.json").is_file():
            return p
    return None


def run_data(run: Path) -> str | None:
    """The data a run directory was trained on (its run.json's ``data``), or None."""
    try:
        data = json.loads((run / "run.json").read_text()).get("data")
    except (OSError, ValueError, AttributeError):
        raise SpecError(f"{run / 'run.json'}: not a readable run.json") from None
    return data if isinstance(data, str) else None


def model_to_export(obj, overrides, seed, say, weights=None, weights_skip=()) -> tuple[Any, dict, float]:
    """(model, info, seconds): `obj` is a keras.Model, a `.keras` path, a run directory of
    `archspec train` (its best.keras, else final.keras), or a spec (path, bundled name or
    Spec) built with `seed` (load, resolve, lower: `archspec.ir.pipeline`; build: the Keras backend)
    and, with `weights`, loaded from that file by the one strict loader
    (`archspec.backends.keras.weights`; `weights_skip` globs left at init), its summary said."""
    k = keras()
    t0 = time.perf_counter()
    if weights is not None or weights_skip:
        if weights is None:
            raise SpecError("--weights-skip names layers of a --weights file; give --weights")
        if isinstance(obj, k.Model) or run_dir(obj) is not None or (
                isinstance(obj, (str, os.PathLike)) and os.fspath(obj).endswith(".keras")):
            raise SpecError("--weights loads pretrained weights into a spec built for the export; a model, a "
                            ".keras file or a run directory has its own weights")
    if isinstance(obj, k.Model):
        return obj, dict(_MODEL_INFO.get(obj) or {"spec_name": obj.name}), 0.0
    run = run_dir(obj)
    if run is not None:
        from ..training.evaluate import model_file

        obj = model_file(run)[0]
    if isinstance(obj, (str, os.PathLike)) and os.fspath(obj).endswith(".keras"):
        p = Path(os.fspath(obj))
        if not p.is_file():
            raise SpecError(f"{p}: no such file")
        check_keras_archive(p)
        say(f"loading {p}…")
        try:
            model = k.models.load_model(p)
        except Exception as exc:
            raise SpecError(f"{p}: cannot load as a Keras model ({type(exc).__name__}: {short(exc)})") from None
        info = _read_keras_info(p) or {"spec_name": model.name}
        return model, info, time.perf_counter() - t0
    from ..backends.keras import build_model
    from ..ir.pipeline import lower_spec

    graph = lower_spec(obj, overrides)
    if weights is not None:  # the static report first: a refused load costs no build
        from ..backends.keras.pretrained import resolve
        from ..backends.keras.weights import check_weights_file, weights_report

        weights = resolve(weights, graph, say=say)  # `imagenet`: the spec's published file
        check_weights_file(weights)
        report = weights_report(graph, weights, weights_skip)
        if not report.loadable:
            raise report.error()
    say(f"building {graph.name} ({graph.params:,} parameters)…")
    model = build_model(graph, seed=seed)
    if weights is not None:
        from ..backends.keras.weights import load_weights

        load_weights(model, graph, weights, skip=weights_skip, say=say)
    info = {"spec_name": graph.name, "spec_sha256": graph.meta.get("spec_sha256"),
            "reference": graph.meta.get("reference") or None}
    _MODEL_INFO[model] = info
    _MODEL_GRAPH[model] = graph
    return model, info, time.perf_counter() - t0


def _read_keras_info(p: Path) -> dict | None:
    try:
        with zipfile.ZipFile(p) as z:
            if METADATA_FILE in z.namelist():
                return json.loads(z.read(METADATA_FILE)).get("source") or None
    except (zipfile.BadZipFile, ValueError, OSError):
        return None
    return None




# ---------------------------------------------------------------- without TensorFlow


class _Tensor:
    """A model input's or output's name and shape, as export reads them of a Keras model."""

    def __init__(self, name: str, shape: tuple):
        self.name, self.shape = name, shape


class GraphModel(ModelStandIn):
    """A spec's network with a weights file's arrays, where export reads a Keras model (its
    name, input, outputs, preprocessing), built from neither TensorFlow nor Keras: the ONNX is
    emitted from the graph and the arrays (`via_ir.ArrayWeights`), and the check's reference
    is Keras on the backend `reference.choose_backend` picked (JAX where installed), built only
    for the check and dropped after it (`reference_outputs`)."""

    def __init__(self, graph, arrays: dict):
        self.graph, self.arrays = graph, arrays
        self.name = graph.name
        self.inputs = [_Tensor(n.name, (None, *n.shape)) for n in graph.inputs]
        self.outputs = [_Tensor(o, (None, *graph.node(o).shape)) for o in graph.outputs]
        self.output_names = list(graph.outputs)

    @property
    def weights(self) -> list:
        """Every array, as a Keras model's ``weights`` (what sizes the ONNX file)."""
        return [a for got in self.arrays.values() for a in got]

    def weights_provider(self):
        from ..backends.onnx.via_ir import ArrayWeights

        return ArrayWeights(self.graph, self.arrays)

    def reference(self, x) -> list:
        """The Keras model's outputs on `x` (built with the arrays, run, dropped; the arrays
        are released into it, so this is the last reader of them)."""
        from ..backends.keras.reference import reference_outputs

        return reference_outputs(self.graph, self.arrays, x, release=True)

    def preprocessing_steps(self) -> list[dict]:
        """The leading rescaling / normalization nodes, as `files.preprocessing` reads them
        off a Keras model's layers."""
        import numpy as np

        steps = []
        provider = self.weights_provider()
        for node in self.graph.nodes:
            if node.op == "input":
                continue
            if node.op == "rescaling":
                steps.append({"op": "rescaling", "layer": node.name, "scale": node.attrs.get("scale", 1.0),
                              "offset": node.attrs.get("offset", 0.0)})
            elif node.op == "normalization":
                mean, var = provider.node_weights(node)
                steps.append({"op": "normalization", "layer": node.name,
                              "mean": np.asarray(mean).reshape(-1).tolist(),
                              "variance": np.asarray(var).reshape(-1).tolist()})
            else:
                break
        return steps


def tf_free(obj, o) -> bool:
    """Whether `obj` exports through `GraphModel`: a spec with a weights file to ONNX from the
    IR, float32 or a variant, nothing baked (baking adds Keras layers)."""
    if not (o.format == "onnx" and o.via == "ir" and o.weights is not None and not o.bake_preprocessing):
        return False
    if isinstance(obj, (str, os.PathLike)):
        return run_dir(obj) is None and not os.fspath(obj).endswith(".keras")
    from ..language import Spec

    return isinstance(obj, Spec)


def graph_model(obj, overrides, say, weights, weights_skip) -> tuple[Any, dict, float]:
    """(model, info, seconds) of a spec with `weights` as a `GraphModel`: lowered, the weights
    file read and checked by the one strict loader's reader (`weights.read_weights`, its
    summary said). When a layer keeps initial weights (a re-initialised classifier, a skipped
    layer), those exist only in a built model: the spec is built and loaded instead
    (`model_to_export`)."""
    from ..backends.keras.pretrained import resolve
    from ..backends.keras.weights import REINIT, SKIPPED, check_weights_file, read_weights, summary_line
    from ..ir.pipeline import lower_spec

    t0 = time.perf_counter()
    graph = lower_spec(obj, overrides)
    path = resolve(weights, graph, say=say)
    check_weights_file(path)
    report, arrays = read_weights(graph, path, weights_skip)
    if report.of(REINIT, SKIPPED):
        return None, {}, 0.0
    say(summary_line(path, report))
    info = {"spec_name": graph.name, "spec_sha256": graph.meta.get("spec_sha256"),
            "reference": graph.meta.get("reference") or None}
    return GraphModel(graph, arrays), info, time.perf_counter() - t0
