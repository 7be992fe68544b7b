"""`archspec search`: the compound-scaling coefficients chosen by accuracy (Tan & Le 2019,
section 3.3, step 1, with the training the static `archspec scale --search` leaves out).

An Optuna study over alpha, beta, gamma at one phi (default 1): each trial scales the spec by
`archspec.resolving.compound.apply_phi` with the trial's coefficients, counts the scaled
network statically (`lower_spec`: no TensorFlow), prunes it before any training when the
coefficients break alpha * beta**2 * gamma**2 = 2 beyond the tolerance or the network exceeds
`max_macs` / `max_params`, and otherwise trains it with the recipe into its own run directory
(OUT/trials/trial-NNNN), reporting each epoch's held-out top-1 to Optuna's median pruner. The
trial's value is the held-out top-1 of the run's best checkpoint (metrics.json).

The study lives in a storage that any number of processes join (`--storage`: a SQLite file in
OUT by default, a PostgreSQL URL for many machines). `trials` is the study's total: a worker
stops when the study holds that many finished (complete or pruned) trials. A worker's
heartbeat is written every `heartbeat` seconds; a worker killed mid-trial leaves a trial that
another worker (or the next to join) marks failed after twice that and queues again with the
same coefficients; a worker stopped by Ctrl-C / SIGTERM marks its trial failed, queues its
coefficients itself and stops with one line (exit 130); the same command again goes on, the
queued trial training into a new run directory. The table, Pareto plot, HTML report and best `scaling:` block are views
(`archspec.views.search`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable

from ..core.errors import ArchspecError, MissingDependency, SpecError

DEFAULT_RANGES = {"alpha": (1.0, 1.6), "beta": (1.0, 1.3), "gamma": (1.0, 1.4)}
"""Around the paper's alpha=1.2, beta=1.1, gamma=1.15."""
STEP = 0.05  # the paper's grid; TPE samples alpha and beta on it too
TOLERANCE = 0.05  # |alpha * beta**2 * gamma**2 - 2| <= TOLERANCE * 2, as `archspec scale --search`
HEARTBEAT = 30
SAMPLERS = ("tpe", "grid")
STUDY_ATTR = "archspec"  # the study's settings, compared by every worker that joins


def parse_range(text: str) -> tuple[float, float]:
    """``"1:1.6"`` -> (1.0, 1.6); a coefficient is at least 1 (ValueError otherwise)."""
    try:
        lo, hi = (float(t) for t in str(text).split(":"))
    except ValueError:
        raise ValueError(f"expected LOW:HIGH, e.g. 1:1.6 (got {text!r})") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 1 <= lo <= hi <= 10):
        raise ValueError(f"expected 1 <= LOW <= HIGH <= 10 (got {text!r})")
    return lo, hi


def parse_size(text: str) -> int:
    """A bound on MACs or params: ``400M``, ``2.5G``, ``1e9``, ``5000000``."""
    t = str(text).strip()
    mult = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}.get(t[-1:].upper(), 1)
    try:
        n = float(t[:-1] if mult != 1 else t) * mult
    except ValueError:
        n = float("nan")
    if not (math.isfinite(n) and n >= 1):
        raise ValueError(f"expected a positive count such as 400M, 2.5G or 5000000 (got {text!r})")
    return int(n)


