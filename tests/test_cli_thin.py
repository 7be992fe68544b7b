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


def test_cli_package_is_under_400_lines():
    """Issue 19: argument parsing and one call per command; the words of --help are
    archspec.views.help's, the tables archspec.views.text's, the policies the library's."""
    lines = sum(len(p.read_text().splitlines()) for p in CLI.glob("*.py"))
    assert lines < 400, f"archspec/cli/ has {lines} lines"


def test_every_option_has_its_words_and_no_words_are_stale():
    """Each option of each command has help text from archspec.views.help (except the few
    that never had any), and views.help documents no option the parser lacks."""
    from archspec.cli.parser import build_parser
    from archspec.views import help as words

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    assert set(sub.choices) == set(words.COMMANDS)
    undocumented = {("evaluate", "model"), ("evaluate", "--data"), ("predict", "model"), ("predict", "images"),
                    ("predict", "--json"), ("list", "--json")}
    for name, sp in sub.choices.items():
        keys = {next((f for f in a.option_strings if f.startswith("--")), a.dest): a for a in sp._actions
                if a.dest != "help"}
        for key, action in keys.items():
            assert (action.help is not None) == ((name, key) not in undocumented), (name, key)
        assert set(words.OPTIONS[name]) <= set(keys), (name, set(words.OPTIONS[name]) - set(keys))


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
