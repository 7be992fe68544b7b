"""Fuzzing the open language (issue 18): hostile expressions, name templates, references and
`define:` bodies, and `extends:` to files that are not specs. Allowed outcomes: success, or
one located `SpecError` line that quotes nothing but the spec. A generated file (codegen)
of any spec that validates holds every layer name as a string literal, never as code.

Each example runs under a watchdog (SIGALRM, generous) so that a hang fails the test with
the example instead of stalling the suite. The default counts keep CI short; the long
campaign (run before resolving issue 18):

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz_language.py
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import signal
import subprocess
import sys

import yaml
from hypothesis import event, given
from hypothesis import strategies as st

from archspec.api import analyze, lower_spec
from archspec.core.errors import SpecError
from archspec.language.expr import ExprError, render
from archspec.language import validate
from archspec.language.loader import loads

# example counts: the profiles of conftest.py (HYPOTHESIS_PROFILE=long for the long campaign)

WATCHDOG_S = 20  # far above any honest example (a few ms); only a hang reaches it


class Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(what):
    def fire(signum, frame):
        raise Hang(f"no answer within {WATCHDOG_S} s: {what!r:.300}")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(WATCHDOG_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ---------------------------------------------------------------- expressions

ATOMS = st.one_of(
    st.integers(-10**20, 10**20).map(str), st.sampled_from(["1e308", "1e309", "0.5", "-0.0", "1_000", "0x10"]),
    st.sampled_from(["f", "k", "in_channels", "in_shape", "in_shape[0]", "in_shape[-99]", "nope",
                     "__import__", "__class__", "f.__class__", "().__class__", "[1, 2]", "'s'", "None", "True"]),
)


def _expr(children):
    return st.one_of(
        st.tuples(children, st.sampled_from(["+", "-", "*", "/", "//", "%", "**", "^", "&", "|", "<<", "@",
                                             " if 1 else ", " and ", "<"]), children).map("".join),
        st.tuples(st.sampled_from(["-", "+", "~", "not "]), children).map("".join),
        children.map(lambda c: f"({c})"),
        st.tuples(st.sampled_from(["round", "min", "max", "int", "ceil", "floor", "make_divisible", "eval",
                                   "open", "getattr", "abs", "pow"]),
                  st.lists(children, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        children.map(lambda c: f"in_shape[{c}]"),
        children.map(lambda c: f"lambda: {c}"),
    )


EXPRESSIONS = st.recursive(ATOMS, _expr, max_leaves=12)
ENV = {"f": 8, "k": 3, "in_channels": 16, "in_shape": [8, 8, 16]}


@given(text=EXPRESSIONS)
def test_expressions_give_a_bounded_real_or_a_clear_error(text):
    with watchdog(text):
        try:
            v = render("${" + text + "}", dict(ENV))
        except ExprError as exc:
            assert str(exc) and "\n" not in str(exc)
            event("refused")
            return
    event("a value")
    assert isinstance(v, (int, float)) and not isinstance(v, bool) or isinstance(v, list), (text, v)
    if isinstance(v, float):
        assert v == v and abs(v) <= 1e15, (text, v)
    elif isinstance(v, int):
        assert abs(v) <= 1e15, (text, v)


# ---------------------------------------------------------------- specs in the open language

VALID_NAMES = st.sampled_from(["{name}_c", "{name}_x", "q\"uote{name}", "back\\slash{name}", "{name}é中😀",
                               "{name}#not a comment", "{name}'single", "{name}<b>&amp;"])
TEMPLATES = st.one_of(
    VALID_NAMES, VALID_NAMES, VALID_NAMES,
    st.sampled_from(["{name}_c", "{stage}{letter}", "b{i}", "{name}.{N}", "{name.__class__}", "{i[0]}",
                     "{i:>2000000000}", "{i!r}", "{}", "{0}", "{{x}}", "{nope}", "a/b", "a\tb", "x" * 250,
                     "a\"\"\";open('PWNED','w').write('x');\"\"\"", "é中😀", "${k * 2}", "${__import__}",
                     "blk${i + 1000000000000}", "'", "\\", "\\N{BULLET}", "#", "\r", ""]),
    st.text(min_size=1, max_size=20),
)
NUMBERS = st.one_of(st.integers(1, 16), st.integers(1, 16), st.integers(1, 16), st.integers(-3, 70), st.sampled_from([0, 10**6, 2**20, 2**20 + 1, 10**12, -1]),
                    EXPRESSIONS.map(lambda e: "${" + e + "}"))
REFS = st.sampled_from([None, None, None, ["s_block1"], ["c0"], ["later"], ["nope"], ["{name}"], ["${k}"], ["c0", "c0"]])


@st.composite
def defined_specs(draw):
    body = [{"type": "conv", "name": draw(TEMPLATES), "filters": draw(NUMBERS), "kernel": draw(NUMBERS),
             "padding": draw(st.sampled_from(["same", "same", "same", "valid", "nope"]))}]
    if draw(st.booleans()):
        body.append({"type": "residual", "drop_path": draw(st.booleans()),
                     "body": [{"type": "conv", "name": draw(TEMPLATES), "filters": "${in_channels}"}]})
    if draw(st.booleans()):
        body.append({"type": draw(st.sampled_from(["add", "concat", "multiply"])), "name": draw(TEMPLATES),
                     "inputs": draw(REFS) or ["c0"]})
    inner = {"params": {"f": draw(NUMBERS), "k": 3}, "body": body}
    define = {"blk": inner}
    use_type = "blk"
    if draw(st.booleans()):  # a definition that uses another (or itself)
        define["outer"] = {"params": {}, "body": [{"type": draw(st.sampled_from(["blk", "blk", "blk", "outer"]))}]}
        use_type = "outer"
    spec = {
        "format": 1, "name": "fz", "input": {"shape": [8, 8, 3]}, "define": define,
        "defaults": {"drop_connect_rate": draw(st.sampled_from([0.0, 0.2, 0.2, 0.2, 0.99, 1.5]))},
        "stem": [{"type": "conv", "name": "c0", "filters": 4}],
        "stages": [{"name": "s", "block_name": draw(TEMPLATES),
                    "blocks": [{"type": use_type, "repeats": draw(st.integers(1, 3)), "inputs": draw(REFS)}]}],
        "head": {"classes": draw(st.integers(1, 5)),
                 "layers": [{"type": "global_pool", "name": "gap"}, {"type": "classifier", "name": "predictions"}]},
    }
    if spec["stages"][0]["blocks"][0]["inputs"] is None:
        del spec["stages"][0]["blocks"][0]["inputs"]
    return spec


def check(text: str, source: str = "fuzz.yaml"):
    """validate + inspect as the CLI runs them: a Graph, or None after one located line."""
    try:
        raw = loads(text, source)
        spec = validate(raw)
        g = lower_spec(spec)
        analyze(g)
        return g
    except SpecError as exc:
        line = exc.one_line()
        assert line and "\n" not in line and len(line) < 2000, repr(line)
        assert "PWNED" not in line or "open(" in text  # quoting the spec itself is fine
        return None


@given(spec=defined_specs())
def test_defined_blocks_with_hostile_values(spec):
    text = yaml.safe_dump(spec, allow_unicode=True, sort_keys=False)
    with watchdog(text):
        g = check(text)
        event("valid" if g is not None else "refused")
        if g is None:
            return
        from archspec.backends.codegen import generate

        code = generate(g)
    assert_code_holds_names_as_data(code, [n.name for n in g.nodes])


def assert_code_holds_names_as_data(code: str, names: list[str]) -> None:
    """The generated module compiles; its top level is imports, definitions, assignments and
    one docstring; no function body holds a bare expression but its docstring; it calls
    nothing that reads files or runs code; and every layer name written whole is a string
    constant (names made of a block's prefix are built by f-strings from such constants)."""
    tree = ast.parse(code)
    compile(tree, "<codegen>", "exec")
    for k, node in enumerate(tree.body):
        ok = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign)
        assert isinstance(node, ok) or (k == 0 and isinstance(node, ast.Expr)
                                        and isinstance(node.value, ast.Constant)), ast.dump(node)[:300]
    for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))):
        for k, stmt in enumerate(fn.body):
            if isinstance(stmt, ast.Expr):
                assert k == 0 and isinstance(stmt.value, ast.Constant), (fn.name, ast.dump(stmt)[:300])
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not calls & {"open", "eval", "exec", "__import__", "compile", "getattr", "setattr"}, calls
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert any(n in strings for n in names[1:])  # the names are there, as data


