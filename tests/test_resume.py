"""Runs that survive the host: a run killed with SIGKILL (at any moment, a checkpoint write
included) is resumed from its last checkpoint and ends exactly as the uninterrupted run does;
nothing half written stays behind; no run stays ``running`` once its process is gone.

Each killed run is a child process (``python -m hilctl train``) writing a checkpoint every few
hundredths of a second; the test kills it after it has written some, resumes it in this
process, and compares final figures, history and weights with the same run done without a
break. Moments inside a checkpoint write are reached by a child that runs hilctl with one
function of :mod:`hilctl.checkpoints` replaced by a hard exit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hilctl.algorithms import ALGORITHMS
from hilctl.cli import main
from hilctl.runs import RunStore
from hilctl.train_config import resolve_train_config
from hilctl.training import resume, train

#: A least-squares run of a few seconds that checkpoints every 20 ms.
SETS = {"task": {"steps": 3000, "out": 6, "in": 8, "log_every": 50, "eval_window": 200},
        "run": {"checkpoint_seconds": 0.02}}
MNIST = {"task": {"hidden": [16], "epochs": 5, "limit_train": 400, "batch": 10},
         "run": {"checkpoint_seconds": 0.05}}
DEADLINE_S = 60.0


def argv_for(algorithm: str, task: str, sets: dict[str, dict[str, object]], store: Path) -> list[str]:
    store.mkdir(exist_ok=True)  # a directory: the database is store/runs.sqlite
    argv = ["train", "--algorithm", algorithm, "--task", task, "--store", str(store), "--json"]
    for section, values in sets.items():
        for key, value in values.items():
            argv += ["--set", f"{section}.{key}={json.dumps(value)}"]
    if algorithm == "residual":
        argv += ["--set", "tile.reference=symmetric-point"]
    return argv


def config_for(algorithm: str, task: str, sets: dict[str, dict[str, object]]):
    overrides = {section: dict(values) for section, values in sets.items()}
    if algorithm == "residual":
        overrides["tile"] = {"reference": "symmetric-point"}
    return resolve_train_config(task=task, algorithm=algorithm, overrides=overrides)


def checkpointed_step(store: Path) -> int:
    """The step of the newest checkpoint in ``store`` (0 if none yet)."""
    if not (store / "runs.sqlite").exists():
        return 0
    with sqlite3.connect(store / "runs.sqlite", timeout=5) as db:
        try:
            return int(db.execute("SELECT COALESCE(MAX(step), 0) FROM checkpoints").fetchone()[0])
        except sqlite3.OperationalError:  # the schema is not there yet
            return 0


def kill_after(argv: list[str], store: Path, step: int, *, prelude: str = "") -> int:
    """Start ``hilctl argv`` in a child, SIGKILL it once it has checkpointed ``step`` (or let
    it die by itself, with ``prelude`` code that exits hard); its exit status."""
    code = f"{prelude}\nfrom hilctl.cli import main\nraise SystemExit(main({argv!r}))"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + DEADLINE_S
    while child.poll() is None:
        assert time.monotonic() < deadline, "the run never reached its checkpoints"
        if not prelude and checkpointed_step(store) >= step:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    child.wait(timeout=DEADLINE_S)
    assert "Traceback" not in (child.stderr.read() if child.stderr else "")
    return child.returncode


def the_run(store: Path) -> str:
    (run,) = RunStore(store).list_runs()
    return run.run_id


def assert_same(resumed, reference, store: Path) -> None:
    """Final figures, history and weights equal the uninterrupted run's, bit for bit."""
    assert resumed.status == "completed"
    assert resumed.final == reference.final
    wall_time = {"epoch_seconds"}  # the one metric that is not a result: seconds per epoch
    assert ({k: v for k, v in resumed.history.items() if k not in wall_time}
            == {k: v for k, v in reference.history.items() if k not in wall_time})
    record = RunStore(store).get_run(resumed.run_id)
    ref = RunStore(store.parent / "reference").get_run(reference.run_id)
    assert {s.name for s in record.snapshots} == {s.name for s in ref.snapshots}
    for mine, theirs in zip(sorted(record.snapshots, key=lambda s: s.name),
                            sorted(ref.snapshots, key=lambda s: s.name), strict=True):
        np.testing.assert_array_equal(mine.load(), theirs.load())
    # the store holds the history once, as the uninterrupted run's
    for name, (steps, values) in ref.metrics.items():
        np.testing.assert_array_equal(record.metrics[name][0], steps)
        if name != "epoch_seconds":  # wall time
            np.testing.assert_array_equal(record.metrics[name][1], values)
    assert [e.kind for e in record.events].count("resumed") >= 1


