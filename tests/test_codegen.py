"""`archspec codegen`: the standalone Keras file of every bundled spec compiles, names nothing
undefined, and builds the model `archspec build` builds (names, configurations, weight
shapes and order, counts, and the same outputs with the same weights), on JAX too."""

import ast
import importlib.util
import os
import py_compile
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from archspec.api import lower_spec
from archspec.cli import main
from archspec.backends.codegen import generate
from archspec.language.loader import bundled_names

from conftest import KERAS_BUILT_BY_FAMILY  # noqa: E402

NAMES = [n for n in bundled_names() if n not in KERAS_BUILT_BY_FAMILY]

# Small inputs and 10 classes keep the every-spec parity cheap; the layers are the same at
# any size (AlexNet's strided 11x11 stem needs 96 pixels).
SMALL = {name: ["input.shape=[32,32,3]", "head.classes=10"] for name in NAMES}
SMALL["alexnet"] = ["input.shape=[96,96,3]", "head.classes=10"]


def load_module(text: str, path: Path):
    """Import a generated file as a fresh module."""
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(f"generated_{path.stem}_{abs(hash(str(path)))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pyflakes_messages(text: str, filename: str) -> list:
    from pyflakes.api import check
    from pyflakes.reporter import Reporter

    class Collect(Reporter):
        def __init__(self):
            self.messages = []

        def unexpectedError(self, filename, msg):
            self.messages.append(f"error: {msg}")

        def syntaxError(self, filename, msg, lineno, offset, text):
            self.messages.append(f"syntax error line {lineno}: {msg}")

        def flake(self, message):
            self.messages.append(message)

    r = Collect()
    check(text, filename, r)
    return r.messages


# ---------------------------------------------------------------- static (no Keras)


@pytest.mark.parametrize("name", NAMES)
def test_generated_file_compiles_and_names_nothing_undefined(name, tmp_path):
    pytest.importorskip("pyflakes", reason="the undefined-name check needs pyflakes (pip install '.[test]')")
    from pyflakes.messages import UndefinedName

    text = generate(name)
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    py_compile.compile(str(path), doraise=True)
    messages = pyflakes_messages(text, str(path))
    assert not [m for m in messages if isinstance(m, UndefinedName)], [str(m) for m in messages]
    assert not messages, [str(m) for m in messages]  # nothing unused either
    # the header names the spec and its totals
    g = lower_spec(name)
    head = "\n".join(text.splitlines()[:4])
    assert f"archspec codegen {name}`" in head
    assert f"{g.params:,} params" in head and f"{g.macs:,} MACs" in head and f"{len(g.nodes)} layers" in head
    assert g.meta["spec_sha256"] in head
    # every top-level block is one call in build_model, every layer one constructor
    top = [b for b in g.blocks if b.depth == 0 and b.type != "input"]
    tree = ast.parse(text)
    defs = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
    calls = [n.value for n in ast.walk(defs.pop("build_model")) if isinstance(n, ast.Assign)
             and isinstance(n.value, ast.Call) and getattr(n.value.func, "id", None) in defs]
    assert len(calls) == len(top)
    named = [(k.value.value, b.name) for c, b in zip(calls, top) for k in c.keywords if k.arg == "name"]
    assert all(a == b for a, b in named) and named
    functions = text[:text.index("\ndef build_model(")]
    assert len(re.findall(r"= (?:layers\.\w+|LocalResponseNormalization|LayerScale)\(", functions)) <= len(g.nodes) - 1
    assert not re.search(r"^\s*(import|from) (tensorflow|archspec|jax|torch)\b", text, flags=re.M)


def test_block_functions_are_parametrized_by_what_varies():
    text = generate("resnet50")
    # two structures of bottleneck: with the projection shortcut (and the stride), and without
    assert "def bottleneck(x, strides, filters, name):" in text
    assert "def bottleneck_2(x, filters, name):" in text
    assert 'layers.Conv2D(4 * filters, 1, strides=strides, name=f"{name}_0_conv")(x)' in text
    assert text.count("x = bottleneck(") == 4 and text.count("x = bottleneck_2(") == 12
    assert 'x = bottleneck(x, strides=2, filters=128, name="conv3_block1")' in text
    assert "def classifier(x, classes, name):" in text
    assert "keras.Input(shape=input_shape" in text and "build_model(include_top=True, classes=1000, " \
        "input_shape=(224, 224, 3), pooling=None)" in text


def test_repeated_blocks_stay_calls_in_big_networks():
    sizes = {name: len(generate(name).encode()) for name in ("resnet152", "densenet201", "efficientnet")}
    assert all(size < 20_000 for size in sizes.values()), sizes
    text = generate("densenet201")
    assert text.count("= dense_layer(") == 98  # one line per block


def test_custom_layers_are_written_only_when_used():
    assert "class LocalResponseNormalization(layers.Layer)" in generate("googlenet")
    assert "class LayerScale(layers.Layer)" in generate("convnext_tiny")
    plain = generate("resnet18")
    assert "class " not in plain and "from keras import layers\n" in plain and " ops" not in plain


def test_overrides_and_graphs():
    text = generate("two_branch", ["head.classes=7", "stem[0].filters=16"])
    assert "classes=7" in text and "Conv2D(16, 3" in text
    assert "`archspec codegen two_branch --set head.classes=7 --set stem[0].filters=16`" in text
    g = lower_spec("two_branch")
    assert generate(g) == generate("two_branch")
    from archspec.core.errors import ArchspecError

    with pytest.raises(ArchspecError, match="head.classes=3"):
        generate(g, ["head.classes=3"])


# ---------------------------------------------------------------- the CLI


def test_cli_writes_prints_and_refuses(tmp_path, capsys):
    out = tmp_path / "model.py"
    assert main(["codegen", "two_branch", "--set", "head.classes=5", "-o", str(out)]) == 0
    assert "classes=5" in out.read_text() and f"wrote {out}" in capsys.readouterr().err
    before = out.read_text()
    assert main(["codegen", "two_branch", "-o", str(out)]) == 2
    assert "exists; pass --force" in capsys.readouterr().err and out.read_text() == before
    assert main(["codegen", "two_branch", "-o", str(out), "--force"]) == 0
    assert "classes=10" in out.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["model.py"]  # no temporary file left
    capsys.readouterr()
    assert main(["codegen", "two_branch"]) == 0
    assert capsys.readouterr().out == generate("two_branch")
    assert main(["codegen", "two_branch", "-o", str(tmp_path / "model.txt")]) == 2
    assert "must end in .py" in capsys.readouterr().err
    assert main(["codegen", "two_branch", "--set", "head.classes=-3"]) == 2
    assert "-3" in capsys.readouterr().err


LAZY = textwrap.dedent("""
    import sys
    from archspec.cli import main
    main(sys.argv[1:])
    heavy = sorted(m for m in ("tensorflow", "keras", "onnx", "tf2onnx", "jax", "torch") if m in sys.modules)
    print("HEAVY=" + ",".join(heavy))
""")


def test_codegen_never_imports_tensorflow(tmp_path):
    out = tmp_path / "m.py"
    r = subprocess.run([sys.executable, "-c", LAZY, "codegen", "resnet50", "-o", str(out)], capture_output=True,
                       text=True, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "HEAVY=", r.stdout[-500:] + r.stderr[-500:]
    assert "def build_model(" in out.read_text()


# ---------------------------------------------------------------- the model it builds


def layer_configs(model):
    return [(type(l).__name__, l.get_config()) for l in model.layers]


def assert_same_model(ours, ref):
    """The same layers in the same order with the same configurations (names included),
    the same weights' shapes in order, the same counts."""
    assert [l.name for l in ours.layers] == [l.name for l in ref.layers]
    assert layer_configs(ours) == layer_configs(ref)
    assert [(w.path, tuple(w.shape)) for w in ours.weights] == [(w.path, tuple(w.shape)) for w in ref.weights]
    assert ours.count_params() == ref.count_params()
    assert [tuple(t.shape) for t in ours.outputs] == [tuple(t.shape) for t in ref.outputs]
    assert ours.name == ref.name


def every_output(model, x):
    """The output of every layer of a functional model, one eager call."""
    import keras

    probe = keras.Model(model.input, [l.output for l in model.layers if not isinstance(l, keras.layers.InputLayer)])
    return [np.asarray(t) for t in probe(x, training=False)]


def check_outputs(ours, ref, seed=0):
    """Random weights in `ref`, copied into `ours` by layer name; then every layer's output
    is the same (the model's outputs within 1e-5). Comparing every layer keeps the check
    meaningful in deep networks whose logits with random weights hardly depend on the input."""
    import keras
    from parity import copy_weights_by_name, randomize

    randomize(ref, seed=seed)
    assert copy_weights_by_name(ref, ours) == len([l for l in ref.layers if l.weights])
    top = 255.0 if any(isinstance(l, keras.layers.Rescaling) for l in ref.layers) else 1.0
    x = np.random.default_rng(seed).uniform(0, top, (2,) + tuple(ref.input.shape[1:])).astype("float32")
    a, b = every_output(ours, x), every_output(ref, x)
    assert len(a) == len(b) == len(ref.layers) - 1
    varying = 0
    for u, v in zip(a, b):
        assert u.shape == v.shape and np.all(np.isfinite(v))
        np.testing.assert_allclose(u, v, atol=1e-5 * max(1.0, float(np.abs(v).max())), rtol=0)
        varying += not np.allclose(v[0], v[1], atol=1e-6)
    assert varying >= len(b) // 2  # the comparisons see the input
    for u, v in zip(ours(x, training=False) if len(ref.outputs) > 1 else [ours(x, training=False)],
                    ref(x, training=False) if len(ref.outputs) > 1 else [ref(x, training=False)]):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_same_model_as_build(name, tmp_path):
    import archspec
    import keras

    overrides = SMALL[name]
    ref = archspec.build(name, overrides)
    ours = load_module(generate(name, overrides), tmp_path / f"{name}.py").build_model()
    assert_same_model(ours, ref)
    check_outputs(ours, ref)
    keras.backend.clear_session(free_memory=False)


def test_build_model_arguments_match_the_spec_overrides(tmp_path):
    import archspec

    mod = load_module(generate("resnet18"), tmp_path / "resnet18.py")
    cases = [
        (dict(include_top=False, input_shape=(64, 64, 3)), ["head.include_top=false", "input.shape=[64,64,3]"]),
        (dict(classes=7, input_shape=(48, 48, 3)), ["head.classes=7", "input.shape=[48,48,3]"]),
        (dict(include_top=False, pooling="avg", input_shape=(64, 64, 3)),
         ["head.include_top=false", "head.pooling=avg", "input.shape=[64,64,3]"]),
    ]
    for kwargs, overrides in cases:
        ours, ref = mod.build_model(**kwargs), archspec.build("resnet18", overrides)
        assert_same_model(ours, ref)
        check_outputs(ours, ref, seed=1)
    assert ours.output.shape[-1] == 512  # the pooled features
    with pytest.raises(ValueError, match="'mean'"):
        mod.build_model(include_top=False, pooling="mean")


@pytest.mark.parametrize("name,overrides,kwargs", [
    ("resnet18", ["taps=stages"], {}),  # taps and the classifier: five outputs
    ("resnet18", ["taps=stages"], {"include_top": False}),  # the taps only
    ("googlenet", ["input.shape=[128,128,3]", "head.aux=true"], {}),  # two auxiliary classifiers
], ids=["taps", "taps-no-top", "aux"])
def test_multi_output_networks(name, overrides, kwargs, tmp_path):
    import archspec

    small = [o for o in SMALL[name] if not o.startswith("input.") or not any(v.startswith("input.") for v in overrides)]
    mod = load_module(generate(name, small + overrides), tmp_path / f"{name}.py")
    ours = mod.build_model(**kwargs)
    top = [] if kwargs.get("include_top", True) else ["head.include_top=false"]
    ref = archspec.build(name, small + overrides + top)
    assert len(ref.outputs) > 1
    assert_same_model(ours, ref)
    check_outputs(ours, ref)


def test_generated_model_saves_and_reloads(tmp_path):
    import keras

    mod = load_module(generate("googlenet", SMALL["googlenet"]), tmp_path / "g.py")
    m = mod.build_model()
    m.save(tmp_path / "g.keras")
    again = keras.models.load_model(tmp_path / "g.keras")
    assert type(again.get_layer("pool1_norm1")) is mod.LocalResponseNormalization
    assert again.count_params() == m.count_params()
    x = np.random.default_rng(0).uniform(0, 1, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(np.asarray(again(x)), np.asarray(m(x)))


JAX_SCRIPT = textwrap.dedent("""
    import importlib.util, sys, numpy as np
    path, weights, x, out = sys.argv[1:5]
    spec = importlib.util.spec_from_file_location("generated", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    m = mod.build_model()
    m.load_weights(weights)
    np.save(out, np.asarray(m.predict(np.load(x), verbose=0)))
    import keras; print("BACKEND=" + keras.backend.backend())
""")


@pytest.mark.parametrize("name", ["googlenet", "convnext_tiny"])
def test_generated_file_builds_on_jax(name, tmp_path):
    """LRN (googlenet) and LayerScale (convnext) are written inline with keras.ops."""
    pytest.importorskip("jax", reason="the JAX backend check needs jax (pip install '.[test]')")
    import archspec
    from parity import randomize

    overrides = SMALL[name] + ["head.classifier_activation=linear"]
    text = generate(name, overrides)
    path = tmp_path / "model.py"
    path.write_text(text)
    ref = archspec.build(name, overrides)
    randomize(ref, seed=3)
    ref.save_weights(tmp_path / "w.weights.h5")
    x = np.random.default_rng(0).uniform(0, 1, (2,) + tuple(ref.input.shape[1:])).astype("float32")
    np.save(tmp_path / "x.npy", x)
    tf_out = np.asarray(ref(x, training=False))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(path), str(tmp_path / "w.weights.h5"),
                        str(tmp_path / "x.npy"), str(tmp_path / "y.npy")], env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BACKEND=jax" in r.stdout
    jax_out = np.load(tmp_path / "y.npy")
    assert tf_out.std() > 0 and not np.allclose(tf_out[0], tf_out[1])
    np.testing.assert_allclose(jax_out, tf_out, atol=1e-4, rtol=1e-3)
