"""Feature extraction (include_top: false, pooling, taps) for every spec, and pretrained
weights in keras.applications' own file format loading into a compiled model by name."""

import h5py
import keras
import numpy as np
import pytest

import archspec
from archspec.api import analyze
from archspec.cli import main
from parity import copy_weights_by_name, infer, randomize


def test_resnet50_features_equal_keras_applications():
    ref = keras.applications.ResNet50(weights=None, include_top=False, pooling="max")
    ours = archspec.build("resnet50", ["head.include_top=false", "head.pooling=max"])
    assert ours.count_params() == ref.count_params() == 23_587_712
    randomize(ref, seed=4)
    copy_weights_by_name(ref, ours)
    x = np.random.default_rng(0).uniform(size=(2, 224, 224, 3)).astype("float32")
    np.testing.assert_allclose(infer(ours, x), infer(ref, x), atol=1e-5)


def test_stage_taps_return_several_feature_maps(capsys):
    over = ["head.include_top=false", "taps=stages"]
    r = analyze("resnet50", over)
    assert r["taps"] == ["conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out"]
    assert [o["shape"] for o in r["outputs"]] == [[56, 56, 256], [28, 28, 512], [14, 14, 1024], [7, 7, 2048]]
    m = archspec.build("resnet50", over)
    ys = infer(m, np.zeros((1, 224, 224, 3), "float32"))
    assert [y.shape[1:] for y in ys] == [(56, 56, 256), (28, 28, 512), (14, 14, 1024), (7, 7, 2048)]
    assert main(["inspect", "resnet50", "--set", "head.include_top=false", "--set", "taps=stages"]) == 0
    assert "taps:       conv2_block3_out (56, 56, 256)" in capsys.readouterr().out


def test_named_taps_with_the_classifier():
    r = analyze("mobilenet_v2", ["taps=[block_3_expand_relu, block_13_expand_relu]"])
    assert [o["name"] for o in r["outputs"]] == ["block_3_expand_relu", "block_13_expand_relu", "predictions"]
    assert r["taps"] == ["block_3_expand_relu", "block_13_expand_relu"]


def test_unknown_tap_is_a_located_error(capsys):
    assert main(["inspect", "resnet50", "--set", "taps=[conv9_out]"]) == 2
    assert capsys.readouterr().err.strip() == "--set taps=[conv9_out]: taps[0]: tap 'conv9_out' names no layer of this network"


def test_keras_applications_h5_weights_load_by_name(tmp_path, capsys):
    """keras.applications ships Keras-2 style .h5 weight files keyed by layer name; write one
    from a reference model with random weights and load it through `build --weights`."""
    from keras.src.legacy.saving import legacy_h5_format

    ref = keras.applications.ResNet50(weights=None, classes=10, input_shape=(64, 64, 3))
    randomize(ref, seed=5)
    path = tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, ref)
    out = tmp_path / "r.keras"
    assert main(["build", "resnet50", "--set", "head.classes=10", "--set", "input.shape=[64,64,3]",
                 "--weights", str(path), "-o", str(out)]) == 0
    capsys.readouterr()
    ours = keras.models.load_model(out)
    x = np.random.default_rng(1).uniform(size=(2, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(infer(ours, x), infer(ref, x), atol=1e-5)
    assert main(["build", "resnet50", "--weights", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "x.keras")]) == 2
    assert not (tmp_path / "x.keras").exists()
