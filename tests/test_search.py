"""`archspec search` (issue 31, part 1): an Optuna study over the compound-scaling coefficients,
on generated images and a tiny spec whose `scaling:` block changes depth, width and resolution.
The study is read back with Optuna's own API; counts are checked against the networks the
trials trained (their run directories' spec.yaml and Keras' count of best.keras); the written
`scaling:` block, pasted into the spec, gives the best trial's network. Processes are real where
the process boundary is the point: two workers on one SQLite study, two on a real PostgreSQL
server (started here with initdb + pg_ctl), a worker killed mid-trial."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from archspec.cli import main

optuna = pytest.importorskip("optuna")

REPO = Path(__file__).resolve().parents[1]

SPEC = textwrap.dedent("""\
    format: 1
    name: tiny
    input:
      shape: [16, 16, 3]
      preprocessing: [{type: rescaling, name: scale, scale: 0.0039215686}]
    defaults: {activation: relu, batch_norm: {momentum: 0.5}}
    stem:
      - {type: conv, name: c1, filters: 8, kernel: 3, padding: same, bn: true}
    stages:
      - name: s1
        blocks: [{type: conv, filters: 16, kernel: 3, stride: 2, padding: same, bn: true, repeats: 2}]
    head:
      classes: 4
      layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]
    scaling: {divisor: 4, resolution_divisor: 4, coefficients: {alpha: 1.2, beta: 1.1, gamma: 1.15}}
    """)

RECIPE = textwrap.dedent("""\
    format: 1
    name: quick
    optimizer: {name: adam, learning_rate: 0.01}
    epochs: 2
    data: {batch_size: 32}
    callbacks:
      checkpoint: {monitor: val_top1, mode: max}
    """)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """The spec, the recipe and 16x16 generated images of 4 classes (noisy prototypes) as an .npz."""
    d = tmp_path_factory.mktemp("search_task")
    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, (4, 16, 16, 3))

    def make(n):
        y = rng.integers(0, 4, n)
        return np.clip(protos[y] + rng.integers(-90, 90, (n, 16, 16, 3)), 0, 255).astype("uint8"), y

    (xt, yt), (xv, yv) = make(384), make(64)
    np.savez(d / "data.npz", x_train=xt, y_train=yt, x_test=xv, y_test=yv)
    (d / "tiny.yaml").write_text(SPEC)
    (d / "quick.yaml").write_text(RECIPE)
    return d


def argv(task, out, *extra) -> list[str]:
    return ["search", str(task / "tiny.yaml"), "--recipe", str(task / "quick.yaml"), "--data",
            str(task / "data.npz"), "--out", str(out), *map(str, extra)]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "-1"}


def worker(task, out, *extra, terminal: bool = False) -> subprocess.Popen:
    """A worker process; `terminal`: as a person's shell starts it (TensorFlow's C++ logging at
    its default level, so any native start-up notice that is not filtered shows)."""
    e = env()
    if terminal:
        e.pop("TF_CPP_MIN_LOG_LEVEL")
    return subprocess.Popen([sys.executable, "-m", "archspec.cli", *argv(task, out, *extra)], env=e,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p: subprocess.Popen, timeout=240, quiet: bool = False) -> str:
    """stdout of a worker that succeeded; `quiet`: its stderr holds archspec's lines only."""
    import re

    from archspec.core.quiet import NOISE

    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, err[-3000:]
    if quiet:
        noisy = [ln for ln in err.splitlines() if not ln.startswith("archspec: ") and ln.strip()
                 or NOISE.search(ln) or re.search(r"tensorflow|absl|oneDNN|XNNPACK|cuda|xla|Traceback", ln, re.I)]
        assert noisy == [], noisy
    return out


def trials_of(storage: str, study: str = "tiny-search"):
    return optuna.load_study(study_name=study, storage=storage).get_trials()


def finished(trials) -> list:
    return [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]


