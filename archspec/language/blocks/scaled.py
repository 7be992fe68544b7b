"""The scaled residual of Inception-ResNet (Szegedy et al. 2016, "Inception-v4,
Inception-ResNet and the Impact of Residual Connections on Learning", section 3.3):
``x + scale * body(x)``, the residual branch scaled down by a constant (0.1 to 0.3 in the
paper) before it is added, so that very wide residual networks train stably.

It lowers the body, then one primitive, `scaled_add` (inputs ``[x, body(x)]``, output
``inputs[0] + inputs[1] * scale``): keras.applications' ``CustomScaleLayer(scale)([x, up])``
of InceptionResNetV2, built as archspec's layer of that class name, so that `{auto}` gives
keras' names (``custom_scale_layer``, ``custom_scale_layer_1``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from ..common import BlockBase, Float
from .registry import register

if TYPE_CHECKING:  # the union is built from the registry after every family is imported;
    from . import Block  # blocks/__init__ rebuilds this model with it


class ScaledResidual(BlockBase):
    """``output = x + scale * body(x)`` (Inception-ResNet's scaled residual): the body must
    keep the input's shape (there is no projection shortcut). `scale` 1.0 is still a scaled
    add (one layer), as keras writes InceptionResNetV2's last block."""

    child_fields: ClassVar = (("body", "list"),)
    type: Literal["scaled_residual"]
    body: list["Block"] = Field(min_length=1)
    scale: Float = Field(description="The factor of the body's output before it is added to the input.")
    add_name: str = Field(default="{name}_scaled_add", description=(
        "The scaled add's layer name (Keras' default name, as keras.applications leaves it: \"{auto}\")."))


@register(ScaledResidual)
def lower_scaled_residual(g, b: ScaledResidual, x: str, name: str) -> str:
    y = g.run_body(b.body, x, name, g.current.path + ("body",))
    if tuple(g.shape(x)) != tuple(g.shape(y)):
        raise g.error(f"the body gives shape {tuple(g.shape(y))} but its input is {tuple(g.shape(x))}; a "
                      f"scaled_residual adds them, so the body must keep the shape")
    return g.add("scaled_add", g.layer_name(b.add_name, name), [x, y], scale=float(b.scale))
