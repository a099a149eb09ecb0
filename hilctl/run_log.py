"""A run recorded in memory where no run store is, and written into one later.

A sweep's workers (:mod:`hilctl.sweep`) may run on machines that share no file system with the
run store, so they keep no store: the training controller records the run into a
:class:`RunLog` exactly as it records it into a :class:`~hilctl.runs.RunStore` (the same calls,
in the same order), the worker sends the :class:`LoggedRun` back, and the process that holds
the store writes it there with :meth:`LoggedRun.write_to`, at the times it happened. The run
then reads as any other (``hilctl runs show``); only a checkpoint is not kept, since a run in
memory cannot be resumed from one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hilctl.runs import (
    COMPLETED,
    FINAL_STATUSES,
    RUNNING,
    RecordingRun,
    RunStore,
    run_metadata,
)


@dataclass(frozen=True)
class _Metrics:
    time: float
    step: int
    values: dict[str, float]


@dataclass(frozen=True)
class _Event:
    time: float
    kind: str
    message: str
    step: int | None


@dataclass(frozen=True)
class _Snapshot:
    step: int
    name: str
    array: np.ndarray


@dataclass
class LoggedRun(RecordingRun):
    """A run recorded in memory (:meth:`RunLog.start_run`): plain data that pickles, so that it
    can travel from a worker to the process holding the store."""

    command: str
    config: dict[str, Any]
    backend: str | None
    metadata: dict[str, Any]
    started: float = field(default_factory=time.time)
    status: str = RUNNING
    ended: float | None = None
    final: dict[str, Any] | None = None
    error: str | None = None
    #: what was recorded, in order: metrics, events and snapshots
    entries: list[_Metrics | _Event | _Snapshot] = field(default_factory=list)
    run_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.status != RUNNING

    def _check_open(self) -> None:
        if self.finished:
            raise RuntimeError(f"the run is already finished ({self.status})")

    def log_metrics(self, step: int, metrics: Mapping[str, float] | None = None, /,
                    **values: float) -> None:
        self._check_open()
        items = {name: float(value) for name, value in {**(metrics or {}), **values}.items()}
        self.entries.append(_Metrics(time.time(), int(step), items))

    def log_event(self, kind: str, message: str, *, step: int | None = None,
                  at: float | None = None) -> None:
        self._check_open()
        self.entries.append(_Event(time.time() if at is None else at, str(kind), str(message),
                                   None if step is None else int(step)))

    def save_snapshot(self, step: int, name: str, array: Any) -> None:
        self._check_open()
        self.entries.append(_Snapshot(int(step), name, np.array(array)))

    def save_checkpoint(self, step: int, state: Mapping[str, Any]) -> None:
        """Nothing: a run in memory is not resumed (a sweep runs a lost point again)."""

    def heartbeat(self) -> None:
        """Nothing: no other process watches a run in memory."""

    def finish(self, final: Mapping[str, Any] | None = None, status: str = COMPLETED,
               error: str | None = None, *, ended: float | None = None) -> None:
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}; got {status!r}")
        self._check_open()
        self.final = None if final is None else dict(final)
        self.status, self.error = status, error
        self.ended = time.time() if ended is None else ended

    def write_to(self, store: RunStore, *, sweep: str | None = None, point: str | None = None,
                 metadata: Mapping[str, Any] | None = None) -> str:
        """Record this finished run in ``store`` (tagged with ``sweep`` and ``point``, its
        metadata updated with ``metadata``) as it happened; returns its run id there."""
        if not self.finished:
            raise RuntimeError("only a finished run is written into a store")
        run = store.start_run(self.command, self.config, self.backend,
                              metadata={**self.metadata, **(metadata or {})},
                              started=self.started, sweep=sweep, point=point)
        with run:
            for entry in self.entries:
                if isinstance(entry, _Metrics):
                    run.log_metrics_at(entry.time, entry.step, entry.values)
                elif isinstance(entry, _Event):
                    run.log_event(entry.kind, entry.message, step=entry.step, at=entry.time)
                else:
                    run.save_snapshot(entry.step, entry.name, entry.array)
            run.finish(self.final, self.status, self.error, ended=self.ended)
        self.run_id = run.run_id
        return run.run_id


class RunLog:
    """A stand-in for a :class:`~hilctl.runs.RunStore` that holds one run in memory: give it to
    :func:`hilctl.training.train` as ``store``, then take :attr:`run`."""

    def __init__(self) -> None:
        self.run: LoggedRun | None = None

    def start_run(self, command: str, config: Mapping[str, Any] | None = None,
                  backend: str | None = None, *,
                  metadata: Mapping[str, Any] | None = None) -> LoggedRun:
        """Begin the run; its metadata records this process (the host and process it ran in,
        the code version) under ``worker``."""
        if self.run is not None:
            raise RuntimeError("a RunLog holds one run")
        self.run = LoggedRun(command, dict(config or {}), backend,
                             {**(metadata or {}), "worker": run_metadata()})
        return self.run

    def failed(self, exc: BaseException, command: str, config: Mapping[str, Any],
               backend: str | None) -> LoggedRun:
        """The run, ended as failed by ``exc``: recorded as it stood (begun with
        ``command``, ``config`` and ``backend`` if the failure came before it began), with
        the error and its traceback."""
        run = self.run if self.run is not None else self.start_run(command, config, backend)
        run.__exit__(type(exc), exc, exc.__traceback__)  # as if its ``with`` block was left
        return run
