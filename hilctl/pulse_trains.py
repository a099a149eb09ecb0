"""Stochastic pulse trains: turn ``W <- W - lr d x^T`` into per-cell pulse counts.

This is the update scheme of the periphery, not device physics: the emulator applies the
counts to its device models, and a lab tile whose board fires rows and columns in parallel
sends the same trains as coincidence pulses. Bit length, update management and firing follow
aihwkit 1.1.0. A mini-batch's trains are kept factored and turned into counts block by block of
rows, so that the counts never need a full-tile array. The buffered-transfer algorithms write
their slow tile through the same scheme, one one-hot train per column (:func:`transfer_counts`).

The equations: docs/emulator.md, section 3 (Pulse trains and update management).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from hilctl.config import UpdateConfig

Counts = NDArray[np.int32]


def bit_lengths(k: NDArray[np.float64], update: UpdateConfig) -> NDArray[np.int64]:
    """Slots per sample: ``min(ceil(k), desired_bl)`` under BL management, else ``desired_bl``."""
    if update.update_bl_management:
        return np.clip(np.ceil(k), 0, update.desired_bl).astype(np.int64)
    return np.where(k > 0, update.desired_bl, 0).astype(np.int64)


def _train_gains(x_max: NDArray[np.float64], d_max: NDArray[np.float64], lr: float,
                 granularity: float, update: UpdateConfig
                 ) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """BL and the column and row gains of each sample (no pulses where ``x`` or ``d`` is 0)."""
    k = (lr / granularity) * x_max * d_max
    bl = bit_lengths(k, update)
    active = bl > 0
    safe_k = np.where(active, k, 1.0)
    gain = np.sqrt(lr / (granularity * np.maximum(bl, 1))) * active
    if not update.update_management:
        return bl, gain, gain
    # aihwkit balances against d_max shrunk by desired_bl / k when k > desired_bl: the x train
    # then peaks at probability 1 and d is effectively clipped.
    d_ref = np.where(active, d_max, 1.0) * (update.desired_bl / np.maximum(safe_k, update.desired_bl))
    balance = np.sqrt(np.where(active, x_max, 1.0) / d_ref)
    return bl, gain / balance, gain * balance


def firing_probabilities(
    x: NDArray[np.float64],
    d: NDArray[np.float64],
    lr: float,
    granularity: float,
    update: UpdateConfig,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
    """Per-slot firing probabilities of the columns (S, cols) and rows (S, rows), and BL (S,).

    ``granularity`` is the device's typical step (``dw_min`` for most models).
    """
    abs_x, abs_d = np.abs(x), np.abs(d)
    bl, x_gain, d_gain = _train_gains(abs_x.max(axis=1), abs_d.max(axis=1), lr, granularity,
                                      update)
    abs_x *= x_gain[:, None]
    abs_d *= d_gain[:, None]
    return np.minimum(abs_x, 1.0, out=abs_x), np.minimum(abs_d, 1.0, out=abs_d), bl


class Coincidences:
    """The pulse trains of a mini-batch, kept factored: counts are made when asked.

    ``rows`` (slots, rows) and ``cols`` (slots, cols) hold ``sign(d_i)`` and ``sign(x_j)`` in the
    slots where the line fires, else 0. Cell ``(i, j)`` gets a pulse per slot where both fire:
    up where ``sign(d_i x_j) < 0`` (the weight must grow), down where it is ``> 0``.
    """

    def __init__(self, rows: NDArray[np.int8], cols: NDArray[np.int8]) -> None:
        self.rows, self.cols = rows, cols
        self._cols_float: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
        self._last_block: tuple[tuple[int, int], tuple[NDArray[np.float32], ...]] | None = None

    def block_pair(self, start: int, stop: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Up and down counts (float32 whole numbers) of rows ``start:stop``, fresh arrays.

        Two products: all coincidences ``|d| |x|`` and the signed ``sign(d) sign(x)``, whose
        half-difference and half-sum are the up and the down counts.
        """
        if self._cols_float is None:
            signed = self.cols.astype(np.float32)
            self._cols_float = (signed, np.abs(signed))
        cols, cols_abs = self._cols_float
        rows = self.rows[:, start:stop].astype(np.float32)
        total = np.abs(rows).T @ cols_abs
        net = rows.T @ cols
        up = total - net
        up *= 0.5
        total += net
        total *= 0.5
        return up, total

    def block(self, up: bool, start: int, stop: int) -> NDArray[np.float32]:
        """Pulse counts of one direction for rows ``start:stop``, a fresh array.

        Asking for the other direction of the same block next reuses the pair computed for the
        first (the closed form asks for both directions of a block in turn).
        """
        key = (start, stop)
        if self._last_block is None or self._last_block[0] != key:
            self._last_block = (key, self.block_pair(start, stop))
        return self._last_block[1][0 if up else 1]

    def blocks(self, up: bool) -> Callable[[int, int], NDArray[np.float32]]:
        """:meth:`block` of one direction, as the writer takes it."""
        return lambda start, stop: self.block(up, start, stop)

    def dense(self, up: bool) -> Counts:
        """All counts of one direction as an int32 (rows, cols) array."""
        return np.rint(self.block(up, 0, self.rows.shape[1])).astype(np.int32)

    def pair_count(self) -> int:
        """How many coincidences (pulses) the trains hold in all, up and down."""
        rows_per_slot = np.count_nonzero(self.rows, axis=1)
        return int(rows_per_slot @ np.count_nonzero(self.cols, axis=1))

    def sparse(self) -> tuple[NDArray[np.intp], NDArray[np.float32], NDArray[np.float32]]:
        """The cells that take pulses (sorted flat indices) with their up and down counts.

        Costs time in proportion to the coincidences, not the tile: the path for sparse trains.
        """
        row_slot, row = np.nonzero(self.rows)
        col_slot, col = np.nonzero(self.cols)
        cols_in_slot = np.bincount(col_slot, minlength=self.rows.shape[0])
        repeats = cols_in_slot[row_slot]
        total = int(repeats.sum())
        # For the e-th fired row, the columns of its slot: a ragged outer product per slot.
        first_col = np.cumsum(cols_in_slot) - cols_in_slot
        col_index = np.repeat(first_col[row_slot] - (np.cumsum(repeats) - repeats), repeats)
        col_index += np.arange(total)
        pair_row, pair_col = np.repeat(row, repeats), col[col_index]
        down = (np.repeat(self.rows[row_slot, row], repeats) * self.cols[col_slot[col_index],
                                                                        pair_col]) > 0
        keys = np.sort(pair_row * (2 * self.cols.shape[1]) + pair_col * 2 + down)
        starts = np.flatnonzero(np.diff(keys, prepend=-1))
        counts = np.diff(starts, append=keys.size).astype(np.float32)
        keys = keys[starts]  # cell * 2 + (1 for down), once each, with its count
        cell = keys >> 1
        new_cell = np.diff(cell, prepend=-1) != 0
        position = np.cumsum(new_cell) - 1
        up_counts = np.zeros(position[-1] + 1 if position.size else 0, dtype=np.float32)
        down_counts = np.zeros_like(up_counts)
        is_down = (keys & 1).astype(bool)
        up_counts[position[~is_down]] = counts[~is_down]
        down_counts[position[is_down]] = counts[is_down]
        return cell[new_cell], up_counts, down_counts


