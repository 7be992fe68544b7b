"""Weights files as hostile input (issue 26, items 1-5): every file here is crafted by the
test (h5py, numpy, zipfile) from a small valid one, and each refusal goes through the command
line in-process, `archspec weights` and `archspec build --weights` alike: exit 2, one line on
stderr naming the file (and the layer where there is one), the same line from both commands,
nothing written at -o, and no file outside the one named opened.

"Nothing outside opened" is watched two ways: every link or virtual source points at a FIFO
(`Fifo`), which a reader would block on until a writer comes; a thread plays the writer and
counts the readers it met. And `h5py.File` is patched to record what archspec opens."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from archspec.cli import main
from test_weights import save

ROOT = Path(__file__).resolve().parents[1]
SPEC = "two_branch"
STEM = "stem"  # two_branch's first convolution: kernel (3, 3, 3, 32), no bias


WATCHER = r"""
import os, sys, time
fifo, log = sys.argv[1], sys.argv[2]
while True:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: nobody reads
        time.sleep(0.002)
        continue
    with open(log, "a") as f:
        f.write("opened\n")
    os.close(fd)
    time.sleep(0.01)
"""


class Fifo:
    """A named pipe standing in for "another file": HDF5 opening it would block in open()
    until a writer comes (holding the GIL, so no thread of this process could help). A
    watcher process is that writer: a non-blocking open for writing succeeds only while a
    reader waits, so it logs every open and lets the reader go (it reads end-of-file)
    instead of hanging the test."""

    def __init__(self, path: Path):
        os.mkfifo(path)
        self.path, self._log = path, path.with_suffix(".log")
        self._log.write_text("")
        self._proc = subprocess.Popen([sys.executable, "-c", WATCHER, str(path), str(self._log)])

    @property
    def readers(self) -> int:
        return len(self._log.read_text().splitlines())

    def stop(self):
        self._proc.terminate()
        self._proc.wait(timeout=10)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    """two_branch built once with seed 1, saved in every format, and the FIFO."""
    from archspec.api import build

    d = tmp_path_factory.mktemp("valid")
    model = build(SPEC, seed=1)
    files = {s: save(model, d / f"w{s}") for s in (".weights.h5", ".keras", ".h5", ".npz")}
    files["kernel"] = model.get_layer(STEM).get_weights()[0]
    fifo = Fifo(d / "outside.h5")
    files["fifo"] = fifo
    yield files
    fifo.stop()
    assert fifo.readers == 0, "a file outside the one named was opened"


def keras3_vars(f: h5py.File, layer: str) -> str:
    """The path of `layer`'s vars group in a Keras 3 .weights.h5."""
    hits = []
    f.visititems(lambda p, o: hits.append(p) if p.endswith("vars") and o.attrs.get("name") == layer else None)
    assert len(hits) == 1, hits
    return hits[0]


def copy(valid, tmp_path, suffix=".weights.h5", name="bad") -> Path:
    p = tmp_path / f"{name}{suffix}"
    shutil.copy(valid[suffix], p)
    return p


def replace(f: h5py.File, path: str, **kw) -> None:
    del f[path]
    f.create_dataset(path, **kw)


def stem_kernel(valid, tmp_path, **dataset) -> Path:
    """A .weights.h5 whose stem kernel is replaced by `dataset` (h5py create_dataset's arguments)."""
    p = copy(valid, tmp_path)
    with h5py.File(p, "r+") as f:
        replace(f, keras3_vars(f, STEM) + "/0", **dataset)
    return p


