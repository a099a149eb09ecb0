"""Fit a device model to a measured pulse response: the parameters a ``[device]`` section takes,
their uncertainties, and which model explains the data best.

:func:`fit_device` runs the model's per-cell fit (:mod:`hilctl.fitting.cells`), turns it into the
model's parameters (:mod:`hilctl.fitting.population`) and validates them as a device config, so
what it returns is a ``[device]`` section that ``hilctl train`` and ``hilctl characterize`` take.
:func:`choose_model` fits every model and keeps the one whose emulated twin follows the
measurement best, and among those the one with the lowest Bayesian information criterion (BIC) of
the steps, which weighs the residual against the number of fitted numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hilctl.config import DEVICE_CONFIGS, ExpStepConfig, device_config
from hilctl.errors import ConfigError
from hilctl.fitting import cells
from hilctl.fitting.cells import CellFit, NotConverged
from hilctl.fitting.data import PulseData
from hilctl.fitting.population import Estimate, model_parameters
from hilctl.fitting.twin import compare

#: Significant digits kept of a fitted value in the ``[device]`` section.
DIGITS = 5
#: Nodes of a fitted piecewise table, per direction, unless asked otherwise.
DEFAULT_NODES = 5
#: Twin verdicts from best to worst (:data:`hilctl.fitting.twin.VERDICTS`).
VERDICT_ORDER = ("good", "fair", "poor")
#: exp-step's ``a`` and ``b`` only enter through ``gamma a`` and ``A exp(gamma b)``: they are
#: held at aihwkit's defaults and the other four parameters fitted.
EXP_HELD = ("a", "b")


@dataclass
class DeviceFit:
    """A fitted device model.

    Attributes:
        model: the device model (``--device`` name).
        device: the ``[device]`` section: ``model`` and every parameter by its aihwkit name.
        uncertainty: standard error of each parameter (None where it is held or not known).
        cell_fit: the per-cell estimates behind it.
        read_noise: the read noise of a reading found in the data (weight units).
        bic: Bayesian information criterion of the steps (lower explains more per parameter).
        seconds: time the fit took.
        held: parameters that are not fitted but held at a given value, with why.
    """

    model: str
    device: dict[str, Any]
    uncertainty: dict[str, Any]
    cell_fit: CellFit
    read_noise: float
    bic: float
    seconds: float
    held: dict[str, str] = field(default_factory=dict)


def _rounded(value: float) -> float:
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, DIGITS - 1 - math.floor(math.log10(abs(value))))


def _error(estimate: Estimate) -> float | None:
    if estimate.error is None or not math.isfinite(estimate.error):
        return None
    return _rounded(estimate.error)


def _fit_exp_step(data: PulseData, nodes: int) -> CellFit:
    held = (ExpStepConfig.model_fields[name].default for name in EXP_HELD)
    return cells.fit_exp_step(data, *held)


#: The per-cell fit of every device model: ``fit(data, nodes)``.
CELL_FITS: dict[str, Callable[[PulseData, int], CellFit]] = {
    "constant-step": lambda data, nodes: cells.fit_constant_step(data),
    "linear-step": lambda data, nodes: cells.fit_linear_step(data),
    "soft-bounds": lambda data, nodes: cells.fit_soft_bounds(data),
    "pow-step": lambda data, nodes: cells.fit_pow_step(data),
    "exp-step": _fit_exp_step,
    "piecewise": cells.fit_piecewise,
}


def information_criterion(fit: CellFit, data: PulseData) -> float:
    """BIC of every step: ``n log(RSS / n) + k log n``, with each step predicted from the reading
    before it and clipped to the cell's bounds as the device clips it."""
    predicted = np.clip(data.before + fit.expected, fit.cells["b_min"][:, None],
                        fit.cells["b_max"][:, None])
    residual = (data.weights[:, 1:] - predicted)[np.all(np.isfinite(predicted), axis=1)]
    n = residual.size
    rss = float(np.sum(residual**2))
    return n * math.log(max(rss, 1e-300) / n) + fit.parameters * math.log(n)


