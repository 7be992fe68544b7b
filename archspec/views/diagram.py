"""The network diagram: an SVG drawn from the graph IR, laid out in pure Python.

The top level is a column of boxes, one per top-level block (stem, stage and head
blocks, after repeats). A box expands to the block's own layer graph: layers are
placed on rows by their longest path from the block's inputs and on lanes so that a
branch keeps its lane; merges (add, concatenate, multiply) are drawn as such, with an
edge from each of their inputs. Every layer is labelled with its output shape (the
tensor on its outgoing edges) and the connectors between blocks with the tensor they
carry. Runs of three or more consecutive blocks of the same stage with the same layer
sequence are collapsed to their first block plus one box for the rest (ResNet-152's
conv4_block2..36, DenseNet's dense layers), which expands on a click. Edges between
blocks that are not neighbours (references to earlier layers, auxiliary heads) are
drawn as arcs on the left. A residual shortcut (the short input of a block's add: the
identity, or a projection such as conv 1x1 + batch norm) is drawn beside a collapsed block
or run, on its right, as a skip path that rejoins the block at its add: it is seen
without expanding anything (an expanded block draws it among its layers).

The SVG is complete without scripts (the initial layout is computed here); in the HTML
report a small inline script re-lays it out when a box is expanded or collapsed (the
same stacking rule as `_stack` below), stretches the column to the width of its pane
(collapsed boxes as wide as the pane, less the margins for arcs and shortcuts; a pane
narrower than `MIN_BOX_W` scales the drawing down instead), and zooms and pans it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape

from ..backends import optable
from ..ir.graph import Graph, Node
from ..core.units import human, shape_str

MERGE_OPS = optable.MERGE_OPS

NODE_W, NODE_H = 168, 26  # a layer's box
LANE = NODE_W + 22  # horizontal distance of two lanes
ROW = NODE_H + 22  # vertical distance of two rows (room for the shape label)
HEADER = 44  # a block's title (two lines of text)
PAD = 10
MIN_BOX_W = 400
GAP = 30  # between two blocks: the connector and its shape label
ARC_MARGIN = 90  # room on the left for arcs between blocks that are not neighbours
RUN_MIN = 3  # blocks with the same structure in a row before the rest are collapsed
SC_MARGIN = 24  # room on the right for the shortcuts drawn beside collapsed blocks
RESIDUAL_OPS = ("add", "scaled_add")  # merges whose short input is drawn as a shortcut
CHAR_W = 6.0  # an upper bound of the width of a character of the header's 10px text


def op_label(n: Node) -> str:
    """A short description of a layer: `conv 3×3/2 64`, `max pool 3×3/2`, `dense 1000` (the
    label of its op's entry in the op table, `backends.optable`)."""
    return optable.label(n.op, n.attrs)


def _tooltip(n: Node) -> str:
    attrs = ", ".join(f"{k}={v}" for k, v in n.attrs.items() if v is not None and not k.endswith(
        ("initializer", "regularizer")) and k not in ("mean", "variance"))
    return (f"{n.name} ({n.op}{': ' + attrs if attrs else ''})\ninputs: {', '.join(n.inputs) or '-'}\n"
            f"output {shape_str(n.shape)}, {n.params:,} params, {human(n.macs)} MACs")


# ---------------------------------------------------------------- one block


@dataclass
class Inner:
    """A block's layer graph, laid out: boxes and edges relative to the block's corner."""

    width: int
    height: int
    svg: str
    merges: int
    shortcuts: list = field(default_factory=list)  # [Shortcut], in graph order


@dataclass
class Shortcut:
    """The short input of a residual merge: from `fork` (where it leaves the main path: the
    block's input, or a layer of it such as ResNet-v2's pre-activation) through `layers`
    (op labels; none for the identity) into the merge `into`, beside a main path of `main`
    layers."""

    into: str
    fork: str
    layers: list[str]
    main: int

    @property
    def label(self) -> str:
        return " \u2192 ".join(self.layers) if self.layers else "identity"


def _projection(n: Node) -> bool:
    """Whether a layer may be on a shortcut: a 1×1 conv, a batch norm, a pooling of at most
    2×2 (ResNet-v2's 1×1/2 max pool, ResNet-D's 2×2/2 average pool)."""
    if n.op == "conv2d":
        return tuple(n.attrs.get("kernel") or ()) == (1, 1)
    if n.op in ("max_pool", "avg_pool"):
        return max(n.attrs.get("pool") or (9,)) <= 2
    return n.op in ("batch_norm", "identity")


def find_shortcuts(nodes: list[Node]) -> list[Shortcut]:
    """The residual shortcuts of a block's layer graph: for each add (`RESIDUAL_OPS`), the
    input that reaches a tensor the other input also depends on through the fewest
    single-input layers, at most three and each a projection (`_projection`), when the
    other input's path from there is longer by two layers or more (a merge of two branches
    of a NASNet cell is no shortcut)."""
    by = {n.name: n for n in nodes}
    anc: dict[str, set] = {}

    def ancestors(t: str) -> set:
        if t not in anc:
            anc[t] = {t}.union(*(ancestors(p) for p in by[t].inputs)) if t in by else {t}
        return anc[t]

    longest: dict[tuple, int] = {}

    def dist(src: str, dst: str) -> int:  # layers on the longest path from src to dst, dst included
        if dst == src or dst not in by:
            return 0
        if (src, dst) not in longest:
            longest[src, dst] = 1 + max((dist(src, p) for p in by[dst].inputs if src in ancestors(p)), default=0)
        return longest[src, dst]

    out = []
    for n in nodes:
        ins = list(dict.fromkeys(n.inputs))
        if n.op not in RESIDUAL_OPS or len(ins) < 2:
            continue
        best = None
        for s in ins:
            others = set().union(*(ancestors(o) for o in ins if o != s))
            path, cur = [], s
            while cur not in others and cur in by and len(by[cur].inputs) == 1 and _projection(by[cur]):
                path.append(by[cur])
                cur = by[cur].inputs[0]
            if cur not in others:
                continue
            main = max(dist(cur, o) for o in ins if o != s)
            if len(path) <= 3 and main >= len(path) + 2 and (best is None or len(path) < len(best.layers)):
                best = Shortcut(n.name, cur, [op_label(x) for x in reversed(path)], main)
        if best is not None:
            out.append(best)
    return out


def layout_layers(nodes: list[Node], external: dict[str, tuple]) -> tuple[dict, dict, int, int]:
    """Rows and lanes for a block's layers.

    Args:
        nodes: the block's layers in graph order.
        external: the names of the tensors the block reads from outside it, with their shapes.

    Returns:
        (pos, ports, lanes, rows): `pos` maps each port (an external tensor, on row 0) and
        layer to its (lane, row); `ports` each external tensor to its lane; then the
        number of lanes and of rows.
    """
    names = {n.name for n in nodes}
    rank: dict[str, int] = {p: 0 for p in external}
    lane: dict[str, int] = {p: i for i, p in enumerate(external)}
    taken: set[str] = set()  # sources whose own lane is continued already
    lanes = len(external)
    for n in nodes:
        preds = [p for p in n.inputs if p in names or p in external]
        rank[n.name] = 1 + max(rank[p] for p in preds) if preds else 0
        free = [p for p in preds if p not in taken]
        if free:
            lane[n.name] = lane[free[0]]
            taken.add(free[0])
        else:
            lane[n.name], lanes = lanes, lanes + 1
    rows = 1 + max(rank.values(), default=0)
    return {k: (lane[k], rank[k]) for k in rank}, {p: lane[p] for p in external}, max(lanes, 1), rows


def render_inner(nodes: list[Node], external: dict[str, tuple], block_name: str) -> Inner:
    pos, ports, lanes, rows = layout_layers(nodes, external)
    width = max(MIN_BOX_W, lanes * LANE - (LANE - NODE_W) + 2 * PAD)
    x0 = (width - (lanes * LANE - (LANE - NODE_W))) // 2

    def xy(name):
        ln, rk = pos[name]
        return x0 + ln * LANE, HEADER + rk * ROW

    out, merges = [], 0
    for p in ports:  # where the block's inputs come in
        x, y = xy(p)
        short = p if len(p) <= 24 else p[:11] + "\u2026" + p[-12:]
        out.append(f'<g class="port"><title>{escape(p)} {shape_str(external[p])}</title>'
                   f'<circle cx="{x + NODE_W / 2}" cy="{y + NODE_H / 2}" r="5"/>'
                   f'<text x="{x + NODE_W / 2 + 9}" y="{y + NODE_H / 2 + 4}">{escape(short)}</text></g>')
    by_name = {n.name: n for n in nodes}
    for n in nodes:  # edges first, so boxes are drawn over them
        x2, y2 = xy(n.name)
        for p in dict.fromkeys(n.inputs):
            if p not in pos:
                continue
            x1, y1 = xy(p)
            cx1, cy1 = x1 + NODE_W / 2, y1 + NODE_H
            cx2, cy2 = x2 + NODE_W / 2, y2
            cls = "edge merge-in" if n.op in MERGE_OPS else "edge"
            if pos[p][0] == pos[n.name][0] and pos[n.name][1] - pos[p][1] > 1:  # skip along its own lane
                bx = cx1 + NODE_W / 2 + 8
                d = f"M{cx1 + NODE_W / 2} {y1 + NODE_H / 2} C{bx + 14} {cy1} {bx + 14} {cy2} {cx2 + NODE_W / 2} {cy2 + NODE_H / 2}"
            else:
                my = (cy1 + cy2) / 2
                d = f"M{cx1} {cy1} C{cx1} {my} {cx2} {my} {cx2} {cy2}"
            shape = by_name[p].shape if p in by_name else external[p]
            out.append(f'<path class="{cls}" d="{d}"><title>{escape(p)} \u2192 {escape(n.name)} '
                       f'{shape_str(shape)}</title></path>')
    for n in nodes:
        x, y = xy(n.name)
        merge = n.op in MERGE_OPS
        merges += merge
        cls = f"layer op-{n.op}" + (" merge" if merge else "")
        label = n.name if len(n.name) <= 26 else n.name[:12] + "\u2026" + n.name[-13:]
        out.append(
            f'<g class="{cls}" data-layer="{escape(n.name)}" data-op="{n.op}"><title>{escape(_tooltip(n))}</title>'
            f'<rect x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="{NODE_H // 2 if merge else 4}"/>'
            f'<text class="ln" x="{x + 6}" y="{y + 11}">{escape(label)}</text>'
            f'<text class="lo" x="{x + 6}" y="{y + 22}">{escape(op_label(n))}</text>'
            f'<text class="ls" x="{x + NODE_W / 2 + 4}" y="{y + NODE_H + 13}">{shape_str(n.shape)}</text></g>')
    return Inner(width, HEADER + rows * ROW + PAD, "".join(out), merges, find_shortcuts(nodes))


# ---------------------------------------------------------------- the network


@dataclass
class Box:
    """A top-level block as drawn."""

    index: int
    name: str
    type: str
    shape: tuple
    params: int
    macs: int
    layers: int
    signature: tuple
    inner: Inner
    sources: list = field(default_factory=list)  # [(block index, tensor name, shape)] read from other blocks
    output: str = ""
    anchor: tuple | None = None  # (id, label) of the block's line in the report's spec listing
    run: int | None = None  # the run (collapsed group) it belongs to

    @property
    def collapsed_h(self) -> int:
        return HEADER + 4


def boxes_of(graph: Graph, anchors: dict | None = None) -> list[Box]:
    """One Box per top-level block, with the tensors it reads from other blocks."""
    idx = {n.name: n for n in graph.nodes}
    owner: dict[str, int] = {}
    tops: list = []
    for b in graph.blocks:
        if b.depth or not b.nodes:
            continue
        for n in b.nodes:
            owner.setdefault(n, len(tops))
        tops.append(b)
    boxes = []
    for i, b in enumerate(tops):
        nodes = [idx[n] for n in b.nodes if n in idx and owner.get(n) == i]
        if not nodes:
            continue
        names = {n.name for n in nodes}
        external = {}
        for n in nodes:
            for p in n.inputs:
                if p not in names and p in idx:
                    external.setdefault(p, idx[p].shape)
        stage = tuple(b.path[:2])
        box = Box(index=i, name=b.name, type=b.type, shape=nodes[-1].shape, params=sum(n.params for n in nodes),
                  macs=sum(n.macs for n in nodes), layers=len(nodes),
                  signature=(stage, b.type, tuple(n.op for n in nodes), len(external)),
                  inner=render_inner(nodes, external, b.name),
                  sources=[(owner[p], p, s) for p, s in external.items() if p in owner],
                  output=nodes[-1].name, anchor=(anchors or {}).get(tuple(b.path)))
        boxes.append(box)
    _find_runs(boxes)
    return boxes


def _find_runs(boxes: list[Box]) -> None:
    """Mark runs: from the second block of RUN_MIN or more in a row with the same
    signature, each reading only its predecessor."""
    run_id, i = 0, 0
    while i < len(boxes):
        j = i + 1
        while (j < len(boxes) and boxes[j].signature == boxes[i].signature
               and [s[0] for s in boxes[j].sources] == [boxes[j - 1].index]):
            j += 1
        if j - i >= RUN_MIN:
            for b in boxes[i + 1:j]:
                b.run = run_id
            run_id += 1
        i = j


def _items(boxes: list[Box], expanded: set, open_runs: set) -> list[tuple]:
    """The visible column: ('box', Box) or ('run', run id, [Box])."""
    items: list[tuple] = []
    for b in boxes:
        if b.run is not None and b.run not in open_runs:
            if items and items[-1][0] == "run" and items[-1][1] == b.run:
                items[-1][2].append(b)
            else:
                items.append(("run", b.run, [b]))
        else:
            items.append(("box", b))
    return items


def _stack(items: list[tuple], expanded: set) -> tuple[list[tuple[int, int]], int]:
    """(y, height) of each visible item and the total height: boxes stacked with GAP between."""
    y, out = PAD, []
    for it in items:
        h = (it[1].inner.height if it[1].index in expanded else it[1].collapsed_h) if it[0] == "box" else HEADER + 4
        out.append((y, h))
        y += h + GAP
    return out, y - GAP + PAD


def render_svg(graph: Graph, *, expanded: bool = False, anchors: dict | None = None,
               interactive: bool = False) -> str:
    """The diagram as an SVG document (a string).

    Args:
        graph: the lowered network.
        expanded: draw every block expanded (and every run open) instead of collapsed.
        anchors: for each block path, (id, label) of its line in the report's spec listing.
        interactive: add the data the HTML report's script needs (its layout state).
    """
    boxes = boxes_of(graph, anchors)
    runs = {b.run for b in boxes if b.run is not None}
    exp = {b.index for b in boxes} if expanded else set()
    open_runs = set(runs) if expanded else set()
    items = _items(boxes, exp, open_runs)
    geo, height = _stack(items, exp)
    width_col = max([b.inner.width for b in boxes] + [MIN_BOX_W])
    left, right = margins(boxes)
    right = right if interactive or not expanded else PAD  # shortcuts are drawn beside collapsed boxes only
    cx = left + width_col / 2
    width = left + width_col + right
    visible_at: dict[int, int] = {}
    for k, it in enumerate(items):
        for b in ([it[1]] if it[0] == "box" else it[2]):
            visible_at[b.index] = k

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="archspec-diagram" width="{width:.0f}" '
             f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" font-family="sans-serif" font-size="10">',
             f"<title>{escape(graph.name)}: {len(boxes)} blocks, {len(graph.nodes)} layers</title>",
             f"<style>{STYLE}</style>", '<g class="connectors">']
    # connectors between visible items, and arcs for the other inter-block edges
    by_index = {b.index: b for b in boxes}

    def item_w(it):
        return it[1].inner.width if it[0] == "box" and it[1].index in exp else MIN_BOX_W

    for b in boxes:
        for src, tensor, shape in b.sources:
            ks, kd = visible_at[src], visible_at[b.index]
            if ks == kd:
                continue
            (ys, hs), (yd, _) = geo[ks], geo[kd]
            chain = kd == ks + 1 and by_index[src].output == tensor
            parts.append(_connector(cx, width_col, ys + hs, yd, chain, tensor, shape, b.name,
                                    item_w(items[ks]), item_w(items[kd])))
    parts.append("</g>")
    for k, it in enumerate(items):
        y, h = geo[k]
        if it[0] == "box":
            parts.append(_box(it[1], cx, y, it[1].index in exp))
        else:
            parts.append(_run_box(it[2], cx, y))
    if not expanded:  # run members and their expanded layers exist in the DOM, hidden, for the script
        shown = {it[1].index for it in items if it[0] == "box"}
        for b in boxes:
            if b.index not in shown:
                parts.append(_box(b, cx, 0, False, hidden=True))
    if interactive:
        data = {"boxes": [{"i": b.index, "hc": b.collapsed_h, "he": b.inner.height, "w": b.inner.width,
                           "run": b.run, "out": b.output, "src": [[s, t, shape_str(sh)] for s, t, sh in b.sources],
                           "name": b.name} for b in boxes],
                "gap": GAP, "pad": PAD, "header": HEADER, "cx": cx, "col": width_col, "arc": ARC_MARGIN,
                "minw": MIN_BOX_W, "width": width, "left": left, "right": right}
        parts.append(f'<script type="application/json" class="diagram-data">{escape(json.dumps(data), quote=False)}'
                     f"</script>")
    parts.append("</svg>")
    return "\n".join(parts)


