"""Send-time checks of a station's hard limits (:class:`protocols.station.StationLimits`).

Guarantees (every driver calls these as the last step before a value goes on the wire):

- :func:`check` compares quantities exactly with the limits (float64, no tolerance): a value
  one ulp beyond a limit is refused, a value exactly at it passes. Not a finite number (or a
  burst count that is not a whole number) is refused too.
- :func:`check_text` does the same for a number written as SCPI text, parsed as the instrument
  parses it (:func:`protocols.scpi.parse_number`, float64), and also compares the text's exact
  decimal value with the limit's shortest decimal form, so a text with more digits than float64
  holds (``1.0000000000000001e-3`` against 1e-3) cannot slip past by rounding. Keywords
  (``MIN``, ``MAX``, ``DEF``, ``INF``, ``NAN``) are refused for a limited quantity.
- :func:`float32_within` rounds a value that passed :func:`check` to the float32 the board's
  wire carries, towards safety: the nearest float32 if it lies within the bounds, else the
  neighbouring float32 on the inner side (1e-3 s becomes 0.00099999993 s, not 0.0010000000475 s).
- A refusal raises :class:`LimitError` (a quantity beyond a limit) or :class:`CommandRefused` (a
  command a driver never sends: not in its command set, an argument it does not allow, or a
  setting its interlock forbids now); both name what was refused and what is allowed, and the
  driver sends nothing of that operation.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation
from numbers import Real

import numpy as np

from hilctl.errors import HilctlError
from protocols.scpi import ScpiParseError, parse_number
from protocols.station import QUANTITY_NAMES, StationLimits

__all__ = ["CommandRefused", "LimitError", "bounds", "check", "check_text", "float32_within"]


class LimitError(HilctlError, ValueError):
    """A setting beyond the station's hard limits; nothing was sent.

    ``quantity`` names it with its unit, ``value`` is what was asked, ``limit`` what is allowed,
    ``where`` the instrument and command when a driver refused a command it was about to send.
    """

    def __init__(self, quantity: str, value: object, limit: str, *, where: str = "") -> None:
        prefix = f"{where}: " if where else ""
        super().__init__(f"{prefix}{quantity} = {value!r} is beyond the station limit ({limit}); "
                         "nothing was sent")
        self.quantity = quantity
        self.value = value
        self.limit = limit
        self.where = where


class CommandRefused(HilctlError, ValueError):
    """A command a driver will not send (not in its command set, a disallowed argument, or a
    setting its interlock forbids in the current state); nothing was sent.

    ``command`` is the refused text, ``resource`` the instrument, ``allowed`` what would be.
    """

    def __init__(self, command: str, reason: str, *, resource: str, allowed: str = "") -> None:
        tail = f"; allowed: {allowed}" if allowed else ""
        super().__init__(f"{resource}: command {command!r} refused: {reason}{tail}; nothing was sent")
        self.command = command
        self.resource = resource
        self.reason = reason
        self.allowed = allowed


def check(limits: StationLimits, **quantities: float | int | None) -> None:
    """Raise :class:`LimitError` for the first given quantity beyond ``limits``.

    Keywords are the quantities of :meth:`StationLimits.violation` (``amplitude``, ``width``,
    ``read_voltage``, ``compliance``, ``count``); None means not sent. A burst count must be a
    whole number, every other quantity a finite number. The comparison is exact (float64).
    """
    for quantity, value in quantities.items():
        if value is None:
            continue
        name = QUANTITY_NAMES[quantity]
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
            raise LimitError(name, value, "a whole number" if quantity == "count" else "a finite number")
        if quantity == "count" and value != int(value):
            raise LimitError(name, value, "a whole number")
        limit = limits.violation(quantity, float(value))
        if limit is not None:
            raise LimitError(name, value, limit)


def bounds(limits: StationLimits, quantity: str) -> tuple[float, float]:
    """The closed interval ``(lo, hi)`` a quantity may take (signed levels: ``-max .. max``).

    Compliance is ``(0, max)`` with 0 itself excluded (:meth:`StationLimits.violation`).
    """
    if quantity == "amplitude":
        return -limits.max_pulse_amplitude, limits.max_pulse_amplitude
    if quantity == "width":
        return limits.min_pulse_width, limits.max_pulse_width
    if quantity == "read_voltage":
        return -limits.max_read_voltage, limits.max_read_voltage
    if quantity == "compliance":
        return 0.0, limits.max_compliance
    if quantity == "count":
        return 1.0, float(limits.max_burst_count)
    raise KeyError(f"no station limit for {quantity!r}")


def check_text(limits: StationLimits, quantity: str, text: str) -> float:
    """The value of the SCPI number ``text`` for ``quantity``; :class:`LimitError` if it is not a
    plain finite number within ``limits``, in float64 or in its exact decimal value."""
    name = QUANTITY_NAMES[quantity]
    try:
        value = parse_number(text)
    except ScpiParseError:
        raise LimitError(name, text, "a plain number (NR1, NR2 or NR3); keywords such as MIN, MAX, "
                                     "DEF and INF and unit suffixes are refused for a limited "
                                     "quantity") from None
    if not math.isfinite(value):
        raise LimitError(name, text, "a finite number")
    check(limits, **{quantity: value})
    try:
        exact = Decimal(text.strip())
    except InvalidOperation:  # pragma: no cover - parse_number accepted it, so Decimal does
        raise LimitError(name, text, "a plain number") from None
    lo, hi = bounds(limits, quantity)
    lo_d, hi_d = Decimal(repr(lo)), Decimal(repr(hi))
    inside = (lo_d < exact if quantity == "compliance" else lo_d <= exact) and exact <= hi_d
    if not inside:
        raise LimitError(name, text, f"its exact decimal value must lie within {lo!r} .. {hi!r}")
    return value


def float32_within(value: float, lo: float, hi: float, *, name: str = "value") -> float:
    """The float32 (as a Python float) to send for ``value``, rounded towards safety.

    ``value`` must already lie within ``[lo, hi]`` (checked exactly with :func:`check`). The
    nearest float32 is returned if it lies within too; else its neighbour on the inner side
    (for an upper bound the largest float32 not above ``value``, for a lower bound the smallest
    float32 not below). :class:`LimitError` if no float32 lies within (bounds closer than one
    float32 step).
    """
    x = float(value)
    if not (math.isfinite(x) and lo <= x <= hi):
        raise LimitError(name, value, f"{lo!r} <= value <= {hi!r}")
    with np.errstate(over="ignore"):
        near = np.float32(x)
    if float(near) > hi:
        near = np.nextafter(near, np.float32(-np.inf))
    elif float(near) < lo:
        near = np.nextafter(near, np.float32(np.inf))
    result = float(near)
    if not lo <= result <= hi:
        raise LimitError(name, value, f"a float32 within {lo!r} .. {hi!r} (none lies near the value)")
    return result
