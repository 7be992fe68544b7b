"""Report-generation benchmark (static: no TensorFlow), measured side by side in one run:
the whole HTML report (lowering, diagram layout, charts, template) against the static
analysis alone (`archspec.analyze`, what `inspect` prints), for the largest bundled networks.

Usage: python bench/bench_report.py [--repeat N]
"""

from __future__ import annotations

import argparse
import platform
import sys

from _timing import median_time

NETWORKS = ["resnet50", "resnet152", "densenet201", "efficientnet", "convnext_tiny"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import archspec
    from archspec.views.report import html_report

    html_report("two_branch")  # warm: imports, templates compiled
    print(f"# {platform.machine()}, Python {platform.python_version()}, median of {args.repeat}")
    print("| network | layers | analyze (s) | report (s) | report size (kB) | report / analyze |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in NETWORKS:
        t_an = median_time(lambda: archspec.analyze(name), args.repeat)
        t_rep = median_time(lambda: html_report(name), args.repeat)
        layers = len(archspec.analyze(name)["layers"])
        size = len(html_report(name)[1].encode()) / 1e3
        print(f"| {name} | {layers} | {t_an:.3f} | {t_rep:.3f} | {size:.0f} | {t_rep / t_an:.1f} |")
    heavy = [m for m in ("tensorflow", "keras") if m in sys.modules]
    print(f"\nTensorFlow/Keras imported: {heavy or 'no'}")


if __name__ == "__main__":
    main()
