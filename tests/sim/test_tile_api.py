"""EmulatedTile as a HAL tile: reproducibility and rejection of bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import config, tile

from hilctl.errors import BackendError
from hilctl.tile import Tile
from sim.backend import SimBackend
from sim.tile import EmulatedTile

ROWS, COLS = 4, 6


def _session(seed: int, closed_form: bool = True) -> list[np.ndarray]:
    t = EmulatedTile(config("soft-bounds", ROWS, COLS, seed=seed), closed_form=closed_form)
    rng = np.random.default_rng(100)  # the inputs are the same for every seed
    out = []
    for _ in range(3):
        t.update(rng.uniform(-1, 1, (5, COLS)), rng.uniform(-1, 1, (5, ROWS)), 0.05)
        t.apply_pulses(rng.integers(-20, 20, (ROWS, COLS)))
        out.append(t.forward(rng.uniform(-1, 1, (2, COLS))))
        out.append(t.backward(rng.uniform(-1, 1, (2, ROWS))))
        out.append(t.read_weights())
    return out


@pytest.mark.parametrize("closed_form", [True, False])
def test_same_seed_same_numbers(closed_form: bool) -> None:
    for a, b in zip(_session(1, closed_form), _session(1, closed_form), strict=True):
        np.testing.assert_array_equal(a, b)


def test_different_seed_different_numbers() -> None:
    a, b = _session(1), _session(2)
    assert not np.array_equal(a[-1], b[-1])  # final weights
    assert not np.array_equal(a[0], b[0])  # a forward pass (read noise)


def test_reading_does_not_change_later_updates() -> None:
    """Read noise has its own stream: forward passes in between leave the writes unchanged."""
    weights = []
    for reads in (0, 5):
        t = tile("soft-bounds", ROWS, COLS, seed=3)
        for _ in range(reads):
            t.forward(np.ones(COLS))
        t.update(np.ones(COLS), -np.ones(ROWS), 0.05)
        weights.append(t.read_weights())
    np.testing.assert_array_equal(*weights)


def test_is_a_tile_with_shapes() -> None:
    t = tile("soft-bounds", ROWS, COLS)
    assert isinstance(t, Tile)
    assert t.forward(np.ones(COLS)).shape == (1, ROWS)
    assert t.forward(np.ones((3, COLS))).shape == (3, ROWS)
    assert t.backward(np.ones((2, ROWS))).shape == (2, COLS)


def test_backend_options() -> None:
    cfg = config("soft-bounds", ROWS, COLS)
    open_tile = SimBackend().open_tile
    assert open_tile(cfg, dtype="float64").device_weights().dtype == np.float64
    with pytest.raises(BackendError, match="dtype"):
        open_tile(cfg, dtype="float16")
    with pytest.raises(BackendError, match="colour"):
        open_tile(cfg, colour="red")


# -- bad input: ValueError naming the argument, and nothing written -----------------------------

GOOD_X, GOOD_D = np.ones((2, COLS)), np.ones((2, ROWS))


def _with(array: np.ndarray, index: tuple[int, ...], value: float) -> np.ndarray:
    out = array.astype(np.float64).copy()
    out[index] = value
    return out


BAD_CALLS = {
    "update x shape": (lambda t: t.update(np.ones((2, COLS + 1)), GOOD_D, 0.1), "x"),
    "update d shape": (lambda t: t.update(GOOD_X, np.ones((2, ROWS - 1)), 0.1), "d"),
    "update x 3-d": (lambda t: t.update(np.ones((2, 1, COLS)), GOOD_D, 0.1), "x"),
    "update batch mismatch": (lambda t: t.update(np.ones((3, COLS)), GOOD_D, 0.1),
                              "x and d must have the same batch size"),
    "update x nan": (lambda t: t.update(_with(GOOD_X, (1, 2), np.nan), GOOD_D, 0.1), "x"),
    "update d inf": (lambda t: t.update(GOOD_X, _with(GOOD_D, (0, 0), np.inf), 0.1), "d"),
    "update negative lr": (lambda t: t.update(GOOD_X, GOOD_D, -0.1), "lr"),
    "update nan lr": (lambda t: t.update(GOOD_X, GOOD_D, float("nan")), "lr"),
    "pulses shape": (lambda t: t.apply_pulses(np.ones((ROWS, COLS + 1), int)), "counts"),
    "pulses fractional": (lambda t: t.apply_pulses(np.full((ROWS, COLS), 0.5)), "counts"),
    "pulses nan": (lambda t: t.apply_pulses(_with(np.ones((ROWS, COLS)), (0, 0), np.nan)),
                   "counts"),
    "pulses strings": (lambda t: t.apply_pulses(np.full((ROWS, COLS), "1")), "counts"),
    "program shape": (lambda t: t.program_weights(np.zeros((COLS, ROWS))), "target"),
    "program inf": (lambda t: t.program_weights(_with(np.zeros((ROWS, COLS)), (1, 1), -np.inf)),
                    "target"),
    "forward shape": (lambda t: t.forward(np.ones(COLS + 2)), "x"),
    "forward nan": (lambda t: t.forward(_with(GOOD_X, (0, 1), np.nan)), "x"),
    "backward shape": (lambda t: t.backward(np.ones((1, COLS))), "d"),
}


@pytest.mark.parametrize("name", list(BAD_CALLS))
def test_bad_input_is_rejected_without_writing(name: str) -> None:
    call, argument = BAD_CALLS[name]
    t = tile("soft-bounds", ROWS, COLS, seed=4)
    t.program_weights(np.random.default_rng(0).uniform(-0.1, 0.1, (ROWS, COLS)))
    before = t.device_weights()
    with pytest.raises(ValueError, match=rf"^{argument}\b"):  # the message starts with its name
        call(t)
    np.testing.assert_array_equal(t.device_weights(), before)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 6), batch=st.integers(1, 3))
def test_any_wrong_width_is_rejected(rows: int, cols: int, batch: int) -> None:
    t = tile("constant-step", ROWS, COLS)
    before = t.device_weights()
    if cols != COLS:
        with pytest.raises(ValueError, match=r"^x\b"):
            t.update(np.ones((batch, cols)), np.ones((batch, ROWS)), 0.1)
        with pytest.raises(ValueError, match=r"^x\b"):
            t.forward(np.ones((batch, cols)))
    if rows != ROWS:
        with pytest.raises(ValueError, match=r"^d\b"):
            t.update(np.ones((batch, COLS)), np.ones((batch, rows)), 0.1)
    if (rows, cols) != (ROWS, COLS):
        with pytest.raises(ValueError, match=r"^counts\b"):
            t.apply_pulses(np.ones((rows, cols), dtype=int))
    np.testing.assert_array_equal(t.device_weights(), before)


def test_zero_lr_and_zero_counts_change_nothing() -> None:
    t = tile("soft-bounds", ROWS, COLS, seed=5)
    t.program_weights(np.full((ROWS, COLS), 0.05))
    before = t.device_weights()
    t.update(GOOD_X, GOOD_D, 0.0)
    t.apply_pulses(np.zeros((ROWS, COLS), dtype=int))
    t.apply_pulses(np.zeros((ROWS, COLS)))  # whole-number floats are accepted
    np.testing.assert_array_equal(t.device_weights(), before)


def test_program_weights_clips_to_bounds_and_reference_shifts() -> None:
    t = tile("soft-bounds", ROWS, COLS, seed=6)
    _, b_max = t.device.bounds()
    reached = t.program_weights(np.full((ROWS, COLS), 10.0))
    np.testing.assert_allclose(reached, b_max, rtol=1e-7)
    ref = EmulatedTile(config("soft-bounds", ROWS, COLS, seed=6).model_copy(
        update={"reference": "symmetric-point"}), dtype=np.float64)
    np.testing.assert_allclose(ref.read_weights(), 0.0, atol=1e-15)  # starts at its reference
    np.testing.assert_allclose(ref.device_weights(), ref.symmetric_point(), atol=1e-15)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")
@pytest.mark.parametrize("huge", [np.float64(1e19), np.uint64(2**63 + 5)], ids=["float", "uint64"])
def test_counts_beyond_int64_are_rejected(huge) -> None:
    t = tile("constant-step", ROWS, COLS, exact=True, dw_min=0.01)
    before = t.device_weights()
    try:
        t.apply_pulses(np.full((ROWS, COLS), huge))
    except ValueError as exc:
        assert str(exc).startswith("counts")
        np.testing.assert_array_equal(t.device_weights(), before)
        return
    # accepted: then they must have been applied as the many up pulses they are
    _, b_max = t.device.bounds()
    np.testing.assert_array_equal(t.device_weights(), b_max)