def margins(boxes: list[Box]) -> tuple[int, int]:
    """Room left of the column (for arcs, when a block reads another than the one before
    it or not its output) and right of it (for shortcuts, when a block has one)."""
    arcs = any((s, t) != (prev.index, prev.output) for prev, b in zip(boxes, boxes[1:]) for s, t, _ in b.sources)
    return (ARC_MARGIN if arcs else PAD), (SC_MARGIN if any(b.inner.shortcuts for b in boxes) else PAD)


def shortcut_path(w: float, h: float) -> str:
    """The drawing of a shortcut beside a collapsed box of width w and height h (the same as
    `shortcutPath` in diagram.js.j2): it leaves the box's top edge near its right end, runs
    down outside the box and enters it again at the height of its add, near the bottom."""
    xr, ye = w, h - 10
    return (f"M{xr - 24:g} 0 C{xr - 24:g} -9 {xr + 13:g} -9 {xr + 13:g} 8 L{xr + 13:g} {ye - 8:g} "
            f"C{xr + 13:g} {ye:g} {xr + 7:g} {ye:g} {xr:g} {ye:g}")


def _shortcut(shortcuts: list[Shortcut], w: float, h: float, stats: str, who: str) -> str:
    """The shortcut(s) of a collapsed box or run: the path, a dot where it enters the add,
    and a label at the right of the second line when the box is wide enough (`data-need`)."""
    if not shortcuts:
        return ""
    label = "shortcut: " + ", ".join(dict.fromkeys(sc.label for sc in shortcuts))
    if len(shortcuts) > 1:
        label = f"{len(shortcuts)} shortcuts: " + label[len("shortcut: "):]
    need = round(2 * PAD + CHAR_W * (len(stats) + len(label)) + 20)
    title = "; ".join(f"{who}: {sc.label} from {sc.fork} into {sc.into}, beside {sc.main} layers"
                      for sc in shortcuts)
    hide = "" if w >= need else ' display="none"'
    return (f'<g class="shortcut" data-need="{need}"><title>shortcut of {escape(title)}</title>'
            f'<path d="{shortcut_path(w, h)}"/><circle cx="{w:g}" cy="{h - 10:g}" r="3"/>'
            f'<text class="sc-label" x="{w - PAD:g}" y="33" text-anchor="end"{hide}>{escape(label)}</text></g>')


