"""Resolve: a pure function Spec -> Spec that makes every number concrete.

It applies the scaling section's width and depth multipliers (with its rounding rules)
to every block's channel counts and every stage block's repeats, then records what it
applied in ``scaling.applied`` and sets the multipliers back to 1, so that resolving a
resolved spec changes nothing. (`extends:` and `--set` overrides are applied by the
loader, on the raw document, so that their values keep their file positions.)
"""

from __future__ import annotations

from .scaling import round_filters, round_repeats
from .spec.schema import Spec


def resolve(spec: Spec) -> Spec:
    """Return a new, concrete Spec; `spec` is not modified."""
    sc = spec.scaling
    if sc is None or sc.applied is not None and sc.width == 1.0 and sc.depth == 1.0:
        return spec.model_copy(deep=True)
    w, d = sc.width, sc.depth

    def scale_block(b, depth_too: bool):
        upd = {}
        for f in type(b).width_fields:
            v = getattr(b, f)
            if v is not None:
                upd[f] = round_filters(v, w, sc.divisor, b.rounding or sc.rounding, b.min_filters)
        if depth_too:
            upd["repeats"] = round_repeats(b.repeats, d)
        return b.model_copy(update=upd)

    stem = [scale_block(b, False) for b in spec.stem]
    stages = [st.model_copy(update={"blocks": [scale_block(b, not st.fixed) for b in st.blocks]}) for st in spec.stages]
    head = spec.head.model_copy(update={"layers": [scale_block(b, False) for b in spec.head.layers]})
    applied = dict(sc.applied or {})
    applied.update({"width": applied.get("width", 1.0) * w, "depth": applied.get("depth", 1.0) * d})
    scaling = sc.model_copy(update={"width": 1.0, "depth": 1.0, "applied": applied})
    out = spec.model_copy(update={"stem": stem, "stages": stages, "head": head, "scaling": scaling})
    return Spec.model_validate(out.model_dump(exclude_unset=False))
