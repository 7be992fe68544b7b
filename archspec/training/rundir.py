"""The files of a run directory as its readers see them (`train --resume`, `evaluate RUN`,
`predict RUN`, `export RUN`), the `--out` path of a new run, and the initial weights of
`train --weights`: each checked before it is used, so that a broken or hostile file is one
line naming it (a SpecError, exit 2), never a JSONDecodeError/BadZipFile traceback.

No TensorFlow or Keras import at module level (evaluate and export call the readers).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import stat
from pathlib import Path

from ..core.errors import ArchspecError, Location, SpecError

#: a run directory's JSON and CSV files are small; a larger one is not ours
MAX_BYTES = 16 * 1024 * 1024

#: OS errors that mean the path the user gave cannot be a run directory (exit 2); any other
#: (read-only file system, permission, full disk, I/O) is a failure while running (exit 1)
BAD_PATH_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOENT,
                             errno.EEXIST, errno.EINVAL})


def shown(path) -> str:
    """`path` for a message: a long one (a 5,000-character name) shortened to one readable line."""
    s = os.fspath(path)
    return s if len(s) <= 160 else f"{s[:100]}...{s[-40:]} ({len(s):,} characters)"


def where(path) -> Location:
    return Location(shown(path))


def os_error(path, exc: OSError, doing: str) -> ArchspecError:
    """`exc` as one line naming `path`: a SpecError (exit 2) for a bad path, else an
    ArchspecError (exit 1)."""
    words = exc.strerror or type(exc).__name__
    if exc.errno in BAD_PATH_ERRNOS:
        return SpecError(f"{doing}: {words}", where(path))
    return ArchspecError(f"{shown(path)}: {doing}: {words}")


# ---------------------------------------------------------------- --out of a new run


def check_new_run_path(out: Path) -> None:
    """What `train --out` can be, checked before any work: a path whose nearest existing
    ancestor is a directory (missing parents are made later), not a link to nothing, and
    not a name the file system refuses (too long, a loop of links). Whether it exists is
    the caller's business (--force)."""
    out = Path(out)
    try:
        os.lstat(out)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise SpecError(f"{_file_parent(out)!r}, a parent of this path, is a file, not a directory",
                            where(out)) from None
        raise os_error(out, exc, "cannot be a run directory") from None
    else:
        if out.is_symlink() and not os.path.exists(out):
            raise SpecError(f"is a symbolic link to {os.readlink(out)!r}, which does not exist: name a new "
                            f"directory, or the directory itself", where(out))
        return
    parent = _file_parent(out)
    if parent is not None:
        raise SpecError(f"{parent!r}, a parent of this path, is a file, not a directory", where(out))


def _file_parent(out: Path) -> str | None:
    """The nearest existing ancestor of `out` when it is not a directory, else None."""
    for p in Path(os.path.abspath(out)).parents:
        try:
            st = os.stat(p)
        except OSError:
            continue
        return None if stat.S_ISDIR(st.st_mode) else shown(p)
    return None


# ---------------------------------------------------------------- reading a run's files


def _read_text(path: Path, what: str) -> str:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise SpecError(f"not a regular file ({what})", where(path))
        if st.st_size > MAX_BYTES:
            raise SpecError(f"{st.st_size:,} bytes: larger than a run directory's {what} can be "
                            f"({MAX_BYTES:,} bytes at most)", where(path))
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise os_error(path, exc, f"cannot read the {what}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text (byte {exc.start}); the {what} is damaged", where(path)) from None


