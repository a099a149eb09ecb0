"""Keysight 33500B-class pulse generator driver: triggered bursts of rectangular pulses.

``configure_pulse`` sets the pulse function into high-Z (the chip line is not a 50 Ohm load),
period, width, edges and levels, and arms a bus-triggered burst; ``fire(n)`` sets the burst count
to ``n``, sends ``*TRG`` and waits for ``*OPC?``. Every quantity is checked against the
station's :class:`~protocols.station.StationLimits` before the first byte of the operation is sent.

Levels and polarity. The output idles at the *baseline* and each pulse goes to the other level.
A positive pulse is ``OUTP:POL NORM; VOLT:HIGH A; VOLT:LOW 0`` (idles at LOW = 0 V); a negative
pulse is ``OUTP:POL INV; VOLT:LOW -A; VOLT:HIGH 0`` (inverted output idles at HIGH = 0 V). The
order of the two level commands keeps HIGH > LOW at every step, and the output is switched off
while the generator is reconfigured, so the cell never sees a stray DC level.
"""

from __future__ import annotations

import math

from drivers.limits import LimitError, check
from drivers.scpi import InstrumentError, ScpiInstrument
from protocols.scpi import format_command
from protocols.station import StationLimits

__all__ = ["MIN_AMPLITUDE", "PulseGenerator"]

MIN_AMPLITUDE = 2e-3  # V into high-Z: the 33500B's smallest amplitude (1 mVpp into 50 Ohm)


class PulseGenerator(ScpiInstrument):
    """A 33500B-class generator on a VISA resource, held to a station's limits."""

    expected_model = "335"  # 33509B .. 33522B (and the 33600A family, "336", via expected_model=)

    def __init__(self, resource: str, limits: StationLimits, *, name: str = "pulse_generator",
                 **kwargs: object) -> None:
        super().__init__(resource, name=name, **kwargs)  # type: ignore[arg-type]
        self.limits = limits
        self.output_on = False
        self.amplitude: float | None = None
        self.width: float | None = None
        self.period: float | None = None
        self._ncycles: int | None = None

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
        """Switch the output on or off (a triggered burst idles at the 0 V baseline)."""
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
            if count != self._ncycles:
                self.set(format_command("BURS:NCYC", count))
                self._ncycles = count
            burst_ms = count * self.period * 1e3
            self.write("*TRG")
            self.query("*OPC?", timeout_ms=int(self.timeout_ms + 1.5 * burst_ms))

    def _reopen(self) -> None:
        self._ncycles = None  # the instrument may have been reset; send the count again
        super()._reopen()