def trained_once(trials, epochs: int) -> None:
    """Every trial that trained has its own run directory, trained once: its history has one
    row per epoch it ran (a second training would have been refused or would have rows twice)."""
    runs = [Path(t.user_attrs["run"]) for t in trials if "run" in t.user_attrs and t.state.name == "COMPLETE"
            and not str(t.user_attrs.get("reason", "")).startswith("the coefficients of trial")]
    assert len(set(runs)) == len(runs)
    for run in runs:
        assert run.name == f"trial-{int(run.name.split('-')[1]):04d}"
        rows = (run / "history.csv").read_text().strip().splitlines()[1:]
        assert [int(r.split(",")[0]) for r in rows] == list(range(len(rows))) and len(rows) == epochs, rows


# ---------------------------------------------------------------- one process


def test_two_trial_study_reports_counts_best_block_and_plot(task, tmp_path, capsys):
    from PIL import Image

    import archspec
    from archspec.ir.pipeline import lower_spec
    from archspec.resolving.compound import apply_phi

    out = tmp_path / "s"
    assert main(argv(task, out, "--trials", 2, "--epochs", 2, "--sampler", "grid", "--write-spec",
                     tmp_path / "best.yaml", "--json")) == 0
    r = json.loads(capsys.readouterr().out)
    trials = trials_of(f"sqlite:///{out / 'study.db'}")
    assert len(trials) == 2 and len(finished(trials)) == 2
    trained_once(trials, 2)
    rows = {x["trial"]: x for x in r["trials"]}
    for t in trials:  # each row is the study's trial: its coefficients, value and state
        x = rows[t.number]
        assert x["state"] == t.state.name.lower() and [x[k] for k in ("alpha", "beta", "gamma")] == \
            pytest.approx([t.params[k] for k in ("alpha", "beta", "gamma")])
        assert abs(t.params["alpha"] * t.params["beta"] ** 2 * t.params["gamma"] ** 2 - 2) <= 0.1  # the paper's grid
        if t.state.name == "COMPLETE":
            run = Path(t.user_attrs["run"])
            metrics = json.loads((run / "metrics.json").read_text())
            assert x["accuracy"] == t.value == metrics["val_top1"]
            g = lower_spec(str(run / "spec.yaml"))  # the network the trial trained
            assert (x["macs"], x["params"]) == (g.macs, g.params)
            import keras

            assert keras.saving.load_model(run / "best.keras", compile=False).count_params() == x["params"]
    best = r["best"]
    assert best["accuracy"] == max(t.value for t in trials if t.value is not None)
    # the scaling block, pasted into the spec, scales it to the best trial's network
    block = (out / "best-scaling.yaml").read_text()
    pasted = SPEC.replace(SPEC.splitlines()[-1], "") + block
    (tmp_path / "pasted.yaml").write_text(pasted)
    mine = lower_spec(apply_phi(archspec.load(str(tmp_path / "pasted.yaml")), 1))
    trained = lower_spec(str(Path(best["run"]) / "spec.yaml"))
    assert [(n.name, n.shape) for n in mine.nodes] == [(n.name, n.shape) for n in trained.nodes]
    assert (mine.params, mine.macs) == (trained.params, trained.macs)
    written = archspec.load(str(tmp_path / "best.yaml"))
    assert lower_spec(apply_phi(written, 1)).params == trained.params
    # the report: the best coefficients, every trial, the plot inlined; the PNG
    html = (out / "report.html").read_text()
    assert f"trial {best['trial']}: &alpha;={best['alpha']:.4g}" in html and "data:image/png;base64," in html
    assert html.count("<tr><td class=\"n\">") == 2
    with Image.open(out / "pareto.png") as im:
        assert im.format == "PNG" and im.size == (720, 480)
        assert (214, 39, 40) in {c for _, c in im.convert("RGB").getcolors(1 << 20)}  # the best point, red
    assert r["pareto"] and best["trial"] in r["pareto"]
    # the worker that joins a study holding its trials trains nothing more, and says so in the table
    assert main(argv(task, out, "--trials", 2, "--epochs", 2, "--sampler", "grid")) == 0
    assert len(trials_of(f"sqlite:///{out / 'study.db'}")) == 2
    assert "paste into the spec" in capsys.readouterr().out
    # coefficients drawn again (TPE on the 0.05 grid does) take the trained trial's result, untrained
    first = trials[0]
    optuna.load_study(study_name="tiny-search", storage=f"sqlite:///{out / 'study.db'}").enqueue_trial(first.params)
    assert main(argv(task, out, "--trials", 3, "--epochs", 2, "--sampler", "grid")) == 0
    again = trials_of(f"sqlite:///{out / 'study.db'}")[-1]
    assert again.state.name == "COMPLETE" and again.value == first.value and again.params == first.params
    assert again.user_attrs["reason"] == f"the coefficients of trial {first.number}: its result, not trained again"
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(Path(t.user_attrs["run"]).name for t in trials)
    trained_once(trials_of(f"sqlite:///{out / 'study.db'}"), 2)


