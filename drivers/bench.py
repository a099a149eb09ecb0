"""A bench: the open instruments of one station, and the cell access the lab tiles use.

``Bench(station)`` connects what the station names (the board; the pulse generator and the SMU
where writes or reads go through them); every tile opened on the bench shares the connections
and takes the next free tile region. Every pulse and read setting is checked against the
station's limits before anything is sent.

The board selects a cell (``select``) and routes the pulse generator's or the SMU's line to it
(``route``); a routed row reaches the selected cell of that row. Every select carries the
station's bias scheme of the unselected lines (``write.bias``), which the board keeps in force
for its own pulses too: before the first on-board pulse the access selects once to set it.

Where the board offers an analog MVM (capability ``analog_mvm``) and the station's ``read.mvm``
allows it, the tiles' forward and backward passes are the board's MVM
(:meth:`StationAccess.mvm`). Where it also takes pulse trains (capability ``pulse_train``, with
``parallel_update``), a coincidence update's mask pulses go out as one train
(:meth:`StationAccess.pulse_mask_train`) instead of one frame each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from drivers.board import MVM_ADC_RANGE, BoardClient
from drivers.pulse_generator import PulseGenerator
from drivers.scpi import PulseUncertainError
from drivers.smu import Smu
from drivers.station import region
from hilctl.errors import BenchError, ConfigError
from protocols.board import Capability, ReadMode
from protocols.station import StationConfig, TileRegion

Index = NDArray[np.intp]
log = logging.getLogger("hilctl.bench")


class StationAccess:
    """Cells reached as the station says: pulses from the board's on-board pulser or from the
    pulse generator routed by the board; reads from the board's ADC or from the SMU routed by
    the board. Every setting is checked against the station's limits by the driver that sends it,