def parse_float(text: str) -> float:
    """A finite number > 0 (--phi, --tolerance)."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"expected a number > 0 (got {text!r})")
    return v


def command_line_options() -> list[tuple[tuple[str, ...], dict]]:
    """`archspec search`'s options after SPEC and --set: (flags, argparse keywords), each `type` a
    parser raising ValueError with the message; `from_command_line` maps them to `search`."""
    from ..core.units import parse_count

    return [(("--recipe",), {"required": True, "metavar": "R"}), (("--data",), {"required": True, "metavar": "PATH"}),
            (("--trials",), {"required": True, "type": parse_count, "metavar": "N"}),
            (("--out",), {"required": True, "metavar": "DIR"}), (("--storage",), {"metavar": "URL"}),
            (("--study",), {"metavar": "NAME"}), (("--phi",), {"type": parse_float, "default": 1.0}),
            (("--sampler",), {"choices": SAMPLERS, "default": "tpe"}),
            *((("--" + k,), {"type": parse_range, "metavar": "LOW:HIGH"}) for k in ("alpha", "beta", "gamma")),
            (("--tolerance",), {"type": parse_float, "default": TOLERANCE}),
            (("--max-macs",), {"type": parse_size, "metavar": "N"}),
            (("--max-params",), {"type": parse_size, "metavar": "N"}),
            (("--epochs",), {"type": parse_count}), (("--batch-size",), {"type": parse_count}),
            (("--recipe-set",), {"action": "append", "default": [], "metavar": "KEY=VALUE"}),
            (("--heartbeat",), {"type": parse_count, "default": HEARTBEAT, "metavar": "SECONDS"}),
            (("--write-spec",), {"metavar": "FILE"}), (("--force",), {"action": "store_true"}),
            (("--json",), {"action": "store_true"})]


def help_values() -> dict:
    """The defaults `archspec search --help` states (its words are `views.help`'s)."""
    return {"search_step": STEP, "search_tolerance": TOLERANCE, "heartbeat": HEARTBEAT,
            **{f"{k}_range": f"{lo:g}:{hi:g}" for k, (lo, hi) in DEFAULT_RANGES.items()}}


def from_command_line(a: dict) -> dict:
    """`search`'s arguments from the parsed command line (`vars(args)`)."""
    same = ("trials", "storage", "phi", "sampler", "alpha", "beta", "gamma", "tolerance", "max_macs", "max_params",
            "epochs", "batch_size", "heartbeat", "write_spec", "force")
    return {"spec_ref": a["spec"], "recipe_ref": a["recipe"], "data": a["data"], "out": a["out"],
            "study_name": a["study"], "overrides": a["set"], "recipe_overrides": a["recipe_set"],
            **{k: a[k] for k in same}}


# ---------------------------------------------------------------- storage and study


def storage_url(storage: str | None, out: Path) -> str:
    """The SQLAlchemy URL: OUT/study.db by default; ``postgresql://`` means psycopg 3 (the
    `postgresql` extra), as SQLAlchemy's own default driver (psycopg2) is not installed."""
    if not storage:
        return f"sqlite:///{(out / 'study.db').resolve()}"
    url = str(storage)
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if url.startswith("postgresql+psycopg"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            raise MissingDependency("a PostgreSQL storage needs psycopg 3: pip install 'archspec[postgresql]'")
    if not url.startswith(("sqlite:///", "postgresql+", "mysql+")):
        raise SpecError(f"--storage: expected a database URL, sqlite:///FILE or postgresql://USER@HOST/DB "
                        f"(got {shown_url(url)!r})")
    return url


def shown_url(url: str) -> str:
    """The URL without its password (printed, written into reports)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        return f"{scheme}://{cred.split(':', 1)[0]}{':***' if ':' in cred else ''}@{host}"
    return url


def open_storage(url: str, heartbeat: int):
    """An RDBStorage with heartbeats (a killed worker's trial fails after 2 x `heartbeat` and is
    queued again, same coefficients); opened again after a short wait where two processes made
    its tables at the same moment."""
    import optuna
    from optuna import storages

    kw = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = ({"heartbeat_stale_trial_callback": storages.RetryHeartbeatStaleTrialCallback(max_retry=3)}
                         if hasattr(storages, "RetryHeartbeatStaleTrialCallback")  # Optuna 4.9 and later
                         else {"failed_trial_callback": storages.RetryFailedTrialCallback(max_retry=3)})
                return storages.RDBStorage(url, engine_kwargs=kw, heartbeat_interval=heartbeat,
                                           grace_period=2 * heartbeat, **retry)
        except Exception as exc:  # noqa: BLE001 - a race on the tables, or a server that cannot be reached
            if attempt == 3:
                raise ArchspecError(f"cannot open the study storage {shown_url(url)}: "
                                    f"{' '.join(str(exc).split())[:300]}") from None
            time.sleep(0.5 + attempt)
    raise AssertionError(optuna)


class PaperGrid:
    """The paper's grid as an Optuna sampler: each trial takes a point of `points` (dicts of alpha,
    beta, gamma) that no trial of the study holds (failed ones excepted), chosen at random so that
    workers starting together rarely meet; the study stops when none is left."""

    def __new__(cls, points: list[dict], seed: int | None = None):
        import numpy as np
        import optuna

        class _Grid(optuna.samplers.BaseSampler):
            def __init__(self):
                self.points, self.rng = points, np.random.default_rng(seed)

            def infer_relative_search_space(self, study, trial):
                return {}

            def sample_relative(self, study, trial, search_space):
                return {}

            def before_trial(self, study, trial):
                if trial.params or "fixed_params" in trial.system_attrs:  # queued again: its own coefficients
                    return
                free = _free_points(study)
                if not free:  # another worker took the last point at the same moment
                    free = self.points
                point = free[int(self.rng.integers(len(free)))]
                study._storage.set_trial_system_attr(trial._trial_id, "archspec_grid_point", point)

            def sample_independent(self, study, trial, name, distribution):
                return trial.system_attrs["archspec_grid_point"][name]

        return _Grid()


def _free_points(study) -> list[dict]:
    held = {_key(t.params or t.system_attrs.get("fixed_params") or {})
            for t in study.get_trials(deepcopy=False) if t.state.name != "FAIL"}
    return [p for p in study.sampler.points if _key(p) not in held]


def _key(params: dict) -> tuple:
    return tuple(round(float(params.get(k, 0)), 6) for k in ("alpha", "beta", "gamma"))


# ---------------------------------------------------------------- one trial


def with_coefficients(spec, alpha: float, beta: float, gamma: float):
    """`spec` with these ``scaling.coefficients`` (what the written `scaling:` block says)."""
    from ..language.schema import Coefficients

    c = Coefficients(alpha=alpha, beta=beta, gamma=gamma)
    return spec.model_copy(update={"scaling": spec.scaling.model_copy(update={"coefficients": c})})


def scaled_spec(spec, alpha: float, beta: float, gamma: float, phi: float):
    """`spec` scaled at `phi` by these coefficients (`apply_phi` of `with_coefficients`: what
    the written `scaling:` block gives)."""
    from ..resolving.compound import apply_scaling

    return apply_scaling(with_coefficients(spec, alpha, beta, gamma), phi)


def static_check(spec, params: dict, cfg: dict) -> dict:
    """The trial's network counted (no TensorFlow): ``{flops_factor, params, macs, resolution,
    network, spec}`` and ``pruned``: why it is pruned before training (None when it trains)."""
    from ..ir.pipeline import lower_spec
    from ..language.rounding import flops_factor

    a, b, g = params["alpha"], params["beta"], params["gamma"]
    f = flops_factor(a, b, g)
    info: dict[str, Any] = {"flops_factor": f, "params": None, "macs": None, "resolution": None, "pruned": None}
    try:
        scaled = scaled_spec(spec, a, b, g, cfg["phi"])
        graph = lower_spec(scaled)
    except SpecError as exc:
        info["pruned"] = f"the scaled network does not work: {exc.one_line()}"
        return info
    info.update(params=graph.params, macs=graph.macs, resolution=list(scaled.input.shape[:2]), spec=scaled,
                network=graph.meta.get("spec_sha256"))
    tol = cfg["tolerance"]
    if abs(f - 2.0) > tol * 2.0:
        info["pruned"] = f"alpha * beta**2 * gamma**2 = {f:.3f}, outside 2 +- {tol * 2:g}"
    elif cfg.get("max_macs") and graph.macs > cfg["max_macs"]:
        info["pruned"] = f"{graph.macs:,} MACs > --max-macs {cfg['max_macs']:,}"
    elif cfg.get("max_params") and graph.params > cfg["max_params"]:
        info["pruned"] = f"{graph.params:,} params > --max-params {cfg['max_params']:,}"
    return info


def suggest(trial, cfg: dict) -> dict:
    """alpha, beta and gamma on the paper's step (0.05), gamma among the points where the
    constraint holds given alpha and beta (its whole range where none does: the trial is then
    pruned); the grid sampler's points are taken as they are."""
    r = cfg["ranges"]
    if cfg["sampler"] == "grid":
        return {k: round(trial.suggest_float(k, *r[k]), 6) for k in ("alpha", "beta", "gamma")}
    a = trial.suggest_float("alpha", *_on_step(r["alpha"]), step=STEP)
    b = trial.suggest_float("beta", *_on_step(r["beta"]), step=STEP)
    lo, hi = _on_step(r["gamma"])
    band = [math.sqrt(2 * (1 + s * cfg["tolerance"]) / (a * b * b)) for s in (-1, 1)]
    glo = lo + math.ceil(max(0.0, band[0] - lo) / STEP - 1e-9) * STEP  # the band's points of gamma's grid
    ghi = lo + math.floor((min(hi, band[1]) - lo) / STEP + 1e-9) * STEP
    if glo <= ghi:
        lo, hi = glo, ghi
    return {k: round(v, 6) for k, v in (("alpha", a), ("beta", b), ("gamma", trial.suggest_float("gamma", lo, hi,
                                                                                                     step=STEP)))}


