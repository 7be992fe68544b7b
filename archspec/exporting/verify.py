"""The one check of every target and variant: run the written artefact (its target's
``run``: ONNX Runtime, tf.saved_model.load, keras.models.load_model, the LiteRT interpreter)
next to the Keras model on the same inputs and judge it: float formats by max |difference|
(`options.TOLERANCES`), variants on real images by their top-1 agreement with float32
(`options.MIN_AGREEMENT`)."""

from __future__ import annotations

from pathlib import Path

import time

from ..core.errors import ArchspecError
from .options import MIN_AGREEMENT
from .source import GraphModel
from .targets import TARGETS


#: inputs run at a time (a check of 256 images at 224x224 stays small)
BATCH = 32


def run(format: str, path: Path, x, input_name, output_names) -> list:
    """The outputs of the artefact at `path` (of `format`) on `x`: its target's ``run``."""
    return TARGETS[format].writer().run(path, x, input_name, output_names)


def joined(batches) -> list:
    import numpy as np

    parts = list(batches)
    return [np.concatenate([np.asarray(b[k]) for b in parts]) for k in range(len(parts[0]))]


def keras_outputs(model, x) -> list:
    import numpy as np

    def one(xb):
        out = model(xb, training=False)
        if not isinstance(out, (list, tuple)):
            out = [out]
        return [np.asarray(o, dtype="float32") for o in out]

    return joined(one(x[i:i + BATCH]) for i in range(0, len(x), BATCH))


def compare(ref, got, names) -> dict:
    """Per output: max |difference|, max |reference|, shape."""
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


def mismatch(diffs: dict, tolerance: float) -> str | None:
    """None when every output is within `tolerance` (relative to the output's magnitude
    above 1), else what differs and by how much."""
    bad = {k: d for k, d in diffs.items() if d["max_abs_diff"] > tolerance * max(1.0, d["max_abs_ref"])}
    if not bad:
        return None
    name, worst = max(bad.items(), key=lambda kv: kv[1]["max_abs_diff"])
    scale = f" x {worst['max_abs_ref']:.3g}" if worst["max_abs_ref"] > 1 else ""
    return f"output {name!r} differs by up to {worst['max_abs_diff']:.3g} (tolerance {tolerance:g}{scale})"


def accuracy(scores, labels) -> float | None:
    """Top-1 accuracy of class scores (N, classes) against integer labels (N,)."""
    import numpy as np

    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[-1] < 2 or len(scores) != len(labels):
        return None
    return float(np.mean(np.argmax(scores, -1) == np.asarray(labels)))


def top1(ref, got) -> float | None:
    import numpy as np

    ref, got = np.asarray(ref), np.asarray(got)
    if ref.ndim != 2 or ref.shape[-1] < 2:
        return None
    return float(np.mean(np.argmax(ref, -1) == np.argmax(got, -1)))


def check(job, tmp: Path) -> None:
    """Run the staged artefact `tmp` next to Keras on the job's check inputs; raise (exit 1)
    when it differs: float formats and fp16 beyond the job's tolerance, variants on real
    images below their minimum top-1 agreement. The figures go into the job's report."""
    t0 = time.perf_counter()
    x, data, report, say = job.x, job.data, job.report, job.say
    what = "random inputs" if data is None else "check images"
    say(f"running the Keras model on {len(x)} {what}…")
    # a `source.GraphModel` builds its Keras model only now
    ref = job.model.reference(x) if isinstance(job.model, GraphModel) else keras_outputs(job.model, x)
    say(f"checking with {job.target.runtime}…")
    got = run(job.format, tmp, x, job.input_name, job.output_names)
    diffs = compare(ref, got, job.output_names)
    job.timings["check"] = time.perf_counter() - t0
    report["max_abs_diff"] = max(d["max_abs_diff"] for d in diffs.values())
    report["outputs"] = diffs
    report["samples"] = len(x)
    agreement = top1(ref[-1], got[-1])
    report["top1_agreement"] = agreement
    if data is not None and data.y is not None:
        report["accuracy"] = {"keras": accuracy(ref[-1], data.y), "export": accuracy(got[-1], data.y)}
    problems = []
    if job.tolerance is not None:
        problem = mismatch(diffs, job.tolerance)
        if problem:
            problems.append(problem)
    variant = job.variant
    if variant and data is not None:
        need = MIN_AGREEMENT[variant] if job.opts.min_agreement is None else float(job.opts.min_agreement)
        report["min_agreement"] = need
        if agreement is None:
            problems.append(f"no class-score output to compare top-1 on (outputs {job.output_names})")
        elif agreement < need:
            problems.append(f"top-1 agreement with float32 {agreement:.1%} on {len(x)} {what} from "
                            f"{data.source} (needs {need:.0%})")
    report["passed"] = not problems
    if problems:
        name = f"{job.format} {variant} export" if variant else f"{job.format} export"
        raise ArchspecError(f"{name} does not match Keras: {'; '.join(problems)}; nothing written to {job.path}")
