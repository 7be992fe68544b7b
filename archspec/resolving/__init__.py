"""Resolve: a pure function Spec -> Spec that makes every number concrete.

It applies the scaling section's width and depth multipliers (with its rounding rules)
to every block's channel counts and every stage block's repeats, then records what it
applied in ``scaling.applied`` and sets the multipliers back to 1, so that resolving a
resolved spec changes nothing. (`extends:` and `--set` overrides are applied by the
loader, on the raw document, so that their values keep their file positions.)
"""

from __future__ import annotations

from pydantic import ValidationError

from ..language.rounding import round_filters, round_repeats
from ..language import raw_of
from ..language.schema import Spec


def width_fields_of(block, define: dict) -> tuple[str, ...]:
    """The fields of a block that width scaling multiplies: its family's `width_fields`,
    or a defined block's `width_params`."""
    from ..language.blocks import DefinedUse

    if isinstance(block, DefinedUse):
        d = define.get(block.type)
        return tuple(d.width_params) if d is not None else ()
    return type(block).width_fields


def resolve(spec: Spec) -> Spec:
    """Return a new, concrete Spec; `spec` is not modified."""
    sc = spec.scaling
    if sc is None or sc.applied is not None and sc.width == 1.0 and sc.depth == 1.0:
        out = spec.model_copy(deep=True)
        out._raw = getattr(spec, "_raw", None)
        return out
    w, d = sc.width, sc.depth

    def scale_block(b, depth_too: bool):
        upd = {}
        rounding = b.rounding or sc.rounding
        for f in width_fields_of(b, spec.define) if w != 1.0 else ():  # width 1: the widths as written
            v = getattr(b, f, None)
            if v is None and b.type in spec.define:  # a defined block's param left at its default
                v = spec.define[b.type].params.get(f)
            if isinstance(v, bool) or not isinstance(v, int):
                continue  # an expression or an unset width is left alone
            upd[f] = round_filters(v, w, sc.divisor, rounding, b.min_filters)
        for f, kind in type(b).child_fields:  # composition blocks: scale their children's widths
            v = getattr(b, f)
            if kind == "list" and isinstance(v, list):
                upd[f] = [scale_block(c, False) for c in v]
            elif kind == "lists":
                upd[f] = [[scale_block(c, False) for c in br] for br in v]
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
    try:
        resolved = Spec.model_validate(out.model_dump(exclude_unset=False))
    except ValidationError as exc:
        # a value that scaling made invalid (filters 89 for groups 2 after width 0.35 and
        # truncation): the usual located line, saying which scaling produced it
        from ..language import spec_errors

        how = f"after scaling (width {w:g}, depth {d:g}, rounding {sc.rounding}, divisor {sc.divisor})"
        raise spec_errors(exc, raw_of(spec), suffix=f" {how}") from None
    resolved._raw = raw_of(spec)
    return resolved
