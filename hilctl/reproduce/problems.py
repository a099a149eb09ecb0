"""The least-squares problems of Wu et al. (NeurIPS 2024) and a runner that trains them on tiles.

The paper's toy problem (authors' scripts ``NeurIPS-2024/S1..S3*.py``) is a linear regression
with a single output: ``A`` is ``m x n`` with ``N(0, 1)`` entries (times ``a_scale``), the truth
``w*`` has ``N(0, w_star_std^2)`` entries, ``b = A w*`` (so ``f* = 0``) and the model is
``torch.nn.Linear(n, 1)``: a weight of shape ``(1, n)``, i.e. a tile of one row (output) and
``n`` columns (inputs). The authors train on ``nn.MSELoss`` -- the mean over the ``m`` samples --
times ``loss_scale`` (1 in S1 and S3.3, 1/2 in S2, S3.1 and S3.2)::

    f(W) = loss_scale / m * ||A W^T - b||^2,   grad f(W) = 2 loss_scale / m * (A W^T - b)^T A

and they *report* ``f(W) / n`` (``get_loss(..., for_training=False)`` divides by
``INPUT_SIZE``); :meth:`LinearProblem.error` is that number. The learning error of a run is the
mean of its last 20 recorded errors (``get_asymptotic_err``).

**How the gradient reaches the tile.** Each iteration computes the full-batch gradient from the
tile's read-back weights, adds Gaussian noise of std ``sigma`` per entry (the authors'
``grad.add_(noise_std * randn)``, used by their digital SGD and by their discrete-time model) and
hands the noisy gradient ``G`` to ``weights.update(x, d, lr)`` so that the tile's update realises
``W <- W - lr G``:

- one row (the paper's case): ``G`` is itself rank 1, ``G = d x^T`` with ``d = [1]`` and
  ``x = G``: one pulsed outer product per iteration, as aihwkit fires one pair of pulse trains
  per sample, and every cell ``j`` sees exactly the increment ``-lr G_j``.
- several rows: one-hot columns, ``x_j = e_j`` and ``d_j = G[:, j]``; again every cell receives
  exactly one increment per iteration.

Either way each cell receives *its own* increment ``dW_ij = -lr G_ij`` once per iteration, which
is exactly the paper's discrete-time model ``W <- W + dW F(W) - |dW| G(W)`` in ``expected`` mode
and its stochastic, granular version in ``pulsed`` mode. (Feeding the rows of ``A`` as ``x`` with
residuals as ``d`` -- what aihwkit does for ``AnalogLinear`` -- sums ``|per-sample increments|``
in the saturation term instead of ``|sum|``, a different and larger drift than the model the paper
analyses; the authors' own discrete model uses the summed gradient, so we do too.)

The forward pass of the regression is computed digitally from ``read_weights()`` (the authors
evaluate with an exact digital copy of the analog weights, ``analog_exact=True``); only the update
goes through the tile, so the periphery does not enter except in Tiki-Taka's transfer reads.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hilctl.algorithms import WeightArray
from hilctl.config import no_variation
from hilctl.train_config import TrainConfig, resolve_train_config
from hilctl.training import weight_factory

Array = NDArray[np.float64]

#: Random streams: the problem (A, w*) and the gradient noise of a run.
_PROBLEM, _NOISE = 42, 618
#: The authors' learning error: mean of the last this-many recorded losses.
TAIL = 20


@dataclass(frozen=True)
class LinearProblem:
    """``min_W loss_scale/m ||A W^T - b||^2`` with ``b = A w*``; ``W`` is ``(1, n)``."""

    A: Array
    w_star: Array  # (1, n)
    loss_scale: float = 1.0

    @property
    def m(self) -> int:
        return self.A.shape[0]

    @property
    def n(self) -> int:
        return self.A.shape[1]

    @property
    def shape(self) -> tuple[int, int]:
        return (1, self.n)

    @property
    def b(self) -> Array:
        return self.A @ self.w_star[0]

    def loss(self, w: Array) -> float:
        """``f(W)``: the training loss the authors differentiate."""
        r = self.A @ np.asarray(w, dtype=np.float64).reshape(-1) - self.b
        return float(self.loss_scale * (r @ r) / self.m)

    def error(self, w: Array) -> float:
        """``f(W) / n``: the reported error (``f* = 0``)."""
        return self.loss(w) / self.n

    def gradient(self, w: Array) -> Array:
        """``grad f(W)``, shape ``(1, n)``."""
        r = self.A @ np.asarray(w, dtype=np.float64).reshape(-1) - self.b
        return (2.0 * self.loss_scale / self.m * (r @ self.A))[np.newaxis, :]

    def noisy_gradient(self, w: Array, sigma: float, rng: np.random.Generator) -> Array:
        """``grad f(W) + sigma * xi`` with ``xi ~ N(0, I)``."""
        g = self.gradient(w)
        return g + sigma * rng.standard_normal(g.shape) if sigma else g


def make_problem(m: int, n: int, *, w_star_std: float, a_scale: float = 1.0,
                 loss_scale: float = 1.0, seed: int = 0) -> LinearProblem:
    """The authors' random instance: ``w* ~ N(0, w_star_std^2)``, ``A = a_scale N(0, 1)``."""
    rng = np.random.default_rng([seed, _PROBLEM])
    w_star = w_star_std * rng.standard_normal((1, n))
    A = a_scale * rng.standard_normal((m, n))
    return LinearProblem(A=A, w_star=w_star, loss_scale=loss_scale)


