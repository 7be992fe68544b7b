"""Issue 18 (trust, part 2): hostile and broken inputs end in one line, never a traceback,
a hang, code run or a file leaked."""

from __future__ import annotations

import pytest

from archspec import cli
from archspec.cli import main


# ---------------------------------------------------------------- the guard at the top


@pytest.mark.parametrize("exc", [ValueError("bad\nvalue " + "x" * 2000), KeyError("k"), MemoryError(),
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
