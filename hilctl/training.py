"""The training controller: open the tiles a run needs, run its task, record it.

``train(config, backend)`` works the same on every backend: the tiles come from the backend
(:class:`hilctl.backends.Backend`, or its registered name), each with its own seed derived from
the run's seed.
With a :class:`~hilctl.runs.RunStore`, the run is recorded as it goes (config, metrics,
checkpoints, final figures, and the final weights of every layer as snapshots beside the
database); an interrupted or failed run keeps its history and its last checkpoint, from which
:func:`resume` continues it. With a :class:`~hilctl.run_log.RunLog` instead (a sweep's
worker, which has no store), the same record is kept in memory, to be written into a store by
the process that holds it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hilctl import stopping
from hilctl.algorithms import WeightArray, build_weights
from hilctl.backends import Backend, ChipFacts, get_backend
from hilctl.config import TileConfig
from hilctl.errors import ConfigError, Diverged, Interrupted, NonFiniteValue
from hilctl.mapping import mapped
from hilctl.operations import Operations
from hilctl.run_log import RunLog
from hilctl.runs import RESUMABLE, RecordingRun, RunStore, to_json
from hilctl.tasks import TaskResult, TaskRun
from hilctl.tasks.base import require_finite
from hilctl.tile import Tile
from hilctl.train_config import TrainConfig, device_bound

ProgressCallback = Callable[[int, int], None]
#: called with (step or epoch, metric values) each time a task records its metrics
MetricsCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainOutcome:
    """What a run reports: ``status`` is ``completed``, or ``diverged`` for the outcome a
    :class:`DivergedRun` carries."""

    run_id: str | None
    seconds: float
    config: TrainConfig
    final: dict[str, float]
    history: dict[str, list[float]]
    status: str = "completed"
    #: The run ran on a chip's own cells: its config's device and periphery did not apply.
    physical: bool = False
    #: What the backend reported at the end (instruments, regions, link trouble).
    backend_report: dict[str, Any] = field(default_factory=dict)
    #: The backend as a summary names it, and its report for a person, a line each.
    backend_label: str = ""
    backend_lines: list[str] = field(default_factory=list)
    #: For a resumed run on a physical backend: each tile's drift from the checkpoint.
    drift: list[dict[str, Any]] = field(default_factory=list)
    #: What the run cost the instruments (:meth:`Operations.as_json`), None without instruments.
    operations: dict[str, Any] | None = None
    #: Training steps done in this process (a resumed run: since the resume).
    steps: int = 0

    def config_json(self) -> dict[str, Any]:
        """The config as recorded: without device and periphery where they did not apply."""
        return recorded_config(self.config, self.physical)

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "config": self.config_json(),
            "final": self.final,
            "history": self.history,
            **({"operations": self.operations} if self.operations is not None else {}),
            **({"backend": self.backend_report} if self.backend_report else {}),
            **({"drift": self.drift} if self.drift else {}),
        }


def recorded_config(config: TrainConfig, physical: bool) -> dict[str, Any]:
    """``config`` as JSON; on a chip's own cells (``physical``) without the device and the
    periphery, which describe an emulator only."""
    exclude = {"device", "periphery"} if physical else None
    return config.model_dump(mode="json", by_alias=True, exclude=exclude)


def run_record_config(config: TrainConfig, backend: Backend,
                      options: Mapping[str, Any]) -> dict[str, Any]:
    """What the run store records as a run's config: :func:`recorded_config`, the backend's
    name and its options as the backend describes them."""
    return {**recorded_config(config, backend.physical), "backend": backend.name,
            "backend_options": backend.describe(options)}


class DivergedRun(Diverged):
    """A run's metrics became non-finite; :attr:`outcome` holds what it recorded until then."""

    def __init__(self, message: str, outcome: TrainOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class _Reporter:
    """Forwards a task's progress and metrics to a callback and the run store, keeps the
    history, counts the training steps (:attr:`steps`: one progress report each), stops a run
    whose metrics are no longer finite (:class:`Diverged`), and at step boundaries writes
    checkpoints (every ``checkpoint_seconds``, at epoch ends, and before it stops on a signal)
    and heartbeats."""

    def __init__(self, progress: ProgressCallback | None, run: RecordingRun | None,
                 on_metrics: MetricsCallback | None = None, session: Session | None = None,
                 checkpoint_seconds: float = 60.0) -> None:
        self._progress = progress
        self._run = run
        self._on_metrics = on_metrics
        self._session = session
        self._interval = checkpoint_seconds
        self._last_checkpoint = self._last_beat = time.monotonic()
        self.history = TaskResult(final={})
        self.steps = 0

    def progress(self, done: int, total: int) -> None:
        self.steps += 1
        if self._progress is not None:
            self._progress(done, total)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.history.record(step, values)
        if self._run is not None:
            self._run.log_metrics(step, values)
        if self._on_metrics is not None:
            self._on_metrics(step, values)
        require_finite(values, f"step {step}")

    def boundary(self, step: int, state: Callable[[], dict[str, Any]], *,
                 epoch_end: bool = False) -> None:
        now = time.monotonic()
        if not epoch_end and now - self._last_beat < self._interval and stopping.pending() is None:
            return  # the common case, every step: nothing to do
        signum = stopping.take()
        if self._run is not None and self._session is not None and (
                signum is not None or epoch_end or now - self._last_checkpoint >= self._interval):
            self._run.save_checkpoint(step, self._session.state(state()))
            self._last_checkpoint = self._last_beat = time.monotonic()
        elif self._run is not None and now - self._last_beat >= self._interval:
            self._run.heartbeat()
            self._last_beat = now
        if signum is not None:
            raise Interrupted(signum)


class Session:
    """The tiles and weight arrays a run makes, in the order it makes them, so that a
    checkpoint can hold their state and a resumed run can put it back into the same ones.

    On resume every tile and array gets its state the moment it is made; a tile whose state
    holds a read-back (``weights``: a physical chip keeps its own weights) is read again and
    its drift from the checkpoint reported, and, with ``reprogram_beyond``, the cells that
    drifted further are written back.
    """

    def __init__(self, resume: Mapping[str, Any] | None = None,
                 reprogram_beyond: float | None = None) -> None:
        self.tiles: list[Tile] = []
        self.arrays: list[WeightArray] = []
        self.resume = resume
        self.reprogram_beyond = reprogram_beyond
        self.drift: list[dict[str, Any]] = []

    def tile_opener(self, open_tile: Callable[[int, int], Tile]) -> Callable[[int, int], Tile]:
        def opened(rows: int, cols: int) -> Tile:
            tile = open_tile(rows, cols)
            if self.resume is not None:
                self._restore(tile, self.resume["tiles"][len(self.tiles)])
            self.tiles.append(tile)
            return tile

        return opened

    def builder(self, build: Callable[[int, int], WeightArray]) -> Callable[[int, int], WeightArray]:
        def built(rows: int, cols: int) -> WeightArray:
            array = build(rows, cols)
            if self.resume is not None:
                array.load_state_dict(self.resume["arrays"][len(self.arrays)])
            self.arrays.append(array)
            return array

        return built

    def _restore(self, tile: Tile, state: Mapping[str, Any]) -> None:
        tile.load_state_dict(state)
        if "weights" not in state:
            return
        saved = np.asarray(state["weights"], dtype=np.float64)
        now = tile.read_weights()
        drift = np.abs(now - saved)
        beyond = int((drift > self.reprogram_beyond).sum()) if self.reprogram_beyond else 0
        self.drift.append({"tile": len(self.tiles), "max": float(drift.max(initial=0.0)),
                           "mean": float(drift.mean()) if drift.size else 0.0,
                           "reprogrammed": beyond})
        if beyond:
            assert self.reprogram_beyond is not None
            tile.program_weights(np.where(drift > self.reprogram_beyond, saved, now))

    def state(self, task: Mapping[str, Any]) -> dict[str, Any]:
        """A checkpoint: every tile's and array's state, and the task's."""
        return {"tiles": [tile.state_dict() for tile in self.tiles],
                "arrays": [array.state_dict() for array in self.arrays], "task": dict(task)}


def tile_opener(config: TrainConfig, backend: Backend,
                options: Mapping[str, Any] | None = None) -> Callable[[int, int], Tile]:
    """A factory of analog tiles for the run: the k-th tile gets seed ``(run seed, k)``."""
    counter = iter(range(1, 1 << 30))

    def open_analog(rows: int, cols: int) -> Tile:
        seed = int(np.random.SeedSequence([config.seed, next(counter)]).generate_state(1)[0])
        tile_config = TileConfig(rows=rows, cols=cols, device=config.device, update=config.update,
                                 periphery=config.periphery, reference=config.tile.reference,
                                 seed=seed)
        return backend.open_tile(tile_config, **dict(options or {}))

    return open_analog


def weight_factory(config: TrainConfig, backend: Backend | str = "sim",
                   options: Mapping[str, Any] | None = None,
                   session: Session | None = None) -> Callable[[int, int], WeightArray]:
    """Weight arrays of the run's algorithm on tiles of ``backend``, one per call (rows, cols);
    a matrix larger than ``tile.max_output_size x tile.max_input_size`` is split over a grid
    of them (:mod:`hilctl.mapping`).

    The algorithm learns the pulse size (its buffers' thresholds: the chip's on a physical
    backend, else the device's ``dw_min``), the tiles' reference (residual learning needs
    zero-shifted tiles) and the run's seed (choppers).
    """
    chosen = _as_backend(backend)
    session = session or Session()
    open_analog = session.tile_opener(tile_opener(config, chosen, options))
    chip = chosen.chip(options or {})
    granularity = chip.dw_min if chip is not None else config.device.dw_min

    @session.builder
    def make_weights(rows: int, cols: int) -> WeightArray:
        return build_weights(config.algorithm, rows, cols, open_analog,
                             granularity=granularity, reference=config.tile.reference,
                             seed=config.seed)

    if not config.algorithm.analog:
        return make_weights  # floating point: no tiles to fit
    return mapped(make_weights, config.tile.max_output_size, config.tile.max_input_size)


def run_task(config: TrainConfig, make_weights: Callable[[int, int], WeightArray],
             report: _Reporter, chip: ChipFacts | None = None,
             resume: Mapping[str, Any] | None = None) -> TaskResult:
    """Train the run's task on weight arrays from ``make_weights`` (from the task state
    ``resume``, if given); the weight range is the chip's where there is one (``chip``), else
    the device's."""
    bound = min(chip.w_max, -chip.w_min) if chip is not None else device_bound(config)
    run = TaskRun(seed=config.seed, bound=bound, digital_bias=config.tile.digital_bias,
                  resume=resume)
    # A diverging run overflows on its way to NaN: it is reported as diverged, not warned about.
    with np.errstate(over="ignore", invalid="ignore"):
        try:
            return config.task.run(make_weights, report, run)
        except NonFiniteValue as exc:  # inside a run, a NaN reaching a tile comes from the run
            raise Diverged(f"the run diverged: {exc}") from exc


def _as_backend(backend: Backend | str) -> Backend:
    return backend if isinstance(backend, Backend) else get_backend(backend)


def train(
    config: TrainConfig,
    backend: Backend | str = "sim",
    *,
    store: RunStore | RunLog | None = None,
    command: str = "train",
    progress: ProgressCallback | None = None,
    backend_options: Mapping[str, Any] | None = None,
    on_metrics: MetricsCallback | None = None,
) -> TrainOutcome:
    """Run one training of ``config`` on ``backend``; record it in ``store`` if given (with
    checkpoints every ``config.run.checkpoint_seconds``, so it can be resumed), or in memory
    if ``store`` is a :class:`~hilctl.run_log.RunLog`.

    ``backend`` is a :class:`Backend` (the caller closes it) or a registered name (opened for
    this run and closed at its end). ``progress`` hears (done, total) after every step;
    ``on_metrics`` hears each recorded set of metrics (every epoch of an MNIST task, every
    window of least squares)."""
    if isinstance(backend, str):
        with get_backend(backend) as owned:
            return train(config, owned, store=store, command=command, progress=progress,
                         backend_options=backend_options, on_metrics=on_metrics)
    options = dict(backend_options or {})
    if store is None:
        return _execute(config, backend, options, None, Session(), progress, on_metrics)
    run = store.start_run(command, run_record_config(config, backend, options), backend.name,
                          metadata={"heartbeat_seconds": config.run.checkpoint_seconds})
    return _execute(config, backend, options, run, Session(), progress, on_metrics)


def resume(
    run_id: str,
    store: RunStore,
    *,
    progress: ProgressCallback | None = None,
    on_metrics: MetricsCallback | None = None,
    reprogram_beyond: float | None = None,
) -> TrainOutcome:
    """Continue the ``interrupted``, ``failed`` or ``lost`` run ``run_id`` from its last
    checkpoint, on the backend it ran on, under the same run id (its history continues).

    On an emulator the result equals the uninterrupted run's, bit for bit. On a physical
    backend the chip is never re-initialised: the backend checks it is the same bench, each
    tile is read back and its drift from the checkpoint reported (an event ``drift``) and, with
    ``reprogram_beyond`` (weight units), cells that drifted further are written back.
    """
    record = store.get_run(run_id)
    if record.status not in RESUMABLE:
        raise ConfigError(f"run {record.run_id} is {record.status}; only "
                          f"{', '.join(RESUMABLE)} runs can be resumed")
    saved = record.checkpoints
    if not saved:
        raise ConfigError(f"run {record.run_id} has no checkpoint to resume from (it stopped "
                          "before its first one)")
    latest = saved[-1]
    state = latest.load()
    values = {k: v for k, v in record.config.items() if k not in ("backend", "backend_options")}
    config = TrainConfig.model_validate(values)
    backend_report: dict[str, Any] = next((json.loads(e.message) for e in reversed(record.events)
                                           if e.kind == "backend"), {})
    with get_backend(record.backend or "sim") as backend:
        options = backend.resume_options(record.config.get("backend_options", {}), backend_report)
        history = state["task"].get("history", {})
        kept = int(history["step"][-1]) if history.get("step") else 0
        run = store.resume_run(record.run_id, keep_metrics_through=kept, step=latest.step,
                               metadata={"heartbeat_seconds": config.run.checkpoint_seconds})
        session = Session(state, reprogram_beyond)
        return _execute(config, backend, options, run, session, progress, on_metrics)


def _execute(config: TrainConfig, backend: Backend, options: dict[str, Any],
             run: RecordingRun | None, session: Session, progress: ProgressCallback | None,
             on_metrics: MetricsCallback | None) -> TrainOutcome:
    """The run itself, recorded in ``run`` (or not), from ``session.resume`` (or from the
    start)."""
    make_weights = weight_factory(config, backend, options, session)
    chip = backend.chip(options)
    before = Operations.in_report(backend.report())  # a backend kept open from an earlier run
    started = time.perf_counter()
    reporter = _Reporter(progress, run, on_metrics, session, config.run.checkpoint_seconds)
    resume_task = None if session.resume is None else session.resume["task"]
    ended: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

    def at_end() -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The backend's report and the run's operations, taken once when the run ends."""
        if not ended:
            report = backend.report()
            totals = Operations.in_report(report)
            seconds = time.perf_counter() - started
            ended.append((report, None if totals is None else
                          totals.since(before).as_json(seconds)))
        return ended[0]

    def outcome(final: dict[str, float], history: dict[str, list[float]],
                status: str = "completed") -> TrainOutcome:
        report, operations = at_end()
        return TrainOutcome(None if run is None else run.run_id, time.perf_counter() - started,
                            config, final, history, status, backend.physical, report,
                            backend.label(options), backend.report_lines(report), session.drift,
                            operations, reporter.steps)

    try:
        with stopping.deferring():
            if run is None:
                result = run_task(config, make_weights, reporter, chip, resume_task)
                require_finite(result.final, "the end")
                return outcome(result.final, result.history)
            with run:
                try:
                    result = run_task(config, make_weights, reporter, chip, resume_task)
                finally:  # what the backend saw, even when the run failed or was interrupted
                    report, operations = at_end()
                    if report:
                        run.log_event("backend", to_json(report))
                    if operations is not None:
                        run.log_event("operations", to_json({**operations,
                                                             "steps": reporter.steps}))
                    if session.drift:
                        run.log_event("drift", to_json(session.drift))
                require_finite(result.final, "the end")
                last_step = int(result.history["step"][-1]) if result.history.get("step") else 0
                for name, array in result.weights.items():
                    run.save_snapshot(last_step, name, array)
                run.finish(final=result.final)
            return outcome(result.final, result.history)
    except KeyboardInterrupt as exc:
        if run is not None and run.run_id:
            exc.run_id = run.run_id  # type: ignore[attr-defined]  # named in the Ctrl-C line
        raise
    except Diverged as exc:
        heard = reporter.history.history
        last = {name: values[-1] for name, values in heard.items() if name != "step"}
        recorded = f"; run {run.run_id} recorded as diverged" if run is not None and run.run_id else ""
        raise DivergedRun(f"{exc}{recorded}", outcome(last, heard, Diverged.run_status)) from None
