"""Mapping a layer's weight matrix onto tiles of limited size, as aihwkit's ``MappingParameter``
does: a matrix with more inputs than ``max_input_size`` (or more outputs than
``max_output_size``) is cut into a grid of near-equal blocks, each on tiles of its own.

Each block is a whole weight array of the run's algorithm (for Tiki-Taka its own fast and slow
tile and its own transfer cycle), so a split layer behaves like aihwkit's ``TileModuleArray``:
the forward pass sums the blocks' partial outputs, each block reads through its own periphery
and applies update management to its own slice of ``x`` and ``d``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hilctl.algorithms import WeightArray

Array = NDArray[np.float64]


def split_sizes(size: int, max_size: int) -> list[int]:
    """``size`` cut into the fewest near-equal parts of at most ``max_size`` (0: no limit);
    the first ``size mod parts`` parts are one larger (aihwkit's rule)."""
    if max_size <= 0 or size <= max_size:
        return [size]
    parts = -(-size // max_size)
    base, extra = divmod(size, parts)
    return [base + (i < extra) for i in range(parts)]


def _bounds(sizes: list[int]) -> list[slice]:
    edges = np.cumsum([0, *sizes])
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges)]


class TiledWeights:
    """A (rows x cols) weight array made of a grid of smaller weight arrays."""

    def __init__(self, rows: int, cols: int, max_rows: int, max_cols: int,
                 make_block: Callable[[int, int], WeightArray]) -> None:
        self._shape = (rows, cols)
        self.row_slices = _bounds(split_sizes(rows, max_rows))
        self.col_slices = _bounds(split_sizes(cols, max_cols))
        self.blocks = [[make_block(r.stop - r.start, c.stop - c.start) for c in self.col_slices]
                       for r in self.row_slices]

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def forward(self, x: ArrayLike) -> Array:
        """(batch, cols) -> (batch, rows): each row band sums its blocks' partial outputs."""
        x = np.asarray(x, dtype=np.float64)
        return np.concatenate([sum(block.forward(x[:, c]) for block, c in
                                   zip(band, self.col_slices, strict=True))
                               for band in self.blocks], axis=1)

    def backward(self, d: ArrayLike) -> Array:
        """(batch, rows) -> (batch, cols): the transposed pass, summed over the row bands."""
        d = np.asarray(d, dtype=np.float64)
        return np.concatenate([sum(band[j].backward(d[:, r]) for band, r in
                                   zip(self.blocks, self.row_slices, strict=True))
                               for j in range(len(self.col_slices))], axis=1)

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        x, d = np.asarray(x, dtype=np.float64), np.asarray(d, dtype=np.float64)
        for band, r in zip(self.blocks, self.row_slices, strict=True):
            for block, c in zip(band, self.col_slices, strict=True):
                block.update(x[:, c], d[:, r], lr)

    def read_weights(self) -> Array:
        return np.block([[block.read_weights() for block in band] for band in self.blocks])

    def state_dict(self) -> dict[str, Any]:
        return {}  # the blocks are weight arrays of their own, saved as such

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def program_weights(self, target: ArrayLike) -> Array:
        """Program every block with its part of ``target``; the weights reached."""
        target = np.asarray(target, dtype=np.float64)
        return np.block([[block.program_weights(target[r, c])
                          for block, c in zip(band, self.col_slices, strict=True)]
                         for band, r in zip(self.blocks, self.row_slices, strict=True)])


def mapped(make_array: Callable[[int, int], WeightArray], max_rows: int,
           max_cols: int) -> Callable[[int, int], WeightArray]:
    """A weight factory that splits matrices larger than ``max_rows x max_cols`` (0: no limit)
    into a :class:`TiledWeights` of arrays from ``make_array``."""

    def make(rows: int, cols: int) -> WeightArray:
        if len(split_sizes(rows, max_rows)) == 1 and len(split_sizes(cols, max_cols)) == 1:
            return make_array(rows, cols)
        return TiledWeights(rows, cols, max_rows, max_cols, make_array)

    return make
