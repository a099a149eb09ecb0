"""Half-select disturb: which cells a write pulse half-selects, at what voltage, and how they move.

A pulse of ``polarity * amplitude`` volts drives some rows to ``V`` and some columns to 0 (a
cell pulse: one row and one column; a mask pulse: every masked row and column). Each cell sees
its row's voltage minus its column's; the bias scheme sets the lines the pulse does not drive:

============  =========================  ===========================  =====================
scheme        driven row, other column   other row, driven column     other row, other col
============  =========================  ===========================  =====================
``v/2``       ``+V/2``                   ``+V/2``                     0
``v/3``       ``+V/3``                   ``+V/3``                     ``-V/3``
``float``     ``+f V``                   ``+f V``                     0 (neglected)
============  =========================  ===========================  =====================

(``v/3``: other rows at ``V/3``, other columns at ``2V/3``. ``float``: the other lines float and
``f`` is the station's ``float_fraction``: an ``R x C`` array of equal linear conductances
puts a single cell's half-selected neighbours at ``(R-1)/(R+C-1)`` of ``V`` on its row and
``(C-1)/(R+C-1)`` on its column, about 1/2 for a square array, and every other cell at
``-V/(R+C-1)``, which is neglected.) Cells at a crossing of a driven row and a driven column
see the full ``V``. The derivation is in ``docs/emulator.md``, section 9.

A cell that sees ``|v| >= set_threshold`` takes one device pulse of ``sign(v)`` per pulse, as the
target does. A sub-threshold cell takes each pulse, independently, as one device pulse of
``sign(v)`` with probability ``p(v) = rate * (|v| / set_threshold) ** exponent``: sub-threshold
switching is a rare stochastic event whose odds rise steeply with the voltage (switching time
falls exponentially with it, which the power law follows near the threshold with
``exponent ~ set_threshold / V0``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from protocols.board import Bias
from protocols.schema import StrictModel

__all__ = ["BIAS_SCHEMES", "DisturbSettings", "disturb_counts", "line_fractions"]

#: The bias schemes of the unselected lines, as the board's ``Select`` names them.
BIAS_SCHEMES = tuple(scheme.value for scheme in Bias)


class DisturbSettings(StrictModel):
    """Half-select disturb of the emulated chip (a simulated station file's ``[disturb]``).
    ``rate = 0`` (the default) turns the model off: half-selected cells never move."""

    rate: float = Field(0.0, ge=0, le=1, description="probability that a half-selected cell at "
                        "the set threshold takes a pulse as one device pulse (0: off)")
    exponent: float = Field(8.0, gt=0, le=100,
                            description="steepness k of p = rate * (|v|/set_threshold)^k")
    float_fraction: float = Field(0.5, ge=0, le=1, description="share of the pulse voltage a "
                                  "half-selected cell sees when the unselected lines float")

    @property
    def enabled(self) -> bool:
        return self.rate > 0


def line_fractions(shape: tuple[int, int], rows: NDArray[np.intp], cols: NDArray[np.intp],
                   bias: str, float_fraction: float = 0.5) -> NDArray[np.float64]:
    """The voltage every cell sees, as a signed share of the pulse voltage, when ``rows`` and
    ``cols`` are driven (1 at their crossings) and the other lines are biased by ``bias``."""
    if bias not in BIAS_SCHEMES:
        raise ValueError(f"bias must be one of {', '.join(BIAS_SCHEMES)}; got {bias!r}")
    driven_row = np.zeros(shape[0], dtype=bool)
    driven_col = np.zeros(shape[1], dtype=bool)
    driven_row[rows] = True
    driven_col[cols] = True
    on_row, on_col = np.meshgrid(driven_row, driven_col, indexing="ij")
    half = {Bias.V_HALF: 0.5, Bias.V_THIRD: 1.0 / 3.0, Bias.FLOAT: float_fraction}[Bias(bias)]
    rest = -1.0 / 3.0 if bias == Bias.V_THIRD else 0.0
    fractions = np.where(on_row | on_col, half, rest)
    fractions[on_row & on_col] = 1.0
    return fractions


def disturb_counts(fractions: NDArray[np.float64], targets: NDArray[np.bool_], polarity: int,
                   count: int, amplitude: float, set_threshold: float, settings: DisturbSettings,
                   rng: np.random.Generator) -> NDArray[np.int64]:
    """Signed device pulses each non-target cell takes from ``count`` pulses of
    ``polarity * amplitude`` volts: ``count`` at ``|v| >= set_threshold``, else
    ``Binomial(count, p(v))``; 0 on the targets."""
    volts = polarity * amplitude * fractions
    magnitude = np.abs(volts)
    p = np.where(magnitude >= set_threshold, 1.0,
                 settings.rate * (magnitude / set_threshold) ** settings.exponent)
    p[targets] = 0.0
    moved = rng.binomial(count, p)
    return (np.sign(volts) * moved).astype(np.int64)
