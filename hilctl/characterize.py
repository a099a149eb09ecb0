"""Pulse-response characterisation of a tile (the measurement of ``hilctl characterize``).

Every cell is programmed to one start weight, then ``up`` single up pulses are applied to all
cells at once, and then ``down`` single down pulses; the weights are read after every pulse. The
mean and the spread over the cells against the pulse number show the device's response function
(how the step depends on the weight), its saturation, and its up/down asymmetry. On request every
cell's own trace is kept as well (:class:`CellTrace`), for fitting a device model to the
cell-to-cell spread that the mean hides.

Only the tile interface (:class:`hilctl.tile.Tile`) is used, so the same measurement runs on the
emulator and on a chip on the bench (where each read is slow: pass a ``progress`` callback).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hilctl.tile import Tile

#: ``progress(done, total)``: called after each pulse with the pulses applied so far.
Progress = Callable[[int, int], None]


@dataclass(frozen=True, eq=False)
class CellTrace:
    """Every cell's weight after programming and after each pulse of a sweep.

    Cells are flattened row-major (cell ``(r, c)`` is column ``r * cols + c``). Weights are in
    weight units (the normalised conductance the tile exposes), float64. Kept as arrays, not
    lists: a 64 x 64 tile swept with 400 pulses holds 1.6 million weights (13 MB). Compared by
    identity (``eq=False``): equality of arrays is not one truth value.

    Attributes:
        rows: rows of the tile.
        cols: columns of the tile.
        start: shape ``(rows * cols,)``, each cell's weight read back after programming.
        weights: shape ``(pulses, rows * cols)``, each cell's weight after each pulse, the up
            pulses first (the order of :attr:`PulseResponse.mean`).
    """

    rows: int
    cols: int
    start: np.ndarray
    weights: np.ndarray

    def __post_init__(self) -> None:
        cells = self.rows * self.cols
        if self.start.shape != (cells,):
            raise ValueError(f"start must have shape ({cells},); got {self.start.shape}")
        if self.weights.ndim != 2 or self.weights.shape[1] != cells:
            raise ValueError(f"weights must have shape (pulses, {cells}); "
                             f"got {self.weights.shape}")

    def as_json(self) -> dict[str, Any]:
        """``{"rows", "cols", "start": [cells], "weights": [[cells] per pulse]}``, plain lists
        of Python floats (the JSON record of ``characterize --per-cell``)."""
        return {
            "rows": self.rows,
            "cols": self.cols,
            "start": self.start.tolist(),
            "weights": self.weights.tolist(),
        }


@dataclass(frozen=True)
class PulseResponse:
    """Mean and spread over the cells of a tile after each pulse of an up-then-down sweep.

    Attributes:
        up: number of up pulses, applied first.
        down: number of down pulses, applied after the up pulses.
        start: the start weight that was requested.
        start_mean: mean weight read back after programming (differs from ``start`` where
            cells clipped at their bounds).
        start_std: spread of the weights after programming.
        mean: mean weight over the cells after each pulse; ``up + down`` entries, the up pulses
            first. Weight units (the normalised conductance the tile exposes).
        std: standard deviation over the cells (population, ``ddof=0``) after each pulse.
        cells: number of cells averaged over.
        per_cell: every cell's trace, when :func:`measure_pulse_response` was asked for it
            (``per_cell=True``), else None.
    """

    up: int
    down: int
    start: float
    start_mean: float
    start_std: float
    mean: list[float]
    std: list[float]
    cells: int
    per_cell: CellTrace | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.up + self.down:
                raise ValueError(f"{name} must have up + down = {self.up + self.down} entries; "
                                 f"got {len(getattr(self, name))}")
        if self.per_cell is not None and self.per_cell.weights.shape[0] != self.up + self.down:
            raise ValueError(f"per_cell must hold up + down = {self.up + self.down} pulses; "
                             f"got {self.per_cell.weights.shape[0]}")

    @property
    def pulses(self) -> int:
        """Total number of pulses, ``up + down``."""
        return self.up + self.down

    def _state(self, pulses: int) -> tuple[float, float]:
        if pulses == 0:
            return self.start_mean, self.start_std
        return self.mean[pulses - 1], self.std[pulses - 1]

    @property
    def after_up(self) -> tuple[float, float]:
        """``(mean, std)`` after the up pulses (the start if there were none)."""
        return self._state(self.up)

    @property
    def after_down(self) -> tuple[float, float]:
        """``(mean, std)`` at the end, after the down pulses."""
        return self._state(self.pulses)

    @property
    def first_up_step(self) -> float | None:
        """Change of the mean weight by the first up pulse (from the start); None if no up."""
        return self.mean[0] - self.start_mean if self.up else None

    @property
    def first_down_step(self) -> float | None:
        """Change of the mean weight by the first down pulse (negative for a normal device),
        taken where the up pulses left the cells; None if no down pulse."""
        if not self.down:
            return None
        return self.mean[self.up] - self._state(self.up)[0]

    @property
    def asymmetry(self) -> float | None:
        """``first_up_step / -first_down_step``: 1 for a symmetric device at those weights.

        The two steps are taken at different weights (the start, and after the up pulses), so
        for a weight-dependent device this mixes asymmetry with the response function. None
        when either step is missing or the down step is zero.
        """
        up, down = self.first_up_step, self.first_down_step
        if up is None or down is None or down == 0:
            return None
        return up / -down

    @property
    def largest_change(self) -> float:
        """The largest distance of the mean weight from where it started (weight units)."""
        return max((abs(m - self.start_mean) for m in self.mean), default=0.0)

    def moved(self, threshold: float) -> bool:
        """Whether the mean weight moved more than ``threshold`` (weight units) at any point:
        a sweep whose cells did not move tells of pulses below the switching threshold."""
        return self.largest_change > threshold

    def summary(self) -> dict[str, Any]:
        """The headline numbers as a JSON-ready dict."""
        return {
            "start": {"mean": self.start_mean, "std": self.start_std},
            "after_up": dict(zip(("mean", "std"), self.after_up, strict=True)),
            "after_down": dict(zip(("mean", "std"), self.after_down, strict=True)),
            "first_up_step": self.first_up_step,
            "first_down_step": self.first_down_step,
            "asymmetry": self.asymmetry,
        }

    def summary_lines(self) -> list[str]:
        """The headline numbers as aligned lines for a person (weights in weight units)."""

        def weight(state: tuple[float, float]) -> str:
            mean = round(state[0], 4) + 0.0  # + 0.0: no "-0.0000"
            return f"{mean:+.4f} +- {state[1]:.4f}"

        def step(value: float | None) -> str:
            return "n/a" if value is None else f"{value:+.3e}"

        ratio = self.asymmetry
        rows = [
            ("start", weight((self.start_mean, self.start_std))),
            (f"after {self.up} up", weight(self.after_up)),
            (f"after {self.down} down", weight(self.after_down)),
            ("first up step", step(self.first_up_step)),
            ("first down step", step(self.first_down_step)),
            ("up/down ratio", "n/a" if ratio is None else
             f"{ratio:.3f}  (first up step / |first down step|)"),
        ]
        width = max(len(label) for label, _ in rows)
        return [f"{label:<{width}}  {value}" for label, value in rows]


def _pulse_count(value: int, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    count = operator.index(value)
    if count < 0:
        raise ValueError(f"{name} must be >= 0; got {count}")
    return count


def measure_pulse_response(
    tile: Tile,
    up: int,
    down: int,
    start: float,
    *,
    progress: Progress | None = None,
    per_cell: bool = False,
) -> PulseResponse:
    """Program every cell of ``tile`` to ``start``, then apply ``up`` up pulses and ``down``
    down pulses to all cells, reading the weights after each pulse.

    Args:
        tile: any backend's tile; only ``program_weights``, ``apply_pulses`` and
            ``read_weights`` are used.
        up: number of single up pulses (>= 0), applied first.
        down: number of single down pulses (>= 0), applied after the up pulses.
        start: the weight every cell is programmed to first (weight units, finite).
        progress: called as ``progress(done, up + down)`` after each pulse.
        per_cell: also keep every cell's weight after programming and after each pulse
            (:attr:`PulseResponse.per_cell`; ``8 * rows * cols * (up + down + 1)`` bytes).

    Raises:
        ValueError: ``up`` or ``down`` negative, or ``start`` not finite.
    """
    up = _pulse_count(up, "up")
    down = _pulse_count(down, "down")
    start = float(start)
    if not math.isfinite(start):
        raise ValueError(f"start must be a finite weight; got {start}")
    shape = (tile.rows, tile.cols)
    reached = np.asarray(tile.program_weights(np.full(shape, start)), dtype=np.float64)
    means: list[float] = []
    stds: list[float] = []
    total = up + down
    trace = np.empty((total, shape[0] * shape[1])) if per_cell else None
    for sign, count in ((1, up), (-1, down)):
        pulses = np.full(shape, sign, dtype=np.int64)
        for _ in range(count):
            tile.apply_pulses(pulses)
            weights = np.asarray(tile.read_weights(), dtype=np.float64)
            if trace is not None:
                trace[len(means)] = weights.reshape(-1)
            means.append(float(weights.mean()))
            stds.append(float(weights.std()))
            if progress is not None:
                progress(len(means), total)
    cells = None if trace is None else CellTrace(
        rows=shape[0], cols=shape[1], start=reached.reshape(-1).copy(), weights=trace)
    return PulseResponse(
        up=up,
        down=down,
        start=start,
        start_mean=float(reached.mean()),
        start_std=float(reached.std()),
        mean=means,
        std=stds,
        cells=shape[0] * shape[1],
        per_cell=cells,
    )
