"""Keithley 2450-class source-measure unit driver: source a read voltage, measure the current.

``configure_read`` sets voltage sourcing with auto range, the current limit (compliance) before
the level, current sensing with auto range and the integration time in power-line cycles; both
quantities are checked against the station's :class:`~protocols.station.StationLimits` before any
byte is sent. ``read_current`` is one ``:READ?``. The connect check also asks ``*LANG?``: a
2450 that booted in TSP or SCPI2400 mode does not understand these commands.
"""

from __future__ import annotations

import math

from drivers.limits import LimitError, check
from drivers.scpi import InstrumentError, ScpiInstrument
from protocols.scpi import ScpiParseError, format_command, parse_number
from protocols.station import StationLimits

__all__ = ["Smu"]

NPLC_RANGE = (0.01, 10.0)
MIN_COMPLIANCE = 1e-9  # A: the 2450's smallest current limit


class Smu(ScpiInstrument):
    """A 2450-class SMU on a VISA resource, held to a station's limits."""

    expected_model = "2450"

    def __init__(self, resource: str, limits: StationLimits, *, name: str = "smu", **kwargs: object) -> None:
        super().__init__(resource, name=name, **kwargs)  # type: ignore[arg-type]
        self.limits = limits
        self.voltage: float | None = None
        self.compliance: float | None = None
        self.nplc: float | None = None

    def _after_connect(self) -> None:
        lang = self._receive_after("*LANG?")
        if lang.strip().upper() != "SCPI":
            self._drop_link()
            raise InstrumentError(f"command language is {lang!r}, not SCPI: switch the 2450 to SCPI "
                                  "(MENU > System > Settings > Command Set) and reboot it",
                                  resource=self.resource_name, command="*LANG?")

    def _receive_after(self, command: str) -> str:
        self._send(command, self.timeout_ms)
        return self._receive(self.timeout_ms)

    def reset(self) -> None:
        """``*RST``: output off, factory settings."""
        with self._lock:
            self.set("*RST")
            self.voltage = self.compliance = self.nplc = None

    def configure_read(self, voltage: float, compliance: float, nplc: float = 1.0) -> None:
        """Source ``voltage`` (V) with current limit ``compliance`` (A), integrating ``nplc`` cycles."""
        check(self.limits, read_voltage=voltage, compliance=compliance)
        if compliance < MIN_COMPLIANCE:
            raise LimitError("compliance (A)", compliance, f">= {MIN_COMPLIANCE} (instrument)")
        lo, hi = NPLC_RANGE
        if not (isinstance(nplc, int | float) and math.isfinite(nplc) and lo <= nplc <= hi):
            raise LimitError("integration time (NPLC)", nplc, f"{NPLC_RANGE[0]} <= nplc <= {NPLC_RANGE[1]}")
        with self._lock:
            self.set(
                ":SOUR:FUNC VOLT",
                ":SOUR:VOLT:RANG:AUTO 1",
                format_command(":SOUR:VOLT:ILIM", compliance),
                format_command(":SOUR:VOLT:LEV", voltage),
                ':SENS:FUNC "CURR"',
                ":SENS:CURR:RANG:AUTO 1",
                format_command(":SENS:CURR:NPLC", nplc),
            )
            self.voltage, self.compliance, self.nplc = float(voltage), float(compliance), float(nplc)

    def output(self, on: bool) -> None:
        with self._lock:
            self.set(":OUTP ON" if on else ":OUTP OFF")

    def read_current(self) -> float:
        """One current reading (A) at the configured voltage."""
        with self._lock:
            nplc_ms = (self.nplc or 1.0) / 50 * 1e3 * 4  # integration plus auto-range settling
            text = self.query(":READ?", timeout_ms=int(self.timeout_ms + nplc_ms))
            try:
                value = parse_number(text, markers=True)
            except ScpiParseError as exc:
                raise InstrumentError(f"unreadable reading {text!r}", resource=self.resource_name,
                                      command=":READ?") from exc
            if not math.isfinite(value):
                self.check_errors()  # names the cause (output off, wrong function, ...)
                raise InstrumentError(f"no valid reading ({text!r})", resource=self.resource_name,
                                      command=":READ?")
            return value
