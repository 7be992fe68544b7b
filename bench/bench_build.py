"""Build-time benchmark, measured side by side in one run:

1. `archspec inspect` (static analysis, pure Python) against building the Keras model;
2. archspec's build against keras.applications' for ResNet50/101/152.

Prints a table of median times and ratios. Usage: python bench/bench_build.py [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import platform

from _timing import median_time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import keras

    import archspec
    from archspec.backends.keras.build import build_model

    refs = {"resnet50": keras.applications.ResNet50, "resnet101": keras.applications.ResNet101,
            "resnet152": keras.applications.ResNet152}
    rows = []
    for name, ref in refs.items():
        t_inspect = median_time(lambda: archspec.analyze(name), args.repeat)
        graph = archspec.lower_spec(name)

        def ours():
            keras.backend.clear_session()
            build_model(graph)

        def theirs():
            keras.backend.clear_session()
            ref(weights=None)

        t_ours = median_time(ours, args.repeat)
        t_ref = median_time(theirs, args.repeat)
        rows.append((name, t_inspect, t_ours, t_ref))

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"Keras {keras.__version__} ({keras.backend.backend()}); median of {args.repeat}")
    print(f"{'network':<10} {'inspect s':>10} {'build s':>9} {'keras.app s':>12} {'build/inspect':>14} "
          f"{'build/keras.app':>16}")
    for name, ti, to, tr in rows:
        print(f"{name:<10} {ti:>10.3f} {to:>9.3f} {tr:>12.3f} {to / ti:>14.1f} {to / tr:>16.2f}")


if __name__ == "__main__":
    main()
