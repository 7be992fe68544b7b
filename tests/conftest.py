import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).parent))

import gc

import pytest
from hypothesis import HealthCheck, settings

# The fuzz tests' example counts, for every file that fuzzes: "ci" keeps the suite short; the
# long campaign (run before resolving an issue that fuzzing covers):
#     HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz*.py --hypothesis-show-statistics
settings.register_profile("ci", max_examples=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("long", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


#: a test worker's peak resident memory: TensorFlow plus the biggest network a test builds
#: (EfficientNet-B7, VGG19 with its keras.applications twin), measured at about 4 GiB
WORKER_GIB = 6


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): one worker a core this process may use, as many as
    the machine's memory holds at WORKER_GIB each."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        gib = WORKER_GIB * cores
    return max(1, min(cores, int(gib // WORKER_GIB)))


def _rss_gib() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):  # not Linux: always collect
        return float("inf")


_RSS_AFTER_COLLECT = [0.0]
_COLLECT_ABOVE_GIB = 1.0


@pytest.fixture(autouse=True)
def _release_models():
    """Models built by one test are released before the next: without this a full run
    keeps every network (VGG, EfficientNet-B7, ...) alive and runs out of memory. Keras'
    state (layer-name counters, ...) is reset after every test that made Keras objects;
    the full garbage collection (0.2-0.5 s with TensorFlow loaded) runs only once memory
    has grown by a GiB since the last one, i.e. after the big networks."""
    yield
    if "keras" not in sys.modules:
        return
    try:  # nothing Keras-made since the last clear (a pure-analysis test): nothing to reset
        from keras.src.backend.common import global_state

        if not vars(global_state.GLOBAL_STATE_TRACKER):
            return
    except ImportError:  # another Keras layout: always clear
        pass
    sys.modules["keras"].backend.clear_session(free_memory=False)
    if _rss_gib() > _RSS_AFTER_COLLECT[0] + _COLLECT_ABOVE_GIB:
        gc.collect()
        _RSS_AFTER_COLLECT[0] = _rss_gib()


# ---------------------------------------------------------------- the zoo in the every-spec tests
#
# The every-spec tests (ONNX export, codegen parity, the static analysis against a Keras
# build, the HTML report in Chromium) cost 5-30 s per network. Two kinds of bundled spec are
# left to their family's own test instead (tests/test_zoo_*.py, test_zoo_keras_names.py):
#: larger members of a family, written as the same definitions with other depths, widths or
#: input sizes (their counts, names and shapes are checked statically against keras' figures)
VARIANTS = frozenset({
    *(f"efficientnet_b{k}" for k in range(1, 8)),
    *(f"efficientnet_v2_{k}" for k in ("b1", "b2", "b3", "s", "m", "l")),
    *(f"convnext_{k}" for k in ("small", "base", "large", "xlarge")),
    "resnet101_v2", "resnet152_v2", "nasnet_large",
})
#: ... and, for the tests that build Keras models, the smallest member of each family bundled
#: with issue 28, which its own test builds against keras.applications with keras' weights
#: copied over through both weights formats (a stronger check than the generic ones)
KERAS_BUILT_BY_FAMILY = VARIANTS | {"efficientnet_v2_b0", "resnet50_v2", "inception_v3", "inception_resnet_v2",
                                    "nasnet_mobile"}


# ---------------------------------------------------------------- the fast loop
#
# `pytest -m "not slow"` is the development loop (minutes on 2 cores); the README's
# command (CI) runs everything. Besides the tests marked slow in their own files, these
# are slow: big networks built against keras.applications, each spec's ONNX export beyond
# two_branch (the export paths are covered on small models in test_export: LRN, groups and
# large Dense kernels on its tiny spec, in-model Normalization on a small EfficientNet), and sweeps
# whose first case stays in the loop. Every module keeps tests in the loop.
import re  # noqa: E402

SLOW_IN_THE_LOOP = [
    "test_export.py::test_bundled_spec_exports_to_onnx[*]",
    "test_export.py::test_saved_model_with_serving_signature[*]",
    "test_specs.py::test_static_analysis_equals_keras[*]",
    "test_scaling.py::test_preset_parity_with_keras_applications[*]",
    "test_resnet.py::test_matches_keras_applications[resnet1*]",
    "test_backends.py::test_jax_backend_matches_tensorflow[*]",
    "test_features.py::test_resnet50_features_equal_keras_applications",
    "test_zoo_classic.py::test_vgg_parity_with_keras_applications[*]",
    "test_zoo_classic.py::test_googlenet_aux_classifiers_train_one_step",
    "test_zoo_mobile.py::test_mobilenet_v1_parity[*]",
    "test_zoo_mobile.py::test_mobilenet_v2_parity[*]",
    "test_zoo_mobile.py::test_efficientnet_b1_structure_against_keras",
    "test_zoo_mobilenet_v3.py::test_same_*_as_keras[*large*]",
    "test_zoo_mobilenet_v3.py::test_width_075_against_keras_alpha_075",
    "test_zoo_mobilenet_v3.py::test_large_width_05_counts_as_keras_alpha_05",
    "test_zoo_open_resnets.py::test_resnet50_yaml_*_keras_applications",
    "test_zoo_densenet.py::test_same_*_as_keras[*]",
    "test_features.py::test_keras_applications_h5_weights_load_by_name",
    "test_zoo_mobile.py::test_efficientnet_b0_parity",
    # codegen: every spec's parity but the small ones (two_branch, cifar100_cnn, resnet18,
    # googlenet, the MobileNets v1/v2/v3-small), and the JAX build of ConvNeXt (LayerScale)
    "test_codegen.py::test_same_model_as_build[alexnet]",
    "test_codegen.py::test_same_model_as_build[convnext*]",
    "test_codegen.py::test_same_model_as_build[densenet*]",
    "test_codegen.py::test_same_model_as_build[efficientnet*]",
    "test_codegen.py::test_same_model_as_build[mobilenet_v3_large]",
    "test_codegen.py::test_same_model_as_build[resnet34]",
    "test_codegen.py::test_same_model_as_build[resnet50*]",
    "test_codegen.py::test_same_model_as_build[resnet10*]",
    "test_codegen.py::test_same_model_as_build[resnet152]",
    "test_codegen.py::test_same_model_as_build[resnext*]",
    "test_codegen.py::test_same_model_as_build[se_*]",
    "test_codegen.py::test_same_model_as_build[vgg*]",
    "test_codegen.py::test_same_model_as_build[xception*]",
    "test_codegen.py::test_generated_file_builds_on_jax[convnext*]",
    # training: the loop keeps the .npz run, bad data, NaN and the CIFAR reader; the real-process
    # kill/resume and SIGTERM runs, the image folder and the frozen/mixed-precision runs are CI's
    "test_train.py::test_killed_run_resumes_without_repeating_an_epoch",
    "test_train.py::test_sigterm_saves_a_checkpoint_and_resume_finishes",
    "test_train.py::test_image_folder_trains_and_predicts_with_class_names",
    "test_train.py::test_frozen_batch_norm_keeps_its_statistics_and_mixed_precision_trains",
    "test_train_distribute.py::test_mirrored_matches_one_device_with_the_global_batch",
    # subprocesses that start a second framework: JAX stays in the loop through
    # test_backends[two_branch]; these three are CI's
    "test_codegen.py::test_generated_file_builds_on_jax[*]",
    "test_onnx_ir.py::test_export_on_jax_without_tensorflow",
    "test_hardening.py::test_every_public_name_stays_callable_after_use",
    # the fast subset's budget is 3 minutes: the import-order subprocesses and two of the three
    # ConvNeXt nested-submodel formats are CI's (the .weights.h5 one stays in the loop)
    "test_cli.py::test_custom_layers_reload_whatever_the_import_order",
    "test_weights.py::test_convnext_tiny_nested_submodels_load[.keras]",
    "test_weights.py::test_convnext_tiny_nested_submodels_load[.h5]",
]
KEPT_IN_THE_LOOP = [
    "test_backends.py::test_jax_backend_matches_tensorflow[two_branch]",
    "test_export.py::test_bundled_spec_exports_to_onnx[two_branch]",
    "test_specs.py::test_static_analysis_equals_keras[two_branch]",
    "test_specs.py::test_static_analysis_equals_keras[resnet18]",
    "test_specs.py::test_static_analysis_equals_keras[mobilenet_v3_small]",
    "test_specs.py::test_static_analysis_equals_keras[googlenet]",
    "test_specs.py::test_static_analysis_equals_keras[cifar100_cnn]",
    "test_zoo_mobile.py::test_mobilenet_v1_parity[a0.25-dm1-128]",
    "test_zoo_mobile.py::test_mobilenet_v2_parity[a0.35-96]",
]


def _match(nodeid: str, patterns) -> bool:
    """Test ids against patterns where only * is a wildcard (brackets are literal)."""
    return any(re.fullmatch(re.escape(p).replace(r"\*", ".*"), nodeid) for p in patterns)


def pytest_collection_modifyitems(config, items):
    for item in items:
        nodeid = item.nodeid.split("/")[-1]
        if _match(nodeid, SLOW_IN_THE_LOOP) and not _match(nodeid, KEPT_IN_THE_LOOP):
            item.add_marker("slow")
