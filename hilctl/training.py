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
from dataclasses import dataclass
from typing import Any

import numpy as np

from hilctl.algorithms import WeightArray, build_weights
from hilctl.backends import Backend, get_backend
from hilctl.config import TileConfig
from hilctl.mapping import mapped
from hilctl.runs import Run, RunStore
from hilctl.tasks import TaskResult, TaskRun
from hilctl.tile import Tile
from hilctl.train_config import TrainConfig, device_bound

ProgressCallback = Callable[[int, int], None]
#: called with (step or epoch, metric values) each time a task records its metrics
MetricsCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainOutcome:
    """What a finished run reports."""

    run_id: str | None
    seconds: float
    config: TrainConfig
    final: dict[str, float]
    history: dict[str, list[float]]

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
            "config": self.config.model_dump(mode="json", by_alias=True),
            "final": self.final,
            "history": self.history,
        }


class _Reporter:
    """Forwards a task's progress and metrics to a callback and the run store."""

    def __init__(self, progress: ProgressCallback | None, run: Run | None,
                 on_metrics: MetricsCallback | None = None) -> None:
        self._progress = progress
        self._run = run
        self._on_metrics = on_metrics

    def progress(self, done: int, total: int) -> None:
        if self._progress is not None:
            self._progress(done, total)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        if self._run is not None:
            self._run.log_metrics(step, values)
        if self._on_metrics is not None:
            self._on_metrics(step, values)


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

    The algorithm learns the device's pulse size (its buffers' thresholds), the tiles'
    reference (residual learning needs zero-shifted tiles) and the run's seed (choppers).
    """
    open_analog = tile_opener(config, _as_backend(backend), options)

    def make_weights(rows: int, cols: int) -> WeightArray:
        return build_weights(config.algorithm, rows, cols, open_analog,
                             granularity=config.device.dw_min, reference=config.tile.reference,
                             seed=config.seed)

    if not config.algorithm.analog:
        return make_weights  # floating point: no tiles to fit
    return mapped(make_weights, config.tile.max_output_size, config.tile.max_input_size)


def run_task(config: TrainConfig, make_weights: Callable[[int, int], WeightArray],
             report: _Reporter) -> TaskResult:
    """Train the run's task on weight arrays from ``make_weights``."""
    run = TaskRun(seed=config.seed, bound=device_bound(config),
                  digital_bias=config.tile.digital_bias)
    return config.task.run(make_weights, report, run)


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
    started = time.perf_counter()
    if store is None:
        result = run_task(config, make_weights, _Reporter(progress, None, on_metrics))
        return TrainOutcome(None, time.perf_counter() - started, config, result.final,
                            result.history)
    config_json = {**config.model_dump(mode="json", by_alias=True), "backend": backend.name,
                   "backend_options": backend.describe(options)}
    with store.start_run(command, config_json, backend.name) as run:
        result = run_task(config, make_weights, _Reporter(progress, run, on_metrics))
        last_step = int(result.history["step"][-1]) if result.history.get("step") else 0
        for name, array in result.weights.items():
            run.save_snapshot(last_step, name, array)
        run.finish(final=result.final)
    return TrainOutcome(run.run_id, time.perf_counter() - started, config, result.final,
                        result.history)
