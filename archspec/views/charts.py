"""Small self-contained SVG charts (pure Python, no plotting library): bars of params and
MACs per stage or block, the resolution and channels through a network, and the
params / MACs / resolution of a compound-scaling sweep against phi.

Each chart has a viewBox, so a page may scale it down to a narrow screen (the scale is the
same for its text and its marks). The x-axis labels of a panel are laid out so that no two
of them overlap at any scale: written horizontally where they fit, else turned upright
and thinned to every k-th (`x_labels`)."""

from __future__ import annotations

import math
import re
from html import escape

from ..core.units import human

FONT = 'font-family="sans-serif" font-size="10"'
COLORS = ("#3a6fb0", "#b7791f", "#3f8f5a", "#b83232")
XLABEL_FS = 9  # font size of the x-axis labels
EM = 0.62  # an upper bound of a character's width in em (sans-serif, lower case, digits, `_`)


def _svg(w: float, h: float, body: list[str], title: str, cls: str, heading: bool = True) -> str:
    head = f'<text x="4" y="13" font-size="12" font-weight="600">{escape(title)}</text>' if heading else ""
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart {cls}" width="{w:.0f}" height="{h:.0f}" '
            f'viewBox="0 0 {w:.0f} {h:.0f}" {FONT}><title>{escape(title)}</title>{head}' + "".join(body) + "</svg>")


def text_width(text: str, size: float = XLABEL_FS) -> float:
    """An upper bound of the width of a line of text (no measuring without a browser)."""
    return EM * size * len(text)


def x_labels(at: list[tuple[float, str]]) -> tuple[bool, list[tuple[float, str]], float]:
    """How to write labels at x positions (in the chart's units) so that no two overlap:
    (upright, the labels kept, the height they need below the axis). Horizontal when each
    is narrower than its distance to its neighbours; else upright (one line high across),
    every k-th kept so that kept labels are a line height and a gap apart."""
    at = sorted(at)
    if all(b[0] - a[0] >= (text_width(a[1]) + text_width(b[1])) / 2 + 6 for a, b in zip(at, at[1:])):
        return False, at, XLABEL_FS + 6
    pitch = XLABEL_FS * 1.3 + 4  # a line's height (ascent and descent) and a gap
    gaps = [b[0] - a[0] for a, b in zip(at, at[1:])]
    step = max(1, math.ceil(pitch / max(min(gaps), 1e-9)))
    kept = at[::step]
    return True, kept, max(text_width(t) for _, t in kept) + 10


def bars(rows: list[tuple[str, float]], title: str, *, width: int = 460, bar_h: int = 14, cls: str = "bars") -> str:
    """A horizontal bar chart: one bar per (label, value), the value written after it."""
    label_w = min(190, 12 + 6 * max([len(r[0]) for r in rows] + [4]))
    top, plot_w = 22, width - label_w - 70
    vmax = max([v for _, v in rows] + [1])
    body = []
    for k, (label, v) in enumerate(rows):
        y = top + k * (bar_h + 3)
        bw = plot_w * v / vmax
        body.append(f'<g class="bar"><title>{escape(label)}: {v:,.0f}</title>'
                    f'<text x="{label_w - 4}" y="{y + bar_h - 3}" text-anchor="end">{escape(label)}</text>'
                    f'<rect x="{label_w}" y="{y}" width="{bw:.1f}" height="{bar_h}" fill="{COLORS[0]}"/>'
                    f'<text x="{label_w + bw + 4:.1f}" y="{y + bar_h - 3}">{human(v)}</text></g>')
    return _svg(width, top + len(rows) * (bar_h + 3) + 6, body, title, cls)


def _ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        return [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)]
    step = 10 ** math.floor(math.log10(max(hi - lo, 1e-9)))
    if (hi - lo) / step < 4:
        step /= 2
    start = math.floor(lo / step) * step
    return [start + k * step for k in range(int((hi - start) / step) + 2)]


