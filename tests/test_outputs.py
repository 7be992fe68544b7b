"""Every output goes through one writer (`archspec.core.atomic`), issue 18 (items 18.10, 18.14,
18.15): for every command that writes (build, export, schema, codegen, report, diff --html,
scale -o/--plot), a bad output path is one line naming it, exit 2 (a parent that is a file,
a directory, a 5,000-character name, a link to nothing, a missing parent), and a failure
while writing is one line, exit 1 (a read-only file system, a full disk), with nothing
half-written and an existing output left as it was. No traceback, never the CLI's
"internal error" guard.

Read-only and full disks are simulated (the tests run as root, so chmod stops nothing):
`os.open` (creating), `os.replace`/`os.rename` raise EROFS and `os.write`/`os.fsync` raise
ENOSPC, for paths under the test's directory only."""

from __future__ import annotations

import errno
import logging
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from archspec.core import atomic
from archspec.cli import main
from archspec.core.errors import SpecError

PRECIOUS = "precious: the user's earlier output\n"

# command line for an output path: (argv builder, output suffix, needs TensorFlow)
COMMANDS = {
    "schema": (lambda o: ["schema", "-o", o], ".json"),
    "codegen": (lambda o: ["codegen", "two_branch", "-o", o], ".py"),
    "report": (lambda o: ["report", "two_branch", "-o", o], ".html"),
    "report-svg": (lambda o: ["report", "two_branch", "-o", o], ".svg"),
    "diff-html": (lambda o: ["diff", "two_branch", "cifar100_cnn", "--html", o], ".html"),
    "scale-o": (lambda o: ["scale", "efficientnet", "--preset", "b1", "-o", o], ".yaml"),
    "scale-plot": (lambda o: ["scale", "efficientnet", "--phi", "0:1", "--plot", o], ".svg"),
}
TF_COMMANDS = {
    "build": (lambda o: ["build", "two_branch", "-o", o], ".keras"),
    "export-onnx": (lambda o: ["export", "two_branch", "-o", o, "--samples", "1"], ".onnx"),
    "export-keras": (lambda o: ["export", "two_branch", "-o", o, "--samples", "1"], ".keras"),
    "export-saved_model": (lambda o: ["export", "two_branch", "-o", o, "--format", "saved_model", "--samples", "1"],
                           ""),
    "export-fp16": (lambda o: ["export", "two_branch", "-o", o, "--fp16", "--samples", "1"], ".onnx"),
}
ALL = {**COMMANDS, **TF_COMMANDS}


def run(capsys, argv):
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def error_line(err: str) -> str:
    """The error: stderr's last line; no traceback, not the guard, and every other line is progress."""
    lines = err.strip().splitlines()
    assert lines, "no message"
    assert "Traceback" not in err and "internal error" not in err, err
    assert all(l.startswith("archspec: ") for l in lines[:-1]), err  # progress lines only before it
    return lines[-1]


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def under(d: Path):
    d = str(d)
    return lambda p: os.fspath(p).startswith(d) if isinstance(p, (str, os.PathLike)) else False


def read_only(monkeypatch, d: Path):
    """EROFS for creating files and renaming under `d`."""
    inside = under(d)
    real_open, real_replace, real_rename = os.open, os.replace, os.rename

    def ro(*_):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(os, "open", lambda p, flags, *a, **k: ro() if inside(p) and flags & os.O_CREAT
                        else real_open(p, flags, *a, **k))
    monkeypatch.setattr(os, "replace", lambda s, t, *a, **k: ro() if inside(t) else real_replace(s, t, *a, **k))
    monkeypatch.setattr(os, "rename", lambda s, t, *a, **k: ro() if inside(t) else real_rename(s, t, *a, **k))


