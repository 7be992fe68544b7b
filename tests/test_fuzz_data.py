"""Fuzzing what training reads besides the spec (issue 18): mutated recipes through
`inspect --recipe` (in process) and through a one-epoch `train` on a tiny .npz (a
subprocess); generated hostile data sets (.npz, CIFAR directory, image folder) through the
data check (in process, small by construction) and, with byte-level damage that can make a
header claim anything, through the data check and `evaluate` in a subprocess limited in
address space and time. The only outcomes allowed are success and a located one-line error
(exit 2), or exit 1 with archspec's own one-line message: never the CLI's "internal error"
guard, a traceback, a hang or a crash.

Small example counts by default; a long campaign:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz_data.py
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import mutate

from archspec.cli import main
from archspec.core.errors import SpecError
from archspec.training.recipe import bundled_recipe_dir, bundled_recipes

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"


def budget(ci: int, long: int) -> settings:
    """Per-test counts (these tests are costlier than the language fuzz: their own ci/long numbers)."""
    return settings(max_examples=long if LONG else ci, deadline=None, derandomize=not LONG,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


TINY_SPEC = textwrap.dedent("""\
    format: 1
    name: tiny
    input: {shape: [8, 8, 1]}
    stem: [{type: conv, name: c1, filters: 4, kernel: 3, padding: same, activation: relu}]
    head:
      classes: 3
      layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]
    """)


def assert_clean(rc: int, err: str, allowed=(0, 2)) -> None:
    """Exit 0, 2 (one located line per problem) or 1 with archspec's own error line."""
    assert "internal error" not in err and "Traceback" not in err, err[-3000:]
    assert rc in allowed + (1,), (rc, err[-3000:])
    lines = [line for line in err.strip().splitlines() if line.strip()]
    if rc == 2:
        assert lines, "exit 2 without a message"
        assert all(len(line) < 2000 for line in lines), lines
    if rc == 1:
        assert any(line.startswith("archspec: error: ") for line in lines), err[-3000:]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- recipes

RECIPES = {n: (bundled_recipe_dir() / f"{n}.yaml").read_text() for n in bundled_recipes()}
SPEC_FOR = {"finetune": ["vgg16", "--set", "head.classes=2"]}

VALUES = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12), st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(), st.none(), st.text(max_size=12), st.just(2**32), st.just(2**63), st.just(1e20),
    st.lists(st.integers(-3, 600), max_size=4), st.just({"monitor": "nope"}), st.just([]), st.just({}),
    st.sampled_from(["val_loss", "val_top1", "top5", "loss", "nope", "=1+2", "a\nb", "\u00e9\U0001F600"]),
    st.just([{"name": "a", "epochs": 1, "freeze": {"untill": "x"}}]), st.just({"stages": ["head"]}),
)
KEYS = ["seed", "epochs", "data.batch_size", "data.image_size", "data.validation_split", "data.shuffle_buffer",
        "optimizer.name", "optimizer.learning_rate", "optimizer.momentum", "schedule.name", "schedule.boundaries",
        "schedule.patience", "callbacks.early_stopping", "callbacks.early_stopping.monitor",
        "callbacks.checkpoint.monitor", "callbacks.checkpoint.max_to_keep", "metrics", "phases", "phases[0].freeze",
        "augmentation.crop_padding", "augmentation.mixup", "loss.label_smoothing", "hed", "optimiser.name",
        "data.batchsize", "precision", "format", "name", "extends"]