def test_pruned_before_training_without_tensorflow(task, tmp_path):
    """Coefficients that break the constraint, and networks over --max-macs, are pruned with their
    reason from static counts: no TensorFlow imported, no run directory made."""
    code = textwrap.dedent("""\
        import sys
        from archspec.cli import main
        a, d = sys.argv[1:-1], sys.argv[-1]
        assert main(a + ["--out", d + "/c", "--trials", "3", "--alpha", "1.5:1.6", "--beta", "1.3:1.3"]) == 0
        assert main(a + ["--out", d + "/g", "--trials", "2", "--sampler", "grid", "--max-macs", "100K"]) == 0
        bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')]
        assert not bad, bad[:5]
        """)
    base = argv(task, tmp_path)[:-2] + ["--epochs", "1", "--json"]
    r = subprocess.run([sys.executable, "-c", code, *base, str(tmp_path)], env=env(), capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    constraint = trials_of(f"sqlite:///{tmp_path / 'c' / 'study.db'}")
    assert [t.state.name for t in constraint] == ["PRUNED"] * 3
    for t in constraint:
        f = t.params["alpha"] * t.params["beta"] ** 2 * t.params["gamma"] ** 2
        assert abs(f - 2) > 0.1 and "outside 2 +- 0.1" in t.user_attrs["reason"]
    big = trials_of(f"sqlite:///{tmp_path / 'g' / 'study.db'}")
    assert [t.state.name for t in big] == ["PRUNED"] * 2
    assert all(t.user_attrs["macs"] > 100_000 and "--max-macs" in t.user_attrs["reason"] for t in big)
    assert not (tmp_path / "c" / "trials").exists() and not (tmp_path / "g" / "trials").exists()


def test_bad_input_is_one_line_before_anything_is_written(task, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # a usage error of the parser
        main(argv(task, tmp_path / "o", "--trials", 2, "--alpha", "0.5:1"))
    assert exc.value.code == 2 and "expected 1 <= LOW <= HIGH" in capsys.readouterr().err
    assert main(argv(task, tmp_path / "o", "--trials", 2, "--storage", "redis://x")) == 2
    err = capsys.readouterr().err
    assert "expected a database URL" in err and len(err.strip().splitlines()) == 1
    assert main(["search", "resnet18", "--recipe", str(task / "quick.yaml"), "--data", str(task / "data.npz"),
                 "--out", str(tmp_path / "o"), "--trials", "2"]) == 2
    assert "has no scaling section" in capsys.readouterr().err
    (tmp_path / "sized.yaml").write_text(RECIPE.replace("data: {batch_size: 32}", "data: {image_size: [16, 16]}"))
    assert main(argv(task, tmp_path / "o", "--trials", 2)[:3] + [str(tmp_path / "sized.yaml")]
                + argv(task, tmp_path / "o")[4:] + ["--trials", "2"]) == 2
    assert "data.image_size" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((8, 16, 16, 3), "uint8"), y_train=np.full(8, 7),
             x_test=np.zeros((2, 16, 16, 3), "uint8"), y_test=np.zeros(2, "int64"))
    assert main(argv(task, tmp_path / "o", "--trials", 2)[:5] + [str(tmp_path / "bad.npz")]
                + argv(task, tmp_path / "o")[6:] + ["--trials", "2"]) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err and "7" in err, err
    assert not (tmp_path / "o").exists()


def test_median_pruner_stops_a_trial_inside_the_training_loop(task, tmp_path):
    """The pruning callback reports each epoch's held-out top-1 to the trial; below the median of
    earlier trials at that epoch it raises TrialPruned, which ends the run after that epoch (its
    checkpoint and history row written, its lock released)."""
    from archspec.language import load
    from archspec.training.loop import RunLock, train
    from archspec.training.search import pruning_callback

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=3))
    for _ in range(3):  # three earlier trials that reached top-1 1.1 at every epoch (above any real one)
        t = study.ask()
        for step in (1, 2, 3):
            t.report(1.1, step)
        study.tell(t, 1.1)
    trial = study.ask()
    run = tmp_path / "run"
    with pytest.raises(optuna.TrialPruned, match="epoch 1: val_top1"):
        train(load(str(task / "tiny.yaml"))[0], str(task / "quick.yaml"), str(task / "data.npz"), run, epochs=3,
              callbacks=[pruning_callback(trial, "val_top1")], verbose=0)
    assert list(study.trials[-1].intermediate_values) == [1]
    assert len((run / "history.csv").read_text().strip().splitlines()) == 2  # header and epoch 1
    RunLock(run).acquire().release()  # not held: a flock still held by this process's run would refuse it