def _connector(cx, col, y_from, y_to, chain, tensor, shape, dst, w_from, w_to) -> str:
    """A straight connector from a block to the next, or an arc on the left from a block
    to a later one (the same drawing as `connector` in diagram.js.j2)."""
    if chain:
        d = f"M{cx} {y_from} L{cx} {y_to}"
        lx, ly, anchor = cx + 6, (y_from + y_to) / 2 + 4, ""
    else:
        x = cx - col / 2 - 6
        bulge = x - min(ARC_MARGIN - 14, 16 + (y_to - y_from) / 60)
        ya, yb = y_from - 12, y_to + 12
        d = (f"M{cx - w_from / 2} {ya} L{x} {ya} C{bulge} {ya} {bulge} {yb} {x} {yb} L{cx - w_to / 2} {yb}")
        lx, ly, anchor = bulge - 2, (ya + yb) / 2, ' text-anchor="end"'
    return (f'<g class="link{" chain" if chain else " arc"}"><title>{escape(tensor)} \u2192 {escape(dst)} '
            f'{shape_str(shape)}</title><path d="{d}"/>'
            f'<text x="{lx:.1f}" y="{ly:.1f}"{anchor}>{shape_str(shape)}</text></g>')


def _stats(b: Box) -> str:
    merges = f" \u00b7 {b.inner.merges} merge{'s' if b.inner.merges != 1 else ''}" if b.inner.merges else ""
    return (f'{shape_str(b.shape)} \u00b7 {b.params:,} params \u00b7 {human(b.macs)} MACs \u00b7 {b.layers} '
            f'layer{"s" if b.layers != 1 else ""}{merges}')


