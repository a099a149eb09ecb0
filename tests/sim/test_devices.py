"""Device models against their equations (docs/emulator.md, section 2; aihwkit 1.1.0 semantics).

Steps are checked twice: ``device.step_up/step_down`` against the formula written out here, and
the actual change of a float64 tile after one pulse with ``dw_min_std = 0``. Device-to-device
draws are checked against the configured parameters with tolerances from the sample size (see
``sim_helpers``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import (
    K_SIGMA,
    MODELS,
    assert_mean_close,
    assert_std_close,
    device,
    std_error_of_std,
    tile,
)

from sim.devices import DeviceModel, SoftBounds

W_MAX, W_MIN, DW = 0.6, -0.6, 0.01
#: Weights inside [W_MIN, W_MAX] where the steps are compared (bounds and centre included).
GRID = np.array([W_MIN, -0.45, -0.2, -0.05, 0.0, 0.1, 0.3, 0.55, W_MAX])

StepPair = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _linear(g_up: float, g_down: float, dw_up: float, dw_down: float) -> StepPair:
    # aihwkit LinearStepDevice, mean_bound_reference: slopes relative to the MEAN w_max / w_min.
    return lambda w: (dw_up * (1 - g_up * w / W_MAX), dw_down * (1 - g_down * w / W_MIN))


def _soft(dw_up: float, dw_down: float) -> StepPair:
    return lambda w: (dw_up * (1 - w / W_MAX), dw_down * (1 - w / W_MIN))


def _pow(g_up: float, g_down: float) -> StepPair:
    def steps(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        omega = (W_MAX - w) / (W_MAX - W_MIN)
        return DW * omega**g_up, DW * (1 - omega) ** g_down

    return steps


def _exp(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # aihwkit ExpStepDevice defaults.
    a_up, a_down, g_up, g_down, a, b = 0.00081, 0.36833, 12.44625, 12.78785, 0.244, 0.2425
    z = 2 * a * w / (W_MAX - W_MIN) + b
    return (DW * np.maximum(1 - a_up * np.exp(g_up * z), 0),
            DW * np.maximum(1 - a_down * np.exp(-g_down * z), 0))


PIECE_UP = [2.0, 1.5, 1.0, 0.5, 0.1]
PIECE_DOWN = [0.1, 0.5, 1.0, 1.5, 2.0]


def _piecewise(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nodes = np.linspace(W_MIN, W_MAX, len(PIECE_UP))
    return DW * np.interp(w, nodes, PIECE_UP), DW * np.interp(w, nodes, PIECE_DOWN)


# (model, device overrides, expected (step_up, step_down) as functions of w)
CASES: list[tuple[str, dict, StepPair]] = [
    ("constant-step", {}, lambda w: (np.full_like(w, DW), np.full_like(w, DW))),
    # up_down > 0 shrinks the DOWN step (aihwkit: -up_down goes on the down step) ...
    ("constant-step", {"up_down": 0.2}, lambda w: (np.full_like(w, DW), np.full_like(w, 0.8 * DW))),
    # ... and up_down < 0 the UP step.
    ("constant-step", {"up_down": -0.2}, lambda w: (np.full_like(w, 0.8 * DW), np.full_like(w, DW))),
    ("linear-step", {"gamma_up": 0.5, "gamma_down": 0.3}, _linear(0.5, 0.3, DW, DW)),
    ("linear-step", {"gamma_up": 0.5, "gamma_down": 0.3, "up_down": 0.1},
     _linear(0.5, 0.3, DW, 0.9 * DW)),
    ("soft-bounds", {}, _soft(DW, DW)),
    ("soft-bounds", {"up_down": -0.3}, _soft(0.7 * DW, DW)),
    ("soft-bounds", {"mult_noise": False}, _soft(DW, DW)),
    ("pow-step", {}, _pow(1.0, 1.0)),
    # pow_up_down > 0 lowers the DOWN exponent: gamma_down = pow_gamma (1 - pow_up_down).
    ("pow-step", {"pow_gamma": 2.0, "pow_up_down": 0.3}, _pow(2.0, 1.4)),
    ("pow-step", {"pow_gamma": 2.0, "pow_up_down": -0.3}, _pow(1.4, 2.0)),
    ("exp-step", {}, _exp),
    ("piecewise", {"piecewise_up": PIECE_UP, "piecewise_down": PIECE_DOWN}, _piecewise),
]
IDS = [f"{m}-{'-'.join(f'{k}={v}' for k, v in o.items() if not isinstance(v, list)) or 'default'}"
       for m, o, _ in CASES]


def _exact_device(model: str, overrides: dict) -> DeviceModel:
    return device(model, (1, GRID.size), exact=True, dw_min=DW, w_max=W_MAX, w_min=W_MIN,
                  **overrides)


@pytest.mark.parametrize(("model", "overrides", "expected"), CASES, ids=IDS)
def test_step_functions_match_equation(model: str, overrides: dict, expected: StepPair) -> None:
    dev = _exact_device(model, overrides)
    w = GRID[None, :]
    up, down = expected(w)
    np.testing.assert_allclose(dev.step_up(w), up, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(dev.step_down(w), down, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("closed_form", [True, False], ids=["closed-form", "pulse-by-pulse"])
@pytest.mark.parametrize(("model", "overrides", "expected"), CASES, ids=IDS)
def test_one_pulse_moves_by_the_step(model: str, overrides: dict, expected: StepPair,
                                     closed_form: bool) -> None:
    """The change after one pulse (no cycle noise) is the step, clipped to the bounds."""
    t = tile(model, 1, GRID.size, exact=True, closed_form=closed_form, dw_min=DW, w_max=W_MAX,
             w_min=W_MIN, **overrides)
    w = GRID[None, :]
    up, down = expected(w)
    for sign, step in ((1, up), (-1, -down)):
        t.program_weights(w)
        t.apply_pulses(np.full(w.shape, sign))
        np.testing.assert_allclose(t.device_weights(), np.clip(w + step, W_MIN, W_MAX),
                                   rtol=0, atol=1e-14)


@pytest.mark.parametrize("model", MODELS)
def test_many_pulses_saturate_inside_the_bounds(model: str) -> None:
    """2000 up pulses (noise and variations on) end at or below b_max and never outside."""
    t = tile(model, 16, 16, dw_min=0.01, seed=3)
    b_min, b_max = t.device.bounds()
    t.apply_pulses(np.full(t.shape, 2000))
    w = t.device_weights()
    assert np.all(w <= b_max) and np.all(w >= b_min)
    if model == "constant-step":
        # 2000 * 0.01 * (1 - 0.3 * 4.5 at worst) is still far beyond any bound: every cell sits
        # exactly on its bound.
        np.testing.assert_array_equal(w, b_max.astype(np.float64))
    t.apply_pulses(np.full(t.shape, -4000))
    w = t.device_weights()
    assert np.all(w <= b_max) and np.all(w >= b_min)


@settings(max_examples=30, deadline=None)
@given(
    model=st.sampled_from(MODELS),
    seed=st.integers(0, 2**16),
    counts=st.lists(st.integers(-300, 300), min_size=12, max_size=12),
    closed_form=st.booleans(),
)
def test_weights_never_leave_the_bounds(model: str, seed: int, counts: list[int],
                                        closed_form: bool) -> None:
    t = tile(model, 3, 4, seed=seed, dw_min=0.02, dtype=np.float32, closed_form=closed_form)
    b_min, b_max = t.device.bounds()
    t.apply_pulses(np.reshape(counts, (3, 4)))
    t.apply_pulses(-np.reshape(counts, (3, 4))[::-1])
    w = t.device_weights()
    assert np.all(w >= b_min) and np.all(w <= b_max)


@settings(max_examples=40, deadline=None)
@given(model=st.sampled_from([m for m in MODELS if m != "piecewise"]), seed=st.integers(0, 999),
       w=st.lists(st.floats(-0.6, 0.6), min_size=2, max_size=8))
def test_steps_are_monotone_in_w(model: str, seed: int, w: list[float]) -> None:
    """Up steps never grow and down steps never shrink as w rises (every model with gamma >= 0
    and a monotone table); the symmetric point bisection relies on it."""
    dev = device(model, (1, 1), seed=seed, gamma_up=0.4, gamma_down=0.2) if model == "linear-step" \
        else device(model, (1, 1), seed=seed)
    ws = np.sort(np.asarray(w))
    sel = np.zeros(ws.size, dtype=np.intp)  # the one cell, at every weight
    up, down = dev.step_up(ws, sel), dev.step_down(ws, sel)
    assert np.all(np.diff(up) <= 1e-18) and np.all(np.diff(down) >= -1e-18)


# -- symmetric point -------------------------------------------------------------------------


def test_soft_bounds_symmetric_point_closed_form_equals_bisection() -> None:
    dev = device("soft-bounds", (32, 32), seed=4, up_down=0.05)
    closed = dev.symmetric_point()
    bisected = DeviceModel.symmetric_point(dev)  # the generic bisection of the base class
    np.testing.assert_allclose(closed, bisected, rtol=0, atol=1e-12)
    # and it is where the steps are equal
    np.testing.assert_allclose(dev.step_up(closed), dev.step_down(closed), rtol=1e-9)
    assert isinstance(dev, SoftBounds)


@pytest.mark.parametrize("model", ["soft-bounds", "linear-step", "pow-step", "exp-step"])
def test_alternating_pulses_converge_to_the_symmetric_point(model: str) -> None:
    """Up, down, up, down ... (no cycle noise) drives every cell to within one step of its
    symmetric point; in steady state a cell hops between two points one step apart around it."""
    extra = {"gamma_up": 0.5, "gamma_down": 0.5} if model == "linear-step" else {}
    # exp-step is flat over most of the range: a larger step makes it converge in time.
    dw = 0.05 if model == "exp-step" else 0.02
    t = tile(model, 8, 8, seed=5, dw_min=dw, dw_min_std=0.0, **extra)
    sp = t.symmetric_point()
    b_min, b_max = t.device.bounds()
    interior = (sp > b_min + 0.05) & (sp < b_max - 0.05)
    assert interior.mean() > 0.5, "the check needs cells with an interior symmetric point"
    one = np.ones(t.shape, dtype=int)
    for _ in range(1500):
        t.apply_pulses(one)
        t.apply_pulses(-one)
    w = t.device_weights()
    biggest_step = np.maximum(t.device.step_up(w), t.device.step_down(w))
    gap = np.abs(w - sp)[interior]
    assert np.all(gap <= biggest_step[interior]), f"max gap {gap.max():.3g}"


def test_constant_step_symmetric_point_is_the_bound_of_the_larger_step() -> None:
    dev = device("constant-step", (64, 64), seed=6)
    sp = dev.symmetric_point()
    b_min, b_max = dev.bounds()
    up, down = dev.cell("dw_up"), dev.cell("dw_down")
    np.testing.assert_array_equal(sp[up > down], b_max[up > down])
    np.testing.assert_array_equal(sp[up < down], b_min[up < down])


# -- device-to-device draws ------------------------------------------------------------------

N_CELLS = (200, 200)  # 40k cells: SE of a mean is std / 200


def test_common_draws_match_configured_parameters() -> None:
    """Narrow spreads (no abs/swap ever matters at 10 sigma): b = w (1 + dtod xi),
    dw_up/down = dw_min (gain +- r), gain = 1 + dw_min_dtod xi, r = up_down_dtod xi'."""
    dev = device("soft-bounds", N_CELLS, seed=7, w_max=0.6, w_min=-0.4, w_max_dtod=0.1,
                 w_min_dtod=0.05, dw_min=0.001, dw_min_dtod=0.1, up_down_dtod=0.02)
    b_max, b_min = dev.cell("b_max"), dev.cell("b_min")
    assert_mean_close(b_max, 0.6, "b_max mean")
    assert_std_close(b_max, 0.06, "b_max std")
    assert_mean_close(b_min, -0.4, "b_min mean")
    assert_std_close(b_min, 0.02, "b_min std")
    up, down = dev.cell("dw_up"), dev.cell("dw_down")
    for name, values in (("dw_up", up), ("dw_down", down)):
        assert_mean_close(values, 0.001, f"{name} mean")
        assert_std_close(values, 0.001 * np.hypot(0.1, 0.02), f"{name} std")
    # gain and imbalance separate: (up + down) / 2 = dw_min gain, (up - down) / 2 = dw_min r
    assert_std_close((up + down) / 2, 0.001 * 0.1, "gain spread")
    assert_std_close((up - down) / 2, 0.001 * 0.02, "imbalance spread")
    # bounds and steps are independent draws
    corr = np.corrcoef(b_max.ravel(), up.ravel())[0, 1]
    assert abs(corr) <= K_SIGMA / np.sqrt(b_max.size)


