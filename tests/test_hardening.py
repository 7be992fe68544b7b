"""Regression tests for defects found by reading and trying the first landing (issue 9):
each reproduces the defect as it was reported."""

import subprocess
import sys
import textwrap

import pytest
import yaml

import archspec
from archspec.cli import main
from archspec.language import loader


@pytest.mark.parametrize("composer", ["libyaml", "python"])
def test_deeply_nested_yaml_is_a_located_error_not_a_recursion_error(tmp_path, capsys, monkeypatch, composer):
    if composer == "python":  # PyYAML without libyaml recurses once per level
        monkeypatch.setattr(loader, "_Loader", type("L", (yaml.SafeLoader,), {}))
    p = tmp_path / "deep.yaml"
    p.write_text("a: " + "[" * 1200 + "]" * 1200 + "\n")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(str(p)) and "nesting deeper than" in err[0]


def test_every_public_name_stays_callable_after_use():
    """`archspec.resolve` was rebound to the submodule of the same name after first use."""
    code = textwrap.dedent("""
        import tempfile, os, archspec
        out = tempfile.mkdtemp()
        for round in range(2):
            spec = archspec.load("two_branch")
            r = archspec.resolve(spec)
            a = archspec.analyze(r)
            g = archspec.lower_spec("two_branch")
            m = archspec.build(g)
            archspec.export(m, os.path.join(out, f"m{round}.keras"), format="keras", check=False)
            import numpy as np
            np.savez(os.path.join(out, "d.npz"), x_train=np.zeros((8, 32, 32, 3), "uint8"), y_train=np.arange(8))
            t = archspec.train("two_branch", "cifar100", os.path.join(out, "d.npz"), os.path.join(out, f"run{round}"),
                               epochs=1, recipe_overrides=["data.validation_split=0"], verbose=0)
            assert t["epochs_completed"] == 1
            assert issubclass(archspec.ArchspecError, Exception) and issubclass(archspec.SpecError, Exception)
            assert isinstance(archspec.__version__, str)
            for name in archspec.__all__:
                obj = getattr(archspec, name)
                assert not type(obj).__name__ == "module", name
        print("ok", a["params"])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "ok"


def test_error_after_scaling_is_located_and_names_the_scaling(capsys):
    rc = main(["validate", "alexnet", "--set", "scaling.width=0.35", "--set", "scaling.rounding=truncate"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err
    assert all(line.startswith("specs/alexnet.yaml:") for line in err)
    assert "filters must be divisible by groups (got filters=89, groups=2)" in err[0]
    assert "after scaling (width 0.35" in err[0] and "rounding truncate" in err[0]


def test_unknown_field_in_a_name_template_is_located(capsys):
    rc = main(["validate", "resnet50", "--set", 'stem[0].bn_name="{nmae}_bn"'])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert err[0].startswith("specs/resnet50.yaml:") and "unknown field {nmae}" in err[0]


def test_errors_through_the_python_api_keep_file_line_col(tmp_path):
    p = tmp_path / "late.yaml"
    p.write_text("format: 1\nname: late\ninput: {shape: [8, 8, 3]}\n"
                 "stages:\n  - blocks: [{type: conv, filters: 4, kernel: 9, padding: valid}]\n")
    with pytest.raises(archspec.SpecError) as exc:
        archspec.analyze(archspec.load(str(p)))
    assert str(exc.value).startswith(f"{p}:5:") and "input too small" in str(exc.value)
    with pytest.raises(archspec.SpecError) as exc:
        archspec.analyze(archspec.resolve(archspec.load(str(p))))
    assert str(exc.value).startswith(f"{p}:5:")


def test_tensorflow_native_start_up_lines_are_quiet_by_default(tmp_path):
    """cuInit failures, the oneDNN/CPU notices and absl's 'All log messages before
    absl::InitializeLog()' read as failures to a newcomer: filtered unless --debug."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "ARCHSPEC_DEBUG")}
    out = subprocess.run([sys.executable, "-m", "archspec", "build", "two_branch", "-o", str(tmp_path / "m.keras")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = [l for l in out.stderr.splitlines() if l.strip()]
    assert lines and all(l.startswith("archspec:") for l in lines), lines
    # the filter drops only the known notices: anything else written to fd 2 comes back
    from archspec.core.quiet import NOISE

    assert NOISE.search("W0000 00:00:1795378887.000783   24309 cuda_platform.cc:52] failed call to cuInit")
    assert not NOISE.search("Traceback (most recent call last):")
    assert not NOISE.search("ValueError: Input 0 of layer 'conv' is incompatible")


def test_filtered_stderr_keeps_every_other_line(capfd, monkeypatch):
    from archspec.core import quiet as _quiet

    monkeypatch.delenv("ARCHSPEC_DEBUG", raising=False)
    with _quiet.native_stderr_filtered():
        import os

        os.write(2, b"I0000 00:00:1795378876.166307   24258 cudart_stub.cc:31] Could not find cuda drivers\n")
        os.write(2, b"a real problem\n")
    assert capfd.readouterr().err == "a real problem\n"
    monkeypatch.setenv("ARCHSPEC_DEBUG", "1")
    with _quiet.native_stderr_filtered():
        os.write(2, b"I0000 00:00:1795378876.166307   24258 cudart_stub.cc:31] shown with --debug\n")
    assert "shown with --debug" in capfd.readouterr().err


def _validate(tmp_path, capsys, text, *extra):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    rc = main(["validate", str(p), *extra])
    return rc, capsys.readouterr().err.strip().splitlines()


SPEC = """\
format: 1
name: s
input: {shape: [32, 32, 3]}
stages:
  - blocks:
      - {type: bottleneck, filters: 8, groups: 2}
      - {type: conv, filtrs: 3, filters: 2}
head: {classes: 3}
"""


def test_unknown_key_says_what_the_block_takes_and_where_the_key_belongs(tmp_path, capsys):
    rc, err = _validate(tmp_path, capsys, SPEC)
    assert rc == 2 and len(err) == 2
    assert ":6:" in err[0] and "unknown key 'groups' ('groups' is a key of conv" in err[0]
    assert "a 'bottleneck' block takes: " in err[0] and "expansion" in err[0]
    assert ":7:" in err[1] and "unknown key 'filtrs' (did you mean 'filters'?)" in err[1]
    assert "(a typo?)" not in " ".join(err)


def test_errors_come_in_file_order(tmp_path, capsys):
    text = SPEC.replace("head: {classes: 3}", "head: {clases: 3}").replace("[32, 32, 3]", "[32, 32, 0]")
    rc, err = _validate(tmp_path, capsys, text)
    lines = [int(e.split(":")[1]) for e in err]
    assert rc == 2 and len(err) == 4 and lines == sorted(lines)
    assert "unknown key 'clases' (did you mean 'classes'?); head takes:" in err[-1]


def test_a_short_input_shape_says_what_it_needs(tmp_path, capsys):
    rc, err = _validate(tmp_path, capsys, SPEC.replace("[32, 32, 3]", "[32, 32]").replace(", groups: 2", "")
                        .replace("filtrs: 3, ", ""))
    assert rc == 2 and err == [f"{tmp_path / 's.yaml'}:3:16: input.shape: expected 3 values (height, width, "
                               f"channels), got 2"]


def test_set_into_a_misspelled_list_key_names_the_key(capsys):
    rc = main(["validate", "resnet50", "--set", "stages[1].block[0].repeats=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "unknown key 'block' at stages[1] (did you mean 'blocks'?)" in err[0]


def test_set_into_a_list_the_document_does_not_have_says_so(capsys):
    """`--recipe-set phases[0]...` on a recipe without phases: 'phases' is a valid key, just not
    set (it said "unknown key 'phases' at the top level")."""
    rc = main(["inspect", "resnet18", "--recipe", "cifar100", "--recipe-set", "phases[0].epochs=3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown key" not in err[0]
    assert "'phases' is not set at the top level, so there is no list to index with [0]" in err[0]
    assert "(phases=[...])" in err[0] and err[0].startswith("--recipe-set phases[0].epochs=3:")


@pytest.mark.parametrize("ref,close", [("resnet5", "resnet50"), ("densnet121", "densenet121")])
def test_bundled_and_extends_names_suggest_the_closest(tmp_path, capsys, ref, close):
    assert main(["inspect", ref]) == 2
    assert f"(did you mean {close!r}?)" in capsys.readouterr().err
    rc, err = _validate(tmp_path, capsys, f"format: 1\nextends: {ref}\nname: x\n")
    assert rc == 2 and f"(did you mean {close!r}?)" in err[0] and ":2:" in err[0]


@pytest.mark.parametrize("text,words,line", [
    # issue 30: the hint says which way to move the line (it said "indent" where the fix is to dedent)
    ("format: 1\nname: x\ninput:\n  shape: [1, 2, 3]\n   name: y\n",
     "indentation: this line starts at column 4, right of the line above it (column 3): dedent it to column 3", 5),
    ("format: 1\nname: x\ninput:\n    shape: [1, 2, 3]\n  name: y\n",
     "this line starts at column 3, between the keys above it (column 5) and their outer block (column 1): "
     "indent it to column 5, or dedent it to column 1", 5),
    ("format: 1\nname: x\nstem:\n  - {type: conv, filters: 8}\n   - {type: conv, filters: 8}\n",
     "right of the line above it (column 3): dedent it to column 3", 5),
    ("format: 1\nname: x\nstages:\n\t- a\n", "YAML is indented with spaces, never tabs", 4),
    ("format: 1\nname: a: b\n", "a ':' where a value should be", 2),
    ("format: 1\nname: [a, b\n", "an unclosed '['", 3),
])
def test_yaml_parser_errors_get_a_plain_first_sentence(tmp_path, capsys, text, words, line):
    rc, err = _validate(tmp_path, capsys, text)
    assert rc == 2 and len(err) == 1
    assert err[0].startswith(f"{tmp_path / 's.yaml'}:{line}:") and "invalid YAML: " in err[0] and words in err[0]


@pytest.mark.parametrize("argv,usage,close", [
    (["export", "resnet50", "-o", "x.onnx", "--forse"], "usage: archspec export", "'--force'"),
    (["inspect", "resnet50", "--jsn"], "usage: archspec inspect", "'--json'"),
    (["train", "--epohcs", "3"], "usage: archspec train", "'--epochs'"),
])
def test_a_wrong_option_gets_its_commands_usage_and_the_closest_option(capsys, argv, usage, close):
    """Issue 30: not the top-level usage (which lists no option of the command)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(usage) and "usage: archspec [-h]" not in err
    bad = next(a for a in argv if a.startswith("--"))
    assert f"unrecognized arguments: {bad}" in err and err.rstrip().endswith(f"(did you mean {close}?)")


@pytest.mark.parametrize("value,ok", [("256", True), ('"256"', False), ("256.0", True), ("true", False),
                                      ("2.5", False), ("-3", False)])
def test_cli_and_json_schema_agree_on_numbers(value, ok, capsys):
    """The CLI used to accept `filters: "256"` that the schema (and an editor) rejects."""
    import jsonschema

    from archspec.language import load_raw
    from archspec.language.schema import Spec

    override = f"stages[0].blocks[0].filters={value}"
    cli_ok = main(["validate", "resnet50", "--set", override]) == 0
    err = capsys.readouterr().err
    schema_ok = jsonschema.Draft202012Validator(Spec.model_json_schema()).is_valid(
        load_raw("resnet50", [override]).data)
    assert cli_ok == schema_ok == ok, err
    if value == '"256"':
        assert "must be a number, not a string (got '256'); remove the quotes" in err


def test_booleans_are_not_strings_either(capsys):
    assert main(["validate", "resnet50", "--set", 'stem[0].bn="yes"']) == 2
    assert "must be true or false, not a string (got 'yes')" in capsys.readouterr().err


def test_build_seed_is_local_and_leaves_global_rngs_alone():
    """build_model(seed=) reseeded the global RNGs (numpy's, Python's, the backend's)."""
    import random

    import numpy as np

    archspec.build("two_branch")  # importing the backend may draw from the RNGs; building must not
    np.random.seed(1)
    random.seed(1)
    expected = (np.random.rand(), random.random())
    np.random.seed(1)
    random.seed(1)
    a = archspec.build("two_branch", seed=7).get_weights()
    assert (np.random.rand(), random.random()) == expected
    b = archspec.build("two_branch", seed=7).get_weights()
    c = archspec.build("two_branch", seed=8).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # every conv of the network is initialised differently (no seed shared between layers)
    kernels = [w for w in a if w.ndim == 4 and w.shape[:2] == (3, 3)]
    assert len(kernels) >= 2 and not np.array_equal(kernels[0].ravel()[:10], kernels[1].ravel()[:10])


def test_out_of_tree_block_family_registers_through_an_entry_point(tmp_path):
    """The block union was frozen from in-package modules only; a package can now add a
    family through the `archspec.language.blocks` entry point group."""
    (tmp_path / "my_blocks.py").write_text(textwrap.dedent('''
        from typing import Literal
        from archspec.language.blocks.registry import register
        from archspec.language.common import BlockBase, PosInt

        class Twice(BlockBase):
            width_fields = ("filters",)
            type: Literal["twice"]
            filters: PosInt

        @register(Twice)
        def lower_twice(g, b, x, name):
            x = g.conv(x, b.filters, 3, g.fmt("{name}_a", name))
            return g.conv(x, b.filters, 3, g.fmt("{name}_b", name))
        '''))
    dist = tmp_path / "my_blocks-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-blocks\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[archspec.blocks]\ntwice = my_blocks\n")
    spec = tmp_path / "s.yaml"
    spec.write_text("format: 1\nname: s\ninput: {shape: [8, 8, 3]}\n"
                    "stages: [{name: s, blocks: [{type: twice, filters: 4}]}]\n")
    code = ("import archspec; from archspec.language.blocks import REGISTRY, PLUGIN_MODULES; "
            "r = archspec.analyze(%r); print(PLUGIN_MODULES, 'twice' in REGISTRY, r['params'], "
            "[l['name'] for l in r['layers']][1:])" % str(spec))
    import os

    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    # 3x3x3x4 + 4 and 3x3x4x4 + 4 parameters
    assert out.stdout.strip() == "['my_blocks'] True 260 ['s_block1_a', 's_block1_b']"
    # and the JSON Schema knows the new type
    code2 = "import json, archspec.language.schema as s; print('Twice' in json.dumps(s.Spec.model_json_schema()))"
    out2 = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out2.stdout.strip() == "True", out2.stderr
