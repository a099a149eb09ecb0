"""The compiled read periphery (sim.read_kernel) against the numpy reference (sim.periphery).

Where nothing is random (a perfect periphery, or no noise) the two must agree bit for bit. With
noise they draw different numbers, so they are compared in distribution: every output of a
fixed (W, x) is sampled N times by each path (fresh keys: one per call), and each output's mean
and standard deviation are compared by a z-score, ``(a - b) / SE`` with the SE of the
difference (``sim_helpers.std_error_of_std`` for the spreads, from each sample's own kurtosis).
A test makes m such comparisons; it fails if any ``|z|`` exceeds the Bonferroni bound
``z_max = Phi^-1(1 - 1e-6 / (2 m))`` (5.36 for the m = 12 of batch 1 with 6 outputs, 5.76 for
the m = 120 of batch 10), so a correct kernel fails a test by chance with probability below
1e-6; the seeds are fixed, so a pass is reproducible. With N = 3000 draws a side this detects a
mean bias of 0.15 noise std (``z_max sqrt(2 / N)``: a fifth of an ADC step at the defaults; a
DAC tie rounded the wrong way shifts the output by 3 %) and a spread wrong by about 11 %
(``z_max sqrt(2 (kurtosis - 1) / (4 N))``, kurtosis 3).
"""

from __future__ import annotations

import tracemalloc
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sim_helpers import std_error_of_std

from hilctl.config import PeripheryConfig
from sim.periphery import adc_step, analog_mvm, dac_step
from sim.read_kernel import compiled_mvm

PATHS = {"numpy": analog_mvm, "compiled": compiled_mvm}
DEFAULT = PeripheryConfig()
QUIET = PeripheryConfig(out_noise=0.0)
R_OUT = adc_step(DEFAULT)
DRAWS = 3000
FAMILY_ALPHA = 1e-6


def _problem(batch: int, saturating: bool, rows: int = 6, cols: int = 16,
             seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Float32 weights and inputs; ``saturating`` weights make ``max |W x / nm|`` exceed
    out_bound for the first sample (15.9: reduction 2) and, in a batch, for the last (+-1
    inputs, 32: reduction 4, with DAC ties at 2) and by chance for some near 12."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-0.5, 0.5, (rows, cols)).astype(np.float32)
    x = rng.uniform(-1, 1, (batch, cols))
    if saturating:
        w *= 8
        if batch > 1:
            x[-1] = np.sign(w[0])
    return w, x


def _samples(path: str, w: np.ndarray, x: np.ndarray, cfg: PeripheryConfig, seed: int
             ) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([PATHS[path](w, x, cfg, rng) for _ in range(DRAWS)])


def _z_bound(comparisons: int) -> float:
    return NormalDist().inv_cdf(1 - FAMILY_ALPHA / (2 * comparisons))


def _assert_same_distribution(a: np.ndarray, b: np.ndarray) -> None:
    """Per output (the trailing axes): means and spreads within the Bonferroni bound."""
    a = a.reshape(a.shape[0], -1)
    b = b.reshape(b.shape[0], -1)
    bound = _z_bound(2 * a.shape[1])
    for j in range(a.shape[1]):
        se_mean = np.sqrt(a[:, j].var() / a.shape[0] + b[:, j].var() / b.shape[0])
        se_std = np.hypot(std_error_of_std(a[:, j]), std_error_of_std(b[:, j]))
        if se_mean == 0:  # the same constant in both (a clipped output, say)
            assert a[0, j] == b[0, j], f"output {j}: constant {a[0, j]} vs {b[0, j]}"
            continue
        z_mean = (a[:, j].mean() - b[:, j].mean()) / se_mean
        z_std = (a[:, j].std() - b[:, j].std()) / se_std if se_std > 0 else 0.0
        assert abs(z_mean) <= bound, f"output {j}: mean z = {z_mean:.2f} (bound {bound:.2f})"
        assert abs(z_std) <= bound, f"output {j}: spread z = {z_std:.2f} (bound {bound:.2f})"


NOISES = {"out": dict(out_noise=0.06), "out+w": dict(out_noise=0.06, w_noise=0.02),
          "w": dict(out_noise=0.0, w_noise=0.05)}


@pytest.mark.parametrize("batch", [1, 10])
@pytest.mark.parametrize("saturating", [False, True], ids=["unsaturated", "bound-management"])
@pytest.mark.parametrize("nm", ["abs-max", "none"])
@pytest.mark.parametrize("noise", list(NOISES))
def test_same_distribution_as_numpy(noise: str, nm: str, saturating: bool, batch: int) -> None:
    w, x = _problem(batch, saturating)
    cfg = PeripheryConfig(noise_management=nm, **NOISES[noise])
    ours = _samples("compiled", w, x, cfg, seed=1)
    reference = _samples("numpy", w, x, cfg, seed=2)
    if saturating:  # bound management is reached: outputs beyond +-out_bound * nm
        nm_scale = np.abs(x).max(axis=1, keepdims=True) if nm == "abs-max" else 1.0
        assert np.abs(reference / nm_scale).max() > cfg.out_bound
    _assert_same_distribution(ours, reference)


def test_distribution_check_has_power() -> None:
    """The comparison sees what it must: tied inputs rounded up (32 DAC steps, not 31: the same
    as weights 32/31 larger), and output noise 25 % too large."""
    w = np.full((2, 4), 5.0, dtype=np.float32)
    x = np.array([[1.0, -1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]])  # the second ties at red = 2
    ours = _samples("compiled", w, x, DEFAULT, seed=1)
    with pytest.raises(AssertionError, match="mean z"):
        _assert_same_distribution(ours, _samples("numpy", w * np.float32(32 / 31), x, DEFAULT,
                                                 seed=2))
    with pytest.raises(AssertionError, match="spread z"):
        _assert_same_distribution(ours, _samples("numpy", w, x,
                                                 PeripheryConfig(out_noise=0.075), seed=2))


# -- no randomness: bit for bit ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("transposed", [False, True])
def test_perfect_periphery_is_the_numpy_product(dtype: type, transposed: bool) -> None:
    w, x = _problem(10, False)
    w = w.astype(dtype)
    if transposed:
        w, x = w.T, np.random.default_rng(3).uniform(-1, 1, (10, w.shape[0]))
    cfg = PeripheryConfig(is_perfect=True)
    y = compiled_mvm(w, x, cfg, np.random.default_rng(0))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, analog_mvm(w, x, cfg, np.random.default_rng(0)))
    np.testing.assert_array_equal(y, (x.astype(dtype) @ w.T).astype(np.float64))