# ---------------------------------------------------------------- extends: to odd files

ODD_TARGETS = ["fifo.yaml", "zero.yaml", "dir.yaml", "/etc/passwd", "/proc/self/status", "../../etc/passwd",
               "passwd_link.yaml", "binary.yaml", "huge.yaml", "self.yaml", "loop_a.yaml", "missing.yaml",
               "/dev/stdin", "text.yaml", "list.yaml", "dangling.yaml"]

RUNNER = r"""
import json, os, resource, subprocess, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # 2 GiB: a read of /dev/zero fails fast
from archspec.cli import main
import contextlib, io
out = []
for path in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["validate", path])
    out.append([path, rc, err.getvalue()])
print(json.dumps(out))
"""


def test_extends_to_odd_files_is_one_line_that_quotes_nothing(tmp_path):
    d = tmp_path / "w" / "x"
    d.mkdir(parents=True)
    secret = "TOPSECRET:x:0:0"
    os.mkfifo(d / "fifo.yaml")
    (d / "zero.yaml").symlink_to("/dev/zero")
    (d / "dir.yaml").mkdir()
    (d / "passwd_link.yaml").symlink_to("/etc/passwd")
    (d / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (d / "huge.yaml").write_text("a: 1\n" * 400_000)
    (d / "self.yaml").write_text("format: 1\nextends: self.yaml\nname: s\n")
    (d / "loop_a.yaml").write_text("format: 1\nextends: loop_b.yaml\nname: a\n")
    (d / "loop_b.yaml").write_text("format: 1\nextends: loop_a.yaml\nname: b\n")
    (d / "text.yaml").write_text(secret + "\n")
    (d / "list.yaml").write_text(f"- {secret}\n")
    (d / "dangling.yaml").symlink_to(d / "nowhere.yaml")
    specs = []
    for k, target in enumerate(ODD_TARGETS):
        p = d / f"spec{k}.yaml"
        p.write_text(f"format: 1\nextends: {json.dumps(target)}\nname: s{k}\n")
        specs.append(str(p))
    r = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(specs)], capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    for (path, rc, err), target in zip(json.loads(r.stdout), ODD_TARGETS):
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1, (target, rc, err[-500:])
        # located in the spec, or for a cycle in the spec file whose extends: closes it
        assert lines[0].startswith(path + ":") or "cycle" in lines[0] and lines[0].startswith(str(d)), lines
        assert "internal error" not in lines[0] and secret not in lines[0] and "root:" not in lines[0], lines
