"""Bad input: each gives exit code 2 and one located line (file:line:col: path: message),
no traceback, and fails fast and small."""

import re
import subprocess
import sys
import time

import pytest

from archspec.cli import main
from archspec.core.errors import SpecError
from archspec.language import load

GOOD = """\
format: 1
name: tiny
input:
  shape: [32, 32, 3]
stem:
  - {type: conv, name: c1, filters: 8, kernel: 3, stride: 2}
stages:
  - name: s1
    blocks:
      - type: basic
        filters: 8
        repeats: 2
head:
  classes: 10
  layers:
    - {type: global_pool, name: gap}
    - {type: classifier, name: predictions}
"""

LOCATED = re.compile(r"^(?P<file>[^:]+\.yaml):(?P<line>\d+):(?P<col>\d+): (?P<rest>.+)$")


def run(tmp_path, text, capsys, name="bad.yaml", extra=()):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    rc = main(["validate", str(p), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def test_good_spec_is_valid(tmp_path, capsys):
    rc, err = run(tmp_path, GOOD, capsys)
    assert rc == 0 and err == []


@pytest.mark.parametrize("case,old,new,line,path,words", [
    ("misspelled key", "        repeats: 2", "        repeat: 2", 12, "stages[0].blocks[0].repeat", "unknown key"),
    ("wrong type", "        filters: 8\n", "        filters: eight\n", 11, "stages[0].blocks[0].filters",
     "must be a number, not a string (got 'eight')"),
    ("negative filters", "        filters: 8\n", "        filters: -3\n", 11, "stages[0].blocks[0].filters",
     "must be > 0 (got -3)"),
    ("zero stride", "stride: 2}", "stride: 0}", 6, "stem[0].stride", "must be > 0 (got 0)"),
    ("unknown block type", "      - type: basic", "      - type: basik", 10, "stages[0].blocks[0].type",
     "unknown block type 'basik' (did you mean 'basic'?); valid types:"),
])
def test_schema_errors_are_located(tmp_path, capsys, case, old, new, line, path, words):
    assert old in GOOD
    rc, err = run(tmp_path, GOOD.replace(old, new, 1), capsys)
    assert rc == 2, case
    assert len(err) == 1, err
    m = LOCATED.match(err[0])
    assert m, err[0]
    assert int(m["line"]) == line
    assert m["rest"].startswith(f"{path}: ")
    assert words in m["rest"]


def test_input_too_small_names_the_layer(tmp_path, capsys):
    rc, err = run(tmp_path, GOOD, capsys, extra=["--set", "input.shape=[1,1,3]", "--set", "stem[0].padding=valid"])
    assert rc == 2 and len(err) == 1
    # the error points at the block in the file and names the layer where the size runs out
    m = LOCATED.match(err[0])
    assert m and int(m["line"]) == 6, err
    assert "stem[0]" in err[0] and "input too small" in err[0] and "'c1'" in err[0]


def test_duplicate_key(tmp_path, capsys):
    rc, err = run(tmp_path, GOOD.replace("name: tiny\n", "name: tiny\nname: again\n"), capsys)
    assert rc == 2 and len(err) == 1
    assert re.match(r".*bad\.yaml:3:1: name: duplicate key 'name' \(first at line 2\)$", err[0]), err


def test_python_tag_is_refused_and_not_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    evil = GOOD + f"extra: !!python/object/apply:os.system ['touch {marker}']\n"
    rc, err = run(tmp_path, evil, capsys)
    assert rc == 2 and len(err) == 1
    assert "bad.yaml:18:8" in err[0] and "not allowed" in err[0]
    assert not marker.exists()


def test_custom_tag_is_refused(tmp_path, capsys):
    rc, err = run(tmp_path, GOOD.replace("name: tiny", "name: !shout tiny"), capsys)
    assert rc == 2 and "bad.yaml:2:7" in err[0] and "'!shout'" in err[0]


def test_alias_bomb_fails_fast_and_small(tmp_path, capsys):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 10):
        prev = f"*a{i - 1}"
        levels.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    bomb = GOOD + "bomb:\n" + "\n".join("  " + l for l in levels) + "\n"
    import tracemalloc

    tracemalloc.start()
    t0 = time.perf_counter()
    rc, err = run(tmp_path, bomb, capsys)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert rc == 2 and len(err) == 1
    assert "alias bomb" in err[0] and LOCATED.match(err[0])
    assert elapsed < 1.0  # 10**10 values if expanded
    assert peak < 50 * 2**20


def test_not_a_mapping(tmp_path, capsys):
    rc, err = run(tmp_path, "- just\n- a list\n", capsys)
    assert rc == 2 and err == [f"{tmp_path / 'bad.yaml'}:1:1: expected a mapping at the top level (got a list)"]


def test_empty_file(tmp_path, capsys):
    rc, err = run(tmp_path, "# only a comment\n\n", capsys)
    assert rc == 2 and len(err) == 1 and "empty spec" in err[0] and ":1:1:" in err[0]


def test_not_text(tmp_path, capsys):
    rc, err = run(tmp_path, bytes(range(256)) * 4, capsys)
    assert rc == 2 and len(err) == 1 and "not a text file" in err[0] and err[0].startswith(str(tmp_path))


def test_invalid_utf8(tmp_path, capsys):
    rc, err = run(tmp_path, GOOD.encode() + b"description: \xff\xfe\n", capsys)
    assert rc == 2 and "invalid UTF-8" in err[0]


def test_yaml_syntax_error_is_located(tmp_path, capsys):
    rc, err = run(tmp_path, GOOD.replace("  shape: [32, 32, 3]", "  shape: [32, 32, 3"), capsys)
    assert rc == 2 and len(err) == 1 and LOCATED.match(err[0]) and "invalid YAML" in err[0]


def test_too_large_file(tmp_path, capsys):
    rc, err = run(tmp_path, GOOD + "description: '" + "x" * (1 << 20) + "'\n", capsys)
    assert rc == 2 and "too large" in err[0]


def test_missing_file_and_unknown_name(capsys):
    assert main(["validate", "no/such/file.yaml"]) == 2
    assert "no/such/file.yaml: no such file" in capsys.readouterr().err
    assert main(["inspect", "resnet5"]) == 2
    err = capsys.readouterr().err
    assert "no spec file or bundled spec named 'resnet5'" in err and "resnet50" in err


def test_several_errors_one_line_each(tmp_path, capsys):
    text = GOOD.replace("filters: 8\n", "filters: -1\n").replace("classes: 10", "classes: 0")
    rc, err = run(tmp_path, text, capsys)
    assert rc == 2 and len(err) == 2 and all(LOCATED.match(e) for e in err)


def test_bad_override_is_located_on_the_command_line(tmp_path, capsys):
    rc, err = run(tmp_path, GOOD, capsys, extra=["--set", "head.classes=-4"])
    assert rc == 2 and err == ["--set head.classes=-4: head.classes: must be > 0 (got -4)"]
    rc, err = run(tmp_path, GOOD, capsys, extra=["--set", "stages[5].filters=3"])
    assert rc == 2 and "no item [5]" in err[0]
    rc, err = run(tmp_path, GOOD, capsys, extra=["--set", "head.classes"])
    assert rc == 2 and "KEY=VALUE" in err[0]


def test_override_changes_the_network(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text(GOOD)
    spec, _ = load(p, ["head.classes=3", "input.shape=[64,64,3]", "stages[0].blocks[0].filters=16"])
    assert spec.head.classes == 3 and spec.input.shape == (64, 64, 3) and spec.stages[0].blocks[0].filters == 16


def test_extends_merges_and_locates(tmp_path, capsys):
    (tmp_path / "base.yaml").write_text(GOOD)
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\nhead:\n  classes: -2\n")
    assert main(["validate", str(tmp_path / "child.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"{tmp_path / 'child.yaml'}:4:12: head.classes: must be > 0 (got -2)"
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nname: child\nhead:\n  classes: 5\n")
    spec, _ = load(tmp_path / "child.yaml")
    assert spec.name == "child" and spec.head.classes == 5 and len(spec.head.layers) == 2  # merged, not replaced


def test_extends_cycle(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    assert main(["validate", str(tmp_path / "a.yaml")]) == 2
    assert "'extends' cycle" in capsys.readouterr().err


def test_duplicate_layer_names_are_an_error(tmp_path, capsys):
    rc, err = run(tmp_path, GOOD.replace("name: gap}", "name: c1}"), capsys)
    assert rc == 2 and "layer name 'c1' is used twice" in err[0]


def test_error_as_library_exception():
    with pytest.raises(SpecError) as info:
        load("resnet50", ["stages[0].blocks[0].stride=0"])
    assert info.value.path == "stages[0].blocks[0].stride"


def test_exit_code_and_no_traceback_in_a_real_process(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(GOOD.replace("filters: 8\n", "filters: -3\n"))
    r = subprocess.run([sys.executable, "-m", "archspec", "validate", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == f"{p}:11:18: stages[0].blocks[0].filters: must be > 0 (got -3)"
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "archspec", "--debug", "validate", str(p)], capture_output=True, text=True)
    assert r.returncode != 0 and "Traceback" in r.stderr