def _header(b: Box, x, y, w) -> str:
    link = (f'<a href="#{b.anchor[0]}"><text class="src-link" x="{x + w - PAD}" y="{y + 17}" '
            f'text-anchor="end">{escape(b.anchor[1])}</text></a>') if b.anchor else ""
    return (f'<text class="bn" x="{x + PAD}" y="{y + 17}">{escape(b.name)} <tspan class="bt">{escape(b.type)}</tspan>'
            f'</text><text class="bs" x="{x + PAD}" y="{y + 33}">{escape(_stats(b))}</text>{link}')


def _box(b: Box, cx, y, expanded: bool, hidden: bool = False) -> str:
    w = b.inner.width if expanded else MIN_BOX_W
    x = cx - w / 2
    h = b.inner.height if expanded else b.collapsed_h
    cls = "block" + (" expanded" if expanded else "") + (" hidden" if hidden else "")
    link = f' data-anchor="{b.anchor[0]}"' if b.anchor else ""
    return (f'<g class="{cls}" data-block="{escape(b.name)}" data-index="{b.index}" data-type="{escape(b.type)}"{link} '
            f'transform="translate({x:.1f},{y:.1f})"><rect class="frame" width="{w}" height="{h}" rx="6"/>'
            f'{_header(b, 0, 0, w)}'
            f'{"" if expanded else _shortcut(b.inner.shortcuts, MIN_BOX_W, b.collapsed_h, _stats(b), b.name)}'
            f'<g class="inner">{b.inner.svg}</g></g>')