def mutated_recipe(draw, name: str) -> str:
    """A bundled recipe with a value replaced, a key dropped, or lines damaged."""
    text = RECIPES[name]
    how = draw(st.sampled_from(["value", "drop", "lines"]))
    if how == "lines":
        lines = text.splitlines()
        for _ in range(draw(st.integers(1, 3))):
            if not lines:
                break
            i = draw(st.integers(0, len(lines) - 1))
            op = draw(st.sampled_from(["delete", "duplicate", "indent", "dedent"]))
            if op == "delete":
                del lines[i]
            elif op == "duplicate":
                lines.insert(i, lines[i])
            elif op == "indent":
                lines[i] = "  " + lines[i]
            else:
                lines[i] = lines[i][2:]
        return "\n".join(lines)
    data = yaml.safe_load(text)
    paths = [p for p in mutate.paths(data) if p and p != ("format",)]
    path = draw(st.sampled_from(paths))
    node = data
    for p in path[:-1]:
        node = node[p]
    if how == "drop":
        del node[path[-1]]
    else:
        node[path[-1]] = draw(VALUES)
    return yaml.safe_dump(data, allow_unicode=True)


def override(draw) -> str:
    value = draw(VALUES)
    text = json.dumps(value) if not isinstance(value, float) or value == value and abs(value) != float("inf") \
        else {True: ".inf", False: "-.inf"}.get(value > 0, ".nan") if value == value else ".nan"
    return f"{draw(st.sampled_from(KEYS))}={text}"


@budget(ci=40, long=3000)
@given(data=st.data())
def test_mutated_recipes_through_inspect(data):
    """`inspect SPEC --recipe R [--recipe-set ...]` of a damaged bundled recipe, in process."""
    name = data.draw(st.sampled_from(sorted(RECIPES)))
    text = mutated_recipe(data.draw, name)
    sets = [a for o in data.draw(st.lists(st.just(None), max_size=2)) for a in ("--recipe-set", override(data.draw))]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "r.yaml"
        path.write_text(text, encoding="utf-8")
        rc, _, err = run_main(["inspect", *SPEC_FOR.get(name, ["cifar100_cnn"]), "--recipe", str(path), *sets])
    assert_clean(rc, err)


# ---------------------------------------------------------------- subprocess workers

WORKER = r"""
import contextlib, io, json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
from archspec.cli import main
from archspec.core.errors import SpecError
from archspec.training.data import open_source
for line in sys.stdin:
    case = json.loads(line)
    res = {"case": case.get("name")}
    if case.get("check"):
        try:
            src = open_source(case["check"])
            res["check"] = "ok"
            assert src.classes <= 1 << 20 and len(src.class_names) == src.classes
        except SpecError as exc:
            res["check"] = "error"
            res["check_line"] = exc.one_line()
        except Exception as exc:
            res["check"] = "crash"
            res["check_line"] = repr(exc)[:2000]
    if case.get("argv"):
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                res["rc"] = main(case["argv"])
            except SystemExit as exc:
                res["rc"] = exc.code
        res["err"] = err.getvalue()[-4000:]
    print(json.dumps(res), flush=True)
"""


def run_worker(cases: list[dict], timeout: int = 540) -> list[dict]:
    """The cases in one subprocess (TensorFlow is imported once), limited to 6 GiB of address
    space and `timeout` seconds: one JSON result per case."""
    r = subprocess.run([sys.executable, "-c", WORKER], input="".join(json.dumps(c) + "\n" for c in cases),
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    results = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), (r.stdout[-2000:], r.stderr[-3000:])
    return results


def tiny_npz(path: Path, n: int = 24) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), y_train=np.arange(n) % 3,
             x_test=rng.integers(0, 256, (6, 8, 8), dtype=np.uint8), y_test=np.arange(6) % 3)
    return path


@pytest.mark.slow
@budget(ci=1, long=8)
@given(data=st.data())
def test_mutated_recipes_train_one_epoch(data, tmp_path_factory):
    """A few damaged recipes each train (at most) one epoch of a tiny network on a tiny .npz,
    in one subprocess: a result or a clean error, and a refused recipe writes no run
    directory."""
    d = tmp_path_factory.mktemp("train")
    npz = tiny_npz(d / "d.npz")
    (d / "s.yaml").write_text(TINY_SPEC)
    cases = []
    for k in range(data.draw(st.integers(3, 5))):
        text = mutated_recipe(data.draw, "cifar100") if k else RECIPES["cifar100"]  # case 0: the recipe as written
        (d / f"r{k}.yaml").write_text(text, encoding="utf-8")
        cases.append({"name": k, "argv": ["train", str(d / "s.yaml"), "--recipe", str(d / f"r{k}.yaml"), "--data",
                                          str(npz), "--out", str(d / f"run{k}"), "--json", "--recipe-set",
                                          "epochs=1", "--recipe-set", "phases=[]", "--recipe-set",
                                          "data.image_size=null"]})
    results = run_worker(cases)
    assert results[0]["rc"] == 0, results[0]  # the pipeline itself trains
    for case, res in zip(cases, results):
        assert_clean(res["rc"], res["err"])
        if res["rc"] == 2:
            assert not Path(case["argv"][7]).exists(), res


