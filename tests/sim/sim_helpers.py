"""Shared helpers of the emulator physics tests (imported as ``sim_helpers``).

Statistical tolerances: every stochastic check uses a fixed seed and compares an estimate with
its expectation (or two independent estimates with each other) to within ``K_SIGMA`` standard
errors. For a normal estimate, ``|z| > 5`` has probability 5.7e-7, so a correct emulator fails a
check by chance about once in two million; the seeds are fixed, so a pass is reproducible.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hilctl.config import TileConfig, no_variation, tile_config
from sim.devices import DeviceModel, make_device
from sim.tile import EmulatedTile

#: Standard errors allowed between an estimate and its expectation (see the module docstring).
K_SIGMA = 5.0

MODELS = ("constant-step", "linear-step", "soft-bounds", "pow-step", "exp-step", "piecewise")


def config(
    model: str,
    rows: int = 8,
    cols: int = 8,
    *,
    seed: int | None = 0,
    exact: bool = False,
    update: dict[str, Any] | None = None,
    periphery: dict[str, Any] | None = None,
    **device_values: Any,
) -> TileConfig:
    """A tile config; ``exact`` switches off every variation (``no_variation``) first."""
    values = {**(no_variation(model) if exact else {}), **device_values}
    return tile_config(
        rows=rows,
        cols=cols,
        device=model,
        device_values=values,
        update_values=update,
        periphery_values=periphery,
        seed=seed,
    )


def tile(
    model: str,
    rows: int = 8,
    cols: int = 8,
    *,
    dtype: type[np.floating] = np.float64,
    closed_form: bool = True,
    **kwargs: Any,
) -> EmulatedTile:
    """An :class:`EmulatedTile` of :func:`config`'s config."""
    return EmulatedTile(config(model, rows, cols, **kwargs), dtype=dtype, closed_form=closed_form)


def device(model: str, shape: tuple[int, int] = (8, 8), *, seed: int = 0,
           dtype: type[np.floating] = np.float64, exact: bool = False,
           **device_values: Any) -> DeviceModel:
    """A device model with its variations drawn from ``seed``."""
    cfg = config(model, *shape, exact=exact, **device_values).device
    return make_device(cfg, shape, np.random.default_rng(seed), dtype)


def std_error_of_std(sample: np.ndarray) -> float:
    """Standard error of the sample std of ``sample`` (large-n delta method).

    ``Var(s^2) ~ sigma^4 (kappa - 1) / n`` with ``kappa`` the kurtosis (3 for a normal), so
    ``SE(s) ~ s sqrt((kappa - 1) / (4 n))``. Uses the sample's own kurtosis, so heavy tails
    (cells stuck at a bound, products of normals) widen the tolerance as they should.
    """
    x = np.asarray(sample, dtype=np.float64).ravel()
    s = x.std()
    if s == 0:
        return 0.0
    kurtosis = np.mean(((x - x.mean()) / s) ** 4)
    return float(s * np.sqrt((kurtosis - 1) / (4 * x.size)))


def assert_mean_close(sample: np.ndarray, expected: float, what: str = "mean") -> None:
    """``mean(sample)`` within ``K_SIGMA`` standard errors ``std / sqrt(n)`` of ``expected``."""
    x = np.asarray(sample, dtype=np.float64).ravel()
    se = x.std() / np.sqrt(x.size)
    assert abs(x.mean() - expected) <= K_SIGMA * se + 1e-15, (
        f"{what}: {x.mean():.6g} vs expected {expected:.6g} (SE {se:.3g})"
    )


def assert_std_close(sample: np.ndarray, expected: float, what: str = "std") -> None:
    """``std(sample)`` within ``K_SIGMA`` of its standard error (:func:`std_error_of_std`)."""
    x = np.asarray(sample, dtype=np.float64).ravel()
    se = std_error_of_std(x)
    assert abs(x.std() - expected) <= K_SIGMA * se + 1e-15, (
        f"{what}: {x.std():.6g} vs expected {expected:.6g} (SE {se:.3g})"
    )


def assert_same_distribution(a: np.ndarray, b: np.ndarray, what: str = "") -> None:
    """Two independent samples: means and stds equal to within ``K_SIGMA`` combined SEs."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    se_mean = np.sqrt(a.var() / a.size + b.var() / b.size)
    assert abs(a.mean() - b.mean()) <= K_SIGMA * se_mean + 1e-15, (
        f"{what} mean: {a.mean():.6g} vs {b.mean():.6g} (SE of difference {se_mean:.3g})"
    )
    se_std = np.hypot(std_error_of_std(a), std_error_of_std(b))
    assert abs(a.std() - b.std()) <= K_SIGMA * se_std + 1e-15, (
        f"{what} std: {a.std():.6g} vs {b.std():.6g} (SE of difference {se_std:.3g})"
    )