def _run_box(members: list[Box], cx, y) -> str:
    first, last = members[0], members[-1]
    w = MIN_BOX_W
    x = cx - w / 2
    params = sum(b.params for b in members)
    stats = f"{shape_str(last.shape)} \u00b7 {params:,} params \u00b7 {human(sum(b.macs for b in members))} MACs in all"
    return (f'<g class="run" data-run="{first.run}" transform="translate({x:.1f},{y:.1f})">'
            f'<title>{len(members)} blocks with the same layers as {escape(first.name)}: click to show them</title>'
            f'<rect class="frame" width="{w}" height="{HEADER + 4}" rx="6"/>'
            f'<text class="bn" x="{PAD}" y="17">{escape(first.name)} \u2026 {escape(last.name)} '
            f'<tspan class="bt">\u00d7{len(members)} {escape(first.type)}</tspan></text>'
            f'<text class="bs" x="{PAD}" y="33">{escape(stats)}</text>'
            f'{_shortcut(first.inner.shortcuts, w, HEADER + 4, stats, f"each of {first.name} … {last.name}")}</g>')


STYLE = """
.archspec-diagram text{fill:#1f2933}
.block>.frame{fill:#f4f7fb;stroke:#52606d;stroke-width:1.2}
.block.expanded>.frame{fill:#fbfcfe}
.block:not(.expanded)>.inner{display:none}
.block.hidden{display:none}
.run>.frame{fill:#e9eef5;stroke:#52606d;stroke-dasharray:5 3}
.bn{font-size:12px;font-weight:600}.bt{font-weight:400;fill:#52606d}
.bs{font-size:10px;fill:#3e4c59}
.layer rect{fill:#fff;stroke:#7b8794}
.layer.op-conv2d rect,.layer.op-depthwise_conv2d rect,.layer.op-separable_conv2d rect,.layer.op-conv_transpose2d rect{fill:#e3f0ff;stroke:#3a6fb0}
.layer.op-batch_norm rect,.layer.op-layer_norm rect,.layer.op-group_norm rect{fill:#f3f0ff;stroke:#7a67b8}
.layer.op-activation rect{fill:#eefbf1;stroke:#3f8f5a}
.layer.op-dense rect{fill:#fff4e0;stroke:#b7791f}
.layer.merge rect{fill:#fde8e8;stroke:#b83232;stroke-width:1.5}
.ln{font-size:9.5px;font-weight:600}.lo{font-size:9px;fill:#52606d}.ls{font-size:8.5px;fill:#7b8794}
.edge{fill:none;stroke:#9aa5b1;stroke-width:1.1}
.edge.merge-in{stroke:#b83232}
.port circle{fill:#52606d}.port text{font-size:9px;fill:#52606d}
.link path{fill:none;stroke:#52606d;stroke-width:1.3}
.link.arc path{stroke:#b7791f;stroke-dasharray:4 3}
.link text{font-size:9px;fill:#52606d}
.src-link{font-size:9.5px;fill:#2f6fb0;text-decoration:underline}
.shortcut path{fill:none;stroke:#b83232;stroke-width:1.5}.shortcut circle{fill:#b83232}
.archspec-diagram .sc-label{font-size:9.5px;fill:#b83232}
.block.expanded>.shortcut{display:none}
"""
