"""archspec diff: two specs' graphs compared by layer name, reported by block and stage (no TF)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from archspec.views import diff as diffing
from archspec.api import lower_spec
from archspec.cli import main

R50, R101 = 25_636_712, 44_707_176
B0, B3 = 5_330_571, 12_320_535
SPECS = Path(__file__).resolve().parent.parent / "specs"


def run(capsys, *argv):
    rc = main(["diff", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def group(d, label):
    (g,) = [g for g in d["groups"] if g["label"] == label]
    return g


# ---------------------------------------------------------------- library


def test_resnet50_vs_resnet101_is_seventeen_conv4_blocks():
    d = diffing.diff_specs("resnet50", "resnet101")
    assert d["differ"] is True
    assert d["totals"]["params"] == {"a": R50, "b": R101, "delta": R101 - R50}
    assert d["summary"].startswith("resnet50 -> resnet101: stage conv4: +17 blocks, +19.07M params; ")
    conv4 = group(d, "stage conv4")
    assert conv4["blocks"] == {"a": 6, "b": 23, "delta": 17}
    assert (conv4["added"], conv4["removed"], conv4["changed"]) == (17, 0, 0)
    assert conv4["params"]["delta"] == R101 - R50  # every extra parameter is in conv4
    assert [g["label"] for g in d["groups"] if g["status"] != "same"] == ["stage conv4"]
    assert [b["name"] for b in d["blocks"]] == [f"conv4_block{i}" for i in range(7, 24)]
    assert {b["status"] for b in d["blocks"]} == {"added"}
    assert all(b["params"]["delta"] == 1_121_792 for b in d["blocks"])
    # conv5_block1 now reads conv4_block23_out: explained by the added blocks, not a change
    assert d["layers"]["changed"] == [] and d["layers"]["removed"] == []
    assert d["counts"]["layers_added"] == 170 == d["totals"]["layers"]["delta"]
    json.dumps(d)  # JSON-able as it is


def test_efficientnet_b0_vs_b3_by_preset():
    d = diffing.diff_specs("efficientnet", "efficientnet", preset_b="b3")
    assert d["totals"]["params"] == {"a": B0, "b": B3, "delta": B3 - B0}
    assert (d["a"]["label"], d["b"]["label"]) == ("efficientnet", "efficientnet-b3")
    assert d["b"]["input_shape"] == [300, 300, 3]
    assert d["counts"]["blocks_added"] == 10  # repeats 1,2,2,3,3,4,1 -> 2,3,3,5,5,6,2
    assert group(d, "stage4")["blocks"] == {"a": 3, "b": 5, "delta": 2}
    assert group(d, "stage top")["blocks"] == {"a": 1, "b": 1, "delta": 0}
    stem = {x["name"]: x["changes"] for x in d["layers"]["changed"]}["stem_conv"]
    assert stem["attrs"]["filters"] == {"a": 32, "b": 40}  # 32 * 1.2, rounded to 8
    # the b0 row of the table is the base: the same numbers
    d0 = diffing.diff_specs("efficientnet", "efficientnet", preset_a="b0", preset_b="b3")
    assert d0["totals"]["params"] == d["totals"]["params"]


def test_the_same_network_written_twice_has_no_difference():
    """resnet50_yaml writes the bottleneck in the spec language (a `define:`d residual)
    instead of the built-in family: different text, the same layers. The diff says exactly
    that: the 16 bottlenecks changed their block type, and not one layer differs."""
    d = diffing.diff_specs("resnet50", "resnet50_yaml")
    assert d["layers"] == {"added": [], "removed": [], "changed": [], "renamed": []}
    assert [b["name"] for b in d["blocks"]] == [f"conv{s}_block{i}" for s, n in ((2, 3), (3, 4), (4, 6), (5, 3))
                                                 for i in range(1, n + 1)]
    assert {(b["type"], tuple(b["changes"]), b["params"]["delta"]) for b in d["blocks"]} == {("bottleneck_v1", ("type",), 0)}
    assert d["totals"]["params"] == {"a": R50, "b": R50, "delta": 0}  # keras.applications.ResNet50's count
    assert d["counts"]["layers_changed"] == 0 and d["counts"]["blocks_changed"] == 16


def test_one_changed_number_is_found_where_it_is(tmp_path):
    """A variant that differs in one conv's kernel: exactly that layer is changed, with the
    parameter delta counted by hand (64 * 64 * (5 * 5 - 3 * 3) in conv2_block1_2_conv)."""
    p = tmp_path / "r50k5.yaml"
    p.write_text("extends: resnet50\nname: r50k5\n")
    d = diffing.diff_specs("resnet50", p, overrides_b=["stages[0].blocks[0].kernel=5"])
    changed = {x["name"]: x["changes"] for x in d["layers"]["changed"]}
    k2 = {k for k in changed if k.endswith("_2_conv")}
    assert k2 == {f"conv2_block{i}_2_conv" for i in (1, 2, 3)}  # the stage block's repeats share it
    assert changed["conv2_block1_2_conv"]["attrs"]["kernel"] == {"a": [3, 3], "b": [5, 5]}
    assert d["totals"]["params"]["delta"] == 3 * 64 * 64 * (25 - 9)


def test_head_classes_override_changes_exactly_the_predictions_block():
    d = diffing.diff_specs("resnet50", "resnet50", overrides_b=["head.classes=10"])
    assert [(b["name"], b["status"]) for b in d["blocks"]] == [("predictions", "changed")]
    (pred,) = d["blocks"]
    assert pred["params"]["delta"] == -(2048 * 990 + 990)
    assert pred["output_shape"] == {"a": [1000], "b": [10]}
    assert d["totals"]["params"]["delta"] == -(2048 * 990 + 990)
    (layer,) = d["layers"]["changed"]
    assert layer["name"] == "predictions" and layer["block"] == "predictions"
    assert layer["changes"]["attrs"] == {"units": {"a": 1000, "b": 10}}
    assert [g["label"] for g in d["groups"] if g["status"] != "same"] == ["head"]
    assert d["b"]["label"] == "resnet50 [head.classes=10]"


def renamed_spec(tmp_path, old="conv2d_1", new="conv_b") -> Path:
    p = tmp_path / "renamed.yaml"
    p.write_text((SPECS / "cifar100_cnn.yaml").read_text().replace(f"name: {old},", f"name: {new},"))
    assert new in p.read_text()
    return p


def test_renamed_layers_are_removed_and_added_with_a_rename_hint(tmp_path):
    d = diffing.diff_specs(SPECS / "cifar100_cnn.yaml", renamed_spec(tmp_path))
    assert d["differ"] is True
    assert d["layers"]["removed"] == ["conv2d_1"] and d["layers"]["added"] == ["conv_b"]
    assert d["layers"]["renamed"] == [{"a": "conv2d_1", "b": "conv_b"}]
    # max_pooling2d_1 now reads conv_b: explained by the rename, not a change of its own
    assert d["layers"]["changed"] == []
    assert [(b["name"], b["status"]) for b in d["blocks"]] == [("conv2d_1", "removed"), ("conv_b", "added")]
    assert d["totals"]["params"]["delta"] == 0 and d["totals"]["params"]["a"] == 325_956
    assert d["summary"].startswith("cifar100_cnn -> cifar100_cnn: stem: +1 block, -1 block, 0 params")


WIRED = textwrap.dedent("""\
    format: 1
    name: wired
    input: {shape: [16, 16, 3]}
    defaults: {activation: relu}
    stem:
      - {type: conv, name: c1, filters: 8, kernel: 3, padding: same}
      - {type: conv, name: c2, filters: 8, kernel: 3, padding: same}
      - {type: conv, name: c3, filters: 8, kernel: 3, padding: same}
      - {type: add, name: sum, inputs: [FIRST, c3]}
    head:
      classes: 4
      layers:
        - {type: global_pool, name: avg_pool}
        - {type: classifier, name: predictions}
