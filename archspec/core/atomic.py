"""The one writer of archspec's outputs (files and directories).

Every output is produced under a hidden temporary name beside its target
(``.NAME.tmp-PID-XXXXXXXX[.suffix]``), flushed to disk (``fsync`` of the file, or of every
file and directory of a directory tree), renamed onto the target, and the parent directory
is fsync'ed, so the target is either untouched or complete, also after a power cut. An
existing directory (a SavedModel) is moved aside (``.NAME.old-PID-XXXXXXXX``) first and put
back if the rename fails.

The rules, the same for every command:

- a missing parent directory is refused (``directory 'x' does not exist``): an output is
  never written into a directory the user did not make (a typo would create a tree);
- an existing target is replaced only with ``force`` (`OutputExists`, worded ``--force`` on
  the command line and ``force=True`` in the library); a directory is never replaced by a
  file, nor a file by a directory;
- a symbolic link is written through (its target is replaced), and a link to nothing is
  refused;
- an OS error is one line naming the path: `SpecError` (exit 2) for a bad path (not a
  directory, is a directory, name too long, a loop of links, no such directory), else
  `ArchspecError` (exit 1: a read-only file system, a full disk, permission denied, I/O);
- temporaries and moved-aside directories that a killed process left next to the target are
  removed when a write of that target starts (a moved-aside directory whose target is gone
  is put back instead: it is the user's previous output).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import uuid
from pathlib import Path

from .errors import ArchspecError, Location, SpecError

#: OS errors that mean the path the user gave cannot be an output (exit 2); any other is a
#: failure while writing (exit 1)
BAD_PATH_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOENT,
                             errno.EEXIST, errno.EINVAL})


class OutputExists(SpecError):
    """The output exists and `force` was not given (exit 2). `option` words the way to
    replace it: ``force=True`` (the library) or ``--force`` (the command line)."""

    def __init__(self, path, option: str = "force=True"):
        self.output = Path(os.fspath(path))
        self.option = option
        super().__init__(f"exists; pass {option} to replace it", Location(shown(self.output)))

    def reworded(self, option: str) -> "OutputExists":
        return OutputExists(self.output, option)


def shown(path) -> str:
    """`path` for a message: long ones (a 5,000-character name) shortened to one readable line."""
    s = os.fspath(path)
    return s if len(s) <= 160 else f"{s[:100]}...{s[-40:]} ({len(s):,} characters)"


def os_error(path, exc: OSError, doing: str = "cannot write") -> ArchspecError:
    """`exc` as one line naming `path`: a SpecError (exit 2) for a bad path, else an
    ArchspecError (exit 1)."""
    words = exc.strerror or type(exc).__name__
    if exc.errno in BAD_PATH_ERRNOS:
        return SpecError(f"{doing}: {words}", Location(shown(path)))
    return ArchspecError(f"{shown(path)}: {doing}: {words}")


def check_output(path, force: bool, *, directory: bool = False, option: str = "force=True") -> Path:
    """Check an output path before any work is done; returns the path to write (a symbolic
    link's target). Bad paths are SpecErrors (exit 2); an existing output without `force`
    is `OutputExists`. `directory`: the output is a directory (a SavedModel)."""
    p = Path(os.fspath(path))
    if not p.name or p.name in (".", ".."):
        raise SpecError("an output path must name a file", Location(shown(path) or "''"))
    target = _through_links(p)
    try:
        st = os.stat(target)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _bad_path(p, exc) from None
    if st is None:
        parent = target.parent
        try:
            pst = os.stat(parent)
        except FileNotFoundError:
            raise SpecError(f"no such directory {str(parent)!r} (an output's directory is not created: make it "
                            "first)",
                            Location(shown(p))) from None
        except OSError as exc:
            raise _bad_path(p, exc) from None
        if not _isdir(pst):
            raise SpecError(f"{str(parent)!r} is not a directory", Location(shown(p)))
        return target
    if _isdir(st) and not directory:
        raise SpecError("is a directory; name a file", Location(shown(p)))
    if not _isdir(st) and directory:
        raise SpecError("is a file; this output is a directory (name a new path)", Location(shown(p)))
    if not force:
        raise OutputExists(p, option)
    if directory and not _replaceable_directory(target):
        raise SpecError("is a directory that is neither a SavedModel (no saved_model.pb) nor empty: replacing it "
                        "would delete what it holds; name a new path", Location(shown(p)))
    return target


def _replaceable_directory(d: Path) -> bool:
    """What `force` may replace with a directory output: a SavedModel or an empty directory
    (never, say, a data set or the working directory named by mistake)."""
    try:
        entries = [e.name for e in os.scandir(d)]
    except OSError:
        return False
    return not entries or "saved_model.pb" in entries or "saved_model.pbtxt" in entries


def _isdir(st) -> bool:
    import stat

    return stat.S_ISDIR(st.st_mode)


def _bad_path(p: Path, exc: OSError) -> ArchspecError:
    if exc.errno == errno.ENOTDIR:
        return SpecError("a parent of this path is a file, not a directory", Location(shown(p)))
    return os_error(p, exc, "cannot use as an output")


def _through_links(p: Path) -> Path:
    """A symbolic link's final target (a link to nothing is a SpecError)."""
    seen = 0
    while True:
        try:
            if not os.path.islink(p):
                return p
        except OSError:
            return p
        if seen > 40:
            raise SpecError("too many levels of symbolic links", Location(shown(p)))
        seen += 1
        link = Path(os.readlink(p))
        nxt = link if link.is_absolute() else p.parent / link
        if not os.path.lexists(nxt):
            raise SpecError(f"is a symbolic link to {str(link)!r}, which does not exist", Location(shown(p)))
        p = nxt


# ---------------------------------------------------------------- staging and committing


def staging_path(target, suffix: str | None = None) -> Path:
    """A fresh temporary name beside `target` (with `suffix`, default the target's: Keras
    wants ``.keras``)."""
    target = Path(target)
    suffix = target.suffix if suffix is None else suffix
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def remove_stale(target) -> None:
    """Remove what an earlier, killed process left beside `target`: its temporaries
    (``.NAME.tmp-PID-*``, also side files and the older ``.STEM.tmp-PID.SUFFIX``) and
    moved-aside directories (``.NAME.old-*``), when that process is gone. A moved-aside
    directory whose target is missing is the user's previous output: it is put back."""
    target = Path(target)
    parent = target.parent
    name = re.escape(target.name)
    tmp = re.compile(rf"^\.(?:{name}\.tmp-(\d+)(?:-[0-9a-f]{{8}})?.*|{re.escape(target.stem)}\.tmp-(\d+)"
                     rf"{re.escape(target.suffix)})$")
    old = re.compile(rf"^\.{name}\.old-(?:(\d+)-)?[0-9a-f]{{8}}$")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    olds = []
    for e in entries:
        m = tmp.match(e.name)
        if m and not _alive(int(m.group(1) or m.group(2))):
            _quietly_remove(Path(e.path))
            continue
        m = old.match(e.name)
        if m and (m.group(1) is None or not _alive(int(m.group(1)))):
            olds.append(Path(e.path))
    for o in sorted(olds, key=lambda q: q.stat().st_mtime if q.exists() else 0, reverse=True):
        if not os.path.lexists(target):  # killed between moving it aside and renaming the new one in
            with contextlib.suppress(OSError):
                os.rename(o, target)
            continue  # put back, or left where it is when that failed: never removed
        _quietly_remove(o)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _quietly_remove(p: Path) -> None:
    with contextlib.suppress(OSError):
        remove(p)


def remove(p) -> None:
    """Remove a file, a link or a directory tree; a missing one is fine."""
    p = Path(p)
    with contextlib.suppress(FileNotFoundError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def size(p) -> int:
    p = Path(p)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def fsync_tree(p) -> None:
    """fsync a file, or every file and directory of a directory tree."""
    p = Path(p)
    if p.is_dir():
        for root, dirs, names in os.walk(p):
            for n in names:
                _fsync(Path(root) / n)
            _fsync_dir(Path(root))
    else:
        _fsync(p)


def _fsync(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(p: Path) -> None:
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a directory: nothing to do there
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def commit(tmp, target, force: bool, option: str = "force=True") -> None:
    """fsync the staged `tmp` and rename it onto `target`; an existing target only with
    `force` (a directory is moved aside first, put back if the rename fails, then removed);
    then fsync the directory. OS errors are one line naming `target`."""
    tmp, target = Path(tmp), Path(target)
    try:
        fsync_tree(tmp)
        if os.path.lexists(target):
            if not force:
                raise OutputExists(target, option)
            if tmp.is_dir() != (target.is_dir() and not target.is_symlink()):
                raise SpecError("is a directory; name a file" if target.is_dir() else
                                "is a file; this output is a directory (name a new path)", Location(shown(target)))
            if not tmp.is_dir():
                os.replace(tmp, target)
            else:
                backup = target.with_name(f".{target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
                os.rename(target, backup)
                try:
                    os.rename(tmp, target)
                except BaseException:
                    os.rename(backup, target)
                    raise
                _fsync_dir(target.parent)
                _quietly_remove(backup)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except OSError as exc:
        raise os_error(target, exc) from None


@contextlib.contextmanager
def atomic_output(path, *, force: bool = True, directory: bool = False, suffix: str | None = None,
                  option: str = "force=True"):
    """Yield a temporary path beside `path` to write the output to (a file, or with
    `directory` a directory tree); on success commit it (`commit`), on any failure remove
    it, so `path` is either untouched or complete. Stale temporaries of `path` are removed
    first. `force` (default True: callers that own the file, a run directory's) lets it
    replace an existing `path`. A symbolic link is written through. OS errors are one line
    naming `path` (`os_error`)."""
    target = _through_links(Path(os.fspath(path)))
    remove_stale(target)
    tmp = staging_path(target, suffix)
    try:
        try:
            yield tmp
        except OSError as exc:
            raise os_error(path, exc) from None
        commit(tmp, target, force, option)
    finally:
        if os.path.lexists(tmp):
            _quietly_remove(tmp)


def write_bytes_atomic(path, data: bytes, *, force: bool = True, option: str = "force=True") -> None:
    """`data` into `path` through `atomic_output`."""
    with atomic_output(path, force=force, option=option) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)


def write_text_atomic(path, text: str, *, force: bool = True, option: str = "force=True") -> None:
    """`text` (UTF-8) into `path` through `atomic_output`."""
    write_bytes_atomic(path, text.encode("utf-8"), force=force, option=option)