def _on_step(r: tuple[float, float]) -> tuple[float, float]:
    lo, hi = r
    return lo, lo + math.floor((hi - lo) / STEP + 1e-9) * STEP


def pruning_callback(trial, monitor: str):
    """A Keras callback reporting each epoch's `monitor` to the trial; raises TrialPruned when the
    median pruner says so (the training loop ends the run there, its lock released)."""
    import optuna

    from ..backends.keras import keras as quiet_keras

    keras = quiet_keras()  # the first import of Keras (and TensorFlow) with their start-up notices filtered

    class Prune(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            v = (logs or {}).get(monitor)
            if v is None or not math.isfinite(float(v)):
                return
            trial.report(float(v), epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch + 1}: {monitor} {float(v):.4f} below the median of "
                                         f"earlier trials at that epoch")

    return Prune()


# ---------------------------------------------------------------- the worker


def _config(spec, recipe_ref, data, *, phi, sampler, ranges, tolerance, max_macs, max_params, epochs, batch_size,
            trials, recipe_overrides) -> dict:
    return {"spec": spec.name, "phi": phi, "sampler": sampler, "ranges": {k: list(v) for k, v in ranges.items()},
            "tolerance": tolerance, "max_macs": max_macs, "max_params": max_params, "epochs": epochs,
            "batch_size": batch_size, "recipe": str(recipe_ref), "recipe_overrides": list(recipe_overrides or []),
            "trials": trials, "data": Path(data).name}


