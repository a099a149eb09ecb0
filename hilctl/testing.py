"""Contract checks of the tile interface: what scikit-learn's ``check_estimator`` is to estimators.

A backend (the emulator, a lab's bench, a new chip) passes these if its tiles keep the promises of
:class:`hilctl.tile.Tile` that the training controller relies on: the shapes and dtypes of every
operation, refusal of bad input with a ``ValueError`` naming the argument *before* anything is
written, capabilities that are true, and pulses and updates that move weights the right way (a
bench wired with its polarity backwards trains away from the target without any error).

Every check is black box (it uses the tile interface only) and takes a zero-argument callable that
returns a fresh tile of any backend::

    from hilctl.testing import check_tile
    check_tile(lambda: backend.open_tile(config))

or, one test per check::

    @pytest.mark.parametrize("check", TILE_CHECKS, ids=lambda c: c.__name__)
    def test_tile_contract(check):
        check(make_tile)

A failed check raises ``AssertionError`` whose message starts with the check's name and says what
was wrong. Checks that need a known state program zeros first, so they also pass on a tile that
is not fresh (a lab's only tile region, reused), as long as ``program_weights`` works.

This module imports only hilctl and numpy (no pytest), so the library stays importable without
test dependencies.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn, TypeVar

import numpy as np
from numpy.typing import NDArray

from hilctl.checkpoints import decode, encode
from hilctl.tile import Capabilities, Tile

__all__ = [
    "PULSES",
    "TILE_CHECKS",
    "UPDATE_LR",
    "TileFactory",
    "check_bad_input_is_refused",
    "check_capabilities_are_honest",
    "check_pulses_move_weights_their_way",
    "check_shapes",
    "check_state_continues",
    "check_tile",
    "check_update_moves_against_gradient",
]

#: Makes a fresh tile; called once per check.
TileFactory = Callable[[], Tile]
Array = NDArray[np.float64]
T = TypeVar("T")

#: Pulses per cell of the polarity check: a few device steps, far from any bound.
PULSES = 5
#: Learning rate of the update check, the same for every tile: ``lr |d x| / dw_min`` asks for
#: 10 pulses on a lab's ``dw_min = 0.01`` and for the whole pulse train (31) on the emulator's
#: default ``dw_min = 0.001``, so every pulsed tile fires pulses.
UPDATE_LR = 0.1
#: Magnitude of the write-verify target of the exact-read check: well inside any device's bounds.
TARGET_SCALE = 0.05
#: How far an exact read may be from a programmed target (float32 storage included).
EXACT_TOL = 1e-6


class _Check:
    """The failing side of one check: every message starts with the check's name."""

    def __init__(self, name: str) -> None:
        self.name = name

    def fail(self, message: str) -> NoReturn:
        raise AssertionError(f"{self.name}: {message}")

    def require(self, condition: bool, message: str) -> None:
        if not condition:
            self.fail(message)

    def call(self, what: str, operation: Callable[[], T]) -> T:
        """``operation()``; a tile that raises on valid input fails the check, saying where."""
        try:
            return operation()
        except Exception as exc:
            raise AssertionError(f"{self.name}: {what} raised {type(exc).__name__}: {exc}") from exc

    def array(self, what: str, value: Any, shape: tuple[int, int]) -> Array:
        """``value`` must be a float64 ndarray of ``shape``."""
        self.require(isinstance(value, np.ndarray),
                     f"{what} returned {type(value).__name__}, not a numpy array")
        self.require(value.shape == shape, f"{what} returned shape {value.shape}, expected {shape}")
        self.require(value.dtype == np.float64, f"{what} returned dtype {value.dtype}, expected float64")
        return np.asarray(value)


def _geometry(check: _Check, tile: Tile) -> tuple[int, int]:
    rows, cols = tile.rows, tile.cols
    for name, value in (("rows", rows), ("cols", cols)):
        check.require(isinstance(value, int) and not isinstance(value, bool),
                      f"{name} is {value!r} of type {type(value).__name__}, not an int")
        check.require(value > 0, f"{name} is {value}, not positive")
    return rows, cols


def _mean_weight(check: _Check, tile: Tile, when: str) -> float:
    weights = check.call(f"read_weights() {when}", tile.read_weights)
    return float(np.mean(weights))


def _program_zeros(check: _Check, tile: Tile) -> None:
    """A known state away from every bound: all weights zero (a device's usual middle)."""
    check.call("program_weights(zeros)", lambda: tile.program_weights(np.zeros((tile.rows, tile.cols))))


