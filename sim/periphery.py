"""Read periphery of an analog matrix-vector product (aihwkit 1.1.0's ``IOParameters``).

Per sample: noise management scales the input, a DAC quantises and clips it, the array adds
weight and output noise to ``W x``, an ADC quantises the output, and iterative bound management
repeats a saturated sample with a smaller input before the output is clipped and scaled back.
``is_perfect`` skips all of it.

The sequence and its equations: docs/emulator.md, section 6 (Read periphery).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hilctl.config import PeripheryConfig
from sim.noise import standard_normal

Array = NDArray[np.float64]


def quantize(values: Array, step: float) -> Array:
    """Round to the nearest multiple of ``step`` (half to even); no rounding when ``step`` is 0."""
    return np.rint(values / step) * step if step > 0 else values


def _converted(weights: NDArray[np.floating], x: Array, inverse_scale: Array,
               cfg: PeripheryConfig, rng: np.random.Generator) -> Array:
    """DAC, array and noise, then the ADC (not yet clipped): ``y_q`` of docs/emulator.md,
    section 6, for inputs ``x * inverse_scale``."""
    r_in = 2 * cfg.inp_bound * cfg.inp_res
    x_q = x * inverse_scale
    if r_in > 0:
        x_q *= 1 / r_in
        np.rint(x_q, out=x_q)
        x_q *= r_in
    np.clip(x_q, -cfg.inp_bound, cfg.inp_bound, out=x_q)
    y = (x_q.astype(weights.dtype) @ weights.T).astype(np.float64)
    if cfg.w_noise > 0:
        norms = np.linalg.norm(x_q, axis=1, keepdims=True)
        y += cfg.w_noise * norms * standard_normal(rng, y.shape, np.float64)
    if cfg.out_noise > 0:
        y += cfg.out_noise * standard_normal(rng, y.shape, np.float64)
    r_out = 2 * cfg.out_bound * cfg.out_res
    if r_out > 0:
        y *= 1 / r_out
        np.rint(y, out=y)
        y *= r_out
    return y


def analog_mvm(weights: NDArray[np.floating], x: Array, cfg: PeripheryConfig,
               rng: np.random.Generator) -> Array:
    """``x`` (batch, in) through ``weights`` (out, in) and the periphery: (batch, out)."""
    if cfg.is_perfect:
        return (x.astype(weights.dtype) @ weights.T).astype(np.float64)
    if cfg.noise_management == "abs-max":
        scale = np.abs(x).max(axis=1, keepdims=True)
    else:
        scale = np.ones((x.shape[0], 1))
    dead = scale[:, 0] == 0  # all-zero inputs give zeros
    if dead.any():
        scale[dead] = 1.0
    y = _converted(weights, x, 1 / scale, cfg, rng)
    if cfg.bound_management == "iterative":
        r_in = 2 * cfg.inp_bound * cfg.inp_res
        max_reduction = min(cfg.max_bm_factor, cfg.max_bm_res / r_in if r_in > 0 else np.inf)
        saturated = np.abs(y).max(axis=1) > cfg.out_bound
        if saturated.any():
            reduction = np.ones_like(scale)
            while True:
                again = np.flatnonzero(saturated & (reduction[:, 0] <= max_reduction))
                if again.size == 0:
                    break
                reduction[again] *= 2
                y[again] = _converted(weights, x[again], 1 / (scale[again] * reduction[again]),
                                      cfg, rng)
                saturated = np.abs(y).max(axis=1) > cfg.out_bound
            scale *= reduction
    np.clip(y, -cfg.out_bound, cfg.out_bound, out=y)
    y *= scale
    if dead.any():
        y[dead] = 0.0
    return y
