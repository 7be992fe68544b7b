"""Helpers shared by the parity tests: compare a compiled model with a reference model
that archspec did not write (keras.applications), layer by layer and output by output."""

from __future__ import annotations

import re

import numpy as np

_AUTO = re.compile(r"_\d+$")


def weighted_layers(model):
    return [l for l in model.layers if l.weights]


def assert_same_structure(ours, ref):
    """Same layer names (auto-generated names compared without their _N suffix), same
    weight shapes in the same order, same parameter counts."""
    ours_w = [(l.name, [tuple(w.shape) for w in l.weights]) for l in weighted_layers(ours)]
    ref_w = [(l.name, [tuple(w.shape) for w in l.weights]) for l in weighted_layers(ref)]
    assert ours_w == ref_w
    ours_names = [l.name for l in ours.layers if not l.name.startswith("input")]
    ref_names = [l.name for l in ref.layers if not l.name.startswith("input")]
    assert [_AUTO.sub("", n) for n in ours_names] == [_AUTO.sub("", n) for n in ref_names]
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in ref.weights]
    assert ours.count_params() == ref.count_params()


def copy_weights_by_name(src, dst):
    """Copy every weighted layer's weights from `src` into the layer of the same name in `dst`."""
    by_name = {l.name: l for l in dst.layers}
    n = 0
    for layer in weighted_layers(src):
        by_name[layer.name].set_weights(layer.get_weights())
        n += 1
    return n


def randomize(model, seed=0):
    """Give every weight random values (so that a copy is checked against something)."""
    rng = np.random.default_rng(seed)
    for layer in weighted_layers(model):
        new = []
        for w in layer.get_weights():
            if w.dtype.kind == "i":
                new.append(w)
            elif "variance" in layer.name or w.ndim == 1 and np.all(w >= 0) and "bn" in layer.name:
                new.append(rng.uniform(0.5, 1.5, w.shape).astype(w.dtype))
            else:
                new.append((rng.standard_normal(w.shape) * 0.05).astype(w.dtype))
        layer.set_weights(new)


def assert_same_outputs(ours, ref, shape, atol, seed=0, batch=2):
    x = np.random.default_rng(seed).uniform(0, 1, (batch,) + tuple(shape)).astype("float32")
    a = ours.predict(x, verbose=0)
    b = ref.predict(x, verbose=0)
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape
        np.testing.assert_allclose(u, v, atol=atol, rtol=0)
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))
