"""The HTML report (archspec/views/report.py, diagram.py, charts.py) and `scale --plot`: static
checks of every bundled spec's report (no TensorFlow), then the same reports loaded in a
real headless Chromium (console errors, network requests, the diagram's boxes and merges
after its script ran, expand/collapse, screenshots that are not blank)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from archspec.api import lower_spec
from archspec.cli import main
from archspec.views.diagram import MERGE_OPS, boxes_of, layout_layers, render_svg
from archspec.views.report import html_report
from archspec.language.loader import bundled_names

from browser import Browser, find_chromium

SPECS = [n for n in bundled_names() if n not in __import__("conftest").VARIANTS]


def top_blocks(graph):
    return graph.block_rows()  # one row per top-level block that has layers


def merges(graph) -> Counter:
    return Counter(n.op for n in graph.nodes if n.op in MERGE_OPS)


def external_refs(html: str) -> list[str]:
    """Anything that would make the browser fetch: src/href to another document, CSS
    url() and @import (the SVG namespace URI is an identifier, not a fetch)."""
    found = re.findall(r'(?:src|href)\s*=\s*"(?!#)([^"]*)"', html)
    found += re.findall(r"url\(|@import", html)
    found += re.findall(r"<link\b", html)
    return found


@pytest.mark.parametrize("name", SPECS)
def test_report_of_every_bundled_spec_is_self_contained_and_complete(name):
    graph = lower_spec(name)
    _, html = html_report(name)
    assert external_refs(html) == []
    svg = html[html.index("<svg"):html.index("</svg>")]
    rows = top_blocks(graph)
    assert svg.count('<g class="block') == len(rows)
    assert len(re.findall(r'<g class="layer [^"]*\bmerge\b', svg)) == sum(merges(graph).values())
    # every layer of the network is drawn once, with its output shape
    assert len(re.findall(r'<g class="layer ', svg)) == len(graph.nodes)
    # the block table has one row per top-level block, and the totals are the analysis'
    table = html[html.index('id="block-table"'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr") - 1 == len(rows)
    assert f"{graph.params:,}" in html
    # the spec's own YAML is listed with line anchors, and each block links to one that exists
    anchors = set(re.findall(r'<span class="l" id="(f\d+L\d+)"', html))
    links = re.findall(r'<a href="#(f\d+L\d+)">(?:line |[\w.]+\.yaml:)\d+', html)
    assert anchors and links and set(links) <= anchors


def test_resnet50_and_googlenet_merges():
    assert merges(lower_spec("resnet50")) == {"add": 16}
    assert merges(lower_spec("googlenet")) == {"concat": 9}
    svg = render_svg(lower_spec("resnet50"))
    assert svg.count('class="edge merge-in"') == 32  # shortcut and residual branch into each of the 16 adds


def test_layer_layout_keeps_branches_on_their_own_lanes():
    graph = lower_spec("googlenet")
    block = next(b for b in graph.blocks if b.name == "inception_3a")
    nodes = [graph.node(n) for n in block.nodes]
    pos, ports, lanes, rows = layout_layers(nodes, {"pool2_3x3_s2": (28, 28, 192)})
    assert lanes == 4  # the four branches of an inception block
    assert rows == 4  # the input port, 1x1 / reduce / pool, 3x3 / 5x5 / proj, the concatenation
    lanes_of = {n: pos[n][0] for n in pos}
    assert lanes_of["inception_3a_3x3_reduce"] == lanes_of["inception_3a_3x3"]
    assert len({lanes_of["inception_3a_1x1"], lanes_of["inception_3a_3x3"], lanes_of["inception_3a_5x5"],
                lanes_of["inception_3a_pool_proj"]}) == 4
    assert pos["inception_3a_output"][1] == 3


def test_repeated_blocks_are_collapsed_into_runs():
    boxes = boxes_of(lower_spec("resnet152"))
    runs = Counter(b.run for b in boxes if b.run is not None)
    # conv3_block3..8 and conv4_block3..36 repeat their stage's second block; conv2/conv5 have 3 blocks
    assert sorted(runs.values()) == [6, 34]
    svg = render_svg(lower_spec("resnet152"))
    assert svg.count('<g class="run"') == 2
    assert "conv4_block3 \u2026 conv4_block36" in svg


def test_residual_shortcuts_are_drawn_beside_collapsed_blocks_and_runs():
    boxes = {b.name: b for b in boxes_of(lower_spec("resnet50"))}
    assert [s.label for s in boxes["conv3_block1"].inner.shortcuts] == ["conv 1\u00d71/2 512 \u2192 batch norm"]
    assert [s.label for s in boxes["conv3_block2"].inner.shortcuts] == ["identity"]
    assert boxes["conv1"].inner.shortcuts == []
    assert [s.label for s in boxes_of(lower_spec("resnet50_v2"))[3].inner.shortcuts] == ["conv 1\u00d71 256"]
    # googlenet's concatenations and NASNet's merges of two branches are no shortcuts
    assert not any(b.inner.shortcuts for b in boxes_of(lower_spec("googlenet")))
    svg = render_svg(lower_spec("resnet50"))
    assert svg.count('<g class="shortcut"') == 16 + 2  # one per block (run members hidden) and per run
    assert '<g class="shortcut"' not in render_svg(lower_spec("resnet50"), expanded=True)


def test_x_axis_labels_never_overlap_when_estimated():
    from archspec.views.charts import text_width, x_labels

    names = [b.name for b in boxes_of(lower_spec("resnet152"))]
    for pitch in (4, 9, 19, 90):  # upright and thinned, upright, upright, horizontal
        upright, kept, _ = x_labels([(k * pitch, n) for k, n in enumerate(names)])
        assert upright == (pitch < 90) and len(kept) >= min(len(names), 4)
        assert len(kept) == len(names) if pitch >= 19 else len(kept) < len(names)
        for (x1, a), (x2, b) in zip(kept, kept[1:]):  # a line high apart, or half their widths apart
            assert x2 - x1 >= (9 * 1.3 if upright else (text_width(a) + text_width(b)) / 2)


def test_references_between_distant_blocks_are_arcs(tmp_path):
    spec = tmp_path / "skip.yaml"
    spec.write_text(textwrap.dedent("""\
        format: 1
        name: skip
        input: {shape: [16, 16, 3]}
        defaults: {activation: relu}
        stem:
          - {type: conv, name: a, filters: 8, kernel: 3}
          - {type: conv, name: b, filters: 8, kernel: 3}
          - {type: conv, name: c, filters: 8, kernel: 3}
          - {type: add, name: d, inputs: [a, c]}
        head:
          classes: 2
          layers: [{type: global_pool, name: pool}, {type: classifier, name: out}]
        """))
    svg = render_svg(lower_spec(str(spec)))
    assert svg.count('class="link arc"') == 1  # a -> d skips b and c
    assert svg.count('class="link chain"') == 6  # input-a-b-c-d-pool-out


def test_report_of_a_built_keras_model_shows_measured_counts(tmp_path, capsys):
    model = tmp_path / "tb.keras"
    assert main(["build", "two_branch", "-o", str(model)]) == 0
    out = tmp_path / "r.html"
    assert main(["report", "two_branch", "--model", str(model), "-o", str(out)]) == 0
    html = out.read_text()
    assert "Keras params" in html and "equal to the analysis" in html
    assert 'class="mismatch"' not in html
    # a model of another width: the measured counts differ and say so, block by block
    assert main(["build", "two_branch", "--set", "scaling.width=2", "-o", str(tmp_path / "w2.keras")]) == 0
    assert main(["report", "two_branch", "--model", str(tmp_path / "w2.keras"), "-o", str(out), "--force"]) == 0
    html = out.read_text()
    assert "differs from the analysis" in html and 'class="mismatch"' in html


def test_report_cli_refuses_to_replace_and_reports_bad_input(tmp_path, capsys):
    out = tmp_path / "r.html"
    out.write_text("keep me")
    assert main(["report", "resnet18", "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert main(["report", "resnet18", "--set", "stages[0].blocks[0].filters=-3", "-o", str(out), "--force"]) == 2
    err = capsys.readouterr().err
    assert "stages[0].blocks[0].filters" in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "keep me"
    assert main(["report", "resnet18", "--model", str(tmp_path / "none.keras"), "-o", str(out), "--force"]) == 2
    assert out.read_text() == "keep me"
    assert list(tmp_path.iterdir()) == [out]  # no temporary file left behind


def test_report_and_plot_never_import_tensorflow(tmp_path):
    code = textwrap.dedent(f"""
        import sys
        from archspec.cli import main
        assert main(["report", "densenet121", "-o", {str(tmp_path / 'd.html')!r}]) == 0
        assert main(["scale", "efficientnet", "--phi", "0:3", "--plot", {str(tmp_path / 'p.svg')!r}]) == 0
        print(sorted(m for m in ("tensorflow", "keras", "jax", "onnx") if m in sys.modules))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"


