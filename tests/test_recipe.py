"""Training recipes (archspec/training/recipe.py): validated like specs, located errors,
extends and overrides, the JSON Schema, and the static trainable/frozen counts per phase."""

from __future__ import annotations

import json
import textwrap

import jsonschema
import pytest

from archspec.api import load, lower_spec
from archspec.cli import main
from archspec.core.errors import SpecError
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


# ---------------------------------------------------------------- hostile recipes (issue 18, item 12)


@pytest.mark.parametrize("override, message", [
    ("seed=4294967296", "seed: must be <= 4294967295 (got 4294967296)"),
    ("data.batch_size=1.0e+20", "data.batch_size: must be <= 1048576 (got 1e+20)"),
    ("data.image_size=[2147483648,32]", "data.image_size[0]: must be <= 1048576 (got 2147483648)"),
    ("callbacks.early_stopping={monitor: nope}", "callbacks.early_stopping.monitor: unknown metric 'nope': the "
     "recipe's metrics (top1, top5) and loss give loss, top1, top5, val_loss, val_top1, val_top5"),
    ("callbacks.checkpoint.monitor=val_tpo1", "callbacks.checkpoint.monitor: unknown metric 'val_tpo1' (did you mean "
     "'val_top1'?): the recipe's metrics (top1, top5) and loss give loss, top1, top5, val_loss, val_top1, val_top5"),
    ("data.batchsize=3", "data.batchsize: unknown key 'batchsize' (did you mean 'batch_size'?); data takes: "
     "image_size, batch_size, validation_split, shuffle_buffer, cache"),
    ("optimiser={name: adam}", "optimiser: unknown key 'optimiser' (did you mean 'optimizer'?); a recipe's top "
     "level takes: format, name, description, extends, data, augmentation, optimizer, schedule, loss, metrics, "
     "epochs, precision, jit_compile, seed, callbacks, phases"),
])
def test_hostile_recipe_values_are_one_located_line_worded_for_recipes(capsys, override, message):
    """Huge numbers say the bound they break (1.0e+20 was 'unable to parse input string as an
    integer'); a monitor that is no metric of the recipe is refused before anything runs (it
    was a Keras ValueError after the run directory was written); unknown keys list what the
    recipe takes there (a recipe was told about a spec's 'head' and 'input')."""
    assert main(["inspect", "cifar100_cnn", "--recipe", "cifar100", "--recipe-set", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"--recipe-set {override}: {message}"


def test_recipe_file_errors_are_worded_for_recipes(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing\n")
    with pytest.raises(SpecError) as e:
        load_recipe(str(empty))
    assert e.value.one_line() == f"{empty}:1:1: empty recipe; expected a mapping with at least 'format: 1' and 'name'"
    typo = tmp_path / "typo.yaml"
    typo.write_text("format: 1\nname: t\nhed: 1\nphases:\n  - {name: a, epochs: 1, freeze: {untill: x}}\n")
    with pytest.raises(SpecError) as e:
        load_recipe(str(typo))
    assert e.value.lines() == [
        f"{typo}:3:1: hed: unknown key 'hed'; a recipe's top level takes: format, name, description, extends, data, "
        f"augmentation, optimizer, schedule, loss, metrics, epochs, precision, jit_compile, seed, callbacks, phases",
        f"{typo}:5:34: phases[0].freeze.untill: unknown key 'untill' (did you mean 'until'?); phases[0].freeze "
        f"takes: until, from, stages"]


def test_a_monitor_of_the_recipes_own_metrics_is_accepted():
    recipe, _ = load_recipe("cifar100", ["metrics=[top1]", "callbacks.early_stopping={monitor: val_top1}",
                                         "callbacks.checkpoint.monitor=loss"])
    assert recipe.callbacks.early_stopping.monitor == "val_top1"
    with pytest.raises(SpecError, match=r"unknown metric 'top5' \(did you mean 'top1'\?\)"):
        load_recipe("cifar100", ["metrics=[top1]", "callbacks.checkpoint.monitor=top5"])


def test_an_unknown_monitor_stops_train_before_the_run_directory(tmp_path, capsys):
    import numpy as np

    np.savez(tmp_path / "d.npz", x_train=np.zeros((4, 32, 32, 3), "uint8"), y_train=np.arange(4) % 2)
    assert main(["train", "cifar100_cnn", "--recipe", "cifar100", "--set", "head.classes=2", "--data",
                 str(tmp_path / "d.npz"), "--out", str(tmp_path / "run"), "--recipe-set",
                 "callbacks.early_stopping={monitor: nope}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "callbacks.early_stopping.monitor: unknown metric 'nope'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
