"""The simulated board's analog matrix-vector product: conductances, voltages and settings in,
currents out (a pure function; :meth:`EmulatedChip.mvm` feeds it the chip's conductances).

One product drives ``n_d`` lines with voltages ``V[d]`` (V), holds ``n_s`` sensed lines at
virtual ground and returns the current each sensed line collects (A). In order:

1. Cell currents ``I0[d, s] = G[d, s] V[d]``, ``G`` in siemens.
2. IR drop (``wire_resistance`` r > 0, ohms per wire segment between neighbouring cells): to
   first order, the ideal currents flow through the wires and drop voltage on them. A driven
   line is driven from its low-index end, a sensed line is sensed at its low-index end, and the
   cell at chip position ``p`` on a line is ``p + 1`` segments from that end. A segment carries
   every cell current beyond it, so the driven line's voltage at sensed line ``s`` has dropped by
   ``r * sum_s' I0[d, s'] * (min(p_s, p_s') + 1)`` and the sensed line's voltage at driven line
   ``d`` has risen by ``r * sum_d' I0[d', s] * (min(q_d, q_d') + 1)`` (``p``, ``q``: the chip
   indices of the sensed and driven lines). Each cell then carries ``G[d, s]`` times its own
   voltage, ``V[d]`` less both. Lines in neither set float and carry nothing. One step of the
   fixed-point iteration: accurate while the drops are small against ``V`` (``r G n^2 << 1``).
3. Sum on each sensed line: ``I[s] = sum_d I_cell[d, s]``.
4. Read noise: the sense amplifier's white noise averaged over the integration time,
   ``N(0, sigma^2)`` with ``sigma = read_noise * sqrt(noise_time / integration_time)``: the
   chip's ``read_noise`` at ``noise_time``, halved by four times longer integration. It does not
   grow with the number of driven lines (the amplifier's noise, not the cells').
5. ADC: clipped to ``[-adc_range, adc_range]`` (saturation), then rounded to the nearest of the
   levels ``k * step``, ``step = adc_range / 2**(adc_bits - 1)``, so ``+-adc_range`` are levels.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from protocols.schema import StrictModel

__all__ = ["MvmSettings", "adc", "analog_mvm", "ir_drop_currents"]

Array = NDArray[np.float64]


class MvmSettings(StrictModel):
    """The analog periphery of the simulated board's MVM (a simulated station's ``[mvm]``)."""

    adc_bits: int = Field(12, ge=2, le=24, description="ADC resolution (bits, sign included)")
    wire_resistance: float = Field(0.0, ge=0, le=1e3, description="wire resistance per segment "
                                   "between neighbouring cells (ohm); 0: no IR drop")
    noise_time: float = Field(1e-6, gt=0, le=1, description="integration time (s) at which a "
                              "sensed line's read noise has the chip's read_noise std")


def _segments(positions: NDArray[np.intp]) -> Array:
    """``min(p_a, p_b) + 1``: the wire segments two cells at chip positions ``p`` share."""
    p = np.asarray(positions, dtype=np.float64)
    return np.minimum.outer(p, p) + 1.0


def ir_drop_currents(conductance: Array, voltages: Array, resistance: float,
                     driven_positions: NDArray[np.intp], sensed_positions: NDArray[np.intp]) -> Array:
    """Cell currents ``(batch, n_d, n_s)`` (A) with the first-order IR drop of the module
    docstring (step 2); ``resistance = 0`` gives ``G V`` exactly."""
    ideal = conductance[None, :, :] * voltages[:, :, None]
    if resistance == 0:
        return ideal
    drive_drop = ideal @ _segments(sensed_positions)  # (batch, d, s): sum over s'
    sense_rise = np.einsum("de,bes->bds", _segments(driven_positions), ideal)  # sum over d'
    return conductance[None, :, :] * (voltages[:, :, None] - resistance * (drive_drop + sense_rise))


def adc(currents: Array, adc_range: float, bits: int) -> Array:
    """Saturation at ``+-adc_range`` (A), then the nearest of the ``adc_range / 2**(bits-1)``
    levels."""
    step = adc_range / 2 ** (bits - 1)
    return np.rint(np.clip(currents, -adc_range, adc_range) / step) * step


def analog_mvm(conductance: Array, voltages: Array, *, integration_time: float, adc_range: float,
               read_noise: float, settings: MvmSettings, rng: np.random.Generator,
               driven_positions: NDArray[np.intp], sensed_positions: NDArray[np.intp]) -> Array:
    """The sensed currents ``(batch, n_s)`` (A) of ``voltages`` ``(batch, n_d)`` (V) applied to
    ``conductance`` ``(n_d, n_s)`` (S), steps 1-5 of the module docstring.

    ``driven_positions`` and ``sensed_positions`` are the lines' chip indices (for the IR drop);
    ``rng`` draws the read noise.
    """
    cells = ir_drop_currents(conductance, voltages, settings.wire_resistance, driven_positions,
                             sensed_positions)
    sensed = cells.sum(axis=1)
    sigma = read_noise * np.sqrt(settings.noise_time / integration_time)
    noisy = sensed + sigma * rng.standard_normal(sensed.shape)
    return adc(noisy, adc_range, settings.adc_bits)
