"""Issue 18 (trust, part 2): hostile and broken inputs end in one line, never a traceback,
a hang, code run or a file leaked."""

from __future__ import annotations

import os

import pytest

from archspec import cli
from archspec.cli import main


# ---------------------------------------------------------------- the guard at the top


@pytest.mark.parametrize("exc", [ValueError("bad\nvalue " + "x" * 2000), KeyError("k"),
                                 RecursionError("maximum recursion depth exceeded")])
def test_guard_turns_any_unexpected_exception_into_one_line_exit_1(monkeypatch, capsys, exc):
    def boom(args):
        raise exc

    monkeypatch.setattr(cli, "cmd_validate", boom)
    assert main(["validate", "resnet50"]) == 1
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"archspec: internal error: {type(exc).__name__}")
    assert err[0].endswith("rerun with --debug for the traceback") and len(err[0]) < 450
    assert "Traceback" not in captured.err


def test_guard_lets_debug_show_the_traceback(monkeypatch):
    def boom(args):
        raise ValueError("injected")

    monkeypatch.setattr(cli, "cmd_validate", boom)
    with pytest.raises(ValueError, match="injected"):
        main(["--debug", "validate", "resnet50"])


# ---------------------------------------------------------------- names are data, never code

PWN_NAME = "a\"\"\";open('PWNED','w').write('x');\"\"\""


def test_codegen_writes_a_hostile_layer_name_as_data(tmp_path):
    """Issue 18.1: a layer name closed codegen's docstring and ran code on import."""
    import subprocess
    import sys

    spec = tmp_path / "pwn.yaml"
    spec.write_text(
        "format: 1\nname: pwn\ninput: {shape: [8, 8, 3]}\n"
        "define:\n  'x\"\"\"y\\\\':\n    params: {f: 4}\n    body: [{type: conv, name: \"{name}_c\", filters: \"${f}\"}]\n"
        f"stem:\n  - {{type: conv, name: {json_str(PWN_NAME)}, filters: 4, kernel: 3}}\n"
        "  - {type: 'x\"\"\"y\\\\', name: 'b\\\"\"\"\\\\'}\n"
        "head: {classes: 3, layers: [{type: global_pool, name: gap}, {type: classifier, name: predictions}]}\n")
    out = tmp_path / "m.py"
    assert main(["codegen", str(spec), "-o", str(out)]) == 0
    code = ("import sys; sys.path.insert(0, %r); import m; model = m.build_model(); "
            "print([l.name for l in model.layers][1:3])") % str(tmp_path)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "KERAS_BACKEND": "jax"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert not (tmp_path / "PWNED").exists()
    assert eval(r.stdout.strip().splitlines()[-1]) == [PWN_NAME, r'b\"""\\_c']  # noqa: S307 - a list literal we printed


def json_str(s: str) -> str:
    import json

    return json.dumps(s)


@pytest.mark.parametrize("name,why", [("a/b", "is not allowed: Keras does not allow '/'"),
                                      ("a\tb", "is not allowed: it holds the control character U+0009"),
                                      ("x" * 201, "at most 200 characters")])
def test_layer_names_follow_keras_rules(tmp_path, capsys, name, why):
    spec = tmp_path / "n.yaml"
    spec.write_text("format: 1\nname: n\ninput: {shape: [8, 8, 3]}\n"
                    f"stem: [{{type: conv, name: {json_str(name)}, filters: 4, kernel: 3}}]\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{spec}:4:") and why in err[0]


@pytest.mark.parametrize("template", ["{name.__class__.__mro__}", "{i.__class__.__subclasses__}", "{i[0]}",
                                      "{name.foo}", "{i:>2000000000}", "{i!r}", "{0}", "{}"])