""")


def test_a_shortcut_rewired_between_existing_layers_is_a_change(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(WIRED.replace("FIRST", "c1"))
    b.write_text(WIRED.replace("FIRST", "c2"))
    d = diffing.diff_specs(a, b)
    assert d["differ"] is True and d["totals"]["params"]["delta"] == 0
    assert d["layers"]["changed"] == [{"name": "sum", "block": "sum",
                                       "changes": {"inputs": {"a": ["c1", "c3"], "b": ["c2", "c3"]}}}]
    assert [(b["name"], b["status"]) for b in d["blocks"]] == [("sum", "changed")]


def test_diff_graphs_without_stage_names_groups_by_index():
    d = diffing.diff_graphs(lower_spec("resnet50"), lower_spec("resnet101"))
    assert group(d, "stages[2]")["blocks"]["delta"] == 17
    assert d["summary"].startswith("resnet50 -> resnet101: stages[2]: +17 blocks")


# ---------------------------------------------------------------- CLI


def test_cli_resnet50_vs_resnet101_text(capsys):
    rc, out, _ = run(capsys, "resnet50", "resnet101")
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].startswith("resnet50 -> resnet101: stage conv4: +17 blocks, +19.07M params")
    (row,) = [x for x in lines if x.startswith("stage conv4 ")]
    assert "changed" in row and "6 -> 23" in row and "+19.07M" in row
    (total,) = [x for x in lines if x.startswith("params ")]
    assert total.split()[1:4] == ["25,636,712", "44,707,176", "+19,070,464"]
    assert "blocks: 17 added, 0 removed, 0 changed, 21 unchanged" in out
    assert sum(x.startswith("conv4_block") for x in lines) == 17
    assert main(["diff", "resnet50", "resnet101", "--exit-code"]) == 1  # they differ
    capsys.readouterr()


def test_cli_efficientnet_b0_vs_b3_json(capsys):
    rc, out, _ = run(capsys, "efficientnet", "efficientnet", "--preset-b", "b3", "--json")
    assert rc == 0
    d = json.loads(out)
    assert d["totals"]["params"] == {"a": B0, "b": B3, "delta": B3 - B0}
    assert d["b"]["preset"] == "b3" and d["a"]["preset"] is None
    assert d["b"]["label"] == "efficientnet-b3"
    rc, out, _ = run(capsys, "efficientnet", "efficientnet", "--preset-b", "b3")
    assert out.splitlines()[0].startswith("efficientnet -> efficientnet-b3: 11 of 11 groups differ: +10 blocks")
    (total,) = [x for x in out.splitlines() if x.startswith("params ")]
    assert total.split()[1:4] == ["5,330,571", "12,320,535", "+6,989,964"]


def test_cli_shared_preset_applies_to_both_sides(capsys):
    rc, out, _ = run(capsys, "efficientnet", "efficientnet", "--preset", "b3", "--json")
    d = json.loads(out)
    assert rc == 0 and d["differ"] is False and d["totals"]["params"]["b"] == B3


def test_cli_spec_against_itself(capsys):
    for extra in ([], ["--exit-code"]):
        rc, out, _ = run(capsys, "resnet50", "resnet50", *extra)
        assert rc == 0
        assert out == "resnet50 -> resnet50: no differences (177 layers, 25,636,712 params, 3.86G MACs)\n"
    # --set applies to both sides: still the same
    rc, out, _ = run(capsys, "resnet50", "resnet50", "--set", "head.classes=10", "--exit-code", "--json")
    assert rc == 0 and json.loads(out)["differ"] is False


def test_cli_set_b_head_classes(capsys):
    rc, out, _ = run(capsys, "resnet50", "resnet50", "--set-b", "head.classes=10", "--exit-code")
    assert rc == 1
    assert out.splitlines()[0].startswith("resnet50 -> resnet50 [head.classes=10]: head: 1 block changed, -2.03M")
    assert "predictions (predictions): units 1,000 -> 10; output_shape (1000,) -> (10,); " \
           "params 2,049,000 -> 20,490" in out
    assert "-2,028,510" in out


def test_cli_html_is_self_contained_escaped_and_atomic(tmp_path, capsys):
    spec = tmp_path / "x<i>.yaml"  # a user-controlled string in the page
    spec.write_text((SPECS / "cifar100_cnn.yaml").read_text())
    page = tmp_path / "diff.html"
    rc, out, _ = run(capsys, str(spec), str(renamed_spec(tmp_path)), "--html", str(page))
    assert rc == 0 and f"wrote: {page}" in out
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert "x&lt;i&gt;.yaml" in html and "<i>" not in html
    for external in ("http://", "https://", "<script", "src=", "<link", "@import", "url("):
        assert external not in html, external
    assert "<code>conv2d_1</code> → <code>conv_b</code>" in html  # the rename hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff.html", "renamed.yaml", "x<i>.yaml"]
    rc, _, err = run(capsys, "resnet50", "resnet101", "--html", str(page))
    assert rc == 2 and "exists; pass --force" in err and page.read_text() == html
    rc, _, _ = run(capsys, "resnet50", "resnet101", "--html", str(page), "--force")
    assert rc == 0 and "stage conv4" in page.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff.html", "renamed.yaml", "x<i>.yaml"]


@pytest.mark.parametrize("argv, message", [
    (["resnet50", "nosuch"], "no spec file or bundled spec named 'nosuch'"),
    (["efficientnet", "efficientnet", "--preset-b", "b9"], "unknown preset 'b9'"),
    (["resnet50", "resnet101", "--preset-a", "b3"], "spec 'resnet50' has no scaling section"),
    (["efficientnet", "efficientnet", "--preset-a", "b1", "--phi-a", "1"],
     "side A (efficientnet): give --preset or --phi, not both (got preset='b1', phi=1)"),
    (["resnet50", "resnet50", "--set-b", "head.classes=-1"], "head.classes"),
])
def test_cli_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_cli_json_and_html_are_exclusive(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["diff", "resnet50", "resnet101", "--json", "--html", str(tmp_path / "x.html")])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err


def test_cli_help_teaches_with_examples(capsys):
    with pytest.raises(SystemExit) as e:
        main(["diff", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    for s in ("--preset-b", "--set-a", "--exit-code", "archspec diff efficientnet efficientnet --preset-b b3",
              "archspec diff resnet50 resnet50 --set-b head.classes=10"):
        assert s in out, s


def test_diff_never_imports_tensorflow():
    code = ("import sys\nfrom archspec.cli import main\n"
            "rc = main(['diff', 'resnet50', 'resnet101', '--json'])\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'onnx', 'tf2onnx', 'jax', 'torch') if m in sys.modules)\n"
            "print('RC=%d HEAVY=%s' % (rc, ','.join(heavy)), file=sys.stderr)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stderr.strip().splitlines()[-1] == "RC=0 HEAVY=", r.stderr[-500:]