@pytest.mark.parametrize("up_down", [0.3, -0.3])
def test_systematic_up_down_imbalance(up_down: float) -> None:
    dev = device("constant-step", N_CELLS, seed=8, dw_min=0.001, up_down=up_down,
                 dw_min_dtod=0.1, up_down_dtod=0.0)  # gain - 0.3 > 0 in every cell: 7 sigma
    up, down = dev.cell("dw_up"), dev.cell("dw_down")
    # aihwkit: dw_up = dw_min (g + min(up_down, 0)), dw_down = dw_min (g - max(up_down, 0))
    np.testing.assert_allclose(up - down, 0.001 * up_down, rtol=1e-9)
    assert_mean_close(up, 0.001 * (1 + min(up_down, 0)), "dw_up mean")
    assert_mean_close(down, 0.001 * (1 - max(up_down, 0)), "dw_down mean")


def _reference_bounds(rng: np.random.Generator, n: int, w_max: float, w_min: float,
                      dtod_max: float, dtod_min: float) -> tuple[np.ndarray, np.ndarray]:
    """aihwkit 1.1.0's bound draw, written out: draw, swap if out of order, then abs."""
    b_max = w_max * (1 + dtod_max * rng.standard_normal(n))
    b_min = w_min * (1 + dtod_min * rng.standard_normal(n))
    hi, lo = np.maximum(b_max, b_min), np.minimum(b_max, b_min)
    return np.abs(hi), -np.abs(lo)


