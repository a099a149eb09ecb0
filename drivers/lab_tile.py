"""A tile of a real (or simulated) chip on a bench, behind the tile interface.

The lab tile turns the training controller's operations into instrument work:

- ``read_weights``: read every cell's current at the read voltage, ``w = (I / V - g_ref) / g_scale``;
  ``forward``/``backward`` multiply with those weights (the bench has no analog MVM yet). A
  cell is read again only after a write touched it, and a forward reads only the columns its
  input uses (Tiki-Taka's one-hot column reads read one column).
- ``update(x, d, lr)``: the same stochastic pulse trains as the emulator
  (:mod:`hilctl.pulse_trains`). Where the board fires rows and columns at once, each slot goes
  out as coincidence pulses on row and column masks, one per sign quadrant; else every cell
  gets its up pulses, then its down pulses, one cell at a time.
- ``apply_pulses(counts)``: signed counts, cell by cell.
- ``program_weights(target, tol)``: write and verify, pulsing each cell towards its target by
  the number of pulses its error asks for until every cell is within ``tol``.

Hardware is reached through a :class:`CellAccess` (board, or pulse generator and SMU routed by
the board), whose every pulse is checked against the station's limits before it is sent.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drivers.station import MappingSection, TileRegion
from hilctl.config import UpdateConfig
from hilctl.pulse_trains import coincidences
from hilctl.tile import Capabilities, as_batch, as_matrix, as_pulse_counts, as_update

Array = NDArray[np.float64]
Index = NDArray[np.intp]


class CellAccess(Protocol):
    """What a lab tile needs of the bench; chip coordinates throughout."""

    @property
    def parallel_update(self) -> bool:
        """True if :meth:`pulse_masks` works (rows and columns fired at once)."""
        ...

    def pulse_cells(self, rows: Index, cols: Index, polarity: int, counts: NDArray[np.int64]
                    ) -> None:
        """``counts[k]`` pulses of ``polarity`` on cell ``(rows[k], cols[k])``."""
        ...

    def pulse_masks(self, rows: Index, cols: Index, polarity: int) -> None:
        """One pulse of ``polarity`` on every cell of ``rows x cols`` (coincidence update)."""
        ...

    def read_cells(self, rows: Index, cols: Index) -> Array:
        """The read currents (A) of cells ``(rows[k], cols[k])``."""
        ...

    @property
    def read_voltage(self) -> float:
        """The read voltage (V) of :meth:`read_region`."""
        ...


class LabTile:
    """A ``rows x cols`` tile in a region of a bench's chip.

    Args:
        region: where on the chip the tile sits.
        access: the bench.
        mapping: conductance to weight.
        update: the pulse-train settings (as the emulator's).
        seed: seed of the pulse trains.
    """

    def __init__(self, region: TileRegion, access: CellAccess, mapping: MappingSection,
                 update: UpdateConfig, seed: int | None = 0) -> None:
        self.region, self.access, self.mapping, self.update_config = region, access, mapping, update
        self._rng = np.random.default_rng(seed)
        self._weights = np.zeros(self.shape)  # the last read of each cell ...
        self._stale = np.ones(self.shape, dtype=bool)  # ... unless a write touched it since
        self.capabilities = Capabilities(parallel_mvm=False,
                                         parallel_update=access.parallel_update,
                                         exact_read=False)

    @property
    def rows(self) -> int:
        return self.region.rows

    @property
    def cols(self) -> int:
        return self.region.cols

    @property
    def shape(self) -> tuple[int, int]:
        return (self.region.rows, self.region.cols)

    # -- reading -----------------------------------------------------------------------------

    def _refresh(self, needed: NDArray[np.bool_]) -> Array:
        """Read the ``needed`` cells a write has touched since their last read; the weights."""
        rows, cols = np.nonzero(needed & self._stale)
        if rows.size:
            currents = self.access.read_cells(rows + self.region.row, cols + self.region.col)
            conductance = currents / self.access.read_voltage
            self._weights[rows, cols] = (conductance - self.mapping.g_ref) / self.mapping.g_scale
            self._stale[rows, cols] = False
        return self._weights

    def read_weights(self) -> Array:
        """Every cell's weight from its read current (cells unwritten since are not re-read)."""
        return self._refresh(np.ones(self.shape, dtype=bool)).copy()

    def forward(self, x: ArrayLike) -> Array:
        """``x W^T`` from the weights of the columns ``x`` uses (a one-hot ``x`` reads one)."""
        batch = as_batch(x, self.cols, "x")
        used = np.broadcast_to(batch.any(axis=0), self.shape)
        return batch @ self._refresh(used).T

    def backward(self, d: ArrayLike) -> Array:
        batch = as_batch(d, self.rows, "d")
        used = np.broadcast_to(batch.any(axis=0)[:, None], self.shape)
        return batch @ self._refresh(used)

    # -- writing -----------------------------------------------------------------------------

    def _chip_cells(self, flat: Index) -> tuple[Index, Index]:
        rows, cols = np.divmod(flat, self.cols)
        return rows + self.region.row, cols + self.region.col

    def _pulse(self, flat: Index, counts: NDArray[np.int64], polarity: int) -> None:
        chosen = counts > 0
        if chosen.any():
            self._stale.reshape(-1)[flat[chosen]] = True
            rows, cols = self._chip_cells(flat[chosen])
            self.access.pulse_cells(rows, cols, polarity, counts[chosen])

    def apply_pulses(self, counts: ArrayLike) -> None:
        """Signed pulse counts per cell (+ up, - down), cell by cell."""
        signed = as_pulse_counts(counts, self.shape).reshape(-1)
        flat = np.arange(signed.size)
        self._pulse(flat, np.maximum(signed, 0), +1)
        self._pulse(flat, np.maximum(-signed, 0), -1)

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        """``W <- W - lr d x^T`` by stochastic pulse trains, one sample after another."""
        xs, ds, rate = as_update(x, d, lr, self.shape)
        for sample in range(xs.shape[0]):
            trains = coincidences(xs[sample:sample + 1], ds[sample:sample + 1], rate,
                                  self.mapping.dw_min, self.update_config, self._rng)
            if trains is None:
                continue
            if self.access.parallel_update:
                self._fire_masks(trains.rows, trains.cols)
            else:
                cells, up, down = trains.sparse()
                self._pulse(cells, np.rint(up).astype(np.int64), +1)
                self._pulse(cells, np.rint(down).astype(np.int64), -1)

    def _fire_masks(self, row_trains: NDArray[np.int8], col_trains: NDArray[np.int8]) -> None:
        """Each slot as coincidence pulses: rows with d > 0 and columns with x > 0 meet in a
        down pulse (``d x > 0``), and so on for the four sign quadrants."""
        for slot in range(row_trains.shape[0]):
            for row_sign, col_sign in ((1, 1), (-1, -1), (1, -1), (-1, 1)):
                rows = np.flatnonzero(row_trains[slot] == row_sign)
                cols = np.flatnonzero(col_trains[slot] == col_sign)
                if rows.size and cols.size:
                    self._stale[np.ix_(rows, cols)] = True
                    polarity = -1 if row_sign == col_sign else +1
                    self.access.pulse_masks(rows + self.region.row, cols + self.region.col,
                                            polarity)

    def program_weights(self, target: ArrayLike, tol: float = 0.0, max_rounds: int = 50) -> Array:
        """Write and verify: pulse every cell towards ``target`` until all are within ``tol``
        (at least half a pulse step) or ``max_rounds`` rounds are done; returns the weights
        reached."""
        goal = as_matrix(target, self.shape, "target")
        tolerance = max(tol, 0.5 * self.mapping.dw_min)
        flat = np.arange(goal.size)
        for _ in range(max_rounds):
            error = (goal - self.read_weights()).reshape(-1)
            if np.abs(error).max(initial=0.0) <= tolerance:
                break
            counts = np.rint(error / self.mapping.dw_min).astype(np.int64)
            counts = np.clip(counts, -100, 100)
            self._pulse(flat, np.maximum(counts, 0), +1)
            self._pulse(flat, np.maximum(-counts, 0), -1)
        return self.read_weights()
