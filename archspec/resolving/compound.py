"""Compound scaling of a spec (EfficientNet, Tan & Le 2019) as spec -> spec transforms:
the paper's formula (`apply_phi`) and the official presets (`apply_preset`). Pure Python
(no TensorFlow, no Keras); the rounding math it uses is `archspec.language.rounding`'s.
The analyses that lower scaled specs (the family table, the coefficient grid search) are
views: `archspec.views.sweeps`.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Iterable

from ..language.rounding import compound, flops_factor, round_resolution

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
    from ..core.errors import SpecError

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
    from ..language.schema import Coefficients

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
    from . import resolve
    from ..language.schema import Spec

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
        upd["keras"] = None  # nor its keras twin and released weights
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


def apply_scaling(spec, phi: float | None = None, preset: str | None = None,
                  warn: Callable[[str], None] | None = None):
    """`apply_phi` (phi given) or `apply_preset`; each distinct ScalingWarning passed to
    `warn` once (dropped without it)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ScalingWarning)
        out = apply_phi(spec, phi) if phi is not None else apply_preset(spec, preset)
    for w in dict.fromkeys(str(w.message) for w in caught) if warn else ():
        warn(w)
    return out
