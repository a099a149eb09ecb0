"""The compiled read periphery: :func:`compiled_mvm`, the same sequence as
:func:`sim.periphery.analog_mvm` (docs/emulator.md, section 6) with the elementwise work in numba.

A call runs in rounds. Each round compiles the work before the array product (noise
management and the float32 DAC) into :func:`_dac`, leaves the product to numpy's BLAS
(:func:`sim.periphery.array_product`: sgemm on float32 weights, far faster than a hand loop,
and a transposed view of the weights is read as it is, not copied), and compiles the work after
it (the weight-noise norm, weight and output noise, the ADC, the saturation check, clipping and
scaling back) into :func:`_adc`, which writes finished samples straight into the float64
result: no other float64 array of the output's size. Bound management repeats only the
saturated samples, in the next round, with the reduction doubled.

Random numbers come from :mod:`sim.counter_rng`: one key per call from the tile's read
Generator, and draw ``((round * batch + sample) * outputs + output) * 2 + kind`` (kind 0 weight
noise, 1 output noise) from the 2**16-level float32 normal table of :mod:`sim.noise`. A
sample's noise thus depends only on the key, its index and its round. The numbers differ from
the numpy reference's, the distribution does not; without noise the two agree bit for bit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numba import njit, uint64
from numpy.typing import NDArray

from hilctl.config import PeripheryConfig
from sim.counter_rng import stream_key, table_normal
from sim.noise import _quantile_table
from sim.periphery import F32_MAX, F32_TINY, adc_step, array_product, dac_step, max_reduction

_TABLE = _quantile_table(np.float32)
_ONE = np.float32(1)
#: float32 limits as float64, for clipping float64 values before they become float32.
_MAX64, _TINY64 = float(F32_MAX), float(F32_TINY)


#: The DAC's float32 settings: ``[r_in, inp_bound]``.
_R_IN, _INP_BOUND = range(2)
#: The ADC's settings: ``[w_noise, out_noise, r_out, 1 / r_out (0 without an ADC), out_bound]``.
_W_NOISE, _OUT_NOISE, _R_OUT, _INVERSE_R_OUT, _OUT_BOUND = range(5)


class _Settings(NamedTuple):
    """A periphery's settings as the kernels take them (few arguments: each costs a call)."""

    dac: NDArray[np.float32]
    adc: NDArray[np.float64]
    abs_max: bool
    iterative: bool
    max_reduction: float


def _settings_of(cfg: PeripheryConfig) -> _Settings:
    r_out = adc_step(cfg)
    dac = np.array([dac_step(cfg), cfg.inp_bound], dtype=np.float32)
    adc = np.array([cfg.w_noise, cfg.out_noise, r_out, 1 / r_out if r_out > 0 else 0.0,
                    cfg.out_bound])
    dac.setflags(write=False)
    adc.setflags(write=False)
    return _Settings(dac, adc, cfg.noise_management == "abs-max",
                     cfg.bound_management == "iterative", max_reduction(cfg))


#: Settings by ``id`` of the (frozen) config, with the config kept alive so that its id stays
#: its own: a lookup costs a dict access, not a hash of every field.
_SETTINGS: dict[int, tuple[PeripheryConfig, _Settings]] = {}
_SETTINGS_KEPT = 64


def _settings(cfg: PeripheryConfig) -> _Settings:
    entry = _SETTINGS.get(id(cfg))
    if entry is not None and entry[0] is cfg:
        return entry[1]
    if len(_SETTINGS) >= _SETTINGS_KEPT:
        _SETTINGS.clear()
    settings = _settings_of(cfg)
    _SETTINGS[id(cfg)] = (cfg, settings)
    return settings


@njit(cache=True, error_model="numpy", nogil=True)
def _abs_max(row: NDArray[np.float64]) -> float:
    """``max |row|``, in four interleaved maxima: a single running maximum waits out the latency
    of each comparison (four times slower on 784 inputs)."""
    m0 = m1 = m2 = m3 = 0.0
    whole = row.size - row.size % 4
    for j in range(0, whole, 4):
        m0 = max(m0, abs(row[j]))
        m1 = max(m1, abs(row[j + 1]))
        m2 = max(m2, abs(row[j + 2]))
        m3 = max(m3, abs(row[j + 3]))
    for j in range(whole, row.size):
        m0 = max(m0, abs(row[j]))
    return max(max(m0, m1), max(m2, m3))


