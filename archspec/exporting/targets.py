"""The table of export targets: what each format is (its file suffixes, whether it is a
directory, the variants it has, what runs it for the check) and the module that writes and
runs it. The orchestrator (`archspec.exporting.export`) only walks the steps; a new format
is one row here and one module with two functions:

- ``write(job, tmp)``: the artefact written at the staging path `tmp` (a `job.Job` carries
  the model, its names, the options and the check inputs);
- ``run(path, x, input_name, output_names)``: its outputs on `x`, as float32 arrays in the
  order of `output_names` (what the one check, `verify.check`, compares with Keras).

Light: importing this module imports no framework (the command line's parser reads it).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    #: the path suffixes that name this format (the first is the one to suggest)
    suffixes: tuple[str, ...]
    #: the variants it can be written as (`options.VARIANTS`)
    variants: tuple[str, ...]
    #: what runs the artefact for the check (said in progress lines and --help)
    runtime: str
    #: the module (in this package) with ``write`` and ``run``
    module: str
    #: one line for --help: what the file is
    what: str
    directory: bool = False

    def writer(self):
        return importlib.import_module(f"{__package__}.{self.module}")


TARGETS: dict[str, Target] = {t.name: t for t in (
    Target("onnx", (".onnx",), ("fp16", "int8", "int8_dynamic"), "onnxruntime", "to_onnx",
           "ONNX (dynamic batch, from the graph IR): ONNX Runtime, TensorRT, OpenVINO, browsers"),
    Target("saved_model", (), (), "tf.saved_model.load", "to_savedmodel",
           "a TensorFlow SavedModel directory (serving_default signature): TF Serving, TF.js converters",
           directory=True),
    Target("keras", (".keras",), (), "keras.models.load_model", "to_keras",
           "a Keras 3 .keras archive with its provenance: keras.models.load_model after `import archspec`"),
    Target("tflite", (".tflite",), ("fp16", "int8", "int8_dynamic"), "the LiteRT interpreter", "to_tflite",
           "a LiteRT (TFLite) flatbuffer: Android, iOS, microcontrollers, Coral (int8 with --int8-io)"),
)}

FORMATS = tuple(TARGETS)


def target(format: str) -> Target:
    return TARGETS[format]
