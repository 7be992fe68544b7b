"""Named passes over an ONNX model (`onnx.ModelProto` in, the same model out), each one
small, documented and tested on its own (tests/test_onnx_passes.py, on graphs made with
`onnx.helper`, no TensorFlow). `finish` is the sequence every ONNX export goes through.

- `check_inputs`: the graph's only input is the model's (EfficientNet's Normalization
  constants must not have become graph inputs, the trap of `model.export(format="onnx")`).
- `check_outputs`: the outputs are the model's, in the model's order.
- `order_outputs`: put the outputs in a given order (tf2onnx returns a function's dict
  outputs sorted by name).
- `dynamic_batch`: the first dimension of every graph input and output is named `batch`.
- `set_metadata`: archspec's metadata as `metadata_props`, and a doc string.
- `inputs_to_initializers`: graph inputs fed with weights become initializers holding them
  (how the large Dense kernels come back after tf2onnx).
- `toposort`: nodes reordered so each follows its producers (onnxruntime's sort).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ...core.errors import ArchspecError


def _inputs_not_initialized(proto) -> list[str]:
    init = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in init]


def check_inputs(proto, input_name: str):
    real = _inputs_not_initialized(proto)
    if real != [input_name]:
        raise ArchspecError(f"the ONNX graph has inputs {real}, expected only {input_name!r} "
                            "(constants left as graph inputs)")
    return proto


def check_outputs(proto, output_names: Sequence[str]):
    outs = [o.name for o in proto.graph.output]
    if outs != list(output_names):
        raise ArchspecError(f"the ONNX graph has outputs {outs}, expected {list(output_names)}")
    return proto


def order_outputs(proto, output_names: Sequence[str]):
    """Reorder the graph outputs as `output_names` (a no-op when the sets differ, which
    `check_outputs` then reports)."""
    import onnx

    by_name = {o.name: o for o in proto.graph.output}
    if set(by_name) == set(output_names) and len(by_name) == len(proto.graph.output):
        ordered = [onnx.ValueInfoProto.FromString(by_name[n].SerializeToString()) for n in output_names]
        del proto.graph.output[:]
        proto.graph.output.extend(ordered)
    return proto


def dynamic_batch(proto, name: str = "batch"):
    for vi in list(proto.graph.input) + list(proto.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = name
    return proto


def set_metadata(proto, metadata: Mapping[str, str]):
    import onnx

    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, dict(metadata))
    proto.doc_string = (f"{metadata.get('archspec.spec_name', proto.graph.name)} exported by archspec "
                        f"{metadata.get('archspec.version', '')}").rstrip()
    return proto


def inputs_to_initializers(proto, weights: Mapping[str, object]):
    """Turn the graph inputs named in `weights` into initializers with those values."""
    import numpy as np
    from onnx import numpy_helper

    graph = proto.graph
    names = [i.name for i in graph.input]
    missing = [n for n in weights if n not in names]
    if missing:
        raise ArchspecError(f"the ONNX graph lacks the weight inputs {missing} (graph inputs: {names})")
    keep = [i for i in graph.input if i.name not in weights]
    for n, v in weights.items():
        graph.initializer.append(numpy_helper.from_array(np.asarray(v), n))
    del graph.input[:]
    graph.input.extend(keep)
    return proto


def toposort(proto):
    """Reorder nodes so each comes after the producers of its inputs (the float16 converter
    appends its input casts at the end); onnxruntime's own sort, which raises on a cycle."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    try:
        OnnxModel.graph_topological_sort(proto.graph)
    except RuntimeError as exc:
        raise ArchspecError(f"the ONNX graph cannot be ordered: {exc}") from None
    return proto


def finish(proto, input_name: str, output_names: Sequence[str], metadata: Mapping[str, str]):
    """What every ONNX export goes through after conversion."""
    proto = check_inputs(proto, input_name)
    proto = check_outputs(proto, output_names)
    proto = dynamic_batch(proto)
    return set_metadata(proto, metadata)
