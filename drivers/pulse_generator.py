"""Keysight 33500B-class pulse generator driver: triggered bursts of rectangular pulses.

Guarantees, on top of those of :mod:`drivers.scpi` (every command vetted right before the wire,
triggers never replayed):

- The command set below is all this driver ever sends. Pulse levels (``VOLT:HIGH``,
  ``VOLT:LOW``: the magnitude against ``max_pulse_amplitude``), the pulse width and the burst
  count are checked against the station's :class:`~protocols.station.StationLimits` whoever
  writes them (``configure_pulse``, ``fire`` or a raw ``write``/``set``). Other level, offset
  or amplitude commands (``VOLT``, ``VOLT:OFFS``, ``APPL:...``) are not in the set, the load is
  high-Z only (a 50 Ohm setting would double the open-circuit level on the chip line), and the
  only waveform is ``PULS``.
- Interlock (on every public write): waveform settings change only while the output is off as
  far as this driver knows (``OUTP OFF`` sent since connecting, and not switched on since);
  ``OUTP ON`` and ``*TRG`` are sent only when the generator is armed for a bus-triggered burst
  (``FUNC PULS``, ``OUTP:LOAD INF``, ``BURS:MODE TRIG``, ``BURS:STAT ON``, ``TRIG:SOUR BUS``, a
  checked ``FUNC:PULS:WIDT``, and for ``*TRG`` a checked ``BURS:NCYC``, all sent this session)
  with a 0 V baseline, and the error queue was found empty after the last setting (so the
  instrument took them all: a refused setting keeps its old, unknown value), so the cell never
  sees a continuous waveform, a DC level or a pulse of unchecked width. An error the instrument
  reports forgets what was armed (reconfigure).
- :meth:`PulseGenerator.safe_state` switches the output off, the burst off and the trigger to
  immediate, and confirms ``OUTP?`` = 0 (also right after a lost link: it reconnects).

``configure_pulse`` sets the pulse function into high-Z (the chip line is not a 50 Ohm load),
period, width, edges and levels, and arms a bus-triggered burst; ``fire(n)`` sets the burst count
to ``n``, sends ``*TRG`` and waits for ``*OPC?``.

Levels and polarity. The output idles at the *baseline* and each pulse goes to the other level.
A positive pulse is ``OUTP:POL NORM; VOLT:HIGH A; VOLT:LOW 0`` (idles at LOW = 0 V); a negative
pulse is ``OUTP:POL INV; VOLT:LOW -A; VOLT:HIGH 0`` (inverted output idles at HIGH = 0 V). The
order of the two level commands keeps HIGH > LOW at every step, and the output is switched off
while the generator is reconfigured, so the cell never sees a stray DC level.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from drivers.limits import CommandRefused, LimitError, check
from drivers.scpi import COMMON_COMMANDS, InstrumentError, PulseUncertainError, ScpiInstrument, Setting
from protocols.scpi import Command, format_command
from protocols.station import StationLimits

__all__ = ["COMMANDS", "MIN_AMPLITUDE", "PulseGenerator"]

MIN_AMPLITUDE = 2e-3  # V into high-Z: the 33500B's smallest amplitude (1 mVpp into 50 Ohm)

#: Everything the driver sends (33500B manual names); ``state`` keys feed the interlock.
COMMANDS: tuple[Setting, ...] = (
    *COMMON_COMMANDS,
    Setting("OUTPut[:STATe]", boolean=True, state="output"),                  # output relay
    Setting("OUTPut:LOAD", choices=("INFinity",), state="load"),             # high-Z only
    Setting("OUTPut:POLarity", choices=("NORMal", "INVerted"), state="polarity"),
    Setting("FUNCtion", choices=("PULSe",), state="function"),               # pulses only
    Setting("FUNCtion:PULSe:PERiod", number=True),                           # s, repetition in a burst
    Setting("FUNCtion:PULSe:WIDTh", quantity="width", state="width"),        # s
    Setting("FUNCtion:PULSe:TRANsition[:BOTH]", number=True),                # s, both edges
    Setting("VOLTage:HIGH", quantity="amplitude", state="high"),             # V, |level| limited
    Setting("VOLTage:LOW", quantity="amplitude", state="low"),               # V, |level| limited
    Setting("BURSt:MODE", choices=("TRIGgered",), state="burst_mode"),
    Setting("BURSt:NCYCles", quantity="count", state="ncycles"),             # pulses per burst
    Setting("BURSt:STATe", boolean=True, state="burst"),
    Setting("TRIGger[:SEQuence]:SOURce", choices=("BUS", "IMMediate"), state="trigger_source"),
    Setting("*TRG", trigger=True),                                           # play one burst
)

#: What ``OUTP ON`` and ``*TRG`` need (besides a 0 V baseline; ``*TRG`` also a sent burst count).
_ARMED = {"function": "PULS", "load": "INF", "burst_mode": "TRIG", "burst": True, "trigger_source": "BUS"}
#: Settings the interlock lets through while the output may be on.
_WHILE_ON = ("ncycles",)


class PulseGenerator(ScpiInstrument):
    """A 33500B-class generator on a VISA resource, held to a station's limits."""

    expected_model = "335"  # 33509B .. 33522B (and the 33600A family, "336", via expected_model=)
    commands = COMMANDS

    def __init__(self, resource: str, limits: StationLimits, *, name: str = "pulse_generator",
                 **kwargs: object) -> None:
        super().__init__(resource, name=name, limits=limits, **kwargs)  # type: ignore[arg-type]
        self.limits: StationLimits = limits
        self.output_on = False
        self.amplitude: float | None = None
        self.width: float | None = None
        self.period: float | None = None
        self._ncycles: int | None = None

    def connect(self) -> str:
        """Connect (see :meth:`ScpiInstrument.connect`); the generator counts as unconfigured
        with its output possibly on until :meth:`configure_pulse` or :meth:`safe_state`."""
        with self._lock:
            self.output_on = False
            self.amplitude = self.width = self.period = None
            self._ncycles = None
            return super().connect()

    def configure_pulse(self, amplitude: float, width: float, *, edge: float = 10e-9,
                        period: float | None = None) -> None:
        """Arm a bus-triggered burst of ``amplitude`` (V, signed) pulses of ``width`` (s).

        ``edge`` is the rise and fall time (s); ``period`` the pulse repetition period within a
        burst, by default ``max(2 * width + 2 * edge, 1 us)``. The output state is restored.
        """
        check(self.limits, amplitude=amplitude, width=width)
        if abs(amplitude) < MIN_AMPLITUDE:
            raise LimitError("pulse amplitude (V)", amplitude, f"|amplitude| >= {MIN_AMPLITUDE} (instrument)")
        if not (math.isfinite(edge) and edge > 0):
            raise LimitError("edge time (s)", edge, "a positive number")
        if period is None:
            period = max(2 * width + 2 * edge, 1e-6)
        if not (math.isfinite(period) and period > width + edge):
            raise LimitError("pulse period (s)", period, f"> width + edge = {width + edge}")
        if amplitude >= 0:
            levels = [format_command("OUTP:POL", "NORM"), format_command("VOLT:HIGH", amplitude),
                      format_command("VOLT:LOW", 0)]
        else:
            levels = [format_command("OUTP:POL", "INV"), format_command("VOLT:LOW", amplitude),
                      format_command("VOLT:HIGH", 0)]
        restore = self.output_on
        commands = [
            "OUTP OFF",
            "FUNC PULS",
            "OUTP:LOAD INF",
            format_command("FUNC:PULS:PER", period),
            format_command("FUNC:PULS:WIDT", width),
            format_command("FUNC:PULS:TRAN:BOTH", edge),
            *levels,
            "BURS:MODE TRIG",
            "TRIG:SOUR BUS",
            "BURS:STAT ON",
        ]
        with self._lock:
            self.output_on = False
            self.set(*commands)
            self.amplitude, self.width, self.period = float(amplitude), float(width), float(period)
            if restore:
                self.output(True)

    def output(self, on: bool) -> None:
        """Switch the output on or off (a triggered burst idles at the 0 V baseline).

        Switching on needs an armed generator (:meth:`configure_pulse`); else
        :class:`~drivers.limits.CommandRefused` and nothing is sent.
        """
        with self._lock:
            self.set("OUTP ON" if on else "OUTP OFF")
            self.output_on = bool(on)

    def fire(self, count: int) -> None:
        """Play a burst of ``count`` pulses and wait until it is done.

        Raises :class:`~drivers.scpi.PulseUncertainError` if the link fails after the trigger
        (the burst is never re-sent automatically).
        """
        check(self.limits, count=count)
        count = int(count)
        with self._lock:
            if self.period is None:
                raise InstrumentError("fire() before configure_pulse()", resource=self.resource_name,
                                      command="*TRG")
            if not self.output_on:
                raise InstrumentError("fire() with the output off", resource=self.resource_name,
                                      command="*TRG")
            if count != self._ncycles or self.sent.get("ncycles") != count:
                self.set(format_command("BURS:NCYC", count))
                self._ncycles = count
            burst_ms = count * self.period * 1e3
            self.write("*TRG")
            self.query("*OPC?", timeout_ms=int(self.timeout_ms + 1.5 * burst_ms))

    def safe_state(self) -> None:
        """Output off, burst off, trigger source immediate (a bus trigger is disarmed), and
        ``OUTP?`` must answer 0; call it on every exit.

        Works on a driver whose link dropped (it reconnects). Raises
        :class:`~drivers.scpi.InstrumentError` if the output is not confirmed off, or if the
        instrument reported errors (raised after the output is confirmed off). If the link
        had failed with a trigger unconfirmed, the safe state is still reached and the
        :class:`~drivers.scpi.PulseUncertainError` is raised afterwards.
        """
        with self._lock:
            uncertain: PulseUncertainError | None = None
            try:
                self._safe_state_once()
            except PulseUncertainError as exc:  # reconnected, trigger dropped: again on the new link
                self.log.warning("%s: %s; repeating the safe state", self.resource_name, exc)
                uncertain = exc
                self._safe_state_once()
            self.check_errors()
            if uncertain is not None:
                raise uncertain

    def _safe_state_once(self) -> None:
        self.output_on = False
        self.switch_off(("OUTP OFF", "BURS:STAT OFF", "TRIG:SOUR IMM"), confirm="OUTP?")

    # -- the interlock ---------------------------------------------------------------------------

    def _interlock(self, cmd: Command, sent: Mapping[str, object]) -> None:
        if cmd.query:
            return
        states = [s.state for s in self.commands if s.matches(cmd)]
        if any(s.trigger and s.matches(cmd) for s in self.commands):
            self._require_armed(cmd, sent, trigger=True)
            return
        if "output" in states:
            if self._arg_bool(cmd):
                self._require_armed(cmd, sent, trigger=False)
            return
        if not states or all(state in _WHILE_ON for state in states):
            return  # BURS:NCYC (checked against the limits), commands without state
        if sent.get("output") is not False:
            raise CommandRefused(cmd.text, "the output may be on (the driver has not switched it "
                                 "off since connecting); waveform settings change only with the "
                                 "output off", resource=self.resource_name, allowed="OUTP OFF first")

    def _require_armed(self, cmd: Command, sent: Mapping[str, object], *, trigger: bool) -> None:
        missing = [f"{k}={v}" for k, v in _ARMED.items() if sent.get(k) != v]
        if sent.get("width") is None:
            missing.append("a checked FUNC:PULS:WIDT")
        if trigger and sent.get("ncycles") is None:
            missing.append("a checked BURS:NCYC")
        polarity, high, low = sent.get("polarity"), sent.get("high"), sent.get("low")
        baseline = low if polarity == "NORM" else high if polarity == "INV" else None
        if baseline != 0.0 or not (isinstance(high, float) and isinstance(low, float) and high > low):
            missing.append("a 0 V baseline (OUTP:POL NORM with VOLT:LOW 0, or INV with VOLT:HIGH 0)")
        if sent.get("checked") is not True:
            missing.append("an empty error queue after the last setting (set() or check_errors())")
        if missing:
            raise CommandRefused(cmd.text, "the generator is not armed for a bus-triggered burst of "
                                 f"checked pulses (missing: {', '.join(missing)})",
                                 resource=self.resource_name, allowed="configure_pulse() first")

    def _record(self, cmd: Command, sent: dict[str, object]) -> None:
        super()._record(cmd, sent)
        if not cmd.query and not any((s.state == "output" or s.trigger) and s.matches(cmd)
                                     for s in self.commands):
            sent["checked"] = False  # the instrument may refuse it (keeping its old value): armed
            # only after the error queue was found empty

    def _on_errors_checked(self) -> None:
        self.sent["checked"] = True

    @staticmethod
    def _arg_bool(cmd: Command) -> bool:
        return bool(cmd.args) and cmd.args[0].upper() in ("ON", "1")

    def _on_instrument_error(self) -> None:
        # A refused setting keeps its old value on the instrument: forget what was armed.
        output = self.sent.get("output")
        self.sent = {"output": output} if output is False else {}

    def _reopen(self) -> None:
        self._ncycles = None  # the instrument may have been reset; send the count again
        super()._reopen()
