"""Compiled models use keras.layers / keras.ops only, so they run on Keras' JAX backend too:
build the same spec with the same weights under TensorFlow and under JAX (in a fresh
process, since the backend is chosen at import) and compare the logits."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("jax", reason="the JAX backend check needs jax (pip install '.[test]' installs it)")

SPECS = {
    # parallel branches, concatenation, a residual: the composed network of the README (the
    # one in the fast loop, the others are slow)
    "two_branch": ["head.classifier_activation=linear"],
    # residual blocks, bn, pooling
    "resnet18": ["input.shape=[64,64,3]", "head.classes=10", "head.classifier_activation=linear"],
    # grouped convolutions and local response normalization (the custom layer)
    "alexnet": ["head.classes=10", "head.classifier_activation=linear"],
    # inverted residuals with squeeze-excite, drop-connect, Rescaling + Normalization
    "efficientnet": ["input.shape=[64,64,3]", "head.classes=10", "head.classifier_activation=linear"],
}

SCRIPT = textwrap.dedent("""
    import sys, numpy as np, archspec
    name, weights, x, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    overrides = sys.argv[5:]
    m = archspec.build(name, overrides)
    m.load_weights(weights)
    np.save(out, np.asarray(m.predict(np.load(x), verbose=0)))
    import keras; print("BACKEND=" + keras.backend.backend())
""")


@pytest.mark.parametrize("name", sorted(SPECS))
def test_jax_backend_matches_tensorflow(name, tmp_path):
    import archspec
    from parity import randomize

    if name not in __import__("archspec.language.loader", fromlist=["x"]).bundled_names():
        pytest.fail(f"bundled spec {name} is missing")
    m = archspec.build(name, SPECS[name], seed=0)
    if name != "efficientnet":  # with random BN statistics EfficientNet's outputs stop depending on the input
        randomize(m, seed=2)
    weights = tmp_path / "w.weights.h5"
    m.save_weights(weights)
    shape = (2,) + tuple(m.input.shape[1:])
    x = np.random.default_rng(0).uniform(0, 255 if name == "efficientnet" else 1, shape).astype("float32")
    np.save(tmp_path / "x.npy", x)
    tf_out = m.predict(x, verbose=0)
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", SCRIPT, name, str(weights), str(tmp_path / "x.npy"),
                        str(tmp_path / "y.npy"), *SPECS[name]], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "BACKEND=jax" in r.stdout
    jax_out = np.load(tmp_path / "y.npy")
    assert tf_out.std() > 0 and not np.allclose(tf_out[0], tf_out[1])
    np.testing.assert_allclose(jax_out, tf_out, atol=1e-4, rtol=1e-3)
