"""archspec: a compiler for convolutional network architectures.

    import archspec
    spec = archspec.load("resnet50")                    # validated, located errors
    report = archspec.analyze(spec)                      # shapes, params, MACs (no TF)
    model = archspec.build(spec)                         # keras.Model
    archspec.export(model, "resnet50.onnx", format="onnx")
    archspec.train("resnet18", "cifar100", "data/cifar-100-python", "runs/r18")   # a run directory

Importing archspec never imports TensorFlow or Keras. Once Keras is imported (before or
after archspec), archspec's custom layers are registered, so ``keras.models.load_model``
reopens `.keras` files that archspec wrote.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from .api import analyze, build, export, load, lower_spec, resolve, train
from .core.errors import ArchspecError, SpecError
from .core.version import __version__
__all__ = ["load", "resolve", "analyze", "build", "export", "lower_spec", "train", "ArchspecError", "SpecError",
           "__version__"]


def _register_layers_when_keras_loads() -> None:
    if "keras" in sys.modules:
        try:
            importlib.import_module("archspec.backends.keras.build")
        except Exception:  # pragma: no cover - a broken keras install surfaces later, with a message
            pass
        return

    class _KerasHook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name != "keras":
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            original = spec.loader.exec_module

            def exec_module(module):
                original(module)
                try:
                    importlib.import_module("archspec.backends.keras.build")
                except Exception:  # pragma: no cover
                    pass

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _KerasHook())


_register_layers_when_keras_loads()