@njit(cache=True, error_model="numpy", nogil=True)
def _dac(x: NDArray[np.float64], rows: NDArray[np.int64], reduction: float, abs_max: bool,
         dac: NDArray[np.float32], x_q: NDArray[np.float32], nm: NDArray[np.float64]) -> None:
    """Noise management and the DAC of samples ``x[rows]`` at ``reduction``: fills ``x_q``
    (float32, rows x in) and each row's ``nm`` (``max|x|`` or 1; 0 for an all-zero sample under
    abs-max).

    float32 in aihwkit's order, as :func:`sim.periphery.dac`: ``s = (1 / nm) / red``, then
    ``clip(rint(x s / r_in) r_in, +-inp_bound)``.
    """
    r_in, bound = dac[_R_IN], dac[_INP_BOUND]
    for k in range(rows.size):
        row = x[rows[k]]
        scale = _abs_max(row) if abs_max else 1.0
        nm[k] = scale
        inverse = _ONE / np.float32(min(max(scale, _TINY64), _MAX64)) / np.float32(reduction)
        quantised = x_q[k]
        for j in range(row.size):
            value = np.float32(min(max(row[j], -_MAX64), _MAX64)) * inverse
            if r_in > 0:
                value = np.rint(value / r_in) * r_in
            quantised[j] = min(max(value, -bound), bound)


@njit(cache=True, error_model="numpy", nogil=True)
def _adc(y: NDArray[np.floating], x_q: NDArray[np.float32], rows: NDArray[np.int64],
         nm: NDArray[np.float64], reduction: float, may_repeat: bool, key: int,
         first_draw: int, adc: NDArray[np.float64], table: NDArray[np.float32],
         out: NDArray[np.float64]) -> int:
    """Noise, the ADC and the bound test of the array outputs ``y = x_q W^T`` (rows x out) of
    samples ``rows`` (``nm`` from :func:`_dac`): a finished sample's output, clipped to
    ``+-out_bound`` and scaled back by ``nm * reduction``, goes to its row of ``out`` (an
    all-zero sample's is zero). If ``may_repeat``, a saturated sample is left for the next
    round instead: ``rows`` is overwritten with these samples first, and the count returned.
    Weight noise scales with the Euclidean norm of the sample's ``x_q``.

    Draws are numbered from ``first_draw + (sample * outputs + output) * 2``.
    """
    w_noise, out_noise, r_out = adc[_W_NOISE], adc[_OUT_NOISE], adc[_R_OUT]
    inverse_r_out, out_bound = adc[_INVERSE_R_OUT], adc[_OUT_BOUND]
    outputs = y.shape[1]
    repeats = 0
    for k in range(rows.size):
        sample = rows[k]
        target = out[sample]
        if nm[k] == 0:
            target[:] = 0.0
            continue
        w_std = 0.0
        if w_noise > 0:
            squares = 0.0
            for value in x_q[k]:
                squares += np.float64(value) * value
            w_std = w_noise * np.sqrt(squares)
        first = uint64(first_draw + sample * outputs * 2)
        # One simple loop per step (each vectorises); the sums are those of one fused loop.
        for i in range(outputs):
            target[i] = y[k, i]
        if w_noise > 0:
            for i in range(outputs):
                target[i] += w_std * table_normal(table, key, first + uint64(2 * i))
        if out_noise > 0:
            for i in range(outputs):
                target[i] += out_noise * table_normal(table, key, first + uint64(2 * i + 1))
        if r_out > 0:
            for i in range(outputs):
                target[i] = np.rint(target[i] * inverse_r_out) * r_out
        saturated = 0
        for i in range(outputs):
            saturated += abs(target[i]) > out_bound
        if saturated and may_repeat:
            rows[repeats] = sample  # repeats <= k: rows[k] is read before it is overwritten
            repeats += 1
            continue
        scale = nm[k] * reduction
        for i in range(outputs):
            target[i] = min(max(target[i], -out_bound), out_bound) * scale
    return repeats


def compiled_mvm(weights: NDArray[np.floating], x: NDArray[np.float64], cfg: PeripheryConfig,
                 rng: np.random.Generator) -> NDArray[np.float64]:
    """``x`` (batch, in) through ``weights`` (out, in) and the periphery: (batch, out), as
    :func:`sim.periphery.analog_mvm` (same arguments and statistics, other random numbers).

    ``weights`` may be a transposed view (the backward pass): BLAS reads it as it is.
    """
    if cfg.is_perfect:
        return (x.astype(weights.dtype) @ weights.T).astype(np.float64)
    dac, adc, abs_max, iterative, limit = _settings(cfg)
    batch, width = x.shape
    out = np.empty((batch, weights.shape[0]))
    key = stream_key(rng)
    rows = np.arange(batch)
    reduction = 1.0
    first_draw = 0
    while True:
        x_q = np.empty((rows.size, width), dtype=np.float32)
        nm = np.empty(rows.size)
        _dac(x, rows, reduction, abs_max, dac, x_q, nm)
        repeats = _adc(array_product(x_q, weights), x_q, rows, nm, reduction,
                       iterative and reduction <= limit, key, first_draw, adc, _TABLE, out)
        if repeats == 0:
            return out
        rows = rows[:repeats]
        reduction *= 2
        first_draw += out.size * 2