def _check_inputs(spec, recipe_ref, data, recipe_overrides, phi, trials, tolerance, epochs, sampler) -> None:
    """The search's own rules on its inputs (the training's are the precheck's), before anything is made."""
    from ..resolving.compound import coefficients_of
    from .recipe import load_recipe

    if sampler not in SAMPLERS:
        raise SpecError(f"--sampler must be one of {', '.join(SAMPLERS)} (got {sampler!r})")
    if not (isinstance(trials, int) and trials >= 1):
        raise SpecError(f"--trials must be an integer >= 1 (got {trials!r})")
    if not (math.isfinite(phi) and phi > 0):
        raise SpecError(f"--phi must be a number > 0 (got {phi!r})")
    if not 0 < tolerance < 1:
        raise SpecError(f"--tolerance must be in (0, 1) (got {tolerance!r})")
    if epochs is not None and epochs < 1:
        raise SpecError(f"--epochs must be >= 1 (got {epochs!r})")
    coefficients_of(spec)  # a spec without `scaling:` is a located error
    recipe, raw = load_recipe(recipe_ref, list(recipe_overrides or []))
    if recipe.data.image_size is not None:
        raise SpecError("the search scales the input resolution (gamma): leave the recipe's data.image_size out, "
                        "so the images are read at each scaled network's size", raw.locate(("data", "image_size"))
                        if raw is not None else None, "data.image_size")
    if not _has_held_out(data, recipe.data.validation_split):
        raise SpecError("the search ranks networks by held-out top-1: the data has no test split (x_test, "
                        "test_batch, CIFAR's test) and the recipe's data.validation_split is 0; set "
                        "--recipe-set data.validation_split=0.2", None, str(data))
    if "top1" not in recipe.metrics:
        raise SpecError("the search ranks networks by top-1: the recipe's metrics must include top1", None, "metrics")


def _has_held_out(data, validation_split: float) -> bool:
    p = Path(data)
    if validation_split and validation_split > 0:
        return True
    if p.suffix == ".npz" and p.is_file():
        import zipfile

        try:
            with zipfile.ZipFile(p) as z:
                return "x_test.npy" in z.namelist()
        except (OSError, zipfile.BadZipFile):
            return True  # the training's own check says what is wrong with it
    return (p / "test_batch").is_file() or (p / "test").is_file()


def _prepare_out(out: Path) -> None:
    from ..core.atomic import write_text_atomic

    marker = out / "search.json"
    if out.exists() and not out.is_dir():
        raise SpecError("--out: exists and is not a directory", None, str(out))
    ours = ("search.json", "study.db", "trials", "trials.csv", "best-scaling.yaml", "pareto.png", "report.html")
    theirs = [p for p in out.iterdir() if not p.name.lstrip(".").startswith(ours)] if out.is_dir() else []
    if theirs and not marker.is_file():  # (another worker starting at the same moment makes only ours)
        raise SpecError("--out: a directory that is not a search's (no search.json) and not empty; name a new "
                        "one, or the directory of the search to join", None, str(out))
    out.mkdir(parents=True, exist_ok=True)
    if not marker.is_file():
        write_text_atomic(marker, '{"archspec": "search"}\n')


