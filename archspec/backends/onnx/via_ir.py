"""Graph IR + the Keras model's weights → ONNX, with `onnx.helper` alone: no TensorFlow, no
tracing, no converter. Each IR node is one Keras layer; its ONNX nodes come from the
emitter of its op (`onnx_ops.EMITTERS`), its weights from a weights provider: any object
with ``node_weights(node) -> [float32 arrays in get_weights() order]``. Two are here:
`KerasWeights` (a built model's layer of the same name, ``layer.get_weights()``: the model
may be built on any Keras backend; TensorFlow and JAX are tested, the PyTorch backend is not
installed here), which `convert` makes of a Keras model it is given, and `ArrayWeights`
(the arrays read from a weights file by `weights.read_weights`, with no model and no
framework at all: ``export SPEC --weights FILE`` without TensorFlow).

Where the graph comes from:

- a model built by `export` from a spec (or through `source.model_to_export`): the `Graph`
  it was built from, kept beside the model (`source.graph_of`);
- any other Keras model (given, or loaded from a `.keras` file): the graph is rebuilt from
  the model itself (`graph_from_keras`): each layer's class and config give the op and its
  attributes (the op table's `from_keras`, the inverse of `keras_build.make_layer`), its
  inbound node the inputs, its output the shape. A layer with no IR op, or used twice, is an
  error that names it and points to ``--via tf2onnx``. tests/test_onnx_ir.py checks that the
  rebuilt graph equals the lowered one for bundled specs.

Layout: NHWC input, NCHW inside (see `onnx_ops`). The batch dimension is dynamic
(``batch``); inputs and outputs carry the Keras names.

Weights are not copied into protobuf: every initializer above 1 KiB is written to the file
as it is made, from the weight's own buffer (TensorFlow's and JAX's arrays are read without
a copy), either into the ONNX file itself (`StreamedData`: the file is one valid ModelProto
written in pieces) or into an external data file (`ExternalData`, aligned to 4 KiB; past
protobuf's 2 GiB limit the only way). Either way the ModelProto in memory stays small, so
the export's memory is the model's plus little more. (The fp16 and int8 variants start
from a ModelProto with its weights in it.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ...core.errors import ArchspecError
from ...ir.graph import Graph, Node
from ..optable import act_name, keras_classes
from . import ops as onnx_ops

#: initializers at least this large go to the external data file (as onnx's own default)
EXTERNAL_MIN_BYTES = 1024
_ALIGN = 4096


# ---------------------------------------------------------------- the graph of a Keras model


def _layer_attrs(layer, k, classes: dict | None = None) -> tuple[str, dict]:
    """(op, attrs) of one Keras layer, from the op table's `from_keras` of its class: the
    inverse of `keras_build.make_layer`. `classes`: `optable.keras_classes(k)`, made once."""
    c = layer.get_config()
    cls = type(layer)
    if c.get("data_format", "channels_last") != "channels_last":
        raise ArchspecError(f"layer {layer.name!r}: only channels_last models export through the IR "
                            f"(got data_format={c['data_format']!r}); use --via tf2onnx")
    found = (classes if classes is not None else keras_classes(k)).get(cls)
    if found is None:
        raise ArchspecError(f"layer {layer.name!r} ({cls.__name__}) has no IR op, so the IR exporter cannot "
                            f"export this model; use --via tf2onnx")
    entry, name = found
    return entry.op, entry.from_keras(layer, c, name)


def graph_from_keras(model) -> Graph:
    """The IR of a Keras functional model, read from its layers (class, config, inbound
    node, output shape). Parameters and MACs are not computed (export needs none)."""
    from ..keras import keras

    k = keras()
    nodes, seen = [], set()
    classes = keras_classes(k)
    for layer in model.layers:
        if len(layer._inbound_nodes) != 1:
            raise ArchspecError(f"layer {layer.name!r} is used {len(layer._inbound_nodes)} times; the IR exporter "
                                "needs one layer per node (use --via tf2onnx)")
        if isinstance(layer, k.layers.InputLayer):
            nodes.append(Node(layer.name, "input", [], {"shape": tuple(layer.output.shape[1:])},
                              shape=tuple(layer.output.shape[1:])))
            seen.add(layer.name)
            continue
        op, attrs = _layer_attrs(layer, k, classes)
        inputs = [t._keras_history.operation.name for t in layer._inbound_nodes[0].input_tensors]
        missing = [i for i in inputs if i not in seen]
        if missing:
            raise ArchspecError(f"layer {layer.name!r}: its inputs {missing} come later in model.layers")
        shape = tuple(layer.output.shape[1:])
        nodes.append(Node(layer.name, op, inputs, attrs, shape=shape))
        seen.add(layer.name)
    return Graph(model.name, nodes, list(model.output_names), [])


# ---------------------------------------------------------------- weights


def layer_weights(model, node: Node) -> list[np.ndarray]:
    """The weights an emitter needs, float32 numpy, in `get_weights()` order; for
    `normalization` its mean and variance (given in its config, or adapted)."""
    if node.op in ("input", "dropout", "identity"):
        return []
    layer = model.get_layer(node.name)
    if node.op == "normalization":
        from keras import ops

        return [np.asarray(ops.convert_to_numpy(layer.mean), np.float32),
                np.asarray(ops.convert_to_numpy(layer.variance), np.float32)]
    out = []
    for v in layer.weights:  # the order of get_weights(), without its copies
        w = weight_array(v)
        out.append(w.astype(np.float32, copy=False) if w.dtype.kind == "f" else w)
    return out


class KerasWeights:
    """The weights provider of a built Keras model: each node's layer of the same name
    (`layer_weights`)."""

    def __init__(self, model):
        self.model = model

    def node_weights(self, node: Node) -> list[np.ndarray]:
        return layer_weights(self.model, node)


class ArrayWeights:
    """The weights provider of arrays read from a file (`weights.read_weights`' dict, layer
    name -> arrays in Keras weight order), for `graph`: no model, no Keras. Each node gets what
    `layer_weights` gives for the model built from `graph` with those arrays set: float32
    arrays (an integer, a normalization's count, as it is); for a ``normalization`` its mean
    and variance alone, broadcast as Keras broadcasts them (to ``(1, ..., 1, channels)``):
    the file's when it held them, else the ones its attributes give. A node with weights that
    `arrays` lacks (a re-initialised classifier, a layer skipped by --weights-skip: their
    initial weights exist only in a built model) is an ArchspecError naming the layer."""

    def __init__(self, graph: Graph, arrays: dict):
        self.graph, self.arrays = graph, arrays

    def _given(self, node: Node) -> list[np.ndarray]:
        got = self.arrays.get(node.name)
        if got is None:
            raise ArchspecError(f"layer {node.name!r} ({node.op}) has weights in the spec, but none were read "
                                f"for it (a re-initialised or skipped layer has only a built model's initial "
                                f"weights): export it from the built model")
        return list(got)

    def node_weights(self, node: Node) -> list[np.ndarray]:
        if node.op in ("input", "dropout", "identity"):
            return []
        if node.op == "normalization":
            return self._normalization(node)
        if not node.params:
            return []
        from ..keras.weights import weight_specs  # numpy and h5py only: no Keras

        got = self._given(node)
        want = [tuple(s) for _, s in weight_specs(self.graph, node)]
        have = [tuple(np.shape(a)) for a in got]
        if have != want:
            raise ArchspecError(f"layer {node.name!r} ({node.op}): the arrays given have shapes {have}, the spec's "
                                f"weights {want}")
        out = []
        for a in got:
            a = np.asarray(a)
            out.append(a.astype(np.float32, copy=False) if a.dtype.kind == "f" else a)
        return out

    def _normalization(self, node: Node) -> list[np.ndarray]:
        """Keras' Normalization: the statistics reshaped to its broadcast shape, the input's
        rank with 1 for every axis but the last (the channels)."""
        shape = tuple(self.graph.node(node.inputs[0]).shape)
        target = (1,) * len(shape) + (shape[-1],)  # the batch axis, the reduced axes, the channels
        a = node.attrs
        if a.get("mean") is not None:
            stats = [a["mean"], a["variance"]]
        else:
            stats = self._given(node)[:2]
        out = []
        for v in stats:
            v = np.asarray(v, np.float32)
            if v.ndim > 1 or v.size not in (1, shape[-1]):
                raise ArchspecError(f"layer {node.name!r} (normalization): statistics of shape {v.shape} do not "
                                    f"broadcast to its {shape[-1]} channels")
            out.append(np.ascontiguousarray(np.broadcast_to(v.reshape(-1), target)))
        return out


def weights_provider(source):
    """`source` as a weights provider: itself when it has ``node_weights``, else (a Keras
    model) `KerasWeights` of it."""
    return source if hasattr(source, "node_weights") else KerasWeights(source)


def weight_array(v) -> np.ndarray:
    """A Keras variable's value as numpy, without a copy where the backend allows it
    (TensorFlow: a read-only view of the value read now; JAX on CPU: the array itself);
    `get_weights()` copies every weight, which for VGG's 0.55 GB took longer than the rest of
    the conversion."""
    val = getattr(v, "value", v)
    read = getattr(val, "read_value", None)  # a tf.Variable
    if read is not None:
        t = read()
        if hasattr(t, "_numpy"):
            return t._numpy()  # shares the tensor's buffer and keeps it alive
    try:
        return np.asarray(val)
    except Exception:  # e.g. a torch parameter that requires grad
        from keras import ops

        return np.asarray(ops.convert_to_numpy(val))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _little(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))


class StreamedData:
    """Writes the initializers into the ONNX file itself as they are made, straight from
    the weights' buffers (no copy into protobuf), then `finish` appends the rest of the
    model. Valid protobuf: a message may come in pieces, and a parser merges repeated
    instances of an embedded message (here ``ModelProto.graph``, each piece holding one
    ``initializer`` whose ``raw_data`` is the array's bytes). ONNX Runtime and `onnx.load`
    read it as one ModelProto; tests/test_onnx_ir.py checks it equals the in-memory one."""

    _RAW, _INIT, _GRAPH = 9, 5, 7  # TensorProto.raw_data, GraphProto.initializer, ModelProto.graph

    def __init__(self, path: Path):
        self.path = Path(path)
        self._f = open(self.path, "wb")

    def __call__(self, graph, name: str, arr: np.ndarray) -> None:
        from onnx import TensorProto, helper

        if arr.nbytes < EXTERNAL_MIN_BYTES:
            onnx_ops.add_tensor(graph, name, arr)
            return
        head = TensorProto()
        head.name = name
        head.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        head.dims.extend(arr.shape)
        tensor_head = head.SerializeToString() + _varint(self._RAW << 3 | 2) + _varint(arr.nbytes)
        tensor_len = len(tensor_head) + arr.nbytes
        graph_head = _varint(self._INIT << 3 | 2) + _varint(tensor_len)
        graph_len = len(graph_head) + tensor_len
        self._f.write(_varint(self._GRAPH << 3 | 2) + _varint(graph_len) + graph_head + tensor_head)
        self._f.write(memoryview(_little(arr)).cast("B"))

    def finish(self, proto) -> None:
        """Append the model (nodes, inputs, outputs, small initializers, metadata)."""
        self._f.write(proto.SerializeToString())
        self.close()

    def close(self):
        if not self._f.closed:
            self._f.close()


class ExternalData:
    """Writes initializers to one external data file as they are made; their TensorProtos
    reference it (location relative to the model file, offset, length)."""

    def __init__(self, path: Path, location: str):
        self.path, self.location = Path(path), location
        self._f = open(self.path, "wb")
        self.offset = 0

    def __call__(self, graph, name: str, arr: np.ndarray) -> None:
        """Small tensors inline in `graph`, the others written to the file."""
        from onnx import TensorProto, helper

        if arr.nbytes < EXTERNAL_MIN_BYTES:
            onnx_ops.add_tensor(graph, name, arr)
            return
        pad = (-self.offset) % _ALIGN
        if pad:
            self._f.write(b"\0" * pad)
            self.offset += pad
        self._f.write(memoryview(_little(arr)).cast("B"))
        t = graph.initializer.add()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(arr.dtype)
        t.dims.extend(arr.shape)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.location), ("offset", str(self.offset)), ("length", str(arr.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        self.offset += arr.nbytes

    def finish(self, proto, model_path: Path) -> None:
        import onnx

        self.close()
        onnx.save(proto, str(model_path))  # small: the weights are in the data file

    def close(self):
        if not self._f.closed:
            self._f.close()


# ---------------------------------------------------------------- batch-norm folding

#: the ops a following batch norm folds into (a per-output-channel scale of the kernel)
FOLDABLE = ("conv2d", "depthwise_conv2d")


def _readers(graph: Graph) -> dict[str, list[str]]:
    """{node: the nodes that read it}, in graph order."""
    readers: dict[str, list[str]] = {}
    for n in graph.nodes:
        for i in n.inputs:
            readers.setdefault(i, []).append(n.name)
    return readers


def foldable_batch_norms(graph: Graph) -> dict[str, str]:
    """{batch-norm node: the convolution before it} for every batch norm the IR shows to be
    the only reader of a convolution without its own activation (and that convolution not a
    graph output): the pairs `fold_batch_norm` merges."""
    readers = _readers(graph)
    nodes = {n.name: n for n in graph.nodes}
    pairs = {}
    for n in graph.nodes:
        if n.op != "batch_norm" or len(n.inputs) != 1:
            continue
        conv = nodes.get(n.inputs[0])
        if (conv is not None and conv.op in FOLDABLE and act_name(conv.attrs.get("activation")) is None
                and readers.get(conv.name) == [n.name] and conv.name not in graph.outputs):
            pairs[n.name] = conv.name
    return pairs


#: layers a zero padding before them folds into (their ONNX op takes `pads`): the convolutions
#: (a separable one's depthwise Conv takes them), and a max pool where its input is known to
#: be >= 0 (a zero then never wins the max)
PAD_INTO = ("conv2d", "depthwise_conv2d", "separable_conv2d", "max_pool")
NON_NEGATIVE = ("relu", "relu6", "sigmoid", "hard_sigmoid", "softmax")


def foldable_pads(graph: Graph) -> dict[str, str]:
    """{zero-padding node: the layer after it} for each zero padding whose only reader is a
    'valid' convolution (or a 'valid' max pool over non-negative values: after a ReLU), so
    the padding becomes that layer's ONNX `pads` (tf2onnx's conv2d_with_pad rewrite) and no
    Pad node is written."""
    readers = _readers(graph)
    nodes = {n.name: n for n in graph.nodes}
    out = {}
    for n in graph.nodes:
        if n.op != "zero_padding" or n.name in graph.outputs or len(readers.get(n.name, [])) != 1:
            continue
        reader = nodes[readers[n.name][0]]
        if reader.op not in PAD_INTO or reader.attrs.get("padding", "valid") != "valid" or len(reader.inputs) != 1:
            continue
        if reader.op == "max_pool":
            src = nodes.get(n.inputs[0])
            fn = src.attrs.get("fn") if src is not None and src.op == "activation" else \
                act_name(src.attrs.get("activation")) if src is not None else None
            (t, bo), (l, r) = n.attrs["padding"]
            if fn not in NON_NEGATIVE or max(t, bo) >= reader.attrs["pool"][0] or max(l, r) >= reader.attrs["pool"][1]:
                continue  # a signed input, or more padding than ONNX' MaxPool takes (pads < kernel)
        out[n.name] = reader.name
    return out


def with_folded_pad(node: Node, pad: Node) -> Node:
    """`node` ('valid') taking the padding of `pad` as its own: ONNX pads [top, left, bottom, right]."""
    (t, bo), (l, r) = pad.attrs["padding"]
    return Node(name=node.name, op=node.op, inputs=list(pad.inputs), attrs={**node.attrs, "folded_pads": [t, l, bo, r]},
                shape=node.shape, params=node.params, trainable=node.trainable, macs=node.macs, block=node.block,
                path=node.path)


def fold_batch_norm(conv: Node, conv_w: list, bn: Node, bn_w: list) -> tuple[Node, list]:
    """The convolution `conv` with the batch norm `bn` after it folded in: kernel x s, bias
    (b - mean) x s + beta, s = gamma / sqrt(variance + epsilon), computed in float64. So no
    BN statistic reaches the exported graph: a moving variance above float16's 65,504 (a
    first layer fed 0-255 pixels) cannot be clamped by a float16 cast."""
    w = [np.asarray(a, np.float64) for a in bn_w]
    c = w[-1].shape[0]
    gamma = w.pop(0) if bn.attrs.get("scale", True) else np.ones(c)
    beta = w.pop(0) if bn.attrs.get("center", True) else np.zeros(c)
    mean, var = w
    s = gamma / np.sqrt(var + float(bn.attrs["epsilon"]))
    kernel = np.asarray(conv_w[0], np.float64)
    bias = np.asarray(conv_w[1], np.float64) if conv.attrs.get("use_bias", True) else np.zeros(c)
    if conv.op == "depthwise_conv2d":  # (kh, kw, cin, m): output channel cin_i * m + j
        kernel = kernel * s.reshape(kernel.shape[2], kernel.shape[3])
    else:  # (kh, kw, cin / groups, filters)
        kernel = kernel * s
    folded = Node(conv.name, conv.op, list(conv.inputs), {**conv.attrs, "use_bias": True}, shape=conv.shape)
    return folded, [kernel.astype(np.float32), ((bias - mean) * s + beta).astype(np.float32)]


# ---------------------------------------------------------------- the conversion


def convert(model, opset: int, input_name: str, output_names, graph: Graph | None = None,
            external: ExternalData | None = None, say=lambda m: None, fold_bn: bool = False):
    """The ONNX ModelProto of `model` (not yet finished: see `onnx_passes.finish`).

    Args:
        model: where the weights come from: a built Keras model (read by layer name,
            `KerasWeights`), or any weights provider (``node_weights(node)``: `ArrayWeights`,
            with no model and no Keras).
        opset: the ONNX opset (`options.MIN_OPSET` .. `MAX_OPSET`).
        input_name, output_names: the Keras model's (for `ArrayWeights`: the graph's input
            node's name and its output nodes' names, as the model built from it has them).
        graph: the IR the model was built from; None rebuilds it from a Keras model (a
            provider that is not `KerasWeights` needs it given).
        external: where large initializers go as they are made (`StreamedData`: into the
            ONNX file itself; `ExternalData`: an external data file); None: in the proto.
    """
    from onnx import ModelProto, TensorProto, helper

    t0 = time.perf_counter()
    weights = weights_provider(model)
    if graph is None:
        if not isinstance(weights, KerasWeights):
            raise ArchspecError(f"the ONNX conversion from {type(weights).__name__} needs the graph the weights "
                                f"are for (graph=...): only a Keras model has one to read")
        say("reading the graph from the Keras model…")
        graph = graph_from_keras(weights.model)
    say(f"emitting ONNX from the graph IR (opset {opset}, {len(graph.nodes)} layers)…")
    inputs = graph.inputs
    if len(inputs) != 1:
        raise ArchspecError(f"the IR exporter supports single-input graphs (got {len(inputs)})")
    if len(output_names) != len(graph.outputs):
        raise ArchspecError(f"the model has outputs {list(output_names)}, the graph {graph.outputs}")
    proto = ModelProto()  # built in place: the weights are copied once, into their TensorProtos
    b = onnx_ops.Builder(opset, external, reserved=[input_name, *output_names], graph=proto.graph)
    tensor: dict[str, str] = {}
    in_shape = tuple(inputs[0].shape)
    b.shapes[input_name] = in_shape
    x = input_name
    if len(in_shape) == 3:
        x = b.op("Transpose", [input_name], f"{input_name}/nchw", perm=[0, 3, 1, 2])
    tensor[inputs[0].name] = x
    folds = foldable_batch_norms(graph) if fold_bn else {}
    folded_into = {conv: bn for bn, conv in folds.items()}
    pads = foldable_pads(graph)
    padded_by = {layer: pad for pad, layer in pads.items()}
    by_name = {n.name: n for n in graph.nodes}
    if folds:
        say(f"folding {len(folds)} batch norms into their convolutions…")
    for node in graph.nodes:
        if node.op == "input":
            continue
        if node.name in folds:  # emitted with its convolution
            tensor[node.name] = tensor[folds[node.name]]
            continue
        if node.name in pads:  # emitted as the pads of the layer after it
            continue
        if node.name in padded_by:
            node = with_folded_pad(node, by_name[padded_by[node.name]])
        emit = onnx_ops.EMITTERS.get(node.op)
        if emit is None:
            raise ArchspecError(f"layer {node.name!r}: no ONNX emitter for op {node.op!r}")
        xs = [tensor[i] for i in node.inputs]
        try:
            w = weights.node_weights(node)
            if node.name in folded_into:
                bn = by_name[folded_into[node.name]]
                node, w = fold_batch_norm(node, w, bn, weights.node_weights(bn))
            y = emit(b, node, xs, w)
            del w  # written already (a sink) or copied into the proto: not held to the end
        except ArchspecError:
            raise
        except Exception as exc:
            raise ArchspecError(f"layer {node.name!r} ({node.op}): {type(exc).__name__}: {exc}") from exc
        b.shapes[y] = tuple(node.shape)
        tensor[node.name] = y
    outs = []
    for name, out in zip(output_names, graph.outputs):
        y = tensor[out]
        shape = b.shapes[y]
        if len(shape) == 3:
            b.nodes.append(helper.make_node("Transpose", [y], [name], name=b.unique(f"{name}/nhwc"),
                                            perm=[0, 2, 3, 1]))
        else:
            b.nodes.append(helper.make_node("Identity", [y], [name], name=b.unique(f"{name}/output")))
        outs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *shape]))
    g = proto.graph
    g.name = graph.name
    g.node.extend(b.nodes)
    g.input.append(helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", *in_shape]))
    g.output.extend(outs)
    proto.ir_version = _IR_VERSION.get(opset, 8)
    proto.opset_import.append(helper.make_opsetid("", opset))
    proto.producer_name, proto.producer_version = "archspec", _version()
    say(f"emitted {len(b.nodes)} ONNX nodes in {time.perf_counter() - t0:.2f} s")
    return proto


#: the ONNX IR version each opset first came with (onnx.helper.VERSION_TABLE), so older
#: runtimes that support the opset also load the file
_IR_VERSION = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8}


def _version() -> str:
    from ...core.version import __version__

    return __version__


def external_data_name(target: Path) -> str:
    """The external data file of an ONNX file: ``<name>.data`` beside it."""
    return f"{Path(os.fspath(target)).name}.data"


def estimated_bytes(model) -> int:
    """The float32 weights of `model`, in bytes (what decides external data)."""
    return 4 * int(sum(int(np.prod(w.shape)) for w in model.weights))


def graph_bytes(graph: Graph) -> int:
    """The float32 weights of the model built from `graph`, in bytes, from the IR's parameter
    counts (what decides external data when there is no model: `ArrayWeights`)."""
    return 4 * int(sum(n.params for n in graph.nodes))