def disk_full(monkeypatch, d: Path):
    """ENOSPC for writes and for the fsync of every file under `d` (where delayed allocation
    reports a full disk)."""
    real_write, real_fsync = os.write, os.fsync
    fds_inside = set()
    real_open = os.open
    inside = under(d)

    def open_(p, flags, *a, **k):
        fd = real_open(p, flags, *a, **k)
        if inside(p):
            fds_inside.add(fd)
        return fd

    def full(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(os, "write", lambda fd, b: full() if fd in fds_inside else real_write(fd, b))
    monkeypatch.setattr(os, "fsync", lambda fd: full() if fd in fds_inside else real_fsync(fd))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# ---------------------------------------------------------------- bad paths: exit 2


BAD_PATHS = ["parent-is-a-file", "is-a-directory", "name-too-long", "dangling-link", "missing-parent"]


def bad_path(tmp_path: Path, kind: str, suffix: str) -> tuple[str, str]:
    """(the -o argument, what the message says)."""
    if kind == "parent-is-a-file":
        (tmp_path / "afile").write_text("x")
        return str(tmp_path / "afile" / f"m{suffix or 'x'}"), "not a directory"
    if kind == "is-a-directory":
        (tmp_path / f"d{suffix}").mkdir()
        (tmp_path / f"d{suffix}" / "keep").write_text("x")
        return str(tmp_path / f"d{suffix}"), "is a directory"
    if kind == "name-too-long":
        return str(tmp_path / ("a" * 5000 + suffix)), "File name too long"
    if kind == "dangling-link":
        (tmp_path / f"link{suffix}").symlink_to(tmp_path / "nowhere")
        return str(tmp_path / f"link{suffix}"), "which does not exist"
    return str(tmp_path / "no" / "such" / f"m{suffix}"), "no such directory"


@pytest.mark.parametrize("kind", BAD_PATHS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_bad_output_path_is_one_line_exit_2(tmp_path, capsys, command, kind):
    argv, suffix = COMMANDS[command]
    o, says = bad_path(tmp_path, kind, suffix)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, _, err = run(capsys, argv(o) + (["--force"] if kind == "is-a-directory" else []))
    line = error_line(err)
    assert rc == 2 and says in line, err
    assert line.startswith(atomic.shown(o)[:60]), line  # names the path
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written, the directory kept


@pytest.mark.parametrize("command, kind", [
    ("build", "parent-is-a-file"), ("build", "dangling-link"), ("export-onnx", "name-too-long"),
    ("export-keras", "parent-is-a-file"), ("export-onnx", "dangling-link"), ("export-onnx", "is-a-directory"),
    ("export-saved_model", "missing-parent"),
])
def test_a_bad_output_path_of_build_and_export_is_one_line_exit_2(tmp_path, capsys, command, kind):
    argv, suffix = TF_COMMANDS[command]
    o, says = bad_path(tmp_path, kind, suffix)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc, _, err = run(capsys, argv(o) + (["--force"] if kind == "is-a-directory" else []))
    line = error_line(err)
    assert rc == 2 and says in line, err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_saved_model_onto_a_file_is_refused_and_the_file_kept(tmp_path, capsys):
    out = tmp_path / "sm"
    out.write_text(PRECIOUS)
    rc, _, err = run(capsys, ["export", "two_branch", "-o", str(out), "--format", "saved_model", "--force"])
    assert rc == 2 and "is a file" in error_line(err) and out.read_text() == PRECIOUS


# ---------------------------------------------------------------- failures while writing: exit 1


@pytest.mark.parametrize("command, failure", [(c, f) for c in COMMANDS for f in ("read-only", "disk-full")] + [
    ("build", "read-only"), ("build", "disk-full"), ("export-onnx", "read-only"), ("export-keras", "read-only"),
    ("export-keras", "disk-full"), ("export-saved_model", "read-only"), ("export-saved_model", "disk-full")])
def test_a_failed_write_is_one_line_exit_1_and_the_old_output_kept(tmp_path, capsys, monkeypatch, command, failure):
    argv, suffix = ALL[command]
    out = tmp_path / f"out{suffix}"
    if suffix:
        out.write_text(PRECIOUS)
    else:  # a SavedModel: an earlier one, a directory
        out.mkdir()
        (out / "saved_model.pb").write_text(PRECIOUS)
    (read_only if failure == "read-only" else disk_full)(monkeypatch, tmp_path)
    rc, _, err = run(capsys, argv(str(out)) + ["--force"])
    monkeypatch.undo()
    line = error_line(err)
    assert rc == 1, err
    assert ("Read-only file system" if failure == "read-only" else "No space left on device") in line, line
    assert str(out) in line, line
    assert (out.read_text() if suffix else (out / "saved_model.pb").read_text()) == PRECIOUS
    assert leftovers(tmp_path) == [], "half-written temporaries left"


# ---------------------------------------------------------------- --force and its wording


def test_force_is_worded_for_the_library_and_for_the_command_line(tmp_path, capsys):
    from archspec.exporting import export

    out = tmp_path / "m.onnx"
    out.write_text(PRECIOUS)
    with pytest.raises(SpecError) as e:
        export("two_branch", out)
    assert "force=True" in str(e.value) and "--force" not in str(e.value) and e.value.exit_code == 2
    rc, _, err = run(capsys, ["export", "two_branch", "-o", str(out)])
    assert rc == 2 and "pass --force" in err and "force=True" not in err
    rc, _, err = run(capsys, ["schema", "-o", str(out)])
    assert rc == 2 and "pass --force" in err and "force=True" not in err
    assert out.read_text() == PRECIOUS
    with pytest.raises(atomic.OutputExists, match="force=True"):
        atomic.write_text_atomic(out, "x", force=False)
    assert out.read_text() == PRECIOUS


def test_a_link_is_written_through_with_force_and_kept(tmp_path, capsys):
    real = tmp_path / "real.json"
    real.write_text(PRECIOUS)
    link = tmp_path / "link.json"
    link.symlink_to(real)
    rc, _, err = run(capsys, ["schema", "-o", str(link)])
    assert rc == 2 and "exists" in err and real.read_text() == PRECIOUS
    rc, _, _ = run(capsys, ["schema", "-o", str(link), "--force"])
    assert rc == 0 and link.is_symlink() and real.read_text().startswith("{")


# ---------------------------------------------------------------- the writer itself


def test_the_writer_fsyncs_the_file_and_the_directory(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    atomic.write_text_atomic(tmp_path / "x.txt", "hello")
    assert len(synced) == 2 and ".x.txt.tmp-" in synced[0] and synced[1] == str(tmp_path)
    assert (tmp_path / "x.txt").read_text() == "hello" and leftovers(tmp_path) == []


def test_one_atomic_writer_module():
    import archspec
    from archspec.backends.keras import files

    assert files.atomic_output is atomic.atomic_output  # every .keras file (build, export, train) goes through it
    package = Path(archspec.__file__).parent
    renames = [str(p.relative_to(package)) for p in package.rglob("*.py")
               if re.search(r"os\.replace\(|os\.rename\(|\.rename\(", p.read_text())]
    assert renames == [str(Path("core") / "atomic.py")]  # the one module that renames into place


def test_a_killed_writers_temporaries_are_removed_at_the_next_write(tmp_path, capsys):
    pid = dead_pid()
    out = tmp_path / "schema.json"
    stale = [tmp_path / f".schema.json.tmp-{pid}-0123abcd.json", tmp_path / f".schema.tmp-{pid}.json",
             tmp_path / f".schema.json.tmp-{pid}-0123abcd.json.f32.onnx"]
    for s in stale:
        s.write_text("half")
    live = tmp_path / f".schema.json.tmp-{os.getppid()}-0123abcd.json"  # a running process's: kept
    live.write_text("being written")
    other = tmp_path / f".other.json.tmp-{pid}-0123abcd.json"  # another output's: kept
    other.write_text("x")
    rc, _, _ = run(capsys, ["schema", "-o", str(out)])
    assert rc == 0 and out.is_file()
    assert not any(s.exists() for s in stale) and live.exists() and other.exists()


def test_a_killed_saved_model_exports_moved_aside_directory(tmp_path):
    pid = dead_pid()
    sm = tmp_path / "sm"
    # killed after the new SavedModel was renamed in: the moved-aside old one is stale
    sm.mkdir()
    old = tmp_path / f".sm.old-{pid}-0123abcd"
    old.mkdir()
    (old / "saved_model.pb").write_text("old")
    stage = tmp_path / f".sm.tmp-{pid}-89abcdef"
    stage.mkdir()
    atomic.remove_stale(sm)
    assert not old.exists() and not stage.exists() and sm.is_dir()
    # killed between moving the old one aside and renaming the new one in: it is put back
    sm.rmdir()
    old.mkdir()
    (old / "saved_model.pb").write_text("old")
    atomic.remove_stale(sm)
    assert (sm / "saved_model.pb").read_text() == "old" and not old.exists()


def test_export_removes_a_killed_exports_temporaries(tmp_path):
    from archspec.exporting import export

    pid = dead_pid()
    out = tmp_path / "m.onnx"
    stale = [tmp_path / f".m.onnx.tmp-{pid}-0123abcd", tmp_path / f".m.onnx.tmp-{pid}-0123abcd.f32.onnx"]
    for s in stale:
        s.write_text("half")
    export("two_branch", out, check=False)
    assert out.is_file() and leftovers(tmp_path) == []


# ---------------------------------------------------------------- garbage .keras files (18.14)


def garbage_keras(tmp_path: Path) -> list[Path]:
    g = tmp_path / "garbage.keras"
    g.write_bytes(b"not a zip at all\n" * 10)
    whole = tmp_path / "whole.zip"
    with zipfile.ZipFile(whole, "w") as z:
        z.writestr("config.json", "{}" * 1000)
        z.writestr("model.weights.h5", os.urandom(4000))
    t = tmp_path / "truncated.keras"
    data = whole.read_bytes()
    t.write_bytes(data[: len(data) // 2])
    e = tmp_path / "empty.keras"
    e.write_bytes(b"")
    return [g, t, e]


def test_build_weights_from_a_garbage_keras_file_is_one_line_exit_2(tmp_path, capsys):
    for bad in garbage_keras(tmp_path):
        out = tmp_path / "m.keras"
        rc, _, err = run(capsys, ["build", "two_branch", "-o", str(out), "--weights", str(bad)])
        line = error_line(err)  # train's check of --weights (archspec.training.rundir.check_weights_file)
        assert rc == 2 and line.startswith(f"{bad}: ") and "not a .keras file" in line, err
        assert not out.exists() and leftovers(tmp_path) == []


def test_export_of_a_garbage_keras_file_is_one_line_exit_2(tmp_path, capsys):
    for bad in garbage_keras(tmp_path):
        rc, _, err = run(capsys, ["export", str(bad), "-o", str(tmp_path / "m.onnx")])
        line = error_line(err)
        assert rc == 2 and line.startswith(f"{bad}: cannot load as ") and "not a .keras file" in line, err
        assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- quiet libraries (18.15)


def test_the_quantizers_root_logger_warnings_are_not_printed(tmp_path, monkeypatch, capfd):
    """ONNX Runtime's quantizer logs its advice on the root logger (``WARNING:root:...``, 22-55
    lines an int8 export); stand in for it with one that does just that."""
    import onnxruntime.quantization as q

    real = q.quantize_dynamic

    def chatty(*a, **k):
        logging.warning("Please consider to run pre-processing before quantization.")
        logging.getLogger("onnxruntime").warning("another piece of advice")
        return real(*a, **k)

    monkeypatch.setattr(q, "quantize_dynamic", chatty)
    monkeypatch.delenv("ARCHSPEC_DEBUG", raising=False)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # restored after the test: no handler on a closed stream
    rc = main(["export", "two_branch", "-o", str(tmp_path / "m.onnx"), "--quantize", "int8-dynamic", "--no-check"])
    err = capfd.readouterr().err
    assert rc == 0 and (tmp_path / "m.onnx").is_file()
    assert "pre-processing" not in err and "another piece" not in err, err
    logging.error("errors still show")
    assert "errors still show" in capfd.readouterr().err


def test_build_weights_does_not_print_retracing_warnings(tmp_path, monkeypatch, capfd):
    from archspec.backends.keras import weights as keras_weights  # the one loader build --weights calls

    w = tmp_path / "w.keras"
    assert main(["build", "two_branch", "-o", str(w)]) == 0
    real = keras_weights.load_weights
    calls = []

    def retracing(*a, **k):  # what TensorFlow logs when Keras restores many variables
        logging.getLogger("tensorflow").warning("5 out of the last 5 calls to <function f> triggered tf.function "
                                                "retracing.")
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(keras_weights, "load_weights", retracing)
    monkeypatch.delenv("ARCHSPEC_DEBUG", raising=False)
    capfd.readouterr()
    rc = main(["build", "two_branch", "-o", str(tmp_path / "m.keras"), "--weights", str(w)])
    err = capfd.readouterr().err
    assert rc == 0 and "retracing" not in err, err
    assert calls == [1]  # the warning was logged (by the loader build --weights uses) and not shown
