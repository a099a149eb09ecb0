"""The buffered-transfer family's write to C (``transfer_write``): aihwkit's pulsed write
(:func:`~hilctl.pulse_trains.transfer_counts`) and hilctl's exact one.

aihwkit 1.1.0 writes a column's whole-pulse counts ``n`` as a pulsed update with a one-hot
``x``, ``d = -n``, ``lr`` = one pulse, ``desired_bl`` slots and update and BL management off.
A cell's count is then a sum over the ``bl`` slots of Bernoulli(``p_x``) times
Bernoulli(``p_i``), ``p_x = 1/sqrt(bl)``, ``p_i = min(|n_i|/sqrt(bl), 1)``, all independent:
Binomial(``bl``, ``q = p_x p_i``), of mean ``bl q`` and variance ``bl q (1 - q)``. Two rows of
one column share the column's firing, so their counts covary by ``bl p_x (1 - p_x) p_i p_k``;
two columns have trains of their own and do not covary.

The statistical checks use fixed seeds and a z-score bound: each sample statistic differs from
its exact value by less than Z standard errors, the standard error computed from the exact
distribution and the sample size (for a covariance, from the sample itself). At Z = 5 a correct
implementation fails a check with probability below 1e-6.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hilctl.algorithms import (
    AgadConfig,
    BufferedTransfer,
    ChoppedTransfer,
    ChoppedTtv2Config,
    Ttv2Config,
)
from hilctl.config import UpdateConfig
from hilctl.digital import DigitalTile
from hilctl.pulse_trains import firing_probabilities, transfer_counts

Z = 5.0
SAMPLES = 40_000  # independent columns per statistic
STEP = 0.01  # weight change of one pulse on the digital tiles, and the algorithms' granularity
#: (bl, counts n of the rows of one column); n never exceeds bl (the buffer caps it there).
CASES = [
    (1, [1, -1, 0]),
    (4, [1, -2, 3, 4, 0]),
    (10, [1, -2, 3, 4, -7, 10]),
    (31, [1, 2, -5, 6, 20, -31]),
]


def exact_moments(n: np.ndarray, bl: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row: ``q = p_x p_i``, the mean ``bl q`` and the variance ``bl q (1 - q)`` of |count|."""
    p_x = 1.0 / np.sqrt(bl)
    q = p_x * np.minimum(np.abs(n) / np.sqrt(bl), 1.0)
    return q, bl * q, bl * q * (1.0 - q)


def draw(n: list[int], bl: int, seed: int, columns: int = SAMPLES) -> np.ndarray:
    """Counts (rows, columns): ``columns`` independent columns, each with the rows' counts n."""
    pulses = np.repeat(np.asarray(n, dtype=np.float64)[:, None], columns, axis=1)
    return transfer_counts(pulses, bl, np.random.default_rng(seed))


@pytest.mark.parametrize(("bl", "n"), CASES)
def test_counts_are_binomial_with_the_trains_mean_and_variance(bl: int, n: list[int]) -> None:
    """Mean ``bl q`` (``= min(|n|, sqrt(bl))``) and variance ``bl q (1 - q)`` of each row's count.

    Standard errors: of the mean ``sqrt(var / N)``; of the sample variance
    ``sqrt((mu4 - var^2) / N)`` with the binomial's fourth central moment
    ``mu4 = var (1 + 3 (bl - 2) q (1 - q))``.
    """
    counts = draw(n, bl, seed=bl)
    magnitude = np.abs(counts).astype(np.float64)
    q, mean, var = exact_moments(np.asarray(n), bl)
    np.testing.assert_allclose(mean, np.minimum(np.abs(n), np.sqrt(bl)))
    sample_mean, sample_var = magnitude.mean(axis=1), magnitude.var(axis=1, ddof=1)
    certain = var == 0  # n = 0 (never a pulse) or bl = 1 (always exactly n)
    np.testing.assert_array_equal(magnitude[certain], np.repeat(mean[certain, None], SAMPLES, 1))
    mu4 = var * (1.0 + 3.0 * (bl - 2) * q * (1.0 - q))
    z_mean = (sample_mean - mean)[~certain] / np.sqrt(var[~certain] / SAMPLES)
    z_var = (sample_var - var)[~certain] / np.sqrt((mu4 - var**2)[~certain] / SAMPLES)
    assert np.all(np.abs(z_mean) < Z), (sample_mean, mean)
    assert np.all(np.abs(z_var) < Z), (sample_var, var)