def test_scale_plot_draws_the_formula_and_the_presets(tmp_path, capsys):
    svg = tmp_path / "p.svg"
    assert main(["scale", "efficientnet", "--phi", "0:7", "--plot", str(svg)]) == 0
    text = svg.read_text()
    assert text.startswith("<svg") and external_refs(text) == []
    assert text.count('<g class="preset">') == 3 * 8  # b0..b7 in each of the three panels
    assert text.count('<polyline class="series"') == 3
    # eight formula points per panel, each labelled by phi on the axis
    assert len(re.findall(r'<circle [^>]*r="2.6"', text)) == 3 * 8
    page = tmp_path / "p.html"
    assert main(["scale", "efficientnet", "--preset", "all", "--plot", str(page)]) == 0
    html = page.read_text()
    assert html.count("<td>preset</td>") == 8 and external_refs(html) == []
    # no presets in the spec: the formula alone
    assert main(["scale", "mobilenet", "--phi", "0:2", "--plot", str(tmp_path / "m.svg")]) == 0
    assert '<g class="preset">' not in (tmp_path / "m.svg").read_text()
    assert main(["scale", "mobilenet", "--phi", "1", "--plot", str(tmp_path / "m.png")]) == 2
    assert "--plot writes .svg" in capsys.readouterr().err