def test_a_worker_stopped_by_sigterm_queues_its_trial_and_stops(task, tmp_path, capsys, monkeypatch):
    """SIGTERM in a trial's training (sent by the process to itself after the first batch of epoch
    2, through a Keras callback beside the pruning one): the loop saves a checkpoint and stops,
    the trial is failed and its coefficients queued again, the worker stops with one line (exit
    130) and its run's lock released; the same command again trains the queued trial into a new
    run directory, the stopped one untouched. (Seen the same with real processes and SIGINT,
    SIGTERM mid-epoch or as training starts.)"""
    import keras

    from archspec.training import search as search_module
    from archspec.training.loop import RunLock

    real = search_module.pruning_callback

    class SigtermOnce(keras.callbacks.Callback):
        sent = False

        def on_train_batch_end(self, batch, logs=None):
            if not SigtermOnce.sent and self.epoch == 1:
                SigtermOnce.sent = True
                os.kill(os.getpid(), signal.SIGTERM)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    def with_sigterm(trial, monitor):
        prune = real(trial, monitor)
        both = keras.callbacks.CallbackList([prune, SigtermOnce()])
        return both if not SigtermOnce.sent else prune
    monkeypatch.setattr(search_module, "pruning_callback", with_sigterm)
    out = tmp_path / "s"
    opts = ("--trials", 1, "--epochs", 2, "--sampler", "grid")
    before = signal.getsignal(signal.SIGTERM)
    assert main(argv(task, out, *opts)) == 130
    assert signal.getsignal(signal.SIGTERM) is before  # the worker's handler restored
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error" in ln or "Trial" in ln or "Traceback" in ln]
    assert len(lines) == 1 and lines[0].startswith("archspec: error: stopped by SIGTERM in trial 0: the trial "
                                                   "failed, its coefficients (alpha="), err
    storage = f"sqlite:///{out / 'study.db'}"
    trials = trials_of(storage)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"], trials
    assert trials[1].system_attrs["fixed_params"] == trials[0].params and trials[1].user_attrs["retry_of"] == 0
    run0 = out / "trials" / "trial-0000"
    hist0 = (run0 / "history.csv").read_text()
    assert len(hist0.strip().splitlines()) == 2  # epoch 1 complete, epoch 2 stopped
    RunLock(run0).acquire().release()  # the stopped run's lock is not held
    assert main(argv(task, out, *opts)) == 0
    trials = trials_of(storage)
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE"] and trials[1].params == trials[0].params
    assert trials[1].user_attrs["run"] == str(out / "trials" / "trial-0001")
    assert (run0 / "history.csv").read_text() == hist0  # not trained again
    trained_once(trials, 2)


