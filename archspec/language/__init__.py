"""language: what a user writes. The safe YAML loader with positions (`loader`), the
pydantic schema (`schema`, `common`), the block families (`blocks`: each type's model and
its lowering, written against the builder it is handed), `define:` blocks (`define`),
`${...}` expressions (`expr`) and the rounding rules they and the families use
(`rounding`); validation with located errors (here). No TensorFlow, no Keras."""

from __future__ import annotations

from pydantic import ValidationError

from ..core.errors import SpecError, SpecErrors
from .loader import RawSpec, apply_overrides, format_path, load_with_extends, loads
from .define import check_defined
# the wording shared with define's checks lives below both (no cycle through this package)
from .messages import _at, sorted_errors, unknown_key_message
from .schema import Spec

__all__ = ["Spec", "RawSpec", "load", "load_raw", "validate", "loads", "spec_hash", "dump_spec", "stage_of"]


def load_raw(ref, overrides: list[str] | None = None) -> RawSpec:
    """Load a spec file (or bundled name) with `extends:` applied and `--set` overrides."""
    return apply_overrides(load_with_extends(ref), list(overrides or []))


def load(ref, overrides: list[str] | None = None) -> tuple[Spec, RawSpec]:
    """Load and validate a spec: returns the Spec and the raw document (for locations)."""
    spec = validate(load_raw(ref, overrides))
    return spec, spec._raw


def raw_of(spec) -> RawSpec | None:
    """The document a Spec was loaded from (kept so that errors found later, through the
    Python API too, still point at file:line:col), or None for a Spec built in Python."""
    return getattr(spec, "_raw", None)


def spec_hash(spec: Spec) -> str:
    """sha256 of a resolved spec's canonical JSON (sorted keys): what was built, exactly."""
    import hashlib
    import json

    data = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def dump_spec(spec, comment: str | None = None) -> str:
    """A spec as YAML that `archspec.language.load` reads back to the same Spec (defaults left out)."""
    import yaml

    data = spec.model_dump(mode="json", exclude_defaults=True)
    data = {"format": spec.format, **{k: v for k, v in data.items() if k != "format"}}
    head = "".join(f"# {line}\n" for line in (comment or "").splitlines())
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=110, allow_unicode=True)


def stage_of(spec, path: tuple) -> str:
    """The stage a block belongs to: `stem`, a stage's name (`stage{k}` when unnamed),
    `head` or `input`."""
    if not path:
        return "input"
    if path[0] == "stages" and len(path) > 1:
        st = spec.stages[path[1]]
        return st.name or f"stage{path[1] + 1}"
    return str(path[0])


def spec_errors(exc: ValidationError, raw: RawSpec | None, suffix: str = "", data=None) -> SpecErrors:
    """pydantic's errors as located one-line SpecErrors, in file order."""
    data = raw.data if data is None and raw is not None else data
    return _located(exc.errors(), data if data is not None else {}, raw, (), suffix)


def _located(errors: list[dict], data, raw: RawSpec | None, prefix: tuple, suffix: str) -> SpecErrors:
    """The one ladder from pydantic's errors to SpecErrors: collapse union members, map
    each `loc` onto `data` (the document at `prefix` of `raw`), word the message, locate it."""
    errs = []
    for e in _collapse(errors, data):
        path, msg, at = _describe(e, data)
        full = tuple(prefix) + path
        loc = None
        if raw is not None:
            loc = raw.locate_key(full) if at == "key" else raw.locate(full[:-1] if at == "parent" else full)
        errs.append(SpecError(msg + suffix, loc, format_path(full) or None))
    return SpecErrors(sorted_errors(errs))


def validate(raw: RawSpec) -> Spec:
    """Validate raw data as a Spec; every problem becomes a located one-line SpecError.
    `set:`, `vars:`, use-site expressions and `if:` are made concrete first (`expand`); the
    Spec's document (`raw_of`) is the expanded one."""
    from .expand import expand

    raw = expand(raw)
    try:
        spec = Spec.model_validate(raw.data)
    except ValidationError as exc:
        raise spec_errors(exc, raw) from None
    check_defined(spec, raw)
    spec._raw = raw
    return spec


def validate_blocks(data: list, raw: RawSpec | None, path: tuple, suffix: str = "") -> list:
    """Validate plain data (a defined block's body, expressions evaluated) as a list of
    blocks; errors are located at `path` (the body's place in the document) + `suffix`."""
    from pydantic import TypeAdapter

    from .blocks import Block

    global _BLOCKS_ADAPTER
    if _BLOCKS_ADAPTER is None:
        _BLOCKS_ADAPTER = TypeAdapter(list[Block])
    try:
        return _BLOCKS_ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise _located(exc.errors(), data, raw, tuple(path), suffix) from None


_BLOCKS_ADAPTER = None


def _is_label(part) -> bool:
    """pydantic's names for union members and constrained types, which are not keys."""
    return isinstance(part, str) and (any(c in part for c in "[-") or part in _TYPE_LABELS)