@pytest.mark.parametrize("batch", [1, 10])
@pytest.mark.parametrize("saturating", [False, True], ids=["unsaturated", "bound-management"])
@pytest.mark.parametrize("nm", ["abs-max", "none"])
@pytest.mark.parametrize("bm", ["iterative", "none"])
def test_without_noise_equals_numpy(bm: str, nm: str, saturating: bool, batch: int) -> None:
    w, x = _problem(batch, saturating)
    x[0, 3] = np.abs(x[0]).max()  # a tie at red = 2
    cfg = PeripheryConfig(out_noise=0.0, noise_management=nm, bound_management=bm)
    for weights, inputs in ((w, x), (w.T, x @ w.T)):  # forward; backward through a view
        y = compiled_mvm(weights, inputs, cfg, np.random.default_rng(0))
        np.testing.assert_array_equal(y, analog_mvm(weights, inputs, cfg, np.random.default_rng(0)))


@settings(max_examples=60, deadline=None)
@given(w=arrays(np.float32, (3, 5), elements=st.floats(-20, 20, width=32)),
       x=arrays(np.float64, (4, 5), elements=st.floats(-1e3, 1e3)),
       inp_res=st.sampled_from([0.0, 1 / 126, 1 / 30]), out_res=st.sampled_from([0.0, 1 / 510]),
       nm=st.sampled_from(["abs-max", "none"]), bm=st.sampled_from(["iterative", "none"]))
def test_without_noise_equals_numpy_property(w, x, inp_res, out_res, nm, bm) -> None:
    cfg = PeripheryConfig(out_noise=0.0, inp_res=inp_res, out_res=out_res, noise_management=nm,
                          bound_management=bm)
    y = compiled_mvm(w, x, cfg, np.random.default_rng(0))
    np.testing.assert_array_equal(y, analog_mvm(w, x, cfg, np.random.default_rng(0)))


# -- properties of both paths --------------------------------------------------------------------

@pytest.mark.parametrize("path", list(PATHS))
def test_outputs_on_the_adc_grid(path: str) -> None:
    """Every output is k r_out nm red with k an integer (red is an integer too, so k r_out nm
    covers every reduction; the clip level out_bound = 255 r_out is on the grid)."""
    w, x = _problem(10, True)
    y = PATHS[path](w, x, PeripheryConfig(w_noise=0.02), np.random.default_rng(0))
    steps = y / (np.abs(x).max(axis=1, keepdims=True) * R_OUT)
    np.testing.assert_allclose(steps, np.rint(steps), rtol=0, atol=1e-6)


