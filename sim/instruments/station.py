"""A whole simulated station in one process: board, pulse generator and SMU on one emulated chip.

A *simulated station file* (TOML) describes the chip behind the instruments and the station
settings a real station file has; :class:`SimulatedStation` starts the instruments and resolves
it into a real station (:class:`protocols.station.StationConfig`) whose port and resource strings
point at them, so the lab backend drives it exactly as it drives a bench::

    spec = load_sim_station("examples/sim_station.toml")
    with SimulatedStation(spec) as sim:
        sim.write_station("station.toml")    # or pass sim.station to the lab backend
        ...                                  # hilctl train --backend lab --station station.toml

Sections of a simulated station file (all tables; see ``examples/sim_station.toml``):

- ``[chip]`` ``rows``, ``cols``, ``seed`` (of the device draws and the read noise).
- ``[device]`` the cells' device model: ``model`` (required) and its keys, as
  ``hilctl train``'s ``[device]`` section (``hilctl.config``).
- ``[conductance]`` ``g_ref`` and ``g_scale`` (S: ``G = g_ref + g_scale * w``), ``read_noise``
  (A, std of the read current), ``set_threshold`` (V, the smallest pulse that moves a cell),
  ``min_width`` (s, the shortest pulse that moves a cell).
- ``[disturb]`` optional, off by default: half-select disturb of the cells a pulse does not
  target (:mod:`sim.instruments.disturb`, ``docs/emulator.md`` section 9): ``rate`` (the
  probability that a pulse at the set threshold moves a half-selected cell; 0 = off),
  ``exponent`` (how steeply it falls below the threshold), ``float_fraction`` (the share of the
  pulse voltage a half-selected cell sees when the unselected lines float). The scheme itself is
  the station's ``[write] bias``, which the lab sends to the board.
- ``[mvm]`` optional: the board's analog MVM. ``enabled`` (default true: the board reports
  ``analog_mvm``; false: a board without it, so the lab falls back to cell reads), ``protocol``
  (2; 1 is a board built before protocol 2, which refuses MVM frames), ``adc_bits`` (12),
  ``wire_resistance`` (ohm per segment, 0: no IR drop), ``noise_time`` (s, the integration time
  at which a sensed line's noise std is ``read_noise``); the model is in
  ``sim/instruments/mvm.py``.
- ``[pulse_train]`` optional: ``enabled`` (default true: the board reports ``pulse_train`` and
  takes a coincidence update's pulses in one ``PULSE_TRAIN`` frame; false: a board without it,
  so the lab sends one mask ``PULSE`` per slot and sign quadrant). A board of ``[mvm]``
  ``protocol = 1`` has no pulse train either.
- ``[faults]`` optional: ``board_drop`` / ``board_corrupt`` (share of board frames dropped /
  corrupted, each direction), ``board_delay`` (s added before every board reply),
  ``scpi_reply_delay`` (s added before every SCPI reply), ``seed``.
- ``[board]``, ``[pulse_generator]``, ``[smu]`` optional: the station's settings of each
  instrument except where it is (``port`` / ``resource`` are filled in when it starts).
- ``[[tiles]]``, ``[write]``, ``[read]``, ``[mapping]``, ``[limits]``: copied into the resolved
  station unchanged. Without ``[mapping]`` the mapping is the chip's own: ``g_ref``, ``g_scale``
  of ``[conductance]``, ``dw_min`` of the device, and the conductance window ``g_min``..``g_max``
  of the device's mean bounds.

The instruments listen on 127.0.0.1 (ephemeral ports) and on a pseudo-terminal only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from hilctl.config import DeviceConfig, SoftBoundsConfig, read_toml, validation_message
from hilctl.errors import ConfigError
from protocols.board import Capability
from protocols.schema import StrictModel
from protocols.station import (
    BoardSettings,
    InstrumentSettings,
    MappingSection,
    ReadSection,
    StationConfig,
    StationLimits,
    TileRegion,
    WriteSection,
)
from protocols.toml_writer import dump_toml
from sim.instruments.board import ALL_CAPABILITIES, FaultConfig, SimulatedBoard
from sim.instruments.chip import ChipConfig, ConductanceSettings, EmulatedChip
from sim.instruments.disturb import DisturbSettings
from sim.instruments.mvm import MvmSettings
from sim.instruments.pulse_generator import SimulatedPulseGenerator
from sim.instruments.scpi_server import Faults
from sim.instruments.smu import SimulatedSmu

__all__ = ["SimMvmSection", "SimPulseTrainSection", "SimStationSpec", "SimulatedStation", "load_sim_station"]

class SimChipSection(StrictModel):
    """Geometry of the emulated chip and the seed of its random draws."""

    rows: int = Field(8, ge=1, le=4096)
    cols: int = Field(8, ge=1, le=4096)
    seed: int = Field(0, ge=0)


class SimMvmSection(MvmSettings):
    """The simulated board's analog MVM: whether it has one, its protocol, its physics."""

    enabled: bool = Field(True, description="the board reports the analog_mvm capability")
    protocol: Literal[1, 2] = Field(2, description="the board protocol its firmware speaks (1: "
                                    "built before MVM, refuses version-2 frames)")

    def capabilities(self) -> Capability:
        """The simulated board's capabilities: all of them, less ``analog_mvm`` if disabled."""
        return ALL_CAPABILITIES if self.enabled else ALL_CAPABILITIES & ~Capability.ANALOG_MVM


