"""The lab tile's planning (reads, pulses, write-verify, pulse trains) on an emulated bench.

The bench here is the emulated chip reached directly (no instruments), so these tests check the
lab tile's own logic; the instrument paths are tested with the simulated instruments.
"""

from __future__ import annotations

import numpy as np
import pytest

from drivers.lab_tile import LabTile
from hilctl.config import UpdateConfig, device_config, no_variation
from protocols.station import MappingSection, TileRegion
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.mvm import MvmSettings


class DirectAccess:
    """A bench whose instruments are the chip's own methods (counts every call)."""

    def __init__(self, chip: EmulatedChip, parallel_update: bool, read_voltage: float = 0.1,
                 mvm: MvmSettings | None = None):
        self.chip, self._parallel, self._voltage = chip, parallel_update, read_voltage
        self.mvm_settings = mvm
        self.mask_pulses = 0
        self.cell_pulses = 0
        self.reads = 0
        self.mvms = 0

    @property
    def parallel_update(self) -> bool:
        return self._parallel

    @property
    def parallel_mvm(self) -> bool:
        return self.mvm_settings is not None

    def mvm(self, voltages, drive, rows, cols):
        assert self.mvm_settings is not None and np.abs(voltages).max() <= self._voltage
        self.mvms += voltages.shape[0]
        driven, sensed = (rows, cols) if drive == "rows" else (cols, rows)
        return self.chip.mvm(drive == "rows", driven, sensed, voltages, integration_time=1e-6,
                             adc_range=1.0, settings=self.mvm_settings)

    @property
    def read_voltage(self) -> float:
        return self._voltage

    def pulse_cells(self, rows, cols, polarity, counts) -> None:
        for count in np.unique(counts):
            chosen = counts == count
            self.chip.pulse((rows[chosen], cols[chosen]), polarity, int(count), 1.5, 1e-6)
        self.cell_pulses += int(counts.sum())

    def pulse_masks(self, rows, cols, polarity) -> None:
        r, c = np.meshgrid(rows, cols, indexing="ij")
        self.chip.pulse((r.ravel(), c.ravel()), polarity, 1, 1.5, 1e-6)
        self.mask_pulses += 1

    def pulse_mask_train(self, slots) -> None:
        for rows, cols, polarity in slots:
            self.pulse_masks(rows, cols, polarity)

    def read_cells(self, rows, cols):
        self.reads += rows.size
        return self.chip.current((rows, cols), self._voltage)


MAPPING = MappingSection(g_ref=50e-6, g_scale=50e-6, dw_min=0.01)


def bench(parallel: bool, noise: float = 0.0, **device) -> tuple[EmulatedChip, DirectAccess]:
    values = {**no_variation("soft-bounds"), "dw_min": 0.01, **device}
    chip = EmulatedChip(ChipConfig(rows=6, cols=8, device=device_config("soft-bounds", **values),
                                   g_ref=MAPPING.g_ref, g_scale=MAPPING.g_scale,
                                   read_noise=noise))
    return chip, DirectAccess(chip, parallel)


REGION = TileRegion(name="t", row=2, col=1, rows=3, cols=5)


def test_read_weights_maps_current_to_weight_in_the_region() -> None:
    chip, access = bench(parallel=False)
    chip.pulse((np.array([2, 4]), np.array([1, 5])), +1, 7, 1.5, 1e-6)
    tile = LabTile(REGION, access, MAPPING, UpdateConfig())
    expected = chip.weights()[2:5, 1:6]
    np.testing.assert_allclose(tile.read_weights(), expected, atol=1e-12)
    assert tile.read_weights()[0, 0] > 0 and tile.read_weights()[2, 4] > 0


def test_apply_pulses_reaches_exactly_the_region_cells() -> None:
    chip, access = bench(parallel=False)
    tile = LabTile(REGION, access, MAPPING, UpdateConfig())
    counts = np.zeros((3, 5), dtype=int)
    counts[0, 0], counts[2, 4], counts[1, 2] = 4, -3, 2
    tile.apply_pulses(counts)
    assert chip.pulse_ledger() == {(2, 1): 4, (4, 5): -3, (3, 3): 2}


@pytest.mark.parametrize("parallel", [True, False], ids=["masks", "cell-by-cell"])
def test_update_follows_the_gradient_sign_on_every_path(parallel: bool) -> None:
    """Many updates with a fixed x and d: the weights move along -d x^T (cell signs), and the
    parallel path uses coincidence masks while the other pulses cells."""
    _chip, access = bench(parallel=parallel)
    tile = LabTile(REGION, access, MAPPING, UpdateConfig(), seed=3)
    x = np.array([1.0, -0.5, 0.8, -1.0, 0.3])
    d = np.array([0.5, -1.0, 0.2])
    for _ in range(200):
        tile.update(x, d, 0.01)
    change = tile.read_weights()
    wanted = -np.outer(d, x)
    assert np.all(np.sign(change) == np.sign(wanted))
    assert (access.mask_pulses > 0) == parallel and (access.cell_pulses > 0) != parallel