def paper_config(algorithm: str, *, tau: float | None = None, dw_min: float = 1e-4,
                 mode: str = "pulsed", desired_bl: int = 800, reference: str = "none",
                 algorithm_options: Mapping[str, Any] | None = None,
                 seed: int = 0) -> TrainConfig:
    """The authors' tile: soft bounds +-tau, no variation, perfect periphery, stochastic rounding.

    ``SoftBoundsReferenceDevice`` with every ``*_dtod``/``*_std`` zero and no write noise is our
    ``soft-bounds`` device under :func:`hilctl.config.no_variation`; their ``IOParameters`` are
    noise-free apart from ``w_noise`` (we add the noise to the gradient instead, see above).
    ``reference="symmetric-point"`` is aihwkit's ``subtract_symmetry_point``.
    """
    device: dict[str, Any] = {**no_variation("soft-bounds"), "dw_min": dw_min}
    if tau is not None:
        device["tau"] = tau
    return resolve_train_config(
        algorithm=algorithm, device="soft-bounds", seed=seed,
        overrides={
            "device": device,
            "update": {"mode": mode, "desired_bl": desired_bl},
            "periphery": {"is_perfect": True},
            "tile": {"reference": reference},
            "algorithm": dict(algorithm_options or {}),
        })


@dataclass
class RunResult:
    """What one training run of a :class:`LinearProblem` produced."""

    errors: Array  # error f(W_k)/n at k = 0..steps (before each update, and after the last)
    w_inf: Array  # ||W_k||_inf at the same k
    final_weights: Array
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def learning_error(self) -> float:
        """The authors' metric: mean of the last :data:`TAIL` errors."""
        return float(np.mean(self.errors[-TAIL:]))

    def running_mean(self, k: int) -> float:
        """``1/k sum_{i<k} f(W_i)/n``: what the convergence bounds control."""
        return float(np.mean(self.errors[:k]))


def saturation(w_inf: Array, tau: float) -> float:
    """``S_K = mean_k (|W_k|_inf^2/tau^2) / (1 - |W_k|_inf^2/tau^2)`` (inf if a weight sits on a
    bound)."""
    ratio = np.minimum((np.asarray(w_inf) / tau) ** 2, 1.0)
    with np.errstate(divide="ignore"):
        return float(np.mean(ratio / (1.0 - ratio)))


def gradient_to_update(g: Array) -> tuple[Array, Array]:
    """``(x, d)`` with ``sum_s d_s x_s^T = g``: rank 1 for one row, one-hot columns otherwise."""
    rows, cols = g.shape
    if rows == 1:
        return g.copy(), np.ones((1, 1))
    return np.eye(cols), g.T.copy()


def run_problem(problem: LinearProblem, config: TrainConfig, *, steps: int, lr: float,
                sigma: float, w0: Array | float = 0.0, noise_seed: int = 0,
                backend: str = "sim", weights: WeightArray | None = None) -> RunResult:
    """Train ``W`` from ``w0`` for ``steps`` iterations of ``W <- W - lr (grad f + sigma xi)``.

    The tile(s) come from ``config`` (algorithm, device, update, periphery, tile) through
    :func:`hilctl.training.weight_factory`; ``w0`` is
    programmed first (clipped to the device bounds, as aihwkit's ``set_weights`` does).
    """
    started = time.perf_counter()
    if weights is None:
        weights = weight_factory(config, backend)(*problem.shape)
    start = np.broadcast_to(np.asarray(w0, dtype=np.float64), problem.shape)
    weights.program_weights(np.array(start))
    rng = np.random.default_rng([noise_seed, _NOISE])
    errors = np.empty(steps + 1)
    w_inf = np.empty(steps + 1)
    for k in range(steps + 1):
        w = weights.read_weights()
        errors[k] = problem.error(w)
        w_inf[k] = float(np.max(np.abs(w)))
        if k == steps:
            break
        x, d = gradient_to_update(problem.noisy_gradient(w, sigma, rng))
        weights.update(x, d, lr)
    return RunResult(errors=errors, w_inf=w_inf, final_weights=weights.read_weights(),
                     seconds=time.perf_counter() - started)
