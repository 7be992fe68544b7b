"""Lowering: a resolved Spec becomes the Graph IR.

Blocks are lowered by their family's function (see `archspec.language.blocks`), through the
`Builder`, which names each node, infers its shape, parameters and MACs as it is added,
and turns a shape problem into a located `SpecError` that names the layer.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..core.errors import Location, SpecError
from .graph import BlockInfo, Graph, Node, ShapeError, correct_pad, infer
from ..language import stage_of
from ..language.common import initializer_config
from ..language.loader import RawSpec, format_path
from ..core.units import pair


MAX_LAYERS = 20_000  # the largest bundled network has under 1,000 (EfficientNet-B7: 816)
MAX_NAME = 200  # characters in a layer name (keras has no limit; file systems and ONNX tools do)
# What a network may need, checked while lowering so that validate refuses what could not be
# built (instead of an out-of-memory error at build): 2**31 weights (8 GiB in float32; the
# largest bundled network, VGG-19, has 144M) and 2**31 activation values for one image
# (EfficientNet-B7 at 600x600 has 1.05G).
MAX_DEFINE_DEPTH = 32  # defined blocks inside defined blocks (the bundled specs nest 2)
MAX_PARAMS = 1 << 31
MAX_ACTIVATIONS = 1 << 31


def layer_name_problem(name: str) -> str | None:
    """Why `name` cannot be a Keras layer name, or None. Keras refuses '/' (it separates
    scopes in weight paths); names are also printable, without whitespace other than a plain
    space inside, and at most MAX_NAME characters, so that every file they are written into
    (Python, HTML, CSV, ONNX) stays one well-formed line."""
    if not name or not name.strip():
        return "it is empty"
    if len(name) > MAX_NAME:
        return f"it has {len(name)} characters (at most {MAX_NAME})"
    if "/" in name:
        return "Keras does not allow '/' in layer names"
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        return f"it holds the control character U+{ord(bad):04X}"
    return None


class RefError(Exception):
    """A reference to a name that is not (yet) defined; turned into a located SpecError."""

    def __init__(self, name: str, path: tuple):
        self.name, self.path = name, path


class Builder:
    """What a block lowering uses to add nodes to the graph, and the driver that lowers
    lists of blocks (stem, stages, head, and the children of composition blocks)."""

    def __init__(self, spec, raw: RawSpec | None = None, lenient_refs: bool = False):
        self.spec = spec
        self.defaults = spec.defaults
        self.raw = raw
        self.nodes: list[Node] = []
        self.index: dict[str, Node] = {}
        self.blocks: list[BlockInfo] = []
        self.stack: list[int] = []  # indices in self.blocks of the blocks being lowered
        self.block_outputs: dict[str, str] = {}  # finished block name -> its output node
        self.block_index = 0  # 0-based index of the current stage block over the network
        self.total_blocks = 1  # number of stage blocks after repeats
        self.side_outputs: list[tuple[str, float]] = []  # (node, loss weight): extra training outputs
        # expression environments: the spec's vars, then each defined block's (vars and its params)
        self.envs: list[dict] = [dict(getattr(spec, "vars", None) or {})]
        self.auto_counts: dict[str, int] = {}  # Keras' default-name counter, per layer class
        self.uses: list[tuple[str, tuple]] = []  # (defined type, path of its use), innermost last
        self.lenient_refs = lenient_refs
        self.missing_refs: list[RefError] = []
        self.classifiers = 0  # classifier blocks lowered (the users of head.classes)
        self.params = 0  # running totals, bounded by MAX_PARAMS and MAX_ACTIVATIONS
        self.activations = 0

    # ------------------------------------------------------------ bookkeeping
    @property
    def current(self) -> BlockInfo | None:
        return self.blocks[self.stack[-1]] if self.stack else None

    def begin_block(self, name: str, type_: str, path: tuple) -> None:
        """Start a top-level block (one that is not inside another)."""
        self.stack = []
        self._push(name, type_, path)

    def _push(self, name: str, type_: str, path: tuple) -> None:
        parent = self.stack[-1] if self.stack else None
        self.blocks.append(BlockInfo(name=name, type=type_, path=tuple(path), parent=parent, depth=len(self.stack)))
        self.stack.append(len(self.blocks) - 1)

    def location(self, path: tuple | None = None) -> Location | None:
        path = self.current.path if path is None and self.current else (path or ())
        return self.raw.locate(path) if self.raw else None

    def use_site(self) -> str:
        """' (in block 'x' used at file:line:col)' inside a defined block, else ''."""
        if not self.uses:
            return ""
        t, p = self.uses[-1]
        loc = self.raw.locate(p) if self.raw else None
        return f" (in defined block {t!r} used at {loc or format_path(p)})"

    def error(self, message: str, path: tuple | None = None) -> SpecError:
        p = self.current.path if path is None and self.current else (path or ())
        return SpecError(message + self.use_site(), self.location(p), format_path(p) or None)

    def shape(self, x: str) -> tuple:
        return self.index[x].shape

    def channels(self, x: str) -> int:
        return self.index[x].shape[-1]

    def auto_name(self, op: str, attrs: dict) -> str:
        """Keras' default name for the layer of `op`: its class in snake case, then ``_1``,
        ``_2``, ... as further layers of that class are made, over the whole network."""
        prefix = keras_default_prefix(op, attrs)
        k = self.auto_counts.get(prefix, 0)
        self.auto_counts[prefix] = k + 1
        return prefix if k == 0 else f"{prefix}_{k}"

    def add(self, op: str, name: str, inputs: list[str], **attrs: Any) -> str:
        """Add one primitive node; returns its name (the handle later nodes take as input).
        `{auto}` in `name` becomes Keras' default name of the layer (`auto_name`)."""
        if isinstance(name, str) and AUTO in name:
            name = name.replace(AUTO, self.auto_name(op, attrs))
        if len(self.nodes) >= MAX_LAYERS:
            raise self.error(f"the network has more than {MAX_LAYERS:,} layers; refusing to lower it "
                             f"(a depth multiplier or repeats too large?)")
        problem = layer_name_problem(name) if isinstance(name, str) else "it is not a string"
        if problem:
            raise self.error(f"layer name {name!r:.80} is not allowed: {problem}")
        if name in self.index:
            first = self.raw.locate(self.index[name].path) if self.raw else None
            where = f" (first by the block at {first})" if first and first.line else ""
            raise self.error(f"layer name {name!r} is used twice{where}; check the blocks' names and name templates")
        cur = self.current
        node = Node(name=name, op=op, inputs=list(inputs), attrs=attrs,
                    block=cur.name if cur else "", block_type=cur.type if cur else "",
                    path=cur.path if cur else ())
        if op == "input":
            node.shape = tuple(attrs["shape"])
        else:
            try:
                infer(node, [self.index[i].shape for i in inputs])
            except ShapeError as exc:
                raise self.error(str(exc)) from None
        self.params += node.params
        self.activations += math.prod(d for d in node.shape if isinstance(d, int))
        if self.params > MAX_PARAMS:
            raise self.error(f"the network needs more than {MAX_PARAMS:,} weights ({self.params:,} by layer {name!r}, "
                             f"{node.params:,} of them its own); too large to build (filters, units or kernel "
                             f"sizes too large?)")
        if self.activations > MAX_ACTIVATIONS:
            raise self.error(f"the network computes more than {MAX_ACTIVATIONS:,} values for one image "
                             f"({self.activations:,} by layer {name!r}, output {node.shape}); too large to build "
                             f"(input size, padding or widths too large?)")
        self.nodes.append(node)
        self.index[name] = node
        for b in self.stack:
            self.blocks[b].nodes.append(name)
        return name

    def move_before(self, start: int, end: int) -> None:
        """Move the nodes added after position `end` to position `start` (keras builds a
        residual's shortcut before its body); only when they use nothing in between."""
        moved, between = self.nodes[end:], self.nodes[start:end]
        names = {n.name for n in between}
        if any(i in names for n in moved for i in n.inputs):
            return
        self.nodes[start:] = moved + between
        order = {n.name: k for k, n in enumerate(self.nodes)}
        for b in self.stack:
            self.blocks[b].nodes.sort(key=lambda n: order.get(n, -1))

    def drop_path(self, x: str, name: str) -> str:
        """Stochastic depth on a residual branch: a dropout of whole examples (noise shape
        (N, 1, 1, 1)) at ``defaults.drop_connect_rate * b / B``, b the 0-based index of the
        stage block, B their number, both counting the blocks of stages that are not
        ``fixed`` (keras EfficientNet's linear schedule); a
        rate of 0 adds nothing."""
        rate = self.defaults.drop_connect_rate * self.block_index / self.total_blocks
        if rate <= 0:
            return x
        return self.add("dropout", name, [x], rate=rate, noise_shape=(None, 1, 1, 1))

    def side_output(self, x: str, loss_weight: float = 1.0) -> None:
        """Make node `x` an extra model output (e.g. an auxiliary classifier), trained with
        `loss_weight`; it follows the main output, in the order the blocks add them."""
        self.side_outputs.append((x, float(loss_weight)))

    # ------------------------------------------------------------ names and references
    def fmt(self, template: str, name: str, **fields: Any) -> str:
        """Format a layer-name template (``{name}`` and the given fields, ``${...}``
        expressions over the current environment); a bad template is a located error."""
        cur = self.current.fields if self.current else {}
        try:
            return format_name(template, env=self.envs[-1], **{**cur, **fields, "name": name})
        except ValueError as exc:
            raise self.error(str(exc)) from None

    def layer_name(self, template: str, name: str) -> str:
        """A layer name from a composition block's template: made unique (keras-style
        ``_1``, ``_2``) when the block has no name of its own."""
        out = self.fmt(template, name)
        return out if self.current is None or self.current.explicit else self.unique(out)

    def unique(self, base: str) -> str:
        if base not in self.index and base not in self.block_outputs:
            return base
        k = 1
        while f"{base}_{k}" in self.index or f"{base}_{k}" in self.block_outputs:
            k += 1
        return f"{base}_{k}"

    def ref(self, template: str, path: tuple, fallback: str | None = None, **fields: Any) -> str:
        """The node a reference names: a finished block (its output) or a layer."""
        try:
            name = format_name(template, env=self.envs[-1], **fields)
        except ValueError as exc:
            raise self.error(str(exc), path) from None
        if name in self.block_outputs:
            return self.block_outputs[name]
        if name in self.index:
            return name
        if self.lenient_refs and fallback is not None:
            self.missing_refs.append(RefError(name, path))
            return fallback
        raise RefError(name, path)

    def refs(self, templates: list[str], suffix: tuple = ("inputs",)) -> list[str]:
        cur = self.current
        fields = cur.fields if cur else {}
        base = cur.path if cur else ()
        fallback = self.nodes[-1].name if self.nodes else None
        return [self.ref(t, base + suffix + (k,), fallback, **fields) for k, t in enumerate(templates)]

    def merge(self, op: str, name: str, inputs: list[str], axis: int = -1) -> str:
        if op == "concat":
            return self.add("concat", name, inputs, axis=axis)
        return self.add(op, name, inputs)

    # ------------------------------------------------------------ the driver
    def run_block(self, block, x: str, name: str, path: tuple, *, fields: dict | None = None,
                  explicit: bool = True, top: bool = False) -> str:
        """Lower one block (a registered family or a defined type) on input `x`."""
        from ..language.blocks import REGISTRY, DefinedUse

        if top:
            self.begin_block(name, block.type, path)
        else:
            self._push(name, block.type, path)
        info = self.current
        info.explicit = explicit
        info.fields = dict(fields or {})
        depth = len(self.stack)
        if block.inputs and not type(block).multi_input:
            if len(block.inputs) != 1:
                raise self.error(f"a {block.type!r} block takes one input (got inputs {block.inputs}); "
                                 f"merge several with add, concat or multiply")
            x = self.refs(block.inputs)[0]
        if isinstance(block, DefinedUse):
            out = self.lower_defined(block, x, name, path)
        else:
            out = REGISTRY[block.type].lower(self, block, x, name)
        if out not in self.index:
            raise RuntimeError(f"lowering of {block.type!r} returned unknown node {out!r}")
        if AUTO in name and info.nodes:  # a block named {auto} is named after its first layer
            name = info.name = info.nodes[0]
            for n in info.nodes:
                if self.index[n].block == AUTO or AUTO in self.index[n].block:
                    self.index[n].block = name
        del self.stack[depth - 1:]
        self.block_outputs[name] = out
        return out

    def run_body(self, blocks: list, x: str, scope: str, path: tuple) -> str:
        """Lower a list of child blocks in order; `scope` is the name of the block they sit in."""
        for k, b in enumerate(blocks):
            p = path + (k,)
            for r in range(b.repeats):
                blk = b if r == 0 else b.for_repeat()
                # the enclosing stage block's fields ({stage}, {s}, {n}, {N}), this list's scope
                # as {name}, and this block's repeat as {i}, {j}, {letter}
                outer = self.current.fields if self.current else {}
                fields = {**outer, "name": scope, "i": r + 1, "j": r, "letter": letter(r)}
                if b.name:
                    name = self.name_at(b.name, p, **fields)
                    if r and not _is_template(b.name):
                        name = f"{name}_{r + 1}"
                    explicit = True
                elif b.child_fields:
                    name, explicit = scope, self.current.explicit if self.current else True
                else:
                    name, explicit = self.unique(f"{scope}_{b.type}"), False
                x = self.run_block(blk, x, name, p, fields=fields, explicit=explicit)
        return x

    def name_at(self, template: str, path: tuple, **fields: Any) -> str:
        try:
            return format_name(template, env=self.envs[-1], **fields)
        except ValueError as exc:
            raise SpecError(str(exc) + self.use_site(), self.raw.locate(path + ("name",)) if self.raw else None,
                            format_path(path + ("name",))) from None

    def with_stride(self, blocks: list, stride: int | None) -> list:
        """`blocks` with `stride` given to the first block that has one (nested ones included)."""
        from ..language.blocks import DefinedUse

        if stride is None:
            return blocks
        out = list(blocks)
        for k, b in enumerate(out):
            if isinstance(b, DefinedUse):
                d = self.spec.define.get(b.type)
                if d is not None and "stride" in d.params:
                    out[k] = b.model_copy(update={"stride": stride})
                    return out
            elif "stride" in type(b).model_fields and type(b).takes_outer_stride:
                out[k] = b.model_copy(update={"stride": stride})
                return out
        raise self.error(f"stride {stride} given, but no block of the body takes a stride")

    def lower_defined(self, use, x: str, name: str, path: tuple) -> str:
        """Instantiate a defined block: params, expressions evaluated on this input, body validated and lowered."""
        from ..language.expr import ExprError
        from ..language.expand import conditional, drop_positions
        from ..language import validate_blocks

        d = self.spec.define[use.type]  # known, complete and acyclic: check_defined ran in lower()
        params = dict(d.params)
        params.update(use.params)
        if use._repeat and "stride" in d.params:
            params["stride"] = 1
        env = {**self.envs[0], **params, "in_channels": self.channels(x), "in_shape": list(self.shape(x))}
        body_path = ("define", use.type, "body")
        if len(self.uses) >= MAX_DEFINE_DEPTH:
            chain = " -> ".join(t for t, _ in self.uses[:3]) + " -> ... -> " + use.type
            raise SpecError(f"defined blocks nested more than {MAX_DEFINE_DEPTH} deep ({chain})",
                            self.raw.locate(path) if self.raw else None, format_path(path))
        self.uses.append((use.type, path))
        outer_raw = self.raw
        try:
            dropped: set = set()  # items whose `if:` is false here
            try:
                body = conditional(d.body, env, body_path, lambda k: k in ("name", "inputs"), dropped)
            except ExprError as exc:
                raise SpecError(str(exc) + self.use_site(), self.raw.locate(exc.path) if self.raw else None,
                                format_path(exc.path)) from None
            if dropped and self.raw is not None:  # the body's positions, as it is lowered here
                self.raw = drop_positions(self.raw, dropped)
            blocks = validate_blocks(body, self.raw, body_path, suffix=self.use_site())
            self.envs.append(env)
            try:
                return self.run_body(blocks, x, name, body_path)
            finally:
                self.envs.pop()
        finally:
            self.raw = outer_raw
            self.uses.pop()

    # ------------------------------------------------------------ helpers shared by families
    def regularizer(self) -> float | None:
        return self.defaults.weight_decay or None

    def conv(self, x: str, filters: int, kernel, name: str, *, strides=1, padding="same",
             use_bias: bool | None = None, activation: str | None = None, groups: int = 1,
             dilation=1, kernel_initializer=None, bias_initializer=None) -> str:
        return self.add(
            "conv2d", name, [x], filters=int(filters), kernel=pair(kernel), strides=pair(strides),
            padding=padding, dilation=pair(dilation), groups=groups,
            use_bias=self.defaults.conv_bias if use_bias is None else use_bias,
            activation=_act_or_none(activation),
            kernel_initializer=initializer_config(kernel_initializer or self.defaults.kernel_initializer),
            bias_initializer=initializer_config(bias_initializer or self.defaults.bias_initializer),
            kernel_regularizer=self.regularizer(),
        )

    def dwconv(self, x: str, kernel, name: str, *, strides=1, padding="same", depth_multiplier: int = 1,
               use_bias: bool | None = None, activation: str | None = None, initializer=None) -> str:
        return self.add(
            "depthwise_conv2d", name, [x], kernel=pair(kernel), strides=pair(strides), padding=padding,
            depth_multiplier=depth_multiplier,
            use_bias=self.defaults.conv_bias if use_bias is None else use_bias,
            activation=_act_or_none(activation),
            depthwise_initializer=initializer_config(initializer or self.defaults.kernel_initializer),
            depthwise_regularizer=self.regularizer(),
        )

    def bn(self, x: str, name: str, *, epsilon: float | None = None, momentum: float | None = None,
           center: bool | None = None, scale: bool | None = None) -> str:
        d = self.defaults.batch_norm
        return self.add("batch_norm", name, [x],
                        epsilon=d.epsilon if epsilon is None else epsilon,
                        momentum=d.momentum if momentum is None else momentum,
                        center=d.center if center is None else center,
                        scale=d.scale if scale is None else scale)

    def act(self, x: str, fn: str | None, name: str) -> str:
        """An activation layer; `linear` or None adds nothing."""
        fn = _act_or_none(fn)
        if fn is None:
            return x
        return self.add("activation", name, [x], fn=fn)

    def pad(self, x: str, padding, name: str, kernel=None) -> str:
        if padding == "correct":
            padding = correct_pad(self.shape(x)[:2], kernel or 3)
        return self.add("zero_padding", name, [x], padding=_pad4(padding))

    def dense(self, x: str, units: int, name: str, *, activation: str | None = None,
              use_bias: bool = True, kernel_initializer=None, bias_initializer=None) -> str:
        wd = self.regularizer()
        return self.add("dense", name, [x], units=int(units), activation=_act_or_none(activation),
                        use_bias=use_bias,
                        kernel_initializer=initializer_config(kernel_initializer or self.defaults.dense_initializer),
                        bias_initializer=initializer_config(bias_initializer or self.defaults.bias_initializer),
                        kernel_regularizer=wd,
                        bias_regularizer=wd if self.defaults.bias_decay else None)


