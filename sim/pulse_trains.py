"""Stochastic pulse trains: turn ``W <- W - lr d x^T`` into per-cell pulse counts.

As aihwkit does it (DESIGN.md section 5, REFERENCES.md section 2), for each sample:

- ``k = lr * max|x| * max|d| / g`` is the largest number of pulses any cell needs (``g`` the
  device granularity, ``dw_min`` for most models). No pulses when ``x`` or ``d`` is all zero.
- Bit-length management: ``BL = min(ceil(k), desired_bl)`` slots (else ``desired_bl``).
- ``A = B = sqrt(lr / (g * BL))``; column ``j`` fires in each slot with probability
  ``B |x_j|`` and row ``i`` with ``A |d_i|``. Update management scales them by
  ``sqrt(max|x| / max|d|)`` the other way round, so both trains peak at ``sqrt(k / BL)``.
- Probabilities are clipped at 1 (only when ``k > BL``: the update is then truncated; under
  update management the x train peaks at 1 and large ``|d_i|`` saturate, as in aihwkit).
- Cell ``(i, j)`` gets one pulse per slot where both fire, of sign ``-sign(d_i x_j)``, so
  ``E[n_ij] * g = lr |d_i x_j|`` while nothing is clipped.

A mini-batch's trains are stacked along the slot axis; the up and down coincidences of all its
samples are then one matrix product each (float32 sums of 0/1 are exact below 2**24), made
block by block of rows by the writer so that the counts never need a full-tile array.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hilctl.config import UpdateConfig

Counts = NDArray[np.int32]


def bit_lengths(k: NDArray[np.float64], update: UpdateConfig) -> NDArray[np.int64]:
    """Slots per sample: ``min(ceil(k), desired_bl)`` under BL management, else ``desired_bl``."""
    if update.update_bl_management:
        return np.clip(np.ceil(k), 0, update.desired_bl).astype(np.int64)
    return np.where(k > 0, update.desired_bl, 0).astype(np.int64)


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
    x_max = np.abs(x).max(axis=1)
    d_max = np.abs(d).max(axis=1)
    k = lr * x_max * d_max / granularity
    bl = bit_lengths(k, update)
    active = bl > 0
    gain = np.where(active, np.sqrt(lr / (granularity * np.maximum(bl, 1))), 0.0)
    x_gain, d_gain = gain, gain
    if update.update_management:
        # aihwkit balances against d_max shrunk by desired_bl / k when k > desired_bl: the x
        # train then peaks at probability 1 and d is effectively clipped.
        d_ref = d_max * np.where(k > update.desired_bl, update.desired_bl / np.maximum(k, 1), 1)
        balance = np.sqrt(np.where(active, x_max / np.where(active, d_ref, 1), 1.0))
        x_gain = gain / balance
        d_gain = gain * balance
    p_x = np.minimum(x_gain[:, None] * np.abs(x), 1.0)
    p_d = np.minimum(d_gain[:, None] * np.abs(d), 1.0)
    return p_x, p_d, bl


def _fire(
    probabilities: NDArray[np.float64], bl: NDArray[np.int64], rng: np.random.Generator
) -> NDArray[np.float32]:
    """0/1 firing of every line in every slot, stacked to (sum of BL, lines)."""
    samples, lines = probabilities.shape
    slots = int(bl.max())
    draws = rng.random((samples, slots, lines), dtype=np.float32)
    fired = draws < probabilities[:, None, :].astype(np.float32)
    fired &= (np.arange(slots)[None, :] < bl[:, None])[:, :, None]
    return fired.reshape(samples * slots, lines).astype(np.float32)


@dataclass(frozen=True)
class Coincidences:
    """The pulse trains of a mini-batch, kept factored: counts are made block by block.

    ``rows_fired`` is (2 * slots, rows): the slots where each row fired with ``d_i > 0``
    stacked over those with ``d_i < 0``. ``cols_for_up`` and ``cols_for_down`` (2 * slots, cols)
    stack the column trains so that one product gives the up counts (``d_i x_j < 0``) and one
    the down counts (``d_i x_j > 0``) of any block of rows.
    """

    rows_fired: NDArray[np.float32]
    cols_for_up: NDArray[np.float32]
    cols_for_down: NDArray[np.float32]

    def block(self, up: bool, start: int, stop: int) -> NDArray[np.float32]:
        """Pulse counts (float32 whole numbers) of rows ``start:stop``, a fresh array."""
        cols = self.cols_for_up if up else self.cols_for_down
        return self.rows_fired[:, start:stop].T @ cols

    def dense(self, up: bool) -> Counts:
        """All counts of one direction as an int32 (rows, cols) array."""
        return np.rint(self.block(up, 0, self.rows_fired.shape[1])).astype(np.int32)


def coincidences(
    x: NDArray[np.float64],
    d: NDArray[np.float64],
    lr: float,
    granularity: float,
    update: UpdateConfig,
    rng: np.random.Generator,
) -> Coincidences | None:
    """The pulse trains of the mini-batch ``x`` (S, cols), ``d`` (S, rows); None if no pulse."""
    p_x, p_d, bl = firing_probabilities(x, d, lr, granularity, update)
    if not bl.any():
        return None
    x_fired = _fire(p_x, bl, rng)
    d_fired = _fire(p_d, bl, rng)
    slots = x_fired.shape[0] // x.shape[0]
    x_positive = np.repeat(x > 0, slots, axis=0)
    d_positive = np.repeat(d > 0, slots, axis=0)
    x_pos, x_neg = x_fired * x_positive, x_fired * ~x_positive
    rows_fired = np.concatenate((d_fired * d_positive, d_fired * ~d_positive))
    return Coincidences(
        rows_fired=rows_fired,
        cols_for_up=np.concatenate((x_neg, x_pos)),
        cols_for_down=np.concatenate((x_pos, x_neg)),
    )
