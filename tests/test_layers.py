"""The layers of docs/architecture.md, enforced: `.importlinter` (checked here with
import-linter) says each layer imports only those below it, that the language, the
resolver and the IR never import Keras or TensorFlow, and that no two siblings import each
other in a circle. A planted upward import must fail it. And no import cycle anywhere:
the import graph of every module (packages' `__init__` included, imports inside functions
too) has no circle, which a planted one must break."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
        "sys.exit(lint_imports_command())"]


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(LINT + ["--config", str(tree / ".importlinter"), "--no-cache"], cwd=tree,
                          capture_output=True, text=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          timeout=300)


# every circle of imports among archspec's modules (grimp's graph: a package's __init__ is a
# module, imports inside functions count): each module's ring is what it reaches and what
# reaches it; printed as JSON, a list of rings of 2+ modules
CYCLES = [sys.executable, "-c", """
import json, grimp
g = grimp.build_graph("archspec", include_external_packages=False, cache_dir=None)
rings, seen = [], set()
for m in sorted(g.modules):
    if m not in seen:
        ring = (g.find_upstream_modules(m) & g.find_downstream_modules(m)) | {m}
        seen |= ring
        if len(ring) > 1:
            rings.append(sorted(ring))
print(json.dumps(rings))
"""]


def cycles(tree: Path) -> list[list[str]]:
    out = subprocess.run(CYCLES, cwd=tree, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def copy_tree(dst: Path) -> Path:
    shutil.copytree(ROOT / "archspec", dst / "archspec", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", dst / ".importlinter")
    return dst


def test_the_layer_contracts_hold():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout


def test_no_module_imports_itself_through_others():
    """No import cycle between any modules of archspec, not only between layers: what two
    modules both need lives below both (docs/architecture.md)."""
    rings = cycles(ROOT)
    assert rings == [], "import cycles (each ring's modules import one another): " + "; ".join(
        " <-> ".join(r) for r in rings)


@pytest.mark.parametrize("module, planted, ring, siblings", [
    # two modules of one package (atomic imports errors): the graph check and import-linter
    ("core/errors.py", "from .atomic import write_text_atomic", ["archspec.core.atomic", "archspec.core.errors"],
     True),
    # a package's __init__ and its own module (it imports define), as `language` was: the graph check
    ("language/define.py", "from . import stage_of", ["archspec.language", "archspec.language.define"], False),
])
def test_a_planted_cycle_breaks_the_checks(tmp_path, module, planted, ring, siblings):
    """A lazy import (inside a function: it counts) that closes a circle fails the cycle
    check, naming the ring; between siblings, the import-linter contract fails too."""
    tree = copy_tree(tmp_path)
    f = tree / "archspec" / module
    f.write_text(f.read_text() + f"\n\ndef _planted():\n    {planted}  # planted\n")
    assert ring in cycles(tree)
    if siblings:
        out = lint(tree)
        assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout[-3000:]


@pytest.mark.parametrize("module, planted", [
    ("ir/graph.py", "from ..views import report  # planted"),              # the IR importing a view
    ("language/expr.py", "from ..resolving import compound  # planted"),   # the language importing the resolver
    ("core/units.py", "from .. import api  # planted"),                    # core importing the facade
    ("training/rundir.py", "from .. import cli  # planted"),               # anything importing the CLI
    ("ir/lower.py", "import keras  # planted"),                            # the IR importing a framework
])
def test_a_planted_upward_import_breaks_the_contract(tmp_path, module, planted):
    tree = copy_tree(tmp_path)
    f = tree / "archspec" / module
    f.write_text(f.read_text() + "\n" + planted + "\n")
    out = lint(tree)
    assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout[-3000:]


def test_every_module_belongs_to_a_layer():
    """exhaustive = true in the contract; and, read from the code itself: no module of the
    package imports `archspec.api` or `archspec.cli` except the facade's own users."""
    offenders = []
    for p in (ROOT / "archspec").rglob("*.py"):
        rel = p.relative_to(ROOT / "archspec")
        if rel.parts[0] in ("cli", "api.py", "__init__.py", "__main__.py"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level and node.module in ("api", "cli"):
                offenders.append(f"{rel}: from {'.' * node.level}{node.module}")
    assert offenders == []
