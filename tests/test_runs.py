"""Tests of the run store (:mod:`hilctl.runs`) and ``hilctl runs`` (:mod:`hilctl.cli.runs`)."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilctl.cli import main
from hilctl.errors import HilctlError
from hilctl.runs import (
    COMPLETED,
    FAILED,
    INTERRUPTED,
    SCHEMA_VERSION,
    AmbiguousRunError,
    RunStore,
    RunStoreError,
    UnknownRunError,
    config_summary,
    default_store_path,
    new_run_id,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIG = {"task": "regression", "train": {"algorithm": {"name": "tiki-taka", "lr": 0.05}},
          "seed": 3, "layers": [4, 2]}


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    return RunStore(tmp_path / "runs.sqlite")


def record_run(store: RunStore, steps: int = 20, **config) -> str:
    with store.start_run(command="train", config=config or CONFIG, backend="sim") as run:
        for step in range(steps):
            run.log_metrics(step, loss=10.0 ** (-step / 4), rel_err=1.0 / (step + 1))
        run.log_event("info", "started")
        run.finish(final={"rel_err": 1.0 / steps})
    return run.run_id


# ---------------------------------------------------------------------------------------------
# The store.
# ---------------------------------------------------------------------------------------------


def test_round_trip(store: RunStore):
    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    with store.start_run(command="train", config=CONFIG, backend="sim",
                         metadata={"instrument": "sim-1"}) as run:
        for step in range(0, 50, 10):
            run.log_metrics(step, loss=0.3 + step, rel_err=0.2 * step)
        run.log_metrics(50, {"train/loss": math.nan, "big": 1e300, "neg0": -0.0})
        run.log_event("instrument", "reconnected to TCPIP0::10.0.0.2::INSTR", step=30)
        run.log_event("info", "done")
        path = run.save_snapshot(step=100, name="layer0", array=weights)
        run.finish(final={"rel_err": 0.01}, status=COMPLETED)
    assert path == store.directory / "snapshots" / run.run_id / "100_layer0.npy"
    assert path.is_file()

    record = store.get_run(run.run_id)
    assert record.status == COMPLETED and record.error is None
    assert record.command == "train" and record.backend == "sim"
    assert record.config == CONFIG
    assert record.final == {"rel_err": 0.01}
    assert record.summary == "regression / tiki-taka"
    assert record.metadata["instrument"] == "sim-1"
    for key in ("code_version", "hostname", "python", "numpy", "pid"):
        assert record.metadata[key]
    assert record.ended is not None and record.seconds is not None and record.seconds >= 0

    steps, values = record.metrics["loss"]
    assert steps.dtype == np.int64 and values.dtype == np.float64
    np.testing.assert_array_equal(steps, [0, 10, 20, 30, 40])
    np.testing.assert_array_equal(values, [0.3, 10.3, 20.3, 30.3, 40.3])
    assert math.isnan(record.metrics["train/loss"][1][0])
    assert record.metrics["big"][1][0] == 1e300
    assert math.copysign(1.0, record.metrics["neg0"][1][0]) == -1.0

    assert [(e.kind, e.message, e.step) for e in record.events] == [
        ("instrument", "reconnected to TCPIP0::10.0.0.2::INSTR", 30), ("info", "done", None)]
    (snap,) = record.snapshots
    assert (snap.step, snap.name, snap.shape, snap.path) == (100, "layer0", (3, 4), path)
    loaded = snap.load()
    assert loaded.dtype == np.float32
    np.testing.assert_array_equal(loaded, weights)


def test_wal_mode_and_schema_version(store: RunStore):
    assert store.journal_mode() == "wal"
    assert store.schema_version() == SCHEMA_VERSION
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused(store: RunStore):
    conn = sqlite3.connect(store.path)
    with conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(RunStoreError, match="newer"):
        RunStore(store.path)


def test_keyboard_interrupt_marks_interrupted_and_keeps_metrics(tmp_path: Path):
    store = RunStore(tmp_path, flush_seconds=3600, flush_rows=10_000)  # nothing flushed early
    with pytest.raises(KeyboardInterrupt), store.start_run("train", CONFIG) as run:
        for step in range(7):
            run.log_metrics(step, loss=1.0 / (step + 1))
        raise KeyboardInterrupt
    record = RunStore(tmp_path).get_run(run.run_id)  # a fresh connection sees it
    assert record.status == INTERRUPTED
    np.testing.assert_array_equal(record.metrics["loss"][0], np.arange(7))
    assert record.final == {}


def test_exception_marks_failed_and_reraises(store: RunStore):
    with pytest.raises(ZeroDivisionError), store.start_run("train", CONFIG) as run:
        run.log_metrics(0, loss=1.0)
        _ = 1 / 0
    record = store.get_run(run.run_id)
    assert record.status == FAILED
    assert record.error is not None and "ZeroDivisionError" in record.error
    assert record.events[-1].kind == "error" and "Traceback" in record.events[-1].message
    assert record.metrics["loss"][1].tolist() == [1.0]


def test_normal_exit_without_finish_completes(store: RunStore):
    with store.start_run("characterize") as run:
        run.log_metrics(1, x=2.0)
    assert store.get_run(run.run_id).status == COMPLETED
    with pytest.raises(RuntimeError, match="finished"):
        run.log_metrics(2, x=3.0)


def test_finish_refuses_unknown_status(store: RunStore):
    with store.start_run("train") as run:
        with pytest.raises(ValueError, match="status"):
            run.finish(status="great")
        run.finish(status=FAILED, error="gave up")
    assert store.get_run(run.run_id).error == "gave up"


def test_flush_by_rows(tmp_path: Path):
    store = RunStore(tmp_path, flush_seconds=3600, flush_rows=5)
    reader = RunStore(tmp_path)
    with store.start_run("train") as run:
        for step in range(4):
            run.log_metrics(step, a=1.0)
        assert "a" not in reader.get_run(run.run_id).metrics  # still buffered
        run.log_metrics(4, a=1.0)
        assert reader.get_run(run.run_id).metrics["a"][0].size == 5
    assert reader.get_run(run.run_id).metrics["a"][0].size == 5


def test_snapshot_name_is_checked(store: RunStore):
    with store.start_run("train") as run, pytest.raises(ValueError, match="snapshot name"):
        run.save_snapshot(1, "../evil", np.zeros(2))


def test_list_runs_newest_first(store: RunStore):
    ids = [record_run(store, steps=3) for _ in range(3)]
    runs = store.list_runs(limit=2)
    assert [r.run_id for r in runs] == ids[::-1][:2]
    assert runs[0].status == COMPLETED and runs[0].final == {"rel_err": 1 / 3}
    assert runs[0].summary == "regression / tiki-taka" and runs[0].command == "train"
    assert len(store.list_runs(limit=None)) == 3


def test_prefix_lookup_and_unknown_id(store: RunStore, monkeypatch):
    ids = iter(["20260101-000000-aaaa", "20260101-000000-aabb", "20260102-000000-cccc"])
    monkeypatch.setattr("hilctl.runs.new_run_id", lambda now=None: next(ids))
    for _ in range(3):
        record_run(store, steps=2)
    assert store.get_run("20260101-000000-aaaa").run_id == "20260101-000000-aaaa"
    assert store.get_run("20260101-000000-aab").run_id == "20260101-000000-aabb"
    assert store.get_run("20260102").run_id == "20260102-000000-cccc"
    with pytest.raises(AmbiguousRunError, match="several runs: 20260101-000000-aabb, 20260101-000000-aaaa"):
        store.get_run("20260101-000000-aa")
    with pytest.raises(UnknownRunError, match=r"close ids: .*20260101-000000-aaaa") as info:
        store.get_run("20260101-000000-aaab")
    assert isinstance(info.value, HilctlError)
    with pytest.raises(UnknownRunError, match=r"no run 'zzz'.*newest ids: 20260102-000000-cccc"):
        store.get_run("zzz")
    with pytest.raises(UnknownRunError):
        store.get_run("")


def test_same_id_drawn_twice_is_redrawn(store: RunStore, monkeypatch):
    ids = iter(["20260101-000000-aaaa", "20260101-000000-aaaa", "20260101-000000-bbbb"])
    monkeypatch.setattr("hilctl.runs.new_run_id", lambda now=None: next(ids))
    assert record_run(store, steps=1) == "20260101-000000-aaaa"
    assert record_run(store, steps=1) == "20260101-000000-bbbb"


def test_run_id_format():
    run_id = new_run_id(0.0)
    assert run_id.startswith("19700101-000000-") and len(run_id) == 20
    assert new_run_id(1.0) > run_id


def test_default_store_path(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HILCTL_HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / "runs.sqlite"
    monkeypatch.delenv("HILCTL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_store_path() == tmp_path / "xdg" / "hilctl" / "runs.sqlite"
    monkeypatch.setenv("HILCTL_HOME", str(tmp_path / "deep" / "er"))
    store = RunStore()
    assert store.path == tmp_path / "deep" / "er" / "runs.sqlite" and store.path.is_file()


def test_missing_store_is_not_created_for_reading(tmp_path: Path):
    with pytest.raises(RunStoreError, match="no run store"):
        RunStore(tmp_path / "nope.sqlite", create=False)
    assert not (tmp_path / "nope.sqlite").exists()


def test_config_summary():
    assert config_summary({}) == ""
    assert config_summary({"algorithm": "sgd"}) == "sgd"
    assert config_summary({"task": {"kind": "mnist"}, "opt": {"algorithm": "mixed"}}) == "mnist / mixed"


def _abandon(path: str) -> None:
    run = RunStore(path).start_run("train")
    run.log_metrics(0, loss=1.0)
    run.flush()
    os._exit(0)  # killed hard: no finish


@pytest.mark.skipif(os.name != "posix", reason="process liveness is checked on POSIX only")
def test_run_of_a_dead_process_is_reported_lost(store: RunStore):
    process = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork").Process(
        target=_abandon, args=(str(store.path),))
    process.start()
    process.join(30)
    (summary,) = store.list_runs()
    assert summary.status == "lost"
    record = store.get_run(summary.run_id)
    assert record.status == "lost" and record.metrics["loss"][1].tolist() == [1.0]


def _writer(path: str, label: str, count: int, barrier) -> None:
    store = RunStore(path, flush_rows=1)  # one transaction per metric: maximal contention
    barrier.wait()
    with store.start_run("train", {"writer": label}) as run:
        for step in range(count):
            run.log_metrics(step, loss=float(step))
            if step % 10 == 0:
                run.log_event("info", f"{label} at {step}")
        run.save_snapshot(count, "w", np.full(4, step))
        run.finish(final={"steps": count})


def test_concurrent_writers_from_two_processes(tmp_path: Path):
    path = str(tmp_path / "runs.sqlite")
    RunStore(path)
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    barrier = context.Barrier(2)
    count = 150
    workers = [context.Process(target=_writer, args=(path, label, count, barrier))
               for label in ("a", "b")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    store = RunStore(path)
    runs = store.list_runs()
    assert len(runs) == 2 and {r.status for r in runs} == {COMPLETED}
    for summary in runs:
        record = store.get_run(summary.run_id)
        np.testing.assert_array_equal(record.metrics["loss"][0], np.arange(count))
        assert len(record.events) == 15 and len(record.snapshots) == 1


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**62), 2**62),
                          st.floats(allow_nan=False, allow_infinity=False)), max_size=40))
def test_metrics_round_trip_property(points):
    with tempfile.TemporaryDirectory() as folder:
        store = RunStore(folder, flush_rows=7)
        with store.start_run("train") as run:
            for step, value in points:
                run.log_metrics(step, m=value)
        record = store.get_run(run.run_id)
        store.close()
    if not points:
        assert record.metrics == {}
        return
    steps, values = record.metrics["m"]
    order = sorted(range(len(points)), key=lambda i: points[i][0])  # stable: ties keep log order
    assert steps.tolist() == [points[i][0] for i in order]
    got = [float(v) for v in values]
    want = [points[i][1] for i in order]
    assert [(v, math.copysign(1, v)) for v in got] == [(v, math.copysign(1, v)) for v in want]


# ---------------------------------------------------------------------------------------------
# The command line.
# ---------------------------------------------------------------------------------------------


def test_cli_list(capsys, store: RunStore):
    run_id = record_run(store)
    assert main(["runs", "list", "--store", str(store.path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert run_id in out and "completed" in out and "regression / tiki-taka" in out
    assert main(["runs", "list", "--store", str(store.directory), "--json", "--limit", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["run_id"] == run_id and row["final"] == {"rel_err": 0.05}


def test_cli_list_uses_hilctl_home(capsys, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HILCTL_HOME", str(tmp_path / "home"))
    assert main(["runs", "list"]) == 0
    assert "no runs recorded" in capsys.readouterr().out
    run_id = record_run(RunStore())
    assert main(["runs", "list"]) == 0
    assert run_id in capsys.readouterr().out


def test_cli_show(capsys, store: RunStore):
    run_id = record_run(store)
    assert main(["runs", "show", run_id[:-2], "--store", str(store.path)]) == 0
    out = capsys.readouterr().out
    assert f"run {run_id}" in out and "completed" in out
    assert 'train.algorithm.name = "tiki-taka"' in out
    assert "loss" in out and "rel_err" in out and "[info] started" in out
    assert main(["runs", "show", run_id, "--store", str(store.path), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["config"] == CONFIG and record["status"] == "completed"
    assert record["metrics"]["rel_err"]["first"] == 1.0
    assert record["metrics"]["rel_err"]["last"] == record["metrics"]["rel_err"]["min"] == 0.05
    assert record["metrics"]["loss"]["points"] == 20


def test_cli_unknown_id_and_missing_store(capsys, store: RunStore, tmp_path: Path):
    record_run(store, steps=2)
    assert main(["runs", "show", "nope", "--store", str(store.path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hilctl: error: no run 'nope'") and err.count("\n") == 1
    assert main(["runs", "list", "--store", str(tmp_path / "missing.sqlite")]) == 2
    assert "no run store" in capsys.readouterr().err
    assert main(["runs"]) == 2
    assert "list, show, plot" in capsys.readouterr().err


def test_cli_plot(capsys, store: RunStore, tmp_path: Path):
    pytest.importorskip("matplotlib")
    run_id = record_run(store)
    out_file = tmp_path / "metrics.png"
    assert main(["runs", "plot", run_id, "--store", str(store.path), "--out", str(out_file)]) == 0
    assert out_file.read_bytes()[:8] == PNG_MAGIC
    assert "loss" in capsys.readouterr().out
    one = tmp_path / "one.png"
    argv = ["runs", "plot", "--metric", "rel_err", "--metric", "loss", run_id, "--store", str(store.path),
            "--out", str(one)]
    assert main(argv) == 0
    assert one.read_bytes()[:8] == PNG_MAGIC
    capsys.readouterr()
    assert main(["runs", "plot", run_id, "--metric", "nope", "--store", str(store.path),
                 "--out", str(one)]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err
    assert main(["runs", "plot", run_id, "--store", str(store.path), "--out", "x.txt"]) == 2


def test_cli_plot_without_matplotlib(capsys, monkeypatch, store: RunStore, tmp_path: Path):
    run_id = record_run(store, steps=2)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    argv = ["runs", "plot", run_id, "--store", str(store.path), "--out", str(tmp_path / "a.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'hilctl[plot]'" in err and err.count("\n") == 1


def test_log_scale_rule():
    from hilctl.plotting import use_log_scale

    assert use_log_scale(np.array([1.0, 1e-3]))
    assert not use_log_scale(np.array([1.0, 0.02]))
    assert not use_log_scale(np.array([1.0, 1e-3, 0.0]))
    assert not use_log_scale(np.array([math.nan]))
