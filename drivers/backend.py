"""Registration of the lab bench as hilctl backend ``lab`` (entry point ``hilctl.backends``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivers.bench import Bench
from drivers.lab_tile import LabTile
from drivers.station import StationConfig
from hilctl.config import TileConfig
from hilctl.errors import BackendError


def open_tile(config: TileConfig, *, station: str | Path | StationConfig | None = None,
              tile: str | int | None = None, **options: Any) -> LabTile:
    """A :class:`LabTile` of ``config.rows x config.cols`` on the station's next free region
    (or the region ``tile``). The device model of ``config`` does not apply (the chip is
    real); its update settings (bit length, update management) do."""
    if options:
        raise BackendError(f"backend 'lab': unknown option(s) {', '.join(sorted(options))}; "
                           "allowed: station, tile")
    if station is None:
        raise BackendError("backend 'lab' needs a station file: --station FILE.toml")
    bench = Bench.open(station)
    region = bench.take_region(config.rows, config.cols, tile)
    return LabTile(region, bench.access, bench.station.mapping, config.update, seed=config.seed)