def test_name_templates_are_fields_only(tmp_path, capsys, template):
    """Issue 18.3: templates reached str.format (attributes, indexing, a 2 GB format spec)."""
    spec = tmp_path / "t.yaml"
    spec.write_text("format: 1\nname: t\ninput: {shape: [8, 8, 3]}\n"
                    f"stages: [{{name: s, block_name: {json_str(template)}, blocks: [{{type: conv, filters: 4}}]}}]\n")
    assert main(["validate", str(spec)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "name templates take only {field}" in err[0] and err[0].startswith(f"{spec}:4:")


# ---------------------------------------------------------------- files that are not specs

SECRET = "root:x:0:0:TOPSECRET:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n"


def run_cli(*argv, cwd=None, timeout=60):
    """The CLI in a subprocess, bounded in time (a hang fails the test instead of the suite)."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "archspec", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def one_error_line(r, exit_code=2) -> str:
    assert r.returncode == exit_code, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("how", ["absolute", "relative", "yaml_link", "proc"])
def test_extends_never_reads_or_quotes_a_file_that_is_not_a_spec(tmp_path, how):
    """Issue 18.2: `extends: /etc/passwd` put the file's first line into the error."""
    secret = tmp_path / "private" / "passwd"
    secret.parent.mkdir()
    secret.write_text(SECRET)
    d = tmp_path / "a" / "b"
    d.mkdir(parents=True)
    target = {"absolute": str(secret), "relative": "../../private/passwd", "yaml_link": "link.yaml",
              "proc": "/proc/self/status"}[how]
    (d / "link.yaml").symlink_to(secret)
    spec = d / "s.yaml"
    spec.write_text(f"format: 1\nextends: {target}\nname: s\n")
    line = one_error_line(run_cli("validate", str(spec)))
    assert line.startswith(f"{spec}:2:") and "not a YAML document" in line, line
    assert "TOPSECRET" not in line and "/bin/bash" not in line and "Name:" not in line


def test_a_spec_that_is_a_single_line_of_text_is_not_quoted(tmp_path):
    p = tmp_path / "passwd.yaml"
    p.write_text("root:x:0:0:TOPSECRET:/root:/bin/bash\n")
    line = one_error_line(run_cli("validate", str(p)))
    assert "expected a mapping" in line and "TOPSECRET" not in line


def test_recipe_extends_is_held_to_the_same_rule(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text(SECRET)
    r = tmp_path / "r.yaml"
    r.write_text(f"format: 1\nextends: {secret}\nname: r\n")
    line = one_error_line(run_cli("inspect", "cifar100_cnn", "--recipe", str(r)))
    assert "not a YAML document" in line and "TOPSECRET" not in line


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "extends_fifo", "directory"])
def test_only_regular_files_are_read(tmp_path, kind):
    """Issue 18.5: a FIFO hung forever; a link to /dev/zero read until MemoryError."""
    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    zero = tmp_path / "z.yaml"
    zero.symlink_to("/dev/zero")
    (tmp_path / "d.yaml").mkdir()
    spec = tmp_path / "s.yaml"
    spec.write_text("format: 1\nextends: f.yaml\nname: s\n")
    path = {"fifo": fifo, "dev_zero": zero, "extends_fifo": spec, "directory": tmp_path / "d.yaml"}[kind]
    line = one_error_line(run_cli("validate", str(path), timeout=60))
    want = {"fifo": "is a FIFO, not a regular file", "dev_zero": "is a device, not a regular file",
            "extends_fifo": "is a FIFO, not a regular file", "directory": "is a directory"}[kind]
    assert want in line, line


# ---------------------------------------------------------------- numbers: bounded, real, finite

def defined_filters(tmp_path, expr: str):
    p = tmp_path / "e.yaml"
    p.write_text("format: 1\nname: t\ninput: {shape: [8, 8, 3]}\ndefine:\n  b:\n    params: {f: 4}\n"
                 f"    body: [{{type: conv, name: \"{{name}}_c\", filters: \"{expr}\", kernel: 3, padding: same}}]\n"
                 "stages: [{name: s, blocks: [{type: b}]}]\n")
    return p


@pytest.mark.parametrize("expr,message", [
    ("${round(7, -(10**9))}", "ndigits must be an integer from -15 to 15"),  # ran for minutes
    ("${(-8)**0.5}", "not a real number"),                                    # a complex layer width
    ("${1e309}", "value out of range (inf"),                                  # an unchecked inf
    ("${10**39}", "value out of range"),
    ("${10^39}", "operator ^ is not allowed"),
    ("${8*10**7}", "must be <= 1048576 (got 80000000)"),                       # validated, then OOM
])
def test_expressions_are_bounded_real_and_finite(tmp_path, capsys, expr, message):
    """Issue 18.6: operands were not checked, only results (and not for complex numbers)."""
    p = defined_filters(tmp_path, expr)
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{p}:7:") and message in err[0], err


@pytest.mark.parametrize("field,value,message", [
    ("filters", "1000000000000", "must be <= 1048576"), ("kernel", "80000000", "must be <= 1048576"),
    ("filters", "1e12", "YAML reads '1e12' as text: write 1.0e+12"),
    # a float past any integer's range names the bound, as a recipe's does (it was pydantic's
    # 'unable to parse input string as an integer, exceeded maximum size')
    ("filters", "1.0e+20", "filters: must be <= 1048576 (got 1e+20)"), ("kernel", "-1.0e+20", "must be > 0 (got -1e+20)"),
    ("kernel", "64", "more than 2,147,483,648 weights"),  # 64 * 64 * 3 * 2**20 = 12.9G: each within bounds
])
def test_sizes_have_documented_upper_limits(tmp_path, capsys, field, value, message):
    p = tmp_path / "s.yaml"
    fields = {"filters": "4" if field == "filters" or value != "64" else "1048576", "kernel": "3"} | {field: value}
    p.write_text("format: 1\nname: t\ninput: {shape: [8, 8, 3]}\n"
                 f"stem: [{{type: conv, name: c, filters: {fields['filters']}, kernel: {fields['kernel']}, "
                 "padding: same}]\n")
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{p}:4:") and message in err[0], err
    assert "remove the quotes" not in err[0]  # there were none


def test_a_network_too_large_to_build_is_refused_by_validate(capsys):
    """Issue 18.11: image_size 3000x3000 validated, then ResourceExhaustedError at build."""
    assert main(["validate", "resnet50", "--set", "input.shape=[3000,3000,3]"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "more than 2,147,483,648 values for one image" in err[0]
    # the largest published network of the zoo at its own size still passes (B7 at 600: 1.05G values)
    assert main(["validate", "efficientnet", "--set", "input.shape=[600,600,3]", "--set", "scaling.width=2.0",
                 "--set", "scaling.depth=3.1"]) == 0


def test_a_long_chain_of_defined_blocks_is_a_located_error(tmp_path, capsys):
    """Issue 18.9: a chain of 331 define: blocks was a RecursionError traceback."""
    def chain(n: int) -> str:
        text = ["format: 1", "name: t", "input: {shape: [8, 8, 3]}", "define:",
                "  d0:\n    params: {}\n    body: [{type: conv, name: \"{name}_c\", filters: 4, kernel: 1}]"]
        text += [f"  d{i}:\n    params: {{}}\n    body: [{{type: d{i - 1}}}]" for i in range(1, n)]
        return "\n".join(text + [f"stages: [{{name: s, blocks: [{{type: d{n - 1}}}]}}]"]) + "\n"

    p = tmp_path / "chain.yaml"
    p.write_text(chain(331))
    assert main(["validate", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{p}:") and "defined blocks nested more than 32 deep" in err[0]
    p.write_text(chain(32))  # at the limit: fine
    assert main(["validate", str(p)]) == 0


@pytest.mark.parametrize("how", ["spec", "set"])
def test_head_classes_without_a_classifier_is_an_error_not_ignored(tmp_path, capsys, how):
    """Issue 18.15: head.classes was silently ignored on a spec without a classifier."""
    p = tmp_path / "nc.yaml"
    head = "head: {classes: 7, layers: [{type: global_pool, name: gap}]}" if how == "spec" else \
        "head: {layers: [{type: global_pool, name: gap}]}"
    p.write_text(f"format: 1\nname: t\ninput: {{shape: [8, 8, 3]}}\nstem: [{{type: conv, name: c, filters: 4}}]\n{head}\n")
    argv = ["validate", str(p)] + (["--set", "head.classes=7"] if how == "set" else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "head.classes: is 7, but the head has no classifier block" in err[0]
    assert err[0].startswith(f"{p}:5:" if how == "spec" else "--set")
    assert main(["validate", str(p)] if how == "set" else ["validate", "cifar100_cnn", "--set", "head.classes=7"]) == 0


@pytest.mark.parametrize("stride,dilation", [(2, 2), ([1, 2], [2, 1]), (1, 2), (2, 1)])
def test_validate_refuses_the_conv_keras_refuses(tmp_path, capsys, stride, dilation):
    """Issue 18.11: stride 2 with dilation 2 validated and inspected, then Keras' ValueError at build."""
    import keras

    try:
        keras.layers.Conv2D(4, 3, strides=stride, dilation_rate=dilation)
        keras_ok = True
    except ValueError:
        keras_ok = False
    p = tmp_path / "d.yaml"
    p.write_text("format: 1\nname: t\ninput: {shape: [16, 16, 3]}\n"
                 f"stem: [{{type: conv, name: c, filters: 4, stride: {stride}, dilation: {dilation}}}]\n")
    rc = main(["validate", str(p)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == (0 if keras_ok else 2), err
    if not keras_ok:
        assert len(err) == 1 and err[0].startswith(f"{p}:4:") and "cannot be combined with a dilation" in err[0]


@pytest.mark.parametrize("kind", ["MemoryError", "ResourceExhaustedError", "ENOSPC"])
def test_out_of_memory_or_disk_is_one_line(tmp_path, monkeypatch, capsys, kind):
    """Issue 18.10/18.11: what validate cannot foresee (the machine's memory, its disk: TF's
    checkpoint save raises ResourceExhaustedError for a full disk) is one line, exit 1."""
    import errno

    import archspec.api as api

    exc = {"MemoryError": MemoryError(),
           "ResourceExhaustedError": type("ResourceExhaustedError", (Exception,), {})(
               "OOM when allocating tensor with shape[1000000,1000000]"),
           "ENOSPC": type("ResourceExhaustedError", (Exception,), {})(
               "model.ckpt-1.data-00000-of-00001.tempstate123; No space left on device")}[kind]
    from archspec.backends import keras as keras_backend

    kb = keras_backend.load()

    def boom(*a, **k):
        raise exc

    monkeypatch.setattr(kb, "build_model", boom)
    out = tmp_path / "m.keras"
    assert main(["build", "cifar100_cnn", "-o", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    want = "archspec: error: no space left on the device" if kind == "ENOSPC" else "archspec: error: out of memory;"
    assert err[-1].startswith(want) and "internal error" not in err[-1], err
    assert not out.exists()