_TYPE_LABELS = {"str", "int", "float", "bool", "none", "list", "dict", "tuple", "literal", "__defined__"}
_TYPE_ERRORS = {"list_type", "tuple_type", "dict_type", "model_type", "int_type", "int_parsing", "float_type",
                "float_parsing", "string_type", "bool_type", "literal_error", "is_instance_of", "model_attributes_type"}


def _data_path(loc: tuple, data) -> tuple:
    """Map pydantic's `loc` onto the document, dropping union tags and type labels."""
    out: list = []
    node, lost, block = data, False, False
    for part in loc:
        if lost:
            if not _is_label(part):
                out.append(part)
            continue
        item, block = block, False
        if isinstance(node, dict):
            if item and node.get("type") == part:
                continue  # a list item's union tag (a `cropping` block has a `cropping` field too)
            if part in node:
                out.append(part)
                node = node[part]
            elif isinstance(part, str) and (node.get("type") == part or _is_label(part)):
                continue  # a discriminated-union tag or a member label
            else:
                out.append(part)  # a missing or unknown key
                lost = True
        elif isinstance(node, list):
            if isinstance(part, int) and 0 <= part < len(node):
                out.append(part)
                node = node[part]
                block = True
            elif not _is_label(part):
                out.append(part)
                lost = True
        # a scalar: whatever follows names union members, not places
    return tuple(out)


def _collapse(errors: list[dict], data) -> list[dict]:
    """One error per place: a union gives one error per member; keep the most specific."""
    groups: dict[tuple, list[dict]] = {}
    for e in errors:
        groups.setdefault(_data_path(tuple(e["loc"]), data), []).append(e)
    out = []
    for path, errs in groups.items():
        specific = [e for e in errs if e["type"] not in _TYPE_ERRORS]
        if specific:
            out.append(specific[0])
        elif len(errs) == 1:
            out.append(errs[0])
        else:
            msgs = list(dict.fromkeys(_message(e).split(" (got ")[0] for e in errs))
            inp = errs[0].get("input")
            got = f" (got {inp!r})" if not isinstance(inp, (dict, list)) else ""
            out.append({**errs[0], "type": "__combined__", "msg": " or ".join(msgs) + got})
    return out


def _message(e: dict) -> str:
    t, ctx, inp = e["type"], e.get("ctx") or {}, e.get("input")
    if t == "__combined__":
        return e["msg"]
    got = f" (got {inp!r})" if not isinstance(inp, (dict, list)) else ""
    if t == "greater_than":
        return f"must be > {ctx['gt']}{got}"
    if t == "greater_than_equal":
        return f"must be >= {ctx['ge']}{got}"
    if t == "less_than":
        return f"must be < {ctx['lt']}{got}"
    if t == "less_than_equal":
        return f"must be <= {ctx['le']}{got}"
    if t == "missing":
        return "required key is missing"
    if t == "union_tag_not_found":
        return "a block needs a 'type'"
    if t == "literal_error":
        return f"must be one of {ctx.get('expected')}{got}"
    if t in ("int_type", "int_parsing", "int_from_float"):
        return f"must be an integer{got}"
    if t in ("float_type", "float_parsing"):
        return f"must be a number{got}"
    if t in ("bool_type", "bool_parsing"):
        return f"must be true or false{got}"
    if t == "string_type":
        return f"must be a string{got}"
    if t == "string_pattern_mismatch":
        return f"must match {ctx.get('pattern')}{got}"
    if t in ("list_type", "tuple_type"):
        return f"must be a list{got}"
    if t in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping{got}"
    if t == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if t == "too_long":
        return f"takes at most {ctx.get('max_length')} item(s)"
    if t == "value_error":
        return str(ctx.get("error", e["msg"])).removeprefix("Value error, ")
    return e["msg"][0].lower() + e["msg"][1:] + got


def _describe(e: dict, data) -> tuple[tuple, str, str]:
    """(path in `data`, message, where to point: "key" for an unknown key's own position,
    "parent" for the mapping that misses a key, "value" for the value itself)."""
    path = _data_path(tuple(e["loc"]), data)
    if e["type"] == "extra_forbidden":
        return path, unknown_key_message(path, data), "key"
    if e["type"] == "missing":
        if path and isinstance(path[-1], int):  # a tuple with too few values
            have = _at(data, path[:-1])
            n = len(have) if isinstance(have, list) else 0
            what = _TUPLES.get(tuple(p for p in path[:-1] if not isinstance(p, int))[-2:], None)
            msg = (f"expected {what}, got {n}" if what else
                   f"expected more values: item [{path[-1]}] is missing (got {n})")
            return path[:-1], msg, "value"
        return path, _message(e), "parent"
    return path, _message(e), "value"


_TUPLES = {("input", "shape"): "3 values (height, width, channels)", ("shape",): "3 values (height, width, channels)"}
