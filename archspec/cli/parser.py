"""The parser of `archspec`: every command, option, default and choice. The words of
`--help` are `archspec.views.help`'s; the choices and defaults are the library's own
constants (`archspec.exporting.options`), never written again here."""

from __future__ import annotations

import argparse
import textwrap

from ..views import help as words

RAW = argparse.RawDescriptionHelpFormatter


def _argtype(parse):
    """An argparse type from a library parser: its ValueError's message is the usage error."""
    def convert(text: str):
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return convert


def switches(arg, *flags) -> None:
    """On/off options, in this order."""
    for flag in flags:
        arg(flag, action="store_true")


def scaling_options(sp, arg) -> None:
    g = sp.add_mutually_exclusive_group()
    arg("--phi", type=float, group=g)
    arg("--preset", group=g)


def weights_options(arg) -> None:
    arg("--weights", metavar="FILE|NAME|URL")
    arg("--weights-sha256", metavar="HEX")
    arg("--weights-skip", action="append", default=[], metavar="GLOB")


def build_parser() -> argparse.ArgumentParser:
    from ..core.version import __version__
    from ..core.units import parse_count
    from ..exporting import options as o
    from ..views.sweeps import parse_phis
    from ..training.search import command_line_options as search_options, help_values as search_words

    values = dict(min_opset=o.MIN_OPSET, max_opset=o.MAX_OPSET, default_opset=o.DEFAULT_OPSET,
                  fp16_agreement=f"{o.MIN_AGREEMENT['fp16']:g}", int8_agreement=f"{o.MIN_AGREEMENT['int8']:g}",
                  **search_words())
    p = argparse.ArgumentParser(prog="archspec", formatter_class=RAW, epilog=words.EPILOG, description=words.DESCRIPTION)
    p.add_argument("--version", action="version", version=f"archspec {__version__}")
    p.add_argument("--debug", action="store_true", help=words.option_help("*", "--debug"))
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=words.CommandParser)

    def command(name, spec=None):
        """A sub-command; `spec`: "one" (SPEC), "many" (SPEC...) with --set, or None."""
        summary, description = words.COMMANDS[name]
        plain = name in ("list", "evaluate", "predict", "weights")  # one paragraph, wrapped by argparse
        if not plain:  # each one-line paragraph wrapped as argparse would; the examples (epilog) as written
            description = "\n\n".join(p if "\n" in p else textwrap.fill(p, 79) for p in description.split("\n\n"))
        sp = sub.add_parser(name, help=summary, description=description, epilog=words.EPILOGS.get(name),
                            formatter_class=argparse.HelpFormatter if plain else RAW)

        def arg(*flags, group=None, **kw):
            key = next((f for f in flags if f.startswith("--")), kw.get("dest") or flags[-1])
            kw.setdefault("help", words.option_help(name, key, **values))
            return (group or sp).add_argument(*flags, **kw)

        if spec == "many":
            arg("specs", nargs="+", metavar="SPEC")
        elif spec == "one":
            arg("spec", metavar="SPEC")
        if spec:
            arg("--set", action="append", default=[], metavar="KEY=VALUE")
        return sp, arg

    sp, arg = command("validate", "many")
    arg("-q", "--quiet", action="store_true")

    sp, arg = command("inspect", "one")
    switches(arg, "--json", "--layers", "--markdown")
    arg("--recipe", metavar="R")
    arg("--recipe-set", action="append", default=[], metavar="KEY=VALUE")

    sp, arg = command("build", "one")
    arg("-o", "--output")
    arg("--precision", choices=o.PRECISIONS)
    arg("--seed", type=int)
    weights_options(arg)
    switches(arg, "--force", "--json")
    scaling_options(sp, arg)

    sp, arg = command("export", "one")
    arg("-o", "--output", required=True, metavar="PATH")
    arg("--format", choices=o.FORMATS)
    arg("--opset", type=int, default=o.DEFAULT_OPSET)
    arg("--via", choices=o.ONNX_PATHS, default=o.ONNX_PATHS[0])
    switches(arg, "--external-data", "--no-check", "--force")
    arg("--check-data", metavar="DIR|FILE.npz")
    arg("--min-agreement", type=float, metavar="F")
    g = sp.add_mutually_exclusive_group()
    arg("--fp16", action="store_true", group=g)
    arg("--quantize", choices=[q.replace("_", "-") for q in o.QUANTIZE_MODES], group=g)
    arg("--calibration", metavar="PATH")
    arg("--samples", type=int, default=3)
    arg("--seed", type=int, default=0)
    weights_options(arg)
    switches(arg, "--int8-io", "--bake-preprocessing", "--json")
    scaling_options(sp, arg)

    sp, arg = command("scale", "one")
    g = sp.add_mutually_exclusive_group(required=True)
    arg("--phi", type=_argtype(parse_phis), metavar="PHI", group=g)
    arg("--preset", metavar="NAME", group=g)
    arg("--search", action="store_true", group=g)
    arg("--step", type=float, default=0.05)
    arg("--tolerance", type=float, default=0.05)
    arg("-o", "--output")
    arg("--plot", metavar="FILE")
    switches(arg, "--force", "--json")

    sp, arg = command("list")
    sp.add_argument("--json", action="store_true")

    sp, arg = command("schema")
    arg("-o", "--output")
    switches(arg, "--recipe", "--force")

    sp, arg = command("train")
    arg("spec", nargs="?", metavar="SPEC")
    arg("--recipe", metavar="R")
    arg("--data", metavar="PATH")
    arg("--out", metavar="RUN_DIR")
    arg("--resume", metavar="RUN_DIR")
    arg("--set", action="append", default=[], metavar="KEY=VALUE")
    arg("--recipe-set", action="append", default=[], metavar="KEY=VALUE")
    arg("--epochs", type=int)
    arg("--batch-size", type=int)
    weights_options(arg)
    arg("--distribute", choices=["none", "mirrored", "multi_worker"], default=None)
    arg("--workers", metavar="HOST:PORT,...")
    arg("--rank", type=int, metavar="K")
    switches(arg, "--force", "--allow-collapse", "--json")

    sp, arg = command("search", "one")
    for flags, kw in search_options():
        arg(*flags, **({**kw, "type": _argtype(kw["type"])} if "type" in kw else kw))

    sp, arg = command("evaluate")
    sp.add_argument("model", metavar="RUN_DIR|MODEL")
    sp.add_argument("--data", required=True, metavar="PATH")
    arg("--batch-size", type=_argtype(parse_count), default=64, metavar="N")
    arg("--confusion", metavar="FILE.csv")
    switches(arg, "--force", "--json")

    sp, arg = command("predict")
    sp.add_argument("model", metavar="RUN_DIR|MODEL")
    sp.add_argument("images", nargs="+", metavar="IMAGE")
    arg("--top", type=_argtype(parse_count), default=5, metavar="K")
    sp.add_argument("--json", action="store_true")

    sp, arg = command("report", "one")
    arg("-o", "--output", metavar="FILE")
    arg("--model", metavar="FILE.keras")
    arg("--force", action="store_true")
    arg("--recipe", metavar="R")
    arg("--recipe-set", action="append", default=[], metavar="KEY=VALUE")

    sp, arg = command("diff")
    arg("a", metavar="A")
    arg("b", metavar="B")
    for s in ("", "-a", "-b"):  # both sides, then each side
        arg(f"--set{s}", action="append", default=[], metavar="KEY=VALUE")
        arg(f"--preset{s}", metavar="NAME")
        arg(f"--phi{s}", type=float, metavar="PHI")
    g = sp.add_mutually_exclusive_group()
    arg("--json", action="store_true", group=g)
    arg("--html", metavar="OUT.html", group=g)
    switches(arg, "--force", "--exit-code")

    sp, arg = command("weights", "one")
    arg("file", metavar="FILE")
    arg("--weights-skip", action="append", default=[], metavar="GLOB")
    arg("--json", action="store_true")

    sp, arg = command("codegen", "one")
    arg("-o", "--output", metavar="FILE.py")
    arg("--force", action="store_true")
    return p
