"""A simulated Keysight 33500B-class pulse generator (one channel) acting on the emulated chip.

Commands (short or long form, any case, optional ``SOURce`` root omitted as the drivers send
them; every setting also answers its query form, e.g. ``VOLT:HIGH?``):

====================================  ==========================================================
``FUNCtion PULSe|SINusoid|SQUare|DC``  waveform (only ``PULS`` fires pulses at the chip)
``OUTPut:LOAD INFinity|<ohms>``        1..10 kOhm or high-Z; sets the voltage limit below
``FUNCtion:PULSe:PERiod <s>``          33 ns .. 1e6 s
``FUNCtion:PULSe:WIDTh <s>``           16 ns .. 1000 s
``FUNCtion:PULSe:TRANsition:BOTH <s>`` 8.4 ns .. 1 us (both edges)
``VOLTage:HIGH <V>`` / ``VOLTage:LOW`` |V| <= 10 V into high-Z, 5 V into a load; HIGH > LOW
``OUTPut:POLarity NORMal|INVerted``    which level the output idles at (see below)
``BURSt:MODE TRIGgered|GATed``
``BURSt:NCYCles <n>``                  1 .. 100 000 000
``TRIGger:SOURce BUS|IMMediate|EXTernal``
``BURSt:STATe ON|OFF``, ``OUTPut ON|OFF``
``*TRG``                               bus trigger
====================================  ==========================================================

A value out of range gives ``-222`` and the setting keeps its old value (the real instrument
clips and reports -222; refusing is the stricter choice for a safety-critical bench). HIGH <= LOW
gives ``-221`` (settings conflict).

What ``*TRG`` does. With ``FUNC PULS``, ``BURS:STAT ON``, ``BURS:MODE TRIG``, ``TRIG:SOUR BUS``
and ``OUTP ON``, a bus trigger plays ``BURS:NCYC`` pulses of width ``FUNC:PULS:WIDT`` into the
cell ``chip.routing.pulse_cell``. The output idles at the *baseline* level -- ``VOLT:LOW`` with
normal polarity, ``VOLT:HIGH`` with inverted polarity -- and each pulse goes to the other level.
The baseline must be 0 V (a non-zero baseline would bias the cell between pulses; the trigger
then applies nothing and queues ``-221``). The pulse amplitude is the non-zero level, its sign
the pulse polarity: ``VOLT:LOW 0; VOLT:HIGH 1.5`` gives +1.5 V pulses, ``OUTP:POL INV;
VOLT:HIGH 0; VOLT:LOW -1.5`` gives -1.5 V pulses. When any condition is not met, or no cell is
routed, the trigger is accepted and nothing reaches the chip (a bench would see nothing either);
``triggers`` counts every ``*TRG`` and ``fired`` records what was applied. The pulse drives the
routed cell's row against its selected column; with the chip's half-select disturb on, the other
lines sit at the bias scheme the board's ``Select`` set (``chip.routing.bias``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from protocols.scpi import Command, ErrorCode
from sim.instruments.chip import EmulatedChip
from sim.instruments.scpi_server import (
    Faults,
    ScpiError,
    ScpiServer,
    choice_arg,
    format_reading,
    number_arg,
)

__all__ = ["IDN", "FiredBurst", "SimulatedPulseGenerator"]

IDN = "Keysight Technologies,33522B,SIM0001,hilctl-sim"

PERIOD_RANGE = (33e-9, 1e6)
WIDTH_RANGE = (16e-9, 1000.0)
EDGE_RANGE = (8.4e-9, 1e-6)
NCYC_RANGE = (1, 100_000_000)
LOAD_RANGE = (1.0, 10e3)
V_MAX_HIGHZ = 10.0
V_MAX_LOAD = 5.0


@dataclass(frozen=True)
class FiredBurst:
    """One burst that reached the chip."""

    cell: tuple[int, int]
    polarity: int
    count: int
    amplitude: float
    width: float


class SimulatedPulseGenerator(ScpiServer):
    """A 33500B-class generator on 127.0.0.1; its pulses reach ``chip.routing.pulse_cell``."""

    def __init__(self, chip: EmulatedChip, *, port: int = 0, faults: Faults | None = None) -> None:
        super().__init__(IDN, port=port, faults=faults, name="pulse-gen-sim")
        self.chip = chip
        self.triggers = 0
        self.fired: list[FiredBurst] = []
        self.reset()
        self._register()

    def reset(self) -> None:
        self.function = "SIN"
        self.load = 50.0  # ohms; inf = high-Z
        self.period = 1e-3
        self.width = 1e-4
        self.edge = 10e-9
        self.v_high = 0.05
        self.v_low = -0.05
        self.polarity_inverted = False
        self.burst_mode = "TRIG"
        self.burst_ncycles = 1
        self.burst_state = False
        self.trigger_source = "IMM"
        self.output = False

    @property
    def v_limit(self) -> float:
        return V_MAX_HIGHZ if np.isinf(self.load) else V_MAX_LOAD

    def _register(self) -> None:
        self.add("FUNCtion:PULSe:PERiod", self.number_setting("period", *PERIOD_RANGE))
        self.add("FUNCtion:PULSe:WIDTh", self.number_setting("width", *WIDTH_RANGE))
        self.add("FUNCtion:PULSe:TRANsition[:BOTH]", self.number_setting("edge", *EDGE_RANGE))
        self.add("FUNCtion", self.choice_setting("function", ["PULSe", "SINusoid", "SQUare", "DC"]))
        self.add("OUTPut:LOAD", self._load)
        self.add("OUTPut:POLarity", self._polarity)
        self.add("OUTPut[:STATe]", self.bool_setting("output"))
        self.add("VOLTage:HIGH", self._level("v_high"))
        self.add("VOLTage:LOW", self._level("v_low"))
        self.add("BURSt:MODE", self.choice_setting("burst_mode", ["TRIGgered", "GATed"]))
        self.add("BURSt:NCYCles", self._ncycles)
        self.add("BURSt:STATe", self.bool_setting("burst_state"))
        self.add("TRIGger[:SEQuence]:SOURce",
                 self.choice_setting("trigger_source", ["BUS", "IMMediate", "EXTernal"]))
        self.add("*TRG", self._trigger)

    # -- generic settings --------------------------------------------------------------------

    def _load(self, cmd: Command) -> str | None:
        if cmd.query:
            return "9.9E37" if np.isinf(self.load) else format_reading(self.load)
        self.load = number_arg(cmd, *LOAD_RANGE, keywords={"INFinity": float("inf")})
        return None

    def _polarity(self, cmd: Command) -> str | None:
        if cmd.query:
            return "INV" if self.polarity_inverted else "NORM"
        self.polarity_inverted = choice_arg(cmd, ["NORMal", "INVerted"]) == "INV"
        return None

    def _level(self, attr: str):
        def handler(cmd: Command) -> str | None:
            if cmd.query:
                return format_reading(getattr(self, attr))
            value = number_arg(cmd, -self.v_limit, self.v_limit)
            high = value if attr == "v_high" else self.v_high
            low = value if attr == "v_low" else self.v_low
            if high <= low:
                raise ScpiError(ErrorCode.SETTINGS_CONFLICT, "high level must be above low level")
            setattr(self, attr, value)
            return None
        return handler

    def _ncycles(self, cmd: Command) -> str | None:
        if cmd.query:
            return str(self.burst_ncycles)
        value = number_arg(cmd, *NCYC_RANGE)
        if value != int(value):
            raise ScpiError(ErrorCode.DATA_OUT_OF_RANGE, "not an integer")
        self.burst_ncycles = int(value)
        return None

    # -- the trigger -----------------------------------------------------------------------------

    def _trigger(self, cmd: Command) -> None:
        if cmd.query or cmd.args:
            raise ScpiError(ErrorCode.PARAMETER_NOT_ALLOWED)
        self.triggers += 1
        armed = (self.function == "PULS" and self.burst_state and self.burst_mode == "TRIG"
                 and self.trigger_source == "BUS" and self.output)
        if not armed:
            return
        baseline, level = ((self.v_high, self.v_low) if self.polarity_inverted
                           else (self.v_low, self.v_high))
        if baseline != 0.0:
            raise ScpiError(ErrorCode.SETTINGS_CONFLICT, "pulse baseline is not 0 V")
        cell = self.chip.routing.pulse_cell
        if cell is None or level == 0.0:
            return
        polarity = 1 if level > 0 else -1
        cells = (np.array([cell[0]], dtype=np.intp), np.array([cell[1]], dtype=np.intp))
        self.chip.pulse(cells, polarity, self.burst_ncycles, abs(level), self.width)
        self.fired.append(FiredBurst(cell, polarity, self.burst_ncycles, abs(level), self.width))
