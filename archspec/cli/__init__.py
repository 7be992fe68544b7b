"""Command line: argument parsing and output formatting only.

Every command is a thin layer over the library (`archspec.api` and friends), which
raises typed errors; `main` turns them into one line per problem and an exit code:
0 success, 1 a failure while running, 2 bad input. No traceback unless `--debug`.
TensorFlow is imported only by the commands that need it (build, export, train, evaluate,
predict, report --model).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from ..core.errors import ArchspecError, SpecError, SpecErrors
from ..core.units import human, shape_str

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
  archspec report resnet50 -o resnet50.html
  archspec diff resnet50 resnet101
  archspec codegen resnet18 -o resnet18.py
  archspec train resnet18 --recipe cifar100 --data cifar-100-python --out runs/r18
  archspec schema -o archspec.schema.json
"""


# ---------------------------------------------------------------- formatting


def table(rows: list[list], headers: list[str], align: str | None = None) -> str:
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    align = align or "l" * len(headers)

    def fmt(r):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip()

    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), line] + [fmt(r) for r in cells])


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
    """An output path checked before any work by the one writer's rules (`archspec.core.atomic`:
    the parent directory must exist, an existing file needs --force, a bad path is one line,
    exit 2); returns the path to write (a symbolic link's target)."""
    from ..core.atomic import check_output as check

    return check(path, force, option="--force")


def write_output(path: Path, text: str, force: bool) -> None:
    """`text` into `path` through the one writer: atomic, fsync'ed, one line for an OS error."""
    write_text_atomic(path, text, force=force, option="--force")


def _where(p: Path):
    from ..core.errors import Location

    return Location(str(p))


from ..core.atomic import write_text_atomic  # noqa: E402 (used by the commands)


# ---------------------------------------------------------------- commands


def cmd_validate(args) -> int:
    from ..api import lower_spec

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


def _phases(args, spec=None) -> list[dict] | None:
    """The trainable/frozen counts of each phase of `--recipe` (None without it)."""
    if not getattr(args, "recipe", None):
        return None
    from ..api import load, lower_spec
    from ..training.recipe import load_recipe, phase_counts

    recipe, raw = load_recipe(args.recipe, args.recipe_set)
    spec = spec or load(args.spec, args.set)
    return phase_counts(lower_spec(spec), spec, recipe, raw)


def format_phases(phases: list[dict]) -> str:
    return table([[p["name"], p["epochs"], f"{p['learning_rate']:g}", f"{p['trainable']:,}", f"{p['frozen']:,}",
                   p["rule"]] for p in phases], ["phase", "epochs", "learning rate", "trainable", "frozen", "rule"],
                 "lrrrrl")


def cmd_inspect(args) -> int:
    from ..api import analyze

    report = analyze(args.spec, args.set)
    phases = _phases(args)
    if phases is not None:
        report["phases"] = phases
    if args.markdown:
        from ..core.templates import markdown_report
        from ..api import load

        sys.stdout.write(markdown_report(report, load(args.spec, args.set).description))
    elif args.json:
        if not args.layers:
            report = {**report, "layers": [{k: l[k] for k in ("name", "op", "output_shape", "params", "macs", "block")}
                                            for l in report["layers"]]}
        print_json(report)
    else:
        print(format_report(report))
        if phases is not None:
            print(f"\nrecipe {args.recipe}: trainable and frozen parameters per phase (batch-norm statistics, "
                  f"{report['non_trainable_params']:,}, are non-trainable in every phase)\n")
            print(format_phases(phases))
    return 0