# ---------------------------------------------------------------- many processes


def test_two_processes_share_one_sqlite_study(task, tmp_path):
    out = tmp_path / "s"
    procs = [worker(task, out, "--trials", 4, "--epochs", 1, terminal=True) for _ in range(2)]
    for p in procs:
        finish(p, quiet=True)  # a person's terminal: archspec's lines, no native notice, no traceback
    trials = trials_of(f"sqlite:///{out / 'study.db'}")
    assert len(finished(trials)) == 4 and len(trials) == 4, [(t.number, t.state) for t in trials]
    assert len({t.user_attrs["worker"] for t in trials}) == 2  # both pulled trials
    trained_once(trials, 1)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    cands = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(cands[-1]) if cands else None


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of our own (initdb + pg_ctl, a free local port, a temporary directory,
    the socket there too); as root, run as the `postgres` user. Skipped only outside CI when
    PostgreSQL is not installed (.ci/run installs it)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("PostgreSQL's initdb/pg_ctl are not installed (.ci/run installs the Debian package)")
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed")
    pytest.importorskip("psycopg")
    root = Path(tempfile.mkdtemp(prefix="archspec-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse root
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else \
            ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"
    run = lambda *a: subprocess.run([*as_user, *a], capture_output=True, text=True, timeout=120, cwd=root)
    r = run(initdb, "-D", str(data), "-U", "archspec", "--auth=trust", "-E", "UTF8")
    assert r.returncode == 0, r.stderr[-2000:]
    r = run(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o",
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    assert r.returncode == 0, (r.stderr + (root / "log").read_text() if (root / "log").exists() else r.stderr)[-2000:]
    try:
        yield f"postgresql://archspec@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(root, ignore_errors=True)


def test_two_processes_share_one_postgresql_study(task, tmp_path, postgres, capsys):
    """One worker in a process of its own, one in this process, on a real PostgreSQL server."""
    opts = ("--trials", 3, "--epochs", 1, "--storage", postgres, "--study", "pg", "--sampler", "grid")
    p = worker(task, tmp_path / "a", *opts)
    assert main(argv(task, tmp_path / "b", *opts)) == 0
    finish(p)
    trials = trials_of(postgres.replace("postgresql://", "postgresql+psycopg://"), "pg")
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3  # grid points always train
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 3  # three points, none taken twice
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    trained_once(trials, 1)
    assert "archspec@127.0.0.1" in capsys.readouterr().out  # the storage named in the table (no password here)


def test_a_killed_worker_loses_only_its_trial(task, tmp_path):
    """SIGKILL mid-training: the trial is failed once its heartbeat is stale and queued again with
    the same coefficients; the next worker to join waits for that, runs it, and the study reaches
    --trials with no trial trained twice."""
    out = tmp_path / "s"
    opts = ("--trials", 1, "--epochs", 5, "--heartbeat", 1, "--sampler", "grid")  # every grid point trains
    p = worker(task, out, *opts)
    hist = out / "trials" / "trial-0000" / "history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if hist.exists() and len(hist.read_text().strip().splitlines()) >= 2:  # one epoch done
            break
        time.sleep(0.05)
    assert p.poll() is None, p.communicate()[1][-2000:]
    os.kill(p.pid, signal.SIGKILL)
    p.communicate()
    killed_rows = len(hist.read_text().strip().splitlines()) - 1
    assert 1 <= killed_rows < 5
    assert main(argv(task, out, *opts)) == 0
    trials = trials_of(f"sqlite:///{out / 'study.db'}")
    assert trials[0].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == trials[0].params
    assert len(finished(trials)) == 1 and len(trials) == 2  # the study's total: the retry made it up
    assert len(hist.read_text().strip().splitlines()) - 1 == killed_rows  # the killed run was not trained again
    trained_once(trials, 5)
