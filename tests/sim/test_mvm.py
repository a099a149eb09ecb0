"""The simulated board's analog MVM (sim/instruments/mvm.py) against its equations: the
G-weighted sums, the ADC's step and saturation, the read noise's scaling with the integration
time, and the first-order IR drop against an exact nodal solution of a small crossbar."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from protocols.board import Capability
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.mvm import MvmSettings, adc, analog_mvm, ir_drop_currents
from sim.instruments.station import SimStationSpec, SimulatedStation

EXACT = MvmSettings(adc_bits=24)  # a step of 2**-23 of the range: far below every check here


def _mvm(g, v, settings=EXACT, noise=0.0, time=1e-6, adc_range=1.0, seed=0):
    n_d, n_s = g.shape
    return analog_mvm(g, v, integration_time=time, adc_range=adc_range, read_noise=noise,
                      settings=settings, rng=np.random.default_rng(seed),
                      driven_positions=np.arange(n_d), sensed_positions=np.arange(n_s))


def test_sensed_currents_are_the_conductance_weighted_sums() -> None:
    rng = np.random.default_rng(1)
    g = rng.uniform(10e-6, 100e-6, (5, 3))
    v = rng.uniform(-0.2, 0.2, (4, 5))
    step = 1.0 / 2**23
    np.testing.assert_allclose(_mvm(g, v), v @ g, rtol=0, atol=step / 2)


def test_adc_levels_step_and_saturation() -> None:
    """Levels are multiples of range / 2**(bits-1); rounding is to the nearest level; beyond
    +-range the ADC reads +-range."""
    step = 1e-3 / 2**3  # 4 bits, range 1 mA
    currents = np.array([0.0, 0.49 * step, 0.51 * step, -1.49 * step, 2e-3, -5e-3, 1e-3])
    np.testing.assert_array_equal(adc(currents, 1e-3, 4) / step, [0, 0, 1, -1, 8, -8, 8])
    fine = np.random.default_rng(2).uniform(-1e-3, 1e-3, 1000)
    read = adc(fine, 1e-3, 4)
    assert np.allclose(read / step, np.rint(read / step)) and np.abs(read - fine).max() <= step / 2


def test_saturated_products_read_the_range() -> None:
    g = np.full((4, 2), 100e-6)
    v = np.full((1, 4), 0.1)  # 40 uA per sensed line
    np.testing.assert_array_equal(_mvm(g, v, adc_range=10e-6), [[10e-6, 10e-6]])
    np.testing.assert_array_equal(_mvm(g, -v, adc_range=10e-6), [[-10e-6, -10e-6]])


@pytest.mark.parametrize("time", [1e-6, 4e-6, 0.25e-6])
def test_read_noise_scales_with_one_over_the_root_of_the_integration_time(time: float) -> None:
    """sigma = read_noise * sqrt(noise_time / time). 20,000 draws: the sample std's relative
    standard error is 1/sqrt(2 n) = 0.5%, so a 3% bound is six standard errors; the mean's
    bound is five standard errors of the mean."""
    g = np.full((3, 4), 50e-6)
    v = np.zeros((5000, 3))
    draws = _mvm(g, v, noise=1e-9, time=time, adc_range=1e-6)
    sigma = 1e-9 * np.sqrt(1e-6 / time)
    assert abs(draws.std() / sigma - 1) < 0.03
    assert abs(draws.mean()) < 5 * sigma / np.sqrt(draws.size)


def test_ir_drop_of_one_driven_line_and_two_sensed_lines_is_its_equation() -> None:
    """Row 0 driven at V, columns 0 and 1 sensed; cell currents I0 = g V. The row's voltage
    at column 0 has dropped by r (I0_0 + I0_1) (both currents cross the first segment), at
    column 1 by r (I0_0 + 2 I0_1); each column's rises by r I0 at row 0 (one segment)."""
    r, volts = 2.0, 0.1
    g0, g1 = 100e-6, 40e-6
    i0, i1 = g0 * volts, g1 * volts
    cell0 = g0 * (volts - r * (i0 + i1) - r * i0)
    cell1 = g1 * (volts - r * (i0 + 2 * i1) - r * i1)
    cells = ir_drop_currents(np.array([[g0, g1]]), np.array([[volts]]), r, np.array([0]),
                             np.array([0, 1]))
    np.testing.assert_allclose(cells[0, 0], [cell0, cell1], rtol=1e-12)