def outcome(valid, tmp_path, capsys, path: Path, *args):
    """`weights` then `build --weights` on `path`: (exit codes, their stderr lines without
    build's progress line, stdout of `weights`, whether -o exists, what h5py.File opened)."""
    opened = []
    real = h5py.File

    def recording(name, *a, **kw):
        opened.append(name)
        return real(name, *a, **kw)

    out = tmp_path / "out.keras"
    if out.exists():
        out.unlink()
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(h5py, "File", recording)
        rw = main(["weights", SPEC, str(path), *args])
        ow, ew = capsys.readouterr()
        rb = main(["build", SPEC, "--weights", str(path), "-o", str(out), *args])
        _, eb = capsys.readouterr()
    lines = lambda e: [l for l in e.splitlines() if l.strip() and not l.startswith("archspec: building")]
    outside = [o for o in opened if isinstance(o, (str, os.PathLike)) and Path(o) != path]
    assert not outside, outside
    return (rw, rb), lines(ew), lines(eb), ow, out.exists()


def refused(valid, tmp_path, capsys, path: Path, *words, args=()) -> str:
    """Both commands refuse `path`: exit 2, the same one line naming the file and `words`."""
    codes, ew, eb, _, written = outcome(valid, tmp_path, capsys, path, *args)
    assert codes == (2, 2), (codes, ew, eb)
    assert len(ew) == 1 and ew == eb, (ew, eb)
    line = ew[0]
    assert line.startswith(f"{path}: "), line
    assert "internal error" not in line and "Traceback" not in line, line
    for w in words:
        assert w in line, (w, line)
    assert not written
    assert valid["fifo"].readers == 0
    return line


def loads(valid, tmp_path, capsys, path: Path):
    codes, ew, eb, ow, written = outcome(valid, tmp_path, capsys, path)
    assert codes == (0, 0) and written, (codes, ew, eb)
    assert ow.splitlines()[0].startswith("13 of 13 layers load"), ow
    return tmp_path / "out.keras"


# ---------------------------------------------------------------- 1. nothing read from outside the file


def test_the_valid_files_load(valid, tmp_path, capsys):
    for s in (".weights.h5", ".keras", ".h5", ".npz"):
        loads(valid, tmp_path, capsys, valid[s])


def test_external_link_as_a_layers_vars_is_refused_unopened(valid, tmp_path, capsys):
    p = copy(valid, tmp_path)
    with h5py.File(p, "r+") as f:
        v = keras3_vars(f, STEM)
        del f[v]
        f[v] = h5py.ExternalLink(str(valid["fifo"].path), "/vars")
    line = refused(valid, tmp_path, capsys, p, "external link", repr(v))
    assert str(valid["fifo"].path) not in line  # a message quotes no other file


@pytest.mark.parametrize("where", ["dataset", "root", "relative"])
def test_external_link_anywhere_in_a_weights_h5_is_refused(valid, tmp_path, capsys, where):
    p = copy(valid, tmp_path)
    with h5py.File(p, "r+") as f:
        if where == "dataset":
            target = keras3_vars(f, STEM) + "/0"
            del f[target]
        else:  # a link nothing reads: still refused (anywhere in the file)
            target = "unused"
        f[target] = h5py.ExternalLink("outside.h5" if where == "relative" else str(valid["fifo"].path), "/x")
    refused(valid, tmp_path, capsys, p, "external link", repr(target))


def test_external_link_in_a_legacy_layer_group_and_model_weights(valid, tmp_path, capsys):
    p = copy(valid, tmp_path, ".h5")
    with h5py.File(p, "r+") as f:
        del f[STEM]
        f[STEM] = h5py.ExternalLink(str(valid["fifo"].path), "/stem")
    refused(valid, tmp_path, capsys, p, "external link", "'stem'")
    # keras' model.save("x.h5") layout: the weights under model_weights, itself a link out
    q = tmp_path / "model.h5"
    with h5py.File(q, "w") as f:
        f["model_weights"] = h5py.ExternalLink(str(valid["fifo"].path), "/")
    refused(valid, tmp_path, capsys, q, "external link", "'model_weights'")


def _keras_with(valid, tmp_path, inner: Path, name="bad") -> Path:
    """A .keras archive like the valid one with `inner` as its model.weights.h5."""
    p = tmp_path / f"{name}.keras"
    with zipfile.ZipFile(valid[".keras"]) as src, zipfile.ZipFile(p, "w") as dst:
        for info in src.infolist():
            data = inner.read_bytes() if info.filename == "model.weights.h5" else src.read(info)
            dst.writestr(info, data)
    return p


