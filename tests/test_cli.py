"""The commands as a user runs them: JSON shapes, files written, lazy imports, precision, seeds."""

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from archspec.cli import main


def run_json(capsys, *argv):
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_inspect_json(capsys):
    r = run_json(capsys, "inspect", "resnet50", "--json")
    for key in ("name", "input_shape", "output_shape", "params", "trainable_params", "non_trainable_params",
                "macs", "layers", "blocks"):
        assert key in r
    assert r["params"] == r["trainable_params"] + r["non_trainable_params"]
    bottlenecks = [b for b in r["blocks"] if b["type"] == "bottleneck"]
    assert len(bottlenecks) == 3 + 4 + 6 + 3  # one entry per block after repeats
    assert bottlenecks[0]["name"] == "conv2_block1" and bottlenecks[-1]["output_shape"] == [7, 7, 2048]
    assert sum(b["params"] for b in r["blocks"]) == r["params"]
    assert sum(b["macs"] for b in r["blocks"]) == r["macs"]
    assert set(r["blocks"][1]) >= {"name", "type", "output_shape", "params", "macs"}


def test_inspect_set_changes_shapes(capsys):
    r = run_json(capsys, "inspect", "resnet50", "--json", "--set", "input.shape=[160,160,3]",
                 "--set", "head.classes=10")
    assert r["input_shape"] == [160, 160, 3] and r["output_shape"] == [10]
    assert [b for b in r["blocks"] if b["name"] == "conv5_block3"][0]["output_shape"] == [5, 5, 2048]


def test_inspect_table(capsys):
    assert main(["inspect", "resnet18"]) == 0
    out = capsys.readouterr().out
    assert "conv2_block1" in out and "what papers call FLOPs" in out and "11,699,112" in out


def test_list(capsys):
    rows = run_json(capsys, "list", "--json")
    by = {r["name"]: r for r in rows}
    assert by["resnet50"]["params"] == 25_636_712 and by["resnet50"]["macs"] > 3e9
    assert all(r["description"] for r in rows)


def test_schema_lists_block_types(capsys, tmp_path):
    schema = run_json(capsys, "schema")
    text = json.dumps(schema)
    for t in ("bottleneck", "basic", "conv", "classifier"):
        assert f'"{t}"' in text
    out = tmp_path / "s.json"
    assert main(["schema", "-o", str(out)]) == 0
    assert json.loads(out.read_text()) == schema
    assert main(["schema", "-o", str(out)]) == 2  # exists, no --force
    assert "--force" in capsys.readouterr().err


LAZY = textwrap.dedent("""
    import sys
    from archspec.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit:
        pass
    heavy = sorted(m for m in ("tensorflow", "keras", "onnx", "tf2onnx", "jax", "torch") if m in sys.modules)
    print("HEAVY=" + ",".join(heavy))
""")


@pytest.mark.parametrize("argv", [["--help"], ["validate", "resnet50"], ["inspect", "resnet50", "--json"],
                                  ["list"], ["schema"], ["build", "--help"],
                                  ["diff", "resnet50", "resnet101", "--json"]])