@pytest.mark.parametrize("bl", [4, 10, 31])
def test_rows_of_a_column_share_its_firing_and_columns_do_not(bl: int) -> None:
    """Cov(count_i, count_k) = bl p_x (1 - p_x) p_i p_k within a column (a row pair with
    p_i = p_k = 1 and one with p < 1); 0 across columns. Standard error from the sample:
    ``std((a - mean a)(b - mean b)) / sqrt(N)``."""
    n = [bl, bl, 1, 2]
    counts = draw(n, bl, seed=100 + bl).astype(np.float64)
    p_x = 1.0 / np.sqrt(bl)
    p = np.minimum(np.asarray(n) / np.sqrt(bl), 1.0)

    def z_cov(a: np.ndarray, b: np.ndarray, exact: float) -> float:
        products = (a - a.mean()) * (b - b.mean())
        return float((products.mean() - exact) / (products.std() / np.sqrt(products.size)))

    for i, k in [(0, 1), (2, 3)]:
        exact = bl * p_x * (1.0 - p_x) * p[i] * p[k]
        assert exact > 0
        assert abs(z_cov(counts[i], counts[k], exact)) < Z
    # the same row in two columns written at once: independent trains
    half = SAMPLES // 2
    assert abs(z_cov(counts[0, :half], counts[0, half:], 0.0)) < Z


def test_the_trains_are_the_updates_trains_with_aihwkits_transfer_settings() -> None:
    """A one-hot x, d = -n, lr = granularity, desired_bl slots, UM and BL management off: the
    update scheme fires column j with 1/sqrt(bl) and row i with min(|n_i|/sqrt(bl), 1), the
    probabilities transfer_counts draws with."""
    n = np.array([0.0, 1.0, -3.0, 4.0, 10.0])
    for bl in (1, 4, 10, 31):
        x = np.zeros((1, 6))
        x[0, 2] = 1.0
        update = UpdateConfig(desired_bl=bl, update_management=False, update_bl_management=False)
        p_x, p_d, bls = firing_probabilities(x, -n[None], STEP, STEP, update)
        assert bls[0] == bl
        np.testing.assert_allclose(p_x[0], np.where(x[0] > 0, 1 / np.sqrt(bl), 0.0))
        np.testing.assert_allclose(p_d[0], np.minimum(np.abs(n) / np.sqrt(bl), 1.0))


@settings(max_examples=200, deadline=None)
@given(bl=st.integers(1, 64), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_counts_never_exceed_bl_and_carry_the_sign_of_n(bl: int, data, seed: int) -> None:
    n = data.draw(arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 4)),
                         elements=st.integers(-bl, bl).map(float)))
    counts = transfer_counts(n, bl, np.random.default_rng(seed))
    assert counts.shape == n.shape and counts.dtype == np.int64
    assert np.all(np.abs(counts) <= bl)
    assert np.all((counts == 0) | (np.sign(counts) == np.sign(n)))
    assert np.all(counts[n == 0] == 0)
    if bl == 1:  # one slot fired with certainty: the exact write
        np.testing.assert_array_equal(counts, n)


# ---------------------------------------------------------------------------------------------
# The algorithms' write to C.
# ---------------------------------------------------------------------------------------------


def ttv2(**options) -> BufferedTransfer:
    """TTv2 on 3x4 digital tiles (a pulse moves a weight by exactly STEP), seed 7."""
    return BufferedTransfer(DigitalTile(3, 4, pulse_step=STEP), DigitalTile(3, 4, pulse_step=STEP),
                            Ttv2Config(**options), STEP, seed=7)


#: A of 3x4 whose first two columns cross the threshold: read at lr 0.01 (H = 0.01 A, thr
#: STEP) they give n = (6, -2, 0) and (9, 1, -4) at desired_bl 10.
A = np.array([[6.5, 9.2, 0.0, 0.0], [-2.3, 1.1, 0.0, 0.0], [0.4, -4.9, 0.0, 0.0]])
N = np.array([[6.0, 9.0], [-2.0, 1.0], [0.0, -4.0]])


def test_pulsed_is_the_default_of_the_family() -> None:
    assert {Ttv2Config().transfer_write, ChoppedTtv2Config().transfer_write,
            AgadConfig().transfer_write} == {"pulsed"}