def test_external_link_inside_a_keras_archive(valid, tmp_path, capsys):
    inner = tmp_path / "inner.h5"
    with zipfile.ZipFile(valid[".keras"]) as z:
        inner.write_bytes(z.read("model.weights.h5"))
    with h5py.File(inner, "r+") as f:
        v = keras3_vars(f, STEM)
        del f[v]
        f[v] = h5py.ExternalLink(str(valid["fifo"].path), "/vars")
    refused(valid, tmp_path, capsys, _keras_with(valid, tmp_path, inner), "external link")


@pytest.mark.parametrize("source", ["fifo", "missing", "self"])
def test_virtual_dataset_is_refused_before_its_source_is_opened(valid, tmp_path, capsys, source):
    """A virtual dataset reads other files (or, with its source missing, its fill value)."""
    src = {"fifo": str(valid["fifo"].path), "missing": str(tmp_path / "gone.h5"), "self": "."}[source]
    layout = h5py.VirtualLayout(shape=(3, 3, 3, 32), dtype="f4")
    layout[:] = h5py.VirtualSource(src, "x", shape=(3, 3, 3, 32))
    p = copy(valid, tmp_path)
    with h5py.File(p, "r+") as f:
        v = keras3_vars(f, STEM) + "/0"
        del f[v]
        f.create_virtual_dataset(v, layout, fillvalue=0.5)
    refused(valid, tmp_path, capsys, p, "layer 'stem': weight '0' is a virtual dataset")


def test_external_raw_storage_is_refused(valid, tmp_path, capsys):
    p = stem_kernel(valid, tmp_path, shape=(3, 3, 3, 32), dtype="f4",
                    external=[(str(valid["fifo"].path), 0, 3 * 3 * 3 * 32 * 4)])
    refused(valid, tmp_path, capsys, p, "layer 'stem': weight '0' is stored in another file")


@pytest.mark.parametrize("target", ["loop", "dangling"])
def test_soft_link_that_loops_or_leads_nowhere(valid, tmp_path, capsys, target):
    p = copy(valid, tmp_path)
    with h5py.File(p, "r+") as f:
        v = keras3_vars(f, STEM) + "/0"
        del f[v]
        if target == "loop":
            f[v] = h5py.SoftLink("/loop_a")
            f["loop_a"] = h5py.SoftLink("/loop_b")
            f["loop_b"] = h5py.SoftLink("/loop_a")
        else:
            f[v] = h5py.SoftLink("/nothing/here")
    refused(valid, tmp_path, capsys, p, "soft link", "leads nowhere")


def test_soft_link_inside_the_file_loads_its_target(valid, tmp_path, capsys):
    """A soft link stays in the file: followed, and the model holds its target's numbers."""
    import keras

    p = copy(valid, tmp_path)
    other = np.full((3, 3, 3, 32), 0.25, "f4")
    with h5py.File(p, "r+") as f:
        v = keras3_vars(f, STEM) + "/0"
        del f[v]
        f["elsewhere/kernel"] = other
        f[v] = h5py.SoftLink("/elsewhere/kernel")
    out = loads(valid, tmp_path, capsys, p)
    np.testing.assert_array_equal(keras.models.load_model(out).get_layer(STEM).get_weights()[0], other)


# ---------------------------------------------------------------- 2. values and dtypes


def _big():
    k = np.zeros((3, 3, 3, 32))
    k[1, 1, 1, 1] = 1e39
    return k


