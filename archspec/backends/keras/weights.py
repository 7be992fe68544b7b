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
"""

from __future__ import annotations

import fnmatch
import io
import os
import stat
import zipfile
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
    if op == "dense":
        u = a["units"]
        return [("kernel", (c, u))] + ([("bias", (u,))] if bias else [])
    if op in ("batch_norm", "layer_norm"):
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
        elif n.op not in ("depthwise_conv2d", "separable_conv2d", "dense", "flatten", "reshape", "concat"):
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


@dataclass
class FileLayer:
    name: str
    weights: list[tuple[str, tuple]]  # (weight name as written, shape)
    _get: list = field(default_factory=list, repr=False)  # one reader per weight

    def arrays(self) -> list[np.ndarray]:
        return [np.asarray(g()) for g in self._get]


def check_weights_file(path) -> None:
    """A weights file before anything is made: a .weights.h5 or legacy .h5 is an HDF5
    file, a .keras file a complete zip archive with the model's weights in HDF5, an .npz a
    zip of arrays. Anything else (garbage, a truncated download, another format under the
    suffix) is a SpecError naming the file."""
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
                    if "model.weights.h5" not in z.namelist():
                        raise SpecError("not a .keras file with weights (the archive holds no model.weights.h5)",
                                        _where(p))
                    with z.open("model.weights.h5") as fh:
                        ok = _is_hdf5(fh)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
                kind = ".npz" if name.endswith(".npz") else ".keras"
                raise SpecError(f"not a {kind} file (not a complete zip archive: truncated, or another format: "
                                f"{str(exc)[:80]})", _where(p)) from None
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


class WeightsFile:
    """An open weights file: `format` and `layers` (name -> FileLayer, in the file's order).
    A context manager; the arrays are read on demand (`FileLayer.arrays`) while it is open."""

    def __init__(self, path):
        self.path = Path(os.fspath(path))
        check_weights_file(self.path)
        self._closers: list = []
        self.layers: dict[str, FileLayer] = {}
        self.duplicates: list[str] = []
        name = self.path.name.lower()
        try:
            if name.endswith(".npz"):
                self.format = "npz"
                self._read_npz()
            else:
                import h5py

                if name.endswith(".keras"):
                    with zipfile.ZipFile(self.path) as z:
                        data = z.read("model.weights.h5")
                    f = h5py.File(io.BytesIO(data), "r")
                    self.format = "keras"
                else:
                    f = h5py.File(self.path, "r")
                    self.format = None
                self._closers.append(f.close)
                group = f["model_weights"] if "model_weights" in f else f
                if "layer_names" in group.attrs:
                    self.format = "legacy_h5"
                    self._read_legacy(group)
                else:
                    self.format = self.format or "weights_h5"
                    self._read_keras3(f)
        except SpecError:
            self.close()
            raise
        except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile, EOFError) as exc:
            self.close()
            raise SpecError(f"not a readable weights file (truncated or damaged: "
                            f"{' '.join(str(exc).split())[:80]})", _where(self.path)) from None

    def close(self):
        for c in self._closers:
            try:
                c()
            except Exception:  # pragma: no cover - closing a damaged file
                pass
        self._closers = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _add(self, name: str, wname: str, shape: tuple, getter) -> None:
        layer = self.layers.get(name)
        if layer is None:
            if len(self.layers) >= MAX_LAYERS:
                raise SpecError(f"holds more than {MAX_LAYERS:,} layers: not a network's weights", _where(self.path))
            layer = self.layers[name] = FileLayer(name, [])
        layer.weights.append((wname, tuple(int(d) for d in shape)))
        layer._get.append(getter)

    def _read_legacy(self, group) -> None:
        import h5py

        for raw in group.attrs["layer_names"]:
            gname = _name(raw)
            g = group[raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)]
            wnames = [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in g.attrs.get("weight_names", [])]
            # a nested sub-model's group holds its leaves' weights as sub/leaf/weight
            owners = [w.split("/")[-2] if w.count("/") >= 1 else gname for w in wnames]
            nested = len(set(owners)) > 1
            for w, owner in zip(wnames, owners):
                ds = g[w]
                if not isinstance(ds, h5py.Dataset):
                    raise SpecError(f"layer {gname!r}: weight {_name(w)!r} is not an array", _where(self.path))
                self._add(_name(owner) if nested else gname, _name(w.split("/")[-1]), ds.shape, lambda d=ds: d[()])

    def _read_keras3(self, f) -> None:
        import h5py

        found: list[tuple[str, str, object]] = []

        def visit(path, obj):
            if isinstance(obj, h5py.Group) and path.split("/")[-1] == "vars":
                keys = sorted((k for k in obj.keys() if k.isdigit() and isinstance(obj[k], h5py.Dataset)), key=int)
                if keys:
                    found.append((path, _name(obj.attrs["name"]) if "name" in obj.attrs else "", obj))
                    if len(found) > MAX_LAYERS:
                        raise SpecError(f"holds more than {MAX_LAYERS:,} layers: not a network's weights",
                                        _where(self.path))
        f.visititems(visit)
        if found and not all(name for _, name, _ in found):
            raise SpecError("this Keras .weights.h5 does not name its layers (written by an older Keras 3): "
                            "load it into its Keras model and save it again with a current Keras", _where(self.path))
        for _, name, g in found:
            if name in self.layers:
                self.duplicates.append(name)
                continue
            for k in sorted((k for k in g.keys() if k.isdigit()), key=int):
                ds = g[k]
                self._add(name, k, ds.shape, lambda d=ds: d[()])

    def _read_npz(self) -> None:
        z = np.load(self.path, allow_pickle=False)
        self._closers.append(z.close)
        for key in z.files:
            if "/" not in key:
                raise SpecError(f"an .npz of weights names its arrays layer_name/weight_name (got {_name(key)!r})",
                                _where(self.path))
            layer, wname = key.rsplit("/", 1)
            shape = _npz_shape(z, key)
            self._add(_name(layer), _name(wname), shape, lambda k=key: z[k])


def _npz_shape(z, key: str) -> tuple:
    """The shape of one .npz member from its .npy header, without reading the array."""
    from numpy.lib import format as npformat

    with z.zip.open(key + ".npy") as fh:
        version = npformat.read_magic(fh)
        reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
        shape, _, _ = reader(fh)
    return tuple(shape)


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

    def summary(self) -> str:
        """One line: "314 of 320 layers load; classifier re-initialised (1000 → 2 classes); ..."."""
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
        """The SpecError of a load this report refuses: one line, the layers named."""
        return SpecError(f"weights do not load: {self.summary()}; only the classifier (when head.classes differs), "
                         f"a stem over other input channels and layers named by --weights-skip may differ",
                         _where(self.path))

    def to_dict(self) -> dict:
        counts = {s: len(self.of(s)) for s in (LOADED, ADAPTED, REINIT, SKIPPED, MISSING, MISMATCH)}
        return {"file": self.path, "format": self.format, "spec": self.spec, "summary": self.summary(),
                "loadable": self.loadable, "layers_with_weights": len(self.layers), "loading": len(self.loading),
                "counts": counts, "layers": [l.to_dict() for l in self.layers], "file_only": list(self.extra),
                "skip": list(self.skip)}


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
    """`graph`'s weighted layers against an open weights file, under the policy."""
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
    names = {n.name for n in graph.nodes}
    extra = [n for n, fl in wf.layers.items() if n not in names and fl.weights]
    return WeightsReport(_shown_path(wf.path), wf.format, graph.name, rows, extra, skip)


def _by_name(fl: FileLayer, names: list[str]) -> None:
    """`fl`'s weights put in the order of `names` when it holds exactly those names."""
    have = [k for k, _ in fl.weights]
    if have != names and sorted(have) == sorted(names):
        order = [have.index(n) for n in names]
        fl.weights = [fl.weights[i] for i in order]
        fl._get = [fl._get[i] for i in order]


def weights_report(graph: Graph, path, skip=()) -> WeightsReport:
    """The static load report of `path` into `graph` (no TensorFlow): for each weighted
    layer, loaded / adapted / re-initialised / skipped / missing / mismatch, and the file's
    layers that the spec lacks."""
    with WeightsFile(path) as wf:
        return compare(graph, wf, skip)


def _stderr(line: str) -> None:
    import sys

    print(line, file=sys.stderr)


def load_weights(model, graph: Graph, path, skip=(), say=None) -> WeightsReport:
    """Load `path` into `model` (built from `graph`) exactly as `weights_report` says: each
    loaded layer's arrays set by archspec (`layer.set_weights`), the stem adapted, the rest
    left at their initial weights. A load the policy refuses is a SpecError naming the layers,
    raised before any layer changes; the summary line goes to `say` (default: standard error)."""
    say = say or _stderr
    with WeightsFile(path) as wf:
        report = compare(graph, wf, skip)
        if not report.loadable:
            raise report.error()
        if not report.loading:
            raise SpecError("holds weights for none of the spec's layers: not weights of this network",
                            _where(wf.path))
        arrays = {}
        for row in report.loading:  # everything read before any layer changes
            try:
                got = wf.layers[row.name].arrays()
            except (OSError, KeyError, ValueError) as exc:
                raise SpecError(f"layer {row.name!r}: cannot read its weights (truncated or damaged: "
                                f"{' '.join(str(exc).split())[:80]})", _where(wf.path)) from None
            if row.status == ADAPTED and len(row.spec[0]) == 4:
                got = [adapt_input_kernel(got[0], row.spec[0][2])] + got[1:]
            elif row.status == ADAPTED:  # a normalization's mean and variance; its count as it is
                got = [adapt_input_stats(got[0], row.spec[0][0]), adapt_input_stats(got[1], row.spec[0][0]), got[2]]
            arrays[row.name] = got
    layers = {l.name: l for l in model.layers}
    for name, got in arrays.items():
        layer = layers.get(name)
        have = None if layer is None else [tuple(w.shape) for w in layer.weights]
        if have != [tuple(a.shape) for a in got]:
            raise ArchspecError(f"layer {name!r}: the built model's weights {have} are not the IR's "
                                f"{[tuple(a.shape) for a in got]} (an archspec bug)")
    for name, got in arrays.items():
        layer = layers[name]
        layer.set_weights(got)
    say(f"weights from {_shown_path(path)}: {report.summary()}")
    return report
