"""Static comparison of two networks: two Graphs compared by layer name (no TensorFlow).

`diff_graphs` compares two lowered graphs: layers are matched by name (added, removed,
changed in op, attributes, output shape, parameters or MACs, or rewired to other existing
layers), top-level blocks by name (a block is changed when any of its layers is, or its
type, output shape, parameters or MACs differ), and blocks are grouped as the spec groups
them: the input, the stem, each stage (by the stage's name) and the head. `diff_specs`
loads, scales and lowers the two sides first. Both return a JSON-able dict whose
``summary`` is one line, e.g. ``resnet50 -> resnet101: stage conv4: +17 blocks,
+19.07M params; ...``.

The module is named so that it does not clash with a public API name; it is not part of
``archspec.__all__``. Import it as ``from archspec import diff``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable

from ..ir.graph import Graph, Node, _jsonable
from ..core.errors import SpecError
from ..core.units import human

MACS_NOTE = "multiply-accumulates of conv, depthwise-conv and dense layers (what papers call FLOPs)"

#: the fields of a layer compared by `diff_graphs`, in the order they are reported
LAYER_FIELDS = ("op", "attrs", "output_shape", "params", "trainable_params", "macs", "inputs")


# ---------------------------------------------------------------- loading the two sides


def load_side(spec: "str | os.PathLike | Any", overrides: list[str] | None = None, *,
              preset: str | None = None, phi: float | None = None):
    """One side of a diff: a spec (path, bundled name or Spec), its overrides and scaling.

    Args:
        spec: a spec file, the name of a bundled spec, or a `Spec`.
        overrides: ``--set``-style ``KEY=VALUE`` strings (only with a path or name).
        preset: a row of the spec's official scaling table (e.g. ``"b3"``).
        phi: a compound-scaling coefficient (the paper's formula).

    Returns:
        ``(spec, graph)``: the (scaled) Spec and its lowered Graph.

    Raises:
        SpecError: an unknown spec, a bad override, an unknown preset, a bad phi, or
            both ``preset`` and ``phi`` given.
    """
    from ..core.errors import SpecError
    from ..ir.pipeline import lower_spec
    from ..language import Spec, load

    if preset is not None and phi is not None:
        raise SpecError(f"give a preset or a phi, not both (got preset={preset!r}, phi={phi!r})")
    if not isinstance(spec, Spec):
        spec = load(spec, overrides)[0]
    elif overrides:
        raise SpecError(f"overrides apply to a spec file or name, not to a Spec (got {overrides!r})")
    if preset is not None or phi is not None:
        from ..resolving import compound

        spec = compound.apply_phi(spec, phi) if phi is not None else compound.apply_preset(spec, preset)
    return spec, lower_spec(spec)


def stage_names(spec) -> list[str]:
    """The group name of each stage of a spec: its ``name``, else ``stages[i]``."""
    return [s.name or f"stages[{i}]" for i, s in enumerate(getattr(spec, "stages", None) or [])]


def diff_specs(a, b, *, overrides_a: list[str] | None = None, overrides_b: list[str] | None = None,
               preset_a: str | None = None, preset_b: str | None = None,
               phi_a: float | None = None, phi_b: float | None = None,
               label_a: str | None = None, label_b: str | None = None) -> dict[str, Any]:
    """Compare two specs (or a spec with itself under other overrides or scaling).

    Args:
        a: side A: a spec file, a bundled name or a `Spec`.
        b: side B, likewise.
        overrides_a: ``KEY=VALUE`` overrides of side A (``overrides_b`` of side B).
        preset_a: scale side A by a row of its official table (``preset_b`` for B).
        phi_a: scale side A by the paper's formula (``phi_b`` for B).
        label_a: how the summary names side A (default: the spec's name, with its
            overrides and scaling); ``label_b`` for B.

    Returns:
        The dict of `diff_graphs`, its ``a``/``b`` entries also giving each side's
        ``ref``, ``overrides``, ``preset`` and ``phi``.

    Raises:
        SpecError: either side cannot be loaded, overridden, scaled or lowered.
    """
    sides = []
    for ref, ov, preset, phi, label in ((a, overrides_a, preset_a, phi_a, label_a),
                                        (b, overrides_b, preset_b, phi_b, label_b)):
        spec, graph = load_side(ref, ov, preset=preset, phi=phi)
        info = {"ref": ref if isinstance(ref, str) else (os.fspath(ref) if isinstance(ref, os.PathLike) else spec.name),
                "overrides": list(ov or []), "preset": preset, "phi": phi}
        sides.append((graph, stage_names(spec), label or side_label(graph.name, ov, preset, phi), info))
    (ga, sa, la, ia), (gb, sb, lb, ib) = sides
    out = diff_graphs(ga, gb, stages_a=sa, stages_b=sb, label_a=la, label_b=lb)
    out["a"].update(ia)
    out["b"].update(ib)
    return out


def side_label(name: str, overrides: Iterable[str] | None = None, preset: str | None = None,
               phi: float | None = None) -> str:
    """How a summary names a side: ``resnet50``, ``efficientnet-b3``, ``resnet50 [head.classes=10]``.

    Args:
        name: the (scaled) spec's name; scaling names a spec ``NAME-b3`` / ``NAME-phi1``,
            so a preset or phi already in the name is not repeated.
        overrides: the side's own ``KEY=VALUE`` overrides.
        preset: the side's preset, if any.
        phi: the side's phi, if any.
    """
    extra = list(overrides or [])
    if phi is not None and not name.endswith(f"-phi{phi:g}"):
        extra.append(f"phi={phi:g}")
    if preset is not None and not name.endswith(f"-{preset}"):
        extra.append(f"preset={preset}")
    return f"{name} [{', '.join(extra)}]" if extra else name


def diff_command(a, b, *, overrides=(), overrides_a=(), overrides_b=(), preset=None, phi=None, preset_a=None,
                 preset_b=None, phi_a=None, phi_b=None, warn: Callable[[str], None] | None = None, html=None,
                 force: bool = False) -> dict[str, Any]:
    """`archspec diff`: `overrides` (``--set``) then a side's own (``--set-a``/``--set-b``) on
    each side, then its scaling: its own preset or phi over the shared ones (both for one
    side is a SpecError); scaling warnings go to `warn`. Returns `diff_specs`' dict; with
    `html`, also writes the self-contained page there (the path checked before any work;
    an existing file replaced only with `force`) and records it under ``"html"``."""
    from ..core.atomic import check_output, write_text_atomic
    from ..core.templates import render
    from ..core.units import shape_str
    from ..language import load
    from ..resolving.compound import apply_scaling

    out = check_output(html, force) if html else None  # before any work
    sides = []
    for s, ref, own, p, f in (("a", a, overrides_a, preset_a, phi_a), ("b", b, overrides_b, preset_b, phi_b)):
        sets, p, f = list(overrides) + list(own), p or preset, f if f is not None else phi
        if p is not None and f is not None:
            raise SpecError(f"side {s.upper()} ({ref}): give --preset or --phi, not both (got preset={p!r}, phi={f:g})")
        spec = load(ref, sets)[0]
        if p is not None or f is not None:
            spec = apply_scaling(spec, f, p, warn)
        sides.append((spec, {"ref": ref, "overrides": sets, "preset": p, "phi": f,
                             "label": side_label(spec.name, own, p, f)}))
    (sa, ia), (sb, ib) = sides
    d = diff_specs(sa, sb, label_a=ia.pop("label"), label_b=ib.pop("label"))
    d["a"].update(ia)
    d["b"].update(ib)
    if out is not None:
        write_text_atomic(out, render("diff.html.j2", d=d, human=human, signed=signed, shape_str=shape_str), force=force)
        d["html"] = str(out)
    return d


# ---------------------------------------------------------------- the comparison


def _group_of(path: tuple, stages: list[str]) -> tuple[str, str]:
    """(group key, label) of a top-level block from its spec path."""
    if not path:
        return "(other)", "(other)"
    head = path[0]
    if head == "stages" and len(path) > 1 and isinstance(path[1], int):
        i = path[1]
        name = stages[i] if i < len(stages) else f"stages[{i}]"
        return f"stage:{name}", (name if name.lower().startswith("stage") else f"stage {name}")
    return str(head), str(head)


def _layer(n: Node) -> dict[str, Any]:
    return {"op": n.op, "attrs": _jsonable(n.attrs), "output_shape": list(n.shape), "params": n.params,
            "trainable_params": n.trainable, "macs": n.macs, "inputs": list(n.inputs)}


def _delta(a, b) -> dict[str, Any]:
    """``{"a", "b", "delta"}``; a missing side (None) counts as 0 in the delta."""
    return {"a": a, "b": b, "delta": (b or 0) - (a or 0)}


def _top_blocks(g: Graph, stages: list[str]) -> dict[str, dict[str, Any]]:
    """Top-level blocks by name (in graph order) with their group, nodes and sums; layers
    in no top-level block form one pseudo-block ``(ungrouped)``."""
    idx = {n.name: n for n in g.nodes}
    out: dict[str, dict[str, Any]] = {}
    seen: set[str] = set()
    for b in g.blocks:
        if b.depth or b.parent is not None:
            continue
        names = [n for n in b.nodes if n in idx]
        if not names:
            continue
        key, label = _group_of(tuple(b.path), stages)
        out[b.name] = {"type": b.type, "group": key, "group_label": label, "nodes": names}
        seen.update(names)
    rest = [n.name for n in g.nodes if n.name not in seen]
    if rest:
        out.setdefault("(ungrouped)", {"type": "", "group": "(other)", "group_label": "(other)", "nodes": []})
        out["(ungrouped)"]["nodes"] += rest
    for rec in out.values():
        nodes = [idx[n] for n in rec["nodes"]]
        rec.update(output_shape=list(nodes[-1].shape), params=sum(n.params for n in nodes),
                   trainable_params=sum(n.trainable for n in nodes), macs=sum(n.macs for n in nodes),
                   layers=len(nodes))
    return out


def _merged_order(a: list[str], b: list[str]) -> list[str]:
    """B's order, with names only in A placed after the name that precedes them in A."""
    in_b = set(b)
    out = list(b)
    pos = {n: i for i, n in enumerate(out)}
    prev = None
    for n in a:
        if n in in_b:
            prev = n
            continue
        at = pos[prev] + 1 if prev is not None else 0
        out.insert(at, n)
        pos = {x: i for i, x in enumerate(out)}
        prev = n
    return out


def _compare_layers(ga: Graph, gb: Graph) -> dict[str, Any]:
    la = {n.name: _layer(n) for n in ga.nodes}
    lb = {n.name: _layer(n) for n in gb.nodes}
    added = [n for n in lb if n not in la]
    removed = [n for n in la if n not in lb]
    changed: dict[str, dict[str, Any]] = {}
    for name in lb:
        if name not in la:
            continue
        x, y = la[name], lb[name]
        ch: dict[str, Any] = {}
        for f in LAYER_FIELDS:
            if f == "attrs":
                keys = list(dict.fromkeys([*x["attrs"], *y["attrs"]]))
                d = {k: {"a": x["attrs"].get(k), "b": y["attrs"].get(k)} for k in keys
                     if x["attrs"].get(k) != y["attrs"].get(k)}
                if d:
                    ch["attrs"] = d
            elif f == "inputs":
                # an edge that moved because a layer was added or removed (resnet101's conv5 now
                # reads conv4_block23_out) is explained by that layer; one rewired between layers
                # both networks have is a change of its own
                xi, yi = x["inputs"], y["inputs"]
                if xi != yi and (len(xi) != len(yi) or any(
                        p != q and p in lb and q in la for p, q in zip(xi, yi))):
                    ch["inputs"] = {"a": xi, "b": yi}
            elif x[f] != y[f]:
                ch[f] = {"a": x[f], "b": y[f]}
                if isinstance(x[f], int) and not isinstance(x[f], bool):
                    ch[f]["delta"] = y[f] - x[f]
        if ch:
            changed[name] = ch
    return {"a": la, "b": lb, "added": added, "removed": removed, "changed": changed,
            "renamed": _renames(removed, added, la, lb)}


def _renames(removed: list[str], added: list[str], la: dict, lb: dict) -> list[dict[str, str]]:
    """Likely renames: a removed and an added layer with the same op, attributes, shape and
    parameters, paired in order (a hint; they still count as removed and added)."""
    def sig(l):
        return (l["op"], repr(l["attrs"]), l["output_shape"], l["params"], l["macs"])

    out, j = [], 0
    for r in removed:
        s = sig(la[r])
        for k in range(j, len(added)):
            if sig(lb[added[k]]) == s:
                out.append({"a": r, "b": added[k]})
                j = k + 1
                break
    return out


def diff_graphs(a: Graph, b: Graph, *, stages_a: list[str] | None = None, stages_b: list[str] | None = None,
                label_a: str | None = None, label_b: str | None = None) -> dict[str, Any]:
    """Compare two graphs by layer name and report by block and by group.

    Args:
        a: side A's Graph.
        b: side B's Graph.
        stages_a: the group name of each stage of A (`stage_names` of its spec); stage
            blocks are grouped as ``stages[i]`` without it. ``stages_b`` for B.
        label_a: how the summary names A (default ``a.name``); ``label_b`` for B.

    Returns:
        A JSON-able dict: ``a``, ``b`` (name, label, shapes, totals), ``differ``,
        ``summary`` (one line), ``totals`` (params, trainable_params,
        non_trainable_params, macs, layers, blocks: each ``{a, b, delta}``), ``groups``
        (every group, in network order, with its status and deltas), ``blocks`` (the
        added, removed and changed top-level blocks, in network order), ``layers``
        (``added``, ``removed`` names; ``changed``: name, block and each changed field
        as ``{a, b[, delta]}``; ``renamed``: likely renames) and ``counts``.
    """
    la, lb = label_a or a.name, label_b or b.name
    ba, bb = _top_blocks(a, stages_a or []), _top_blocks(b, stages_b or [])
    layers = _compare_layers(a, b)
    added_l, removed_l, changed_l = set(layers["added"]), set(layers["removed"]), layers["changed"]

    blocks = []
    for name in _merged_order(list(ba), list(bb)):
        x, y = ba.get(name), bb.get(name)
        status = "added" if x is None else "removed" if y is None else None
        rec: dict[str, Any] = {"name": name, "group": (y or x)["group"], "group_label": (y or x)["group_label"],
                               "type": (y or x)["type"]}
        if status is None:
            nodes = list(dict.fromkeys(x["nodes"] + y["nodes"]))
            la_n = sum(n in added_l for n in y["nodes"])
            lr_n = sum(n in removed_l for n in x["nodes"])
            lc_n = sum(n in changed_l for n in nodes)
            fields = [f for f in ("type", "output_shape", "params", "trainable_params", "macs") if x[f] != y[f]]
            if x["group"] != y["group"]:  # moved to another stage
                fields.append("group")
                rec["group_a"] = x["group"]
            status = "changed" if (fields or la_n or lr_n or lc_n) else "same"
            rec.update(changes=fields, layers_added=la_n, layers_removed=lr_n, layers_changed=lc_n)
        rec["status"] = status
        rec["output_shape"] = {"a": x and x["output_shape"], "b": y and y["output_shape"]}
        for f in ("params", "trainable_params", "macs", "layers"):
            rec[f] = _delta(x and x[f], y and y[f])
        blocks.append(rec)

    groups: dict[str, dict[str, Any]] = {}
    for rec in blocks:
        for side, src in (("a", ba), ("b", bb)):
            blk = src.get(rec["name"])
            if blk is None:
                continue
            g = groups.setdefault(blk["group"], {
                "name": blk["group"], "label": blk["group_label"],
                **{f: {"a": None, "b": None} for f in ("blocks", "params", "macs", "layers")},
                "added": 0, "removed": 0, "changed": 0})
            for f, v in (("blocks", 1), ("params", blk["params"]), ("macs", blk["macs"]), ("layers", blk["layers"])):
                g[f][side] = (g[f][side] or 0) + v
        g = groups[rec["group"]]
        if rec["status"] in ("added", "removed", "changed"):
            g[rec["status"]] += 1
    for g in groups.values():
        for f in ("blocks", "params", "macs", "layers"):
            g[f]["delta"] = (g[f]["b"] or 0) - (g[f]["a"] or 0)
        differs = g["added"] or g["removed"] or g["changed"] or any(g[f]["delta"] for f in ("blocks", "params", "macs"))
        g["status"] = ("added" if g["blocks"]["a"] is None else "removed" if g["blocks"]["b"] is None
                       else "changed" if differs else "same")

    totals = {
        "params": _delta(a.params, b.params),
        "trainable_params": _delta(a.trainable_params, b.trainable_params),
        "non_trainable_params": _delta(a.params - a.trainable_params, b.params - b.trainable_params),
        "macs": _delta(a.macs, b.macs),
        "layers": _delta(len(a.nodes), len(b.nodes)),
        "blocks": _delta(len(ba), len(bb)),
    }
    block_of = {n: name for name, rec in bb.items() for n in rec["nodes"]}
    changed_layers = [{"name": n, "block": block_of.get(n), "changes": ch} for n, ch in changed_l.items()]
    counts = {
        "blocks_added": sum(r["status"] == "added" for r in blocks),
        "blocks_removed": sum(r["status"] == "removed" for r in blocks),
        "blocks_changed": sum(r["status"] == "changed" for r in blocks),
        "blocks_same": sum(r["status"] == "same" for r in blocks),
        "layers_added": len(layers["added"]), "layers_removed": len(layers["removed"]),
        "layers_changed": len(changed_l),
    }
    differ = bool(layers["added"] or layers["removed"] or changed_l or any(r["status"] != "same" for r in blocks)
                  or a.outputs != b.outputs)
    out = {
        "a": _side(a, la), "b": _side(b, lb),
        "differ": differ,
        "summary": "",
        "totals": totals,
        "counts": counts,
        "groups": list(groups.values()),
        "blocks": [r for r in blocks if r["status"] != "same"],
        "layers": {"added": layers["added"], "removed": layers["removed"], "changed": changed_layers,
                   "renamed": layers["renamed"]},
        "macs_note": MACS_NOTE,
    }
    if a.outputs != b.outputs:
        out["outputs"] = {"a": list(a.outputs), "b": list(b.outputs)}
    out["summary"] = summary_line(out)
    return out


def _side(g: Graph, label: str) -> dict[str, Any]:
    outs = [g.node(o) for o in g.outputs]
    return {"name": g.name, "label": label, "input_shape": list(g.inputs[0].shape) if g.inputs else [],
            "output_shape": list(outs[-1].shape) if len(outs) == 1 else [list(o.shape) for o in outs],
            "params": g.params, "macs": g.macs, "layers": len(g.nodes)}


# ---------------------------------------------------------------- wording


def signed(n: float, fmt=human) -> str:
    """A delta with its sign: '+19.07M', '-2.03M', '0'."""
    return ("+" if n > 0 else "") + fmt(n) if n else "0"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if abs(n) == 1 else 's'}"


