"""Export a compiled network for deployment: ONNX (tf2onnx), SavedModel, `.keras`.

Every export is verified by running it (unless ``check=False``): the written artefact is
reloaded (ONNX Runtime, ``tf.saved_model.load``, ``keras.models.load_model``), run on a
few random inputs next to the Keras model, and the largest difference reported. Above the
tolerance (1e-4 for float32, relative to the output's magnitude when that exceeds 1) the
export fails and leaves nothing at the path.

Writes are atomic: everything is produced under a temporary name next to the target,
checked there, then renamed into place. An existing path is only replaced with
``force=True``, and a failed export leaves the old file (if any) untouched.

The hard cases handled here:

* Grouped convolutions (AlexNet). Keras runs ``Conv2D(groups=g)`` through an
  XLA-compiled function on TensorFlow's CPU, which tf2onnx cannot convert. For the
  conversion only, the model is cloned with those layers replaced by a subclass whose
  convolution calls ``tf.nn.convolution`` directly; tf2onnx turns that into an ONNX
  ``Conv`` with ``group=g``. The weights are the same objects' values, and the result is
  checked against the original model like any other export.
* EfficientNet's ``Normalization`` statistics: converted with ``tf2onnx.convert.from_keras``
  and an explicit input signature, so they are constants, not extra graph inputs (checked:
  the exported graph must have exactly one input).

TensorFlow, Keras, tf2onnx, onnx and onnxruntime are imported inside functions only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
import uuid
import weakref
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ArchspecError, MissingDependency, SpecError

FORMATS = ("onnx", "saved_model", "keras")
QUANTIZE_MODES = ("int8", "int8_dynamic")
DEFAULT_OPSET = 17
MIN_OPSET, MAX_OPSET = 13, 18
#: max |difference| allowed, by the compute dtype of the exported model
TOLERANCES = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}
METADATA_FILE = "archspec.json"
HEARTBEAT_S = 15.0

Progress = Callable[[str], None]


# ---------------------------------------------------------------- public entry point


def export(model_or_spec, path: str | os.PathLike, format: str = "onnx", *, opset: int = DEFAULT_OPSET,
           check: bool = True, force: bool = False, fp16: bool = False, quantize: str | None = None,
           calibration=None, overrides: list[str] | None = None, progress: Progress | None = None,
           samples: int = 3, seed: int = 0) -> dict[str, Any]:
    """Export a Keras model, a `.keras` file or a spec to ONNX, SavedModel or `.keras`.

    Args:
        model_or_spec: a `keras.Model`, a path to a `.keras` file, a spec path, a bundled
            spec name or a `Spec` (built with random weights first).
        path: where to write (a file; a directory for ``saved_model``).
        format: ``"onnx"``, ``"saved_model"`` or ``"keras"``.
        opset: ONNX opset (13-18).
        check: reload the result and compare it with the Keras model on random inputs.
        force: replace an existing `path`.
        fp16: ONNX with float16 weights and compute (inputs and outputs stay float32).
        quantize: ``"int8"`` (static quantization, ONNX Runtime, calibrated on
            `calibration`) or ``"int8_dynamic"`` (weights only, no calibration).
        calibration: for ``quantize="int8"``: None (generated random images), a `.npy`
            file or array of shape (N, H, W, C), or a directory of images (decoded as RGB
            0-255 and resized to the input size).
        overrides: `--set` style overrides, when `model_or_spec` is a spec.
        progress: called with a short message at each step (and every 15 s of a long one).
        samples: random inputs for the check (variants use at least 16, for top-1 agreement).
        seed: seeds the random weights (of a spec) and the random inputs.

    Returns:
        A report: path, format, bytes, seconds, max_abs_diff, tolerance, passed,
        input_names, output_names, metadata, and for variants variant, float32_bytes,
        size_ratio, top1_agreement.

    Raises:
        SpecError: bad input (unknown format, existing path without force, ...). Exit 2.
        ArchspecError: the conversion or the parity check failed. Exit 1.
    """
    t_start = time.perf_counter()
    say = progress or (lambda msg: None)
    target = _check_options(path, format, opset, force, fp16, quantize, calibration, overrides, samples,
                            model_or_spec)
    model, info, t_build = _resolve_model(model_or_spec, overrides, seed, say)
    if len(model.inputs) != 1:
        raise ArchspecError(f"export supports single-input models (got {len(model.inputs)} inputs)")
    input_name = model.inputs[0].name
    output_names = list(model.output_names)
    input_shape = tuple(model.inputs[0].shape[1:])
    compute_dtype = _compute_dtype(model)
    variant = "fp16" if fp16 else quantize
    tolerance = None if variant else TOLERANCES.get(compute_dtype, 1e-4)
    metadata = _metadata(model, info, input_name, input_shape, output_names)
    report: dict[str, Any] = {
        "path": str(target), "format": format, "spec": info.get("spec_name"), "input_names": [input_name],
        "output_names": output_names, "input_shape": [None, *input_shape], "metadata": metadata,
        "tolerance": tolerance, "checked": bool(check),
    }
    if format == "onnx":
        report["opset"] = opset
    if variant:
        report["variant"] = variant

    n = max(samples, 16) if variant else samples
    x = _random_inputs(model, n, seed) if (check or variant) else None
    tmp = _staging_name(target, format)
    try:
        timings = {"build": t_build}
        if format == "onnx":
            _export_onnx(model, tmp, opset, input_name, input_shape, output_names, metadata, fp16, quantize,
                         calibration, seed, say, timings, report)
        elif format == "saved_model":
            _export_saved_model(model, tmp, input_name, input_shape, output_names, metadata, say, timings)
        else:
            _export_keras(model, tmp, metadata, say, timings)
        if check or variant:
            t0 = time.perf_counter()
            say("running the Keras model on %d random inputs…" % len(x))
            ref = _keras_outputs(model, x)
            say({"onnx": "checking with onnxruntime…", "saved_model": "checking with tf.saved_model.load…",
                 "keras": "checking with keras.models.load_model…"}[format])
            got = {"onnx": _run_onnx, "saved_model": _run_saved_model, "keras": _run_keras}[format](
                tmp, x, input_name, output_names)
            diffs = _compare(ref, got, output_names)
            timings["check"] = time.perf_counter() - t0
            report["max_abs_diff"] = max(d["max_abs_diff"] for d in diffs.values())
            report["outputs"] = diffs
            report["samples"] = len(x)
            if variant:
                report["top1_agreement"] = _top1(ref[-1], got[-1])
                report["passed"] = True
            else:
                bad = {k: d for k, d in diffs.items() if d["max_abs_diff"] > tolerance * max(1.0, d["max_abs_ref"])}
                report["passed"] = not bad
                if bad:
                    worst = max(bad.items(), key=lambda kv: kv[1]["max_abs_diff"])
                    raise ArchspecError(
                        f"{format} export does not match Keras: output {worst[0]!r} differs by up to "
                        f"{worst[1]['max_abs_diff']:.3g} (tolerance {tolerance:g}"
                        + (f" x {worst[1]['max_abs_ref']:.3g}" if worst[1]['max_abs_ref'] > 1 else "")
                        + f"); nothing written to {target}")
        else:
            report["max_abs_diff"] = None
            report["passed"] = None
        report["bytes"] = _size(tmp)
        if variant and "float32_bytes" in report:
            report["size_ratio"] = report["bytes"] / report["float32_bytes"]
        say(f"writing {target}")
        _commit(tmp, target, force)
    except (ArchspecError, KeyboardInterrupt):
        _remove(tmp)
        raise
    except Exception as exc:
        _remove(tmp)
        raise ArchspecError(f"{format} export failed: {type(exc).__name__}: {_short(exc)}") from exc
    finally:
        _remove_side_files(tmp)
    report["timings"] = {k: round(v, 3) for k, v in timings.items()}
    report["seconds"] = round(time.perf_counter() - t_start, 3)
    return report


# ---------------------------------------------------------------- options and input


def _check_options(path, format, opset, force, fp16, quantize, calibration, overrides, samples, model_or_spec) -> Path:
    if format not in FORMATS:
        raise SpecError(f"unknown export format {format!r}; valid formats: {', '.join(FORMATS)}")
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= MAX_OPSET:
        raise SpecError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET} (got {opset!r})")
    if (fp16 or quantize) and format != "onnx":
        raise SpecError(f"--fp16 and --quantize apply to ONNX exports (got format {format!r})")
    if fp16 and quantize:
        raise SpecError("choose one of fp16 and quantize")
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise SpecError(f"unknown quantization {quantize!r}; valid: {', '.join(QUANTIZE_MODES)}")
    if calibration is not None and quantize != "int8":
        raise SpecError("calibration data is used by static quantization only (quantize='int8')")
    if not isinstance(samples, int) or samples < 1:
        raise SpecError(f"samples must be a positive integer (got {samples!r})")
    if overrides and not isinstance(model_or_spec, (str, os.PathLike)) and not _is_spec(model_or_spec):
        raise SpecError("overrides (--set) apply to a spec, not to a built model")
    target = Path(os.fspath(path))
    if not target.name:
        raise SpecError(f"export path must name a file or directory (got {os.fspath(path)!r})")
    if format == "keras" and target.suffix != ".keras":
        raise SpecError(f"a .keras export needs a path ending in .keras (got {target})")
    if not target.parent.is_dir():
        raise SpecError(f"{target.parent}: no such directory")
    if (target.exists() or target.is_symlink()) and not force:
        raise SpecError(f"{target} exists; pass --force (force=True) to replace it")
    return target


def _is_spec(obj) -> bool:
    from .spec import Spec

    return isinstance(obj, Spec)


def _keras():
    from ._quiet import native_stderr_filtered
    from .api import _keras_build

    _keras_build()  # Keras and the custom layers, TensorFlow's start-up notices filtered
    try:
        with native_stderr_filtered():
            import keras
            import tensorflow as tf  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(f"export needs TensorFlow and Keras 3 ({exc}); pip install tensorflow keras") from None
    return keras


# what export knows of the models it built (spec name, hash), kept beside them rather than
# as a private attribute on the Keras model
_MODEL_INFO: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def spec_hash(spec) -> str:
    """sha256 of a resolved spec's canonical JSON (sorted keys): what was built, exactly."""
    data = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def _resolve_model(obj, overrides, seed, say) -> tuple[Any, dict, float]:
    keras = _keras()
    t0 = time.perf_counter()
    if isinstance(obj, keras.Model):
        return obj, dict(_MODEL_INFO.get(obj) or {"spec_name": obj.name}), 0.0
    if isinstance(obj, (str, os.PathLike)) and os.fspath(obj).endswith(".keras"):
        p = Path(os.fspath(obj))
        if not p.is_file():
            raise SpecError(f"{p}: no such file")
        say(f"loading {p}…")
        try:
            model = keras.models.load_model(p)
        except Exception as exc:
            raise SpecError(f"{p}: cannot load as a Keras model ({type(exc).__name__}: {_short(exc)})") from None
        info = _read_keras_info(p) or {"spec_name": model.name}
        return model, info, time.perf_counter() - t0
    from .keras_build import build_model
    from .lower import lower
    from .resolving import resolve
    from .spec import Spec
    from .spec import load as load_spec

    if isinstance(obj, Spec):
        spec, raw = obj, None
    else:
        spec, raw = load_spec(obj, overrides)
    resolved = resolve(spec)
    graph = lower(resolved, raw)
    say(f"building {resolved.name} ({graph.params:,} parameters)…")
    model = build_model(graph, seed=seed)
    info = {"spec_name": resolved.name, "spec_sha256": spec_hash(resolved),
            "reference": resolved.reference or None}
    _MODEL_INFO[model] = info
    return model, info, time.perf_counter() - t0