class SimPulseTrainSection(StrictModel):
    """Whether the simulated board takes a pulse train (``PULSE_TRAIN``) in one command."""

    enabled: bool = Field(True, description="the board reports the pulse_train capability")


class FaultsSection(StrictModel):
    """Fault injection of the simulated instruments."""

    board_drop: float = Field(0.0, ge=0, le=1, description="share of board frames dropped, each way")
    board_corrupt: float = Field(0.0, ge=0, le=1, description="share of board frames corrupted, each way")
    board_delay: float = Field(0.0, ge=0, le=10, description="seconds before every board reply")
    scpi_reply_delay: float = Field(0.0, ge=0, le=10, description="seconds before every SCPI reply")
    seed: int = Field(0, ge=0)


class SimStationSpec(StrictModel):
    """A simulated station file, validated. ``[board]``, ``[pulse_generator]`` and ``[smu]``
    hold the station's settings of each instrument; where it is (the simulated board's pty,
    the simulated instruments' resources) is filled in when it starts."""

    chip: SimChipSection = Field(default_factory=SimChipSection)
    device: DeviceConfig = Field(default_factory=SoftBoundsConfig)
    conductance: ConductanceSettings = Field(default_factory=ConductanceSettings)
    disturb: DisturbSettings = Field(default_factory=DisturbSettings)
    faults: FaultsSection = Field(default_factory=FaultsSection)
    mvm: SimMvmSection = Field(default_factory=SimMvmSection)
    pulse_train: SimPulseTrainSection = Field(default_factory=SimPulseTrainSection)
    board: BoardSettings = Field(default_factory=BoardSettings)
    pulse_generator: InstrumentSettings = Field(default_factory=InstrumentSettings)
    smu: InstrumentSettings = Field(default_factory=InstrumentSettings)
    tiles: list[TileRegion] = Field(min_length=1)
    write: WriteSection = Field(default_factory=WriteSection)
    read: ReadSection = Field(default_factory=ReadSection)
    mapping: MappingSection | None = None
    limits: StationLimits = Field(default_factory=StationLimits)

    def board_capabilities(self) -> Capability:
        """The simulated board's capabilities: ``[mvm]``'s, less ``pulse_train`` if disabled."""
        offered = self.mvm.capabilities()
        return offered if self.pulse_train.enabled else offered & ~Capability.PULSE_TRAIN

    def station_values(self, *, port: str, pulse_generator: str, smu: str) -> dict[str, Any]:
        """The station file's values with the instruments at ``port`` and the two resources."""
        g = self.conductance
        mapping = self.mapping or MappingSection(
            g_ref=g.g_ref, g_scale=g.g_scale, dw_min=self.device.dw_min,
            g_min=max(g.g_ref + g.g_scale * self.device.w_min, 0.0),
            g_max=g.g_ref + g.g_scale * self.device.w_max)
        return {
            "board": {"port": port, **self.board.model_dump()},
            "pulse_generator": {"resource": pulse_generator, **self.pulse_generator.model_dump()},
            "smu": {"resource": smu, **self.smu.model_dump()},
            "chip": {"rows": self.chip.rows, "cols": self.chip.cols},
            "tiles": [t.model_dump() for t in self.tiles],
            "write": self.write.model_dump(),
            "read": self.read.model_dump(),
            "mapping": mapping.model_dump(),
            "limits": self.limits.model_dump(),
        }

    def chip_config(self) -> ChipConfig:
        """The emulated chip's config: geometry, seed, device, conductances and disturb."""
        return ChipConfig(**self.conductance.model_dump(), rows=self.chip.rows,
                          cols=self.chip.cols, device=self.device, seed=self.chip.seed,
                          disturb=self.disturb)

    def check(self) -> SimStationSpec:
        """Validate the station this spec resolves to (tiles on the chip, settings within the
        limits) with placeholder addresses; ``ConfigError`` names the field."""
        values = self.station_values(port="/dev/null", pulse_generator="TCPIP0::127.0.0.1::1::SOCKET",
                                     smu="TCPIP0::127.0.0.1::2::SOCKET")
        try:
            StationConfig.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(validation_message("", exc)) from None
        return self


