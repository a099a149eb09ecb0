"""A device model's parameters from per-cell estimates: the means, the device-to-device spreads
and the cycle-to-cycle noise, each with its standard error.

The emulator draws each cell's parameters around the model's means (docs/emulator.md, section
2.3); this module inverts those draws:

- bounds: ``b_max = w_max (1 + w_max_dtod xi)``, so ``w_max`` is the centre of the cells' upper
  bounds and ``w_max_dtod`` their spread relative to it (likewise ``w_min``);
- steps: ``dw_up = dw_min (gain + r + up_bias)``, ``dw_down = dw_min (gain - r + down_bias)``
  with ``gain = 1 + dw_min_dtod xi`` and ``r = up_down_dtod xi'``. So the half difference
  ``(dw_up - dw_down) / 2 = dw_min (r + up_down / 2)`` gives ``up_down`` and ``up_down_dtod``,
  and the mean ``(dw_up + dw_down) / 2 = dw_min (gain - |up_down| / 2)`` gives ``dw_min`` and
  ``dw_min_dtod``. pow-step's exponents are drawn the same way around ``pow_gamma``.

Centres are medians (consistent for the normal draws, and not thrown by the few cells a short
sweep leaves poorly determined). Each cell's estimate carries its own estimation noise, so a
spread is the maximum-likelihood spread of estimates that are the cells' values plus noise of
each cell's own standard error (:func:`spread`), over the cells within a few MADs of the
median: a noisy measurement does not read as device-to-device variation.

Cycle-to-cycle noise: a step's residual ``e = step - expected`` has variance
``dw_min_std^2 expected^2 + 2 sigma_read^2`` where readings carry noise ``sigma_read``, and
consecutive residuals share a reading, which separates the two (:func:`noise`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hilctl.fitting.cells import CellFit
from hilctl.fitting.data import PulseData

Array = NDArray[np.float64]

#: Scale of the median absolute deviation to the standard deviation of a normal distribution.
MAD_TO_STD = 1.4826
#: Standard error of a median over that of a mean, for normal samples (sqrt(pi / 2)).
MEDIAN_EFFICIENCY = math.sqrt(math.pi / 2)
#: A spread leaves out the cells this many scaled MADs from the median (poorly determined by a
#: short sweep); a normal draw lies beyond 5 standard deviations once in 1.7 million.
OUTLIER_MADS = 5.0


@dataclass(frozen=True)
class Estimate:
    """A value and its standard error (``error`` is None where it cannot be given)."""

    value: float
    error: float | None


def centre(values: Array) -> Estimate:
    """The median of the cells' estimates, and its standard error."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Estimate(float("nan"), None)
    median = float(np.median(values))
    scale = MAD_TO_STD * float(np.median(np.abs(values - median)))
    return Estimate(median, MEDIAN_EFFICIENCY * scale / math.sqrt(values.size))


def spread(values: Array, errors: Array) -> Estimate:
    """The device-to-device standard deviation of the cells' estimates, with their estimation
    noise (``errors``, per cell) taken off, and its standard error.

    Each estimate is its cell's value plus noise of its own size, so the estimates are normal
    with variance ``spread^2 + error_i^2``: the spread is the maximum-likelihood solution of
    that model (the random-effects estimate of meta-analysis), over the cells within
    ``OUTLIER_MADS`` scaled MADs of the median. Taking a typical squared error off the squared
    MAD instead read pow-step's ``up_down_dtod`` 16% high where the errors are as large as the
    spread: the MAD of such a mixture is not the root of the summed variances.
    """
    keep = np.isfinite(values) & np.isfinite(errors)
    values, errors = values[keep], errors[keep]
    if values.size < 2:
        return Estimate(0.0, None)
    median = float(np.median(values))
    scale = MAD_TO_STD * float(np.median(np.abs(values - median)))
    inside = np.abs(values - median) <= OUTLIER_MADS * scale
    values, noise = values[inside], errors[inside] ** 2
    variance = max(scale**2 - float(np.median(noise)), 0.0)
    for _ in range(100):  # the likelihood's fixed point: a few steps from the MAD's start
        weight = 1 / np.maximum(variance + noise, np.finfo(float).tiny)
        centre = float(np.sum(weight * values) / np.sum(weight))
        updated = max(float(np.sum(weight**2 * ((values - centre) ** 2 - noise))
                            / np.sum(weight**2)), 0.0)
        converged = abs(updated - variance) <= 1e-9 * (variance + float(np.median(noise)))
        variance = updated
        if converged:
            break
    # Standard error of a variance estimated from n normal samples: sqrt(2 / n) of it (with
    # the noise the samples carry).
    error_variance = (variance + float(np.median(noise))) * math.sqrt(2 / max(values.size, 1))
    std = math.sqrt(variance)
    error = error_variance / (2 * std) if std > 0 else math.sqrt(error_variance)
    return Estimate(std, error)


def ratio(numerator: Estimate, denominator: Estimate) -> Estimate:
    """``numerator / |denominator|`` with errors added in quadrature (relative)."""
    value = numerator.value / abs(denominator.value)
    if numerator.error is None or denominator.error is None:
        return Estimate(value, None)
    relative = math.hypot(numerator.error / abs(numerator.value) if numerator.value else 0.0,
                          denominator.error / abs(denominator.value))
    error = abs(value) * relative if numerator.value else numerator.error / abs(denominator.value)
    return Estimate(value, error)


