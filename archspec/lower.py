"""Lowering: a resolved Spec becomes the Graph IR.

Blocks are lowered by their family's function (see `archspec.blocks`), through the
`Builder`, which names each node, infers its shape, parameters and MACs as it is added,
and turns a shape problem into a located `SpecError` that names the layer.
"""

from __future__ import annotations

import string
from typing import Any

from .errors import Location, SpecError
from .graph import BlockInfo, Graph, Node, ShapeError, correct_pad, infer
from .spec.loader import RawSpec, format_path


class Builder:
    """What a block lowering uses to add nodes to the graph."""

    def __init__(self, spec, raw: RawSpec | None = None):
        self.spec = spec
        self.defaults = spec.defaults
        self.raw = raw
        self.nodes: list[Node] = []
        self.index: dict[str, Node] = {}
        self.blocks: list[BlockInfo] = []
        self.current: BlockInfo | None = None
        self.block_index = 0  # 0-based index of the current stage block over the network
        self.total_blocks = 1  # number of stage blocks after repeats
        self.side_outputs: list[tuple[str, float]] = []  # (node, loss weight): extra training outputs

    # ------------------------------------------------------------ bookkeeping
    def begin_block(self, name: str, type_: str, path: tuple) -> None:
        self.current = BlockInfo(name=name, type=type_, path=tuple(path))
        self.blocks.append(self.current)

    def location(self, path: tuple | None = None) -> Location | None:
        path = self.current.path if path is None and self.current else (path or ())
        return self.raw.locate(path) if self.raw else None

    def error(self, message: str, path: tuple | None = None) -> SpecError:
        p = self.current.path if path is None and self.current else (path or ())
        return SpecError(message, self.location(p), format_path(p) or None)

    def shape(self, x: str) -> tuple:
        return self.index[x].shape

    def channels(self, x: str) -> int:
        return self.index[x].shape[-1]

    def add(self, op: str, name: str, inputs: list[str], **attrs: Any) -> str:
        """Add one primitive node; returns its name (the handle later nodes take as input)."""
        if name in self.index:
            raise self.error(f"layer name {name!r} is used twice (check the blocks' name templates)")
        node = Node(name=name, op=op, inputs=list(inputs), attrs=attrs,
                    block=self.current.name if self.current else "",
                    block_type=self.current.type if self.current else "",
                    path=self.current.path if self.current else ())
        if op == "input":
            node.shape = tuple(attrs["shape"])
        else:
            try:
                infer(node, [self.index[i].shape for i in inputs])
            except ShapeError as exc:
                raise self.error(str(exc)) from None
        self.nodes.append(node)
        self.index[name] = node
        if self.current is not None:
            self.current.nodes.append(name)
        return name

    def side_output(self, x: str, loss_weight: float = 1.0) -> None:
        """Make node `x` an extra model output (e.g. an auxiliary classifier), trained with
        `loss_weight`; it follows the main output, in the order the blocks add them."""
        self.side_outputs.append((x, float(loss_weight)))

    # ------------------------------------------------------------ helpers shared by families
    def regularizer(self) -> float | None:
        return self.defaults.weight_decay or None

    def conv(self, x: str, filters: int, kernel, name: str, *, strides=1, padding="same",
             use_bias: bool | None = None, activation: str | None = None, groups: int = 1,
             dilation=1, kernel_initializer=None, bias_initializer=None) -> str:
        return self.add(
            "conv2d", name, [x], filters=int(filters), kernel=_pair(kernel), strides=_pair(strides),
            padding=padding, dilation=_pair(dilation), groups=groups,
            use_bias=self.defaults.conv_bias if use_bias is None else use_bias,
            activation=_act_or_none(activation),
            kernel_initializer=_init(kernel_initializer or self.defaults.kernel_initializer),
            bias_initializer=_init(bias_initializer or self.defaults.bias_initializer),
            kernel_regularizer=self.regularizer(),
        )

    def dwconv(self, x: str, kernel, name: str, *, strides=1, padding="same", depth_multiplier: int = 1,
               use_bias: bool | None = None, activation: str | None = None, initializer=None) -> str:
        return self.add(
            "depthwise_conv2d", name, [x], kernel=_pair(kernel), strides=_pair(strides), padding=padding,
            depth_multiplier=depth_multiplier,
            use_bias=self.defaults.conv_bias if use_bias is None else use_bias,
            activation=_act_or_none(activation),
            depthwise_initializer=_init(initializer or self.defaults.kernel_initializer),
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
                        kernel_initializer=_init(kernel_initializer or self.defaults.dense_initializer),
                        bias_initializer=_init(bias_initializer or self.defaults.bias_initializer),
                        kernel_regularizer=wd,
                        bias_regularizer=wd if self.defaults.bias_decay else None)


def _pair(v) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return (int(v[0]), int(v[1]))
    return (int(v), int(v))