def read_json(path, what: str):
    """The JSON document of a run directory's file `path`, or a SpecError naming it."""
    path = Path(path)
    text = _read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpecError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); the {what} is "
                        f"damaged", where(path)) from None
    except RecursionError:
        raise SpecError(f"not a {what}: nested too deeply", where(path)) from None


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_run_json(run) -> dict:
    """RUN/run.json, checked: what resume and export read from it has the type they expect."""
    path = Path(run) / "run.json"
    doc = read_json(path, "run.json")

    def bad(key, want):
        value = doc.get(key)
        text = json.dumps(value)[:60]
        return SpecError(f"{key!r} must be {want} (got {text}); the run.json is damaged", where(path))

    if not isinstance(doc, dict):
        raise SpecError(f"not a run.json: a JSON object is expected, got {type(doc).__name__}", where(path))
    if not isinstance(doc.get("data"), str) or not doc["data"]:
        raise bad("data", "the path of the training data")
    for key in ("epochs",):
        if doc.get(key) is not None and not (_is_int(doc[key]) and doc[key] > 0):
            raise bad(key, "a positive integer or null")
    if doc.get("distribute") not in (None, "none", "mirrored", "multi_worker"):
        raise bad("distribute", "null, none, mirrored or multi_worker")
    for key in ("spec", "recipe", "weights", "spec_sha256"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise bad(key, "a string")
    size = doc.get("image_size")
    if size is not None and not (isinstance(size, list) and len(size) == 2 and all(_is_int(s) and s > 0
                                                                                  for s in size)):
        raise bad("image_size", "[height, width]")
    phases = doc.get("phases")
    if phases is not None and not (isinstance(phases, list) and all(
            isinstance(p, dict) and isinstance(p.get("name"), str) and _is_int(p.get("start"))
            and _is_int(p.get("end")) for p in phases)):
        raise bad("phases", "a list of {name, start, end}")
    stopped = doc.get("stopped_early", [])
    if not (isinstance(stopped, list) and all(isinstance(s, str) for s in stopped)):
        raise bad("stopped_early", "a list of phase names")
    return doc


def read_history(run) -> list[dict]:
    """RUN/history.csv as rows ({epoch: int, phase: str, the rest: float or None}), checked:
    a damaged file is one line naming its line and column, not a ValueError."""
    path = Path(run) / "history.csv"
    if not os.path.lexists(path):
        return []
    text = _read_text(path, "history.csv")
    if text and not text.endswith("\n"):  # archspec writes whole lines, atomically: a cut file
        raise SpecError(f"line {text.count(chr(10)) + 1} ends without a newline: the history.csv is truncated",
                        where(path))
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            return []
        if "epoch" not in header or len(set(header)) != len(header):
            raise SpecError("not a history.csv of archspec train: the first line names no 'epoch' column "
                            "(or a column twice)", where(path))
        rows = []
        for cells in reader:
            line = reader.line_num
            if not cells:
                continue
            if len(cells) != len(header):
                raise SpecError(f"line {line}: {len(cells)} cells for {len(header)} columns; the history.csv is "
                                f"damaged", where(path))
            row = {}
            for key, value in zip(header, cells):
                row[key] = _cell(path, line, key, value)
            rows.append(row)
    except csv.Error as exc:
        raise SpecError(f"line {reader.line_num}: {exc}; the history.csv is damaged", where(path)) from None
    return rows


def _cell(path: Path, line: int, key: str, value: str):
    if key == "phase":
        return value
    if value == "":
        if key == "epoch":
            raise SpecError(f"line {line}: no epoch; the history.csv is damaged", where(path))
        return None
    try:
        if key == "epoch":
            n = int(value)
            if n < 0:
                raise ValueError
            return n
        return float(value)
    except ValueError:
        raise SpecError(f"line {line}: column {key!r}: {value[:40]!r} is not a "
                        f"{'epoch number' if key == 'epoch' else 'number'}; the history.csv is damaged",
                        where(path)) from None


def check_history(run, rows: list[dict], completed: int, checkpoint: str | None) -> None:
    """On resume: history.csv has the row of the last epoch the checkpoint completed (each
    row is written before its epoch's checkpoint, so a missing one means the file lost it:
    truncated, or rows removed). Rebuilding it is not possible (the metrics are not in the
    checkpoint), and resuming would write a metrics.json that says fewer epochs than
    final.keras holds: a SpecError naming the file (exit 2), before anything is written."""
    if completed <= 0 or any(r.get("epoch") == completed - 1 for r in rows):
        return
    path = Path(run) / "history.csv"
    have = (f"its last row is epoch {max(int(r['epoch']) for r in rows) + 1}" if rows else "it has no rows")
    ck = Path(checkpoint).name if checkpoint else "the latest checkpoint"
    raise SpecError(f"holds no row for epoch {completed} ({have}) but the checkpoint {ck} has {completed} epoch"
                    f"{'s' if completed != 1 else ''} complete: the history.csv is truncated or damaged, and the "
                    f"run cannot resume from it (nothing was changed)", where(path))


def check_checkpoint(prefix: str) -> None:
    """Every tensor of the checkpoint `prefix` reads back (its .index, then each value from
    its .data shards, whose checksums TensorFlow verifies): a truncated or damaged file is
    one line naming it (SpecError, exit 2) before a resume restores any of it, never an
    IndexError from TensorFlow's reader halfway through a restore."""
    import glob

    import tensorflow as tf

    from ..core.progress import short

    def why(exc) -> str:
        text = short(getattr(exc, "message", None) or exc, 120)
        return text if isinstance(exc, IndexError) else f"{type(exc).__name__}: {text}"

    try:
        reader = tf.train.load_checkpoint(prefix)
        names = sorted(reader.get_variable_to_dtype_map())
    except Exception as exc:  # noqa: BLE001 - TensorFlow's reader raises many kinds
        raise SpecError(f"cannot read the checkpoint's index ({why(exc)}): the file is damaged, and the run cannot "
                        f"resume from it (nothing was changed)", where(prefix + ".index")) from None
    shards = sorted(glob.glob(glob.escape(prefix) + ".data-*"))
    for name in names:
        try:
            reader.get_tensor(name)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001
            data = shards[0] if len(shards) == 1 else prefix + ".data-*"
            raise SpecError(f"cannot read the checkpoint ({why(exc)}): the file is truncated or damaged, and the run "
                            f"cannot resume from it (nothing was changed)", where(data)) from None


# ---------------------------------------------------------------- initial weights


# One reader and one loader of weights files for every command: archspec.backends.keras.weights
# (the static report, the strict policy, the formats); what training needs of it is here.


def check_weights_file(path) -> None:
    """`train --weights FILE` before anything is made: a SpecError naming the file when it is
    not a weights file (`archspec.backends.keras.weights.check_weights_file`)."""
    from ..backends.keras.weights import check_weights_file as check

    check(path)


def classifier_layers(graph) -> list[str]:
    """The layers holding each output's classifier weights (the ones re-initialised when
    head.classes differs from a weights file)."""
    from ..backends.keras.weights import classifier_layers as heads

    return heads(graph)


def check_initial_weights(graph, path, skip=()):
    """`train --weights FILE` before the run directory is made: the static report of `path`
    against `graph` (no model built), a SpecError naming the layers when the policy refuses
    the load. Returns the report."""
    from ..backends.keras.weights import weights_report

    report = weights_report(graph, Path(os.fspath(path)), skip)
    if not report.loadable:
        raise report.error()
    if not report.loading:
        raise SpecError("holds weights for none of the spec's layers: not weights of this network", where(path))
    return report


def load_initial_weights(model, graph, path, skip=(), say=lambda m: None):
    """Load `train --weights` into `model` (built from `graph`) by the one loader, strictly:
    every weighted layer loads, except the classifier when head.classes differs (re-initialised),
    a stem over other input channels (adapted) and the `skip` globs (left at init); anything
    else is a SpecError, one line naming the file and the layers, before any layer changes.
    The report's summary line goes to `say`."""
    from ..backends.keras.weights import load_weights

    return load_weights(model, graph, Path(os.fspath(path)), skip=skip,
                        say=lambda line: say(line.replace("weights from", "initial weights from", 1)))
