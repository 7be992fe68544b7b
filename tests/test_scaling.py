"""Compound scaling (archspec/resolving/compound.py, views/sweeps.py, `archspec scale`, `build --phi/--preset`).

The pure-Python part (rounding, phi, presets, reports, the search, the YAML output, the
CLI without TensorFlow) runs in about a second or two. The parity part compiles the
presets b0..b7 and compares them with keras.applications.EfficientNetB0..B7
(weights=None): layer names, weight shapes, parameter counts, and outputs to 1e-4 with the
weights copied over. B6 and B7 are marked slow (about 40 s and 60 s on 2 cores) but run
in CI.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest

from archspec.core.errors import SpecError
from archspec.ir.lower import lower
from archspec.resolving import resolve
from archspec.language import dump_spec
from archspec.resolving.compound import FORMULA, TABLE, ScalingWarning, apply_phi, apply_preset, coefficient_warnings, preset_names
from archspec.views.sweeps import parse_phis, scale_row, search_grid, sweep
from archspec.language.rounding import flops_factor, make_divisible, round_filters, round_repeats, round_resolution
from archspec.language import load, loads, validate

PRESETS = ["b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"]

# keras.applications 3.x, EfficientNetB0..B7(weights=None).count_params() (DESIGN.md's reference counts)
KERAS_PARAMS = {"b0": 5_330_571, "b1": 7_856_239, "b2": 9_177_569, "b3": 12_320_535, "b4": 19_466_823,
                "b5": 30_562_527, "b6": 43_265_143, "b7": 66_658_687}

# Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for CNNs", Table 2, column FLOPs
# (the paper's FLOPs are multiply-adds, archspec's MACs). Given to two significant digits.
PAPER_FLOPS = {"b0": 0.39e9, "b1": 0.70e9, "b2": 1.0e9, "b3": 1.8e9, "b4": 4.2e9, "b5": 9.9e9,
               "b6": 19e9, "b7": 37e9}
PAPER_TOLERANCE = 0.05  # relative: the figures are rounded, and the paper's counting differs in details


@pytest.fixture(scope="module")
def effnet():
    return load("efficientnet")[0]


@pytest.fixture(scope="module")
def resnet_scaled(tmp_path_factory):
    """ResNet-50 with a scaling section, through `extends:` (any spec can be scaled)."""
    d = tmp_path_factory.mktemp("specs")
    (d / "r50s.yaml").write_text(textwrap.dedent("""\
        extends: resnet50
        name: resnet50s
        scaling:
          coefficients: {alpha: 1.2, beta: 1.1, gamma: 1.15}
          presets:
            small: {width: 0.5, depth: 0.5, resolution: 160, dropout: 0.1}
            big: {width: 1.5, depth: 2.0, resolution: 320}
        """))
    return load(d / "r50s.yaml")[0]


def _numbers(spec):
    """(block, field, value) of every channel count and (stage block, repeats) of a spec."""
    out = []
    blocks = [(("stem", k), b) for k, b in enumerate(spec.stem)]
    blocks += [(("stages", s, k), b) for s, st in enumerate(spec.stages) for k, b in enumerate(st.blocks)]
    blocks += [(("head", k), b) for k, b in enumerate(spec.head.layers)]
    for where, b in blocks:
        for f in type(b).width_fields:
            if getattr(b, f) is not None:
                out.append((where, f, getattr(b, f)))
    return out


def _repeats(spec):
    return [(b.repeats, st.fixed) for st in spec.stages for b in st.blocks]


# ---------------------------------------------------------------- rounding rules


def test_make_divisible_nearest_multiple_never_below_90_percent():
    for v in [3.0, 11.2, 35.2, 100.0, 123.4, 1280 * 1.1, 1280 * 0.35, 16 * 0.5, 7.9, 0.4]:
        for div in (4, 8, 16):
            out = make_divisible(v, div)
            assert out % div == 0 and out >= div
            assert out >= 0.9 * v, (v, div, out)
            assert out - v < div  # never a whole step above


def test_make_divisible_examples_worked_by_hand():
    assert make_divisible(35.2) == 32  # 35.2 + 4 -> 39 // 8 * 8 = 32, and 32 >= 0.9 * 35.2 = 31.68
    assert make_divisible(12) == 16  # ties go up: (12 + 4) // 8 * 8
    assert make_divisible(11.9) == 16  # 15.9 // 8 * 8 = 8 < 0.9 * 11.9 = 10.71 -> one more step
    assert make_divisible(36) == 40
    assert make_divisible(1) == 8  # at least the divisor
    assert make_divisible(100, 16) == 96  # 96 >= 90


# Channel counts of keras.applications models (weights=None), read off their layers'
# `filters`: MobileNetV2(alpha) Conv1 (32, rule divisible), block_1/3/6/13/16_project
# (24, 32, 64, 160, 320; rule truncate_divisible), Conv_1 (1280, a floor for alpha <= 1).
KERAS_MOBILENET_V2 = {0.35: [16, 8, 16, 24, 56, 112, 1280], 0.5: [16, 16, 16, 32, 80, 160, 1280],
                      1.3: [40, 32, 40, 80, 208, 416, 1664]}
# MobileNet(alpha=0.75): conv1, conv_pw_1, conv_pw_13 (32, 64, 1024; rule truncate)
KERAS_MOBILENET_075 = [24, 48, 768]


@pytest.mark.parametrize("alpha", sorted(KERAS_MOBILENET_V2))
def test_round_filters_gives_keras_applications_widths(alpha):
    first, *blocks, last = KERAS_MOBILENET_V2[alpha]
    assert round_filters(32, alpha) == first
    assert [round_filters(f, alpha, rounding="truncate_divisible") for f in (24, 32, 64, 160, 320)] == blocks
    assert round_filters(1280, alpha, rounding="divisible", min_filters=1280) == last


def test_round_filters_rules():
    assert round_filters(1280, 1.4) == 1792  # B4's top conv in keras
    assert [round_filters(f, 0.75, rounding="truncate") for f in (32, 64, 1024)] == KERAS_MOBILENET_075
    # the two rules differ where truncation loses the 90% floor: 8.95 -> 8 keeps >= 0.9 * 8,
    # but 8 < 0.9 * 8.95, so the unrounded rule adds one more step
    assert round_filters(179, 0.05) == 16 and round_filters(179, 0.05, rounding="truncate_divisible") == 8
    assert round_filters(1280, 0.35, rounding="truncate_divisible", min_filters=1280) == 1280
    with pytest.raises(ValueError, match="unknown rounding"):
        round_filters(8, 1.0, rounding="nearest")


def test_round_repeats_always_up_and_resolution_rule():
    assert [round_repeats(r, 1.1) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
    assert round_repeats(3, 1.0) == 3 and round_repeats(4, 0.5) == 2 and round_repeats(1, 0.01) == 1
    assert round_resolution(224 * 1.15) == 256  # 257.6 -> nearest multiple of 8
    assert round_resolution(260.0) == 264  # tie (32.5 * 8) goes up
    assert round_resolution(3.0) == 8  # at least the divisor
    assert round_resolution(300, 16) == 304


# ---------------------------------------------------------------- phi


def _as_written(spec):
    """The spec with its scaling section dropped: nothing for resolve to multiply or round,
    so its graph is the network exactly as written (the reference for phi = 0 and b0)."""
    return resolve(spec.model_copy(update={"scaling": None}))


def test_phi_zero_is_exactly_the_base_spec(effnet, resnet_scaled):
    for spec in (effnet, resnet_scaled):
        base = _as_written(spec)
        zero = apply_phi(spec, 0)
        ignore = {"scaling": True, "extends": True}
        assert zero.model_dump(exclude=ignore) == base.model_dump(exclude=ignore)
        gb, gz = lower(base), lower(zero)
        assert [(n.name, n.op, n.shape, n.params, n.macs) for n in gz.nodes] == \
               [(n.name, n.op, n.shape, n.params, n.macs) for n in gb.nodes]
        assert zero.scaling.applied["phi"] == 0 and zero.scaling.applied["method"] == "compound"


@pytest.mark.parametrize("phi", [-2, -0.5, 0.5, 1, 2.5, 3, 7])
def test_phi_rounds_filters_repeats_and_resolution(effnet, phi):
    c = effnet.scaling.coefficients
    d, w, r = c.alpha ** phi, c.beta ** phi, c.gamma ** phi
    out = apply_phi(effnet, phi)
    a = out.scaling.applied
    assert a["method"] == "compound" and a["formula"] == FORMULA and a["phi"] == phi
    assert (a["d"], a["w"], a["r"]) == pytest.approx((d, w, r), rel=1e-12)
    assert (a["alpha"], a["beta"], a["gamma"]) == (c.alpha, c.beta, c.gamma)
    # filters: nearest multiple of the divisor, never below 90% of the unrounded value
    for (where, f, base_v), (_, _, v) in zip(_numbers(effnet), _numbers(out)):
        assert v % effnet.scaling.divisor == 0, (where, f, v)
        assert v >= 0.9 * base_v * w, (where, f, base_v, v)
        assert v == make_divisible(base_v * w, effnet.scaling.divisor)
    # repeats: rounded up; a `fixed` stage is left alone
    for (base_n, fixed), (n, _) in zip(_repeats(effnet), _repeats(out)):
        assert n == (base_n if fixed else math.ceil(base_n * d))
    # resolution: nearest multiple of resolution_divisor
    side = round_resolution(224 * r, effnet.scaling.resolution_divisor)
    assert tuple(out.input.shape) == (side, side, 3)
    assert out.name == f"efficientnet-phi{phi:g}" and out.extends is None
    assert out.head.dropout == effnet.head.dropout  # the formula says nothing about dropout


def test_negative_phi_is_smaller_and_phi_sweep_grows(effnet):
    rep = sweep(effnet, parse_phis("-2:7"))
    macs = [row["macs"] for row in rep["rows"]]
    params = [row["params"] for row in rep["rows"]]
    assert macs == sorted(macs) and len(set(macs)) == len(macs)
    assert params == sorted(params)
    by = {row["phi"]: row for row in rep["rows"]}
    assert by[-1.0]["macs"] < rep["base_macs"] and by[-1.0]["params"] < rep["base_params"]
    assert by[0.0]["macs"] == rep["base_macs"] and by[0.0]["macs_ratio_actual"] == 1.0
    ff = flops_factor(1.2, 1.1, 1.15)
    for phi, row in by.items():
        assert row["macs_ratio_formula"] == pytest.approx(ff ** phi)
        assert row["macs_ratio_actual"] == row["macs"] / rep["base_macs"]
        # rounding (repeats up, filters to 8) moves the count off the formula, but not wildly
        assert 0.5 < row["macs_ratio_actual"] / row["macs_ratio_formula"] < 2.0
    assert rep["coefficients"]["flops_factor"] == pytest.approx(ff)


def test_any_spec_with_a_scaling_section_scales(resnet_scaled):
    out = apply_phi(resnet_scaled, 1)
    assert [b.filters for st in out.stages for b in st.blocks] == [make_divisible(f * 1.1) for f in (64, 128, 256, 512)]
    assert [b.repeats for st in out.stages for b in st.blocks] == [math.ceil(n * 1.2) for n in (3, 4, 6, 3)]
    assert tuple(out.input.shape) == (256, 256, 3)
    g = lower(out)
    assert g.params > lower(resolve(resnet_scaled)).params
    small = apply_preset(resnet_scaled, "small")
    assert tuple(small.input.shape) == (160, 160, 3) and small.head.dropout == 0.1
    assert [b.repeats for st in small.stages for b in st.blocks] == [2, 2, 3, 2]


def test_mobilenet_without_coefficients_uses_the_papers_and_says_so():
    spec = load("mobilenet_v2")[0]
    assert spec.scaling is not None and spec.scaling.coefficients is None
    out = apply_phi(spec, 1)
    a = out.scaling.applied
    assert (a["alpha"], a["beta"], a["gamma"]) == (1.2, 1.1, 1.15)
    assert "paper" in a["coefficients_source"]
    assert lower(out).macs > lower(resolve(spec)).macs


# ---------------------------------------------------------------- presets


@pytest.mark.parametrize("name", PRESETS)
def test_preset_static_counts_equal_keras(effnet, name):
    p = effnet.scaling.presets[name]
    out = apply_preset(effnet, name)
    a = out.scaling.applied
    assert a["method"] == "preset" and a["preset"] == name and a["source"] == TABLE
    assert tuple(out.input.shape) == (p.resolution, p.resolution, 3)
    assert out.head.dropout == p.dropout
    assert (a["w"], a["d"]) == (p.width, p.depth) and a["r"] == p.resolution / 224
    g = lower(out)
    assert g.params == KERAS_PARAMS[name]


def test_preset_macs_agree_with_the_papers_table_2(effnet):
    """MACs of B0..B7 against Tan & Le 2019, Table 2 (FLOPs): 0.39B, 0.70B, 1.0B, 1.8B, 4.2B,
    9.9B, 19B, 37B; each within 5%."""
    rep = sweep(effnet, presets=PRESETS)
    for row in rep["rows"]:
        paper = PAPER_FLOPS[row["preset"]]
        assert abs(row["macs"] / paper - 1) <= PAPER_TOLERANCE, (row["preset"], row["macs"], paper)
        w, d, r = row["w"], row["d"], row["r"]
        assert row["macs_ratio_formula"] == pytest.approx(d * w * w * r * r)
    assert [r["preset"] for r in rep["rows"]] == PRESETS == preset_names(effnet)


def test_preset_b0_is_the_base(effnet):
    b0 = apply_preset(effnet, "b0")
    ignore = {"scaling": True, "extends": True}
    assert b0.model_dump(exclude=ignore) == _as_written(effnet).model_dump(exclude=ignore)
    assert lower(b0).params == KERAS_PARAMS["b0"]


WIDTH_ONE = """\
format: 1
name: w1
input: {shape: [8, 8, 3]}
stem:
  - {type: conv, name: c1, filters: 3, kernel: 3, bias: true}
  - {type: conv, name: c2, filters: 20, kernel: 3, bias: true}
