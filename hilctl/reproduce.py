"""Regenerate the least-squares results of Wu et al. (NeurIPS 2024) on the emulator.

Each experiment of :data:`EXPERIMENTS` follows one of the authors' scripts (github.com/
Zhaoxian-Wu/analog-training, folder ``NeurIPS-2024``; settings read there, code our own) and
returns result rows (one per measured number, with the seconds it took and the command that
reproduces it), qualitative claims checked on its own numbers, and a figure.

- ``fig1``  (``S1-SGD-diff-lr.py``): Analog SGD vs digital SGD over learning rates.
- ``fig3``  (``S2-dynamic-verification.py``, ``S3.1-ablation-tau.py``): the discrete-time model
  (update mode ``expected``) vs the pulsed simulation vs digital SGD, tau in {1, 1.5, 2, 2.5}.
- ``fig4-noise`` (``S3.2-ablation-sigma.py``): Analog SGD's error against sigma^2.
- ``fig4-init``  (``S3.3-ablation-init.py``): Analog SGD from different initial weights.
- ``theory``: Analog SGD's error against the bound's term sigma^2 S_K, and Tiki-Taka's error
  vanishing as the number of steps K grows (step sizes ~ 1/sqrt(K), as in the theorems).

Fig. 5 (MNIST FCN / CNN) is not here: add it with :func:`register_experiment` (an
:class:`Experiment` whose ``run`` returns an :class:`ExperimentResult`); the CLI, tables and
claims then pick it up unchanged.
"""

from __future__ import annotations

import csv
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hilctl.paper_problems import (
    LinearProblem,
    RunResult,
    make_problem,
    paper_config,
    run_problem,
    saturation,
)

Progress = Callable[[str], None]
AUTHORS = "github.com/Zhaoxian-Wu/analog-training/NeurIPS-2024/"


@dataclass
class Row:
    experiment: str
    setting: str
    algorithm: str
    metric: str
    value: float
    seconds: float
    command: str


@dataclass
class Claim:
    experiment: str
    claim: str
    passed: bool
    detail: str


@dataclass
class ExperimentResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    curves: dict[str, Any] = field(default_factory=dict)  # whatever the figure needs
    figure: Path | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # printed under the experiment's heading


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    source: str
    run: Callable[[bool, int, Progress], ExperimentResult]
    plot: Callable[[ExperimentResult, Path], None]
    #: why a table may lack this experiment's full run (e.g. it takes hours); shown by
    #: :func:`markdown` when the experiment is registered but was not run
    not_run_note: str = ""
    #: numbers measured outside ``hilctl reproduce`` (labelled as such in every table)
    measured_separately: tuple[Row, ...] = ()


EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(experiment: Experiment) -> Experiment:
    """Add an experiment (e.g. Fig. 5 MNIST) to the registry the CLI runs."""
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def command_for(name: str, quick: bool, seed: int) -> str:
    return f"hilctl reproduce {name}" + (" --quick" if quick else "") + f" --seed {seed}"


def _claim(res: ExperimentResult, text: str, passed: bool, detail: str) -> None:
    res.claims.append(Claim(res.name, text, bool(passed), detail))


def _add(res: ExperimentResult, cmd: str, setting: str, algorithm: str, metric: str,
         value: float, seconds: float) -> None:
    res.rows.append(Row(res.name, setting, algorithm, metric, float(value), seconds, cmd))


def _strictly_decreasing(values: Sequence[float]) -> bool:
    return all(b < a for a, b in itertools_pairwise(values))


def _strictly_increasing(values: Sequence[float]) -> bool:
    return all(b > a for a, b in itertools_pairwise(values))


def itertools_pairwise(values: Sequence[float]) -> list[tuple[float, float]]:
    return list(itertools.pairwise(values))


def _fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3g}" for v in values)


