"""The compiled engine's counter-based random numbers (sim/counter_rng.py): draws are a pure
function of (key, counter); four normals share one 64-bit mix without losing independence."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit, uint64

from sim.counter_rng import mix, stream_key, table_indices, table_normal
from sim.noise import _quantile_table

TABLE = _quantile_table(np.float32)
KEYS = st.integers(0, 2**63 - 1)


@njit(cache=True)
def _normals(key: int, start: int, count: int) -> np.ndarray:
    out = np.empty(count, np.float32)
    for n in range(count):
        out[n] = table_normal(TABLE, key, uint64(start + n))
    return out


@njit(cache=True)
def _indices(key: int, start: int, count: int) -> np.ndarray:
    indices = np.zeros((count + 3) & ~3, np.uint32)
    table_indices(key, uint64(start), count, indices)
    return indices[:count]


@njit(cache=True)
def _words(key: int, count: int) -> np.ndarray:
    out = np.empty(count, np.uint64)
    for n in range(count):
        out[n] = mix(key, uint64(n))
    return out


@settings(max_examples=60, deadline=None)
@given(KEYS, st.integers(0, 2**20).map(lambda q: 4 * q), st.integers(1, 70))
def test_row_indices_are_the_single_draws_indices(key: int, start: int, count: int) -> None:
    """A row's indices, filled a word at a time, pick exactly the table entries the draws
    one at a time pick: the sweep and the visit of a row draw the same normals."""
    np.testing.assert_array_equal(TABLE[_indices(key, start, count)], _normals(key, start, count))


def test_the_four_fields_of_a_word_are_uniform_and_uncorrelated() -> None:
    """2**18 words (seeded key): each 16-bit field uniform (chi-square over 256 bins of its top
    byte, 255 degrees of freedom: mean 255, sd 22.6; the bound 400 is 6.4 sd) and neighbouring
    fields uncorrelated (|r| < 5 / sqrt(n): a false failure once in 1.7 million)."""
    n = 2**18
    words = _words(12345, n)
    fields = [((words >> np.uint64(16 * k)) & np.uint64(0xFFFF)).astype(np.float64)
              for k in range(4)]
    for field in fields:
        counts = np.bincount((field // 256).astype(np.int64), minlength=256)
        expected = n / 256
        assert ((counts - expected) ** 2 / expected).sum() < 400
    for a, b in itertools.pairwise(fields):
        assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)


def test_table_normals_have_mean_0_and_variance_1() -> None:
    """2**18 draws: mean within 5 / sqrt(n) of 0, variance within 5 sqrt(2 / n) of 1, and
    consecutive draws (sharing words) uncorrelated within 5 / sqrt(n)."""
    n = 2**18
    draws = _normals(987654321, 0, n).astype(np.float64)
    assert abs(draws.mean()) < 5 / np.sqrt(n)
    assert abs(draws.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.corrcoef(draws[:-1], draws[1:])[0, 1]) < 5 / np.sqrt(n)


def test_stream_keys_are_63_bit_ints_a_kernel_takes_as_int64() -> None:
    rng = np.random.default_rng(0)
    keys = [stream_key(rng) for _ in range(1000)]
    assert all(type(k) is int and 0 <= k < 2**63 for k in keys)
    assert len(set(keys)) == 1000
