"""Graph -> a standalone, readable Keras 3 Python file (no TensorFlow or Keras imported here).

The generated file depends on `keras` only (`keras.layers` / `keras.ops`, so it runs on the
TensorFlow, JAX and PyTorch backends) and builds the same model as `archspec build`: the same
layers with the same names, configurations and order. It is written from the graph, never by
lowering the spec again, so it is exactly what was analysed.

How the graph becomes code:

- Every top-level block (the stem's, the stages' and the head's blocks) becomes one call of
  a function named after its block type. Instances of one type that differ in structure
  (ResNet's first block of a stage has a projection shortcut, the others do not) get one
  function per structure: ``bottleneck``, ``bottleneck_2``, ...
- A function's body is one line per layer. A layer argument equal in every instance of the
  function is written as a literal; one that differs becomes a parameter (``filters``,
  ``strides``, ...), an integer multiple of another parameter an expression
  (``4 * filters``). Layer names are ``f"{name}_suffix"`` of the block's name.
- Each layer is written from its op's entry in the op table (`backends.optable`), which
  `keras_build.make_layer` instantiates, keyword arguments equal to Keras' defaults left out.
"""

from __future__ import annotations

import builtins
import json
import keyword
import os
import re
import textwrap
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

from ..core.errors import ArchspecError
from ..ir.graph import Graph, Node
from .optable import MERGE_OPS, PRIMITIVES, REQUIRED

#: names the generated module defines or imports: a block function must not take one
_RESERVED = {"keras", "layers", "ops", "build_model", "LocalResponseNormalization", "LayerScale", "CustomScaleLayer",
             "inputs", "outputs", "x", "name", "classes", "include_top", "input_shape", "pooling", "features"}
_BUILTINS = set(dir(builtins))

_CLASSES = "classes"  # the argument text of the classifier's width: build_model's `classes`
_CLASSES_SHAPE = "(classes,)"


class _Code(str):
    """Python source text, written as is (a literal is rendered with `_lit`)."""


class _Constants:
    """Module-level constants for long literals (initializer configs): each distinct text
    once, named after the argument that takes it (KERNEL_INITIALIZER, ..._2)."""

    def __init__(self):
        self.names: dict[str, str] = {}

    def use(self, key: str, text: str) -> str:
        if not text.startswith("{"):
            return text
        if text not in self.names:
            base = _identifier(key, "value").upper()
            name, k = base, 1
            while name in self.names.values():
                k += 1
                name = f"{base}_{k}"
            self.names[text] = name
        return self.names[text]

    def lines(self) -> list[str]:
        return [f"{name} = {text}" for text, name in self.names.items()]


