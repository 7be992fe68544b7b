"""What a document says once and uses many times, made concrete before validation:

- `vars:`: names for values (a width, a growth rate), each may use the ones before it;
- ``"${...}"`` at use sites (input, defaults, stem, stages, head, taps, scaling), evaluated
  over `vars`; name templates (`name`, `*_name`, `inputs`) keep theirs for the lowering,
  which fills in `{i}`, `{stage}`, ... (and sees `vars` too);
- `if:` on any item of a list: the item is left out when it is false (at use sites over
  `vars`; in a `define` body over the params, when the block is used: `conditional`);
- `{auto}` only in names (the lowering gives Keras' default name there).

Items left out shift the ones after them: `drop_positions` moves the document's
positions along, so errors still point at the line the user wrote.
"""

from __future__ import annotations

from typing import Any, Callable

from ..core.errors import SpecError
from .expr import CONSTANTS, FUNCTIONS, ExprError, has_expr, render
from .loader import RawSpec, apply_set, format_path

USE_SITES = ("input", "defaults", "stem", "stages", "head", "taps", "scaling")
AUTO = "{auto}"
#: names a var may not take: the lowering's own (name-template fields, a defined block's
#: input), the expression language's words and functions
RESERVED_VARS = frozenset({"in_channels", "in_shape", "name", "i", "j", "letter", "stage", "s", "n", "N", "auto"}
                          | set(CONSTANTS) | set(FUNCTIONS))


def is_name_key(key) -> bool:
    """A key whose value is a name template or a reference, formatted by the lowering."""
    return isinstance(key, str) and (key in ("name", "inputs") or key.endswith("_name"))


def condition(item: dict, env: dict, path: tuple) -> bool:
    """The value of an item's `if:`: true or false, or an expression that is."""
    v = item["if"]
    if has_expr(v):
        try:
            v = render(v, env)
        except ExprError as exc:
            exc.path = path + ("if",)
            raise
    if not isinstance(v, bool):
        exc = ExprError(f"if: must be true or false, or \"${{...}}\" that is (a comparison such as "
                        f"\"${{se_ratio > 0}}\"); got {v!r:.60}")
        exc.path = path + ("if",)
        raise exc
    return v


def conditional(value, env: dict, path: tuple = (), skip: Callable[[Any], bool] = lambda k: False,
                dropped: set | None = None):
    """A deep copy of `value` with every expression evaluated over `env` (except under keys
    `skip` says) and the list items whose `if:` is false left out (the key removed from the
    others); the path of each item left out is added to `dropped`.

    Raises:
        ExprError: with `.path` set to where the bad expression sits.
    """
    if isinstance(value, dict):
        return {k: (v if skip(k) else conditional(v, env, path + (k,), skip, dropped)) for k, v in value.items()}
    if isinstance(value, list):
        out = []
        for i, v in enumerate(value):
            if isinstance(v, dict) and "if" in v:
                if not condition(v, env, path + (i,)):
                    if dropped is not None:
                        dropped.add(path + (i,))
                    continue
                v = {k: x for k, x in v.items() if k != "if"}
            out.append(conditional(v, env, path + (i,), skip, dropped))
        return out
    if has_expr(value):
        try:
            return render(value, env)
        except ExprError as exc:
            exc.path = path
            raise
    return value


def shifted(path: tuple, dropped: set) -> tuple | None:
    """Where `path` (of the document as written) is once the `dropped` items are left
    out: later items of a list move up; a path inside a dropped item is None."""
    out = []
    for k, part in enumerate(path):
        if isinstance(part, int):
            parent = path[:k]
            if parent + (part,) in dropped:
                return None
            part -= sum(1 for d in dropped if len(d) == k + 1 and d[:k] == parent and d[k] < part)
        out.append(part)
    return tuple(out)


def drop_positions(raw: RawSpec, dropped: set, data=None) -> RawSpec:
    """`raw` with its positions moved as `shifted` says (and `data`, when given)."""
    if not dropped:
        return raw if data is None else RawSpec(data, raw.source, raw.positions, raw.key_positions)

    def move(table: dict) -> dict:
        out = {}
        for k, v in table.items():
            n = shifted(k, dropped)
            if n is not None:
                out[n] = v
        return out

    return RawSpec(raw.data if data is None else data, raw.source, move(raw.positions), move(raw.key_positions))


def check_auto(data, raw: RawSpec | None, path: tuple = ()) -> None:
    """`{auto}` stands for a new layer's Keras default name, so it is only allowed in names
    (`name`, `conv_name`, ...): anywhere else (a reference, a type, a number) is an error."""
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for k, v in items:
        if isinstance(v, str) and AUTO in v and not (isinstance(data, dict) and is_name_key(k) and k != "inputs"):
            key = k if isinstance(data, dict) else path[-1] if path else None
            what = ("a reference names a layer that exists (write its name: conv2d_3, ...)" if key == "inputs"
                    else "this is not a name")
            raise SpecError(f"{AUTO} is Keras' default name of a new layer and only goes in a name "
                            f"(name, conv_name, bn_name, ...): {what}", raw.locate(path + (k,)) if raw else None,
                            format_path(path + (k,)))
        check_auto(v, raw, path + (k,))


def eval_vars(raw: RawSpec) -> dict:
    """The document's `vars:`, in order, each value's expressions over the vars before it."""
    given = raw.data.get("vars")
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise SpecError("must be a mapping of names to values, e.g. {width: 64}", raw.locate(("vars",)), "vars")
    env: dict = {}
    for k, v in given.items():
        p = ("vars", k)
        if not k.isidentifier() or k in RESERVED_VARS:
            why = "is not a name (letters, digits, _)" if not k.isidentifier() else "is reserved"
            raise SpecError(f"var {k!r} {why}; reserved: {', '.join(sorted(RESERVED_VARS))}",
                            raw.locate_key(p), format_path(p))
        try:
            env[k] = conditional(v, env, p)
        except ExprError as exc:
            raise SpecError(f"{exc}", raw.locate(exc.path), format_path(exc.path)) from None
    return env


def expand(raw: RawSpec) -> RawSpec:
    """`raw` with `set:` applied, `vars` evaluated and use-site expressions and `if:` made
    concrete (a new RawSpec when anything changed). Errors are located SpecErrors."""
    if "set" in raw.data:  # a document that did not come through the loader's extends
        raw = apply_set(raw)
    check_auto(raw.data, raw)
    env = eval_vars(raw)
    data = dict(raw.data)
    if "vars" in data:
        data["vars"] = env
    dropped: set = set()
    try:
        for key in USE_SITES:
            if key in data:
                data[key] = conditional(data[key], env, (key,), is_name_key, dropped)
        for k, stage in enumerate(data.get("stages") or []):
            # a stage's name is not a template ({stage} is it, verbatim): its expressions are the vars'
            if isinstance(stage, dict) and has_expr(stage.get("name")):
                stage["name"] = conditional(stage["name"], env, ("stages", k, "name"))
    except ExprError as exc:
        known = ", ".join(sorted(env)) or "none (a top-level vars: mapping defines names)"
        msg = str(exc)
        if msg.startswith("unknown name"):
            msg = msg.split("; known:")[0] + f"; vars: {known}"
        raise SpecError(msg, raw.locate(exc.path), format_path(exc.path)) from None
    return drop_positions(raw, dropped, data)
