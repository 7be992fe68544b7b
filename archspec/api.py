"""The public API, a facade: each function is one call into the layer that owns it (see
docs/architecture.md). Nothing below imports it. Heavy imports (Keras, TensorFlow, ONNX)
happen inside `build`, `export` and `train` only."""

from __future__ import annotations

import os

from .ir.graph import Graph
from .ir.pipeline import analyze, lower_spec
from .language import Spec
from .language import load as _load_spec

__all__ = ["load", "resolve", "lower_spec", "analyze", "build", "export", "train", "weights_report"]


def load(ref: str | os.PathLike, overrides: list[str] | None = None) -> Spec:
    """Load and validate a spec by path or bundled name, with `--set`-style overrides."""
    return _load_spec(ref, overrides)[0]


def resolve(spec: Spec) -> Spec:
    """Make every number concrete (scaling multipliers and rounding applied)."""
    from .resolving import resolve as _resolve

    return _resolve(spec)


def build(spec: "str | os.PathLike | Spec | Graph", overrides: list[str] | None = None, *,
          precision: str | None = None, seed: int | None = None, weights=None, weights_skip=(), say=None):
    """Compile a spec to a `keras.Model` (layer names as the spec gives them). `weights`: a
    weights file (keras.applications .h5, Keras 3 .weights.h5 / .keras, .npz) loaded strictly
    (`archspec weights` says what loads; a refused load is a SpecError naming the layers);
    `weights_skip`: fnmatch globs of layers left at their initial weights; `say`: where the
    load's summary line goes (default standard error)."""
    from .backends import keras as keras_backend

    return keras_backend.build_model(spec, overrides, precision=precision, seed=seed, weights=weights,
                                     weights_skip=weights_skip, say=say)


def weights_report(spec, path, overrides: list[str] | None = None, skip=()):
    """The static load report of a weights file into a spec (`archspec weights`): per weighted
    layer loaded / adapted / re-initialised / skipped / missing / shape mismatch, and what the
    file holds that the spec lacks; `.loadable`, `.summary()`, `.to_dict()`. No TensorFlow."""
    from .backends.keras.weights import weights_report as report
    from .ir.graph import Graph
    from .ir.pipeline import lower_spec

    graph = spec if isinstance(spec, Graph) else lower_spec(spec, overrides)
    return report(graph, path, skip)


def export(model_or_spec, path: str | os.PathLike, format: str | None = None, **kwargs):
    """Export a Keras model, a `.keras` file, a run directory or a spec (built first) to
    ONNX, SavedModel or `.keras`, checked by running it (see `archspec.exporting.export`).
    `format` None: from the suffix of `path` (``.onnx``, ``.keras``), an error otherwise."""
    from . import exporting

    return exporting.export(model_or_spec, path, format=format, **kwargs)


def train(spec, recipe, data, out, **kwargs) -> dict:
    """Train a spec from a recipe into a run directory; returns the run's metrics with its
    `history` (one dict per completed epoch). See `archspec.training.loop.train` for the
    keyword arguments (overrides, recipe_overrides, epochs, batch_size, weights, resume,
    force, distribute, say, verbose)."""
    from .training.loop import train as _train

    return _train(spec, recipe, data, out, **kwargs)
