"""Benchmark of the two ONNX paths of `archspec export`, side by side in one run: ONNX
emitted from the graph IR (the default, ``--via ir``) against tf2onnx (``--via tf2onnx``),
on the same already-built model with the same weights.

    python bench/bench_export.py [--models resnet50 efficientnet efficientnet:b7 vgg16]
                                 [--batch 8] [--seconds 3]

For each model and each path, one fresh subprocess builds the model (fan-in-scaled random
weights, tests/parity.py `randomize`, seed 0; a ``name:preset`` is scaled by
`archspec.resolving.compound.apply_preset` first), then exports it unchecked (timed: the conversion
alone, `export`'s ``timings["convert"]``, and the whole export with the onnx.checker and
the write), reports its peak resident memory (VmHWM), then runs the file in ONNX Runtime
next to Keras; so each path's peak is
measured alone, with nothing of the other path in the process; the peak is reset
(/proc/self/clear_refs) after the build, so it is that of the conversion and the write
with the built model in memory (the "before" column). The two ONNX files are then
run by ONNX Runtime in this process, interleaved (batch `--batch`, best of three windows
each), their ORT-optimized graphs compared, and their outputs compared.

Prints Markdown tables (copy them into docs/benchmarks.md) and the machine it ran on.
Generated files go to a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]


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

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        mem = float("nan")
    return (f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} logical CPUs, {mem:.0f} GiB, "
            f"load average {load:.2f} at start; Python {platform.python_version()}, "
            f"onnxruntime {onnxruntime.__version__}")


def _status_mb(key: str) -> float:
    """VmHWM (peak resident set size since start or the last reset) or VmRSS, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(model_ref: str, via: str, out: str) -> None:
    """One path on one model, in its own process: build, export, report as JSON on stdout."""
    sys.path.insert(0, str(ROOT / "tests"))
    from parity import randomize

    import archspec
    import archspec.exporting as ex
    from archspec.resolving import compound
    from archspec.backends.keras import files
    from archspec.exporting import source, to_onnx, verify

    name, _, preset = model_ref.partition(":")
    t0 = time.perf_counter()
    if preset:
        spec = compound.apply_preset(archspec.load(name), preset)
        model = source.model_to_export(spec, None, 0, lambda m: None)[0]
    else:
        model = source.model_to_export(name, None, 0, lambda m: None)[0]
    randomize(model, seed=0)
    build_s = time.perf_counter() - t0
    x = files.random_inputs(model, 2, 0)
    ref = verify.keras_outputs(model, x)  # (Keras' first call happens before the measurement)
    before = _status_mb("VmRSS")
    reset = _reset_peak()
    # the conversion and the write, unchecked, so the peak is that of the path alone
    r = ex.export(model, out, via=via, check=False)
    peak = _status_mb("VmHWM")
    t0 = time.perf_counter()
    got = to_onnx.run(Path(out), x, r["input_names"][0], r["output_names"])
    diff = max(d["max_abs_diff"] for d in verify.compare(ref, got, r["output_names"]).values())
    print("BENCH " + json.dumps({
        "model": model_ref, "via": via, "params": int(model.count_params()), "build_s": build_s,
        "convert_s": r["timings"]["convert"], "export_s": r["seconds"], "check_s": time.perf_counter() - t0,
        "max_abs_diff": diff, "mb": r["bytes"] / 1e6, "rss_before_mb": before, "peak_reset": reset,
        "rss_peak_mb": peak, "input": r["input_names"][0], "shape": r["input_shape"][1:]}), flush=True)


def run_child(model_ref: str, via: str, out: Path, say) -> dict:
    say(f"{model_ref}: export via {via} (own process)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, __file__, "--child", model_ref, via, str(out)], capture_output=True,
                       text=True, env=env)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("BENCH ")]
    if p.returncode or not lines:
        raise SystemExit(f"{model_ref} via {via} failed (exit {p.returncode}):\n{p.stderr[-4000:]}")
    return json.loads(lines[-1][6:])


def throughput(fn, batch: int, seconds: float, min_runs: int = 3) -> float:
    """Images per second: one warm-up call, then calls until `seconds` and `min_runs` pass."""
    fn()
    n, t0 = 0, time.perf_counter()
    while n < min_runs or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return n * batch / (time.perf_counter() - t0)


