"""The HTML report of a spec: one self-contained file (no network access when opened).

It holds the network diagram (`diagram.py`), charts of params and MACs per stage and
block and of the resolution and channels through the network (`charts.py`), the
sortable per-block table, the totals, the spec's YAML with line numbers (each block
links to its line), the compound-scaling presets when the spec has them, and, given a
built `.keras` model, the parameters Keras counts beside the static ones. Everything
but the optional Keras model is static: no TensorFlow is imported.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from ..core.version import __version__
from .charts import bars, scaling_plot, through_network
from .diagram import boxes_of, render_svg
from ..core.units import human, shape_str
from ..core.errors import ArchspecError, Location, SpecError
from ..ir.graph import Graph
from ..language import stage_of
# the sweep's page lives with the sweep, below this report (which shows a sweep); still importable here
from .sweeps import sweep, sweep_html  # noqa: F401


def _source_file(source: str) -> Path | None:
    """The file a location's source names (as `display_source` wrote it), if readable."""
    from ..language.loader import bundled_spec_dir

    p = Path(source)
    if p.is_file():
        return p
    if source.startswith("specs/") and (bundled_spec_dir() / source[6:]).is_file():
        return bundled_spec_dir() / source[6:]
    return None


def spec_sources(raw, graph: Graph) -> tuple[list[dict], dict]:
    """The YAML files the spec came from (itself and what it extends), with their lines,
    and for each top-level block path its anchor: (`f{file index}L{line}`, a label such as
    `line 14`, or `densenet121.yaml:47` when the spec extends another file)."""
    files: dict[str, int] = {}
    anchors: dict[tuple, tuple] = {}
    lines: dict[tuple, tuple[str, str]] = {}
    if raw is None:
        return [], {}
    main_loc = raw.locate(())
    order = [main_loc.source] if main_loc else []
    for b in graph.blocks:
        if b.depth == 0 and b.path:
            loc = raw.locate(tuple(b.path))
            if loc is not None and loc.line is not None:
                order.append(loc.source)
                anchors[tuple(b.path)] = (loc.source, loc.line)
    out = []
    for src in dict.fromkeys(order):
        f = _source_file(src)
        if f is None:
            continue
        files[src] = len(out)
        out.append({"name": src, "index": len(out), "lines": f.read_text(encoding="utf-8").splitlines()})
    for path, (src, line) in anchors.items():
        if src in files:  # the id of its line, and how a link to it reads
            label = f"{Path(src).name}:{line}" if len(out) > 1 else f"line {line}"
            lines[path] = (f"f{files[src]}L{line}", label)
    return out, lines


WEIGHT_FILES = (".h5", ".hdf5", ".npz")


def keras_counts(model_path: str | os.PathLike, graph: Graph | None = None) -> dict:
    """Parameters Keras counts, per layer and in all, in a saved `.keras` model, or in the
    spec's model (`graph`) built with the weights of a weights file (keras.applications'
    `.h5`, a `.weights.h5`, an `.npz`) loaded by the one strict loader, whose summary line
    is kept under ``"weights"``."""
    p = Path(model_path)
    if not p.is_file() or (p.suffix != ".keras" and not (graph is not None and p.name.endswith(WEIGHT_FILES))):
        raise SpecError("expected a .keras file written by `archspec build`, or a weights file (.h5, .weights.h5, "
                        ".npz)" if p.is_file() else "no such file", Location(str(p)))
    from ..backends import keras as keras_backend

    keras_backend.load()
    import keras

    said: list[str] = []
    try:
        if p.suffix == ".keras":
            model = keras.models.load_model(p, compile=False)
        else:
            model = keras_backend.build_model(graph, weights=p, say=said.append)
    except ArchspecError:
        raise
    except Exception as exc:  # noqa: BLE001 - Keras raises many kinds for an unreadable file
        raise ArchspecError(f"cannot load {p}: {exc}") from None
    layers = {}

    def walk(m):
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                walk(layer)
            else:
                layers[layer.name] = layer.count_params()

    walk(model)
    return {"path": str(p), "name": model.name, "params": model.count_params(), "layers": layers,
            "trainable_params": sum(int(w.numpy().size) for w in model.trainable_weights),
            **({"weights": said[-1]} if said else {})}


