"""ResNet family against references archspec did not write: keras.applications for
ResNet50/101/152 (names, weight shapes, counts, outputs with copied weights), the paper's
Table 1 and torchvision's parameter counts for ResNet-18/34."""

import keras
import pytest

import archspec
from archspec.api import analyze
from parity import assert_same_outputs, assert_same_structure, copy_weights_by_name, randomize

KERAS_RESNETS = {
    "resnet50": keras.applications.ResNet50,
    "resnet101": keras.applications.ResNet101,
    "resnet152": keras.applications.ResNet152,
}


@pytest.mark.parametrize("name", sorted(KERAS_RESNETS))
def test_matches_keras_applications(name):
    ref = KERAS_RESNETS[name](weights=None)
    ours = archspec.build(name)
    assert_same_structure(ours, ref)
    randomize(ref, seed=1)
    assert copy_weights_by_name(ref, ours) == len([l for l in ref.layers if l.weights])
    # assert_same_outputs also checks the reference's outputs are not degenerate (saturated softmax)
    assert assert_same_outputs(ours, ref, (224, 224, 3), atol=1e-5) <= 1e-5


def test_reference_counts_from_design():
    # keras.applications 3.x: ResNet50 25,636,712 total / 25,583,592 trainable (DESIGN.md)
    r = analyze("resnet50")
    assert (r["params"], r["trainable_params"]) == (25_636_712, 25_583_592)
    assert analyze("resnet101")["params"] == 44_707_176
    assert analyze("resnet152")["params"] == 60_419_944


@pytest.mark.parametrize("name,paper_flops,torchvision_params,layout", [
    # He et al. 2015, Table 1: FLOPs 1.8e9 (18-layer) and 3.6e9 (34-layer); blocks [2,2,2,2] / [3,4,6,3].
    # torchvision.models.resnet18/34: 11,689,512 / 21,797,672 parameters (BN statistics are buffers there).
    ("resnet18", 1.8e9, 11_689_512, [2, 2, 2, 2]),
    ("resnet34", 3.6e9, 21_797_672, [3, 4, 6, 3]),
])
def test_basic_resnets_follow_the_paper(name, paper_flops, torchvision_params, layout):
    r = analyze(name)
    assert abs(r["macs"] - paper_flops) / paper_flops < 0.03
    assert r["trainable_params"] == torchvision_params
    blocks = [b for b in r["blocks"] if b["type"] == "basic"]
    counts = [sum(1 for b in blocks if b["name"].startswith(f"conv{s}_")) for s in range(2, 6)]
    assert counts == layout
    # Table 1 output sizes: conv2_x 56x56x64 ... conv5_x 7x7x512
    last = {s: [b for b in blocks if b["name"].startswith(f"conv{s}_")][-1]["output_shape"] for s in range(2, 6)}
    assert last == {2: [56, 56, 64], 3: [28, 28, 128], 4: [14, 14, 256], 5: [7, 7, 512]}
    # no conv bias anywhere, as torchvision defines it
    assert all(not l["attrs"]["use_bias"] for l in r["layers"] if l["op"] == "conv2d")


def test_cifar_resnet50_of_the_notes():
    r = analyze("resnet50_cifar100")
    names = {l["name"] for l in r["layers"]}
    # seeds/001: conv_name_base 'res' + stage + block + '_branch', bn 'bn...'; conv1 / bn_conv1; fc1000
    for n in ("conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch2c", "res2a_branch1", "res5c_branch2c", "fc1000"):
        assert n in names
    layers = {l["name"]: l for l in r["layers"]}
    # v1.5: the stride is on the 3x3 conv of a conv_block, and on the shortcut
    assert layers["res3a_branch2a"]["attrs"]["strides"] == [1, 1]
    assert layers["res3a_branch2b"]["attrs"]["strides"] == [2, 2]
    assert layers["res3a_branch1"]["attrs"]["strides"] == [2, 2]
    assert layers["bn2a_branch2a"]["attrs"]["momentum"] == 0.9 and layers["bn2a_branch2a"]["attrs"]["epsilon"] == 1e-5
    assert layers["fc1000"]["attrs"]["kernel_regularizer"] == 1e-4
    assert layers["fc1000"]["attrs"]["bias_regularizer"] == 1e-4
    assert r["output_shape"] == [100]
    model = archspec.build("resnet50_cifar100", precision="mixed_float16")
    try:
        assert model.get_layer("predictions").compute_dtype == "float32"
        assert model.get_layer("res2a_branch2a").compute_dtype == "float16"
        # L2 on every conv and dense kernel plus the dense bias
        n_reg = sum(1 for l in model.layers if getattr(l, "kernel_regularizer", None) is not None)
        assert n_reg == sum(1 for l in r["layers"] if l["op"] in ("conv2d", "dense"))
        assert len(model.losses) == n_reg + 1
    finally:
        keras.config.set_dtype_policy("float32")
