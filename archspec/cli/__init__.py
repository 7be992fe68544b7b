"""Command line: argument parsing, one library call per command, printing through `archspec.views.text`.
Typed errors become one line per problem and an exit code: 0 success, 1 a failure while running, 2 bad
input; no traceback unless `--debug`. TensorFlow only for build, export, train, search, evaluate, predict,
report --model."""

from __future__ import annotations

import os
import sys

from ..core.atomic import check_output
from ..core.errors import SpecError
from ..core.units import human
from ..views import text
from ..views.text import print_error, progress, show, warn
from .parser import build_parser


# ---------------------------------------------------------------- commands


def cmd_validate(args) -> int:
    from ..ir.pipeline import validate_specs

    failed = 0
    for ref, g in validate_specs(args.specs, args.set):  # every check, the static shape analysis included
        if isinstance(g, SpecError):
            if args.debug:
                raise g
            failed += 1
            print_error(g)
        elif not args.quiet:
            print(f"{ref}: ok ({g.name}, {g.params:,} params, {human(g.macs)} MACs)")
    return 2 if failed else 0


def cmd_inspect(args) -> int:
    from ..api import analyze, load, lower_spec
    from ..training.recipe import recipe_phases

    spec = load(args.spec, args.set)  # loaded once: its errors keep file:line:col through lowering
    graph = lower_spec(spec)
    report = analyze(graph)
    if (phases := recipe_phases(args.recipe, args.recipe_set, spec, graph)) is not None:
        report["phases"] = phases
    if args.markdown:
        from ..core.templates import markdown_report

        sys.stdout.write(markdown_report(report, spec.description))
        return 0
    return show(args, report if args.layers else text.brief_layers(report),
                lambda: text.format_inspect(report, args.recipe))


def cmd_list(args) -> int:
    from ..ir.pipeline import catalogue

    rows = catalogue()
    return show(args, rows, lambda: text.format_list(rows))


def cmd_schema(args) -> int:
    from ..core.atomic import write_text_atomic
    from ..training.recipe import schema_text  # static: pydantic models only

    out = schema_text(args.recipe)
    if args.output:
        write_text_atomic(check_output(args.output, args.force), out, force=args.force)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(out)
    return 0


def cmd_build(args) -> int:
    from ..exporting.build_file import build_file

    r = build_file(args.spec, args.set, args.output, force=args.force, phi=args.phi, preset=args.preset,
                   precision=args.precision, seed=args.seed, weights=args.weights, weights_skip=args.weights_skip,
                   say=progress, warn=warn)
    return show(args, {k: v for k, v in r.items() if k != "layers"},
                lambda: text.format_build(r, r["build_seconds"], r["keras_params"], r["output"]))


def cmd_export(args) -> int:
    from ..api import export
    from ..exporting.options import from_command_line

    r = export(args.spec, args.output, progress=progress, **from_command_line(vars(args)))
    return show(args, r, lambda: text.format_export(r))


def cmd_scale(args) -> int:
    from ..api import load
    from ..views import sweeps

    spec = load(args.spec, args.set)
    if args.search:
        r = sweeps.search_report(spec, args.step, args.tolerance, output=args.output, plot=args.plot)
    else:
        r = sweeps.scale(spec, args.spec, args.phi or [], args.preset, output=args.output, plot=args.plot,
                         force=args.force, warn=warn)
    return show(args, r, lambda: text.format_search(r) if args.search else
                text.format_scale_table(r, wrote=(args.output, args.plot)))


def cmd_train(args) -> int:
    from ..api import train

    out = args.resume or args.out
    same = ("epochs", "batch_size", "weights", "weights_skip", "allow_collapse", "force", "distribute", "workers", "rank")
    r = train(args.spec, args.recipe, args.data, out, overrides=args.set, recipe_overrides=args.recipe_set,
              resume=bool(args.resume), say=progress, verbose=0 if args.json else "auto", **{k: vars(args)[k] for k in same})
    metrics = {k: v for k, v in r.items() if k != "history"}
    return show(args, metrics, lambda: text.format_train(out, metrics))


def cmd_search(args) -> int:
    from ..training.search import from_command_line, search
    from ..views.search import format_study

    r = search(**from_command_line(vars(args)), say=progress)
    return show(args, r, lambda: format_study(r))


def cmd_evaluate(args) -> int:
    from ..training.evaluate import evaluate

    r = evaluate(args.model, args.data, batch_size=args.batch_size, confusion_csv=args.confusion, force=args.force)
    return show(args, r, lambda: text.format_evaluate(r, args.confusion))


def cmd_predict(args) -> int:
    from ..training.evaluate import predict

    r = predict(args.model, args.images, top=args.top, say=progress)
    return show(args, r, lambda: text.format_predict(r))


def cmd_report(args) -> int:
    from ..api import load
    from ..training.recipe import recipe_phases
    from ..views.report import write_report

    out, html = write_report(args.spec, args.set, args.output, force=args.force, model=args.model,
                             phases=lambda: recipe_phases(args.recipe, args.recipe_set, load(args.spec, args.set)))
    print(f"wrote {out} ({len(html.encode()) / 1e3:.0f} kB, self-contained: open it in any browser, offline)")
    return 0


def cmd_diff(args) -> int:
    from ..views.diff import diff_command

    d = diff_command(args.a, args.b, overrides=args.set, overrides_a=args.set_a, overrides_b=args.set_b,
                     preset=args.preset, phi=args.phi, preset_a=args.preset_a, preset_b=args.preset_b,
                     phi_a=args.phi_a, phi_b=args.phi_b, warn=warn, html=args.html, force=args.force)
    show(args, d, lambda: f"{d['summary']}\nwrote: {d['html']}" if args.html else text.format_diff(d))
    return 1 if (args.exit_code and d["differ"]) else 0


def cmd_weights(args) -> int:
    from ..backends.keras.weights import weights_report
    from ..ir.pipeline import lower_spec
    from ..views.weights import format_weights

    r = weights_report(lower_spec(args.spec, args.set), args.file, args.weights_skip).to_dict()
    show(args, r, lambda: format_weights(r))
    return 0 if r["loadable"] else 2


def cmd_codegen(args) -> int:
    from ..backends.codegen import write_code

    out, code = write_code(args.spec, args.set, args.output, force=args.force)
    if out is None:
        sys.stdout.write(code)
    else:
        print(f"wrote {out} ({len(code.splitlines())} lines)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if argv is None:  # the program's own process: Keras imported without its scikit-learn wrappers (0.9 s)
        from ..backends import keras as keras_backend
        keras_backend.HIDE_SKLEARN = True
    if args.debug:
        os.environ["ARCHSPEC_DEBUG"] = "1"  # TensorFlow's native start-up lines stay visible
    try:
        if hasattr(args, "weights_sha256"):  # --weights: a URL fetched, a file checked; a name (imagenet) is the spec's
            from ..backends.keras.pretrained import for_command_line
            args.weights = for_command_line(args.weights, args.weights_sha256, say=progress)
        return int(globals()["cmd_" + args.command](args) or 0)
    except (Exception, KeyboardInterrupt) as exc:  # noqa: BLE001 - the guard: lines and an exit code, no traceback
        if args.debug and not isinstance(exc, (KeyboardInterrupt, BrokenPipeError)):
            raise
        return print_error(exc)
