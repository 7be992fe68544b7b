"""Typed errors. The library raises these; the CLI turns them into one line and an exit code.

`SpecError` is bad input (exit 2): it carries where the problem is (file, line, column),
the dotted path inside the spec (`stages[2].blocks[0].filters`) and a message that
repeats the bad value. `ArchspecError` is any other failure while running (exit 1).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass


class ArchspecError(Exception):
    """A failure while running a command (exit code 1)."""

    exit_code = 1


@dataclass(frozen=True)
class Location:
    """Where something sits in a source: a file (or `--set`), a 1-based line and column."""

    source: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.source
        return f"{self.source}:{self.line}:{self.column}"


class SpecError(ArchspecError):
    """Bad input: a spec, an override or a file that cannot be used (exit code 2).

    Args:
        message: what is wrong, repeating the bad value ("must be > 0 (got -3)").
        location: where the problem is, when known.
        path: dotted path inside the spec, e.g. ``stages[2].blocks[0].filters``.
    """

    exit_code = 2

    def __init__(self, message: str, location: Location | None = None, path: str | None = None):
        self.message = message
        self.location = location
        self.path = path
        super().__init__(self.one_line())

    def one_line(self) -> str:
        parts = []
        if self.location is not None:
            parts.append(str(self.location))
        if self.path:
            parts.append(self.path)
        parts.append(self.message)
        return " ".join(": ".join(parts).splitlines())  # one line, whatever a message holds


class SpecErrors(SpecError):
    """Several independent problems found in one spec; each is printed on its own line
    (`lines()`); as an exception it reads as the first of them."""

    def __init__(self, errors: list[SpecError]):
        self.errors = list(errors)
        super().__init__(self.errors[0].message, self.errors[0].location, self.errors[0].path)

    def lines(self) -> list[str]:
        return [e.one_line() for e in self.errors]


class MissingDependency(ArchspecError):
    """An optional heavy dependency (TensorFlow, tf2onnx, ...) is not installed."""


def resource_words(exc: BaseException) -> str | None:
    """What the machine ran out of, in words, for the failures no check can foresee: memory
    (MemoryError, a backend's ResourceExhaustedError / out-of-memory) or disk space."""
    name, msg = type(exc).__name__, " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left on device" in msg:
        where = f" writing {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        return f"no space left on the device{where}; free some space and run again (a run resumes with --resume)"
    if isinstance(exc, MemoryError) or name in ("ResourceExhaustedError", "OutOfMemoryError") or \
            name == "XlaRuntimeError" and "RESOURCE_EXHAUSTED" in msg:
        return ("out of memory; the model or the batch is too large for this machine (reduce the input size, the "
                "widths or data.batch_size; `archspec inspect` shows the weights and activations it needs)")
    return None


def internal_error_words(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` of an unexpected exception on one bounded line (a framework's message
    can hold tensors, paths and newlines; only its start is shown)."""
    msg = " ".join(str(exc).split())
    if len(msg) > limit:
        msg = msg[:limit] + " ..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def error_lines(exc: BaseException, force_option: str = "--force") -> tuple[int, list[str]]:
    """How the command line reports a failure: (exit code, the lines for stderr). A SpecError
    is its located line(s), exit 2 (an existing output names `force_option` as the way to
    replace it); an ArchspecError `archspec: error: ...` with its exit code; running out of
    memory or disk space its words, exit 1; Ctrl-C `archspec: interrupted`, exit 130; a closed
    pipe (``archspec list | head``) nothing, exit 0; anything else one bounded line, exit 1."""
    if isinstance(exc, KeyboardInterrupt):
        return 130, ["archspec: interrupted"]
    if isinstance(exc, BrokenPipeError):
        return 0, []
    if isinstance(exc, SpecError):
        if hasattr(exc, "reworded"):  # core.atomic.OutputExists
            exc = exc.reworded(force_option)
        return 2, exc.lines() if isinstance(exc, SpecErrors) else [exc.one_line()]
    if isinstance(exc, ArchspecError):
        return exc.exit_code, [f"archspec: error: {exc}"]
    resource = resource_words(exc)
    if resource:
        return 1, [f"archspec: error: {resource}"]
    return 1, [f"archspec: internal error: {internal_error_words(exc)}; rerun with --debug for the traceback"]
