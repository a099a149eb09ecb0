"""The emulated chip behind the simulated instruments: pulses, reads, ledger, thresholds."""

from __future__ import annotations

import numpy as np
import pytest

from hilctl.config import device_config, no_variation
from sim.instruments.chip import ChipConfig, EmulatedChip, all_cells


def quiet_chip(**values: float) -> EmulatedChip:
    device = device_config("soft-bounds", **{**no_variation("soft-bounds"), "dw_min": 0.01})
    return EmulatedChip(ChipConfig(rows=3, cols=4, device=device, read_noise=0.0, **values))


def test_a_pulse_moves_one_cell_by_the_device_step_and_is_in_the_ledger() -> None:
    chip = quiet_chip()
    cell = (np.array([1]), np.array([2]))
    assert chip.pulse(cell, +1, 3, amplitude=1.5, width=1e-6)
    w = chip.weights()
    # soft bounds from 0, bound 0.6, step 0.01: three pulses give 0.6 (1 - (1 - 0.01/0.6)**3)
    assert w[1, 2] == pytest.approx(0.6 * (1 - (1 - 0.01 / 0.6) ** 3), rel=1e-12)
    assert np.count_nonzero(w) == 1
    assert chip.pulse_ledger() == {(1, 2): 3}


def test_pulses_below_threshold_or_too_short_do_nothing() -> None:
    chip = quiet_chip(set_threshold=1.0, min_width=1e-7)
    cell = (np.array([0]), np.array([0]))
    assert not chip.pulse(cell, +1, 5, amplitude=0.9, width=1e-6)
    assert not chip.pulse(cell, -1, 5, amplitude=2.0, width=1e-8)
    assert not chip.weights().any() and chip.pulse_ledger() == {}


def test_read_current_is_conductance_times_voltage() -> None:
    chip = quiet_chip(g_ref=40e-6, g_scale=20e-6)
    chip.pulse((np.array([2]), np.array([3])), -1, 10, amplitude=1.5, width=1e-6)
    currents = chip.current(all_cells(chip.shape), 0.2).reshape(chip.shape)
    np.testing.assert_allclose(currents, (40e-6 + 20e-6 * chip.weights()) * 0.2, rtol=1e-12)
    assert currents[2, 3] < 40e-6 * 0.2  # down pulses lowered that cell's conductance


def test_read_noise_has_the_configured_spread() -> None:
    """20,000 reads of one cell: the sample std is within 5 standard errors (std/sqrt(2n)) of
    the configured noise."""
    chip = EmulatedChip(ChipConfig(rows=1, cols=1, read_noise=2e-9))
    cell = (np.zeros(20_000, dtype=np.intp), np.zeros(20_000, dtype=np.intp))
    spread = chip.current(cell, 0.1).std()
    assert abs(spread - 2e-9) < 5 * 2e-9 / np.sqrt(2 * 20_000)


def test_bad_polarity_is_refused() -> None:
    with pytest.raises(ValueError, match="polarity"):
        quiet_chip().pulse((np.array([0]), np.array([0])), 0, 1, 1.5, 1e-6)
