"""Keithley 2450-class source-measure unit driver: source a read voltage, measure the current.

Guarantees, on top of those of :mod:`drivers.scpi` (every command vetted right before the wire):

- The command set below is all this driver ever sends. The source level (``:SOUR:VOLT[:LEV]``,
  its magnitude against ``max_read_voltage``) and the current limit (``:SOUR:VOLT:ILIM``, against
  ``max_compliance``) are checked against the station's :class:`~protocols.station.StationLimits`
  whoever writes them (``configure_read`` or a raw ``write``/``set``). Only voltage sourcing and
  current sensing are in the set (current sourcing would drive the cell without a read-voltage
  bound).
- Interlock (on every public write): ``:OUTP ON`` is sent only after this session sent voltage
  sourcing, a current limit and a source level (all checked against the limits) and the error
  queue was found empty after the last setting, so the output never sources a level left by an
  earlier session or one the unit refused.
- :meth:`Smu.safe_state` switches the output off, sets the source level to 0 V and confirms
  ``:OUTP?`` = 0 (also right after a lost link: it reconnects).

``configure_read`` sets voltage sourcing with auto range, the current limit (compliance) before
the level, current sensing with auto range and the integration time in power-line cycles; both
quantities are checked before any byte is sent. ``read_current`` is one ``:READ?``. The connect
check also asks ``*LANG?``: a 2450 that booted in TSP or SCPI2400 mode does not understand these
commands.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from drivers.limits import CommandRefused, LimitError, check
from drivers.scpi import COMMON_COMMANDS, InstrumentError, PulseUncertainError, ScpiInstrument, Setting
from protocols.scpi import Command, HeaderPattern, ScpiParseError, format_command, parse_number
from protocols.station import StationLimits

__all__ = ["COMMANDS", "Smu"]

NPLC_RANGE = (0.01, 10.0)
MIN_COMPLIANCE = 1e-9  # A: the 2450's smallest current limit
_RST = HeaderPattern("*RST")

#: Everything the driver sends (2450 SCPI reference names).
COMMANDS: tuple[Setting, ...] = (
    *COMMON_COMMANDS,
    Setting("*RST"),                                                          # output off, 0 V
    Setting("*LANG?"),                                                        # SCPI, TSP or SCPI2400
    Setting("[SOURce]:FUNCtion[:MODE]", choices=("VOLTage",), state="function"),  # voltage sourcing only
    Setting("[SOURce]:VOLTage:RANGe:AUTO", boolean=True),
    Setting("[SOURce]:VOLTage:ILIMit[:LEVel]", quantity="compliance", state="ilim"),  # A
    Setting("[SOURce]:VOLTage[:LEVel][:IMMediate][:AMPLitude]", quantity="read_voltage",  # V, |level|
            state="level"),
    Setting("SENSe:FUNCtion[:ON]", choices=("CURRent[:DC]",)),                # "CURR"
    Setting("SENSe:CURRent:RANGe:AUTO", boolean=True),
    Setting("SENSe:CURRent:NPLCycles", number=True),                          # power-line cycles
    Setting("OUTPut[:STATe]", boolean=True, state="output"),
    Setting("READ?"),                                                         # one reading (A)
)


class Smu(ScpiInstrument):
    """A 2450-class SMU on a VISA resource, held to a station's limits."""

    expected_model = "2450"
    commands = COMMANDS

    def __init__(self, resource: str, limits: StationLimits, *, name: str = "smu", **kwargs: object) -> None:
        super().__init__(resource, name=name, limits=limits, **kwargs)  # type: ignore[arg-type]
        self.limits: StationLimits = limits
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

    # -- the interlock ---------------------------------------------------------------------------

    def _interlock(self, cmd: Command, sent: Mapping[str, object]) -> None:
        if cmd.query or not any(s.state == "output" and s.matches(cmd) for s in self.commands):
            return
        if not (cmd.args and cmd.args[0].upper() in ("ON", "1")):
            return
        needed = (("function", ":SOUR:FUNC VOLT"), ("ilim", "a checked :SOUR:VOLT:ILIM"),
                  ("level", "a checked :SOUR:VOLT:LEV"))
        missing = [what for key, what in needed if sent.get(key) is None]
        if sent.get("function") not in (None, "VOLT"):
            missing.append(":SOUR:FUNC VOLT")
        if sent.get("checked") is not True:
            missing.append("an empty error queue after the last setting (set() or check_errors())")
        if missing:
            raise CommandRefused(cmd.text, f"the source is not configured this session (missing: "
                                 f"{', '.join(missing)})", resource=self.resource_name,
                                 allowed="configure_read() first")

    def _record(self, cmd: Command, sent: dict[str, object]) -> None:
        super()._record(cmd, sent)
        if cmd.query:
            return
        if _RST.matches(cmd):  # factory settings: output off, the rest as the unit defines it
            sent.clear()
            sent["output"] = False
        if not any(s.state == "output" and s.matches(cmd) for s in self.commands):
            sent["checked"] = False  # the unit may refuse it (keeping its old value)

    def _on_errors_checked(self) -> None:
        self.sent["checked"] = True

    def _on_instrument_error(self) -> None:
        output = self.sent.get("output")
        self.sent = {"output": output} if output is False else {}

    def output(self, on: bool) -> None:
        """Switch the source output on or off (on needs :meth:`configure_read` this session,
        else :class:`~drivers.limits.CommandRefused` and nothing is sent)."""
        with self._lock:
            self.set(":OUTP ON" if on else ":OUTP OFF")

    def safe_state(self) -> None:
        """Output off, source level 0 V, and ``:OUTP?`` must answer 0; call it on every exit.

        Works on a driver whose link dropped (it reconnects). Raises
        :class:`~drivers.scpi.InstrumentError` if the output is not confirmed off, or if the
        instrument reported errors (raised after the output is confirmed off).
        """
        with self._lock:
            try:
                self._safe_state_once()
            except PulseUncertainError:  # the SMU has no trigger in its set; never, but be safe
                self._safe_state_once()
            self.voltage = 0.0
            self.check_errors()

    def _safe_state_once(self) -> None:
        self.switch_off((":OUTP OFF", ":SOUR:VOLT:LEV 0"), confirm=":OUTP?")

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
