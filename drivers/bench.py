"""A bench: the open instruments of one station, and the cell access the lab tiles use.

``Bench.open(station)`` connects what the station names (the board; the pulse generator and
the SMU where writes or reads go through them) once; every tile opened on the station shares
the connections and takes the next free tile region. Every pulse and read setting is checked
against the station's limits before anything is sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from drivers.board import BoardClient
from drivers.station import StationConfig, TileRegion, load_station
from hilctl.errors import ConfigError
from protocols.board import DEFAULT_MAX_PAYLOAD, Capability, ReadMode

Index = NDArray[np.intp]


class BoardAccess:
    """Cells reached through the board's on-board pulser and ADC."""

    def __init__(self, board: BoardClient, station: StationConfig) -> None:
        self.board, self.station = board, station
        capabilities = board.info.capabilities
        self._parallel_update = Capability.PARALLEL_UPDATE in capabilities
        self._parallel_read = Capability.PARALLEL_READ in capabilities
        write, limits = station.write, station.limits
        limits.check(amplitude=write.amplitude, width=write.width,
                     read_voltage=station.read.voltage)

    @property
    def parallel_update(self) -> bool:
        return self._parallel_update

    @property
    def read_voltage(self) -> float:
        return self.station.read.voltage

    def _bursts(self, count: int) -> Iterator[int]:
        """``count`` split into bursts the limits allow."""
        most = self.station.limits.max_burst_count
        while count > 0:
            yield min(count, most)
            count -= most

    def pulse_cells(self, rows: Index, cols: Index, polarity: int, counts: NDArray[np.int64]
                    ) -> None:
        write = self.station.write
        for row, col, count in zip(rows.tolist(), cols.tolist(), counts.tolist(), strict=True):
            for burst in self._bursts(count):
                self.station.limits.check(amplitude=write.amplitude, width=write.width,
                                          count=burst)
                self.board.pulse((row, col), polarity, burst, amplitude=write.amplitude,
                                 width=write.width)

    def pulse_masks(self, rows: Index, cols: Index, polarity: int) -> None:
        write = self.station.write
        self.station.limits.check(amplitude=write.amplitude, width=write.width, count=1)
        self.board.pulse_masks(rows.tolist(), cols.tolist(), polarity, 1,
                               amplitude=write.amplitude, width=write.width)

    def read_region(self, region: TileRegion) -> NDArray[np.float64]:
        voltage = self.station.read.voltage
        self.station.limits.check(read_voltage=voltage)
        cols = slice(region.col, region.col + region.cols)
        chip = self.station.chip
        if self._parallel_read and 4 * chip.rows * chip.cols + 4 <= DEFAULT_MAX_PAYLOAD:
            array = self.board.read(ReadMode.ARRAY, voltage=voltage)
            return array[region.row:region.row + region.rows, cols]
        if self._parallel_read:
            return np.vstack([self.board.read(ReadMode.ROW, row=r, voltage=voltage)[:, cols]
                              for r in range(region.row, region.row + region.rows)])
        return np.array([[self.board.read_cell(r, c, voltage) for c in range(cols.start, cols.stop)]
                         for r in range(region.row, region.row + region.rows)])


class Bench:
    """The instruments of one station, opened once and shared by its tiles."""

    _open: ClassVar[dict[str, Bench]] = {}

    def __init__(self, station: StationConfig) -> None:
        self.station = station
        if station.board is None:
            raise ConfigError("board: this version drives the chip through the board; "
                              "the station needs a [board]")
        section = station.board
        self.board = BoardClient(section.port, timeout=section.timeout, retries=section.retries,
                                 baudrate=section.baudrate)
        info = self.board.identify()
        if (info.rows, info.cols) != (station.chip.rows, station.chip.cols):
            self.board.close()
            raise ConfigError(f"chip: the station says {station.chip.rows} x {station.chip.cols} "
                              f"but the board on {section.port} reports {info.rows} x {info.cols}")
        self.access = BoardAccess(self.board, station)
        self._next_region = 0

    @classmethod
    def open(cls, station: str | Path | StationConfig) -> Bench:
        """The bench of ``station`` (a file or a config), connected on first use."""
        config = station if isinstance(station, StationConfig) else load_station(station)
        key = config.model_dump_json()
        if key not in cls._open:
            cls._open[key] = cls(config)
        return cls._open[key]

    @classmethod
    def close_all(cls) -> None:
        """Close every open bench (tests, and the end of a run)."""
        for bench in cls._open.values():
            bench.board.close()
        cls._open.clear()

    def take_region(self, rows: int, cols: int, name: str | int | None = None) -> TileRegion:
        """The named region, or the next free one; a tile of ``rows x cols`` must fit in it and
        takes its top-left corner."""
        if name is None:
            if self._next_region >= len(self.station.tiles):
                raise ConfigError(f"tiles: the station has {len(self.station.tiles)} tile "
                                  "region(s) and all are in use; add [[tiles]] to the station")
            name = self._next_region
            self._next_region += 1
        region = self.station.region(name)
        if rows > region.rows or cols > region.cols:
            raise ConfigError(f"tiles.{region.name}: a {rows} x {cols} tile does not fit the "
                              f"{region.rows} x {region.cols} region")
        return region.model_copy(update={"rows": rows, "cols": cols})
