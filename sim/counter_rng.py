"""Counter-based random numbers for the compiled engine: the n-th draw of a stream is a pure
function of ``(key, n)``.

Each call of a kernel takes one 64-bit ``key`` from the tile's numpy Generator (so checkpoints
keep only the Generator's state) and derives every draw from the key and the draw's own index
(a cell, a slot, a line): the result does not depend on the order in which threads reach the
draws, so serial and parallel runs give bit-identical weights. The mixer is splitmix64's
finaliser (Steele, Lea and Flood, 2014), a bijection of 64-bit words whose outputs pass
BigCrush for consecutive inputs. Normals use the 2**16-level table of :mod:`sim.noise`, so both
engines draw from the same distribution (docs/emulator.md, section 5).
"""

from __future__ import annotations

import numpy as np
from numba import njit, uint64

#: Golden-ratio increment of splitmix64: consecutive counters map to well-spread states.
_GAMMA = uint64(0x9E3779B97F4A7C15)
_M1 = uint64(0xBF58476D1CE4E5B9)
_M2 = uint64(0x94D049BB133111EB)
#: 2**-24: a 24-bit integer to a float32 in [0, 1) exactly.
_TO_UNIT32 = np.float32(1.0 / (1 << 24))


@njit(cache=True, inline="always")
def mix(key: np.uint64 | int, counter: np.uint64) -> np.uint64:
    """64 random bits for draw ``counter`` of stream ``key`` (a ``uint64``, or the ``int64`` a
    kernel receives for a :func:`stream_key`)."""
    z = uint64(key) + (counter + uint64(1)) * _GAMMA
    z = (z ^ (z >> uint64(30))) * _M1
    z = (z ^ (z >> uint64(27))) * _M2
    return z ^ (z >> uint64(31))


@njit(cache=True, inline="always")
def uniform32(key: np.uint64 | int, counter: np.uint64) -> np.float32:
    """A float32 uniform on [0, 1) with 24 random bits (the float32 mantissa)."""
    return np.float32(mix(key, counter) >> uint64(40)) * _TO_UNIT32


@njit(cache=True, inline="always")
def table_normal(table: np.ndarray, key: np.uint64 | int, counter: np.uint64) -> np.floating:
    """A standard normal from the 2**16-level table (``sim.noise``): 16 random bits index it."""
    return table[mix(key, counter) >> uint64(48)]


def stream_key(rng: np.random.Generator) -> int:
    """A fresh key from ``rng``, one per kernel call: 63 random bits as a Python int, which a
    kernel receives as an ``int64`` (a ``numpy.uint64`` costs more to make and to pass than
    the rest of a small update's call path; the key's mixing makes the lost bit immaterial)."""
    return rng.bit_generator.random_raw() >> 1  # type: ignore[no-any-return]
