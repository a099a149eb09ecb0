"""Read periphery of an analog matrix-vector product (aihwkit 1.1.0's ``IOParameters``).

Per sample: noise management scales the input, a DAC quantises and clips it, the array adds
weight and output noise to ``W x``, an ADC quantises the output, and iterative bound management
repeats a saturated sample with a smaller input before the output is clipped and scaled back.
``is_perfect`` skips all of it.

This is the numpy reference; :mod:`sim.read_kernel` compiles the same sequence. The DAC works
in float32 in aihwkit's order of operations (:func:`dac`), so an input on a rounding tie rounds
as it does in aihwkit. The sequence and its equations: docs/emulator.md, section 6 (Read
periphery).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hilctl.config import PeripheryConfig
from sim.noise import standard_normal

Array = NDArray[np.float64]
Array32 = NDArray[np.float32]

#: Inputs beyond float32's range enter the DAC as its largest finite value, not as infinity.
F32_MAX = np.float32(np.finfo(np.float32).max)
#: The smallest normal float32: a smaller noise-management scale would make ``1 / nm`` infinite.
F32_TINY = np.float32(np.finfo(np.float32).tiny)


def dac_step(cfg: PeripheryConfig) -> np.float32:
    """The DAC step ``r_in = 2 inp_bound inp_res`` (input units) in float32, formed as aihwkit
    forms it (``inp_res`` in float32 times ``2 inp_bound``); 0 means no quantisation."""
    return np.float32(cfg.inp_res) * (np.float32(2) * np.float32(cfg.inp_bound))


def adc_step(cfg: PeripheryConfig) -> float:
    """The ADC step ``r_out = 2 out_bound out_res`` (output units); 0 means no quantisation."""
    return 2 * cfg.out_bound * cfg.out_res


def max_reduction(cfg: PeripheryConfig) -> float:
    """Bound management doubles a saturated sample's reduction while it is at most this:
    ``min(max_bm_factor, max_bm_res / r_in)``."""
    r_in = 2 * cfg.inp_bound * cfg.inp_res
    return min(cfg.max_bm_factor, cfg.max_bm_res / r_in if r_in > 0 else np.inf)


def _noise_management(x: Array, cfg: PeripheryConfig) -> tuple[Array, NDArray[np.bool_]]:
    """Each sample's input scale ``nm`` (batch, 1): ``max|x|`` with ``abs-max``, else 1; and
    which samples are all zero (their output is zero, their ``nm`` is set to 1)."""
    if cfg.noise_management == "abs-max":
        nm = np.abs(x).max(axis=1, keepdims=True)
    else:
        nm = np.ones((x.shape[0], 1))
    dead = nm[:, 0] == 0
    nm[dead] = 1.0
    return nm, dead


def dac(x: Array, nm: Array, reduction: Array, cfg: PeripheryConfig) -> Array32:
    """The DAC's output ``x_q`` (float32, batch x in) for inputs ``x`` over ``nm * reduction``
    (each batch x 1).

    float32 throughout, in aihwkit's order: ``s = (1 / nm) / red``, then
    ``clip(rint(x s / r_in) r_in, +-inp_bound)``. So an input on a half step in exact arithmetic
    rounds as the float32 quotient does: ``x = nm`` at ``red = 2`` is 31.5 steps exactly, but
    ``0.5f / r_in`` is 31.499998 (float32's ``r_in`` lies above 1/63) and rounds down to 31.
    """
    inverse = np.float32(1) / np.clip(nm, F32_TINY, F32_MAX).astype(np.float32)
    inverse /= reduction.astype(np.float32)
    x_q = np.clip(x, -F32_MAX, F32_MAX).astype(np.float32)
    x_q *= inverse
    r_in = dac_step(cfg)
    if r_in > 0:
        with np.errstate(over="ignore"):  # beyond float32 after the division: clipped below
            x_q /= r_in
        np.rint(x_q, out=x_q)
        x_q *= r_in
    bound = np.float32(cfg.inp_bound)
    np.clip(x_q, -bound, bound, out=x_q)
    return x_q


def array_product(x_q: Array32, weights: NDArray[np.floating]) -> NDArray[np.floating]:
    """``W x_q`` of each sample, (batch, out), in the weights' precision (float32 for an emulated
    tile, as aihwkit): one BLAS call on the layout it reads fastest, never a copy of ``W``.

    Row-major weights (the forward pass) go in as ``W x_q^T``; their transposed view (the
    backward pass) as ``x_q (W^T)^T``, the row-major original. In ``x_q W^T`` form, row-major
    weights take up to twice as long through OpenBLAS for batches of 4 to 32.
    """
    x_q = x_q.astype(weights.dtype, copy=False)
    if weights.flags.c_contiguous:
        return (weights @ x_q.T).T
    return x_q @ weights.T


def _converted(weights: NDArray[np.floating], x: Array, nm: Array, reduction: Array,
               cfg: PeripheryConfig, rng: np.random.Generator) -> Array:
    """DAC, array and noise, then the ADC (not yet clipped): ``y_q`` of docs/emulator.md,
    section 6, for inputs ``x / (nm * reduction)``."""
    x_q = dac(x, nm, reduction, cfg)
    y = array_product(x_q, weights).astype(np.float64)
    if cfg.w_noise > 0:
        norms = np.linalg.norm(x_q, axis=1, keepdims=True)
        y += cfg.w_noise * norms * standard_normal(rng, y.shape, np.float64)
    if cfg.out_noise > 0:
        y += cfg.out_noise * standard_normal(rng, y.shape, np.float64)
    r_out = adc_step(cfg)
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
    nm, dead = _noise_management(x, cfg)
    reduction = np.ones_like(nm)
    y = _converted(weights, x, nm, reduction, cfg, rng)
    if cfg.bound_management == "iterative":
        limit = max_reduction(cfg)
        saturated = np.abs(y).max(axis=1) > cfg.out_bound
        while True:
            again = np.flatnonzero(saturated & (reduction[:, 0] <= limit))
            if again.size == 0:
                break
            reduction[again] *= 2
            y[again] = _converted(weights, x[again], nm[again], reduction[again], cfg, rng)
            saturated = np.abs(y).max(axis=1) > cfg.out_bound
    np.clip(y, -cfg.out_bound, cfg.out_bound, out=y)
    y *= nm * reduction
    y[dead] = 0.0
    return y
