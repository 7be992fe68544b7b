"""One registry maps a block `type` to its spec model and its lowering.

A block family module defines a pydantic model with a ``type: Literal["..."]`` tag and a
lowering function ``lower(g: Builder, block, x: str, name: str) -> str`` that adds
primitive nodes to the graph and returns the name of the block's output node, and joins
them with ``@register(Model)``.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Family:
    type: str
    model: type
    lower: Callable
    module: str


REGISTRY: dict[str, Family] = {}


def type_tag(model: type) -> str:
    ann = model.model_fields["type"].annotation
    args = typing.get_args(ann)
    if typing.get_origin(ann) is not typing.Literal or len(args) != 1:
        raise TypeError(f"{model.__name__}.type must be a Literal with one value")
    return args[0]


def register(model: type):
    """Decorator: register `model` (a BlockBase subclass) with the decorated lowering."""

    def deco(fn: Callable) -> Callable:
        tag = type_tag(model)
        if tag in REGISTRY:
            raise ValueError(f"block type {tag!r} registered twice")
        REGISTRY[tag] = Family(tag, model, fn, fn.__module__)
        return fn

    return deco
