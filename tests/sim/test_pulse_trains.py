"""Stochastic pulse trains (docs/emulator.md, section 3; aihwkit 1.1.0's UM/BL management)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sim_helpers import K_SIGMA

from hilctl.config import UpdateConfig
from hilctl.pulse_trains import bit_lengths, coincidences, firing_probabilities

G = 0.001  # granularity


def _reference(x: np.ndarray, d: np.ndarray, lr: float, cfg: UpdateConfig):
    """The formulas written out for one sample (aihwkit's rpu_weight_updater semantics)."""
    xm, dm = np.abs(x).max(), np.abs(d).max()
    k = (lr / G) * xm * dm  # in the code's order: the two orders differ where x d underflows
    if k == 0:
        return np.zeros_like(x), np.zeros_like(d), 0
    bl = min(int(np.ceil(k)), cfg.desired_bl) if cfg.update_bl_management else cfg.desired_bl
    a = b = np.sqrt(lr / (G * bl))
    if cfg.update_management:
        d_ref = dm * (cfg.desired_bl / k if k > cfg.desired_bl else 1.0)
        a, b = a * np.sqrt(xm / d_ref), b * np.sqrt(d_ref / xm)
    return np.minimum(1, b * np.abs(x)), np.minimum(1, a * np.abs(d)), bl


vec = st.integers(1, 6).flatmap(
    lambda n: arrays(np.float64, n, elements=st.floats(-2, 2, allow_subnormal=False)))


@settings(max_examples=200, deadline=None)
@given(x=vec, d=vec, lr=st.floats(1e-5, 1.0), um=st.booleans(), blm=st.booleans(),
       bl=st.integers(1, 100))
def test_probabilities_match_formulas(x, d, lr, um, blm, bl) -> None:
    cfg = UpdateConfig(update_management=um, update_bl_management=blm, desired_bl=bl)
    p_x, p_d, bls = firing_probabilities(x[None], d[None], lr, G, cfg)
    rx, rd, rbl = _reference(x, d, lr, cfg)
    assert bls[0] == rbl
    np.testing.assert_allclose(p_x[0], rx, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(p_d[0], rd, rtol=1e-9, atol=1e-15)
    assert np.all((p_x >= 0) & (p_x <= 1)) and np.all((p_d >= 0) & (p_d <= 1))


@settings(max_examples=100, deadline=None)
@given(x=vec, d=vec, k=st.floats(1e-3, 31.0))
def test_unclipped_trains_give_the_exact_mean(x, d, k) -> None:
    """UM and BL management on and k <= desired_bl: BL p_x p_d G = lr |x d|, cell by cell."""
    cfg = UpdateConfig()
    scale = np.abs(x).max() * np.abs(d).max()
    assume(scale > 1e-100)
    lr = k * G / scale  # the lr that needs k pulses at the largest cell
    p_x, p_d, bl = firing_probabilities(x[None], d[None], lr, G, cfg)
    np.testing.assert_allclose(bl[0] * np.outer(p_d[0], p_x[0]) * G, lr * np.abs(np.outer(d, x)),
                               rtol=1e-9, atol=1e-18)


def test_bit_length_management() -> None:
    k = np.array([0.0, 0.2, 1.0, 1.0001, 7.5, 31.0, 31.5, 1e6])
    np.testing.assert_array_equal(bit_lengths(k, UpdateConfig()), [0, 1, 1, 2, 8, 31, 31, 31])
    np.testing.assert_array_equal(bit_lengths(k, UpdateConfig(desired_bl=5)), [0, 1, 1, 2, 5, 5, 5, 5])
    off = UpdateConfig(update_bl_management=False)
    np.testing.assert_array_equal(bit_lengths(k, off), [0] + [31] * 7)


def test_clipped_case_x_train_peaks_at_one() -> None:
    """k > desired_bl with UM: aihwkit shrinks d_max by desired_bl / k, so the x train peaks at
    probability exactly 1 and the large |d_i| saturate."""
    x = np.array([[0.5, -1.0, 0.25]])
    d = np.array([[2.0, -0.1, 1.0]])
    lr = 0.1  # k = 0.1 * 1 * 2 / 0.001 = 200 > 31
    p_x, p_d, bl = firing_probabilities(x, d, lr, G, UpdateConfig())
    assert bl[0] == 31
    assert p_x.max() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(p_x[0], np.abs(x[0]), rtol=1e-12)
    assert p_d[0, 0] == 1.0 and p_d[0, 2] == 1.0 and p_d[0, 1] < 1.0


@pytest.mark.parametrize("zero", ["x", "d"])
def test_zero_input_gives_no_pulses(zero: str) -> None:
    rng = np.random.default_rng(0)
    x, d = rng.normal(size=(2, 5)), rng.normal(size=(2, 4))
    if zero == "x":
        x[:] = 0
    else:
        d[:] = 0
    assert coincidences(x, d, 0.1, G, UpdateConfig(), rng) is None
    _, _, bl = firing_probabilities(x, d, 0.1, G, UpdateConfig())
    assert not bl.any()


@settings(max_examples=60, deadline=None)
@given(
    x=arrays(np.float64, 6, elements=st.sampled_from([-1.0, -0.3, 0.0, 0.5, 1.0])),
    d=arrays(np.float64, 5, elements=st.sampled_from([-1.0, -0.2, 0.0, 0.7, 1.0])),
    seed=st.integers(0, 1000),
)
def test_count_signs(x, d, seed) -> None:
    """d_i x_j < 0 -> only up pulses, > 0 -> only down pulses, = 0 -> none."""
    assume(np.abs(x).max() > 0 and np.abs(d).max() > 0)
    trains = coincidences(x[None], d[None], 0.02, G, UpdateConfig(), np.random.default_rng(seed))
    assert trains is not None
    up, down = trains.dense(True), trains.dense(False)
    product = np.outer(d, x)
    assert np.all(up[product >= 0] == 0)
    assert np.all(down[product <= 0] == 0)
    assert np.all((up >= 0) & (down >= 0))


def test_mean_counts_match_probabilities() -> None:
    """E[n_ij] = BL p_x_j p_d_i per sample; with M identical samples in one batch the mean count
    is within K_SIGMA binomial SEs sqrt(BL pq (1 - pq) / M) of it, in every cell."""
    x = np.array([0.9, -0.4, 0.1, -1.0])
    d = np.array([0.05, -0.2, 0.15])
    lr, samples = 0.05, 20_000
    cfg = UpdateConfig()
    p_x, p_d, bl = firing_probabilities(x[None], d[None], lr, G, cfg)
    pq = np.outer(p_d[0], p_x[0])
    trains = coincidences(np.tile(x, (samples, 1)), np.tile(d, (samples, 1)), lr, G, cfg,
                          np.random.default_rng(3))
    assert trains is not None
    counts = (trains.dense(True) + trains.dense(False)) / samples
    se = np.sqrt(bl[0] * pq * (1 - pq) / samples)
    assert np.all(np.abs(counts - bl[0] * pq) <= K_SIGMA * se)
