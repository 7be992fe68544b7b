"""Compound scaling of a spec (EfficientNet, Tan & Le 2019): the paper's formula
(`apply_phi`), the official presets (`apply_preset`), sweeps over phi, the grid search of
coefficients, and writing a scaled spec as YAML. Pure Python (no TensorFlow, no Keras);
the rounding math it uses is `archspec.scaling`'s.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any, Callable, Iterable

from .scaling import compound, flops_factor, round_resolution

PAPER_CONSTRAINT = 2.0
"""EfficientNet's constraint: alpha * beta**2 * gamma**2 ~ 2 (each step of phi doubles the FLOPs)."""

CONSTRAINT_TOLERANCE = 0.1
"""Relative distance from `PAPER_CONSTRAINT` beyond which the coefficients draw a warning."""

FORMULA = "d = alpha**phi, w = beta**phi, r = gamma**phi (Tan & Le 2019, eq. 3)"
TABLE = "official table"


class ScalingWarning(UserWarning):
    """Coefficients that are valid but far from the paper's constraint."""


def coefficient_warnings(alpha: float, beta: float, gamma: float,
                         tolerance: float = CONSTRAINT_TOLERANCE) -> list[str]:
    """Messages for coefficients far from the paper's alpha * beta**2 * gamma**2 ~ 2 (empty if fine).

    This is a warning, not an error: any coefficients >= 1 define a valid family, only not one
    where each step of phi doubles the cost.
    """
    f = flops_factor(alpha, beta, gamma)
    if abs(f - PAPER_CONSTRAINT) > tolerance * PAPER_CONSTRAINT:
        return [f"alpha * beta**2 * gamma**2 = {f:.3g} (alpha={alpha:g}, beta={beta:g}, gamma={gamma:g}) is far "
                f"from 2, the EfficientNet paper's constraint alpha * beta^2 * gamma^2 ~ 2: each step of phi "
                f"multiplies the MACs by about {f:.3g} instead of doubling them"]
    return []


def scaled_resolution(shape: Iterable[int], r: float, divisor: int = 8) -> tuple[int, int]:
    """The input's (height, width) after a resolution multiplier `r`.

    Rule: each side becomes ``round_resolution(side * r, divisor)``, the nearest multiple of
    `divisor` (ties up, at least `divisor`). ``r == 1`` leaves the sides exactly as they are
    (even when they are not multiples of the divisor), so phi = 0 is the base spec.
    """
    h, w = list(shape)[:2]
    if r == 1:
        return int(h), int(w)
    return round_resolution(h * r, divisor), round_resolution(w * r, divisor)


def _spec_error(message: str, path: str | None = "scaling"):
    from .errors import SpecError

    return SpecError(message, None, path)


def _scaling_of(spec):
    sc = spec.scaling
    if sc is None:
        raise _spec_error(f"spec {spec.name!r} has no scaling section: add `scaling:` (width, depth, "
                          f"coefficients, presets) to scale it (see docs/scaling.md)", None)
    a = dict(sc.applied or {})
    base_res = a.get("base_resolution")
    if (a.get("width", 1.0) != 1.0 or a.get("depth", 1.0) != 1.0
            or (base_res is not None and list(base_res) != list(a.get("resolution", base_res)))):
        what = a.get("preset") or (f"phi={a['phi']:g}" if "phi" in a else f"width={a.get('width')}, "
                                   f"depth={a.get('depth')}")
        raise _spec_error(f"spec {spec.name!r} is already scaled ({what}); scale its base spec "
                          f"{a.get('base', '')!r} instead, so that filters are rounded once".replace(" ''", ""),
                          "scaling.applied")
    return sc


PAPER_COEFFICIENTS = {"alpha": 1.2, "beta": 1.1, "gamma": 1.15}
"""Tan & Le 2019, section 3.3: found by a grid search on B0 at phi = 1."""


def coefficients_of(spec):
    """(Coefficients, source): the spec's ``scaling.coefficients``, or the paper's when it gives none
    (its source says so, recorded in ``scaling.applied`` and printed, so it is never silent)."""
    from .spec.schema import Coefficients

    sc = _scaling_of(spec)
    if sc.coefficients is None:
        return Coefficients(**PAPER_COEFFICIENTS), "the paper's values (the spec gives no scaling.coefficients)"
    return sc.coefficients, "the spec's scaling.coefficients"


def _rescale(spec, *, d: float, w: float, resolution: tuple[int, int], dropout: float | None,
             name: str, record: dict):
    """Set the multipliers, input size and dropout on a copy of `spec`, then `resolve` it.

    The filters are rounded once, from the spec's own numbers (a resolved base, whose
    `scaling.applied` says width 1 and depth 1, is the same numbers). `record` goes into
    `scaling.applied`, next to the width and depth that `resolve` writes there.
    """
    from .resolving import resolve
    from .spec.schema import Spec

    sc = spec.scaling
    base_res = [int(spec.input.shape[0]), int(spec.input.shape[1])]
    scaling = sc.model_copy(update={"width": sc.width * w, "depth": sc.depth * d, "applied": None})
    inp = spec.input.model_copy(update={"shape": (int(resolution[0]), int(resolution[1]), spec.input.shape[2])})
    head = spec.head if dropout is None else spec.head.model_copy(update={"dropout": float(dropout)})
    unresolved = spec.model_copy(update={"scaling": scaling, "input": inp, "head": head, "name": name,
                                         "extends": None})
    out = resolve(Spec.model_validate(unresolved.model_dump()))
    applied = {**record, "base": spec.name, "base_resolution": base_res, "resolution": list(resolution),
               **out.scaling.applied}
    upd: dict = {"scaling": out.scaling.model_copy(update={"applied": applied})}
    if name != spec.name:  # a new network: the base's published figures are not its own
        how = f"preset {record['preset']} ({TABLE})" if record.get("preset") else f"phi={record['phi']:g} ({FORMULA})"
        upd["reference"] = None
        upd["description"] = f"{spec.name} scaled by {how}" + (f"; base: {spec.description}" if spec.description else "")
    out = out.model_copy(update=upd)
    return Spec.model_validate(out.model_dump())