def _pad4(p) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(p, int):
        return ((p, p), (p, p))
    if isinstance(p[0], (list, tuple)):
        return ((int(p[0][0]), int(p[0][1])), (int(p[1][0]), int(p[1][1])))
    return ((int(p[0]), int(p[0])), (int(p[1]), int(p[1])))


def _act_or_none(fn):
    return None if fn in (None, "linear") else fn


# ---------------------------------------------------------------- names


NAME_FIELDS = ("stage", "s", "i", "j", "letter", "n", "N", "name", "auto")
AUTO = "{auto}"  # kept by format_name: the layer's Keras default name, given when it is added

#: Keras' class of each op, as Keras' auto-naming spells it (its class name in snake case);
#: tests/test_optable.py checks each against the class the op table builds and Keras' own naming
KERAS_DEFAULT_PREFIX = {
    "input": "input_layer", "conv2d": "conv2d", "depthwise_conv2d": "depthwise_conv2d",
    "separable_conv2d": "separable_conv2d", "dense": "dense", "batch_norm": "batch_normalization",
    "layer_norm": "layer_normalization", "normalization": "normalization", "rescaling": "rescaling",
    "layer_scale": "layer_scale", "lrn": "local_response_normalization", "activation": "activation",
    "add": "add", "multiply": "multiply", "concat": "concatenate", "max_pool": "max_pooling2d",
    "avg_pool": "average_pooling2d", "zero_padding": "zero_padding2d", "dropout": "dropout", "flatten": "flatten",
    "reshape": "reshape", "identity": "identity", "upsample": "up_sampling2d", "cropping": "cropping2d",
    "conv_transpose2d": "conv2d_transpose", "group_norm": "group_normalization",
    "scaled_add": "custom_scale_layer",
}


