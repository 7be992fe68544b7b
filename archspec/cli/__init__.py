"""Command line: argument parsing, one library call per command, and printing through
`archspec.views.text`. The library raises typed errors; `main` turns them into one line per
problem and an exit code: 0 success, 1 a failure while running, 2 bad input. No traceback
unless `--debug`. TensorFlow is imported only by the commands that need it (build, export,
train, evaluate, predict, report --model).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from ..core.atomic import OutputExists, check_output
from ..core.errors import ArchspecError, SpecError, SpecErrors, internal_error_words, resource_words
from ..core.units import human
from ..views import text

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


def print_json(obj) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def progress(msg: str) -> None:
    print(f"archspec: {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    print(f"archspec: warning: {msg}", file=sys.stderr)


def print_error(exc: SpecError) -> None:
    for line in (exc.lines() if isinstance(exc, SpecErrors) else [exc.one_line()]):
        print(line, file=sys.stderr)


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
            print_error(exc)
            continue
        if not args.quiet:
            print(f"{ref}: ok ({g.name}, {g.params:,} params, {human(g.macs)} MACs)")
    return 2 if failed else 0


def _phases(args, spec, graph=None) -> list[dict] | None:
    """The trainable/frozen counts of each phase of `--recipe` (None without it)."""
    if not getattr(args, "recipe", None):
        return None
    from ..api import lower_spec
    from ..training.recipe import load_recipe, phase_counts

    recipe, raw = load_recipe(args.recipe, args.recipe_set)
    return phase_counts(graph or lower_spec(spec), spec, recipe, raw)


def cmd_inspect(args) -> int:
    from ..api import analyze, load, lower_spec

    spec = load(args.spec, args.set)  # loaded once: its errors keep file:line:col through lowering
    graph = lower_spec(spec)
    report = analyze(graph)
    phases = _phases(args, spec, graph)
    if phases is not None:
        report["phases"] = phases
    if args.markdown:
        from ..core.templates import markdown_report

        sys.stdout.write(markdown_report(report, spec.description))
    elif args.json:
        keep = ("name", "op", "output_shape", "params", "macs", "block")
        print_json(report if args.layers else {**report, "layers": [{k: l[k] for k in keep} for l in report["layers"]]})
    else:
        print(text.format_inspect(report, args.recipe))
    return 0


def cmd_list(args) -> int:
    from ..api import analyze, load
    from ..language.loader import bundled_names

    rows = []
    for name in bundled_names():
        spec = load(name)  # once; a Spec keeps its document, so an error keeps its file:line:col
        r = analyze(spec)
        rows.append({"name": name, "description": spec.description, "input_shape": r["input_shape"],
                     "params": r["params"], "macs": r["macs"]})
    print_json(rows) if args.json else print(text.format_list(rows))
    return 0


def cmd_schema(args) -> int:
    from ..core.atomic import write_text_atomic
    from ..language.schema import Spec, editor_schema

    if args.recipe:
        from ..training.recipe import Recipe
    out = json.dumps(editor_schema(Recipe if args.recipe else Spec), indent=2) + "\n"
    if not args.output:
        sys.stdout.write(out)
        return 0
    write_text_atomic(check_output(args.output, args.force), out, force=args.force)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def cmd_build(args) -> int:
    from ..api import analyze, load, lower_spec
    from ..core.errors import Location
    from ..views.sweeps import apply_scaling

    scaled = args.phi is not None or args.preset is not None  # scaling warnings printed, not raised
    graph = lower_spec(apply_scaling(load(args.spec, args.set), args.phi, args.preset, warn) if scaled else args.spec,
                       None if scaled else args.set)
    out = check_output(args.output or f"{graph.name}.keras", args.force)
    if out.suffix != ".keras":
        raise SpecError("the output of build must end in .keras", Location(str(out)))
    progress(f"building {graph.name} ({len(graph.nodes)} layers, {graph.params:,} params)")
    if args.weights:  # a garbage or truncated file: one line, before the build
        from ..training.rundir import check_weights_file

        check_weights_file(args.weights)
    from ..backends.keras import load as keras_backend
    from ..backends.keras.files import save_keras  # the one .keras writer: its archspec.json names the spec
    from ..core.quiet import tf_retracing_quiet

    kb = keras_backend()
    model, seconds = kb.timed_build(graph, precision=args.precision, seed=args.seed)  # counts checked there
    if args.weights:
        with tf_retracing_quiet():
            kb.load_weights(model, args.weights)
    save_keras(model, out, graph)
    report = analyze(graph)
    if args.json:
        print_json({k: v for k, v in report.items() if k != "layers"} | {
            "build_seconds": round(seconds, 3), "output": str(out), "precision": args.precision or "float32",
            "seed": args.seed, "keras_params": model.count_params()})
    else:
        print(text.format_build(report, seconds, model.count_params(), out))
    return 0


def cmd_export(args) -> int:
    from ..api import export

    r = export(args.spec, args.output, format=args.format, opset=args.opset, check=not args.no_check,
               force=args.force, fp16=args.fp16, quantize=args.quantize and args.quantize.replace("-", "_"),
               calibration=args.calibration, overrides=args.set or None, progress=progress, samples=args.samples,
               seed=args.seed, via=args.via, external_data=True if args.external_data else None,
               check_data=args.check_data, min_agreement=args.min_agreement)
    print_json(r) if args.json else print(text.format_export(r))
    return 0


def cmd_scale(args) -> int:
    from ..api import load
    from ..views import sweeps

    spec = load(args.spec, args.set)
    if args.search:
        r = sweeps.search_report(spec, args.step, args.tolerance, output=args.output, plot=args.plot)
        print_json(r) if args.json else print(text.format_search(r))
        return 0
    r = sweeps.scale(spec, args.spec, args.phi or [], args.preset, output=args.output, plot=args.plot,
                     force=args.force, warn=warn)
    print_json(r) if args.json else print(text.format_scale_table(r, wrote=(args.output, args.plot)))
    return 0


def cmd_train(args) -> int:
    from ..api import train

    if not args.resume and (args.spec is None or args.recipe is None):
        raise SpecError("give SPEC and --recipe R (or --resume RUN_DIR to continue a run)")
    out = args.resume or args.out
    if out is None:
        raise SpecError("--out RUN_DIR is required (where checkpoints, logs and models are written)")
    r = train(args.spec, args.recipe, args.data, out, overrides=args.set, recipe_overrides=args.recipe_set,
              epochs=args.epochs, batch_size=args.batch_size, weights=args.weights, resume=bool(args.resume),
              force=args.force, distribute=args.distribute, say=progress, verbose=0 if args.json else "auto")
    metrics = {k: v for k, v in r.items() if k != "history"}
    print_json(metrics) if args.json else print(text.format_train(out, metrics))
    return 0


def cmd_evaluate(args) -> int:
    from ..training.evaluate import evaluate

    if args.confusion:
        check_output(args.confusion, args.force)
    r = evaluate(args.model, args.data, batch_size=args.batch_size, confusion_csv=args.confusion)
    print_json(r) if args.json else print(text.format_evaluate(r, args.confusion))
    return 0


def cmd_predict(args) -> int:
    from ..training.evaluate import predict

    r = predict(args.model, args.images, top=args.top)
    given = len(r[0]["top"]) if r else args.top
    if given < args.top:
        print(f"archspec: note: --top {args.top} is more than the model's {given} classes: all {given} are given",
              file=sys.stderr)
    if args.json:
        print_json(r)
    elif r:
        print(text.format_predict(r))
    return 0


def cmd_report(args) -> int:
    from ..api import load
    from ..views.report import write_report

    out, html = write_report(args.spec, args.set, args.output, force=args.force, model=args.model,
                             phases=lambda: _phases(args, load(args.spec, args.set)))
    print(f"wrote {out} ({len(html.encode()) / 1e3:.0f} kB, self-contained: open it in any browser, offline)")
    return 0


def cmd_diff(args) -> int:
    from ..views.diff import diff_command, signed

    out = check_output(args.html, args.force) if args.html else None  # before any work
    d = diff_command(args.a, args.b, overrides=args.set, overrides_a=args.set_a, overrides_b=args.set_b,
                     preset=args.preset, phi=args.phi, preset_a=args.preset_a, preset_b=args.preset_b,
                     phi_a=args.phi_a, phi_b=args.phi_b, warn=warn)
    if args.json:
        print_json(d)
    elif args.html:
        from ..core.atomic import write_text_atomic
        from ..core.templates import render
        from ..core.units import shape_str

        write_text_atomic(out, render("diff.html.j2", d=d, human=human, signed=signed, shape_str=shape_str),
                          force=args.force)
        print(f"{d['summary']}\nwrote: {out}")
    else:
        print(text.format_diff(d))
    return 1 if (args.exit_code and d["differ"]) else 0


def cmd_codegen(args) -> int:
    from ..backends.codegen import generate
    from ..core.atomic import write_text_atomic
    from ..core.errors import Location

    out = check_output(args.output, args.force) if args.output else None
    if out is not None and out.suffix != ".py":
        raise SpecError("the output of codegen must end in .py", Location(str(out)))
    code = generate(args.spec, args.set)
    if out is None:
        sys.stdout.write(code)
        return 0
    write_text_atomic(out, code, force=args.force)
    print(f"wrote {out} ({len(code.splitlines())} lines)", file=sys.stderr)
    return 0


def _phis(text: str) -> list[float]:
    from ..views.sweeps import parse_phis

    try:
        return parse_phis(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    from ..core.version import __version__
    from ..exporting.options import (DEFAULT_OPSET, FORMATS, MAX_OPSET, MIN_AGREEMENT, MIN_OPSET, ONNX_PATHS, PRECISIONS,
                                     QUANTIZE_MODES)

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
    sp.add_argument("--precision", choices=PRECISIONS,
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
    sp.add_argument("--format", choices=FORMATS,
                    help="default: from the suffix of PATH (.onnx, .keras); another suffix needs --format")
    sp.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                    help=f"ONNX opset ({MIN_OPSET}-{MAX_OPSET}, default {DEFAULT_OPSET})")
    sp.add_argument("--via", choices=ONNX_PATHS, default=ONNX_PATHS[0],
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
                         f"(default {MIN_AGREEMENT['fp16']:g} for fp16, {MIN_AGREEMENT['int8']:g} for int8)")
    sp.add_argument("--force", action="store_true", help="replace an existing PATH")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--fp16", action="store_true",
                   help="ONNX with float16 weights (inputs/outputs stay float32; batch norms folded into their "
                        "convolutions, nodes that overflow float16 kept float32)")
    g.add_argument("--quantize", choices=[q.replace("_", "-") for q in QUANTIZE_MODES],
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
        print_error(exc.reworded("--force") if isinstance(exc, OutputExists) else exc)
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
