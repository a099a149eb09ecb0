"""Hard safety limits of a station, checked before any byte goes to an instrument.

A station file's ``[limits]`` table becomes a :class:`StationLimits`. Drivers call
:meth:`StationLimits.check` with every quantity they are about to send; a value outside the
limits (or not a finite number) raises :class:`LimitError` naming the quantity, the value and
the limit, and the driver sends nothing of that operation.
"""

from __future__ import annotations

import math
from numbers import Real

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hilctl.errors import HilctlError

__all__ = ["LimitError", "StationLimits", "check"]


class LimitError(HilctlError, ValueError):
    """A setting beyond the station's hard limits; nothing was sent."""

    def __init__(self, quantity: str, value: object, limit: str) -> None:
        super().__init__(f"{quantity} = {value!r} is beyond the station limit ({limit}); nothing was sent")
        self.quantity = quantity
        self.value = value
        self.limit = limit


class StationLimits(BaseModel):
    """Hard limits of one bench (chip and wiring), independent of what the instruments can do."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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

    def check(self, *, amplitude: float | None = None, width: float | None = None,
              read_voltage: float | None = None, compliance: float | None = None,
              count: int | None = None) -> None:
        """Raise :class:`LimitError` for the first given quantity beyond the limits."""
        if amplitude is not None:
            _finite("pulse amplitude (V)", amplitude)
            if abs(amplitude) > self.max_pulse_amplitude:
                raise LimitError("pulse amplitude (V)", amplitude,
                                 f"|amplitude| <= {self.max_pulse_amplitude}")
        if width is not None:
            _finite("pulse width (s)", width)
            if not self.min_pulse_width <= width <= self.max_pulse_width:
                raise LimitError("pulse width (s)", width,
                                 f"{self.min_pulse_width} <= width <= {self.max_pulse_width}")
        if read_voltage is not None:
            _finite("read voltage (V)", read_voltage)
            if abs(read_voltage) > self.max_read_voltage:
                raise LimitError("read voltage (V)", read_voltage, f"|voltage| <= {self.max_read_voltage}")
        if compliance is not None:
            _finite("compliance (A)", compliance)
            if not 0 < compliance <= self.max_compliance:
                raise LimitError("compliance (A)", compliance, f"0 < compliance <= {self.max_compliance}")
        if count is not None:
            if (isinstance(count, bool) or not isinstance(count, Real) or not math.isfinite(float(count))
                    or count != int(count)):
                raise LimitError("burst count", count, "a whole number")
            if not 1 <= count <= self.max_burst_count:
                raise LimitError("burst count", count, f"1 <= count <= {self.max_burst_count}")


def _finite(quantity: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise LimitError(quantity, value, "a finite number")


def check(limits: StationLimits, **quantities: float | int | None) -> None:
    """``check(limits, amplitude=1.5, width=1e-6)``: :meth:`StationLimits.check` as a function."""
    limits.check(**quantities)  # type: ignore[arg-type]
