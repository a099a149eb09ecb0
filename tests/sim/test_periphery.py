"""Read periphery (docs/emulator.md, section 6; aihwkit 1.1.0 IOParameters)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sim_helpers import assert_mean_close, assert_std_close

from hilctl.config import PeripheryConfig
from sim.periphery import analog_mvm, dac_step

DEFAULT = PeripheryConfig()
R_IN = 2 * DEFAULT.inp_bound * DEFAULT.inp_res  # 1/63
R_IN32 = dac_step(DEFAULT)  # the DAC step as aihwkit forms it in float32: 0.015873017 > 1/63
R_OUT = 2 * DEFAULT.out_bound * DEFAULT.out_res  # 24/510
QUIET = PeripheryConfig(out_noise=0.0)


def _rng() -> np.random.Generator:
    return np.random.default_rng(0)


@settings(max_examples=50, deadline=None)
@given(w=arrays(np.float64, (3, 4), elements=st.floats(-5, 5)),
       x=arrays(np.float64, (2, 4), elements=st.floats(-100, 100)))
def test_perfect_periphery_is_exact(w, x) -> None:
    y = analog_mvm(w, x, PeripheryConfig(is_perfect=True), _rng())
    np.testing.assert_array_equal(y, x @ w.T)


def test_dac_quantisation_step() -> None:
    """One-hot rows of W pick single quantised inputs: x_q = rint((x / nm) / r_in) r_in nm, in
    float32 as aihwkit computes it."""
    w = np.eye(5)
    x = np.array([[1.0, 0.3, 0.01, -0.33, 0.0079]])
    cfg = PeripheryConfig(out_noise=0.0, out_res=0.0)
    y = analog_mvm(w, x, cfg, _rng())
    x32 = x.astype(np.float32)
    np.testing.assert_array_equal(y, np.rint(x32 / R_IN32) * R_IN32)
    assert y[0, 4] == 0.0  # below half a DAC step


def test_dac_step_is_formed_in_float32() -> None:
    assert dac_step(DEFAULT) == np.float32(1 / 126) * np.float32(2)
    assert dac_step(DEFAULT).dtype == np.float32
    assert float(R_IN32) > R_IN


def test_dac_ties_round_down() -> None:
    """An input half a DAC step above a level in exact arithmetic (0.5 nm = 31.5 r_in) rounds as
    float32 division does: 0.5f / r_in = 31.499998, so down to 31 r_in, as in aihwkit 1.1.0
    (a float64 DAC rounds half to even, up to 32: every tied input one step too large)."""
    cfg = PeripheryConfig(out_noise=0.0, out_res=0.0, bound_management="none")
    y = analog_mvm(np.eye(3), np.array([[1.0, 0.5, -0.5]]), cfg, _rng())
    np.testing.assert_array_equal(y[0], [1.0, 31 * R_IN32, -31 * R_IN32])


def test_dac_ties_round_down_under_bound_management() -> None:
    """W x / nm = 20 saturates, so bound management halves the input: every +-1 input lands on
    the tie 0.5 = 31.5 r_in and rounds down. aihwkit 1.1.0 gives 19.670589 (float32) here; a
    float64 DAC gives 20.329412, 3.4 % more."""
    y = analog_mvm(np.full((2, 4), 5.0, dtype=np.float32), np.ones((1, 4)), QUIET, _rng())
    x_q = np.full(4, 31 * R_IN32, dtype=np.float32)
    expected = np.rint(float(x_q @ np.full(4, 5.0, dtype=np.float32)) / R_OUT) * R_OUT * 2
    np.testing.assert_array_equal(y[0], [expected, expected])
    assert y[0, 0] == pytest.approx(19.670589, rel=1e-7)


def test_adc_quantisation_step_and_clipping() -> None:
    """Outputs are multiples of r_out = 2 out_bound out_res (times the input scale)."""
    w = np.array([[1.0], [2.3], [-5.55], [0.01]])
    x = np.array([[1.0]])
    y = analog_mvm(w, x, PeripheryConfig(out_noise=0.0, inp_res=0.0,
                                         bound_management="none"), _rng())
    np.testing.assert_allclose(y[0], np.rint(w[:, 0] / R_OUT) * R_OUT, rtol=0, atol=1e-12)
    # clipping at out_bound without bound management
    big = analog_mvm(np.array([[30.0], [-30.0]]), x,
                     PeripheryConfig(out_noise=0.0, bound_management="none"), _rng())
    np.testing.assert_array_equal(big[0], [DEFAULT.out_bound, -DEFAULT.out_bound])


def test_input_clipping_without_noise_management() -> None:
    cfg = PeripheryConfig(out_noise=0.0, out_res=0.0, inp_res=0.0, noise_management="none",
                          bound_management="none")
    y = analog_mvm(np.eye(3), np.array([[3.0, -2.0, 0.4]]), cfg, _rng())
    np.testing.assert_allclose(y[0], [1.0, -1.0, 0.4])


def test_output_noise_std() -> None:
    """W = 0: the output is out_noise xi, ADC-quantised, times nm = max|x| = 2. The std of a
    quantised normal is sqrt(sigma^2 + r_out^2 / 12) (Sheppard), SE from sim_helpers."""
    n = 20_000
    x = np.zeros((n, 4))
    x[:, 0] = 2.0
    y = analog_mvm(np.zeros((3, 4)), x, DEFAULT, _rng())
    expected = 2.0 * np.sqrt(DEFAULT.out_noise**2 + R_OUT**2 / 12)
    assert_mean_close(y, 0.0)
    assert_std_close(y, expected, "output noise std")


@settings(max_examples=30, deadline=None)
@given(scale=st.sampled_from([1e-3, 0.1, 2.0, 64.0, 1e4]), seed=st.integers(0, 100))
def test_noise_management_scales_linearly(scale: float, seed: int) -> None:
    """abs-max noise management: output(c x) = c output(x), exactly without noise (powers of two
    keep the division exact; other c to float rounding)."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.5, 0.5, (4, 6))
    x = rng.uniform(-1, 1, (3, 6))
    base = analog_mvm(w, x, QUIET, _rng())
    scaled = analog_mvm(w, scale * x, QUIET, _rng())
    np.testing.assert_allclose(scaled, scale * base, rtol=1e-9, atol=1e-12 * scale)