def keras_default_prefix(op: str, attrs: dict) -> str:
    """The snake-case class name Keras names an unnamed layer of `op` after."""
    if op == "activation" and attrs.get("fn") == "relu6":
        return "re_lu"  # layers.ReLU(6.0)
    if op == "global_pool":
        return "global_average_pooling2d" if attrs.get("mode", "avg") == "avg" else "global_max_pooling2d"
    return KERAS_DEFAULT_PREFIX.get(op, op)


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SIMPLE = re.compile(r"(?:[^{}]|\{[A-Za-z_][A-Za-z0-9_]*\})*")


def _is_template(t: str) -> bool:
    return "{" in t


def format_name(template: str, env: dict | None = None, **fields: Any) -> str:
    """Fill a name template: ``${...}`` expressions first (over `env` and the fields),
    then ``{field}``; unknown fields are a clear error listing the known ones."""
    if "${" in template:
        from ..language.expr import ExprError, render

        try:
            template = str(render(template, {**(env or {}), **fields}))
        except ExprError as exc:
            raise ValueError(f"in name template {template!r}: {exc}") from None
    if "{" not in template:
        return template
    known = ', '.join('{' + f + '}' for f in NAME_FIELDS)
    if not _SIMPLE.fullmatch(template):  # no attributes, indexing or format specs: {field} only
        raise ValueError(f"name templates take only {{field}} (known: {known}); got {template!r}")

    def one(m):
        if m.group(1) == "auto":  # filled in when the layer is added, from its class
            return AUTO
        if m.group(1) not in fields:
            raise KeyError(m.group(1))
        return str(fields[m.group(1)])
    try:
        return _FIELD.sub(one, template)
    except KeyError as exc:
        raise ValueError(f"unknown field {{{exc.args[0]}}} in name template {template!r}; known: {known}") from None


