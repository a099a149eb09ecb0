"""Loading a station file (schema: :mod:`protocols.station`), with errors that name the file.

A station names the instruments of a bench, the chip geometry, the chip region of each tile,
the write and read settings, the conductance-to-weight mapping and the hard limits; nothing
reaches an instrument outside those limits (:mod:`drivers.limits`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from hilctl.config import read_toml, validation_message
from hilctl.errors import ConfigError
from protocols.station import StationConfig, TileRegion


def load_station(path: str | Path) -> StationConfig:
    """The validated station of a TOML file; ``ConfigError`` names the file and the field."""
    data = read_toml(path, "--station")
    try:
        return StationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"--station {path}: {validation_message('', exc)}") from None


def region(station: StationConfig, name_or_index: str | int) -> TileRegion:
    """The tile region called ``name_or_index`` (or at that index); ``ConfigError`` lists the
    regions the station has."""
    found = station.find_region(name_or_index)
    if found is not None:
        return found
    if isinstance(name_or_index, int):
        raise ConfigError(f"tiles: the station has {len(station.tiles)} tile region(s); "
                          f"no tile {name_or_index}")
    raise ConfigError(f"tiles: no tile {name_or_index!r}; the station has "
                      f"{', '.join(t.name for t in station.tiles)}")
