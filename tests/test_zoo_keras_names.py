"""The whole keras.applications zoo under its keras names (issue 28): every constructor of
Keras' keras.applications is a bundled spec whose `keras:` section names it, found by that
name, with keras' exact parameter count from the static analysis (no TensorFlow), and the
released weights keras itself downloads (url and hash, checked against keras' code). The
numerical parity of each family is in its own test_zoo_*.py."""

import importlib
import inspect as pyinspect

import pytest

from archspec.api import lower_spec
from archspec.language import load
from archspec.language.loader import bundled_spec_dir, keras_constructors

TWINS = keras_constructors(bundled_spec_dir())  # {spec name: constructor}


def keras_applications():
    import keras

    return sorted(n for n in dir(keras.applications) if n[0].isupper() and callable(getattr(keras.applications, n)))


def test_every_keras_applications_constructor_is_a_bundled_spec():
    assert sorted(TWINS.values()) == keras_applications()  # one spec each, 40 in Keras 3.15


@pytest.mark.parametrize("name", sorted(TWINS))
def test_the_static_count_is_keras_count(name):
    spec = load(name)[0]
    assert spec.keras.constructor == TWINS[name]
    assert lower_spec(name).params == spec.reference["keras_params"]


@pytest.mark.parametrize("name", sorted(TWINS))
def test_published_weights_are_the_files_keras_downloads(name):
    """The hash of each file is one keras.applications' module holds for it, and the file is
    under keras' storage: what `--weights imagenet` fetches is what keras would."""
    import keras

    spec = load(name)[0]
    module = importlib.import_module(getattr(keras.applications, spec.keras.constructor).__module__)
    # the module and the keras.applications modules it builds on (resnet_v2 uses resnet's table)
    used = [m for m in vars(module).values() if pyinspect.ismodule(m) and m.__name__.startswith(module.__package__)]
    source = "".join(pyinspect.getsource(m) for m in [module, *used])
    files = spec.keras.weights["imagenet"]
    for f in (files.top, files.no_top):
        assert f is not None
        assert f.url.startswith("https://storage.googleapis.com/")
        if f.hash is None:  # keras itself passes get_file no hash for these (checked below for MobileNet)
            assert spec.keras.constructor in ("MobileNet", "MobileNetV2")
        else:
            assert f.hash in source


@pytest.mark.filterwarnings("ignore:`input_shape` is undefined or non-square")
@pytest.mark.parametrize("constructor", ["MobileNetV3Small", "EfficientNetB0", "MobileNet"])
def test_weights_urls_equal_what_keras_asks_get_file_for(constructor, monkeypatch):
    """keras.applications run with weights='imagenet' and get_file stopped at the call: the
    url and hash it asks for are the spec's, with and without the top."""
    import keras

    asked = []

    class Stop(Exception):
        pass

    def get_file(fname=None, origin=None, *args, file_hash=None, **kwargs):
        asked.append((origin, file_hash))
        raise Stop

    module = importlib.import_module(getattr(keras.applications, constructor).__module__)
    monkeypatch.setattr(module.file_utils, "get_file", get_file)
    for top in (True, False):
        keras.backend.clear_session()
        with pytest.raises(Stop):
            getattr(keras.applications, constructor)(weights="imagenet", include_top=top,
                                                     input_shape=None if top else (64, 64, 3))
    name = next(n for n, c in TWINS.items() if c == constructor)
    files = load(name)[0].keras.weights["imagenet"]
    assert asked == [(files.top.url, files.top.hash), (files.no_top.url, files.no_top.hash)]


@pytest.mark.parametrize("how", ["EfficientNetB3", "efficientnetb3", "efficientnet_b3"])
def test_a_constructor_name_finds_its_spec(how):
    assert lower_spec(how).name == "efficientnet_b3"


@pytest.mark.parametrize("k", range(1, 8))
def test_efficientnet_variant_files_are_the_official_rows(k):
    """efficientnet_bK is efficientnet scaled by its preset row bK, layer for layer."""
    from archspec.resolving.compound import apply_scaling

    ours = lower_spec(f"efficientnet_b{k}")
    scaled = lower_spec(apply_scaling(load("efficientnet")[0], preset=f"b{k}"))
    assert [(n.name, n.op, n.shape, n.params) for n in ours.nodes] == \
        [(n.name, n.op, n.shape, n.params) for n in scaled.nodes]
