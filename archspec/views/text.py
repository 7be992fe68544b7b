"""Text for a terminal: the tables and summaries the command line prints (`archspec inspect`,
`list`, `scale`, `diff`, `export`, `train`, `evaluate`, `predict`), from the dicts the library
returns, and how it prints them (`show`, progress, warnings, errors). No files, no TensorFlow."""

from __future__ import annotations

import json
import sys

from ..core.errors import error_lines
from ..core.units import human, shape_str

#: changed layers printed in the text of `archspec diff` (--json lists all)
DIFF_LAYER_LINES = 20
MACS_NOTE = "MACs: multiply-accumulates of conv and dense layers (what papers call FLOPs)."


# ---------------------------------------------------------------- what the command line prints


def show(args, report, formatted) -> int:
    """`report` as JSON with --json, else the text `formatted()` gives; exit 0."""
    print(json.dumps(report, indent=2, default=str) if args.json else formatted())
    return 0


def progress(msg: str) -> None:
    print(f"archspec: {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    print(f"archspec: warning: {msg}", file=sys.stderr)


def print_error(exc: BaseException) -> int:
    """The failure's lines on stderr (`archspec.core.errors.error_lines`); returns its exit code."""
    code, lines = error_lines(exc)
    for line in lines:
        print(line, file=sys.stderr)
    return code


def table(rows: list[list], headers: list[str], align: str | None = None) -> str:
    """Columns padded to their widest cell; `align` one letter per column, ``l`` or ``r``."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    align = align or "l" * len(headers)

    def fmt(r):
        return "  ".join(c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(r, widths, align)).rstrip()

    line = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(headers), line] + [fmt(r) for r in cells])


def csv_cell(text: str) -> str:
    """A name as a spreadsheet cell: text that a spreadsheet would read as a formula (it
    starts with = + - @, a tab or a carriage return) gets a leading single quote. Quoting of
    commas, quotes and newlines is the csv module's."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def shown(name) -> str:
    """A name from data printed on a terminal: as written when printable, else escaped."""
    name = str(name)
    return name if name.isprintable() else ascii(name)


def format_report(report: dict) -> str:
    """`archspec inspect`: the blocks with shapes, params and MACs, then the totals."""
    rows = [[b["name"], b["type"], shape_str(b["output_shape"]), f"{b['params']:,}", human(b["macs"])]
            for b in report["blocks"] if b["type"] != "input"]
    out = [f"{report['name']}: input {shape_str(report['input_shape'])} -> output {shape_str(report['output_shape'])}",
           "", table(rows, ["block", "type", "output shape", "params", "MACs"], "lllrr"), "",
           f"params:     {report['params']:,} (trainable {report['trainable_params']:,}, "
           f"non-trainable {report['non_trainable_params']:,})",
           f"MACs:       {report['macs']:,} ({human(report['macs'])}; multiply-accumulates of conv and dense "
           f"layers, what papers call FLOPs)",
           f"layers:     {len(report['layers'])}"]
    if report.get("preprocess"):
        pre = report["preprocess"]
        out.append(f"preprocess: {pre['description']}" + ("" if pre["mode"] == "none" else
                   "; applied to the data by train, evaluate, predict and the export check (input.preprocess)"))
    if report.get("taps"):
        out.append("taps:       " + ", ".join(
            f"{o['name']} {shape_str(o['shape'])}" for o in report["outputs"] if o["name"] in report["taps"]))
    return "\n".join(out)


def brief_layers(report: dict) -> dict:
    """`inspect --json` without --layers: each layer's name, op, output shape, params, MACs
    and block only."""
    keep = ("name", "op", "output_shape", "params", "macs", "block")
    return {**report, "layers": [{k: layer[k] for k in keep} for layer in report["layers"]]}


def format_inspect(report: dict, recipe: str | None = None) -> str:
    """`format_report`, then the phases of `--recipe` when the report has them."""
    out = format_report(report)
    if report.get("phases") is not None:
        out += (f"\n\nrecipe {recipe}: trainable and frozen parameters per phase (batch-norm statistics, "
                f"{report['non_trainable_params']:,}, are non-trainable in every phase)\n\n"
                + format_phases(report["phases"]))
    return out


def format_phases(phases: list[dict]) -> str:
    return table([[p["name"], p["epochs"], f"{p['learning_rate']:g}", f"{p['trainable']:,}", f"{p['frozen']:,}",
                   p["rule"]] for p in phases], ["phase", "epochs", "learning rate", "trainable", "frozen", "rule"],
                 "lrrrrl")


def format_list(rows: list[dict]) -> str:
    """`archspec list`: the bundled specs."""
    return table([[r["name"], r.get("keras") or "-", ",".join(r.get("weights") or []) or "-",
                   shape_str(r["input_shape"]), human(r["params"]), human(r["macs"]), r["description"]]
                  for r in rows], ["spec", "keras.applications", "weights", "input", "params", "MACs", "description"],
                 "llllrrl") + ("\n\n" + MACS_NOTE + "\nkeras.applications: the constructor the spec compiles to, "
                               "exactly (`archspec build <it>` finds the spec); weights: published weights by name "
                               "(--weights imagenet)")


def format_build(report: dict, seconds: float, keras_params: int, output) -> str:
    """`archspec build`: the inspect table, the build time and the file written."""
    return (format_report(report) + f"\nbuild:      {seconds:.2f} s (Keras {keras_params:,} params, "
            f"equal to the analysis)\nwrote:      {output}")


def _fmt_ratio(x: float) -> str:
    return f"{x:.3g}x"


def format_scale_table(r: dict, wrote=()) -> str:
    """`archspec scale --phi/--preset`: the family table (and the files `wrote`, if any)."""
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
    out += [f"wrote: {w}" for w in wrote if w]
    return "\n".join(out)


def format_search(r: dict) -> str:
    """`archspec scale --search`: the candidates of the coefficient grid."""
    cands = r["candidates"]
    return table([[f"{c['alpha']:g}", f"{c['beta']:g}", f"{c['gamma']:g}", f"{c['flops_factor']:.3f}",
                   "x".join(map(str, c["resolution"])), f"{c['params']:,}", human(c["macs"]),
                   _fmt_ratio(c["macs_ratio"])] for c in cands],
                 ["alpha", "beta", "gamma", "a*b^2*g^2", "resolution", "params", "MACs", "MACs x base"],
                 "rrrrrrrr") + (
        f"\n\n{len(cands)} candidates (alpha, beta, gamma >= 1, step {r['step']:g}, "
        f"|alpha*beta^2*gamma^2 - 2| <= {r['tolerance']:g} * 2), each at phi = 1. The paper keeps the "
        f"most accurate: ranking needs training; plug it in with archspec.language.rounding.search_grid(rank=...).")


def format_export(r: dict) -> str:
    """`archspec export`: what was written and how it was checked."""
    out = [f"wrote:      {r['path']} ({r['format']}{', ' + r['variant'] if r.get('variant') else ''}, "
           f"{r['bytes'] / 1e6:.1f} MB) in {r['seconds']:.1f} s",
           f"input:      {r['input_names'][0]} {shape_str(['N' if d is None else d for d in r['input_shape']])}",
           f"outputs:    {', '.join(r['output_names'])}"]
    if r.get("via"):
        out.append(f"onnx:       opset {r['opset']}, via {r['via']}"
                   f"{', weights in ' + r['external_data'] if r.get('external_data') else ''}")
    if not r.get("checked"):
        out.append("check:      skipped (--no-check)")
    else:
        on = (f"{r['samples']} random inputs" if r["check_inputs"] == "random" else
              f"{r['samples']} held-out images of {r['check_inputs']} (its test split)" if r.get("check_held_out")
              else f"{r['samples']} images of {r['check_inputs']}")
        top1 = r.get("top1_agreement")
        agree = "" if top1 is None else f", top-1 agreement {top1:.1%}"
        if r.get("min_agreement") is not None:
            agree += f" (needs {r['min_agreement']:.0%})"
        tol = f" (tolerance {r['tolerance']:g})" if r.get("tolerance") is not None else ""
        vs = "vs float32:" if r.get("variant") else "check:     "
        out.append(f"{vs} max |diff| vs Keras {r['max_abs_diff']:.3g}{tol}{agree} on {on}: ok")
        if r.get("accuracy"):
            out.append(f"accuracy:   Keras {r['accuracy']['keras']:.1%}, export {r['accuracy']['export']:.1%} "
                       f"on those {r['samples']} labelled images")
        cal = r.get("calibration")
        if cal:  # static int8: which images set the ranges, and whether the check saw them
            if cal.get("split") or "not checked" in str(cal.get("source")):
                out.append(f"calibrated: on {cal['images']} images, none of them checked "
                           f"({cal.get('split') or cal['source']})")
            elif r["check_inputs"] == "calibration images":
                out.append(f"calibrated: on the {cal['images']} images checked ({cal['source']})")
            else:
                out.append(f"calibrated: on {cal['images']} images ({cal['source']})")
        if r.get("variant") and r.get("size_ratio"):
            out.append(f"size:       {r['size_ratio']:.2f}x of float32 ({r['float32_bytes'] / 1e6:.1f} MB)"
                       + (f"; {len(r['float32_nodes'])} nodes kept float32 (float16 overflow)"
                          if r.get("float32_nodes") else ""))
    out.append(f"metadata:   spec {r['metadata']['archspec.spec_name']} sha256 "
               f"{r['metadata']['archspec.spec_sha256'][:12]}, archspec {r['metadata']['archspec.version']}")
    return "\n".join(out)


def format_train(out: str, metrics: dict) -> str:
    """`archspec train`: the run, its best epoch, the throughput and the models written."""
    from pathlib import Path

    def pct(v):
        return "-" if v is None else f"{v:.2%}"

    lines = [f"run:        {out} ({metrics['epochs_completed']} of {metrics['epochs_planned']} epochs)",
             f"best:       epoch {metrics['best_epoch']} on {metrics['monitor']}: val_loss "
             f"{metrics['val_loss'] if metrics['val_loss'] is not None else '-'}, top-1 {pct(metrics['val_top1'])}, "
             f"top-5 {pct(metrics['val_top5'])}"]
    if metrics["images_per_second"]:
        lines.append(f"throughput: {metrics['images_per_second']:.0f} images/s (training, median over epochs)")
    lines.append(f"models:     {Path(out) / 'best.keras'}, {Path(out) / 'final.keras'}")
    return "\n".join(lines)


def format_evaluate(r: dict, confusion: str | None = None) -> str:
    """`archspec evaluate`: loss, top-1/top-5 and the per-class accuracy."""
    rows = [[c["class"], shown(c["name"]), c["images"], "-" if c["accuracy"] is None else f"{c['accuracy']:.2%}"]
            for c in r["per_class"] if c["images"]]
    out = (f"{r['model']} on {r['data']} ({r['images']:,} images)\n"
           f"loss {r['loss']:.4f}   top-1 {r['top1']:.2%}   top-5 {r['top5']:.2%}\n\n"
           + table(rows, ["class", "name", "images", "accuracy"], "lllr"))
    if confusion:
        out += f"\n\nconfusion matrix (rows: true class, columns: predicted): {confusion}"
    return out


def format_predict(items: list[dict]) -> str:
    """`archspec predict`: each image, then its top classes."""
    lines = []
    for item in items:
        lines.append(shown(item["image"]))
        lines += [f"  {t['probability']:7.2%}  {shown(t['name'])} ({t['class']})" for t in item["top"]]
    return "\n".join(lines)


def _diff_change(field: str, ch: dict) -> str:
    def v(x):
        return shape_str(x) if field == "output_shape" and isinstance(x, list) else (
            f"{x:,}" if isinstance(x, int) and not isinstance(x, bool) else json.dumps(x, default=str))

    if field == "attrs":
        return "; ".join(f"{k} {v(c['a'])} -> {v(c['b'])}" for k, c in ch.items())
    return f"{field} {v(ch['a'])} -> {v(ch['b'])}"


def format_diff(d: dict) -> str:
    """The text of `archspec diff`: the summary, then groups, changed blocks, totals, layers."""
    from .diff import signed

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
    out.append(MACS_NOTE)
    return "\n".join(out)
