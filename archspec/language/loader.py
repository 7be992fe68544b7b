"""Safe YAML loading with positions, `extends:` and `--set` overrides.

The loader never constructs anything but plain data (mappings, lists, strings, numbers,
booleans, null). It rejects duplicate keys, tags of any kind beyond the plain YAML ones,
merge keys, documents that are not a mapping, and it bounds the file size, the nesting
depth and the size of the data once aliases are expanded, so that a hostile file fails
fast and small ("billion laughs" is refused before anything is expanded).

Every value keeps where it came from (`Location`), keyed by its path inside the
document (a tuple such as ``("stages", 2, "blocks", 0, "filters")``), so that errors
found later (by pydantic or by the shape analysis) can point at a line and column.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import Location, SpecError

MAX_BYTES = 1 << 20  # 1 MiB: the largest bundled spec is a few KiB
MAX_NODES = 50_000  # values after alias expansion
MAX_DEPTH = 64
MAX_EXTENDS = 16

Path_t = tuple  # ("stages", 2, "filters")

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


@dataclass
class RawSpec:
    """A loaded YAML document: plain data plus the location of every value and key."""

    data: dict
    source: str
    positions: dict = field(default_factory=dict)  # path -> Location of the value
    key_positions: dict = field(default_factory=dict)  # path -> Location of the key

    def locate(self, path: tuple) -> Location | None:
        """The closest known location for `path` (walking up to a parent if needed)."""
        path = tuple(path)
        while True:
            if path in self.positions:
                return self.positions[path]
            if not path:
                return Location(self.source)
            path = path[:-1]

    def locate_key(self, path: tuple) -> Location | None:
        return self.key_positions.get(tuple(path)) or self.locate(path)


def format_path(path: tuple) -> str:
    """`("stages", 2, "filters")` -> `stages[2].filters`; a `Named` part (a list item by its
    name, `parse_path`'s) -> `stages[conv5]`."""
    out = ""
    for part in path:
        if isinstance(part, (int, Named)):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _loc(source: str, mark) -> Location:
    return Location(source, mark.line + 1, mark.column + 1)


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader used only to scan, parse and compose; construction is ours. libyaml's
    (when PyYAML has it) composes a spec some 50x faster than the pure-Python parser."""


def read_bounded(path: Path, source: str, limit: int = MAX_BYTES, what: str = "a spec") -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Anything else (a directory, a
    FIFO, a device such as /dev/zero, a socket) is refused before a byte is read, and the read
    itself stops after `limit` + 1 bytes whatever the file claims, so it never blocks or
    fills memory. The file is opened once and checked through that descriptor."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except IsADirectoryError:
        raise SpecError(f"is a directory, not {what} file", Location(source)) from None
    except OSError as exc:
        raise SpecError(f"cannot read {what}: {exc.strerror or exc}", Location(source)) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise SpecError(f"is a directory, not {what} file", Location(source))
        if not stat.S_ISREG(st.st_mode):
            kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                    or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file")
            raise SpecError(f"is {kind}, not a regular file; expected {what} file", Location(source))
        if st.st_size > limit:
            raise SpecError(f"file too large for {what} ({st.st_size} bytes > {limit})", Location(source))
        chunks, total = [], 0
        while total <= limit:
            try:
                chunk = os.read(fd, min(1 << 16, limit + 1 - total))
            except OSError as exc:
                raise SpecError(f"cannot read {what}: {exc.strerror or exc}", Location(source)) from None
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise SpecError(f"file too large for {what} (> {limit} bytes)", Location(source))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_text(path: Path, source: str) -> str:
    return _decode(read_bounded(path, source), source)


def _decode(data: bytes, source: str) -> str:
    if len(data) > MAX_BYTES:
        raise SpecError(f"too large for a spec ({len(data)} bytes > {MAX_BYTES})", Location(source))
    if b"\x00" in data:
        raise SpecError("not a text file (contains NUL bytes); expected a YAML spec", Location(source))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"not a text file (invalid UTF-8 at byte {exc.start}); expected a YAML spec", Location(source)
        ) from None


def loads(text: str | bytes, source: str = "<string>") -> RawSpec:
    """Parse one YAML document into plain data with positions.

    Raises:
        SpecError: for anything that is not a small, plain YAML mapping.
    """
    if isinstance(text, bytes):
        text = _decode(text, source)
    if len(text.encode("utf-8")) > MAX_BYTES:
        raise SpecError(f"too large for a spec (> {MAX_BYTES} bytes)", Location(source))
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        raise SpecError("empty spec; expected a mapping with at least 'name' and 'input'", Location(source, 1, 1))
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        msg = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        loc = _loc(source, mark) if mark else Location(source)
        if "nesting depth" in msg:  # libyaml >= 0.2.5 (PyYAML 6.0.4's wheels) bounds nesting itself
            raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", loc) from None
        plain = indentation_in_words(text, exc) or yaml_problem_in_words(msg)
        raise SpecError(f"invalid YAML: {plain + ' (' + msg + ')' if plain else msg}", loc) from None
    except yaml.reader.ReaderError as exc:
        pos = exc.position if isinstance(exc.position, int) else 0
        line = text.count("\n", 0, pos) + 1
        col = pos - (text.rfind("\n", 0, pos) + 1) + 1
        ch = exc.character if isinstance(exc.character, str) else chr(exc.character)
        raise SpecError(f"invalid YAML: a control character {ch!r} (U+{ord(ch):04X}), which YAML does not allow",
                        Location(source, line, col)) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {' '.join(str(exc).split())}", Location(source)) from None
    except RecursionError:  # PyYAML's pure-Python composer recurses once per nesting level
        raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", Location(source)) from None
    finally:
        loader.dispose()
    if node is None:
        raise SpecError("empty spec; expected a mapping with at least 'name' and 'input'", Location(source, 1, 1))
    if not isinstance(node, yaml.MappingNode):
        kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"  # its text is not quoted
        raise SpecError(f"expected a mapping at the top level (got {kind})", _loc(source, node.start_mark))
    _check_size(node, source)
    raw = RawSpec(data={}, source=source)
    raw.data = _construct(node, (), raw, 0)
    return raw


_YAML_WORDS = (
    ("found character '\\t' that cannot start any token", "a tab: YAML is indented with spaces, never tabs"),
    ("found character that cannot start any token", "a character that cannot start a value here (a tab? YAML is "
                                                    "indented with spaces, never tabs)"),
    ("expected <block end>", "indentation: this line does not line up with the keys above it"),
    ("did not find expected key", "indentation: this line does not line up with the keys above it"),
    ("did not find expected '-' indicator", "indentation: this list item does not line up with the items above it"),
    ("mapping values are not allowed", "a ':' where a value should be (a missing space after ':', "
                                            "or a value that needs quotes?)"),
    ("could not find expected ':'", "a key without ':' (or a line that does not continue the one above)"),
    ("did not find expected ',' or ']'", "an unclosed '[': expected ',' or ']'"),
    ("did not find expected ',' or '}'", "an unclosed '{': expected ',' or '}'"),
    ("found unexpected end of stream", "the file ends inside a quote or a bracket that is not closed"),
    ("found undefined alias", "an alias (*name) with no anchor (&name) before it"),
    ("found duplicate anchor", "the same anchor (&name) is defined twice"),
)


def indentation_in_words(text: str, exc) -> str:
    """For a line that does not line up with the keys (or list items) of the block above it,
    which way to move it: the block starts at PyYAML's context mark, the line's own indent is
    read from the text. '' when the error is not about indentation."""
    msg = f"{exc.context} {exc.problem}"
    what = ("list items" if "'-' indicator" in msg else "keys" if "expected key" in msg or "<block end>" in msg
            else None)
    if what is None or exc.context_mark is None or exc.problem_mark is None:
        return ""
    lines = text.splitlines()
    if exc.problem_mark.line >= len(lines):
        return ""

    def column(line: str) -> int:
        return len(line) - len(line.lstrip(" ")) + 1

    col, block = column(lines[exc.problem_mark.line]), exc.context_mark.column + 1
    above = next((column(ln) for ln in reversed(lines[:exc.problem_mark.line])
                  if ln.strip() and not ln.lstrip().startswith("#")), block)
    if col > above:  # deeper than the line above, whose value is complete
        return (f"indentation: this line starts at column {col}, right of the line above it (column {above}): "
                f"dedent it to column {above}")
    if block < col < above:  # between two levels: it lines up with neither
        return (f"indentation: this line starts at column {col}, between the {what} above it (column {above}) and "
                f"their outer block (column {block}): indent it to column {above}, or dedent it to column {block}")
    return ""


def yaml_problem_in_words(text: str) -> str:
    """A plain first sentence for PyYAML's parser messages, or ''."""
    for needle, words in _YAML_WORDS:
        if needle in text:
            return words
    return ""


def _check_size(root, source: str) -> None:
    """Refuse documents whose alias-expanded size is too large, before expanding anything."""
    memo: dict[int, int] = {}

    def size(node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", _loc(source, node.start_mark))
        key = id(node)
        if key in memo:
            return memo[key]
        memo[key] = MAX_NODES + 1  # a cycle counts as too large
        if isinstance(node, yaml.MappingNode):
            n = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(v, depth + 1) for v in node.value)
        else:
            n = 1
        n = min(n, MAX_NODES + 1)
        if n > MAX_NODES:
            raise SpecError(
                f"document expands to more than {MAX_NODES} values (alias bomb?); refusing to load",
                _loc(source, node.start_mark),
            )
        memo[key] = n
        return n

    size(root, 0)


_scalar_constructor = yaml.SafeLoader("")


def _construct(node, path: tuple, raw: RawSpec, depth: int) -> Any:
    source = raw.source
    raw.positions[path] = _loc(source, node.start_mark)
    if node.tag not in _PLAIN_TAGS:
        raise SpecError(
            f"tag {node.tag!r} is not allowed: a spec is plain YAML (no Python or custom tags)",
            _loc(source, node.start_mark),
            format_path(path) or None,
        )
    if isinstance(node, yaml.MappingNode):
        out: dict = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise SpecError("merge keys ('<<') are not supported in specs; use 'extends:'",
                                _loc(source, key_node.start_mark), format_path(path) or None)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag not in _PLAIN_TAGS:
                raise SpecError("mapping keys must be plain strings", _loc(source, key_node.start_mark),
                                format_path(path) or None)
            key = key_node.value if key_node.tag == "tag:yaml.org,2002:str" else _scalar(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                first = raw.key_positions.get(path + (key,))
                where = f" (first at line {first.line})" if first and first.line else ""
                raise SpecError(f"duplicate key {key!r}{where}", _loc(source, key_node.start_mark),
                                format_path(path + (key,)))
            raw.key_positions[path + (key,)] = _loc(source, key_node.start_mark)
            out[key] = _construct(value_node, path + (key,), raw, depth + 1)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(v, path + (i,), raw, depth + 1) for i, v in enumerate(node.value)]
    return _scalar(node)


def _scalar(node) -> Any:
    return _scalar_constructor.construct_object(node, deep=True)


# ---------------------------------------------------------------- files, names, extends


def bundled_spec_dir() -> Path:
    """The directory of the bundled specs: installed package data, else the source tree."""
    from ..core.package_data import package_data

    return package_data("specs")


def bundled_names() -> list[str]:
    return sorted(p.stem for p in bundled_spec_dir().glob("*.yaml"))


def find_spec(ref: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """Turn a spec reference into a file: a path, the name of a bundled spec, or the
    keras.applications constructor a bundled spec is (its `keras.constructor`).

    `resnet50` finds the bundled `specs/resnet50.yaml`, `InceptionV3` (or `inceptionv3`)
    `specs/inception_v3.yaml`; a path is taken as it is (relative to `relative_to` for
    `extends:`).
    """
    try:
        return find_document(ref, relative_to, bundled_spec_dir(), "spec")
    except SpecError:
        wanted = str(ref).lower()
        for name, constructor in keras_constructors(bundled_spec_dir()).items():
            if constructor.lower() == wanted:
                return bundled_spec_dir() / f"{name}.yaml"
        raise


@functools.lru_cache(maxsize=4)
def keras_constructors(bundled: Path) -> dict[str, str]:
    """{bundled spec name: keras.applications constructor} of the bundled specs whose own
    file says which network it is (`keras: {constructor: ...}`); a spec that only extends
    one (resnet50_cifar100) is not that network."""
    out: dict[str, str] = {}
    for p in sorted(bundled.glob("*.yaml")):
        try:
            twin = loads(p.read_bytes(), p.name).data.get("keras")
        except SpecError:
            continue  # a broken file is reported when it is used, not here
        c = twin.get("constructor") if isinstance(twin, dict) else None
        if isinstance(c, str):
            out[p.stem] = c
    return out


def find_document(ref: str | os.PathLike, relative_to: Path | None, bundled: Path, kind: str) -> Path:
    """A path, or the name of a bundled document of `kind` ("spec", "recipe") in `bundled`."""
    ref_s = str(ref)
    candidates = []
    p = Path(ref_s)
    if relative_to is not None and not p.is_absolute():
        candidates.append(relative_to / p)
    candidates.append(p)
    for c in candidates:
        if c.is_file() or (c.exists() and c.suffix in (".yaml", ".yml")):
            return c
    if re.fullmatch(r"[A-Za-z0-9_.\-]+", ref_s):
        name = ref_s[:-5] if ref_s.endswith(".yaml") else ref_s
        b = bundled / f"{name}.yaml"
        if b.is_file():
            return b
    if p.suffix in (".yaml", ".yml") or os.sep in ref_s:
        raise SpecError("no such file", Location(ref_s))
    import difflib

    names = sorted(q.stem for q in bundled.glob("*.yaml"))
    close = difflib.get_close_matches(ref_s.removesuffix(".yaml"), names, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise SpecError(f"no {kind} file or bundled {kind} named {ref_s!r}{hint}; bundled: {', '.join(names)}",
                    Location(ref_s))


def display_source(path: Path) -> str:
    """How a file is named in messages: relative when under the working directory."""
    try:
        rel = path.resolve().relative_to(Path.cwd().resolve())
        return str(rel)
    except ValueError:
        pass
    try:
        rel = path.resolve().relative_to(bundled_spec_dir().resolve())
        return f"specs/{rel}"
    except ValueError:
        return str(path)


def load_file(ref: str | os.PathLike, relative_to: Path | None = None, find=find_spec,
              extended: bool = False) -> tuple[RawSpec, Path]:
    """Find, read and parse one document. An `extended` one (named by `extends:`) must be a
    .yaml/.yml file, also once links are followed, so that `extends: /etc/passwd` (or a
    .yaml link to it) is refused before anything of it is read."""
    path = find(ref, relative_to)
    source = display_source(path)
    if extended and Path(os.path.realpath(path)).suffix.lower() not in (".yaml", ".yml"):
        raise SpecError("not a YAML document (a spec or recipe file ends in .yaml or .yml"
                        + (", also where its link points" if path.is_symlink() else "") + ")", Location(source))
    return loads(_read_text(path, source), source), path


def merge(base: RawSpec, child: RawSpec) -> RawSpec:
    """Deep-merge `child` over `base`: mappings merge key by key, anything else replaces."""
    out = RawSpec(data=copy.deepcopy(base.data), source=child.source,
                  positions=dict(base.positions), key_positions=dict(base.key_positions))

    def drop_under(prefix: tuple) -> None:
        for table in (out.positions, out.key_positions):
            for k in [k for k in table if k[: len(prefix)] == prefix and len(k) > len(prefix)]:
                del table[k]

    def rec(dst: dict, src: dict, prefix: tuple) -> None:
        for k, v in src.items():
            p = prefix + (k,)
            if isinstance(v, dict) and isinstance(dst.get(k), dict):
                rec(dst[k], v, p)
            else:
                drop_under(p)
                dst[k] = copy.deepcopy(v)
        # positions of the child win
    rec(out.data, child.data, ())
    out.positions.update(child.positions)
    out.key_positions.update(child.key_positions)
    return out


def load_with_extends(ref: str | os.PathLike, find=find_spec) -> RawSpec:
    """Load a spec (or, with `find`, another kind of document) and everything it
    `extends:`, merged, with positions kept."""
    chain: list[Path] = []
    raw, path = load_file(ref, find=find)
    return _apply_extends(raw, path, chain, find)


def _apply_extends(raw: RawSpec, path: Path, chain: list[Path], find=find_spec) -> RawSpec:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(display_source(p) for p in chain + [resolved])
        raise SpecError(f"'extends' cycle: {cycle}", raw.locate(("extends",)), "extends")
    if len(chain) >= MAX_EXTENDS:
        raise SpecError(f"'extends' chain longer than {MAX_EXTENDS}", raw.locate(("extends",)), "extends")
    parent_ref = raw.data.get("extends")
    if parent_ref is None:
        return apply_set(raw)
    if not isinstance(parent_ref, str) or not parent_ref:
        raise SpecError(f"must be the name or path of a spec (got {parent_ref!r})",
                        raw.locate(("extends",)), "extends")
    try:
        base_raw, base_path = load_file(parent_ref, relative_to=path.parent, find=find, extended=True)
    except SpecError as exc:
        not_a_spec = exc.message.startswith(("expected a mapping", "empty spec", "not a text file"))
        if exc.location is not None and exc.location.line is None or not_a_spec:
            raise SpecError(f"cannot extend {parent_ref!r}: {exc.message}", raw.locate(("extends",)),
                            "extends") from None
        raise
    base = _apply_extends(base_raw, base_path, chain + [resolved], find)
    merged = merge(base, raw)
    merged.data.pop("extends", None)
    merged.data["extends"] = parent_ref  # kept as information; resolution already applied it
    return apply_set(merged)  # this document's own edits of what it extends


# ---------------------------------------------------------------- set: and --set

_SEG = re.compile(r"([A-Za-z_][A-Za-z0-9_\-]*)|\[(-?\d+)\]|\[(\+)\]|\[([^\[\]]+)\]")
APPEND = "+"  # `stages[+]`: a new item at the end of the list


class Named(str):
    """A path part that picks the item of a list whose `name` is this (`stages[conv5]`)."""

    def __repr__(self) -> str:
        return f"[{str(self)}]"


def parse_path(text: str) -> tuple:
    """`stages[2].blocks[0].filters` -> ("stages", 2, "blocks", 0, "filters");
    `stages[conv5]` picks the stage named conv5 (a `Named` part), `stages[+]` appends
    (`APPEND`, last part only), `[-1]` is the last item."""
    parts: list = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        if text[pos] == "." and parts:
            pos += 1
        m = _SEG.match(text, pos)
        if not m:
            raise ValueError(f"bad path {text!r} at character {pos + 1}")
        key, index, plus, named = m.groups()
        if key is not None:
            parts.append(key)
        elif index is not None:
            parts.append(int(index))
        elif plus is not None:
            parts.append(Named(APPEND))
        else:
            parts.append(Named(named.strip()))
        pos = m.end()
    if not parts or not isinstance(parts[0], str) or isinstance(parts[0], Named):
        raise ValueError(f"bad path {text!r}")
    if any(p == APPEND and isinstance(p, Named) for p in parts[:-1]):
        raise ValueError(f"bad path {text!r}: [+] appends, so it is the last part of a path")
    return tuple(parts)


def _item_named(node: list, name: str, at: tuple) -> int:
    """The index of the one item of `node` whose `name` is `name`; a located-ready error otherwise."""
    names = [it.get("name") for it in node if isinstance(it, dict)]
    hits = [k for k, it in enumerate(node) if isinstance(it, dict) and it.get("name") == name]
    if len(hits) == 1:
        return hits[0]
    where = format_path(at) or "the top level"
    if hits:
        raise ValueError(f"{len(hits)} items of {where} are named {name!r}; pick one by number ({where}[{hits[0]}])")
    import difflib

    known = [n for n in names if isinstance(n, str)]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(known) if known else "none of its items has a name"
    raise ValueError(f"no item named {name!r} in {where}{hint}; its names: {listed}")


def set_path(data: dict, path: tuple, value: Any) -> tuple:
    """Set `path` (as `parse_path` reads it) in `data` to `value`; returns the path with
    named and appended items as numbers. Raises ValueError, worded for the user."""
    node: Any = data
    done: list = []
    for i, part in enumerate(path):
        last = i == len(path) - 1
        nxt = None if last else path[i + 1]
        if isinstance(part, Named):
            if not isinstance(node, list):
                what = "a mapping" if isinstance(node, dict) else "not a list"
                raise ValueError(f"{format_path(tuple(done)) or 'the top level'} is {what}, so there is no item "
                                 f"[{part}] in it")
            if part == APPEND:
                node.append(value)
                done.append(len(node) - 1)
                return tuple(done)
            part = _item_named(node, str(part), tuple(done))
        if isinstance(part, int):
            if not isinstance(node, list) or not -len(node) <= part < len(node):
                have = f" (it has {len(node)} items)" if isinstance(node, list) else ""
                raise ValueError(f"no item [{part}] at {format_path(tuple(done)) or 'the top level'}{have}")
            part = part % len(node)
            if last:
                node[part] = value
            else:
                node = node[part]
            done.append(part)
            continue
        if not isinstance(node, dict):
            raise ValueError(f"{format_path(tuple(done))} is not a mapping")
        if last:
            node[part] = value
        else:
            indexed = isinstance(nxt, int) or isinstance(nxt, Named)
            if (part not in node or node[part] is None) and indexed:
                import difflib

                close = difflib.get_close_matches(part, [k for k in node if isinstance(k, str)], n=1)
                at = format_path(tuple(done)) or "the top level"
                if close and part not in node:  # a typo, most likely
                    raise ValueError(f"unknown key {part!r} at {at} (did you mean {close[0]!r}?): it holds no "
                                     f"list to index with [{nxt}]")
                raise ValueError(f"{part!r} is not set at {at}, so there is no list to index with [{nxt}]; set "
                                 f"the whole value instead ({format_path(tuple(done) + (part,))}=[...])")
            if part not in node or node[part] is None:
                node[part] = {}
            node = node[part]
        done.append(part)
    return tuple(done)


def _moved(raw: RawSpec, path: tuple, where: Location, src: tuple | None = None) -> None:
    """After `path` was set: its old positions go; the new value is located at `where`
    (an override) or, for a `set:` of the file, its parts where they are written (`src`)."""
    for table in (raw.positions, raw.key_positions):
        old = {k: v for k, v in table.items() if src is not None and k[: len(src)] == src}
        for k in [k for k in table if k[: len(path)] == path]:
            del table[k]
        for k, v in old.items():
            table[path + k[len(src):]] = v
    raw.positions.setdefault(path, where)
    raw.key_positions.setdefault(path, where)


def apply_set(raw: RawSpec) -> RawSpec:
    """A document's own `set:` (the `--set` paths as keys, applied in order after
    `extends:` merged, so a list of the spec it extends is edited without restating it),
    removed from the document. A path that matches nothing is an error at its key."""
    edits = raw.data.get("set")
    if edits is None:
        return raw
    if not isinstance(edits, dict):
        raise SpecError("must be a mapping of paths to values, e.g. {head.classes: 10}", raw.locate(("set",)), "set")
    out = RawSpec(copy.deepcopy(raw.data), raw.source, dict(raw.positions), dict(raw.key_positions))
    del out.data["set"]
    for key, value in edits.items():
        at = ("set", key)
        try:
            path = parse_path(key)
            done = set_path(out.data, path, copy.deepcopy(value))
        except ValueError as exc:
            raise SpecError(str(exc), raw.locate_key(at), f"set.{key}") from None
        _moved(out, done, raw.locate(at), src=at)
    return out


def apply_overrides(raw: RawSpec, overrides: list[str], flag: str = "--set") -> RawSpec:
    """Apply `--set key.path=value` overrides (value read as YAML) to a copy of `raw`;
    errors are located at `flag` and the override."""
    if not overrides:
        return raw
    out = RawSpec(copy.deepcopy(raw.data), raw.source, dict(raw.positions), dict(raw.key_positions))
    for item in overrides:
        where = Location(f"{flag} {item}")
        if "=" not in item:
            raise SpecError("expected KEY=VALUE, e.g. head.classes=10", where)
        key, _, value_text = item.partition("=")
        try:
            path = parse_path(key)
        except ValueError as exc:
            raise SpecError(str(exc), where) from None
        try:
            value = loads(f"v: {value_text}" if value_text.strip() else "v: null", where.source).data["v"]
        except SpecError as exc:
            raise SpecError(f"bad value {value_text!r}: {exc.message}", where) from None
        try:
            done = set_path(out.data, path, value)
        except ValueError as exc:
            raise SpecError(str(exc), where, format_path(path)) from None
        _moved(out, done, where)
    return out