@pytest.mark.parametrize("path", list(PATHS))
def test_dac_ties_round_down(path: str) -> None:
    """0.5 nm is 31.5 DAC steps in exact arithmetic; in float32 (aihwkit) 0.5f / r_in =
    31.499998, so it rounds down to 31 steps: directly, and through bound management (+-1
    inputs of a saturating sample halved; aihwkit 1.1.0 gives 19.670589 here)."""
    mvm = PATHS[path]
    r_in = dac_step(DEFAULT)
    direct = mvm(np.eye(3, dtype=np.float32), np.array([[1.0, 0.5, -0.5]]),
                 PeripheryConfig(out_noise=0.0, out_res=0.0, bound_management="none"),
                 np.random.default_rng(0))
    np.testing.assert_array_equal(direct[0], [1.0, 31 * r_in, -31 * r_in])
    halved = mvm(np.full((2, 4), 5.0, dtype=np.float32), np.ones((1, 4)), QUIET,
                 np.random.default_rng(0))
    assert halved[0, 0] == pytest.approx(19.670589, rel=1e-7)


@pytest.mark.parametrize("path", list(PATHS))
def test_all_zero_inputs_give_zeros(path: str) -> None:
    w, x = _problem(4, True)
    x[[0, 2]] = 0.0
    y = PATHS[path](w, x, PeripheryConfig(w_noise=0.05), np.random.default_rng(0))
    np.testing.assert_array_equal(y[[0, 2]], 0.0)
    assert np.all(y[[1, 3]] != 0.0)


@pytest.mark.parametrize("view", ["transposed", "strided"])
def test_weight_layout_does_not_change_the_result(view: str) -> None:
    """A non-contiguous view of the weights gives what a contiguous copy gives, noise included
    (the same key draws the same numbers)."""
    rng = np.random.default_rng(5)
    base = rng.uniform(-1, 1, (24, 32)).astype(np.float32)
    weights = base.T if view == "transposed" else base[::2, ::2]
    x = rng.uniform(-1, 1, (10, weights.shape[1]))
    copy = np.ascontiguousarray(weights)
    for cfg in (DEFAULT, PeripheryConfig(w_noise=0.02, noise_management="none")):
        np.testing.assert_array_equal(
            compiled_mvm(weights, x, cfg, np.random.default_rng(0)),
            compiled_mvm(copy, x, cfg, np.random.default_rng(0)))


def test_backward_view_is_not_copied() -> None:
    """The backward pass hands the transposed view to BLAS: one call allocates far less than the
    2 MiB weight matrix."""
    weights = np.random.default_rng(0).uniform(-1, 1, (1024, 512)).astype(np.float32)
    d = np.random.default_rng(1).uniform(-1, 1, (1, 1024))
    compiled_mvm(weights.T, d, DEFAULT, np.random.default_rng(0))  # compiled before measuring
    tracemalloc.start()
    try:
        compiled_mvm(weights.T, d, DEFAULT, np.random.default_rng(0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < weights.nbytes / 16


def test_same_key_same_result_and_keys_advance() -> None:
    w, x = _problem(10, True)
    first = compiled_mvm(w, x, DEFAULT, np.random.default_rng(4))
    np.testing.assert_array_equal(first, compiled_mvm(w, x, DEFAULT, np.random.default_rng(4)))
    rng = np.random.default_rng(4)
    compiled_mvm(w, x, DEFAULT, rng)
    assert not np.array_equal(first, compiled_mvm(w, x, DEFAULT, rng))


@settings(max_examples=60, deadline=None)
@given(x=arrays(np.float64, (3, 6), elements=st.one_of(st.floats(-1e300, 1e300),
                                                       st.floats(-1e-300, 1e-300))),
       nm=st.sampled_from(["abs-max", "none"]), bm=st.sampled_from(["iterative", "none"]),
       path=st.sampled_from(list(PATHS)))
def test_outputs_finite_and_bounded(x, nm, bm, path) -> None:
    """Any input up to 1e300, beyond float32's range or below its smallest number: a finite
    output within +-out_bound * nm * red_max (red_max 16 at the defaults, 1 without bound
    management)."""
    cfg = PeripheryConfig(w_noise=0.05, noise_management=nm, bound_management=bm)
    w = np.random.default_rng(0).uniform(-3, 3, (4, 6)).astype(np.float32)
    y = PATHS[path](w, x, cfg, np.random.default_rng(0))
    assert np.all(np.isfinite(y))
    nm_scale = np.abs(x).max(axis=1, keepdims=True) if nm == "abs-max" else 1.0
    red_max = 16 if bm == "iterative" else 1
    assert np.all(np.abs(y) <= cfg.out_bound * nm_scale * red_max * (1 + 1e-12))
