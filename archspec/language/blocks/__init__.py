"""Block families. Each module defines its blocks' spec models and their lowerings and
registers them; the discriminated union `Block` is built from the registry, so the union
and the registry always agree (a test checks it too).

To add a family: write ``archspec/language/blocks/<family>.py`` with a model per block type
(``type: Literal["my_block"]``, deriving from `archspec.language.common.BlockBase`) and a
lowering decorated with ``@register(Model)``. Every module of this package is imported
here, so nothing else needs to change.

A block whose `type` is none of the registered ones validates as a `DefinedUse`: the
use of a block type the spec itself defines (``define:``); the spec's own check
(`archspec.language.check_defined`) then reports a type that is defined nowhere.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Any, Union

from pydantic import ConfigDict, Discriminator, Field, PrivateAttr, Tag

from ..common import BlockBase
from .registry import REGISTRY, Family, register

FAMILY_MODULES = sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "registry")
for _m in FAMILY_MODULES:
    importlib.import_module(f"{__name__}.{_m}")

ENTRY_POINT_GROUP = "archspec.blocks"


def _load_plugins() -> list[str]:
    """Block families of other packages: each entry point of the group ``archspec.language.blocks``
    names a module whose import registers its families (``@register``), e.g. in the
    plugin's pyproject.toml: ``[project.entry-points."archspec.blocks"] my = "my_pkg.blocks"``.
    A plugin that fails to import is reported, not fatal."""
    import sys
    from importlib.metadata import entry_points

    loaded = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
            loaded.append(ep.value)
        except Exception as exc:  # a broken plugin must not break archspec
            print(f"archspec: warning: block plugin {ep.name!r} ({ep.value}) failed to load: {exc}", file=sys.stderr)
    return loaded


PLUGIN_MODULES = _load_plugins()


def _defined_use_schema(schema: dict, cls=None) -> None:
    # in the JSON Schema, a defined type is any type but the built-in ones (so that exactly
    # one member of the union matches a block)
    schema["properties"]["type"]["not"] = {"enum": sorted(REGISTRY)}
    schema["description"] = ("The use of a block type defined under `define:`; the other keys are its params. "
                             "Built-in types: " + ", ".join(sorted(REGISTRY)))


class DefinedUse(BlockBase):
    """The use of a block type defined in the spec's ``define:`` section: its params are
    the other keys (checked against the definition after validation)."""

    model_config = ConfigDict(extra="allow", validate_default=True, json_schema_extra=_defined_use_schema)
    type: str = Field(min_length=1, max_length=200)
    _repeat: bool = PrivateAttr(default=False)

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def for_repeat(self) -> "DefinedUse":
        out = self.model_copy()
        out._repeat = True
        return out


DEFINED_TAG = "__defined__"


def _block_tag(v: Any) -> str | None:
    t = v.get("type") if isinstance(v, dict) else getattr(v, "type", None)
    if t is None:
        return None
    return t if isinstance(t, str) and t in REGISTRY else DEFINED_TAG


BLOCK_MODELS = tuple(f.model for f in REGISTRY.values())
Block = Annotated[
    Union[tuple(Annotated[f.model, Tag(t)] for t, f in REGISTRY.items()) + (Annotated[DefinedUse, Tag(DEFINED_TAG)],)],
    Discriminator(_block_tag),
]

for _f in REGISTRY.values():
    if _f.model.child_fields:
        _f.model.model_rebuild(_types_namespace={"Block": Block})

__all__ = ["REGISTRY", "Family", "register", "Block", "BLOCK_MODELS", "DefinedUse", "DEFINED_TAG", "PLUGIN_MODULES"]
