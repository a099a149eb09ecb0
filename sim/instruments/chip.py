"""The emulated chip behind the simulated instruments: cells in conductance units.

Every cell follows one of sim's device models (an :class:`~sim.tile.EmulatedTile` holds the
physics). The chip exposes what a bench sees:

- ``pulse(cells, polarity, count, amplitude, width)``: voltage pulses on some cells. A pulse
  moves a cell only if ``|amplitude| >= set_threshold`` (volts) and ``width >= min_width``
  (seconds); then each pulse is one device pulse of the given polarity (+ up, - down). With
  half-select disturb on (``disturb.rate > 0``, :mod:`sim.instruments.disturb`), such a pulse
  also drives the rows and columns of ``cells``, the other lines sit at the bias scheme the
  board set (``routing.bias``), and the other cells on them may move.
- ``current(cells, voltage)``: the read current ``I = G V + noise`` in amperes, with
  ``G = g_ref + g_scale * w`` (siemens) for device weight ``w``.
- ``mvm(...)``: an analog matrix-vector product on some rows and columns
  (:mod:`sim.instruments.mvm` holds its physics).

Which cell a pulse generator or an SMU reaches is the board's routing (``route_*``); the board
itself pulses and reads through the same two methods. Every pulse that reaches a cell is written
to the ledger, so a test can compare what a controller intended with what the chip received;
what half-select disturb did to the other cells goes to a ledger of its own (``disturbs``).
The chip is shared by instrument threads and guards its state with a lock.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from hilctl.config import DeviceConfig, SoftBoundsConfig, TileConfig
from protocols.schema import StrictModel
from sim.instruments.disturb import DisturbSettings, disturb_counts, line_fractions
from sim.instruments.mvm import MvmSettings, analog_mvm
from sim.tile import EmulatedTile

Cells = tuple[NDArray[np.intp], NDArray[np.intp]]  # (rows, cols) index arrays of equal length
_NO_CELLS: Cells = (np.empty(0, dtype=np.intp), np.empty(0, dtype=np.intp))


class ConductanceSettings(StrictModel):
    """How the chip's device weights appear as conductances and currents, and which pulses
    move a cell (a simulated station file's ``[conductance]``)."""

    g_ref: float = Field(50e-6, gt=0, description="conductance at weight 0 (S)")
    g_scale: float = Field(50e-6, gt=0, description="conductance per unit weight (S)")
    read_noise: float = Field(1e-9, ge=0, description="std of the read current noise (A)")
    set_threshold: float = Field(0.8, gt=0, description="smallest |amplitude| that moves a cell (V)")
    min_width: float = Field(10e-9, gt=0, description="shortest pulse that moves a cell (s)")


class ChipConfig(ConductanceSettings):
    """An emulated chip: geometry, device model and the weight-to-conductance mapping."""

    rows: int = Field(8, ge=1, le=4096)
    cols: int = Field(8, ge=1, le=4096)
    device: DeviceConfig = Field(default_factory=SoftBoundsConfig)
    seed: int = Field(0, ge=0)
    disturb: DisturbSettings = Field(default_factory=DisturbSettings)


@dataclass(frozen=True)
class LedgerEntry:
    """One pulse event as the chip received it."""

    row: int
    col: int
    polarity: int
    count: int


@dataclass(frozen=True)
class DisturbEntry:
    """Device pulses a half-selected cell took from one pulse event (``voltage``: what it saw, V)."""

    row: int
    col: int
    polarity: int
    count: int
    voltage: float


@dataclass
class Routing:
    """Which cell the pulse-generator line and the SMU line reach (None: not connected), and the
    bias scheme of the lines a pulse does not drive (``v/2``, ``v/3`` or ``float``)."""

    pulse_cell: tuple[int, int] | None = None
    smu_cell: tuple[int, int] | None = None
    bias: str = "v/2"


class EmulatedChip:
    """Cells in conductance units, shared by the simulated board and instruments."""

    def __init__(self, config: ChipConfig) -> None:
        self.config = config
        self._tile = EmulatedTile(TileConfig(rows=config.rows, cols=config.cols,
                                             device=config.device, seed=config.seed),
                                  dtype=np.float64)
        self._read_rng = np.random.default_rng([config.seed, 99])
        self._disturb_rng = np.random.default_rng([config.seed, 7])
        self._lock = threading.Lock()
        self.routing = Routing()
        self.ledger: list[LedgerEntry] = []
        #: half-select disturb events, each a cell that moved without being the target
        self.disturbs: list[DisturbEntry] = []
        self._disturb_shift = np.zeros(self.shape)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.config.rows, self.config.cols)

    def conductance(self) -> NDArray[np.float64]:
        """Every cell's conductance (S), for checks; a bench cannot see this directly."""
        with self._lock:
            return self.config.g_ref + self.config.g_scale * self._tile.device_weights()

    def weights(self) -> NDArray[np.float64]:
        """Every cell's device weight, for checks."""
        with self._lock:
            return self._tile.device_weights()

    def pulse(self, cells: Cells, polarity: int, count: int, amplitude: float,
              width: float) -> bool:
        """Apply ``count`` pulses of ``polarity`` to ``cells``; False if too weak to move them.
        With disturb on, the other cells on the rows and columns of ``cells`` (under ``v/3``
        every cell) may move too (:mod:`sim.instruments.disturb`)."""
        if polarity not in (-1, 1) or count < 0:
            raise ValueError(f"polarity must be +1 or -1 and count >= 0; got {polarity}, {count}")
        if abs(amplitude) < self.config.set_threshold or width < self.config.min_width:
            return False
        rows, cols = cells
        counts = np.zeros(self.shape, dtype=np.int64)
        counts[rows, cols] = polarity * count
        with self._lock:
            moved = self._disturb(cells, counts, polarity, count, abs(amplitude))
            before = self._tile.device_weights()[moved] if moved[0].size else None
            self._tile.apply_pulses(counts)
            self.ledger.extend(LedgerEntry(int(r), int(c), polarity, count)
                               for r, c in zip(rows, cols, strict=True))
            if before is not None:
                self._disturb_shift[moved] += self._tile.device_weights()[moved] - before
        return True

    def _disturb(self, cells: Cells, counts: NDArray[np.int64], polarity: int, count: int,
                 amplitude: float) -> Cells:
        """Add the half-selected cells' device pulses to ``counts`` and record them; the cells
        that move (none when disturb is off)."""
        settings = self.config.disturb
        if not settings.enabled or count == 0:
            return _NO_CELLS
        rows, cols = cells
        fractions = line_fractions(self.shape, rows, cols, self.routing.bias,
                                   settings.float_fraction)
        targets = np.zeros(self.shape, dtype=bool)
        targets[rows, cols] = True
        extra = disturb_counts(fractions, targets, polarity, count, amplitude,
                               self.config.set_threshold, settings, self._disturb_rng)
        moved_rows, moved_cols = np.nonzero(extra)
        moved = (moved_rows.astype(np.intp), moved_cols.astype(np.intp))
        counts[moved] = extra[moved]
        self.disturbs.extend(
            DisturbEntry(int(r), int(c), int(np.sign(n)), int(abs(n)),
                         float(polarity * amplitude * fractions[r, c]))
            for r, c, n in zip(moved[0].tolist(), moved[1].tolist(), extra[moved].tolist(),
                               strict=True))
        return moved

    def current(self, cells: Cells, voltage: float) -> NDArray[np.float64]:
        """Read currents ``G V + noise`` (A) of ``cells``, in their order."""
        rows, cols = cells
        with self._lock:
            g = self.config.g_ref + self.config.g_scale * self._tile.device_weights()[rows, cols]
            noise = self._read_rng.standard_normal(g.shape) * self.config.read_noise
        return g * voltage + noise

    def mvm(self, drive_rows: bool, driven: NDArray[np.intp], sensed: NDArray[np.intp],
            voltages: NDArray[np.float64], *, integration_time: float, adc_range: float,
            settings: MvmSettings) -> NDArray[np.float64]:
        """Sensed currents ``(batch, len(sensed))`` (A) of ``voltages`` ``(batch, len(driven))``
        (V) on the ``driven`` rows (``drive_rows``) or columns, sensing the other axis's lines."""
        with self._lock:
            g = self.config.g_ref + self.config.g_scale * self._tile.device_weights()
            block = g[np.ix_(driven, sensed)] if drive_rows else g[np.ix_(sensed, driven)].T
            return analog_mvm(block, voltages, integration_time=integration_time,
                              adc_range=adc_range, read_noise=self.config.read_noise,
                              settings=settings, rng=self._read_rng, driven_positions=driven,
                              sensed_positions=sensed)

    def pulse_ledger(self) -> dict[tuple[int, int], int]:
        """Net signed pulses per cell received so far (intended pulses only, no disturb)."""
        return _net(self.ledger)

    def disturb_ledger(self) -> dict[tuple[int, int], int]:
        """Net signed device pulses per cell that half-select disturb gave so far."""
        return _net(self.disturbs)

    def disturb_shift(self) -> NDArray[np.float64]:
        """Every cell's net device-weight change from half-select disturb so far."""
        with self._lock:
            return self._disturb_shift.copy()


def _net(entries: list[LedgerEntry] | list[DisturbEntry]) -> dict[tuple[int, int], int]:
    """Net signed pulses per cell of ledger entries."""
    net: dict[tuple[int, int], int] = {}
    for entry in entries:
        key = (entry.row, entry.col)
        net[key] = net.get(key, 0) + entry.polarity * entry.count
    return net


def all_cells(shape: tuple[int, int]) -> Cells:
    """Every cell of ``shape``, row by row."""
    rows, cols = np.indices(shape)
    return rows.reshape(-1), cols.reshape(-1)


__all__ = ["ChipConfig", "DisturbEntry", "EmulatedChip", "LedgerEntry", "Routing", "all_cells"]
