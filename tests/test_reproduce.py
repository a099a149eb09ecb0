"""``hilctl reproduce``: the paper's problems, the runner, and the --quick set's claims."""

from __future__ import annotations

import csv
import math
import os

import numpy as np
import pytest

from hilctl.cli import main
from hilctl.reproduce import EXPERIMENTS, RunContext, expand, report, run_experiments
from hilctl.reproduce.problems import (
    gradient_to_update,
    make_problem,
    paper_config,
    run_problem,
    saturation,
)


def test_gradient_matches_finite_differences() -> None:
    problem = make_problem(30, 7, w_star_std=0.4, a_scale=0.5, loss_scale=0.5, seed=3)
    w = np.random.default_rng(1).normal(0, 0.3, problem.shape)
    g = problem.gradient(w)
    eps = 1e-6
    numeric = np.zeros_like(w)
    for j in range(problem.n):
        step = np.zeros_like(w)
        step[0, j] = eps
        numeric[0, j] = (problem.loss(w + step) - problem.loss(w - step)) / (2 * eps)
    np.testing.assert_allclose(g, numeric, rtol=1e-6, atol=1e-9)
    assert problem.loss(problem.w_star) == pytest.approx(0.0, abs=1e-20)
    assert problem.error(w) == pytest.approx(problem.loss(w) / problem.n)


@pytest.mark.parametrize("rows", [1, 3])
def test_gradient_to_update_realises_the_matrix(rows: int) -> None:
    g = np.random.default_rng(0).normal(size=(rows, 5))
    x, d = gradient_to_update(g)
    np.testing.assert_allclose(d.T @ x, g)


