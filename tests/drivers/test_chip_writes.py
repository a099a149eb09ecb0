"""The lab tiles' read cache, chip-wide (drivers/chip_writes.py): which cells a write may have
moved, per the station's ``[read] refresh``, and a tile that reads again exactly those, so that
half-select disturb from another tile's pulses is seen where the station says it happens."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.backend import LabBackend
from drivers.chip_writes import ChipWrites
from drivers.lab_tile import LabTile
from hilctl.config import TileConfig, UpdateConfig, device_config, no_variation
from protocols.station import MappingSection, TileRegion
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.disturb import DisturbSettings
from sim.instruments.station import SimStationSpec, SimulatedStation

ROWS, COLS = 6, 8
LINES = st.lists(st.integers(0, ROWS - 1), min_size=1, max_size=3).map(np.array)
WRITES = st.lists(st.tuples(LINES, st.lists(st.integers(0, COLS - 1), min_size=1,
                                             max_size=3).map(np.array)), max_size=6)


@settings(max_examples=60, deadline=None)
@given(before=WRITES, after=WRITES)
def test_a_cell_has_moved_as_its_refresh_says(before, after) -> None:
    """Cells read after the writes ``before``: a write ``after`` moved, under "lines", exactly
    the cells on a row or column it drove; under "all", every cell once any write came; under
    "written", none (the writing tile marks its own targets)."""
    logs = {refresh: ChipWrites(ROWS, COLS, refresh) for refresh in ("written", "lines", "all")}
    rows, cols = np.arange(ROWS), np.arange(COLS)
    for log in logs.values():
        for r, c in before:
            log.record(r, c)
    read_at = np.full((ROWS, COLS), logs["lines"].count)
    driven = np.zeros((ROWS, COLS), dtype=bool)
    for log in logs.values():
        for r, c in after:
            log.record(r, c)
    for r, c in after:
        driven[r, :] = True
        driven[:, c] = True
    assert np.array_equal(logs["lines"].moved(rows, cols, read_at), driven)
    assert np.array_equal(logs["all"].moved(rows, cols, read_at),
                          np.full((ROWS, COLS), bool(after)))
    assert not logs["written"].moved(rows, cols, read_at).any()


class ChipAccess:
    """A bench whose instruments are the chip's own methods; counts the cells read."""

    parallel_update = True
    parallel_mvm = False
    read_voltage = 0.1

    def __init__(self, chip: EmulatedChip) -> None:
        self.chip, self.reads = chip, 0

    def pulse_cells(self, rows, cols, polarity, counts) -> None:
        for row, col, count in zip(rows, cols, counts, strict=True):
            self.chip.pulse((np.array([row]), np.array([col])), polarity, int(count), 1.5, 1e-6)

    def pulse_masks(self, rows, cols, polarity) -> None:
        r, c = np.meshgrid(rows, cols, indexing="ij")
        self.chip.pulse((r.ravel(), c.ravel()), polarity, 1, 1.5, 1e-6)

    def pulse_mask_train(self, slots) -> None:
        for rows, cols, polarity in slots:
            self.pulse_masks(rows, cols, polarity)

    def read_cells(self, rows, cols):
        self.reads += rows.size
        return self.chip.current((rows, cols), self.read_voltage)

    def mvm(self, voltages, drive, rows, cols):
        raise AssertionError("no MVM here")


def two_tiles(refresh: str) -> tuple[EmulatedChip, ChipAccess, LabTile, LabTile]:
    """Tiles A (rows 0-2) and B (rows 3-5) of one 6 x 8 chip, sharing its columns, whose
    half-selected cells take every pulse (disturb rate 1 at the threshold, exponent 1: a V/2
    pulse of 1.5 V moves a neighbour with probability 0.75/0.8); no read noise."""
    values = {**no_variation("soft-bounds"), "dw_min": 0.01}
    chip = EmulatedChip(ChipConfig(rows=ROWS, cols=COLS, read_noise=0.0,
                                   device=device_config("soft-bounds", **values),
                                   disturb=DisturbSettings(rate=1.0, exponent=1.0)))
    access = ChipAccess(chip)
    mapping = MappingSection(g_ref=chip.config.g_ref, g_scale=chip.config.g_scale, dw_min=0.01)
    writes = ChipWrites(ROWS, COLS, refresh)  # type: ignore[arg-type]
    tiles = [LabTile(TileRegion(name=name, row=row, col=0, rows=3, cols=COLS), access, mapping,
                     UpdateConfig(), writes=writes) for name, row in (("a", 0), ("b", 3))]
    return chip, access, tiles[0], tiles[1]


def test_another_tiles_pulses_are_seen_where_the_refresh_says_they_disturb() -> None:
    """A pulses one column of its cells 40 times; under V/2 every cell of that column on B is
    half-selected and moves. With "written" B keeps its old readings (the disturb stays
    unseen) and reads nothing again; with "lines" B reads that column again, and only it, and
    its weights are the chip's; with "all" it reads everything again."""
    for refresh, reread in (("written", 0), ("lines", 3), ("all", 3 * COLS)):
        chip, access, a, b = two_tiles(refresh)
        before = b.read_weights()
        reads = access.reads
        counts = np.zeros((3, COLS), dtype=np.int64)
        counts[:, 2] = 40
        a.apply_pulses(counts)
        after = b.read_weights()
        assert access.reads - reads == reread, refresh
        truth = chip.weights()[3:, :]
        assert np.abs(truth[:, 2] - before[:, 2]).min() > 0.05  # B's column 2 was disturbed
        if refresh == "written":
            np.testing.assert_array_equal(after, before)
        else:
            np.testing.assert_allclose(after, truth, atol=1e-9)


def test_the_tiles_of_a_bench_share_its_writes_with_the_stations_refresh() -> None:
    spec = SimStationSpec.model_validate({"tiles": [{"name": "a", "rows": 2, "cols": 4},
                                                    {"name": "b", "row": 2, "rows": 2, "cols": 4}]})
    with SimulatedStation(spec) as sim, LabBackend() as lab:
        read = sim.station.read.model_copy(update={"refresh": "lines"})
        station = sim.station.model_copy(update={"read": read})
        a, b = (lab.open_tile(TileConfig(rows=2, cols=4), station=station) for _ in range(2))
        assert a.writes is b.writes and a.writes.refresh == "lines"
        assert a.writes.count == 0
        a.apply_pulses(np.ones((2, 4), dtype=np.int64))
        assert b.writes.count == 1
