"""The layers of docs/architecture.md, enforced: `.importlinter` (checked here with
import-linter) says each layer imports only those below it and that the language, the
resolver and the IR never import Keras or TensorFlow. A planted upward import must fail it."""

from __future__ import annotations

import ast
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


def copy_tree(dst: Path) -> Path:
    shutil.copytree(ROOT / "archspec", dst / "archspec", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", dst / ".importlinter")
    return dst


def test_the_layer_contracts_hold():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


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