# ---------------------------------------------------------------- data sets

DTYPES = ["uint8", "float32", "float64", "int64", "uint64", "bool", "<U1", "complex64", "float16", "int8"]


@st.composite
def arrays(draw, role: str):
    """An array that may or may not be what `role` (images, labels, names) should hold."""
    kind = draw(st.sampled_from(["good", "dtype", "shape", "values"]))
    n = draw(st.integers(0, 4))
    if role == "images":
        shape = (n, draw(st.integers(1, 6)), draw(st.integers(1, 6)))
        if kind == "shape":
            shape = draw(st.sampled_from([(), (n,), (n, 4), (n, 0, 0), (n, 3, 3, 2), (n, 3, 3, 4), (n, 2, 2, 3, 1)]))
        dtype = draw(st.sampled_from(DTYPES)) if kind == "dtype" else "uint8"
        x = np.zeros(shape, dtype)
        if kind == "values" and x.size:
            x = x.astype("float32")
            x.flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -1e30, 1e30]))
        return x
    if role == "labels":
        if kind == "good":
            return np.arange(n) % 3
        if kind == "values":
            return np.array(draw(st.lists(st.sampled_from([-1, 0, 2, 10**12, 2**62]), min_size=n, max_size=n)),
                            np.int64)
        if kind == "dtype":
            return np.zeros(n, draw(st.sampled_from(DTYPES)))
        return draw(st.sampled_from([np.zeros(()), np.zeros((n, 1), np.int64), np.zeros((n, 2), np.int64)]))
    names = draw(st.sampled_from([np.array("cat"), np.array(["a", "b", "c"]), np.array(["a", "a", "b"]),
                                  np.array([1, 2, 3]), np.zeros((2, 2)), np.array(["", "x", "y"]),
                                  np.array(["=1+2", "a,b", "c\nd"]), np.array([b"a", b"b", b"c"])]))
    return names


@st.composite
def npz_sets(draw) -> dict:
    d = {"x_train": draw(arrays("images")), "y_train": draw(arrays("labels"))}
    if draw(st.booleans()):
        d["x_test"], d["y_test"] = draw(arrays("images")), draw(arrays("labels"))
    if draw(st.booleans()):
        d["class_names"] = draw(arrays("names"))
    for k in list(d):
        if draw(st.integers(0, 9)) == 0:
            del d[k]
    return d


def write_npz(path: Path, d: dict, damage: str | None = None, at: float = 0.5) -> Path:
    np.savez(path, **d)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: int(len(data) * at)])
    elif damage == "flip" and data:
        i = int(len(data) * at) % len(data)
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    elif damage == "empty":
        path.write_bytes(b"")
    return path


CIFAR_VALUES = {
    "data": lambda n: [np.zeros((n, 3072), np.uint8), np.full((n, 3072), 300, np.int64), b"\0" * 3072, "text", None,
                       np.zeros((n, 3071), np.uint8), [[0] * 3072] * n, np.zeros((n, 3072), np.float32), 7],
    "labels": lambda n: [list(range(n)), [0] * n, [-1] * n, [2**63] * n, [float("nan")] * n, None, "abc", [],
                         np.zeros((n, 2), np.int64), np.array([2**63] * n, np.uint64), [10**12] * n],
    "label_names": lambda n: [[b"a", b"b", b"c"], ["a", "b"], 5, None, "abc", [b"a", b"a"], [b"a", 3], [],
                              np.array(["x", "y", "z"])],
}


