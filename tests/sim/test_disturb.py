"""Half-select disturb of the emulated chip (``sim/instruments/disturb.py``, ``docs/emulator.md``
section 9): which cells a pulse half-selects and at what voltage, how far they move, the ledger
kept apart from the intended pulses, and the default off leaving the chip as it was."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilctl.config import TileConfig, device_config, no_variation
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.disturb import BIAS_SCHEMES, DisturbSettings, line_fractions
from sim.tile import EmulatedTile

DEVICE = device_config("soft-bounds", **{**no_variation("soft-bounds"), "dw_min": 0.01})
BOUND = 0.6  # soft bounds' default w_max = -w_min
STEP = 0.01


def chip_with(rows: int = 4, cols: int = 5, bias: str = "v/2", **disturb: float) -> EmulatedChip:
    chip = EmulatedChip(ChipConfig(rows=rows, cols=cols, device=DEVICE, read_noise=0.0,
                                   set_threshold=0.8, disturb=DisturbSettings(**disturb)))
    chip.routing.bias = bias
    return chip


def soft_bounds_after(pulses: int) -> float:
    """Soft bounds from 0, noise free: ``|w|`` after ``pulses`` same-sign pulses."""
    return BOUND * (1 - (1 - STEP / BOUND) ** pulses)


@st.composite
def selections(draw: st.DrawFn) -> tuple[tuple[int, int], list[int], list[int]]:
    """An array shape and the rows and columns a pulse drives (a cell, or masks)."""
    rows = draw(st.integers(1, 12))
    cols = draw(st.integers(1, 12))
    driven_rows = draw(st.lists(st.integers(0, rows - 1), min_size=1, max_size=rows, unique=True))
    driven_cols = draw(st.lists(st.integers(0, cols - 1), min_size=1, max_size=cols, unique=True))
    return (rows, cols), driven_rows, driven_cols


@settings(max_examples=200, deadline=None)
@given(selection=selections(), bias=st.sampled_from(["v/2", "v/3"]))
def test_each_cell_sees_its_row_line_minus_its_column_line(selection, bias) -> None:
    """Line voltages as the schemes define them, per unit pulse: driven rows at 1, driven
    columns at 0; ``v/2``: every other line at 1/2; ``v/3``: other rows at 1/3, other columns
    at 2/3. Every cell sees its row's voltage minus its column's."""
    shape, driven_rows, driven_cols = selection
    row_volts = np.full(shape[0], 0.5 if bias == "v/2" else 1 / 3)
    col_volts = np.full(shape[1], 0.5 if bias == "v/2" else 2 / 3)
    row_volts[driven_rows] = 1.0
    col_volts[driven_cols] = 0.0
    expected = row_volts[:, None] - col_volts[None, :]
    got = line_fractions(shape, np.array(driven_rows), np.array(driven_cols), bias)
    np.testing.assert_allclose(got, expected, atol=1e-15)


@settings(max_examples=200, deadline=None)
@given(selection=selections(), bias=st.sampled_from(BIAS_SCHEMES),
       fraction=st.floats(0.0, 1.0))
def test_which_cells_are_half_selected_and_how_many(selection, bias, fraction) -> None:
    """With ``k`` of ``R`` rows and ``m`` of ``C`` columns driven: ``k m`` cells at the full
    pulse; ``k (C - m) + m (R - k)`` half-selected at 1/2, 1/3 or the float fraction, all of the
    pulse's sign; the other ``(R - k)(C - m)`` at 0, or at -1/3 under ``v/3``."""
    (rows, cols), driven_rows, driven_cols = selection
    k, m = len(driven_rows), len(driven_cols)
    got = line_fractions((rows, cols), np.array(driven_rows), np.array(driven_cols), bias, fraction)
    on_row = np.isin(np.arange(rows), driven_rows)[:, None]
    on_col = np.isin(np.arange(cols), driven_cols)[None, :]
    half = {"v/2": 0.5, "v/3": 1 / 3, "float": fraction}[bias]
    assert np.all(got[on_row & on_col] == 1.0) and np.count_nonzero(on_row & on_col) == k * m
    half_selected = got[on_row ^ on_col]
    assert half_selected.size == k * (cols - m) + m * (rows - k)
    np.testing.assert_allclose(half_selected, half)
    rest = got[~on_row & ~on_col]
    assert rest.size == (rows - k) * (cols - m)
    np.testing.assert_allclose(rest, -1 / 3 if bias == "v/3" else 0.0)


#: A pulse amplitude (V) at which every cell the scheme reaches sees at least the 0.8 V threshold.
OVER_THRESHOLD = {"v/2": 2.0, "v/3": 2.7, "float": 2.0}


@settings(max_examples=60, deadline=None)
@given(selection=selections(), bias=st.sampled_from(BIAS_SCHEMES), polarity=st.sampled_from([-1, 1]),
       count=st.integers(1, 3))
