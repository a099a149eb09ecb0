"""Fast standard-normal draws for the per-pulse write noise (the read noise uses them too).

numpy's ziggurat costs about ten times a 16-bit integer draw, and the write path draws one
normal per cell per update. Instead each draw picks one of 2**16 fixed, equally likely levels,
with mean 0 and variance 1 exactly and a CDF within 2**-16 of the normal's;
``tests/sim/test_noise.py`` checks these properties.

The table and its properties: docs/emulator.md, section 5 (Write noise).
"""

from __future__ import annotations

import math
from functools import cache
from statistics import NormalDist

import numpy as np
from numpy.typing import NDArray

LEVELS = 1 << 16


def _quantile_table(dtype: type[np.floating]) -> NDArray[np.floating]:
    """The read-only table of the 2**16 levels in ``dtype``, built once per dtype."""
    return _table_of(np.dtype(dtype))


@cache
def _table_of(dtype: np.dtype[np.floating]) -> NDArray[np.floating]:
    # Keyed by the dtype instance: mypy does not accept a numpy scalar class as Hashable.
    if dtype.type is not np.float64:
        table = _table_of(np.dtype(np.float64)).astype(dtype)
        table.setflags(write=False)
        return table
    normal = NormalDist()
    edges = np.array([normal.inv_cdf(i / LEVELS) for i in range(1, LEVELS)])
    edges = np.concatenate(([-np.inf], edges, [np.inf]))
    # Conditional mean of N(0,1) over (a, b) is (pdf(a) - pdf(b)) / P(a < Z < b).
    pdf = np.exp(-0.5 * edges**2) / np.sqrt(2 * np.pi)
    means = (pdf[:-1] - pdf[1:]) * LEVELS
    means -= means.mean()
    means /= np.sqrt(np.mean(means**2))
    table = means.astype(dtype)
    table.setflags(write=False)
    return table


def standard_normal(
    rng: np.random.Generator, shape: int | tuple[int, ...], dtype: type[np.floating] = np.float32
) -> NDArray[np.floating]:
    """Standard-normal draws from the 2**16-level table (docs/emulator.md, section 5)."""
    size = math.prod(shape) if isinstance(shape, tuple) else shape
    raw = rng.bit_generator.random_raw((size + 3) // 4)  # 64 random bits: four 16-bit indices
    index = raw.view(np.uint16)[:size].reshape(shape)
    return _quantile_table(dtype).take(index)
