"""The public API: load, resolve, analyze, build, export. Heavy imports happen inside
`build` and `export` only."""

from __future__ import annotations

import os
import sys
from typing import Any

from .errors import ArchspecError, MissingDependency
from .graph import Graph
from .spec import Spec
from .spec import load as _load_spec

def load(ref: str | os.PathLike, overrides: list[str] | None = None) -> Spec:
    """Load and validate a spec by path or bundled name, with `--set`-style overrides."""
    return _load_spec(ref, overrides)[0]


def resolve(spec: Spec) -> Spec:
    """Make every number concrete (scaling multipliers and rounding applied)."""
    from .resolving import resolve as _resolve

    return _resolve(spec)


def lower_spec(spec: "str | os.PathLike | Spec", overrides: list[str] | None = None) -> Graph:
    """Spec (or a path / bundled name) -> resolved -> Graph IR with located errors."""
    from .lower import lower
    from .resolving import resolve as _resolve

    from .spec import raw_of, spec_hash

    if not isinstance(spec, Spec):
        spec, raw = _load_spec(spec, overrides)
    elif overrides:
        raise ArchspecError("overrides apply to a spec file; pass the path or name instead of a Spec")
    else:
        raw = raw_of(spec)  # a Spec from archspec.load keeps its document, so errors keep file:line:col
    resolved = _resolve(spec)
    graph = lower(resolved, raw)
    # what was built, exactly (export writes it into the artefact's metadata)
    graph.meta["spec_sha256"] = spec_hash(resolved)
    graph.meta["reference"] = resolved.reference or None
    return graph


def analyze(spec: "str | os.PathLike | Spec | Graph", overrides: list[str] | None = None) -> dict[str, Any]:
    """Shapes, parameters and MACs of every layer and block, without any framework.

    Returns a dict with `name, input_shape, output_shape, params, trainable_params,
    non_trainable_params, macs, layers, blocks`.
    """
    g = spec if isinstance(spec, Graph) else lower_spec(spec, overrides)
    outs = [g.node(o) for o in g.outputs]
    inp = g.inputs[0]
    return {
        "name": g.name,
        "input_shape": list(inp.shape),
        "output_shape": list(outs[-1].shape) if len(outs) == 1 else [list(o.shape) for o in outs],
        "outputs": [{"name": o.name, "shape": list(o.shape)} for o in outs],
        "taps": list(g.meta.get("taps", [])),
        "params": g.params,
        "trainable_params": g.trainable_params,
        "non_trainable_params": g.params - g.trainable_params,
        "macs": g.macs,
        "macs_note": "multiply-accumulates of conv, depthwise-conv and dense layers (what papers call FLOPs)",
        "layers": [n.to_dict() for n in g.nodes],
        "blocks": g.block_rows(),
    }


def _keras_build():
    from . import _quiet

    try:
        if "archspec.keras_build" in sys.modules:
            from . import keras_build
        else:
            _quiet.prepare_environment()
            with _quiet.native_stderr_filtered():
                from . import keras_build

                keras_build.warm_up()
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(
            f"building needs TensorFlow/Keras 3 ({exc}); install with: pip install 'archspec'") from None
    return keras_build


def build(spec: "str | os.PathLike | Spec | Graph", overrides: list[str] | None = None, *,
          precision: str | None = None, seed: int | None = None):
    """Compile a spec to a `keras.Model` (layer names as the spec gives them)."""
    g = spec if isinstance(spec, Graph) else lower_spec(spec, overrides)
    return _keras_build().build_model(g, precision=precision, seed=seed)


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
