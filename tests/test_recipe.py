"""Training recipes (archspec/training/recipe.py): validated like specs, located errors,
extends and overrides, the JSON Schema, and the static trainable/frozen counts per phase."""

from __future__ import annotations

import json
import textwrap

import jsonschema
import pytest

from archspec.api import load, lower_spec
from archspec.cli import main
from archspec.errors import SpecError
from archspec.training.recipe import Recipe, bundled_recipes, load_recipe, phase_counts

VGG16_CONV_BASE = 14_714_688  # keras.applications.VGG16(include_top=False) parameters
VGG16_BLOCK5 = 3 * (3 * 3 * 512 * 512 + 512)


def test_bundled_recipes_validate_and_match_the_schema():
    assert {"cifar100", "finetune"} <= set(bundled_recipes())
    schema = Recipe.model_json_schema(by_alias=True)
    for name in bundled_recipes():
        recipe, raw = load_recipe(name)
        jsonschema.validate(raw.data, schema)
        assert recipe.name == name
    finetune, _ = load_recipe("finetune")
    assert [(p.name, p.epochs, p.learning_rate) for p in finetune.phases] == [
        ("classifier", 10, 1e-4), ("top_block", 10, 1e-5)]


def test_finetune_phases_on_vgg16_count_what_each_phase_trains(capsys):
    spec = load("vgg16", ["head.classes=2"])
    graph = lower_spec(spec)
    recipe, raw = load_recipe("finetune")
    one, two = phase_counts(graph, spec, recipe, raw)
    head = (25088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 2 + 2)
    assert (one["trainable"], one["frozen"]) == (head, VGG16_CONV_BASE)
    assert (two["trainable"], two["frozen"]) == (head + VGG16_BLOCK5, VGG16_CONV_BASE - VGG16_BLOCK5)
    assert main(["inspect", "vgg16", "--set", "head.classes=2", "--recipe", "finetune", "--json"]) == 0
    phases = json.loads(capsys.readouterr().out)["phases"]
    assert [p["frozen"] for p in phases] == [VGG16_CONV_BASE, VGG16_CONV_BASE - VGG16_BLOCK5]
    assert main(["inspect", "vgg16", "--set", "head.classes=2", "--recipe", "finetune"]) == 0
    out = capsys.readouterr().out
    assert "top_block" in out and f"{VGG16_CONV_BASE - VGG16_BLOCK5:,}" in out


def test_stage_freezing_keeps_batch_norm_statistics_non_trainable(tmp_path):
    r = tmp_path / "r.yaml"
    r.write_text("format: 1\nname: r\nphases:\n  - {name: a, epochs: 1, freeze: {stages: [stem, conv2]}}\n"
                 "  - {name: b, epochs: 2, freeze: {from: conv5_block1_0_conv}}\n  - {name: c, epochs: 1}\n")
    spec = load("resnet50")
    graph = lower_spec(spec)
    recipe, raw = load_recipe(str(r))
    a, b, c = phase_counts(graph, spec, recipe, raw)
    stem_conv2 = sum(n.trainable for n in graph.nodes if n.name.startswith(("conv1", "conv2_")))
    assert a["frozen"] == stem_conv2 and a["trainable"] == graph.trainable_params - stem_conv2
    conv5_on = sum(n.trainable for n in graph.nodes if n.name.startswith(("conv5", "avg_pool", "predictions")))
    assert b["frozen"] == conv5_on
    assert c["frozen"] == 0 and c["trainable"] == 25_583_592
    assert {p["non_trainable"] for p in (a, b, c)} == {25_636_712 - 25_583_592}


def test_recipe_errors_are_located(tmp_path, capsys):
    r = tmp_path / "bad.yaml"
    r.write_text(textwrap.dedent("""\
        format: 1
        name: bad
        optimizer:
          name: sgd
          learning_rate: -1
        phases:
          - {name: a, epochs: 1, freeze: {untill: x}}
        """))
    with pytest.raises(SpecError) as e:
        load_recipe(str(r))
    lines = e.value.lines()
    assert lines[0].startswith(f"{r}:5:") and "optimizer.learning_rate" in lines[0]
    assert any(":7:" in line and "untill" in line for line in lines)
    # a layer the network does not have: located at the recipe's line, exit 2
    assert main(["inspect", "resnet50", "--recipe", "finetune"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recipes/finetune.yaml:") and "no layer named 'block5_conv1'" in err
    assert len(err.splitlines()) == 1
    assert main(["inspect", "resnet50", "--recipe", "finetun"]) == 2
    assert "did you mean 'finetune'" in capsys.readouterr().err
    assert main(["inspect", "resnet50", "--recipe", "finetune", "--recipe-set", "phases[1].freeze.until=conv5_block1_1_conv",
                 "--recipe-set", "data.batch_size=0"]) == 2
    err = capsys.readouterr().err
    assert "--recipe-set data.batch_size=0: data.batch_size" in err


def test_recipe_extends_a_bundled_one_and_takes_overrides(tmp_path):
    r = tmp_path / "mine.yaml"
    r.write_text("format: 1\nname: mine\nextends: cifar100\noptimizer: {learning_rate: 0.05}\n")
    recipe, _ = load_recipe(str(r), ["epochs=3"])
    assert recipe.optimizer.learning_rate == 0.05 and recipe.optimizer.nesterov is True  # merged
    assert recipe.epochs == 3 and recipe.data.batch_size == 128


def test_schema_recipe_and_report_recipe(tmp_path, capsys):
    out = tmp_path / "recipe.schema.json"
    assert main(["schema", "--recipe", "-o", str(out)]) == 0
    schema = json.loads(out.read_text())
    assert "phases" in schema["properties"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"format": 1, "name": "x", "optimiser": {}}, schema)
    html = tmp_path / "r.html"
    assert main(["report", "vgg16", "--set", "head.classes=2", "--recipe", "finetune", "-o", str(html)]) == 0
    text = html.read_text()
    assert "Training phases" in text and f"{VGG16_CONV_BASE - VGG16_BLOCK5:,}" in text
