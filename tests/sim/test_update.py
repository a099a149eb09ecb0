"""Pulsed update W <- W - lr d x^T (docs/emulator.md, section 3): its mean, and mini-batch aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import K_SIGMA, assert_same_distribution, tile

# -- the mean of the pulsed update ---------------------------------------------------------------

DW = 0.001
TOLERANCE = 0.02  # relative (Frobenius) error of the mean dW allowed by the specification


def _vectors(max_x: float, max_d: float) -> tuple[np.ndarray, np.ndarray]:
    """Fixed x (8,) and d (8,) of both signs, magnitudes between half and all of the max."""
    x = max_x * np.array([1.0, -0.5, 0.8, -0.9, 0.6, -0.7, 0.55, 0.95])
    d = max_d * np.array([-0.6, 1.0, -0.75, 0.5, -0.9, 0.85, 0.65, -1.0])
    return x, d


# Update management balances the trains, so x and d may differ in scale. Without it, neither
# train may saturate, which (with BL management, BL = ceil(k)) needs max|x| = max|d|: the peak
# probabilities are sqrt(max|x| / max|d|) and its inverse. With max|x| != max|d| the update is
# truncated, exactly as in aihwkit, and the mean is NOT -lr d x^T.
SETUPS = {"um-on": (True, 1.0, 0.25), "um-off": (False, 0.5, 0.5)}


@pytest.mark.parametrize("lr", [0.001, 0.01, 0.05])
@pytest.mark.parametrize("setup", list(SETUPS))
def test_mean_update_is_minus_lr_d_x(setup: str, lr: float) -> None:
    """Constant step, no noise, no bounds in reach: dW = DW (n_up - n_down) exactly, so the mean
    over M updates estimates -lr d x^T with only the pulse-count sampling error.

    Tolerance: n_ij is a sum of Bernoulli coincidences, Var(n_ij) <= E[n_ij] = lr |d_i x_j| / DW,
    so the Frobenius error of the mean has RMS at most
        sigma_rel = sqrt(DW sum|d x| / (lr M)) / ||d x^T||.
    M is chosen (>= 10^4) so that K_SIGMA * sigma_rel <= 2%: a correct emulator passes with
    overwhelming probability and any bias above 2% fails.
    """
    um, max_x, max_d = SETUPS[setup]
    x, d = _vectors(max_x, max_d)
    target = -lr * np.outer(d, x)
    ratio = DW * np.abs(target).sum() * lr / np.linalg.norm(target) ** 2  # = sigma_rel^2 M / lr
    samples = max(10_000, int(np.ceil((K_SIGMA / TOLERANCE) ** 2 * ratio / lr)))
    t = tile("constant-step", 8, 8, exact=True, dw_min=DW, w_max=1e4, w_min=-1e4,
             update={"update_management": um, "aggregate_batch": True})
    # identical samples of one mini-batch are summed: M rank-1 updates in one call
    t.update(np.tile(x, (samples, 1)), np.tile(d, (samples, 1)), lr)
    mean = t.read_weights() / samples
    error = np.linalg.norm(mean - target) / np.linalg.norm(target)
    sigma_rel = np.sqrt(DW * np.abs(target).sum() / samples) / np.linalg.norm(target)
    assert K_SIGMA * sigma_rel <= TOLERANCE  # the sample is large enough for the claim
    assert error <= TOLERANCE, f"relative error {error:.4f} (statistical RMS {sigma_rel:.4f})"
    # and the sign of every cell is right
    assert np.all(np.sign(mean) == np.sign(target))


def test_saturated_update_is_truncated_like_aihwkit() -> None:
    """k = lr max|x| max|d| / dw > desired_bl: the x train peaks at probability 1 and the mean
    update is BL * DW * p_d * p_x (aihwkit's clipped d), smaller than -lr d x^T.

    Expected per cell: DW * 31 * min(1, A|d_i|) * min(1, B|x_j|) with A, B from docs/emulator.md,
    section 3.1 / aihwkit's UM (d_max shrunk by 31/k). Each cell is compared within K_SIGMA of its
    binomial SE: Var(n_ij) = 31 p q (1 - p q) per sample.
    """
    lr, samples = 0.5, 20_000
    x, d = _vectors(1.0, 0.25)
    t = tile("constant-step", 8, 8, exact=True, dw_min=DW, w_max=1e4, w_min=-1e4)
    t.update(np.tile(x, (samples, 1)), np.tile(d, (samples, 1)), lr)
    k = lr * 1.0 * 0.25 / DW  # 125 > 31
    a = np.sqrt(lr / (DW * 31))
    d_ref = 0.25 * 31 / k
    p_x = np.minimum(1, a * np.sqrt(d_ref / 1.0) * np.abs(x))
    p_d = np.minimum(1, a * np.sqrt(1.0 / d_ref) * np.abs(d))
    assert p_x.max() == pytest.approx(1.0)
    pq = np.outer(p_d, p_x)
    expected = -DW * 31 * pq * np.sign(np.outer(d, x))
    se = DW * np.sqrt(31 * pq * (1 - pq) / samples)
    mean = t.read_weights() / samples
    assert np.all(np.abs(mean - expected) <= K_SIGMA * se + 1e-12)
    assert np.all(np.abs(mean) < np.abs(lr * np.outer(d, x)))


# -- mini-batch aggregation ----------------------------------------------------------------------


def test_aggregated_batch_matches_sample_by_sample() -> None:
    """update.aggregate_batch True (all up and down counts of the batch in one pass per cell) vs
    False (one sample after another): same distribution of dW on a soft-bounds tile with default
    variations, batch 10. Same seed: identical devices; REPEATS updates from the same start,
    each with the batch in a fresh random order (the same orders for both).

    The order matters: with a FIXED order, sample-by-sample application fixes per cell whether
    its up or its down pulses come first, and on soft bounds that shifts the cell's mean by about
    +-n_up n_down dw^2 / b (the down step grows after the ups); aggregation applies the two
    directions in random order and averages that out. With this setup a fixed order gives per-cell
    mean differences of ~3.5% of mean |dW| (z variance 1.6 at 300 repeats, 4.3 at 1200).

    Checked (a) pooled mean and std of dW over cells and repeats (sim_helpers) and (b) per cell:
    the standardised difference of the two per-cell means, z = (m_a - m_b) / sqrt((v_a + v_b) /
    R), has mean 0 (SE 1/sqrt(cells)) and variance 1 (SE sqrt(2 / cells); t-like with R - 1 = 299
    degrees of freedom, whose variance 1.007 is well inside).
    """
    rows, cols, batch, repeats, lr = 16, 16, 10, 300, 0.01
    rng = np.random.default_rng(21)
    x = rng.uniform(-1, 1, (batch, cols))
    d = rng.uniform(-1, 1, (batch, rows))
    w0 = rng.uniform(-0.2, 0.2, (rows, cols))
    dws = {}
    for aggregate in (True, False):
        t = tile("soft-bounds", rows, cols, seed=8, dtype=np.float64,
                 update={"aggregate_batch": aggregate})
        changes = np.empty((repeats, rows, cols))
        orders = np.random.default_rng(5)
        for r in range(repeats):
            order = orders.permutation(batch)
            start = t.program_weights(w0)
            t.update(x[order], d[order], lr)
            changes[r] = t.read_weights() - start
        dws[aggregate] = changes
    a, b = dws[True], dws[False]
    assert_same_distribution(a, b, "dW pooled")
    var = a.var(axis=0, ddof=1) + b.var(axis=0, ddof=1)
    live = var > 0
    z = (a.mean(axis=0) - b.mean(axis=0))[live] / np.sqrt(var[live] / repeats)
    n = z.size
    assert n > 0.9 * rows * cols
    assert abs(z.mean()) <= K_SIGMA / np.sqrt(n)
    assert abs(z.var() - 1) <= K_SIGMA * np.sqrt(2 / n) + 0.01


def test_ideal_mode_is_exact() -> None:
    t = tile("soft-bounds", 4, 5, update={"mode": "ideal"})
    rng = np.random.default_rng(0)
    x, d = rng.normal(size=(3, 5)), rng.normal(size=(3, 4))
    t.update(x, d, 0.1)
    np.testing.assert_allclose(t.read_weights(), -0.1 * d.T @ x, rtol=1e-12, atol=1e-15)


def test_expected_mode_is_the_papers_ald_step() -> None:
    """ALD (soft bounds +-tau, no variation): W <- W + dW - |dW| W / tau, per sample."""
    tau = 0.8
    t = tile("soft-bounds", 4, 5, exact=True, tau=tau, update={"mode": "expected"})
    rng = np.random.default_rng(1)
    w = rng.uniform(-0.5, 0.5, (4, 5))
    t.program_weights(w)
    x, d = rng.normal(size=(2, 5)), rng.normal(size=(2, 4))
    t.update(x, d, 0.05)
    for s in range(2):
        dw = -0.05 * np.outer(d[s], x[s])
        w = w + dw - np.abs(dw) * w / tau
    np.testing.assert_allclose(t.read_weights(), w, rtol=1e-12, atol=1e-14)
