"""Pretrained weights as data: what a weights file holds, compared with a graph layer by layer
before anything is built (`weights_report`, no TensorFlow: the files are read with h5py and
numpy), and the one loader that applies exactly that report to a built model
(`load_weights`: each layer's arrays set by archspec, never a blanket skip of mismatching layers).

Formats, each read as ``layer name -> [(weight name, array)]`` in the layer's weight order:

- a legacy `.h5` / `.hdf5` (keras.applications' files; Keras 2's ``save_weights``): the
  ``layer_names`` attribute, each group's ``weight_names``; a nested sub-model's group holds
  its leaf layers' weights as ``sub/leaf/weight``, attributed to ``leaf``;
- Keras 3's `.weights.h5` and a `.keras` archive's ``model.weights.h5``: the ``vars`` groups
  and the layer name Keras writes on each, at any depth (nested ``Sequential`` / functional
  sub-models, as keras.applications' ConvNeXt writes them, matched by their leaf layers);
- a neutral `.npz` of ``layer_name/weight_name -> array``.

The policy (strict): every weighted layer of the spec loads, except
the classifier when ``head.classes`` differs from the file (re-initialised, and said so), the
layers named by ``--weights-skip`` globs (left at their initial weights, and said so), and a
stem convolution over C != 3 input channels, which loads the file's RGB kernel by timm's
``adapt_input_conv`` rule (adapted, and said so). Anything else (a layer missing from the
file, a shape mismatch) makes the load an error naming the layers; nothing is half-loaded.

Weights for another network (`WeightsReport.foreign`): a load the policy refuses (or that
would take nothing) where fewer than half of the spec's weighted layers that are not skipped
are in the file by name, whatever their shapes, and the file holds weighted layers the spec
lacks (ResNet-18's file into vgg16_cifar100: 1 of 16 by name, 40 of the file's 41 not the
spec's). Its message says so, with the counts and the network the file records where it
records one (`WeightsFile.network_name`), and blames no shape: a layer of the same name
(``predictions``) is another network's, not one whose shape follows the input size. A load
the policy accepts (a re-initialised classifier, ``--weights-skip``, an adapted stem, a
keras.applications file with its own head) is never called another network's.

A weights file is untrusted input (see "what the file holds" below): no link followed out of
it, no archive member inflated in memory, no array loaded that is not finite floating point
written in the file, no layer taken from one of two groups that name it. The report and the
loader run the same checks in the same order and refuse with the same line.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...core.errors import ArchspecError, Location, SpecError
from ...core.units import pair, shape_str
from ...ir.graph import Graph, Node

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: a weights file with more layers than this is not a network's (bounded before reading on)
MAX_LAYERS = 100_000
#: layers named in one line of a message or a summary
SHOWN = 5
#: a network name read from a file is shown at most this many characters long
NAME_SHOWN = 80
#: the most bytes read for a network's name: a .keras archive's config.json or archspec.json,
#: a legacy .h5's model_config of a fixed-length string type
MAX_CONFIG = 16 << 20
#: Keras' model classes whose name is no network's name (the model's "name" is used instead)
_GENERIC_MODELS = frozenset({"Functional", "Sequential", "Model"})

LOADED, ADAPTED, REINIT, SKIPPED, MISSING, MISMATCH = (
    "loaded", "adapted", "re-initialised", "skipped", "missing", "mismatch")
#: statuses that the policy accepts
ACCEPTED = (LOADED, ADAPTED, REINIT, SKIPPED)


def _shown_path(path) -> str:
    s = os.fspath(path)
    return s if len(s) <= 160 else f"{s[:100]}...{s[-40:]} ({len(s):,} characters)"


def _where(path) -> Location:
    return Location(_shown_path(path))


def _name(v) -> str:
    """A name read from a file, as printable text (bounded, control characters escaped)."""
    s = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
    s = s if s.isprintable() else ascii(s)
    return s if len(s) <= 120 else s[:100] + "..."


def _network_name(v) -> str | None:
    """A network name recorded in a file, as a message may show it: a non-empty str, its
    whitespace collapsed, control characters escaped, at most NAME_SHOWN characters; None
    for anything else."""
    if not isinstance(v, str):
        return None
    s = " ".join(v.split())
    if not s:
        return None
    s = s if s.isprintable() else ascii(s)[1:-1]
    return s if len(s) <= NAME_SHOWN else s[:NAME_SHOWN - 1] + "…"


def _config_name(doc) -> str | None:
    """The model's name in a Keras model config (``{"class_name": ..., "config": {"name":
    ...}}``: a .keras archive's config.json, a legacy .h5's model_config); the class name of
    a model that is not Functional / Sequential / Model when the config has no name."""
    if not isinstance(doc, dict):
        return None
    cfg = doc.get("config")
    name = _network_name(cfg.get("name")) if isinstance(cfg, dict) else None
    if name is None and doc.get("class_name") not in _GENERIC_MODELS:
        name = _network_name(doc.get("class_name"))
    return name


def _archspec_name(doc) -> str | None:
    """The spec archspec recorded in a .keras archive's archspec.json (``source.spec_name``)."""
    src = doc.get("source") if isinstance(doc, dict) else None
    return _network_name(src.get("spec_name")) if isinstance(src, dict) else None


# ---------------------------------------------------------------- what the graph holds