def test_masks_and_cells_give_the_same_mean_change() -> None:
    """The two paths apply the same trains: with no noise, after 400 updates the weights agree
    to within the randomness of the trains (5% of the mean |change|, measured 1-2%)."""
    results = []
    for parallel in (True, False):
        _chip, access = bench(parallel=parallel)
        tile = LabTile(REGION, access, MAPPING, UpdateConfig(), seed=5)
        rng = np.random.default_rng(0)
        for _ in range(400):
            tile.update(rng.uniform(-1, 1, 5), rng.uniform(-0.1, 0.1, 3) + 0.05, 0.01)
        results.append(tile.read_weights())
    assert np.abs(results[0] - results[1]).mean() < 0.05 * np.abs(results[1]).mean() + 0.01


def test_program_weights_writes_and_verifies_within_tolerance() -> None:
    chip, access = bench(parallel=False)
    tile = LabTile(REGION, access, MAPPING, UpdateConfig())
    target = np.random.default_rng(1).uniform(-0.3, 0.3, (3, 5))
    reached = tile.program_weights(target, tol=0.01)
    assert np.abs(reached - target).max() <= 0.01
    np.testing.assert_allclose(reached, chip.weights()[2:5, 1:6], atol=1e-12)


def test_a_cell_is_read_again_only_after_a_write_touched_it() -> None:
    _chip, access = bench(parallel=False, noise=1e-9)
    tile = LabTile(REGION, access, MAPPING, UpdateConfig())
    first = tile.read_weights()
    assert access.reads == 15
    np.testing.assert_array_equal(first, tile.read_weights())  # no new read: same noise
    assert access.reads == 15
    counts = np.zeros((3, 5), dtype=int)
    counts[1, 3] = 2
    tile.apply_pulses(counts)
    second = tile.read_weights()
    assert access.reads == 16
    changed = second != first
    assert changed[1, 3] and changed.sum() == 1


def test_a_one_hot_forward_reads_one_column() -> None:
    """Tiki-Taka reads a column of the fast tile with a one-hot input: only that column's
    cells are read, and the result is that column of the weights."""
    _chip, access = bench(parallel=False)
    tile = LabTile(REGION, access, MAPPING, UpdateConfig())
    tile.apply_pulses(np.arange(15).reshape(3, 5) % 4)
    column = tile.forward(np.eye(5)[2])
    assert access.reads == 3
    np.testing.assert_allclose(column[0], tile.read_weights()[:, 2], atol=1e-15)


DIFFERENTIAL = MAPPING.model_copy(update={"kind": "differential"})
PAIRS = TileRegion(name="pairs", row=1, col=0, rows=2, cols=4)  # chip columns 0..7


def test_differential_pairs_read_plus_minus_and_pulse_only_upwards() -> None:
    chip, access = bench(parallel=False)
    tile = LabTile(PAIRS, access, DIFFERENTIAL, UpdateConfig())
    counts = np.zeros((2, 4), dtype=int)
    counts[0, 1], counts[1, 3] = 5, -4
    tile.apply_pulses(counts)
    # weight (0, 1): plus cell (1, 2) up 5; weight (1, 3): minus cell (2, 7) up 4
    assert chip.pulse_ledger() == {(1, 2): 5, (2, 7): 4}
    w = chip.weights()
    expected = w[1:3, 0:8:2] - w[1:3, 1:8:2]
    np.testing.assert_allclose(tile.read_weights(), expected, atol=1e-12)
    assert tile.read_weights()[0, 1] > 0 > tile.read_weights()[1, 3]


@pytest.mark.parametrize("parallel", [True, False], ids=["masks", "cell-by-cell"])
def test_differential_update_follows_the_gradient_sign(parallel: bool) -> None:
    chip, access = bench(parallel=parallel)
    tile = LabTile(PAIRS, access, DIFFERENTIAL, UpdateConfig(), seed=2)
    x, d = np.array([1.0, -0.6, 0.4, -1.0]), np.array([0.7, -0.5])
    for _ in range(150):
        tile.update(x, d, 0.01)
    assert np.all(np.sign(tile.read_weights()) == np.sign(-np.outer(d, x)))
    assert all(count > 0 for count in chip.pulse_ledger().values())  # only up pulses on the chip


def test_differential_program_weights_reaches_negative_and_positive_targets() -> None:
    _chip, access = bench(parallel=False)
    tile = LabTile(PAIRS, access, DIFFERENTIAL, UpdateConfig())
    target = np.array([[0.2, -0.2, 0.05, 0.0], [-0.1, 0.15, -0.3, 0.1]])
    np.testing.assert_allclose(tile.program_weights(target, tol=0.01), target, atol=0.01)
