"""The views of `archspec search` (`archspec.training.search`): the trials table (text and CSV),
the Pareto front of held-out top-1 against MACs, its PNG (Pillow) and the self-contained HTML
report. They read the result's rows (plain dicts), never the study."""

from __future__ import annotations

import base64
import csv
import io

from ..core.units import human
from .text import csv_cell, table

COLUMNS = ("trial", "alpha", "beta", "gamma", "macs", "params", "accuracy", "state")


def pareto(done: list[dict]) -> list[int]:
    """The trials no other complete trial beats on both counts (fewer or equal MACs and higher or
    equal held-out top-1, one of them strictly), by MACs."""
    front = [r for r in done if not any(
        o["macs"] <= r["macs"] and o["accuracy"] >= r["accuracy"] and (o["macs"], o["accuracy"]) != (r["macs"], r["accuracy"])
        for o in done)]
    return [r["trial"] for r in sorted(front, key=lambda r: (r["macs"], r["trial"]))]


def _cell(r: dict, k: str) -> str:
    v = r.get(k)
    if v is None:
        return "-"
    if k in ("alpha", "beta", "gamma"):
        return f"{v:.3f}"
    if k in ("macs", "params"):
        return human(v)
    if k == "accuracy":
        return f"{v:.4f}"
    return str(v)


def format_study(r: dict) -> str:
    """The text `archspec search` prints: the table, the best trial and its `scaling:` block."""
    rows = [[_cell(x, k) for k in COLUMNS] for x in r["trials"]]
    head = ["trial", "alpha", "beta", "gamma", "MACs", "params", "top-1", "state"]
    out = [f"study {r['study']} ({r['storage']}): {r['finished']} finished trial{'s' if r['finished'] != 1 else ''}, "
           f"phi={r['phi']:g}, {r['sampler']} sampler", table(rows, head, "rrrrrrrl"), ""]
    for x in r["trials"]:
        if x["state"] != "complete" and x.get("reason"):
            out.append(f"trial {x['trial']} {x['state']}: {x['reason']}")
    b = r["best"]
    if b:
        out += [f"best: trial {b['trial']}, held-out top-1 {b['accuracy']:.4f}, {human(b['macs'])} MACs, "
                f"{human(b['params'])} params (run {b['run']})",
                "paste into the spec (or --write-spec FILE):", r["scaling_block"].rstrip()]
    else:
        out.append("no trial completed yet: no best coefficients")
    out += [f"MACs: {r['macs_note']}", "wrote: " + ", ".join(r["wrote"])]
    return "\n".join(out)


def trials_csv(rows: list[dict]) -> str:
    """The table as CSV (every row); the reason and the run's path as spreadsheet cells (`csv_cell`)."""
    buf = io.StringIO()
    keys = ["trial", "alpha", "beta", "gamma", "flops_factor", "macs", "params", "resolution", "accuracy", "state",
            "reason", "run"]
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({**r, "resolution": "x".join(map(str, r["resolution"])) if r.get("resolution") else "",
                    **{k: csv_cell(str(r[k])) for k in ("reason", "run") if r.get(k) is not None}})
    return buf.getvalue()


def pareto_png(r: dict, size: tuple[int, int] = (720, 480)) -> bytes:
    """Held-out top-1 against MACs: every complete trial (grey), the Pareto front (a blue line),
    the best trial (red), each point labelled with its trial number."""
    from PIL import Image, ImageDraw, ImageFont

    W, H = size
    left, right, top, bottom = 90, 44, 54, 56
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    d.text((left, 6), f"{r['spec']}: held-out top-1 against MACs (study {r['study']})", fill="black", font=font)
    pts = [x for x in r["trials"] if x["state"] == "complete"]
    x0, x1 = left, W - right
    y0, y1 = H - bottom, top
    d.rectangle([x0, y1, x1, y0], outline="black")
    d.text(((x0 + x1) // 2 - 20, H - 24), "MACs", fill="black", font=font)
    d.text((x0 - 60, y1 - 22), "held-out top-1", fill="black", font=font)
    if not pts:
        d.text((x0 + 20, (y0 + y1) // 2), "no complete trial yet", fill="black", font=font)
        return _png(img)
    macs = [p["macs"] for p in pts]
    accs = [p["accuracy"] for p in pts]
    mlo, mhi = min(macs), max(macs)
    alo, ahi = min(accs), max(accs)
    if mhi == mlo:
        mlo, mhi = mlo * 0.9, mhi * 1.1 + 1
    if ahi - alo < 0.02:
        alo, ahi = alo - 0.01, ahi + 0.01
    pad_m, pad_a = (mhi - mlo) * 0.08, (ahi - alo) * 0.08
    mlo, mhi, alo, ahi = mlo - pad_m, mhi + pad_m, max(0.0, alo - pad_a), min(1.0, ahi + pad_a)  # top-1 is in [0, 1]
    X = lambda m: x0 + (m - mlo) / (mhi - mlo) * (x1 - x0)
    Y = lambda a: y0 - (a - alo) / (ahi - alo) * (y0 - y1)
    for k in range(5):  # ticks
        m = mlo + (mhi - mlo) * k / 4
        a = alo + (ahi - alo) * k / 4
        d.line([X(m), y0, X(m), y0 + 4], fill="black")
        d.text((X(m) - (36 if k == 4 else 18), y0 + 8), human(m), fill="black", font=font)
        d.line([x0 - 4, Y(a), x0, Y(a)], fill="black")
        d.text((x0 - 52, Y(a) - 7), f"{a:.3f}", fill="black", font=font)
    by = {p["trial"]: p for p in pts}
    front = [by[n] for n in r["pareto"] if n in by]
    if len(front) > 1:
        d.line([(X(p["macs"]), Y(p["accuracy"])) for p in front], fill=(31, 119, 180), width=2)
    best = (r.get("best") or {}).get("trial")
    labels: dict[tuple[int, int], list[str]] = {}
    for p in sorted(pts, key=lambda p: p["trial"] == best):  # the best drawn last, on top
        cx, cy = X(p["macs"]), Y(p["accuracy"])
        color = (214, 39, 40) if p["trial"] == best else (31, 119, 180) if p["trial"] in r["pareto"] else (150, 150, 150)
        d.ellipse([cx - 5, cy - 5, cx + 5, cy + 5], fill=color, outline="black")
        labels.setdefault((round(cx), round(cy)), []).append(str(p["trial"]))
    for (cx, cy), names in labels.items():  # trials at one point (the same network): one label
        d.text((cx + 7, cy - 16), ",".join(sorted(names, key=int)), fill="black", font=font)
    return _png(img)


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def search_html(r: dict, png: bytes) -> str:
    """The self-contained HTML report: the best coefficients and their `scaling:` block, the Pareto
    plot (the PNG, inlined) and every trial, pruned and failed ones with their reason."""
    from ..core.templates import render
    from ..core.version import __version__

    return render("search.html.j2", r=r, png=base64.b64encode(png).decode("ascii"), cell=_cell, human=human,
                  version=__version__, columns=COLUMNS)