def _exact_one_by_two(g0: float, g1: float, r: float, volts: float) -> np.ndarray:
    """Nodal analysis of the same 1 x 2 crossbar: row nodes A (at column 0) and B, column
    nodes a (column 0 at row 0) and b; each wire segment a conductance 1/r, the sense
    amplifiers at 0 V. Returns the currents the two columns deliver."""
    w = 1.0 / r
    # unknowns A, B, a, b: Kirchhoff's current law at each node
    m = np.array([[2 * w + g0, -w, -g0, 0.0],
                  [-w, w + g1, 0.0, -g1],
                  [-g0, 0.0, g0 + w, 0.0],
                  [0.0, -g1, 0.0, g1 + w]])
    a_, b_ = np.linalg.solve(m, [w * volts, 0.0, 0.0, 0.0])[2:]
    return np.array([w * a_, w * b_])


def test_first_order_ir_drop_is_close_to_the_exact_circuit() -> None:
    """With r G = 2e-3 the drops are ~0.5% of the current; the first-order model leaves an
    error of second order, (r G)^2 ~ 1e-5 relative, far below the drop it corrects."""
    g0, g1, r, volts = 100e-6, 40e-6, 20.0, 0.1
    exact = _exact_one_by_two(g0, g1, r, volts)
    ideal = np.array([g0, g1]) * volts
    first = ir_drop_currents(np.array([[g0, g1]]), np.array([[volts]]), r, np.array([0]),
                             np.array([0, 1]))[0, 0]
    assert np.all(np.abs(ideal - exact) > 1e-3 * exact)  # the drop is there
    assert np.all(np.abs(first - exact) < 0.01 * np.abs(ideal - exact))


def test_ir_drop_grows_with_distance_from_the_drivers() -> None:
    """Equal cells: the sensed line farthest from the row drivers collects the least."""
    g = np.full((8, 8), 100e-6)
    out = _mvm(g, np.full((1, 8), 0.1), MvmSettings(adc_bits=24, wire_resistance=1.0), adc_range=1e-4)
    assert np.all(np.diff(out[0]) < 0) and out[0, 0] < 8 * 100e-6 * 0.1


def test_chip_mvm_drives_rows_or_columns_of_its_conductances() -> None:
    chip = EmulatedChip(ChipConfig(rows=6, cols=5, read_noise=0.0, seed=3))
    chip.pulse((np.array([1, 2, 4]), np.array([0, 3, 4])), +1, 20, 1.5, 1e-6)
    g = chip.conductance()
    rows, cols = np.array([1, 2, 4]), np.array([0, 3, 4])
    v = np.random.default_rng(4).uniform(-0.1, 0.1, (3, 3))
    step = 1.0 / 2**23
    by_rows = chip.mvm(True, rows, cols, v, integration_time=1e-6, adc_range=1.0, settings=EXACT)
    np.testing.assert_allclose(by_rows, v @ g[np.ix_(rows, cols)], atol=step)
    by_cols = chip.mvm(False, cols, rows, v, integration_time=1e-6, adc_range=1.0, settings=EXACT)
    np.testing.assert_allclose(by_cols, v @ g[np.ix_(rows, cols)].T, atol=step)


@pytest.mark.parametrize(("section", "offered", "protocol"), [
    ({}, True, 2), ({"enabled": False}, False, 2), ({"protocol": 1}, False, 1)])
def test_a_simulated_station_sets_up_its_board_mvm(section, offered: bool, protocol: int) -> None:
    spec = SimStationSpec.model_validate({"tiles": [{"name": "t", "rows": 2, "cols": 2}],
                                          "mvm": {"adc_bits": 10, **section}})
    with SimulatedStation(spec) as station:
        board = station.board
        assert board is not None and board.protocol == protocol
        assert (Capability.ANALOG_MVM in board.capabilities) == offered
        assert board.mvm_settings.adc_bits == 10


@pytest.mark.parametrize(("key", "value"), [("protocol", 3), ("adc_bits", 1), ("enabled", "yes"),
                                            ("wire_resistance", -1.0), ("noise_time", 0.0)])
def test_bad_mvm_settings_of_a_simulated_station_name_the_field(key: str, value: object) -> None:
    with pytest.raises(ValidationError, match=f"mvm.{key}"):
        SimStationSpec.model_validate({"tiles": [{"name": "t", "rows": 2, "cols": 2}],
                                       "mvm": {key: value}})
