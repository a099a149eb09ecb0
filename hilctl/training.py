"""The training controller: open the tiles a run needs, run its task, record it.

``train(config, backend)`` works the same on every backend: the tiles come from the backend
(:class:`hilctl.backends.Backend`, or its registered name), each with its own seed derived from
the run's seed.
With a :class:`~hilctl.runs.RunStore`, the run is recorded as it goes (config, metrics, final
figures, and the final weights of every layer as snapshots beside the database); an
interrupted or failed run keeps its history and is marked so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hilctl.algorithms import WeightArray, build_weights
from hilctl.backends import Backend, ChipFacts, get_backend
from hilctl.config import TileConfig
from hilctl.errors import Diverged, NonFiniteValue
from hilctl.mapping import mapped
from hilctl.runs import Run, RunStore, to_json
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
            **({"backend": self.backend_report} if self.backend_report else {}),
        }


def recorded_config(config: TrainConfig, physical: bool) -> dict[str, Any]:
    """``config`` as JSON; on a chip's own cells (``physical``) without the device and the
    periphery, which describe an emulator only."""
    exclude = {"device", "periphery"} if physical else None
    return config.model_dump(mode="json", by_alias=True, exclude=exclude)


class DivergedRun(Diverged):
    """A run's metrics became non-finite; :attr:`outcome` holds what it recorded until then."""

    def __init__(self, message: str, outcome: TrainOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


class _Reporter:
    """Forwards a task's progress and metrics to a callback and the run store, keeps the
    history, and stops a run whose metrics are no longer finite (:class:`Diverged`)."""

    def __init__(self, progress: ProgressCallback | None, run: Run | None,
                 on_metrics: MetricsCallback | None = None) -> None:
        self._progress = progress
        self._run = run
        self._on_metrics = on_metrics
        self.history = TaskResult(final={})

    def progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(done, total)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.history.record(step, values)
        if self._run is not None:
            self._run.log_metrics(step, values)
        if self._on_metrics is not None:
            self._on_metrics(step, values)
        require_finite(values, f"step {step}")


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
                   options: Mapping[str, Any] | None = None) -> Callable[[int, int], WeightArray]:
    """Weight arrays of the run's algorithm on tiles of ``backend``, one per call (rows, cols);
    a matrix larger than ``tile.max_output_size x tile.max_input_size`` is split over a grid
    of them (:mod:`hilctl.mapping`).

    The algorithm learns the pulse size (its buffers' thresholds: the chip's on a physical
    backend, else the device's ``dw_min``), the tiles' reference (residual learning needs
    zero-shifted tiles) and the run's seed (choppers).
    """
    chosen = _as_backend(backend)
    open_analog = tile_opener(config, chosen, options)
    chip = chosen.chip(options or {})
    granularity = chip.dw_min if chip is not None else config.device.dw_min

    def make_weights(rows: int, cols: int) -> WeightArray:
        return build_weights(config.algorithm, rows, cols, open_analog,
                             granularity=granularity, reference=config.tile.reference,
                             seed=config.seed)

    if not config.algorithm.analog:
        return make_weights  # floating point: no tiles to fit
    return mapped(make_weights, config.tile.max_output_size, config.tile.max_input_size)


def run_task(config: TrainConfig, make_weights: Callable[[int, int], WeightArray],
             report: _Reporter, chip: ChipFacts | None = None) -> TaskResult:
    """Train the run's task on weight arrays from ``make_weights``; the weight range is the
    chip's where there is one (``chip``), else the device's."""
    bound = min(chip.w_max, -chip.w_min) if chip is not None else device_bound(config)
    run = TaskRun(seed=config.seed, bound=bound, digital_bias=config.tile.digital_bias)
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
    store: RunStore | None = None,
    command: str = "train",
    progress: ProgressCallback | None = None,
    backend_options: Mapping[str, Any] | None = None,
    on_metrics: MetricsCallback | None = None,
) -> TrainOutcome:
    """Run one training of ``config`` on ``backend``; record it in ``store`` if given.

    ``backend`` is a :class:`Backend` (the caller closes it) or a registered name (opened for
    this run and closed at its end). ``progress`` hears (done, total) after every step;
    ``on_metrics`` hears each recorded set of metrics (every epoch of an MNIST task, every
    window of least squares)."""
    if isinstance(backend, str):
        with get_backend(backend) as owned:
            return train(config, owned, store=store, command=command, progress=progress,
                         backend_options=backend_options, on_metrics=on_metrics)
    options = dict(backend_options or {})
    make_weights = weight_factory(config, backend, options)
    chip = backend.chip(options)
    started = time.perf_counter()
    run: Run | None = None
    reporter = _Reporter(progress, None, on_metrics)

    def outcome(final: dict[str, float], history: dict[str, list[float]],
                status: str = "completed") -> TrainOutcome:
        return TrainOutcome(None if run is None else run.run_id, time.perf_counter() - started,
                            config, final, history, status, backend.physical, backend.report())

    try:
        if store is None:
            result = run_task(config, make_weights, reporter, chip)
            require_finite(result.final, "the end")
            return outcome(result.final, result.history)
        config_json = {**recorded_config(config, backend.physical), "backend": backend.name,
                       "backend_options": backend.describe(options)}
        with store.start_run(command, config_json, backend.name) as run:
            reporter = _Reporter(progress, run, on_metrics)
            try:
                result = run_task(config, make_weights, reporter, chip)
            finally:  # what the backend saw, even when the run failed or was interrupted
                report = backend.report()
                if report:
                    run.log_event("backend", to_json(report))
            require_finite(result.final, "the end")
            last_step = int(result.history["step"][-1]) if result.history.get("step") else 0
            for name, array in result.weights.items():
                run.save_snapshot(last_step, name, array)
            run.finish(final=result.final)
        return outcome(result.final, result.history)
    except Diverged as exc:
        heard = reporter.history.history
        last = {name: values[-1] for name, values in heard.items() if name != "step"}
        recorded = f"; run {run.run_id} recorded as diverged" if run is not None else ""
        raise DivergedRun(f"{exc}{recorded}", outcome(last, heard, Diverged.run_status)) from None