def bounds(fit: CellFit) -> dict[str, Estimate]:
    """``w_max``, ``w_min`` and their relative spreads."""
    c, e = fit.cells, fit.errors
    w_max, w_min = centre(c["b_max"]), centre(c["b_min"])
    return {
        "w_max": w_max,
        "w_min": w_min,
        "w_max_dtod": ratio(spread(c["b_max"], e["b_max"]), w_max),
        "w_min_dtod": ratio(spread(c["b_min"], e["b_min"]), w_min),
    }


def paired(up: Array, down: Array, up_error: Array, down_error: Array,
           names: tuple[str, str, str, str]) -> dict[str, Estimate]:
    """Scale, relative spread, imbalance and spread of the imbalance of a pair of per-cell
    quantities drawn as ``scale (gain + r + bias)`` (steps, or pow-step exponents)."""
    scale_name, dtod_name, imbalance_name, imbalance_dtod_name = names
    mean, half_difference = (up + down) / 2, (up - down) / 2
    pair_error = np.hypot(up_error, down_error) / 2
    half = centre(half_difference)
    scale = centre(mean)
    scale = Estimate(scale.value + abs(half.value), None if scale.error is None or half.error is None
                     else math.hypot(scale.error, half.error))
    difference = Estimate(2 * half.value, None if half.error is None else 2 * half.error)
    return {
        scale_name: scale,
        dtod_name: ratio(spread(mean, pair_error), scale),
        imbalance_name: ratio(difference, scale),
        imbalance_dtod_name: ratio(spread(half_difference, pair_error), scale),
    }


def noise(fit: CellFit, data: PulseData) -> tuple[Estimate, float]:
    """``(dw_min_std, read_noise)``: the relative cycle-to-cycle noise of a pulse, and the read
    noise of a reading (weight units).

    A step's residual ``e_k = step_k - expected_k`` holds the pulse noise and the read noise of
    the two readings around it, so ``var(e_k) = dw_min_std^2 expected_k^2 + 2 read^2``, and two
    consecutive residuals share a reading: ``cov(e_k, e_k+1) = -read^2``. A fit makes its own
    residuals anticorrelated too, by about ``k / n`` of their variance (``k`` numbers fitted from
    ``n`` steps), which is taken off. Each cell's residuals then give its own ``dw_min_std``,
    corrected for the numbers fitted from them (residuals are smaller than the noise by
    ``(n - k) / n``); the result is their median, which a few poorly fitted cells do not move.
    """
    used = fit.used & np.isfinite(fit.expected)
    n = used.sum(axis=1)
    bounds_read_off = 2 if fit.reached is not None else 0
    fitted_per_cell = (fit.parameters - bounds_read_off * data.devices) / data.devices
    residual = np.where(used, data.steps - fit.expected, 0.0)
    expected = np.where(used, fit.expected, 0.0)
    same_direction = data.directions[1:] == data.directions[:-1]
    pairs = used[:, 1:] & used[:, :-1] & same_direction
    lagged = np.where(pairs, residual[:, 1:] * residual[:, :-1], 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        # the fit's own share, per cell: k / n of the mean square, on each pair
        own = np.where(n > 0, fitted_per_cell / n * (residual**2).sum(axis=1) / n, 0.0)
    read_variance = max(-float(np.sum(lagged + own * pairs.sum(axis=1)))
                        / max(int(pairs.sum()), 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        total = (residual**2).sum(axis=1) * n / (n - fitted_per_cell)
        relative = (total - 2 * read_variance * n) / (expected**2).sum(axis=1)
    per_cell = np.sqrt(np.maximum(relative[(n > fitted_per_cell + 1) & np.isfinite(relative)], 0))
    read_noise = math.sqrt(read_variance)
    if per_cell.size == 0:
        return Estimate(float("nan"), None), read_noise
    return centre(per_cell), read_noise


def model_parameters(fit: CellFit, data: PulseData) -> tuple[dict[str, Estimate], float]:
    """Every fitted parameter of ``fit.model`` by its aihwkit name, and the read noise."""
    c, e = fit.cells, fit.errors
    parameters = bounds(fit)
    parameters.update(paired(c["dw_up"], c["dw_down"], e["dw_up"], e["dw_down"],
                             ("dw_min", "dw_min_dtod", "up_down", "up_down_dtod")))
    std, read_noise = noise(fit, data)
    parameters["dw_min_std"] = std
    if fit.model == "linear-step":
        for name in ("gamma_up", "gamma_down"):
            parameters[name] = centre(c[name])
            parameters[f"{name}_dtod"] = spread(c[name], e[name])
    elif fit.model == "pow-step":
        parameters.update(paired(c["gamma_up"], c["gamma_down"], e["gamma_up"], e["gamma_down"],
                                 ("pow_gamma", "pow_gamma_dtod", "pow_up_down",
                                  "pow_up_down_dtod")))
    for name, value in fit.shared.items():
        error = fit.shared_errors.get(name)
        parameters[name] = Estimate(value, error if error is not None and math.isfinite(error)
                                    else None)
    return parameters, read_noise