at the last step before the wire."""

    def __init__(self, station: StationConfig, board: BoardClient,
                 generator: PulseGenerator | None = None, smu: Smu | None = None) -> None:
        self.station, self.board, self.generator, self.smu = station, board, generator, smu
        capabilities = board.info.capabilities
        self._by_board = station.write.via == "board"
        self._parallel_update = self._by_board and Capability.PARALLEL_UPDATE in capabilities
        self._parallel_train = self._parallel_update and Capability.PULSE_TRAIN in capabilities
        self._parallel_read = (station.read.via == "board"
                               and Capability.PARALLEL_READ in capabilities)
        read = station.read
        offered = Capability.ANALOG_MVM in capabilities
        self._parallel_mvm = read.via == "board" and read.mvm != "off" and offered
        if read.mvm == "on" and not self._parallel_mvm:
            raise ConfigError(f"read.mvm: 'on', but the board on {board.port} does not offer an "
                              "analog MVM (no analog_mvm capability; a board of protocol 1 has "
                              "none); allowed here: 'auto' (cell reads where there is none) or 'off'")
        log.info("board %s: forward and backward passes %s", board.port,
                 "as the board's analog MVM" if self._parallel_mvm else
                 f"from cell reads (read.mvm = {read.mvm!r}, analog_mvm "
                 f"{'offered' if offered else 'not offered'})")
        if self._parallel_update:
            log.info("board %s: coincidence updates %s", board.port,
                     "as one pulse train each" if self._parallel_train else
                     "one mask pulse a request (no pulse_train capability)")
        self._polarity = 0  # the generator's armed polarity (0: not armed yet)
        self._bias_sent = False  # the board holds write.bias (the bench resets it only at open)
        if smu is not None and read.via == "smu":
            smu.configure_read(read.voltage, read.compliance, read.nplc)
            smu.output(True)

    @property
    def parallel_update(self) -> bool:
        return self._parallel_update

    @property
    def read_voltage(self) -> float:
        return self.station.read.voltage

    @property
    def parallel_mvm(self) -> bool:
        """True if :meth:`mvm` works (the board's analog MVM, allowed by ``read.mvm``)."""
        return self._parallel_mvm

    def mvm(self, voltages: NDArray[np.float64], drive: Literal["rows", "cols"], rows: Index,
            cols: Index) -> NDArray[np.float64]:
        """One analog MVM per row of ``voltages`` ``(batch, n_driven)`` (V) on the driven lines
        (``rows`` if ``drive == "rows"``, else ``cols``, in the given order); the currents (A) of
        the other lines, ``(batch, n_sensed)`` in their given order. The ADC range is
        ``read.mvm_adc_range``, by default the full-scale current: every driven line at the read
        voltage on a cell at ``g_max``."""
        driven, sensed = (rows, cols) if drive == "rows" else (cols, rows)
        read = self.station.read
        full_scale = driven.size * self.station.mapping.conductance_window()[1] * read.voltage
        adc_range = read.mvm_adc_range or min(full_scale, MVM_ADC_RANGE[1])
        order = np.argsort(driven)
        currents = self.board.mvm("row" if drive == "rows" else "column", driven[order], sensed,
                                  np.asarray(voltages, dtype=np.float64)[:, order],
                                  integration_time=read.mvm_integration_time, adc_range=adc_range)
        return currents[:, np.searchsorted(np.sort(sensed), sensed)]

    def _bursts(self, count: int) -> Iterator[int]:
        """``count`` split into bursts the limits allow."""
        most = self.station.limits.max_burst_count
        while count > 0:
            yield min(count, most)
            count -= most

    def _route(self, row: int, col: int, line: str) -> None:
        """Select the cell (unselected lines biased as the station says) and route ``line``."""
        self.board.select("cell", row, col, self.station.write.bias)
        self.board.route(**{line: ("row", row)})

    def _send_bias(self, row: int, col: int) -> None:
        """Before the first on-board pulse: select a cell it drives, so the board biases the
        unselected lines of every later pulse as the station says (``write.bias``)."""
        if not self._bias_sent:
            self.board.select("cell", row, col, self.station.write.bias)
            self._bias_sent = True

    def _arm_generator(self, polarity: int) -> PulseGenerator:
        assert self.generator is not None
        if polarity != self._polarity:
            write = self.station.write
            self.generator.configure_pulse(polarity * write.amplitude, write.width)
            self.generator.output(True)
            self._polarity = polarity
        return self.generator

    def _links(self) -> list[dict[str, float]]:
        return [instrument.link_stats() for instrument in (self.board, self.generator, self.smu)
                if instrument is not None]

    def round_trips(self) -> int:
        """Exchanges completed with the instruments since they were opened: the sum of their
        ``link_stats()["round_trips"]`` (a retried request counts once)."""
        return sum(int(link["round_trips"]) for link in self._links())

    def wait_seconds(self) -> float:
        """Time spent in the instruments' request calls since they were opened (s)."""
        return sum(float(link["wait_seconds"]) for link in self._links())

    def pulse_cells(self, rows: Index, cols: Index, polarity: int, counts: NDArray[np.int64]
                    ) -> None:
        write = self.station.write
        if self._by_board and rows.size:
            self._send_bias(int(rows[0]), int(cols[0]))
        for row, col, count in zip(rows.tolist(), cols.tolist(), counts.tolist(), strict=True):
            if not self._by_board:
                generator = self._arm_generator(polarity)
                self._route(row, col, "pulse")
            for burst in self._bursts(count):
                if self._by_board:
                    self.board.pulse((row, col), polarity, burst, amplitude=write.amplitude,
                                     width=write.width)
                else:
                    generator.fire(burst)

    def pulse_masks(self, rows: Index, cols: Index, polarity: int) -> None:
        write = self.station.write
        if rows.size and cols.size:
            self._send_bias(int(rows[0]), int(cols[0]))
        self.board.pulse_masks(rows.tolist(), cols.tolist(), polarity, 1,
                               amplitude=write.amplitude, width=write.width)

    def pulse_mask_train(self, slots: Sequence[tuple[Index, Index, int]]) -> None:
        """One coincidence pulse per slot ``(rows, cols, polarity)``, in order: as the board's
        pulse train where it takes one (in one request, or as few as the link's frame budget
        allows), else as :meth:`pulse_masks` slot after slot."""
        if not slots:
            return
        if not self._parallel_train:
            for rows, cols, polarity in slots:
                self.pulse_masks(rows, cols, polarity)
            return
        write = self.station.write
        rows, cols, _ = slots[0]
        self._send_bias(int(rows[0]), int(cols[0]))
        self.board.pulse_train([(r.tolist(), c.tolist(), p) for r, c, p in slots],
                               amplitude=write.amplitude, width=write.width)

    def read_cells(self, rows: Index, cols: Index) -> NDArray[np.float64]:
        voltage = self.station.read.voltage
        chip = self.station.chip
        if self._parallel_read and rows.size > chip.cols:  # many cells: whole rows at once
            # The whole array in one reply where the link carries it within the timeout (a
            # 64 x 32 reply takes 0.7 s at 115200 baud), else row by row.
            if 4 * chip.rows * chip.cols + 4 <= self.board.payload_budget():
                return self.board.read(ReadMode.ARRAY, voltage=voltage)[rows, cols]
            needed, which = np.unique(rows, return_inverse=True)
            lines = np.stack([self.board.read(ReadMode.ROW, row=r, voltage=voltage)[0]
                              for r in needed.tolist()])
            return lines[which, cols]
        if self.station.read.via == "board":
            return np.array([self.board.read_cell(r, c, voltage)
                             for r, c in zip(rows.tolist(), cols.tolist(), strict=True)])
        assert self.smu is not None
        currents = []
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            self._route(r, c, "smu")
            currents.append(self.smu.read_current())
        return np.array(currents)


def make_safe(steps: Sequence[tuple[str, Callable[[], object]]]) -> list[str]:
    """Run each instrument's safe-state step, each attempted even when another fails, each
    outcome logged; what failed, as ``"name: error"`` (empty when all are safe)."""
    failures = []
    for name, step in steps:
        try:
            step()
        except PulseUncertainError as exc:  # safe now; an earlier trigger's pulses unknown
            log.warning("%s: in its safe state, but %s", name, exc)
        except Exception as exc:  # every instrument gets its turn, whatever the others do
            log.error("%s: could not be put in its safe state: %s", name, exc)
            failures.append(f"{name}: {exc}")
        else:
            log.info("%s: in its safe state", name)
    return failures


class BenchRegions:
    """The tile regions of a station, handed out to the tiles opened on its bench (the part
    every bench shares, whatever instruments it drives)."""

    def __init__(self, station: StationConfig) -> None:
        self.station = station
        self.regions: list[TileRegion] = []  # the regions tiles took, in order
        self._next_region = 0  # the next region a tile that names none takes

    def take_region(self, rows: int, cols: int, name: str | int | None = None) -> TileRegion:
        """The named region, or the next free one; a tile of ``rows x cols`` must fit in it and
        takes its top-left corner."""
        if name is None:
            if self._next_region >= len(self.station.tiles):
                raise ConfigError(f"tiles: the station has {len(self.station.tiles)} tile "
                                  "region(s) and all are in use; add [[tiles]] to the station")
            name = self._next_region
            self._next_region += 1
        chosen = region(self.station, name)
        width = 2 * cols if self.station.mapping.kind == "differential" else cols
        if rows > chosen.rows or width > chosen.cols:
            pairs = " (differential pairs: two cells per weight)" if width > cols else ""
            raise ConfigError(f"tiles.{chosen.name}: a {rows} x {cols} tile{pairs} does not fit "
                              f"the {chosen.rows} x {chosen.cols} region")
        taken = chosen.model_copy(update={"rows": rows, "cols": cols})
        self.regions.append(taken)
        return taken


class Bench(BenchRegions):
    """The instruments of one station, opened once and shared by its tiles.

    Opening connects what the station names and puts every instrument in its safe state before
    anything else (:meth:`safe_state`); :meth:`close` puts them in it again, then closes the
    connections.
    """

    def __init__(self, station: StationConfig) -> None:
        super().__init__(station)
        if station.board is None:
            raise ConfigError("board: this version drives the chip through the board; "
                              "the station needs a [board]")
        section = station.board
        self.board = BoardClient(section.port, timeout=section.timeout, retries=section.retries,
                                 baudrate=section.baudrate, limits=station.limits)
        self.generator: PulseGenerator | None = None
        self.smu: Smu | None = None
        try:
            info = self.board.identify()
            if (info.rows, info.cols) != (station.chip.rows, station.chip.cols):
                raise ConfigError(f"chip: the station says {station.chip.rows} x "
                                  f"{station.chip.cols} but the board on {section.port} reports "
                                  f"{info.rows} x {info.cols}")
            if station.write.via == "pulse-generator":
                assert station.pulse_generator is not None
                self.generator = PulseGenerator(station.pulse_generator.resource, station.limits,
                                                timeout_ms=int(1000 * station.pulse_generator.timeout))
                self.generator.connect()
            if station.read.via == "smu":
                assert station.smu is not None
                self.smu = Smu(station.smu.resource, station.limits,
                               timeout_ms=int(1000 * station.smu.timeout))
                self.smu.connect()
            failures = self.safe_state()
            if failures:
                raise BenchError("the bench could not be put in its safe state when it was "
                                 f"opened: {'; '.join(failures)}")
            self.access = StationAccess(station, self.board, self.generator, self.smu)
        except BaseException:
            self.close()
            raise

    def instruments(self) -> dict[str, BoardClient | PulseGenerator | Smu]:
        """The open instruments by station section name."""
        found: dict[str, BoardClient | PulseGenerator | Smu] = {"board": self.board}
        if self.generator is not None:
            found["pulse_generator"] = self.generator
        if self.smu is not None:
            found["smu"] = self.smu
        return found

    def safe_state(self) -> list[str]:
        """Put every instrument in its safe state: the SMU's output off at 0 V, the pulse
        generator's output off and its bus trigger disarmed, the board reset to idle (nothing
        selected, no line routed). Each is attempted even when another fails; each outcome is
        logged. Returns what failed (empty when all are safe)."""
        steps = [(name, instrument.safe_state) for name, instrument in
                 (("smu", self.smu), ("pulse_generator", self.generator)) if instrument is not None]
        steps.append(("board", self.board.reset))
        return make_safe(steps)

    def close(self) -> None:
        """Put the instruments in their safe state, then close every connection (each
        attempted). Raises :class:`~hilctl.errors.BenchError` if the safe state failed: the
        chip may still see a voltage."""
        failures = self.safe_state()
        for instrument in (self.generator, self.smu, self.board):
            if instrument is not None:
                try:
                    instrument.close()
                except Exception as exc:  # closing must reach every connection
                    log.error("closing %s failed: %s", instrument, exc)
        if failures:
            raise BenchError(f"the bench is NOT in its safe state; check the instruments by hand: "
                             f"{'; '.join(failures)}")

    def report(self) -> dict[str, Any]:
        """What a run records of the bench: each instrument's identity and link counters, and
        the chip region of each tile."""
        instruments: dict[str, Any] = {}
        for name, instrument in self.instruments().items():
            if isinstance(instrument, BoardClient):
                info = instrument.info
                identity = f"{info.firmware} ({info.rows} x {info.cols} chip)"
                address = instrument.port
            else:
                identity, address = instrument.idn or "", instrument.resource_name
            instruments[name] = {"address": address, "identity": identity,
                                 "link": instrument.link_stats()}
        return {"instruments": instruments,
                "tiles": [t.model_dump() for t in self.regions]}