def bench_model(model_ref: str, batch: int, seconds: float, tmp: Path, say) -> dict:
    from collections import Counter

    import numpy as np
    import onnx
    import onnxruntime as ort

    stem = model_ref.replace(":", "-")
    res = {via: run_child(model_ref, via, tmp / f"{stem}.{via}.onnx", say) for via in ("ir", "tf2onnx")}
    ir, tf = res["ir"], res["tf2onnx"]
    say(f"{model_ref}: ONNX Runtime throughput at batch {batch}")
    sessions, optimized = {}, {}
    for via in res:  # what ONNX Runtime runs: its optimized graph, node types counted
        o = ort.SessionOptions()
        o.log_severity_level = 3
        o.optimized_model_filepath = str(tmp / f"{stem}.{via}.opt.onnx")
        sessions[via] = ort.InferenceSession(str(tmp / f"{stem}.{via}.onnx"), o, providers=["CPUExecutionProvider"])
        optimized[via] = sorted(Counter(n.op_type for n in onnx.load(o.optimized_model_filepath,
                                                                     load_external_data=False).graph.node).items())
    x = np.random.default_rng(1).uniform(0, 255, (batch, *ir["shape"])).astype("float32")
    outs = {via: s.run(None, {ir["input"]: x}) for via, s in sessions.items()}
    cross = max(float(np.max(np.abs(a - b))) for a, b in zip(outs["ir"], outs["tf2onnx"]))
    best = {via: 0.0 for via in res}
    for _ in range(3):  # interleaved, best of three windows each (the machine may be shared)
        for via, s in sessions.items():
            best[via] = max(best[via], throughput(lambda: s.run(None, {ir["input"]: x}), batch, seconds))
    for f in tmp.glob(f"{stem}.*"):
        f.unlink()
    return {"model": model_ref, "params": ir["params"], "ir": ir, "tf2onnx": tf, "ir_vs_tf2onnx": cross,
            "same_optimized_graph": optimized["ir"] == optimized["tf2onnx"], "optimized": optimized,
            "ips_ir": best["ir"], "ips_tf2onnx": best["tf2onnx"], "batch": batch}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["resnet50", "efficientnet", "efficientnet:b7", "vgg16"],
                    help="bundled spec names; name:preset scales by a preset first (efficientnet:b7)")
    ap.add_argument("--batch", type=int, default=8, help="ONNX Runtime batch size")
    ap.add_argument("--seconds", type=float, default=3.0, help="minimum measuring time per throughput window")
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "VIA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    def say(msg):
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    info = machine()
    results = []
    with tempfile.TemporaryDirectory(prefix="archspec-bench-") as d:
        for ref in args.models:
            results.append(bench_model(ref, args.batch, args.seconds, Path(d), say))

    print(f"Machine: {info}")
    print("Weights: fan-in-scaled random (tests/parity.py randomize, seed 0). Each path ran in its own process "
          "on the same built model.\n")
    print("| model | params | IR convert (s) | tf2onnx convert (s) | speed-up | IR export (s) | "
          "tf2onnx export (s) | IR peak RSS (MB) | tf2onnx peak RSS (MB) | built model's RSS (MB) | "
          "IR memory above it (MB) | tf2onnx memory above it (MB) | max abs diff vs Keras (IR / tf2onnx) | "
          "max abs diff IR vs tf2onnx |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        ir, tf = r["ir"], r["tf2onnx"]
        print(f"| {r['model']} | {r['params'] / 1e6:.1f}M | {ir['convert_s']:.2f} | {tf['convert_s']:.1f} | "
              f"{tf['convert_s'] / ir['convert_s']:.0f}x | {ir['export_s']:.1f} | {tf['export_s']:.1f} | "
              f"{ir['rss_peak_mb']:,.0f} | {tf['rss_peak_mb']:,.0f} | {ir['rss_before_mb']:,.0f} | "
              f"{ir['rss_peak_mb'] - ir['rss_before_mb']:,.0f} | {tf['rss_peak_mb'] - tf['rss_before_mb']:,.0f} | "
              f"{ir['max_abs_diff']:.2g} / {tf['max_abs_diff']:.2g} | {r['ir_vs_tf2onnx']:.2g} |")
    print(f"\nONNX Runtime throughput (images/s, CPU, batch {args.batch}, interleaved, best of three windows):\n")
    print("| model | IR file | tf2onnx file | IR / tf2onnx | IR MB | tf2onnx MB | "
          "ORT-optimized graphs (IR / tf2onnx) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for r in results:
        a, b = dict(r["optimized"]["ir"]), dict(r["optimized"]["tf2onnx"])
        same = f"{sum(a.values())} / {sum(b.values())} nodes; " + (
            "the same node types and counts" if a == b else "differ in " + ", ".join(
                f"{k} {a.get(k, 0)}/{b.get(k, 0)}" for k in sorted(set(a) | set(b)) if a.get(k, 0) != b.get(k, 0)))
        print(f"| {r['model']} | {r['ips_ir']:.1f} | {r['ips_tf2onnx']:.1f} | {r['ips_ir'] / r['ips_tf2onnx']:.2f} | "
              f"{r['ir']['mb']:.1f} | {r['tf2onnx']['mb']:.1f} | {same} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
