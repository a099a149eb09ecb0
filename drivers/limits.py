"""Send-time checks of a station's hard limits (:class:`protocols.station.StationLimits`).

Drivers call :func:`check` with every quantity they are about to send; a value outside the
limits (or not a finite number) raises :class:`LimitError` naming the quantity, the value and
the limit, and the driver sends nothing of that operation.
"""

from __future__ import annotations

import math
from numbers import Real

from hilctl.errors import HilctlError
from protocols.station import QUANTITY_NAMES, StationLimits

__all__ = ["LimitError", "check"]


class LimitError(HilctlError, ValueError):
    """A setting beyond the station's hard limits; nothing was sent."""

    def __init__(self, quantity: str, value: object, limit: str) -> None:
        super().__init__(f"{quantity} = {value!r} is beyond the station limit ({limit}); nothing was sent")
        self.quantity = quantity
        self.value = value
        self.limit = limit


def check(limits: StationLimits, **quantities: float | int | None) -> None:
    """Raise :class:`LimitError` for the first given quantity beyond ``limits``.

    Keywords are the quantities of :meth:`StationLimits.violation` (``amplitude``, ``width``,
    ``read_voltage``, ``compliance``, ``count``); None means not sent. A burst count must be a
    whole number, every other quantity a finite number.
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
