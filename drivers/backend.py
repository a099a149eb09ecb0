"""The lab bench as hilctl backend ``lab`` (entry point ``hilctl.backends``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from drivers.accounting import CountingAccess
from drivers.arc2 import Arc2Bench
from drivers.bench import Bench
from drivers.chip_writes import ChipWrites
from drivers.lab_tile import LabTile
from drivers.station import load_station, region
from hilctl.backends import Backend, BackendOption, ChipFacts
from hilctl.config import TileConfig
from hilctl.errors import BackendError, BenchError, ConfigError
from hilctl.operations import REPORT_KEY, Operations
from hilctl.tile import Tile
from protocols.station import StationConfig

_HOW_TO_SIMULATE = "'hilctl sim serve' starts a simulated bench and writes one"


class LabBackend(Backend):
    """Tiles in the regions of a chip on a bench, reached through the station's instruments.

    The device model of a tile config does not apply (the chip is real); its update settings
    (bit length, update management) do. Every tile opened on one station shares that station's
    connections (a :class:`Bench`) until :meth:`close`, and takes the next free tile region.
    The tiles of a bench reach it through one :class:`~drivers.accounting.CountingAccess`,
    whose totals the report carries under ``operations``.
    """

    name: ClassVar[str] = "lab"
    title: ClassVar[str] = "lab bench"
    physical: ClassVar[bool] = True
    chip_source: ClassVar[str] = "the station file"
    options: ClassVar[tuple[BackendOption, ...]] = (
        BackendOption("station", "FILE.toml",
                      f"station file of the bench; needed by --backend lab and only by it "
                      f"({_HOW_TO_SIMULATE})",
                      misuse="only --backend lab uses a station file"),
        BackendOption("tile", "NAME", "tile region of the station to use (default: the first)",
                      misuse="only --backend lab has tile regions", one_tile=True),
    )

    def __init__(self) -> None:
        self._benches: dict[str, Bench | Arc2Bench] = {}
        #: Each open bench's counted access, by ``id`` of the bench (held in ``_benches``).
        self._counted: dict[int, CountingAccess] = {}
        #: Each open bench's record of chip writes, shared by its tiles (:mod:`drivers.chip_writes`).
        self._writes: dict[int, ChipWrites] = {}
        #: Identity strings the instruments must give (a resumed run's), by station section.
        self._expected_identities: dict[str, str] = {}

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``{"station": path[, "tile": name]}``; the station file is loaded and validated, and
        a tile region must be one of its own (``ConfigError`` names the file or the regions)."""
        station = given.get("station")
        if station is None:
            raise ConfigError(f"--backend {self.name} needs --station FILE.toml, the station file "
                              f"of the bench ({_HOW_TO_SIMULATE})")
        config = load_station(station)
        options: dict[str, Any] = {"station": str(Path(station))}
        tile = given.get("tile")
        if tile is not None:
            region(config, tile)
            options["tile"] = tile
        return options

    def chip(self, options: Mapping[str, Any]) -> ChipFacts:
        """The weight range and pulse size of the station's mapping."""
        mapping = _station(options).mapping
        w_min, w_max = mapping.weight_range()
        return ChipFacts(w_min=w_min, w_max=w_max, dw_min=mapping.dw_min)

    def describe(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The station file's path and its resolved content (as validated, defaults filled in),
        and the tile region asked for."""
        return {**{key: str(value) for key, value in options.items()},
                "resolved_station": _station(options).model_dump(mode="json")}

    def report(self) -> dict[str, Any]:
        """Each instrument's identity and link counters (retries, timeouts, reconnects) and the
        chip region of each tile, for the bench (or benches) this backend opened; and the
        operations of every bench's tiles so far, summed (:mod:`drivers.accounting`)."""
        reports = [bench.report() for bench in self._benches.values()]
        if not reports:
            return {}
        report = reports[0] if len(reports) == 1 else {"benches": reports}
        totals = sum((access.operations() for access in self._counted.values()), Operations())
        return {**report, REPORT_KEY: totals.report_entry()}

    def report_lines(self, report: Mapping[str, Any]) -> list[str]:
        lines = []
        for bench in report.get("benches", [report] if report else []):
            tiles = ", ".join(f"{t['name']} (rows {t['row']}..{t['row'] + t['rows'] - 1}, cols "
                              f"{t['col']}..{t['col'] + t['cols'] - 1})" for t in bench["tiles"])
            lines.append(f"tiles     {tiles or 'none opened'}")
            for name, instrument in bench["instruments"].items():
                link = instrument["link"]
                trouble = ", ".join(f"{link[key]} {key}" for key in ("retries", "timeouts",
                                                                      "reconnects") if link[key])
                lines.append(f"{name:<9} {instrument['identity']} at {instrument['address']}: "
                             f"{trouble or 'no retries, timeouts or reconnects'}")
        return lines

    def tile_shape(self, options: Mapping[str, Any]) -> tuple[int, int]:
        """The size of the tile region ``tile`` (else the station's first)."""
        chosen = region(_station(options), options.get("tile", 0))
        return chosen.rows, chosen.cols

    def bench(self, station: str | Path | StationConfig) -> Bench | Arc2Bench:
        """The bench of ``station`` (a file or a config), connected on first use: an ArC TWO's
        where the station has ``[arc2]``, else the board's and SCPI instruments'."""
        config = station if isinstance(station, StationConfig) else load_station(station)
        key = config.model_dump_json()
        if key not in self._benches:
            bench = Arc2Bench(config) if config.arc2 is not None else Bench(config)
            found = {name: i["identity"] for name, i in bench.report()["instruments"].items()}
            differ = {name: (want, found.get(name)) for name, want in
                      self._expected_identities.items() if found.get(name) != want}
            if differ:
                bench.close()
                raise ConfigError("the bench is not the one the run ran on: " + "; ".join(
                    f"{name} is {got!r}, was {want!r}" for name, (want, got) in differ.items()))
            self._benches[key] = bench
        return self._benches[key]

    def resume_options(self, recorded: Mapping[str, Any],
                       report: Mapping[str, Any]) -> dict[str, Any]:
        """The station the run ran on, which must still describe the same chip (addresses may
        change: a restarted simulated bench listens on new ports); the instruments must give
        the same identity strings when they are opened."""
        options = self.resolve_options({"station": recorded.get("station"),
                                        "tile": recorded.get("tile")})
        before = recorded.get("resolved_station")
        now = _station(options).model_dump(mode="json")
        if before is not None and _without_addresses(before) != _without_addresses(now):
            changed = sorted(k for k in set(before) | set(now)
                             if _without_addresses(before).get(k) != _without_addresses(now).get(k))
            raise ConfigError(f"--station {options['station']}: not the station the run ran on "
                              f"(changed: {', '.join(changed)}); resume on the same bench")
        self._expected_identities = {name: instrument["identity"] for name, instrument in
                                     report.get("instruments", {}).items()}
        return options

    def open_tile(self, config: TileConfig, **options: Any) -> LabTile:
        """A :class:`LabTile` of ``config.rows x config.cols`` on the station's next free
        region (or the region ``tile``)."""
        station = options.pop("station", None)
        tile = options.pop("tile", None)
        if options:
            raise BackendError(f"backend 'lab': unknown option(s) {', '.join(sorted(options))}; "
                               "allowed: station, tile")
        if station is None:
            raise BackendError("backend 'lab' needs a station file: --station FILE.toml")
        bench = self.bench(station)
        chosen = bench.take_region(config.rows, config.cols, tile)
        counted = self._counted.setdefault(id(bench), CountingAccess(bench.access))
        chip, read = bench.station.chip, bench.station.read
        writes = self._writes.setdefault(id(bench), ChipWrites(chip.rows, chip.cols, read.refresh))
        return LabTile(chosen, counted, bench.station.mapping, config.update, seed=config.seed,
                       writes=writes)

    def close(self) -> None:
        """Put every bench this backend opened in its safe state and close it (each attempted);
        a :class:`~hilctl.errors.BenchError` names what could not be made safe."""
        benches, self._benches = list(self._benches.values()), {}
        self._counted, self._writes = {}, {}
        unsafe = []
        for bench in benches:
            try:
                bench.close()
            except BenchError as exc:
                unsafe.append(str(exc))
        if unsafe:
            raise BenchError("; ".join(unsafe))

    def tile_label(self, tile: Tile, config: TileConfig, options: Mapping[str, Any]) -> str:
        """The tile region and the station: the chip's cells, whatever the device config says."""
        assert isinstance(tile, LabTile)
        return f"tile {tile.region.name} of station {options['station']}"


def _station(options: Mapping[str, Any]) -> StationConfig:
    """The station of the options: a config given in code, or a file on the command line."""
    station = options["station"]
    return station if isinstance(station, StationConfig) else load_station(station)


def _without_addresses(station: Mapping[str, Any]) -> dict[str, Any]:
    """A resolved station without where its instruments are (a port, a resource)."""
    out = {key: dict(value) if isinstance(value, Mapping) else value
           for key, value in station.items()}
    for section, key in (("board", "port"), ("pulse_generator", "resource"), ("smu", "resource")):
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out