def search(spec_ref, recipe_ref, data, out, *, trials: int, storage: str | None = None,
           study_name: str | None = None, phi: float = 1.0, sampler: str = "tpe",
           alpha: tuple[float, float] | None = None, beta: tuple[float, float] | None = None,
           gamma: tuple[float, float] | None = None, tolerance: float = TOLERANCE, max_macs: int | None = None,
           max_params: int | None = None, epochs: int | None = None, batch_size: int | None = None,
           overrides: list[str] | None = None, recipe_overrides: list[str] | None = None,
           heartbeat: int = HEARTBEAT, seed: int | None = None, write_spec: str | None = None, force: bool = False,
           say: Callable[[str], None] = lambda m: None) -> dict:
    """Join (or create) the study and run trials until it holds `trials` finished ones, then
    write the result into `out` (report.html, pareto.png, trials.csv, best-scaling.yaml and,
    with `write_spec`, the spec with the best coefficients). See the module's docstring.

    Args:
        spec_ref: a spec path or bundled name with a `scaling:` section (not already scaled).
        recipe_ref, data, epochs, batch_size, recipe_overrides: as `archspec.training.loop.train`.
        out: the search directory (its run directories, the default SQLite storage, the report).
        trials: the study's total of finished (complete or pruned) trials.
        storage: a database URL (sqlite:///..., postgresql://...); default OUT/study.db.
        study_name: the study (default: the spec's name with "-search").
        phi: the compound coefficient the networks are scaled at.
        sampler: "tpe" or "grid" (the paper's grid: step 0.05 under the constraint, in the ranges).
        alpha, beta, gamma: (low, high) ranges; default `DEFAULT_RANGES`.
        tolerance: relative distance of alpha * beta**2 * gamma**2 from 2 beyond which a trial is pruned.
        max_macs, max_params: bounds beyond which a trial is pruned (static counts).
        heartbeat: seconds between a worker's heartbeats (a killed worker's trial is failed and
            queued again after twice that).
        seed: the sampler's seed (None: random, so that workers do not draw alike).
        write_spec: a path for the spec with the best coefficients in its `scaling:` block.

    Returns:
        ``{"study", "storage", "trials": [row, ...], "best": row or None, "scaling_block", "wrote", ...}``.
    """
    from ..core.atomic import check_output
    from ..language import load

    out = Path(out)
    spec = load(spec_ref, overrides)[0]
    ranges = {**DEFAULT_RANGES, **{k: tuple(v) for k, v in (("alpha", alpha), ("beta", beta), ("gamma", gamma)) if v}}
    _check_inputs(spec, recipe_ref, data, recipe_overrides, float(phi), trials, tolerance, epochs, sampler)
    if write_spec:
        check_output(write_spec, force)
    if not Path(data).exists():
        raise SpecError("--data: no such file or directory", None, str(data))
    from . import loop
    from .precheck import check_train

    check_train(spec, recipe_ref, data, out / "trials" / "trial-check", recipe_overrides=recipe_overrides, epochs=epochs,
                batch_size=batch_size, rules=loop)  # the data against the spec, all at once, before TensorFlow
    if heartbeat < 1:
        raise SpecError(f"--heartbeat must be >= 1 second (got {heartbeat!r})")
    cfg = _config(spec, recipe_ref, data, phi=float(phi), sampler=sampler, ranges=ranges, tolerance=tolerance,
                  max_macs=max_macs, max_params=max_params, epochs=epochs, batch_size=batch_size, trials=trials,
                  recipe_overrides=recipe_overrides)
    cfg["ranges"] = {k: tuple(v) for k, v in ranges.items()}
    points = None
    if sampler == "grid":
        points = grid_points(spec, ranges, tolerance)
        if not points:
            raise SpecError(f"the paper's grid (step {STEP}) holds no point in the ranges {ranges} under "
                            f"alpha * beta**2 * gamma**2 = 2 +- {tolerance * 2:g}: widen --alpha/--beta/--gamma")
    url = storage_url(storage, out)
    _prepare_out(out)
    import optuna  # a dependency of archspec

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna.study._optimize").addFilter(_ONE_LINE)  # a failed trial: Optuna's line, no traceback
    name = study_name or f"{spec.name}-search"
    study = _study(optuna, open_storage(url, heartbeat), name, cfg, sampler, points, seed)
    say(f"study {name!r} in {shown_url(url)}: {trials} trial{'s' if trials != 1 else ''} in all, alpha/beta/gamma at phi={float(phi):g}, "
        f"{sampler} sampler")
    with _sigterm_as_interrupt():
        _work(optuna, study, spec, recipe_ref, data, out, cfg, trials, heartbeat, say)
    return result(study, spec, cfg, out, url, write_spec=write_spec, force=force)


