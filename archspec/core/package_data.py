"""Where the bundled data lives: specs, recipes, templates."""

from __future__ import annotations

from pathlib import Path


def package_data(name: str) -> Path:
    """The directory of bundled data `name` ("specs", "recipes", "templates"): `archspec/_NAME`
    in an installed package (pyproject.toml maps it there), else `NAME/` at the top of the source tree."""
    pkg = Path(__file__).resolve().parent.parent  # archspec/
    installed = pkg / f"_{name}"
    return installed if installed.is_dir() else pkg.parent / name
