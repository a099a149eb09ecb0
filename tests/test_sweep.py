"""``hilctl sweep``: points on a local cluster and on a scheduler with workers of its own give the
figures of ``hilctl train`` point by point and are recorded as it records them; a killed worker
costs no point and duplicates none; a re-run skips what is done; Ctrl-C stops cleanly; bad
input is refused in one line before any work.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hilctl import cluster as cluster_module
from hilctl.cli import main
from hilctl.cluster import Cluster, TaskLost
from hilctl.errors import ClusterError
from hilctl.runs import COMPLETED, FAILED, RunStore
from hilctl.sweep import runner
from hilctl.sweep.spec import POINT_LIMIT, load_sweep

BASE = """\
[task]
name = "least-squares"
steps = 300
eval_window = 50
log_every = 100
"""
GRID = """
[sweep]
seeds = [0, 1]
[sweep.grid]
"task.lr" = [0.02, 0.05]
"""


def invoke(argv: list[str]) -> tuple[int, str, str]:
    """``hilctl argv`` in this process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in JSON")

    return json.loads(text, parse_constant=refuse)


def write(folder: Path, text: str, name: str = "sweep.toml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One sweep (2 learning rates x 2 seeds) on a local cluster of two workers."""
    folder = tmp_path_factory.mktemp("local-sweep")
    (folder / "store").mkdir()
    code, out, err = invoke(["sweep", write(folder, BASE + GRID), "--workers", "2", "--store",
                             str(folder / "store"), "--json", "--plot", str(folder / "s.png")])
    assert code == 0, err
    return {"folder": folder, "result": strict_json(out), "err": err, "store": folder / "store"}


def train_by_hand(folder: Path, point: dict[str, Any], store: Path) -> dict[str, Any]:
    """The point trained with ``hilctl train --config BASE --set ... --json``."""
    sets = [arg for key, value in point["params"].items() for arg in ("--set", f"{key}={value}")]
    code, out, err = invoke(["train", "--config", write(folder, BASE, "base.toml"), *sets,
                             "--seed", str(point["seed"]), "--algorithm", point["algorithm"],
                             "--json", "--store", str(store)])
    assert code == 0, err
    return strict_json(out)


def test_a_local_sweep_gives_and_records_what_hilctl_train_gives_point_by_point(local) -> None:
    points = local["result"]["points"]
    assert [(p["params"], p["seed"], p["algorithm"], p["status"]) for p in points] == [
        ({"task.lr": lr}, seed, "analog-sgd", "completed") for lr in (0.02, 0.05) for seed in (0, 1)]
    swept, alone = RunStore(local["store"]), RunStore(local["folder"] / "by-hand")
    for point in points:
        trained = train_by_hand(local["folder"], point, local["folder"] / "by-hand")
        assert point["final"] == trained["final"]  # exactly: the seeds fix everything
        a, b = swept.get_run(point["run_id"]), alone.get_run(trained["run_id"])
        assert (a.command, b.command) == ("sweep", "train")
        assert a.config == b.config and a.status == b.status == COMPLETED
        assert a.final == b.final and a.backend == b.backend
        assert a.metrics.keys() == b.metrics.keys()
        for name, (steps, values) in a.metrics.items():
            np.testing.assert_array_equal(steps, b.metrics[name][0])
            np.testing.assert_array_equal(values, b.metrics[name][1])
        assert [(s.step, s.name) for s in a.snapshots] == [(s.step, s.name) for s in b.snapshots]
        for sa, sb in zip(a.snapshots, b.snapshots, strict=True):
            np.testing.assert_array_equal(sa.load(), sb.load())
        assert [e.kind for e in a.events] == [e.kind for e in b.events]
        assert a.seconds is not None and a.seconds > 0 and a.ended is not None
        assert a.metadata["worker"]["pid"] != os.getpid()  # trained in a worker process


def test_the_sweep_reports_progress_a_table_a_figure_and_lists_its_runs(local) -> None:
    result = local["result"]
    assert "4 points, 0 done earlier, 4 to run on a local cluster of 2 worker" in local["err"]
    assert "4/4 done, 0 running, 0 failed" in local["err"] and "left" in local["err"]
    assert sum(row["best"] for row in result["table"]) == 1
    assert all(row["completed"] == 2 and row["std"] is not None for row in result["table"])
    assert (local["folder"] / "s.png").stat().st_size > 1000
    code, out, _ = invoke(["runs", "list", "--sweep", result["sweep_id"], "--json",
                           "--store", str(local["store"])])
    assert code == 0
    listed = strict_json(out)
    assert sorted(r["run_id"] for r in listed) == sorted(p["run_id"] for p in result["points"])
    assert {r["sweep"] for r in listed} == {result["sweep_id"]}
    code, out, _ = invoke(["runs", "list", "--sweep", result["sweep_id"], "--store",
                           str(local["store"])])
    assert code == 0 and out.count("sweep (sim)") == 4


def test_the_table_marks_the_best_setting(local) -> None:
    code, out, err = invoke(["sweep", write(local["folder"], BASE + GRID), "--store",
                             str(local["store"])])
    assert code == 0, err
    lines = out.splitlines()
    assert "rel_err (mean ± std over 2 seeds)" in lines[1]
    best = min(local["result"]["table"], key=lambda row: row["mean"])
    [marked] = [line for line in lines if "<- best" in line]
    assert marked.split()[0] == str(best["params"]["task.lr"])


def test_a_rerun_skips_the_points_done_and_runs_the_rest(local, tmp_path) -> None:
    store = tmp_path / "store"
    shutil.copytree(local["store"], store)
    first = local["result"]["points"]
    gone = [first[1]["run_id"], first[2]["run_id"]]
    with sqlite3.connect(store / "runs.sqlite") as db:  # as if the sweep stopped before them
        db.execute("DELETE FROM runs WHERE run_id IN (?, ?)", gone)
    code, out, err = invoke(["sweep", write(tmp_path, BASE + GRID), "--workers", "1",
                             "--store", str(store), "--json"])
    assert code == 0, err
    assert "4 points, 2 done earlier, 2 to run" in err
    again = strict_json(out)["points"]
    assert [p["earlier"] for p in again] == [True, False, False, True]
    assert [p["final"] for p in again] == [p["final"] for p in first]
    assert len(RunStore(store).list_runs(limit=None)) == 4
    code, out, err = invoke(["sweep", write(tmp_path, BASE + GRID), "--store", str(store),
                             "--json"])
    assert code == 0 and "0 to run" in err and "cluster" not in err  # nothing left: no cluster
    assert all(p["earlier"] for p in strict_json(out)["points"])


# ---------------------------------------------------------------------------------------------
# A scheduler and workers of its own, started here on 127.0.0.1.
# ---------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def dask_cluster(workers: int) -> Iterator[tuple[str, subprocess.Popen[bytes],
                                                  list[subprocess.Popen[bytes]]]]:
    """``dask scheduler`` and ``workers`` x ``dask worker --no-nanny`` (one process each, so
    that killing one kills a worker) as subprocesses; yields the address, the scheduler and
    the workers."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    scheduler = subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host",
                                  "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                  "--no-dashboard"], **quiet)
    started = [subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--no-nanny",
                                 "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
                                **quiet) for _ in range(workers)]
    try:
        from distributed import Client

        with Client(address, timeout=30) as client:  # the scheduler is up
            if workers:
                client.wait_for_workers(workers, timeout=60)
        yield address, scheduler, started
    finally:
        for process in [*started, scheduler]:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    with dask_cluster(2) as (address, _, _):
        yield address


def test_a_sweep_on_a_scheduler_gives_the_local_sweeps_figures(local, scheduler, tmp_path) -> None:
    code, out, err = invoke(["sweep", write(tmp_path, BASE + GRID), "--scheduler", scheduler,
                             "--store", str(tmp_path / "store"), "--json"])
    assert code == 0, err
    assert f"on the cluster of scheduler {scheduler} (2 worker(s) now)" in err
    result = strict_json(out)
    assert result["sweep_id"] == local["result"]["sweep_id"]  # the same points
    assert [p["final"] for p in result["points"]] == [p["final"] for p in local["result"]["points"]]


def test_a_failing_point_is_recorded_with_its_error_and_the_sweep_goes_on(scheduler,
                                                                           tmp_path) -> None:
    text = """\