def coincidences(
    x: NDArray[np.float64],
    d: NDArray[np.float64],
    lr: float,
    granularity: float,
    update: UpdateConfig,
    rng: np.random.Generator,
) -> Coincidences | None:
    """The pulse trains of the mini-batch ``x`` (S, cols), ``d`` (S, rows); None if no pulse.

    Every line of a sample fires independently in each of the sample's BL slots; columns and
    rows are drawn together in one call (columns first), a sample's slots beyond its own BL
    never fire, and a fired line carries the sign of its value.
    """
    p_x, p_d, bl = firing_probabilities(x, d, lr, granularity, update)
    if not bl.any():
        return None
    samples, cols = x.shape
    slots = int(bl.max())
    probabilities = np.concatenate((p_x, p_d), axis=1)
    fired = (rng.random((samples, slots, probabilities.shape[1]), dtype=np.float32)
             < probabilities[:, None, :])
    if bl.min() < slots:
        fired &= (np.arange(slots)[None, :] < bl[:, None])[:, :, None]
    signed = fired.view(np.int8)
    signed *= np.sign(np.concatenate((x, d), axis=1)).astype(np.int8)[:, None, :]
    signed = signed.reshape(samples * slots, -1)
    return Coincidences(rows=signed[:, cols:], cols=signed[:, :cols])


def transfer_counts(n: NDArray[np.float64], bl: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Signed pulse counts (rows, columns) that aihwkit's transfer writes for whole-pulse
    counts ``n`` (rows, columns) on the columns read (+ up).

    aihwkit sends each column ``j`` through its pulsed update with a one-hot ``x = e_j``,
    ``d = -n[:, j]`` and ``lr`` = one pulse's weight change, ``bl`` slots, update management and
    BL management off: so ``k = max|n[:, j]|`` and, in each slot, column ``j`` fires with
    probability ``p_x = 1 / sqrt(bl)`` and row ``i`` with ``p_i = min(|n_ij| / sqrt(bl), 1)``,
    all independently. Cell ``(i, j)`` takes one pulse of the sign of ``n_ij`` per slot where both
    fire: ``bl p_x p_i = min(|n_ij|, sqrt(bl))`` pulses on average, never more than ``bl``, and
    exactly ``n`` at ``bl = 1`` (where ``|n| <= 1``). A column's firing is shared by its rows;
    each column has a train of its own. Columns are drawn before rows, slot by slot.
    """
    n = np.asarray(n, dtype=np.float64)
    gain = 1.0 / np.sqrt(bl)
    p_rows = np.minimum(np.abs(n.T) * gain, 1.0)  # (columns, rows)
    draws = rng.random((n.shape[1], bl, 1 + n.shape[0]))
    fired = draws[:, :, 1:] < p_rows[:, None, :]
    fired &= draws[:, :, :1] < gain
    return (np.sign(n) * fired.sum(axis=1).T).astype(np.int64)
