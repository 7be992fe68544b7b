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
import zipfile
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


# ---------------------------------------------------------------- initial weights


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _is_hdf5(fh) -> bool:
    """HDF5's signature at offset 0, 512, 1024, ... (a user block may precede it)."""
    offset = 0
    while True:
        fh.seek(offset)
        head = fh.read(8)
        if head == HDF5_SIGNATURE:
            return True
        if len(head) < 8 or offset > 1 << 20:
            return False
        offset = 512 if offset == 0 else offset * 2


def check_weights_file(path) -> None:
    """`train --weights FILE` before anything is made: a .weights.h5 or legacy .h5 is an HDF5
    file, a .keras file a complete zip archive with the model's weights in HDF5. Anything
    else (garbage, a truncated download, another format under the suffix) is a SpecError
    naming the file."""
    p = Path(os.fspath(path))
    try:
        st = os.stat(p)
    except OSError as exc:
        raise os_error(p, exc, "cannot read the weights") from None
    if not stat.S_ISREG(st.st_mode):
        raise SpecError("not a regular file (weights)", where(p))
    name = p.name.lower()
    try:
        if name.endswith(".keras"):
            try:
                with zipfile.ZipFile(p) as z:
                    if "model.weights.h5" not in z.namelist():
                        raise SpecError("not a .keras file with weights (the archive holds no model.weights.h5)",
                                        where(p))
                    with z.open("model.weights.h5") as fh:
                        ok = _is_hdf5(fh)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
                raise SpecError(f"not a .keras file (not a complete zip archive: truncated, or another format: "
                                f"{str(exc)[:80]})", where(p)) from None
            if not ok:
                raise SpecError("not a .keras file (its model.weights.h5 is not HDF5)", where(p))
        elif name.endswith((".h5", ".hdf5")):
            with open(p, "rb") as fh:
                if not _is_hdf5(fh):
                    raise SpecError("not an HDF5 file (no HDF5 signature): weights are a Keras .weights.h5, a "
                                    "keras.applications .h5 or a .keras file", where(p))
        else:
            raise SpecError(f"weights are a Keras .weights.h5, a keras.applications .h5 or a .keras file (got "
                            f"{p.suffix or 'no suffix'!r})", where(p))
    except OSError as exc:
        raise os_error(p, exc, "cannot read the weights") from None


def weight_shapes(path) -> dict[str, list[tuple]] | None:
    """The weight shapes per layer name that a weights file holds, or None when its layout
    is not one we know: a legacy .h5 (`layer_names`, `weight_names`), or Keras 3's
    .weights.h5 / a .keras file's model.weights.h5 (groups `vars` named by layer)."""
    import h5py

    p = Path(os.fspath(path))
    try:
        if p.name.lower().endswith(".keras"):
            with zipfile.ZipFile(p) as z, z.open("model.weights.h5") as member:
                with h5py.File(io.BytesIO(member.read()), "r") as f:
                    return _shapes(f)
        with h5py.File(p, "r") as f:
            return _shapes(f)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise SpecError(f"not a readable weights file (truncated or damaged: {' '.join(str(exc).split())[:80]})",
                        where(p)) from None


def _text(v) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _shapes(f) -> dict[str, list[tuple]] | None:
    import h5py

    group = f["model_weights"] if "model_weights" in f else f
    if "layer_names" in group.attrs:  # legacy: by layer name
        out = {}
        for layer in group.attrs["layer_names"]:
            g = group[_text(layer)]
            out[_text(layer)] = [tuple(g[_text(w)].shape) for w in g.attrs.get("weight_names", [])]
        return out
    out: dict[str, list[tuple]] = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and "name" in obj.attrs:
            keys = sorted((k for k in obj.keys() if k.isdigit() and isinstance(obj[k], h5py.Dataset)), key=int)
            if keys:
                out.setdefault(_text(obj.attrs["name"]), [tuple(obj[k].shape) for k in keys])
    f.visititems(visit)
    return out or None


def _fmt(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _first_difference(mine: list[tuple], theirs: list[tuple]) -> str:
    for a, b in zip(theirs, mine):
        if tuple(a) != tuple(b):
            return f"{_fmt(a)} in the file, {_fmt(b)} in the model"
    return f"{len(theirs)} weights in the file, {len(mine)} in the model"


def load_initial_weights(kb, model, path, classifiers: list[str], say) -> None:
    """Load `train --weights` into `model` strictly: every layer whose weights the file
    holds under its name must have the same shapes, except the classifiers (`classifiers`:
    a new head of another width is re-initialised, and said so). A mismatch is one line
    naming the first mismatching layer, both shapes and how many others differ (exit 2);
    Keras' own warnings (which print the arrays) are not shown."""
    import warnings

    p = Path(os.fspath(path))
    check_weights_file(p)
    shapes = weight_shapes(p)
    heads, others, loaded, absent = [], [], 0, []
    for layer in model.layers:
        mine = [tuple(w.shape) for w in layer.weights]
        if not mine:
            continue
        theirs = shapes.get(layer.name) if shapes is not None else None
        if theirs is None:
            absent.append(layer.name)
        elif [tuple(s) for s in theirs] == mine:
            loaded += 1
        elif layer.name in classifiers:
            heads.append((layer.name, _first_difference(mine, theirs)))
        else:
            others.append((layer.name, _first_difference(mine, theirs)))
    if others:
        name, diff = others[0]
        more = len(others) - 1
        raise SpecError(f"layer {name!r} has weights of shape {diff}" + (
            f" (and {more} other layer{'s' if more > 1 else ''} with other shapes: "
            f"{', '.join(n for n, _ in others[1:4])}{', ...' if more > 3 else ''})" if more else "")
            + "; the spec must be the network the weights were saved from (only the classifier may differ: it is "
              "re-initialised)", where(p))
    if shapes is not None and not loaded:
        raise SpecError("holds weights for none of the model's layers (no layer of the same name and shapes): "
                        "not weights of this network", where(p))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            kb.load_weights(model, str(p), skip_mismatch=True)
        except ArchspecError as exc:
            raise ArchspecError(" ".join(str(exc).split())[:300]) from None
    if shapes is None:  # a layout we cannot read: Keras' word on what it skipped, on one line
        skipped = [" ".join(str(w.message).split()) for w in caught
                   if "could not be loaded" in str(w.message) or "Skipping loading" in str(w.message)]
        if skipped:
            raise SpecError(f"not every layer loaded: {skipped[0][:200]}", where(p))
        say(f"initial weights from {shown(p)}")
        return
    say(f"initial weights from {shown(p)}: {loaded} layers loaded"
        + "".join(f"; classifier {n!r} re-initialised ({d})" for n, d in heads)
        + (f"; {len(absent)} layers not in the file keep their initial weights ({', '.join(absent[:5])}"
           f"{', ...' if len(absent) > 5 else ''})" if absent else ""))


def classifier_layers(graph) -> list[str]:
    """The layers holding each output's classifier weights: from each output back through
    weightless nodes (an activation) to the first node with weights."""
    names = []
    for o in graph.outputs:
        node = graph.node(o)
        while node is not None and not node.params and node.inputs:
            node = graph.node(node.inputs[0])
        if node is not None and node.params:
            names.append(node.name)
    return names