# ---------------------------------------------------------------- in a real browser

CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Chromium is not installed here (apt-get install chromium; .ci/run installs it)")


@pytest.fixture(scope="module")
def browser():
    with Browser(CHROMIUM, width=1280, height=1000) as b:
        yield b


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    d = tmp_path_factory.mktemp("reports")
    for name in SPECS:
        (d / f"{name}.html").write_text(html_report(name)[1])
    return d


def _fetches(browser, page: Path) -> list[str]:
    own = page.resolve().as_uri()
    return [u for u in browser.requests() if u != own and not u.startswith(("data:", "about:"))]


@needs_chromium
@pytest.mark.parametrize("name", SPECS)
def test_every_report_loads_in_chromium_without_errors_or_requests(browser, reports, name):
    page = reports / f"{name}.html"
    browser.events.clear()
    browser.open(page.resolve().as_uri())
    assert browser.console_errors() == []
    assert _fetches(browser, page) == []
    graph = lower_spec(name)
    count = browser.evaluate
    assert count("document.querySelectorAll('svg.archspec-diagram g.block').length") == len(top_blocks(graph))
    assert count("document.querySelectorAll('svg.archspec-diagram g.layer.merge').length") == sum(merges(graph).values())
    # the script laid the column out: as many connectors as boxes and runs on screen, less one, at least
    visible = count("document.querySelectorAll('svg.archspec-diagram g.block:not(.hidden)').length"
                    " + document.querySelectorAll('svg.archspec-diagram g.run:not([style*=none])').length")
    assert count("document.querySelectorAll('svg.archspec-diagram g.link.chain').length") >= visible - 1 - \
        count("document.querySelectorAll('svg.archspec-diagram g.link.arc').length")


@needs_chromium
def test_expand_collapse_and_sort_in_chromium(browser, reports):
    page = reports / "resnet152.html"
    browser.events.clear()
    browser.open(page.resolve().as_uri())
    q = browser.evaluate
    blocks = len(top_blocks(lower_spec("resnet152")))
    shown = "document.querySelectorAll('svg.archspec-diagram g.block:not(.hidden)').length"
    assert q(shown) == blocks - 6 - 34  # two runs collapsed
    height = q("Number(document.querySelector('svg.archspec-diagram').getAttribute('height'))")
    q("document.querySelector('g.run').dispatchEvent(new MouseEvent('click', {bubbles: true}))")
    assert q(shown) == blocks - 34
    q("document.getElementById('expand-all').click()")
    assert q(shown) == blocks
    assert q("document.querySelectorAll('svg.archspec-diagram g.block.expanded').length") == blocks
    assert q("Number(document.querySelector('svg.archspec-diagram').getAttribute('height'))") > 5 * height
    q("document.getElementById('collapse-all').click()")
    assert q(shown) == blocks - 6 - 34
    # sorting the table by params puts the largest block first
    q("document.querySelectorAll('#block-table th')[5].click(); document.querySelectorAll('#block-table th')[5].click()")
    first = q("document.querySelector('#block-table tbody tr').cells[1].textContent")
    rows = top_blocks(lower_spec("resnet152"))
    assert first == max(rows, key=lambda r: r["params"])["name"]
    assert browser.console_errors() == []


@needs_chromium
@pytest.mark.parametrize("name", ["resnet50", "googlenet"])
def test_screenshots_are_not_blank(browser, reports, name, tmp_path):
    from PIL import Image

    page = reports / f"{name}.html"
    browser.open(page.resolve().as_uri())
    browser.evaluate("document.getElementById('expand-all').click()")
    top = tmp_path / f"{name}-top.png"
    browser.screenshot(str(top))
    browser.evaluate("document.getElementById('diagram').scrollIntoView()")
    diagram = tmp_path / f"{name}-diagram.png"
    browser.screenshot(str(diagram))
    for png in (top, diagram):
        im = Image.open(png).convert("RGB")
        assert im.size == (1280, 1000)
        colors = im.getcolors(maxcolors=1 << 20)
        assert len(colors) > 50  # text, boxes and colours, not one flat fill
        dominant = max(colors)[0] / (im.size[0] * im.size[1])
        assert dominant < 0.9