def test_wide_bound_spread_is_swapped_and_abs_as_aihwkit() -> None:
    """w_*_dtod = 2: most draws cross zero; the distribution must be aihwkit's swap + abs.

    Compared with an independent sample of the rule (same n): means and stds within K_SIGMA
    combined standard errors. aihwkit 1.1.0 itself (200x200, seed 3) gave b_max mean 1.070,
    std 0.802 and b_min mean -1.074, std 0.801.
    """
    dev = device("soft-bounds", N_CELLS, seed=9, w_max_dtod=2.0, w_min_dtod=2.0)
    b_max, b_min = dev.cell("b_max").ravel(), dev.cell("b_min").ravel()
    assert np.all(b_max > 0) and np.all(b_min < 0)
    ref_max, ref_min = _reference_bounds(np.random.default_rng(99), b_max.size, 0.6, -0.6, 2, 2)
    for ours, ref, name in ((b_max, ref_max, "b_max"), (b_min, ref_min, "b_min")):
        se = np.sqrt(ours.var() / ours.size + ref.var() / ref.size)
        assert abs(ours.mean() - ref.mean()) <= K_SIGMA * se, name
        se_std = np.hypot(std_error_of_std(ours), std_error_of_std(ref))
        assert abs(ours.std() - ref.std()) <= K_SIGMA * se_std, name
        # aihwkit's figures are a third independent sample of 40k cells
        aih_mean, aih_std = {"b_max": (1.0700824, 0.8019265), "b_min": (-1.074076, 0.801067)}[name]
        assert abs(ours.mean() - aih_mean) <= K_SIGMA * np.sqrt(2) * ours.std() / np.sqrt(ours.size)
        assert abs(ours.std() - aih_std) <= K_SIGMA * np.sqrt(2) * std_error_of_std(ours)