@st.composite
def cifar_sets(draw) -> dict:
    n = draw(st.integers(0, 3))
    batch = {b"data": draw(st.sampled_from(CIFAR_VALUES["data"](n))),
             b"labels": draw(st.sampled_from(CIFAR_VALUES["labels"](n)))}
    meta = {b"label_names": draw(st.sampled_from(CIFAR_VALUES["label_names"](n)))}
    for d in (batch, meta):
        if draw(st.integers(0, 9)) == 0:
            d.popitem()
    return {"batch": batch, "meta": meta, "protocol": draw(st.integers(0, pickle.HIGHEST_PROTOCOL))}


def write_cifar(root: Path, c: dict, damage: str | None = None, at: float = 0.5) -> Path:
    root.mkdir()
    for name, obj in (("data_batch_1", c["batch"]), ("batches.meta", c["meta"])):
        data = pickle.dumps(obj, protocol=c["protocol"])
        if damage == "truncate" and name == "data_batch_1":
            data = data[: int(len(data) * at)]
        elif damage == "flip" and name == "data_batch_1" and data:
            i = int(len(data) * at) % len(data)
            data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]
        (root / name).write_bytes(data)
    return root


IMAGE_KINDS = ["PNG", "JPEG", "GIF", "BMP", "TIFF", "garbage", "empty", "truncated", "dir"]


@st.composite
def folder_sets(draw) -> dict:
    classes = draw(st.lists(st.sampled_from(["0", "1", "2", "c", "\u00e9", "a b", ".hidden"]), min_size=1,
                            max_size=3, unique=True))
    files = {c: draw(st.lists(st.tuples(st.sampled_from(IMAGE_KINDS), st.sampled_from([".png", ".jpg", ".gif",
                                                                                      ".bmp", ".JPEG", ".txt"]),
                                        st.integers(1, 12), st.integers(1, 12), st.sampled_from(["L", "RGB", "RGBA"])),
                              max_size=3)) for c in classes}
    return files