def _thin(curve: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, len(curve) // points)
    k = np.arange(0, len(curve), step)
    return k, curve[k]


def _smooth(curve: np.ndarray, coef: float = 0.9) -> np.ndarray:
    """The authors' exponential smoothing of loss curves."""
    out = np.empty_like(curve)
    acc = curve[0]
    for i, v in enumerate(curve):
        acc = coef * acc + (1 - coef) * v if i else v
        out[i] = acc
    return out


def _mean_over_seeds(problem: LinearProblem, make_cfg: Callable[[], Any], seeds: Sequence[int],
                     **kwargs: Any) -> tuple[float, float, list[RunResult]]:
    runs = [run_problem(problem, make_cfg(), noise_seed=s, **kwargs) for s in seeds]
    return (float(np.mean([r.learning_error for r in runs])),
            float(sum(r.seconds for r in runs)), runs)


# -- Fig. 1 -------------------------------------------------------------------------------------

def run_fig1(quick: bool, seed: int, progress: Progress) -> ExperimentResult:
    """S1: A 100x40 N(0,1), w* ~ N(0, 0.45^2), MSE loss, sigma 0.01/sqrt(40), tau 3,
    soft bounds dw_min 1e-4, BL 800; lr in {0.2, 0.1, 0.05, 0.03}; 2500 iterations."""
    res = ExperimentResult("fig1")
    cmd = command_for("fig1", quick, seed)
    problem = make_problem(100, 40, w_star_std=0.45, loss_scale=1.0, seed=seed)
    lrs = [0.2, 0.1, 0.05, 0.03]
    steps = 1500 if quick else 2500
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    sigma, tau = 0.01 / math.sqrt(40), 3.0
    algos = {"digital-sgd": lambda: paper_config("digital-sgd", mode="ideal", seed=seed),
             "analog-sgd": lambda: paper_config("analog-sgd", tau=tau, dw_min=1e-4,
                                                desired_bl=800, seed=seed)}
    errors: dict[str, list[float]] = {a: [] for a in algos}
    for algo, make in algos.items():
        for lr in lrs:
            progress(f"fig1: {algo} lr={lr}")
            err, secs, runs = _mean_over_seeds(problem, make, seeds, steps=steps, lr=lr,
                                               sigma=sigma)
            errors[algo].append(err)
            _add(res, cmd, f"tau=3 lr={lr} K={steps} seeds={len(seeds)}", algo,
                 "learning error", err, secs)
            res.curves[(algo, lr)] = runs[0].errors
    d, a = errors["digital-sgd"], errors["analog-sgd"]
    res.curves["lrs"], res.curves["errors"] = lrs, errors
    _claim(res, "digital SGD's error falls with the learning rate", _strictly_decreasing(d),
           f"digital at lr {_fmt(lrs)}: {_fmt(d)}")
    _claim(res, "Analog SGD's error is above digital SGD's at every learning rate",
           all(x > y for x, y in zip(a, d, strict=True)), f"analog: {_fmt(a)}")
    ratios = [x / y for x, y in zip(a, d, strict=True)]
    _claim(res, "Analog SGD keeps an asymptotic error: its gap to digital grows as lr falls",
           ratios[-1] > 1.5 and ratios[-1] > ratios[0],
           f"analog/digital at lr {_fmt(lrs)}: {_fmt(ratios)} (last > 1.5 and > first)")
    return res


def plot_fig1(res: ExperimentResult, path: Path) -> None:
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    lrs = res.curves["lrs"]
    for algo, label in (("digital-sgd", "Digital SGD"), ("analog-sgd", "Analog SGD")):
        ax1.plot(lrs, res.curves["errors"][algo], "-o", label=label)
        for i, lr in enumerate(lrs):
            k, v = _thin(_smooth(res.curves[(algo, lr)]))
            ax2.plot(k, v, "-" if algo == "analog-sgd" else ":", color=f"C{i}",
                     label=f"{label} lr={lr}" if algo == "analog-sgd" else None)
    ax1.set(xscale="log", yscale="log", xlabel="step size", ylabel="learning error",
            title="Fig. 1: error vs lr")
    # plain numeric ticks at the four learning rates (log-axis minor labels overlapped)
    ax1.xaxis.set_major_locator(_ticker().FixedLocator(lrs))
    ax1.xaxis.set_minor_locator(_ticker().NullLocator())
    ax1.xaxis.set_major_formatter(_ticker().FixedFormatter([f"{lr:g}" for lr in lrs]))
    ax2.set(yscale="log", xlabel="iteration k", ylabel="f(W_k)/n",
            title="curves (dotted: digital)")
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    _save(fig, path)


# -- Fig. 3 -------------------------------------------------------------------------------------

FIG3_SIM_STATES = 300  # dw_min = tau / 300 (the authors' num_of_state)


def run_fig3(quick: bool, seed: int, progress: Progress) -> ExperimentResult:
    """S2: A/2, w* ~ N(0, 0.3^2), MSE/2, sigma 0.1, lr 0.03, 2500 iterations, tau in
    {1, 1.5, 2, 2.5}: discrete model (expected) vs pulsed (dw_min tau/300, BL 5000, symmetric
    point subtracted) vs digital."""
    res = ExperimentResult("fig3")
    cmd = command_for("fig3", quick, seed)
    problem = make_problem(100, 40, w_star_std=0.3, a_scale=0.5, loss_scale=0.5, seed=seed)
    taus = [1.0, 1.5, 2.0, 2.5]
    steps = 1500 if quick else 2500
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    lr, sigma = 0.03, 0.1
    errors: dict[str, list[float]] = {"digital-sgd": [], "analog-sgd expected": [],
                                      "analog-sgd pulsed": []}
    for tau in taus:
        makers = {
            "digital-sgd": lambda: paper_config("digital-sgd", mode="ideal", seed=seed),
            "analog-sgd expected": lambda tau=tau: paper_config("analog-sgd", tau=tau,
                                                                mode="expected", seed=seed),
            "analog-sgd pulsed": lambda tau=tau: paper_config(
                "analog-sgd", tau=tau, dw_min=tau / FIG3_SIM_STATES, desired_bl=5000,
                reference="symmetric-point", seed=seed),
        }
        for algo, make in makers.items():
            progress(f"fig3: tau={tau} {algo}")
            err, secs, runs = _mean_over_seeds(problem, make, seeds, steps=steps, lr=lr,
                                               sigma=sigma)
            errors[algo].append(err)
            _add(res, cmd, f"tau={tau} lr={lr} sigma={sigma} K={steps} seeds={len(seeds)}",
                 algo, "learning error", err, secs)
            res.curves[(algo, tau)] = runs[0].errors
    res.curves["taus"], res.curves["errors"] = taus, errors
    e, p, d = (errors[k] for k in ("analog-sgd expected", "analog-sgd pulsed", "digital-sgd"))
    ratios = [max(x / y, y / x) for x, y in zip(e, p, strict=True)]
    _claim(res, "the discrete-time model and the pulsed simulation agree (within 2x)",
           max(ratios) < 2.0, f"expected {_fmt(e)}; pulsed {_fmt(p)}; worst ratio "
           f"{max(ratios):.2f}")
    _claim(res, "both analog curves stay above digital SGD at every tau",
           all(min(x, y) > z for x, y, z in zip(e, p, d, strict=True)), f"digital {_fmt(d)}")
    _claim(res, "Analog SGD's error falls as tau grows (S3.1)",
           _strictly_decreasing(e) and _strictly_decreasing(p),
           f"tau {_fmt(taus)}: expected {_fmt(e)}; pulsed {_fmt(p)}")
    return res


def plot_fig3(res: ExperimentResult, path: Path) -> None:
    plt = _pyplot()
    taus = res.curves["taus"]
    fig, axes = plt.subplots(1, len(taus), figsize=(11, 2.8), sharey=True)
    styles = {"digital-sgd": ("C0", "SGD"), "analog-sgd expected": ("C1", "discrete model"),
              "analog-sgd pulsed": ("C2", "pulsed simulation")}
    for ax, tau in zip(axes, taus, strict=True):
        for algo, (color, label) in styles.items():
            k, v = _thin(_smooth(res.curves[(algo, tau)], 0.8))
            ax.plot(k, v, color=color, label=label)
        ax.set(yscale="log", title=f"tau={tau}", xlabel="iteration k")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("f(W_k)/n")
    axes[0].legend(fontsize=7)
    _save(fig, path)


# -- Fig. 4 ablations ---------------------------------------------------------------------------

def run_fig4_noise(quick: bool, seed: int, progress: Progress) -> ExperimentResult:
    """S3.2: A 100x50, w* ~ N(0, 0.5^2), MSE/2, tau 2, lr 0.1, 200 iterations, soft bounds
    dw_min 1e-4, BL 5000; sigma^2 in {1e-3, 1e-2, 1e-1, 1}."""
    res = ExperimentResult("fig4-noise")
    cmd = command_for("fig4-noise", quick, seed)
    problem = make_problem(100, 50, w_star_std=0.5, loss_scale=0.5, seed=seed)
    variances = [1e-3, 1e-2, 1e-1, 1.0]
    steps = 200
    seeds = list(range(seed, seed + (3 if quick else 10)))
    errors = []
    for var in variances:
        progress(f"fig4-noise: sigma^2={var}")
        err, secs, runs = _mean_over_seeds(
            problem, lambda: paper_config("analog-sgd", tau=2.0, dw_min=1e-4, desired_bl=5000,
                                          seed=seed),
            seeds, steps=steps, lr=0.1, sigma=math.sqrt(var))
        errors.append(err)
        _add(res, cmd, f"tau=2 lr=0.1 sigma^2={var} K={steps} seeds={len(seeds)}",
             "analog-sgd", "learning error", err, secs)
        res.curves[var] = runs[0].errors
    res.curves["variances"], res.curves["errors"] = variances, errors
    _claim(res, "Analog SGD's error rises with sigma^2", _strictly_increasing(errors),
           f"sigma^2 {_fmt(variances)}: {_fmt(errors)}")
    return res


def plot_fig4_noise(res: ExperimentResult, path: Path) -> None:
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    for i, var in enumerate(res.curves["variances"]):
        ax1.plot(res.curves[var], color=f"C{i}", label=f"sigma^2={var:g}")
    ax2.plot(res.curves["variances"], res.curves["errors"], "-o")
    ax1.set(yscale="log", xlabel="iteration k", ylabel="f(W_k)/n", title="Analog SGD, tau=2")
    ax2.set(xscale="log", yscale="log", xlabel="sigma^2", ylabel="learning error",
            title="error vs noise")
    ax1.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    _save(fig, path)


def run_fig4_init(quick: bool, seed: int, progress: Progress) -> ExperimentResult:
    """S3.3: A 100x50, w* ~ N(0, 0.5^2), MSE, tau 1, lr 0.1, 50 iterations, sigma
    0.01/sqrt(50), soft bounds dw_min 1e-4, BL 400; W0 = c * ones for c in
    {1e3, 1e2, 10, 1, 1e-2} (clipped to the bounds) or digital-GD warm starts of 10/20/30 steps.

    The authors plot 50 iterations; at lr 0.1 the slowest direction of this problem contracts
    by only ~e^-1 per 37 iterations, so at K=50 the runs have not yet forgotten where they
    started. We record the error at K=50 (a row) and judge the claim -- the *asymptotic* error
    does not depend on W0 -- on the learning error after K=500 (quick: 300) iterations."""
    res = ExperimentResult("fig4-init")
    cmd = command_for("fig4-init", quick, seed)
    problem = make_problem(100, 50, w_star_std=0.5, loss_scale=1.0, seed=seed)
    steps, lr, tau, sigma = (300 if quick else 500), 0.1, 1.0, 0.01 / math.sqrt(50)
    shown = 50  # the authors' horizon
    scales = [1e3, 1e2, 10.0, 1.0, 1e-2]
    warm = [10, 20, 30]
    if quick:
        scales, warm = [1e3, 1.0, 1e-2], [20]
    starts: dict[str, np.ndarray] = {f"W0={c:g}": np.full(problem.shape, c) for c in scales}
    for k in warm:
        w = np.zeros(problem.shape)
        for _ in range(k):
            w = w - lr * problem.gradient(w)
        starts[f"warm {k}"] = w
    errors = []
    for label, w0 in starts.items():
        progress(f"fig4-init: {label}")
        run = run_problem(problem, paper_config("analog-sgd", tau=tau, dw_min=1e-4,
                                                desired_bl=400, seed=seed),
                          steps=steps, lr=lr, sigma=sigma, w0=w0, noise_seed=seed)
        errors.append(run.learning_error)
        _add(res, cmd, f"tau=1 lr=0.1 {label}", "analog-sgd", f"error at K={shown}",
             run.errors[shown], 0.0)
        _add(res, cmd, f"tau=1 lr=0.1 {label} K={steps}", "analog-sgd", "learning error",
             run.learning_error, run.seconds)
        res.curves[label] = run.errors
    res.curves["labels"], res.curves["errors"] = list(starts), errors
    spread = max(errors) / min(errors)
    _claim(res, "Analog SGD's asymptotic error does not depend on the initial weights "
           "(within 1.2x)", spread < 1.2, f"errors {_fmt(errors)}; max/min {spread:.2f}")
    return res


def plot_fig4_init(res: ExperimentResult, path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for i, label in enumerate(res.curves["labels"]):
        ax.plot(res.curves[label], color=f"C{i}", label=label)
    ax.set(yscale="log", xlabel="iteration k", ylabel="f(W_k)/n",
           title="Analog SGD from different W0 (tau=1)")
    ax.legend(fontsize=7)
    ax.grid(True, alpha=0.3)
    _save(fig, path)


# -- Theory check -------------------------------------------------------------------------------

def run_theory(quick: bool, seed: int, progress: Progress) -> ExperimentResult:
    """On the S2 problem at tau 1 in the discrete model (``expected``):

    (a) Analog SGD's learning error against sigma^2 S_K for sigma in {0.025, 0.05, 0.1, 0.2};
    (b) step sizes alpha_K = 0.03 sqrt(500/K) for K in {500, 2000, 8000}: the mean error over the
        last K/2 iterations of digital SGD, Analog SGD (lr alpha_K) and Tiki-Taka (fast lr
        alpha_K, transfer lr alpha_K/10, full-matrix transfer every step, gamma 0).
    """
    res = ExperimentResult("theory")
    cmd = command_for("theory", quick, seed)
    problem = make_problem(100, 40, w_star_std=0.3, a_scale=0.5, loss_scale=0.5, seed=seed)
    tau = 1.0
    sigmas = [0.05, 0.1, 0.2] if quick else [0.025, 0.05, 0.1, 0.2]
    steps = 1500 if quick else 2500
    errs, bounds = [], []
    for sigma in sigmas:
        progress(f"theory: Analog SGD sigma={sigma}")
        run = run_problem(problem, paper_config("analog-sgd", tau=tau, mode="expected",
                                                seed=seed),
                          steps=steps, lr=0.03, sigma=sigma, noise_seed=seed)
        s_k = saturation(run.w_inf, tau)
        errs.append(run.learning_error)
        bounds.append(sigma**2 * s_k)
        setting = f"tau=1 lr=0.03 sigma={sigma} K={steps}"
        _add(res, cmd, setting, "analog-sgd expected", "learning error", run.learning_error,
             run.seconds)
        _add(res, cmd, setting, "analog-sgd expected", "S_K", s_k, 0.0)
        _add(res, cmd, setting, "analog-sgd expected", "sigma^2 S_K", sigma**2 * s_k, 0.0)
    res.curves["sigmas"], res.curves["asgd"], res.curves["bound"] = sigmas, errs, bounds
    ratios = [e / b for e, b in zip(errs, bounds, strict=True)]
    _claim(res, "Analog SGD's error rises with the bound's term sigma^2 S_K",
           _strictly_increasing(bounds) and _strictly_increasing(errs),
           f"sigma^2 S_K {_fmt(bounds)}; error {_fmt(errs)}")
    _claim(res, "Analog SGD's error tracks sigma^2 S_K (error/term within 4x across sigma)",
           max(ratios) / min(ratios) < 4.0, f"error/(sigma^2 S_K) {_fmt(ratios)}")

    budgets = [500, 1500, 4500] if quick else [500, 2000, 8000]
    tails: dict[str, list[float]] = {"digital-sgd": [], "analog-sgd": [], "tiki-taka": []}
    for k_steps in budgets:
        alpha = 0.03 * math.sqrt(500 / k_steps)
        runs = {
            "digital-sgd": (paper_config("digital-sgd", mode="ideal", seed=seed), alpha),
            "analog-sgd": (paper_config("analog-sgd", tau=tau, mode="expected", seed=seed),
                           alpha),
            "tiki-taka": (paper_config("tiki-taka", tau=tau, mode="expected", seed=seed,
                                       algorithm_options={"fast_lr": alpha,
                                                          "n_reads_per_transfer": 40}),
                          alpha / 10),
        }
        for algo, (cfg, lr) in runs.items():
            progress(f"theory: {algo} K={k_steps}")
            run = run_problem(problem, cfg, steps=k_steps, lr=lr, sigma=0.1, noise_seed=seed)
            tail = float(np.mean(run.errors[k_steps // 2:]))
            tails[algo].append(tail)
            _add(res, cmd, f"tau=1 sigma=0.1 K={k_steps} alpha={alpha:.4g}", algo,
                 "mean error over last K/2", tail, run.seconds)
            res.curves[(algo, k_steps)] = run.errors
    res.curves["budgets"], res.curves["tails"] = budgets, tails
    tt, asgd = tails["tiki-taka"], tails["analog-sgd"]
    _claim(res, "Tiki-Taka's error decreases as the steps K grow", _strictly_decreasing(tt),
           f"K {_fmt(budgets)}: {_fmt(tt)}")
    _claim(res, "at the largest K Tiki-Taka is below Analog SGD, whose error plateaus",
           tt[-1] < asgd[-1] and asgd[-1] > 0.5 * asgd[0],
           f"Analog SGD {_fmt(asgd)}; Tiki-Taka {_fmt(tt)}")
    return res


def plot_theory(res: ExperimentResult, path: Path) -> None:
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(8.5, 3.2))
    ax1.plot(res.curves["bound"], res.curves["asgd"], "-o")
    for s, b, e in zip(res.curves["sigmas"], res.curves["bound"], res.curves["asgd"],
                       strict=True):
        ax1.annotate(f"sigma={s:g}", (b, e), fontsize=7)
    ax1.set(xscale="log", yscale="log", xlabel="sigma^2 S_K", ylabel="learning error",
            title="Analog SGD vs bound term (tau=1)")
    for algo in ("digital-sgd", "analog-sgd", "tiki-taka"):
        ax2.plot(res.curves["budgets"], res.curves["tails"][algo], "-o", label=algo)
    ax2.set(xscale="log", yscale="log", xlabel="steps K (alpha ~ 1/sqrt(K))",
            ylabel="mean error, last K/2", title="error vs K")
    ax2.legend(fontsize=7)
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    _save(fig, path)


# -- Tiki-Taka's successors on least squares ----------------------------------------------------

#: The successors' settings under which they converge on the issue-3 problem in 4000 steps (see
#: tests/test_algorithms_tt.py): aihwkit's desired_bl = 1 lets a cell of C move one pulse per
#: read of its column, too slow for |W*| up to 0.9 tau; c-TTv2's random choppers at the default
#: in_chop_prob 0.1 flip A's content into the buffer with the wrong sign too often; residual
#: learning needs zero-shifted tiles (symmetric-point reference) and uses the authors' gamma 0.4.
SUCCESSOR_SETTINGS: dict[str, dict[str, Any]] = {
    "digital-sgd": {},
    "analog-sgd": {},
    "tiki-taka": {"fast_lr": 0.1},
    "ttv2": {"desired_bl": 10},
    "c-ttv2": {"desired_bl": 20, "in_chop_prob": 0.02, "forget_buffer": False},
    "agad": {"desired_bl": 20},
    "residual": {"gamma": 0.4},
}
TT_FAMILY = ("tiki-taka", "ttv2", "c-ttv2", "agad", "residual")
#: Claim thresholds of ``successors``, from the measured full run (4000 steps, seeds 0-2, mean
#: over seeds): the worst Tiki-Taka-family ratio to digital is residual's 1.75 (tau 0.5) / 1.80
#: (tau 1.0); seed by seed the worst is 1.88 (c-TTv2, tau 0.5, seed 1). 2.5x leaves a 1.33x
#: margin over the worst single seed. Analog SGD sits 86-99x above digital at tau 0.5 and
#: 9.2-22x at tau 1.0 (seed by seed; 12.9x on the mean), so 5x leaves a 1.8x margin.
SUCCESSORS_FACTOR = 2.5
SUCCESSORS_ANALOG_FACTOR = 5.0


def successors_config(algorithm: str, tau: float, seed: int, steps: int = 4000) -> Any:
    """The issue-3 least-squares run (8x16, lr 0.02, sigma 0.1, soft bounds +-tau, dw_min 0.001,
    no device variations, perfect periphery) of ``algorithm`` with its settings above."""
    from hilctl.config import no_variation
    from hilctl.train_config import resolve_train_config

    return resolve_train_config(
        task="least-squares", algorithm=algorithm, device="soft-bounds", seed=seed,
        overrides={
            "task": {"steps": steps, "eval_window": 500, "lr": 0.02, "sigma": 0.1},
            "algorithm": SUCCESSOR_SETTINGS[algorithm],
            "device": {**no_variation("soft-bounds"), "dw_min": 0.001, "tau": tau},
            "periphery": {"is_perfect": True},
            "tile": {"reference": "symmetric-point"} if algorithm == "residual" else {},
        })


def run_successors(quick: bool, seed: int, progress: Progress) -> ExperimentResult:
    """Tiki-Taka and its successors (TTv2, c-TTv2, AGAD, residual learning) against digital and
    Analog SGD on hilctl's least-squares task (``hilctl train --task least-squares``), tau in
    {0.5, 1.0}, 4000 steps; rel_err = ||W - W*||^2 / ||W*||^2 over the last 500 steps.

    Quick runs one seed instead of three at the same 4000 steps: at 2000 steps (measured, seed
    0) Tiki-Taka and its successors are still 7-43x above digital at tau 0.5, so fewer steps
    would not show the claim."""
    from hilctl.training import train

    res = ExperimentResult("successors")
    cmd = command_for("successors", quick, seed)
    taus, steps = [0.5, 1.0], 4000
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    errors: dict[str, list[float]] = {a: [] for a in SUCCESSOR_SETTINGS}
    for tau in taus:
        for algo in SUCCESSOR_SETTINGS:
            progress(f"successors: tau={tau} {algo}")
            outcomes = [train(successors_config(algo, tau, s, steps)) for s in seeds]
            err = float(np.mean([o.final["rel_err"] for o in outcomes]))
            errors[algo].append(err)
            _add(res, cmd, f"tau={tau} lr=0.02 sigma=0.1 K={steps} seeds={len(seeds)}", algo,
                 "rel_err", err, sum(o.seconds for o in outcomes))
            res.curves[(algo, tau)] = outcomes[0].history
    res.curves["taus"], res.curves["errors"] = taus, errors
    res.notes.append("Settings (8x16 problem, soft bounds +-tau, dw_min 0.001, no device "
                     "variations, perfect periphery): " + "; ".join(
                         f"{a} " + (" ".join(f"{k}={v}" for k, v in o.items()) or "defaults")
                         for a, o in SUCCESSOR_SETTINGS.items())
                     + "; residual on tiles with tile.reference=symmetric-point.")
    digital = errors["digital-sgd"]
    ratios = {a: [e / d for e, d in zip(errors[a], digital, strict=True)] for a in errors}
    worst = max(TT_FAMILY, key=lambda a: max(ratios[a]))
    _claim(res, f"every Tiki-Taka-family algorithm ends within {SUCCESSORS_FACTOR:g}x digital "
           "SGD's rel_err at every tau",
           all(r < SUCCESSORS_FACTOR for a in TT_FAMILY for r in ratios[a]),
           f"ratio to digital at tau {_fmt(taus)}: " + "; ".join(
               f"{a} {_fmt(ratios[a])}" for a in TT_FAMILY) + f" (worst: {worst})")
    _claim(res, f"Analog SGD ends above {SUCCESSORS_ANALOG_FACTOR:g}x digital SGD's rel_err at "
           "every tau", all(r > SUCCESSORS_ANALOG_FACTOR for r in ratios["analog-sgd"]),
           f"analog/digital at tau {_fmt(taus)}: {_fmt(ratios['analog-sgd'])}")
    return res


def plot_successors(res: ExperimentResult, path: Path) -> None:
    plt = _pyplot()
    taus, errors = res.curves["taus"], res.curves["errors"]
    algos = list(errors)
    fig, ax = plt.subplots(figsize=(8, 3.4))
    width = 0.8 / len(taus)
    x = np.arange(len(algos))
    for i, tau in enumerate(taus):
        ax.bar(x + (i - (len(taus) - 1) / 2) * width, [errors[a][i] for a in algos], width,
               label=f"tau={tau:g}", color=f"C{i}")
    for i, tau in enumerate(taus):
        ax.axhline(SUCCESSORS_FACTOR * errors["digital-sgd"][i], color=f"C{i}", ls=":", lw=1,
                   label=f"{SUCCESSORS_FACTOR:g}x digital, tau={tau:g}")
    ax.set_xticks(x, algos)
    ax.set(yscale="log", ylabel="rel_err (last 500 steps)",
           title="Least squares, 4000 steps: Tiki-Taka's successors vs SGD")
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


# -- Fig. 5: MNIST on the emulator --------------------------------------------------------------

FIG5_TAUS = (0.6, 0.7, 0.8)
FIG5_ALGOS: dict[str, dict[str, Any]] = {"digital-sgd": {}, "analog-sgd": {},
                                         "tiki-taka": {"fast_lr": 0.01}}
#: The full settings (the paper's Fig. 5): 80 epochs, lr 0.05, StepLR(35, 0.1); the FCN at batch
#: 10, the CNN at batch 8; aihwkit's default device variations and periphery.
FIG5_FULL = {"mnist-fcn": {"epochs": 80, "lr": 0.05, "batch": 10, "lr_step_epochs": 35},
             "mnist-cnn": {"epochs": 80, "lr": 0.05, "batch": 8, "lr_step_epochs": 35}}
#: The quick (CI) version: tau 0.6, digital vs Analog SGD only, a slice of the training set,
#: few epochs and a larger lr so that something is learned in seconds. Measured (test accuracy,
#: digital vs Analog SGD): FCN seed 0 0.706 vs 0.400, seed 2 0.672 vs 0.308; CNN seed 0 0.844 vs
#: 0.696, seed 1 0.843 vs 0.691. The claims ask for gaps of 0.15 (FCN) and 0.05 (CNN), about
#: half the smallest measured gap.
FIG5_QUICK = {"mnist-fcn": {"epochs": 3, "lr": 1.0, "batch": 10, "limit_train": 2000},
              "mnist-cnn": {"epochs": 1, "lr": 0.1, "batch": 8, "limit_train": 1000}}
FIG5_QUICK_GAP = {"mnist-fcn": 0.15, "mnist-cnn": 0.05}
FIG5_NOT_RUN = ("The full fig5 (MNIST FCN and CNN, 80 epochs at tau 0.6, 0.7, 0.8, digital, "
                "Analog SGD and Tiki-Taka) was not run for this table: it takes hours on the "
                "emulator. Run it with `hilctl reproduce fig5 --out DIR`; the CI-sized "
                "`hilctl reproduce fig5 --quick` checks that digital SGD beats Analog SGD.")
_SEPARATE = ("mnist-fcn {tau} lr=0.05 StepLR(35, 0.1) batch=10, 5k-image sample, seed 0 "
             "[measured separately: a full run on the emulator, not produced by this command]")


def _separate(tau: str, algo: str, at20: float, at80: float) -> tuple[Row, Row]:
    setting = _SEPARATE.format(tau=tau)
    cmd = "measured separately (full fig5 run)"
    return (Row("fig5", setting, algo, "test accuracy @20 epochs", at20, float("nan"), cmd),
            Row("fig5", setting, algo, "test accuracy @80 epochs", at80, float("nan"), cmd))


FIG5_MEASURED = (*_separate("(digital, no tau)", "digital-sgd", 0.893, 0.901),
                 *_separate("tau=0.6", "analog-sgd", 0.135, 0.288),
                 *_separate("tau=0.6", "tiki-taka", 0.129, 0.431),
                 *_separate("tau=0.8", "analog-sgd", 0.333, 0.596),
                 *_separate("tau=0.8", "tiki-taka", 0.149, 0.511))


def fig5_config(task: str, algorithm: str, tau: float, seed: int, values: dict[str, Any]) -> Any:
    from hilctl.train_config import resolve_train_config

    return resolve_train_config(task=task, algorithm=algorithm, device="soft-bounds", seed=seed,
                                overrides={"task": values, "algorithm": FIG5_ALGOS[algorithm],
                                           "device": {"tau": tau}})


def run_fig5(quick: bool, seed: int, progress: Progress) -> ExperimentResult:
    """Fig. 5: MNIST FCN (784-256-128-10, sigmoid) and LeNet-like CNN, every layer analog,
    digital vs Analog SGD vs Tiki-Taka (fast lr 0.01) at tau in {0.6, 0.7, 0.8}, aihwkit's
    default device variations and periphery (``hilctl train --task mnist-fcn``). The data are
    the IDX files if configured, else the 5,000-image sample (4,000 train, 1,000 test)."""
    from hilctl.training import train

    res = ExperimentResult("fig5")
    cmd = command_for("fig5", quick, seed)
    taus = [0.6] if quick else list(FIG5_TAUS)
    algos = ["digital-sgd", "analog-sgd"] if quick else list(FIG5_ALGOS)
    settings = FIG5_QUICK if quick else FIG5_FULL
    final: dict[tuple[str, str, float], float] = {}
    for task, values in settings.items():
        for algo in algos:
            for tau in taus if algo != "digital-sgd" else taus[:1]:
                progress(f"fig5: {task} {algo}" + ("" if algo == "digital-sgd" else f" tau={tau}"))
                out = train(fig5_config(task, algo, tau, seed, values))
                acc = out.history["test_acc"]
                final[(task, algo, tau)] = acc[-1]
                setting = (f"{task} " + ("" if algo == "digital-sgd" else f"tau={tau} ")
                           + " ".join(f"{k}={v}" for k, v in values.items()))
                if len(acc) >= 20:
                    _add(res, cmd, setting, algo, "test accuracy @20 epochs", acc[19], 0.0)
                _add(res, cmd, setting, algo, f"test accuracy @{len(acc)} epochs", acc[-1],
                     out.seconds)
                res.curves[(task, algo, tau)] = acc
    res.curves["tasks"], res.curves["final"] = list(settings), final
    if quick:
        res.notes.append(
            "Quick version: tau 0.6, digital vs Analog SGD, a slice of the training set and a "
            "larger lr (see the settings column). " + FIG5_NOT_RUN.replace(
                " for this table", " by --quick"))
    for task in settings:
        d = final[(task, "digital-sgd", taus[0])]
        a = [final[(task, "analog-sgd", t)] for t in taus]
        gap = FIG5_QUICK_GAP[task] if quick else 0.0
        _claim(res, f"{task}: digital SGD's test accuracy beats Analog SGD's"
               + (f" by more than {gap:g}" if gap else "") + " at every tau",
               all(d > x + gap for x in a), f"digital {d:.3f}; Analog SGD at tau {_fmt(taus)}: "
               f"{_fmt(a)}")
        if not quick:
            tt = final[(task, "tiki-taka", 0.6)]
            _claim(res, f"{task}: Tiki-Taka beats Analog SGD at tau 0.6", tt > a[0],
                   f"Tiki-Taka {tt:.3f}; Analog SGD {a[0]:.3f}")
    return res


def plot_fig5(res: ExperimentResult, path: Path) -> None:
    plt = _pyplot()
    tasks = res.curves["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.2), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for i, ((_task, algo, tau), acc) in enumerate(
                (k, v) for k, v in res.curves.items() if isinstance(k, tuple) and k[0] == task):
            label = algo if algo == "digital-sgd" else f"{algo} tau={tau:g}"
            ax.plot(range(1, len(acc) + 1), acc, "-o", ms=3, color=f"C{i}", label=label)
        ax.set(xlabel="epoch", ylabel="test accuracy", title=f"Fig. 5: {task}", ylim=(0, 1))
        ax.xaxis.set_major_locator(_ticker().MaxNLocator(integer=True))
        ax.legend(fontsize=7)
        ax.grid(True, alpha=0.3)
    _save(fig, path)


# -- registry, output ---------------------------------------------------------------------------

for _exp in (
    Experiment("fig1", "Fig. 1: Analog vs digital SGD over learning rates",
               AUTHORS + "S1-SGD-diff-lr.py", run_fig1, plot_fig1),
    Experiment("fig3", "Fig. 3: discrete model vs pulsed simulation vs digital",
               AUTHORS + "S2-dynamic-verification.py, S3.1-ablation-tau.py", run_fig3,
               plot_fig3),
    Experiment("fig4-noise", "Fig. 4: error vs gradient noise",
               AUTHORS + "S3.2-ablation-sigma.py", run_fig4_noise, plot_fig4_noise),
    Experiment("fig4-init", "Fig. 4: error vs initial weights",
               AUTHORS + "S3.3-ablation-init.py", run_fig4_init, plot_fig4_init),
    Experiment("theory", "Theory check: sigma^2 S_K and Tiki-Taka vs K",
               "paper Theorems (Analog SGD, Tiki-Taka)", run_theory, plot_theory),
):
    register_experiment(_exp)
register_experiment(Experiment(
    "successors", "Tiki-Taka's successors (TTv2, c-TTv2, AGAD, residual) on least squares",
    "issue 3's least-squares problem; aihwkit's compounds; Wu et al. 2025 (residual)",
    run_successors, plot_successors))
register_experiment(Experiment(
    "fig5", "Fig. 5: MNIST FCN and CNN, digital vs Analog SGD vs Tiki-Taka",
    "paper Fig. 5 (MNIST FCN and LeNet-like CNN); 80 epochs, lr 0.05, StepLR(35, 0.1)",
    run_fig5, plot_fig5, not_run_note=FIG5_NOT_RUN,
    measured_separately=FIG5_MEASURED))


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ticker() -> Any:
    _pyplot()
    import matplotlib.ticker

    return matplotlib.ticker


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    _pyplot().close(fig)


def run_experiments(names: Sequence[str], *, quick: bool = False, seed: int = 0,
                    out: Path | None = None, progress: Progress = lambda _m: None,
                    figures: bool = True) -> list[ExperimentResult]:
    """Run ``names`` in order; with ``out``, write a figure per experiment there."""
    results = []
    for name in names:
        experiment = EXPERIMENTS[name]
        started = time.perf_counter()
        result = experiment.run(quick, seed, progress)
        result.seconds = time.perf_counter() - started
        if out is not None and figures:
            out.mkdir(parents=True, exist_ok=True)
            result.figure = out / f"{name}.png"
            experiment.plot(result, result.figure)
        progress(f"{name}: done in {result.seconds:.1f} s")
        results.append(result)
    return results


def all_passed(results: Sequence[ExperimentResult]) -> bool:
    return all(c.passed for r in results for c in r.claims)


ROW_FIELDS = ("experiment", "setting", "algorithm", "metric", "value", "seconds", "command")


def write_csv(results: Sequence[ExperimentResult], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(ROW_FIELDS)
        for r in results:
            for row in r.rows:
                writer.writerow([row.experiment, row.setting, row.algorithm, row.metric,
                                 f"{row.value:.6g}", f"{row.seconds:.2f}", row.command])


def claims_table(results: Sequence[ExperimentResult]) -> str:
    lines = ["| experiment | claim | result | measured |", "|---|---|---|---|"]
    for r in results:
        for c in r.claims:
            lines.append(f"| {c.experiment} | {c.claim} | {'PASS' if c.passed else 'FAIL'} | "
                         f"{c.detail} |")
    return "\n".join(lines)


def markdown(results: Sequence[ExperimentResult], *, quick: bool, seed: int,
             figure_base: Path | None = None) -> str:
    """The results table (claims first, then every measured number) with figure links."""
    out = [f"# Paper reproduction ({'quick' if quick else 'full'} run, seed {seed})", "",
           "Wu, Gokmen, Rasch, Chen, *Towards Exact Gradient-based Training on Analog "
           "In-memory Computing*, NeurIPS 2024, regenerated on the hilctl emulator "
           "(`hilctl reproduce`).", "", "## Claims", "", claims_table(results), "",
           "## Experiments", ""]
    for r in results:
        exp = EXPERIMENTS[r.name]
        out.append(f"### {r.name}: {exp.title}")
        out.append("")
        out.append(f"Settings from `{exp.source}`. Took {r.seconds:.1f} s; regenerate with "
                   f"`{command_for(r.name, quick, seed)}`.")
        out.append("")
        if r.figure is not None:
            rel = r.figure.name if figure_base is None else r.figure.relative_to(figure_base)
            out.append(f"![{r.name}]({rel})")
            out.append("")
        for note in r.notes:
            out.extend([note, ""])
        out.append("| setting | algorithm | metric | value | seconds |")
        out.append("|---|---|---|---|---|")
        for row in r.rows:
            out.append(f"| {row.setting} | {row.algorithm} | {row.metric} | {row.value:.4g} | "
                       f"{row.seconds:.2f} |")
        out.append("")
        out.extend(_measured_separately(exp))
    skipped = [e for e in EXPERIMENTS.values()
               if e.name not in {r.name for r in results} and e.not_run_note]
    if skipped:
        out.extend(["## Not run for this table", ""])
        for exp in skipped:
            out.extend([f"### {exp.name}: {exp.title}", "", exp.not_run_note, ""])
            out.extend(_measured_separately(exp))
    return "\n".join(out)


def _measured_separately(exp: Experiment) -> list[str]:
    """The experiment's numbers measured outside this command, in a table of their own."""
    if not exp.measured_separately:
        return []
    out = ["Measured separately, **not produced by this command** (no time recorded):", "",
           "| setting | algorithm | metric | value |", "|---|---|---|---|"]
    out.extend(f"| {row.setting} | {row.algorithm} | {row.metric} | {row.value:.4g} |"
               for row in exp.measured_separately)
    out.append("")
    return out


def summary(results: Sequence[ExperimentResult]) -> str:
    """A plain-text summary for the terminal: one line per claim."""
    lines = []
    width = max((len(c.claim) for r in results for c in r.claims), default=10)
    for r in results:
        for c in r.claims:
            lines.append(f"{'PASS' if c.passed else 'FAIL'}  {r.name:<11} {c.claim:<{width}}  "
                         f"{c.detail}")
    total = sum(len(r.claims) for r in results)
    passed = sum(c.passed for r in results for c in r.claims)
    lines.append(f"{passed}/{total} claims hold; "
                 f"{sum(r.seconds for r in results):.1f} s in all")
    return "\n".join(lines)
