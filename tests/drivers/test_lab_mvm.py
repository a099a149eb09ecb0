"""The lab tile's forward and backward through the board's analog MVM, on the simulated bench
(lab tile, bench, board client over a pty, simulated board, emulated chip): they agree with the
emulator's weights within the read noise, and the tile falls back to cell reads where the board
offers no MVM or the station says ``read.mvm = "off"``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

from drivers.bench import Bench
from drivers.lab_tile import LabTile
from hilctl.config import UpdateConfig
from hilctl.errors import ConfigError
from protocols import board as pb
from protocols.station import StationConfig
from sim.instruments.board import ALL_CAPABILITIES, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.mvm import MvmSettings

NOISE = 2e-8  # A, the read noise of a sensed line at the default integration time
BITS = 12
VOLTS = 0.1


@contextmanager
def lab_tile(kind: str = "reference", read: dict[str, Any] | None = None,
             **board: Any) -> Iterator[tuple[LabTile, SimulatedBoard, EmulatedChip]]:
    """A 4 x 6 tile at row 1, column 2 of a 6 x 16 chip whose cells were pulsed to spread the
    weights, behind a simulated board (``board``: its keywords)."""
    chip = EmulatedChip(ChipConfig(rows=6, cols=16, read_noise=NOISE, seed=4))
    rng = np.random.default_rng(5)
    for polarity in (+1, -1):
        cells = rng.integers(0, 6, 40), rng.integers(0, 16, 40)
        chip.pulse(cells, polarity, int(rng.integers(50, 300)), 1.5, 1e-6)
    with SimulatedBoard(chip, mvm=MvmSettings(adc_bits=BITS), **board) as sim:
        station = StationConfig.model_validate({
            "board": {"port": sim.port, "timeout": 0.2},
            "chip": {"rows": 6, "cols": 16},
            "tiles": [{"name": "t", "row": 1, "col": 2, "rows": 4, "cols": 12}],
            "read": {"voltage": VOLTS, **(read or {})},
            "mapping": {"kind": kind, "g_ref": chip.config.g_ref, "g_scale": chip.config.g_scale},
        })
        bench = Bench(station)
        try:
            tile = LabTile(bench.take_region(4, 6), bench.access, station.mapping, UpdateConfig())
            yield tile, sim, chip
        finally:
            bench.close()


def true_weights(chip: EmulatedChip, kind: str) -> np.ndarray:
    """The emulator's weights of the tile's cells (the chip's device weights)."""
    w = chip.weights()[1:5, 2:14]
    return w[:, 0::2] - w[:, 1::2] if kind == "differential" else w[:, :6]


def sent(sim: SimulatedBoard, kind: type[pb.Message]) -> list[pb.Message]:
    return [m for m in sim.requests if isinstance(m, kind)]


@pytest.mark.parametrize("kind", ["reference", "differential"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_mvm_passes_agree_with_the_emulator_within_the_read_noise(kind: str, direction: str) -> None:
    """z-scores of 1,200 (forward) or 1,800 (backward) outputs against ``W x`` from the chip's
    weights. Each output's error is the sensed line's noise plus the ADC's rounding (variance
    ``sigma^2 + step^2 / 12``, twice that where backward subtracts a differential pair), divided
    by the sample's ``s g_scale``. Bounds: the mean within 5 standard errors (5 / sqrt(n)), the
    std within 10% of 1 (the sample std's relative standard error 1 / sqrt(2 n) is <= 2%)."""
    with lab_tile(kind) as (tile, sim, chip):
        assert tile.capabilities.parallel_mvm
        w = true_weights(chip, kind)
        rng = np.random.default_rng(6)
        n_in = tile.cols if direction == "forward" else tile.rows
        inputs = rng.uniform(-1, 1, (300, n_in)) * rng.uniform(0.1, 2, (300, 1))
        if direction == "forward":
            out, expected = tile.forward(inputs), inputs @ w.T
            driven = tile.cols * (2 if kind == "differential" else 1)
        else:
            out, expected = tile.backward(inputs), inputs @ w
            driven = tile.rows
        mvms = sent(sim, pb.Mvm)
        assert sum(len(m.voltages) for m in mvms) == 300 and not sent(sim, pb.Read)  # no cell reads
    g_max = tile.mapping.conductance_window()[1]
    step = driven * g_max * VOLTS / 2 ** (BITS - 1)
    pairs = 2 if (kind, direction) == ("differential", "backward") else 1
    current_std = np.sqrt(pairs * (NOISE**2 + step**2 / 12))
    scale = VOLTS / np.abs(inputs).max(axis=1, keepdims=True)
    z = (out - expected) / (current_std / (scale * tile.mapping.g_scale))
    assert abs(z.mean()) < 5 / np.sqrt(z.size)
    assert abs(z.std() - 1) < 0.1


def test_an_all_zero_sample_needs_no_mvm() -> None:
    with lab_tile() as (tile, sim, _chip):
        out = tile.forward(np.zeros((2, 6)))
        assert np.array_equal(out, np.zeros((2, 4))) and not sent(sim, pb.Mvm)


@pytest.mark.parametrize("case", ["no capability", "protocol 1", "read.mvm off"])
def test_the_tile_reads_cells_where_there_is_no_mvm(case: str) -> None:
    board = {"no capability": {"capabilities": ALL_CAPABILITIES & ~pb.Capability.ANALOG_MVM},
             "protocol 1": {"protocol": 1}, "read.mvm off": {}}[case]
    read = {"mvm": "off"} if case == "read.mvm off" else {}
    with lab_tile(read=read, **board) as (tile, sim, chip):
        assert not tile.capabilities.parallel_mvm
        x = np.random.default_rng(7).uniform(-1, 1, (5, 6))
        y = tile.forward(x)
        assert sent(sim, pb.Read) and not sent(sim, pb.Mvm)
        np.testing.assert_allclose(y, x @ tile.read_weights().T)
        np.testing.assert_allclose(tile.read_weights(), true_weights(chip, "reference"),
                                   atol=6 * NOISE / (VOLTS * tile.mapping.g_scale))


@pytest.mark.parametrize(("baudrate", "mode"), [(115_200, pb.ReadMode.ROW),
                                                  (921_600, pb.ReadMode.ARRAY)])
def test_many_cells_are_read_in_replies_the_link_carries_in_time(baudrate: int,
                                                                  mode: pb.ReadMode) -> None:
    """Every cell of a 32 x 16 chip: its array reply (2,052 bytes) goes in one READ where the
    link carries it within half the 0.2 s timeout (9,216 bytes at 921600 baud), else row by row
    (68 bytes a reply; the budget at 115200 baud is 1,152 bytes). Both read the same currents."""
    chip = EmulatedChip(ChipConfig(rows=32, cols=16, read_noise=0.0))
    rng = np.random.default_rng(3)
    chip.pulse((rng.integers(0, 32, 200), rng.integers(0, 16, 200)), +1, 40, 1.5, 1e-6)
    with SimulatedBoard(chip) as sim:
        station = StationConfig.model_validate({
            "board": {"port": sim.port, "timeout": 0.2, "baudrate": baudrate},
            "chip": {"rows": 32, "cols": 16},
            "tiles": [{"name": "t", "row": 0, "col": 0, "rows": 32, "cols": 16}],
            "read": {"voltage": VOLTS}})
        bench = Bench(station)
        try:
            rows, cols = (grid.ravel() for grid in np.indices((32, 16)))
            currents = bench.access.read_cells(rows, cols)
        finally:
            bench.close()
    modes = {m.mode for m in sent(sim, pb.Read)}
    assert modes == {mode}
    assert len(sent(sim, pb.Read)) == (32 if mode is pb.ReadMode.ROW else 1)
    # noiseless; within the float32 the wire carries (the read voltage goes out as float32 too)
    np.testing.assert_allclose(currents, chip.current((rows, cols), VOLTS), rtol=1e-6)
    assert np.unique(currents).size > 10  # the cells differ: the read maps each to its place


def test_read_mvm_on_needs_a_board_that_offers_it() -> None:
    with pytest.raises(ConfigError, match=r"read\.mvm.*'auto'.*'off'"), \
            lab_tile(read={"mvm": "on"}, protocol=1):
        pass


def test_read_mvm_on_needs_reads_through_the_board() -> None:
    with pytest.raises(ValueError, match=r"read\.mvm = 'on' needs read\.via = 'board'"):
        StationConfig.model_validate({
            "board": {"port": "/dev/null"}, "smu": {"resource": "TCPIP0::1.2.3.4::5025::SOCKET"},
            "chip": {"rows": 2, "cols": 2}, "tiles": [{"name": "t", "rows": 2, "cols": 2}],
            "read": {"via": "smu", "mvm": "on"}})


@pytest.mark.parametrize(("key", "value"), [("mvm", "sometimes"), ("mvm_integration_time", 0.0),
                                            ("mvm_integration_time", 2.0), ("mvm_adc_range", 0.5)])
def test_bad_mvm_settings_are_refused_with_the_field_named(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"read.{key}"):
        StationConfig.model_validate({
            "board": {"port": "/dev/null"}, "chip": {"rows": 2, "cols": 2},
            "tiles": [{"name": "t", "rows": 2, "cols": 2}], "read": {key: value}})
