"""Tests of the algorithms after Tiki-Taka v1: TTv2, c-TTv2, AGAD and residual learning.

The mechanics are checked on :class:`~hilctl.digital.DigitalTile` fast (A) and slow (C) tiles
(exact float64; a pulse on C moves a weight by exactly ``pulse_step``) against small hand
computations of aihwkit 1.1.0's rules (``rpu_buffered_transfer_device.cpp``,
``rpu_chopped_transfer_device.cpp``, ``rpu_dynamic_transfer_device.cpp``). Where a hand
computation reads the pulses ``n`` back from C, the test writes them exactly
(``transfer_write="exact"``): aihwkit's pulsed write lands a random number of them (its
statistics: tests/test_transfer_write.py). Then each algorithm trains hilctl's least-squares
task (8x16, soft bounds at +-tau) on the emulator.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from hilctl.algorithms import (
    ALGORITHMS,
    AgadConfig,
    BufferedTransfer,
    ChoppedTransfer,
    ChoppedTtv2Config,
    DynamicTransfer,
    ResidualConfig,
    TikiTaka,
    Ttv2Config,
    build_weights,
)
from hilctl.config import no_variation
from hilctl.digital import DigitalTile
from hilctl.errors import ConfigError
from hilctl.train_config import resolve_train_config
from hilctl.training import train

STEP = 0.01  # weight change of one pulse on the digital tiles, and the algorithms' granularity


def tiles(rows: int, cols: int) -> tuple[DigitalTile, DigitalTile]:
    return DigitalTile(rows, cols, pulse_step=STEP), DigitalTile(rows, cols, pulse_step=STEP)


def set_a(algo, a: np.ndarray) -> None:
    algo.fast.program_weights(a)


# ---------------------------------------------------------------------------------------------
# TTv2: buffer, threshold, pulses, remainder.
# ---------------------------------------------------------------------------------------------


def ttv2(rows=2, cols=3, **options) -> BufferedTransfer:
    fast, slow = tiles(rows, cols)
    return BufferedTransfer(fast, slow, Ttv2Config(**options), STEP)


def test_ttv2_buffer_accumulates_lr_times_the_read_column():
    algo = ttv2(momentum=0.0, desired_bl=100)
    set_a(algo, np.array([[0.2, 0.0, 0.0], [-0.05, 0.0, 0.0]]))
    algo.transfer(lr=0.01)  # H[:, 0] += 1 * 0.01 * A[:, 0] = (0.002, -0.0005): below thr 0.01
    np.testing.assert_allclose(algo.buffer[:, 0], [0.002, -0.0005])
    np.testing.assert_array_equal(algo.slow.read_weights(), 0.0)
    assert algo.next_column == 1


def test_ttv2_threshold_crossing_writes_trunc_pulses_and_forgets_to_momentum():
    algo = ttv2(momentum=0.1, desired_bl=100, transfer_write="exact")
    algo.buffer[:, 0] = [0.004, -0.009]
    set_a(algo, np.array([[3.5, 0.0, 0.0], [-1.6, 0.0, 0.0]]))
    algo.transfer(lr=0.01)
    # omega = (0.004 + 0.035, -0.009 - 0.016) = (0.039, -0.025); thr 0.01: n = (3, -2)
    np.testing.assert_allclose(algo.slow.read_weights()[:, 0], [3 * STEP, -2 * STEP])
    # forget_buffer: H <- momentum * omega where a pulse was written
    np.testing.assert_allclose(algo.buffer[:, 0], [0.1 * 0.039, 0.1 * -0.025])


def test_ttv2_pulses_are_capped_by_desired_bl_and_remainder_is_subtracted():
    algo = ttv2(momentum=0.25, forget_buffer=False, desired_bl=2, thres_scale=2.0,
                transfer_write="exact")
    set_a(algo, np.array([[9.0, 0.0, 0.0], [0.5, 0.0, 0.0]]))
    algo.transfer(lr=0.01)
    # omega = (0.09, 0.005); thr = 2 * 0.01 = 0.02: trunc = (4, 0), capped to (2, 0)
    np.testing.assert_allclose(algo.slow.read_weights()[:, 0], [2 * STEP, 0.0])
    # not forgotten: H <- omega - (1 - momentum) n thr; untouched where n = 0
    np.testing.assert_allclose(algo.buffer[:, 0], [0.09 - 0.75 * 2 * 0.02, 0.005])


def test_ttv2_gamma_scales_the_transfer_rate_and_enters_w():
    algo = ttv2(gamma=0.5, momentum=0.0, desired_bl=100, transfer_write="exact")
    set_a(algo, np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    algo.transfer(lr=0.01)  # H = 0.5 * 0.01 * 2 = 0.01: one pulse
    np.testing.assert_allclose(algo.slow.read_weights()[0, 0], STEP)
    np.testing.assert_allclose(algo.read_weights(), algo.slow.read_weights()
                               + 0.5 * algo.fast.read_weights())


def test_ttv2_update_goes_to_a_at_fast_lr_and_transfers_per_minibatch():
    algo = ttv2(fast_lr=0.5, n_reads_per_transfer=2, momentum=0.0, desired_bl=100,
                transfer_write="exact")
    x, d = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]), np.array([[-2.0, 1.0], [4.0, 0.0]])
    algo.update(x, d, lr=0.1)
    a = -0.5 * d.T @ x
    np.testing.assert_allclose(algo.fast.read_weights(), a)
    # units_in_mbatch: one transfer after the mini-batch, columns 0 and 1, H = 0.1 A
    h = 0.1 * a[:, :2]
    n = np.trunc(h / STEP)
    np.testing.assert_allclose(algo.slow.read_weights()[:, :2], n * STEP)
    np.testing.assert_allclose(algo.buffer[:, :2], np.where(n != 0, 0.0, h))
    assert algo.next_column == 2


def test_ttv2_transfer_every_in_samples_splits_the_batch():
    algo = ttv2(units_in_mbatch=False, transfer_every=2, n_reads_per_transfer=1)
    calls = []
    algo.transfer = lambda lr: calls.append(algo.fast.read_weights().copy())  # type: ignore
    x = np.eye(3)[[0, 1, 2, 0, 1]]
    d = np.ones((5, 2))
    algo.update(x, d, lr=0.1)
    assert len(calls) == 2  # after samples 2 and 4
    np.testing.assert_allclose(calls[0][:, 2], 0.0)  # the transfer saw A after 2 samples only
    np.testing.assert_allclose(calls[1][:, 2], -0.1)
    assert algo.samples == 5


# ---------------------------------------------------------------------------------------------
# c-TTv2: choppers.
# ---------------------------------------------------------------------------------------------


def chopped(rows=2, cols=2, **options) -> ChoppedTransfer:
    fast, slow = tiles(rows, cols)
    return ChoppedTransfer(fast, slow, ChoppedTtv2Config(**options), STEP)


def test_chopped_update_flips_the_sign_of_a_per_chopper_pair():
    algo = chopped(in_chop_prob=0.0, fast_lr=1.0)
    algo.in_chopper[:] = [1.0, -1.0]
    algo.out_chopper[:] = [-1.0, 1.0]
    x, d = np.array([[1.0, 2.0]]), np.array([[0.5, 0.25]])
    algo.fast.update = lambda xs, ds, lr: DigitalTile.update(algo.fast, xs, ds, lr)  # type: ignore
    algo.update(x, d, lr=0.0)  # lr 0: no transfer write
    signs = np.outer([-1.0, 1.0], [1.0, -1.0])
    np.testing.assert_allclose(algo.fast.read_weights(), -signs * np.outer(d[0], x[0]))


def test_chopped_read_is_undone_by_the_chopper_and_buffer_is_in_threshold_units():
    algo = chopped(in_chop_prob=0.0, desired_bl=100, transfer_write="exact")
    algo.in_chopper[:] = [-1.0, 1.0]
    algo.out_chopper[:] = [1.0, -1.0]
    # A chopped: A = c_in c_out g with g the "true" accumulated gradient column (0.03, 0.05)
    set_a(algo, np.array([[-0.03, 0.0], [0.05, 0.0]]))
    algo.transfer(lr=1.0)
    # H += c_in[0] c_out A[:, 0] * lr / bg = (0.03, 0.05) / 0.01 = (3, 5): pulses (3, 5)
    np.testing.assert_allclose(algo.slow.read_weights()[:, 0], [3 * STEP, 5 * STEP])
    np.testing.assert_allclose(algo.buffer[:, 0], 0.0)  # forget_buffer, momentum 0


def test_chopped_auto_granularity_and_no_buffer():
    algo = chopped(in_chop_prob=0.0, auto_granularity=4.0, transfer_every=2.0, no_buffer=True)
    assert algo.buffer_unit() == pytest.approx(STEP * 4.0 / (2 * 2.0))
    algo.buffer[:, 0] = 0.9
    set_a(algo, np.array([[0.001, 0.0], [0.0, 0.0]]))
    algo.transfer(lr=1.0)  # no_buffer: omega = 0 + 0.001 / 0.01 = 0.1, nothing written
    np.testing.assert_allclose(algo.buffer[:, 0], [0.1, 0.0])
    np.testing.assert_array_equal(algo.slow.read_weights(), 0.0)


def test_chopped_regular_in_chopper_flips_every_ceil_1_over_p_sweeps():
    algo = chopped(cols=2, in_chop_prob=0.4, in_chop_random=False)  # period max(ceil(2.5), 2) = 3
    history = []
    for _ in range(12):  # 6 sweeps of 2 columns
        algo.transfer(lr=0.0 + 1e-9)
        history.append(algo.in_chopper.copy())
    # sweep k (0-based) flips each column on its read when k % 3 == 2
    assert [h[0] for h in history[::2]] == [1, 1, -1, -1, -1, 1]
    assert algo.sweeps == 6


def test_chopped_random_choppers_flip_at_the_given_rate():
    algo = chopped(rows=200, cols=1, in_chop_prob=0.25, out_chop_prob=0.5)
    flips_in, flips_out, previous_out = 0, 0, algo.out_chopper.copy()
    for _ in range(2000):
        before = algo.in_chopper[0]
        algo.transfer(lr=1e-9)
        flips_in += algo.in_chopper[0] != before
        flips_out += int(np.sum(algo.out_chopper != previous_out))
        previous_out = algo.out_chopper.copy()
    assert 0.22 < flips_in / 2000 < 0.28
    assert 0.48 < flips_out / (2000 * 200) < 0.52


# ---------------------------------------------------------------------------------------------
# AGAD: dynamic reference.
# ---------------------------------------------------------------------------------------------


def test_agad_reference_is_the_running_mean_of_the_previous_phase():
    fast, slow = tiles(1, 1)
    # period n = max(ceil(1/0.5), 2) = 2 sweeps; s = min(1 / 2, 1) = 0.5; one column
    algo = DynamicTransfer(fast, slow, AgadConfig(in_chop_prob=0.5, tail_weightening=1.0,
                                                  desired_bl=100), STEP)
    reads = [0.2, 0.4, 0.1, 0.3, 0.5]
    mean, ref, chop, buffer, switched = 0.0, 0.0, 1.0, 0.0, False
    for k, v in enumerate(reads):
        set_a(algo, np.array([[v]]))
        algo.transfer(lr=0.001)  # scale 0.001 / 0.01 = 0.1
        if switched:
            ref = mean
        omega = buffer + chop * (v - ref) * 0.1
        n = np.trunc(omega)
        buffer = 0.0 if n else omega
        mean = 0.5 * mean + 0.5 * v
        switched = k % 2 + 1 == 2
        if switched:
            chop = -chop
        assert algo.running_mean[0, 0] == pytest.approx(mean)
        assert algo.reference[0, 0] == pytest.approx(ref)
        assert algo.buffer[0, 0] == pytest.approx(buffer)
        assert algo.in_chopper[0] == chop
    # nothing is written during the first n = 2 sweeps (aihwkit: transfer_counter > n)
    np.testing.assert_array_equal(algo.slow.read_weights(), 0.0)


def test_agad_writes_the_difference_to_the_reference_after_warm_up():
    fast, slow = tiles(1, 1)
    algo = DynamicTransfer(fast, slow, AgadConfig(in_chop_prob=0.5, desired_bl=100,
                                                  transfer_write="exact"), STEP)
    algo.sweeps = 3
    algo.reference[0, 0] = 0.02
    algo.in_chopper[0] = -1.0
    set_a(algo, np.array([[-0.03]]))
    algo.transfer(lr=1.0)  # H = -1 * (-0.03 - 0.02) / 0.01 = 5 pulses
    np.testing.assert_allclose(algo.slow.read_weights(), [[5 * STEP]])


# ---------------------------------------------------------------------------------------------
# build_weights, residual.
# ---------------------------------------------------------------------------------------------


def test_build_weights_and_granularity_resolution():
    def factory(rows, cols):
        return DigitalTile(rows, cols)

    algo = build_weights(Ttv2Config(), 2, 3, factory, granularity=0.004)
    assert isinstance(algo, BufferedTransfer) and algo.granularity == 0.004
    algo = build_weights(ChoppedTtv2Config(granularity=0.002), 2, 3, factory, granularity=0.004)
    assert type(algo) is ChoppedTransfer and algo.granularity == 0.002
    assert type(build_weights(AgadConfig(), 2, 3, factory)) is DynamicTransfer
    residual = build_weights(ResidualConfig(), 2, 3, factory, reference="symmetric-point")
    assert isinstance(residual, TikiTaka) and residual.config.gamma == 0.4
    with pytest.raises(ConfigError, match=r"tile\.reference=symmetric-point"):
        build_weights(ResidualConfig(), 2, 3, factory, reference="none")
    assert {"ttv2", "c-ttv2", "agad", "residual"} <= set(ALGORITHMS)


# ---------------------------------------------------------------------------------------------
# The least-squares task (8x16, soft bounds at +-tau) on the emulator.
# ---------------------------------------------------------------------------------------------

#: Settings for 4000 steps of the 8x16 problem. With aihwkit's desired_bl = 1 a cell of C moves
#: by at most one pulse (0.001) per read of its column, i.e. per 16 steps: ~0.25 in 4000 steps,
#: short of |W*| up to 0.9 tau; so the cap is raised. aihwkit's pulsed write lands
#: min(|n|, sqrt(desired_bl)) pulses on average, so 100 and 400 let C move up to 10 and 20
#: pulses per read (desired_bl 10 and 20 land at most sqrt(10) and sqrt(20): rel_err ttv2 0.012,
#: c-ttv2 0.0061 at tau 0.5, seed 0). c-TTv2's random choppers at the default in_chop_prob 0.1
#: flip A's content into the buffer with the wrong sign every ~10 reads (measured rel_err
#: 0.018-0.08, exact writes); at 0.02, with the remainder kept (forget_buffer False), it
#: reaches digital.
SETTINGS = {
    "ttv2": dict(desired_bl=100),
    "c-ttv2": dict(desired_bl=400, in_chop_prob=0.02, forget_buffer=False),
    "agad": dict(desired_bl=400),
    "residual": {},
}


@functools.cache
def rel_err(algorithm: str, tau: float, seed: int = 0) -> float:
    config = resolve_train_config(
        task="least-squares", algorithm=algorithm, device="soft-bounds", seed=seed,
        overrides={
            "task": dict(steps=4000, eval_window=500, lr=0.02, sigma=0.1),
            "algorithm": SETTINGS.get(algorithm, {}),
            "device": {**no_variation("soft-bounds"), "dw_min": 0.001, "tau": tau},
            "periphery": dict(is_perfect=True),
            "tile": {"reference": "symmetric-point"} if algorithm == "residual" else {},
        },
    )
    return train(config, store=None).final["rel_err"]


@pytest.mark.parametrize("algorithm", ["ttv2", "c-ttv2", "agad", "residual"])
def test_later_algorithms_reach_digital_where_analog_sgd_does_not(algorithm):
    """Soft bounds +-0.5, dw_min 0.001, no variation, perfect periphery, lr 0.02, sigma 0.1.

    Measured rel_err over seeds 0, 1, 2 (4000 steps, aihwkit's pulsed transfer write):
    digital 0.00174-0.00196, Analog SGD 0.158-0.171; ttv2 0.00128-0.00177, c-ttv2
    0.00281-0.00334, agad 0.00099-0.00117, residual (gamma 0.4) 0.00314-0.00331. The largest
    ratio to digital is c-ttv2's 1.90 at seed 0, the test's (residual 1.80), so 2.5x digital
    leaves a 1.32x margin on a deterministic run; Analog SGD sits 80-100x above digital, so a
    tenth of it is far away.
    """
    digital, analog = rel_err("digital-sgd", 0.5), rel_err("analog-sgd", 0.5)
    measured = rel_err(algorithm, 0.5)
    assert analog > 10 * digital, (analog, digital)
    assert measured < 2.5 * digital, (measured, digital)
    assert measured < analog / 10, (measured, analog)
