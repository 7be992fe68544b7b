"""Feature extraction for every bundled spec, without any framework: with the top left
out, the output is the last feature map before the head (pooled or not)."""

import pytest

from archspec.api import analyze, lower_spec
from archspec.language.loader import bundled_names


@pytest.mark.parametrize("name", bundled_names())
@pytest.mark.parametrize("pooling", ["avg", "max", "none"])
def test_every_spec_is_a_feature_extractor(name, pooling):
    full = lower_spec(name)
    features = [n for n in full.nodes if not n.path or n.path[0] != "head"][-1]
    r = analyze(name, ["head.include_top=false", f"head.pooling={pooling}"])
    assert r["params"] < full.params
    # the features are those of the last layer before the top, pooled as asked
    if pooling == "none":
        assert r["output_shape"] == list(features.shape)
        assert r["outputs"][-1]["name"] == features.name
    else:
        assert r["output_shape"] == [features.shape[-1]]
        assert r["layers"][-1]["op"] == "global_pool" and r["layers"][-1]["attrs"]["mode"] == pooling
        assert r["layers"][-1]["inputs"] == [features.name]