def write_folder(root: Path, files: dict) -> Path:
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(0)
    for c, items in files.items():
        (root / c).mkdir()
        for i, (kind, suffix, w, h, mode) in enumerate(items):
            f = root / c / f"{i}{suffix}"
            if kind == "dir":
                f.mkdir()
            elif kind == "garbage":
                f.write_bytes(rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
            elif kind == "empty":
                f.write_bytes(b"")
            else:
                img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
                fmt = "PNG" if kind == "truncated" else kind
                if fmt in ("JPEG", "BMP") and mode == "RGBA":
                    img = img.convert("RGB")
                buf = io.BytesIO()
                img.save(buf, format=fmt)
                data = buf.getvalue()
                f.write_bytes(data[: len(data) // 2] if kind == "truncated" else data)
    return root


def check_in_process(path: Path) -> None:
    """open_source: a Source that holds together, or one located line."""
    from archspec.training.data import open_source

    try:
        src = open_source(path)
    except SpecError as exc:
        line = exc.one_line()
        assert line and "\n" not in line and len(line) < 2000, line
        return
    assert 0 < src.train_size and src.classes == len(src.class_names) <= 1 << 20
    if src.kind != "folder":
        assert src.x_train.ndim == 4 and src.x_train.shape[-1] in (1, 3) and len(src.x_train) == len(src.y_train)
        assert src.y_train.min() >= 0 and src.y_train.max() < src.classes
        assert np.isfinite(src.x_train).all() if src.x_train.dtype.kind == "f" else True
        assert min(src.x_train.shape[1:3]) >= 1


@budget(ci=25, long=1500)
@given(d=npz_sets(), damage=st.sampled_from([None, None, "truncate", "empty"]), at=st.floats(0, 1))
def test_generated_npz_through_the_data_check(d, damage, at):
    """npz files of every shape, dtype and label kind, whole or truncated (their headers
    stay as written, so they are small: in process)."""
    with tempfile.TemporaryDirectory() as tmp:
        check_in_process(write_npz(Path(tmp) / "d.npz", d, damage, at))


@budget(ci=25, long=1500)
@given(c=cifar_sets(), damage=st.sampled_from([None, None, "truncate"]), at=st.floats(0, 1))
def test_generated_cifar_through_the_data_check(c, damage, at):
    with tempfile.TemporaryDirectory() as tmp:
        check_in_process(write_cifar(Path(tmp) / "c", c, damage, at))


@budget(ci=10, long=200)
@given(files=folder_sets())
def test_generated_folders_through_the_data_check(files):
    """Image folders of every format under every suffix, garbage, empty, truncated files,
    directories named like images."""
    with tempfile.TemporaryDirectory() as tmp:
        check_in_process(write_folder(Path(tmp) / "f", files))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A run-like directory: an untrained tiny model and its classes."""
    d = tmp_path_factory.mktemp("model")
    (d / "s.yaml").write_text(TINY_SPEC)
    rc, _, err = run_main(["build", str(d / "s.yaml"), "-o", str(d / "final.keras")])
    assert rc == 0, err
    (d / "classes.json").write_text(json.dumps(["0", "1", "2"]))
    return d


@pytest.mark.slow
@budget(ci=2, long=12)
@given(npzs=st.lists(st.tuples(npz_sets(), st.sampled_from([None, "flip", "flip", "truncate"]), st.floats(0, 1)),
                     min_size=2, max_size=4),
       cifars=st.lists(st.tuples(cifar_sets(), st.sampled_from([None, "flip", "truncate"]), st.floats(0, 1)),
                       min_size=1, max_size=3),
       folders=st.lists(folder_sets(), min_size=1, max_size=2))
def test_damaged_datasets_through_the_check_and_evaluate(npzs, cifars, folders, tiny_model, tmp_path_factory):
    """Byte flips can make an .npz header or a pickle declare anything: those data sets go
    through the data check and `evaluate` in a subprocess limited to 6 GiB and a timeout."""
    d = tmp_path_factory.mktemp("sets")
    paths = [write_npz(d / f"n{i}.npz", *case) for i, case in enumerate(npzs)]
    paths += [write_cifar(d / f"c{i}", *case) for i, case in enumerate(cifars)]
    paths += [write_folder(d / f"f{i}", files) for i, files in enumerate(folders)]
    cases = [{"name": str(p), "check": str(p), "argv": ["evaluate", str(tiny_model), "--data", str(p), "--json"]}
             for p in paths]
    for res in run_worker(cases):
        assert res["check"] in ("ok", "error"), res
        assert_clean(res["rc"], res["err"])
        assert (res["rc"] == 0) <= (res["check"] == "ok"), res


def test_lying_headers_through_the_check_and_evaluate(tiny_model, tmp_path):
    """Headers that claim what the file does not hold (a huge shape, a 2**62 pickle length),
    through the check and `evaluate` in the bounded subprocess: one line each."""
    import struct
    import zipfile

    from numpy.lib import format as npy

    def member(header, payload=b""):
        buf = io.BytesIO()
        npy.write_array_header_1_0(buf, header)
        return buf.getvalue() + payload

    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(huge, "w") as z:
        z.writestr("x_train.npy", member({"descr": "<f8", "fortran_order": False, "shape": (10**6, 10**3, 10**3)}))
        z.writestr("y_train.npy", member({"descr": "<i8", "fortran_order": False, "shape": (1,)}, b"\0" * 8))
    cifar = tmp_path / "cifar"
    cifar.mkdir()
    (cifar / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"]}))
    (cifar / "data_batch_1").write_bytes(b"\x80\x04\x8e" + struct.pack("<Q", 2**62) + b"x")
    cases = [{"name": str(p), "check": str(p), "argv": ["evaluate", str(tiny_model), "--data", str(p)]}
             for p in (huge, cifar)]
    for res in run_worker(cases, timeout=300):
        assert res["check"] == "error" and res["rc"] == 2, res
        assert res["err"].strip() == res["check_line"], res
