"""Benchmark of `archspec export` (ONNX): export time against bare
``tf2onnx.convert.from_keras`` on the same model, and ONNX Runtime (float32, int8)
against Keras/TensorFlow inference throughput at batch 1 and 32, measured side by side in
one run (measurements interleaved, so machine load affects each column alike).

    python bench/bench_export.py [--models resnet50 efficientnet] [--batches 1 32]
                                 [--seconds 3] [--markdown]

Prints a Markdown table (copy it into docs/benchmarks.md) and the machine it ran on.
Generated files go to a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def machine() -> str:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime
    import tensorflow as tf

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, "
            f"load average {load:.2f} at start; Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"onnxruntime {onnxruntime.__version__}")


def throughput(fn, batch: int, seconds: float, min_runs: int = 3) -> float:
    """Images per second: one warm-up call, then calls until `seconds` and `min_runs` pass."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_runs or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def bench_model(name: str, batches, seconds: float, tmp: Path, say, randomize_weights: bool = True) -> list[dict]:
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf
    import tf2onnx

    import archspec.exporting as ex
    from archspec.exporting import source
    model = source.resolve_model(name, None, 0, lambda m: None)[0]
    if randomize_weights:
        # Initial weights give a near-uniform softmax (every score ~0.001), which makes top-1
        # agreement meaningless; fan-in-scaled random weights (the parity tests' helper) give
        # logits that differ between classes and inputs.
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from parity import randomize

        randomize(model, seed=0)
    shape = tuple(model.inputs[0].shape[1:])
    input_name = model.inputs[0].name

    say(f"{name}: bare tf2onnx.convert.from_keras")
    t0 = time.perf_counter()
    sig = [tf.TensorSpec((None, *shape), tf.float32, name=input_name)]
    tf2onnx.convert.from_keras(model, input_signature=sig, opset=17)
    bare = time.perf_counter() - t0
    say(f"{name}: archspec export (with check)")
    r32 = ex.export(model, tmp / f"{name}.onnx", samples=2)
    say(f"{name}: archspec export --quantize int8")
    r8 = ex.export(model, tmp / f"{name}.int8.onnx", quantize="int8")

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s32 = ort.InferenceSession(r32["path"], opts, providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(r8["path"], opts, providers=["CPUExecutionProvider"])
    keras_fn = tf.function(lambda x: model(x, training=False))
    rows = []
    for b in batches:
        x = source.random_inputs(model, b, 1)
        xt = tf.constant(x)
        say(f"{name}: throughput at batch {b}")
        # interleaved: Keras, ORT fp32, ORT int8, twice, keeping each one's best
        k = o32 = o8 = 0.0
        for _ in range(2):
            k = max(k, throughput(lambda: keras_fn(xt).numpy(), b, seconds))
            o32 = max(o32, throughput(lambda: s32.run(None, {input_name: x}), b, seconds))
            o8 = max(o8, throughput(lambda: s8.run(None, {input_name: x}), b, seconds))
        rows.append({"model": name, "batch": b, "keras": k, "ort_fp32": o32, "ort_int8": o8})
    np.testing.assert_array_less(0, [r["keras"] for r in rows])
    return [{"export": {"model": name, "bare_tf2onnx_s": bare, "archspec_s": r32["seconds"],
                        "archspec_convert_s": r32["timings"]["convert"], "check_s": r32["timings"]["check"],
                        "max_abs_diff": r32["max_abs_diff"], "fp32_mb": r32["bytes"] / 1e6,
                        "int8_mb": r8["bytes"] / 1e6, "int8_top1": r8["top1_agreement"],
                        "int8_max_abs_diff": r8["max_abs_diff"]}, "throughput": rows}]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum measuring time per cell")
    ap.add_argument("--initial-weights", action="store_true",
                    help="keep the initial weights (default: fan-in-scaled random weights, so top-1 means something)")
    args = ap.parse_args(argv)

    def say(msg):
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    info = machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="archspec-bench-") as d:
        for name in args.models:
            results += bench_model(name, args.batches, args.seconds, Path(d), say, not args.initial_weights)

    print(f"Machine: {info}")
    print("Weights: " + ("initial (near-uniform softmax)" if args.initial_weights else
                         "fan-in-scaled random (tests/parity.py randomize, seed 0)") + "\n")
    print("Export (ONNX, opset 17). archspec export = the same Keras model (already built) "
          "converted, given metadata, checked with onnx.checker and run in ONNX Runtime next to Keras on 2 random inputs.\n")
    print("| model | bare tf2onnx.from_keras (s) | archspec export (s) | of which convert (s) | ratio | "
          "max abs diff | fp32 MB | int8 MB | int8 top-1 agreement | int8 max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        e = r["export"]
        print(f"| {e['model']} | {e['bare_tf2onnx_s']:.1f} | {e['archspec_s']:.1f} | {e['archspec_convert_s']:.1f} | "
              f"{e['archspec_s'] / e['bare_tf2onnx_s']:.2f} | {e['max_abs_diff']:.2g} | {e['fp32_mb']:.1f} | "
              f"{e['int8_mb']:.1f} | {e['int8_top1']:.0%} | {e['int8_max_abs_diff']:.2g} |")
    print("\nInference throughput (images/s, CPU) and ratios to Keras/TensorFlow (tf.function):\n")
    print("| model | batch | Keras/TF | ORT fp32 | ORT int8 | ORT fp32 / Keras | ORT int8 / Keras | int8 / fp32 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        for t in r["throughput"]:
            print(f"| {t['model']} | {t['batch']} | {t['keras']:.1f} | {t['ort_fp32']:.1f} | {t['ort_int8']:.1f} | "
                  f"{t['ort_fp32'] / t['keras']:.2f} | {t['ort_int8'] / t['keras']:.2f} | "
                  f"{t['ort_int8'] / t['ort_fp32']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