def _nan():
    k = np.zeros((3, 3, 3, 32), "f4")
    k[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    return k


DTYPES = {  # the stem kernel as: (create_dataset arguments, words of the refusal)
    "nan": (dict(data=_nan()), "holds 3 NaN or infinite values (of 864): weights must be finite"),
    "float16-inf": (dict(data=np.full((3, 3, 3, 32), np.inf, "f2")), "NaN or infinite"),
    "float64-overflow": (dict(data=_big()), "beyond float32's range (largest magnitude 1e+39)"),
    "complex": (dict(data=np.ones((3, 3, 3, 32), "c8")), "is complex (complex64): weights are float16"),
    "bool": (dict(data=np.ones((3, 3, 3, 32), bool)), "is bool: weights are float16"),
    "int32": (dict(data=np.ones((3, 3, 3, 32), "i4")), "is int32: weights are float16"),
    "float128": (dict(data=np.ones((3, 3, 3, 32), np.longdouble)), "is float128: weights are"),
    "fixed-string": (dict(data=np.full((3, 3, 3, 32), b"1.0")), "is a fixed-length string"),
    "vlen-string": (dict(shape=(3, 3, 3, 32), dtype=h5py.string_dtype()), "is a variable-length string"),
    "compound": (dict(shape=(3, 3, 3, 32), dtype=[("re", "f4"), ("im", "f4")]), "is a compound type"),
    "reference": (dict(shape=(3, 3, 3, 32), dtype=h5py.ref_dtype), "is an HDF5 reference"),
    "enum": (dict(shape=(3, 3, 3, 32), dtype=h5py.enum_dtype({"A": 0, "B": 1}, basetype="i1")),
             "is an enumeration"),
    "array-type": (dict(shape=(3, 3, 3, 32), dtype=np.dtype(("f4", (2,)))), "is an array type"),
    "never-written": (dict(shape=(3, 3, 3, 32), dtype="f4", chunks=(1, 3, 3, 32), fillvalue=0.5),
                      "was never written"),
    "unknown-filter": (dict(shape=(3, 3, 3, 32), dtype="f4", chunks=(3, 3, 3, 32),
                            compression=32015, allow_unknown_filter=True), "HDF5 filter 32015"),
}


@pytest.mark.parametrize("case", list(DTYPES))
def test_stem_kernel_of_another_dtype_or_value_is_refused_naming_layer_and_weight(valid, tmp_path, capsys,
                                                                                   case):
    dataset, words = DTYPES[case]
    p = stem_kernel(valid, tmp_path, **dataset)
    refused(valid, tmp_path, capsys, p, "layer 'stem': weight '0' (kernel) ", words)


def test_partly_written_dataset_is_refused(valid, tmp_path, capsys):
    p = stem_kernel(valid, tmp_path, shape=(3, 3, 3, 32), dtype="f4", chunks=(1, 3, 3, 32))
    with h5py.File(p, "r+") as f:
        f[keras3_vars(f, STEM) + "/0"][0] = np.ones((3, 3, 32), "f4")
    refused(valid, tmp_path, capsys, p, "layer 'stem'", "was written in part (1 of 3 chunks stored")


def test_float64_that_fits_float32_loads(valid, tmp_path, capsys):
    """The documented default: a float64 file loads when every value is finite and within
    float32's range (the values are rounded to float32, as Keras would)."""
    import keras

    k = valid["kernel"].astype("f8")
    p = stem_kernel(valid, tmp_path, data=k)
    out = loads(valid, tmp_path, capsys, p)
    np.testing.assert_array_equal(keras.models.load_model(out).get_layer(STEM).get_weights()[0], valid["kernel"])


def test_legacy_h5_with_nan_is_refused(valid, tmp_path, capsys):
    p = copy(valid, tmp_path, ".h5")
    with h5py.File(p, "r+") as f:
        replace(f, "stem/stem/kernel", data=_nan())
    refused(valid, tmp_path, capsys, p, "layer 'stem': weight 'kernel' holds 3 NaN or infinite values")


def _npz(valid, tmp_path, **over) -> Path:
    arrays = dict(np.load(valid[".npz"]))
    arrays.update(over)
    p = tmp_path / "bad.npz"
    np.savez(p, **arrays)
    return p


@pytest.mark.parametrize("case,value,words", [
    ("nan", _nan(), "holds 3 NaN or infinite values"),
    ("string", np.full((3, 3, 3, 32), "1.0"), "is a fixed-length string"),
    ("object", np.full((3, 3, 3, 32), None, object), "is Python objects"),
    ("int", np.ones((3, 3, 3, 32), "i8"), "is int64"),
])
def test_npz_of_another_dtype_or_value_is_refused(valid, tmp_path, capsys, case, value, words):
    p = _npz(valid, tmp_path, **{"stem/kernel": value})
    refused(valid, tmp_path, capsys, p, "layer 'stem': weight 'kernel' ", words)


# ---------------------------------------------------------------- 3. a zip bomb


def _bomb(path: Path, mib: int) -> Path:
    """A .keras whose model.weights.h5 inflates to `mib` MiB (HDF5's signature, then zeros)
    from about 1 KiB a MiB: full-flushed deflate blocks of a MiB of zeros, repeated."""
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = co.compress(b"\x89HDF\r\n\x1a\n" + bytes((1 << 20) - 8)) + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(bytes(1 << 20)) + co.flush(zlib.Z_FULL_FLUSH)
    assert co.compress(bytes(1 << 20)) + co.flush(zlib.Z_FULL_FLUSH) == block  # each block alike
    data = head + block * (mib - 1) + co.flush()
    size = mib << 20
    name = b"model.weights.h5"
    crc = 0  # not computed (4 GiB of CRC): a reader that inflated it all would find out too late
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(name), 0)
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                          len(name), 0, 0, 0, 0, 0, 0)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central) + len(name),
                      len(local) + len(name) + len(data), 0)
    path.write_bytes(local + name + data + central + name + end)
    return path


