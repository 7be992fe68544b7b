"""The Keras backend: the builder (`build`: one Keras layer per IR node, archspec's custom
layers), the `.keras` files with their provenance (`files`), and the lazy loaders below.
Importing this package imports neither Keras nor TensorFlow; `load()`, `keras()` and
`tensorflow()` do, with TensorFlow's start-up notices filtered and an install hint when
they are missing."""

from __future__ import annotations

import sys

from ...core.errors import MissingDependency


#: set by the command line, in its own process: Keras is imported with scikit-learn hidden,
#: so that Keras' optional scikit-learn wrappers (which archspec never uses) do not import it:
#: 0.9 s of every command that builds a model. A library user's Keras keeps its wrappers.
HIDE_SKLEARN = False


class _Hidden:
    """A meta path finder that makes importing `names` fail (as if not installed)."""

    def __init__(self, *names: str):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ImportError(f"{name} is hidden while Keras is imported")
        return None


def load():
    """The builder module (`archspec.backends.keras.build`), imported on first use with Keras'
    and TensorFlow's native start-up chatter filtered (`archspec.core.quiet`)."""
    from ...core import quiet

    try:
        if "archspec.backends.keras.build" in sys.modules:
            from . import build
        else:
            quiet.prepare_environment()
            hide = _Hidden("sklearn") if HIDE_SKLEARN and not {"keras", "sklearn"} & set(sys.modules) else None
            if hide is not None:
                sys.meta_path.insert(0, hide)
            try:
                with quiet.native_stderr_filtered():
                    from . import build
            finally:
                if hide is not None:
                    sys.meta_path.remove(hide)
            with quiet.native_stderr_filtered():
                build.warm_up()
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(
            f"building needs TensorFlow/Keras 3 ({exc}); install with: pip install 'archspec'") from None
    return build


def build_model(spec, overrides: list[str] | None = None, *, precision: str | None = None, seed: int | None = None,
                weights=None, weights_skip=(), say=None):
    """A spec (path, bundled name, Spec) or a Graph compiled to a `keras.Model`; with `weights`,
    loaded from that file by the one strict loader (`weights.load_weights`: checked statically
    before the build, `weights_skip` globs left at init, the summary line to `say`)."""
    from ...ir.graph import Graph
    from ...ir.pipeline import lower_spec

    g = spec if isinstance(spec, Graph) else lower_spec(spec, overrides)
    if weights is None:
        if weights_skip:
            from ...core.errors import SpecError

            raise SpecError("weights_skip names layers of a weights file; give weights")
        return load().build_model(g, precision=precision, seed=seed)
    from .pretrained import resolve
    from .weights import load_weights, weights_report

    weights = resolve(weights, g, say=say)  # `imagenet`: the spec's published file, from Keras' cache
    report = weights_report(g, weights, weights_skip)  # a refused load costs no build
    if not report.loadable:
        raise report.error()
    model = load().build_model(g, precision=precision, seed=seed)
    load_weights(model, g, weights, skip=weights_skip, say=say)
    return model


def keras():
    """Keras with archspec's custom layers registered and TensorFlow's start-up notices
    filtered. Keras only: TensorFlow is imported by the paths that need it (tf2onnx,
    SavedModel), so the IR's ONNX export runs on the JAX backend without it."""
    from ...core.quiet import native_stderr_filtered

    load()
    try:
        with native_stderr_filtered():
            import keras as _keras
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(f"export needs Keras 3 ({exc}); pip install keras") from None
    return _keras


def tensorflow():
    """TensorFlow, for the paths that need it (tf2onnx, SavedModel, decoding images), with a
    hint when it is missing."""
    from ...core.quiet import native_stderr_filtered

    try:
        with native_stderr_filtered():
            import tensorflow as tf

            tf.zeros(())  # the first device context (cuInit's failure on a machine without a GPU) made here
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingDependency(f"this path needs TensorFlow ({exc}); pip install tensorflow, or export "
                                "ONNX through the graph IR (the default, --via ir), which does not") from None
    return tf