def _read_keras_info(p: Path) -> dict | None:
    try:
        with zipfile.ZipFile(p) as z:
            if METADATA_FILE in z.namelist():
                return json.loads(z.read(METADATA_FILE)).get("source") or None
    except (zipfile.BadZipFile, ValueError, OSError):
        return None
    return None


def _compute_dtype(model) -> str:
    policy = getattr(model, "dtype_policy", None)
    return str(getattr(policy, "compute_dtype", None) or "float32")


def _metadata(model, info, input_name, input_shape, output_names) -> dict[str, str]:
    """What a deployment needs to know, as string key/values (ONNX metadata_props)."""
    from . import __version__

    pre = _preprocessing(model)
    return {
        "archspec.version": __version__,
        "archspec.spec_name": str(info.get("spec_name") or model.name),
        "archspec.spec_sha256": str(info.get("spec_sha256") or "unknown"),
        "archspec.input": json.dumps({"name": input_name, "shape": [None, *input_shape], "layout": "NHWC",
                                      "dtype": "float32"}),
        "archspec.outputs": json.dumps(output_names),
        "archspec.preprocessing": json.dumps(pre),
    }


def _preprocessing(model) -> dict:
    """The input preprocessing the model does itself (leading Rescaling / Normalization
    layers), and what it therefore expects."""
    keras = _keras()
    import numpy as np

    steps = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Rescaling):
            steps.append({"op": "rescaling", "layer": layer.name, "scale": _plain(layer.scale),
                          "offset": _plain(layer.offset)})
        elif isinstance(layer, keras.layers.Normalization):
            mean = np.asarray(layer.mean).reshape(-1).tolist() if hasattr(layer, "mean") else None
            var = np.asarray(layer.variance).reshape(-1).tolist() if hasattr(layer, "variance") else None
            steps.append({"op": "normalization", "layer": layer.name, "mean": mean, "variance": var})
        else:
            break
    if steps:
        expects = "RGB pixel values in [0, 255], NHWC float32; the model rescales / normalizes them itself"
    else:
        expects = ("inputs preprocessed as the network was trained (the model applies no preprocessing), "
                   "NHWC float32")
    return {"in_model": steps, "expects": expects}