def test_exact_writes_exactly_n_pulses() -> None:
    algo = ttv2(transfer_write="exact", desired_bl=10, n_reads_per_transfer=2, momentum=0.0)
    algo.fast.program_weights(A)
    algo.transfer(lr=0.01)
    np.testing.assert_allclose(algo.slow.read_weights()[:, :2], N * STEP)
    np.testing.assert_array_equal(algo.slow.read_weights()[:, 2:], 0.0)


def test_pulsed_write_touches_only_the_columns_read_and_keeps_the_buffer_of_n() -> None:
    """Pulsed and exact writes leave the same buffer (H is reduced by the intended n, as in
    aihwkit); the pulsed counts are within +-desired_bl, of n's sign, and only on the columns
    read."""
    pulsed, exact = (ttv2(transfer_write=w, desired_bl=10, n_reads_per_transfer=2,
                          forget_buffer=False, momentum=0.0) for w in ("pulsed", "exact"))
    for algo in (pulsed, exact):
        algo.fast.program_weights(A)
        algo.transfer(lr=0.01)
    np.testing.assert_array_equal(pulsed.buffer, exact.buffer)
    written = np.rint(pulsed.slow.read_weights() / STEP)
    assert np.all(np.abs(written[:, :2]) <= 10)
    assert np.all((written[:, :2] == 0) | (np.sign(written[:, :2]) == np.sign(N)))
    np.testing.assert_array_equal(written[:, 2:], 0.0)
    np.testing.assert_array_equal(written[:, :2][N == 0], 0.0)


def test_pulsed_write_at_desired_bl_1_is_the_exact_write() -> None:
    pulsed, exact = ttv2(transfer_write="pulsed"), ttv2(transfer_write="exact")
    for algo in (pulsed, exact):
        algo.fast.program_weights(A)
        for _ in range(8):
            algo.transfer(lr=0.01)
    np.testing.assert_array_equal(pulsed.slow.read_weights(), exact.slow.read_weights())


def test_pulsed_write_mean_over_many_transfers() -> None:
    """One cell with n = 9 at desired_bl 10, written 4000 times: min(9, sqrt(10)) pulses per
    transfer on average (z < 5, binomial standard error)."""
    algo = BufferedTransfer(DigitalTile(1, 1, pulse_step=STEP), DigitalTile(1, 1, pulse_step=STEP),
                            Ttv2Config(desired_bl=10, momentum=0.0), STEP, seed=3)
    algo.fast.program_weights([[9.5]])
    transfers = 4000
    for _ in range(transfers):
        algo.transfer(lr=0.01)
    q = (1 / np.sqrt(10)) * min(9 / np.sqrt(10), 1.0)
    mean, var = 10 * q, 10 * q * (1 - q)
    per_transfer = algo.slow.read_weights()[0, 0] / STEP / transfers
    assert abs(per_transfer - mean) < Z * np.sqrt(var / transfers), (per_transfer, mean)


def test_the_pulsed_writes_resume_exactly_from_a_state_dict() -> None:
    """c-TTv2 (random choppers and pulsed writes share the algorithm's stream): a copy loaded
    from the state after 30 updates writes the same pulses as the original from then on."""
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(4, 4)), rng.normal(size=(4, 3))) for _ in range(60)]

    def chopped() -> ChoppedTransfer:
        return ChoppedTransfer(DigitalTile(3, 4, pulse_step=STEP),
                               DigitalTile(3, 4, pulse_step=STEP),
                               ChoppedTtv2Config(desired_bl=10, fast_lr=0.5), STEP, seed=5)

    original = chopped()
    for x, d in batches[:30]:
        original.update(x, d, lr=0.5)
    state = copy.deepcopy(original.state_dict())
    tiles = [copy.deepcopy(t.state_dict()) for t in (original.fast, original.slow)]
    resumed = chopped()
    resumed.load_state_dict(state)
    resumed.fast.load_state_dict(tiles[0])
    resumed.slow.load_state_dict(tiles[1])
    for x, d in batches[30:]:
        original.update(x, d, lr=0.5)
        resumed.update(x, d, lr=0.5)
    assert original.slow.read_weights().any()
    np.testing.assert_array_equal(resumed.slow.read_weights(), original.slow.read_weights())
    np.testing.assert_array_equal(resumed.buffer, original.buffer)
