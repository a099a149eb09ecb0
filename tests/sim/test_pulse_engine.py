"""n same-sign pulses at once (closed form) against pulse by pulse (the definition).

docs/emulator.md, section 4: the closed form may be used only if it matches pulse-by-pulse application
in distribution, noise included. Both are run on identical devices (variations off, so every
cell is an independent sample of the same cell) and the means and stds over 20k cells are
compared with ``sim_helpers.assert_same_distribution`` (K_SIGMA combined standard errors).
"""

from __future__ import annotations

import numpy as np
import pytest
from sim_helpers import assert_mean_close, assert_same_distribution, tile

from sim.devices import make_device
from sim.pulse_engine import PulseWriter


def dense_counts(counts: np.ndarray):
    """``counts`` (tile shape) as the block callback PulseWriter.apply takes."""
    return lambda start, stop: counts[start:stop]

SHAPE = (100, 200)  # 20k cells: SE of a mean is std / 141
DW = 0.005

# (model, device overrides, start weight): bounds far enough that 200 pulses clip no cell
# (the 200-pulse spread is ~ sqrt(200) 0.3 DW = 0.02, the bound >= 10 spreads away).
CASES = {
    "soft-bounds": ("soft-bounds", {"w_max": 1.0, "w_min": -1.0}, 0.3),
    "soft-bounds-additive": ("soft-bounds", {"w_max": 1.0, "w_min": -1.0, "mult_noise": False},
                             0.3),
    "linear-step": ("linear-step", {"w_max": 1.0, "w_min": -1.0, "gamma_up": 0.5,
                                    "gamma_down": 0.5}, 0.0),
    "linear-step-additive": ("linear-step", {"w_max": 1.0, "w_min": -1.0, "gamma_up": 0.5,
                                             "gamma_down": 0.5, "mult_noise": False}, 0.0),
    "constant-step": ("constant-step", {"w_max": 2.0, "w_min": -2.0}, 0.0),
}


def _after(case: str, n: int, closed_form: bool, seed: int) -> np.ndarray:
    model, overrides, w0 = CASES[case]
    t = tile(model, *SHAPE, exact=True, dw_min_std=0.3, dw_min=DW, closed_form=closed_form,
             seed=seed, dtype=np.float64, **overrides)
    t.program_weights(np.full(SHAPE, w0))
    t.apply_pulses(np.full(SHAPE, n))
    return t.device_weights()


@pytest.mark.parametrize("n", [1, 5, 30, 200])
@pytest.mark.parametrize("case", list(CASES))
def test_closed_form_matches_pulse_by_pulse(case: str, n: int) -> None:
    closed = _after(case, n, closed_form=True, seed=1)
    pulsed = _after(case, n, closed_form=False, seed=2)
    assert closed.std() > 0 and pulsed.std() > 0  # the noise is really there
    assert_same_distribution(closed, pulsed, f"{case} n={n}")


@pytest.mark.parametrize("closed_form", [True, False])
@pytest.mark.parametrize("n", [5, 200])
def test_soft_bounds_mean_is_exact(n: int, closed_form: bool) -> None:
    """The increment is affine in w and the noise has mean 0, so the mean after n pulses is
    exactly b - (b - w0)(1 - dw/b)**n (no clipping happens here)."""
    w = _after("soft-bounds", n, closed_form, seed=3)
    assert_mean_close(w, 1 - (1 - 0.3) * (1 - DW) ** n, f"mean after {n}")


@pytest.mark.parametrize(("n_up", "n_down"), [(30, 50), (200, 5), (1, 1)])
@pytest.mark.parametrize("model", ["soft-bounds", "linear-step", "constant-step"])
def test_up_then_down_in_one_apply(model: str, n_up: int, n_down: int) -> None:
    """PulseWriter.apply with two directions (up counts, then down counts) chains the closed
    forms; it must match applying the same pulses one at a time."""
    _, overrides, _ = CASES[model]
    cfg = tile(model, 1, 1, exact=True, dw_min_std=0.3, dw_min=DW, **overrides).config.device
    results = []
    for seed, closed_form in ((4, True), (5, False)):
        dev = make_device(cfg, SHAPE, np.random.default_rng(0), np.float64)
        writer = PulseWriter(dev, np.random.default_rng(seed), closed_form=closed_form)
        weights = np.full(SHAPE, 0.1)
        writer.apply(weights, [(True, dense_counts(np.full(SHAPE, n_up))),
                               (False, dense_counts(np.full(SHAPE, n_down)))])
        results.append(weights)
    assert_same_distribution(*results, what=f"{model} +{n_up} -{n_down}")


def test_apply_signed_splits_directions() -> None:
    """Signed counts: + cells go up, - cells go down, 0 cells stay (no noise touches them)."""
    dev = make_device(tile("soft-bounds", 2, 3).config.device, (2, 3), np.random.default_rng(0),
                      np.float64)
    writer = PulseWriter(dev, np.random.default_rng(1))
    weights = np.zeros((2, 3))
    counts = np.array([[3, 0, -3], [0, 7, -1]])
    writer.apply_signed(weights, counts)
    assert np.all(np.sign(weights) == np.sign(counts))
    assert weights[0, 1] == 0 and weights[1, 0] == 0


