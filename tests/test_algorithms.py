"""Tests of the training algorithms as weight arrays (:mod:`hilctl.algorithms`).

Tiki-Taka is checked with :class:`~hilctl.digital.DigitalTile` as its fast (A) and slow (C)
tiles: a floating-point tile with an exact forward and update, so every statement of the
semantics in hilctl/algorithms/tiki_taka.py (A takes ``-fast_lr d x^T``, C takes
``transfer_lr * lr * A[:, j]`` for the columns read, cyclically, every ``transfer_every``
updates; ``W = gamma A + C``) is checked to the last bit or against a reference model written
out in numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hilctl.algorithms import (
    AnalogSgdConfig,
    DigitalSgdConfig,
    SingleTile,
    TikiTaka,
    TikiTakaConfig,
    build_weights,
)
from hilctl.digital import DigitalTile

ROWS, COLS = 3, 5


def tiki_taka(rows: int = ROWS, cols: int = COLS, **options) -> TikiTaka:
    return TikiTaka(DigitalTile(rows, cols), DigitalTile(rows, cols), TikiTakaConfig(**options))


def a_and_c(tt: TikiTaka) -> tuple[np.ndarray, np.ndarray]:
    return tt.fast.read_weights(), tt.slow.read_weights()


values = st.floats(-10, 10, allow_nan=False, allow_infinity=False)
rates = st.floats(1e-3, 2.0, allow_nan=False, allow_infinity=False)


# ---------------------------------------------------------------------------------------------
# One update, exactly.
# ---------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(x=arrays(np.float64, COLS, elements=values), d=arrays(np.float64, ROWS, elements=values),
       lr=rates, fast_lr=rates, transfer_lr=st.floats(0, 2.0))
def test_first_update_goes_to_a_and_transfers_column_0(x, d, lr, fast_lr, transfer_lr):
    tt = tiki_taka(fast_lr=fast_lr, transfer_lr=transfer_lr)
    tt.update(x[None, :], d[None, :], lr)
    a, c = a_and_c(tt)
    # A gets the gradient at the absolute fast_lr; lr does not enter A.
    np.testing.assert_array_equal(a, -fast_lr * np.outer(d, x))
    # transfer_every=1, n_reads_per_transfer=1: column 0 of A is added onto C, nothing else.
    expected_c = np.zeros((ROWS, COLS))
    expected_c[:, 0] += transfer_lr * lr * a[:, 0]
    np.testing.assert_array_equal(c, expected_c)


def test_lr_scales_only_the_transfer():
    x, d = np.array([[1.0, 2.0, -1.0, 0.5, 3.0]]), np.array([[0.5, -1.0, 2.0]])
    slow_lr, fast_lr = tiki_taka(fast_lr=0.1), tiki_taka(fast_lr=0.1)
    slow_lr.update(x, d, 0.01)
    fast_lr.update(x, d, 0.04)
    (a1, c1), (a4, c4) = a_and_c(slow_lr), a_and_c(fast_lr)
    np.testing.assert_array_equal(a1, a4)
    np.testing.assert_allclose(c4[:, 0], 4 * c1[:, 0], rtol=1e-14)
    assert np.any(c1[:, 0] != 0)


# ---------------------------------------------------------------------------------------------
# Transfers: which columns, when, how much.
# ---------------------------------------------------------------------------------------------


def transferred_columns(tt: TikiTaka, updates: int, lr: float = 0.5) -> list[list[int]]:
    """Columns of C that changed at each update (A is made fully non-zero first)."""
    rng = np.random.default_rng(7)
    changed = []
    for _ in range(updates):
        before = tt.slow.read_weights()
        tt.update(rng.uniform(0.5, 1.5, (1, tt.shape[1])), rng.uniform(0.5, 1.5, (1, tt.shape[0])),
                  lr)
        diff = tt.slow.read_weights() != before
        changed.append(sorted(int(j) for j in np.flatnonzero(diff.any(axis=0))))
    return changed


def test_one_column_per_transfer_cycles_and_wraps():
    # Inputs and errors strictly positive: every entry of A is non-zero after the first
    # update, so a transferred column always changes C.
    assert transferred_columns(tiki_taka(), 7) == [[0], [1], [2], [3], [4], [0], [1]]


def test_two_columns_per_transfer_wrap_around():
    tt = tiki_taka(n_reads_per_transfer=2)
    assert transferred_columns(tt, 4) == [[0, 1], [2, 3], [0, 4], [1, 2]]


def test_more_reads_than_columns_moves_every_column_once():
    tt = tiki_taka(n_reads_per_transfer=COLS + 3)
    assert transferred_columns(tt, 2) == [list(range(COLS))] * 2


def test_transfer_every_3_transfers_on_every_third_update():
    tt = tiki_taka(transfer_every=3)
    assert transferred_columns(tt, 7) == [[], [], [0], [], [], [1], []]


def test_transfer_adds_exactly_the_scaled_column_of_a():
    tt = tiki_taka(n_reads_per_transfer=2, transfer_lr=0.7, fast_lr=0.3)
    rng = np.random.default_rng(3)
    tt.program_weights(rng.normal(size=(ROWS, COLS)))
    for update in range(6):  # columns (0,1), (2,3), (4,0), (1,2), (3,4), (0,1)
        x, d = rng.normal(size=(1, COLS)), rng.normal(size=(1, ROWS))
        a_before, c_before = a_and_c(tt)
        tt.update(x, d, 0.05)
        a, c = a_and_c(tt)
        np.testing.assert_array_equal(a, a_before - 0.3 * np.outer(d[0], x[0]))
        moved = [(2 * update) % COLS, (2 * update + 1) % COLS]
        expected = c_before.copy()
        for j in moved:
            expected[:, j] += 0.7 * 0.05 * a[:, j]  # the column read *after* this update
        np.testing.assert_array_equal(c, expected)


def reference_tiki_taka(samples, lr, rows, cols, fast_lr, transfer_lr, every, n_reads, gamma):
    """The semantics in hilctl/algorithms/tiki_taka.py written out with plain arrays: W = gamma A + C
    after each update."""
    a, c = np.zeros((rows, cols)), np.zeros((rows, cols))
    column, weights = 0, []
    for k, (x, d) in enumerate(samples, start=1):
        a -= fast_lr * np.outer(d, x)
        if k % every == 0:
            for _ in range(min(n_reads, cols)):
                c[:, column] += transfer_lr * lr * a[:, column]
                column = (column + 1) % cols
        weights.append(gamma * a + c)
    return weights


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 4), cols=st.integers(1, 6), every=st.integers(1, 4),
       n_reads=st.integers(1, 8), updates=st.integers(1, 12), gamma=st.sampled_from([0.0, 0.5]),
       seed=st.integers(0, 2**32 - 1))
def test_matches_reference_model(rows, cols, every, n_reads, updates, gamma, seed):
    rng = np.random.default_rng(seed)
    samples = [(rng.normal(size=cols), rng.normal(size=rows)) for _ in range(updates)]
    options = dict(fast_lr=0.2, transfer_lr=0.8, transfer_every=every,
                   n_reads_per_transfer=n_reads, gamma=gamma)
    tt = tiki_taka(rows, cols, **options)
    expected = reference_tiki_taka(samples, 0.1, rows, cols, 0.2, 0.8, every, n_reads, gamma)
    for (x, d), w in zip(samples, expected, strict=True):
        tt.update(x[None, :], d[None, :], 0.1)
        # Same operations, possibly in another order (matrix products): a few ulps.
        np.testing.assert_allclose(tt.read_weights(), w, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# W = gamma A + C.
# ---------------------------------------------------------------------------------------------


def programmed(gamma: float, rng: np.random.Generator) -> tuple[TikiTaka, np.ndarray, np.ndarray]:
    tt = tiki_taka(gamma=gamma)
    a, c = rng.normal(size=(ROWS, COLS)), rng.normal(size=(ROWS, COLS))
    tt.fast.program_weights(a)
    tt.slow.program_weights(c)
    return tt, a, c


def test_gamma_nonzero_forward_backward_read():
    rng = np.random.default_rng(11)
    tt, a, c = programmed(0.4, rng)
    x, d = rng.normal(size=(4, COLS)), rng.normal(size=(4, ROWS))
    np.testing.assert_allclose(tt.forward(x), x @ (0.4 * a + c).T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tt.backward(d), d @ (0.4 * a + c), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tt.read_weights(), 0.4 * a + c, rtol=1e-15, atol=0)


def test_gamma_zero_ignores_a():
    rng = np.random.default_rng(12)
    tt, _, c = programmed(0.0, rng)
    x, d = rng.normal(size=(4, COLS)), rng.normal(size=(4, ROWS))
    np.testing.assert_array_equal(tt.forward(x), x @ c.T)
    np.testing.assert_array_equal(tt.backward(d), d @ c)
    np.testing.assert_array_equal(tt.read_weights(), c)


@pytest.mark.parametrize("gamma", [0.0, 0.5])
def test_program_weights_puts_target_in_c_and_zeros_in_a(gamma):
    rng = np.random.default_rng(13)
    tt, _, _ = programmed(gamma, rng)  # A and C non-zero before
    target = rng.normal(size=(ROWS, COLS))
    reached = tt.program_weights(target)
    a, c = a_and_c(tt)
    np.testing.assert_array_equal(a, np.zeros((ROWS, COLS)))
    np.testing.assert_array_equal(c, target)
    np.testing.assert_array_equal(reached, target)
    assert tt.shape == (ROWS, COLS)


def test_tiles_of_different_shapes_are_refused():
    with pytest.raises(ValueError, match="same shape"):
        TikiTaka(DigitalTile(3, 4), DigitalTile(4, 3), TikiTakaConfig())


# ---------------------------------------------------------------------------------------------
# SingleTile and build_weights.
# ---------------------------------------------------------------------------------------------


class RecordingTile:
    """A tile that records every call and returns marked values."""

    capabilities = None

    def __init__(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self.calls: list[tuple] = []

    def forward(self, x):
        self.calls.append(("forward", x))
        return "forward-result"

    def backward(self, d):
        self.calls.append(("backward", d))
        return "backward-result"

    def update(self, x, d, lr):
        self.calls.append(("update", x, d, lr))

    def read_weights(self):
        self.calls.append(("read_weights",))
        return "read-result"

    def program_weights(self, target, tol=0.0):
        self.calls.append(("program_weights", target))
        return "program-result"


def test_single_tile_delegates_every_call():
    tile = RecordingTile(2, 7)
    weights = SingleTile(tile)
    x, d, target = object(), object(), object()
    assert weights.shape == (2, 7)
    assert weights.forward(x) == "forward-result"
    assert weights.backward(d) == "backward-result"
    assert weights.update(x, d, 0.25) is None
    assert weights.read_weights() == "read-result"
    assert weights.program_weights(target) == "program-result"
    assert tile.calls == [("forward", x), ("backward", d), ("update", x, d, 0.25),
                          ("read_weights",), ("program_weights", target)]


class Factory:
    def __init__(self) -> None:
        self.opened: list[RecordingTile] = []

    def __call__(self, rows: int, cols: int) -> RecordingTile:
        tile = RecordingTile(rows, cols)
        self.opened.append(tile)
        return tile


def test_build_weights_digital_is_a_digital_tile_and_opens_no_analog_tile():
    factory = Factory()
    weights = build_weights(DigitalSgdConfig(), 3, 4, factory)
    assert isinstance(weights, SingleTile)
    assert isinstance(weights.tile, DigitalTile)
    assert weights.shape == (3, 4)
    assert factory.opened == []


def test_build_weights_analog_sgd_is_one_analog_tile():
    factory = Factory()
    weights = build_weights(AnalogSgdConfig(), 3, 4, factory)
    assert isinstance(weights, SingleTile)
    assert len(factory.opened) == 1 and weights.tile is factory.opened[0]
    assert (weights.tile.rows, weights.tile.cols) == (3, 4)


def test_build_weights_tiki_taka_is_two_distinct_analog_tiles():
    factory = Factory()
    config = TikiTakaConfig(fast_lr=0.3, transfer_every=2)
    weights = build_weights(config, 3, 4, factory)
    assert isinstance(weights, TikiTaka)
    assert len(factory.opened) == 2
    assert weights.fast is factory.opened[0] and weights.slow is factory.opened[1]
    assert weights.config is config and weights.shape == (3, 4)
