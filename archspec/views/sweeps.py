"""The analyses that lower scaled specs: the family table of a compound-scaled network
(`sweep`: one row per phi and per official preset, params and MACs counted after
rounding) and the paper's coefficient grid search (`search_grid`). Pure Python, no
TensorFlow; the spec transforms themselves are `archspec.resolving.compound`'s.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, Callable, Iterable

from ..core.errors import Location, SpecError
from ..ir.lower import lower
from ..language.define import spec_blocks
from ..language.rounding import flops_factor
from ..resolving import resolve, width_fields_of
from ..resolving.compound import (FORMULA, PAPER_CONSTRAINT, ScalingWarning, _rescale, _scaling_of, _spec_error,
                                  apply_phi, apply_preset, apply_scaling, coefficient_warnings, coefficients_of,
                                  preset_names, scaled_resolution)


def _counts(spec) -> tuple[int, int]:

    try:
        g = lower(spec)
    except SpecError as exc:
        a = (spec.scaling.applied or {}) if spec.scaling else {}
        at = a.get("preset") or (f"phi={a['phi']:g}" if "phi" in a else spec.name)
        raise _spec_error(f"scaled to {at} (input {spec.input.shape[0]}x{spec.input.shape[1]}), the network "
                          f"does not work: {exc.one_line()}", exc.path) from None
    return g.params, g.macs


def scale_row(scaled, base_counts: tuple[int, int]) -> dict[str, Any]:
    """One line of the family table for a scaled spec (from `apply_phi` / `apply_preset`).

    Keys: label, method, phi, preset, d, w, r (the multipliers, as numbers), resolution,
    dropout, params, macs, macs_ratio_formula (d * w**2 * r**2, which is
    (alpha * beta**2 * gamma**2)**phi for phi), macs_ratio_actual (counted, after rounding),
    params_ratio.
    """
    a = scaled.scaling.applied
    params, macs = _counts(scaled)
    d, w, r = float(a["d"]), float(a["w"]), float(a["r"])
    return {
        "label": a["preset"] if a["method"] == "preset" else f"phi={a['phi']:g}",
        "name": scaled.name,
        "method": a["method"],
        "source": a.get("source", a.get("formula")),
        "phi": a.get("phi"),
        "preset": a.get("preset"),
        "d": d, "w": w, "r": r,
        "resolution": list(a["resolution"]),
        "dropout": scaled.head.dropout,
        "params": params,
        "macs": macs,
        "macs_ratio_formula": d * w * w * r * r,
        "macs_ratio_actual": macs / base_counts[1],
        "params_ratio": params / base_counts[0],
    }


def base_counts(spec) -> tuple[int, int]:
    """(params, MACs) of the base spec, resolved as it is."""
    return _counts(resolve(spec))


def sweep(spec, phis: Iterable[float] = (), presets: Iterable[str] = ()) -> dict[str, Any]:
    """The family table: one row per phi (formula) and per preset (official table).

    Returns:
        ``{"base": name, "base_params", "base_macs", "coefficients": {alpha, beta, gamma,
        flops_factor} or None, "warnings": [...], "macs_note", "rows": [scale_row, ...]}``.
    """
    _scaling_of(spec)
    phis, presets = list(phis), list(presets)
    counts = base_counts(spec)
    coeffs = None
    msgs: list[str] = []
    rows = []
    if phis:
        c, source = coefficients_of(spec)
        coeffs = {"alpha": c.alpha, "beta": c.beta, "gamma": c.gamma,
                  "flops_factor": flops_factor(c.alpha, c.beta, c.gamma), "source": source}
        msgs = coefficient_warnings(c.alpha, c.beta, c.gamma)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScalingWarning)
            rows += [scale_row(apply_phi(spec, p), counts) for p in phis]
    rows += [scale_row(apply_preset(spec, n), counts) for n in presets]
    return {"base": spec.name, "base_params": counts[0], "base_macs": counts[1], "coefficients": coeffs,
            "warnings": msgs, "rows": rows,
            "macs_note": "multiply-accumulates of conv, depthwise-conv and dense layers (what papers call FLOPs)"}


def parse_phis(text: str) -> list[float]:
    """``"3"`` -> [3.0]; ``"0:7"`` -> 0, 1, ..., 7 (inclusive); ``"-1:1:0.5"`` -> -1, -0.5, 0, 0.5, 1;
    ``"0,1.5,3"`` -> a list.

    Raises:
        ValueError: for anything else (the message repeats the text).
    """
    text = str(text).strip()
    try:
        if "," in text:
            out = [float(t) for t in text.split(",") if t.strip()]
        elif ":" in text[1:]:
            i = text.index(":", 1)
            parts = [text[:i]] + text[i + 1:].split(":")
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop = float(parts[0]), float(parts[1])
            step = float(parts[2]) if len(parts) == 3 else 1.0
            if step <= 0 or stop < start or (stop - start) / step > 1000:
                raise ValueError
            n = int(math.floor((stop - start) / step + 1e-9))
            out = [round(start + k * step, 10) for k in range(n + 1)]
        else:
            out = [float(text)]
    except ValueError:
        raise ValueError(f"expected a number, START:STOP[:STEP] or a comma list (got {text!r})") from None
    if not out or not all(math.isfinite(p) for p in out):
        raise ValueError(f"expected finite numbers (got {text!r})")
    return out


# ---------------------------------------------------------------- the coefficient search

RankFn = Callable[[Any, dict], float]
"""``rank(spec, candidate) -> score``: higher is better (e.g. top-1 accuracy after a short
training of the model that ``archspec.build(spec)`` gives). The search itself counts only."""


def search_grid(spec, step: float = 0.05, tolerance: float = 0.05, max_alpha: float = 2.0,
                rank: RankFn | None = None) -> list[dict[str, Any]]:
    """The paper's coefficient search (Tan & Le 2019, section 3.3, step 1), without the training.

    Enumerates alpha in [1, max_alpha], beta and gamma >= 1 on a grid of `step`, keeps the
    triples with ``|alpha * beta**2 * gamma**2 - 2| <= tolerance * 2``, and scales the spec by
    each at phi = 1 (d = alpha, w = beta, r = gamma), counting its params and MACs.

    Ranking needs accuracy, which needs training: pass `rank` (see `RankFn`) to score each
    candidate's scaled spec; its score goes in ``candidate["score"]`` and the list is sorted by it,
    best first. Without `rank`, ``score`` is None and the list is sorted by the distance from the
    constraint, then by MACs.

    Returns:
        ``[{alpha, beta, gamma, flops_factor, resolution, params, macs, macs_ratio, score}, ...]``.
    """
    if not (0 < step <= 1):
        raise _spec_error(f"step must be in (0, 1] (got step={step})", None)
    if not (0 < tolerance < 1):
        raise _spec_error(f"tolerance must be in (0, 1) (got tolerance={tolerance})", None)
    if max_alpha < 1:
        raise _spec_error(f"max_alpha must be >= 1 (got max_alpha={max_alpha})", None)
    sc = _scaling_of(spec)
    lo, hi = PAPER_CONSTRAINT * (1 - tolerance), PAPER_CONSTRAINT * (1 + tolerance)
    grid = lambda top: [round(1 + k * step, 10) for k in range(int(math.floor((top - 1) / step + 1e-9)) + 1)]
    side = grid(math.sqrt(hi))
    counts = base_counts(spec)
    cache: dict[tuple, tuple[int, int]] = {}
    out = []
    for a, b, g in itertools.product(grid(max_alpha), side, side):
        f = flops_factor(a, b, g)
        if not lo <= f <= hi:
            continue
        res = scaled_resolution(spec.input.shape, g, sc.resolution_divisor)
        scaled = _rescale(spec, d=a, w=b, resolution=res, dropout=None, name=f"{spec.name}-search",
                          record={"method": "search", "phi": 1.0, "formula": FORMULA, "alpha": a, "beta": b,
                                  "gamma": g, "d": a, "w": b, "r": g})
        key = (res, tuple(_numbers(scaled)))
        if key not in cache:
            cache[key] = _counts(scaled)
        params, macs = cache[key]
        cand = {"alpha": a, "beta": b, "gamma": g, "flops_factor": f, "resolution": list(res),
                "params": params, "macs": macs, "macs_ratio": macs / counts[1], "score": None}
        if rank is not None:
            cand["score"] = float(rank(scaled, dict(cand)))
        out.append(cand)
    if rank is not None:
        out.sort(key=lambda c: -c["score"])
    else:
        out.sort(key=lambda c: (abs(c["flops_factor"] - PAPER_CONSTRAINT), c["macs"]))
    return out


def _numbers(spec) -> list:
    """The numbers that rounding changes (channel counts and repeats), for the search's cache."""
    out = []
    for b, _ in spec_blocks(spec):  # nested blocks and defined blocks' width params included
        out.append(b.repeats)
        out += [getattr(b, f, None) for f in width_fields_of(b, spec.define)]
    return out


