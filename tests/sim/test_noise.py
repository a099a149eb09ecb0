"""sim.noise.standard_normal: the 2**16-level table of the per-pulse write noise."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
from sim_helpers import K_SIGMA

from sim.noise import LEVELS, _quantile_table, standard_normal


def test_table_has_mean_zero_and_variance_one_exactly() -> None:
    table = _quantile_table(np.float64)
    assert table.size == LEVELS
    assert abs(table.mean()) < 1e-15
    assert abs(np.mean(table**2) - 1) < 1e-14
    assert np.all(np.diff(table) > 0)


def test_table_cdf_is_within_one_level_of_the_normal() -> None:
    """The draw's CDF jumps by 2**-16 at each table value; the normal CDF there must lie within
    that step (the docstring's 'within 2**-16'), and the tails are cut at ~4.5 sigma."""
    table = _quantile_table(np.float64)
    phi = np.array([NormalDist().cdf(v) for v in table[:: 64]])  # every 64th: fast enough
    i = np.arange(0, LEVELS, 64)
    below, above = i / LEVELS, (i + 1) / LEVELS
    step = 1 / LEVELS
    assert np.all(phi >= below - step) and np.all(phi <= above + step)
    assert 4.0 < table.max() < 5.0 and -5.0 < table.min() < -4.0


def test_draws_are_standard_normal() -> None:
    """n = 10**6 draws: mean within K_SIGMA/sqrt(n), variance within K_SIGMA sqrt(2/n), and the
    KS distance to N(0,1) below the table's 2**-16 plus the DKW bound at p = 1e-6,
    sqrt(ln(2/1e-6) / (2n)) = 0.0027."""
    n = 10**6
    z = standard_normal(np.random.default_rng(0), n, np.float64)
    assert abs(z.mean()) <= K_SIGMA / np.sqrt(n)
    assert abs(z.var() - 1) <= K_SIGMA * np.sqrt(2 / n)
    grid = np.linspace(-4, 4, 161)
    empirical = np.searchsorted(np.sort(z), grid, side="right") / n
    normal = np.array([NormalDist().cdf(g) for g in grid])
    assert np.max(np.abs(empirical - normal)) <= 2**-16 + np.sqrt(np.log(2 / 1e-6) / (2 * n))


def test_draws_are_reproducible_and_shaped() -> None:
    a = standard_normal(np.random.default_rng(7), (3, 5))
    b = standard_normal(np.random.default_rng(7), (3, 5))
    c = standard_normal(np.random.default_rng(8), (3, 5))
    assert a.shape == (3, 5) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # float32 draws are the float64 table rounded
    d = standard_normal(np.random.default_rng(7), (3, 5), np.float64)
    np.testing.assert_array_equal(a, d.astype(np.float32))
    # odd sizes (not a multiple of four 16-bit indices per 64-bit word) work
    assert standard_normal(np.random.default_rng(1), 7).shape == (7,)