def weight_specs(graph: Graph, node: Node) -> list[tuple[str, tuple]]:
    """The Keras weights (name, shape) of `node`'s layer, in the layer's weight order, from
    the IR alone (the builder's layers; a test holds them equal to the built model's)."""
    a, op = node.attrs, node.op
    if op == "input" or not node.params:
        return []
    s = tuple(graph.node(node.inputs[0]).shape)
    c = s[-1]
    bias = a.get("use_bias", True)
    if op == "conv2d":
        kh, kw = pair(a["kernel"])
        f = a["filters"]
        return [("kernel", (kh, kw, c // a.get("groups", 1), f))] + ([("bias", (f,))] if bias else [])
    if op == "depthwise_conv2d":
        kh, kw = pair(a["kernel"])
        m = a.get("depth_multiplier", 1)
        return [("kernel", (kh, kw, c, m))] + ([("bias", (c * m,))] if bias else [])
    if op == "separable_conv2d":
        kh, kw = pair(a["kernel"])
        m, f = a.get("depth_multiplier", 1), a["filters"]
        return ([("depthwise_kernel", (kh, kw, c, m)), ("pointwise_kernel", (1, 1, c * m, f))]
                + ([("bias", (f,))] if bias else []))
    if op == "conv_transpose2d":
        kh, kw = pair(a["kernel"])
        f = a["filters"]
        return [("kernel", (kh, kw, f, c))] + ([("bias", (f,))] if bias else [])
    if op == "dense":
        u = a["units"]
        return [("kernel", (c, u))] + ([("bias", (u,))] if bias else [])
    if op in ("batch_norm", "layer_norm", "group_norm"):
        out = ([("gamma", (c,))] if a.get("scale", True) else []) + ([("beta", (c,))] if a.get("center", True) else [])
        return out + ([("moving_mean", (c,)), ("moving_variance", (c,))] if op == "batch_norm" else [])
    if op == "layer_scale":
        return [("gamma", (c,))]
    if op == "normalization":
        return [("mean", (c,)), ("variance", (c,)), ("count", ())]
    raise ArchspecError(f"layer {node.name!r}: no weight layout known for op {op!r}")  # pragma: no cover


def weighted_nodes(graph: Graph) -> list[Node]:
    return [n for n in graph.nodes if n.op != "input" and n.params]


def classifier_layers(graph: Graph) -> list[str]:
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


def stem_convs(graph: Graph) -> list[str]:
    """The convolutions that read the network's input: reached from an input through nodes
    that keep its channels (padding, rescaling, normalization, ...), without another
    convolution or dense layer in between."""
    return _input_side(graph)[0]


def _input_side(graph: Graph) -> tuple[list[str], list[str]]:
    """(stem convolutions, normalization layers with weights before them)."""
    inputs = {n.name for n in graph.inputs}
    reach = set(inputs)
    convs, norms = [], []
    for n in graph.nodes:
        if n.name in inputs or not n.inputs or not all(i in reach for i in n.inputs):
            continue
        if n.op == "conv2d":
            convs.append(n.name)
        elif n.op not in ("depthwise_conv2d", "separable_conv2d", "conv_transpose2d", "dense", "flatten", "reshape",
                          "concat"):
            reach.add(n.name)
            if n.op == "normalization" and n.params:
                norms.append(n.name)
    return convs, norms


def _after_flatten(graph: Graph) -> set[str]:
    """Nodes downstream of a flatten/reshape: their weight shapes follow the input size."""
    seen: set[str] = set()
    for n in graph.nodes:
        if n.op in ("flatten", "reshape") or any(i in seen for i in n.inputs):
            seen.add(n.name)
    return seen


# ---------------------------------------------------------------- what the file holds
#
# A weights file is hostile input (DESIGN.md, "Trust rules"). Nothing is read from outside it:
# an HDF5 external link (anywhere in the file), a link of a user-defined kind, a virtual dataset
# and a dataset stored in external files are refused before their target is opened; a soft link
# is resolved inside the file, one that loops or leads nowhere refused. A .keras archive's
# model.weights.h5 is bounded by its declared size and spooled to a temporary file, never
# inflated in memory. The arrays that load are numbers: floating point (a normalization's
# count may be an integer), every value finite and within float32's range, every byte written
# (no unallocated or partly allocated dataset that would read as its fill value). Every refusal
# is one SpecError line naming the file, and the layer and weight where there are ones; the
# report (`weights_report`) and the loader (`load_weights`) run the same checks in the same
# order, so `archspec weights` and `build --weights` say the same.

#: the member of a .keras archive that holds its weights
KERAS_MEMBER = "model.weights.h5"
#: a .keras member may declare at most this many times the archive's size once past
#: INFLATE_FLOOR (Keras stores its members uncompressed; deflate reaches about 1032:1)
INFLATE_RATIO = 100
INFLATE_FLOOR = 64 << 20
#: bytes inflated at a time while spooling a .keras member to its temporary file
SPOOL_CHUNK = 1 << 20
#: HDF5 links walked before a file is refused as not a network's weights
MAX_LINKS = 20 * MAX_LAYERS
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: HDF5 filters read (deflate, shuffle, fletcher32, szip, n-bit, scale-offset, h5py's lzf);
#: any other would make HDF5 search for a plugin library
KNOWN_FILTERS = frozenset({1, 2, 3, 4, 5, 6, 32000})
#: weights that a layer holds as integers (keras' Normalization counts its samples in int64)
INTEGER_WEIGHTS = frozenset({("normalization", "count")})
#: what a damaged file raises while it is read (h5py, zipfile, numpy's .npy reader)
_DAMAGED = (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, EOFError, NotImplementedError,
            zipfile.BadZipFile, zlib.error)


def _short(exc: BaseException) -> str:
    return _name(" ".join(str(exc).split()))[:80]


def _bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


class _Weight:
    """One weight of a file: `read()` its array; `dtype` as the file's index declares it (the
    HDF5 type, the .npy header; None when it has no NumPy equivalent); `stored()` None when
    its bytes are written in this file, else the words of the refusal."""

    def __init__(self, read, dtype, stored=None):
        self.read, self.dtype = read, dtype
        self.stored = stored or (lambda: None)

    def __call__(self):
        return self.read()


@dataclass
class FileLayer:
    name: str
    weights: list[tuple[str, tuple]]  # (weight name as written, shape)
    _get: list = field(default_factory=list, repr=False)  # one _Weight per weight (read through `_values`)


def check_weights_file(path) -> None:
    """A weights file before anything is made: a .weights.h5 or legacy .h5 is an HDF5
    file, a .keras file a complete zip archive with the model's weights in HDF5 (a member
    that declares more than INFLATE_RATIO times the archive is a zip bomb, refused before a
    byte is inflated), an .npz a zip of arrays. Anything else (garbage, a truncated download,
    another format under the suffix) is a SpecError naming the file."""
    p = Path(os.fspath(path))
    try:
        st = os.stat(p)
    except OSError as exc:
        raise _os_error(p, exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise SpecError("not a regular file (weights)", _where(p))
    name = p.name.lower()
    try:
        if name.endswith((".keras", ".npz")):
            try:
                with zipfile.ZipFile(p) as z:
                    if name.endswith(".npz"):
                        if not any(n.endswith(".npy") for n in z.namelist()):
                            raise SpecError("not an .npz of arrays (the archive holds no .npy)", _where(p))
                        return
                    info = _keras_member(p, z, st.st_size)
                    with z.open(info) as fh:
                        ok = _is_hdf5(fh)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, RuntimeError,
                    ValueError, zlib.error) as exc:
                kind = ".npz" if name.endswith(".npz") else ".keras"
                raise SpecError(f"not a {kind} file (not a complete zip archive: truncated, or another format: "
                                f"{_short(exc)})", _where(p)) from None
            if not ok:
                raise SpecError("not a .keras file (its model.weights.h5 is not HDF5)", _where(p))
        elif name.endswith((".h5", ".hdf5")):
            with open(p, "rb") as fh:
                if not _is_hdf5(fh):
                    raise SpecError("not an HDF5 file (no HDF5 signature): weights are a Keras .weights.h5, a "
                                    "keras.applications .h5, a .keras file or an .npz", _where(p))
        else:
            raise SpecError(f"weights are a Keras .weights.h5, a keras.applications .h5, a .keras file or an "
                            f".npz (got {p.suffix or 'no suffix'!r})", _where(p))
    except OSError as exc:
        raise _os_error(p, exc) from None


def _keras_member(p: Path, z: zipfile.ZipFile, size: int) -> zipfile.ZipInfo:
    """The .keras archive's model.weights.h5, its declared size bounded before it is read."""
    names = z.namelist()
    if KERAS_MEMBER not in names:
        raise SpecError("not a .keras file with weights (the archive holds no model.weights.h5)", _where(p))
    if names.count(KERAS_MEMBER) > 1:
        raise SpecError("holds model.weights.h5 twice: ambiguous, refused", _where(p))
    info = z.getinfo(KERAS_MEMBER)
    if info.file_size > max(INFLATE_FLOOR, INFLATE_RATIO * size):
        raise SpecError(f"its model.weights.h5 declares {_bytes(info.file_size)} inflated from an archive of "
                        f"{_bytes(size)}, more than {INFLATE_RATIO} times the archive (a zip bomb): not read",
                        _where(p))
    return info


def _os_error(p: Path, exc: OSError) -> ArchspecError:
    import errno

    words = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.ENOENT, errno.EINVAL):
        return SpecError(f"cannot read the weights: {words}", _where(p))
    return ArchspecError(f"{_shown_path(p)}: cannot read the weights: {words}")


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


def _dtype_words(dt) -> str | None:
    """None when `dt` is a floating-point type that loads (float16, float32, float64), else
    what it is, in words."""
    if dt is None:
        return "of an HDF5 type with no NumPy equivalent"
    meta = dt.metadata or {}
    if "ref" in meta:
        return "an HDF5 reference"
    if "vlen" in meta:
        return "a variable-length string" if meta["vlen"] in (str, bytes) else "a variable-length sequence"
    if "enum" in meta:
        return "an enumeration"
    if dt.fields is not None:
        return "a compound type"
    if dt.subdtype is not None:
        return "an array type"
    if dt.kind in "SU":
        return "a fixed-length string"
    if dt.kind == "O":
        return "Python objects"
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return None
    return {"b": "bool", "c": f"complex ({dt.name})"}.get(dt.kind, dt.name)


def _dtype_refusal(dt, ints: bool) -> str | None:
    words = _dtype_words(dt)
    if words is None or (ints and dt is not None and dt.kind in "iu" and not dt.metadata):
        return None
    return (f"is {words}: weights are float16, float32 or float64 arrays"
            + (" (this one may be an integer)" if ints else ""))


def _h5_elsewhere(ds) -> str | None:
    """Words when `ds`'s values would be read from another file, from the index alone (the
    sources of a virtual dataset are opened only when it is read)."""
    if ds.is_virtual:
        return "is a virtual dataset (its values would be read from other files)"
    if ds.id.get_create_plist().get_external_count():
        return "is stored in another file (HDF5 external storage)"
    return None


def _h5_stored(ds) -> str | None:
    """Words when `ds`'s bytes are not all written in the file or need an unknown filter."""
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in KNOWN_FILTERS:
            return f"is encoded by HDF5 filter {code}, which archspec does not read (it would load a plugin)"
    shape = ds.shape or ()
    if int(np.prod(shape, dtype=np.float64)) == 0:
        return None
    if ds.id.get_storage_size() == 0:
        return "was never written (the file stores no data for it: it would load as its fill value)"
    if ds.chunks:
        want = 1
        for s, c in zip(shape, ds.chunks):
            want *= -(-s // c)
        have = ds.id.get_num_chunks()
        if have < want:
            return (f"was written in part ({have:,} of {want:,} chunks stored: the rest would load as its "
                    f"fill value)")
    return None


def _h5_dtype(ds):
    try:
        return ds.dtype
    except (TypeError, ValueError, OSError):
        return None


class WeightsFile:
    """An open weights file: `format` and `layers` (name -> FileLayer, in the file's order).
    A context manager; the arrays are read on demand while it is open. `duplicates` maps a
    layer named by more than one group (or .npz array) to where each is: a load that takes
    such a layer is refused as ambiguous (`compare`)."""

    def __init__(self, path):
        self.path = Path(os.fspath(path))
        check_weights_file(self.path)
        self._closers: list = []
        self.layers: dict[str, FileLayer] = {}
        self.duplicates: dict[str, list[str]] = {}
        self._sources: dict[str, str] = {}
        self._h5 = None  # the open HDF5 file of a .h5 (its attributes: `network_name`)
        name = self.path.name.lower()
        try:
            if name.endswith(".npz"):
                self.format = "npz"
                self._read_npz()
            else:
                import h5py

                if name.endswith(".keras"):
                    f = h5py.File(self._spool(), "r")
                    self.format = "keras"
                else:
                    f = h5py.File(self.path, "r")
                    self.format = None
                    self._h5 = f
                self._closers.append(f.close)
                links = self._check_links(f)
                group = f
                if f.get("model_weights", getlink=True) is not None:
                    group = self._follow(f, "model_weights", "model_weights")
                    if not isinstance(group, h5py.Group):
                        raise SpecError("its model_weights is not a group", _where(self.path))
                if "layer_names" in group.attrs:
                    self.format = "legacy_h5"
                    self._read_legacy(group)
                else:
                    self.format = self.format or "weights_h5"
                    self._read_keras3(f, links)
        except ArchspecError:
            self.close()
            raise
        except _DAMAGED as exc:
            self.close()
            raise SpecError(f"not a readable weights file (truncated or damaged: {_short(exc)})",
                            _where(self.path)) from None

    def close(self):
        for c in reversed(self._closers):
            try:
                c()
            except Exception:  # pragma: no cover - closing a damaged file
                pass
        self._closers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def network_name(self) -> str | None:
        """The network the file records, shown as `_network_name` bounds it: a .keras archive's
        archspec.json ``source.spec_name`` (archspec wrote it), else its config.json's model
        name; a legacy .h5's ``model_config`` attribute (a whole model saved by Keras;
        keras.applications' weights-only files have none). None for a .weights.h5 or an .npz,
        which record none, and where the record is missing, too large or unreadable: the name
        is only a message's words, so reading it never refuses a file. Bounded: an archive
        member read only when it declares at most MAX_CONFIG bytes, and never past that; a
        fixed-length model_config only when it is at most MAX_CONFIG bytes (a variable-length
        string is stored unfiltered in the file, so it is no larger than the file, as its
        layer_names are)."""
        try:
            if self.format == "keras":
                return self._keras_name()
            if self.format == "legacy_h5" and self._h5 is not None:
                return self._h5_name()
        except Exception:  # a damaged or hostile record: the file records no name we can show
            return None
        return None

    def _keras_name(self) -> str | None:
        with zipfile.ZipFile(self.path) as z:
            names = set(z.namelist())
            for member, pick in (("archspec.json", _archspec_name), ("config.json", _config_name)):
                if member not in names or z.getinfo(member).file_size > MAX_CONFIG:
                    continue
                try:
                    with z.open(member) as fh:
                        data = fh.read(MAX_CONFIG + 1)
                    got = pick(json.loads(data)) if len(data) <= MAX_CONFIG else None
                except Exception:  # this member is damaged: the other may still name the network
                    got = None
                if got:
                    return got
        return None

    def _h5_name(self) -> str | None:
        import h5py

        attrs = self._h5.attrs
        if "model_config" not in attrs:
            return None
        aid = attrs.get_id("model_config")
        info = h5py.check_string_dtype(aid.dtype)
        if info is None or aid.shape not in ((), (1,)):
            return None
        if info.length is not None and aid.get_storage_size() > MAX_CONFIG:
            return None
        v = attrs["model_config"]
        if isinstance(v, np.ndarray):
            v = v.reshape(-1)[0]
        if isinstance(v, (bytes, np.bytes_)):
            v = bytes(v).decode("utf-8")
        if not isinstance(v, str) or len(v) > MAX_CONFIG:
            return None
        return _config_name(json.loads(v))

    def _refuse(self, words: str) -> SpecError:
        return SpecError(words, _where(self.path))

    def _spool(self):
        """The .keras archive's model.weights.h5 copied to an unnamed temporary file (deleted
        when closed), SPOOL_CHUNK bytes at a time, counting what is inflated: never more than
        the member declares, which check_weights_file bounded."""
        import shutil
        import tempfile

        with zipfile.ZipFile(self.path) as z:
            info = _keras_member(self.path, z, os.stat(self.path).st_size)
            free = shutil.disk_usage(tempfile.gettempdir()).free
            if info.file_size > free:
                raise ArchspecError(f"{_shown_path(self.path)}: its model.weights.h5 needs "
                                    f"{_bytes(info.file_size)} in the temporary directory, which has "
                                    f"{_bytes(free)} free (set TMPDIR to a larger one)")
            tmp = tempfile.TemporaryFile(prefix="archspec-weights-")
            self._closers.append(tmp.close)
            count = 0
            with z.open(info) as src:
                while True:
                    chunk = src.read(SPOOL_CHUNK)
                    if not chunk:
                        break
                    count += len(chunk)
                    if count > info.file_size:
                        raise self._refuse(f"its model.weights.h5 inflates past the {_bytes(info.file_size)} it "
                                           f"declares (a zip bomb): not read")
                    try:
                        tmp.write(chunk)
                    except OSError as exc:
                        raise ArchspecError(f"{_shown_path(self.path)}: cannot unpack its model.weights.h5 to a "
                                            f"temporary file: {exc.strerror or type(exc).__name__}") from None
            if count != info.file_size:
                raise self._refuse(f"its model.weights.h5 holds {_bytes(count)}, not the {_bytes(info.file_size)} "
                                   f"it declares (truncated or damaged)")
        tmp.seek(0)
        return tmp

    def _check_links(self, f) -> list[tuple[bytes, int]]:
        """Every link of the file, walked without following any (HDF5's link visit recurses
        through hard links only): an external link or one of a user-defined kind refused before
        its target is opened, each soft link resolved inside the file (a loop or a link to
        nothing refused). Returns the (path, link type) pairs."""
        from h5py import h5l

        links: list[tuple[bytes, int]] = []

        def visit(name, info):
            links.append((name, info.type))
            return True if len(links) > MAX_LINKS else None  # anything but None stops the walk

        f.id.links.visit(visit, info=True)
        if len(links) > MAX_LINKS:
            raise self._refuse(f"holds more than {MAX_LINKS:,} HDF5 links: not a network's weights")
        for name, kind in links:
            if kind == h5l.TYPE_EXTERNAL:
                raise self._refuse(f"holds an HDF5 external link at {_name(name)!r} (into another file): not "
                                   f"followed; weights are read from the one file named")
            if kind not in (h5l.TYPE_HARD, h5l.TYPE_SOFT):
                raise self._refuse(f"holds an HDF5 link of a user-defined kind at {_name(name)!r}: not followed")
        for name, kind in links:
            if kind == h5l.TYPE_SOFT:
                try:
                    f[name]
                except (KeyError, RuntimeError, ValueError, OSError):
                    raise self._refuse(f"holds an HDF5 soft link at {_name(name)!r} that leads nowhere (a loop, or "
                                       f"a missing target)") from None
        return links

    def _follow(self, group, path: str, what: str):
        """The object at `path` under `group`, one link at a time: an external link is refused
        before its target is opened, a soft link resolved inside the file."""
        import h5py

        obj = group
        for part in [p for p in path.split("/") if p]:
            if not isinstance(obj, h5py.Group):
                raise self._refuse(f"{what} is not in the file (a path through an array)")
            link = obj.get(part, getlink=True)
            if link is None:
                raise self._refuse(f"{what} is not in the file")
            if isinstance(link, h5py.ExternalLink):
                raise self._refuse(f"{what} is an HDF5 external link (into another file): not followed; weights "
                                   f"are read from the one file named")
            if not isinstance(link, (h5py.HardLink, h5py.SoftLink)):  # pragma: no cover - refused by _check_links
                raise self._refuse(f"{what} is an HDF5 link of a user-defined kind: not followed")
            try:
                obj = obj[part]
            except (KeyError, RuntimeError) as exc:
                raise self._refuse(f"{what} is an HDF5 soft link that leads nowhere (a loop, or a missing "
                                   f"target: {_short(exc)})") from None
        return obj

    def _claim(self, name: str, source: str) -> bool:
        """True when `source` (a group, an .npz key) may hold layer `name`'s weights: the first
        that names it; a second is recorded in `duplicates`."""
        first = self._sources.setdefault(name, source)
        if first == source:
            return True
        self.duplicates.setdefault(name, [first]).append(source)
        return False

    def _add(self, name: str, wname: str, shape, weight: _Weight) -> None:
        if shape is None:
            raise self._refuse(f"layer {name!r}: weight {wname!r} holds no array (an empty HDF5 dataspace)")
        layer = self.layers.get(name)
        if layer is None:
            if len(self.layers) >= MAX_LAYERS:
                raise self._refuse(f"holds more than {MAX_LAYERS:,} layers: not a network's weights")
            layer = self.layers[name] = FileLayer(name, [])
        layer.weights.append((wname, tuple(int(d) for d in shape)))
        layer._get.append(weight)

    def _add_h5(self, name: str, wname: str, ds) -> None:
        words = _h5_elsewhere(ds)
        if words:
            raise self._refuse(f"layer {name!r}: weight {wname!r} {words}: refused; weights are read from the one "
                               f"file named")
        self._add(name, wname, ds.shape, _Weight(lambda d=ds: d[()], _h5_dtype(ds), lambda d=ds: _h5_stored(d)))

    def _names_attr(self, value, what: str) -> list[str]:
        """An attribute that lists names (layer_names, weight_names) as str."""
        if isinstance(value, (bytes, str)):
            value = [value]
        if not isinstance(value, (np.ndarray, list)) or (isinstance(value, np.ndarray) and value.ndim != 1):
            raise self._refuse(f"{what} is not a list of names")
        out = []
        for v in value:
            if not isinstance(v, (bytes, str, np.bytes_, np.str_)):
                raise self._refuse(f"{what} is not a list of names (holds {_name(type(v).__name__)})")
            out.append(v.decode("utf-8") if isinstance(v, bytes) else str(v))
        return out

    def _read_legacy(self, group) -> None:
        import h5py

        seen: set[str] = set()
        for key in self._names_attr(group.attrs["layer_names"], "the file's layer_names"):
            gname = _name(key)
            g = self._follow(group, key, f"layer {gname!r}")
            if not isinstance(g, h5py.Group):
                raise self._refuse(f"layer {gname!r} is not a group of weights in the file")
            if key in seen:  # listed twice: its weights would be taken twice
                self.duplicates.setdefault(gname, [_name(g.name)]).append(_name(g.name))
                continue
            seen.add(key)
            wnames = self._names_attr(g.attrs.get("weight_names", []), f"layer {gname!r}: weight_names")
            # a nested sub-model's group holds its leaves' weights as sub/leaf/weight
            owners = [w.split("/")[-2] if w.count("/") >= 1 else gname for w in wnames]
            nested = len(set(owners)) > 1
            for w, owner in zip(wnames, owners):
                ds = self._follow(g, w, f"layer {gname!r}: weight {_name(w)!r}")
                if not isinstance(ds, h5py.Dataset):
                    raise self._refuse(f"layer {gname!r}: weight {_name(w)!r} is not an array (a group)")
                layer = _name(owner) if nested else gname
                if self._claim(layer, _name(g.name)):
                    self._add_h5(layer, _name(w.split("/")[-1]), ds)

    def _read_keras3(self, f, links) -> None:
        """The `vars` groups, at any depth (from the link walk: hard links only), and the layer
        name Keras writes on each."""
        import h5py
        from h5py import h5l

        found: list[tuple[str, str, object]] = []
        for path, kind in links:
            if kind != h5l.TYPE_HARD or path.rsplit(b"/", 1)[-1] != b"vars":
                continue
            g = f[path]
            if not isinstance(g, h5py.Group):
                continue
            keys = sorted((k for k in g.keys() if k.isdigit()), key=int)
            if not keys:
                continue
            found.append((_name(path), _name(g.attrs["name"]) if "name" in g.attrs else "", g, keys))
            if len(found) > MAX_LAYERS:
                raise self._refuse(f"holds more than {MAX_LAYERS:,} layers: not a network's weights")
        if found and not all(name for _, name, _, _ in found):
            raise self._refuse("this Keras .weights.h5 does not name its layers (written by an older Keras 3): "
                               "load it into its Keras model and save it again with a current Keras")
        for path, name, g, keys in found:
            if not self._claim(name, path):
                continue
            for k in keys:
                ds = self._follow(g, k, f"layer {name!r}: weight {k!r}")
                if not isinstance(ds, h5py.Dataset):
                    raise self._refuse(f"layer {name!r}: weight {k!r} is not an array (a group)")
                self._add_h5(name, k, ds)

    def _read_npz(self) -> None:
        z = np.load(self.path, allow_pickle=False)
        self._closers.append(z.close)
        seen: set[str] = set()
        for key in z.files:
            if "/" not in key:
                raise self._refuse(f"an .npz of weights names its arrays layer_name/weight_name (got {_name(key)!r})")
            layer, wname = key.rsplit("/", 1)
            if key in seen:  # two members of one name: which one np.load reads is not said
                self.duplicates.setdefault(_name(layer), [_name(key)]).append(_name(key))
                continue
            seen.add(key)
            shape, dtype = _npz_header(z, key)
            self._add(_name(layer), _name(wname), shape, _Weight(lambda k=key: z[k], dtype))


def _npz_header(z, key: str) -> tuple[tuple, np.dtype]:
    """The shape and dtype of one .npz member from its .npy header, without reading the array."""
    from numpy.lib import format as npformat

    with z.zip.open(key + ".npy") as fh:
        version = npformat.read_magic(fh)
        reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, _, dtype = reader(fh)
    return tuple(shape), dtype


def _weight_what(layer: str, wname: str, sname: str | None) -> str:
    return f"layer {layer!r}: weight {wname!r}" + (f" ({sname})" if sname and sname != wname else "")


def _spec_weights(graph: Graph, name: str) -> tuple[list[str], list[bool]]:
    """Layer `name`'s weight names in the spec and, for each, whether it may be an integer."""
    node = graph.node(name)
    names = [k for k, _ in weight_specs(graph, node)]
    return names, [(node.op, k) in INTEGER_WEIGHTS for k in names]


def _check_index(wf: WeightsFile, graph: Graph, name: str) -> None:
    """Layer `name` of the file, from its index alone: every weight of a dtype that loads,
    every byte written in the file. A SpecError naming the layer and the weight."""
    fl = wf.layers[name]
    snames, ints = _spec_weights(graph, name)
    for i, ((wname, _), w) in enumerate(zip(fl.weights, fl._get)):
        what = _weight_what(name, wname, snames[i] if i < len(snames) else None)
        words = _dtype_refusal(w.dtype, i < len(ints) and ints[i]) or w.stored()
        if words:
            raise SpecError(f"{what} {words}", _where(wf.path))


def _values(wf: WeightsFile, graph: Graph, name: str) -> list[np.ndarray]:
    """Layer `name`'s arrays, read and checked: the shape its index declared, every value
    finite and within float32's range (a float64 file loads when its values fit)."""
    fl = wf.layers[name]
    snames, ints = _spec_weights(graph, name)
    out = []
    for i, ((wname, shape), w) in enumerate(zip(fl.weights, fl._get)):
        what = _weight_what(name, wname, snames[i] if i < len(snames) else None)
        try:
            a = np.asarray(w())
        except _DAMAGED as exc:
            raise SpecError(f"{what}: cannot read it (truncated or damaged: {_short(exc)})", _where(wf.path)) from None
        words = _dtype_refusal(a.dtype, i < len(ints) and ints[i])
        if words:
            raise SpecError(f"{what} {words}", _where(wf.path))
        if tuple(a.shape) != tuple(shape):
            raise SpecError(f"{what} holds {shape_str(a.shape)} where the file's index says {shape_str(shape)} "
                            f"(damaged)", _where(wf.path))
        if a.dtype.kind == "f":
            finite = np.isfinite(a)
            if not finite.all():
                bad = a.size - int(np.count_nonzero(finite))
                raise SpecError(f"{what} holds {bad:,} NaN or infinite value{'s' if bad > 1 else ''} (of "
                                f"{a.size:,}): weights must be finite", _where(wf.path))
            if a.dtype.itemsize > 4 and a.size:
                top = float(np.max(np.abs(a)))
                if top > FLOAT32_MAX:
                    raise SpecError(f"{what} holds values beyond float32's range (largest magnitude {top:.3g}): "
                                    f"they would load as infinite", _where(wf.path))
        out.append(a)
    return out


# ---------------------------------------------------------------- the report


@dataclass
class LayerWeights:
    name: str
    status: str
    spec: list[tuple]  # the spec's weight shapes
    file: list[tuple] | None  # the file's, None when the file lacks the layer
    note: str = ""

    def to_dict(self) -> dict:
        return {"layer": self.name, "status": self.status, "spec_shapes": [list(s) for s in self.spec],
                "file_shapes": None if self.file is None else [list(s) for s in self.file], "note": self.note}


@dataclass
class WeightsReport:
    path: str
    format: str
    spec: str
    layers: list[LayerWeights]
    extra: list[str]  # layers with weights in the file that the spec lacks
    skip: list[str]
    file_layers: int = 0  # the file's layers with weights
    network: str | None = None  # the network the file records (read for another network's weights)

    def of(self, *statuses: str) -> list[LayerWeights]:
        return [l for l in self.layers if l.status in statuses]

    @property
    def problems(self) -> list[LayerWeights]:
        return [l for l in self.layers if l.status not in ACCEPTED]

    @property
    def loadable(self) -> bool:
        return not self.problems

    @property
    def loading(self) -> list[LayerWeights]:
        """The layers that take weights from the file (loaded as they are, or adapted)."""
        return self.of(LOADED, ADAPTED)

    @property
    def foreign(self) -> bool:
        """Weights for another network: the load is refused (or would take nothing), fewer
        than half of the spec's weighted layers that are not skipped are in the file by name
        (whatever their shapes), and the file holds weighted layers the spec lacks. Never
        true of a load the policy accepts."""
        considered = [l for l in self.layers if l.status != SKIPPED]
        present = [l for l in considered if l.file is not None]
        return (bool(considered) and bool(self.extra) and 2 * len(present) < len(considered)
                and (not self.loadable or not self.loading))

    def _foreign_summary(self) -> str:
        """"weights for another network ('resnet18' recorded in the file), not for
        vgg16_cifar100: 0 of 16 layers load; 1 of the spec's 16 is in the file by name
        (predictions); 40 of the file's 41 weighted layers are not in the spec: conv1_conv, ...":
        the counts, and no shape blamed."""
        if self.network is None:
            who = ""
        elif self.network == self.spec:
            who = f" (the file records {self.network!r}, this spec's name, but not its layers)"
        else:
            who = f" ({self.network!r} recorded in the file)"
        parts = [f"weights for another network{who}, not for {self.spec}: "
                 f"{len(self.loading)} of {len(self.layers)} layers load"]
        skipped = self.of(SKIPPED)
        if skipped:
            parts.append(f"{len(skipped)} skipped (--weights-skip): {_names(skipped)}")
        considered = [l for l in self.layers if l.status != SKIPPED]
        present = [l for l in considered if l.file is not None]
        parts.append(f"{len(present)} of the spec's {len(considered)} {'is' if len(present) == 1 else 'are'} in "
                     f"the file by name" + (f" ({_names(present)})" if present else ""))
        parts.append(f"{len(self.extra)} of the file's {max(self.file_layers, len(self.extra))} weighted layers "
                     f"{'is' if len(self.extra) == 1 else 'are'} not in the spec: {', '.join(self.extra[:SHOWN])}"
                     f"{', …' if len(self.extra) > SHOWN else ''}")
        return "; ".join(parts)

    def summary(self) -> str:
        """One line: "314 of 320 layers load; classifier re-initialised (1000 → 2 classes); ...".
        Weights for another network (`foreign`) say so instead, with the counts."""
        if self.foreign:
            return self._foreign_summary()
        parts = [f"{len(self.loading)} of {len(self.layers)} layers load"]
        reinit = self.of(REINIT)
        if reinit:
            notes = sorted({l.note for l in reinit})
            what = "classifier" if len(reinit) == 1 else f"{len(reinit)} classifiers"
            parts.append(f"{what} re-initialised ({'; '.join(notes)})")
        adapted = self.of(ADAPTED)
        if adapted:
            parts.append(f"{_names(adapted)} adapted ({adapted[-1].note})")
        skipped = self.of(SKIPPED)
        if skipped:
            parts.append(f"{len(skipped)} skipped (--weights-skip): {_names(skipped)}")
        missing = self.of(MISSING)
        if missing:
            parts.append(f"{len(missing)} missing from the file: {_names(missing)}")
        mism = self.of(MISMATCH)
        if mism:
            first = mism[0]
            parts.append(f"{len(mism)} with other shapes: {_names(mism)} ({first.name}: "
                         f"{_shapes(first.file)} in the file, {_shapes(first.spec)} in the spec"
                         f"{'; ' + first.note if first.note else ''})")
        if self.extra:
            parts.append(f"{len(self.extra)} in the file only: {', '.join(self.extra[:SHOWN])}"
                         f"{', …' if len(self.extra) > SHOWN else ''}")
        return "; ".join(parts)

    def error(self) -> SpecError:
        """The SpecError of a load this report refuses: one line, the layers named (weights
        for another network: its summary, which says so)."""
        if self.foreign:
            return SpecError(f"weights do not load: {self.summary()}", _where(self.path))
        return SpecError(f"weights do not load: {self.summary()}; only the classifier (when head.classes differs), "
                         f"a stem over other input channels and layers named by --weights-skip may differ",
                         _where(self.path))

    def to_dict(self) -> dict:
        counts = {s: len(self.of(s)) for s in (LOADED, ADAPTED, REINIT, SKIPPED, MISSING, MISMATCH)}
        return {"file": self.path, "format": self.format, "spec": self.spec, "summary": self.summary(),
                "loadable": self.loadable, "layers_with_weights": len(self.layers), "loading": len(self.loading),
                "counts": counts, "layers": [l.to_dict() for l in self.layers], "file_only": list(self.extra),
                "skip": list(self.skip), "another_network": self.foreign, "file_network": self.network}


def _names(layers: list[LayerWeights]) -> str:
    return ", ".join(l.name for l in layers[:SHOWN]) + (", …" if len(layers) > SHOWN else "")


def _shapes(shapes) -> str:
    return ", ".join(shape_str(s) for s in shapes) if shapes else "no weights"


def adapt_input_stats(stats: np.ndarray, channels: int) -> np.ndarray:
    """Per-channel RGB statistics (a Normalization layer's mean or variance over the input)
    for `channels` channels: their mean for 1 channel, else repeated cyclically (R, G, B, R, ...),
    the channels timm's rule gives the stem."""
    v = np.asarray(stats)
    if channels == 1:
        return v.mean(axis=-1, keepdims=True).astype(v.dtype)
    return v[..., [i % 3 for i in range(channels)]]


def adapt_input_kernel(kernel: np.ndarray, channels: int) -> np.ndarray:
    """An RGB conv kernel (kh, kw, 3, filters) for `channels` input channels, by timm's
    `adapt_input_conv` rule: 1 channel sums the RGB kernels; any other count repeats them
    cyclically along the input-channel axis, keeps the first `channels` and scales by 3/C
    (2 channels: R and G, times 3/2), so that the response to a grey image is kept."""
    k = np.asarray(kernel)
    dtype = k.dtype
    k = k.astype(np.float32)
    if channels == 1:
        out = k.sum(axis=2, keepdims=True)
    else:
        reps = -(-channels // 3)
        out = np.concatenate([k] * reps, axis=2)[:, :, :channels, :] * (3.0 / channels)
    return out.astype(dtype)


def _adaptable(spec: list[tuple], file: list[tuple], channels: int) -> bool:
    if not spec or len(spec) != len(file) or channels == 3 or len(spec[0]) != 4:
        return False
    (kh, kw, cin, f), theirs = spec[0], tuple(file[0])
    return cin == channels and theirs == (kh, kw, 3, f) and [tuple(s) for s in spec[1:]] == [tuple(s) for s in file[1:]]


def _glob_check(graph: Graph, skip) -> list[str]:
    skip = [str(s) for s in (skip or ())]
    names = [n.name for n in weighted_nodes(graph)]
    for g in skip:
        if not any(fnmatch.fnmatchcase(n, g) for n in names):
            raise SpecError(f"--weights-skip {g!r} matches no layer with weights in the spec {graph.name!r}")
    return skip


def compare(graph: Graph, wf: WeightsFile, skip=()) -> WeightsReport:
    """`graph`'s weighted layers against an open weights file, under the policy; a layer of
    the spec that the file holds twice is a SpecError (ambiguous), and so is a layer that
    would load whose index says it cannot (a dtype that is not floating point, data never
    written, an unknown filter: `_check_index`)."""
    skip = _glob_check(graph, skip)
    heads = set(classifier_layers(graph))
    stems, norms = (set(x) for x in _input_side(graph))
    sized = _after_flatten(graph)
    channels = {n.shape[-1] for n in graph.inputs}
    rows = []
    for node in weighted_nodes(graph):
        mine = [s for _, s in weight_specs(graph, node)]
        fl = wf.layers.get(node.name)
        if fl is not None and wf.format == "npz":  # an .npz names its weights: taken by name when all match
            _by_name(fl, [k for k, _ in weight_specs(graph, node)])
        theirs = None if fl is None else [s for _, s in fl.weights]
        if any(fnmatch.fnmatchcase(node.name, g) for g in skip):
            rows.append(LayerWeights(node.name, SKIPPED, mine, theirs))
        elif theirs is None:
            if node.name in heads:
                rows.append(LayerWeights(node.name, REINIT, mine, None, "not in the file"))
            else:
                rows.append(LayerWeights(node.name, MISSING, mine, None))
        elif [tuple(s) for s in theirs] == [tuple(s) for s in mine]:
            rows.append(LayerWeights(node.name, LOADED, mine, theirs))
        elif (node.name in heads and len(theirs) == len(mine) and theirs[0] and mine[0]
              and theirs[0][-1] != mine[0][-1]
              and [tuple(s[:-1]) for s in theirs] == [tuple(s[:-1]) for s in mine]):
            rows.append(LayerWeights(node.name, REINIT, mine, theirs, f"{theirs[0][-1]} → {mine[0][-1]} classes"))
        elif node.name in stems and len(channels) == 1 and _adaptable(mine, theirs, next(iter(channels))):
            rows.append(LayerWeights(node.name, ADAPTED, mine, theirs,
                                     f"3 → {next(iter(channels))} input channels by timm's adapt_input_conv rule"))
        elif (node.name in norms and len(channels) == 1 and mine[0] == (next(iter(channels)),)
              and [tuple(s) for s in theirs] == [(3,), (3,), ()]):
            c = next(iter(channels))
            rows.append(LayerWeights(node.name, ADAPTED, mine, theirs,
                                     f"3 → {c} input channels: " + ("the mean of the RGB statistics" if c == 1 else
                                                                    "the RGB statistics repeated")))
        else:
            note = "its shape follows the input size (after flatten)" if node.name in sized else ""
            rows.append(LayerWeights(node.name, MISMATCH, mine, theirs, note))
    ambiguous = [r.name for r in rows if r.name in wf.duplicates]
    if ambiguous:
        name = ambiguous[0]
        first, second = wf.duplicates[name][:2]
        raise SpecError(f"layer {name!r} is in the file twice ({first!r} and {second!r}): ambiguous, so neither "
                        f"loads", _where(wf.path))
    for row in rows:
        if row.status in (LOADED, ADAPTED):
            _check_index(wf, graph, row.name)
    names = {n.name for n in graph.nodes}
    extra = [n for n, fl in wf.layers.items() if n not in names and fl.weights]
    report = WeightsReport(_shown_path(wf.path), wf.format, graph.name, rows, extra, skip,
                           sum(1 for fl in wf.layers.values() if fl.weights))
    if report.foreign:  # a layer of the same name is another network's: no shape to blame
        report.network = wf.network_name()
        for row in report.of(MISMATCH):
            row.note = "another network's layer of this name"
    return report


def _by_name(fl: FileLayer, names: list[str]) -> None:
    """`fl`'s weights put in the order of `names` when it holds exactly those names."""
    have = [k for k, _ in fl.weights]
    if have != names and sorted(have) == sorted(names):
        order = [have.index(n) for n in names]
        fl.weights = [fl.weights[i] for i in order]
        fl._get = [fl._get[i] for i in order]


def _read_loading(wf: WeightsFile, report: WeightsReport, graph: Graph, keep: bool) -> dict:
    """The arrays of every layer that `report` loads, read and checked (`_values`) in the
    report's order: kept (the loader) or only checked, a layer at a time (the report)."""
    arrays = {}
    for row in report.loading:
        got = _values(wf, graph, row.name)
        if keep:
            arrays[row.name] = got
    return arrays


def weights_report(graph: Graph, path, skip=()) -> WeightsReport:
    """The static load report of `path` into `graph` (no TensorFlow): for each weighted
    layer, loaded / adapted / re-initialised / skipped / missing / mismatch, and the file's
    layers that the spec lacks. When the policy accepts the load, every array that would load
    is read and checked as the loader checks it (finite, within float32's range), so a file
    the loader refuses is refused here with the same line."""
    with WeightsFile(path) as wf:
        report = compare(graph, wf, skip)
        if report.loadable:
            _nothing_loads(wf, report)
            _read_loading(wf, report, graph, keep=False)
        return report


def _nothing_loads(wf: WeightsFile, report: WeightsReport) -> None:
    if not report.loading:
        if report.foreign:
            raise report.error()
        raise SpecError("holds weights for none of the spec's layers: not weights of this network", _where(wf.path))


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def read_weights(graph: Graph, path, skip=(), say=None) -> tuple[WeightsReport, dict[str, list[np.ndarray]]]:
    """The arrays that `load_weights` would set, without a model (no Keras, no TensorFlow):
    ``(report, {layer name: [array, ...]})``, each layer's arrays in its Keras weight order as
    the file holds them (float16/32/64, a normalization's count an integer), the stem's and a
    normalization's adapted as the report says. Only the layers that load are in the dict:
    the re-initialised classifier and the skipped layers are not. A load the policy refuses
    is the same SpecError as `load_weights`', raised before anything is returned; the summary
    line goes to `say` when one is given (by default nothing is said: the caller says it)."""
    with WeightsFile(path) as wf:
        report = compare(graph, wf, skip)
        if not report.loadable:
            raise report.error()
        _nothing_loads(wf, report)
        arrays = _read_loading(wf, report, graph, keep=True)  # everything read before anything is returned
    for row in report.of(ADAPTED):
        got = arrays[row.name]
        if len(row.spec[0]) == 4:  # a stem convolution's kernel
            got = [adapt_input_kernel(got[0], row.spec[0][2])] + got[1:]
        else:  # a normalization's mean and variance; its count as it is
            got = [adapt_input_stats(got[0], row.spec[0][0]), adapt_input_stats(got[1], row.spec[0][0]), got[2]]
        arrays[row.name] = got
    if say is not None:
        say(summary_line(path, report))
    return report, arrays


def summary_line(path, report: WeightsReport) -> str:
    """What a load says: ``weights from <file>: <report.summary()>``."""
    return f"weights from {_shown_path(path)}: {report.summary()}"


def set_arrays(model, arrays: dict[str, list[np.ndarray]]) -> None:
    """Set `read_weights`' arrays on the layers of the same name of `model` (built from the
    graph they were read for), every shape checked before any layer changes. A layer that
    derives state from its weights (a Normalization's broadcast mean and variance) has it
    derived again (``finalize_state``, as Keras' own loaders do: ``set_weights`` alone leaves
    a Normalization computing with the statistics it was built with)."""
    layers = layers_for_arrays(model, arrays)
    for name, got in arrays.items():
        layer = layers[name]
        layer.set_weights(got)
        finalize = getattr(layer, "finalize_state", None)
        if finalize is not None:
            finalize()


def layers_for_arrays(model, arrays: dict[str, list[np.ndarray]]) -> dict:
    """{layer name: layer} of `model` for `arrays`, every layer's weight shapes checked
    against its arrays' (an ArchspecError naming the layer, before any changes)."""
    layers = {l.name: l for l in model.layers}
    for name, got in arrays.items():
        layer = layers.get(name)
        have = None if layer is None else [tuple(w.shape) for w in layer.weights]
        if have != [tuple(a.shape) for a in got]:
            raise ArchspecError(f"layer {name!r}: the built model's weights {have} are not the IR's "
                                f"{[tuple(a.shape) for a in got]} (an archspec bug)")
    return layers


def load_weights(model, graph: Graph, path, skip=(), say=None) -> WeightsReport:
    """Load `path` into `model` (built from `graph`) exactly as `weights_report` says: each
    loaded layer's arrays set by archspec (`read_weights`, then `set_arrays`), the stem
    adapted, the rest left at their initial weights. A load the policy refuses is a SpecError
    naming the layers, raised before any layer changes; the summary line goes to `say`
    (default: standard error)."""
    say = say or _stderr
    report, arrays = read_weights(graph, path, skip)
    set_arrays(model, arrays)
    say(summary_line(path, report))
    return report
