"""A floating-point tile: the digital reference every analog result is measured against.

It implements :class:`hilctl.tile.Tile` exactly (float64, no bounds, no noise), so digital SGD
runs through the same training controller as Analog SGD and Tiki-Taka.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hilctl.tile import (
    Capabilities,
    as_batch,
    as_matrix,
    as_pulse_counts,
    as_update,
)

Array = NDArray[np.float64]


class DigitalTile:
    """``rows x cols`` float64 weights behind the tile interface."""

    capabilities = Capabilities(parallel_mvm=True, parallel_update=True, exact_read=True)

    def __init__(self, rows: int, cols: int, pulse_step: float = 0.001) -> None:
        self._w = np.zeros((rows, cols))
        self.pulse_step = pulse_step

    @property
    def rows(self) -> int:
        return self._w.shape[0]

    @property
    def cols(self) -> int:
        return self._w.shape[1]

    def forward(self, x: ArrayLike) -> Array:
        return as_batch(x, self.cols, "x") @ self._w.T

    def backward(self, d: ArrayLike) -> Array:
        return as_batch(d, self.rows, "d") @ self._w

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        xs, ds, rate = as_update(x, d, lr, self._w.shape)
        self._w -= rate * (ds.T @ xs)

    def apply_pulses(self, counts: ArrayLike) -> None:
        """Each pulse moves a weight by exactly ``pulse_step``."""
        self._w += self.pulse_step * as_pulse_counts(counts, self._w.shape)

    def read_weights(self) -> Array:
        return self._w.copy()

    def program_weights(self, target: ArrayLike, tol: float = 0.0) -> Array:
        self._w[...] = as_matrix(target, self._w.shape, "target")
        return self.read_weights()

    def state_dict(self) -> dict[str, Any]:
        return {"w": self._w}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._w[...] = as_matrix(state["w"], self._w.shape, "state w")
