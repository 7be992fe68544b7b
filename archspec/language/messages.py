"""The wording of spec errors that both the validator (`archspec.language`) and the
`define:` checks (`define`) use: the closest-match hint (`suggest`), the message for an
unknown key (`unknown_key_message`) and file order (`sorted_errors`). It sits below both,
so neither imports the other for them (no import cycle; tests/test_layers.py checks)."""

from __future__ import annotations

import difflib

from ..core.errors import SpecError
from .loader import format_path
from .schema import Spec


def suggest(word: str, options) -> str:
    """' (did you mean `x`?)' for the closest option, or ''."""
    m = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {m[0]!r}?)" if m else ""


def sorted_errors(errors) -> list[SpecError]:
    """Errors in file order (line, column), those without a line last."""
    def key(e: SpecError):
        loc = e.location
        return (loc is None or loc.line is None, loc.line or 0 if loc else 0, loc.column or 0 if loc else 0)

    return sorted(errors, key=key)


def _at(data, path):
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def unknown_key_message(path: tuple, data) -> str:
    """'unknown key' with the keys the place accepts and the closest of them (`data` is a
    whole document, a list of blocks or one block; `path` the key's place in it)."""
    key = path[-1] if path else "?"
    fields = _fields_at(path[:-1], data)
    if fields is None:
        return f"unknown key {key!r}"
    parent = _at(data, path[:-1])
    what = f"a {parent['type']!r} block" if isinstance(parent, dict) and isinstance(parent.get("type"), str) \
        else (format_path(path[:-1]) or "the top level")
    elsewhere = ""
    if isinstance(parent, dict) and isinstance(parent.get("type"), str) and key != "type":
        from .blocks import REGISTRY

        owners = sorted(t for t, f in REGISTRY.items() if key in f.model.model_fields)
        if owners:
            elsewhere = f" ({key!r} is a key of {', '.join(owners[:6])}{', ...' if len(owners) > 6 else ''})"
    return f"unknown key {key!r}{suggest(key, fields)}{elsewhere}; {what} takes: {', '.join(fields)}"


def _fields_at(path: tuple, data) -> list[str] | None:
    """The keys the model at `path` of the document accepts (walking the schema from the
    Spec for a whole document, or from a block for a list of blocks)."""
    import typing

    from pydantic import BaseModel

    from .blocks import REGISTRY

    def models_of(ann):
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            return [ann]
        if typing.get_origin(ann) is typing.Annotated:
            return models_of(typing.get_args(ann)[0])
        return [m for a in typing.get_args(ann) if a is not type(None) for m in models_of(a)]

    def block_model(node):
        if isinstance(node, dict) and isinstance(node.get("type"), str) and node["type"] in REGISTRY:
            return REGISTRY[node["type"]].model
        return None

    model, node = block_model(data) or (Spec if isinstance(data, dict) else None), data
    for part in path:
        if isinstance(part, int):  # an item of the list whose field we are in
            node = node[part] if isinstance(node, list) and 0 <= part < len(node) else None
        else:
            fld = model.model_fields.get(part) if model is not None else None
            if fld is None:
                return None
            node = node.get(part) if isinstance(node, dict) else None
            cands = models_of(fld.annotation)
            model = cands[0] if len(cands) == 1 else None
        model = block_model(node) or model
    if model is None:
        return None
    return [f for f in model.model_fields if f != "type"]