def _checkerboard(rows: int, cols: int, scale: float) -> Array:
    """``+scale`` and ``-scale`` alternating: both signs, and a transposed tile does not match."""
    signs = np.where((np.arange(rows)[:, None] + np.arange(cols)[None, :]) % 2 == 0, 1.0, -1.0)
    return scale * signs


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def check_shapes(make_tile: TileFactory) -> None:
    """The tile is a :class:`~hilctl.tile.Tile` with positive int ``rows``/``cols``; ``forward``
    maps (b, cols) to (b, rows) and a 1-D (cols,) input to (1, rows), ``backward`` (b, rows) to
    (b, cols) and (rows,) to (1, cols), ``read_weights`` and ``program_weights`` give (rows, cols),
    all float64 numpy arrays: what the training controller indexes without checking."""
    check = _Check("check_shapes")
    tile = make_tile()
    check.require(isinstance(tile, Tile), f"{type(tile).__name__} does not implement hilctl.tile.Tile")
    rows, cols = _geometry(check, tile)
    batch = 3
    check.array(f"forward(x of shape ({batch}, {cols}))",
                check.call("forward", lambda: tile.forward(np.full((batch, cols), 0.5))), (batch, rows))
    check.array(f"forward(x of shape ({cols},))",
                check.call("forward", lambda: tile.forward(np.full(cols, 0.5))), (1, rows))
    check.array(f"backward(d of shape ({batch}, {rows}))",
                check.call("backward", lambda: tile.backward(np.full((batch, rows), 0.5))), (batch, cols))
    check.array(f"backward(d of shape ({rows},))",
                check.call("backward", lambda: tile.backward(np.full(rows, 0.5))), (1, cols))
    check.array("read_weights()", check.call("read_weights", tile.read_weights), (rows, cols))
    reached = check.call("program_weights", lambda: tile.program_weights(np.zeros((rows, cols))))
    check.array(f"program_weights(target of shape ({rows}, {cols}))", reached, (rows, cols))


def _bad_calls(rows: int, cols: int) -> list[tuple[str, tuple[str, ...], Callable[[Tile], object]]]:
    """``(what, names, call)``: a call the tile must refuse, and the argument names of which its
    message must give one."""
    x, d = np.full((2, cols), 0.5), np.full((2, rows), 0.5)
    x_nan, d_nan = x.copy(), d.copy()
    x_nan[1, cols - 1] = np.nan
    d_nan[0, 0] = np.nan
    target_nan = np.zeros((rows, cols))
    target_nan[rows - 1, 0] = np.nan
    return [
        (f"forward(x of shape (2, {cols + 1}))", ("x",), lambda t: t.forward(np.ones((2, cols + 1)))),
        ("forward(x holding NaN)", ("x",), lambda t: t.forward(x_nan)),
        (f"backward(d of shape (2, {rows + 1}))", ("d",), lambda t: t.backward(np.ones((2, rows + 1)))),
        ("backward(d holding NaN)", ("d",), lambda t: t.backward(d_nan)),
        (f"update(x of shape (2, {cols + 1}), ...)", ("x",),
         lambda t: t.update(np.ones((2, cols + 1)), d, 0.1)),
        (f"update(x, d of shape (2, {rows + 1}), ...)", ("d",),
         lambda t: t.update(x, np.ones((2, rows + 1)), 0.1)),
        ("update(x of batch 3, d of batch 2, ...)", ("x", "d"),
         lambda t: t.update(np.ones((3, cols)), d, 0.1)),
        ("update(x holding NaN, ...)", ("x",), lambda t: t.update(x_nan, d, 0.1)),
        ("update(x, d holding NaN, ...)", ("d",), lambda t: t.update(x, d_nan, 0.1)),
        ("update(x, d, lr=-0.1)", ("lr",), lambda t: t.update(x, d, -0.1)),
        (f"apply_pulses(counts of shape ({rows}, {cols + 1}))", ("counts",),
         lambda t: t.apply_pulses(np.ones((rows, cols + 1), dtype=np.int64))),
        ("apply_pulses(counts of 0.5)", ("counts",), lambda t: t.apply_pulses(np.full((rows, cols), 0.5))),
        (f"program_weights(target of shape ({rows + 1}, {cols}))", ("target",),
         lambda t: t.program_weights(np.zeros((rows + 1, cols)))),
        ("program_weights(target holding NaN)", ("target",), lambda t: t.program_weights(target_nan)),
    ]