[task]
name = "mnist-fcn"
epochs = 1
limit_train = 20
[sweep]
[sweep.grid]
"task.data_dir" = ["/nonexistent-a", "/nonexistent-b"]
"""
    code, out, err = invoke(["sweep", write(tmp_path, text), "--scheduler", scheduler,
                             "--store", str(tmp_path / "store"), "--json"])
    assert code == 1
    points = strict_json(out)["points"]
    assert [p["status"] for p in points] == [FAILED, FAILED]
    assert all(f"/nonexistent-{x}" in p["error"] for p, x in zip(points, "ab", strict=True))
    assert err.splitlines()[-1].startswith("hilctl: error: 2 of 2 points failed")
    record = RunStore(tmp_path / "store").get_run(points[0]["run_id"])
    assert record.status == FAILED and "does not exist" in (record.error or "")
    assert [e.kind for e in record.events] == ["error"]  # with its traceback


def test_a_diverging_point_is_recorded_and_left_out_of_the_means(scheduler, tmp_path) -> None:
    text = BASE + """
[sweep]
algorithms = ["digital-sgd"]
[sweep.grid]
"task.lr" = [0.05, 1e6]
"""
    code, out, err = invoke(["sweep", write(tmp_path, text), "--scheduler", scheduler,
                             "--store", str(tmp_path / "store"), "--json"])
    assert code == 4, err
    result = strict_json(out)  # no NaN, no Infinity
    assert [p["status"] for p in result["points"]] == ["completed", "diverged"]
    assert [(row["mean"] is None, row["best"], row["diverged"]) for row in result["table"]] == [
        (False, True, 0), (True, False, 1)]


def test_a_killed_worker_costs_no_point_and_duplicates_none(tmp_path) -> None:
    """A worker killed while it trains: its point is trained again on the other worker, and
    every point is recorded exactly once, with the figures of a training in this process."""
    text = BASE.replace("steps = 300", "steps = 3000") + GRID
    sweep = load_sweep(write(tmp_path, text))
    store = RunStore(tmp_path / "store")
    killed: list[int] = []
    with dask_cluster(2) as (address, _, workers):
        from distributed import Client

        with Client(address, timeout=30) as watcher:
            pids = watcher.run(os.getpid)

            def kill_a_busy_worker() -> None:
                while True:
                    executing = watcher.run(lambda dask_worker: len(dask_worker.state.executing))
                    busy = [w for w, n in executing.items() if n]
                    if busy:
                        time.sleep(0.2)  # well into its training
                        os.kill(pids[busy[0]], signal.SIGKILL)
                        killed.append(pids[busy[0]])
                        return
                    time.sleep(0.02)

            killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
            killer.start()
            results = runner.run_sweep(sweep, store, lambda _: Cluster(scheduler=address),
                                       lambda _: None, lambda *_: None)
            killer.join(timeout=10)
            assert len(watcher.nthreads()) == 1  # one worker left
    assert killed and killed[0] in {w.pid for w in workers}
    assert [r.status for r in results] == [COMPLETED] * 4
    recorded = store.list_runs(limit=None, sweep=sweep.sweep_id)
    assert sorted(r.point for r in recorded) == sorted(p.key for p in sweep.points)  # once each
    trained_by = {store.get_run(r.run_id).metadata["worker"]["pid"] for r in recorded}
    assert killed[0] not in trained_by  # killed in its first training, which ran elsewhere
    from hilctl.training import train

    for result in results:
        assert result.final == train(result.point.config).final


def test_a_scheduler_without_workers_is_named_in_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(cluster_module, "WORKERS_TIMEOUT", 0.5)
    with dask_cluster(0) as (address, _, _):
        code, out, err = invoke(["sweep", write(tmp_path, BASE + GRID), "--scheduler", address,
                                 "--store", str(tmp_path / "store")])
    assert code == 3 and out == "" and err.count("\n") == 1
    assert f"the scheduler has no worker after 0.5 s; start some with 'dask worker {address}'" in err


def test_a_scheduler_lost_mid_sweep_stops_it_and_keeps_what_is_done(tmp_path) -> None:
    text = BASE.replace("steps = 300", "steps = 20000") + "[sweep]\nseeds = [0, 1, 2, 3]\n"
    sweep = load_sweep(write(tmp_path, text))
    store = RunStore(tmp_path / "store")
    with dask_cluster(1) as (address, scheduler, _):

        def kill_the_scheduler(progress: runner.Progress) -> None:
            scheduler.kill()

        with pytest.raises(ClusterError, match=f"--scheduler {address}: the connection to"):
            runner.run_sweep(sweep, store, lambda _: Cluster(scheduler=address),
                             kill_the_scheduler, lambda *_: None)
    runs = store.list_runs(limit=None)
    assert len(runs) == 1 and runs[0].status == COMPLETED  # no point recorded as failed


def test_ctrl_c_cancels_the_sweep_and_keeps_what_is_done(tmp_path) -> None:
    """SIGINT to the whole process group, as a terminal sends it: exit 130, one line, no
    traceback from the workers, no process left, the points done recorded."""
    text = BASE.replace("steps = 300", "steps = 20000") + "[sweep]\nseeds = [0, 1, 2, 3, 4, 5]\n"
    command = [sys.executable, "-m", "hilctl", "sweep", write(tmp_path, text), "--workers", "2",
               "--store", str(tmp_path / "store")]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    assert process.stderr is not None
    lines = []
    while not lines or "done," not in lines[-1]:
        lines.append(process.stderr.readline())
        assert lines[-1], "".join(lines)
    os.killpg(process.pid, signal.SIGINT)
    out, rest = process.communicate(timeout=60)
    assert process.returncode == 130 and out == "", rest
    assert "Traceback" not in rest and rest.startswith("hilctl: interrupted (SIGINT); ")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = subprocess.run(["ps", "-o", "stat=", "-g", str(process.pid)],
                               capture_output=True, text=True).stdout.split()
        if all(stat.startswith("Z") for stat in alive):  # none, or exited and not yet reaped
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"processes of the sweep still running: {alive}")
    runs = RunStore(tmp_path / "store").list_runs(limit=None)
    assert runs and all(r.status == COMPLETED for r in runs) and len(runs) < 6


# ---------------------------------------------------------------------------------------------
# Refused before any work: one line, exit 2 (3 for a scheduler that does not answer).
# ---------------------------------------------------------------------------------------------

BAD = [
    ("[sweep]\n[colour]\nx = 1\n", "unknown section 'colour'; allowed: task, algorithm"),
    ("", "no [sweep] table"),
    ("[sweep]\nseed = [1]\n", "sweep.seed: unknown key; allowed: seeds, algorithms, grid, zip"),
    ("[sweep]\nseeds = []\n", "sweep.seeds: a non-empty list of integers >= 0"),
    ("[sweep]\nalgorithms = ['sgd']\n", "unknown algorithm 'sgd'; allowed: digital-sgd"),
    ('[sweep.grid]\n"task.lr" = []\n', "sweep.grid 'task.lr': empty list"),
    ('[sweep.grid]\n"task.lr" = 0.1\n', "sweep.grid 'task.lr': a list of values"),
    ('[sweep.grid]\n"lr" = [0.1]\n', "'lr': not SECTION.KEY; SECTION is one of task"),
    ('[sweep.grid]\n"task.colour" = [1]\n', "task.colour: unknown key; valid keys are"),
    ('[sweep.grid]\n"task.lr" = [-1]\n', "task.lr: Input should be greater than 0"),
    ('[sweep.grid]\n"algorithm.name" = ["tiki-taka"]\n', "list the algorithms in sweep.algorithms"),
    ('[sweep]\nalgorithms = ["analog-sgd", "tiki-taka"]\n[sweep.grid]\n"algorithm.fast_lr" = [0.1]\n',
     "analog-sgd has no key 'fast_lr'"),
    ('[[sweep.zip]]\n"device.w_max" = [0.5, 0.6]\n"device.w_min" = [-0.5]\n',
     "sweep.zip #1: lists of unequal length ('device.w_max' has 2, 'device.w_min' has 1)"),
    ('[sweep.grid]\n"task.lr" = [0.1]\n[[sweep.zip]]\n"task.lr" = [0.2]\n',
     "'task.lr' is swept twice"),
    ('[sweep]\nseeds = [0, 1]\n[sweep.grid]\n"task.steps" = ' + str(list(range(1, 502))) + "\n",
     f"1002 points, more than the limit of {POINT_LIMIT}; pass --yes"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m.split(";")[0][:40] for _, m in BAD])
def test_bad_sweep_files_are_refused_in_one_line(tmp_path, text: str, message: str) -> None:
    code, out, err = invoke(["sweep", write(tmp_path, BASE + text), "--store",
                             str(tmp_path / "store")])
    assert code == 2 and out == ""
    assert err.startswith("hilctl: error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "store").exists()  # refused before any work


def test_the_example_sweep_file_is_valid() -> None:
    sweep = load_sweep(Path(__file__).parents[1] / "examples" / "sweep.toml")
    assert len(sweep.points) == 36 and sweep.algorithms == ("analog-sgd", "tiki-taka")
    assert {p.config.algorithm.name: p.config for p in sweep.points}["tiki-taka"].algorithm.fast_lr == 0.1


def test_more_points_than_the_limit_need_yes(tmp_path) -> None:
    text = BASE + '[sweep]\nseeds = [0, 1]\n[sweep.grid]\n"task.steps" = ' + str(
        list(range(1, 502))) + "\n"
    assert len(load_sweep(write(tmp_path, text), confirmed=True).points) == 1002


def test_a_scheduler_that_does_not_answer_is_named_in_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(cluster_module, "CONNECT_TIMEOUT", 0.5)
    code, out, err = invoke(["sweep", write(tmp_path, BASE + GRID), "--scheduler",
                             "tcp://127.0.0.1:9", "--store", str(tmp_path / "store")])
    assert code == 3 and out == ""
    assert err.count("\n") == 1 and "--scheduler tcp://127.0.0.1:9: no answer within 0.5 s" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--scheduler", "127.0.0.1"], "--scheduler: '127.0.0.1' is not a scheduler address"),
    (["--scheduler", "tcp://127.0.0.1:9", "--workers", "2"], "--workers: sets the size of a local"),
    (["--workers", "0"], "--workers: must be an integer >= 1"),
    (["--plot", "out.pdf"], "--plot: the file name must end in .png"),
])
def test_bad_options_are_refused_in_one_line(tmp_path, argv: list[str], message: str) -> None:
    code, out, err = invoke(["sweep", write(tmp_path, BASE + GRID), *argv])
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_without_dask_the_sweep_says_how_to_install_it(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    code, out, err = invoke(["sweep", write(tmp_path, BASE + GRID)])
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "pip install 'hilctl[sweep]'" in err


def test_a_point_every_worker_died_on_is_recorded_as_failed(tmp_path) -> None:
    sweep = load_sweep(write(tmp_path, BASE + GRID))
    store = RunStore(tmp_path / "store")
    lost = runner._lost(sweep.points[0], TaskLost("every worker that ran it died: KilledWorker"))
    result = runner._record(sweep, store, sweep.points[0], lost)
    record = store.get_run(result.run_id or "")
    assert (record.status, record.command) == (FAILED, "sweep")
    assert "every worker that ran it died" in (record.error or "")
    assert record.config["task"]["lr"] == sweep.points[0].config.task.lr
    assert runner.earlier_results(sweep, store) == {}  # a failed point is run again