def group_phrase(g: dict[str, Any]) -> str:
    """``stage conv4: +17 blocks, +19.07M params``."""
    parts = []
    if g["added"]:
        parts.append("+" + _plural(g["added"], "block"))
    if g["removed"]:
        parts.append("-" + _plural(g["removed"], "block"))
    if g["changed"]:
        parts.append(_plural(g["changed"], "block") + " changed")
    if not parts and g["blocks"]["delta"]:
        parts.append(f"{g['blocks']['delta']:+d} blocks")
    parts.append(f"{signed(g['params']['delta'])} params")
    return f"{g['label']}: {', '.join(parts)}"


def summary_line(d: dict[str, Any]) -> str:
    """The one-line summary of a diff dict.

    ``resnet50 -> resnet101: stage conv4: +17 blocks, +19.07M params; total params
    +19.07M (25.64M -> 44.71M), MACs +3.69G, layers +170``; with more than three groups
    changed, their count and the block counts instead of each group.
    """
    a, b, t = d["a"], d["b"], d["totals"]
    head = f"{a['label']} -> {b['label']}"
    if not d["differ"]:
        return (f"{head}: no differences ({t['layers']['b']} layers, {t['params']['b']:,} params, "
                f"{human(t['macs']['b'])} MACs)")
    changed = [g for g in d["groups"] if g["status"] != "same"]
    if len(changed) <= 3:
        what = "; ".join(group_phrase(g) for g in changed)
    else:
        c = d["counts"]
        blocks = ["+" + _plural(c["blocks_added"], "block") if c["blocks_added"] else "",
                  "-" + _plural(c["blocks_removed"], "block") if c["blocks_removed"] else "",
                  _plural(c["blocks_changed"], "block") + " changed" if c["blocks_changed"] else ""]
        what = f"{len(changed)} of {len(d['groups'])} groups differ: {', '.join(x for x in blocks if x)}"
    if not changed:  # only the outputs / wiring differ
        what = f"{_plural(d['counts']['layers_changed'], 'layer')} changed"
    total = (f"total params {signed(t['params']['delta'])} ({human(t['params']['a'])} -> {human(t['params']['b'])}), "
             f"MACs {signed(t['macs']['delta'])}, layers {signed(t['layers']['delta'], lambda n: f'{n:,}')}")
    return f"{head}: {what}; {total}"
