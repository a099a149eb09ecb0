"""Which cells of a chip its writes may have moved: the lab tiles' read cache, chip-wide.

A lab tile reads a cell once and keeps the reading until a write may have moved the cell. Which
writes may, the station says (``[read] refresh``):

- ``"written"``: only the cells a pulse targeted, each tile its own (a chip without half-select
  disturb; the default, and the fewest reads);
- ``"lines"``: also every cell on a row or column a pulse drove, whichever tile of the chip sent
  it (the half-selected cells of the V/2 scheme and of floating lines);
- ``"all"``: every cell of the chip after any pulse (the V/3 scheme puts a third of the pulse on
  every unselected cell).

:class:`ChipWrites` numbers the writes and keeps, per chip row and column, the number of the last
write that drove it. A bench has one, shared by its tiles, so that a tile sees the others' writes
too; a tile notes the write count at each cell's read and compares.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray

Refresh = Literal["written", "lines", "all"]
Index = NDArray[np.intp]


class ChipWrites:
    """The writes to one ``rows x cols`` chip, by line (module docstring).

    Args:
        rows, cols: the chip's size.
        refresh: which cells a write may have moved: ``"written"``, ``"lines"`` or ``"all"``.
    """

    def __init__(self, rows: int, cols: int, refresh: Refresh = "written") -> None:
        self.refresh: Refresh = refresh
        #: Writes so far; a cell read when this was ``n`` saw every write up to the ``n``-th.
        self.count = 0
        self._row_last = np.zeros(rows, dtype=np.int64)  # the last write that drove each row
        self._col_last = np.zeros(cols, dtype=np.int64)  # ... and each column

    def record(self, rows: Index, cols: Index) -> None:
        """One write that drove chip ``rows`` and ``cols`` (a cell pulse, a mask pulse, or
        cell pulses whose rows and columns are counted together, which can only add cells)."""
        self.count += 1
        self._row_last[rows] = self.count
        self._col_last[cols] = self.count

    def moved(self, rows: Index, cols: Index, read_at: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which cells of the block ``rows x cols`` (chip lines) a write of another cell may have
        moved since their read (``read_at``: the write count then, ``(len(rows), len(cols))``).
        ``"written"`` never says so: the writing tile marks the cells it targeted itself."""
        if self.refresh == "all":
            return read_at < self.count
        if self.refresh == "lines":
            last = np.maximum(self._row_last[rows][:, None], self._col_last[cols][None, :])
            return last > read_at
        return np.zeros(read_at.shape, dtype=bool)


__all__ = ["ChipWrites", "Refresh"]