def context(graph: Graph, spec, raw, *, measured: dict | None = None, scaling: dict | None = None,
            phases: list[dict] | None = None, title: str | None = None) -> dict:
    """Everything the report template shows, from the graph (and the optional extras)."""
    sources, anchors = spec_sources(raw, graph)
    boxes = boxes_of(graph)
    blocks_by_name = {b.name: b for b in graph.blocks if b.depth == 0}
    rows = []
    for b in boxes:
        info = blocks_by_name.get(b.name)
        path = tuple(info.path) if info else ()
        row = {"name": b.name, "type": b.type, "stage": stage_of(spec, path), "shape": shape_str(b.shape),
               "params": b.params, "macs": b.macs, "layers": b.layers, "merges": b.inner.merges,
               "anchor": anchors.get(path, (None, None))[0], "anchor_label": anchors.get(path, (None, None))[1]}
        if measured is not None:
            row["keras_params"] = sum(measured["layers"].get(n, 0) for n in (info.nodes if info else []))
        rows.append(row)
    stages: dict[str, dict] = {}
    for r in rows:
        s = stages.setdefault(r["stage"], {"name": r["stage"], "params": 0, "macs": 0, "blocks": 0})
        s["params"] += r["params"]
        s["macs"] += r["macs"]
        s["blocks"] += 1
    stage_rows = [s for s in stages.values() if s["name"] != "input"]
    chart_rows = [r for r in rows if r["type"] != "input"]
    charts = {
        "stage_params": bars([(s["name"], s["params"]) for s in stage_rows], "parameters per stage"),
        "stage_macs": bars([(s["name"], s["macs"]) for s in stage_rows], "MACs per stage"),
        "block_params": bars([(r["name"], r["params"]) for r in chart_rows], "parameters per block", bar_h=9),
        "block_macs": bars([(r["name"], r["macs"]) for r in chart_rows], "MACs per block", bar_h=9),
        "through": through_network([b.name for b in boxes], [b.shape for b in boxes]),
    }
    if scaling is not None:
        charts["scaling"] = scaling_plot(scaling)
    outs = [graph.node(o) for o in graph.outputs]
    ref = graph.meta.get("reference")
    return {
        "title": title or f"{graph.name} \u2014 archspec report",
        "name": graph.name, "description": getattr(spec, "description", "") or "",
        "input_shape": shape_str(graph.inputs[0].shape),
        "preprocess": _preprocess(graph),
        "outputs": [{"name": o.name, "shape": shape_str(o.shape)} for o in outs],
        "params": graph.params, "trainable": graph.trainable_params,
        "non_trainable": graph.params - graph.trainable_params, "macs": graph.macs, "macs_h": human(graph.macs),
        "layers": len(graph.nodes), "blocks": len(boxes),
        "merges": sum(b.inner.merges for b in boxes),
        "sha": graph.meta.get("spec_sha256", ""), "reference": ref if isinstance(ref, dict) else None,
        "rows": rows, "stages": stage_rows, "charts": charts, "sources": sources,
        "diagram": render_svg(graph, anchors=anchors, interactive=True),
        "measured": measured, "scaling": scaling, "phases": phases,
        "version": __version__, "generated": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "human": human,
    }


def _preprocess(graph: Graph) -> dict:
    """The spec's `input.preprocess` as the report shows it: its mode and what it does."""
    from ..language.preprocess import describe

    mode = graph.meta.get("preprocess") or "none"
    return {"mode": mode, "description": describe(mode)}


def html_report(spec_ref, overrides: list[str] | None = None, *, model: str | None = None,
                phases: list[dict] | None = None) -> tuple[str, str]:
    """The report of a spec (a path, a bundled name or a Spec) as one HTML document.

    Args:
        spec_ref: the spec.
        overrides: `--set` overrides.
        model: a `.keras` file built from the spec: its Keras counts are shown beside the
            static ones (this imports Keras).
        phases: per-phase trainable/frozen counts of a training recipe, if any.

    Returns:
        (the network's name, the HTML text).
    """
    from ..ir.pipeline import lower_spec
    from ..language import Spec, load as load_spec, raw_of

    if isinstance(spec_ref, Spec):
        spec, raw = spec_ref, raw_of(spec_ref)
    else:
        spec, raw = load_spec(spec_ref, overrides)
    graph = lower_spec(spec)
    scaling = None
    if spec.scaling is not None and getattr(spec.scaling, "presets", None):
        from ..resolving.compound import preset_names

        names = preset_names(spec)
        if names:
            scaling = sweep(spec, [float(k) for k in range(len(names))], names)
    measured = keras_counts(model, graph) if model else None
    from ..core.templates import render

    return graph.name, render("report.html.j2", r=context(graph, spec, raw, measured=measured, scaling=scaling,
                                                         phases=phases))


def diagram_svg(spec_ref, overrides: list[str] | None = None) -> tuple[str, str]:
    """The diagram alone as a standalone SVG, every block expanded (needs no script):
    (the network's name, the SVG text)."""
    from ..ir.pipeline import lower_spec

    graph = lower_spec(spec_ref, overrides)
    return graph.name, render_svg(graph, expanded=True)


def write_report(spec_ref, overrides: list[str] | None = None, output=None, *, force: bool = False,
                 model: str | None = None, phases=None) -> tuple[Path, str]:
    """`archspec report`: the HTML report (`html_report`) into `output` (default NAME.html),
    or the diagram alone (`diagram_svg`) when it ends in ``.svg``; the output is checked
    before any work by the one writer (`archspec.core.atomic`). `phases`: a function giving
    the per-phase counts of a recipe (called after the output is checked), or None.
    Returns (the path written, the text)."""
    from ..core.atomic import check_output, write_text_atomic

    out = check_output(output, force) if output else None
    if out is not None and out.suffix not in (".html", ".htm", ".svg"):
        raise SpecError(f"report writes .html (the report) or .svg (the diagram alone); got "
                        f"{out.suffix or 'no suffix'!r}", Location(str(out)))
    if out is not None and out.suffix == ".svg":
        if model:
            raise SpecError("--model adds measured counts to the HTML report; it does not go with an .svg output")
        name, text = diagram_svg(spec_ref, overrides)
    else:
        name, text = html_report(spec_ref, overrides, model=model, phases=phases() if phases else None)
    out = out or check_output(f"{name}.html", force)
    write_text_atomic(out, text, force=force)
    return out, text
