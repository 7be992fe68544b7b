"""Static analysis speed (what `archspec inspect` does, no framework): load, validate,
resolve, lower and count, median of repeated runs, for networks written with the Python
families and with the open language (defined blocks), side by side in one run.

    python bench/bench_inspect.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import archspec

SPECS = ["resnet50", "resnet50_yaml", "resnet152", "densenet121", "densenet201", "xception",
         "mobilenet_v3_large", "convnext_tiny", "efficientnet"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args(argv)
    archspec.analyze("resnet50")  # warm imports
    base = None
    print(f"{'spec':<20} {'layers':>7} {'median s':>9} {'min s':>7} {'vs resnet50':>12}")
    for name in SPECS:
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            r = archspec.analyze(name)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        base = base or med
        print(f"{name:<20} {len(r['layers']):>7} {med:>9.3f} {min(times):>7.3f} {med / base:>11.2f}x")
    print("\nno framework imported:", not any(m.split(".")[0] in ("tensorflow", "keras", "jax") for m in sys.modules))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
