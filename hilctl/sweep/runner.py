"""Running a sweep's points on a Dask cluster and recording each in the run store.

Each point is one :func:`hilctl.training.train` on the emulator, recorded as ``hilctl train``
records a run (command ``sweep``, tagged with the sweep's id and the point's key). The worker
keeps the record in memory (:mod:`hilctl.run_log`) and sends it back; only this process, the
client, writes the store, so the workers need no shared file system.

Resumable: a point whose run in the store is ``completed`` or ``diverged`` (seeds fix
everything, so it would end the same) is not run again; a ``failed`` one is. A point whose
workers all died (:class:`~hilctl.cluster.TaskLost`) and a point whose training raised are
recorded as ``failed`` with the error, and the sweep goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hilctl.backends import get_backend
from hilctl.cluster import Cluster, TaskLost
from hilctl.errors import ClusterError
from hilctl.run_log import LoggedRun, RunLog
from hilctl.runs import COMPLETED, DIVERGED, FAILED, RunStore
from hilctl.sweep.spec import Point, Sweep
from hilctl.train_config import TrainConfig
from hilctl.training import run_record_config, train

#: The statuses of a point that a re-run of its sweep does not run again.
DONE = (COMPLETED, DIVERGED)
#: The command a sweep's runs are recorded under.
COMMAND = "sweep"
#: The backend a sweep trains on.
BACKEND = "sim"


@dataclass(frozen=True)
class PointResult:
    """What became of one point: its run in the store, status, final figures (those of
    ``hilctl train --json``; empty for a run that did not complete) and error; ``earlier`` if an earlier
    run of the sweep did it."""

    point: Point
    run_id: str | None
    status: str
    final: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    earlier: bool = False


@dataclass(frozen=True)
class Progress:
    """Where a sweep stands, after each point that ends: points done (by this run and
    earlier ones), running, failed (in this run), and an estimate of the seconds left."""

    total: int
    done: int
    running: int
    failed: int
    seconds_left: float
    last: PointResult


def train_point(config: dict[str, Any]) -> LoggedRun:
    """What a worker runs for one point: the training of ``config`` (a
    :class:`~hilctl.train_config.TrainConfig` as JSON) on the emulator, recorded in memory.
    It never raises: a failure is recorded in the run it returns."""
    log = RunLog()
    try:
        train(TrainConfig.model_validate(config), BACKEND, store=log, command=COMMAND)
    except Exception as exc:  # recorded: diverged (already) or failed, with its traceback
        return log.failed(exc, COMMAND, {**config, "backend": BACKEND}, BACKEND)
    assert log.run is not None
    return log.run


def earlier_results(sweep: Sweep, store: RunStore) -> dict[str, PointResult]:
    """The points of ``sweep`` that runs in ``store`` did already, by point key (the newest
    run of each)."""
    keys = {point.key: point for point in sweep.points}
    found: dict[str, PointResult] = {}
    for run in store.list_runs(limit=None, sweep=sweep.sweep_id):  # newest first
        if run.status in DONE and run.point in keys and run.point not in found:
            found[run.point] = PointResult(keys[run.point], run.run_id, run.status, run.final,
                                           earlier=True)
    return found


def run_sweep(sweep: Sweep, store: RunStore, open_cluster: Callable[[int], Cluster],
              progress: Callable[[Progress], None],
              started: Callable[[Cluster | None, int, int], None]) -> list[PointResult]:
    """Run the points of ``sweep`` not done yet on the cluster ``open_cluster(points to
    run)`` opens (not opened if none is left), record each in ``store`` as it ends, and
    return every point's result in the sweep's order. ``started`` hears the cluster (None if
    none is needed), the points done earlier and the points to run; ``progress`` hears each
    point that ends."""
    results = earlier_results(sweep, store)
    todo = [point for point in sweep.points if point.key not in results]
    if not todo:
        started(None, len(results), 0)
    else:
        with open_cluster(len(todo)) as cluster:
            started(cluster, len(results), len(todo))
            begun = time.monotonic()
            failed = 0
            configs = [point.config.model_dump(mode="json", by_alias=True) for point in todo]
            for finished, (i, outcome) in enumerate(
                    cluster.completed(train_point, configs, name="sweep-point"), 1):
                point = todo[i]
                logged = outcome if isinstance(outcome, LoggedRun) else _lost(point, outcome)
                result = _record(sweep, store, point, logged)
                results[point.key] = result
                failed += result.status == FAILED
                left = len(todo) - finished
                rate = finished / max(time.monotonic() - begun, 1e-9)
                progress(Progress(len(sweep.points), len(results), min(left, cluster.threads()),
                                  failed, left / rate, result))
    return [results[point.key] for point in sweep.points]


def _lost(point: Point, lost: TaskLost) -> LoggedRun:
    """The record of a point the cluster could not finish: failed, with the reason."""
    with get_backend(BACKEND) as backend:
        config = run_record_config(point.config, backend, {})
    return RunLog().failed(ClusterError(lost.error), COMMAND, config, BACKEND)


def _record(sweep: Sweep, store: RunStore, point: Point, logged: LoggedRun) -> PointResult:
    run_id = logged.write_to(store, sweep=sweep.sweep_id, point=point.key,
                             metadata={"sweep": sweep.sweep_id, "point": point.label()})
    return PointResult(point, run_id, logged.status, dict(logged.final or {}), logged.error)
