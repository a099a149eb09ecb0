"""A stand-in for pyarc2 (ArC TWO's Python API), backed by the emulated chip.

The ArC TWO driver (``drivers/arc2.py``) imports the module a station's ``[arc2] module`` names
and uses its ``find_ids``, ``Instrument`` and ``IdleMode``. Name this module there
(``module = "sim.instruments.arc2"``) and the driver runs, unchanged, against a
:class:`SimulatedArc2`: an ArC TWO with an :class:`~sim.instruments.chip.EmulatedChip` wired to
its channels. ``tests/sim/test_arc2_standin.py`` checks that every method here has the
parameters, in the order, of the installed pyarc2's.

Boards live in a registry in this process, by board id: a test (or a script) creates a
:class:`SimulatedArc2` and registers it, then opens the lab backend on a station whose
``[arc2] board`` is that id::

    with SimulatedArc2(chip, rows=[0, 1, 2, 3], cols=[16, 17, 18, 19], board=0):
        ...  # hilctl train --backend lab --station arc2.toml   (in this process)

or builds both from a simulated station file (its chip, device, conductances, tiles, write and
read settings, mapping and limits), wired as on a standard 32 x 32 daughterboard::

    board = SimulatedArc2.from_spec(load_sim_station("examples/sim_station.toml"))
    with board:
        Path("arc2.toml").write_text(dump_toml(board.station_values(spec)))

(the pytest plugin's ``sim_arc2_station`` fixture does this).

What it models, from libarc2 0.6 (the library under pyarc2 0.6):

- Commands that only set up an operation (``pulse_one``, ``pulse_slice_masked``) are queued
  and happen at ``execute()``; reads (``read_one``, ``read_slice``) and
  ``finalise_operation`` execute what is queued before them, as the board's FIFO does.
- ``pulse_one(low, high, voltage, nanos)`` puts ``-voltage/2`` on ``low`` and ``+voltage/2``
  on ``high``; the cell between a row and a column channel sees the column's voltage minus the
  row's, and a positive difference potentiates it (one device pulse up). Widths of 1-40 ns
  become 40 ns (the high-speed drivers' clamp). Channels that wire no cell draw nothing.
- ``read_one(low, high, vread)`` is the cell's current ``G vread`` (A, with the chip's read
  noise; pyarc2 does not document the sign, the driver uses the magnitude);
  ``read_slice(chan, vread)`` the 32 currents of the other channel group, in libarc2's order
  (:func:`protocols.arc2.slice_channels`), 0 where no cell is wired.
- ``finalise_operation(mode)`` leaves every channel in ``mode`` (:attr:`SimulatedArc2.idle`);
  any later pulse or read drives channels again (``idle`` becomes None).

Every call is recorded (:attr:`SimulatedArc2.calls`), and :attr:`SimulatedArc2.fail_at` makes
the n-th call of a method raise :class:`ArC2Error`, for the safety tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import Enum
from typing import Any

import numpy as np
from numpy.typing import NDArray

from protocols.arc2 import BIT_CHANNELS, CHANNELS, WORD_CHANNELS, slice_channels
from sim.instruments.chip import EmulatedChip
from sim.instruments.station import SimStationSpec

__all__ = ["BOARDS", "ArC2Error", "IdleMode", "Instrument", "SimulatedArc2", "find_ids",
           "standard_wiring"]

#: Shortest pulse the high-speed drivers give (ns); 1-40 ns become this.
MIN_HS_NANOS = 40


class ArC2Error(Exception):
    """What pyarc2 raises when the instrument refuses or fails."""


class IdleMode(Enum):
    """The channels' state after :meth:`Instrument.finalise_operation` (pyarc2's names and
    values)."""

    Float = 0b01
    SoftGnd = 0b10
    HardGnd = 0b11


def standard_wiring(rows: int, cols: int) -> tuple[list[int], list[int]]:
    """Channels of a ``rows x cols`` chip as on a standard 32 x 32 daughterboard: rows on the
    first bit channels, columns on the first word channels (:mod:`protocols.arc2`)."""
    if rows > len(BIT_CHANNELS) or cols > len(WORD_CHANNELS):
        raise ValueError(f"a {rows} x {cols} chip does not fit an ArC TWO's 32 x 32 channels")
    return list(BIT_CHANNELS[:rows]), list(WORD_CHANNELS[:cols])


class SimulatedArc2:
    """An ArC TWO with ``chip`` wired to its channels: chip row ``i`` on channel ``rows[i]``,
    column ``j`` on ``cols[j]``; known to :func:`find_ids` as ``board`` while registered.

    ``firmware``: the firmware path :class:`Instrument` must be opened with (None: any).
    """

    def __init__(self, chip: EmulatedChip, rows: Sequence[int], cols: Sequence[int],
                 board: int = 0, firmware: str | None = None) -> None:
        if (len(rows), len(cols)) != chip.shape:
            raise ValueError(f"{len(rows)} row and {len(cols)} column channels for a "
                             f"{chip.shape[0]} x {chip.shape[1]} chip")
        self.chip, self.board, self.firmware = chip, board, firmware
        self._row_of = {channel: i for i, channel in enumerate(rows)}
        self._col_of = {channel: j for j, channel in enumerate(cols)}
        #: Every Instrument call: (method, arguments), in order.
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        #: Method name -> the call of it (1 = the next) that raises ArC2Error, once.
        self.fail_at: dict[str, int] = {}
        #: The channels' state: the IdleMode of the last finalise_operation, None once driven.
        self.idle: IdleMode | None = None
        self._queue: list[tuple[int, int, float, int]] = []  # (low, high, voltage, nanos)

    @classmethod
    def from_spec(cls, spec: SimStationSpec, board: int = 0) -> SimulatedArc2:
        """The chip of a simulated station file, on :func:`standard_wiring`."""
        chip = EmulatedChip(spec.chip_config())
        rows, cols = standard_wiring(*chip.shape)
        return cls(chip, rows=rows, cols=cols, board=board)

    def station_values(self, spec: SimStationSpec) -> dict[str, Any]:
        """The station file's values that drive this board through the stand-in: ``spec``'s
        tiles, write and read settings, mapping and limits, with ``[arc2]`` in place of the
        board and SCPI instruments."""
        values = spec.station_values(port="", pulse_generator="", smu="")
        for section in ("board", "pulse_generator", "smu"):
            del values[section]
        values["arc2"] = {"board": self.board, "firmware": self.firmware or "simulated",
                          "module": __name__, "rows": list(self._row_of),
                          "cols": list(self._col_of)}
        values["write"]["via"] = values["read"]["via"] = "arc2"
        return values

    # -- registry -----------------------------------------------------------------------------

    def register(self) -> SimulatedArc2:
        if self.board in BOARDS:
            raise ValueError(f"a simulated ArC TWO is already registered as board {self.board}")
        BOARDS[self.board] = self
        return self

    def unregister(self) -> None:
        if BOARDS.get(self.board) is self:
            del BOARDS[self.board]

    def __enter__(self) -> SimulatedArc2:
        return self.register()

    def __exit__(self, *exc: object) -> None:
        self.unregister()

    # -- what the board does ------------------------------------------------------------------

    def record(self, method: str, *args: Any) -> None:
        """Log a call; raise if :attr:`fail_at` says this call fails."""
        self.calls.append((method, args))
        if method in self.fail_at:
            self.fail_at[method] -= 1
            if self.fail_at[method] <= 0:
                del self.fail_at[method]
                raise ArC2Error(f"simulated failure of {method}")

    def cell(self, low: int, high: int) -> tuple[int, int, int] | None:
        """``(row, col, sign)`` of the cell between two channels, ``sign`` the column's side
        (+1 if ``high`` is the column); None if they wire no cell."""
        if low in self._row_of and high in self._col_of:
            return self._row_of[low], self._col_of[high], +1
        if high in self._row_of and low in self._col_of:
            return self._row_of[high], self._col_of[low], -1
        return None

    def queue_pulse(self, low: int, high: int, voltage: float, nanos: int) -> None:
        self.idle = None
        self._queue.append((low, high, voltage, max(nanos, MIN_HS_NANOS) if nanos else 0))

    def execute(self) -> None:
        """Fire the queued pulses, in order."""
        queue, self._queue = self._queue, []
        for low, high, voltage, nanos in queue:
            found = self.cell(low, high)
            if found is None or voltage == 0:
                continue
            row, col, side = found
            polarity = 1 if side * voltage > 0 else -1
            self.chip.pulse((np.array([row]), np.array([col])), polarity, 1,
                            amplitude=abs(voltage), width=nanos * 1e-9)

    def current(self, low: int, high: int, vread: float) -> float:
        """The read current between two channels (A); 0 if they wire no cell."""
        found = self.cell(low, high)
        if found is None:
            return 0.0
        row, col, _ = found
        return float(self.chip.current((np.array([row]), np.array([col])), vread)[0])


#: The simulated boards of this process, by board id.
BOARDS: dict[int, SimulatedArc2] = {}


def find_ids() -> list[int]:
    """The ids of the registered simulated boards."""
    return sorted(BOARDS)


def _channel(value: int, name: str) -> int:
    """A channel number as pyarc2 takes it (an unsigned integer below 64)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name}: an integer channel, got {value!r}")
    if value not in CHANNELS:
        raise ArC2Error(f"{name}: channel {value} does not exist (0-63)")
    return int(value)


