"""The parity check: run the written artefact (ONNX Runtime, tf.saved_model.load,
keras.models.load_model) next to the Keras model on the same inputs and compare."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import ArchspecError
from ..backends.keras import keras


def run_onnx(path: Path, x, input_name, output_names):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(output_names, {input_name: x})


def run_saved_model(path: Path, x, input_name, output_names):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]
    out = fn(**{input_name: tf.constant(x)})
    missing = [n for n in output_names if n not in out]
    if missing:
        raise ArchspecError(f"the SavedModel signature lacks outputs {missing} (has {sorted(out)})")
    return [out[n].numpy() for n in output_names]


def run_keras(path: Path, x, input_name, output_names):
    loaded = keras().models.load_model(str(path))
    return keras_outputs(loaded, x)


RUNTIMES = {"onnx": "onnxruntime", "saved_model": "tf.saved_model.load", "keras": "keras.models.load_model"}


#: inputs run at a time (a check of 256 images at 224x224 stays small)
BATCH = 32


def run(format: str, path: Path, x, input_name, output_names):
    """The outputs of the artefact at `path` (of `format`) on `x`."""
    runner = {"onnx": run_onnx, "saved_model": run_saved_model, "keras": run_keras}[format]
    if len(x) <= BATCH:
        return runner(path, x, input_name, output_names)
    if format == "onnx":  # one session for every batch
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        return _joined(sess.run(output_names, {input_name: x[i:i + BATCH]}) for i in range(0, len(x), BATCH))
    if format == "keras":
        return keras_outputs(keras().models.load_model(str(path)), x)
    return _joined(runner(path, x[i:i + BATCH], input_name, output_names) for i in range(0, len(x), BATCH))


def _joined(batches) -> list:
    import numpy as np

    parts = list(batches)
    return [np.concatenate([np.asarray(b[k]) for b in parts]) for k in range(len(parts[0]))]


def keras_outputs(model, x) -> list:
    import numpy as np

    def one(xb):
        out = model(xb, training=False)
        if not isinstance(out, (list, tuple)):
            out = [out]
        return [np.asarray(o, dtype="float32") for o in out]

    return _joined(one(x[i:i + BATCH]) for i in range(0, len(x), BATCH))


def compare(ref, got, names) -> dict:
    """Per output: max |difference|, max |reference|, shape."""
    import numpy as np

    if len(ref) != len(got):
        raise ArchspecError(f"the export returns {len(got)} outputs, the Keras model {len(ref)}")
    res = {}
    for name, r, g in zip(names, ref, got):
        g = np.asarray(g, dtype="float32")
        if r.shape != g.shape:
            raise ArchspecError(f"output {name!r}: shape {g.shape} from the export, {r.shape} from Keras")
        diff = float(np.max(np.abs(r - g))) if r.size else 0.0
        if not np.isfinite(diff):
            diff = float("inf")
        res[name] = {"max_abs_diff": diff, "max_abs_ref": float(np.max(np.abs(r))) if r.size else 0.0,
                     "shape": list(r.shape)}
    return res


def mismatch(diffs: dict, tolerance: float) -> str | None:
    """None when every output is within `tolerance` (relative to the output's magnitude
    above 1), else what differs and by how much."""
    bad = {k: d for k, d in diffs.items() if d["max_abs_diff"] > tolerance * max(1.0, d["max_abs_ref"])}
    if not bad:
        return None
    name, worst = max(bad.items(), key=lambda kv: kv[1]["max_abs_diff"])
    scale = f" x {worst['max_abs_ref']:.3g}" if worst["max_abs_ref"] > 1 else ""
    return f"output {name!r} differs by up to {worst['max_abs_diff']:.3g} (tolerance {tolerance:g}{scale})"


def accuracy(scores, labels) -> float | None:
    """Top-1 accuracy of class scores (N, classes) against integer labels (N,)."""
    import numpy as np

    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[-1] < 2 or len(scores) != len(labels):
        return None
    return float(np.mean(np.argmax(scores, -1) == np.asarray(labels)))


def top1(ref, got) -> float | None:
    import numpy as np

    ref, got = np.asarray(ref), np.asarray(got)
    if ref.ndim != 2 or ref.shape[-1] < 2:
        return None
    return float(np.mean(np.argmax(ref, -1) == np.argmax(got, -1)))
