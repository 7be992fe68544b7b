"""Benchmark of ONNX from a spec and a weights file without TensorFlow (issue 29) against
tf2onnx on a SavedModel of the same network, side by side in one run:

    python bench/bench_onnx_tf_free.py [SPEC...] [--samples 3] [--opset 17] [--no-check] [--pieces]
                                       [--max-gb GB]

SPECs are bundled specs (default: resnet50 for the time ratio, vgg16 for the memory peak; both
tables and a summary printed in one run). For each, first, once, in its own process with
TensorFlow: the model is built with fan-in-scaled random weights (tests/parity.py
`randomize`, seed 0), its weights saved (``save_weights``: a Keras 3 .weights.h5), its
SavedModel written as the ``saved_model`` export target writes it, and Keras' outputs on the
check inputs saved. Then each path in its own fresh process, its wall time measured around
the whole process (Python's start and the imports included) and its peak resident memory
read by ``os.wait4`` (that process's ru_maxrss, alone):

1. TF-free: ``python -m archspec export SPEC --weights FILE --format onnx -o OUT`` (whether
   TensorFlow was imported is read at its exit): the weights read with h5py/numpy
   (`weights.read_weights`), the ONNX emitted from the IR and those arrays
   (`via_ir.ArrayWeights`, written as emitted: `StreamedData`), the check's reference built
   on JAX (`reference.choose_backend`, `reference.reference_outputs`, the arrays released
   into the model), ONNX Runtime on the written file. ``--pieces``: a script of the same
   pieces in which importing TensorFlow fails, reporting each phase's time and the peak
   (VmHWM) after it, so a peak is placed. ``--no-check``: without the reference and ONNX
   Runtime.
2. tf2onnx: ``python -m tf2onnx.convert --saved-model DIR --output OUT --opset 17``.

A path past ``--max-gb`` resident (default 70% of the memory available at start) is stopped
and reported as such: tf2onnx on VGG16 took all of a 23 GB machine and was killed. Both files
are then run by ONNX Runtime here on the check inputs and compared with the Keras outputs.
Prints the figures, the ratios tf2onnx / TF-free, and the issue's targets (time ratio >= 5x;
VGG16 peak <= 3.0 GB). Generated files go to a temporary directory.
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
#: the issue's targets
RATIO_TARGET, VGG_PEAK_GB = 5.0, 3.0


def _hwm_gb() -> float:
    """This process's peak resident set size so far (VmHWM), in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("nan")


def inputs(graph, n: int):
    """The check's inputs: pixels in [0, 255] when the network rescales its input itself, else
    standard-normal values (as `files.random_inputs`)."""
    import numpy as np

    rng = np.random.default_rng(1234)
    shape = (n, *graph.inputs[0].shape)
    first = [node for node in graph.nodes if graph.inputs[0].name in node.inputs][:1]
    if first and first[0].op == "rescaling":
        return rng.uniform(0.0, 255.0, size=shape).astype("float32")
    return rng.standard_normal(size=shape).astype("float32")


# ---------------------------------------------------------------- children


def child_setup(spec: str, d: str, samples: int) -> None:
    """With TensorFlow: the weights file, the SavedModel (as the ``saved_model`` export target
    writes it: Keras' ExportArchive, one ``serving_default`` signature) and Keras' outputs, once."""
    import keras
    import numpy as np
    import tensorflow as tf

    sys.path.insert(0, str(ROOT / "tests"))
    from parity import randomize

    from archspec.backends.keras import load
    from archspec.ir.pipeline import lower_spec

    d = Path(d)
    graph = lower_spec(spec, None)
    model = load().build_model(graph, seed=0)
    randomize(model, seed=0)
    model.save_weights(d / "w.weights.h5")
    name, shape, outputs = graph.inputs[0].name, tuple(graph.inputs[0].shape), list(graph.outputs)

    def serve(x):
        outs = model(x, training=False)
        return dict(zip(outputs, outs if isinstance(outs, (list, tuple)) else [outs]))

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=[tf.TensorSpec((None, *shape), tf.float32,
                                                                                  name=name)])
    archive.write_out(str(d / "saved_model"), verbose=False)
    x = inputs(graph, samples)
    np.save(d / "x.npy", x)
    outs = model(x, training=False)
    for i, o in enumerate(outs if isinstance(outs, (list, tuple)) else [outs]):
        np.save(d / f"keras{i}.npy", np.asarray(o, np.float32))
    print("SETUP " + json.dumps({"params": graph.params, "input": name, "outputs": outputs,
                                 "weights_mb": (d / "w.weights.h5").stat().st_size / 1e6}), flush=True)