def cmd_list(args) -> int:
    from ..api import analyze, load
    from ..language.loader import bundled_names

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
    from ..language.schema import editor_schema

    if args.recipe:
        from ..training.recipe import Recipe as model
    else:
        from ..language.schema import Spec as model

    text = json.dumps(editor_schema(model), indent=2) + "\n"
    if args.output:
        write_output(check_output(args.output, args.force), text, args.force)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_build(args) -> int:
    from ..api import analyze, lower_spec

    scaled = _scaled_spec(args)
    graph = lower_spec(scaled) if scaled is not None else lower_spec(args.spec, args.set)
    out = check_output(args.output or f"{graph.name}.keras", args.force)
    if out.suffix != ".keras":
        raise SpecError("the output of build must end in .keras", _where(out))
    progress(f"building {graph.name} ({len(graph.nodes)} layers, {graph.params:,} params)")
    from ..backends.keras import load as _keras_build

    if args.weights and args.weights.endswith(".keras"):  # a garbage or truncated file: one line, before the build
        from ..backends.keras.files import check_keras_archive

        check_keras_archive(args.weights, "Keras weights")
    kb = _keras_build()
    model, seconds = kb.timed_build(graph, precision=args.precision, seed=args.seed)  # counts checked there
    if args.weights:
        from ..core.quiet import tf_retracing_quiet

        with tf_retracing_quiet():
            kb.load_weights(model, args.weights)
    from ..training.loop import save_keras  # export's .keras writer: the file says which spec it is

    save_keras(model, out, graph)
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
    from ..api import export
    from ..core.atomic import OutputExists

    quantize = {"int8": "int8", "int8-dynamic": "int8_dynamic"}.get(args.quantize) if args.quantize else None
    try:
        r = export(args.spec, args.output, format=args.format, opset=args.opset, check=not args.no_check,
                   force=args.force, fp16=args.fp16, quantize=quantize, calibration=args.calibration,
                   overrides=args.set or None, progress=progress, samples=args.samples, seed=args.seed,
                   via=args.via, external_data=True if args.external_data else None, check_data=args.check_data,
                   min_agreement=args.min_agreement)
    except OutputExists as exc:  # the library words it force=True
        raise exc.reworded("--force") from None
    if args.json:
        print_json(r)
        return 0
    print(f"wrote:      {r['path']} ({r['format']}{', ' + r['variant'] if r.get('variant') else ''}, "
          f"{r['bytes'] / 1e6:.1f} MB) in {r['seconds']:.1f} s")
    print(f"input:      {r['input_names'][0]} {shape_str(['N' if d is None else d for d in r['input_shape']])}")
    print(f"outputs:    {', '.join(r['output_names'])}")
    if r.get("via"):
        print(f"onnx:       opset {r['opset']}, via {r['via']}"
              f"{', weights in ' + r['external_data'] if r.get('external_data') else ''}")
    if not r.get("checked"):
        print("check:      skipped (--no-check)")
    else:
        on = (f"{r['samples']} random inputs" if r["check_inputs"] == "random"
              else f"{r['samples']} images of {r['check_inputs']}")
        top1 = r.get("top1_agreement")
        agree = "" if top1 is None else f", top-1 agreement {top1:.1%}"
        if r.get("min_agreement") is not None:
            agree += f" (needs {r['min_agreement']:.0%})"
        tol = f" (tolerance {r['tolerance']:g})" if r.get("tolerance") is not None else ""
        vs = "vs float32:" if r.get("variant") else "check:     "
        print(f"{vs} max |diff| vs Keras {r['max_abs_diff']:.3g}{tol}{agree} on {on}: ok")
        if r.get("accuracy"):
            print(f"accuracy:   Keras {r['accuracy']['keras']:.1%}, export {r['accuracy']['export']:.1%} "
                  f"on those {r['samples']} labelled images")
        if r.get("variant"):
            print(f"size:       {r['size_ratio']:.2f}x of float32 ({r['float32_bytes'] / 1e6:.1f} MB)"
                  + (f"; {len(r['float32_nodes'])} nodes kept float32 (float16 overflow)"
                     if r.get("float32_nodes") else ""))
    print(f"metadata:   spec {r['metadata']['archspec.spec_name']} sha256 "
          f"{r['metadata']['archspec.spec_sha256'][:12]}, archspec {r['metadata']['archspec.version']}")
    return 0


def _scaled_spec(args):
    """The spec of `build --phi/--preset` (None without them); scaling warnings printed, not raised."""
    if args.phi is None and args.preset is None:
        return None
    from ..api import load

    return _apply_scaling(load(args.spec, args.set), args.phi, args.preset, warn=True)


def _apply_scaling(spec, phi, preset, *, warn: bool):
    """`apply_phi` or `apply_preset`; their ScalingWarnings printed once each (warn) or dropped."""
    import warnings

    from ..resolving import compound as scaling

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", scaling.ScalingWarning)
        out = scaling.apply_phi(spec, phi) if phi is not None else scaling.apply_preset(spec, preset)
    if warn:
        for w in dict.fromkeys(str(w.message) for w in caught):
            print(f"archspec: warning: {w}", file=sys.stderr)
    return out


