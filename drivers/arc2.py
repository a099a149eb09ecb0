"""An ArC TWO as the bench: the lab tile's cell access on pyarc2's ``Instrument``.

A station with ``[arc2]`` (and ``write.via = read.via = "arc2"``) is driven by an ArC TWO alone.
The module named by ``[arc2] module`` (``pyarc2``, or the stand-in ``sim.instruments.arc2``)
must provide ``find_ids``, ``Instrument`` and ``IdleMode``. Chip row ``i`` is channel
``rows[i]``, the low channel of every call; chip column ``j`` is ``cols[j]``, the high one.

The pyarc2 calls, all there is (``docs/arc2.md``):

- ``read_one(row, col, vread)``: one cell; ``read_slice(line, vread)``: a whole row (or
  column) in one call (32 currents of the other channel group,
  :func:`protocols.arc2.slice_channels`), used when a read wants two or more cells of that
  line. A column read biases the cells the other way round (the column is the low channel);
  the current is taken as a magnitude either way, as a cell read at a small voltage is ohmic.
- ``pulse_one(row, col, voltage, nanos)``: one pulse on one cell, queued; ``execute()`` sends the
  queue. Each cell's pulses of one operation go out in rounds of at most
  ``limits.max_burst_count`` per cell, one ``execute`` per round.
- ``pulse_slice_masked(row, voltage, nanos, cols)``: one pulse on the given columns of one row
  at once; with ``[arc2] update = "rows"`` a coincidence update fires each slot row by row.
- ``finalise_operation(IdleMode[idle])``: the safe state (channels at 0 V, hard ground or
  floating, as ``[arc2] idle`` says).

Guarantees:

- Every read voltage, pulse amplitude, width (as the integer ns sent) and per-round count is
  checked against the station's limits (:func:`drivers.limits.check`) before the operation's
  first pyarc2 call; a refused operation queues nothing. Voltages go out as the float32 pyarc2
  takes, rounded towards safety (:func:`drivers.limits.float32_within`). Cells outside the
  chip and polarities other than +1/-1 are refused the same way.
- Opening puts the channels in the safe state before anything else; :meth:`Arc2Bench.close`
  (which the lab backend calls on every exit: done, error, Ctrl-C) puts them in it again. A
  failed safe state is logged and raised as :class:`~hilctl.errors.BenchError`.
- A pyarc2 failure mid-operation becomes a :class:`~hilctl.errors.BenchError` naming the board
  and the call. Pulses already queued when a call fails are sent by the safe state's own
  ``execute`` (pyarc2 has no way to drop them); each was checked against the limits.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from drivers.bench import BenchRegions, make_safe
from drivers.limits import CommandRefused, bounds, check, float32_within
from hilctl.errors import BenchError, ConfigError
from protocols.arc2 import slice_channels
from protocols.station import StationConfig

Index = NDArray[np.intp]

#: pyarc2 calls that talk to the board (the others only queue commands): counted as round trips.
ROUND_TRIPS = frozenset({"read_one", "read_slice", "execute", "finalise_operation"})


def load_module(name: str = "pyarc2") -> ModuleType:
    """The module an ``[arc2] module`` names; ``ConfigError`` if it is missing or lacks
    ``find_ids``, ``Instrument`` or ``IdleMode``."""
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # missing, or failing as it is imported: the station names it
        hint = " (pip install 'hilctl[arc2]')" if name == "pyarc2" else ""
        raise ConfigError(f"arc2.module: {name!r} cannot be imported{hint}: "
                          f"{type(exc).__name__}: {exc}") from None
    missing = [attr for attr in ("find_ids", "Instrument", "IdleMode") if not hasattr(module, attr)]
    if missing:
        raise ConfigError(f"arc2.module: {name!r} has no {', '.join(missing)}; it must "
                          "provide find_ids, Instrument and IdleMode as pyarc2 does")
    return module


class Arc2Access:
    """The lab tile's cell access (:class:`drivers.lab_tile.CellAccess`) on an open pyarc2
    ``Instrument``; chip coordinates throughout."""

    parallel_mvm = False

    def __init__(self, station: StationConfig, instrument: Any, idle: Any) -> None:
        """``instrument``: an open pyarc2 ``Instrument`` (or the stand-in's); ``idle``: the
        ``IdleMode`` member of its module that :meth:`safe_state` leaves the channels in."""
        assert station.arc2 is not None
        self.station, self.section, self.instrument = station, station.arc2, instrument
        self.idle = idle
        self._rows = np.asarray(self.section.rows)
        self._cols = np.asarray(self.section.cols)
        self._round_trips = 0
        self.where = f"ArC TWO {self.section.board}"

    @property
    def parallel_update(self) -> bool:
        """True with ``[arc2] update = "rows"``: coincidence slots fired row by row."""
        return self.section.update == "rows"

    @property
    def read_voltage(self) -> float:
        return self.station.read.voltage

    def round_trips(self) -> int:
        """pyarc2 calls so far that talked to the board (:data:`ROUND_TRIPS`)."""
        return self._round_trips

    def call(self, method: str, *args: Any) -> Any:
        """``instrument.method(*args)``; a failure becomes a BenchError naming the board and call."""
        if self.instrument is None:
            raise BenchError(f"{self.where}: {method} after the bench was closed")
        if method in ROUND_TRIPS:
            self._round_trips += 1
        try:
            return getattr(self.instrument, method)(*args)
        except Exception as exc:  # pyarc2 raises ArC2Error, or a PanicException from Rust
            shown = ", ".join(repr(a) for a in args)
            raise BenchError(f"{self.where}: {method}({shown}) failed: "
                             f"{type(exc).__name__}: {exc}") from exc

    # -- checks, before any call ------------------------------------------------------------

    def _lines(self, index: Index, name: str) -> list[int]:
        """The channels of chip ``rows`` or ``cols`` ``index``; ValueError names a line off
        the chip."""
        index = np.asarray(index)
        size = getattr(self.station.chip, name)
        if index.ndim != 1 or (index.size and not (index.min() >= 0 and index.max() < size)):
            raise ValueError(f"{name}: a 1-d array of chip {name} 0..{size - 1}; got {index!r}; "
                             "nothing was sent")
        return (self._rows if name == "rows" else self._cols)[index].tolist()

    def _channels(self, rows: Index, cols: Index) -> tuple[list[int], list[int]]:
        """The row and column channels of chip cells ``(rows[k], cols[k])``."""
        lows, highs = self._lines(rows, "rows"), self._lines(cols, "cols")
        if len(lows) != len(highs):
            raise ValueError(f"rows and cols: one of each per cell; got {len(lows)} and "
                             f"{len(highs)}; nothing was sent")
        return lows, highs

    def _pulse_settings(self, polarity: int) -> tuple[float, int]:
        """The signed voltage (V) and width (integer ns) of one pulse of ``polarity``, checked."""
        if polarity not in (-1, 1):
            raise CommandRefused(f"pulse polarity {polarity!r}", "not a pulse direction",
                                 resource=self.where, allowed="+1 (up) or -1 (down)")
        write, limits = self.station.write, self.station.limits
        sign = 1 if self.section.potentiate == "positive" else -1
        voltage = sign * polarity * write.amplitude
        nanos = round(write.width * 1e9)
        check(limits, amplitude=voltage, width=nanos / 1e9)
        return self._as_float32(voltage, "amplitude"), nanos

    def _read_settings(self) -> float:
        vread = self.station.read.voltage
        check(self.station.limits, read_voltage=vread)
        return self._as_float32(vread, "read_voltage")

    def _as_float32(self, value: float, quantity: str) -> float:
        """``value`` (within the limits) as the float32 pyarc2 sends, rounded towards safety."""
        lo, hi = bounds(self.station.limits, quantity)
        return float32_within(value, lo, hi, name=quantity)

    # -- the cell access --------------------------------------------------------------------

    def _rounds(self, counts: list[int]) -> Iterator[list[int]]:
        """Per-cell counts split into rounds of at most ``max_burst_count`` pulses per cell."""
        most = self.station.limits.max_burst_count
        left = counts
        while any(left):
            yield [min(n, most) for n in left]
            left = [max(n - most, 0) for n in left]

    def pulse_cells(self, rows: Index, cols: Index, polarity: int, counts: NDArray[np.int64]
                    ) -> None:
        """``counts[k]`` pulses of ``polarity`` on cell ``(rows[k], cols[k])``: queued with
        ``pulse_one``, one ``execute`` per round."""
        lows, highs = self._channels(rows, cols)
        voltage, nanos = self._pulse_settings(polarity)
        wanted = np.asarray(counts)
        if wanted.shape != (len(lows),) or wanted.dtype.kind not in "iu" or (wanted < 0).any():
            raise ValueError(f"counts: one non-negative count per cell; got {wanted!r}")
        bursts = list(self._rounds([int(n) for n in wanted]))
        for burst in bursts:
            check(self.station.limits, count=max(burst))
        for burst in bursts:
            for low, high, count in zip(lows, highs, burst, strict=True):
                for _ in range(count):
                    self.call("pulse_one", low, high, voltage, nanos)
            self.call("execute")

    def pulse_mask_train(self, slots: Sequence[tuple[Index, Index, int]]) -> None:
        """:meth:`pulse_masks` of each slot, in order (an ArC TWO takes no pulse trains)."""
        for rows, cols, polarity in slots:
            self.pulse_masks(rows, cols, polarity)

    def pulse_masks(self, rows: Index, cols: Index, polarity: int) -> None:
        """One pulse of ``polarity`` on every cell of ``rows x cols``: one
        ``pulse_slice_masked`` per row, one ``execute``."""
        if not self.parallel_update:
            raise CommandRefused("pulse_masks", "coincidence pulses are off for this station",
                                 resource=self.where, allowed='[arc2] update = "rows"')
        lows, highs = self._lines(rows, "rows"), self._lines(cols, "cols")
        voltage, nanos = self._pulse_settings(polarity)
        if not lows or not highs:
            return
        for low in lows:
            self.call("pulse_slice_masked", low, voltage, nanos, highs)
        self.call("execute")

    def read_cells(self, rows: Index, cols: Index) -> NDArray[np.float64]:
        """The read currents (A, magnitudes) of cells ``(rows[k], cols[k])``.

        The cells are grouped by row, or by column where that makes fewer groups (a one-hot
        column read); a group of two or more is one ``read_slice`` with its line as the low
        channel, a lone cell one ``read_one`` with its row as the low channel.
        """
        lows, highs = self._channels(rows, cols)
        vread = self._read_settings()
        currents = np.empty(len(lows))
        by_row: dict[int, list[int]] = {}
        by_col: dict[int, list[int]] = {}
        for k, (low, high) in enumerate(zip(lows, highs, strict=True)):
            by_row.setdefault(low, []).append(k)
            by_col.setdefault(high, []).append(k)
        lines, others = (by_col, lows) if len(by_col) < len(by_row) else (by_row, highs)
        for line, cells in lines.items():
            if len(cells) == 1:
                (k,) = cells
                currents[k] = float(self.call("read_one", lows[k], highs[k], vread))
                continue
            read = np.asarray(self.call("read_slice", line, vread), dtype=np.float64)
            order = slice_channels(line)
            for k in cells:
                currents[k] = read[order.index(others[k])]
        return np.abs(currents)

    def mvm(self, voltages: NDArray[np.float64], drive: Literal["rows", "cols"], rows: Index,
            cols: Index) -> NDArray[np.float64]:
        """Refused: this backend offers no analog MVM yet (:attr:`parallel_mvm` is False, so the
        lab tile computes its passes from cell reads)."""
        raise CommandRefused("mvm", "the ArC TWO backend has no analog MVM yet",
                             resource=self.where, allowed="cell reads (parallel_mvm is False)")

    def safe_state(self) -> None:
        """``finalise_operation(idle)``: every channel grounded or floating."""
        self.call("finalise_operation", self.idle)

    def close(self) -> None:
        """Let go of the instrument: pyarc2 closes the board's connection when its
        ``Instrument`` is dropped. Every later call is refused."""
        self.instrument = None


class Arc2Bench(BenchRegions):
    """An ArC TWO station's bench: the board opened once (its safe state first) and shared by
    the station's tiles; the same surface as :class:`drivers.bench.Bench`."""

    def __init__(self, station: StationConfig) -> None:
        super().__init__(station)
        if station.arc2 is None:
            raise ConfigError("arc2: this bench drives an ArC TWO; the station needs [arc2]")
        section = station.arc2
        module = load_module(section.module)
        try:
            found = [int(i) for i in module.find_ids()]
        except Exception as exc:  # pyarc2 raises when the USB layer fails
            raise BenchError(f"ArC TWO: listing boards failed: {type(exc).__name__}: {exc}") from exc
        if section.board not in found:
            raise BenchError(f"arc2.board: no ArC TWO with id {section.board}; found: "
                             f"{found or 'none'}")
        try:
            instrument = module.Instrument(section.board, section.firmware)
        except Exception as exc:
            raise BenchError(f"ArC TWO {section.board}: could not be opened with firmware "
                             f"{section.firmware!r}: {type(exc).__name__}: {exc}") from exc
        self.access = Arc2Access(station, instrument, module.IdleMode[section.idle])
        version = getattr(module, "LIBARC2_VERSION", None)
        self.identity = f"ArC TWO ({section.module}" + (f", libarc2 {version})" if version else ")")
        failures = self.safe_state()
        if failures:
            raise BenchError("the bench could not be put in its safe state when it was opened: "
                             f"{'; '.join(failures)}")

    def instruments(self) -> dict[str, Any]:
        """The open instruments by station section name (none once closed)."""
        return {} if self.access.instrument is None else {"arc2": self.access.instrument}

    def safe_state(self) -> list[str]:
        """The channels in the station's idle mode; what failed (empty when safe)."""
        return make_safe([("arc2", self.access.safe_state)])

    def close(self) -> None:
        """Put the channels in their safe state, then let go of the board (its connection
        closes); :class:`BenchError` if the safe state failed. Closing again does nothing."""
        if self.access.instrument is None:
            return
        failures = self.safe_state()
        self.access.close()
        if failures:
            raise BenchError(f"the bench is NOT in its safe state; check the instruments by hand: "
                             f"{'; '.join(failures)}")

    def report(self) -> dict[str, Any]:
        """What a run records: the board's identity and round trips, and each tile's region."""
        section = self.station.arc2
        assert section is not None
        link = {"retries": 0, "timeouts": 0, "reconnects": 0,
                "round_trips": self.access.round_trips()}
        return {"instruments": {"arc2": {"address": f"board {section.board}",
                                         "identity": self.identity, "link": link}},
                "tiles": [t.model_dump() for t in self.regions]}
