"""Regression tests for defects found by reading and trying the first landing (issue 9):
each reproduces the defect as it was reported."""

import subprocess
import sys
import textwrap

import pytest
import yaml

import archspec
from archspec.cli import main
from archspec.spec import loader


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
    from archspec._quiet import NOISE

    assert NOISE.search("W0000 00:00:1795378887.000783   24309 cuda_platform.cc:52] failed call to cuInit")
    assert not NOISE.search("Traceback (most recent call last):")
    assert not NOISE.search("ValueError: Input 0 of layer 'conv' is incompatible")


def test_filtered_stderr_keeps_every_other_line(capfd, monkeypatch):
    from archspec import _quiet

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
