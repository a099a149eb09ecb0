"""The station file: what instruments a bench has, how the chip is wired, and its hard limits.

A station is a TOML file, validated here. It names the crossbar controller board's serial port,
the pulse generator's and the SMU's VISA resource strings, the chip geometry, which chip region
each tile occupies, the write and read settings, the conductance-to-weight mapping and the hard
safety limits. Nothing reaches an instrument outside those limits (see :mod:`drivers.limits`).

Example (the simulated station that ``hilctl sim serve`` starts writes one like it)::

    [board]
    port = "/dev/ttyUSB0"

    [pulse_generator]
    resource = "TCPIP0::192.168.1.10::5025::SOCKET"

    [smu]
    resource = "TCPIP0::192.168.1.11::5025::SOCKET"

    [chip]
    rows = 8
    cols = 8

    [[tiles]]
    name = "fast"
    rows = 4
    cols = 8

    [[tiles]]
    name = "slow"
    row = 4
    rows = 4
    cols = 8

    [write]
    amplitude = 1.5   # V
    width = 1e-6      # s

    [read]
    voltage = 0.1     # V

    [mapping]
    g_ref = 50e-6     # S at weight 0
    g_scale = 50e-6   # S per unit weight

    [limits]
    max_pulse_amplitude = 3.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drivers.limits import LimitError, StationLimits
from hilctl.config import read_toml, validation_message
from hilctl.errors import ConfigError

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class BoardSection(BaseModel):
    """The crossbar controller board on a serial port."""

    model_config = _STRICT
    port: str = Field(description="serial port, e.g. /dev/ttyUSB0 or COM3")
    baudrate: int = Field(115_200, gt=0)
    timeout: float = Field(0.2, gt=0, description="seconds to wait for one reply")
    retries: int = Field(20, ge=0, description="resends of a request (same sequence number)")


class InstrumentSection(BaseModel):
    """A SCPI instrument reached through VISA."""

    model_config = _STRICT
    resource: str = Field(description="VISA resource, e.g. TCPIP0::10.0.0.5::5025::SOCKET")
    timeout: float = Field(2.0, gt=0, description="seconds allowed for one command")


class ChipSection(BaseModel):
    """The geometry of the chip on the board."""

    model_config = _STRICT
    rows: int = Field(ge=1, le=4096)
    cols: int = Field(ge=1, le=4096)


class TileRegion(BaseModel):
    """The chip region one tile occupies: ``rows x cols`` cells from (``row``, ``col``)."""

    model_config = _STRICT
    name: str
    row: int = Field(0, ge=0)
    col: int = Field(0, ge=0)
    rows: int = Field(ge=1)
    cols: int = Field(ge=1)


class WriteSection(BaseModel):
    """How weights are written: pulse amplitude and width, and which hardware fires them."""

    model_config = _STRICT
    amplitude: float = Field(1.5, gt=0, description="pulse amplitude (V); sign = polarity")
    width: float = Field(1e-6, gt=0, description="pulse width (s)")
    bias: Literal["v/2", "v/3", "float"] = Field("v/2", description="unselected lines")
    via: Literal["board", "pulse-generator"] = Field(
        "board", description="the board's on-board pulser, or the external pulse generator"
    )


class ReadSection(BaseModel):
    """How weights are read: read voltage and which hardware measures."""

    model_config = _STRICT
    voltage: float = Field(0.1, gt=0, description="read voltage (V)")
    compliance: float = Field(1e-4, gt=0, description="SMU current limit (A)")
    nplc: float = Field(0.1, gt=0, description="SMU integration time (power-line cycles)")
    via: Literal["board", "smu"] = Field("board", description="on-board ADC, or the SMU")


class MappingSection(BaseModel):
    """Weights from conductances: ``w = (G - g_ref) / g_scale`` per cell (``reference``), or
    ``w = (G_plus - G_minus) / g_scale`` for a pair of neighbouring cells (``differential``)."""

    model_config = _STRICT
    kind: Literal["reference", "differential"] = "reference"
    g_ref: float = Field(50e-6, gt=0, description="conductance at weight 0 (S)")
    g_scale: float = Field(50e-6, gt=0, description="conductance per unit weight (S)")
    dw_min: float = Field(0.001, gt=0, description="typical weight change of one pulse")


class StationConfig(BaseModel):
    """A whole station, validated."""

    model_config = _STRICT
    board: BoardSection | None = None
    pulse_generator: InstrumentSection | None = None
    smu: InstrumentSection | None = None
    chip: ChipSection
    tiles: list[TileRegion] = Field(min_length=1)
    write: WriteSection = Field(default_factory=WriteSection)
    read: ReadSection = Field(default_factory=ReadSection)
    mapping: MappingSection = Field(default_factory=MappingSection)
    limits: StationLimits = Field(default_factory=StationLimits)

    @model_validator(mode="after")
    def _consistent(self) -> StationConfig:
        names = [t.name for t in self.tiles]
        if len(set(names)) != len(names):
            raise ValueError(f"tiles: names must differ; got {names}")
        for t in self.tiles:
            if t.row + t.rows > self.chip.rows or t.col + t.cols > self.chip.cols:
                raise ValueError(f"tiles.{t.name}: rows {t.row}..{t.row + t.rows - 1}, cols "
                                 f"{t.col}..{t.col + t.cols - 1} leave the "
                                 f"{self.chip.rows} x {self.chip.cols} chip")
        if (self.write.via == "board" or self.read.via == "board") and self.board is None:
            raise ValueError("board: write.via or read.via is 'board' but no [board] is given")
        if self.write.via == "pulse-generator" and self.pulse_generator is None:
            raise ValueError("pulse_generator: write.via = 'pulse-generator' needs [pulse_generator]")
        if self.read.via == "smu" and self.smu is None:
            raise ValueError("smu: read.via = 'smu' needs [smu]")
        try:
            self.limits.check(amplitude=self.write.amplitude, width=self.write.width,
                              read_voltage=self.read.voltage, compliance=self.read.compliance)
        except LimitError as exc:
            raise ValueError(f"write/read settings: {exc}") from None
        return self

    def region(self, name_or_index: str | int) -> TileRegion:
        """The tile region called ``name_or_index`` (or at that index)."""
        if isinstance(name_or_index, int):
            if not 0 <= name_or_index < len(self.tiles):
                raise ConfigError(f"tiles: the station has {len(self.tiles)} tile region(s); "
                                  f"no tile {name_or_index}")
            return self.tiles[name_or_index]
        for region in self.tiles:
            if region.name == name_or_index:
                return region
        raise ConfigError(f"tiles: no tile {name_or_index!r}; the station has "
                          f"{', '.join(t.name for t in self.tiles)}")


def load_station(path: str | Path) -> StationConfig:
    """The validated station of a TOML file; ``ConfigError`` names the file and the field."""
    data = read_toml(path, "--station")
    try:
        return StationConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"--station {path}: {validation_message('', exc)}") from None
