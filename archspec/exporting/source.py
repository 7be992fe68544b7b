"""What is exported: the Keras model (given, loaded from a `.keras` file, or built from a
spec through the one pipeline in `archspec.api`), what is known about its spec, the
metadata written beside it, and the random inputs the parity check feeds it."""

from __future__ import annotations

import json
import os
import time
import weakref
import zipfile
from pathlib import Path
from typing import Any

from ..errors import MissingDependency, SpecError
from .options import METADATA_FILE
from .progress import short


def keras():
    """Keras with archspec's custom layers registered and TensorFlow's start-up notices
    filtered. Keras only: TensorFlow is imported by the paths that need it (tf2onnx,
    SavedModel), so the IR's ONNX export runs on the JAX backend without it."""
    from .._quiet import native_stderr_filtered
    from ..api import _keras_build

    _keras_build()
    try:
        with native_stderr_filtered():
            import keras as _keras
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(f"export needs Keras 3 ({exc}); pip install keras") from None
    return _keras


def tensorflow():
    """TensorFlow, for the paths that need it (tf2onnx, SavedModel, decoding calibration
    images), with a hint when it is missing."""
    from .._quiet import native_stderr_filtered

    try:
        with native_stderr_filtered():
            import tensorflow as tf
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(f"this export path needs TensorFlow ({exc}); pip install tensorflow, or export "
                                "ONNX through the graph IR (the default, --via ir), which does not") from None
    return tf


# what export knows of the models it built (spec name, hash), kept beside them rather than
# as a private attribute on the Keras model
_MODEL_INFO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
# and the graph IR each was built from (the IR's ONNX export reads it; for any other model
# it is rebuilt from the layers: via_ir.graph_from_keras)
_MODEL_GRAPH: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def graph_of(model):
    """The `Graph` `model` was built from by `resolve_model`, or None."""
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


def resolve_model(obj, overrides, seed, say) -> tuple[Any, dict, float]:
    """(model, info, seconds): `obj` is a keras.Model, a `.keras` path, a run directory of
    `archspec train` (its best.keras, else final.keras), or a spec (path, bundled name or
    Spec) built with `seed` by `archspec.api` (load, resolve, lower, build)."""
    k = keras()
    t0 = time.perf_counter()
    if isinstance(obj, k.Model):
        return obj, dict(_MODEL_INFO.get(obj) or {"spec_name": obj.name}), 0.0
    run = run_dir(obj)
    if run is not None:
        from ..training.evaluate import resolve_model as run_model

        obj = run_model(run)[0]
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
    from .. import api

    graph = api.lower_spec(obj, overrides)
    say(f"building {graph.name} ({graph.params:,} parameters)…")
    model = api.build(graph, seed=seed)
    info = {"spec_name": graph.name, "spec_sha256": graph.meta.get("spec_sha256"),
            "reference": graph.meta.get("reference") or None}
    _MODEL_INFO[model] = info
    _MODEL_GRAPH[model] = graph
    return model, info, time.perf_counter() - t0


def check_keras_archive(path, what: str = "a Keras model") -> None:
    """A `.keras` file is a zip archive holding the model's config or weights; anything else
    (garbage, a truncated download, another format under the suffix) is a SpecError naming
    the file (exit 2), instead of Keras' BadZipFile traceback or 'File not found'."""
    p = Path(os.fspath(path))
    if not p.is_file():
        raise SpecError(f"{p}: no such file")
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
    except zipfile.BadZipFile:
        raise SpecError(f"{p}: cannot load as {what}: not a .keras file (not a complete zip archive: "
                        f"truncated, or another format)") from None
    except OSError as exc:
        raise SpecError(f"{p}: cannot load as {what}: {exc.strerror or type(exc).__name__}") from None
    if not names & {"config.json", "model.weights.h5"}:
        raise SpecError(f"{p}: cannot load as {what}: not a .keras file (the archive holds no config.json or "
                        f"model.weights.h5)")


def _read_keras_info(p: Path) -> dict | None:
    try:
        with zipfile.ZipFile(p) as z:
            if METADATA_FILE in z.namelist():
                return json.loads(z.read(METADATA_FILE)).get("source") or None
    except (zipfile.BadZipFile, ValueError, OSError):
        return None
    return None


def compute_dtype(model) -> str:
    policy = getattr(model, "dtype_policy", None)
    return str(getattr(policy, "compute_dtype", None) or "float32")


def metadata(model, info, input_name, input_shape, output_names) -> dict[str, str]:
    """What a deployment needs to know, as string key/values (ONNX metadata_props)."""
    from .. import __version__

    return {
        "archspec.version": __version__,
        "archspec.spec_name": str(info.get("spec_name") or model.name),
        "archspec.spec_sha256": str(info.get("spec_sha256") or "unknown"),
        "archspec.input": json.dumps({"name": input_name, "shape": [None, *input_shape], "layout": "NHWC",
                                      "dtype": "float32"}),
        "archspec.outputs": json.dumps(output_names),
        "archspec.preprocessing": json.dumps(preprocessing(model)),
    }


def metadata_doc(metadata: dict[str, str]) -> dict:
    """The metadata as a JSON document (values parsed back), for `.keras` and SavedModel."""
    doc = {}
    for k, v in metadata.items():
        try:
            doc[k] = json.loads(v) if v[:1] in "[{" else v
        except ValueError:
            doc[k] = v
    doc["source"] = {"spec_name": metadata["archspec.spec_name"],
                     "spec_sha256": metadata["archspec.spec_sha256"]}
    return doc


def preprocessing(model) -> dict:
    """The input preprocessing the model does itself (leading Rescaling / Normalization
    layers), and what it therefore expects."""
    import numpy as np

    k = keras()
    steps = []
    for layer in model.layers:
        if isinstance(layer, k.layers.InputLayer):
            continue
        if isinstance(layer, k.layers.Rescaling):
            steps.append({"op": "rescaling", "layer": layer.name, "scale": _plain(layer.scale),
                          "offset": _plain(layer.offset)})
        elif isinstance(layer, k.layers.Normalization):
            mean = np.asarray(layer.mean).reshape(-1).tolist() if hasattr(layer, "mean") else None
            var = np.asarray(layer.variance).reshape(-1).tolist() if hasattr(layer, "variance") else None
            steps.append({"op": "normalization", "layer": layer.name, "mean": mean, "variance": var})
        else:
            break
    if steps:
        expects = "RGB pixel values in [0, 255], NHWC float32; the model rescales / normalizes them itself"
    else:
        expects = ("inputs preprocessed as the network was trained (the model applies no preprocessing), "
                   "NHWC float32")
    return {"in_model": steps, "expects": expects}


def _plain(v):
    try:
        import numpy as np

        a = np.asarray(v, dtype="float64")
        return a.item() if a.ndim == 0 else a.tolist()
    except Exception:
        return v


def random_inputs(model, n: int, seed: int):
    """Random inputs in the range the model expects: pixels in [0, 255] when the model
    starts with its own rescaling, else standard-normal values (already-normalized data)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1234)
    shape = (n, *model.inputs[0].shape[1:])
    if preprocessing(model)["in_model"]:
        return rng.uniform(0.0, 255.0, size=shape).astype("float32")
    return rng.standard_normal(size=shape).astype("float32")
