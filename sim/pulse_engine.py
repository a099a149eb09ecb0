"""Apply whole numbers of pulses to cells: pulse by pulse, or in closed form.

Pulse by pulse is the definition: each pulse adds its signed increment with fresh cycle-to-cycle
noise, then clips to the cell's bounds. For devices whose increment is affine in the weight
(constant step, linear step, soft bounds), ``n`` same-sign pulses have exact first two moments,
so the closed form draws one normal per cell from them at a cost that does not grow with ``n``;
it matches the definition in distribution (``tests/sim/test_pulse_engine.py``). It works through
the tile in cache-sized blocks of rows, or on a list of cells for sparse updates.

The math, when it applies and its precision: docs/emulator.md, section 4 (Applying pulses).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from sim.devices import Array, DeviceModel, Selection
from sim.noise import standard_normal

#: Cells per block of the closed form: 160 KiB of float32 per array, so the working arrays of a
#: block stay in the CPU caches.
BLOCK_CELLS = 40_960
#: Floor of ``g = 1 + beta``: a cell whose single step overshoots its fixed point lands on it.
_MIN_GROWTH = 1e-6
#: Regular cells have ``|log g| <= _STEEP`` and ``u <= _WIDE``: while no cell takes more than
#: ``_FAST_COUNT`` pulses, they use the series for ``e - 1`` and ``(1 + u)**n - 1``, the other
#: cells (and every cell of a float64 tile) the exact functions. Error bounds and the rule beyond
#: ``_FAST_COUNT`` pulses: docs/emulator.md, section 4.4.
_STEEP = 2e-2
_WIDE = 4e-5
_FAST_COUNT = 10
#: Blocks of at most this many cells use the exact functions everywhere: their cost is the
#: per-call overhead, which the series' bookkeeping would only add to.
_SMALL = 4096

#: Counts (whole numbers >= 0, any numeric dtype) of the rows ``start:stop``: ``(start, stop)``.
BlockCounts = Callable[[int, int], NDArray[np.number]]
Direction = tuple[bool, BlockCounts]  # (up, counts of a block of rows)


def dense_counts(counts: NDArray[np.number]) -> BlockCounts:
    """``counts`` (tile shape) as a :data:`BlockCounts`."""
    return lambda start, stop: counts[start:stop]


@dataclass
class AffineForm:
    """Per-cell constants (tile shape) of ``n`` same-sign pulses of an affine device.

    ``contracting``: ``fixed`` (f), ``log_growth`` (log g) and ``noise`` (u for multiplicative
    noise, ``(s alpha)**2 / (g**2 - 1)`` for additive). ``drift``: ``step`` (alpha) and ``noise``
    (``(s alpha)**2``). ``crosses``: some cell's mean can pass its bound (its fixed point lies
    beyond it), so a chained direction must start from the clipped mean. ``irregular``: sorted
    flat indices of the cells outside the series limits (see ``_STEEP``).
    """

    contracting: bool
    multiplicative: bool
    crosses: bool
    fixed: Array | None
    log_growth: Array | None
    step: Array | None
    noise: Array
    irregular: NDArray[np.intp]
    _by_block: dict[tuple[int, int], NDArray[np.intp]] = field(default_factory=dict)

    def at_block(self, block: slice, cols: int) -> FormCells:
        """The constants of the rows ``block`` (views), with their irregular cells."""
        key = (block.start, block.stop)
        if key not in self._by_block:
            lo, hi = np.searchsorted(self.irregular, (block.start * cols, block.stop * cols))
            self._by_block[key] = self.irregular[lo:hi] - block.start * cols

        def of_block(a: Array | None) -> Array | None:
            return None if a is None else a[block]

        return FormCells(self, of_block(self.fixed), of_block(self.log_growth), of_block(self.step),
                         self.noise[block], irregular=self._by_block[key])

    def at_cells(self, cells: NDArray[np.intp]) -> FormCells:
        """The constants of the flat ``cells`` (gathered), with their irregular cells."""
        fixed, log_growth, step, noise = (None if a is None else a.reshape(-1)[cells]
                                          for a in self._arrays())
        assert noise is not None
        if log_growth is None:
            irregular = np.zeros(0, dtype=np.intp)
        else:
            irregular = np.flatnonzero((log_growth < -_STEEP) | (noise > _WIDE))
        return FormCells(self, fixed, log_growth, step, noise, irregular=irregular)

    def _arrays(self) -> tuple[Array | None, Array | None, Array | None, Array]:
        return self.fixed, self.log_growth, self.step, self.noise


@dataclass
class FormCells:
    """An :class:`AffineForm`'s constants for some cells (a block of rows or a list)."""

    form: AffineForm
    fixed: Array | None
    log_growth: Array | None
    step: Array | None
    noise: Array
    irregular: NDArray[np.intp]  # flat indices within these cells

    def exact_cells(self, n: Array, x: Array) -> NDArray[np.intp]:
        """Flat indices (within these cells) that need the exact functions."""
        if float(n.max(initial=0)) > _FAST_COUNT:
            flagged = x < -_FAST_COUNT * _STEEP  # beyond the series' accuracy
            if self.form.multiplicative:
                flagged |= (n - 1) * self.noise > _FAST_COUNT * _WIDE
            return np.flatnonzero(flagged)
        return self.irregular


