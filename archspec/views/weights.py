"""Text of `archspec weights SPEC FILE`: the load report's summary line first, then every
layer that does not load as it is (adapted, re-initialised, skipped, missing, other shapes)
and the layers only the file holds. Pure formatting of `WeightsReport.to_dict()`."""

from __future__ import annotations

from ..core.units import shape_str
from .text import shown, table

#: layers only the file holds, printed in the text (--json lists all)
FILE_ONLY_LINES = 20


def _shapes(shapes) -> str:
    if shapes is None:
        return "-"
    return ", ".join(shape_str(s) for s in shapes) if shapes else "no weights"


def format_weights(report: dict) -> str:
    """The report as text: the summary line, the layers that do not load as they are, then
    the file's layers that the spec lacks, and the verdict under the policy."""
    out = [report["summary"]]
    rows = [[r["status"], shown(r["layer"]), _shapes(r["spec_shapes"]), _shapes(r["file_shapes"]), r["note"]]
            for r in report["layers"] if r["status"] != "loaded"]
    if rows:
        out += ["", table(rows, ["status", "layer", "spec shapes", "file shapes", "note"])]
    extra = report["file_only"]
    if extra:
        more = len(extra) - FILE_ONLY_LINES
        out += ["", f"in the file, not in the spec ({len(extra)}): "
                    + ", ".join(shown(n) for n in extra[:FILE_ONLY_LINES]) + (f", … ({more} more)" if more > 0 else "")]
    out += ["", f"{report['file']} ({report['format']}) into {report['spec']}: "
                + ("loads under the policy" if report["loadable"] else
                   "does not load: weights for another network" if report.get("another_network") else
                   "does not load: only the classifier (when head.classes differs), a stem over other input "
                   "channels and layers named by --weights-skip may differ")]
    return "\n".join(out)