def child_tf_free(spec: str, weights: str, out: str, x_path: str, opset: int, check: bool = True) -> None:
    """The TF-free export as the pieces do it, TensorFlow unimportable; phases timed. Without
    `check`: no reference and no ONNX Runtime (``export --no-check``; onnx.checker stays)."""
    import importlib.abc

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError("TensorFlow is blocked in the TF-free benchmark")
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    phases = []
    t = [time.perf_counter()]

    def mark(what):
        now = time.perf_counter()
        phases.append({"phase": what, "s": now - t[0], "peak_gb": _hwm_gb()})
        t[0] = now

    import numpy as np
    import onnx

    from archspec.backends.keras.reference import choose_backend, reference_outputs
    from archspec.backends.keras.weights import read_weights
    from archspec.backends.onnx import passes, via_ir
    from archspec.ir.pipeline import lower_spec

    mark("imports (numpy, onnx, archspec)")
    graph = lower_spec(spec, None)
    name, outs = graph.inputs[0].name, list(graph.outputs)
    report, arrays = read_weights(graph, weights)
    mark("lower the spec, read the weights (h5py)")
    sink = via_ir.StreamedData(Path(out))
    try:
        proto = via_ir.convert(via_ir.ArrayWeights(graph, arrays), opset, name, outs, graph, sink)
        sink.finish(passes.finish(proto, name, outs, {}))
    finally:
        sink.close()
    del proto
    mark("emit and write the ONNX (IR, streamed)")
    if not check:
        del arrays
        onnx.checker.check_model(out)
        mark("onnx.checker")
        print("TFFREE " + json.dumps({"phases": phases, "max_abs_diff_vs_jax": float("nan"), "backend": None,
                                      "tensorflow": any(m == "tensorflow" or m.startswith("tensorflow.")
                                                        for m in sys.modules)}), flush=True)
        return
    import onnxruntime as ort

    x = np.load(x_path)
    backend = choose_backend()
    ref = reference_outputs(graph, arrays, x, release=True)  # the arrays go into the model, then with it
    mark(f"reference on {backend} (build, set the arrays, run, drop)")
    onnx.checker.check_model(out)
    mark("onnx.checker")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(out, opts, providers=["CPUExecutionProvider"])
    got = [np.concatenate(b) for b in zip(*(sess.run(outs, {name: x[i:i + 32]}) for i in range(0, len(x), 32)))]
    del sess
    mark("ONNX Runtime on the file")
    diff = max(float(np.max(np.abs(r - g))) for r, g in zip(ref, got))
    print("TFFREE " + json.dumps({"phases": phases, "max_abs_diff_vs_jax": diff, "backend": backend,
                                  "tensorflow": any(m == "tensorflow" or m.startswith("tensorflow.")
                                                    for m in sys.modules)}), flush=True)


# ---------------------------------------------------------------- the parent


def _rss_gb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e9
    except (OSError, ValueError):
        pass
    return 0.0


def run_measured(cmd: list[str], env: dict, log: Path, fail_ok: bool = False, max_gb: float | None = None) -> dict:
    """Run `cmd` in a fresh process: wall seconds, its own peak RSS (wait4's ru_maxrss), output,
    exit code. A failure ends the benchmark unless `fail_ok` (tf2onnx killed for memory is a
    result: its figures up to then are reported). Past `max_gb` resident the process is killed
    (the machine is shared: tf2onnx on VGG16 took all 23 GB of it), and ``capped`` says so."""
    import signal
    import threading

    t0 = time.perf_counter()
    capped = threading.Event()
    with open(log, "w+") as fh:
        p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        done = threading.Event()

        def watch():
            while not done.wait(0.2):
                if max_gb and _rss_gb(p.pid) > max_gb:
                    capped.set()
                    os.kill(p.pid, signal.SIGKILL)
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        _, status, usage = os.wait4(p.pid, 0)
        done.set()
        watcher.join()
        p.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        fh.seek(0)
        text = fh.read()
    if p.returncode and not fail_ok:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed (exit {p.returncode}):\n{text[-4000:]}")
    return {"wall_s": wall, "peak_gb": usage.ru_maxrss * 1024 / 1e9, "output": text, "rc": p.returncode,
            "capped": capped.is_set()}


