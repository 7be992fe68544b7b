"""jinja2 rendering of the templates (no TensorFlow): reports of a spec's analysis."""

from __future__ import annotations

from pathlib import Path


def templates_dir() -> Path:
    """Installed package data, else the source tree's templates/."""
    from .package_data import package_data

    return package_data("templates")


def render(template: str, **context) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(template).render(**context)


def markdown_report(report: dict, description: str = "") -> str:
    """The analysis of a spec as a Markdown document (block table and totals)."""
    return render("report.md.j2", r=report, description=description)
