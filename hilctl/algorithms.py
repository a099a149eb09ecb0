"""Training algorithms as weight arrays that use only the tile interface.

A network layer holds a :class:`WeightArray`: something that multiplies forward and backward and
takes ``update(x, d, lr)`` for ``W <- W - lr d x^T``. Which tiles sit behind it, and how the
update reaches them, is the algorithm (DESIGN.md section 7):

- digital SGD: one :class:`~hilctl.digital.DigitalTile` (floating point);
- Analog SGD: one analog tile, updated by its pulsed outer product;
- Tiki-Taka v1: a fast tile A taking the gradients and a slow tile C fed from A by column reads.

Nothing here knows the backend: tiles come from a factory, so every algorithm runs unchanged on
the emulator and on a lab chip.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hilctl.digital import DigitalTile
from hilctl.tile import Tile
from hilctl.train_config import AnalogSgdConfig, DigitalSgdConfig, TikiTakaConfig

Array = NDArray[np.float64]
#: Opens an analog tile of (rows, cols) on the run's backend; each call a new tile.
TileFactory = Callable[[int, int], Tile]


class WeightArray(Protocol):
    """What a layer needs of its weights."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def forward(self, x: ArrayLike) -> Array: ...

    def backward(self, d: ArrayLike) -> Array: ...

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None: ...

    def read_weights(self) -> Array: ...

    def program_weights(self, target: ArrayLike) -> Array: ...


class SingleTile:
    """SGD on one tile: digital or Analog SGD, depending on the tile."""

    def __init__(self, tile: Tile) -> None:
        self.tile = tile

    @property
    def shape(self) -> tuple[int, int]:
        return (self.tile.rows, self.tile.cols)

    def forward(self, x: ArrayLike) -> Array:
        return self.tile.forward(x)

    def backward(self, d: ArrayLike) -> Array:
        return self.tile.backward(d)

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        self.tile.update(x, d, lr)

    def read_weights(self) -> Array:
        return self.tile.read_weights()

    def program_weights(self, target: ArrayLike) -> Array:
        return self.tile.program_weights(target)


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


def build_weights(
    algorithm: DigitalSgdConfig | AnalogSgdConfig | TikiTakaConfig,
    rows: int,
    cols: int,
    open_analog: TileFactory,
) -> WeightArray:
    """The weight array of ``algorithm`` for a (rows, cols) layer."""
    if isinstance(algorithm, DigitalSgdConfig):
        return SingleTile(DigitalTile(rows, cols))
    if isinstance(algorithm, AnalogSgdConfig):
        return SingleTile(open_analog(rows, cols))
    return TikiTaka(open_analog(rows, cols), open_analog(rows, cols), algorithm)
