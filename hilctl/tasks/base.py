"""What every training task shares: the result it returns, where it reports, and the config
base whose ``run`` trains it.

A task is one module of this package holding its config (a :class:`TaskSettings`) next to the
code that trains it, and one line in the union of :mod:`hilctl.tasks`. A task builds its model
from weight arrays (``make_weights(rows, cols)``, which hides the algorithm and the backend),
trains it, reports metrics as it goes and returns the final figures and the history. Each task
draws its data from its own random streams of the run's seed, so the same seed gives every
algorithm the same problem and the same samples.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from hilctl.algorithms import WeightArray
from hilctl.errors import Diverged
from protocols.schema import StrictModel

WeightFactory = Callable[[int, int], WeightArray]

#: Random streams of a run, each ``default_rng([seed, stream])``.
PROBLEM, SAMPLES, INIT, SHUFFLE = 1, 2, 3, 4


class Reporter(Protocol):
    """Where a task sends its progress and metrics."""

    def progress(self, done: int, total: int) -> None: ...

    def metrics(self, step: int, values: dict[str, float]) -> None: ...

    def boundary(self, step: int, state: Callable[[], dict[str, Any]], *,
                 epoch_end: bool = False) -> None:
        """A point between steps where the run may be checkpointed (``state()`` gives the
        task's own state: its loop position, random streams and ``weights`` per layer) or
        stopped (a pending SIGINT/SIGTERM/SIGHUP)."""
        ...


@dataclass
class TaskResult:
    """The final figures, the recorded history (one list per metric, plus ``step``) and the
    final weights of each layer (read back from the tiles)."""

    final: dict[str, float]
    history: dict[str, list[float]] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def record(self, step: int, values: dict[str, float]) -> None:
        self.history.setdefault("step", []).append(step)
        for name, value in values.items():
            self.history.setdefault(name, []).append(value)



def require_finite(values: Mapping[str, float], where: str) -> None:
    """Raise :class:`~hilctl.errors.Diverged` naming the first non-finite value of ``values``:
    tasks check their loss every step, so a diverging run stops before a NaN reaches a tile."""
    for name, value in values.items():
        if not math.isfinite(value):
            raise Diverged(f"the run diverged: {name} = {value} at {where} (non-finite; try a "
                           "smaller learning rate or a device closer to the defaults)")


@dataclass(frozen=True)
class TaskRun:
    """What a task learns from the run it trains in.

    Attributes:
        seed: the run's seed (every random stream of the task derives from it).
        bound: the device's ``tau``, the smaller of its mean bounds (weight units; inf if none).
        digital_bias: biases are trained in floating point, not as a last column of the tile.
    """

    seed: int
    bound: float = float("inf")
    digital_bias: bool = False
    #: The task's state at a checkpoint to continue from (its weight arrays are restored
    #: already), or None for a fresh start.
    resume: Mapping[str, Any] | None = None


class TaskSettings(StrictModel):
    """Base of every task's config: its ``name`` (the registry key), what it reports, how to run."""

    name: str
    #: The figure a comparison of algorithms reports for this task.
    final_metric: ClassVar[str]
    #: Whether a larger :attr:`final_metric` is better (a sweep marks its best point by it).
    higher_is_better: ClassVar[bool]
    #: What each metric of the task means, for summaries.
    metric_meanings: ClassVar[Mapping[str, str]]

    @abstractmethod
    def length(self) -> str:
        """How long the task trains, in its own units (``4000 steps``, ``10 epochs``)."""

    @abstractmethod
    def run(self, make_weights: WeightFactory, report: Reporter, run: TaskRun) -> TaskResult:
        """Train the task's model, its weights from ``make_weights``; the final figures."""