def test_the_chip_moves_the_cells_of_the_driven_lines_as_the_scheme_says(selection, bias, polarity,
                                                                          count) -> None:
    """A cell pulse or a mask pulse (every crossing of the driven lines) through ``chip.pulse``,
    loud enough that every reached cell switches: the targets are the pulse ledger; every other
    cell took ``count`` device pulses of the sign of its row line minus its column line (float:
    the pulse's sign on a driven line, nothing elsewhere), and only those, in the disturb
    ledger, with that voltage."""
    (rows, cols), driven_rows, driven_cols = selection
    chip = chip_with(rows=rows, cols=cols, bias=bias, rate=1e-6, float_fraction=0.5)
    volts = polarity * OVER_THRESHOLD[bias]
    grid = np.meshgrid(driven_rows, driven_cols, indexing="ij")
    targets = (grid[0].reshape(-1), grid[1].reshape(-1))
    assert chip.pulse(targets, polarity, count, amplitude=abs(volts), width=1e-6)
    on_row = np.isin(np.arange(rows), driven_rows)[:, None]
    on_col = np.isin(np.arange(cols), driven_cols)[None, :]
    if bias == "float":
        seen = np.where(on_row ^ on_col, 0.5, 0.0) + np.where(on_row & on_col, 1.0, 0.0)
    else:
        third = bias == "v/3"
        row_line = np.where(on_row, 1.0, 1 / 3 if third else 0.5)
        col_line = np.where(on_col, 0.0, 2 / 3 if third else 0.5)
        seen = row_line - col_line
    assert chip.pulse_ledger() == {(int(r), int(c)): polarity * count for r, c in zip(*targets, strict=True)}
    expected = {(r, c): int(np.sign(polarity * seen[r, c])) * count
                for r in range(rows) for c in range(cols)
                if seen[r, c] != 0 and not (on_row[r, 0] and on_col[0, c])}
    assert chip.disturb_ledger() == expected
    for entry in chip.disturbs:
        assert entry.voltage == pytest.approx(volts * seen[entry.row, entry.col])
    assert np.array_equal(np.sign(chip.weights()), np.sign(polarity * seen))


def test_an_unknown_bias_scheme_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="v/2, v/3, float"):
        line_fractions((2, 2), np.array([0]), np.array([0]), "ground")


@pytest.mark.parametrize("bias", BIAS_SCHEMES)
def test_off_by_default_the_chip_applies_exactly_the_intended_pulses(bias) -> None:
    """Default settings (``rate = 0``), any scheme: cell and mask pulses leave the chip bit for
    bit where the same pulses applied straight to the emulated tile leave it, and nothing is
    recorded as disturb."""
    device = device_config("soft-bounds")  # with every variation and the write noise
    chip = EmulatedChip(ChipConfig(rows=5, cols=6, device=device, seed=3))
    chip.routing.bias = bias
    tile = EmulatedTile(TileConfig(rows=5, cols=6, device=device, seed=3), dtype=np.float64)
    masks = np.ix_([0, 2, 4], [1, 5])
    for polarity, count in ((1, 4), (-1, 7), (1, 1)):
        chip.pulse((np.array([1]), np.array([3])), polarity, count, 1.5, 1e-6)
        counts = np.zeros((5, 6), dtype=np.int64)
        counts[1, 3] = polarity * count
        tile.apply_pulses(counts)
        rows, cols = (a.reshape(-1) for a in np.broadcast_arrays(*masks))
        chip.pulse((rows, cols), polarity, 1, 1.5, 1e-6)
        counts = np.zeros((5, 6), dtype=np.int64)
        counts[masks] = polarity
        tile.apply_pulses(counts)
    assert np.array_equal(chip.weights(), tile.device_weights())
    assert chip.disturbs == [] and chip.disturb_ledger() == {} and not chip.disturb_shift().any()


def test_half_selected_cells_at_or_above_the_threshold_switch_like_the_target() -> None:
    """``v/2`` at 2 V: the cell's row and column neighbours see 1 V >= 0.8 V and take every
    pulse; the rest see 0 V and stay put."""
    chip = chip_with(bias="v/2", rate=1e-6)
    assert chip.pulse((np.array([1]), np.array([2])), +1, 3, amplitude=2.0, width=1e-6)
    w = chip.weights()
    neighbours = np.zeros(chip.shape, dtype=bool)
    neighbours[1, :] = neighbours[:, 2] = True
    neighbours[1, 2] = False
    np.testing.assert_allclose(w[neighbours], soft_bounds_after(3), rtol=1e-12)
    assert w[1, 2] == pytest.approx(soft_bounds_after(3), rel=1e-12)
    untouched = ~neighbours
    untouched[1, 2] = False
    assert not w[untouched].any()
    assert chip.pulse_ledger() == {(1, 2): 3}  # the intended pulse only
    assert chip.disturb_ledger() == {(r, c): 3 for r, c in zip(*np.nonzero(neighbours), strict=True)}
    assert {e.voltage for e in chip.disturbs} == {1.0}