def test_docs_example_diagram_is_what_the_code_draws(tmp_path, capsys):
    """docs/two_branch.svg is `archspec report two_branch -o docs/two_branch.svg`, kept current."""
    out = tmp_path / "d.svg"
    assert main(["report", "two_branch", "-o", str(out)]) == 0
    docs = Path(__file__).parents[1] / "docs" / "two_branch.svg"
    assert out.read_text() == docs.read_text(), "regenerate: archspec report two_branch -o docs/two_branch.svg --force"
    svg = out.read_text()
    assert 'class="block expanded"' in svg and "<script" not in svg
    assert main(["report", "two_branch", "-o", str(tmp_path / "d.pdf")]) == 2
    assert "report writes .html" in capsys.readouterr().err


# the page at a desktop's and a phone's size: the diagram fills its pane, residual shortcuts show
# in the collapsed view, the charts' x-axis labels do not overlap, nothing overflows the page
FILLS = r"""JSON.stringify((function () {
  function box(e) { var b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; }
  var host = document.getElementById("diagram"), svg = host.querySelector("svg.archspec-diagram");
  var drawn = Array.prototype.filter.call(svg.querySelectorAll(
      "g.block:not(.hidden), g.run:not([style*=none]), g.link, .shortcut"), function (e) {
    var b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; }).map(box);
  var charts = Array.prototype.map.call(document.querySelectorAll("#charts svg.chart.through"), function (c) {
    return Array.prototype.map.call(c.querySelectorAll("text.xlabel"), box); });
  return {host: host.clientWidth, hostLeft: host.getBoundingClientRect().left + host.clientLeft,
          drawnLeft: Math.min.apply(null, drawn.map(function (b) { return b[0]; })),
          drawnRight: Math.max.apply(null, drawn.map(function (b) { return b[2]; })),
          shortcuts: Array.prototype.map.call(svg.querySelectorAll(
              "g.block:not(.hidden):not(.expanded) > .shortcut, g.run:not([style*=none]) > .shortcut"), box),
          charts: charts, inner: window.innerWidth, scroll: document.documentElement.scrollWidth};
})())"""


def _overlaps(boxes: list) -> list[tuple[int, int]]:
    return [(i, j) for i in range(len(boxes)) for j in range(i + 1, len(boxes))
            if min(boxes[i][2], boxes[j][2]) > max(boxes[i][0], boxes[j][0])
            and min(boxes[i][3], boxes[j][3]) > max(boxes[i][1], boxes[j][1])]


@needs_chromium
def test_report_fills_the_page_at_desktop_and_phone_sizes(browser, reports):
    import json

    residual = {}  # visible items (blocks, collapsed runs) with an add inside, in the collapsed view
    for name in ("resnet50", "efficientnet"):
        graph = lower_spec(name)
        adds = {b.name for b in graph.blocks if not b.depth and any(graph.node(n).op == "add" for n in b.nodes)}
        residual[name] = len({("run", b.run) if b.run is not None else b.index for b in boxes_of(graph)
                              if b.name in adds})
    try:
        for width, height, mobile in ((1440, 900, False), (390, 844, True)):
            browser.resize(width, height, mobile)
            for name in ("resnet50", "efficientnet"):
                browser.open((reports / f"{name}.html").resolve().as_uri())
                m = json.loads(browser.evaluate(FILLS))
                at = f"{name} at {width}x{height}"
                assert m["inner"] == width and m["scroll"] <= width, f"{at}: the page overflows: {m['scroll']}"
                drawn = m["drawnRight"] - m["drawnLeft"]
                assert drawn >= 0.9 * m["host"], f"{at}: the diagram fills {drawn / m['host']:.0%} of its pane"
                assert m["drawnLeft"] >= m["hostLeft"] - 1 and m["drawnRight"] <= m["hostLeft"] + m["host"] + 1
                assert len(m["shortcuts"]) == residual[name] > 0, at
                assert all(b[2] - b[0] > 0 and b[3] - b[1] > 0 for b in m["shortcuts"]), at
                assert len(m["charts"]) == 2 and all(len(labels) >= 4 for labels in m["charts"]), at
                for labels in m["charts"]:
                    assert _overlaps(labels) == [], f"{at}: x-axis labels overlap"
    finally:
        browser.resize(1280, 1000)
