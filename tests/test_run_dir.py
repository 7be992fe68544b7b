"""The run directory of `archspec train` is the user's work (issue 17, items 5, 6, 13): its
files agree with each other and with the checkpoint after any kill and any resume (compared
with an uninterrupted run's files), `--force` replaces only a run directory, the directory
is locked while a process trains in it, early stopping and reduce-on-plateau continue across
a resume, and the .keras files say which spec they hold.

Kills are injected at the exact point instead of by timing: `os.replace` (the rename of every
atomic write) raises for the file in question, so the run stops with everything before that
write on disk and that file not yet replaced; the real-process SIGKILL runs are in
test_train.py. Runs are in-process on scikit-learn's digits (the `digits` fixture of
test_train.py), a few seconds each."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from archspec.cli import main
from test_train import QUICK, digits, no_half_written_files, read_rows  # noqa: F401 (digits: a fixture)

# the digits recipe with early stopping that restores the best weights (final.keras is then
# the best epoch on val_top5, not the last one), 3 epochs
FINISHING = QUICK.replace("epochs: 8", "epochs: 3") + "  early_stopping: {monitor: val_top5, patience: 10}\n"


class Killed(BaseException):
    """What the injected kill raises (a BaseException: nothing in archspec catches it)."""


def kill_at(monkeypatch, name: str, when=lambda: True):
    """Make the atomic rename onto a file called `name` "kill" the run (once, when `when()`)."""
    real = os.replace
    fired = []

    def replace(src, dst, *a, **k):
        if Path(dst).name == name and not fired and when():
            fired.append(dst)
            raise Killed(dst)
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    return fired


def train(digits, out, *extra, recipe="finishing.yaml"):
    if not (digits / "finishing.yaml").is_file():  # the recipe, whichever test of the module runs first
        (digits / "finishing.yaml").write_text(FINISHING)
    return main(["train", str(digits / "spec.yaml"), "--recipe", str(digits / recipe), "--data",
                 str(digits / "digits.npz"), "--out", str(out), "--json", *extra])


def weights(path: Path) -> list:
    import keras

    return [w.numpy() for w in keras.models.load_model(path).weights]


def assert_same_weights(a: Path, b: Path, exact=False):
    wa, wb = weights(a), weights(b)
    assert len(wa) == len(wb)
    for x, y in zip(wa, wb):
        if exact:
            np.testing.assert_array_equal(x, y)
        else:
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


def training_record(path: Path) -> dict:
    with zipfile.ZipFile(path) as z:
        return json.loads(z.read("archspec.json"))


def same_metrics(run: Path, ref: Path) -> None:
    """metrics.json of two runs: numbers to 1e-4, everything else (monitor names, paths'
    basenames) equal; the throughput is not compared. (pytest.approx over a mapping refuses
    string values since pytest 9.2.)"""
    got, want = (json.loads((p / "metrics.json").read_text()) for p in (run, ref))
    got.pop("images_per_second", None), want.pop("images_per_second", None)
    assert got.keys() == want.keys()
    for k, v in want.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            assert got[k] == pytest.approx(v, rel=1e-4), k
        else:
            assert got[k] == v, k


def same_history(run: Path, ref: Path) -> None:
    rows, want = read_rows(run), read_rows(ref)
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in want]
    for row, ref_row in zip(rows, want):
        for k in ("loss", "top1", "val_loss", "val_top1", "learning_rate"):
            assert float(row[k]) == pytest.approx(float(ref_row[k]), rel=1e-4, abs=1e-6), (row["epoch"], k)


def snapshot(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(digits, tmp_path_factory):
    """An uninterrupted 3-epoch run: the files the interrupted runs must end with."""
    ref = tmp_path_factory.mktemp("ref") / "run"
    assert train(digits, ref) == 0
    return ref


def test_resume_of_a_finished_run_keeps_its_model(digits, reference, tmp_path, capsys):
    """Nothing left to train: final.keras keeps its weights and its evaluation (it was
    replaced by the untrained model), metrics.json and best.keras are unchanged."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    capsys.readouterr()
    assert main(["evaluate", str(run / "final.keras"), "--data", str(digits / "digits.npz"), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    metrics = json.loads((run / "metrics.json").read_text())
    assert main(["train", "--resume", str(run), "--json"]) == 0
    assert "3 epochs complete" in capsys.readouterr().err
    assert_same_weights(run / "final.keras", reference / "final.keras", exact=True)
    assert_same_weights(run / "best.keras", reference / "best.keras", exact=True)
    assert main(["evaluate", str(run / "final.keras"), "--data", str(digits / "digits.npz"), "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert after["loss"] == pytest.approx(before["loss"], rel=1e-6) and after["top1"] == before["top1"]
    assert before["top1"] > 0.5  # a trained model (an untrained one is near 0.1)
    assert json.loads((run / "metrics.json").read_text()) == metrics
    no_half_written_files(run)


def test_kill_before_final_keras_resumes_to_the_uninterrupted_files(digits, reference, tmp_path, monkeypatch, capsys):
    """Killed after the last checkpoint, before final.keras: the resume writes the model the
    checkpoint ends with (the best epoch's, early stopping restores it), as the
    uninterrupted run did, and the same metrics."""
    run = tmp_path / "run"
    fired = kill_at(monkeypatch, "final.keras")
    with pytest.raises(Killed):
        train(digits, run)
    monkeypatch.undo()
    assert fired and not (run / "final.keras").exists() and len(read_rows(run)) == 3
    assert main(["train", "--resume", str(run), "--json"]) == 0
    capsys.readouterr()
    assert_same_weights(run / "final.keras", reference / "final.keras")
    assert_same_weights(run / "best.keras", reference / "best.keras")
    same_metrics(run, reference)
    same_history(run, reference)
    no_half_written_files(run)


def test_kill_between_checkpoint_and_best_keras(digits, reference, tmp_path, monkeypatch, capsys):
    """Killed while best.keras of the best epoch was being written (its checkpoint and history
    row already on disk): the resume rewrites best.keras from that checkpoint, so it holds the
    epoch metrics.json calls the best, with the uninterrupted run's weights."""
    best = json.loads((reference / "metrics.json").read_text())["best_epoch"]
    run = tmp_path / "run"
    kill_at(monkeypatch, "best.keras", when=lambda: len(read_rows(run)) == best)
    with pytest.raises(Killed):
        train(digits, run)
    monkeypatch.undo()
    assert len(read_rows(run)) == best
    assert main(["train", "--resume", str(run), "--json"]) == 0
    err = capsys.readouterr().err
    assert json.loads((run / "metrics.json").read_text())["best_epoch"] == best
    assert_same_weights(run / "best.keras", reference / "best.keras")
    assert_same_weights(run / "final.keras", reference / "final.keras")
    assert training_record(run / "best.keras")["archspec.training"]["epoch"] == best
    assert "best.keras rewritten from" in err
    same_history(run, reference)
    no_half_written_files(run)


# ---------------------------------------------------------------- item 13: callbacks across a resume

NO_BN_SPEC = textwrap.dedent("""\
    format: 1
    name: digits_plain
    input:
      shape: [8, 8, 1]
      preprocessing: [{type: rescaling, name: scale, scale: 0.0625}]
    defaults: {activation: relu}
    stem: [{type: conv, name: c1, filters: 16, kernel: 3, padding: same}]
    head:
      classes: 10
      layers: [{type: global_pool, name: pool}, {type: classifier, name: predictions}]
    """)
# A rate so small that nothing improves: val_loss moves by less than the plateau's min_delta
# (1e-4) and val_top1 not at all (no batch norm, whose moving statistics would move), so the
# uninterrupted run halves the rate after epoch 3 (plateau patience 2) and stops after
# epoch 4 (patience 3). Resumed after epoch 2 with the callbacks started over, it would halve
# after epoch 5 and stop after epoch 6.
PATIENT = textwrap.dedent("""\
    format: 1
    name: patient
    optimizer: {name: sgd, learning_rate: 1.0e-6, momentum: 0.0}
    schedule: {name: plateau, patience: 2, factor: 0.5}
    epochs: 8
    data: {batch_size: 64}
    callbacks:
      checkpoint: {monitor: val_loss, mode: min, max_to_keep: 20}
      early_stopping: {monitor: val_top1, patience: 3}
    """)


def test_resume_continues_early_stopping_and_plateau(digits, tmp_path, monkeypatch, capsys):
    """SIGTERM after epoch 2 (its checkpoint written), then --resume: the same epochs, the same
    rate reductions and the same early stop as an uninterrupted run; the interrupted epoch's
    checkpoint is not written over by the next epoch's."""
    from archspec.training import loop

    (tmp_path / "spec.yaml").write_text(NO_BN_SPEC)
    (tmp_path / "patient.yaml").write_text(PATIENT)
    args = ["train", str(tmp_path / "spec.yaml"), "--recipe", str(tmp_path / "patient.yaml"), "--data",
            str(digits / "digits.npz"), "--json"]
    ref = tmp_path / "ref"
    assert main(args + ["--out", str(ref)]) == 0
    rates = [float(r["learning_rate"]) for r in read_rows(ref)]
    assert len(rates) == 4 and rates[3] == pytest.approx(rates[0] / 2)  # the setting does what it says
    run = tmp_path / "run"
    real = loop.write_history

    def after_epoch_2(out, rows):
        real(out, rows)
        if len(rows) == 2 and out == run:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop's handler: stop after this (complete) epoch

    monkeypatch.setattr(loop, "write_history", after_epoch_2)
    assert main(args + ["--out", str(run)]) == 130
    monkeypatch.undo()
    ckpts = run / "checkpoints"
    saved = {p.name: p.read_bytes() for p in ckpts.glob("ckpt-*")}
    assert main(["train", "--resume", str(run), "--json"]) == 0
    err = capsys.readouterr().err
    assert "early stopping ended phase train after epoch 4" in err
    same_history(run, ref)
    assert json.loads((run / "run.json").read_text())["stopped_early"] == ["train"]
    for name, data in saved.items():  # every checkpoint on disk before the resume is as it was
        assert (ckpts / name).read_bytes() == data, name


# ---------------------------------------------------------------- item 13: provenance


def test_build_best_and_final_keras_say_which_spec_they_hold(digits, reference, tmp_path, capsys):
    """build's .keras, best.keras and final.keras carry export's archspec.json, so an export of
    them records the spec's sha256 (it was "unknown"): the one `export SPEC` records."""
    import archspec

    want = archspec.export(str(reference / "spec.yaml"), tmp_path / "spec.keras", format="keras",
                           check=False)["metadata"]["archspec.spec_sha256"]
    assert len(want) == 64
    for f in ("best.keras", "final.keras"):
        r = archspec.export(str(reference / f), tmp_path / f"x_{f}", format="keras", check=False)
        assert r["metadata"]["archspec.spec_sha256"] == want, f
    record = training_record(reference / "best.keras")
    assert record["archspec.spec_name"] == "digits_cnn"
    assert record["archspec.training"]["epoch"] == json.loads((reference / "metrics.json").read_text())["best_epoch"]
    assert training_record(reference / "final.keras")["archspec.training"] == {"file": "final",
                                                                               "epochs_completed": 3}
    out = tmp_path / "built.keras"
    assert main(["build", str(digits / "spec.yaml"), "-o", str(out), "--json"]) == 0
    capsys.readouterr()
    assert training_record(out)["source"]["spec_sha256"] == archspec.export(
        str(digits / "spec.yaml"), tmp_path / "s2.keras", format="keras", check=False)["metadata"]["archspec.spec_sha256"]


# ---------------------------------------------------------------- item 6: --force, the lock, parents


def one_line_error(capsys, code, *words):
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, (code, err)
    for w in words:
        assert w in err, err
    return err


def test_force_replaces_only_a_run_directory(digits, reference, tmp_path, monkeypatch, capsys):
    # the data inside the directory to replace (a run directory: it has run.json)
    mydata = tmp_path / "mydata"
    shutil.copytree(reference, mydata)
    shutil.copy(digits / "digits.npz", mydata / "learn.npz")
    before = snapshot(mydata)
    code = main(["train", str(digits / "spec.yaml"), "--recipe", str(digits / "quick.yaml"), "--data",
                 str(mydata / "learn.npz"), "--out", str(mydata), "--force"])
    one_line_error(capsys, code, str(mydata), "learn.npz")
    assert snapshot(mydata) == before
    # a directory that is not a run and not empty; a file
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    for out in (notes, notes / "todo.txt"):
        code = train(digits, out, "--force")
        one_line_error(capsys, code, str(out), "--force replaces only a run directory")
    assert (notes / "todo.txt").read_text() == "mine"
    # the current directory, or a directory above it
    run = tmp_path / "oldrun"
    shutil.copytree(reference, run)
    (run / "sub").mkdir()
    before = snapshot(run)
    for cwd, out in ((run, "."), (run / "sub", "..")):
        monkeypatch.chdir(cwd)
        code = train(digits, out, "--force")
        one_line_error(capsys, code, "holds the current directory")
    monkeypatch.chdir(tmp_path)
    assert snapshot(run) == before
    # a run directory is replaced (an old file of it is gone), an empty one filled
    (run / "sub").rmdir()
    (run / "old.txt").write_text("an earlier run's")
    empty = tmp_path / "empty"
    empty.mkdir()
    for out in (run, empty):
        assert train(digits, out, "--force", "--epochs", "1") == 0
        capsys.readouterr()
        assert len(read_rows(out)) == 1 and (out / "final.keras").is_file() and not (out / "old.txt").exists()


def test_missing_parents_of_the_run_directory_are_made(digits, tmp_path, capsys):
    out = tmp_path / "runs" / "r18"
    assert train(digits, out, "--epochs", "1") == 0
    capsys.readouterr()
    assert (out / "final.keras").is_file()


def hold_lock(run: Path):
    fh = open(run / ".lock", "a+")
    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fh


def test_a_run_in_use_is_refused_and_untouched(digits, reference, tmp_path, capsys):
    """While another process holds the run (its lock), a second --resume or --force gets one
    line and exit 2 and changes nothing; once the holder is gone (even killed) it proceeds."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    holder = hold_lock(run)  # an open file description of its own: as another process's
    before = snapshot(run)
    try:
        one_line_error(capsys, main(["train", "--resume", str(run)]), str(run), "in use")
        one_line_error(capsys, train(digits, run, "--force"), str(run), "in use")
        assert snapshot(run) == before
    finally:
        holder.close()
    # a lock held by a process that was killed: the kernel released it
    p = subprocess.Popen([sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
                          "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)",
                          str(run / ".lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline().strip() == "held"
        one_line_error(capsys, main(["train", "--resume", str(run)]), "in use")
    finally:
        p.kill()
        p.wait()
    assert main(["train", "--resume", str(run), "--json"]) == 0
    capsys.readouterr()


def test_the_lock_is_held_for_the_whole_run(digits, tmp_path, monkeypatch, capsys):
    from archspec.training import loop

    run = tmp_path / "run"
    real = loop._fit
    seen = []

    def fit(*a, **k):
        with pytest.raises(BlockingIOError):
            hold_lock(run)
        seen.append(True)
        return real(*a, **k)

    monkeypatch.setattr(loop, "_fit", fit)
    assert train(digits, run, "--epochs", "1") == 0
    assert seen
    hold_lock(run).close()  # released at the end
    capsys.readouterr()
