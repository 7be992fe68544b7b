"""Fuzzing the loader and the analyzer (hypothesis): random bytes and random mutations of
every bundled spec go through what `archspec validate` / `inspect` do, in process. The
only outcomes allowed are success and the one located error type (`SpecError`): never
another exception, never a traceback.

The default example counts keep CI short; a long campaign:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations


import yaml
from hypothesis import given
from hypothesis import strategies as st
import mutate

from archspec.api import analyze, lower_spec
from archspec.core.errors import SpecError
from archspec.language import validate
from archspec.language.loader import bundled_names, bundled_spec_dir, loads

# example counts: the profiles of conftest.py (HYPOTHESIS_PROFILE=long for the long campaign)

TEXTS = {n: (bundled_spec_dir() / f"{n}.yaml").read_text() for n in bundled_names()}


def check(text: str | bytes, source: str = "fuzz.yaml") -> str:
    """validate + inspect, as the CLI runs them; returns 'ok' or 'error'."""
    try:
        raw = loads(text, source)
        if "extends" in raw.data:  # the file is not on disk: extends cannot be followed
            raw.data.pop("extends")
        spec = validate(raw)
        analyze(lower_spec(spec))
        return "ok"
    except SpecError as exc:
        line = exc.one_line()
        assert "\n" not in line and line, repr(line)
        return "error"


@given(st.binary(max_size=400))
def test_random_bytes(data):
    check(data)


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_random_text(text):
    check(text)


VALUES = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.text(max_size=12), st.just("${in_channels * 2}"), st.just("{name}_x"),
    st.lists(st.integers(-3, 600), max_size=4), st.just({"type": "conv", "filters": 3}), st.just([]),
    st.just("\u00e9\u4e2d\U0001F600"), st.just(10**30),
)


@given(name=st.sampled_from(sorted(TEXTS)), seed=st.data())
def test_mutated_bundled_specs_values(name, seed):
    """A value somewhere in a bundled spec replaced by another of any type."""
    data = yaml.safe_load(TEXTS[name])
    paths = [p for p in mutate.paths(data) if p]
    path = seed.draw(st.sampled_from(paths))
    mutate.set_at(data, path, seed.draw(VALUES))
    check(yaml.safe_dump(data, allow_unicode=True))


@given(name=st.sampled_from(sorted(TEXTS)), seed=st.data())
def test_mutated_bundled_specs_lines(name, seed):
    """Lines deleted, duplicated or swapped, as a bad edit would leave them."""
    lines = TEXTS[name].splitlines()
    for _ in range(seed.draw(st.integers(1, 3))):
        if not lines:
            break
        i = seed.draw(st.integers(0, len(lines) - 1))
        op = seed.draw(st.sampled_from(["delete", "duplicate", "swap", "indent", "dedent"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        elif op == "indent":
            lines[i] = "  " + lines[i]
        elif op == "dedent":
            lines[i] = lines[i][2:]
    check("\n".join(lines))


@given(depth=st.integers(1, 2000), kind=st.sampled_from(["[", "{a: ", "- "]))
def test_deep_nesting(depth, kind):
    if kind == "- ":
        text = "a:\n" + "".join("  " * i + "- \n" for i in range(min(depth, 300)))
    else:
        close = "]" if kind == "[" else "}"
        text = "a: " + kind * depth + "1" + close * depth
    check(text)


@given(name=st.sampled_from(sorted(TEXTS)), value=st.one_of(
    st.floats(min_value=1e-6, max_value=1e4), st.integers(-5, 10**9)), key=st.sampled_from(
    ["scaling.width", "scaling.depth", "input.shape[0]", "head.classes", "defaults.drop_connect_rate"]))
def test_overrides_with_extreme_numbers(name, value, key):
    """Huge or tiny multipliers and sizes: a result or a located error, quickly (a network
    past archspec's size bound is refused instead of being lowered for hours)."""
    from archspec.language import load_raw

    try:
        analyze(lower_spec(validate(load_raw(name, [f"{key}={value}"]))))
    except SpecError as exc:
        assert exc.one_line()