# ---------------------------------------------------------------- `archspec scale`


def search_report(spec, step: float = 0.05, tolerance: float = 0.05, *, output=None, plot=None) -> dict[str, Any]:
    """`archspec scale --search`: the candidates of `search_grid` at phi = 1, unranked
    (`output` and `plot` belong to a sweep: either is a SpecError)."""
    if output:
        raise SpecError("-o writes one scaled spec; it does not go with --search")
    if plot:
        raise SpecError("--plot draws a sweep (--phi or --preset); it does not go with --search")
    cands = search_grid(spec, step=step, tolerance=tolerance)
    return {"base": spec.name, "phi": 1, "step": step, "tolerance": tolerance,
            "ranking": "none: pass rank= to archspec.language.rounding.search_grid to score candidates",
            "candidates": cands}


def scale(spec, ref: str, phis: Iterable[float] = (), preset: str | None = None, *, output=None, plot=None,
          force: bool = False, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """`archspec scale --phi/--preset`: the `sweep` of `phis` or of `preset` (``"all"``: every
    preset), its warnings passed to `warn`; `output` the one scaled spec as resolved YAML
    (its header names `ref`), `plot` the sweep as ``.svg`` or ``.html`` (the official
    presets beside the formula's points). Outputs are checked and written by the one writer
    (`archspec.core.atomic`); the report gains ``output`` / ``plot``."""
    from ..core.atomic import check_output, write_text_atomic
    from ..language import dump_spec

    phis = list(phis)
    presets = (preset_names(spec) if preset == "all" else [preset]) if preset else []
    report = sweep(spec, phis, presets)
    for w in report["warnings"] if warn else ():
        warn(w)
    if output:
        if len(report["rows"]) != 1:
            raise SpecError(f"-o writes one scaled spec; got {len(report['rows'])} (give one --phi or --preset)")
        out = check_output(output, force)
        scaled = apply_scaling(spec, phis[0] if phis else None, None if phis else presets[0])  # warned above
        row = report["rows"][0]
        write_text_atomic(out, dump_spec(scaled, f"archspec scale {ref} {row['label']}: {row['source']}\n"
                                                 f"resolved and self-contained"), force=force)
        report["output"] = str(out)
    if plot:
        out = check_output(plot, force)
        if out.suffix not in (".svg", ".html"):
            raise SpecError(f"--plot writes .svg (the plot) or .html (plot and table); got "
                            f"{out.suffix or 'no suffix'!r}", Location(str(out)))
        from .charts import scaling_plot

        shown = report
        if phis and not presets and preset_names(spec):  # the official points beside the formula's
            shown = sweep(spec, phis, preset_names(spec))
        write_text_atomic(out, scaling_plot(shown) if out.suffix == ".svg" else sweep_html(shown), force=force)
        report["plot"] = str(out)
    return report


def sweep_html(report: dict) -> str:
    """The HTML page of a scaling sweep (`archspec scale ... --plot out.html`): the plot and its table
    (here, not in `report`, which shows a sweep: the page stays below the report, no cycle)."""
    from ..core.templates import render
    from ..core.units import human
    from ..core.version import __version__
    from .charts import scaling_plot

    return render("sweep.html.j2", s=report, plot=scaling_plot(report), human=human, version=__version__)
