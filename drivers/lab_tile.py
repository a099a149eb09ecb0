"""A tile of a real (or simulated) chip on a bench, behind the tile interface.

The lab tile turns the training controller's operations into instrument work:

- ``forward``/``backward`` where the bench offers an analog MVM (``access.parallel_mvm``): one
  MVM per sample. Each sample is scaled so that its largest ``|x|`` is the read voltage
  (``V = s x``, ``s = V_read / max|x|``); forward drives the region's columns and senses its
  rows (``y = W x``), backward drives its rows and senses its columns (``W^T d``). Currents
  become outputs through the mapping: reference, ``y = (I / s - g_ref sum(x)) / g_scale`` (the
  reference conductance's share taken out); differential, forward drives the plus column with
  ``+V`` and the minus column with ``-V`` so each row senses ``(G_plus - G_minus) V``, backward
  senses both columns of a pair and subtracts, ``y = I / (s g_scale)``.
- ``read_weights``: read every cell's current at the read voltage, ``w = (I / V - g_ref) / g_scale``.
  Without an MVM, ``forward``/``backward`` multiply with those weights. A cell is read again
  only after a write may have moved it (one that targeted it; with the station's ``[read]
  refresh``, also one that drove its row or column, or any write: :mod:`drivers.chip_writes`),
  and a forward reads only the columns its input uses (Tiki-Taka's one-hot column reads read
  one column).
- ``update(x, d, lr)``: the same stochastic pulse trains as the emulator
  (:mod:`hilctl.pulse_trains`). Where the board fires rows and columns at once, each slot goes
  out as coincidence pulses on row and column masks, one per sign quadrant: all of a sample's
  slots to the access at once (``pulse_mask_train``), which sends them as one pulse train where
  the board takes one, else one mask pulse at a time; without parallel updates every cell gets
  its up pulses, then its down pulses, one cell at a time.
- ``apply_pulses(counts)``: signed counts, cell by cell.
- Weights are one cell each against a reference conductance (``mapping.kind = "reference"``), or
  differential pairs (``"differential"``): weight ``(i, j)`` is the plus cell in chip column
  ``col + 2 j`` minus the minus cell in ``col + 2 j + 1``, and a tile of ``cols`` columns needs a
  region ``2 cols`` wide.
- ``program_weights(target, tol)``: write and verify, pulsing each cell towards its target by
  the number of pulses its error asks for until every cell is within ``tol``.

Hardware is reached through a :class:`CellAccess` (board, or pulse generator and SMU routed by
the board), whose every pulse is checked against the station's limits before it is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from drivers.chip_writes import ChipWrites
from hilctl.checkpoints import rng_state, set_rng_state
from hilctl.config import UpdateConfig
from hilctl.pulse_trains import coincidences
from hilctl.tile import Capabilities, as_batch, as_matrix, as_pulse_counts, as_update
from protocols.station import MappingSection, TileRegion

Array = NDArray[np.float64]
Index = NDArray[np.intp]
log = logging.getLogger("hilctl.lab_tile")


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

    def pulse_mask_train(self, slots: Sequence[tuple[Index, Index, int]]) -> None:
        """:meth:`pulse_masks` of each slot ``(rows, cols, polarity)``, in order, in as few
        requests as the bench allows (one pulse train where the board takes them)."""
        ...

    def read_cells(self, rows: Index, cols: Index) -> Array:
        """The read currents (A) of cells ``(rows[k], cols[k])``."""
        ...

    @property
    def read_voltage(self) -> float:
        """The read voltage (V) of :meth:`read_cells`, and the largest ``|V|`` of an MVM."""
        ...

    @property
    def parallel_mvm(self) -> bool:
        """True if :meth:`mvm` works (an analog matrix-vector product on the chip)."""
        ...

    def mvm(self, voltages: NDArray[np.float64], drive: Literal["rows", "cols"], rows: Index,
            cols: Index) -> Array:
        """One analog MVM per row of ``voltages`` ``(batch, n_driven)`` (V): the driven lines
        are ``rows`` if ``drive == "rows"``, else ``cols``, the sensed lines the others; the
        sensed currents (A), ``(batch, n_sensed)``, in the order given."""
        ...


class LabTile:
    """A ``rows x cols`` tile in a region of a bench's chip.

    Args:
        region: where on the chip the tile sits.
        access: the bench.
        mapping: conductance to weight.
        update: the pulse-train settings (as the emulator's).
        seed: seed of the pulse trains.
        writes: the chip's writes, shared by the tiles of a bench (default: this tile's own,
            refreshing only the cells it writes).
    """

    def __init__(self, region: TileRegion, access: CellAccess, mapping: MappingSection,
                 update: UpdateConfig, seed: int | None = 0,
                 writes: ChipWrites | None = None) -> None:
        self.region, self.access, self.mapping, self.update_config = region, access, mapping, update
        self._rng = np.random.default_rng(seed)
        width = 2 * region.cols if mapping.kind == "differential" else region.cols
        self.writes = writes or ChipWrites(region.row + region.rows, region.col + width)
        self._weights = np.zeros(self.shape)  # the last read of each cell ...
        self._stale = np.ones(self.shape, dtype=bool)  # ... unless this tile wrote it since
        self._read_at = np.zeros(self.shape, dtype=np.int64)  # ... or the chip's writes moved it
        self.capabilities = Capabilities(parallel_mvm=access.parallel_mvm,
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

    @property
    def differential(self) -> bool:
        """True where each weight is a pair of cells (``mapping.kind = "differential"``)."""
        return self.mapping.kind == "differential"

    def _chip_columns(self, cols: Index, plus: bool = True) -> Index:
        """Chip columns of tile columns: the cell itself, or its plus (or minus) cell."""
        if self.differential:
            return self.region.col + 2 * cols + (0 if plus else 1)
        return self.region.col + cols

    def _refresh(self, needed: NDArray[np.bool_]) -> Array:
        """Read the ``needed`` cells a write may have moved since their last read; the weights.

        Reference mapping: ``w = (G - g_ref) / g_scale``; differential pairs:
        ``w = (G_plus - G_minus) / g_scale``.
        """
        rows, cols = np.nonzero(needed & (self._stale | self._moved()))
        if rows.size:
            chip_rows = rows + self.region.row
            volts = self.access.read_voltage
            conductance = self.access.read_cells(chip_rows, self._chip_columns(cols)) / volts
            if self.differential:
                reference = self.access.read_cells(chip_rows, self._chip_columns(cols, False)) / volts
            else:
                reference = np.full(rows.size, self.mapping.g_ref)
            self._weights[rows, cols] = (conductance - reference) / self.mapping.g_scale
            self._stale[rows, cols] = False
            self._read_at[rows, cols] = self.writes.count
        return self._weights

    def _moved(self) -> NDArray[np.bool_]:
        """The cells the chip's writes (any tile's) may have moved since their read, as the
        station's ``[read] refresh`` says (:mod:`drivers.chip_writes`); both cells of a pair."""
        chip_rows = self.region.row + np.arange(self.rows)
        tile_cols = np.arange(self.cols)
        moved = self.writes.moved(chip_rows, self._chip_columns(tile_cols), self._read_at)
        if self.differential:
            moved |= self.writes.moved(chip_rows, self._chip_columns(tile_cols, False),
                                       self._read_at)
        return moved

    def read_weights(self) -> Array:
        """Every cell's weight from its read current (cells unwritten since are not re-read)."""
        return self._refresh(np.ones(self.shape, dtype=bool)).copy()

    def forward(self, x: ArrayLike) -> Array:
        """``x W^T``: one analog MVM per sample, or from the weights of the columns ``x`` uses
        (a one-hot ``x`` reads one)."""
        batch = as_batch(x, self.cols, "x")
        if self.access.parallel_mvm:
            return self._mvm(batch, forward=True)
        used = np.broadcast_to(batch.any(axis=0), self.shape)
        return batch @ self._refresh(used).T

    def backward(self, d: ArrayLike) -> Array:
        """``d W``: one analog MVM per sample, or from the weights of the rows ``d`` uses."""
        batch = as_batch(d, self.rows, "d")
        if self.access.parallel_mvm:
            return self._mvm(batch, forward=False)
        used = np.broadcast_to(batch.any(axis=0).reshape(-1, 1), self.shape)
        return batch @ self._refresh(used)

    def _mvm(self, batch: Array, forward: bool) -> Array:
        """``batch W^T`` (forward) or ``batch W`` through the bench's MVM (module docstring);
        an all-zero sample gives zeros without an MVM."""
        out = np.zeros((batch.shape[0], self.rows if forward else self.cols))
        peak = np.abs(batch).max(axis=1)
        live = peak > 0
        if not live.any():
            return out
        volts_max = self.access.read_voltage
        scale = volts_max / peak[live, None]  # volts per unit of input, one per sample
        inputs = batch[live]
        volts = np.clip(inputs * scale, -volts_max, volts_max)
        rows = self.region.row + np.arange(self.rows)
        tile_cols = np.arange(self.cols)
        cols = self._chip_columns(tile_cols)
        if self.differential:
            cols = np.concatenate([cols, self._chip_columns(tile_cols, plus=False)])
        if forward:
            driven = np.hstack([volts, -volts]) if self.differential else volts
            currents = self.access.mvm(driven, "cols", rows, cols)
        else:
            currents = self.access.mvm(volts, "rows", rows, cols)
            if self.differential:
                currents = currents[:, :self.cols] - currents[:, self.cols:]
        conductance_sums = currents / scale
        if not self.differential:
            conductance_sums -= self.mapping.g_ref * inputs.sum(axis=1, keepdims=True)
        out[live] = conductance_sums / self.mapping.g_scale
        return out

    # -- writing -----------------------------------------------------------------------------

    def _chip_target(self, cols: Index, polarity: int) -> tuple[Index, int]:
        """The chip columns and pulse polarity that move tile columns ``cols`` by ``polarity``:
        the cells themselves; or, for differential pairs, an up pulse on the plus cell for
        ``+1`` and on the minus cell for ``-1`` (both sides only ever potentiated)."""
        if self.differential:
            return self._chip_columns(cols, plus=polarity > 0), +1
        return self._chip_columns(cols), polarity

    def _pulse(self, flat: Index, counts: NDArray[np.int64], polarity: int) -> None:
        chosen = counts > 0
        if chosen.any():
            self._stale.reshape(-1)[flat[chosen]] = True
            rows, cols = np.divmod(flat[chosen], self.cols)
            chip_cols, chip_polarity = self._chip_target(cols, polarity)
            self.writes.record(rows + self.region.row, chip_cols)
            self.access.pulse_cells(rows + self.region.row, chip_cols, chip_polarity,
                                    counts[chosen])

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
        down pulse (``d x > 0``), and so on for the four sign quadrants. All of them go to the
        access at once, which sends them as a pulse train where the board takes one."""
        pulses: list[tuple[Index, Index, int]] = []
        for slot in range(row_trains.shape[0]):
            for row_sign, col_sign in ((1, 1), (-1, -1), (1, -1), (-1, 1)):
                rows = np.flatnonzero(row_trains[slot] == row_sign)
                cols = np.flatnonzero(col_trains[slot] == col_sign)
                if rows.size and cols.size:
                    self._stale[np.ix_(rows, cols)] = True
                    chip_cols, polarity = self._chip_target(cols, -1 if row_sign == col_sign else 1)
                    pulses.append((rows + self.region.row, chip_cols, polarity))
                    self.writes.record(rows + self.region.row, chip_cols)
        self.access.pulse_mask_train(pulses)

    def state_dict(self) -> dict[str, Any]:
        """The host side (the pulse trains' random stream) and the weights read back now: the
        chip keeps the weights themselves."""
        return {"rng": rng_state(self._rng), "weights": self.read_weights()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue the host side; every cell is read afresh when next used. The chip is never
        written here (a resumed run compares ``state["weights"]`` with what it reads)."""
        set_rng_state(self._rng, state["rng"])
        self._stale[...] = True

    def program_weights(self, target: ArrayLike, tol: float = 0.0, max_rounds: int = 50) -> Array:
        """Write and verify: pulse every cell towards ``target`` until all are within ``tol``
        (at least half a pulse step) or ``max_rounds`` rounds are done; returns the weights
        reached."""
        goal = as_matrix(target, self.shape, "target")
        tolerance = max(tol, 0.5 * self.mapping.dw_min)
        flat = np.arange(goal.size)
        before: Array | None = None
        for _ in range(max_rounds):
            weights = self.read_weights()
            error = (goal - weights).reshape(-1)
            if np.abs(error).max(initial=0.0) <= tolerance:
                break
            if before is not None and np.abs(weights - before).max() < 0.5 * self.mapping.dw_min:
                log.warning("write-verify of tile %s: no cell moved after a round of pulses; the "
                            "write amplitude may be below the switching threshold, or the pulses "
                            "do not reach the cells (largest error left: %.3g)", self.region.name,
                            np.abs(error).max())
                break
            counts = np.rint(error / self.mapping.dw_min).astype(np.int64)
            counts = np.clip(counts, -100, 100)
            self._pulse(flat, np.maximum(counts, 0), +1)
            self._pulse(flat, np.maximum(-counts, 0), -1)
            before = weights
        return self.read_weights()