def _section(model: str, estimates: dict[str, Estimate]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``[device]`` section and the uncertainties; piecewise tables become lists."""
    device: dict[str, Any] = {"model": model}
    uncertainty: dict[str, Any] = {}
    tables: dict[str, list[tuple[int, Estimate]]] = {}
    for name, estimate in estimates.items():
        if "[" in name:
            table, index = name.rstrip("]").split("[")
            tables.setdefault(table, []).append((int(index), estimate))
            continue
        device[name] = _rounded(estimate.value)
        uncertainty[name] = _error(estimate)
    for table, entries in tables.items():
        if table == "piecewise_up":  # the middle node is 1 by definition
            middle = (len(entries) + 1) // 2
            entries.append((middle, Estimate(1.0, None)))
        entries.sort()
        device[table] = [_rounded(e.value) for _, e in entries]
        uncertainty[table] = [_error(e) for _, e in entries]
    return device, uncertainty


def _valid(device: dict[str, Any], problem: str | None) -> dict[str, Any]:
    """``device`` with spreads and slopes that came out below zero set to zero, validated;
    :class:`NotConverged` (holding ``device``) where the fit had a ``problem`` or the values
    are not a device."""
    model = device["model"]
    for name, value in device.items():
        nonnegative = name.endswith("_dtod") or name == "dw_min_std" or (
            model == "linear-step" and name in ("gamma_up", "gamma_down"))
        if nonnegative and isinstance(value, float) and value < 0:
            device[name] = 0.0
    if problem is not None:
        raise NotConverged(model, problem, best=device)
    for name, value in device.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise NotConverged(model, f"{name} came out as {value}: the fit ended where the "
                               "model's response vanishes or diverges, so the model does not "
                               "describe these data", best=device)
    values = {k: v for k, v in device.items() if k != "model"}
    try:
        device_config(model, **values)
    except ConfigError as exc:
        raise NotConverged(model, f"the fitted values are not a valid device ({exc})",
                           best=device) from None
    return device


def fit_device(data: PulseData, model: str, *, nodes: int = DEFAULT_NODES) -> DeviceFit:
    """Fit ``model`` to ``data``.

    Raises:
        NotConverged: the optimiser did not converge or the result is not a valid device.
    """
    began = time.perf_counter()
    fit = CELL_FITS[model](data, nodes)
    estimates, read_noise = model_parameters(fit, data)
    device, uncertainty = _section(model, estimates)
    held: dict[str, str] = {}
    if model == "exp-step":
        for name in EXP_HELD:
            device[name] = ExpStepConfig.model_fields[name].default
            uncertainty[name] = None
            held[name] = ("held at aihwkit's default: the response depends on it only through "
                          "A exp(gamma b) and gamma a")
    if model == "piecewise":
        device["up_down"] = 0.0
        uncertainty["up_down"] = None
        held["up_down"] = ("0 by definition: the down table is scaled so that the cells' up and "
                           "down steps match, and the tables hold the asymmetry")
    if model in ("soft-bounds", "linear-step"):
        device["mult_noise"] = True
        uncertainty["mult_noise"] = None
    device = _valid(device, fit.problem)
    bic = information_criterion(fit, data)
    return DeviceFit(model, device, uncertainty, fit, read_noise, bic,
                     time.perf_counter() - began, held)


def choose_model(data: PulseData, *, nodes: int = DEFAULT_NODES
                 ) -> tuple[DeviceFit, dict[str, dict[str, Any]]]:
    """Fit every model and keep the one whose emulated twin follows the measurement best (by
    verdict: good, fair, poor), and among those the lowest BIC; every model's verdict and BIC
    (None: the model did not fit).

    The BIC alone favours flexible models whose per-cell fits absorb noise (a piecewise table
    draws soft bounds' line as well); the twin shows whether the fitted population also
    reproduces the measured mean and spread."""
    fits: dict[str, DeviceFit] = {}
    scores: dict[str, dict[str, Any]] = {}
    for model in DEVICE_CONFIGS:
        try:
            fit = fit_device(data, model, nodes=nodes)
        except NotConverged:
            scores[model] = {"verdict": None, "bic": None}
            continue
        fits[model] = fit
        scores[model] = {"verdict": compare(data, fit.device, fit.read_noise).verdict,
                         "bic": fit.bic}
    if not fits:
        raise NotConverged("auto", "no device model fitted the data")
    best = min(fits.values(), key=lambda f: (VERDICT_ORDER.index(scores[f.model]["verdict"]),
                                             f.bic))
    return best, scores