def test_linear_step_slopes_relative_to_mean_bounds() -> None:
    """Slopes are |gamma + gamma_dtod xi| (additive spread) and the increment's slope is
    -dw_up g_up / w_max with the MEAN w_max, even where the cell's own bound differs."""
    dev = device("linear-step", N_CELLS, seed=10, gamma_up=0.5, gamma_down=0.3,
                 gamma_up_dtod=0.1, gamma_down_dtod=0.1, w_max_dtod=0.3, w_min_dtod=0.3)
    g_up, g_down = dev.cell("gamma_up"), dev.cell("gamma_down")
    assert_mean_close(g_up, 0.5, "gamma_up mean")
    assert_std_close(g_up, 0.1, "gamma_up std")
    assert_mean_close(g_down, 0.3, "gamma_down mean")
    assert_std_close(g_down, 0.1, "gamma_down std")
    _, beta_up = dev.affine_increments(True)
    _, beta_down = dev.affine_increments(False)
    np.testing.assert_allclose(beta_up, -dev.cell("dw_up") * g_up / 0.6, rtol=1e-12)
    np.testing.assert_allclose(beta_down, dev.cell("dw_down") * g_down / -0.6, rtol=1e-12)


def test_linear_step_default_slopes_are_half_normal() -> None:
    """gamma = 0, gamma_dtod = 0.05: g = |0.05 xi|, mean 0.05 sqrt(2/pi), std 0.05 sqrt(1-2/pi)."""
    dev = device("linear-step", N_CELLS, seed=11)
    for name in ("gamma_up", "gamma_down"):
        g = dev.cell(name)
        assert np.all(g >= 0)
        assert_mean_close(g, 0.05 * np.sqrt(2 / np.pi), f"{name} mean")
        assert_std_close(g, 0.05 * np.sqrt(1 - 2 / np.pi), f"{name} std")


