"""Helpers of the fuzz tests: the paths into a YAML document's data, for mutating it."""

from __future__ import annotations


def paths(data, prefix=()) -> list[tuple]:
    """Every path into `data` (mappings by key, lists by index), the root `()` first."""
    out = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths(v, prefix + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths(v, prefix + (i,))
    return out


def set_at(data, path: tuple, value) -> None:
    node = data
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