def check_bad_input_is_refused(make_tile: TileFactory) -> None:
    """Bad input (a wrong width or shape, mismatched batch sizes, NaN, a negative ``lr``,
    fractional pulse counts) to every operation raises ``ValueError`` whose message names the
    argument as a word (``x``, ``d``, ``lr``, ``counts``, ``target``), and leaves the weights
    unchanged: a refused call must not have sent half its pulses. Compared exactly with the
    weights read before (the emulator reads exactly; a lab tile reads a cell again only after a
    write, so an untouched tile reads back identically); only a tile whose two reads in a row
    differ is compared to within 6 times that read-to-read difference."""
    check = _Check("check_bad_input_is_refused")
    tile = make_tile()
    rows, cols = _geometry(check, tile)
    before = check.call("read_weights()", tile.read_weights)
    noise = float(np.max(np.abs(check.call("read_weights()", tile.read_weights) - before), initial=0.0))
    for what, names, call in _bad_calls(rows, cols):
        try:
            call(tile)
        except ValueError as exc:
            message = str(exc)
            named = any(re.search(rf"(?<![\w.]){re.escape(name)}(?!\w)", message) for name in names)
            check.require(named, f"{what}: the ValueError does not name {' or '.join(names)}: "
                                 f"{message!r}")
        except Exception as exc:
            raise AssertionError(f"check_bad_input_is_refused: {what} raised {type(exc).__name__}, "
                                 f"not ValueError: {exc}") from exc
        else:
            check.fail(f"{what} was accepted; expected ValueError naming {' or '.join(names)}")
        after = check.call(f"read_weights() after {what}", tile.read_weights)
        changed = (not np.array_equal(after, before) if noise == 0.0
                   else not np.allclose(after, before, rtol=0.0, atol=6 * noise))
        if changed:
            moved = np.abs(np.asarray(after) - before)
            cell = tuple(int(i) for i in np.unravel_index(np.argmax(moved), moved.shape))
            check.fail(f"{what} was refused but changed the weights: weight{list(cell)} moved by "
                       f"{moved[cell]:.3g}")


def check_capabilities_are_honest(make_tile: TileFactory) -> None:
    """``capabilities`` is a :class:`~hilctl.tile.Capabilities` of bools; a tile that claims
    ``exact_read`` reads identically twice without a write, and a write-verify of a small target
    (``+-0.05`` in a checkerboard, from zeros) reads back that target to within 1e-6 -- the
    controller skips its own averaging on such tiles. Tiles without ``exact_read`` skip that
    part."""
    check = _Check("check_capabilities_are_honest")
    tile = make_tile()
    rows, cols = _geometry(check, tile)
    caps = tile.capabilities
    check.require(isinstance(caps, Capabilities),
                  f"capabilities is {type(caps).__name__}, not hilctl.tile.Capabilities")
    for field in ("parallel_mvm", "parallel_update", "exact_read"):
        value = getattr(caps, field)
        check.require(isinstance(value, bool), f"capabilities.{field} is {value!r}, not a bool")
    if not caps.exact_read:
        return
    _program_zeros(check, tile)
    first = check.call("read_weights()", tile.read_weights)
    second = check.call("read_weights()", tile.read_weights)
    check.require(np.array_equal(first, second),
                  f"exact_read is claimed but two reads without a write differ by up to "
                  f"{np.max(np.abs(np.asarray(second) - first)):.3g}")
    target = _checkerboard(rows, cols, TARGET_SCALE)
    reached = np.asarray(check.call("program_weights(+-0.05)", lambda: tile.program_weights(target)))
    read = np.asarray(check.call("read_weights() after program_weights", tile.read_weights))
    for what, value in (("program_weights returned", reached), ("read_weights() reads", read)):
        error = float(np.max(np.abs(value - target)))
        check.require(error <= EXACT_TOL,
                      f"exact_read is claimed but after program_weights of a +-{TARGET_SCALE} "
                      f"checkerboard {what} weights up to {error:.3g} away from it "
                      f"(allowed {EXACT_TOL:g})")


def check_pulses_move_weights_their_way(make_tile: TileFactory) -> None:
    """From zeros, ``apply_pulses`` of ``+5`` on every cell raises the mean weight and ``-10``
    then lowers it below zeros' mean: up pulses potentiate (catches a bench whose polarity is
    wired backwards, on which training runs away from its target without any error)."""
    check = _Check("check_pulses_move_weights_their_way")
    tile = make_tile()
    rows, cols = _geometry(check, tile)
    _program_zeros(check, tile)
    start = _mean_weight(check, tile, "after program_weights(zeros)")
    check.call(f"apply_pulses(+{PULSES})",
               lambda: tile.apply_pulses(np.full((rows, cols), PULSES, dtype=np.int64)))
    up = _mean_weight(check, tile, f"after apply_pulses(+{PULSES})")
    check.require(up > start, f"apply_pulses(+{PULSES}) on every cell moved the mean weight from "
                              f"{start:.4g} to {up:.4g}; up pulses must raise it")
    check.call(f"apply_pulses(-{2 * PULSES})",
               lambda: tile.apply_pulses(np.full((rows, cols), -2 * PULSES, dtype=np.int64)))
    down = _mean_weight(check, tile, f"after apply_pulses(-{2 * PULSES})")
    check.require(down < start, f"apply_pulses(+{PULSES}) then apply_pulses(-{2 * PULSES}) moved the "
                                f"mean weight from {start:.4g} to {up:.4g} to {down:.4g}; down pulses "
                                f"must lower it below where it started")


