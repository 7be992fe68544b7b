"""Expressions of the spec language: ``"${growth * 4}"``, evaluated by a small whitelist
evaluator over Python's `ast` (never `eval`).

Allowed: numbers, names from the environment (a defined block's params, `in_channels`,
`in_shape`, the name-template fields, the spec's `vars`), ``+ - * / // % **``, unary
``-``/``+``, parentheses, subscripts of lists (``in_shape[0]``), the functions `min`, `max`,
`round`, `int`, `ceil`, `floor`, `make_divisible`; and for conditions (``if:``) the
comparisons ``== != < <= > >=``, ``and``, ``or``, ``not``, ``true``, ``false``, ``null``
with ``x is null`` / ``x is not null``, and quoted text compared with ``==``/``!=``.
Anything else is an `ExprError`.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any

from .rounding import make_divisible

EXPR = re.compile(r"\$\{([^{}]*)\}")

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_MAX_ABS = 1e15  # no channel count, size or rate is larger: bounds `**` and runaway products


class ExprError(ValueError):
    """An expression that cannot be evaluated; the message says why."""


def _number(v, what: str):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ExprError(f"{what} must be a real number (got {_short(v)})")
    return _check(v)


def _short(v) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:40] + "..."


def _check(v):
    """Every value an expression touches (constants, names, operands, results) is a finite
    real number of at most 1e15 in size, so no operation can run long or grow large."""
    if isinstance(v, complex):
        raise ExprError(f"not a real number ({_short(v)})")
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if isinstance(v, float) and not math.isfinite(v) or abs(v) > _MAX_ABS:
            raise ExprError(f"value out of range ({_short(v)}; at most 1e15 in size)")
    return v


def _round(x, ndigits=None):
    if ndigits is not None and (not isinstance(ndigits, int) or abs(ndigits) > 15):
        raise ExprError(f"ndigits must be an integer from -15 to 15 (got {_short(ndigits)})")
    return round(x) if ndigits is None else round(x, ndigits)


FUNCTIONS = {
    "min": min, "max": max, "round": _round, "int": int, "ceil": math.ceil, "floor": math.floor,
    "make_divisible": make_divisible,
}


#: the names of the language's own constants (YAML's spelling, not Python's)
CONSTANTS = {"true": True, "false": False, "null": None}
_ORDER = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge}
_EQUAL = {ast.Eq: operator.eq, ast.NotEq: operator.ne}
_OP_TEXT = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
            ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}


def _boolean(v, what: str) -> bool:
    if not isinstance(v, bool):
        raise ExprError(f"{what} must be true or false (got {_short(v)}; compare it, e.g. x > 0)")
    return v


def _compare(node: ast.Compare, env: dict) -> bool:
    """``a < b <= c``, ``a == b``, ``x is null``: numbers are ordered, any two plain values
    (numbers, text, true/false, null) compared for equality; `is` only with null."""
    left_node, left = node.left, _eval(node.left, env, text_ok=True)
    for op, right_node in zip(node.ops, node.comparators):
        right = _eval(right_node, env, text_ok=True)
        t = type(op)
        if t in (ast.Is, ast.IsNot):
            if not (isinstance(right_node, ast.Name) and right_node.id == "null"):
                raise ExprError(f"'{_OP_TEXT[t]}' only tests null (x is null, x is not null); "
                                f"compare values with == or !=")
            ok = (left is None) == (t is ast.Is)
        elif t in _EQUAL:
            for v in (left, right):
                if isinstance(v, (list, tuple, dict)):
                    raise ExprError(f"'{_OP_TEXT[t]}' compares plain values, not lists (got {_short(v)})")
            # 1 == 1.0, but true is not 1: a boolean equals only a boolean
            same_kind = isinstance(left, bool) == isinstance(right, bool)
            ok = _EQUAL[t](left, right) if same_kind else t is ast.NotEq
        elif t in _ORDER:
            a = _number(left, f"the left side of {_OP_TEXT[t]}")
            b = _number(right, f"the right side of {_OP_TEXT[t]}")
            ok = _ORDER[t](a, b)
        else:
            raise ExprError(f"comparison '{_OP_TEXT.get(t, t.__name__)}' is not allowed "
                            f"(== != < <= > >=, and 'is null' only)")
        if not ok:
            return False
        left_node, left = right_node, right
    return True


def _eval(node, env: dict, text_ok: bool = False) -> Any:
    if isinstance(node, ast.Expression):
        return _eval(node.body, env)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, str) and text_ok:
            return node.value
        if node.value is None or isinstance(node.value, bool):
            word = {None: "null", True: "true", False: "false"}[node.value]
            raise ExprError(f"write {word}, not {node.value!r} (the spec language spells them as YAML does)")
        if not isinstance(node.value, (int, float)):
            raise ExprError(f"only numbers are allowed as constants (got {_short(node.value)}; quoted text "
                            f"only in a comparison with == or !=)")
        return _check(node.value)
    if isinstance(node, ast.Compare):
        return _compare(node, env)
    if isinstance(node, ast.BoolOp):
        word = "and" if isinstance(node.op, ast.And) else "or"
        for v in node.values:  # short-circuit, as Python's and/or
            b = _boolean(_eval(v, env), f"each side of '{word}'")
            if b != (word == "and"):
                return b
        return word == "and"
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        return not _boolean(_eval(node.operand, env), "the operand of 'not'")
    if isinstance(node, ast.Name):
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if node.id not in env:
            known = ", ".join(sorted(k for k in env if not k.startswith("_"))) or "none"
            raise ExprError(f"unknown name {node.id!r}; known: {known}")
        return env[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        a = _number(_eval(node.left, env), "an operand")
        b = _number(_eval(node.right, env), "an operand")
        if isinstance(node.op, ast.Pow) and (abs(b) > 64 or abs(a) > 1e6 and b > 1):
            raise ExprError(f"power too large ({a!r} ** {b!r})")
        try:
            return _check(_BINOPS[type(node.op)](a, b))
        except ZeroDivisionError:
            raise ExprError("division by zero") from None
        except (OverflowError, ValueError) as exc:
            raise ExprError(str(exc)) from None
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_number(_eval(node.operand, env), "an operand"))
    if isinstance(node, ast.Subscript):
        seq = _eval(node.value, env)
        idx = _eval(node.slice, env)
        if not isinstance(seq, (list, tuple)) or isinstance(idx, bool) or not isinstance(idx, int):
            raise ExprError("only a list can be indexed, by an integer (e.g. in_shape[0])")
        if not -len(seq) <= idx < len(seq):
            raise ExprError(f"index {idx} out of range for {list(seq)}")
        return seq[idx]
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            what = node.func.id if isinstance(node.func, ast.Name) else "this call"
            raise ExprError(f"function {what!r} is not allowed; allowed: {', '.join(FUNCTIONS)}")
        args = [_number(_eval(a, env), f"an argument of {node.func.id}") for a in node.args]
        try:
            return _check(FUNCTIONS[node.func.id](*args))
        except (TypeError, ValueError, OverflowError) as exc:
            raise ExprError(f"{node.func.id}(): {exc}") from None
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        op = {ast.BitXor: "^", ast.BitAnd: "&", ast.BitOr: "|", ast.LShift: "<<", ast.RShift: ">>",
              ast.Invert: "~", ast.MatMult: "@"}.get(type(node.op), type(node.op).__name__)
        raise ExprError(f"operator {op} is not allowed ({_ALLOWED}; for a power write **)")
    if isinstance(node, ast.IfExp):
        raise ExprError(f"IfExp is not allowed ('x if c else y'; {_ALLOWED}); an item of a body that is "
                        f"there only sometimes takes if: \"${{...}}\"")
    raise ExprError(f"{type(node).__name__} is not allowed in an expression ({_ALLOWED})")


_ALLOWED = (f"numbers, names, + - * / // % **, parentheses, {', '.join(FUNCTIONS)}, "
            f"== != < <= > >=, and, or, not, true, false, null only")


def evaluate(text: str, env: dict) -> Any:
    """The value of one expression (the text between ``${`` and ``}``)."""
    if len(text) > 500:
        raise ExprError("expression longer than 500 characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ExprError(f"syntax error in ${{{text}}}: {exc.msg}") from None
    return _eval(tree, env)


def has_expr(value) -> bool:
    return isinstance(value, str) and "${" in value


def render(value: str, env: dict) -> Any:
    """A string holding expressions: one whole expression takes its value's type,
    expressions inside a longer string are formatted into it (ints without ``.0``)."""
    m = EXPR.fullmatch(value.strip())
    if m:
        return evaluate(m.group(1), env)
    if "${" in value and not EXPR.search(value):
        raise ExprError(f"unclosed '${{' in {value!r}")

    def one(mm):
        v = evaluate(mm.group(1), env)
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        return str(v)

    return EXPR.sub(one, value)
