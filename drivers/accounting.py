"""Operation accounting: a cell access that counts what the lab tiles ask of a bench.

:class:`CountingAccess` wraps any :class:`~drivers.lab_tile.CellAccess` (the station's, an
ArC TWO's, a test's fake) and passes every call through, counting:

- ``pulses``: device pulses, the sum of ``counts`` of :meth:`~CountingAccess.pulse_cells`, and
  for :meth:`~CountingAccess.pulse_masks` one per crossing cell, ``len(rows) * len(cols)``
  (one coincidence pulse on row and column masks reaches every crossing; the chip's pulse
  ledger counts it the same way), and the same per slot of
  :meth:`~CountingAccess.pulse_mask_train`;
- ``cell_reads``: cells read by :meth:`~CountingAccess.read_cells`, each once;
- ``mvms``: analog matrix-vector products, ``voltages.shape[0]`` per
  :meth:`~CountingAccess.mvm` call (one per input vector), where the wrapped access has one;
- ``access_seconds``: wall time inside the wrapped access's calls.

A call that raises is timed but not counted: how much of it reached the chip is unknown (the
transports' own counters say what went over the wire).

Round trips and the time spent waiting on instruments come from the transports where the
access can say: an access with ``round_trips()`` (the station's: the exchanges its board
client and SCPI drivers completed, a retried request once) and ``wait_seconds()`` (the time
inside the transports' request calls) is asked. Measured there, waiting means the wire and the
instruments, not the host's own work between requests (packing pulse trains, choosing cells),
which is counted inside the access calls. An access without them (an instrument reached
through its own library, such as pyarc2, has no transport of ours to count at) is charged one
round trip per call (a lower bound) and its whole call time as waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from drivers.lab_tile import Array, CellAccess, Index
from hilctl.operations import Operations

__all__ = ["CountingAccess"]


class CountingAccess:
    """``access`` with its work counted (module docstring); a :class:`CellAccess` itself.

    One per bench: every tile on the bench shares it, so the transports' counters are read once.
    """

    def __init__(self, access: CellAccess) -> None:
        self.access = access
        self.pulses = 0
        self.cell_reads = 0
        self.mvms = 0
        self.calls = 0  # calls that returned
        self.access_seconds = 0.0  # s inside the wrapped access's calls, failed ones included

    @contextmanager
    def _timed(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.access_seconds += time.perf_counter() - started
        self.calls += 1

    # -- the CellAccess protocol, passed through -----------------------------------------------

    @property
    def parallel_update(self) -> bool:
        return self.access.parallel_update

    @property
    def parallel_mvm(self) -> bool:
        """The wrapped access's, False where it has no analog MVM."""
        return bool(getattr(self.access, "parallel_mvm", False))

    @property
    def read_voltage(self) -> float:
        return self.access.read_voltage

    def pulse_cells(self, rows: Index, cols: Index, polarity: int, counts: NDArray[np.int64]
                    ) -> None:
        with self._timed():
            self.access.pulse_cells(rows, cols, polarity, counts)
        self.pulses += int(np.sum(counts))

    def pulse_masks(self, rows: Index, cols: Index, polarity: int) -> None:
        with self._timed():
            self.access.pulse_masks(rows, cols, polarity)
        self.pulses += len(rows) * len(cols)

    def pulse_mask_train(self, slots: Sequence[tuple[Index, Index, int]]) -> None:
        """The wrapped access's pulse train: one pulse per crossing cell of every slot."""
        with self._timed():
            self.access.pulse_mask_train(slots)
        self.pulses += sum(len(rows) * len(cols) for rows, cols, _ in slots)

    def read_cells(self, rows: Index, cols: Index) -> Array:
        with self._timed():
            currents = self.access.read_cells(rows, cols)
        self.cell_reads += int(np.size(rows))
        return currents

    def mvm(self, voltages: Array, drive: Any, rows: Index, cols: Index) -> Array:
        """The wrapped access's analog MVM, one per row of ``voltages`` (batch, n_driven)."""
        with self._timed():
            currents: Array = self.access.mvm(voltages, drive, rows, cols)  # type: ignore[attr-defined]
        self.mvms += int(np.shape(voltages)[0])
        return currents

    # -- the totals ----------------------------------------------------------------------------

    def round_trips(self) -> int:
        """Requests the instruments answered: the wrapped access's count, else one per call."""
        counted: Callable[[], int] | None = getattr(self.access, "round_trips", None)
        return int(counted()) if counted is not None else self.calls

    def wait_seconds(self) -> float:
        """Time spent waiting on instruments (s): measured at the wrapped access's transports,
        else the time inside its calls."""
        measured: Callable[[], float] | None = getattr(self.access, "wait_seconds", None)
        return float(measured()) if measured is not None else self.access_seconds

    def operations(self) -> Operations:
        """The totals so far."""
        return Operations(pulses=self.pulses, cell_reads=self.cell_reads, mvms=self.mvms,
                          round_trips=self.round_trips(), wait_seconds=self.wait_seconds())
