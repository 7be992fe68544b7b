"""jinja2 rendering of the templates (no TensorFlow): reports of a spec's analysis."""

from __future__ import annotations

from pathlib import Path


def templates_dir() -> Path:
    """Installed package data, else the source tree's templates/."""
    pkg = Path(__file__).resolve().parent
    installed = pkg / "_templates"
    return installed if installed.is_dir() else pkg.parent / "templates"


def render(template: str, **context) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), autoescape=False,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.get_template(template).render(**context)


def markdown_report(report: dict, description: str = "") -> str:
    """The analysis of a spec as a Markdown document (block table and totals)."""
    return render("report.md.j2", r=report, description=description)
