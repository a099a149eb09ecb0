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
_FIELD = uint64(0xFFFF)


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
    """A standard normal from the 2**16-level table (``sim.noise``): 16 random bits index it.

    One 64-bit mix serves four consecutive draws: draw ``counter`` takes the 16-bit field
    ``counter % 4`` of ``mix(key, counter // 4)`` (:func:`table_indices` fills a row's indices
    that way, a quarter of the hashing)."""
    return table[_field(mix(key, counter >> uint64(2)), counter & uint64(3))]


@njit(cache=True, inline="always")
def _field(word: np.uint64, field: np.uint64) -> np.uint64:
    """16-bit field ``field`` (0..3, least significant first) of ``word``."""
    return (word >> (field << uint64(4))) & _FIELD


@njit(cache=True, inline="always")
def table_indices(key: np.uint64 | int, start: np.uint64, count: int, indices: np.ndarray
                  ) -> None:
    """The table indices of :func:`table_normal`'s draws ``start .. start + count - 1`` into
    ``indices[:count]``; ``start`` a multiple of 4, ``indices`` at least ``count`` rounded up
    to a multiple of 4 long (the last word's spare fields land there)."""
    first = start >> uint64(2)
    for quad in range((count + 3) >> 2):
        word = mix(key, first + uint64(quad))
        for field in range(4):
            indices[4 * quad + field] = _field(word, uint64(field))


def stream_key(rng: np.random.Generator) -> int:
    """A fresh key from ``rng``, one per kernel call: 63 random bits as a Python int, which a
    kernel receives as an ``int64`` (a ``numpy.uint64`` costs more to make and to pass than
    the rest of a small update's call path; the key's mixing makes the lost bit immaterial)."""
    return rng.bit_generator.random_raw() >> 1  # type: ignore[no-any-return]
