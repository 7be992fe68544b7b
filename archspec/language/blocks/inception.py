"""GoogLeNet / Inception v1 (Szegedy et al., 2014, "Going Deeper with Convolutions").

`inception`: the module with dimension reductions (the paper's Figure 2b, Table 1
columns): four branches on the same input, concatenated along channels:

- ``b1``: 1x1 conv;
- ``b3_reduce``: 1x1 conv, then ``b3``: 3x3 conv;
- ``b5_reduce``: 1x1 conv, then ``b5``: 5x5 conv;
- 3x3/1 max pool, then ``pool_proj``: 1x1 conv.

Every conv has a bias and a ReLU (fused into the conv layer). Node names follow the
reference Caffe model (bvlc_googlenet) with ``/`` written as ``_``:
``{name}_1x1, {name}_3x3_reduce, {name}_3x3, {name}_5x5_reduce, {name}_5x5,
{name}_pool, {name}_pool_proj, {name}_output`` (the concatenation).

`aux_classifier`: the auxiliary classifier the paper attaches after 4a and 4d (section 5):
5x5/3 average pool, 1x1 conv 128 + ReLU, flatten, FC 1024 + ReLU, dropout 0.7, FC
`head.classes` + softmax. It is a side branch: the main path goes through the block
unchanged. It is built only when the spec sets ``head.aux: true`` (``--set head.aux=true``)
and the head is included; then the model gets one extra output per aux block (after the
main output, in network order), and ``Graph.meta["loss_weights"]`` maps each output name
to its loss weight (1.0 for the main output, `loss_weight` = 0.3 for each auxiliary one).
Off (the default), it adds nothing: the inference network of the paper.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..common import Activation, BlockBase, Bool, Float, PosInt, Rate
from .registry import register


class Inception(BlockBase):
    """An Inception v1 module (with 1x1 dimension reductions)."""

    width_fields = ("b1", "b3_reduce", "b3", "b5_reduce", "b5", "pool_proj")
    type: Literal["inception"]
    b1: PosInt = Field(description="#1x1: filters of the 1x1 branch.")
    b3_reduce: PosInt = Field(description="#3x3 reduce: the 1x1 conv before the 3x3.")
    b3: PosInt = Field(description="#3x3: filters of the 3x3 conv.")
    b5_reduce: PosInt = Field(description="#5x5 reduce: the 1x1 conv before the 5x5.")
    b5: PosInt = Field(description="#5x5: filters of the 5x5 conv.")
    pool_proj: PosInt = Field(description="pool proj: the 1x1 conv after the 3x3/1 max pool.")
    activation: Activation | None = Field(default=None, description="Default: defaults.activation.")
    bias: Bool | None = Field(default=None, description="Default: defaults.conv_bias.")


@register(Inception)
def lower_inception(g, b: Inception, x: str, name: str) -> str:
    fn = b.activation or g.defaults.activation

    def conv(inp, filters, kernel, suffix):
        return g.conv(inp, filters, kernel, f"{name}_{suffix}", padding="same", use_bias=b.bias, activation=fn)

    br1 = conv(x, b.b1, 1, "1x1")
    br3 = conv(conv(x, b.b3_reduce, 1, "3x3_reduce"), b.b3, 3, "3x3")
    br5 = conv(conv(x, b.b5_reduce, 1, "5x5_reduce"), b.b5, 5, "5x5")
    pool = g.add("max_pool", f"{name}_pool", [x], pool=(3, 3), strides=(1, 1), padding="same")
    brp = conv(pool, b.pool_proj, 1, "pool_proj")
    return g.add("concat", f"{name}_output", [br1, br3, br5, brp])


class AuxClassifier(BlockBase):
    """GoogLeNet's auxiliary classifier: a training-only side output (see the module doc)."""

    width_fields = ("filters", "units")
    type: Literal["aux_classifier"]
    pool: PosInt = 5
    pool_stride: PosInt = 3
    filters: PosInt = Field(default=128, description="The 1x1 conv's filters.")
    units: PosInt = Field(default=1024, description="The hidden FC layer's units.")
    dropout: Rate = 0.7
    loss_weight: Float = Field(default=0.3, ge=0, description="Weight of this output's loss in training.")
    activation: Activation | None = Field(default=None, description="Default: defaults.activation.")


@register(AuxClassifier)
def lower_aux_classifier(g, b: AuxClassifier, x: str, name: str) -> str:
    head = g.spec.head
    if not (head.aux and head.include_top):
        return x  # off: the block adds nothing and the main path passes through
    fn = b.activation or g.defaults.activation
    y = g.add("avg_pool", f"{name}_ave_pool", [x], pool=(b.pool, b.pool), strides=(b.pool_stride, b.pool_stride),
              padding="valid")
    y = g.conv(y, b.filters, 1, f"{name}_conv", padding="same", activation=fn)
    y = g.add("flatten", f"{name}_flatten", [y])
    y = g.dense(y, b.units, f"{name}_fc", activation=fn)
    if b.dropout > 0:
        y = g.add("dropout", f"{name}_drop_fc", [y], rate=b.dropout, noise_shape=None)
    y = g.dense(y, head.classes, f"{name}_classifier", activation=head.classifier_activation)
    g.index[y].attrs["float32"] = True
    g.side_output(y, b.loss_weight)
    return x
