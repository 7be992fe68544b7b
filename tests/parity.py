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


def save_legacy(model, path):
    """keras.applications' released format: a Keras-2 style .h5 keyed by layer name."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def randomize(model, seed=0):
    """Give every weight random values (so that a copy is checked against something),
    scaled by fan-in so that activations stay in range and the softmax does not saturate."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in weighted_layers(model):
        new = []
        if isinstance(layer, keras.layers.BatchNormalization):
            for w, v in zip(layer.weights, layer.get_weights()):
                if "variance" in w.name or "gamma" in w.name:
                    new.append(rng.uniform(0.8, 1.2, v.shape).astype(v.dtype))
                else:
                    new.append((rng.standard_normal(v.shape) * 0.05).astype(v.dtype))
        elif isinstance(layer, keras.layers.Normalization):
            mean, var, count = layer.get_weights()
            new = [(rng.standard_normal(mean.shape) * 0.1).astype(mean.dtype),
                   rng.uniform(0.5, 1.5, var.shape).astype(var.dtype), count]
        else:
            for v in layer.get_weights():
                if v.dtype.kind in "iu":
                    new.append(v)
                elif v.ndim >= 2:
                    fan_in = int(np.prod(v.shape[:-1]))
                    if isinstance(layer, keras.layers.DepthwiseConv2D):
                        fan_in = int(np.prod(v.shape[:2]))
                    new.append((rng.standard_normal(v.shape) * np.sqrt(1.0 / fan_in)).astype(v.dtype))
                else:
                    new.append((rng.standard_normal(v.shape) * 0.05).astype(v.dtype))
        layer.set_weights(new)


def assert_not_degenerate(outputs):
    """The outputs differ between examples and are not one-hot, so an equality means something."""
    for o in outputs if isinstance(outputs, list) else [outputs]:
        o = np.asarray(o)
        assert np.all(np.isfinite(o))  # NaN == NaN would make any comparison pass
        assert o.std() > 0
        if o.shape[0] > 1:
            assert not np.allclose(o[0], o[1], atol=1e-6)


def infer(model, x):
    """The model's outputs on `x` as numpy arrays (a list for several outputs), computed by
    calling it: `predict` first traces a tf.function, which for a 500-layer network costs 2-3 s,
    five times the forward pass itself, for the same kernels and the same numbers."""
    import warnings

    with warnings.catch_warnings():  # Keras' note that a bare array is not its input list
        warnings.filterwarnings("ignore", "The structure of `inputs` doesn't match", UserWarning)
        out = model(x, training=False)
    if isinstance(out, (list, tuple)):
        return [np.asarray(o) for o in out]
    return np.asarray(out)


def assert_same_outputs(ours, ref, shape, atol, seed=0, batch=2):
    x = np.random.default_rng(seed).uniform(0, 1, (batch,) + tuple(shape)).astype("float32")
    a = infer(ours, x)
    b = infer(ref, x)
    a = a if isinstance(a, list) else [a]
    b = b if isinstance(b, list) else [b]
    assert_not_degenerate(b)
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert u.shape == v.shape
        np.testing.assert_allclose(u, v, atol=atol, rtol=0)
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def leaf_layers(model):
    """The model's layers with nested models (keras' ConvNeXt builds its stem and
    downsampling layers as Sequential sub-models) replaced by their own layers."""
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(leaf_layers(layer))
        else:
            out.append(layer)
    return out


def assert_same_named_structure(ours, ref, generated=()):
    """Parity for references that also contain unnamed layers and bare ops (keras'
    MobileNetV3 writes ``layers.ReLU()(x + 3.0) * (1 / 6)``; ConvNeXt returns
    ``inputs + x``): every weighted layer has the same name, weight shapes and position,
    and every layer the reference names explicitly is in ours, in the same order.
    `generated` lists the reference's auto-generated name stems (e.g. ``("re_lu",)``),
    which are compared by count only."""
    ref_leaves, our_leaves = leaf_layers(ref), leaf_layers(ours)
    ours_w = [(l.name, [tuple(w.shape) for w in l.weights]) for l in our_leaves if l.weights]
    ref_w = [(l.name, [tuple(w.shape) for w in l.weights]) for l in ref_leaves if l.weights]
    assert ours_w == ref_w
    auto = re.compile(r"^(%s)(_\d+)?$" % "|".join(map(re.escape, generated))) if generated else None

    def named(layers):
        return [l.name for l in layers
                if not l.name.startswith("input") and not (auto and auto.match(l.name))]

    ref_named = named(ref_leaves)
    ours_set = set(l.name for l in our_leaves)
    missing = [n for n in ref_named if n not in ours_set]
    assert not missing, f"layers of the reference missing from ours: {missing[:10]}"
    order = [n for n in named(our_leaves) if n in set(ref_named)]
    assert order == ref_named
    assert ours.count_params() == ref.count_params()
    assert sum(int(np.prod(w.shape)) for w in ours.trainable_weights) == \
        sum(int(np.prod(w.shape)) for w in ref.trainable_weights)


def copy_leaf_weights_by_name(src, dst):
    """`copy_weights_by_name` through nested sub-models."""
    by_name = {l.name: l for l in leaf_layers(dst)}
    n = 0
    for layer in leaf_layers(src):
        if layer.weights:
            by_name[layer.name].set_weights(layer.get_weights())
            n += 1
    return n


def same_outputs_eager(ours, ref, shape, atol, seed=0, batch=2):
    """Max |difference| of the two models' outputs on random images, called eagerly (much
    quicker than `predict`'s tracing on a 2-core machine for a single batch); the
    reference's outputs must not be degenerate."""
    x = np.random.default_rng(seed).uniform(0, 1, (batch,) + tuple(shape)).astype("float32")
    a, b = np.asarray(ours(x, training=False)), np.asarray(ref(x, training=False))
    assert_not_degenerate(b)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, atol=atol, rtol=0)
    return float(np.max(np.abs(a - b)))
