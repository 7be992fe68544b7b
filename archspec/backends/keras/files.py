""".keras files and what archspec writes into them: the provenance record (`archspec.json`:
spec name and sha256, archspec version, input, outputs, preprocessing; a run's
`archspec.training`), the one `.keras` writer every command uses (`save_keras`, atomic),
and the check that a file is a `.keras` archive before Keras opens it."""

from __future__ import annotations

import json
import os
import time
import zipfile
from pathlib import Path

from ...core.atomic import atomic_output
from ...core.errors import SpecError
from . import keras

#: the name of the metadata document inside `.keras` files and SavedModel assets
METADATA_FILE = "archspec.json"


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


def compute_dtype(model) -> str:
    policy = getattr(model, "dtype_policy", None)
    return str(getattr(policy, "compute_dtype", None) or "float32")


def metadata(model, info, input_name, input_shape, output_names) -> dict[str, str]:
    """What a deployment needs to know, as string key/values (ONNX metadata_props)."""
    from ...core.version import __version__

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


class ModelStandIn:
    """What stands for a Keras model where export needs none built (`exporting.source.
    GraphModel`: a spec's graph and a weights file's arrays): it has a model's ``name``,
    ``inputs``, ``outputs`` and ``weights``, and says its preprocessing itself."""

    def preprocessing_steps(self) -> list[dict]:
        """The leading rescaling / normalization steps, as `preprocessing` reads them off a
        Keras model's layers."""
        raise NotImplementedError


def preprocessing(model) -> dict:
    """The input preprocessing the model does itself (leading Rescaling / Normalization
    layers), and what it therefore expects."""
    import numpy as np

    stand_in = isinstance(model, ModelStandIn)
    steps = model.preprocessing_steps() if stand_in else []
    for layer in (() if stand_in else model.layers):
        k = keras()
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


def write_keras(model, tmp: Path, metadata, say, timings):
    t0 = time.perf_counter()
    say("saving the .keras file…")
    model.save(str(tmp))
    with zipfile.ZipFile(tmp, "a") as z:
        z.writestr(METADATA_FILE, json.dumps(metadata_doc(metadata), indent=2))
    timings["convert"] = time.perf_counter() - t0


def record_preprocess(metadata: dict, mode: str, baked: bool, mode_from: str) -> None:
    """`archspec.preprocessing` in `metadata` (a JSON string, as every metadata value): the
    layers the model itself starts with (`in_model`), and the spec's `input.preprocess`
    mode, where it was read, whether it is baked into this artefact, and what the artefact
    expects. Every writer of archspec metadata records it (`save_keras`, export), and every
    reader applies it (`training.evaluate.preprocess_of`)."""
    from ...language.preprocess import describe

    doc = json.loads(metadata.get("archspec.preprocessing") or "{}")
    doc["mode"] = mode
    doc["mode_from"] = mode_from
    doc["baked"] = bool(baked)
    doc["description"] = describe(mode)
    if mode != "none" and baked:
        doc["expects"] = ("RGB pixel values in [0, 255], NHWC float32; the model applies the "
                          f"{mode} preprocessing itself (baked: its first layers)")
    elif mode != "none":
        doc["expects"] = (f"images preprocessed by keras.applications' {mode} mode (input.preprocess: "
                          f"{describe(mode)}), NHWC float32; export with bake_preprocessing to take "
                          f"RGB 0..255")
    metadata["archspec.preprocessing"] = json.dumps(doc)


def save_keras(model, path: Path, graph, **training) -> None:
    """`model` as a .keras file, written atomically, with the provenance `export --format
    keras` writes (its archspec.json: spec name and sha256, archspec version, input, outputs,
    preprocessing with the spec's `input.preprocess` mode; the exporter's own writer) and,
    for a run's models, `archspec.training` (which file and epoch)."""
    info = {"spec_name": graph.name, "spec_sha256": graph.meta.get("spec_sha256"),
            "reference": graph.meta.get("reference") or None}
    meta = metadata(model, info, model.inputs[0].name, tuple(model.inputs[0].shape[1:]),
                           list(model.output_names))
    # the graph of a spec always has its mode (`ir.pipeline`); one built otherwise records none
    if "preprocess" in graph.meta:
        record_preprocess(meta, graph.meta["preprocess"] or "none", False, "the spec (input.preprocess)")
    if training:
        meta["archspec.training"] = json.dumps(training, default=float)
    with atomic_output(Path(path)) as tmp:
        write_keras(model, tmp, meta, lambda m: None, {})


def keras_training_info(path: Path) -> dict | None:
    """The `archspec.training` record of a run's .keras file ({} when it has none, as from an
    older archspec), or None when the file is missing or unreadable."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            if METADATA_FILE not in z.namelist():
                return {}
            doc = json.loads(z.read(METADATA_FILE))
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    info = doc.get("archspec.training") if isinstance(doc, dict) else None
    return info if isinstance(info, dict) else {}
