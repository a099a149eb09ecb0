"""The station file's schema: what instruments a bench has, how the chip is wired, its limits.

Both sides of the wire read it: the lab drivers (``drivers/``, which load a station file and
enforce its limits at send time) and the simulated bench (``sim/instruments/``, which writes the
station file of the instruments it starts). A station is TOML::

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

from typing import Literal

from pydantic import Field, model_validator

from protocols.schema import StrictModel

__all__ = [
    "QUANTITY_NAMES",
    "BoardSection",
    "BoardSettings",
    "ChipSection",
    "InstrumentSection",
    "InstrumentSettings",
    "MappingSection",
    "ReadSection",
    "StationConfig",
    "StationLimits",
    "TileRegion",
    "WriteSection",
]


class BoardSettings(StrictModel):
    """How the host talks to the crossbar controller board, wherever it is attached."""

    baudrate: int = Field(115_200, gt=0)
    timeout: float = Field(0.2, gt=0, description="seconds to wait for one reply")
    retries: int = Field(20, ge=0, description="resends of a request (same sequence number)")


class BoardSection(BoardSettings):
    """The crossbar controller board on a serial port."""

    port: str = Field(description="serial port, e.g. /dev/ttyUSB0 or COM3")


class InstrumentSettings(StrictModel):
    """How the host talks to a SCPI instrument, wherever it is."""

    timeout: float = Field(2.0, gt=0, description="seconds allowed for one command")


class InstrumentSection(InstrumentSettings):
    """A SCPI instrument reached through VISA."""

    resource: str = Field(description="VISA resource, e.g. TCPIP0::10.0.0.5::5025::SOCKET")


class ChipSection(StrictModel):
    """The geometry of the chip on the board."""

    rows: int = Field(ge=1, le=4096)
    cols: int = Field(ge=1, le=4096)


class TileRegion(StrictModel):
    """The chip region one tile occupies: ``rows x cols`` cells from (``row``, ``col``)."""

    name: str
    row: int = Field(0, ge=0)
    col: int = Field(0, ge=0)
    rows: int = Field(ge=1)
    cols: int = Field(ge=1)


class WriteSection(StrictModel):
    """How weights are written: pulse amplitude and width, and which hardware fires them."""

    amplitude: float = Field(1.5, gt=0, description="pulse amplitude (V); sign = polarity")
    width: float = Field(1e-6, gt=0, description="pulse width (s)")
    bias: Literal["v/2", "v/3", "float"] = Field("v/2", description="unselected lines")
    via: Literal["board", "pulse-generator"] = Field(
        "board", description="the board's on-board pulser, or the external pulse generator"
    )


class ReadSection(StrictModel):
    """How weights are read: read voltage and which hardware measures."""

    voltage: float = Field(0.1, gt=0, description="read voltage (V)")
    compliance: float = Field(1e-4, gt=0, description="SMU current limit (A)")
    nplc: float = Field(0.1, gt=0, description="SMU integration time (power-line cycles)")
    via: Literal["board", "smu"] = Field("board", description="on-board ADC, or the SMU")


class MappingSection(StrictModel):
    """Weights from conductances: ``w = (G - g_ref) / g_scale`` per cell (``reference``), or
    ``w = (G_plus - G_minus) / g_scale`` for a pair of neighbouring cells (``differential``)."""

    kind: Literal["reference", "differential"] = "reference"
    g_ref: float = Field(50e-6, gt=0, description="conductance at weight 0 (S)")
    g_scale: float = Field(50e-6, gt=0, description="conductance per unit weight (S)")
    dw_min: float = Field(0.001, gt=0, description="typical weight change of one pulse")


class StationLimits(StrictModel):
    """Hard limits of one bench (chip and wiring), independent of what the instruments can do.

    :meth:`violation` compares settings with them; the drivers call it (through
    ``drivers.limits``) with every value they are about to send.
    """

    max_pulse_amplitude: float = Field(3.0, gt=0, le=10, description="largest |pulse amplitude| (V)")
    min_pulse_width: float = Field(20e-9, gt=0, description="shortest pulse (s)")
    max_pulse_width: float = Field(1e-3, gt=0, description="longest pulse (s)")
    max_read_voltage: float = Field(0.5, gt=0, le=210, description="largest |read voltage| (V)")
    max_compliance: float = Field(1e-3, gt=0, le=1.05, description="largest current limit (A)")
    max_burst_count: int = Field(1000, ge=1, description="most pulses in one burst")

    @model_validator(mode="after")
    def _widths_ordered(self) -> StationLimits:
        if self.min_pulse_width > self.max_pulse_width:
            raise ValueError("min_pulse_width must not exceed max_pulse_width")
        return self

    def violation(self, quantity: str, value: float) -> str | None:
        """The limit ``value`` of ``quantity`` breaks, as text, or None if it is within.

        ``quantity`` is one of ``amplitude`` (V), ``width`` (s), ``read_voltage`` (V),
        ``compliance`` (A) and ``count`` (pulses in one burst); ``value`` a finite number.
        """
        if quantity == "amplitude":
            ok, limit = abs(value) <= self.max_pulse_amplitude, f"|amplitude| <= {self.max_pulse_amplitude}"
        elif quantity == "width":
            ok = self.min_pulse_width <= value <= self.max_pulse_width
            limit = f"{self.min_pulse_width} <= width <= {self.max_pulse_width}"
        elif quantity == "read_voltage":
            ok, limit = abs(value) <= self.max_read_voltage, f"|voltage| <= {self.max_read_voltage}"
        elif quantity == "compliance":
            ok = 0 < value <= self.max_compliance
            limit = f"0 < compliance <= {self.max_compliance}"
        elif quantity == "count":
            ok, limit = 1 <= value <= self.max_burst_count, f"1 <= count <= {self.max_burst_count}"
        else:
            raise KeyError(f"no station limit for {quantity!r}")
        return None if ok else limit


class StationConfig(StrictModel):
    """A whole station, validated: the tiles lie on the chip, every instrument a setting goes
    through is named, and the write and read settings are within the limits."""

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
        for quantity, value in (("amplitude", self.write.amplitude), ("width", self.write.width),
                                ("read_voltage", self.read.voltage),
                                ("compliance", self.read.compliance)):
            limit = self.limits.violation(quantity, value)
            if limit is not None:
                raise ValueError(f"write/read settings: {QUANTITY_NAMES[quantity]} = {value!r} "
                                 f"is beyond the station limit ({limit}); nothing was sent")
        return self

    def find_region(self, name_or_index: str | int) -> TileRegion | None:
        """The tile region called ``name_or_index`` (or at that index), None if there is none."""
        if isinstance(name_or_index, int):
            return self.tiles[name_or_index] if 0 <= name_or_index < len(self.tiles) else None
        return next((region for region in self.tiles if region.name == name_or_index), None)


#: How each limited quantity is named in messages, with its unit.
QUANTITY_NAMES = {"amplitude": "pulse amplitude (V)", "width": "pulse width (s)",
                  "read_voltage": "read voltage (V)", "compliance": "compliance (A)",
                  "count": "burst count"}