def grid_points(spec, ranges: dict, tolerance: float) -> list[dict]:
    """The paper's grid (`archspec.views.sweeps.search_grid`: step 0.05, the constraint) within `ranges`."""
    from ..views.sweeps import search_grid

    cands = search_grid(spec, step=STEP, tolerance=tolerance, max_alpha=max(1.0, ranges["alpha"][1]))
    inside = lambda c: all(ranges[k][0] - 1e-9 <= c[k] <= ranges[k][1] + 1e-9 for k in ("alpha", "beta", "gamma"))
    return [{k: c[k] for k in ("alpha", "beta", "gamma")} for c in cands if inside(c)]


def _study(optuna, storage, name: str, cfg: dict, sampler: str, points, seed):
    import json

    smp = PaperGrid(points, seed) if sampler == "grid" else optuna.samplers.TPESampler(seed=seed, n_startup_trials=5)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", sampler=smp, pruner=pruner,
                                load_if_exists=True)
    mine = json.loads(json.dumps(cfg))
    theirs = study.user_attrs.get(STUDY_ATTR)
    if theirs is None:
        study.set_user_attr(STUDY_ATTR, mine)
    else:
        differ = [k for k in mine if k not in ("trials", "data") and mine[k] != theirs.get(k)]
        if differ:
            k = differ[0]
            raise SpecError(f"--study {name!r} is another search: its {k} is {theirs.get(k)!r}, this command's is "
                            f"{mine[k]!r}; join it with the same spec, recipe and options, or name another study")
    return study


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM stops the worker as Ctrl-C does (a KeyboardInterrupt), between trials as well as
    in one (the training loop's own handler takes both while a network trains)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum, frame):
        raise KeyboardInterrupt("SIGTERM")
    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class Stopped(ArchspecError):
    """The worker was stopped (Ctrl-C, SIGTERM) during a trial, which was failed and queued again."""

    exit_code = 130


class _OneLineFailures(logging.Filter):
    """Optuna's warning for a failed trial without its traceback (the trial's failure is an
    outcome of the search, said in one line), none for a trial this worker was stopped in
    (`Stopped` says it), and without the "failed with value None" line after it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Stopped) or "failed with value None" in str(record.msg):
            return False
        if exc is not None:
            record.exc_info, record.exc_text = None, None
        return True


_ONE_LINE = _OneLineFailures()


class Surplus(ArchspecError):
    """A trial another worker's made unnecessary (both started the study's last one at once)."""


def _failed(optuna, study) -> int:
    """Failed trials, surplus ones left out."""
    return sum(not str(t.user_attrs.get("reason", "")).startswith("surplus")
               for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))


def _counts(study) -> dict[str, int]:
    out = {"finished": 0, "RUNNING": 0, "WAITING": 0}
    for t in study.get_trials(deepcopy=False):
        if t.state.name in ("COMPLETE", "PRUNED"):
            out["finished"] += 1
        elif t.state.name in out:
            out[t.state.name] += 1
    return out


def _work(optuna, study, spec, recipe_ref, data, out, cfg, trials, heartbeat, say) -> None:
    """Run trials until the study holds `trials` finished ones. While the others' running trials
    would make up the total, wait (a running trial may yet fail and come back to the queue)."""
    from optuna.storages import fail_stale_trials

    def objective(trial):
        return _objective(optuna, trial, study, spec, recipe_ref, data, out, cfg, trials, say)

    from .loop import CollapsedError, DivergedError

    waited, failures = False, 0
    while True:
        n = _counts(study)
        if n["finished"] >= trials:
            return
        if cfg["sampler"] == "grid" and not n["WAITING"] and not _free_points(study):
            say(f"the paper's grid within the ranges is exhausted ({len(study.sampler.points)} points): stopping at "
                f"{n['finished']} finished trials")
            return
        if n["finished"] + n["RUNNING"] >= trials and not n["WAITING"]:
            if not waited:
                say(f"{n['finished']} of {trials} trials finished, {n['RUNNING']} running in other workers: waiting "
                    f"for them (a failed one is queued again)")
                waited = True
            time.sleep(min(2.0, heartbeat / 2))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                fail_stale_trials(study)  # a killed worker's trial: failed, queued again
            continue
        waited = False
        before = _failed(optuna, study)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            # a network that diverged or collapsed is a failed trial; anything else (bad input) ends the worker
            study.optimize(objective, n_trials=1, catch=(DivergedError, CollapsedError, Surplus), gc_after_trial=True)
        failed = _failed(optuna, study) > before
        failures = failures + 1 if failed else 0
        if failures >= 3:
            raise ArchspecError("3 trials in a row failed in this worker (the network diverged or collapsed): "
                                "the recipe does not train these networks; see the runs in " + str(out / "trials"))


def _objective(optuna, trial, study, spec, recipe_ref, data, out, cfg, trials, say):
    """One trial (`_trial`); stopped by Ctrl-C or SIGTERM anywhere in it, the trial is failed
    (by Optuna, as the exception passes) and its coefficients queued again, as a killed
    worker's are, and the worker stops (`Stopped`, exit 130)."""
    from .loop import Interrupted

    try:
        return _trial(optuna, trial, study, spec, recipe_ref, data, out, cfg, trials, say)
    except (KeyboardInterrupt, Interrupted) as exc:
        raise _stopped(trial, study, exc, trials) from None


