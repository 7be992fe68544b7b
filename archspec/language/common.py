"""Reusable constrained types and the base classes every spec model derives from."""

from __future__ import annotations

import re
import typing
from typing import Annotated, Any, ClassVar, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

def _no_text(v):
    """Numbers and booleans are written as such: ``filters: "256"`` (a string) is an error,
    as the JSON Schema says, instead of being converted silently."""
    if isinstance(v, str):
        raise ValueError(f"must be true or false, not a string (got {v!r}); remove the quotes")
    return v


_EXPONENT = re.compile(r"\s*([-+]?\d+(?:\.\d*)?)[eE]([-+]?)(\d+)\s*")


def _number(v):
    if isinstance(v, str):
        m = _EXPONENT.fullmatch(v)
        if m:  # YAML 1.1 reads 1e12, 1e-5 and 1.0e12 as text, quoted or not
            mant = m.group(1) if "." in m.group(1) else m.group(1) + ".0"
            raise ValueError(f"must be a number, but YAML reads {v.strip()!r} as text: write "
                             f"{mant}e{m.group(2) or '+'}{m.group(3)} (YAML's exponent needs a '.' and a sign)")
        try:
            float(v)
        except ValueError:
            raise ValueError(f"must be a number, not a string (got {v!r})") from None
        raise ValueError(f"must be a number, not a string (got {v!r}); remove the quotes")
    if isinstance(v, bool):
        raise ValueError(f"must be a number, not true/false (got {v!r})")
    return v


Int = Annotated[int, BeforeValidator(_number)]
Float = Annotated[float, BeforeValidator(_number)]
Bool = Annotated[bool, BeforeValidator(_no_text)]
# Upper bounds, so that no count or size reaches Keras that it could not build (or that would
# fill memory first): every positive count or size of a spec or a recipe (filters, units,
# classes, kernel, stride, pool, input sides, repeats, batch size, epochs...) is at most
# MAX_COUNT; a non-negative one (paddings, a seed) at most MAX_NONNEG (a numpy seed's range).
# What a whole network needs is bounded by the lowering (archspec.ir.lower.MAX_PARAMS, MAX_ACTIVATIONS).
MAX_COUNT = 1 << 20  # 1,048,576
MAX_NONNEG = (1 << 32) - 1
# constraints next to the type (not around the validator), so the JSON Schema keeps them


def _count(low: str, bound: int):
    """`_number`, then a float past any integer's range (``1.0e+20``) said as the bound it
    breaks, rather than as pydantic's 'unable to parse input string as an integer,
    exceeded maximum size'."""
    def check(v):
        v = _number(v)
        if isinstance(v, float) and abs(v) >= 2**63 and abs(v) != float("inf"):
            raise ValueError(f"must be <= {bound} (got {v:g})" if v > 0 else f"must be {low} (got {v:g})")
        return v
    return check


PosInt = Annotated[int, Field(gt=0, le=MAX_COUNT), BeforeValidator(_count("> 0", MAX_COUNT))]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_NONNEG), BeforeValidator(_count(">= 0", MAX_NONNEG))]
PosFloat = Annotated[float, Field(gt=0), BeforeValidator(_number)]
Rate = Annotated[float, Field(ge=0, lt=1), BeforeValidator(_number)]
Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.\-{}]+$")]
Pair = tuple[PosInt, PosInt]
IntOrPair = Union[PosInt, Pair]
Padding = Literal["same", "valid"]
# ((top, bottom), (left, right)), a single int for all sides, or "correct" (keras' correct_pad)
PadSpec = Union[NonNegInt, tuple[NonNegInt, NonNegInt], tuple[tuple[NonNegInt, NonNegInt], tuple[NonNegInt, NonNegInt]], Literal["correct"]]

Activation = Literal[
    "relu", "relu6", "swish", "silu", "sigmoid", "softmax", "tanh", "gelu", "elu", "selu",
    "leaky_relu", "hard_sigmoid", "hard_swish", "hard_silu", "softplus", "linear", "mish",
]
ACTIVATIONS: tuple[str, ...] = typing.get_args(Activation)  # the same names, as a tuple


class InitializerSpec(BaseModel):
    """A Keras initializer written as keras serializes it: ``{class_name, config}``."""

    model_config = ConfigDict(extra="forbid")
    class_name: str
    config: dict[str, Any] = {}


Initializer = Union[str, InitializerSpec]


class Strict(BaseModel):
    """Base of every spec model: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class BlockBase(Strict):
    """Fields every block type shares.

    `name` is the block's name or a template of it, formatted with:
    ``{stage}`` the stage's name, ``{s}`` the stage number (1-based), ``{i}`` / ``{j}`` the
    block's index inside the stage (1-based / 0-based), ``{letter}`` ``a, b, c...``,
    ``{n}`` / ``{N}`` the block's index over the whole network (0-based / 1-based).
    """

    # Which integer fields hold channel counts that width scaling multiplies.
    width_fields: ClassVar[tuple[str, ...]] = ()

    name: str | None = Field(default=None, max_length=200)
    repeats: PosInt = 1
    rounding: Literal["divisible", "truncate", "truncate_divisible"] | None = Field(
        default=None, description="Overrides scaling.rounding for this block's filters.")
    min_filters: PosInt | None = Field(
        default=None, description="Width scaling never goes below this (MobileNetV2's last conv).")
    inputs: list[str] | None = Field(
        default=None, min_length=1, description=(
            "Names of earlier layers or blocks this block takes instead of the previous output "
            "(templates allowed). add/concat/multiply merge them."))

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v):
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    # The block's children, as (field, kind) pairs: kind "list" (a list of blocks) or
    # "lists" (a list of lists of blocks); composition blocks set this.
    child_fields: ClassVar[tuple[tuple[str, str], ...]] = ()
    # add/concat/multiply: the lowering resolves `inputs` itself (several of them)
    multi_input: ClassVar[bool] = False
    #: a stage's (or sequence's) `stride` goes to the first block of its body that has a
    #: `stride` and downsamples with it (a transposed conv upsamples: it is passed over)
    takes_outer_stride: ClassVar[bool] = True

    def children(self):
        """(path suffix, list of blocks) for every list of child blocks."""
        for f, kind in self.child_fields:
            v = getattr(self, f)
            if kind == "list" and isinstance(v, list):
                yield (f,), v
            elif kind == "lists" and isinstance(v, list):
                for i, branch in enumerate(v):
                    yield (f, i), branch

    def for_repeat(self) -> "BlockBase":
        """The block as used for the 2nd and later repeats: stride 1."""
        if "stride" in type(self).model_fields and getattr(self, "stride") != 1:
            return self.model_copy(update={"stride": 1})
        return self


def initializer_config(v):
    """An initializer as written (a name, or a mapping / model with `class_name` and
    `config`) as the plain value the IR and Keras take."""
    if v is None or isinstance(v, str):
        return v
    if hasattr(v, "model_dump"):
        return v.model_dump()
    return dict(v)