def test_zero_input_gives_zero_output() -> None:
    y = analog_mvm(np.ones((3, 4)), np.zeros((2, 4)), DEFAULT, _rng())
    np.testing.assert_array_equal(y, 0.0)


def test_iterative_bound_management_unsaturates() -> None:
    """W x / nm = 20 saturates at red = 1 (out_bound 12); halving once gives 10: unsaturated, and
    the output is W x to within half a DAC step per input (sum |W| r_in / 2) plus half an ADC step,
    times nm red = 2. (x / nm / 2 = 0.5 is a DAC tie: 31.5 steps, rounded down to 31.)"""
    w = np.full((2, 4), 5.0)
    x = np.array([[1.0, 1.0, 1.0, 1.0]])
    y = analog_mvm(w, x, QUIET, _rng())
    bound = (np.abs(w).sum(axis=1) * R_IN / 2 + R_OUT / 2) * 2
    assert np.all(np.abs(y - 20.0) <= bound + 1e-12)
    assert np.all(y < DEFAULT.out_bound * 2)  # not clipped
    no_bm = analog_mvm(w, x, QUIET.model_copy(update={"bound_management": "none"}), _rng())
    np.testing.assert_array_equal(no_bm, DEFAULT.out_bound)


def test_bound_management_reduction_is_capped_at_16() -> None:
    """Defaults: red <= max_bm_res / r_in = 0.25 * 63 = 15.75 stops the doubling at red = 16, so
    W x / nm = 1000 comes out clipped at out_bound * 16 = 192."""
    w = np.full((1, 4), 250.0)
    y = analog_mvm(w, np.ones((1, 4)), QUIET, _rng())
    assert y[0, 0] == pytest.approx(DEFAULT.out_bound * 16)
    # with max_bm_factor 4 the cap is red = 8 (the loop doubles while red <= 4)
    capped = analog_mvm(w, np.ones((1, 4)), QUIET.model_copy(update={"max_bm_factor": 4}), _rng())
    assert capped[0, 0] == pytest.approx(DEFAULT.out_bound * 8)


# -- against aihwkit 1.1.0's forward -------------------------------------------------------------

FORWARD = json.loads((Path(__file__).parents[1] / "data" / "aihwkit_forward.json").read_text())


@pytest.mark.parametrize("case", FORWARD["cases"], ids=[c["label"] for c in FORWARD["cases"]])
def test_forward_matches_aihwkit(case: dict) -> None:
    """Same float32 weights and inputs, out_noise 0 (fixture from aihwkit 1.1.0): the outputs
    agree to float32 rounding, with bound management too (red = 2 there; the largest input of
    each sample then sits on a DAC tie, and rounds down in both)."""
    w = np.array(case["weights"], dtype=np.float32)
    x = np.array(case["x"])
    expected = np.array(case["y"])
    ours = analog_mvm(w, x, QUIET, _rng())
    nm = np.abs(x).max(axis=1, keepdims=True)
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6 * nm.max())
    if case["label"] == "normal":
        np.testing.assert_array_equal(ours[3], 0.0)  # the zero input row
    else:
        ideal = np.array(case["ideal"]) / nm
        assert np.all(np.abs(ideal).max(axis=1) > DEFAULT.out_bound)  # saturates at red = 1
        assert np.all(np.abs(ideal).max(axis=1) / 2 < DEFAULT.out_bound - R_OUT)  # not at red 2
