"""Block families. Each module defines its blocks' spec models and their lowerings and
registers them; the discriminated union `Block` is built from the registry, so the union
and the registry always agree (a test checks it too).

To add a family: write ``archspec/blocks/<family>.py`` with a model per block type
(``type: Literal["my_block"]``, deriving from `archspec.spec.common.BlockBase`) and a
lowering decorated with ``@register(Model)``. Every module of this package is imported
here, so nothing else needs to change.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Union

from pydantic import Field

from .registry import REGISTRY, Family, register

FAMILY_MODULES = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "registry")
for _m in FAMILY_MODULES:
    importlib.import_module(f"{__name__}.{_m}")

BLOCK_MODELS = tuple(f.model for f in REGISTRY.values())
Block = Annotated[Union[BLOCK_MODELS], Field(discriminator="type")]

__all__ = ["REGISTRY", "Family", "register", "Block", "BLOCK_MODELS"]