# -- accumulated rounding over many pulses (docs/emulator.md, section 4.4; soft bounds) -------

N_PULSES = 300
TARGET = 1 - 0.99**N_PULSES  # soft bounds, dw 0.01, bounds +-1, from 0: distance shrinks by 0.99


def _soft_tile(dtype: type[np.floating], closed_form: bool):
    return tile("soft-bounds", 8, 8, exact=True, dw_min=0.01, w_max=1.0, w_min=-1.0,
                dtype=dtype, closed_form=closed_form)


@pytest.mark.parametrize("closed_form", [True, False])
def test_300_pulses_at_once_reach_the_closed_form_value(closed_form: bool) -> None:
    """Default float32 state: one apply_pulses(300) lands within 1e-6 of 1 - 0.99**300 in every
    cell (measured: 1.4e-7 closed form, 4.0e-8 pulse by pulse)."""
    t = _soft_tile(np.float32, closed_form)
    t.apply_pulses(np.full(t.shape, N_PULSES))
    np.testing.assert_allclose(t.device_weights(), TARGET, rtol=0, atol=1e-6)


@pytest.mark.parametrize("closed_form", [True, False])
def test_300_single_pulses_float64(closed_form: bool) -> None:
    """300 calls of one pulse each, float64 state: within 1e-6 (measured: <= 2.2e-16)."""
    t = _soft_tile(np.float64, closed_form)
    one = np.ones(t.shape, dtype=int)
    for _ in range(N_PULSES):
        t.apply_pulses(one)
    np.testing.assert_allclose(t.device_weights(), TARGET, rtol=0, atol=1e-6)


def test_300_single_pulses_float32_pulse_by_pulse() -> None:
    """float32, pulse by pulse: each pulse rounds w once (<= 2**-25 near 0.95), 300 of them stay
    within 1e-6 (measured 4.0e-8). The float32 *closed form* applied one pulse at a time
    accumulates 1.09e-6 here (exp(log g) in float32 per call): use dtype float64 for that."""
    t = _soft_tile(np.float32, closed_form=False)
    one = np.ones(t.shape, dtype=int)
    for _ in range(N_PULSES):
        t.apply_pulses(one)
    np.testing.assert_allclose(t.device_weights(), TARGET, rtol=0, atol=1e-6)


# -- chained directions that hit a bound -----------------------------------------------------


@pytest.mark.parametrize("model", ["constant-step", "linear-step"])
def test_chained_directions_clip_in_between(model: str) -> None:
    """No noise, w0 = 0.5, b_max = 0.6, dw 0.01: 30 ups then 30 downs. Pulse by pulse the ups
    stop at 0.6 and the downs end at 0.3 (constant step); the closed form must agree."""
    extra = {"gamma_up": 0.5, "gamma_down": 0.5} if model == "linear-step" else {}
    cfg = tile(model, 1, 1, exact=True, dw_min=0.01, **extra).config.device
    results = []
    for closed_form in (True, False):
        dev = make_device(cfg, (2, 2), np.random.default_rng(0), np.float64)
        weights = np.full((2, 2), 0.5)
        PulseWriter(dev, np.random.default_rng(1), closed_form).apply(
            weights, [(True, dense_counts(np.full((2, 2), 30))),
                      (False, dense_counts(np.full((2, 2), 30)))])
        results.append(weights)
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-12)


def test_aggregated_update_near_a_bound_matches_pulse_by_pulse() -> None:
    """Through EmulatedTile.update: a batch of two samples whose pulse counts are certain (lr 0.3,
    dw 0.01, |x| = |d| = 1: k = 30 = BL, every slot fires) gives each cell 30 ups and 30 downs,
    applied up-first or down-first at random per update. With no noise, from w0 = 0.5 and
    b_max = 0.6, pulse by pulse gives 0.3 (ups stop at the bound) or 0.5 (downs first): both the
    closed form and the pulse-by-pulse tile must land on exactly one of these, every time, and
    eight updates must see both orders (probability 1 - 2 * 2**-8 per tile)."""
    x = np.ones((2, 3))
    d = np.array([[-1.0, -1.0], [1.0, 1.0]])  # sample 0: up, sample 1: down
    for closed_form in (True, False):
        t = tile("constant-step", 2, 3, exact=True, dw_min=0.01, closed_form=closed_form, seed=2)
        seen = set()
        for _ in range(8):
            t.program_weights(np.full((2, 3), 0.5))
            t.update(x, d, 0.3)
            w = t.read_weights()
            assert np.allclose(w, 0.3, atol=1e-12) or np.allclose(w, 0.5, atol=1e-12), w
            seen.add(round(float(w[0, 0]), 6))
        assert seen == {0.3, 0.5}
