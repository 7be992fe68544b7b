"""Command line: argument parsing and output formatting only.

Every command is a thin layer over the library (`archspec.api` and friends), which
raises typed errors; `main` turns them into one line per problem and an exit code:
0 success, 1 a failure while running, 2 bad input. No traceback unless `--debug`.
TensorFlow is imported only by the commands that need it (build, export).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from .errors import ArchspecError, SpecError, SpecErrors

EPILOG = """\
Specs are YAML files or the names of bundled specs (see `archspec list`).
Override any value with --set, e.g. --set head.classes=10 --set input.shape=[32,32,3].
Exit codes: 0 success, 1 failure while running, 2 bad input (spec, options, files).

examples:
  archspec validate specs/*.yaml
  archspec inspect resnet50 --set input.shape=[160,160,3]
  archspec build resnet50 -o resnet50.keras
  archspec scale efficientnet --preset all
  archspec build efficientnet --preset b3
  archspec schema -o archspec.schema.json
"""


# ---------------------------------------------------------------- formatting


def human(n: float) -> str:
    """12_345_678 -> '12.35M'."""
    for unit, f in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= f:
            return f"{n / f:.2f}{unit}"
    return str(int(n))


def table(rows: list[list], headers: list[str], align: str | None = None) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    align = align or "l" * len(headers)

    def fmt(r):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip()

    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), line] + [fmt(r) for r in cells])


def shape_str(s) -> str:
    if s and isinstance(s[0], list):
        return ", ".join(shape_str(x) for x in s)
    return "(" + ", ".join(str(x) for x in s) + ("," if len(s) == 1 else "") + ")"


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def format_report(report: dict) -> str:
    rows = [[b["name"], b["type"], shape_str(b["output_shape"]), f"{b['params']:,}", human(b["macs"])]
            for b in report["blocks"] if b["type"] != "input"]
    out = [f"{report['name']}: input {shape_str(report['input_shape'])} -> output {shape_str(report['output_shape'])}",
           "", table(rows, ["block", "type", "output shape", "params", "MACs"], "lllrr"), "",
           f"params:     {report['params']:,} (trainable {report['trainable_params']:,}, "
           f"non-trainable {report['non_trainable_params']:,})",
           f"MACs:       {report['macs']:,} ({human(report['macs'])}; multiply-accumulates of conv and dense "
           f"layers, what papers call FLOPs)",
           f"layers:     {len(report['layers'])}"]
    if report.get("taps"):
        out.append("taps:       " + ", ".join(
            f"{o['name']} {shape_str(o['shape'])}" for o in report["outputs"] if o["name"] in report["taps"]))
    return "\n".join(out)


def progress(msg: str) -> None:
    print(f"archspec: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- atomic writes


def check_output(path: str | os.PathLike, force: bool) -> Path:
    p = Path(path)
    if p.exists() and not force:
        raise SpecError("exists; pass --force to replace it", _where(p))
    if not p.parent.exists():
        raise SpecError(f"directory {str(p.parent)!r} does not exist", _where(p))
    return p


def _where(p: Path):
    from .errors import Location

    return Location(str(p))


@contextlib.contextmanager
def atomic_output(path: Path):
    """Yield a temporary path beside `path` (same suffix); on success rename it onto
    `path`, on any failure remove it, so `path` is either untouched or complete."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(text)


# ---------------------------------------------------------------- commands


def cmd_validate(args) -> int:
    from .api import lower_spec

    failed = 0
    for ref in args.specs:
        try:
            g = lower_spec(ref, args.set)  # validation and the static shape analysis
        except SpecError as exc:
            if args.debug:
                raise
            failed += 1
            for line in (exc.lines() if isinstance(exc, SpecErrors) else [exc.one_line()]):
                print(line, file=sys.stderr)
            continue
        if not args.quiet:
            print(f"{ref}: ok ({g.name}, {g.params:,} params, {human(g.macs)} MACs)")
    return 2 if failed else 0


def cmd_inspect(args) -> int:
    from .api import analyze

    report = analyze(args.spec, args.set)
    if args.markdown:
        from .render import markdown_report
        from .api import load

        sys.stdout.write(markdown_report(report, load(args.spec, args.set).description))
    elif args.json:
        if not args.layers:
            report = {**report, "layers": [{k: l[k] for k in ("name", "op", "output_shape", "params", "macs", "block")}
                                            for l in report["layers"]]}
        print_json(report)
    else:
        print(format_report(report))
    return 0


def cmd_list(args) -> int:
    from .api import analyze, load
    from .spec.loader import bundled_names

    rows = []
    for name in bundled_names():
        spec = load(name)
        r = analyze(name)  # by name, so that an error keeps its file:line:col
        rows.append({"name": name, "description": spec.description, "input_shape": r["input_shape"],
                     "params": r["params"], "macs": r["macs"]})
    if args.json:
        print_json(rows)
    else:
        print(table([[r["name"], shape_str(r["input_shape"]), human(r["params"]), human(r["macs"]), r["description"]]
                     for r in rows], ["spec", "input", "params", "MACs", "description"], "llrrl"))
        print("\nMACs: multiply-accumulates of conv and dense layers (what papers call FLOPs).")
    return 0


def cmd_schema(args) -> int:
    from .spec.schema import Spec

    text = json.dumps(Spec.model_json_schema(), indent=2) + "\n"
    if args.output:
        write_text_atomic(check_output(args.output, args.force), text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_build(args) -> int:
    from .api import analyze, lower_spec

    scaled = _scaled_spec(args)
    graph = lower_spec(scaled) if scaled is not None else lower_spec(args.spec, args.set)
    out = check_output(args.output or f"{graph.name}.keras", args.force)
    if out.suffix != ".keras":
        raise SpecError("the output of build must end in .keras", _where(out))
    progress(f"building {graph.name} ({len(graph.nodes)} layers, {graph.params:,} params)")
    from .api import _keras_build

    kb = _keras_build()
    model, seconds = kb.timed_build(graph, precision=args.precision, seed=args.seed)  # counts checked there
    if args.weights:
        kb.load_weights(model, args.weights)
    with atomic_output(out) as tmp:
        model.save(tmp)
    report = analyze(graph)
    if args.json:
        print_json({k: v for k, v in report.items() if k != "layers"} |
                   {"build_seconds": round(seconds, 3), "output": str(out), "precision": args.precision or "float32",
                    "seed": args.seed, "keras_params": model.count_params()})
    else:
        print(format_report(report))
        print(f"build:      {seconds:.2f} s (Keras {model.count_params():,} params, equal to the analysis)")
        print(f"wrote:      {out}")
    return 0


def cmd_export(args) -> int:
    from .api import export

    fmt = args.format or _export_format(args.output)
    quantize = {"int8": "int8", "int8-dynamic": "int8_dynamic"}.get(args.quantize) if args.quantize else None
    r = export(args.spec, args.output, format=fmt, opset=args.opset, check=not args.no_check, force=args.force,
               fp16=args.fp16, quantize=quantize, calibration=args.calibration, overrides=args.set or None,
               progress=progress, samples=args.samples, seed=args.seed)
    if args.json:
        print_json(r)
        return 0
    print(f"wrote:      {r['path']} ({r['format']}{', ' + r['variant'] if r.get('variant') else ''}, "
          f"{r['bytes'] / 1e6:.1f} MB) in {r['seconds']:.1f} s")
    print(f"input:      {r['input_names'][0]} {shape_str(['N' if d is None else d for d in r['input_shape']])}")
    print(f"outputs:    {', '.join(r['output_names'])}")
    if r.get("max_abs_diff") is None:
        print("check:      skipped (--no-check)")
    elif r.get("variant"):
        top1 = r.get("top1_agreement")
        print(f"vs float32: max |diff| {r['max_abs_diff']:.3g}, top-1 agreement "
              f"{'n/a' if top1 is None else f'{top1:.1%}'} on {r['samples']} random inputs; "
              f"size {r['size_ratio']:.2f}x of float32 ({r['float32_bytes'] / 1e6:.1f} MB)")
    else:
        print(f"check:      max |diff| vs Keras {r['max_abs_diff']:.3g} on {r['samples']} random inputs "
              f"(tolerance {r['tolerance']:g}): ok")
    print(f"metadata:   spec {r['metadata']['archspec.spec_name']} sha256 "
          f"{r['metadata']['archspec.spec_sha256'][:12]}, archspec {r['metadata']['archspec.version']}")
    return 0


def _export_format(output: str) -> str:
    if output.endswith(".onnx"):
        return "onnx"
    if output.endswith(".keras"):
        return "keras"
    raise SpecError(f"cannot tell the format from {output!r}; pass --format onnx|saved_model|keras")


def _scaled_spec(args):
    """The spec of `build --phi/--preset` (None without them); scaling warnings printed, not raised."""
    if args.phi is None and args.preset is None:
        return None
    from .api import load

    return _apply_scaling(load(args.spec, args.set), args.phi, args.preset, warn=True)


def _apply_scaling(spec, phi, preset, *, warn: bool):
    """`apply_phi` or `apply_preset`; their ScalingWarnings printed once each (warn) or dropped."""
    import warnings

    from . import compound as scaling

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scaling.ScalingWarning)
        out = scaling.apply_phi(spec, phi) if phi is not None else scaling.apply_preset(spec, preset)
    if warn:
        for w in dict.fromkeys(str(w.message) for w in caught):
            print(f"archspec: warning: {w}", file=sys.stderr)
    return out


def _phis(text: str) -> list[float]:
    from .compound import parse_phis

    try:
        return parse_phis(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fmt_ratio(x: float) -> str:
    return f"{x:.3g}x"


def format_scale_table(r: dict) -> str:
    rows = [[x["label"], f"{x['d']:.3f}", f"{x['w']:.3f}", f"{x['r']:.3f}", "x".join(map(str, x["resolution"])),
             f"{x['dropout']:g}", f"{x['params']:,}", human(x["macs"]), _fmt_ratio(x["macs_ratio_formula"]),
             _fmt_ratio(x["macs_ratio_actual"])] for x in r["rows"]]
    out = [f"{r['base']}: base {r['base_params']:,} params, {human(r['base_macs'])} MACs"]
    if r["coefficients"]:
        c = r["coefficients"]
        out.append(f"coefficients: alpha={c['alpha']:g} beta={c['beta']:g} gamma={c['gamma']:g} "
                   f"(alpha*beta^2*gamma^2 = {c['flops_factor']:.3g}; {c['source']}); phi rows: "
                   f"d = alpha^phi, w = beta^phi, r = gamma^phi")
    if any(x["method"] == "preset" for x in r["rows"]):
        out.append("preset rows: the spec's official table (width w, depth d, resolution; r = resolution / base)")
    out += ["", table(rows, ["scale", "d", "w", "r", "resolution", "dropout", "params", "MACs", "MACs x formula",
                             "MACs x counted"], "lrrrrrrrrr"), "",
            "MACs: multiply-accumulates of conv and dense layers (what papers call FLOPs). "
            "'x formula' is d*w^2*r^2 (= (alpha*beta^2*gamma^2)^phi), 'x counted' the counted MACs over the base's, "
            "after rounding."]
    return "\n".join(out)


def cmd_scale(args) -> int:
    from . import compound as scaling
    from .api import load

    spec = load(args.spec, args.set)
    if args.search:
        if args.output:
            raise SpecError("-o writes one scaled spec; it does not go with --search")
        cands = scaling.search_grid(spec, step=args.step, tolerance=args.tolerance)
        if args.json:
            print_json({"base": spec.name, "phi": 1, "step": args.step, "tolerance": args.tolerance,
                        "ranking": "none: pass rank= to archspec.scaling.search_grid to score candidates",
                        "candidates": cands})
        else:
            print(table([[f"{c['alpha']:g}", f"{c['beta']:g}", f"{c['gamma']:g}", f"{c['flops_factor']:.3f}",
                          "x".join(map(str, c["resolution"])), f"{c['params']:,}", human(c["macs"]),
                          _fmt_ratio(c["macs_ratio"])] for c in cands],
                        ["alpha", "beta", "gamma", "a*b^2*g^2", "resolution", "params", "MACs", "MACs x base"],
                        "rrrrrrrr"))
            print(f"\n{len(cands)} candidates (alpha, beta, gamma >= 1, step {args.step:g}, "
                  f"|alpha*beta^2*gamma^2 - 2| <= {args.tolerance:g} * 2), each at phi = 1. The paper keeps the "
                  f"most accurate: ranking needs training; plug it in with archspec.scaling.search_grid(rank=...).")
        return 0
    phis = args.phi or []
    presets = (scaling.preset_names(spec) if args.preset == "all" else [args.preset]) if args.preset else []
    report = scaling.sweep(spec, phis, presets)
    for w in report["warnings"]:
        print(f"archspec: warning: {w}", file=sys.stderr)
    if args.output:
        if len(report["rows"]) != 1:
            raise SpecError(f"-o writes one scaled spec; got {len(report['rows'])} (give one --phi or --preset)")
        out = check_output(args.output, args.force)
        # the sweep above printed the warnings already
        scaled = _apply_scaling(spec, phis[0] if phis else None, None if phis else presets[0], warn=False)
        row = report["rows"][0]
        write_text_atomic(out, scaling.dump_spec(scaled, f"archspec scale {args.spec} {row['label']}: "
                                                         f"{row['source']}\nresolved and self-contained"))
        report["output"] = str(out)
    if args.json:
        print_json(report)
    else:
        print(format_scale_table(report))
        if args.output:
            print(f"wrote: {args.output}")
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="archspec", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Compile convolutional network specs (YAML) into analyzed, exact Keras models.")
    p.add_argument("--version", action="version", version=f"archspec {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks and TensorFlow's native start-up log lines")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def spec_cmd(name, help_, desc, multi=False):
        sp = sub.add_parser(name, help=help_, description=desc, formatter_class=argparse.RawDescriptionHelpFormatter)
        if multi:
            sp.add_argument("specs", nargs="+", metavar="SPEC", help="spec files or bundled names")
        else:
            sp.add_argument("spec", metavar="SPEC", help="a spec file or the name of a bundled spec")
        sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value, e.g. head.classes=10 or stages[0].blocks[0].filters=32 "
                             "(value read as YAML; repeatable)")
        return sp

    sp = spec_cmd("validate", "check specs: schema, names and static shapes (no TensorFlow)",
                  "Validate specs: every key and value, and the static shape analysis (an input too small for "
                  "the network is an error that names the layer). Prints one line per problem.", multi=True)
    sp.add_argument("-q", "--quiet", action="store_true", help="print nothing for valid specs")
    sp.set_defaults(func=cmd_validate)

    sp = spec_cmd("inspect", "per-block shapes, params and MACs (no TensorFlow)",
                  "Show each block (after repeats) with its output shape, parameters and MACs, and the totals. "
                  "Params count what Keras' count_params() counts (batch-norm statistics included); MACs are "
                  "multiply-accumulates of conv and dense layers.")
    sp.add_argument("--json", action="store_true", help="one JSON object (name, shapes, params, macs, layers, blocks)")
    sp.add_argument("--layers", action="store_true", help="with --json: include every layer's attributes")
    sp.add_argument("--markdown", action="store_true", help="a Markdown report (for docs and reviews)")
    sp.set_defaults(func=cmd_inspect)

    sp = spec_cmd("build", "compile to a Keras model and save it (.keras)",
                  "Build the Keras model, check its parameter count against the analysis, and save it atomically "
                  "as .keras (reopen with keras.models.load_model after `import archspec`).")
    sp.add_argument("-o", "--output", help="output .keras file (default: NAME.keras)")
    sp.add_argument("--force", action="store_true", help="replace an existing output file")
    sp.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                    help="layer dtype policy; the classifier (and its softmax) stays float32")
    sp.add_argument("--seed", type=int, help="seed for reproducible initial weights")
    sp.add_argument("--weights", metavar="FILE", help="load weights (.weights.h5, or a legacy .h5 by layer name)")
    sp.add_argument("--json", action="store_true", help="report as JSON (adds build_seconds and output)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--phi", type=float, help="compound-scale first (as `archspec scale --phi`)")
    g.add_argument("--preset", help="scale by a row of the spec's official table first, e.g. b3")
    sp.set_defaults(func=cmd_build)

    sp = spec_cmd("export", "export to ONNX, SavedModel or .keras, verified against Keras",
                  "Export a spec (built with random weights) or a saved MODEL.keras (pass it as SPEC). The result "
                  "is reloaded and run next to Keras on random inputs (ONNX Runtime, tf.saved_model.load, "
                  "keras.models.load_model); above 1e-4 max difference (float32) the export fails with exit 1 "
                  "and writes nothing. ONNX has a dynamic batch, the Keras input/output names and metadata (spec "
                  "name, resolved-spec sha256, archspec version, preprocessing). Writes are atomic.")
    sp.add_argument("-o", "--output", required=True, metavar="PATH",
                    help="output file (a directory for saved_model)")
    sp.add_argument("--format", choices=["onnx", "saved_model", "keras"],
                    help="default: from the suffix of PATH (.onnx, .keras)")
    sp.add_argument("--opset", type=int, default=17, help="ONNX opset (13-18, default 17)")
    sp.add_argument("--no-check", action="store_true", help="skip the comparison with Keras")
    sp.add_argument("--force", action="store_true", help="replace an existing PATH")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--fp16", action="store_true", help="ONNX with float16 weights (inputs/outputs stay float32)")
    g.add_argument("--quantize", choices=["int8", "int8-dynamic"],
                   help="ONNX Runtime int8 quantization: static (calibrated) or dynamic (weights only)")
    sp.add_argument("--calibration", metavar="PATH",
                    help="--quantize int8: a .npy (N,H,W,C) or a directory of images (default: generated)")
    sp.add_argument("--samples", type=int, default=3, help="random inputs for the check (default 3)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs")
    sp.add_argument("--json", action="store_true", help="the export report as JSON")
    sp.set_defaults(func=cmd_export)

    sp = spec_cmd("scale", "compound scaling: phi, presets, sweeps, the coefficient search (no TensorFlow)",
                  "Scale a spec with a scaling section. --phi uses the paper's formula d = alpha^phi, "
                  "w = beta^phi, r = gamma^phi with the spec's coefficients; --preset a row of its official "
                  "table. Filters are rounded to scaling.divisor (never below 90%), repeats rounded up, the "
                  "resolution to the nearest multiple of scaling.resolution_divisor (see docs/scaling.md). "
                  "Prints d, w, r, resolution, params, MACs and the MACs relative to the base, predicted and "
                  "counted; -o writes the resolved, self-contained spec.")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--phi", type=_phis, metavar="PHI",
                   help="a number (may be fractional or negative), a sweep START:STOP[:STEP] (e.g. 0:7), or a "
                        "comma list")
    g.add_argument("--preset", metavar="NAME", help="a preset of the spec's table (e.g. b3), or 'all'")
    g.add_argument("--search", action="store_true",
                   help="the paper's grid search: alpha, beta, gamma >= 1 with alpha*beta^2*gamma^2 ~ 2, at phi=1")
    sp.add_argument("--step", type=float, default=0.05, help="--search grid step (default 0.05)")
    sp.add_argument("--tolerance", type=float, default=0.05,
                    help="--search: relative distance from 2 allowed (default 0.05)")
    sp.add_argument("-o", "--output", help="write the scaled spec (YAML; one --phi or --preset)")
    sp.add_argument("--force", action="store_true", help="replace an existing output file")
    sp.add_argument("--json", action="store_true", help="report as JSON (d, w, r as numbers, params, macs, ratios)")
    sp.set_defaults(func=cmd_scale)

    sp = sub.add_parser("list", help="the bundled specs with params and MACs (no TensorFlow)",
                        description="List the bundled specs (usable by name anywhere a SPEC is expected).")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser(
        "schema", help="JSON Schema of the spec language, for editors",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the JSON Schema of the spec language.",
        epilog="For completion and checking in editors using the YAML language server (VS Code's YAML "
               "extension, Neovim, ...):\n  archspec schema -o archspec.schema.json\nthen put this first line "
               "in a spec:\n  # yaml-language-server: $schema=./archspec.schema.json")
    sp.add_argument("-o", "--output", help="write to a file instead of stdout")
    sp.add_argument("--force", action="store_true", help="replace an existing output file")
    sp.set_defaults(func=cmd_schema)

    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        os.environ["ARCHSPEC_DEBUG"] = "1"  # TensorFlow's native start-up lines stay visible
    try:
        return int(args.func(args) or 0)
    except SpecError as exc:
        if args.debug:
            raise
        for line in (exc.lines() if isinstance(exc, SpecErrors) else [exc.one_line()]):
            print(line, file=sys.stderr)
        return 2
    except ArchspecError as exc:
        if args.debug:
            raise
        print(f"archspec: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("archspec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
