"""A simulated Keithley 2450 source-measure unit (SCPI command set) acting on the emulated chip.

Commands (short or long form, any case, with or without the leading colon; settings answer
their query forms):

======================================  ========================================================
``:SOURce:FUNCtion VOLTage|CURRent``     only voltage sourcing can read a cell
``:SOURce:VOLTage:RANGe:AUTO 0|1``
``:SOURce:VOLTage:ILIMit <A>``           1 nA .. 1.05 A (current limit, "compliance")
``:SOURce:VOLTage[:LEVel] <V>``          -210 .. 210 V
``:SENSe:FUNCtion "CURRent"|"VOLTage"``
``:SENSe:CURRent:RANGe:AUTO 0|1``
``:SENSe:CURRent:NPLCycles <n>``         0.01 .. 10
``:OUTPut[:STATe] ON|OFF``
``:READ?``                               current through ``chip.routing.smu_cell`` at the level
``*LANG?``                               ``SCPI`` (the simulated unit boots in SCPI mode)
======================================  ========================================================

``:READ?`` with the output on and voltage sourcing returns ``I = G V + noise`` of the routed cell
(0 A when no cell is routed), clipped to +-ILIM: a clipped reading sets ``in_compliance``. With
the output off or a non-current sense function it queues ``-221`` and answers the NaN marker
``9.91E37``, so a client never hangs. Out-of-range values give ``-222`` and keep the old setting.
"""

from __future__ import annotations

import numpy as np

from protocols.scpi import Command, ErrorCode
from sim.instruments.chip import EmulatedChip
from sim.instruments.scpi_server import (
    Faults,
    ScpiError,
    ScpiServer,
    choice_arg,
    format_reading,
)

__all__ = ["IDN", "SimulatedSmu"]

IDN = "KEITHLEY INSTRUMENTS,MODEL 2450,SIM0002,hilctl-sim"

ILIM_RANGE = (1e-9, 1.05)
VOLT_RANGE = (-210.0, 210.0)
NPLC_RANGE = (0.01, 10.0)


class SimulatedSmu(ScpiServer):
    """A 2450-class SMU on 127.0.0.1 that reads ``chip.routing.smu_cell``."""

    def __init__(self, chip: EmulatedChip, *, port: int = 0, faults: Faults | None = None) -> None:
        super().__init__(IDN, port=port, faults=faults, name="smu-sim")
        self.chip = chip
        self.language = "SCPI"
        self.reads = 0
        self.in_compliance = False
        self.reset()
        self._register()

    def reset(self) -> None:
        self.source_function = "VOLT"
        self.source_range_auto = True
        self.ilim = 1.05e-4
        self.level = 0.0
        self.sense_function = "CURR"
        self.sense_range_auto = True
        self.nplc = 1.0
        self.output = False
        self.in_compliance = False

    def _register(self) -> None:
        self.add("*LANG?", lambda c: self.language)
        self.add("[SOURce]:FUNCtion[:MODE]", self.choice_setting("source_function", ["VOLTage", "CURRent"]))
        self.add("[SOURce]:VOLTage:RANGe:AUTO", self.bool_setting("source_range_auto"))
        self.add("[SOURce]:VOLTage:ILIMit[:LEVel]", self.number_setting("ilim", *ILIM_RANGE))
        self.add("[SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]",
                 self.number_setting("level", *VOLT_RANGE))
        self.add("SENSe:FUNCtion[:ON]", self._sense_function)
        self.add("SENSe:CURRent:RANGe:AUTO", self.bool_setting("sense_range_auto"))
        self.add("SENSe:CURRent:NPLCycles", self.number_setting("nplc", *NPLC_RANGE))
        self.add("OUTPut[:STATe]", self.bool_setting("output"))
        self.add("READ?", self._read)

    def _sense_function(self, cmd: Command) -> str | None:
        if cmd.query:
            return '"' + {"CURR": "CURR:DC", "VOLT": "VOLT:DC"}[self.sense_function] + '"'
        self.sense_function = choice_arg(cmd, ["CURRent[:DC]", "VOLTage[:DC]"])
        return None

    def _read(self, cmd: Command) -> str:
        if cmd.args:
            raise ScpiError(ErrorCode.PARAMETER_NOT_ALLOWED)
        if not self.output:
            raise ScpiError(ErrorCode.SETTINGS_CONFLICT, "output is off")
        if self.source_function != "VOLT" or self.sense_function != "CURR":
            raise ScpiError(ErrorCode.SETTINGS_CONFLICT, "reading needs voltage source, current sense")
        self.reads += 1
        cell = self.chip.routing.smu_cell
        if cell is None:
            current = 0.0
        else:
            cells = (np.array([cell[0]], dtype=np.intp), np.array([cell[1]], dtype=np.intp))
            current = float(self.chip.current(cells, self.level)[0])
        self.in_compliance = abs(current) >= self.ilim
        current = float(np.clip(current, -self.ilim, self.ilim))
        return format_reading(current)