def _stopped(trial, study, exc: BaseException, trials: int) -> Stopped:
    how = str(exc).split(":", 1)[0].strip() if str(exc).startswith("SIG") else "SIGINT"
    params = trial.params or trial.system_attrs.get("fixed_params")
    if params and len(params) == 3:  # queued again, as after a kill (one that never had them draws anew)
        study.enqueue_trial(dict(params), user_attrs={"retry_of": trial.number})
        queued = "its coefficients (" + ", ".join(f"{k}={float(v):g}" for k, v in params.items()) + ") queued again"
    else:
        queued = "it had no coefficients yet"
    run = trial.user_attrs.get("run")
    trial.set_user_attr("reason", f"stopped by {how}; queued again" if params else f"stopped by {how}")
    finished = _counts(study)["finished"]
    return Stopped(f"stopped by {how} in trial {trial.number}: the trial failed, {queued}"
                   + (f" (its run directory {run} stays as it is, not trained again)" if run else "")
                   + f"; {finished} of {trials} trials finished: run the same `archspec search` again to go on")


def _trial(optuna, trial, study, spec, recipe_ref, data, out, cfg, trials, say):
    ahead = [t for t in study.get_trials(deepcopy=False)
             if t.number < trial.number and t.state.name in ("COMPLETE", "PRUNED", "RUNNING")]
    if len(ahead) >= trials:  # another worker started the last trial at the same moment
        trial.set_user_attr("reason", f"surplus: started as the study reached its {trials} trials; not run")
        raise Surplus(trial.user_attrs["reason"])  # failed (not finished), so the total stays `trials`
    params = suggest(trial, cfg)
    same = next((t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                 if _key(t.params) == _key(params)), None)
    if same is not None:  # TPE on the 0.05 grid draws a point again: its network was trained (Optuna's FAQ)
        for k in ("flops_factor", "params", "macs", "resolution", "run", "epochs"):
            trial.set_user_attr(k, same.user_attrs.get(k))
        trial.set_user_attr("reason", f"the coefficients of trial {same.number}: its result, not trained again")
        say(f"trial {trial.number}: the coefficients of trial {same.number}, not trained again")
        return float(same.value)
    info = static_check(spec, params, cfg)
    for k in ("flops_factor", "params", "macs", "resolution"):
        trial.set_user_attr(k, info[k])
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    coeff = ", ".join(f"{k}={v:.4g}" for k, v in params.items())
    if info["pruned"]:
        trial.set_user_attr("reason", info["pruned"])
        say(f"trial {trial.number} ({coeff}): pruned before training: {info['pruned']}")
        raise optuna.TrialPruned(info["pruned"])
    from .loop import train

    run = out / "trials" / f"trial-{trial.number:04d}"
    trial.set_user_attr("run", str(run))
    say(f"trial {trial.number} ({coeff}): {info['params']:,} params, {info['macs']:,} MACs, input "
        f"{info['resolution'][0]}x{info['resolution'][1]}: training into {run}")
    try:
        metrics = train(info["spec"], recipe_ref, data, run, recipe_overrides=cfg["recipe_overrides"],
                        epochs=cfg["epochs"], batch_size=cfg["batch_size"], callbacks=[pruning_callback(trial, "val_top1")],
                        say=lambda m: None, verbose=0)
    except optuna.TrialPruned as exc:
        trial.set_user_attr("reason", str(exc))
        say(f"trial {trial.number}: pruned: {exc}")
        raise
    acc = metrics.get("val_top1")
    if acc is None:
        raise ArchspecError(f"trial {trial.number}: the run reported no held-out top-1 ({run}/metrics.json)")
    trial.set_user_attr("epochs", metrics.get("epochs_completed"))
    say(f"trial {trial.number}: held-out top-1 {acc:.4f}")
    return float(acc)