def _plain(v):
    try:
        import numpy as np

        a = np.asarray(v, dtype="float64")
        return a.item() if a.ndim == 0 else a.tolist()
    except Exception:
        return v


def _random_inputs(model, n: int, seed: int):
    """Random inputs in the range the model expects: pixels in [0, 255] when the model
    starts with its own rescaling, else standard-normal values (already-normalized data)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1234)
    shape = (n, *model.inputs[0].shape[1:])
    if _preprocessing(model)["in_model"]:
        return rng.uniform(0.0, 255.0, size=shape).astype("float32")
    return rng.standard_normal(size=shape).astype("float32")


# ---------------------------------------------------------------- ONNX


class _Heartbeat:
    """Calls `say(msg (N s))` every `interval` seconds while a long step runs."""

    def __init__(self, say: Progress, msg: str, interval: float = HEARTBEAT_S):
        self.say, self.msg, self.interval = say, msg, interval
        self._stop = threading.Event()
        self._t0 = 0.0

    def __enter__(self):
        self._t0 = time.perf_counter()
        self.say(self.msg)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(self.interval):
            self.say(f"{self.msg.rstrip('…')} ({time.perf_counter() - self._t0:.0f} s)…")

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def onnx_ready_model(model):
    """The model as tf2onnx can convert it: grouped `Conv2D` layers (which Keras runs via
    an XLA-compiled function on CPU) replaced by a subclass that calls
    ``tf.nn.convolution`` directly — tf2onnx makes that an ONNX ``Conv`` with ``group``.
    Returns `model` itself when it has no grouped convolution."""
    keras = _keras()
    import tensorflow as tf

    def grouped(layer):
        return type(layer) is keras.layers.Conv2D and getattr(layer, "groups", 1) > 1

    if not any(grouped(layer) for layer in model._flatten_layers(include_self=False)):
        return model

    class _GroupedConv2D(keras.layers.Conv2D):
        def convolution_op(self, inputs, kernel):
            return tf.nn.convolution(inputs, kernel, strides=list(self.strides), padding=self.padding.upper(),
                                     dilations=list(self.dilation_rate),
                                     data_format="NHWC" if self.data_format == "channels_last" else "NCHW")

    def clone(layer):
        cls = _GroupedConv2D if grouped(layer) else layer.__class__
        return cls.from_config(layer.get_config())

    clone_model = keras.models.clone_model(model, clone_function=clone)
    old = {layer.name: layer for layer in model.layers}
    for layer in clone_model.layers:
        w = old[layer.name].get_weights()
        if w:
            layer.set_weights(w)
    return clone_model


# Dense kernels at least this large (VGG's fc1 is 102.8M values, AlexNet's fc6 37.7M) are kept
# out of the TensorFlow graph during conversion: freezing them as constants makes TensorFlow and
# tf2onnx copy them over and over (VGG16 went past 24 GB on a 24 GB machine; this way 4.7 GB).
LARGE_WEIGHT = 4_000_000


def _large_kernels(model) -> list:
    keras = _keras()
    return [layer.kernel for layer in model._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.Dense) and int(np.prod(layer.kernel.shape)) >= LARGE_WEIGHT]


_HANDLERS_REGISTERED = False


def register_tf2onnx_handlers() -> None:
    """TensorFlow ops tf2onnx 1.17 cannot convert, written with ONNX ops it has:

    - ``Erfc`` (exact GELU, ``tf.nn.gelu(approximate=False)``, as ConvNeXt uses):
      ``erfc(x) = 1 - erf(x)``; ONNX has ``Erf`` from opset 9.
    """
    global _HANDLERS_REGISTERED
    if _HANDLERS_REGISTERED:
        return
    from tf2onnx import utils
    from tf2onnx.handler import tf_op

    @tf_op("Erfc")
    class _Erfc:  # noqa: F841 - registered by the decorator
        @classmethod
        def version_9(cls, ctx, node, **kwargs):
            dtype = ctx.get_dtype(node.input[0])
            node.type = "Erf"
            out = node.output[0]
            one = ctx.make_const(utils.make_name("erfc_one"), np.array(1, dtype=utils.map_onnx_to_numpy_type(dtype)))
            sub = ctx.insert_new_node_on_output("Sub", out, inputs=[one.output[0], out],
                                                name=utils.make_name(f"{node.name}_erfc"))
            ctx.set_dtype(sub.output[0], dtype)
            ctx.copy_shape(out, sub.output[0])

    _HANDLERS_REGISTERED = True


def _to_onnx(model, opset, input_name, input_shape, say):
    import tensorflow as tf

    try:
        import tf2onnx
    except ImportError as exc:  # pragma: no cover
        raise MissingDependency(f"ONNX export needs tf2onnx ({exc}); pip install tf2onnx onnx onnxruntime") from None
    register_tf2onnx_handlers()
    conv_model = onnx_ready_model(model)
    sig = [tf.TensorSpec((None, *input_shape), tf.float32, name=input_name)]
    large = _large_kernels(conv_model)
    if not large:
        with _Heartbeat(say, f"converting with tf2onnx (opset {opset})…"):
            proto, _ = tf2onnx.convert.from_keras(conv_model, input_signature=sig, opset=opset)
        return proto
    return _to_onnx_large_weights_as_inputs(conv_model, large, sig, opset, say)


def _to_onnx_large_weights_as_inputs(model, large, sig, opset, say):
    """Convert with the large kernels fed in as function inputs (through a Keras
    StatelessScope), then make those inputs ONNX initializers holding the weights."""
    import onnx
    import tensorflow as tf
    import tf2onnx
    from onnx import numpy_helper

    keras = _keras()
    names = [f"archspec_weight_{i}" for i in range(len(large))]
    sig = sig + [tf.TensorSpec(v.shape, v.dtype, name=n) for v, n in zip(large, names)]
    out_names = list(model.output_names)

    @tf.function(input_signature=sig)
    def forward(x, *weights):
        with keras.StatelessScope(state_mapping=list(zip(large, weights))):
            y = model(x, training=False)
        ys = y if isinstance(y, (list, tuple)) else [y]
        return dict(zip(out_names, ys))

    with _Heartbeat(say, f"converting with tf2onnx (opset {opset}; {len(large)} large kernels as initializers)…"):
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=sig, opset=opset)
    graph = proto.graph
    keep = [i for i in graph.input if i.name not in names]
    if len(keep) != len(graph.input) - len(names):
        raise ArchspecError(f"tf2onnx did not keep the weight inputs {names} (graph inputs: "
                            f"{[i.name for i in graph.input]})")
    for v, n in zip(large, names):
        graph.initializer.append(numpy_helper.from_array(np.asarray(keras.ops.convert_to_numpy(v)), n))
    del graph.input[:]
    graph.input.extend(keep)
    by_name = {o.name: o for o in graph.output}
    if set(by_name) == set(out_names):  # dict outputs come back sorted; restore the model's order
        ordered = [onnx.ValueInfoProto.FromString(by_name[n].SerializeToString()) for n in out_names]
        del graph.output[:]
        graph.output.extend(ordered)
    return proto


def _finish_onnx(proto, input_name, output_names, metadata):
    """Name the batch dimension, store the metadata, check that the graph has exactly the
    one input (EfficientNet's Normalization constants must not have become inputs)."""
    import onnx

    inputs = [i.name for i in proto.graph.input]
    init = {t.name for t in proto.graph.initializer}
    real_inputs = [i for i in inputs if i not in init]
    if real_inputs != [input_name]:
        raise ArchspecError(f"the ONNX graph has inputs {real_inputs}, expected only {input_name!r} "
                            "(constants left as graph inputs)")
    outs = [o.name for o in proto.graph.output]
    if outs != output_names:
        raise ArchspecError(f"the ONNX graph has outputs {outs}, expected {output_names}")
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = f"{metadata['archspec.spec_name']} exported by archspec {metadata['archspec.version']}"
    return proto


def _export_onnx(model, tmp: Path, opset, input_name, input_shape, output_names, metadata, fp16, quantize,
                 calibration, seed, say, timings, report):
    import onnx

    t0 = time.perf_counter()
    proto = _to_onnx(model, opset, input_name, input_shape, say)
    proto = _finish_onnx(proto, input_name, output_names, metadata)
    timings["convert"] = time.perf_counter() - t0
    say("checking with onnx.checker…")
    onnx.checker.check_model(proto)
    if fp16:
        report["float32_bytes"] = proto.ByteSize()
        t0 = time.perf_counter()
        say("converting weights and compute to float16…")
        proto = _to_fp16(proto)
        onnx.checker.check_model(proto)
        timings["fp16"] = time.perf_counter() - t0
        onnx.save(proto, str(tmp))
    elif quantize:
        report["float32_bytes"] = proto.ByteSize()
        t0 = time.perf_counter()
        f32 = tmp.with_name(tmp.name + ".f32.onnx")
        onnx.save(proto, str(f32))
        _quantize(f32, tmp, quantize, calibration, model, seed, input_name, say, report)
        q = onnx.load(str(tmp))
        onnx.checker.check_model(q)
        if not q.metadata_props:
            onnx.helper.set_model_props(q, metadata)
            onnx.save(q, str(tmp))
        timings["quantize"] = time.perf_counter() - t0
    else:
        onnx.save(proto, str(tmp))


def _to_fp16(proto):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    meta = {p.key: p.value for p in proto.metadata_props}
    import onnx

    out = convert_float_to_float16(proto, keep_io_types=True, disable_shape_infer=False)
    _toposort(out.graph)

    del out.metadata_props[:]
    onnx.helper.set_model_props(out, {**meta, "archspec.variant": "fp16"})
    return out


def _toposort(graph) -> None:
    """Reorder a graph's nodes so each comes after the producers of its inputs (the float16
    converter appends its input casts at the end)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ArchspecError("the float16 graph has a cycle or a dangling input: "
                                + ", ".join(sorted({i for n in rest for i in n.input if i not in available})[:5]))
        pending = rest
    nodes = [type(n)() for n in ordered]
    for dst, src in zip(nodes, ordered):
        dst.CopyFrom(src)
    del graph.node[:]
    graph.node.extend(nodes)


def _quantize(src: Path, dst: Path, mode, calibration, model, seed, input_name, say, report):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)

    if mode == "int8_dynamic":
        say("quantizing weights to int8 (dynamic)…")
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QUInt8)
        return
    data = _calibration_data(calibration, model, seed)
    report["calibration"] = {"images": int(len(data)), "source": "generated" if calibration is None else
                             (os.fspath(calibration) if isinstance(calibration, (str, os.PathLike)) else "array")}

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{input_name: data[i:i + 1]} for i in range(len(data))])

        def get_next(self):
            return next(self._it, None)

    with _Heartbeat(say, f"quantizing to int8 (static, {len(data)} calibration images)…"):
        quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def _calibration_data(calibration, model, seed, n: int = 16):
    import numpy as np

    shape = tuple(model.inputs[0].shape[1:])
    if calibration is None:
        return _random_inputs(model, n, seed + 99)
    if isinstance(calibration, np.ndarray):
        arr = calibration
    else:
        p = Path(os.fspath(calibration))
        if p.is_dir():
            arr = _load_images(p, shape)
        elif p.suffix == ".npy" and p.is_file():
            arr = np.load(p, allow_pickle=False)
        else:
            raise SpecError(f"{p}: calibration data must be a .npy file or a directory of images")
    arr = np.asarray(arr, dtype="float32")
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != shape or len(arr) == 0:
        raise SpecError(f"calibration data must have shape (N, {', '.join(map(str, shape))}) "
                        f"(got {tuple(arr.shape)})")
    return arr


def _load_images(d: Path, shape) -> Any:
    import numpy as np
    import tensorflow as tf

    files = sorted(f for f in d.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".gif"))
    if not files:
        raise SpecError(f"{d}: no images (.jpg, .png, .bmp, .gif) for calibration")
    out = []
    for f in files:
        try:
            img = tf.io.decode_image(tf.io.read_file(str(f)), channels=shape[-1], expand_animations=False)
        except Exception as exc:
            raise SpecError(f"{f}: cannot decode image ({_short(exc)})") from None
        out.append(tf.image.resize(tf.cast(img, tf.float32), shape[:2]).numpy())
    return np.stack(out)


def _run_onnx(path: Path, x, input_name, output_names):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(output_names, {input_name: x})


# ---------------------------------------------------------------- SavedModel and .keras


def _export_saved_model(model, tmp: Path, input_name, input_shape, output_names, metadata, say, timings):
    keras = _keras()
    import tensorflow as tf

    t0 = time.perf_counter()
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(x):
        outs = model(x, training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        return {name: out for name, out in zip(output_names, outs)}

    with _Heartbeat(say, "writing the SavedModel (serving_default signature)…"):
        archive.add_endpoint("serving_default", serve,
                             input_signature=[tf.TensorSpec((None, *input_shape), tf.float32, name=input_name)])
        archive.write_out(str(tmp), verbose=False)
    extra = tmp / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / METADATA_FILE).write_text(json.dumps(_metadata_doc(metadata), indent=2))
    timings["convert"] = time.perf_counter() - t0


def _run_saved_model(path: Path, x, input_name, output_names):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]
    out = fn(**{input_name: tf.constant(x)})
    missing = [n for n in output_names if n not in out]
    if missing:
        raise ArchspecError(f"the SavedModel signature lacks outputs {missing} (has {sorted(out)})")
    return [out[n].numpy() for n in output_names]


def _export_keras(model, tmp: Path, metadata, say, timings):
    t0 = time.perf_counter()
    say("saving the .keras file…")
    model.save(str(tmp))
    with zipfile.ZipFile(tmp, "a") as z:
        z.writestr(METADATA_FILE, json.dumps(_metadata_doc(metadata), indent=2))
    timings["convert"] = time.perf_counter() - t0


def _metadata_doc(metadata: dict[str, str]) -> dict:
    doc = {}
    for k, v in metadata.items():
        try:
            doc[k] = json.loads(v) if v[:1] in "[{" else v
        except ValueError:
            doc[k] = v
    doc["source"] = {"spec_name": metadata["archspec.spec_name"],
                     "spec_sha256": metadata["archspec.spec_sha256"]}
    return doc


def _run_keras(path: Path, x, input_name, output_names):
    keras = _keras()
    loaded = keras.models.load_model(str(path))
    return _keras_outputs(loaded, x)


# ---------------------------------------------------------------- comparison


def _keras_outputs(model, x) -> list:
    import numpy as np

    out = model(x, training=False)
    if not isinstance(out, (list, tuple)):
        out = [out]
    return [np.asarray(o, dtype="float32") for o in out]


def _compare(ref, got, names) -> dict:
    import numpy as np

    if len(ref) != len(got):
        raise ArchspecError(f"the export returns {len(got)} outputs, the Keras model {len(ref)}")
    res = {}
    for name, r, g in zip(names, ref, got):
        g = np.asarray(g, dtype="float32")
        if r.shape != g.shape:
            raise ArchspecError(f"output {name!r}: shape {g.shape} from the export, {r.shape} from Keras")
        diff = float(np.max(np.abs(r - g))) if r.size else 0.0
        if not np.isfinite(diff):
            diff = float("inf")
        res[name] = {"max_abs_diff": diff, "max_abs_ref": float(np.max(np.abs(r))) if r.size else 0.0,
                     "shape": list(r.shape)}
    return res


def _top1(ref, got) -> float | None:
    import numpy as np

    ref, got = np.asarray(ref), np.asarray(got)
    if ref.ndim != 2 or ref.shape[-1] < 2:
        return None
    return float(np.mean(np.argmax(ref, -1) == np.argmax(got, -1)))


# ---------------------------------------------------------------- safe writes


def _staging_name(target: Path, format: str) -> Path:
    suffix = ".keras" if format == "keras" else ""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def _commit(tmp: Path, target: Path, force: bool) -> None:
    """Rename the checked temporary into place; an existing target only with force."""
    if target.exists() or target.is_symlink():
        if not force:
            raise SpecError(f"{target} exists; pass --force (force=True) to replace it")
        if tmp.is_file() and target.is_file() and not target.is_symlink():
            os.replace(tmp, target)
            return
        backup = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.rename(target, backup)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(backup, target)
            raise
        _remove(backup)
        return
    os.rename(tmp, target)


def _remove(p: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _remove_side_files(tmp: Path) -> None:
    for side in (tmp.with_name(tmp.name + ".f32.onnx"), tmp.with_name(tmp.name + ".f32-inferred.onnx")):
        _remove(side)
    # onnxruntime's calibrator writes augmented models next to the source
    for f in tmp.parent.glob(f"{tmp.name}*augmented*"):
        _remove(f)


def _size(p: Path) -> int:
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def _short(exc: BaseException, limit: int = 300) -> str:
    s = " ".join(str(exc).split())
    return s if len(s) <= limit else s[:limit] + "…"