def assert_nothing_left(store: Path) -> None:
    """No half-written file and no file without its row; a completed run keeps no checkpoint."""
    RunStore(store)  # opening sweeps
    leftovers = [p for p in (store / "checkpoints").rglob("*") if p.is_file()]
    assert leftovers == []


def reference_run(algorithm: str, task: str, sets, tmp_path: Path):
    return train(config_for(algorithm, task, sets), store=RunStore(tmp_path / "reference"))


@pytest.mark.parametrize("algorithm", sorted(ALGORITHMS))
def test_a_killed_least_squares_run_resumes_exactly(algorithm: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    reference = reference_run(algorithm, "least-squares", SETS, tmp_path)
    assert kill_after(argv_for(algorithm, "least-squares", SETS, store), store,
                      1000) == -signal.SIGKILL
    run_id = the_run(store)
    assert RunStore(store).get_run(run_id).status == "lost"  # the next open saw it gone
    resumed = resume(run_id, RunStore(store))
    assert resumed.run_id == run_id
    assert_same(resumed, reference, store)
    assert_nothing_left(store)


def test_killed_twice_at_other_moments_still_resumes_exactly(tmp_path: Path) -> None:
    """Killed early, resumed, killed again later (the resumed process), resumed again."""
    store = tmp_path / "store"
    reference = reference_run("tiki-taka", "least-squares", SETS, tmp_path)
    kill_after(argv_for("tiki-taka", "least-squares", SETS, store), store, 500)
    run_id = the_run(store)
    assert kill_after(["runs", "resume", run_id, "--store", str(store), "--json"], store,
                      1800) == -signal.SIGKILL
    resumed = resume(run_id, RunStore(store))
    assert_same(resumed, reference, store)
    assert_nothing_left(store)


@pytest.mark.parametrize("moment", ["before the rename", "after the rename, before its row"])
def test_a_kill_inside_a_checkpoint_write(tmp_path: Path, moment: str) -> None:
    """The child exits hard on its 4th checkpoint write, with the file half written (a
    ``.partial`` left) or written but not recorded; the store removes both when it is next
    opened, and the run resumes from the checkpoint before."""
    store = tmp_path / "store"
    reference = reference_run("analog-sgd", "least-squares", SETS, tmp_path)
    target = "os.replace" if moment == "before the rename" else "_fsync_directory"
    prelude = f"""
import os, hilctl.checkpoints as c
calls = [0]
original = c.{target}
def hard_exit(*args):
    calls[0] += 1
    if calls[0] == 4:
        os._exit(137)
    return original(*args)
{"c.os = type('os', (), {**vars(os), 'replace': staticmethod(hard_exit)})" if target == "os.replace"
 else "c._fsync_directory = hard_exit"}
"""
    assert kill_after(argv_for("analog-sgd", "least-squares", SETS, store), store, 0,
                      prelude=prelude) == 137
    folder = store / "checkpoints"
    files = [p.name for p in folder.rglob("*") if p.is_file()]
    if moment == "before the rename":
        assert any(name.endswith(".partial") for name in files)
    run_id = the_run(store)  # opening the store sweeps
    remaining = sorted(p for p in folder.rglob("*") if p.is_file())
    assert not any(p.name.endswith(".partial") for p in remaining)
    recorded = {c.path for c in RunStore(store).checkpoints(run_id)}
    assert set(remaining) == recorded and len(recorded) >= 1  # no file without its row
    resumed = resume(run_id, RunStore(store))
    assert_same(resumed, reference, store)
    assert_nothing_left(store)


def test_a_killed_mnist_run_resumes_exactly(tmp_path: Path) -> None:
    store = tmp_path / "store"
    reference = reference_run("tiki-taka", "mnist-fcn", MNIST, tmp_path)
    kill_after(argv_for("tiki-taka", "mnist-fcn", MNIST, store), store, 50)  # in epoch 2
    run_id = the_run(store)
    resumed = resume(run_id, RunStore(store))
    assert_same(resumed, reference, store)
    assert_nothing_left(store)


def _recorded_metrics(store: Path) -> bool:
    """True once the store's one run has recorded a point of its history."""
    if not (store / "runs.sqlite").exists():
        return False
    runs = RunStore(store).list_runs()
    return bool(runs) and bool(RunStore(store).get_run(runs[0].run_id).metrics)


def test_sigterm_checkpoints_before_it_stops(tmp_path: Path, capsys) -> None:
    """SIGTERM stops the run at its next step with a checkpoint of that step: the run is
    ``interrupted`` and resumes to the uninterrupted result."""
    store = tmp_path / "store"
    # only the signal checkpoints; long enough that the signal lands well before the end
    sets = {"task": {**SETS["task"], "steps": 20_000}, "run": {"checkpoint_seconds": 3600.0}}
    reference = reference_run("tiki-taka", "least-squares", sets, tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "hilctl", *argv_for(
        "tiki-taka", "least-squares", sets, store)], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + DEADLINE_S
    # The signal lands mid-run, once the run has recorded its first metrics (step 50): sent as
    # soon as the run exists, it arrived while the run was still starting (step 1, whose
    # weights may not have moved yet).
    while not _recorded_metrics(store):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.05)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=DEADLINE_S)
    assert child.returncode == 143, err
    run_id = the_run(store)
    record = RunStore(store).get_run(run_id)
    assert record.status == "interrupted" and len(record.checkpoints) == 1
    # the interrupted run's weights can be looked at, as a finished run's
    weights = record.checkpoints[-1].load()["task"]["weights"]["W"]
    assert weights.shape == (6, 8) and np.isfinite(weights).all() and np.abs(weights).max() > 0
    assert main(["runs", "show", run_id, "--store", str(store)]) == 0
    assert "checkpoint: step" in capsys.readouterr().out
    assert_same(resume(run_id, RunStore(store)), reference, store)