def _phis(text: str) -> list[float]:
    from ..views.sweeps import parse_phis

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
    from ..api import load
    from ..language import dump_spec
    from ..resolving import compound as scaling
    from ..views import sweeps

    spec = load(args.spec, args.set)
    if args.search:
        if args.output:
            raise SpecError("-o writes one scaled spec; it does not go with --search")
        if args.plot:
            raise SpecError("--plot draws a sweep (--phi or --preset); it does not go with --search")
        cands = sweeps.search_grid(spec, step=args.step, tolerance=args.tolerance)
        if args.json:
            print_json({"base": spec.name, "phi": 1, "step": args.step, "tolerance": args.tolerance,
                        "ranking": "none: pass rank= to archspec.language.rounding.search_grid to score candidates",
                        "candidates": cands})
        else:
            print(table([[f"{c['alpha']:g}", f"{c['beta']:g}", f"{c['gamma']:g}", f"{c['flops_factor']:.3f}",
                          "x".join(map(str, c["resolution"])), f"{c['params']:,}", human(c["macs"]),
                          _fmt_ratio(c["macs_ratio"])] for c in cands],
                        ["alpha", "beta", "gamma", "a*b^2*g^2", "resolution", "params", "MACs", "MACs x base"],
                        "rrrrrrrr"))
            print(f"\n{len(cands)} candidates (alpha, beta, gamma >= 1, step {args.step:g}, "
                  f"|alpha*beta^2*gamma^2 - 2| <= {args.tolerance:g} * 2), each at phi = 1. The paper keeps the "
                  f"most accurate: ranking needs training; plug it in with archspec.language.rounding.search_grid(rank=...).")
        return 0
    phis = args.phi or []
    presets = (scaling.preset_names(spec) if args.preset == "all" else [args.preset]) if args.preset else []
    report = sweeps.sweep(spec, phis, presets)
    for w in report["warnings"]:
        print(f"archspec: warning: {w}", file=sys.stderr)
    if args.output:
        if len(report["rows"]) != 1:
            raise SpecError(f"-o writes one scaled spec; got {len(report['rows'])} (give one --phi or --preset)")
        out = check_output(args.output, args.force)
        # the sweep above printed the warnings already
        scaled = _apply_scaling(spec, phis[0] if phis else None, None if phis else presets[0], warn=False)
        row = report["rows"][0]
        write_output(out, dump_spec(scaled, f"archspec scale {args.spec} {row['label']}: "
                                                    f"{row['source']}\nresolved and self-contained"), args.force)
        report["output"] = str(out)
    if args.plot:
        plot = _plot_output(args.plot, args.force)
        from ..views.report import scaling_plot, sweep_html

        shown = report
        if phis and not presets and scaling.preset_names(spec):  # the official points beside the formula's
            shown = sweeps.sweep(spec, phis, scaling.preset_names(spec))
        write_output(plot, scaling_plot(shown) if plot.suffix == ".svg" else sweep_html(shown), args.force)
        report["plot"] = str(plot)
    if args.json:
        print_json(report)
    else:
        print(format_scale_table(report))
        if args.output:
            print(f"wrote: {args.output}")
        if args.plot:
            print(f"wrote: {args.plot}")
    return 0


def _plot_output(path: str, force: bool) -> Path:
    out = check_output(path, force)
    if out.suffix not in (".svg", ".html"):
        raise SpecError(f"--plot writes .svg (the plot) or .html (plot and table); got {out.suffix or 'no suffix'!r}",
                        _where(out))
    return out


# ---------------------------------------------------------------- train, evaluate, predict


def cmd_train(args) -> int:
    from ..api import train

    if not args.resume and (args.spec is None or args.recipe is None):
        raise SpecError("give SPEC and --recipe R (or --resume RUN_DIR to continue a run)")
    out = args.resume or args.out
    if out is None:
        raise SpecError("--out RUN_DIR is required (where checkpoints, logs and models are written)")
    r = train(args.spec, args.recipe, args.data, out, overrides=args.set, recipe_overrides=args.recipe_set,
              epochs=args.epochs, batch_size=args.batch_size, weights=args.weights, resume=bool(args.resume),
              force=args.force, distribute=args.distribute, say=progress,
              verbose=0 if args.json else "auto")
    metrics = {k: v for k, v in r.items() if k != "history"}
    if args.json:
        print_json(metrics)
        return 0

    def pct(v):
        return "-" if v is None else f"{v:.2%}"
    print(f"run:        {out} ({metrics['epochs_completed']} of {metrics['epochs_planned']} epochs)")
    print(f"best:       epoch {metrics['best_epoch']} on {metrics['monitor']}: val_loss "
          f"{metrics['val_loss'] if metrics['val_loss'] is not None else '-'}, top-1 {pct(metrics['val_top1'])}, "
          f"top-5 {pct(metrics['val_top5'])}")
    if metrics["images_per_second"]:
        print(f"throughput: {metrics['images_per_second']:.0f} images/s (training, median over epochs)")
    print(f"models:     {Path(out) / 'best.keras'}, {Path(out) / 'final.keras'}")
    return 0


def cmd_evaluate(args) -> int:
    from ..training.evaluate import evaluate

    if args.confusion:
        check_output(args.confusion, args.force)
    r = evaluate(args.model, args.data, batch_size=args.batch_size, confusion_csv=args.confusion)
    if args.json:
        print_json(r)
        return 0
    print(f"{r['model']} on {r['data']} ({r['images']:,} images)")
    print(f"loss {r['loss']:.4f}   top-1 {r['top1']:.2%}   top-5 {r['top5']:.2%}\n")
    rows = [[c["class"], _shown(c["name"]), c["images"], "-" if c["accuracy"] is None else f"{c['accuracy']:.2%}"]
            for c in r["per_class"] if c["images"]]
    print(table(rows, ["class", "name", "images", "accuracy"], "lllr"))
    if args.confusion:
        print(f"\nconfusion matrix (rows: true class, columns: predicted): {args.confusion}")
    return 0