def letter(j: int) -> str:
    """0 -> a, 25 -> z, 26 -> ba (keras uses chr(97 + j), which runs out after z)."""
    if j < 26:
        return chr(97 + j)
    return letter(j // 26) + chr(97 + j % 26)


# ---------------------------------------------------------------- the lowering


def lower(spec, raw: RawSpec | None = None) -> Graph:
    """Lower a resolved spec to the Graph IR, with every layer named and counted."""
    try:
        return _lower(spec, raw)
    except RefError as ref:
        raise _reference_error(spec, raw, ref) from None


def _reference_error(spec, raw, ref: RefError) -> SpecError:
    """An undefined reference, or one to something that comes later: lower again with
    unresolved references taking the previous output, to tell which."""
    loc = raw.locate(ref.path) if raw else None
    later = None
    try:
        g = _lower(spec, raw, lenient=True, keep=True)
        later = g.block_outputs.get(ref.name) or (ref.name if ref.name in g.index else None)
        names = list(g.block_outputs) + list(g.index)
    except (SpecError, RefError):
        names = []
    if later is not None:
        where = raw.locate(g.index[later].path) if raw else None
        return SpecError(f"{ref.name!r} is defined later (at {where or 'a later block'}); a block can only "
                         f"take the output of an earlier one", loc, format_path(ref.path))
    from ..language.define import suggest

    return SpecError(f"no layer or block named {ref.name!r}{suggest(ref.name, names)}", loc, format_path(ref.path))


def _lower(spec, raw: RawSpec | None = None, lenient: bool = False, keep: bool = False):
    if spec.define:  # validate() checked them; a Spec made in Python may not have been
        from ..language.define import check_defined

        check_defined(spec, raw)
    g = Builder(spec, raw, lenient_refs=lenient)

    def name_of(template: str, path: tuple, **fields) -> str:
        return g.name_at(template, path, **fields)

    g.begin_block(spec.input.name, "input", ("input",))
    x = g.add("input", spec.input.name, [], shape=tuple(spec.input.shape))
    for k, b in enumerate(spec.input.preprocessing):
        p = ("input", "preprocessing", k)
        x = g.run_block(b, x, name_of(b.name or b.type, p), p, top=True)

    for k, b in enumerate(spec.stem):
        p = ("stem", k)
        for r in range(b.repeats):
            blk = b if r == 0 else b.for_repeat()
            default = f"stem_{b.type}{k + 1}" + (f"_{r + 1}" if b.repeats > 1 else "")
            fields = dict(stage="stem", name="stem", s=0, i=r + 1, j=r, letter=letter(r), n=r, N=r + 1)
            x = g.run_block(blk, x, name_of(b.name or default, p, **fields), p, fields=fields, top=True)
    stage_outputs = []
    # stochastic depth's b / B: both over the same list, the stage blocks of stages that are
    # not `fixed` (a fixed stage's block keeps the rate of the block before it)
    g.total_blocks = sum(b.repeats for st in spec.stages if not st.fixed for b in st.blocks) or 1
    n = 0
    dropped = 0
    for s, stage in enumerate(spec.stages):
        stage_name = stage_of(spec, ("stages", s))
        j = 0
        for bi, b in enumerate(stage.blocks):
            p = ("stages", s, "blocks", bi)
            for r in range(b.repeats):
                blk = b if r == 0 else b.for_repeat()
                g.block_index = dropped
                # a literal block name is the first repeat's; a template names every repeat
                template = b.name if (b.name and (r == 0 or "{" in b.name)) else stage.block_name
                fields = dict(stage=stage_name, name=stage_name, s=s + 1, i=j + 1, j=j, letter=letter(j), n=n, N=n + 1)
                name = name_of(template, p, **fields)
                x = g.run_block(blk, x, name, p, fields=fields, top=True)
                n += 1
                j += 1
                dropped += not stage.fixed
        stage_outputs.append(x)
    head = spec.head
    final = x
    if head.include_top:
        for k, b in enumerate(head.layers):
            p = ("head", "layers", k)
            final = g.run_block(b, final, name_of(b.name or f"head_{b.type}{k + 1}", p), p, top=True)
        head_raw = raw.data.get("head") if raw is not None else None
        given = isinstance(head_raw, dict) and "classes" in head_raw
        if given and not g.classifiers and not lenient:
            raise SpecError(f"is {head.classes}, but the head has no classifier block to give it to "
                            f"(add {{type: classifier}} to head.layers, or remove head.classes)",
                            raw.locate(("head", "classes")), "head.classes")
    elif head.pooling in ("avg", "max"):
        pool_name = head.pooling_name or f"{head.pooling}_pool"
        g.begin_block(pool_name, "global_pool", ("head", "pooling"))
        final = g.add("global_pool", pool_name, [final], mode=head.pooling, keepdims=False)
    if keep:
        return g

    outputs: list[str] = []
    if spec.taps == "stages":
        outputs = list(dict.fromkeys(stage_outputs))
    else:
        for k, t in enumerate(spec.taps):
            if t not in g.index:
                t = g.block_outputs.get(t, t)
            if t not in g.index:
                raise SpecError(f"tap {t!r} names no layer of this network", raw.locate(("taps", k)) if raw else None,
                                f"taps[{k}]")
            outputs.append(t)
    taps = list(outputs)
    if not outputs or head.include_top or head.pooling in ("avg", "max"):
        if final not in outputs:
            outputs.append(final)
    meta = {"taps": taps}
    if g.side_outputs:
        # the main output weighs 1, each side output its own weight (Keras' compile(loss_weights=...))
        meta["loss_weights"] = {final: 1.0}
        for o, w in g.side_outputs:
            outputs.append(o)
            meta["loss_weights"][o] = w
    graph = Graph(name=spec.name, nodes=g.nodes, outputs=outputs, blocks=g.blocks, meta=meta)
    graph.prune()
    return graph
