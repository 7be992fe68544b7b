"""User-defined parametric blocks (``define:``) and the checks that need the whole spec:
every used type is defined, every use gives known params and all required ones,
definitions do not use themselves, and their bodies name known block types and keys.

A definition's body is kept as plain data: its values may be expressions (``"${...}"``)
that only have a value where the block is used (they may read `in_channels`). It is
validated as blocks each time it is used, by the lowering (`archspec.ir.lower`).
"""

from __future__ import annotations

from typing import Any, Iterator

from ..core.errors import SpecError
from .loader import RawSpec, format_path
# the model (`schema`) and the wording shared with the validator (`messages`) live below
# this module, so neither imports it back (no cycle); importable from here as before
from .messages import sorted_errors, suggest, unknown_key_message
from .schema import REQUIRED, RESERVED, Definition  # noqa: F401


def iter_blocks(blocks, path: tuple) -> Iterator[tuple[Any, tuple]]:
    """Every block of a list and, depth-first, every child block of composition blocks."""
    for k, b in enumerate(blocks):
        p = path + (k,)
        yield b, p
        for suffix, children in b.children():
            yield from iter_blocks(children, p + suffix)


def spec_blocks(spec) -> Iterator[tuple[Any, tuple]]:
    """Every block of a validated spec with its path."""
    yield from iter_blocks(spec.input.preprocessing, ("input", "preprocessing"))
    yield from iter_blocks(spec.stem, ("stem",))
    for s, st in enumerate(spec.stages):
        yield from iter_blocks(st.blocks, ("stages", s, "blocks"))
    yield from iter_blocks(spec.head.layers, ("head", "layers"))


_CHILD_KEYS = ("body", "post", "shortcut", "branches")


def raw_blocks(blocks, path: tuple) -> Iterator[tuple[dict, tuple]]:
    """Every block mapping of a raw body (definitions are plain data), nested ones included."""
    if not isinstance(blocks, list):
        return
    for k, b in enumerate(blocks):
        p = path + (k,)
        if not isinstance(b, dict):
            continue
        yield b, p
        for key in _CHILD_KEYS:
            v = b.get(key)
            if key == "branches" and isinstance(v, list):
                for i, br in enumerate(v):
                    yield from raw_blocks(br, p + (key, i))
            elif isinstance(v, list):
                yield from raw_blocks(v, p + (key,))


def check_defined(spec, raw: RawSpec | None) -> None:
    """The checks on `define:` and the uses of defined types; all problems in one SpecErrors."""
    from .blocks import REGISTRY, DefinedUse

    errors: list[SpecError] = []

    def err(msg: str, path: tuple, key: bool = False) -> None:
        loc = None
        if raw is not None:
            loc = raw.locate_key(path) if key else raw.locate(path)
        errors.append(SpecError(msg, loc, format_path(path) or None))

    defined = spec.define
    known_types = sorted(set(REGISTRY) | set(defined))
    for t in defined:
        if t in REGISTRY:
            err(f"{t!r} is a built-in block type; give the definition another name", ("define", t), key=True)

    # bodies: known types and keys, and the graph of which definition uses which
    uses: dict[str, list[str]] = {}
    for t, d in defined.items():
        uses[t] = []
        for b, p in raw_blocks(d.body, ("define", t, "body")):
            bt = b.get("type")
            cond = b.get("if", True)
            if not isinstance(cond, bool) and not (isinstance(cond, str) and "${" in cond):
                err(f"if: must be true or false, or \"${{...}}\" that is (e.g. \"${{se_ratio > 0}}\"); "
                    f"got {cond!r:.60}", p + ("if",))
            if not isinstance(bt, str):
                err("a block needs a 'type'", p)
                continue
            if bt in REGISTRY:
                for k in b:
                    if k not in REGISTRY[bt].model.model_fields and k != "if":
                        err(unknown_key_message((k,), b), p + (k,), key=True)
            elif bt in defined:
                uses[t].append(bt)
                _check_use_keys(bt, defined[bt], b, p, err)
            else:
                err(f"unknown block type {bt!r}{suggest(bt, known_types)}; valid types: {', '.join(known_types)}",
                    p + ("type",))
    _check_cycles(uses, err)

    # uses in the spec itself
    for b, p in spec_blocks(spec):
        if isinstance(b, DefinedUse):
            if b.type not in defined:
                err(f"unknown block type {b.type!r}{suggest(b.type, known_types)}; "
                    f"valid types: {', '.join(known_types)}", p + ("type",))
                continue
            _check_use_keys(b.type, defined[b.type], b.params, p, err)
    if errors:
        from ..core.errors import SpecErrors

        raise SpecErrors(sorted_errors(errors))


def _check_use_keys(type_: str, d: Definition, given: dict, path: tuple, err) -> None:
    from .blocks import DefinedUse

    base = set(DefinedUse.model_fields)
    names = ", ".join(d.params) or "none"
    for k in given:
        if k in base or k == "if":  # `if:` is the body item's own, taken out before the use
            continue
        if k not in d.params:
            err(f"unknown param {k!r} of defined block {type_!r}{suggest(k, d.params)}; its params: {names}",
                path + (k,), key=True)
    for k, v in d.params.items():
        if v == REQUIRED and k not in given:
            err(f"defined block {type_!r} needs param {k!r} (its params: {names})", path)


def _check_cycles(uses: dict[str, list[str]], err) -> None:
    state: dict[str, int] = {}

    def visit(t: str, stack: list[str]) -> None:
        state[t] = 1
        for u in uses.get(t, []):
            if state.get(u) == 1:
                cycle = stack[stack.index(u):] + [u] if u in stack else [t, u]
                err(f"defined block {u!r} uses itself ({' -> '.join(cycle)})", ("define", u))
            elif state.get(u) is None:
                visit(u, stack + [u])
        state[t] = 2

    for t in uses:
        if t not in state:
            visit(t, [t])
