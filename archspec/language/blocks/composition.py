"""Composition blocks and merge primitives: how a spec writes a topology without Python.

- ``sequence``: a group of blocks that repeats as one unit.
- ``residual``: ``post(shortcut(x) + body(x))``, with an automatic projection shortcut
  and stochastic depth (``drop_path``) on the network-wide linear schedule.
- ``parallel``: branches from one input, merged by concat / add / multiply.
- ``add``, ``concat``, ``multiply``: merge the layers named in ``inputs``.

Children are lowered by the driver (`Builder.run_body`): an unnamed composition block
takes its parent's name, so it does not change its children's names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal, Union

from pydantic import Field

from ..common import BlockBase, Bool, Int, PosInt
from .registry import register

if TYPE_CHECKING:  # the union is built from the registry after every family is imported;
    from . import Block  # blocks/__init__ rebuilds these models with it


class _Composition(BlockBase):
    stride: PosInt | None = Field(default=None, description=(
        "Given, it replaces the stride of the first block of the body that has one, in the first "
        "repeat only (later repeats get 1)."))

    def for_repeat(self):
        if self.stride is not None and self.stride != 1:
            return self.model_copy(update={"stride": 1})
        return self


class Sequence(_Composition):
    """A group of blocks that repeats as one unit."""

    child_fields: ClassVar = (("body", "list"),)
    type: Literal["sequence"]
    body: list["Block"] = Field(min_length=1)


@register(Sequence)
def lower_sequence(g, b: Sequence, x: str, name: str) -> str:
    path = g.current.path
    return g.run_body(g.with_stride(b.body, b.stride), x, name, path + ("body",))


class Residual(_Composition):
    """``output = post(shortcut(x) + body(x))``."""

    child_fields: ClassVar = (("body", "list"), ("shortcut", "list"), ("post", "list"))
    type: Literal["residual"]
    body: list["Block"] = Field(min_length=1)
    shortcut: Union[Literal["auto", "identity", "projection"], list["Block"]] = Field(
        default="auto", description=(
            "auto: identity when the body keeps the shape, else a 1x1 conv + batch norm; "
            "projection: always that; identity: never; or a list of blocks."))
    post: list["Block"] = Field(default_factory=list, description="Blocks after the add.")
    optional: Bool = Field(default=False, description=(
        "When the body changes the shape, leave out the shortcut and the add: the block is then its body "
        "(keras' MobileNetV2/V3 add the input only at stride 1 and the same width)."))
    drop_path: Bool = Field(default=False, description=(
        "Stochastic depth on the body, at defaults.drop_connect_rate * b / B (b: index of the stage block)."))
    add_name: str = "{name}_add"
    drop_name: str = "{name}_drop"
    shortcut_conv_name: str = "{name}_0_conv"
    shortcut_bn_name: str = "{name}_0_bn"
    shortcut_bias: Bool | None = Field(default=None, description="Default: defaults.conv_bias.")


def _stride_for(h_in: int, h_out: int) -> int | None:
    """The stride s of a 1x1 'valid' conv that maps h_in to h_out (ceil(h_in / s) == h_out)."""
    for s in range(1, h_in + 1):
        if -(-h_in // s) == h_out:
            return s
    return None


@register(Residual)
def lower_residual(g, b: Residual, x: str, name: str) -> str:
    path = g.current.path
    inp, in_shape = x, g.shape(x)
    start = len(g.nodes)
    y = g.run_body(g.with_stride(b.body, b.stride), x, name, path + ("body",))
    body_end = len(g.nodes)
    out_shape = g.shape(y)
    if b.optional and tuple(in_shape) != tuple(out_shape):
        return g.run_body(b.post, y, name, path + ("post",)) if b.post else y
    if b.drop_path:
        y = g.drop_path(y, g.layer_name(b.drop_name, name))
    sc = b.shortcut
    if isinstance(sc, list):
        s = g.run_body(sc, inp, name, path + ("shortcut",)) if sc else inp
    elif sc == "identity" or (sc == "auto" and tuple(in_shape) == tuple(out_shape)):
        s = inp
    else:
        if len(in_shape) != 3 or len(out_shape) != 3:
            raise g.error(f"a projection shortcut needs (H, W, C) shapes (input {tuple(in_shape)}, "
                          f"body output {tuple(out_shape)})")
        sh, sw = _stride_for(in_shape[0], out_shape[0]), _stride_for(in_shape[1], out_shape[1])
        if sh is None or sw is None:
            raise g.error(f"the shortcut cannot project input {tuple(in_shape)} to the body's output "
                          f"{tuple(out_shape)} with a strided 1x1 conv")
        s = g.conv(inp, out_shape[2], 1, g.layer_name(b.shortcut_conv_name, name), strides=(sh, sw),
                   padding="valid", use_bias=b.shortcut_bias)
        s = g.bn(s, g.layer_name(b.shortcut_bn_name, name))
    if s != inp:
        g.move_before(start, body_end)  # keras builds the shortcut first
    if tuple(g.shape(s)) != tuple(g.shape(y)):
        raise g.error(f"the shortcut gives shape {tuple(g.shape(s))} but the body gives {tuple(g.shape(y))}; "
                      f"they cannot be added (use shortcut: auto or projection)")
    out = g.add("add", g.layer_name(b.add_name, name), [s, y])
    return g.run_body(b.post, out, name, path + ("post",)) if b.post else out


class Parallel(BlockBase):
    """Branches from the same input, merged; an empty branch ``[]`` is the input itself."""

    child_fields: ClassVar = (("branches", "lists"),)
    type: Literal["parallel"]
    branches: list[list["Block"]] = Field(min_length=2)
    merge: Literal["concat", "add", "multiply"] = "concat"
    axis: Int = Field(default=-1, description="Concatenation axis (concat only); -1: channels.")
    merge_name: str = "{name}_{merge}"


@register(Parallel)
def lower_parallel(g, b: Parallel, x: str, name: str) -> str:
    path = g.current.path
    outs = []
    for i, branch in enumerate(b.branches):
        outs.append(g.run_body(branch, x, name, path + ("branches", i)) if branch else x)
    return g.merge(b.merge, g.layer_name(b.merge_name.replace("{merge}", b.merge), name), outs, axis=b.axis)


class _Merge(BlockBase):
    multi_input: ClassVar = True
    inputs: list[str] = Field(min_length=1, description=(
        "Layers or blocks to merge; with one name, the previous output is merged with it."))


class Add(_Merge):
    type: Literal["add"]


class Concat(_Merge):
    type: Literal["concat"]
    axis: Int = -1


class Multiply(_Merge):
    type: Literal["multiply"]


@register(Add)
@register(Concat)
@register(Multiply)
def lower_merge(g, b: _Merge, x: str, name: str) -> str:
    refs = g.refs(b.inputs, ("inputs",))
    ins = [x] + refs if len(refs) == 1 else refs
    return g.merge(b.type, name, ins, axis=getattr(b, "axis", -1))


COMPOSITION_MODELS = (Sequence, Residual, Parallel)