def _available_gb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024 / 1e9
    return float("inf")


def _line(text: str, tag: str) -> dict:
    lines = [ln for ln in text.splitlines() if ln.startswith(tag + " ")]
    return json.loads(lines[-1][len(tag) + 1:]) if lines else {}


def bench_spec(spec: str, args) -> dict:
    """Both paths on `spec`, its table printed; returns the ratio and the TF-free peak."""
    cli = not args.pieces
    import numpy as np
    import onnxruntime as ort

    def say(msg):
        print(f"bench: {msg}", file=sys.stderr, flush=True)

    base = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    tf_env = {**base, "KERAS_BACKEND": "tensorflow"}
    free_env = {k: v for k, v in base.items() if k != "KERAS_BACKEND"}  # choose_backend picks JAX
    load = os.getloadavg()[0]
    max_gb = args.max_gb or 0.7 * _available_gb()
    with tempfile.TemporaryDirectory(prefix="archspec-bench-") as d:
        d = Path(d)
        say(f"{spec}: building with TensorFlow, saving the weights and the SavedModel (once)")
        setup = run_measured([sys.executable, __file__, "--child", "setup", spec, str(d), str(args.samples)],
                             tf_env, d / "setup.log")
        info = _line(setup["output"], "SETUP")
        free_out, tf_out = d / "tf_free.onnx", d / "tf2onnx.onnx"
        if cli:
            code = ("import atexit, runpy, sys\n"
                    "atexit.register(lambda: print('TFFREE {\"tensorflow\": %s}' % "
                    "('true' if 'tensorflow' in sys.modules else 'false'), flush=True))\n"
                    f"sys.argv = ['archspec', 'export', {spec!r}, '--weights', {str(d / 'w.weights.h5')!r}, "
                    f"'--format', 'onnx', '-o', {str(free_out)!r}, '--samples', '{args.samples}', "
                    f"'--opset', '{args.opset}'{', ' + repr('--no-check') if args.no_check else ''}]\n"
                    "runpy.run_module('archspec', run_name='__main__')\n")
            cmd = [sys.executable, "-c", code]
        else:
            cmd = [sys.executable, __file__, "--child", "tf_free", spec, str(d / "w.weights.h5"), str(free_out),
                   str(d / "x.npy"), str(args.opset), "no-check" if args.no_check else "check"]
        say(f"{spec}: [1] TF-free export ({'the command line' if cli else 'the pieces'})")
        free = run_measured(cmd, free_env, d / "free.log", max_gb=max_gb)
        free_info = _line(free["output"], "TFFREE")
        say(f"{spec}: [2] tf2onnx on the SavedModel")
        tf = run_measured([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(d / "saved_model"),
                           "--output", str(tf_out), "--opset", str(args.opset)], tf_env, d / "tf2onnx.log",
                          fail_ok=True, max_gb=max_gb)
        if tf["capped"]:
            say(f"tf2onnx passed {max_gb:.1f} GB resident and was stopped (--max-gb)")
        elif tf["rc"]:
            say(f"tf2onnx failed (exit {tf['rc']}{': killed, out of memory?' if tf['rc'] == -9 else ''}):\n"
                + tf["output"][-1500:])
        say("running both files in ONNX Runtime")
        x = np.load(d / "x.npy")
        keras_out = [np.load(d / f"keras{i}.npy") for i in range(len(info["outputs"]))]
        diffs = {}
        for what, f in (("tf_free", free_out), ("tf2onnx", tf_out)):
            if not f.is_file():
                continue
            o = ort.SessionOptions()
            o.log_severity_level = 3
            sess = ort.InferenceSession(str(f), o, providers=["CPUExecutionProvider"])
            feed = sess.get_inputs()[0].name
            got = sess.run(None, {feed: x})
            diffs[what] = max(float(np.max(np.abs(r - g))) for r, g in zip(keras_out, got))
        sizes = {k: f.stat().st_size / 1e6 if f.is_file() else float("nan")
                 for k, f in (("tf_free", free_out), ("tf2onnx", tf_out))}

    print(f"Machine: {platform.system()} {platform.machine()}, {os.cpu_count()} logical CPUs, load average "
          f"{load:.2f} at start; Python {platform.python_version()}, onnxruntime {ort.__version__}")
    print(f"{spec}: {info['params']:,} params, weights file {info['weights_mb']:.0f} MB, {args.samples} check "
          f"inputs; each path in its own fresh process (wall time around the process, peak RSS by wait4)\n")
    print("| path | wall (s) | peak RSS (GB) | ONNX (MB) | max abs diff vs Keras (TF) | TensorFlow imported |")
    print("|---|---:|---:|---:|---:|---|")
    name = "TF-free (`archspec export --weights`)" if cli else "TF-free (read_weights + IR + JAX reference)"
    if args.no_check:
        name = name.replace(" + JAX reference", "") + ", --no-check"
    print(f"| {name} | {free['wall_s']:.1f} | {free['peak_gb']:.2f} | {sizes['tf_free']:.0f} | "
          f"{diffs['tf_free']:.2g} | {free_info.get('tensorflow', '?')} |")
    failed = (f" (stopped at the {max_gb:.1f} GB cap, unfinished)" if tf["capped"] else
              f" (FAILED: exit {tf['rc']}{', killed' if tf['rc'] == -9 else ''}, unfinished)" if tf["rc"] else "")
    print(f"| tf2onnx --saved-model{failed} | {tf['wall_s']:.1f} | {tf['peak_gb']:.2f} | {sizes['tf2onnx']:.0f} | "
          f"{diffs.get('tf2onnx', float('nan')):.2g} | yes |")
    ratio, mem = tf["wall_s"] / free["wall_s"], tf["peak_gb"] / free["peak_gb"]
    print(f"\ntf2onnx / TF-free: time {ratio:.1f}x{' (at least: tf2onnx did not finish)' if tf['rc'] else ''} "
          f"(target >= {RATIO_TARGET:.0f}x: {'met' if ratio >= RATIO_TARGET else 'NOT met'}), peak memory {mem:.1f}x")
    if spec == "vgg16":
        print(f"VGG16 TF-free peak {free['peak_gb']:.2f} GB (target <= {VGG_PEAK_GB} GB: "
              f"{'met' if free['peak_gb'] <= VGG_PEAK_GB else 'NOT met'})")
    if "phases" in free_info:
        print(f"\nTF-free phases (reference on {free_info['backend']}; its max abs diff vs ONNX Runtime "
              f"{free_info['max_abs_diff_vs_jax']:.2g}):\n" if free_info["backend"] else "\nTF-free phases:\n")
        print("| phase | s | peak RSS so far (GB) |")
        print("|---|---:|---:|")
        for p in free_info["phases"]:
            print(f"| {p['phase']} | {p['s']:.2f} | {p['peak_gb']:.2f} |")
    return {"spec": spec, "ratio": ratio, "peak_gb": free["peak_gb"], "tf2onnx_done": not tf["rc"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*", default=["resnet50", "vgg16"], metavar="SPEC",
                    help="bundled specs (default: resnet50 vgg16, the issue's time ratio and memory peak)")
    ap.add_argument("--samples", type=int, default=3, help="check inputs (export's default: 3)")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--pieces", action="store_true",
                    help="time a script of the pieces (read_weights, via_ir, the JAX reference) with each "
                         "phase's time and peak, instead of `python -m archspec export SPEC --weights FILE`")
    ap.add_argument("--no-check", action="store_true",
                    help="the TF-free export without its check (no reference, no ONNX Runtime: "
                         "`export --no-check`); onnx.checker still runs")
    ap.add_argument("--max-gb", type=float, default=None,
                    help="kill a path whose resident memory passes this (default: 70%% of the memory "
                         "available at start; the machine may be shared)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "setup":
            child_setup(rest[0], rest[1], int(rest[2]))
        else:
            child_tf_free(rest[0], rest[1], rest[2], rest[3], int(rest[4]), rest[5] == "check")
        return 0

    summary = []
    for spec in args.specs:
        summary.append(bench_spec(spec, args))
        print()
    print("| spec | tf2onnx / TF-free time | TF-free peak RSS (GB) |")
    print("|---|---:|---:|")
    for r in summary:
        print(f"| {r['spec']} | {r['ratio']:.1f}x{'' if r['tf2onnx_done'] else ' (tf2onnx unfinished)'} | "
              f"{r['peak_gb']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