def test_runs_resume_command_and_its_refusals(tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    assert main(["train", "--store", str(store), "--set", "task.steps=50"]) == 0
    capsys.readouterr()
    run_id = the_run(store)
    assert main(["runs", "resume", run_id, "--store", str(store)]) == 2
    assert "completed" in capsys.readouterr().err
    assert main(["runs", "resume", "nope", "--store", str(store)]) == 2


def test_a_run_of_another_host_without_heartbeat_is_lost(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    fresh = store.start_run("train", {}, "sim", metadata={"heartbeat_seconds": 1.0})
    stale = store.start_run("train", {}, "sim", metadata={"heartbeat_seconds": 1.0})
    reused = store.start_run("train", {}, "sim")
    with sqlite3.connect(tmp_path / "runs.sqlite") as db:
        db.execute("UPDATE runs SET hostname = 'elsewhere', updated = ? WHERE run_id = ?",
                   (time.time() - 3600, stale.run_id))
        db.execute("UPDATE runs SET hostname = 'elsewhere' WHERE run_id = ?", (fresh.run_id,))
        # a PID that is alive (ours) but started at another time: the run's process is gone
        db.execute("UPDATE runs SET pid = 1, hostname = ?, metadata = ? WHERE run_id = ?",
                   (socket.gethostname(), json.dumps({"process_start": "0"}), reused.run_id))
    statuses = {r.run_id: r.status for r in RunStore(tmp_path).list_runs()}
    assert statuses[stale.run_id] == "lost" and statuses[fresh.run_id] == "running"
    if os.path.exists("/proc/1/stat"):
        assert statuses[reused.run_id] == "lost"


def test_runs_list_json_has_the_fields_a_script_needs(tmp_path: Path, capsys) -> None:
    assert main(["train", "--store", str(tmp_path), "--set", "task.steps=50"]) == 0
    capsys.readouterr()
    assert main(["runs", "list", "--store", str(tmp_path), "--json"]) == 0
    (run,) = json.loads(capsys.readouterr().out)
    assert {"run_id", "status", "task", "algorithm", "backend", "started", "updated",
            "final"} <= set(run)
    assert (run["task"], run["algorithm"], run["backend"]) == ("least-squares", "analog-sgd", "sim")
