"""Tiki-Taka v1 (aihwkit ``TransferCompound``) and residual learning (Tiki-Taka v1 with
``gamma > 0`` on zero-shifted tiles)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field

from hilctl.algorithms.base import AlgorithmSettings, Array, RunSettings, TileFactory, WeightArray
from hilctl.errors import ConfigError
from hilctl.tile import Tile


class TikiTakaConfig(AlgorithmSettings):
    """Tiki-Taka v1 (aihwkit ``TransferCompound``): fast tile A, slow tile C, ``W = gamma A + C``.

    Gradients go to A at the absolute rate ``fast_lr``; every ``transfer_every`` updates,
    ``n_reads_per_transfer`` columns of A are read (cyclically, one-hot forward) and written
    onto C at ``transfer_lr * lr``. ``n_reads_per_transfer`` equal to the columns is the
    full-matrix transfer of the paper's analysis.
    """

    name: Literal["tiki-taka"] = "tiki-taka"
    gamma: float = Field(0.0, ge=0, le=1e3, description="weight of the fast tile in W = gamma A + C")
    fast_lr: float = Field(0.1, gt=0, le=1e6, description="learning rate of the fast tile (absolute)")
    transfer_lr: float = Field(1.0, ge=0, le=1e6, description="transfer rate, times the SGD lr")
    transfer_every: int = Field(1, ge=1, le=10**9, description="updates (mini-batches) between transfers")
    n_reads_per_transfer: int = Field(1, ge=1, le=65_536, description="columns of A moved per transfer")

    def build(self, rows: int, cols: int, open_analog: TileFactory, run: RunSettings
              ) -> WeightArray:
        return TikiTaka(open_analog(rows, cols), open_analog(rows, cols), self)


class ResidualConfig(TikiTakaConfig):
    """Residual learning (Wu et al. 2025, RL-v1): Tiki-Taka v1 with ``gamma > 0``, ``W = gamma A
    + C``, on zero-shifted tiles (``tile.reference = "symmetric-point"``, so ``G(0) = 0``).

    The transfer is Tiki-Taka's; A holds the residual ``(W* - C) / gamma`` that C has not
    learned yet. The authors use gamma 0.4 (their toy problem and ResNet runs).
    """

    name: Literal["residual"] = "residual"  # type: ignore[assignment]
    gamma: float = Field(0.4, gt=0, le=1e3, description="weight of the fast tile in W = gamma A + C")

    def build(self, rows: int, cols: int, open_analog: TileFactory, run: RunSettings
              ) -> WeightArray:
        if run.reference not in (None, "symmetric-point"):
            raise ConfigError(
                f"algorithm residual: needs zero-shifted tiles (G(0) = 0); tile.reference is "
                f"{run.reference!r}. Set --set tile.reference=symmetric-point (or [tile] "
                'reference = "symmetric-point" in the config file)')
        return super().build(rows, cols, open_analog, run)


class TikiTaka:
    """Tiki-Taka v1 (aihwkit's ``TransferCompound``): ``W = gamma A + C``.

    Every update goes to the fast tile A at the absolute rate ``fast_lr``. Every
    ``transfer_every`` updates, the next ``n_reads_per_transfer`` columns of A (cyclically) are
    read with a one-hot forward through A's periphery and written onto C as a pulsed update at
    ``transfer_lr * lr``: ``C[:, j] += transfer_lr * lr * A[:, j]``.
    """

    def __init__(self, fast: Tile, slow: Tile, config: TikiTakaConfig) -> None:
        if (fast.rows, fast.cols) != (slow.rows, slow.cols):
            raise ValueError("the fast and the slow tile must have the same shape")
        self.fast, self.slow, self.config = fast, slow, config
        self._updates = 0
        self._next_column = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.slow.rows, self.slow.cols)

    def forward(self, x: ArrayLike) -> Array:
        y = self.slow.forward(x)
        if self.config.gamma:
            y = y + self.config.gamma * self.fast.forward(x)
        return y

    def backward(self, d: ArrayLike) -> Array:
        g = self.slow.backward(d)
        if self.config.gamma:
            g = g + self.config.gamma * self.fast.backward(d)
        return g

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        self.fast.update(x, d, self.config.fast_lr)
        self._updates += 1
        if self._updates % self.config.transfer_every == 0:
            self.transfer(lr)

    def transfer(self, lr: float) -> None:
        """Move the next columns of A onto C."""
        cols = self.slow.cols
        count = min(self.config.n_reads_per_transfer, cols)
        columns = (self._next_column + np.arange(count)) % cols
        self._next_column = int(columns[-1] + 1) % cols
        one_hot = np.zeros((count, cols))
        one_hot[np.arange(count), columns] = 1.0
        read = self.fast.forward(one_hot)  # (count, rows): the columns of A
        self.slow.update(one_hot, -read, self.config.transfer_lr * lr)

    def read_weights(self) -> Array:
        weights = self.slow.read_weights()
        if self.config.gamma:
            weights = weights + self.config.gamma * self.fast.read_weights()
        return weights

    def program_weights(self, target: ArrayLike) -> Array:
        """C takes the target and A starts at zero."""
        self.fast.program_weights(np.zeros(self.shape))
        self.slow.program_weights(target)
        return self.read_weights()

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self._updates, "next_column": self._next_column}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._updates, self._next_column = int(state["updates"]), int(state["next_column"])


