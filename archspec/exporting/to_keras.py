"""The ``keras`` target: a Keras 3 ``.keras`` archive with archspec's provenance
(`archspec.backends.keras.files.write_keras`), run back with ``keras.models.load_model``."""

from __future__ import annotations

from pathlib import Path


def write(job, tmp: Path) -> None:
    from ..backends.keras import files

    files.write_keras(job.model, tmp, job.metadata, job.say, job.timings)


def run(path: Path, x, input_name, output_names) -> list:
    from ..backends.keras import keras
    from .verify import keras_outputs

    return keras_outputs(keras().models.load_model(str(path)), x)