head:
  classes: 10
  layers: [{type: global_pool, name: gap}, {type: classifier, name: predictions}]
"""
# by hand: 3x3x3x3 + 3, 3x3x3x20 + 20, 20x10 + 10
WIDTH_ONE_PARAMS = (27 * 3 + 3) + (27 * 20 + 20) + (20 * 10 + 10)


@pytest.mark.parametrize("scaling", ["", "scaling: {width: 1.0}\n", "scaling: {width: 1.0, depth: 1.0, divisor: 8}\n"])
def test_width_one_leaves_the_network_as_written(scaling):
    """Issue 17.7: width 1.0 rounded every count to the divisor (3 -> 8, 20 -> 24, 10 -> 16)."""
    spec = resolve(validate(loads(WIDTH_ONE + scaling)))
    g = lower(spec)
    assert [n.attrs["filters"] for n in g.nodes if n.op == "conv2d"] == [3, 20]
    assert g.params == WIDTH_ONE_PARAMS == 854


def test_width_scaling_still_rounds_every_count():
    g = lower(resolve(validate(loads(WIDTH_ONE + "scaling: {width: 0.5}\n"))))
    assert [n.attrs["filters"] for n in g.nodes if n.op == "conv2d"] == [8, 16]  # 1.5 -> 8, 10 -> 16


def test_scaling_errors(effnet, resnet_scaled):
    with pytest.raises(SpecError, match=r"unknown preset 'b9'; valid presets: b0, b1, b2, b3, b4, b5, b6, b7"):
        apply_preset(effnet, "b9")
    with pytest.raises(SpecError, match="no scaling section"):
        apply_phi(load("resnet50")[0], 1)
    with pytest.raises(SpecError, match="no scaling section"):
        apply_preset(load("resnet50")[0], "b0")
    with pytest.raises(SpecError, match="finite"):
        apply_phi(effnet, float("nan"))
    b3 = apply_preset(effnet, "b3")
    with pytest.raises(SpecError, match="already scaled"):
        apply_phi(b3, 1)
    # the base, resolved or passed through phi=0, is not "already scaled"
    assert lower(apply_phi(apply_phi(effnet, 0), 1)).params == lower(apply_phi(effnet, 1)).params
    # a scale that makes the network unusable is an error naming the scale, not a crash
    from archspec.language.schema import Scaling

    alexnet = load("alexnet")[0]
    alexnet = alexnet.model_copy(update={"scaling": Scaling()})  # paper's coefficients, valid 11x11 convs
    with pytest.raises(SpecError, match=r"scaled to phi=-20 \(input 16x16\), the network does not work: .*pool1"):
        sweep(alexnet, [-20])


def test_coefficients_validation():
    raw = load("efficientnet")[1]
    bad = loads(json.dumps({**raw.data, "scaling": {**raw.data["scaling"],
                                                    "coefficients": {"alpha": 0.9, "beta": 1.1, "gamma": 1.15}}}))
    with pytest.raises(SpecError, match=r"scaling.coefficients.alpha: must be >= 1"):
        validate(bad)
    assert coefficient_warnings(1.2, 1.1, 1.15) == []
    msgs = coefficient_warnings(1.5, 1.3, 1.3)
    assert len(msgs) == 1 and "alpha * beta^2 * gamma^2 ~ 2" in msgs[0] and "= 4.28 " in msgs[0]
    assert len(coefficient_warnings(1.0, 1.0, 1.0)) == 1 and coefficient_warnings(1.25, 1.1, 1.15) == []
    far = validate(loads(json.dumps({**raw.data, "scaling": {
        **raw.data["scaling"], "coefficients": {"alpha": 1.5, "beta": 1.3, "gamma": 1.3}}})))
    with pytest.warns(ScalingWarning, match="constraint"):
        out = apply_phi(far, 1)  # a warning, not a failure
    assert out.scaling.applied["d"] == 1.5


def test_parse_phis():
    assert parse_phis("3") == [3.0]
    assert parse_phis("-1.5") == [-1.5]
    assert parse_phis("0:7") == [float(i) for i in range(8)]
    assert parse_phis("-1:1:0.5") == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert parse_phis("0,1.5,3") == [0.0, 1.5, 3.0]
    for bad in ("", "abc", "1:0", "0:1:0", "0:1:2:3", "nan", "0:1e9:0.001"):
        with pytest.raises(ValueError):
            parse_phis(bad)


# ---------------------------------------------------------------- output spec


@pytest.mark.parametrize("how", ["phi=2.5", "phi=-1", "b4"])
def test_output_yaml_is_self_contained_and_round_trips(effnet, how, tmp_path):
    out = apply_phi(effnet, float(how[4:])) if how.startswith("phi") else apply_preset(effnet, how)
    text = dump_spec(out, "a comment\non two lines")
    assert text.startswith("# a comment\n# on two lines\n")
    path = tmp_path / "scaled.yaml"
    path.write_text(text)
    back, _ = load(path)
    assert back == out
    assert resolve(back).model_dump(exclude={"scaling": {"applied"}}) == out.model_dump(exclude={"scaling": {"applied"}})
    assert "extends" not in text
    g1, g2 = lower(resolve(back)), lower(out)
    assert (g1.params, g1.macs, [n.name for n in g1.nodes]) == (g2.params, g2.macs, [n.name for n in g2.nodes])


# ---------------------------------------------------------------- the coefficient search


def test_search_grid_keeps_the_constraint_and_finds_the_papers_point(effnet):
    cands = search_grid(effnet, step=0.05, tolerance=0.05)
    assert len(cands) > 20
    for c in cands:
        assert min(c["alpha"], c["beta"], c["gamma"]) >= 1
        assert abs(c["alpha"] * c["beta"] ** 2 * c["gamma"] ** 2 - 2) <= 0.1 + 1e-9
        assert c["score"] is None and c["params"] > 0 and c["macs"] > 0
    paper = [c for c in cands if (c["alpha"], c["beta"], c["gamma"]) == (1.2, 1.1, 1.15)]
    assert len(paper) == 1
    row = scale_row(apply_phi(effnet, 1), (lower(resolve(effnet)).params, lower(resolve(effnet)).macs))
    assert (paper[0]["params"], paper[0]["macs"]) == (row["params"], row["macs"])
    dist = [abs(c["flops_factor"] - 2) for c in cands]
    assert dist == sorted(dist)


def test_search_grid_rank_hook(effnet):
    seen = []

    def rank(spec, cand):  # stands in for "train briefly, return top-1 accuracy"
        seen.append(spec.scaling.applied["alpha"])
        assert spec.scaling.applied["d"] == cand["alpha"] and tuple(spec.input.shape[:2]) == tuple(cand["resolution"])
        return -cand["macs"]  # here: the cheapest "wins"

    cands = search_grid(effnet, step=0.1, tolerance=0.05, rank=rank)
    assert len(seen) == len(cands) > 0
    assert [c["score"] for c in cands] == sorted((c["score"] for c in cands), reverse=True)
    assert cands[0]["macs"] == min(c["macs"] for c in cands)
    with pytest.raises(SpecError, match="step"):
        search_grid(effnet, step=0)


# ---------------------------------------------------------------- CLI


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "archspec", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_scale_never_imports_tensorflow_and_is_fast():
    code = textwrap.dedent("""\
        import sys, time, io, contextlib, json
        t0 = time.perf_counter()
        from archspec.cli import main
        t1 = time.perf_counter()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            rc1 = main(["scale", "efficientnet", "--phi", "3", "--json"])
            rc2 = main(["scale", "efficientnet", "--preset", "all"])
        t2 = time.perf_counter()
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras", "jax", "torch"))
        print(json.dumps({"rc": [rc1, rc2], "heavy": heavy, "import_s": t1 - t0, "scale_s": t2 - t1}))
        """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["rc"] == [0, 0]
    assert r["heavy"] == []
    print(f"scale: import {r['import_s']:.2f} s, --phi 3 and --preset all {r['scale_s']:.2f} s")
    assert r["scale_s"] < 1.0


def test_scale_cli_json_and_table():
    p = _cli("scale", "efficientnet", "--phi", "1.5", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    row = r["rows"][0]
    for k in ("d", "w", "r", "macs_ratio_formula", "macs_ratio_actual"):
        assert isinstance(row[k], float)
    assert row["d"] == pytest.approx(1.2 ** 1.5) and row["w"] == pytest.approx(1.1 ** 1.5)
    assert row["resolution"] == [round_resolution(224 * 1.15 ** 1.5)] * 2
    assert r["coefficients"]["alpha"] == 1.2
    p = _cli("scale", "efficientnet", "--preset", "all")
    assert p.returncode == 0, p.stderr
    for name in PRESETS:
        assert f"\n{name} " in p.stdout
    assert "multiply-accumulates" in p.stdout and "x formula" in p.stdout and "x counted" in p.stdout
    p = _cli("scale", "efficientnet", "--phi", "0:3")
    assert p.returncode == 0 and all(f"phi={i} " in p.stdout for i in range(4))


def test_scale_cli_writes_spec_atomically_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "b2.yaml"
    p = _cli("scale", "efficientnet", "--preset", "b2", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert load(out)[0].scaling.applied["preset"] == "b2"
    before = out.read_text()
    p = _cli("scale", "efficientnet", "--preset", "b3", "-o", str(out))
    assert p.returncode == 2 and "--force" in p.stderr and out.read_text() == before
    p = _cli("scale", "efficientnet", "--preset", "b3", "-o", str(out), "--force")
    assert p.returncode == 0 and load(out)[0].scaling.applied["preset"] == "b3"
    assert [f.name for f in tmp_path.iterdir()] == ["b2.yaml"]  # no temporary files left
    p = _cli("validate", str(out))
    assert p.returncode == 0 and f"{KERAS_PARAMS['b3']:,} params" in p.stdout
    p = _cli("scale", "efficientnet", "--phi", "0:2", "-o", str(tmp_path / "x.yaml"))
    assert p.returncode == 2 and "one --phi or --preset" in p.stderr


@pytest.mark.parametrize("args, message", [
    (["efficientnet", "--preset", "b9"], "unknown preset 'b9'"),
    (["resnet50", "--phi", "1"], "no scaling section"),
    (["efficientnet", "--phi", "abc"], "expected a number"),
    (["efficientnet", "--phi", "1", "--set", "scaling.coefficients.gamma=0.5"], "must be >= 1"),
    (["efficientnet"], "one of the arguments"),
])
def test_scale_cli_bad_input_exits_2(args, message):
    p = _cli("scale", *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr and "Traceback" not in p.stderr


def test_scale_cli_warns_far_from_the_constraint():
    p = _cli("scale", "efficientnet", "--phi", "1", "--set", "scaling.coefficients.alpha=1.6")
    assert p.returncode == 0
    assert "warning" in p.stderr and "alpha * beta^2 * gamma^2 ~ 2" in p.stderr


def test_scale_cli_search():
    p = _cli("scale", "efficientnet", "--search", "--step", "0.1", "--json")
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["candidates"] and "rank=" in r["ranking"]
    assert all(abs(c["flops_factor"] - 2) <= 0.1 + 1e-9 for c in r["candidates"])


# ---------------------------------------------------------------- parity with keras.applications


def _features_and_output(model, layer="top_activation"):
    import keras

    return keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=[pytest.mark.slow] if n in ("b6", "b7") else []) for n in PRESETS])
def test_preset_parity_with_keras_applications(effnet, name):
    import keras
    import numpy as np
    from parity import assert_same_structure, copy_weights_by_name, infer, randomize

    import archspec

    scaled = apply_preset(effnet, name)
    ours = archspec.build(scaled)
    ref = getattr(keras.applications, f"EfficientNet{name.upper()}")(weights=None)
    assert_same_structure(ours, ref)
    assert ours.count_params() == ref.count_params() == KERAS_PARAMS[name]
    randomize(ref, seed=1)
    assert copy_weights_by_name(ref, ours) == len([l for l in ref.layers if l.weights])
    x = np.random.default_rng(0).uniform(0, 255, (1,) + tuple(scaled.input.shape)).astype("float32")
    fa, pa = infer(_features_and_output(ours), x)
    fb, pb = infer(_features_and_output(ref), x)
    assert float(np.std(fb)) > 1e-3  # the features are not degenerate, so the comparison means something
    np.testing.assert_allclose(fa, fb, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(pa, pb, atol=1e-4, rtol=0)
    del ours, ref
    keras.backend.clear_session()


def test_build_shorthands_phi_and_preset(tmp_path, capsys):
    from archspec.cli import main

    out = tmp_path / "small.keras"
    assert main(["build", "efficientnet", "--phi", "-3", "-o", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    small = apply_phi(load("efficientnet")[0], -3)
    assert r["name"] == "efficientnet-phi-3" and r["keras_params"] == r["params"] == lower(small).params
    assert r["input_shape"] == list(small.input.shape) and out.exists()
    assert main(["build", "efficientnet", "--preset", "b9", "-o", str(tmp_path / "x.keras")]) == 2
    assert "unknown preset 'b9'" in capsys.readouterr().err
