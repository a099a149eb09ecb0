"""The numpy engine's sparse update path (only the cells that take pulses) against its dense
sweep."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sim.tile as sim_tile
from hilctl.config import UpdateConfig, no_variation, tile_config
from hilctl.pulse_trains import coincidences
from sim.tile import EmulatedTile


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.integers(1, 9), st.integers(1, 9), st.integers(1, 40),
       st.integers(0, 2**32 - 1))
def test_sparse_counts_equal_the_dense_counts(samples: int, rows: int, cols: int, bl: int,
                                              seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (samples, cols)) * (rng.random((samples, cols)) < 0.6)
    d = rng.uniform(-1, 1, (samples, rows)) * (rng.random((samples, rows)) < 0.6)
    trains = coincidences(x, d, 0.5, 0.01, UpdateConfig(desired_bl=bl), rng)
    if trains is None:
        assert not (np.abs(x).max(axis=1) * np.abs(d).max(axis=1)).any()
        return
    cells, up, down = trains.sparse()
    assert np.all(np.diff(cells) > 0)
    assert np.all(up + down > 0)  # only cells that take pulses are listed
    dense_up, dense_down = np.zeros(rows * cols), np.zeros(rows * cols)
    dense_up[cells], dense_down[cells] = up, down
    np.testing.assert_array_equal(dense_up.reshape(rows, cols), trains.dense(True))
    np.testing.assert_array_equal(dense_down.reshape(rows, cols), trains.dense(False))
    assert trains.pair_count() == int(up.sum() + down.sum())


def _tiles(model: str, monkeypatch: pytest.MonkeyPatch, fraction: float, **device: float
           ) -> EmulatedTile:
    monkeypatch.setattr(sim_tile, "SPARSE_FRACTION", fraction)
    config = tile_config(rows=24, cols=40, device=model, device_values=device, seed=3,
                         update_values={"engine": "numpy"})  # the paths are the numpy engine's
    return EmulatedTile(config)


@pytest.mark.parametrize("model", ["soft-bounds", "constant-step", "linear-step", "pow-step"])
def test_sparse_and_dense_paths_agree_without_noise(model: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """With the cycle noise off an update is deterministic given its pulse counts. The same seed
    gives the same counts and order in a tile's first update on both paths (later updates draw
    from streams the two paths have used differently), so after one large update the weights
    must agree to float32 rounding."""
    quiet = {**no_variation(model), "dw_min": 0.01}
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (10, 40)) * (rng.random((10, 40)) < 0.3)
    d = rng.uniform(-0.1, 0.1, (10, 24))
    results = []
    for fraction in (np.inf, 0.0):  # every update sparse, then every update dense
        t = _tiles(model, monkeypatch, fraction, **quiet)
        t.program_weights(np.random.default_rng(1).uniform(-0.3, 0.3, (24, 40)))
        t.update(x, d, 2.0)  # k up to 20 pulses per sample
        results.append(t.read_weights())
    assert np.abs(results[0] - np.random.default_rng(1).uniform(-0.3, 0.3, (24, 40))).max() > 0.05
    np.testing.assert_allclose(results[0], results[1], rtol=0, atol=1e-6)


def test_sparse_and_dense_paths_agree_in_distribution(monkeypatch: pytest.MonkeyPatch) -> None:
    """Default variations and cycle noise: the change of the weights after many updates has
    the same mean and spread over the cells on both paths. The two runs share the device draws
    (same seed) but not the noise, so each cell's change differs by noise only: the mean of
    the difference over the 960 cells must be within 5 standard errors of zero, and the two
    spreads within 10% (the spread is dominated by the common drift, its estimate by far
    better than that)."""
    rng = np.random.default_rng(0)
    xs = rng.uniform(-1, 1, (200, 10, 40)) * (rng.random((200, 10, 40)) < 0.3)
    ds = rng.uniform(-0.1, 0.1, (200, 10, 24))
    changes = []
    for fraction in (np.inf, 0.0):
        t = _tiles("soft-bounds", monkeypatch, fraction)
        start = t.read_weights()
        for x, d in zip(xs, ds, strict=True):
            t.update(x, d, 0.05)
        changes.append((t.read_weights() - start).ravel())
    diff = changes[0] - changes[1]
    assert abs(diff.mean()) < 5 * diff.std(ddof=1) / np.sqrt(diff.size)
    assert changes[0].std() == pytest.approx(changes[1].std(), rel=0.1)
