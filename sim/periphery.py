"""Read periphery of an analog matrix-vector product (DESIGN.md section 6, aihwkit 1.1.0).

For each sample, with ``nm = max|x|`` (noise management ``abs-max``; 1 with ``none``) and a
reduction factor ``red`` (1 to start)::

    x_q = clip(rint(x / (nm red) / r_in) r_in, +-inp_bound)          DAC, r_in = 2 inp_bound inp_res
    y   = W x_q + w_noise ||x_q|| xi + out_noise xi'                  array and read noise
    y_q = rint(y / r_out) r_out                                       ADC, r_out = 2 out_bound out_res
    output = clip(y_q, +-out_bound) * nm * red

Bound management ``iterative``: while a sample's ``|y_q|`` exceeds ``out_bound``, it is repeated
with fresh noise and ``red`` doubled, as long as ``red <= max_bm_factor`` and
``red <= max_bm_res / r_in`` (so ``red`` is 1, 2, 4, 8 or 16 at the defaults). A sample of all
zeros gives zeros. ``is_perfect`` skips all of it: ``y = W x``. The array product runs in the
weights' precision (float32 for an emulated tile, as in aihwkit).
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
    """DAC, array and noise, then the ADC (not yet clipped): ``y_q`` of the module docstring
    for inputs ``x * inverse_scale``."""
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
