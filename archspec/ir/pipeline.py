"""The pipeline every later layer shares: a spec (path, bundled name or Spec) loaded,
resolved and lowered to the Graph IR (`lower_spec`), and the Graph summed (`analyze`).
Pure Python: no TensorFlow, no Keras."""

from __future__ import annotations

import os
from typing import Any, Iterator

from ..core.errors import ArchspecError, SpecError
from ..language import Spec, raw_of, spec_hash
from ..language import load as _load_spec
from ..resolving import resolve as _resolve
from .graph import Graph
from .lower import lower


def lower_spec(spec: "str | os.PathLike | Spec", overrides: list[str] | None = None) -> Graph:
    """Spec (or a path / bundled name) -> resolved -> Graph IR with located errors."""
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
    # the data's preprocessing (input.preprocess): applied to the data, not a node of the graph
    graph.meta["preprocess"] = resolved.input.preprocess
    # the keras.applications network it is and its released weights (`--weights imagenet`)
    graph.meta["keras"] = resolved.keras.model_dump() if resolved.keras else None
    graph.meta["include_top"] = resolved.head.include_top
    return graph


def analyze(spec: "str | os.PathLike | Spec | Graph", overrides: list[str] | None = None) -> dict[str, Any]:
    """Shapes, parameters and MACs of every layer and block, without any framework.

    Returns a dict with `name, input_shape, preprocess, output_shape, params,
    trainable_params, non_trainable_params, macs, layers, blocks`. `preprocess` is the
    spec's `input.preprocess` (mode and what it does to RGB pixels 0..255): the data's
    preprocessing, outside the network.
    """
    from ..language.preprocess import describe
    g = spec if isinstance(spec, Graph) else lower_spec(spec, overrides)
    outs = [g.node(o) for o in g.outputs]
    inp = g.inputs[0]
    mode = g.meta.get("preprocess") or "none"
    return {
        "name": g.name,
        "input_shape": list(inp.shape),
        "preprocess": {"mode": mode, "description": describe(mode)},
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


def catalogue() -> list[dict[str, Any]]:
    """`archspec list`: each bundled spec's name, the keras.applications constructor it is
    (`archspec build <constructor>` finds it) and its published weights, description,
    input shape, params and MACs (each loaded once: a Spec keeps its document, so an error keeps its file:line:col)."""
    from ..language.loader import bundled_names, bundled_spec_dir, keras_constructors

    keras_names = keras_constructors(bundled_spec_dir())
    rows = []
    for name in bundled_names():
        spec = _load_spec(name)[0]
        r = analyze(spec)
        rows.append({"name": name, "keras": keras_names.get(name), "description": spec.description,
                     "input_shape": r["input_shape"], "params": r["params"], "macs": r["macs"],
                     "weights": sorted(spec.keras.weights) if spec.keras and name in keras_names else []})
    return rows


def validate_specs(refs, overrides: list[str] | None = None) -> Iterator[tuple[Any, "Graph | SpecError"]]:
    """`archspec validate`: each spec of `refs` loaded, resolved and lowered (every check,
    the static shape analysis included), one after another whatever the others gave:
    yields (ref, its Graph or its SpecError)."""
    for ref in refs:
        try:
            yield ref, lower_spec(ref, overrides)
        except SpecError as exc:
            yield ref, exc