def _pad4(p) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(p, int):
        return ((p, p), (p, p))
    if isinstance(p[0], (list, tuple)):
        return ((int(p[0][0]), int(p[0][1])), (int(p[1][0]), int(p[1][1])))
    return ((int(p[0]), int(p[0])), (int(p[1]), int(p[1])))


def _act_or_none(fn):
    return None if fn in (None, "linear") else fn


def _init(v):
    if v is None or isinstance(v, str):
        return v
    if hasattr(v, "model_dump"):
        return v.model_dump()
    return dict(v)


# ---------------------------------------------------------------- names


class _Fmt(string.Formatter):
    def get_value(self, key, args, kwargs):
        if isinstance(key, str) and key not in kwargs:
            raise KeyError(key)
        return super().get_value(key, args, kwargs)


NAME_FIELDS = ("stage", "s", "i", "j", "letter", "n", "N", "name")


def format_name(template: str, **fields: Any) -> str:
    """Fill a name template; unknown fields are a clear error listing the known ones."""
    try:
        return _Fmt().format(template, **fields)
    except KeyError as exc:
        raise ValueError(f"unknown field {{{exc.args[0]}}} in name template {template!r}; "
                         f"known: {', '.join('{' + f + '}' for f in NAME_FIELDS)}") from None
    except (ValueError, IndexError) as exc:
        raise ValueError(f"bad name template {template!r}: {exc}") from None


def letter(j: int) -> str:
    """0 -> a, 25 -> z, 26 -> ba (keras uses chr(97 + j), which runs out after z)."""
    if j < 26:
        return chr(97 + j)
    return letter(j // 26) + chr(97 + j % 26)


# ---------------------------------------------------------------- the lowering


def lower(spec, raw: RawSpec | None = None) -> Graph:
    """Lower a resolved spec to the Graph IR, with every layer named and counted."""
    from .blocks import REGISTRY

    g = Builder(spec, raw)

    def run(block, x: str, name: str, path: tuple) -> str:
        family = REGISTRY[block.type]
        g.begin_block(name, block.type, path)
        out = family.lower(g, block, x, name)
        if out not in g.index:
            raise RuntimeError(f"lowering of {block.type!r} returned unknown node {out!r}")
        return out

    def name_of(template: str, path: tuple, **fields) -> str:
        try:
            return format_name(template, **fields)
        except ValueError as exc:
            raise SpecError(str(exc), raw.locate(path + ("name",)) if raw else None,
                            format_path(path + ("name",))) from None

    g.begin_block(spec.input.name, "input", ("input",))
    x = g.add("input", spec.input.name, [], shape=tuple(spec.input.shape))
    for k, b in enumerate(spec.input.preprocessing):
        p = ("input", "preprocessing", k)
        x = run(b, x, name_of(b.name or b.type, p), p)

    for k, b in enumerate(spec.stem):
        p = ("stem", k)
        for r in range(b.repeats):
            blk = b if r == 0 else b.for_repeat()
            default = f"stem_{b.type}{k + 1}" + (f"_{r + 1}" if b.repeats > 1 else "")
            x = run(blk, x, name_of(b.name or default, p,
                                     stage="stem", s=0, i=r + 1, j=r, letter=letter(r), n=r, N=r + 1), p)
    stage_outputs = []
    g.total_blocks = sum(b.repeats for st in spec.stages if not st.fixed for b in st.blocks) or 1
    n = 0
    for s, stage in enumerate(spec.stages):
        stage_name = stage.name or f"stage{s + 1}"
        j = 0
        for bi, b in enumerate(stage.blocks):
            p = ("stages", s, "blocks", bi)
            for r in range(b.repeats):
                blk = b if r == 0 else b.for_repeat()
                g.block_index = n
                # a literal block name is the first repeat's; a template names every repeat
                template = b.name if (b.name and (r == 0 or "{" in b.name)) else stage.block_name
                name = name_of(template, p, stage=stage_name, s=s + 1, i=j + 1, j=j, letter=letter(j), n=n, N=n + 1)
                x = run(blk, x, name, p)
                n += 1
                j += 1
        stage_outputs.append(x)
    head = spec.head
    final = x
    if head.include_top:
        for k, b in enumerate(head.layers):
            p = ("head", "layers", k)
            final = run(b, final, name_of(b.name or f"head_{b.type}{k + 1}", p), p)
    elif head.pooling in ("avg", "max"):
        pool_name = head.pooling_name or f"{head.pooling}_pool"
        g.begin_block(pool_name, "global_pool", ("head", "pooling"))
        final = g.add("global_pool", pool_name, [final], mode=head.pooling, keepdims=False)

    outputs: list[str] = []
    if spec.taps == "stages":
        outputs = list(dict.fromkeys(stage_outputs))
    else:
        for k, t in enumerate(spec.taps):
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