def _nanos(value: int) -> int:
    """A pulse width as pyarc2 takes it (an unsigned integer of ns: a float is a TypeError)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise TypeError(f"nanos: a non-negative integer, got {value!r}")
    return int(value)


class Instrument:
    """The subset of ``pyarc2.Instrument`` the ArC TWO driver uses, on a :class:`SimulatedArc2`.

    Same method names, parameter names and order as pyarc2 0.6; chainable methods return
    ``self``.
    """

    def __init__(self, port: int, firmware: str, init: bool = True) -> None:
        board = BOARDS.get(port)
        if board is None:
            raise ArC2Error(f"no ArC TWO with id {port}; found: {find_ids()}")
        if board.firmware is not None and firmware != board.firmware:
            raise ArC2Error(f"could not load firmware {firmware!r}")
        self._board = board
        board.record("__init__", port, firmware, init)

    def read_one(self, low: int, high: int, vread: float) -> float:
        """The current between ``low`` (at ``-vread``) and ``high`` (A)."""
        board = self._board
        board.record("read_one", low, high, vread)
        low, high = _channel(low, "low"), _channel(high, "high")
        board.execute()
        board.idle = None
        return board.current(low, high, float(vread))

    def read_slice(self, chan: int, vread: float) -> NDArray[np.float32]:
        """The 32 currents of the channels of the other group, with ``chan`` as the low one."""
        board = self._board
        board.record("read_slice", chan, vread)
        chan = _channel(chan, "chan")
        board.execute()
        board.idle = None
        return np.array([board.current(chan, high, float(vread)) for high in slice_channels(chan)],
                        dtype=np.float32)

    def pulse_one(self, low: int, high: int, voltage: float, nanos: int) -> Instrument:
        """Queue a pulse of ``voltage`` (V) between ``low`` and ``high`` for ``nanos`` ns."""
        self._board.record("pulse_one", low, high, voltage, nanos)
        self._board.queue_pulse(_channel(low, "low"), _channel(high, "high"), float(voltage),
                                _nanos(nanos))
        return self

    def pulse_slice_masked(self, chan: int, voltage: float, nanos: int,
                           mask: Iterable[int]) -> Instrument:
        """Queue a pulse between ``chan`` and each channel of ``mask``, all at once."""
        highs = [_channel(int(c), "mask") for c in np.asarray(mask, dtype=np.uint64)]
        self._board.record("pulse_slice_masked", chan, voltage, nanos, tuple(highs))
        chan, width = _channel(chan, "chan"), _nanos(nanos)
        for high in highs:
            self._board.queue_pulse(chan, high, float(voltage), width)
        return self

    def execute(self) -> Instrument:
        """Send what is queued to the board."""
        self._board.record("execute")
        self._board.execute()
        return self

    def finalise_operation(self, mode: IdleMode | None = None, control: Any = None) -> None:
        """Execute what is queued, then leave the channels in ``mode`` (None: as they are)."""
        board = self._board
        board.record("finalise_operation", mode, control)
        board.execute()
        if mode is not None:
            board.idle = IdleMode(mode.value)
