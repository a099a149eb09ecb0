"""Each cell's own device parameters, fitted from its pulse-by-pulse steps.

A pulse moves a cell by ``step(w)`` times ``1 + s xi`` (cycle-to-cycle noise), then clips it to
the cell's bounds (docs/emulator.md, section 2.1). So every measured step ``w[k+1] - w[k]`` is a
noisy observation of the model's step at the weight ``w[k]`` before it: a regression of the steps
on the weights before them, per cell, with no trajectory to simulate (docs/fitting.md, section
2). Each model has its own fit:

- ``constant-step``, ``linear-step``, ``soft-bounds``: the step is affine in ``w``, so each cell's
  up and down steps give an intercept and a slope by ordinary least squares (closed form, all
  cells at once).
- ``exp-step``, ``piecewise``: the response is shared by all cells and scaled per cell; the shared
  parameters are fitted by :func:`scipy.optimize.least_squares` with each cell's scale solved in
  closed form for every trial (variable projection).
- ``pow-step``: each cell has its own exponents and bounds inside the power, so each cell is
  fitted by :func:`scipy.optimize.least_squares`, started from its soft-bounds fit (exponent 1).

Hard-bounded models (every model but ``soft-bounds`` and ``pow-step``, whose steps vanish at the
bounds) take each cell's bounds from where its readings stop (the highest and lowest reading)
and leave out the steps that touch them, since a clipped step says nothing of the response.

The result, :class:`CellFit`, holds per-cell estimates with their standard errors; turning them
into a device model's parameters (means and spreads) is :mod:`hilctl.fitting.population`.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import least_squares

from hilctl.errors import HilctlError
from hilctl.fitting.data import PulseData

Array = NDArray[np.float64]
Mask = NDArray[np.bool_]

#: A reading within this share of a cell's typical step of its highest (lowest) reading counts
#: as at the bound: a hard-bounded cell sits there, give or take read noise.
AT_BOUND = 0.25
#: Steps that start within this many typical steps of the bound they move towards may have been
#: clipped, and are left out of a hard-bounded fit.
CLEAR = 2.0
#: The shared response of exp-step and piecewise is fitted on at most this many cells (evenly
#: spread over the array); every cell's own scale is then solved from all of its steps.
SHARED_FIT_CELLS = 256
#: Exponents of ``pow-step`` are kept in this range while fitting.
POW_EXPONENTS = (0.05, 20.0)
#: Relative tolerance of a pow-step cell's fit: well below the estimates' own errors (a few %).
POW_TOLERANCE = 1e-4
#: Share of pow-step cells whose fit may stop short of convergence before the fit fails.
POW_FAILED_SHARE = 0.1
#: pow-step cells fitted per process: a larger array is split over the cores.
POW_CELLS_PER_PROCESS = 512


@dataclass
class CellFit:
    """Per-cell estimates of one device model, and what the fit explained.

    Attributes:
        model: the device model (``--device`` name).
        cells: per-cell estimates by name, ``(devices,)`` each: ``dw_up``, ``dw_down`` (the
            cell's step scale, weight units), ``b_max``, ``b_min`` (its bounds), and the model's
            own (``gamma_up``/``gamma_down``: linear-step slopes or pow-step exponents).
        errors: their standard errors (the same keys), the estimation noise of each cell.
        shared: parameters shared by all cells (exp-step, piecewise), with ``shared_errors``.
        expected: ``(devices, pulses)`` the fitted expected step of every pulse (signed).
        used: ``(devices, pulses)`` the steps the fit used (False: the step touched a bound).
        parameters: how many numbers were fitted, for the information criterion.
        reached: share of the cells whose readings sat at their upper and lower bound (hard
            bounds are read off there), or None for a model without hard bounds.
        problem: why the optimiser stopped short of convergence, None where it converged.
    """

    model: str
    cells: dict[str, Array]
    errors: dict[str, Array]
    expected: Array
    used: Mask
    parameters: int
    shared: dict[str, float] = field(default_factory=dict)
    shared_errors: dict[str, float] = field(default_factory=dict)
    reached: float | None = None
    problem: str | None = None


# ---------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Steps:
    """The regression data of one direction: weights before, step magnitudes, usable steps."""

    before: Array  # (devices, pulses)
    size: Array  # step magnitude: +step for up pulses, -step for down pulses
    mask: Mask  # pulses of this direction that the fit uses


def _split(data: PulseData, used: Mask) -> tuple[_Steps, _Steps]:
    up = data.directions > 0
    before, steps = data.before, data.steps
    return (_Steps(before, steps, used & up), _Steps(before, -steps, used & ~up))


def _step_scale(data: PulseData) -> Array:
    """Each cell's typical moving step (weight units): the median of its steps larger than a
    tenth of its largest, so that however long a cell rests at a bound (steps of read noise
    only), those steps do not count."""
    size = np.abs(data.steps)
    moving = size > 0.1 * size.max(axis=1, keepdims=True)
    masked = np.where(moving, size, np.nan)
    masked[~moving.any(axis=1), 0] = 0.0  # a cell that never moved: scale 0
    return np.nanmedian(masked, axis=1)


def _hard_bounds(data: PulseData) -> tuple[Array, Array, Mask, float]:
    """Each cell's bounds where its readings stop, the steps clear of them, and the share of
    cells that sat at both (an up pulse at the top, a down pulse at the bottom).

    A step is left out where the weight *before* it lies within ``CLEAR`` typical steps of the
    bound it moves towards: such a step may have been clipped. Judging by the weight after the
    step instead would keep the steps whose noise happened to be small and bias the response.
    """
    top, bottom = data.weights.max(axis=1), data.weights.min(axis=1)
    scale = _step_scale(data)[:, None]
    before = data.before
    up = data.directions > 0
    used = np.where(up, before < top[:, None] - CLEAR * scale,
                    before > bottom[:, None] + CLEAR * scale)
    sat_top = np.any(up & (before >= top[:, None] - AT_BOUND * scale), axis=1)
    sat_bottom = np.any(~up & (before <= bottom[:, None] + AT_BOUND * scale), axis=1)
    return top, bottom, used, float(np.mean(sat_top & sat_bottom))


@dataclass(frozen=True)
class _Line:
    """Per-cell least-squares line ``size = intercept + slope * w`` with its (co)variances."""

    intercept: Array
    slope: Array
    var_intercept: Array
    var_slope: Array
    cov: Array


def _weighted_lines(steps: _Steps, weights: Array) -> _Line:
    """Weighted least squares of the step sizes on the weights before, per cell (closed form);
    ``weights`` are the inverse variances up to a factor, zero for steps not used."""
    w, x, y = weights, steps.before, steps.size
    sw = w.sum(axis=1)
    sx, sy = (w * x).sum(axis=1), (w * y).sum(axis=1)
    sxx, sxy = (w * x * x).sum(axis=1), (w * x * y).sum(axis=1)
    det = sw * sxx - sx * sx
    n = (w > 0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (sw * sxy - sx * sy) / det
        intercept = (sy - slope * sx) / sw
        residual = y - intercept[:, None] - slope[:, None] * x
        sigma2 = (w * residual**2).sum(axis=1) / np.maximum(n - 2, 1)
        return _Line(intercept, slope, sigma2 * sxx / det, sigma2 * sw / det, -sigma2 * sx / det)


def _fit_lines(steps: _Steps) -> _Line:
    """Least squares of the step sizes on the weights before, per cell: ordinary, then weighted
    by the inverse square of the fitted step, since a pulse's noise scales with its step."""
    mask = steps.mask.astype(np.float64)
    first = _weighted_lines(steps, mask)
    fitted = np.abs(first.intercept[:, None] + first.slope[:, None] * steps.before)
    floor = 0.1 * np.nanmedian(np.where(steps.mask, fitted, np.nan), axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        weights = mask / np.maximum(fitted, floor) ** 2
    return _weighted_lines(steps, np.nan_to_num(weights, nan=0.0, posinf=0.0))


def _fit_levels(steps: _Steps) -> tuple[Array, Array]:
    """Per-cell mean step size and its standard error."""
    m = steps.mask
    n = m.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(m, steps.size, 0).sum(axis=1) / n
        var = np.where(m, (steps.size - mean[:, None]) ** 2, 0).sum(axis=1) / np.maximum(n - 1, 1)
        return mean, np.sqrt(var / n)


def _ratio(line: _Line) -> tuple[Array, Array]:
    """``-intercept / slope`` (where the line crosses zero) and its delta-method error."""
    a, b = line.intercept, line.slope
    with np.errstate(divide="ignore", invalid="ignore"):
        value = -a / b
        var = (line.var_intercept / b**2 + a**2 * line.var_slope / b**4
               - 2 * a * line.cov / b**3)
        return value, np.sqrt(np.abs(var))


def _relative_slope(line: _Line, reference: float) -> tuple[Array, Array]:
    """``-slope * reference / intercept``: a linear-step slope relative to the mean bound
    ``reference``, and its delta-method error."""
    a, b = line.intercept, line.slope
    with np.errstate(divide="ignore", invalid="ignore"):
        value = -b * reference / a
        var = reference**2 * (line.var_slope / a**2 + b**2 * line.var_intercept / a**4
                              - 2 * b * line.cov / a**3)
        return value, np.sqrt(np.abs(var))


def _signed(data: PulseData, up_size: Array, down_size: Array) -> Array:
    """Signed expected steps from the expected sizes of up and down pulses."""
    return np.where(data.directions > 0, up_size, -down_size)


def _line_steps(data: PulseData, up: _Line, down: _Line) -> Array:
    """Signed expected steps of per-cell lines (non-finite for a cell whose line is)."""
    with np.errstate(invalid="ignore", over="ignore"):
        return _signed(data, up.intercept[:, None] + up.slope[:, None] * data.before,
                       down.intercept[:, None] + down.slope[:, None] * data.before)


def _scale_by_projection(size: Array, response: Array, mask: Mask) -> tuple[Array, Array]:
    """Per-cell scale ``c`` minimising ``sum (size - c response)^2`` over ``mask``, with its
    standard error."""
    r = np.where(mask, response, 0.0)
    y = np.where(mask, size, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rr = (r * r).sum(axis=1)
        scale = (r * y).sum(axis=1) / rr
        n = mask.sum(axis=1)
        sigma2 = ((y - scale[:, None] * r) ** 2).sum(axis=1) / np.maximum(n - 1, 1)
        return scale, np.sqrt(sigma2 / rr)


def _shared_errors(result: object, residuals: int, names: list[str]) -> dict[str, float]:
    """Standard errors of shared parameters from the Jacobian at the optimum."""
    jac = np.asarray(result.jac)  # type: ignore[attr-defined]
    cost = float(result.cost)  # type: ignore[attr-defined]
    sigma2 = 2 * cost / max(residuals - len(names), 1)
    try:
        cov = np.linalg.pinv(jac.T @ jac) * sigma2
    except np.linalg.LinAlgError:
        return {name: float("nan") for name in names}
    return {name: float(np.sqrt(max(cov[i, i], 0.0))) for i, name in enumerate(names)}


# ---------------------------------------------------------------------------------------------
# Affine models
# ---------------------------------------------------------------------------------------------


def fit_constant_step(data: PulseData) -> CellFit:
    """Every pulse the same step until a hard bound."""
    top, bottom, used, reached = _hard_bounds(data)
    up_steps, down_steps = _split(data, used)
    dw_up, se_up = _fit_levels(up_steps)
    dw_down, se_down = _fit_levels(down_steps)
    zeros = np.zeros_like(top)
    expected = _signed(data, np.broadcast_to(dw_up[:, None], used.shape),
                       np.broadcast_to(dw_down[:, None], used.shape))
    return CellFit("constant-step", {"dw_up": dw_up, "dw_down": dw_down, "b_max": top,
                                     "b_min": bottom},
                   {"dw_up": se_up, "dw_down": se_down, "b_max": zeros, "b_min": zeros},
                   expected, used, 4 * data.devices, reached=reached)


def fit_linear_step(data: PulseData) -> CellFit:
    """Steps linear in ``w`` with slopes relative to the mean bounds, and hard bounds."""
    top, bottom, used, reached = _hard_bounds(data)
    up_steps, down_steps = _split(data, used)
    up, down = _fit_lines(up_steps), _fit_lines(down_steps)
    w_max, w_min = float(np.mean(top)), float(np.mean(bottom))
    # up: size = dw_up (1 - g_up w / w_max); down: size = dw_down (1 - g_down w / w_min)
    gamma_up, se_gamma_up = _relative_slope(up, w_max)
    gamma_down, se_gamma_down = _relative_slope(down, w_min)
    zeros = np.zeros_like(top)
    expected = _line_steps(data, up, down)
    return CellFit(
        "linear-step",
        {"dw_up": up.intercept, "dw_down": down.intercept, "b_max": top, "b_min": bottom,
         "gamma_up": gamma_up, "gamma_down": gamma_down},
        {"dw_up": np.sqrt(np.abs(up.var_intercept)), "dw_down": np.sqrt(np.abs(down.var_intercept)),
         "b_max": zeros, "b_min": zeros,
         "gamma_up": se_gamma_up, "gamma_down": se_gamma_down},
        expected, used, 6 * data.devices, reached=reached)


def fit_soft_bounds(data: PulseData) -> CellFit:
    """Steps shrinking linearly to zero at each cell's own bounds: the bounds are where the
    up and down lines cross zero."""
    used = np.ones(data.before.shape, dtype=bool)
    up_steps, down_steps = _split(data, used)
    up, down = _fit_lines(up_steps), _fit_lines(down_steps)
    b_max, se_b_max = _ratio(up)
    b_min, se_b_min = _ratio(down)
    expected = _line_steps(data, up, down)
    return CellFit(
        "soft-bounds",
        {"dw_up": up.intercept, "dw_down": down.intercept, "b_max": b_max, "b_min": b_min},
        {"dw_up": np.sqrt(np.abs(up.var_intercept)), "dw_down": np.sqrt(np.abs(down.var_intercept)),
         "b_max": se_b_max, "b_min": se_b_min},
        expected, used, 4 * data.devices)


# ---------------------------------------------------------------------------------------------
# Shared response, per-cell scale: exp-step and piecewise
# ---------------------------------------------------------------------------------------------

#: ``response(shared values, data, top, bottom) -> (up, down)``: the unscaled response of every
#: pulse, ``(devices, pulses)`` each.
Response = Callable[[Array, Array, Array, Array], tuple[Array, Array]]


class NotConverged(HilctlError):
    """The fit did not converge, or gave no valid device (exit 4): the data do not fit the
    model. ``best`` holds the parameters it reached, where there are any."""

    exit_code = 4

    def __init__(self, model: str, message: str, best: dict[str, Any] | None = None) -> None:
        super().__init__(f"the {model} fit did not converge: {message}")
        self.best = best


def _fit_shared(model: str, data: PulseData, names: list[str], start: Array,
                lower: Array, upper: Array, response: Response) -> CellFit:
    """Fit shared response parameters with each cell's up and down scale projected out."""
    top, bottom, used, reached = _hard_bounds(data)
    up_steps, down_steps = _split(data, used)

    def scales(values: Array, cells: slice) -> tuple[Array, Array, Array, Array]:
        r_up, r_down = response(values, data.before[cells], top[cells], bottom[cells])
        dw_up, se_up = _scale_by_projection(up_steps.size[cells], r_up, up_steps.mask[cells])
        dw_down, se_down = _scale_by_projection(down_steps.size[cells], r_down,
                                                down_steps.mask[cells])
        expected = _signed(data, dw_up[:, None] * r_up, dw_down[:, None] * r_down)
        return expected, np.stack([dw_up, dw_down]), se_up, se_down

    sample = slice(None, None, max(data.devices // SHARED_FIT_CELLS, 1))

    def residuals(values: Array) -> Array:
        expected = scales(values, sample)[0]
        return np.nan_to_num((data.steps[sample] - expected)[used[sample]], nan=0.0)

    result = least_squares(residuals, start, bounds=(lower, upper), x_scale="jac")
    expected, (dw_up, dw_down), se_up, se_down = scales(result.x, slice(None))
    zeros = np.zeros_like(top)
    return CellFit(
        model, {"dw_up": dw_up, "dw_down": dw_down, "b_max": top, "b_min": bottom},
        {"dw_up": se_up, "dw_down": se_down, "b_max": zeros, "b_min": zeros},
        expected, used, 4 * data.devices + len(names),
        shared=dict(zip(names, map(float, result.x), strict=True)),
        shared_errors=_shared_errors(result, int(used[sample].sum()), names), reached=reached,
        problem=None if result.success else str(result.message))


def fit_exp_step(data: PulseData, a: float, b: float) -> CellFit:
    """``exp-step`` with ``a`` and ``b`` held: only ``A exp(gamma b)`` and ``gamma a`` change
    the response, so ``A_up``, ``gamma_up``, ``A_down`` and ``gamma_down`` are fitted and ``a``,
    ``b`` stay as given."""

    def response(values: Array, before: Array, top: Array, bottom: Array) -> tuple[Array, Array]:
        a_up, gamma_up, a_down, gamma_down = values
        z = 2 * a * before / (top - bottom)[:, None] + b
        up = np.maximum(1 - a_up * np.exp(gamma_up * z), 0)
        down = np.maximum(1 - a_down * np.exp(-gamma_down * z), 0)
        return up, down

    names = ["A_up", "gamma_up", "A_down", "gamma_down"]
    start = np.array([0.01, 5.0, 0.01, 5.0])
    lower, upper = np.array([0, -100, 0, -100.0]), np.array([1e3, 100, 1e3, 100.0])
    return _fit_shared("exp-step", data, names, start, lower, upper, response)


def fit_piecewise(data: PulseData, nodes: int) -> CellFit:
    """``piecewise`` with ``nodes`` nodes per direction. The scale of a table and of the cells'
    steps trade off, so the tables are normalised: the middle node of ``piecewise_up`` is 1
    (so ``dw_min`` is the step there, aihwkit's granularity), and ``piecewise_down`` is scaled so
    that the cells' down scales are centred where their up scales are (``up_down`` 0: the
    tables hold the up/down asymmetry)."""
    middle = nodes // 2

    def tables(values: Array) -> tuple[Array, Array]:
        up = np.insert(values[: nodes - 1], middle, 1.0)
        return up, values[nodes - 1:]

    def response(values: Array, before: Array, top: Array, bottom: Array) -> tuple[Array, Array]:
        up_table, down_table = tables(values)
        position = np.clip((before - bottom[:, None]) / (top - bottom)[:, None], 0, 1)
        grid = np.linspace(0, 1, nodes)
        return np.interp(position, grid, up_table), np.interp(position, grid, down_table)

    names = [f"piecewise_up[{i}]" for i in range(nodes) if i != middle]
    names += [f"piecewise_down[{i}]" for i in range(nodes)]
    start = np.ones(2 * nodes - 1)
    fit = _fit_shared("piecewise", data, names, start, np.zeros_like(start),
                      np.full_like(start, 1e6), response)
    balance = float(np.median(fit.cells["dw_down"]) / np.median(fit.cells["dw_up"]))
    fit.cells["dw_down"] = fit.cells["dw_down"] / balance
    fit.errors["dw_down"] = fit.errors["dw_down"] / balance
    for name in names[nodes - 1:]:
        fit.shared[name] *= balance
        fit.shared_errors[name] *= balance
    return fit


# ---------------------------------------------------------------------------------------------
# pow-step: each cell on its own
# ---------------------------------------------------------------------------------------------


def _pow_steps(params: Array, before: Array, up: Mask) -> tuple[Array, Array]:
    """Expected signed steps of one pow-step cell and their Jacobian (pulses x 6)."""
    dw_up, dw_down, b_max, b_min, g_up, g_down = params
    span = b_max - b_min
    omega = np.clip((b_max - before) / span, 1e-12, 1.0)
    rest = np.clip(1.0 - omega, 1e-12, 1.0)
    up_size = omega**g_up
    down_size = rest**g_down
    steps = np.where(up, dw_up * up_size, -dw_down * down_size)
    # d omega / d b_max = (before - b_min) / span^2, d omega / d b_min = (b_max - before) / span^2
    d_omega = np.stack([(before - b_min) / span**2, (b_max - before) / span**2])
    jac = np.zeros((before.size, 6))
    jac[:, 0] = np.where(up, up_size, 0)
    jac[:, 1] = np.where(up, 0, -down_size)
    up_slope = dw_up * g_up * up_size / omega
    down_slope = dw_down * g_down * down_size / rest  # d/d omega of -dw_down rest^g = +...
    for column, d in ((2, d_omega[0]), (3, d_omega[1])):
        jac[:, column] = np.where(up, up_slope * d, down_slope * d)
    jac[:, 4] = np.where(up, dw_up * up_size * np.log(omega), 0)
    jac[:, 5] = np.where(up, 0, -dw_down * down_size * np.log(rest))
    return steps, jac


class _PowCell:
    """One cell's weighted pow-step residuals and their Jacobian, computed once per trial point
    (the optimiser asks for both at the same point)."""

    def __init__(self, before: Array, steps: Array, up: Mask, weight: Array) -> None:
        self.before, self.steps, self.up, self.weight = before, steps, up, weight
        self._at: Array | None = None
        self._residuals = self._jacobian = np.empty(0)

    def _evaluate(self, params: Array) -> None:
        if self._at is None or not np.array_equal(params, self._at):
            expected, jacobian = _pow_steps(params, self.before, self.up)
            self._at = params.copy()
            self._residuals = (expected - self.steps) * self.weight
            self._jacobian = jacobian * self.weight[:, None]

    def residuals(self, params: Array) -> Array:
        self._evaluate(params)
        return self._residuals

    def jacobian(self, params: Array) -> Array:
        self._evaluate(params)
        return self._jacobian


def _pow_start(start: dict[str, Array], cell: int, before: Array) -> tuple[Array, Array, Array]:
    """``(x0, lower, upper)`` of one cell's pow-step fit: its soft-bounds fit (``start``, per
    cell) with exponent 1, the bounds kept outside the readings (and not absurdly far)."""
    low, high = float(before.min()), float(before.max())
    spread = max(high - low, 1e-12)
    b_max = max(float(start["b_max"][cell]), high + 1e-3 * spread)
    b_min = min(float(start["b_min"][cell]), low - 1e-3 * spread)
    if not np.isfinite(b_max) or b_max > high + 10 * spread:
        b_max = high + 0.1 * spread
    if not np.isfinite(b_min) or b_min < low - 10 * spread:
        b_min = low - 0.1 * spread
    x0 = np.array([abs(float(start["dw_up"][cell])) * 2, abs(float(start["dw_down"][cell])) * 2,
                   b_max, b_min, 1.0, 1.0])
    lower = np.array([0, 0, high, low - 100 * spread, POW_EXPONENTS[0], POW_EXPONENTS[0]])
    upper = np.array([np.inf, np.inf, high + 100 * spread, low, POW_EXPONENTS[1],
                      POW_EXPONENTS[1]])
    margin = 1e-9 * (b_max - b_min)
    return np.clip(x0, lower + margin, upper - margin), lower, upper


_POW_NAMES = ["dw_up", "dw_down", "b_max", "b_min", "gamma_up", "gamma_down"]


def _fit_pow_cells(before: Array, steps: Array, up: Mask, start: dict[str, Array],
                   start_expected: Array) -> tuple[Array, Array, Array, int]:
    """pow-step fits of a block of cells: ``(estimates, errors, expected steps, failed)``."""
    estimates = np.zeros((before.shape[0], 6))
    errors = np.zeros((before.shape[0], 6))
    expected = np.zeros(before.shape)
    failed = 0
    for cell in range(before.shape[0]):
        x0, lower, upper = _pow_start(start, cell, before[cell])
        guess = np.abs(start_expected[cell])
        one_cell = _PowCell(before[cell], steps[cell], up,
                            1 / np.maximum(guess, 0.1 * np.median(guess)))
        result = least_squares(one_cell.residuals, x0, jac=one_cell.jacobian,
                               bounds=(lower, upper), x_scale="jac", ftol=POW_TOLERANCE,
                               xtol=POW_TOLERANCE)
        failed += not result.success
        estimates[cell] = result.x
        errors[cell] = list(_shared_errors(result, before.shape[1], _POW_NAMES).values())
        expected[cell] = _pow_steps(result.x, before[cell], up)[0]
    return estimates, errors, expected, failed


def _processes(cells: int) -> int:
    """Processes for ``cells`` pow-step cell fits: one per :data:`POW_CELLS_PER_PROCESS` cells,
    at most one per core."""
    return max(1, min(os.cpu_count() or 1, cells // POW_CELLS_PER_PROCESS))


def fit_pow_step(data: PulseData) -> CellFit:
    """Each cell's scales, bounds and exponents by its own least-squares fit, started from its
    soft-bounds fit (pow-step with exponent 1 is soft bounds). A pulse's noise scales with its
    step, so each step is weighed by the inverse of its soft-bounds estimate. Large arrays are
    split over the cores (each cell's fit is its own, so the result is the same)."""
    start = fit_soft_bounds(data)
    up = data.directions > 0
    blocks = np.array_split(np.arange(data.devices), _processes(data.devices))
    jobs = [(data.before[b], data.steps[b], up, {k: v[b] for k, v in start.cells.items()},
             start.expected[b]) for b in blocks]
    if len(jobs) == 1:
        results = [_fit_pow_cells(*jobs[0])]
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context(method)) as pool:
            results = list(pool.map(_fit_pow_cells, *zip(*jobs, strict=True)))
    estimates = np.concatenate([r[0] for r in results])
    errors = np.concatenate([r[1] for r in results])
    expected = np.concatenate([r[2] for r in results])
    failed = sum(r[3] for r in results)
    used = np.ones(data.before.shape, dtype=bool)
    problem = (f"{failed} of {data.devices} cells did not converge"
               if failed > POW_FAILED_SHARE * data.devices else None)
    return CellFit("pow-step", {n: estimates[:, i] for i, n in enumerate(_POW_NAMES)},
                   {n: errors[:, i] for i, n in enumerate(_POW_NAMES)},
                   expected, used, 6 * data.devices, problem=problem)
