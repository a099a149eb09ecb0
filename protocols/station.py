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
    mvm = "auto"      # forward/backward as the board's analog MVM where it offers one

    [mapping]
    g_ref = 50e-6     # S at weight 0
    g_scale = 50e-6   # S per unit weight

    [limits]
    max_pulse_amplitude = 3.0

An ArC TWO station drives the chip with an ArC TWO alone: ``[arc2]`` (board id, firmware, the
channel of each chip row and column) instead of ``[board]``, ``[pulse_generator]`` and
``[smu]``, and ``via = "arc2"`` in ``[write]`` and ``[read]`` (``docs/arc2.md``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from protocols.arc2 import CHANNELS, group_of
from protocols.schema import StrictModel

__all__ = [
    "ARC2_MIN_WIDTH",
    "QUANTITY_NAMES",
    "Arc2Section",
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

    baudrate: int = Field(115_200, ge=300, le=10_000_000, description="bits per second")
    timeout: float = Field(0.2, ge=1e-3, le=60, description="seconds to wait for one reply")
    retries: int = Field(20, ge=0, le=1000, description="resends of a request (same sequence "
                         "number)")


class BoardSection(BoardSettings):
    """The crossbar controller board on a serial port."""

    port: str = Field(description="serial port, e.g. /dev/ttyUSB0 or COM3")


class InstrumentSettings(StrictModel):
    """How the host talks to a SCPI instrument, wherever it is."""

    timeout: float = Field(2.0, ge=1e-3, le=3600, description="seconds allowed for one command")


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

    amplitude: float = Field(1.5, gt=0, description="pulse amplitude (V), a magnitude: each pulse's "
                             "polarity gives its sign")
    width: float = Field(1e-6, gt=0, description="pulse width (s)")
    bias: Literal["v/2", "v/3", "float"] = Field("v/2", description="unselected lines")
    via: Literal["board", "pulse-generator", "arc2"] = Field(
        "board", description="the board's on-board pulser, the external pulse generator, or an "
        "ArC TWO ([arc2])"
    )


class ReadSection(StrictModel):
    """How weights are read: read voltage and which hardware measures; and whether a tile's
    forward and backward passes are the board's analog MVM (``mvm``: ``auto`` uses it where the
    board offers it, ``on`` requires it, ``off`` reads cells) with its integration time and ADC
    range (default: the full-scale current, every driven line at ``voltage`` on ``g_max``); and
    which cells a write may have moved, to be read again (``refresh``, drivers/chip_writes.py)."""

    voltage: float = Field(0.1, gt=0, description="read voltage (V)")
    compliance: float = Field(1e-4, gt=0, description="SMU current limit (A)")
    nplc: float = Field(0.1, ge=0.01, le=10, description="SMU integration time (power-line "
                        "cycles)")
    via: Literal["board", "smu", "arc2"] = Field("board", description="on-board ADC, the SMU, "
                                                 "or an ArC TWO ([arc2])")
    refresh: Literal["written", "lines", "all"] = Field(
        "written", description="which cells a write may move, so that they are read again: the "
        "cells it targeted; also every cell of a row or column it drove (half-select under "
        "V/2 or floating lines); every cell (V/3)")
    mvm: Literal["auto", "on", "off"] = Field("auto", description="forward and backward as the "
                                              "board's analog MVM: where offered, always, never")
    mvm_integration_time: float = Field(1e-6, ge=1e-9, le=1, description="MVM integration time (s)")
    mvm_adc_range: float | None = Field(None, gt=0, le=0.1, description="current at which the "
                                        "MVM's ADC saturates (A); default: the full-scale current")


class MappingSection(StrictModel):
    """Weights from conductances: ``w = (G - g_ref) / g_scale`` per cell (``reference``), or
    ``w = (G_plus - G_minus) / g_scale`` for a pair of neighbouring cells (``differential``).

    ``g_min`` and ``g_max`` are the conductance window a cell can reach; they fix the weights
    the chip can hold (:meth:`weight_range`), which is what a run on the chip trains within.
    """

    kind: Literal["reference", "differential"] = "reference"
    g_ref: float = Field(50e-6, gt=0, le=1, description="conductance at weight 0 (S)")
    g_scale: float = Field(50e-6, gt=0, le=1, description="conductance per unit weight (S)")
    g_min: float | None = Field(None, ge=0, le=1, description="lowest conductance a cell reaches "
                                "(S); default g_ref - g_scale")
    g_max: float | None = Field(None, gt=0, le=1, description="highest conductance a cell reaches "
                                "(S); default g_ref + g_scale")
    dw_min: float = Field(0.001, ge=1e-9, le=1e3, description="typical weight change of one pulse")

    @model_validator(mode="after")
    def _window_around_reference(self) -> MappingSection:
        low, high = self.conductance_window()
        if not low < self.g_ref < high:
            raise ValueError(f"mapping: g_min < g_ref < g_max is required (got g_min={low}, "
                             f"g_ref={self.g_ref}, g_max={high})")
        return self

    def conductance_window(self) -> tuple[float, float]:
        """``(g_min, g_max)`` (S), the defaults filled in."""
        low = self.g_ref - self.g_scale if self.g_min is None else self.g_min
        high = self.g_ref + self.g_scale if self.g_max is None else self.g_max
        return max(low, 0.0), high

    def weight_range(self) -> tuple[float, float]:
        """The weights the chip can hold (weight units): from the conductance window around
        ``g_ref``, or, for differential pairs, the largest difference of two cells."""
        low, high = self.conductance_window()
        if self.kind == "differential":
            span = (high - low) / self.g_scale
            return -span, span
        return (low - self.g_ref) / self.g_scale, (high - self.g_ref) / self.g_scale


class StationLimits(StrictModel):
    """Hard limits of one bench (chip and wiring), independent of what the instruments can do.

    :meth:`violation` compares settings with them; the drivers call it (through
    ``drivers.limits``) with every value they are about to send. Every limit is a finite number
    (the strict base refuses ``inf``, ``nan``, booleans and strings) under an absolute ceiling,
    so a typo cannot open the bench:

    - ``max_pulse_amplitude`` <= 10 V: the most a 33500B gives into high-Z; no crossbar cell
      needs more to switch, and beyond it every cell class breaks down.
    - ``max_pulse_width`` <= 1 s and ``min_pulse_width`` >= 1 ns: programming pulses are ns to
      ms; a second is already a DC stress; below 1 ns no bench instrument makes a pulse.
    - ``max_read_voltage`` <= 2 V: a read must not program. Above ~1 V most resistive cells
      (RRAM, PCM, ECRAM) are disturbed; 2 V leaves room for cells read at up to ~1.5 V (FeFET
      gates) and refuses a write level pasted as the read limit (``3``) or a unit slip (``100``).
    - ``max_compliance`` <= 0.1 A: a cell carries uA to mA; 100 mA is the fuse of a whole
      line read in parallel, more would melt lines rather than read them.
    - ``max_burst_count`` <= 65535: the board's u16 count field; longer trains are split into
      bursts by the caller.
    """

    max_pulse_amplitude: float = Field(3.0, gt=0, le=10,
                                       description="largest |pulse amplitude| (V); ceiling 10 V")
    min_pulse_width: float = Field(20e-9, ge=1e-9, le=1, description="shortest pulse (s); at least 1 ns")
    max_pulse_width: float = Field(1e-3, gt=0, le=1, description="longest pulse (s); ceiling 1 s")
    max_read_voltage: float = Field(0.5, gt=0, le=2, description="largest |read voltage| (V); ceiling 2 V")
    max_compliance: float = Field(1e-3, gt=0, le=0.1, description="largest current limit (A); ceiling 0.1 A")
    max_burst_count: int = Field(1000, ge=1, le=65535,
                                 description="most pulses in one burst; ceiling 65535 (u16)")

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


#: The shortest pulse an ArC TWO gives as asked (s): its high-speed drivers clamp 1-40 ns to
#: 40 ns (libarc2 0.6, ``pulse_slice_fast_open``), so a shorter width would not be the one sent.
ARC2_MIN_WIDTH = 40e-9


class Arc2Section(StrictModel):
    """An ArC TWO (pyarc2's ``Instrument``) and how the chip is wired to its channels.

    ``rows[i]`` is the channel of chip row ``i`` (the low channel of every read and pulse) and
    ``cols[j]`` that of chip column ``j`` (the high channel). Every row must sit in one of ArC
    TWO's two channel groups (0-15 and 32-47, or 16-31 and 48-63) and every column in the other,
    as its slice reads and pulses assume (``protocols/arc2.py``).
    """

    board: int = Field(0, ge=0, description="the board's id, as pyarc2.find_ids() lists it")
    firmware: str = Field(description="path of the firmware file the board is loaded with")
    module: str = Field("pyarc2", pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$",
                        description="the module providing Instrument, find_ids and IdleMode: "
                        "pyarc2, or a stand-in such as sim.instruments.arc2")
    rows: list[int] = Field(min_length=1, description="channel of each chip row, 0-63")
    cols: list[int] = Field(min_length=1, description="channel of each chip column, 0-63")
    idle: Literal["SoftGnd", "HardGnd", "Float"] = Field(
        "SoftGnd", description="the channels' safe state (pyarc2.IdleMode): 0 V, hard ground, "
        "or disconnected")
    potentiate: Literal["positive", "negative"] = Field(
        "positive", description="the sign of the column's voltage against the row's that raises "
        "a cell's conductance")
    update: Literal["cells", "rows"] = Field(
        "cells", description="a training update as each cell's own pulses (pulse_one), or as "
        "coincidence slots fired one row at a time (pulse_slice_masked)")

    @model_validator(mode="after")
    def _wiring(self) -> Arc2Section:
        for name, channels in (("rows", self.rows), ("cols", self.cols)):
            bad = [c for c in channels if c not in CHANNELS]
            if bad:
                raise ValueError(f"arc2.{name}: channel(s) {bad} do not exist; allowed 0-63")
        used = self.rows + self.cols
        twice = sorted({c for c in used if used.count(c) > 1})
        if twice:
            raise ValueError(f"arc2.rows/cols: channel(s) {twice} used more than once; each "
                             "channel wires one chip line")
        row_groups = {group_of(c) for c in self.rows}
        col_groups = {group_of(c) for c in self.cols}
        if len(row_groups) > 1 or len(col_groups) > 1 or row_groups == col_groups:
            raise ValueError("arc2.rows/cols: the rows must all be in one channel group and the "
                             "columns in the other (groups: 0-15 and 32-47; 16-31 and 48-63)")
        return self


class StationConfig(StrictModel):
    """A whole station, validated: the tiles lie on the chip and do not overlap, every
    instrument a setting goes through is named, and the write and read settings are within the
    limits (which are within their ceilings, :class:`StationLimits`)."""

    board: BoardSection | None = None
    pulse_generator: InstrumentSection | None = None
    smu: InstrumentSection | None = None
    arc2: Arc2Section | None = None
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
        for i, a in enumerate(self.tiles):
            for b in self.tiles[i + 1:]:
                rows = max(a.row, b.row), min(a.row + a.rows, b.row + b.rows) - 1
                cols = max(a.col, b.col), min(a.col + a.cols, b.col + b.cols) - 1
                if rows[0] <= rows[1] and cols[0] <= cols[1]:
                    raise ValueError(f"tiles.{a.name} and tiles.{b.name} overlap at rows "
                                     f"{rows[0]}..{rows[1]}, cols {cols[0]}..{cols[1]}: two tiles "
                                     "would write the same cells; give each its own region")
        self._check_arc2()
        if (self.write.via == "board" or self.read.via == "board") and self.board is None:
            raise ValueError("board: write.via or read.via is 'board' but no [board] is given")
        if self.write.via == "pulse-generator" and self.pulse_generator is None:
            raise ValueError("pulse_generator: write.via = 'pulse-generator' needs [pulse_generator]")
        if self.read.via == "smu" and self.smu is None:
            raise ValueError("smu: read.via = 'smu' needs [smu]")
        if self.read.mvm == "on" and self.read.via != "board":
            raise ValueError("read.mvm = 'on' needs read.via = 'board' (the board's analog MVM); "
                             "allowed with read.via = 'smu': 'auto' or 'off'")
        for quantity, value in (("amplitude", self.write.amplitude), ("width", self.write.width),
                                ("read_voltage", self.read.voltage),
                                ("compliance", self.read.compliance)):
            limit = self.limits.violation(quantity, value)
            if limit is not None:
                raise ValueError(f"write/read settings: {QUANTITY_NAMES[quantity]} = {value!r} "
                                 f"is beyond the station limit ({limit}); nothing was sent")
        return self

    def _check_arc2(self) -> None:
        """An ArC TWO writes and reads alone, its channel map covers the chip, and its pulses
        are as long as asked."""
        by_arc2 = [name for name, via in (("write.via", self.write.via),
                                          ("read.via", self.read.via)) if via == "arc2"]
        if self.arc2 is None:
            if by_arc2:
                raise ValueError(f"arc2: {' and '.join(by_arc2)} = 'arc2' needs [arc2]")
            return
        if len(by_arc2) != 2:
            raise ValueError("write.via, read.via: with [arc2] both must be 'arc2' (the ArC TWO "
                             f"drives the chip alone); got {self.write.via!r}, {self.read.via!r}")
        for name, lines, size in (("rows", self.arc2.rows, self.chip.rows),
                                  ("cols", self.arc2.cols, self.chip.cols)):
            if len(lines) != size:
                raise ValueError(f"arc2.{name}: {len(lines)} channel(s) for the chip's {size} "
                                 f"{name}; give one channel per chip line")
        if self.write.width < ARC2_MIN_WIDTH:
            raise ValueError(f"write.width: {self.write.width!r} s is shorter than an ArC TWO "
                             f"pulses as asked; allowed >= {ARC2_MIN_WIDTH} s")

    def find_region(self, name_or_index: str | int) -> TileRegion | None:
        """The tile region called ``name_or_index`` (or at that index), None if there is none."""
        if isinstance(name_or_index, int):
            return self.tiles[name_or_index] if 0 <= name_or_index < len(self.tiles) else None
        return next((region for region in self.tiles if region.name == name_or_index), None)


#: How each limited quantity is named in messages, with its unit.
QUANTITY_NAMES = {"amplitude": "pulse amplitude (V)", "width": "pulse width (s)",
                  "read_voltage": "read voltage (V)", "compliance": "compliance (A)",
                  "count": "burst count"}
