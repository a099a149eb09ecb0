"""Tiki-Taka's successors on least squares (experiment ``successors``): TTv2, c-TTv2, AGAD and
residual learning against Tiki-Taka v1, digital SGD and Analog SGD on streaming least squares
(hilctl's ``least-squares`` task: an 8x16 ``W*`` learned from ``y = W* x + eps`` on soft bounds
``+-tau``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hilctl.plotting import save, subplots
from hilctl.reproduce.core import (
    Experiment,
    ExperimentResult,
    RunContext,
    add_row,
    claim,
    fmt,
)

#: The successors' settings under which they converge on this least-squares problem in 4000
#: steps (see tests/test_algorithms_tt.py). aihwkit's default desired_bl = 1 lets a cell of C
#: move one pulse per read of its column, too slow for |W*| up to 0.9 tau. aihwkit's transfer
#: write (update and BL management off, its defaults) lands min(|n|, sqrt(desired_bl)) pulses
#: per read on average, so desired_bl = m^2 writes every count n up to m without bias: 100 lets
#: TTv2 move 10 pulses per read, 400 lets c-TTv2 and AGAD move 20 (the counts these runs make
#: seldom exceed 10 and 20: written exactly, desired_bl 100 and 400 give the same runs as 10 and
#: 20, but for TTv2 at tau 1.0, within 4% per seed). c-TTv2's random choppers at the default
#: in_chop_prob 0.1 flip A's content into the buffer with the wrong sign too often; residual
#: learning needs zero-shifted tiles (symmetric-point reference) and uses the authors' gamma 0.4.
SUCCESSOR_SETTINGS: dict[str, dict[str, Any]] = {
    "digital-sgd": {},
    "analog-sgd": {},
    "tiki-taka": {"fast_lr": 0.1},
    "ttv2": {"desired_bl": 100},
    "c-ttv2": {"desired_bl": 400, "in_chop_prob": 0.02, "forget_buffer": False},
    "agad": {"desired_bl": 400},
    "residual": {"gamma": 0.4},
}
TT_FAMILY = ("tiki-taka", "ttv2", "c-ttv2", "agad", "residual")
#: Claim thresholds of ``successors``, from the measured full run (4000 steps, seeds 0-2, mean
#: over seeds): the worst Tiki-Taka-family ratio to digital is residual's 1.75 (tau 0.5) / 1.77
#: (tau 1.0), then c-TTv2's 1.71 (tau 0.5); seed by seed the worst is 1.90 (c-TTv2, tau 0.5,
#: seed 0). 2.5x leaves a 1.32x margin over the worst single seed. Analog SGD sits 81-98x above
#: digital at tau 0.5 and 9.0-22x at tau 1.0 (seed by seed; 12.7x on the mean), so 5x leaves a
#: 1.8x margin.
SUCCESSORS_FACTOR = 2.5
SUCCESSORS_ANALOG_FACTOR = 5.0


def successors_config(algorithm: str, tau: float, seed: int, steps: int = 4000) -> Any:
    """The least-squares run of this experiment (8x16, lr 0.02, sigma 0.1, soft bounds +-tau,
    dw_min 0.001, no device variations, perfect periphery) of ``algorithm`` with its settings
    above."""
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


def run_successors(ctx: RunContext) -> ExperimentResult:
    """Tiki-Taka and its successors (TTv2, c-TTv2, AGAD, residual learning) against digital and
    Analog SGD on hilctl's least-squares task (``hilctl train --task least-squares``), tau in
    {0.5, 1.0}, 4000 steps; rel_err = ||W - W*||^2 / ||W*||^2 over the last 500 steps.

    Quick runs one seed instead of three at the same 4000 steps: at 2000 steps (measured, seed
    0) Tiki-Taka and its successors are still 10-58x above digital at tau 0.5, so fewer steps
    would not show the claim."""
    from hilctl.training import train

    res = ExperimentResult("successors")
    quick, seed, progress = ctx.quick, ctx.seed, ctx.progress
    taus, steps = [0.5, 1.0], 4000
    seeds = [seed] if quick else [seed, seed + 1, seed + 2]
    errors: dict[str, list[float]] = {a: [] for a in SUCCESSOR_SETTINGS}
    for tau in taus:
        for algo in SUCCESSOR_SETTINGS:
            progress(f"successors: tau={tau} {algo}")
            outcomes = [train(successors_config(algo, tau, s, steps)) for s in seeds]
            err = float(np.mean([o.final["rel_err"] for o in outcomes]))
            errors[algo].append(err)
            add_row(res, ctx, f"tau={tau} lr=0.02 sigma=0.1 K={steps} seeds={len(seeds)}", algo,
                 "rel_err", err, sum(o.seconds for o in outcomes))
            res.curves[(algo, tau)] = outcomes[0].history
    res.curves["taus"], res.curves["errors"] = taus, errors
    res.notes.append("Settings (8x16 problem, soft bounds +-tau, dw_min 0.001, no device "
                     "variations, perfect periphery): " + "; ".join(
                         f"{a} " + (" ".join(f"{k}={v}" for k, v in o.items()) or "defaults")
                         for a, o in SUCCESSOR_SETTINGS.items())
                     + "; residual on tiles with tile.reference=symmetric-point. TTv2, c-TTv2 "
                     "and AGAD write C as aihwkit does (transfer_write=pulsed): min(|n|, "
                     "sqrt(desired_bl)) pulses per cell and transfer on average.")
    digital = errors["digital-sgd"]
    ratios = {a: [e / d for e, d in zip(errors[a], digital, strict=True)] for a in errors}
    worst = max(TT_FAMILY, key=lambda a: max(ratios[a]))
    claim(res, f"every Tiki-Taka-family algorithm ends within {SUCCESSORS_FACTOR:g}x digital "
           "SGD's rel_err at every tau",
           all(r < SUCCESSORS_FACTOR for a in TT_FAMILY for r in ratios[a]),
           f"ratio to digital at tau {fmt(taus)}: " + "; ".join(
               f"{a} {fmt(ratios[a])}" for a in TT_FAMILY) + f" (worst: {worst})")
    claim(res, f"Analog SGD ends above {SUCCESSORS_ANALOG_FACTOR:g}x digital SGD's rel_err at "
           "every tau", all(r > SUCCESSORS_ANALOG_FACTOR for r in ratios["analog-sgd"]),
           f"analog/digital at tau {fmt(taus)}: {fmt(ratios['analog-sgd'])}")
    return res


def plot_successors(res: ExperimentResult, path: Path) -> None:
    taus, errors = res.curves["taus"], res.curves["errors"]
    algos = list(errors)
    fig, ax = subplots(figsize=(8, 3.4))
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
    save(fig, path)


ALL = (Experiment(
    "successors", "Tiki-Taka's successors (TTv2, c-TTv2, AGAD, residual) on least squares",
    "hilctl's least-squares task (8x16, soft bounds +-tau); aihwkit's compounds; "
    "Wu et al. 2025 (residual)",
    run_successors, plot_successors),)