def check_update_moves_against_gradient(make_tile: TileFactory) -> None:
    """``update(x, d, lr=0.1)`` moves the weights against the gradient ``d x^T``: from zeros,
    ``x = d = ones`` (``d x^T > 0``) lowers the mean weight; then, with signs flipped one factor
    at a time, ``d = -ones`` raises it, ``x = -ones`` raises it, and ``x = d = -ones`` lowers it
    (every sign quadrant of a bench's coincidence pulses)."""
    check = _Check("check_update_moves_against_gradient")
    tile = make_tile()
    rows, cols = _geometry(check, tile)
    _program_zeros(check, tile)
    for x_sign, d_sign in ((1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)):
        x, d = np.full((1, cols), x_sign), np.full((1, rows), d_sign)
        what = f"update(x={'' if x_sign > 0 else '-'}ones, d={'' if d_sign > 0 else '-'}ones, lr={UPDATE_LR})"
        before = _mean_weight(check, tile, f"before {what}")
        check.call(what, partial(tile.update, x, d, UPDATE_LR))
        after = _mean_weight(check, tile, f"after {what}")
        gradient = x_sign * d_sign  # sign of every entry of d x^T
        moved = after < before if gradient > 0 else after > before
        check.require(moved, f"{what} moved the mean weight from {before:.4g} to {after:.4g}; with d x^T "
                             f"{'> 0' if gradient > 0 else '< 0'} it must "
                             f"{'fall' if gradient > 0 else 'rise'}")


#: How far a fresh tile's read after ``load_state_dict`` may be from the checkpointed read where
#: reads are not exact (a bench's read noise; weight units).
READ_BACK_TOL = 0.05


def check_state_continues(make_tile: TileFactory) -> None:
    """``state_dict()``, written to a checkpoint file and read back, loaded into a fresh tile
    (``load_state_dict``): the fresh tile reads the weights the first one had; where reads are
    exact, it then continues exactly as the first (the same update gives the same weights, bit
    for bit). What ``hilctl runs resume`` relies on."""
    check = _Check("check_state_continues")
    tile = make_tile()
    rows, cols = _geometry(check, tile)
    _program_zeros(check, tile)
    check.call("program_weights", lambda: tile.program_weights(_checkerboard(rows, cols, TARGET_SCALE)))
    x, d = np.full((1, cols), 0.5), np.full((1, rows), -0.5)
    check.call("update", partial(tile.update, x, d, UPDATE_LR))
    saved_weights = check.call("read_weights", tile.read_weights)
    state = decode(encode(check.call("state_dict", tile.state_dict)))
    exact = tile.capabilities.exact_read
    if exact:
        check.call("update", partial(tile.update, -x, d, UPDATE_LR))
        expected = check.call("read_weights", tile.read_weights)
    other = make_tile()
    check.call("load_state_dict", partial(other.load_state_dict, state))
    loaded = check.call("read_weights() after load_state_dict", other.read_weights)
    tolerance = EXACT_TOL if exact else READ_BACK_TOL
    check.require(bool(np.all(np.abs(loaded - saved_weights) <= tolerance)),
                  f"after load_state_dict the weights differ from the checkpointed ones by up to "
                  f"{np.abs(loaded - saved_weights).max():.3g} (allowed {tolerance:g})")
    if exact:
        check.call("update", partial(other.update, -x, d, UPDATE_LR))
        continued = check.call("read_weights", other.read_weights)
        check.require(np.array_equal(continued, expected),
                      "the tile loaded from the state did not continue exactly as the first: the "
                      "same update gave other weights")


#: Every check, in the order :func:`check_tile` runs them; each takes ``make_tile``.
TILE_CHECKS: tuple[Callable[[TileFactory], None], ...] = (
    check_shapes,
    check_bad_input_is_refused,
    check_capabilities_are_honest,
    check_pulses_move_weights_their_way,
    check_update_moves_against_gradient,
    check_state_continues,
)


def check_tile(make_tile: TileFactory) -> None:
    """Run every check of :data:`TILE_CHECKS`, each on a fresh tile from ``make_tile``.

    Raises ``AssertionError`` listing every failed check (each message names its check and what
    was wrong), so one run shows all a backend has to fix.
    """
    failures: list[str] = []
    for check in TILE_CHECKS:
        try:
            check(make_tile)
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        raise AssertionError(f"{len(failures)} of {len(TILE_CHECKS)} tile checks failed:\n"
                             + "\n".join(failures))