def _at_least_one(text: str) -> int:
    """argparse type of a count: an integer >= 1 (`--top 0` printed nothing, `--top -1`
    every class but one, both with exit 0)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1 (got {text!r})") from None
    if not 1 <= n <= 1 << 20:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {1 << 20:,} (got {n})")
    return n


def _shown(name) -> str:
    """A class name from data printed on a terminal: as written when printable, else escaped."""
    name = str(name)
    return name if name.isprintable() else ascii(name)


def cmd_predict(args) -> int:
    from ..training.evaluate import predict

    r = predict(args.model, args.images, top=args.top)
    given = len(r[0]["top"]) if r else args.top
    if given < args.top:
        print(f"archspec: note: --top {args.top} is more than the model's {given} classes: all {given} are given",
              file=sys.stderr)
    if args.json:
        print_json(r)
        return 0
    for item in r:
        print(_shown(item["image"]))
        for t in item["top"]:
            print(f"  {t['probability']:7.2%}  {_shown(t['name'])} ({t['class']})")
    return 0


# ---------------------------------------------------------------- report (cmd_report)


def cmd_report(args) -> int:
    from ..views.report import diagram_svg, html_report

    out = check_output(args.output, args.force) if args.output else None  # refused before any work
    if out is not None and out.suffix not in (".html", ".htm", ".svg"):
        raise SpecError(f"report writes .html (the report) or .svg (the diagram alone); got {out.suffix or 'no suffix'!r}",
                        _where(out))
    if out is not None and out.suffix == ".svg":
        if args.model:
            raise SpecError("--model adds measured counts to the HTML report; it does not go with an .svg output")
        name, text = diagram_svg(args.spec, args.set)
    else:
        name, text = html_report(args.spec, args.set, model=args.model, phases=_phases(args))
    out = out or check_output(f"{name}.html", args.force)
    write_output(out, text, args.force)
    print(f"wrote {out} ({len(text.encode()) / 1e3:.0f} kB, self-contained: open it in any browser, offline)")
    return 0


# ---------------------------------------------------------------- diff (cmd_diff)


DIFF_LAYER_LINES = 20  # changed layers printed in the text output (--json lists all)


def _diff_side(args, side: str):
    """The Spec of one side of `diff`: --set then --set-a/--set-b, then its scaling (a side's
    --preset-X/--phi-X over the shared --preset/--phi)."""
    from ..api import load

    ref = getattr(args, side)
    sets = list(args.set) + list(getattr(args, f"set_{side}"))
    preset = getattr(args, f"preset_{side}") or args.preset
    phi = getattr(args, f"phi_{side}")
    phi = phi if phi is not None else args.phi
    if preset is not None and phi is not None:
        raise SpecError(f"side {side.upper()} ({ref}): give --preset or --phi, not both "
                        f"(got preset={preset!r}, phi={phi:g})")
    spec = load(ref, sets)
    if preset is not None or phi is not None:
        spec = _apply_scaling(spec, phi, preset, warn=True)
    from ..views.diff import side_label

    return spec, {"ref": ref, "overrides": sets, "preset": preset, "phi": phi,
                  "label": side_label(spec.name, getattr(args, f"set_{side}"), preset, phi)}


def _diff_change(field: str, ch: dict) -> str:
    def v(x):
        return shape_str(x) if field == "output_shape" and isinstance(x, list) else (
            f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else json.dumps(x, default=str))

    if field == "attrs":
        return "; ".join(f"{k} {v(c['a'])} -> {v(c['b'])}" for k, c in ch.items())
    return f"{field} {v(ch['a'])} -> {v(ch['b'])}"


def format_diff(d: dict) -> str:
    """The text of `archspec diff`: the summary, then groups, changed blocks, totals, layers."""
    from ..views.diff import signed

    a, b, t, c = d["a"], d["b"], d["totals"], d["counts"]
    out = [d["summary"]]
    if not d["differ"]:
        return "\n".join(out)

    def num(n):
        return signed(n, lambda x: f"{x:,}")

    def ab(x):
        return str(x["b"]) if x["a"] == x["b"] else f"{x['a'] if x['a'] is not None else '-'} -> " \
                                                    f"{x['b'] if x['b'] is not None else '-'}"

    def side(x, fmt=human):
        return "-" if x is None else fmt(x)

    out += ["", f"A = {a['label']}   B = {b['label']}", ""]
    rows = [[g["label"], g["status"], ab(g["blocks"]), side(g["params"]["a"]), side(g["params"]["b"]),
             signed(g["params"]["delta"]), signed(g["macs"]["delta"]), num(g["layers"]["delta"])]
            for g in d["groups"]]
    out += [table(rows, ["group", "status", "blocks", "params A", "params B", "params +/-", "MACs +/-", "layers +/-"],
                  "llrrrrrr"), ""]
    if d["blocks"]:
        rows = []
        for r in d["blocks"]:
            sh = r["output_shape"]
            shape = shape_str(sh["b"] if sh["b"] is not None else sh["a"]) if sh["a"] in (None, sh["b"]) or \
                sh["b"] is None else f"{shape_str(sh['a'])} -> {shape_str(sh['b'])}"
            layers = (f"+{r['layers']['b']}" if r["status"] == "added" else f"-{r['layers']['a']}"
                      if r["status"] == "removed" else ", ".join(
                          x for x in (f"+{r['layers_added']}" if r["layers_added"] else "",
                                      f"-{r['layers_removed']}" if r["layers_removed"] else "",
                                      f"{r['layers_changed']} changed" if r["layers_changed"] else "") if x) or "-")
            rows.append([r["name"], r["group_label"], r["status"], r["type"], shape, num(r["params"]["delta"]),
                         signed(r["macs"]["delta"]), layers])
        out += [f"blocks: {c['blocks_added']} added, {c['blocks_removed']} removed, {c['blocks_changed']} changed, "
                f"{c['blocks_same']} unchanged",
                table(rows, ["block", "group", "status", "type", "output shape", "params +/-", "MACs +/-", "layers"],
                      "llllrrrl"), ""]
    labels = {"params": "params", "trainable_params": "trainable", "non_trainable_params": "non-trainable",
              "macs": "MACs", "layers": "layers", "blocks": "blocks"}
    rows = []
    for k, label in labels.items():
        x = t[k]
        pct = f"{100 * x['delta'] / x['a']:+.1f}%" if x["a"] and x["delta"] else ""
        rows.append([label, f"{x['a']:,}", f"{x['b']:,}", num(x["delta"]), pct])
    out += [table(rows, ["total", "A", "B", "+/-", "%"], "lrrrr"), ""]
    lay = d["layers"]
    out.append(f"layers (matched by name): {c['layers_added']} added, {c['layers_removed']} removed, "
               f"{c['layers_changed']} changed")
    for x in lay["changed"][:DIFF_LAYER_LINES]:
        ch = dict(x["changes"])
        if "trainable_params" in ch and ch["trainable_params"] == ch.get("params"):
            del ch["trainable_params"]  # all trainable: the params change says it
        out.append(f"  {x['name']} ({x['block']}): " + "; ".join(_diff_change(f, c) for f, c in ch.items()))
    if len(lay["changed"]) > DIFF_LAYER_LINES:
        out.append(f"  ... and {len(lay['changed']) - DIFF_LAYER_LINES} more (--json lists them all)")
    if lay["renamed"]:
        out.append("likely renamed (same op, attributes, shape and params; counted as removed and added): " +
                   ", ".join(f"{r['a']} -> {r['b']}" for r in lay["renamed"]))
    if "outputs" in d:
        out.append(f"outputs: {', '.join(d['outputs']['a'])} -> {', '.join(d['outputs']['b'])}")
    out.append("MACs: multiply-accumulates of conv and dense layers (what papers call FLOPs).")
    return "\n".join(out)


def cmd_diff(args) -> int:
    from ..views import diff as diffing

    if args.html:
        out = check_output(args.html, args.force)  # before any work: an existing file is an error at once
    (sa, ia), (sb, ib) = _diff_side(args, "a"), _diff_side(args, "b")
    d = diffing.diff_specs(sa, sb, label_a=ia.pop("label"), label_b=ib.pop("label"))
    d["a"].update(ia)
    d["b"].update(ib)
    if args.json:
        print_json(d)
    elif args.html:
        from ..core.templates import render

        write_output(out, render("diff.html.j2", d=d, human=human, signed=diffing.signed, shape_str=shape_str),
                     args.force)
        print(d["summary"])
        print(f"wrote: {out}")
    else:
        print(format_diff(d))
    return 1 if (args.exit_code and d["differ"]) else 0


# ---------------------------------------------------------------- codegen (cmd_codegen)


def cmd_codegen(args) -> int:
    from ..backends.codegen import generate

    out = None
    if args.output:
        out = check_output(args.output, args.force)
        if out.suffix != ".py":
            raise SpecError("the output of codegen must end in .py", _where(out))
    text = generate(args.spec, args.set)
    if out is None:
        sys.stdout.write(text)
        return 0
    write_output(out, text, args.force)
    print(f"wrote {out} ({len(text.splitlines())} lines)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from ..core.version import __version__

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

    def recipe_args(sp):
        sp.add_argument("--recipe", metavar="R", help="a training recipe (bundled name, e.g. finetune, or a path): "
                                                      "trainable and frozen parameters of each of its phases")
        sp.add_argument("--recipe-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the recipe, e.g. phases[1].learning_rate=1e-5 (repeatable)")

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
    recipe_args(sp)
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
                  "Export a spec (built with random weights), a saved MODEL.keras or a run directory of "
                  "`archspec train` (pass it as SPEC). The result is reloaded and run next to Keras (ONNX Runtime, "
                  "tf.saved_model.load, keras.models.load_model) on real images (--check-data, or a run "
                  "directory's own data) or else random inputs; above 1e-4 max difference (float32), 1e-2 "
                  "(--fp16), or below the minimum top-1 agreement on real images (--fp16 99%, --quantize 95%) "
                  "the export fails with exit 1 and writes nothing. --quantize needs real images to be checked "
                  "on. ONNX has a dynamic batch, the Keras input/output names and metadata (spec name, "
                  "resolved-spec sha256, archspec version, preprocessing). Writes are atomic.")
    sp.add_argument("-o", "--output", required=True, metavar="PATH",
                    help="output file (a directory for saved_model)")
    sp.add_argument("--format", choices=["onnx", "saved_model", "keras"],
                    help="default: from the suffix of PATH (.onnx, .keras); another suffix needs --format")
    sp.add_argument("--opset", type=int, default=17, help="ONNX opset (13-18, default 17)")
    sp.add_argument("--via", choices=["ir", "tf2onnx"], default="ir",
                    help="how ONNX is made: ir (default: emitted from the graph IR, no TensorFlow needed) or "
                         "tf2onnx (traced by TensorFlow and converted by tf2onnx, the cross-check)")
    sp.add_argument("--external-data", action="store_true",
                    help="ONNX weights in PATH.data beside PATH (automatic above 2 GB, protobuf's limit)")
    sp.add_argument("--no-check", action="store_true", help="skip the comparison with Keras (nothing is verified)")
    sp.add_argument("--check-data", metavar="DIR|FILE.npz",
                    help="real images to check on (up to 256 of the test split, through the model's input): an "
                         ".npz with x_train, y_train[, x_test, y_test], a CIFAR directory, a folder of class "
                         "folders or of images; reports top-1 agreement (and accuracy, with labels). Default: a "
                         "run directory's data, else random inputs")
    sp.add_argument("--min-agreement", type=float, metavar="F",
                    help="--fp16/--quantize: the top-1 agreement with float32 needed on real images "
                         "(default 0.99 for fp16, 0.95 for int8)")
    sp.add_argument("--force", action="store_true", help="replace an existing PATH")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--fp16", action="store_true",
                   help="ONNX with float16 weights (inputs/outputs stay float32; batch norms folded into their "
                        "convolutions, nodes that overflow float16 kept float32)")
    g.add_argument("--quantize", choices=["int8", "int8-dynamic"],
                   help="ONNX Runtime int8 quantization: static (calibrated) or dynamic (weights only); "
                        "needs --check-data (or a run directory, or static's --calibration) unless --no-check")
    sp.add_argument("--calibration", metavar="PATH",
                    help="--quantize int8: a .npy (N,H,W,C) or a directory of images (default: training images "
                         "of the check data, else generated)")
    sp.add_argument("--samples", type=int, default=3, help="random inputs for the check without check data "
                                                           "(default 3; variants at least 16)")
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
    sp.add_argument("--plot", metavar="FILE", help="plot params, MACs and resolution against phi, the official "
                                                   "presets beside the formula's points: FILE.svg (the plot) or "
                                                   "FILE.html (a self-contained page with the plot and the table)")
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
    sp.add_argument("--recipe", action="store_true", help="the schema of training recipes instead of specs")
    sp.add_argument("--force", action="store_true", help="replace an existing output file")
    sp.set_defaults(func=cmd_schema)

    sp = sub.add_parser(
        "train", help="train a spec from a recipe into a run directory (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train SPEC with Keras fit as the recipe R says, on data read from disk (an image folder with "
                    "one sub-folder per class, a CIFAR-10/100 python directory, or an .npz with x_train, y_train, "
                    "x_test, y_test). Writes to RUN_DIR: spec.yaml and recipe.yaml (resolved), checkpoints/ (every "
                    "epoch and on SIGINT/SIGTERM), best.keras, final.keras, history.csv, tensorboard/, metrics.json. "
                    "An existing RUN_DIR is never overwritten without --force; --resume RUN_DIR continues it from "
                    "its latest checkpoint. RUN_DIR is locked while a process trains in it: a second one is refused.",
        epilog="examples:\n  archspec train resnet18 --recipe cifar100 --data cifar-100-python --out runs/r18 "
               "--set head.classes=100 --set input.shape=[32,32,3]\n  archspec train vgg16 --recipe finetune "
               "--data cats_vs_dogs/ --out runs/ft --set head.classes=2 --weights vgg16.h5\n"
               "  archspec train --resume runs/r18\n  tensorboard --logdir runs/r18/tensorboard")
    sp.add_argument("spec", nargs="?", metavar="SPEC", help="a spec file or bundled name (with --resume: optional, "
                                                            "and refused unless it is the run's own spec)")
    sp.add_argument("--recipe", metavar="R", help="a recipe file or bundled name (cifar100, finetune)")
    sp.add_argument("--data", metavar="PATH", help="the training data (with --resume: default the run's)")
    sp.add_argument("--out", metavar="RUN_DIR", help="the run directory to create")
    sp.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    sp.add_argument("--force", action="store_true",
                    help="start over in an existing RUN_DIR (its contents are deleted): only a run directory (with "
                         "run.json) or an empty one, never one holding the data or the current directory")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a value of the spec")
    sp.add_argument("--recipe-set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a value of the recipe, e.g. optimizer.learning_rate=0.01")
    sp.add_argument("--epochs", type=int, help="the recipe's epochs (a recipe without phases)")
    sp.add_argument("--batch-size", type=int, help="the recipe's data.batch_size (per replica)")
    sp.add_argument("--weights", metavar="FILE", help="initial weights (.weights.h5, .keras, or a keras.applications "
                                                      ".h5 by layer name): every layer in the file must have the "
                                                      "spec's shapes; a classifier of another width is re-initialised")
    sp.add_argument("--distribute", choices=["none", "mirrored", "multi_worker"], default=None,
                    help="tf.distribute: MirroredStrategy over the local GPUs, or MultiWorkerMirroredStrategy from "
                         "TF_CONFIG; the global batch is batch_size x replicas and the learning rate is scaled by "
                         "the replicas")
    sp.add_argument("--json", action="store_true", help="print metrics.json (and no progress bar)")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser("evaluate", help="loss, top-1/top-5, per-class accuracy, confusion matrix of a trained model",
                        description="Evaluate a run directory (its best.keras) or a .keras file on the test set of "
                                    "the data (all of it when it has none).")
    sp.add_argument("model", metavar="RUN_DIR|MODEL")
    sp.add_argument("--data", required=True, metavar="PATH")
    sp.add_argument("--batch-size", type=_at_least_one, default=64, metavar="N", help="images per batch (default 64)")
    sp.add_argument("--confusion", metavar="FILE.csv", help="write the confusion matrix (rows: true, columns: "
                    "predicted) as CSV; every class name is quoted, and one a spreadsheet would read "
                    "as a formula (starting with = + - @, a tab or CR) starts with a single quote")
    sp.add_argument("--force", action="store_true", help="replace an existing --confusion file")
    sp.add_argument("--json", action="store_true", help="loss, top1, top5, per_class, confusion as JSON")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser("predict", help="top-k classes of images with a trained model",
                        description="Predict the top-k classes of each image; class names come from the run's "
                                    "classes.json (the training data's folder or CIFAR names).")
    sp.add_argument("model", metavar="RUN_DIR|MODEL")
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    sp.add_argument("--top", type=_at_least_one, default=5, metavar="K",
                    help="the K most likely classes of each image (default 5; K >= 1; a K above the model's "
                         "classes gives all of them, with a note)")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_predict)

    # -- parser: report
    sp = spec_cmd("report", "a self-contained HTML report: diagram, charts, block table, the spec (no TensorFlow)",
                  "Write one HTML file that needs no network access: an SVG diagram of the network drawn from the "
                  "graph IR (blocks as boxes that expand to their layers, branches and merges as edges labelled with "
                  "their tensor shapes, repeated blocks collapsed, zoom and pan), bar charts of params and MACs per "
                  "stage and block, the resolution and channels through the network, the compound-scaling presets "
                  "when the spec has them, the sortable per-block table, the totals, and the spec's YAML with line "
                  "numbers (each block links to its line). With --model, the parameters Keras counts in a built "
                  ".keras file are shown beside the static ones (this imports TensorFlow).")
    sp.add_argument("-o", "--output", metavar="FILE", help="output .html file (default: NAME.html), or .svg for the "
                                                           "diagram alone with every block expanded")
    sp.add_argument("--model", metavar="FILE.keras", help="a model built from the spec (archspec build): measured "
                                                          "Keras counts beside the static ones")
    sp.add_argument("--force", action="store_true", help="replace an existing output file")
    recipe_args(sp)
    sp.set_defaults(func=cmd_report)

    # -- parser: diff
    sp = sub.add_parser(
        "diff", help="what changed between two specs: blocks, layers, params, MACs (no TensorFlow)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Compare two specs (or a spec with itself under other overrides or scaling), statically. "
                    "Layers are matched by name: added, removed, or changed (op, attributes, output shape, "
                    "params, MACs, or rewired between layers both have). Blocks (the stem's, each stage's, the "
                    "head's) are matched by name and are changed when any of their layers is, or their output "
                    "shape, params or MACs differ; they are grouped by stage. Prints a one-line summary, the "
                    "groups, the changed blocks, the totals with their deltas (B - A) and the changed layers. "
                    "Exit 0 whether or not they differ (--exit-code: 1 when they do).",
        epilog="Each side is a spec file or a bundled name. --set, --preset and --phi apply to both sides;\n"
               "--set-a/--set-b add overrides to one side (after --set); --preset-a/--preset-b and\n"
               "--phi-a/--phi-b scale one side (instead of --preset/--phi). Deltas are B - A. MACs are\n"
               "multiply-accumulates of conv and dense layers (what papers call FLOPs).\n"
               "Exit codes: 0 compared (different or not), 1 different with --exit-code, 2 bad input.\n\n"
               "examples:\n"
               "  archspec diff resnet50 resnet101\n"
               "  archspec diff efficientnet efficientnet --preset-b b3      # EfficientNet-B0 vs B3\n"
               "  archspec diff efficientnet efficientnet --preset-a b1 --preset-b b2\n"
               "  archspec diff resnet50 resnet50 --set-b head.classes=10\n"
               "  archspec diff resnet50 my_resnet.yaml --set input.shape=[160,160,3]\n"
               "  archspec diff resnet50 my_resnet.yaml --exit-code      # CI: exit 1 when they differ\n"
               "  archspec diff resnet50 resnet101 --json\n"
               "  archspec diff resnet50 resnet101 --html diff.html      # self-contained page\n")
    sp.add_argument("a", metavar="A", help="side A: a spec file or the name of a bundled spec")
    sp.add_argument("b", metavar="B", help="side B: a spec file or the name of a bundled spec")
    sp.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a value on both sides, e.g. head.classes=10 (value read as YAML; repeatable)")
    for s in ("a", "b"):
        sp.add_argument(f"--set-{s}", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override a value on side {s.upper()} only (after --set; repeatable)")
    sp.add_argument("--preset", metavar="NAME", help="scale both sides by a row of their official table, e.g. b3")
    sp.add_argument("--phi", type=float, help="compound-scale both sides by the paper's formula")
    for s in ("a", "b"):
        sp.add_argument(f"--preset-{s}", metavar="NAME", help=f"scale side {s.upper()} by a preset, e.g. b3")
        sp.add_argument(f"--phi-{s}", type=float, metavar="PHI", help=f"compound-scale side {s.upper()}")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--json", action="store_true",
                   help="one JSON object: a, b, differ, summary, totals, counts, groups, blocks, layers")
    g.add_argument("--html", metavar="OUT.html", help="write a self-contained HTML page (no external resources)")
    sp.add_argument("--force", action="store_true", help="with --html: replace an existing file")
    sp.add_argument("--exit-code", action="store_true", help="exit 1 when the two differ (for CI), else 0")
    sp.set_defaults(func=cmd_diff)

    # -- parser: codegen
    sp = spec_cmd(
        "codegen", "the network as a standalone Keras 3 Python file (no TensorFlow)",
        "Write the network as one readable Python file that needs only `keras` (any backend:\n"
        "TensorFlow, JAX, PyTorch):\n"
        "  - one function per block type of the spec (bottleneck, mbconv, ...; blocks of one type\n"
        "    with different structures get bottleneck_2, ...), each block one call of it;\n"
        "  - build_model(include_top=True, classes=..., input_shape=..., pooling=None);\n"
        "  - the custom layers it needs (LocalResponseNormalization, LayerScale) written inline;\n"
        "  - a header with the spec, its params, MACs, layers and the resolved spec's sha256.\n"
        "build_model() makes the model of `archspec build` with the same --set: the same layer names,\n"
        "configurations and weights in the same order (so weights load into either).",
    )
    sp.epilog = ("example:\n  archspec codegen resnet50 --set head.classes=10 -o resnet50_10.py\n"
                 "  python -c 'import resnet50_10; resnet50_10.build_model().summary()'")
    sp.add_argument("-o", "--output", metavar="FILE.py", help="write the file (atomically) instead of printing it")
    sp.add_argument("--force", action="store_true", help="replace an existing output file")
    sp.set_defaults(func=cmd_codegen)

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
    except Exception as exc:  # noqa: BLE001 - the guard: anything not archspec's own is one line, exit 1
        if args.debug:
            raise
        resource = resource_words(exc)
        if resource:
            print(f"archspec: error: {resource}", file=sys.stderr)
        else:
            print(f"archspec: internal error: {internal_error_words(exc)}; rerun with --debug for the traceback",
                  file=sys.stderr)
        return 1


def resource_words(exc: BaseException) -> str | None:
    """What the machine ran out of, in words, for the failures no check can foresee: memory
    (MemoryError, a backend's ResourceExhaustedError / out-of-memory) or disk space."""
    name, msg = type(exc).__name__, " ".join(str(exc).split())
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC or "No space left on device" in msg:
        where = f" writing {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        return f"no space left on the device{where}; free some space and run again (a run resumes with --resume)"
    if isinstance(exc, MemoryError) or name in ("ResourceExhaustedError", "OutOfMemoryError") or \
            name == "XlaRuntimeError" and "RESOURCE_EXHAUSTED" in msg:
        return ("out of memory; the model or the batch is too large for this machine (reduce the input size, the "
                "widths or data.batch_size; `archspec inspect` shows the weights and activations it needs)")
    return None


def internal_error_words(exc: BaseException, limit: int = 300) -> str:
    """`Type: message` of an unexpected exception on one bounded line (a framework's message
    can hold tensors, paths and newlines; only its start is shown)."""
    msg = " ".join(str(exc).split())
    if len(msg) > limit:
        msg = msg[:limit] + " ..."
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