def test_v3_moves_the_unselected_block_against_the_pulse() -> None:
    """``v/3`` at 2.7 V (every other cell at 0.9 V >= 0.8 V): a down pulse on cell (0, 0) moves
    its row and column down (+V/3 of a negative pulse) and every other cell up (-V/3)."""
    chip = chip_with(rows=3, cols=3, bias="v/3", rate=1e-6)
    chip.pulse((np.array([0]), np.array([0])), -1, 2, amplitude=2.7, width=1e-6)
    w = chip.weights()
    moved = soft_bounds_after(2)
    np.testing.assert_allclose(w[0, :], -moved, rtol=1e-12)
    np.testing.assert_allclose(w[:, 0], -moved, rtol=1e-12)
    np.testing.assert_allclose(w[1:, 1:], moved, rtol=1e-12)
    voltages = {(e.row, e.col): e.voltage for e in chip.disturbs}
    assert voltages[(0, 1)] == voltages[(2, 0)] == pytest.approx(-0.9)
    assert voltages[(1, 1)] == voltages[(2, 2)] == pytest.approx(0.9)


@pytest.mark.parametrize(("bias", "fraction"), [("v/2", 0.5), ("v/3", 1 / 3), ("float", 0.4)])
def test_sub_threshold_cells_take_a_pulse_with_the_probability_of_the_model(bias, fraction) -> None:
    """One cell pulsed 2000 times (count 50, 40 events) at 1.5 V on a 6 x 6 chip, rate 0.3,
    exponent 4: each half-selected cell takes each pulse with ``p = 0.3 (f 1.5 / 0.8)^4``. The
    disturb pulses of the 10 half-selected cells are Binomial(10 * 2000, p): the count is within
    5 standard deviations of its mean. Under ``v/3`` the 25 other cells see -0.5 V with the
    same ``p``. Seeded (chip seed 0)."""
    chip = EmulatedChip(ChipConfig(rows=6, cols=6, device=DEVICE, read_noise=0.0,
                                   disturb=DisturbSettings(rate=0.3, exponent=4.0,
                                                           float_fraction=0.4)))
    chip.routing.bias = bias
    for _ in range(40):
        chip.pulse((np.array([2]), np.array([3])), +1, 50, amplitude=1.5, width=1e-6)
    p = 0.3 * (fraction * 1.5 / 0.8) ** 4
    ledger = chip.disturb_ledger()
    on_lines = [(r, c) for r in range(6) for c in range(6) if (r == 2) != (c == 3)]
    rest = [(r, c) for r in range(6) for c in range(6) if r != 2 and c != 3]
    trials = len(on_lines) * 2000
    taken = sum(ledger.get(cell, 0) for cell in on_lines)
    assert abs(taken - trials * p) < 5 * np.sqrt(trials * p * (1 - p))
    others = sum(ledger.get(cell, 0) for cell in rest)
    if bias == "v/3":
        trials = len(rest) * 2000
        assert abs(-others - trials * p) < 5 * np.sqrt(trials * p * (1 - p))
    else:
        assert others == 0
    assert chip.pulse_ledger() == {(2, 3): 2000}


def test_mask_pulses_half_select_the_driven_lines_and_the_ledgers_stay_apart() -> None:
    """A coincidence pulse on rows {0, 2} x columns {1, 3} of a 4 x 5 chip under ``v/2`` at
    2 V: the four crossings take the intended pulse (the pulse ledger), the other cells of
    rows 0, 2 and columns 1, 3 the disturb (their own ledger, voltage 1 V), and
    ``disturb_shift`` is exactly what disturb did to each cell's weight."""
    chip = chip_with(rows=4, cols=5, bias="v/2", rate=1e-6)
    rows, cols = np.array([0, 0, 2, 2]), np.array([1, 3, 1, 3])
    chip.pulse((rows, cols), -1, 2, amplitude=2.0, width=1e-6)
    assert chip.pulse_ledger() == {(0, 1): -2, (0, 3): -2, (2, 1): -2, (2, 3): -2}
    half = {(r, c) for r in range(4) for c in range(5) if (r in (0, 2)) != (c in (1, 3))}
    assert chip.disturb_ledger() == {cell: -2 for cell in half}
    assert all(e.voltage == -1.0 for e in chip.disturbs)
    w, shift = chip.weights(), chip.disturb_shift()
    for r in range(4):
        for c in range(5):
            assert shift[r, c] == (w[r, c] if (r, c) in half else 0.0)
    assert w[0, 1] == pytest.approx(-soft_bounds_after(2), rel=1e-12)


def test_a_pulse_too_weak_or_too_short_for_its_target_disturbs_nothing() -> None:
    chip = chip_with(bias="v/3", rate=1.0, exponent=1.0)
    assert not chip.pulse((np.array([0]), np.array([0])), +1, 5, amplitude=0.7, width=1e-6)
    assert not chip.pulse((np.array([0]), np.array([0])), +1, 5, amplitude=2.0, width=1e-9)
    assert chip.disturbs == [] and not chip.weights().any()
