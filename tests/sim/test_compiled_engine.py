"""The compiled update engine (numba) against its equations and against the numpy reference.

The two engines draw different random numbers, so they are compared in distribution: per cell,
over many seeds, the means and spreads of the weights after a run of pulsed updates. Each cell's
mean difference is a z-score from the two samples' standard errors; with 100 cells per model
and |z| < 5 the chance of a false alarm is below 1e-4 per test. Spreads are compared by the log
of their ratio, whose standard error for two samples of n is about sqrt(1 / (n - 1)) (normal
weights); the bound is 5 of those.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.engine
from hilctl.config import DEVICE_CONFIGS, UpdateConfig, no_variation, tile_config
from hilctl.errors import ConfigError
from sim import kernels
from sim.tile import EmulatedTile

ROWS = COLS = 10
SEEDS = 150


def _tile(engine: str, seed: int, model: str, threads: int = 1, **device: float) -> EmulatedTile:
    return EmulatedTile(tile_config(rows=ROWS, cols=COLS, device=model, device_values=device,
                                    update_values={"engine": engine, "threads": threads},
                                    seed=seed))


def _run(engine: str, seed: int, model: str, batch: int) -> np.ndarray:
    """Weights after 15 updates that push most cells up into the nonlinear part of the range
    (about 20 coincidences per cell and update) with some down pulses mixed in."""
    tile = _tile(engine, seed, model)
    data = np.random.default_rng(7)
    for _ in range(15):
        x = data.uniform(-0.4, 1.0, (batch, COLS))
        d = data.uniform(-0.1, 0.03, (batch, ROWS))
        tile.update(x, d, 0.5 / batch)
    return tile.device_weights()


@pytest.mark.parametrize("batch", [1, 10])
@pytest.mark.parametrize("model", list(DEVICE_CONFIGS))
def test_compiled_and_numpy_engines_agree_in_distribution(model: str, batch: int) -> None:
    compiled = np.array([_run("numba", seed, model, batch) for seed in range(SEEDS)])
    reference = np.array([_run("numpy", seed, model, batch) for seed in range(SEEDS)])
    assert np.abs(reference.mean(axis=0)).mean() > 0.02  # the runs go well beyond a few steps
    error = np.sqrt((compiled.var(axis=0, ddof=1) + reference.var(axis=0, ddof=1)) / SEEDS)
    z = (compiled.mean(axis=0) - reference.mean(axis=0)) / error
    assert np.abs(z).max() < 5
    log_ratio = np.log(compiled.std(axis=0, ddof=1) / reference.std(axis=0, ddof=1))
    assert np.abs(log_ratio).max() < 5 * np.sqrt(1 / (SEEDS - 1))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="numba has one thread here")
@pytest.mark.parametrize("model", ["soft-bounds", "pow-step"])
def test_serial_and_parallel_runs_are_bit_identical(model: str) -> None:
    results = []
    for threads in (1, 2):
        tile = EmulatedTile(tile_config(rows=64, cols=48, device=model, seed=4,
                                        update_values={"threads": threads}))
        data = np.random.default_rng(0)
        for _ in range(5):
            tile.update(data.uniform(-1, 1, (10, 48)), data.uniform(-0.1, 0.1, (10, 64)), 0.05)
        tile.apply_pulses(data.integers(-20, 21, (64, 48)))
        results.append(tile.device_weights())
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("batch", [1, 10])
def test_visiting_the_firing_columns_equals_sweeping_the_rows(batch: int) -> None:
    """An update with few firing columns visits their cells only; forced either way, the two
    give the same weights bit for bit (every draw is indexed by its cell). Wide bound spreads
    give some cells steps steep enough (|log g| up to 0.04, with up to 31 pulses per sample) to
    take them beyond the polynomial's reach, onto libm's path, on both."""
    results = []
    for fraction in (0.0, 1.0):  # sweep every row, then visit every firing column
        tile = _tile("numba", 2, "soft-bounds", w_max_dtod=0.6, w_min_dtod=0.6)
        assert tile._compiled is not None
        tile._compiled.sparse_columns = fraction
        data = np.random.default_rng(3)
        for _ in range(6):
            x = data.uniform(-1, 1, (batch, COLS)) * (data.random((batch, COLS)) < 0.3)
            tile.update(x, data.uniform(-0.1, 0.1, (batch, ROWS)), 0.8)
        results.append(tile.device_weights())
    assert not np.array_equal(results[0], _tile("numba", 2, "soft-bounds").device_weights())
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("count", [1, 7, 60, 3000])
def test_closed_form_without_noise_is_the_soft_bounds_equation(count: int) -> None:
    """``n`` up pulses of a noise-free soft-bounds cell: ``w_n = b + (1 - dw/b)**n (w0 - b)``.
    3000 pulses take the row past the polynomial's limit, onto libm's expm1."""
    tile = _tile("numba", 0, "soft-bounds", **no_variation("soft-bounds"))
    start = np.linspace(-0.5, 0.5, ROWS * COLS).reshape(ROWS, COLS)
    tile.program_weights(start)
    tile.apply_pulses(np.full((ROWS, COLS), count))
    config = tile.config.device
    expected = config.w_max + (1 - config.dw_min / config.w_max) ** count * (start - config.w_max)
    np.testing.assert_allclose(tile.device_weights(), expected, rtol=0, atol=2e-6)


def test_constant_step_drifts_by_n_steps_and_stops_at_the_bound() -> None:
    tile = _tile("numba", 0, "constant-step", **no_variation("constant-step"))
    counts = np.arange(ROWS * COLS).reshape(ROWS, COLS) * 20 - 1000
    tile.apply_pulses(counts)
    dw, bound = tile.config.device.dw_min, tile.config.device.w_max
    np.testing.assert_allclose(tile.device_weights(), np.clip(counts * dw, -bound, bound),
                               rtol=1e-5, atol=1e-6)


def test_trains_fire_with_their_probabilities() -> None:
    """Coincidences per cell over many keys against ``BL p_x p_d`` (one sample, BL management
    off, update management off: both gains ``sqrt(rate / BL)``), and their signs."""
    x = np.array([[0.2, -0.5, 1.0]])
    d = np.array([[0.3, -0.1]])
    rate, length = 4.0, 31
    gain = np.sqrt(rate / length)
    p = np.minimum(np.abs(d.T) * gain, 1) * np.minimum(np.abs(x) * gain, 1)
    keys = 4000
    up, down = np.zeros((2, 3)), np.zeros((2, 3))
    for key in range(keys):
        positive, negative, _ = kernels.train_masks(x, d, rate, length, False, False,
                                                    np.uint64(key))
        for i in range(2):
            for j in range(3):
                row, col = 3 + i, j
                up[i, j] += _popcount(positive[:, row] & negative[:, col]) + _popcount(
                    negative[:, row] & positive[:, col])
                down[i, j] += _popcount(positive[:, row] & positive[:, col]) + _popcount(
                    negative[:, row] & negative[:, col])
    wants_up = np.sign(d.T) * np.sign(x) < 0
    expected = length * p * keys
    error = np.sqrt(length * p * (1 - p) * keys)  # binomial count over keys x slots
    np.testing.assert_array_less(np.abs(np.where(wants_up, up, down) - expected), 5 * error)
    assert not np.where(wants_up, down, up).any()


def _popcount(words: np.ndarray) -> int:
    return sum(bin(int(w)).count("1") for w in words)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 80),
       st.booleans(), st.booleans(), st.integers(0, 2**63))
def test_train_masks_respect_bit_lengths(samples: int, rows: int, cols: int, length: int,
                                         management: bool, bl_management: bool, key: int) -> None:
    """No line fires in more slots than the active samples' bit lengths allow (a sample whose x
    or d is all zero has none), and a zero input never fires."""
    data = np.random.default_rng(key % 2**32)
    x = data.uniform(-1, 1, (samples, cols)) * (data.random((samples, cols)) < 0.7)
    d = data.uniform(-1, 1, (samples, rows))
    positive, negative, words = kernels.train_masks(x, d, 3.0, length, management,
                                                    bl_management, np.uint64(key))
    assert positive.shape == negative.shape == (words, cols + rows)
    assert not (positive & negative).any()  # a line fires with one sign per slot
    fires = [_popcount(positive[:, k] | negative[:, k]) for k in range(cols + rows)]
    active = int(np.count_nonzero(np.abs(x).max(axis=1) * np.abs(d).max(axis=1)))
    assert max(fires) <= active * length
    silent = np.flatnonzero(np.all(x == 0, axis=0))
    assert all(fires[k] == 0 for k in silent)


def test_non_finite_input_is_refused_before_any_write() -> None:
    tile = _tile("numba", 0, "soft-bounds")
    before = tile.device_weights()
    x = np.ones((2, COLS))
    x[1, 3] = np.nan
    with pytest.raises(ValueError, match="x"):
        tile.update(x, np.ones((2, ROWS)), 0.1)
    np.testing.assert_array_equal(tile.device_weights(), before)


def test_numpy_is_the_fallback_with_one_warning(monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(sim.engine, "numba_available", lambda: False)
    sim.engine._warn_numpy_fallback.cache_clear()
    with caplog.at_level(logging.WARNING, logger="hilctl"):
        engines = [_tile("auto", 0, "soft-bounds").engine for _ in range(2)]
    assert engines == ["numpy", "numpy"]
    assert sum("numba does not import" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(ConfigError, match=r"update\.engine"):
        sim.engine.resolve_engine(UpdateConfig(engine="numba"))
