"""Fuzzing weights files (hypothesis, structure-aware; issue 26): a small valid file of
two_branch (Keras 3 .weights.h5, legacy .h5, .keras) gets one to three mutations of its
groups, attributes, dtypes and links (a dataset of another dtype or value, a group where an
array was, soft / external links, virtual datasets, attributes renamed or of another type,
copies and hard links that name a layer twice, truncation), then goes through `archspec
weights` and `archspec build --weights` in-process. The only outcomes allowed: exit 0 from
both with a model that loads and holds finite weights, or exit 2 from both with one clean line
(build's, and the report's when it refuses with a message); never exit 1, a traceback, a file
outside the one named opened (the links point at a watched FIFO), or a disagreement.

The seed is fixed (derandomized) under the "ci" profile of conftest.py; a long campaign:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz_weights.py -p no:cacheprovider -n 0
"""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from archspec.cli import main
from test_weights import save
from test_weights_hostile import Fifo

SPEC = "two_branch"
FORMATS = [".weights.h5", ".h5", ".keras"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """two_branch's weights saved once in each format (the .keras's HDF5 member apart), the
    FIFO that external links and virtual sources point at, and a scratch directory."""
    from archspec.api import build

    d = tmp_path_factory.mktemp("fuzz_weights")
    model = build(SPEC, seed=1)
    files = {s: save(model, d / f"base{s}") for s in FORMATS}
    with zipfile.ZipFile(files[".keras"]) as z:
        (d / "base.inner.h5").write_bytes(z.read("model.weights.h5"))
    fifo = Fifo(d / "outside.h5")
    yield {"files": files, "inner": d / "base.inner.h5", "dir": d, "fifo": fifo, "n": [0]}
    fifo.stop()
    assert fifo.readers == 0, "a file outside the one named was opened"


def _links(f: h5py.File) -> list[str]:
    """Every link path of the file, walked without following any."""
    out = []
    f.id.links.visit(lambda name, info: out.append(name.decode("utf-8", "replace")), info=True)
    return out


def _shape(f: h5py.File, p: str) -> tuple:
    try:
        obj = f.get(p)
        return tuple(obj.shape) if isinstance(obj, h5py.Dataset) and obj.shape is not None else (3, 3, 3, 32)
    except Exception:  # noqa: BLE001 - a link that does not resolve: any shape
        return (3, 3, 3, 32)


def _datasets(shape: tuple, fifo: str) -> list:
    """Replacements for a dataset of `shape`: each f(file, path) creates one at path."""
    n = shape or (1,)

    def vds(src):
        def make(f, p):
            layout = h5py.VirtualLayout(shape=n, dtype="f4")
            layout[...] = h5py.VirtualSource(src, "x", shape=n)
            f.create_virtual_dataset(p, layout, fillvalue=0.5)
        return make

    def partly(f, p):
        d = f.create_dataset(p, shape=n, dtype="f4", chunks=(1, *n[1:]))
        d[0] = 1.0

    return [
        lambda f, p: f.create_dataset(p, data=np.full(shape, np.nan, "f4")),
        lambda f, p: f.create_dataset(p, data=np.full(shape, np.inf, "f2")),
        lambda f, p: f.create_dataset(p, data=np.full(shape, 1e39, "f8")),
        lambda f, p: f.create_dataset(p, data=np.full(shape, 0.5, "f8")),  # float64 that fits: loads
        lambda f, p: f.create_dataset(p, data=np.full(shape, 0.25, "f2")),  # float16: loads
        lambda f, p: f.create_dataset(p, data=np.ones(shape, "i4")),
        lambda f, p: f.create_dataset(p, data=np.ones(shape, bool)),
        lambda f, p: f.create_dataset(p, data=np.ones(shape, "c8")),
        lambda f, p: f.create_dataset(p, data=np.full(shape, b"1.0")),
        lambda f, p: f.create_dataset(p, shape=shape, dtype=h5py.string_dtype()),
        lambda f, p: f.create_dataset(p, shape=shape, dtype=[("a", "f4"), ("b", "f4")]),
        lambda f, p: f.create_dataset(p, shape=shape, dtype=h5py.ref_dtype),
        lambda f, p: f.create_dataset(p, shape=shape, dtype=h5py.enum_dtype({"A": 0, "B": 1}, basetype="i1")),
        lambda f, p: f.create_dataset(p, data=h5py.Empty("f4")),
        lambda f, p: f.create_dataset(p, data=np.float32(1.0)),
        lambda f, p: f.create_dataset(p, data=np.zeros((*shape, 2), "f4")),
        lambda f, p: f.create_dataset(p, shape=n, dtype="f4", chunks=(1, *n[1:])),  # never written
        partly,
        vds(fifo), vds("missing.h5"),
        lambda f, p: f.create_dataset(p, shape=n, dtype="f4", external=[(fifo, 0, 4 * int(np.prod(n)))]),
    ]


ATTR_NAMES = ["name", "layer_names", "weight_names"]
ATTR_VALUES = ["stem", "", "stem_bn", "x" * 300, b"\xff\xfe", "\x1b[31mred", 7, np.arange(3), np.array([], "f8"),
               np.array([b"stem", b"stem"]), np.array([b"stem/kernel"]), 1.5, np.array([b"predictions"])]


def _mutate(f: h5py.File, kind: str, a: int, b: int, fifo: str) -> None:
    paths = _links(f)
    p = paths[a % len(paths)]
    if kind == "dataset" and a % 4:  # mostly an array: the layers' weights
        arrays = [q for q in paths if isinstance(f.get(q, getlink=True), h5py.HardLink)
                  and isinstance(f.get(q), h5py.Dataset)]
        p = arrays[a % len(arrays)] if arrays else p
    if kind == "delete":
        del f[p]
    elif kind == "dataset":
        shape = _shape(f, p)
        del f[p]
        makers = _datasets(shape, fifo)
        makers[b % len(makers)](f, p)
    elif kind == "group":
        del f[p]
        g = f.create_group(p)
        if b % 2:
            g["0"] = np.zeros(3, "f4")
    elif kind == "soft":
        target = ["/" + paths[b % len(paths)], "/" + p, "/no/such/thing"][b % 3]
        del f[p]
        f[p] = h5py.SoftLink(target)
    elif kind == "external":
        del f[p]
        f[p] = h5py.ExternalLink(fifo if b % 2 else "missing.h5", "/" + paths[b % len(paths)])
    elif kind in ("attr", "delattr"):
        obj = f if b % 4 == 0 else f[p]
        name = ATTR_NAMES[b % len(ATTR_NAMES)]
        if kind == "delattr":
            if name in obj.attrs:
                del obj.attrs[name]
        else:
            obj.attrs[name] = ATTR_VALUES[(b // 3) % len(ATTR_VALUES)]
    elif kind == "copy":
        f.copy(f[p], p + "_copy")
    elif kind == "hardlink":
        f[p + "_hard"] = f[p]


KINDS = ["dataset", "dataset", "delete", "group", "soft", "external", "attr", "delattr", "copy", "hardlink"]
MUTATION = st.tuples(st.sampled_from(KINDS), st.integers(0, 10**6), st.integers(0, 10**6))
PROFILE_CI = os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci"


def _craft(base, fmt: str, mutations, truncate: int | None) -> Path:
    base["n"][0] += 1
    d, fifo = base["dir"], str(base["fifo"].path)
    h5 = d / f"case{base['n'][0]}{'.inner.h5' if fmt == '.keras' else fmt}"
    h5.write_bytes((base["inner"] if fmt == ".keras" else base["files"][fmt]).read_bytes())
    with h5py.File(h5, "r+") as f:
        for kind, a, b in mutations:
            try:
                _mutate(f, kind, a, b, fifo)
            except Exception:  # noqa: BLE001 - a mutation h5py cannot make (deleting the root, ...): skipped
                pass
    if truncate is not None:
        data = h5.read_bytes()
        h5.write_bytes(data[: truncate % len(data)])
    if fmt != ".keras":
        return h5
    out = d / f"case{base['n'][0]}.keras"
    with zipfile.ZipFile(base["files"][".keras"]) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(info, h5.read_bytes() if info.filename == "model.weights.h5" else src.read(info))
    return out


def _cli(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


@settings(derandomize=PROFILE_CI, max_examples=40 if PROFILE_CI else settings.default.max_examples, database=None,
          deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(FORMATS), mutations=st.lists(MUTATION, min_size=1, max_size=3),
       truncate=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 10**6)))
def test_mutated_weights_file_loads_or_is_one_clean_line(base, fmt, mutations, truncate):
    import keras

    path = _craft(base, fmt, mutations, truncate)
    out = path.with_name(path.name + ".out.keras")
    rw, ow, ew = _cli("weights", SPEC, str(path))
    rb, ob, eb = _cli("build", SPEC, "--weights", str(path), "-o", str(out))
    for text in (ow, ew, ob, eb):
        assert "internal error" not in text and "Traceback" not in text, text
    assert base["fifo"].readers == 0, "a file outside the one named was opened"
    assert (rw, rb) in ((0, 0), (2, 2)), (rw, rb, ew, eb)
    lines_w = [l for l in ew.splitlines() if l.strip()]
    lines_b = [l for l in eb.splitlines() if l.strip() and not l.startswith("archspec: building")]
    event(f"exit {rb}" + (f": {lines_b[0][len(str(path)) + 2:][:30]}" if rb == 2 and lines_b else ""))
    if rb == 2:
        assert not out.exists()
        assert len(lines_b) == 1 and lines_b[0].startswith(f"{path}: "), eb
        if lines_w:  # refused with a message: the same line
            assert lines_w == lines_b, (ew, eb)
        else:  # refused by the policy: the report's table, build's one line
            assert "does not load" in ow.splitlines()[-1] and "weights do not load" in lines_b[0], (ow, eb)
    else:
        model = keras.models.load_model(out)
        assert all(np.isfinite(w).all() for w in model.get_weights())
        out.unlink()