def load_sim_station(path: str | Path) -> SimStationSpec:
    """The validated simulated station of a TOML file; ``ConfigError`` names the file and field."""
    data = read_toml(path, "simulated station")
    try:
        return SimStationSpec.model_validate(data).check()
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_message('', exc)}") from None
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


class SimulatedStation:
    """The instruments of a :class:`SimStationSpec`, running in this process.

    :meth:`start` creates one :class:`EmulatedChip`, a :class:`SimulatedBoard` on a pty, a
    :class:`SimulatedPulseGenerator` and an :class:`SimulatedSmu` on 127.0.0.1 ephemeral ports;
    :attr:`station` is then the resolved :class:`StationConfig`. :meth:`stop` stops them all
    (threads joined, pty and sockets closed). Use it as a context manager.
    """

    def __init__(self, spec: SimStationSpec) -> None:
        self.spec = spec.check()
        self.chip: EmulatedChip | None = None
        self.board: SimulatedBoard | None = None
        self.pulse_generator: SimulatedPulseGenerator | None = None
        self.smu: SimulatedSmu | None = None
        self._station: StationConfig | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> SimulatedStation:
        return cls(load_sim_station(path))

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> SimulatedStation:
        if self.chip is not None:
            raise RuntimeError("simulated station already started")
        spec = self.spec
        self.chip = EmulatedChip(spec.chip_config())
        f = spec.faults
        board_faults = FaultConfig(drop_in=f.board_drop, drop_out=f.board_drop,
                                   corrupt_in=f.board_corrupt, corrupt_out=f.board_corrupt,
                                   delay=f.board_delay, seed=f.seed)
        try:
            self.board = SimulatedBoard(self.chip, fault=board_faults, protocol=spec.mvm.protocol,
                                        capabilities=spec.board_capabilities(), mvm=spec.mvm).start()
            self.pulse_generator = SimulatedPulseGenerator(
                self.chip, faults=Faults(reply_delay=f.scpi_reply_delay, seed=f.seed)).start()
            self.smu = SimulatedSmu(self.chip, faults=Faults(reply_delay=f.scpi_reply_delay,
                                                       seed=f.seed + 1)).start()
            assert self.board.port is not None
            self._station = StationConfig.model_validate(spec.station_values(
                port=self.board.port, pulse_generator=self.pulse_generator.resource,
                smu=self.smu.resource))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every instrument that runs; a client still connected then sees I/O errors."""
        for name in ("smu", "pulse_generator", "board"):
            instrument = getattr(self, name)
            if instrument is not None:
                instrument.stop()
                setattr(self, name, None)
        self.chip = None
        self._station = None

    @property
    def running(self) -> bool:
        return self._station is not None

    def __enter__(self) -> SimulatedStation:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the resolved station -----------------------------------------------------------------

    @property
    def station(self) -> StationConfig:
        """The station a lab backend uses to reach these instruments (only while running)."""
        if self._station is None:
            raise RuntimeError("simulated station not started")
        return self._station

    def addresses(self) -> dict[str, str]:
        """Where each instrument listens: ``board`` (pty path), ``pulse_generator``, ``smu``
        (VISA resource strings)."""
        station = self.station
        assert station.board and station.pulse_generator and station.smu
        return {"board": station.board.port, "pulse_generator": station.pulse_generator.resource,
                "smu": station.smu.resource}

    def write_station(self, path: str | Path, *, header: str | None = None) -> Path:
        """Write :attr:`station` as a TOML station file; the path written."""
        text = dump_toml(self.station.model_dump(mode="json", exclude_none=True), header=header or (
            "Station of a simulated station (hilctl sim serve); valid while it runs."))
        target = Path(path)
        target.write_text(text, encoding="utf-8")
        return target