def line_panel(xs: list[float], series: list[tuple[str, list[float]]], *, x0: float, y0: float, w: float, h: float,
               log: bool, title: str, xlabels: dict | None = None, points: list[tuple[str, float, float]] = ()) -> list[str]:
    """One panel of line series (and extra labelled points) at (x0, y0), as SVG elements.
    Its x-axis labels (`xlabels`, else each x) are laid out by `x_labels`: the plot leaves
    them the room they need at the bottom of the panel."""
    vals = [v for _, ys in series for v in ys if v is not None] + [p[2] for p in points]
    vals = [v for v in vals if not log or v > 0] or [1]
    lo, hi = min(vals), max(vals)
    if log:
        lo, hi = 10 ** math.floor(math.log10(lo)), 10 ** math.ceil(math.log10(hi))
    else:
        lo, hi = min(0, lo), hi * 1.08 or 1
    allx = list(xs) + [p[1] for p in points]
    xlo, xhi = min(allx), max(allx)
    xhi = xhi if xhi > xlo else xlo + 1

    def X(x):
        return x0 + 44 + (w - 72) * (x - xlo) / (xhi - xlo)

    upright, labels, room = x_labels([(X(x), str((xlabels or {}).get(x, f"{x:g}")))
                                      for x in (xs if xlabels is None else list(xlabels))])
    axis = y0 + h - 3 - room  # the x axis, the labels below it

    def Y(v):
        t = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) if log else (v - lo) / (hi - lo)
        return axis - (axis - y0 - 22) * t

    out = [f'<text x="{x0 + 44}" y="{y0 + 14}" font-weight="600">{escape(title)}</text>',
           f'<line x1="{x0 + 44}" y1="{axis}" x2="{x0 + w - 10}" y2="{axis}" stroke="#52606d"/>',
           f'<line x1="{x0 + 44}" y1="{y0 + 22}" x2="{x0 + 44}" y2="{axis}" stroke="#52606d"/>']
    for t in _ticks(lo, hi, log):
        if lo <= t <= hi:
            out.append(f'<line x1="{x0 + 44}" x2="{x0 + w - 10}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#e4e7eb"/>'
                       f'<text x="{x0 + 40}" y="{Y(t) + 3:.1f}" text-anchor="end">{human(t)}</text>')
    for x, lab in labels:  # upright: read upwards, ending just below the axis, centred on the tick
        out.append(f'<text class="xlabel" x="{x:.1f}" y="{axis + 6}" text-anchor="end" dy="0.35em" '
                   f'font-size="{XLABEL_FS}" transform="rotate(-90 {x:.1f} {axis + 6})">{escape(lab)}</text>'
                   if upright else
                   f'<text class="xlabel" x="{x:.1f}" y="{axis + 4 + XLABEL_FS}" text-anchor="middle" '
                   f'font-size="{XLABEL_FS}">{escape(lab)}</text>')
    for k, (name, ys) in enumerate(series):
        pts = [(X(x), Y(y)) for x, y in zip(xs, ys) if y is not None and (not log or y > 0)]
        c = COLORS[k % len(COLORS)]
        out.append(f'<polyline class="series" fill="none" stroke="{c}" stroke-width="1.6" '
                   f'points="{" ".join(f"{a:.1f},{b:.1f}" for a, b in pts)}"><title>{escape(name)}</title></polyline>')
        out += [f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.6" fill="{c}"/>' for a, b in pts]
        if len(series) > 1:
            out.append(f'<text x="{x0 + w - 12}" y="{y0 + 28 + 12 * k}" text-anchor="end" fill="{c}">{escape(name)}</text>')
    for label, x, v in points:
        out.append(f'<g class="preset"><title>{escape(label)}: {v:,.0f}</title>'
                   f'<rect x="{X(x) - 3.5:.1f}" y="{Y(v) - 3.5:.1f}" width="7" height="7" fill="none" '
                   f'stroke="{COLORS[3]}" stroke-width="1.5"/><text x="{X(x) + 6:.1f}" y="{Y(v) + 10:.1f}" '
                   f'fill="{COLORS[3]}">{escape(label)}</text></g>')
    return out


def through_network(names: list[str], shapes: list[tuple], *, width: int = 470, height: int = 200) -> str:
    """Output resolution (height of the feature map) and channels of each top-level block:
    two charts (a page may put them side by side or one above the other), each `width`
    wide and `height` high plus the room its x-axis labels (the blocks' names) need."""
    xs = list(range(len(names)))
    res = [s[0] if len(s) == 3 else None for s in shapes]
    ch = [s[-1] if s else None for s in shapes]
    labels = {i: (n if len(n) <= 14 else n[:13] + "\u2026") for i, n in enumerate(names)}
    pitch = (width - 72) / max(len(names) - 1, 1)
    room = x_labels([(i * pitch, t) for i, t in labels.items()])[2]
    out = []
    for key, ys, title in (("resolution", res, "output resolution (pixels, log)"),
                           ("channels", ch, "output channels (log)")):
        body = line_panel(xs, [(key, ys)], x0=0, y0=0, w=width, h=height + room, log=True, title=title,
                          xlabels=labels)
        out.append(_svg(width, height + room, body, f"{title} through the network", f"through {key}", heading=False))
    return "\n".join(out)


def _preset_phi(label: str, k: int) -> float:
    m = re.search(r"(\d+)$", label)
    return float(m.group(1)) if m else float(k)


def scaling_plot(report: dict, *, width: int = 940, height: int = 250) -> str:
    """params, MACs and resolution of a sweep (`compound.sweep`) against phi; the official
    presets, when the sweep has them, drawn beside the formula's points (a preset `bK` at
    phi = K, others in their order)."""
    phi_rows = [r for r in report["rows"] if r["method"] != "preset"]
    presets = [r for r in report["rows"] if r["method"] == "preset"]
    xs = [r["phi"] for r in phi_rows]
    pts = [(r["label"], _preset_phi(r["label"], k)) for k, r in enumerate(presets)]
    third = width / 3
    body = []
    for k, (key, title, log) in enumerate((("params", "parameters (log)", True), ("macs", "MACs (log)", True),
                                           ("resolution", "resolution (pixels)", False))):
        def val(r):
            return r["resolution"][0] if key == "resolution" else r[key]

        body += line_panel(xs, [("phi (formula)", [val(r) for r in phi_rows])] if xs else [], x0=k * third, y0=18,
                           w=third, h=height - 18, log=log, title=title,
                           points=[(lab, x, val(r)) for (lab, x), r in zip(pts, presets)])
    legend = "formula d=\u03b1^\u03c6, w=\u03b2^\u03c6, r=\u03b3^\u03c6 (dots, against \u03c6)"
    if presets:
        legend += "; official presets (squares, bK at \u03c6=K)"
    body.append(f'<text x="{width - 6}" y="13" text-anchor="end" fill="#52606d">{escape(legend)}</text>')
    return _svg(width, height, body, f"compound scaling of {report['base']}", "scaling")
