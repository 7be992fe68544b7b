"""`archspec build`: a spec (optionally compound-scaled first) built to a `.keras` file,
through the one `.keras` writer (`archspec.backends.keras.files.save_keras`, whose
archspec.json names the spec), with the weights of a file loaded first when given."""

from __future__ import annotations

from typing import Any, Callable

from ..core.atomic import check_output
from ..core.errors import Location, SpecError


def build_file(spec_ref, overrides: list[str] | None = None, output=None, *, force: bool = False,
               phi: float | None = None, preset: str | None = None, precision: str | None = None,
               seed: int | None = None, weights=None, weights_skip=(), say: Callable[[str], None] = lambda m: None,
               warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build `spec_ref` (with `overrides`; scaled by `phi` or `preset` first) and save it to
    `output` (default NAME.keras; an existing file only with `force`). Returns the analysis
    with `build_seconds`, `output`, `precision`, `seed`, `keras_params`.

    `weights`: loaded by the one strict loader (`archspec.backends.keras.weights`; checked
    before the build, `weights_skip` globs left at their initial values, its summary line to
    `say`).

    Raises:
        SpecError: a bad spec, output or weights file (nothing is written).
    """
    import time

    from ..backends import keras as keras_backend
    from ..backends.keras.files import save_keras
    from ..core.quiet import tf_retracing_quiet
    from ..ir.pipeline import analyze, lower_spec
    from ..language import load

    if phi is not None or preset is not None:  # scaling warnings go to `warn`, not raised
        from ..resolving.compound import apply_scaling

        graph = lower_spec(apply_scaling(load(spec_ref, overrides)[0], phi, preset, warn))
    else:
        graph = lower_spec(spec_ref, overrides)
    out = check_output(output or f"{graph.name}.keras", force)
    if out.suffix != ".keras":
        raise SpecError("the output of build must end in .keras", Location(str(out)))
    say(f"building {graph.name} ({len(graph.nodes)} layers, {graph.params:,} params)")
    keras_backend.load()  # imported before the clock: build_seconds is the build (and weights load)
    t0 = time.perf_counter()
    with tf_retracing_quiet():  # counts checked by the builder; weights checked before it builds
        model = keras_backend.build_model(graph, precision=precision, seed=seed, weights=weights,
                                          weights_skip=weights_skip, say=say)
    seconds = time.perf_counter() - t0
    save_keras(model, out, graph)
    return analyze(graph) | {"build_seconds": round(seconds, 3), "output": str(out), "precision": precision or "float32",
                     "seed": seed, "keras_params": model.count_params()}