def test_light_commands_never_import_tensorflow(argv):
    r = subprocess.run([sys.executable, "-c", LAZY, *argv], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "HEAVY=", r.stdout[-500:] + r.stderr[-500:]


def test_build_writes_a_reloadable_keras_file(tmp_path, capsys):
    out = tmp_path / "tiny.keras"
    r = run_json(capsys, "build", "resnet18", "--set", "input.shape=[64,64,3]", "--set", "head.classes=7",
                 "-o", str(out), "--json", "--seed", "3")
    assert out.is_file() and r["output"] == str(out) and r["build_seconds"] > 0
    assert r["keras_params"] == r["params"]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.keras"]  # no temporary file left behind
    # refuses to overwrite, and leaves the file as it was
    before = out.read_bytes()
    assert main(["build", "resnet18", "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    # it reloads (in a new process, in either import order: the next test)
    import keras

    m = keras.models.load_model(out)
    assert (m.count_params(), m.output.shape[-1]) == (r["params"], 7)


def test_custom_layers_reload_whatever_the_import_order(tmp_path):
    import archspec

    # an LRN (archspec's custom layer) after the stem, through a spec of our own
    spec = tmp_path / "lrn.yaml"
    spec.write_text(textwrap.dedent("""
        name: lrnnet
        input: {shape: [16, 16, 3]}
        stem:
          - {type: conv, name: c1, filters: 8, kernel: 3}
          - {type: lrn, name: norm1, depth: 5, k: 2, alpha: 1.0e-4, beta: 0.75}
        head:
          classes: 3
          layers: [{type: global_pool, name: gap}, {type: classifier, name: predictions}]
    """))
    out = tmp_path / "lrn.keras"
    assert archspec.cli.main(["build", str(spec), "-o", str(out), "--seed", "1"]) == 0
    for order in ("import keras, archspec", "import archspec, keras"):
        code = f"{order}\nm = keras.models.load_model({str(out)!r})\nprint(type(m.get_layer('norm1')).__name__)"
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert p.returncode == 0 and p.stdout.split()[-1] == "LocalResponseNormalization", p.stderr[-1500:]


def test_lrn_matches_tensorflow():
    import tensorflow as tf

    from archspec.backends.keras.build import LocalResponseNormalization

    x = np.random.default_rng(0).normal(size=(2, 5, 5, 12)).astype("float32") * 10
    ours = LocalResponseNormalization(depth=5, k=2.0, alpha=1e-4, beta=0.75)(x)
    ref = tf.nn.local_response_normalization(x, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75)
    np.testing.assert_allclose(np.asarray(ours), ref.numpy(), rtol=1e-5, atol=1e-6)


def test_seed_makes_weights_reproducible():
    import archspec

    a = archspec.build("resnet18", ["input.shape=[32,32,3]"], seed=7).get_weights()
    b = archspec.build("resnet18", ["input.shape=[32,32,3]"], seed=7).get_weights()
    c = archspec.build("resnet18", ["input.shape=[32,32,3]"], seed=8).get_weights()
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_mixed_precision_keeps_softmax_float32():
    import keras

    import archspec

    m = archspec.build("resnet18", ["input.shape=[32,32,3]", "head.classes=5"], precision="mixed_bfloat16")
    assert m.get_layer("predictions").compute_dtype == "float32"
    assert m.get_layer("conv2_block1_1_conv").compute_dtype == "bfloat16"
    y = m(np.zeros((1, 32, 32, 3), "float32"))
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    np.testing.assert_allclose(np.asarray(y).sum(), 1.0, rtol=1e-5)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left alone


def test_build_trains_one_step():
    import archspec

    m = archspec.build("two_branch", ["head.classes=4"], seed=0)
    m.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).uniform(size=(4, *m.input.shape[1:])).astype("float32")
    y = np.array([0, 1, 2, 3])
    before = [np.array(w) for w in m.trainable_weights]
    # the loss fit reports for its one batch is the cross-entropy of the model as built,
    # computed here by numpy from the model's own probabilities
    p = np.asarray(m(x, training=True), dtype="float64")
    expected = float(np.mean(-np.log(p[np.arange(4), y])))
    hist = m.fit(x, y, epochs=1, batch_size=4, verbose=0, shuffle=False)
    assert hist.history["loss"][0] == pytest.approx(expected, rel=1e-4)
    # and the step changed the weights (every kernel has a gradient here)
    moved = [not np.allclose(a, np.array(b)) for a, b in zip(before, m.trainable_weights)]
    assert sum(moved) >= len(moved) // 2, moved
    hist = m.fit(x, y, epochs=30, batch_size=4, verbose=0, shuffle=False)
    assert hist.history["loss"][-1] < expected  # it learns the four examples


def test_plain_install_finds_bundled_specs_and_templates(tmp_path):
    """A non-editable install carries the specs and templates as package data."""
    from pathlib import Path

    import shutil

    root = Path(__file__).resolve().parents[1]
    # from a clean copy: a build/ directory left by an earlier install would fill the gaps
    clean = tmp_path / "src"
    shutil.copytree(root, clean, ignore=shutil.ignore_patterns("build", "*.egg-info", ".git", "__pycache__",
                                                               ".pytest_cache", ".hypothesis"))
    target = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), str(clean)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (target / "archspec" / "_specs" / "resnet50.yaml").is_file()
    # every module of the source tree is installed (a subpackage missing from pyproject's
    # package list would only show on a fresh machine)
    src = {p.relative_to(root).as_posix() for p in (root / "archspec").rglob("*.py")}
    got = {p.relative_to(target).as_posix() for p in (target / "archspec").rglob("*.py")}
    assert src - got == set()
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-m", "archspec", "inspect", "resnet50", "--markdown"], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "25,636,712" in p.stdout and "`conv5_block3`" in p.stdout
    # the recipes and the report's templates are package data too
    assert (target / "archspec" / "_recipes" / "finetune.yaml").is_file()
    p = subprocess.run([sys.executable, "-m", "archspec", "report", "two_branch", "--recipe", "cifar100", "-o",
                        str(tmp_path / "r.html")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    html = (tmp_path / "r.html").read_text()
    assert "function connector" in html and "Training phases" in html