def _lit(v: Any) -> str:
    """A Python literal of an attribute value (strings in double quotes)."""
    if isinstance(v, _Code):
        return str(v)
    if v is None or isinstance(v, bool):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, tuple):
        return "(" + ", ".join(_lit(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, list):
        return "[" + ", ".join(_lit(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_lit(k)}: {_lit(x)}" for k, x in v.items()) + "}"
    raise ArchspecError(f"codegen cannot write the attribute value {v!r} ({type(v).__name__}) as Python")


def _reg(v) -> Any:
    return _Code(f"keras.regularizers.L2({v!r})") if v else None


_REQUIRED = _Code("<required>")


@dataclass
class _Arg:
    """An argument of a layer constructor: its keyword, its value, whether it is written
    positionally, and Keras' default (a keyword argument equal to it is left out)."""

    key: str
    value: Any
    positional: bool = False
    default: Any = _REQUIRED

    @property
    def text(self) -> str:
        return _lit(self.value)

    def omitted(self, text: str) -> bool:
        return not self.positional and self.default is not _REQUIRED and text == _lit(self.default)


def _layer(node: Node) -> tuple[str, list[_Arg]]:
    """The Keras class and constructor arguments of one node: its op's entry in the op table
    (`backends.optable`), which `keras_build.make_layer` instantiates."""
    entry = PRIMITIVES.get(node.op)
    if entry is None or not callable(entry.layer):
        raise ArchspecError(f"codegen has no Keras layer for op {node.op!r} (layer {node.name!r})")
    cls, args = entry.layer(node.attrs)
    return cls, [_Arg(a.key, _reg(a.value) if a.kind == "regularizer" else a.value, a.positional,
                      _REQUIRED if a.default is REQUIRED else a.default) for a in args]


# ---------------------------------------------------------------- blocks and their structure


@dataclass
class _Instance:
    """One top-level block as lowered: its nodes, the tensors it takes and those it gives."""

    name: str
    type: str
    head: bool
    nodes: list[Node]
    inputs: list[str]  # node names from before the block, in order of first use
    outputs: list[str]  # its nodes used after it (or outputs of the network)
    layers: list[tuple[str, list[_Arg], tuple]] = field(default_factory=list)  # class, args, name form
    signature: tuple = ()
    function: "_Function | None" = None


@dataclass
class _Param:
    """A parameter of a block function: its values at the calls, the layer argument it gives."""

    name: str
    values: tuple  # one text per instance
    key: str = ""  # the argument it gives


@dataclass
class _Function:
    """The function of the blocks of one type and one structure, and how each is called."""

    name: str
    type: str
    instances: list[_Instance]
    params: list[_Param] = field(default_factory=list)  # in order of first use
    body: list[str] = field(default_factory=list)
    signature: str = ""
    doc: str = ""
    uses_classes: bool = False
    uses_name: bool = False
    consts: "_Constants" = field(default_factory=lambda: _Constants())

    def call(self, inst: _Instance, args: list[str]) -> str:
        k = next(i for i, other in enumerate(self.instances) if other is inst)
        kw = [f"{p.name}={self.consts.use(p.key, p.values[k])}" for p in self.params]
        if self.uses_classes:
            kw.append("classes=classes")
        if self.uses_name:
            kw.append(f"name={json.dumps(inst.name)}")
        return f"{self.name}({', '.join(args + kw)})"


def _identifier(text: str, fallback: str) -> str:
    """An ASCII identifier made of `text`'s letters and digits (callers keep it off keywords)."""
    s = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")
    if not s:
        s = fallback
    if s[0].isdigit():
        s = f"{fallback}_{s}"
    return s


def _instances(graph: Graph) -> list[_Instance]:
    pos = {n.name: i for i, n in enumerate(graph.nodes)}
    top = [b for b in graph.blocks if b.depth == 0 and b.type != "input"]
    covered = {n for b in top for n in b.nodes} | {n.name for n in graph.inputs}
    missing = [n.name for n in graph.nodes if n.name not in covered]
    if missing:
        raise ArchspecError(f"codegen: layers outside every top-level block: {missing[:5]} (a bug in archspec)")
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(graph.nodes):
        for src in n.inputs:
            consumers.setdefault(src, []).append(i)
    out = []
    for b in top:
        nodes = sorted((graph.node(n) for n in b.nodes), key=lambda n: pos[n.name])
        if [pos[n.name] for n in nodes] != list(range(pos[nodes[0].name], pos[nodes[0].name] + len(nodes))):
            raise ArchspecError(f"codegen: the layers of block {b.name!r} are not consecutive (a bug in archspec)")
        own = {n.name for n in nodes}
        inputs = list(dict.fromkeys(src for n in nodes for src in n.inputs if src not in own))
        last = pos[nodes[-1].name]
        outputs = [n.name for n in nodes
                   if n.name in graph.outputs or any(c > last for c in consumers.get(n.name, []))]
        out.append(_Instance(b.name, b.type, bool(b.path) and b.path[0] == "head", nodes, inputs, outputs))
    return out


def _classifier_nodes(graph: Graph) -> tuple[int | None, set[str]]:
    """The classifier's width (head.classes) and the names of the layers that have it."""
    classes = None
    for b in graph.blocks:
        if b.depth == 0 and b.type == "classifier" and b.path and b.path[0] == "head":
            for name in b.nodes:
                n = graph.node(name)
                if n.op == "dense":
                    classes = n.attrs["units"]
                elif n.op == "conv2d" and classes is None:
                    classes = n.attrs["filters"]
            break
    if classes is None:
        return None, set()
    marked = set()
    for b in graph.blocks:
        if b.type not in ("classifier", "aux_classifier"):
            continue
        for name in b.nodes:
            n = graph.node(name)
            if b.type == "aux_classifier" and not name.endswith("_classifier"):
                continue
            if (n.op == "dense" and n.attrs["units"] == classes) or \
                    (n.op == "conv2d" and n.attrs["filters"] == classes) or \
                    (n.op == "reshape" and tuple(n.attrs["target_shape"]) == (classes,)):
                marked.add(name)
    return classes, marked


def _describe(inst: _Instance, marked: set[str]) -> None:
    """Each layer's class, arguments and name form; the instance's structural signature."""
    own = {n.name: k for k, n in enumerate(inst.nodes)}
    sig = []
    for n in inst.nodes:
        cls, args = _layer(n)
        if n.name in marked:
            for arg in args:
                if arg.key in ("units", "filters"):
                    arg.value = _Code(_CLASSES)
                elif arg.key == "target_shape":
                    arg.value = _Code(_CLASSES_SHAPE)
        if n.name == inst.name:
            form = ("name", "")
        elif n.name.startswith(inst.name):
            form = ("name", n.name[len(inst.name):])
        else:
            form = ("literal",)
        wiring = tuple(("node", own[s]) if s in own else ("in", inst.inputs.index(s)) for s in n.inputs)
        inst.layers.append((cls, args, form))
        sig.append((cls, tuple((a.key, a.positional) for a in args), form, wiring))
    inst.signature = (tuple(sig), len(inst.inputs), tuple(own[o] for o in inst.outputs))


def _as_int(text: str) -> int | None:
    return int(text) if re.fullmatch(r"-?\d+", text) else None


def _multiple(v: tuple, u: tuple) -> int | None:
    """c when v == c * u (integers, 2 <= c <= 8, the same c for every instance): ResNet's
    ``4 * filters``; a larger factor reads better as a parameter of its own."""
    vi, ui = [_as_int(t) for t in v], [_as_int(t) for t in u]
    if None in vi or None in ui or 0 in ui or vi[0] % ui[0]:
        return None
    c = vi[0] // ui[0]
    return c if 2 <= c <= 8 and all(a == c * b for a, b in zip(vi, ui)) else None


def _name_parts(names: list[str]) -> tuple[str, str, list[str]]:
    """The common start and end of names (cut at a separator) and the part of each between."""
    pre = os.path.commonprefix(names)
    post = os.path.commonprefix([n[len(pre):][::-1] for n in names])[::-1]
    cut = max((i + 1 for i, c in enumerate(pre) if not c.isalnum()), default=0)
    pre = pre[:cut]
    cut = min((i for i, c in enumerate(post) if not c.isalnum()), default=len(post))
    post = post[cut:]
    return pre, post, [n[len(pre):len(n) - len(post)] for n in names]


def _make_function(name: str, instances: list[_Instance], consts: _Constants) -> _Function:
    """The function of instances that share one structure: parameters, then the body."""
    fn = _Function(name, instances[0].type, instances, consts=consts)
    first = instances[0]
    n_nodes = len(first.nodes)
    # each (layer, argument) slot: its text in every instance
    slots: dict[tuple, tuple] = {}
    name_parts: dict[int, tuple[str, str]] = {}  # layer -> the common start and end of its names
    for k in range(n_nodes):
        for j, _ in enumerate(first.layers[k][1]):
            slots[(k, j)] = tuple(inst.layers[k][1][j].text for inst in instances)
        if first.layers[k][2] == ("literal",):
            names = [inst.nodes[k].name for inst in instances]
            if len(set(names)) == 1:
                slots[(k, "name")] = (json.dumps(names[0]),)
            else:  # the part that differs is a parameter: f"stage_{tag}_conv"
                pre, post, parts = _name_parts(names)
                name_parts[k] = (pre, post)
                slots[(k, "name")] = tuple(p if re.fullmatch(r"0|[1-9]\d*", p) else json.dumps(p) for p in parts)
    varying = {s: v for s, v in slots.items() if len(set(v)) > 1}

    def key_of(slot):
        k, j = slot
        return "tag" if j == "name" else first.layers[k][1][j].key

    def suffix_of(slot):
        form = first.layers[slot[0]][2]
        return form[1] if form[0] == "name" else first.nodes[slot[0]].name

    # parameters: one per distinct vector of values of one argument key; a vector that is an
    # integer multiple of another one of that key is an expression of it
    by_key: dict[str, list[tuple]] = {}
    for slot, v in varying.items():
        vs = by_key.setdefault(key_of(slot), [])
        if v not in vs:
            vs.append(v)
    expr_of: dict[tuple, str] = {}
    params: dict[tuple, _Param] = {}
    taken = set(_RESERVED) | {"x%d" % i for i in range(2, 10)}
    for key, vectors in by_key.items():
        ordered = sorted(vectors, key=lambda v: (_as_int(v[0]) is None, _as_int(v[0]) or 0))
        bases: list[tuple] = []
        derived: dict[tuple, tuple[int, tuple]] = {}
        for v in ordered:
            for u in (bases if key != "tag" else []):
                c = _multiple(v, u)
                if c:
                    derived[v] = (c, u)
                    break
            else:
                bases.append(v)
        base_key = key
        for u in bases:
            if len(bases) == 1:
                pname = base_key
            else:
                slot = next(s for s, v in varying.items() if key_of(s) == key and v == u)
                pname = f"{base_key}_{suffix_of(slot)}"
            pname = _identifier(pname, "p")
            while pname in taken or keyword.iskeyword(pname):
                pname += "_"
            taken.add(pname)
            params[u + (key,)] = _Param(pname, u, key)
            expr_of[u + (key,)] = pname
        for v, (c, u) in derived.items():
            expr_of[v + (key,)] = f"{c} * {expr_of[u + (key,)]}"
    # parameters in order of first use
    seen = []
    for slot, v in varying.items():
        p = params.get(v + (key_of(slot),))
        if p is not None and p not in seen:
            seen.append(p)
    fn.params = seen

    def arg_text(slot) -> str:
        v = slots[slot]
        return expr_of[v + (key_of(slot),)] if slot in varying else v[0]

    # the body: one line per layer; variables by liveness (a dead input's variable is reused)
    ins = ["x"] + [f"x{i}" for i in range(2, len(first.inputs) + 1)]
    sig_nodes = first.signature[0]
    last_use = {}
    for k, (_, _, _, wiring) in enumerate(sig_nodes):
        for w in wiring:
            last_use[w] = k
    out_idx = first.signature[2]
    for o in out_idx:
        last_use[("node", o)] = n_nodes  # returned
    var: dict[tuple, str] = {("in", i): v for i, v in enumerate(ins)}
    live_names = set(ins)
    fresh = iter(["y"] + [f"y{i}" for i in range(2, 1000)])
    lines = []
    for k, (cls, _, form, wiring) in enumerate(sig_nodes):
        args = []
        for j, arg in enumerate(first.layers[k][1]):
            text = consts.use(arg.key, arg_text((k, j)))
            if not (k, j) in varying and arg.omitted(text):
                continue
            if text in (_CLASSES, _CLASSES_SHAPE):
                fn.uses_classes = True
            args.append(text if arg.positional else f"{arg.key}={text}")
        if form[0] == "name":
            fn.uses_name = True
            suffix = form[1].replace("{", "{{").replace("}", "}}")
            args.append("name=name" if not suffix else f"name=f{json.dumps('{name}' + suffix)}")
        elif k in name_parts:
            pre, post = (t.replace("{", "{{").replace("}", "}}") for t in name_parts[k])
            args.append(f"name=f{json.dumps(pre + '{' + arg_text((k, 'name')) + '}' + post)}")
        else:
            args.append(f"name={arg_text((k, 'name'))}")
        in_vars = [var[w] for w in wiring]
        call_in = "[" + ", ".join(in_vars) + "]" if first.nodes[k].op in MERGE_OPS else in_vars[0]
        dead = [var[w] for w in wiring if last_use.get(w) == k]
        if dead:
            target = "x" if "x" in dead else dead[0]
        else:
            target = next(v for v in fresh if v not in live_names)
        live_names.add(target)
        var[("node", k)] = target
        lines.append(f"{target} = {cls}({', '.join(args)})({call_in})")
    rets = [var[("node", o)] for o in out_idx]
    lines.append("return " + ", ".join(rets))
    fn.body = [_wrap(line, 4) for line in lines]
    params = ins + [p.name for p in fn.params] + (["classes"] if fn.uses_classes else []) + \
        (["name"] if fn.uses_name else [])
    fn.signature = _wrap(f"{name}({', '.join(params)})", 4, 106)
    return fn


def _functions(instances: list[_Instance], consts: _Constants) -> list[_Function]:
    groups: dict[str, list[tuple]] = {}  # type -> signatures in order of first appearance
    members: dict[tuple, list[_Instance]] = {}
    for inst in instances:
        sigs = groups.setdefault(inst.type, [])
        key = (inst.type, inst.signature)
        if key not in members:
            sigs.append(key)
            members[key] = []
        members[key].append(inst)
    used = set(_RESERVED) | _BUILTINS | set(keyword.kwlist)
    fns = []
    for t, keys in groups.items():
        base = _identifier(t, "block")
        if base in used:
            base += "_block"
        for v, key in enumerate(keys):
            name = base if v == 0 else f"{base}_{v + 1}"
            while name in used:
                name += "_"
            used.add(name)
            fn = _make_function(name, members[key], consts)
            names = [inst.name for inst in members[key]]
            shown = ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")
            kind = f" (structure {v + 1} of {len(keys)} of this type)" if len(keys) > 1 else ""
            fn.doc = textwrap.fill(_text(f"`{t}` block{'s' if len(names) > 1 else ''}{kind}: {shown}."), 100,
                                   initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False)[4:]
            for inst in members[key]:
                inst.function = fn
            fns.append(fn)
    return fns


# ---------------------------------------------------------------- the model function


def _model_body(graph: Graph, instances: list[_Instance]) -> dict:
    """build_model's lines: the body's block calls, the head's, and the outputs of each case.

    A block's output used only by the next block (or the last of the body or of the head)
    is `x`; one used further on (a reference, a tap, a side output) gets a variable named
    after its layer.
    """
    input_name = graph.inputs[0].name
    body = [inst for inst in instances if not inst.head]
    head = [inst for inst in instances if inst.head]
    if head and instances[len(body):] != head:
        raise ArchspecError("codegen: head blocks before the end of the network (a bug in archspec)")
    uses: dict[str, list[int]] = {}
    for i, inst in enumerate(instances):
        for s in inst.inputs:
            uses.setdefault(s, []).append(i)
    n = len(instances)
    section_end = {len(body) - 1, n - 1}
    taken = set(_RESERVED) | set(_BUILTINS) | {inst.function.name for inst in instances if inst.function}

    def last_use(t: str) -> int:
        return n if t in graph.outputs else max(uses.get(t, [-1]))

    def emit(group: list[_Instance], offset: int, var: dict, live: set) -> list[str]:
        lines = []
        for i, inst in enumerate(group, start=offset):
            args = [var[s] for s in inst.inputs]
            dying = {var[s] for s in inst.inputs if last_use(s) <= i} - {"inputs"}
            live -= dying
            targets = []
            for o in inst.outputs:
                short = set(uses.get(o, [])) <= {i + 1} and (o not in graph.outputs or
                                                            (i in section_end and o == inst.outputs[-1]))
                if short and "x" not in live:
                    t = "x"
                else:
                    t = _identifier(o, "t")
                    while t in taken or keyword.iskeyword(t):
                        t += "_"
                    taken.add(t)
                targets.append(t)
                live.add(t)
                var[o] = t
            lines.append(f"{', '.join(targets)} = {inst.function.call(inst, args)}")
        return lines

    var: dict[str, str] = {input_name: "inputs"}
    live = {"inputs"}
    body_lines = emit(body, 0, var, live)
    features = body[-1].outputs[-1] if body else input_name
    features_var = var[features]
    head_var = dict(var)
    head_lines = emit(head, len(body), head_var, set(live))
    head_names = {nd.name for inst in head for nd in inst.nodes}
    taps = [t for t in graph.meta.get("taps", []) if t in graph.outputs and t not in head_names]
    side = [o for o in graph.outputs if o not in taps and o not in head_names and o != features]
    tap_vars, side_vars = [var[t] for t in taps], [var[o] for o in side]
    name = json.dumps(graph.name)
    feature_lines = [f"features = {features_var}",
                     'if pooling == "avg":',
                     '    features = layers.GlobalAveragePooling2D(name="avg_pool")(features)',
                     'elif pooling == "max":',
                     '    features = layers.GlobalMaxPooling2D(name="max_pool")(features)']
    if not tap_vars and not side_vars:
        feature_lines.append(f"return keras.Model(inputs, features, name={name})")
    else:
        if tap_vars:
            first = f"[{', '.join(tap_vars)}] + ([features] if pooling else [])"
        else:
            first = "[features]"
        feature_lines.append(f"outputs = {first}" + (f" + [{', '.join(side_vars)}]" if side_vars else ""))
        feature_lines.append(f"return keras.Model(inputs, outputs[0] if len(outputs) == 1 else outputs, name={name})")
    top = [head_var[o] for o in graph.outputs]
    return {"input_literal": json.dumps(input_name), "body": [_wrap(ln, 4) for ln in body_lines],
            "head": [_wrap(ln, 8) for ln in head_lines], "features": features_var,
            "top_output": top[0] if len(top) == 1 else "[" + ", ".join(top) + "]",
            "feature_lines": feature_lines, "has_head": bool(head)}


def _scan(text: str):
    """(index, character, bracket depth after it) of each character of Python source text
    outside string literals."""
    depth, quote, i = 0, None, 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\":
                i += 1
            elif c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        else:
            depth += (c in "([{") - (c in ")]}")
            yield i, c, depth
        i += 1


def _split_args(text: str) -> list[str]:
    """Top-level comma-separated parts of an argument list (brackets and strings respected)."""
    cuts = [i for i, c, depth in _scan(text) if c == "," and depth == 0]
    parts = [text[a + 1:b].strip() for a, b in zip([-1, *cuts], [*cuts, len(text)])]
    return [p for p in parts if p]


def _wrap(line: str, indent: int, width: int = 110) -> str:
    """A long `target = f(args)(inputs)` line (or a `f(args)` signature) broken into lines
    of arguments under its first parenthesis, each at most `width` where possible."""
    if indent + len(line) <= width or "(" not in line:
        return line
    head, rest = line.split("(", 1)
    # the parenthesis that closes the first one
    close = next((i for i, c, depth in _scan(rest) if c in ")]}" and depth < 0), None)
    if close is None:
        return line
    args, tail = _split_args(rest[:close]), rest[close:]
    pad = " " * (indent + 4)
    lines, cur = [], ""
    for k, arg in enumerate(args):
        piece = arg + ("," if k < len(args) - 1 else "")
        if cur and len(pad) + len(cur) + 1 + len(piece) > width:
            lines.append(cur)
            cur = piece
        else:
            cur = f"{cur} {piece}" if cur else piece
    lines.append(cur + tail)
    return head + "(\n" + "\n".join(pad + ln for ln in lines)


# ---------------------------------------------------------------- the file


def _text(s) -> str:
    """Text from the spec (names, types, its reference, its path) made safe to write into a
    comment or a docstring of the generated file: one line, and every backslash and double
    quote escaped, so nothing in it can end the docstring or the line and become code."""
    return " ".join(str(s).split()).replace("\\", "\\\\").replace('"', '\\"')


def _reference(ref) -> str:
    """The spec's `reference` on one line (a mapping as `key: value, ...`)."""
    if not ref:
        return ""
    if isinstance(ref, dict):
        return _text(", ".join(f"{k}: {v}" for k, v in ref.items()))
    return _text(ref)


def generate(spec: "str | os.PathLike | Any | Graph", overrides: list[str] | None = None, *,
             source: str | None = None) -> str:
    """The standalone Keras 3 source of a spec's network.

    Args:
        spec: a spec file, a bundled spec's name, a `Spec` or a lowered `Graph`.
        overrides: `--set`-style overrides (with a file or a name only).
        source: how the header names the spec (default: the spec reference and overrides).

    Returns:
        The Python source of a module whose `build_model()` builds the same `keras.Model` as
        `archspec build` of the spec: the same layers, names, configurations and weights' order.

    Raises:
        SpecError: the spec is invalid.
        ArchspecError: overrides with a `Graph`, or a graph codegen cannot write.
    """
    from ..core.version import __version__

    if isinstance(spec, Graph):
        if overrides:
            raise ArchspecError(f"overrides {overrides!r} apply to a spec; pass its path or name, not a Graph")
        graph = spec
    else:
        from ..ir.pipeline import lower_spec

        graph = lower_spec(spec, overrides)
    if source is None:
        ref = graph.name if isinstance(spec, Graph) or not isinstance(spec, (str, os.PathLike)) else os.fspath(spec)
        source = " ".join([ref] + [f"--set {o}" for o in overrides or []])
    if len(graph.inputs) != 1:
        raise ArchspecError(f"codegen writes networks with one input (got {len(graph.inputs)})")
    classes, marked = _classifier_nodes(graph)
    instances = _instances(graph)
    for inst in instances:
        _describe(inst, marked)
    consts = _Constants()
    functions = _functions(instances, consts)
    model = _model_body(graph, instances)
    custom = {n.op for n in graph.nodes} & {"lrn", "layer_scale", "scaled_add"}
    from ..core.templates import render

    text = render(
        "codegen.py.j2", graph=graph, source=_text(source), version=__version__, functions=functions, model=model,
        classes=classes, input_shape=_lit(tuple(graph.inputs[0].shape)), lrn="lrn" in custom,
        layer_scale="layer_scale" in custom, scaled_add="scaled_add" in custom, n_layers=len(graph.nodes),
        sha=graph.meta.get("spec_sha256") or "-",
        reference=_reference(graph.meta.get("reference")), name_literal=json.dumps(graph.name),
        head_names=_text(", ".join(i.name for i in instances if i.head)),
        constants=consts.lines(), padded=any(n.op == "zero_padding" for n in graph.nodes),
        features_name=_text(next((i.name for i in reversed(instances) if not i.head), graph.inputs[0].name)))
    return text


def write_code(spec, overrides: list[str] | None = None, output=None, *, force: bool = False) -> tuple[Path | None, str]:
    """`archspec codegen`: the source of `generate`, written atomically to `output` (a `.py`
    file, checked before any work; an existing one replaced only with `force`) when given.
    Returns (the path written or None, the source)."""
    from ..core.atomic import check_output, write_text_atomic
    from ..core.errors import Location, SpecError

    out = check_output(output, force) if output else None
    if out is not None and out.suffix != ".py":
        raise SpecError("the output of codegen must end in .py", Location(str(out)))
    code = generate(spec, overrides)
    if out is not None:
        write_text_atomic(out, code, force=force)
    return out, code
