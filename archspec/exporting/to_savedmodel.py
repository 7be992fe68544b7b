"""The ``saved_model`` target: a TensorFlow SavedModel directory with one
``serving_default`` signature (Keras' ExportArchive; the input and outputs keep the Keras
names) and archspec's metadata in ``assets.extra``; run back with ``tf.saved_model.load``.
The ``tflite`` target converts this same SavedModel."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ..core.errors import ArchspecError
from ..core.progress import Heartbeat


def write(job, tmp: Path) -> None:
    t0 = time.perf_counter()
    save(job.model, tmp, job.input_name, job.input_shape, job.output_names, job.say)
    from ..backends.keras.files import METADATA_FILE, metadata_doc

    extra = tmp / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / METADATA_FILE).write_text(json.dumps(metadata_doc(job.metadata), indent=2))
    job.timings["convert"] = time.perf_counter() - t0


def save(model, directory: Path, input_name, input_shape, output_names, say) -> None:
    """`model` as a SavedModel at `directory` with a ``serving_default`` signature taking
    float32 (batch, *input_shape) named `input_name` and returning `output_names`."""
    from ..backends.keras import keras, tensorflow

    k, tf = keras(), tensorflow()
    archive = k.export.ExportArchive()
    archive.track(model)

    def serve(x):
        outs = model(x, training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return {name: out for name, out in zip(output_names, outs)}

    with Heartbeat(say, "writing the SavedModel (serving_default signature)…"):
        archive.add_endpoint("serving_default", serve,
                             input_signature=[tf.TensorSpec((None, *input_shape), tf.float32, name=input_name)])
        archive.write_out(str(directory), verbose=False)


def run(path: Path, x, input_name, output_names) -> list:
    import tensorflow as tf

    from .verify import BATCH, joined

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]

    def one(xb):
        out = fn(**{input_name: tf.constant(xb)})
        missing = [n for n in output_names if n not in out]
        if missing:
            raise ArchspecError(f"the SavedModel signature lacks outputs {missing} (has {sorted(out)})")
        return [out[n].numpy() for n in output_names]

    return joined(one(x[i:i + BATCH]) for i in range(0, len(x), BATCH))
