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
from ..backends.keras.files import METADATA_FILE, check_keras_archive
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


def model_to_export(obj, overrides, seed, say) -> tuple[Any, dict, float]:
    """(model, info, seconds): `obj` is a keras.Model, a `.keras` path, a run directory of
    `archspec train` (its best.keras, else final.keras), or a spec (path, bundled name or
    Spec) built with `seed` (load, resolve, lower: `archspec.ir.pipeline`; build: the Keras backend)."""
    k = keras()
    t0 = time.perf_counter()
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
    say(f"building {graph.name} ({graph.params:,} parameters)…")
    model = build_model(graph, seed=seed)
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


