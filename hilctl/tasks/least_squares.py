"""Streaming least squares ``y = W* x + eps``: the paper's setting, where Analog SGD keeps an
error and Tiki-Taka reaches digital SGD."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from hilctl.checkpoints import rng_state, set_rng_state
from hilctl.tasks.base import (
    PROBLEM,
    SAMPLES,
    Reporter,
    TaskResult,
    TaskRun,
    TaskSettings,
    WeightFactory,
    require_finite,
)


class LeastSquaresConfig(TaskSettings):
    """Streaming linear regression ``y = W* x + eps`` with ``x ~ N(0, I)``, batch 1.

    ``W*`` (out x in) is drawn ``N(0, w_star_std^2)`` and clipped to ``+-0.9 tau`` when the
    device has bounds ``+-tau``. The loss is ``0.5 ||W x - y||^2``; ``rel_err`` is
    ``||W - W*||_F^2 / ||W*||_F^2`` averaged over the last ``eval_window`` steps.
    """

    name: Literal["least-squares"] = "least-squares"
    out: int = Field(8, ge=1, le=4096, description="outputs (rows of W)")
    in_: int = Field(16, ge=1, le=4096, alias="in", description="inputs (columns of W)")
    steps: int = Field(4000, ge=1, le=10**9, description="samples, one update each")
    lr: float = Field(0.02, gt=0, le=1e6, description="SGD learning rate")
    sigma: float = Field(0.1, ge=0, le=1e6, description="std of the label noise eps")
    w_star_std: float = Field(0.3, ge=1e-9, le=1e6, description="std of the entries of W*")
    eval_window: int = Field(500, ge=1, le=10**9, description="steps the final rel_err averages over")
    log_every: int = Field(50, ge=1, le=10**9, description="steps per recorded history point")

    final_metric: ClassVar[str] = "rel_err"
    higher_is_better: ClassVar[bool] = False
    metric_meanings: ClassVar[Mapping[str, str]] = {
        "rel_err": "||W - W*||^2 / ||W*||^2, mean over the last {eval_window} steps"}

    def length(self) -> str:
        return f"{self.steps} steps"

    def run(self, make_weights: WeightFactory, report: Reporter, run: TaskRun) -> TaskResult:
        return least_squares(self, run.seed, run.bound, make_weights, report, run.resume)


def least_squares(cfg: LeastSquaresConfig, seed: int, bound: float, make_weights: WeightFactory,
                  report: Reporter, resume: Mapping[str, Any] | None = None) -> TaskResult:
    """Train ``W`` on ``y = W* x + eps`` one sample per step from ``W = 0`` (or from the
    checkpointed loop state ``resume``, the weights restored already).

    ``bound`` is the device's ``tau``; ``W*`` is clipped to ``+-0.9 tau`` so it is reachable.
    """
    problem = np.random.default_rng([seed, PROBLEM])
    w_star = problem.normal(0, cfg.w_star_std, (cfg.out, cfg.in_))
    if np.isfinite(bound):
        w_star = np.clip(w_star, -0.9 * bound, 0.9 * bound)
    star_norm = float(np.sum(w_star**2))
    weights = make_weights(cfg.out, cfg.in_)
    samples = np.random.default_rng([seed, SAMPLES])
    result = TaskResult(final={})
    window_losses: list[float] = []
    window_errors: list[float] = []
    tail: list[float] = []
    first = 1
    if resume is None:
        weights.program_weights(np.zeros((cfg.out, cfg.in_)))
    else:
        first = int(resume["step"]) + 1
        set_rng_state(samples, resume["samples"])
        window_losses, window_errors = list(resume["window_losses"]), list(resume["window_errors"])
        tail, result.history = list(resume["tail"]), dict(resume["history"])

    def state(step: int) -> dict[str, Any]:
        return {"step": step, "samples": rng_state(samples), "window_losses": window_losses,
                "window_errors": window_errors, "tail": tail, "history": result.history,
                "weights": {"W": weights.read_weights().astype(np.float32)}}  # to view

    for step in range(first, cfg.steps + 1):
        x = samples.standard_normal((1, cfg.in_))
        y = x @ w_star.T + cfg.sigma * samples.standard_normal((1, cfg.out))
        error = weights.forward(x) - y
        loss = 0.5 * float(np.sum(error**2))
        require_finite({"loss": loss}, f"step {step}")
        weights.update(x, error, cfg.lr)
        rel_err = float(np.sum((weights.read_weights() - w_star) ** 2)) / star_norm
        window_losses.append(loss)
        window_errors.append(rel_err)
        if step > cfg.steps - cfg.eval_window:
            tail.append(rel_err)
        if step % cfg.log_every == 0 or step == cfg.steps:
            values = {"loss": float(np.mean(window_losses)), "rel_err": float(np.mean(window_errors))}
            result.record(step, values)
            report.metrics(step, values)
            window_losses, window_errors = [], []
        report.progress(step, cfg.steps)
        if step < cfg.steps:
            report.boundary(step, functools.partial(state, step))
    result.final = {"rel_err": float(np.mean(tail)), "loss": result.history["loss"][-1]}
    result.weights = {"W": weights.read_weights(), "W_star": w_star}
    return result