def test_ideal_analog_update_is_plain_gradient_descent() -> None:
    problem = make_problem(40, 10, w_star_std=0.3, seed=1)
    lr, sigma, steps = 0.05, 0.02, 60
    run = run_problem(problem, paper_config("analog-sgd", tau=1.0, mode="ideal"), steps=steps,
                      lr=lr, sigma=sigma, w0=0.1, noise_seed=7)
    # the same noise stream, by hand
    rng = np.random.default_rng([7, 618])
    w = np.full(problem.shape, 0.1)
    errors = []
    for _ in range(steps):
        errors.append(problem.error(w))
        w = w - lr * problem.noisy_gradient(w, sigma, rng)
    errors.append(problem.error(w))
    np.testing.assert_allclose(run.final_weights, w, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(run.errors, errors, rtol=1e-10)


def test_digital_and_expected_runs_agree_without_saturation() -> None:
    """With tau far above the weights the discrete model is gradient descent."""
    problem = make_problem(40, 10, w_star_std=0.3, seed=2)
    digital = run_problem(problem, paper_config("digital-sgd", mode="ideal"), steps=200,
                          lr=0.05, sigma=0.0)
    analog = run_problem(problem, paper_config("analog-sgd", tau=1e4, mode="expected"),
                         steps=200, lr=0.05, sigma=0.0)
    np.testing.assert_allclose(analog.final_weights, digital.final_weights, atol=1e-3)


def test_saturation_term() -> None:
    assert saturation(np.array([0.0, 0.5]), 1.0) == pytest.approx(0.5 * (0.25 / 0.75))
    assert saturation(np.array([1.0]), 1.0) == float("inf")


def test_registry_holds_the_paper_and_the_successors() -> None:
    assert list(EXPERIMENTS) == ["fig1", "fig3", "fig4-noise", "fig4-init", "theory",
                                 "successors", "fig5-fcn", "fig5-cnn"]
    assert all("CPU-" in EXPERIMENTS[n].not_run_note for n in ("fig5-fcn", "fig5-cnn"))
    assert expand(["fig5", "fig1", "fig5-cnn"]) == ["fig5-fcn", "fig5-cnn", "fig1"]


def test_successors_config_is_the_least_squares_task_setting() -> None:
    from hilctl.reproduce.successors import successors_config

    cfg = successors_config("c-ttv2", 1.0, seed=4)
    assert (cfg.task.steps, cfg.task.lr, cfg.task.sigma) == (4000, 0.02, 0.1)
    assert cfg.device.dw_min == 0.001 and cfg.device.w_max == 1.0 and cfg.device.w_min == -1.0
    assert cfg.periphery.is_perfect and cfg.seed == 4
    assert (cfg.algorithm.desired_bl, cfg.algorithm.in_chop_prob) == (400, 0.02)
    assert cfg.algorithm.forget_buffer is False
    residual = successors_config("residual", 0.5, seed=0)
    assert residual.tile.reference == "symmetric-point" and residual.algorithm.gamma == 0.4
    assert successors_config("tiki-taka", 0.5, seed=0).algorithm.fast_lr == 0.1


def test_fig5_configs_follow_the_paper() -> None:
    from hilctl.reproduce.mnist import FULL, QUICK, fig5_config

    full = fig5_config("mnist-fcn", "tiki-taka", 0.7, 0, FULL["mnist-fcn"])
    assert (full.task.epochs, full.task.lr, full.task.batch, full.task.lr_step_epochs) == (
        80, 0.05, 10, 35)
    assert full.algorithm.fast_lr == 0.01 and full.device.w_max == 0.7
    assert not full.periphery.is_perfect  # aihwkit's default periphery
    cnn = fig5_config("mnist-cnn", "analog-sgd", 0.6, 0, FULL["mnist-cnn"])
    assert (cnn.task.name, cnn.task.epochs, cnn.task.batch) == ("mnist-cnn", 80, 8)
    assert all(v.get("limit_train") for v in QUICK.values())


def test_table_says_why_an_experiment_was_not_run() -> None:
    from hilctl.reproduce import ExperimentResult
    from hilctl.reproduce.report import markdown

    table = markdown([ExperimentResult("fig4-init", command="hilctl reproduce fig4-init")])
    assert "## Not run for this table" in table and "CPU-minutes" in table
    assert "### fig5-cnn" in table and "### fig1" not in table


def test_quick_set_runs_and_every_claim_holds(tmp_path, capsys) -> None:
    """The README's promise for CI: the whole --quick set, fixed seed, all claims hold."""
    code = main(["reproduce", "--quick", "--seed", "0", "--workers", "2", "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0, out.out
    assert "FAIL" not in out.out
    assert "claims hold" in out.out
    for name in EXPERIMENTS:
        png = tmp_path / f"{name}.png"
        assert png.stat().st_size > 1000
        assert f"{name}:" in out.err  # progress on stderr
    assert "successors" in out.out and "fig5-cnn" in out.out
    table = (tmp_path / "results.md").read_text()
    assert "| PASS |" in table and "FAIL" not in table
    with open(tmp_path / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["experiment"] for r in rows} == set(EXPERIMENTS)
    assert all(r["command"].startswith("hilctl reproduce ") for r in rows)
    assert all(float(r["seconds"]) >= 0 for r in rows)
    assert "2 runs on a local cluster of 2 worker process(es)" in out.err  # fig5's went to workers
    assert {p.stem for p in tmp_path.glob("*.json")} == set(EXPERIMENTS)


def test_tables_gather_experiments_saved_one_at_a_time(tmp_path, capsys) -> None:
    """Two invocations into one --out: the table holds both; a rerun replaces its section."""
    assert main(["reproduce", "fig4-init", "--quick", "--out", str(tmp_path)]) == 0
    assert main(["reproduce", "fig4-noise", "--quick", "--seed", "1", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    table = (tmp_path / "results.md").read_text()
    assert "`hilctl reproduce fig4-init --quick --seed 0`" in table
    assert "`hilctl reproduce fig4-noise --quick --seed 1`" in table
    assert table.index("### fig4-noise") < table.index("### fig4-init")  # registry order
    assert "Produced 20" in table and "hilctl 0.1" in table
    saved = report.load_results(tmp_path)
    assert [r.name for r in saved] == ["fig4-noise", "fig4-init"]
    assert all(r.claims and r.rows and r.figure and r.figure.exists() for r in saved)
    with open(tmp_path / "results.csv") as fh:
        assert {r["experiment"] for r in csv.DictReader(fh)} == {"fig4-init", "fig4-noise"}
    assert main(["reproduce", "fig4-init", "--quick", "--seed", "2", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "results.md").read_text()
    assert "fig4-init --quick --seed 2" in table and "fig4-init --quick --seed 0" not in table


def test_unreadable_saved_result_is_refused_before_running(tmp_path, capsys) -> None:
    (tmp_path / "fig1.json").write_text("{not json")
    assert main(["reproduce", "fig4-init", "--quick", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "fig1.json" in err and "not a hilctl reproduce result" in err
    assert not (tmp_path / "fig4-init.json").exists()


def test_map_keeps_the_order_on_a_cluster() -> None:
    from hilctl.cluster import Cluster

    messages: list[str] = []
    with Cluster(workers=2) as cluster:
        ctx = RunContext(cluster=cluster, progress=messages.append)
        assert ctx.map(math.factorial, [5, 3, 4], ["a", "b", "c"]) == [120, 6, 24]
    assert messages[0] == "3 runs on a local cluster of 2 worker process(es)"
    assert sorted(m.split(":")[0] for m in messages[1:]) == ["a", "b", "c"]
    one: list[str] = []
    assert RunContext(progress=one.append).map(math.factorial, [3], ["x"]) == [6]
    assert one == ["x"]  # in this process: each item is announced as it starts


def test_workers_of_a_local_cluster_get_one_blas_thread_unless_the_user_chose(monkeypatch) -> None:
    from hilctl.cluster import Cluster

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    with Cluster(workers=1) as cluster:
        [seen] = cluster.map(_blas_threads, [None], ["x"], lambda _: None)
    assert seen == ("1", "4")


def _blas_threads(_: object) -> tuple[str | None, str | None]:
    return os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS")


def test_workers_give_the_same_results_as_one_process(capsys) -> None:
    """fig5-fcn --quick on two worker processes gives the sequential run's numbers."""
    from hilctl.cluster import Cluster

    [alone] = run_experiments(["fig5-fcn"], quick=True, seed=0, figures=False)
    with Cluster(workers=2) as cluster:
        [spread] = run_experiments(["fig5-fcn"], quick=True, seed=0, figures=False,
                                   cluster=cluster)
    assert [(r.setting, r.algorithm, r.value) for r in spread.rows] == [
        (r.setting, r.algorithm, r.value) for r in alone.rows]
    assert spread.curves == alone.curves


def test_claims_are_checked_on_the_numbers() -> None:
    """A claim fails when its numbers contradict it (not just reported as PASS)."""
    [result] = run_experiments(["fig4-init"], quick=True, seed=0, figures=False)
    assert result.claims and all(c.passed for c in result.claims)
    from hilctl.reproduce import Claim, all_passed

    result.claims.append(Claim("fig4-init", "bogus", False, ""))
    assert not all_passed([result])


def test_unknown_experiment_is_refused(capsys) -> None:
    assert main(["reproduce", "fig9"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'fig9'" in err and "fig5-cnn, fig5" in err


def test_workers_must_be_positive_and_jobs_is_their_alias(capsys) -> None:
    assert main(["reproduce", "fig1", "--jobs", "0"]) == 2
    assert "--workers/--jobs" in capsys.readouterr().err
    assert main(["reproduce", "fig1", "--workers", "0"]) == 2
    assert "--workers/--jobs" in capsys.readouterr().err


def test_workers_without_dask_say_how_to_install_it(capsys, monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    assert main(["reproduce", "fig1", "--quick", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'hilctl[sweep]'" in err


def test_a_scheduler_that_does_not_answer_is_named(capsys, monkeypatch) -> None:
    from hilctl import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT", 0.5)
    assert main(["reproduce", "fig1", "--quick", "--scheduler", "tcp://127.0.0.1:9"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tcp://127.0.0.1:9" in err


def test_a_full_fig5_training_reports_every_epoch_with_its_accuracy(capsys) -> None:
    from hilctl.reproduce.mnist import Training, run_training

    values = (("epochs", 2), ("lr", 1.0), ("batch", 10), ("limit_train", 200))
    trained = run_training(Training("mnist-fcn", "digital-sgd", 0.6, 0, values, True))
    err = capsys.readouterr().err.splitlines()
    assert len(trained.test_acc) == 2 and trained.seconds > 0
    assert [line.split("] ", 1)[1].split(" (")[0] for line in err] == [
        f"mnist-fcn digital-sgd: epoch {e}/2, test accuracy {a:.3f}"
        for e, a in enumerate(trained.test_acc, 1)]
