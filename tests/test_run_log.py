"""A run recorded in memory (a sweep's worker) and written into the store afterwards reads as the
same run recorded in the store as it went; stores of the previous layout are upgraded."""

from __future__ import annotations

import pickle
import sqlite3

import numpy as np
import pytest

from hilctl.run_log import RunLog
from hilctl.runs import DIVERGED, FAILED, SCHEMA_VERSION, RunStore
from hilctl.train_config import resolve_train_config
from hilctl.training import DivergedRun, train


def _config(**task: object):
    return resolve_train_config(overrides={"task": {"steps": 300, "eval_window": 50,
                                                    "log_every": 100, **task}})


def test_a_logged_run_is_written_as_the_store_records_it(tmp_path) -> None:
    store = RunStore(tmp_path / "store.sqlite")
    direct = store.get_run(train(_config(), store=store).run_id or "")
    log = RunLog()
    train(_config(), store=log)
    assert log.run is not None and log.run.run_id is None
    logged = pickle.loads(pickle.dumps(log.run))  # it travels from a worker
    written = store.get_run(logged.write_to(store, sweep="sw-1", point="p1"))
    assert (written.config, written.final, written.status, written.backend) == (
        direct.config, direct.final, direct.status, direct.backend)
    for name, (steps, values) in direct.metrics.items():
        np.testing.assert_array_equal(written.metrics[name][0], steps)
        np.testing.assert_array_equal(written.metrics[name][1], values)
    assert [(s.step, s.name) for s in written.snapshots] == [(s.step, s.name) for s in direct.snapshots]
    assert written.started.timestamp() == pytest.approx(logged.started)  # when it ran
    assert written.ended is not None and written.ended.timestamp() == pytest.approx(logged.ended)
    assert written.metadata["worker"]["pid"] and written.checkpoints == []
    [summary] = store.list_runs(sweep="sw-1")
    assert (summary.run_id, summary.point) == (written.run_id, "p1")


def test_a_diverged_or_failed_run_in_memory_keeps_its_status_and_error(tmp_path) -> None:
    store = RunStore(tmp_path / "store.sqlite")
    log = RunLog()
    with pytest.raises(DivergedRun) as diverged:
        train(resolve_train_config(algorithm="digital-sgd", overrides={
            "task": {"steps": 300, "lr": 1e6}}), store=log)
    assert "recorded as diverged" not in str(diverged.value)  # not in a store (yet)
    assert log.run is not None and log.run.status == DIVERGED
    assert store.get_run(log.run.write_to(store)).status == DIVERGED
    failed = RunLog().failed(ValueError("no such data"), "sweep", {"task": {}}, "sim")
    record = store.get_run(failed.write_to(store))
    assert (record.status, record.error, record.command) == (FAILED, "ValueError: no such data",
                                                             "sweep")
    assert [e.kind for e in record.events] == ["error"]


def test_a_store_of_the_previous_layout_is_upgraded(tmp_path) -> None:
    path = tmp_path / "old.sqlite"
    RunStore(path).start_run("train").finish()
    with sqlite3.connect(path) as db:  # back to version 2: no sweep columns
        db.execute("DROP INDEX runs_sweep")
        db.execute("ALTER TABLE runs DROP COLUMN sweep")
        db.execute("ALTER TABLE runs DROP COLUMN point")
        db.execute("UPDATE schema_version SET version = 2")
    store = RunStore(path)
    assert store.schema_version() == SCHEMA_VERSION == 3
    [old] = store.list_runs()
    assert old.sweep is None and old.point is None
    store.start_run("sweep", sweep="sw-2", point="p").finish()
    assert [r.point for r in store.list_runs(sweep="sw-2")] == ["p"]
