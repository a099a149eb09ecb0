"""The compiled update engine's kernels (numba): pulse trains, coincidences, and applying pulses.

One call of :func:`train_masks` draws a mini-batch's stochastic pulse trains from the
counter-based RNG of :mod:`sim.counter_rng` and packs them into bit masks, one 64-slot word per
line and sign; a cell's up and down counts are then popcounts of its row's and column's masks
ANDed together. The cell kernels apply the counts row by row: in closed form for affine devices
(the moments of docs/emulator.md, section 4.2, then one table normal per cell) or pulse by pulse
for the others (section 4.1). Every draw is indexed by the cell, slot or pulse it belongs to, so
a row's result does not depend on which thread computes it: serial and parallel kernels give
bit-identical weights.

The numbers ``e - 1 = g**n - 1`` and ``(1 + u)**n - 1`` are ``expm1`` of ``n log g`` and
``n log(1 + u)``, never ``e`` minus 1, so small increments keep their float32 precision: short
Taylor polynomials in the vectorised loop, and libm's expm1 for the few steep cells whose
arguments go beyond ``SMALL_LIMIT`` or ``TINY_LIMIT``.

The closed form runs in float32, the dtype of the tile's state (a float64 tile, chosen for
exactness, runs on the numpy engine).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types, uint64
from numba.extending import intrinsic

from sim.counter_rng import mix, table_indices, table_normal, uniform32

#: Compiled once and cached beside the module; ``error_model="numpy"`` drops the division
#: checks that stop the vectoriser. ``_inline`` helpers are inlined into their callers.
_kernel = njit(cache=True, error_model="numpy", nogil=True)
_parallel = njit(cache=True, error_model="numpy", nogil=True, parallel=True)
_inline = njit(cache=True, error_model="numpy", nogil=True, inline="always")
#: The row loops of the serial kernels: compiled without the runtime's reference counting, which
#: otherwise counts every array an inlined row body takes, on every row (about 0.1 us a row, a
#: third of a 64-column row's work). They allocate nothing; their caller allocates for them.
#: (``_nrt`` is numba's own option, missing from its type stubs.)
_rows = njit(cache=True, error_model="numpy", nogil=True, _nrt=False)  # type: ignore[call-overload]

_ZERO, _ONE, _TWO = np.float32(0), np.float32(1), np.float32(2)
_C2, _C3, _C4 = (np.float32(1 / math.factorial(k)) for k in range(2, 5))
#: An update visits only the columns that fire where they are at most this fraction of the
#: tile's columns (one cell at a time); else it sweeps every column (vectorised). Same numbers.
SPARSE_COLUMNS = 0.25
#: Largest ``|n log g|`` and ``n log(1 + u)`` a cell may reach for the polynomials of
#: ``expm1`` below; cells beyond them (steep cells: bounds near zero) use libm.
SMALL_LIMIT, TINY_LIMIT = 0.1, 1e-3
_SMALL, _TINY = np.float32(SMALL_LIMIT), np.float32(TINY_LIMIT)

#: Keys of one update's independent streams, mixed from its key.
_TRAINS, _NOISE, _ORDER = uint64(1), uint64(2), uint64(3)

#: Planes of the closed-form constants: per direction (up, then down) ``log g`` and the noise
#: factor (``log(1 + u)`` for multiplicative noise; docs/emulator.md, section 4.2), then the
#: bounds, then each direction's fixed point (or its step, for drift) unless it is a bound
#: (soft bounds), which the kernels are told by plane number. Row limits: the largest
#: ``|log g|`` and noise factor of each row and direction (up's two, then down's).
B_MIN, B_MAX = 4, 5
FIXED_UP, FIXED_DOWN = 6, 7

#: Device codes of the pulse-by-pulse kernel, and its per-cell planes.
AFFINE, POW, EXP, PIECEWISE = 0, 1, 2, 3
P_DW_UP, P_DW_DOWN, P_A_UP, P_A_DOWN, P_B_UP, P_B_DOWN, P_G_UP, P_G_DOWN, P_MIN, P_MAX = range(10)
PULSE_PLANES = 10
#: Scalar constants of the pulse-by-pulse kernel: noise ``s``, multiplicative noise (1) or not,
#: and exp step's ``a, b, A_up, A_down, gamma_up, gamma_down``.
C_SIGMA, C_MULT, C_A, C_B, C_A_UP, C_A_DOWN, C_GAMMA_UP, C_GAMMA_DOWN = range(8)


@intrinsic
def _popcount(typingctx, word):  # type: ignore[no-untyped-def]
    """Set bits of a uint64 (LLVM's ctpop, vectorised where the CPU allows)."""
    signature = types.uint64(types.uint64)

    def codegen(context, builder, sig, args):  # type: ignore[no-untyped-def]
        function = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(function, args)

    return signature, codegen


# -- pulse trains ----------------------------------------------------------------------------


@_inline
def _train_masks(xs, ds, rate, desired_bl, management, bl_management, key):  # type: ignore[no-untyped-def]
    """The mini-batch's pulse trains as bit masks; ``words == -1`` if ``xs`` or ``ds`` is not finite.

    ``rate`` is ``lr / granularity``. Returns ``(positive, negative, words)``: masks
    ``(words, cols + rows)`` of uint64 (columns first), bit ``t`` of word ``t // 64`` set where
    the line fires with that sign in slot ``t``. Bit lengths, gains and management follow
    docs/emulator.md, section 3; sample ``s`` owns the slots after those of the samples before it.
    """
    samples, cols = xs.shape
    rows = ds.shape[1]
    lengths = np.zeros(samples, np.int64)
    x_gain = np.zeros(samples)
    d_gain = np.zeros(samples)
    total = 0
    for s in range(samples):
        x_max, d_max, nothing = 0.0, 0.0, 0.0  # nothing stays 0 unless a value is not finite
        for j in range(cols):
            x_max = max(x_max, abs(xs[s, j]))
            nothing += xs[s, j] * 0.0
        for i in range(rows):
            d_max = max(d_max, abs(ds[s, i]))
            nothing += ds[s, i] * 0.0
        if nothing != 0.0:  # a NaN or an infinity (times 0: NaN); a sum could overflow
            return np.zeros((0, 0), np.uint64), np.zeros((0, 0), np.uint64), -1
        k = rate * x_max * d_max
        if k <= 0:
            continue
        length = min(int(np.ceil(k)), desired_bl) if bl_management else desired_bl
        gain = np.sqrt(rate / length)
        x_gain[s] = d_gain[s] = gain
        if management:
            balance = np.sqrt(x_max / (d_max * (desired_bl / max(k, desired_bl))))
            x_gain[s] = gain / balance
            d_gain[s] *= balance
        lengths[s] = length
        total += length
    words = max((total + 63) // 64, 1)
    lines = cols + rows
    positive = np.zeros((words, lines), np.uint64)
    negative = np.zeros((words, lines), np.uint64)
    trains_key = mix(key, _TRAINS)
    probability = np.empty(lines)
    up = np.empty(lines, np.uint64)
    first = 0
    for s in range(samples):
        for line in range(lines):
            value = xs[s, line] if line < cols else ds[s, line - cols]
            probability[line] = min(abs(value) * (x_gain[s] if line < cols else d_gain[s]), 1.0)
            up[line] = uint64(value > 0)
        for t in range(first, first + lengths[s]):
            word, shift = t >> 6, uint64(t & 63)
            for line in range(lines):  # branch-free, so that it vectorises
                fired = uint64(uniform32(trains_key, uint64(t * lines + line)) < probability[line])
                bit = fired << shift
                positive[word, line] |= bit * up[line]
                negative[word, line] |= bit * (uint64(1) - up[line])
        first += lengths[s]
    return positive, negative, words


@_kernel
def train_masks(xs, ds, rate, desired_bl, management, bl_management, key):  # type: ignore[no-untyped-def]
    """:func:`_train_masks` on its own (the update kernels draw their trains inline)."""
    return _train_masks(xs, ds, rate, desired_bl, management, bl_management, key)


@_inline
def _up_first(key):  # type: ignore[no-untyped-def]
    """Whether an update applies its up pulses before its down pulses: at random, so that no
    order bias builds up."""
    return (mix(key, _ORDER) & uint64(1)) == 1


# -- closed form ------------------------------------------------------------------------------


@_inline
def _expm1_small(x):  # type: ignore[no-untyped-def]
    """``exp(x) - 1`` of a float32 by its degree-4 Taylor polynomial: relative error below
    ``|x|**4 / 5!``, 8e-7 for ``|x| <= SMALL_LIMIT``; vectorises."""
    return x * (_ONE + x * (_C2 + x * (_C3 + x * _C4)))


@_inline
def _expm1_tiny(x):  # type: ignore[no-untyped-def]
    """``exp(x) - 1`` by the degree-2 polynomial: relative error below ``x**2 / 6``, 2e-7 for
    ``|x| <= TINY_LIMIT``: the multiplicative noise's growth, ``n log(1 + u)``, nearly always."""
    return x * (_ONE + x * _C2)


@_inline
def _expm1_exact(x):  # type: ignore[no-untyped-def]
    """``exp(x) - 1`` of a float32 by libm, in float64, for any ``x``."""
    return np.float32(math.expm1(np.float64(x)))


@_inline
def _mask_counts(positive, negative, row_line, counts):  # type: ignore[no-untyped-def]
    """Up and down coincidences of row line ``row_line`` with every column, into ``counts[0]``
    and ``counts[1]``: up where the row and column fire with opposite signs."""
    for word in range(positive.shape[0]):
        row_up, row_down = positive[word, row_line], negative[word, row_line]
        for j in range(counts.shape[1]):  # the first word sets, the others add
            col_up, col_down = positive[word, j], negative[word, j]
            up = _popcount(row_up & col_down) + _popcount(row_down & col_up)
            down = _popcount(row_up & col_up) + _popcount(row_down & col_down)
            counts[0, j] = up if word == 0 else counts[0, j] + up
            counts[1, j] = down if word == 0 else counts[1, j] + down


@_inline
def _closed_form_row(w, planes, fixed_planes, limits, i, counts, up_first, contracting,
                     multiplicative, largest, noise_key, table, scratch):  # type: ignore[no-untyped-def]
    """Row ``i`` after its cells' up and down counts (``counts[0]``, ``counts[1]``), in closed
    form (docs/emulator.md, 4.2).

    The first direction's mean and variance, the mean clipped (and its variance dropped) where
    it passed a bound, the second direction's with the first's variance carried through
    (times ``e**2``), then one table normal per cell and the bounds. A drift direction (not
    ``contracting``) holds the signed step where a contracting one holds its fixed point.
    ``largest`` bounds every count of the row: where the polynomials are precise for any cell
    it allows, no cell is checked; else the cells beyond them are computed again with libm.
    A cell that takes pulses of one sign only goes through both directions all the same: the
    loop has no branch, and the empty direction leaves mean and variance as they are. The
    arrays are indexed in place, not sliced: a slice costs reference counting per row.
    """
    first, second = (0, 1) if up_first else (1, 0)
    a, b = 2 * first, 2 * second
    fixed_a, fixed_b = fixed_planes[first], fixed_planes[second]
    growth_reach, noise_reach = _row_reach(limits, i, largest, multiplicative)
    steep = growth_reach > SMALL_LIMIT or noise_reach > TINY_LIMIT
    index, xi, before = scratch
    _row_normals(table, noise_key, _row_start(i, w.shape[1]), index, xi)
    contracting_1, contracting_2 = contracting[first], contracting[second]
    cols = w.shape[1]
    if steep:
        for j in range(cols):
            before[j] = w[i, j]
    _closed_form_cells((w, planes, i, counts, first, second, a, b, fixed_a, fixed_b, xi,
                        contracting_1, contracting_2, multiplicative), _expm1_small, _expm1_tiny)
    if not steep:
        return
    flagged = index  # free again: the normals are drawn
    for j in range(cols):  # which cells the polynomials do not fit (vectorised)
        flagged[j] = _beyond_polynomials(counts[first, j], counts[second, j], planes[a, i, j],
                                         planes[b, i, j], planes[a + 1, i, j],
                                         planes[b + 1, i, j], multiplicative)
    for j in range(cols):  # those few again, with libm
        if flagged[j]:
            w[i, j] = _closed_form_cell(
                (before[j], counts[first, j], counts[second, j], planes[fixed_a, i, j],
                 planes[a, i, j], planes[a + 1, i, j], planes[fixed_b, i, j], planes[b, i, j],
                 planes[b + 1, i, j], planes[B_MIN, i, j], planes[B_MAX, i, j], xi[j],
                 contracting_1, contracting_2, multiplicative), _expm1_exact, _expm1_exact)


@_inline
def _beyond_polynomials(n_1, n_2, log_1, log_2, noise_1, noise_2, multiplicative):  # type: ignore[no-untyped-def]
    """1 where a cell's counts take ``n |log g|`` beyond ``SMALL_LIMIT`` or (multiplicative
    noise) ``n log(1 + u)`` beyond ``TINY_LIMIT``, else 0: the cells that need libm. The same
    float32 arithmetic wherever it is asked, so sweeping and visiting choose alike."""
    count_1, count_2 = np.float32(n_1), np.float32(n_2)
    growth = max(abs(count_1 * log_1), abs(count_2 * log_2))
    noise = max(count_1 * noise_1, count_2 * noise_2)
    beyond = growth > _SMALL or (multiplicative and noise > _TINY)
    return np.uint32(1) if beyond else np.uint32(0)


@_inline
def _row_reach(limits, i, largest, multiplicative):  # type: ignore[no-untyped-def]
    """The largest ``|n log g|`` and ``n log(1 + u)`` any cell of row ``i`` can reach when no
    count exceeds ``largest``: whether its cells need checking against the polynomials."""
    growth = largest * max(limits[i, 0], limits[i, 2])
    return growth, (largest * max(limits[i, 1], limits[i, 3]) if multiplicative else 0.0)


@_inline
def _closed_form_cells(cells, expm1, expm1_noise):  # type: ignore[no-untyped-def]
    """Every cell of a row (``cells`` as :func:`_closed_form_row` packs them) through
    :func:`_closed_form_cell` with the row's polynomials."""
    (w, planes, i, counts, first, second, a, b, fixed_a, fixed_b, xi, contracting_1,
     contracting_2, multiplicative) = cells
    for j in range(w.shape[1]):
        w[i, j] = _closed_form_cell(
            (w[i, j], counts[first, j], counts[second, j], planes[fixed_a, i, j], planes[a, i, j],
             planes[a + 1, i, j], planes[fixed_b, i, j], planes[b, i, j], planes[b + 1, i, j],
             planes[B_MIN, i, j], planes[B_MAX, i, j], xi[j], contracting_1, contracting_2,
             multiplicative), expm1, expm1_noise)


@_inline
def _closed_form_cell(cell, expm1, expm1_noise):  # type: ignore[no-untyped-def]
    """One cell through both directions (:func:`_closed_form_row`), with ``expm1`` and
    ``expm1_noise`` among the functions above: polynomials as precise as the row needs in the
    vectorised loop, libm where none is. ``cell``: its weight, its counts in the order applied,
    both directions' fixed point, ``log g`` and noise factor, its bounds, its normal draw and
    which directions contract, and whether the noise is multiplicative."""
    (w, n_first, n_second, fixed_1, log_1, noise_1, fixed_2, log_2, noise_2, low, high, xi,
     contracting_1, contracting_2, multiplicative) = cell
    mean, variance = _direction(w, _ZERO, np.float32(n_first), fixed_1, log_1, noise_1,
                                contracting_1, multiplicative, expm1, expm1_noise)
    outside = mean > high or mean < low
    mean = min(max(mean, low), high)
    variance = _ZERO if outside else variance
    mean, variance = _direction(mean, variance, np.float32(n_second), fixed_2, log_2, noise_2,
                                contracting_2, multiplicative, expm1, expm1_noise)
    return min(max(mean + np.sqrt(variance) * xi, low), high)


@_inline
def _direction(mean, variance, count, fixed, log_growth, noise, contracting, multiplicative,
               expm1, expm1_noise):  # type: ignore[no-untyped-def]
    """Mean and variance of a cell after ``count`` more same-sign pulses (docs/emulator.md,
    4.2). Both the contracting and the drift result are computed and one is selected, so the
    loop that calls this has no branch and vectorises."""
    em1 = expm1(count * log_growth)
    distance = mean - fixed
    delta = distance * em1
    distance = distance + delta
    e = _ONE + em1
    if multiplicative:
        added = distance * distance * expm1_noise(count * noise)
    else:
        added = noise * em1 * (em1 + _TWO)
    contracted = (mean + delta, variance * e * e + added)
    drifted = (mean + count * fixed, variance + count * noise)
    return contracted if contracting else drifted


@_inline
def _row_fires(positive, negative, line):  # type: ignore[no-untyped-def]
    """How many slots line ``line`` fires in (an upper bound of any of its cells' counts)."""
    fires = uint64(0)
    for word in range(positive.shape[0]):
        fires += _popcount(positive[word, line] | negative[word, line])
    return int(fires)


@_inline
def _row_start(i, cols):  # type: ignore[no-untyped-def]
    """The noise counter of row ``i``'s first cell: rows start on a multiple of 4, so that a
    row's normals take whole words of :func:`~sim.counter_rng.table_indices`."""
    return i * ((cols + 3) & ~3)


@_inline
def _row_normals(table, key, start, index, values):  # type: ignore[no-untyped-def]
    """Table normals of the cells ``start, start + 1, ...`` of a row, into ``values``.

    The hashes (vectorised, one per four cells) and the table lookups (gathers, which stop
    the vectoriser) run as two loops, so that the hashes stay vectorised; ``index`` is
    scratch, ``values.size`` rounded up to 4 long.
    """
    table_indices(key, uint64(start), values.size, index)
    for j in range(values.size):
        values[j] = table[index[j]]


@_inline
def _row_scratch(cols):  # type: ignore[no-untyped-def]
    """Up and down counts of one row, and room for its normals: table indices (a multiple of
    4 long), the normals and a copy of the row's weights."""
    return np.empty((2, cols), np.int32), (np.empty((cols + 3) & ~3, np.uint32),
                                           np.empty(cols, np.float32), np.empty(cols, np.float32))


@_inline
def _active_columns(positive, negative, cols):  # type: ignore[no-untyped-def]
    """The columns that fire in some slot, in order."""
    active = np.empty(cols, np.int64)
    count = 0
    for j in range(cols):
        fired = uint64(0)
        for word in range(positive.shape[0]):
            fired |= positive[word, j] | negative[word, j]
        if fired:
            active[count] = j
            count += 1
    return active[:count]


@_inline
def _closed_form_trains_row(w, planes, fixed_planes, limits, positive, negative, active, sweep,
                            i, fires, up_first, contracting, multiplicative, key, table, counts,
                            scratch):  # type: ignore[no-untyped-def]
    """Row ``i``'s coincidences applied in closed form, where the row fires (``fires`` > 0
    slots): a ``sweep`` of every column, vectorised, or a visit of the cells in the ``active``
    columns only (where few fire). Both give the same numbers: every draw is indexed by its
    cell, and both send the same cells to libm (:func:`_beyond_polynomials`).

    The callers skip the rows that do not fire before calling: entering an inlined body costs
    about 0.1 us of reference counting of its array arguments, a third of a 64-column row's
    work."""
    cols = w.shape[1]
    if sweep:
        _mask_counts(positive, negative, cols + i, counts)
        _closed_form_row(w, planes, fixed_planes, limits, i, counts, up_first, contracting,
                         multiplicative, fires, mix(key, _NOISE), table, scratch)
        return
    first, second = (0, 1) if up_first else (1, 0)
    noise_key = mix(key, _NOISE)
    for j in active:
        n_up, n_down = 0, 0
        for word in range(positive.shape[0]):
            row_up, row_down = positive[word, cols + i], negative[word, cols + i]
            col_up, col_down = positive[word, j], negative[word, j]
            n_up += int(_popcount(row_up & col_down) + _popcount(row_down & col_up))
            n_down += int(_popcount(row_up & col_up) + _popcount(row_down & col_down))
        if n_up == 0 and n_down == 0:
            continue
        n_1, n_2 = (n_up, n_down) if up_first else (n_down, n_up)
        log_1, noise_1 = planes[2 * first, i, j], planes[2 * first + 1, i, j]
        log_2, noise_2 = planes[2 * second, i, j], planes[2 * second + 1, i, j]
        cell = (w[i, j], n_1, n_2, planes[fixed_planes[first], i, j], log_1, noise_1,
                planes[fixed_planes[second], i, j], log_2, noise_2, planes[B_MIN, i, j],
                planes[B_MAX, i, j],
                table_normal(table, noise_key, uint64(_row_start(i, cols) + j)),
                contracting[first], contracting[second], multiplicative)
        if _beyond_polynomials(n_1, n_2, log_1, log_2, noise_1, noise_2, multiplicative):
            w[i, j] = _closed_form_cell(cell, _expm1_exact, _expm1_exact)
        else:
            w[i, j] = _closed_form_cell(cell, _expm1_small, _expm1_tiny)


@_inline
def _prepared(w, xs, ds, rate, desired_bl, management, bl_management, key, sparse_columns):  # type: ignore[no-untyped-def]
    """What an update kernel needs before its rows: the trains' masks (``words < 0`` if an
    input is not finite), the order of the directions, the firing columns and whether to
    sweep the rows rather than visit those columns."""
    positive, negative, words = _train_masks(xs, ds, rate, desired_bl, management,
                                             bl_management, key)
    active = _active_columns(positive, negative, w.shape[1])
    return (positive, negative, words, _up_first(key), active,
            active.size > sparse_columns * w.shape[1])


@_kernel
def closed_form_update(w, planes, fixed_up, fixed_down, limits, xs, ds, rate, desired_bl,
                       management, bl_management, contracting_up, contracting_down,
                       multiplicative, key, table, sparse_columns):  # type: ignore[no-untyped-def]
    """One pulsed update of ``w`` in closed form: the trains of :func:`_train_masks`, then each
    row's coincidences, visiting only the columns that fire where they are at most a fraction
    ``sparse_columns`` of all. False (``w`` untouched) if an input is not finite."""
    positive, negative, words, up_first, active, sweep = _prepared(
        w, xs, ds, rate, desired_bl, management, bl_management, key, sparse_columns)
    if words < 0:
        return False
    counts, scratch = _row_scratch(w.shape[1])
    _closed_form_rows(w, planes, (fixed_up, fixed_down), limits, positive, negative, active,
                      sweep, up_first, (contracting_up, contracting_down), multiplicative, key,
                      table, counts, scratch)
    return True


@_rows
def _closed_form_rows(w, planes, fixed_planes, limits, positive, negative, active, sweep,
                      up_first, contracting, multiplicative, key, table, counts, scratch):  # type: ignore[no-untyped-def]
    """Every row of :func:`closed_form_update` that fires, in order."""
    for i in range(w.shape[0]):
        fires = _row_fires(positive, negative, w.shape[1] + i)
        if fires:
            _closed_form_trains_row(w, planes, fixed_planes, limits, positive, negative, active,
                                    sweep, i, fires, up_first, contracting, multiplicative, key,
                                    table, counts, scratch)


@_parallel
def closed_form_update_parallel(w, planes, fixed_up, fixed_down, limits, xs, ds, rate,
                                desired_bl, management, bl_management, contracting_up,
                                contracting_down, multiplicative, key, table, sparse_columns):  # type: ignore[no-untyped-def]
    """:func:`closed_form_update` with the rows shared among threads (the same result)."""
    positive, negative, words, up_first, active, sweep = _prepared(
        w, xs, ds, rate, desired_bl, management, bl_management, key, sparse_columns)
    if words < 0:
        return False
    contracting, fixed_planes = (contracting_up, contracting_down), (fixed_up, fixed_down)
    for i in prange(w.shape[0]):
        fires = _row_fires(positive, negative, w.shape[1] + i)
        if fires:
            counts, scratch = _row_scratch(w.shape[1])
            _closed_form_trains_row(w, planes, fixed_planes, limits, positive, negative, active,
                                    sweep, i, fires, up_first, contracting, multiplicative, key,
                                    table, counts, scratch)
    return True


@_kernel
def closed_form_counts(w, planes, fixed_up, fixed_down, limits, counts, contracting_up,
                       contracting_down, multiplicative, key, table):  # type: ignore[no-untyped-def]
    """Apply signed pulse counts (+ up, - down) per cell to ``w`` in closed form."""
    contracting, fixed_planes = (contracting_up, contracting_down), (fixed_up, fixed_down)
    rows, cols = w.shape
    row_counts, scratch = _row_scratch(cols)
    for i in range(rows):
        largest = 0
        for j in range(cols):
            row_counts[0, j] = max(counts[i, j], 0)
            row_counts[1, j] = max(-counts[i, j], 0)
            largest = max(largest, abs(counts[i, j]))
        if largest > 0:
            _closed_form_row(w, planes, fixed_planes, limits, i, row_counts, True, contracting,
                             multiplicative, largest, mix(key, _NOISE), table, scratch)


# -- pulse by pulse ---------------------------------------------------------------------------


@_inline
def _increment(device, up, w, planes, i, j, constants, nodes_up, nodes_down):  # type: ignore[no-untyped-def]
    """The expected signed increment of one pulse at weight ``w`` (docs/emulator.md, 2.2)."""
    low, high = planes[P_MIN, i, j], planes[P_MAX, i, j]
    if device == AFFINE:
        if up:
            return planes[P_A_UP, i, j] + planes[P_B_UP, i, j] * w
        return planes[P_A_DOWN, i, j] + planes[P_B_DOWN, i, j] * w
    if device == POW:
        omega = min(max((high - w) / (high - low), 0.0), 1.0)
        if up:
            return planes[P_DW_UP, i, j] * omega ** planes[P_G_UP, i, j]
        return -planes[P_DW_DOWN, i, j] * (1 - omega) ** planes[P_G_DOWN, i, j]
    if device == EXP:
        z = 2 * constants[C_A] * w / (high - low) + constants[C_B]
        if up:
            response = 1 - constants[C_A_UP] * np.exp(constants[C_GAMMA_UP] * z)
            return planes[P_DW_UP, i, j] * max(response, 0.0)
        response = 1 - constants[C_A_DOWN] * np.exp(-constants[C_GAMMA_DOWN] * z)
        return -planes[P_DW_DOWN, i, j] * max(response, 0.0)
    nodes = nodes_up if up else nodes_down
    if nodes.size == 1:
        response = nodes[0]
    else:
        position = min(max((w - low) / (high - low), 0.0), 1.0) * (nodes.size - 1)
        node = min(int(position), nodes.size - 2)
        fraction = position - node
        response = nodes[node] + fraction * (nodes[node + 1] - nodes[node])
    return planes[P_DW_UP, i, j] * response if up else -planes[P_DW_DOWN, i, j] * response


@_inline
def _pulses(w, n, up, device, planes, i, j, constants, nodes_up, nodes_down, cell_key, first,
            table):  # type: ignore[no-untyped-def]
    """``n`` pulses one at a time: increment with cycle-to-cycle noise, then clip (4.1)."""
    sigma = constants[C_SIGMA]
    nominal = planes[P_DW_UP, i, j] if up else planes[P_DW_DOWN, i, j]
    low, high = planes[P_MIN, i, j], planes[P_MAX, i, j]
    for pulse in range(n):
        step = _increment(device, up, w, planes, i, j, constants, nodes_up, nodes_down)
        xi = table_normal(table, cell_key, uint64(first + pulse))
        if constants[C_MULT] > 0:
            step = step * (1 + sigma * xi)
        else:
            step = step + sigma * nominal * xi
        w = min(max(w + step, low), high)
    return w


@_inline
def _pulsed_cell(w, n_up, n_down, up_first, device, planes, i, j, constants, nodes_up,
                 nodes_down, noise_key, table):  # type: ignore[no-untyped-def]
    cell_key = mix(noise_key, uint64(i * w.shape[1] + j))
    value = w[i, j]
    if up_first:
        value = _pulses(value, n_up, True, device, planes, i, j, constants, nodes_up,
                        nodes_down, cell_key, 0, table)
        value = _pulses(value, n_down, False, device, planes, i, j, constants, nodes_up,
                        nodes_down, cell_key, n_up, table)
    else:
        value = _pulses(value, n_down, False, device, planes, i, j, constants, nodes_up,
                        nodes_down, cell_key, 0, table)
        value = _pulses(value, n_up, True, device, planes, i, j, constants, nodes_up,
                        nodes_down, cell_key, n_down, table)
    w[i, j] = value


@_inline
def _pulsed_row(w, positive, negative, i, up_first, device, planes, constants, nodes_up,
                nodes_down, key, table, counts):  # type: ignore[no-untyped-def]
    """Row ``i``'s coincidences, pulse by pulse; the callers skip rows that do not fire (see
    :func:`_closed_form_trains_row`)."""
    cols = w.shape[1]
    _mask_counts(positive, negative, cols + i, counts)
    noise_key = mix(key, _NOISE)
    for j in range(cols):
        if counts[0, j] or counts[1, j]:
            _pulsed_cell(w, counts[0, j], counts[1, j], up_first, device, planes, i, j,
                         constants, nodes_up, nodes_down, noise_key, table)


@_kernel
def pulsed_update(w, xs, ds, rate, desired_bl, management, bl_management, device, planes,
                  constants, nodes_up, nodes_down, key, table):  # type: ignore[no-untyped-def]
    """One pulsed update of ``w``, pulse by pulse: the trains of :func:`_train_masks`, then
    each row's coincidences. False (``w`` untouched) if an input is not finite."""
    positive, negative, words = _train_masks(xs, ds, rate, desired_bl, management,
                                             bl_management, key)
    if words < 0:
        return False
    counts, _ = _row_scratch(w.shape[1])
    _pulsed_rows(w, positive, negative, _up_first(key), device, planes, constants, nodes_up,
                 nodes_down, key, table, counts)
    return True


@_rows
def _pulsed_rows(w, positive, negative, up_first, device, planes, constants, nodes_up,
                 nodes_down, key, table, counts):  # type: ignore[no-untyped-def]
    """Every row of :func:`pulsed_update` that fires, in order."""
    for i in range(w.shape[0]):
        if _row_fires(positive, negative, w.shape[1] + i):
            _pulsed_row(w, positive, negative, i, up_first, device, planes, constants, nodes_up,
                        nodes_down, key, table, counts)


@_parallel
def pulsed_update_parallel(w, xs, ds, rate, desired_bl, management, bl_management, device,
                           planes, constants, nodes_up, nodes_down, key, table):  # type: ignore[no-untyped-def]
    """:func:`pulsed_update` with the rows shared among threads (the same result)."""
    positive, negative, words = _train_masks(xs, ds, rate, desired_bl, management,
                                             bl_management, key)
    if words < 0:
        return False
    up_first = _up_first(key)
    for i in prange(w.shape[0]):
        if _row_fires(positive, negative, w.shape[1] + i):
            counts, _ = _row_scratch(w.shape[1])
            _pulsed_row(w, positive, negative, i, up_first, device, planes, constants,
                        nodes_up, nodes_down, key, table, counts)
    return True


@_kernel
def pulsed_counts(w, counts, device, planes, constants, nodes_up, nodes_down, key, table):  # type: ignore[no-untyped-def]
    """Apply signed pulse counts (+ up, - down) per cell to ``w`` pulse by pulse."""
    rows, cols = w.shape
    noise_key = mix(key, _NOISE)
    for i in range(rows):
        for j in range(cols):
            n = counts[i, j]
            if n != 0:
                _pulsed_cell(w, max(n, 0), max(-n, 0), True, device, planes, i, j, constants,
                             nodes_up, nodes_down, noise_key, table)