#: Rows of a tile turned into closed-form constants at a time (float64 temporaries stay small).
_FORM_ROWS = 256


def affine_form(device: DeviceModel, up: bool) -> AffineForm | None:
    """The closed-form constants of ``device``'s up or down pulses; None if not affine.

    The constants are float32 like the tile (or float64 for a float64 tile), computed in
    float64 a slab of rows at a time so that ``log(1 + beta)`` keeps the precision of
    ``beta``; a fixed point that is the cell's bound (soft bounds) shares the bound's array.
    """
    if not device.affine:
        return None
    rows, cols = device.shape
    sigma = device.config.dw_min_std
    none = np.zeros(0, dtype=np.intp)

    def increments(sel: Selection = None) -> tuple[Array, Array]:
        pair = device.affine_increments(up, sel)
        assert pair is not None  # an affine device gives its coefficients
        return pair

    def slab_increments(start: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        slab = np.arange(start * cols, min(start + _FORM_ROWS, rows) * cols)
        alpha, beta = increments(slab)
        return (np.broadcast_to(alpha, beta.shape).astype(np.float64).reshape(-1, cols),
                beta.astype(np.float64).reshape(-1, cols))

    some_flat, all_flat = False, True
    for start in range(0, rows, _FORM_ROWS):
        flat = slab_increments(start)[1] == 0
        some_flat, all_flat = some_flat or bool(flat.any()), all_flat and bool(flat.all())
    if all_flat:
        alpha, _ = increments()
        step = np.broadcast_to(alpha, device.shape)
        return AffineForm(False, device.mult_noise, True, None, None, step, (sigma * step) ** 2,
                          none)
    if some_flat:
        return None  # some cells drift, some contract: apply pulse by pulse
    stored_fixed = device.fixed_point(up)
    log_growth = np.empty(device.shape, dtype=device.dtype)
    noise = np.empty(device.shape, dtype=device.dtype)
    fixed = np.empty(device.shape, dtype=device.dtype) if stored_fixed is None else stored_fixed
    for start in range(0, rows, _FORM_ROWS):
        slab = slice(start, min(start + _FORM_ROWS, rows))
        alpha, beta = slab_increments(start)
        overshoots = 1 + beta < _MIN_GROWTH  # one pulse lands on the fixed point: no spread
        growth = np.where(overshoots, _MIN_GROWTH, 1 + beta)
        if device.mult_noise:
            slab_noise = (beta * sigma / growth) ** 2
        else:
            slab_noise = (sigma * alpha) ** 2 / (growth**2 - 1)
        slab_noise[overshoots] = 0
        noise[slab] = slab_noise
        log_growth[slab] = np.log(growth)
        if stored_fixed is None:
            fixed[slab] = -alpha / beta
    b_min, b_max = device.bounds()
    bound = b_max if up else b_min
    crosses = bool(np.any(np.abs(fixed) > np.abs(bound) * (1 + 1e-5)))
    irregular = np.flatnonzero((log_growth < -_STEEP) | (noise > _WIDE))
    return AffineForm(True, device.mult_noise, crosses, fixed, log_growth, None, noise, irregular)


class PulseWriter:
    """Applies pulse counts to a device's weights, in closed form where the device allows it."""

    def __init__(
        self, device: DeviceModel, rng: np.random.Generator, closed_form: bool = True
    ) -> None:
        self.device = device
        self.rng = rng
        self.closed_form = closed_form
        self._forms: dict[bool, AffineForm | None] = {}

    def _form(self, up: bool) -> AffineForm | None:
        if not self.closed_form:
            return None
        if up not in self._forms:
            self._forms[up] = affine_form(self.device, up)
        return self._forms[up]

    def apply(self, weights: Array, directions: Sequence[Direction]) -> None:
        """Apply each ``(up, counts)`` in order to ``weights`` (tile shape, in place)."""
        forms = [self._form(up) for up, _ in directions]
        if all(form is not None for form in forms):
            self._closed_form(weights, forms, [counts for _, counts in directions])  # type: ignore[arg-type]
            return
        rows = weights.shape[0]
        for up, counts in directions:
            dense = np.rint(counts(0, rows)).astype(np.int64)
            self._pulse_by_pulse(weights, dense, up)

    def apply_signed(self, weights: Array, counts: NDArray[np.integer]) -> None:
        """Apply signed counts (+ up, - down) to ``weights`` in place."""
        directions = [
            (up, dense_counts(np.maximum(sign * counts, 0)))
            for up, sign in ((True, 1), (False, -1))
            if (sign * counts > 0).any()
        ]
        self.apply(weights, directions)

    # -- the definition ----------------------------------------------------------------------

    def _pulse_by_pulse(self, weights: Array, counts: NDArray[np.integer], up: bool) -> None:
        """One pulse at a time, vectorised over the cells that still have pulses to take."""
        device = self.device
        flat = weights.reshape(-1)
        active = np.flatnonzero(counts.reshape(-1) > 0)
        remaining = counts.reshape(-1)[active]
        sigma = device.config.dw_min_std
        nominal = device.cells["dw_up" if up else "dw_down"]
        while active.size:
            w = flat[active]
            step = device.step_up(w, active) if up else device.step_down(w, active)
            xi = standard_normal(self.rng, active.size, weights.dtype.type)
            if device.mult_noise:
                increment = step * (1 + sigma * xi)
            else:
                increment = step + sigma * nominal[active] * xi
            w = w + increment if up else w - increment
            b_min, b_max = device.bounds(active)
            flat[active] = np.clip(w, b_min, b_max)
            more = remaining > 1
            active, remaining = active[more], remaining[more] - 1

    # -- the closed form ---------------------------------------------------------------------

    def _closed_form(
        self, weights: Array, forms: list[AffineForm], counts: list[BlockCounts]
    ) -> None:
        if not forms:
            return
        rows, cols = weights.shape
        dtype = weights.dtype.type
        b_min, b_max = self.device.bounds()
        blocks = -(-rows * cols // BLOCK_CELLS)
        block_rows = -(-rows // blocks)  # balanced: no sliver of a last block
        scratch = _Scratch((block_rows, cols), dtype)
        for start in range(0, rows, block_rows):
            block = slice(start, min(start + block_rows, rows))
            steps = [(form.at_block(block, cols),
                      np.asarray(block_counts(block.start, block.stop), dtype=dtype))
                     for form, block_counts in zip(forms, counts, strict=True)]
            normals = standard_normal(self.rng, (block.stop - block.start, cols), dtype)
            _chain(weights[block], steps, scratch.view(block.stop - block.start),
                   b_min[block], b_max[block], normals, out=weights[block])

    def apply_cells(self, weights: Array, cells: NDArray[np.intp],
                    directions: Sequence[tuple[bool, NDArray[np.number]]]) -> None:
        """Apply ``(up, counts)`` in order to the flat ``cells`` of ``weights`` only.

        ``counts`` are aligned with ``cells``; every other cell is left alone. This is the path
        for sparse updates, whose cost grows with the cells that take pulses, not the tile.
        """
        if cells.size == 0:
            return
        flat = weights.reshape(-1)
        forms = [self._form(up) for up, _ in directions]
        if any(form is None for form in forms):
            for up, n in directions:
                dense = np.zeros(flat.size, dtype=np.int64)
                dense[cells] = np.rint(n)
                self._pulse_by_pulse(weights, dense.reshape(weights.shape), up)
            return
        dtype = weights.dtype.type
        b_min, b_max = (b.reshape(-1)[cells] for b in self.device.bounds())
        steps = [(form.at_cells(cells), np.asarray(n, dtype=dtype))  # type: ignore[union-attr]
                 for form, (_, n) in zip(forms, directions, strict=True)]
        updated = np.empty(cells.size, dtype=dtype)
        _chain(flat[cells], steps, _Scratch((cells.size,), dtype).view(cells.size), b_min, b_max,
               standard_normal(self.rng, cells.size, dtype), out=updated)
        flat[cells] = updated


def _chain(weights: Array, steps: list[tuple[FormCells, Array]], work: _Work, b_min: Array,
           b_max: Array, normals: Array, out: Array) -> None:
    """Mean and variance through each direction in turn, then one draw, clipped into ``out``."""
    mean = weights
    for index, (cells, n) in enumerate(steps):
        if index and steps[index - 1][0].form.crosses:  # start from the clipped mean
            _clip_between(work, b_min, b_max)
        _propagate(cells, mean, n, work, first=index == 0)
        mean = work.mean
    np.sqrt(work.variance, out=work.variance)
    work.variance *= normals
    work.mean += work.variance
    np.minimum(work.mean, b_max, out=work.mean)
    np.maximum(work.mean, b_min, out=out)


def _clip_between(work: _Work, low: Array, high: Array) -> None:
    """Clip the running mean to the bounds; a clipped cell sits at its bound with no spread."""
    clipped = np.clip(work.mean, low, high)
    work.variance[clipped != work.mean] = 0
    work.mean[...] = clipped


@dataclass
class _Work:
    """Scratch arrays of one block: the running mean and variance, and two temporaries."""

    mean: Array
    variance: Array
    distance: Array
    growth: Array


class _Scratch:
    """Block-sized scratch arrays, allocated once per call and reused so they stay in cache."""

    def __init__(self, shape: tuple[int, ...], dtype: type[np.floating]) -> None:
        self._arrays = [np.empty(shape, dtype=dtype) for _ in range(4)]

    def view(self, rows: int) -> _Work:
        return _Work(*(a[:rows] for a in self._arrays))


def _expm1_series(x: Array) -> Array:
    """``x (1 + x (1/2 + x (1/6 + x/24)))``: ``expm1(x)`` to a relative ``x**4 / 120``."""
    series = x * (1 / 24)
    series += 1 / 6
    series *= x
    series += 0.5
    series *= x
    series += 1
    series *= x
    return series


def _propagate(cells: FormCells, mean: Array, n: Array, work: _Work, first: bool) -> None:
    """Take ``work.mean``/``work.variance`` through ``n`` more pulses on ``cells``.

    ``mean`` is the mean before (the weights themselves for the first direction, else
    ``work.mean``); ``n`` is a scratch array owned by the caller and is overwritten.
    """
    growth = work.growth
    noise = cells.noise
    if not cells.form.contracting:
        assert cells.step is not None
        np.multiply(n, noise, out=growth)  # n (s alpha)**2
        n *= cells.step
        np.add(mean, n, out=work.mean)
    else:
        assert cells.fixed is not None and cells.log_growth is not None
        multiplicative = cells.form.multiplicative
        x = n * cells.log_growth
        if n.dtype == np.float64 or n.size <= _SMALL:  # exact; cheaper than the series here
            em1 = np.expm1(x)  # e - 1, e = g**n
            if multiplicative:
                np.multiply(n, np.log1p(noise.astype(np.float64)), out=growth, casting="unsafe")
                np.expm1(growth, out=growth)  # (1 + u)**n - 1
        else:
            em1 = _expm1_series(x)
            if multiplicative:
                np.multiply(n, noise, out=growth)  # (1 + u)**n - 1 for small n u
            exact = cells.exact_cells(n, x)
            if exact.size:
                em1.reshape(-1)[exact] = np.expm1(x.reshape(-1)[exact])
                if multiplicative:
                    n_exact = n.reshape(-1)[exact]
                    noise_exact = noise.reshape(-1)[exact].astype(np.float64)
                    growth.reshape(-1)[exact] = np.expm1(n_exact * np.log1p(noise_exact))
        distance = work.distance
        np.subtract(mean, cells.fixed, out=distance)
        delta = distance * em1  # the mean's change, precise even when tiny
        np.add(mean, delta, out=work.mean)
        distance += delta  # e (w0 - f): the new distance to the fixed point
        if multiplicative:
            growth *= distance
            growth *= distance  # variance added: (e (w0 - f))**2 ((1 + u)**n - 1)
        else:
            np.multiply(em1, em1 + 2, out=growth)  # e**2 - 1
            growth *= noise  # variance added: (s alpha)**2 (e**2 - 1) / (g**2 - 1)
        if not first:
            em1 += 1
            work.variance *= em1
            work.variance *= em1
    if first:
        work.variance[...] = growth
    else:
        work.variance += growth