def test_pow_step_exponent_draws() -> None:
    """g_up/down = |pow_gamma (gain +- r + bias)|, gain = 1 + pow_gamma_dtod xi, r =
    pow_up_down_dtod xi'; a positive pow_up_down lowers the down exponent. aihwkit 1.1.0 (same
    parameters, 200x200): g_up 1.9993 +- 0.2239, g_down 1.4003 +- 0.2243, corr 0.597."""
    dev = device("pow-step", N_CELLS, seed=12, pow_gamma=2.0, pow_gamma_dtod=0.1,
                 pow_up_down=0.3, pow_up_down_dtod=0.05)
    g_up, g_down = dev.cell("gamma_up"), dev.cell("gamma_down")
    spread = 2.0 * np.hypot(0.1, 0.05)
    assert_mean_close(g_up, 2.0, "gamma_up mean")
    assert_mean_close(g_down, 2.0 * (1 - 0.3), "gamma_down mean")
    assert_std_close(g_up, spread, "gamma_up std")
    assert_std_close(g_down, spread, "gamma_down std")
    # shared gain, opposite imbalance: corr = (0.1^2 - 0.05^2) / (0.1^2 + 0.05^2) = 0.6; the SE
    # of a correlation is (1 - rho^2) / sqrt(n).
    corr = np.corrcoef(g_up.ravel(), g_down.ravel())[0, 1]
    assert abs(corr - 0.6) <= K_SIGMA * (1 - 0.36) / np.sqrt(g_up.size)


def test_variation_is_seeded() -> None:
    a, b, c = (device("soft-bounds", (16, 16), seed=s) for s in (1, 1, 2))
    for name in a.cells:
        np.testing.assert_array_equal(a.cells[name], b.cells[name])
    assert not np.array_equal(a.cells["dw_up"], c.cells["dw_up"])