# ---------------------------------------------------------------- the result


def trial_rows(study) -> list[dict]:
    """One row per trial: number, alpha, beta, gamma, flops_factor, macs, params, resolution,
    accuracy (the value; a pruned trial's last reported epoch), state, reason, run."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        p = t.params or t.system_attrs.get("fixed_params") or {}
        acc = t.value if t.state.name == "COMPLETE" else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        u = t.user_attrs
        c = {k: (round(float(p[k]), 6) if k in p else None) for k in ("alpha", "beta", "gamma")}
        rows.append({"trial": t.number, **c,
                     "flops_factor": u.get("flops_factor"), "macs": u.get("macs"), "params": u.get("params"),
                     "resolution": u.get("resolution"), "accuracy": acc, "state": t.state.name.lower(),
                     "reason": u.get("reason") or ("killed or failed; queued again" if t.state.name == "FAIL" else None),
                     "run": u.get("run"), "retry_of": u.get("retry_of"), "epochs": u.get("epochs")})
    return rows


def scaling_block(spec, best: dict) -> dict:
    """The spec's `scaling:` section with the best trial's coefficients (``{"scaling": {...}}``)."""
    sc = spec.scaling.model_dump(mode="json", exclude_defaults=True, exclude={"applied"})
    sc["coefficients"] = {k: round(float(best[k]), 6) for k in ("alpha", "beta", "gamma")}
    return {"scaling": sc}


def result(study, spec, cfg: dict, out: Path, url: str, *, write_spec=None, force=False) -> dict:
    """The study's result written into `out`: trials.csv, best-scaling.yaml, pareto.png, report.html
    (and `write_spec`)."""
    import yaml

    from ..core.atomic import write_bytes_atomic, write_text_atomic
    from ..language import dump_spec
    from ..views import search as view
    from ..views.diff import MACS_NOTE

    rows = trial_rows(study)
    done = [r for r in rows if r["state"] == "complete"]
    best = max(done, key=lambda r: (r["accuracy"], -(r["macs"] or 0))) if done else None
    r: dict[str, Any] = {"study": study.study_name, "storage": shown_url(url), "phi": cfg["phi"],
                         "sampler": cfg["sampler"], "ranges": cfg["ranges"], "tolerance": cfg["tolerance"],
                         "spec": spec.name, "trials": rows, "best": best, "pareto": view.pareto(done),
                         "finished": sum(x["state"] in ("complete", "pruned") for x in rows),
                         "macs_note": MACS_NOTE, "wrote": []}
    block = scaling_block(spec, best) if best else None
    r["scaling_block"] = yaml.safe_dump(block, sort_keys=False, default_flow_style=None) if best else None
    write_text_atomic(out / "trials.csv", view.trials_csv(rows))
    r["wrote"].append(str(out / "trials.csv"))
    if best:
        write_text_atomic(out / "best-scaling.yaml", f"# archspec search: study {study.study_name!r}, best trial "
                                                     f"{best['trial']} (held-out top-1 {best['accuracy']:.4f}); "
                                                     f"paste into the spec\n" + r["scaling_block"])
        r["wrote"].append(str(out / "best-scaling.yaml"))
        if write_spec:
            new = with_coefficients(spec, **block["scaling"]["coefficients"])
            write_text_atomic(write_spec, dump_spec(new, f"archspec search: {spec.name} with the coefficients of "
                                                         f"trial {best['trial']} (study {study.study_name!r}); "
                                                         f"scale it: archspec scale FILE --phi {cfg['phi']:g}"),
                              force=force, option="--force")
            r["wrote"].append(str(write_spec))
    png = view.pareto_png(r)
    write_bytes_atomic(out / "pareto.png", png)
    write_text_atomic(out / "report.html", view.search_html(r, png))
    r["wrote"] += [str(out / "pareto.png"), str(out / "report.html")]
    return r
