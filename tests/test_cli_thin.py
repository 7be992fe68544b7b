"""Issue 19, a thin CLI: `archspec/cli/` only parses arguments, makes one library call per
command and prints through `archspec.views.text`; the policies live in the library (the
export format from `archspec.exporting.options.format_for`, output checks from
`archspec.core.atomic.check_output`, the `.keras` writer `archspec.backends.keras.files.save_keras`)."""

from __future__ import annotations

import ast
import json
import zipfile
from pathlib import Path

import pytest

import archspec
from archspec.cli import main

CLI = Path(archspec.__file__).parent / "cli"


def test_cli_defines_no_formatting_or_output_checks_of_its_own():
    names = {n.name for p in CLI.glob("*.py") for n in ast.walk(ast.parse(p.read_text()))
             if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert not names & {"table", "check_output", "format_report", "format_scale_table", "format_diff",
                        "resource_words", "internal_error_words", "format_for"}, names


def test_build_writes_provenance_into_the_keras_file(tmp_path, capsys):
    out = tmp_path / "x.keras"
    assert main(["build", "cifar100_cnn", "-o", str(out), "--set", "head.classes=10"]) == 0
    capsys.readouterr()
    with zipfile.ZipFile(out) as z:
        doc = json.loads(z.read("archspec.json"))
    from archspec.language import spec_hash

    resolved = archspec.resolve(archspec.load("cifar100_cnn", ["head.classes=10"]))
    assert doc["source"] == {"spec_name": "cifar100_cnn", "spec_sha256": spec_hash(resolved)}
    assert doc["archspec.spec_sha256"] == spec_hash(resolved)
    assert doc["archspec.version"] == archspec.__version__


@pytest.mark.parametrize("argv", [["validate", "resnet50"], ["inspect", "resnet50"], ["list"], ["schema"]])
def test_lazy_commands_do_not_import_tensorflow(argv):
    import subprocess
    import sys

    code = ("import sys\nfrom archspec.cli import main\nmain(sys.argv[1:])\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]\n"
            "assert not bad, bad[:5]\n")
    r = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