def test_zip_bomb_is_refused_in_bounded_memory(valid, tmp_path, capsys):
    """A 4 MB .keras holding a 4 GiB model.weights.h5: refused from its declared size, one
    line naming the file, under a 2 GiB address-space limit (one subprocess); `build` says the
    same line in-process."""
    p = _bomb(tmp_path / "bomb.keras", 4095)
    assert p.stat().st_size < 8 << 20
    with zipfile.ZipFile(p) as z:
        assert z.getinfo("model.weights.h5").file_size == 4095 << 20
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from archspec.cli import main; sys.exit(main(['weights', 'two_branch', sys.argv[1]]))")
    r = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr[-2000:]
    assert err[0].startswith(f"{p}: its model.weights.h5 declares 4.0 GiB") and "zip bomb" in err[0], err
    line = refused(valid, tmp_path, capsys, p, "zip bomb")
    assert line == err[0]


def test_keras_member_that_lies_about_its_size_is_refused(valid, tmp_path, capsys):
    """A member whose central directory declares fewer bytes than it holds: what is inflated
    stops at the declared size, the CRC does not match, one line."""
    p = tmp_path / "lies.keras"
    data = bytearray(valid[".keras"].read_bytes())
    with zipfile.ZipFile(valid[".keras"]) as z:
        info = z.getinfo("model.weights.h5")
    at = data.rfind(b"PK\x01\x02", 0, data.rfind(b"model.weights.h5"))  # its central directory entry
    struct.pack_into("<I", data, at + 24, info.file_size // 2)
    p.write_bytes(bytes(data))
    refused(valid, tmp_path, capsys, p, "not a readable weights file", "CRC")


# ---------------------------------------------------------------- 4. one clean line, whatever the structure


def test_group_where_a_weight_belongs(valid, tmp_path, capsys):
    p = copy(valid, tmp_path)
    with h5py.File(p, "r+") as f:
        v = keras3_vars(f, STEM) + "/0"
        del f[v]
        f.create_group(v)
    refused(valid, tmp_path, capsys, p, "layer 'stem': weight '0' is not an array (a group)")
    q = copy(valid, tmp_path, ".h5", "legacy")
    with h5py.File(q, "r+") as f:
        del f["stem/stem/kernel"]
        f.create_group("stem/stem/kernel")
    refused(valid, tmp_path, capsys, q, "layer 'stem': weight 'stem/kernel' is not an array (a group)")


def test_dataset_where_a_group_belongs(valid, tmp_path, capsys):
    q = copy(valid, tmp_path, ".h5", "legacy")
    with h5py.File(q, "r+") as f:
        del f["stem"]
        f["stem"] = np.zeros(3, "f4")
    refused(valid, tmp_path, capsys, q, "layer 'stem' is not a group of weights")
    # a Keras 3 vars group that is an array: the layer is not in the file, and both commands say so
    p = copy(valid, tmp_path)
    with h5py.File(p, "r+") as f:
        v = keras3_vars(f, STEM)
        del f[v]
        f[v] = np.zeros(3, "f4")
    codes, ew, eb, ow, written = outcome(valid, tmp_path, capsys, p)
    assert codes == (2, 2) and not written and ew == []
    assert ow.splitlines()[0].startswith("12 of 13 layers load; 1 missing from the file: stem"), ow
    assert len(eb) == 1 and "weights do not load" in eb[0] and "missing from the file: stem" in eb[0], eb


def test_empty_dataspace_and_bad_layer_names(valid, tmp_path, capsys):
    p = stem_kernel(valid, tmp_path, data=h5py.Empty("f4"))
    refused(valid, tmp_path, capsys, p, "layer 'stem': weight '0' holds no array")
    q = copy(valid, tmp_path, ".h5", "legacy")
    with h5py.File(q, "r+") as f:
        f.attrs["layer_names"] = np.arange(3)
    refused(valid, tmp_path, capsys, q, "layer_names is not a list of names")


# ---------------------------------------------------------------- 5. one layer named twice


def test_two_groups_naming_one_layer_are_refused_naming_both(valid, tmp_path, capsys):
    p = copy(valid, tmp_path)
    with h5py.File(p, "r+") as f:
        v = keras3_vars(f, STEM)
        f.copy(f[v.rsplit("/", 1)[0]], "layers/zz_copy")
    refused(valid, tmp_path, capsys, p, f"layer 'stem' is in the file twice ('{v}' and 'layers/zz_copy/vars'): "
                                        f"ambiguous")


def test_legacy_layer_listed_twice_and_npz_member_twice(valid, tmp_path, capsys):
    q = copy(valid, tmp_path, ".h5", "legacy")
    with h5py.File(q, "r+") as f:
        names = [n.encode() if isinstance(n, str) else n for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = np.array(names + [b"stem"])
    refused(valid, tmp_path, capsys, q, "layer 'stem' is in the file twice", "ambiguous")
    p = tmp_path / "twice.npz"
    shutil.copy(valid[".npz"], p)
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(p, "a") as z:
        with z.open("stem/kernel.npy", "w") as fh:
            np.lib.format.write_array(fh, np.zeros((3, 3, 3, 32), "f4"))
    refused(valid, tmp_path, capsys, p, "layer 'stem' is in the file twice ('stem/kernel' and 'stem/kernel')")


def test_a_layer_the_spec_lacks_named_twice_does_not_stop_the_load(valid, tmp_path, capsys):
    p = copy(valid, tmp_path)
    with h5py.File(p, "r+") as f:
        for g in ("layers/zz_a", "layers/zz_b"):
            f.create_dataset(f"{g}/vars/0", data=np.zeros(3, "f4"))
            f[f"{g}/vars"].attrs["name"] = "not_in_the_spec"
    loads(valid, tmp_path, capsys, p)


def test_a_load_that_takes_nothing_is_refused_by_both(valid, tmp_path, capsys):
    """Every layer skipped: `build` refuses ("none of the spec's layers"), so does the report."""
    refused(valid, tmp_path, capsys, valid[".weights.h5"], "holds weights for none of the spec's layers",
            args=("--weights-skip", "*"))