def _check_phi(phi) -> float:
    try:
        phi = float(phi)
    except (TypeError, ValueError):
        raise _spec_error(f"phi must be a number (got {phi!r})", None) from None
    if not math.isfinite(phi):
        raise _spec_error(f"phi must be finite (got {phi!r})", None)
    return phi


def phi_name(base: str, phi: float) -> str:
    """The scaled spec's name: ``efficientnet-phi3``, ``efficientnet-phi-0.5``."""
    return f"{base}-phi{phi:g}"


def apply_phi(spec, phi: float):
    """Scale a spec by the paper's formula: d = alpha**phi, w = beta**phi, r = gamma**phi.

    The coefficients come from ``spec.scaling.coefficients``. Filters are rounded by the
    spec's rule (`scaling.rounding`, `scaling.divisor`: by default the nearest multiple of 8,
    never below 90% of the unrounded value), repeats rounded up, and the input's sides by
    `scaled_resolution` (nearest multiple of `scaling.resolution_divisor`). `phi` may be
    fractional or negative; phi = 0 returns the base spec (resolved), unchanged but for
    `scaling.applied`. Dropout is the base's (the formula says nothing about it).

    Returns:
        A resolved, self-contained Spec; ``scaling.applied`` records phi, the formula, the
        coefficients and d, w, r.

    Raises:
        SpecError: no scaling section or coefficients, a spec that is already scaled, a bad phi.

    Warns:
        ScalingWarning: when alpha * beta**2 * gamma**2 is far from 2.
    """
    phi = _check_phi(phi)
    c, source = coefficients_of(spec)
    for msg in coefficient_warnings(c.alpha, c.beta, c.gamma):
        warnings.warn(msg, ScalingWarning, stacklevel=2)
    d, w, r = compound(c.alpha, c.beta, c.gamma, phi)
    res = scaled_resolution(spec.input.shape, r, spec.scaling.resolution_divisor)
    record = {"method": "compound", "phi": phi, "formula": FORMULA, "alpha": c.alpha, "beta": c.beta,
              "gamma": c.gamma, "coefficients_source": source, "d": d, "w": w, "r": r}
    return _rescale(spec, d=d, w=w, resolution=res, dropout=None,
                    name=spec.name if phi == 0 else phi_name(spec.name, phi), record=record)


def preset_names(spec) -> list[str]:
    """The spec's presets in the order its table gives them."""
    return list(_scaling_of(spec).presets)


def apply_preset(spec, name: str):
    """Scale a spec by a row of its official table (``scaling.presets[name]``).

    Sets width, depth, the input resolution (square, or the base's aspect kept) and, when
    the preset gives one, ``head.dropout``; then `resolve` rounds the filters and repeats
    by the same rules as `apply_phi`.

    Raises:
        SpecError: no scaling section, an unknown preset (the message lists the valid ones).
    """
    sc = _scaling_of(spec)
    if name not in sc.presets:
        valid = ", ".join(sc.presets) or "none (the spec's scaling section has no presets)"
        raise _spec_error(f"unknown preset {name!r}; valid presets: {valid}", "scaling.presets")
    p = sc.presets[name]
    h, w0 = int(spec.input.shape[0]), int(spec.input.shape[1])
    res = (p.resolution, p.resolution if h == w0 else round_resolution(w0 * p.resolution / h, sc.resolution_divisor))
    record = {"method": "preset", "preset": name, "source": TABLE, "d": p.depth, "w": p.width,
              "r": p.resolution / h, "dropout": p.dropout}
    same = p.width == 1 and p.depth == 1 and res == (h, w0) and p.dropout in (None, spec.head.dropout)
    return _rescale(spec, d=p.depth, w=p.width, resolution=res, dropout=p.dropout,
                    name=spec.name if same else f"{spec.name}-{name}", record=record)


# ---------------------------------------------------------------- reports


def _counts(spec) -> tuple[int, int]:
    from .errors import SpecError
    from .lower import lower

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
    from .resolving import resolve

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
    from .resolving import width_fields_of
    from .spec.define import spec_blocks

    out = []
    for b, _ in spec_blocks(spec):  # nested blocks and defined blocks' width params included
        out.append(b.repeats)
        out += [getattr(b, f, None) for f in width_fields_of(b, spec.define)]
    return out


# ---------------------------------------------------------------- writing a scaled spec


def dump_spec(spec, comment: str | None = None) -> str:
    """A spec as YAML that `archspec.spec.load` reads back to the same Spec (defaults left out)."""
    import yaml

    data = spec.model_dump(mode="json", exclude_defaults=True)
    data = {"format": spec.format, **{k: v for k, v in data.items() if k != "format"}}
    head = "".join(f"# {line}\n" for line in (comment or "").splitlines())
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)
