"""Half-select disturb on the simulated bench: the station's bias scheme reaches the board and
the chip, and what it costs Tiki-Taka least squares (``docs/emulator.md`` section 9)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest

from drivers.bench import Bench
from hilctl.config import device_config, no_variation
from hilctl.errors import ConfigError
from hilctl.train_config import resolve_train_config
from hilctl.training import train
from protocols import board as pb
from protocols.station import StationConfig
from sim.instruments.board import SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.disturb import DisturbSettings
from sim.instruments.pulse_generator import SimulatedPulseGenerator
from sim.instruments.station import SimStationSpec, SimulatedStation, load_sim_station
from sim.testing import DEFAULT_STATION

DEVICE = {**no_variation("soft-bounds"), "dw_min": 0.01, "tau": 1.0}


def make_chip(rows: int, cols: int, seed: int = 0, **disturb: float) -> EmulatedChip:
    return EmulatedChip(ChipConfig(rows=rows, cols=cols, read_noise=1e-10, seed=seed,
                                   device=device_config("soft-bounds", **DEVICE),
                                   disturb=DisturbSettings(**disturb)))


def station_for(chip: EmulatedChip, port: str, bias: str, write: dict[str, object] | None = None,
                **sections: object) -> StationConfig:
    rows, cols = chip.shape
    return StationConfig.model_validate({
        "board": {"port": port, "timeout": 0.2},
        "chip": {"rows": rows, "cols": cols},
        "tiles": [{"name": "fast", "rows": rows // 2, "cols": cols},
                  {"name": "slow", "row": rows // 2, "rows": rows // 2, "cols": cols}],
        "write": {"bias": bias, **(write or {})},
        "mapping": {"g_ref": chip.config.g_ref, "g_scale": chip.config.g_scale, "dw_min": 0.01},
        **sections,
    })


@contextmanager
def bench_on(chip: EmulatedChip, bias: str) -> Iterator[tuple[Bench, SimulatedBoard]]:
    with SimulatedBoard(chip) as board:
        assert board.port is not None
        bench = Bench(station_for(chip, board.port, bias))
        try:
            yield bench, board
        finally:
            bench.close()


def test_the_bench_tells_the_board_its_bias_once_before_the_first_pulse() -> None:
    """On-board pulses: one Select carrying ``write.bias`` before the first Pulse and none
    after; the board keeps the scheme in force (``chip.routing.bias``) until its Reset at
    close."""
    chip = make_chip(4, 4)
    with bench_on(chip, "v/3") as (bench, board):
        assert chip.routing.bias == "v/2"  # the board's scheme after the Reset at open
        idx = np.array([0, 2], dtype=np.intp)
        bench.access.pulse_cells(idx, idx, +1, np.array([2, 3], dtype=np.int64))
        bench.access.pulse_masks(idx, idx + 1, -1)
        sent = [m for m in board.requests if isinstance(m, pb.Select | pb.Pulse)]
        assert isinstance(sent[0], pb.Select) and sent[0].bias is pb.Bias.V_THIRD
        assert [type(m) for m in sent[1:]] == [pb.Pulse] * 3
        assert chip.routing.bias == "v/3"
    assert chip.routing.bias == "v/2"  # Reset


def test_pulses_through_the_pulse_generator_disturb_under_the_selected_bias() -> None:
    """Pulse generator routed by the board, ``v/2`` at 2 V on a 3 x 4 chip: the host selects
    the cell with the station's bias for every burst; the cell's row and column neighbours see
    1 V >= the 0.8 V threshold and take every pulse as disturb, the other cells none."""
    chip = make_chip(3, 4, rate=1e-6)
    with SimulatedBoard(chip) as board, SimulatedPulseGenerator(chip) as generator:
        assert board.port is not None
        bench = Bench(station_for(chip, board.port, "v/2", {"amplitude": 2.0, "via": "pulse-generator"},
                                  pulse_generator={"resource": generator.resource}))
        try:
            bench.access.pulse_cells(np.array([1]), np.array([2]), +1, np.array([3]))
        finally:
            bench.close()
    assert chip.pulse_ledger() == {(1, 2): 3}
    half = {(1, c) for c in range(4) if c != 2} | {(r, 2) for r in range(3) if r != 1}
    assert chip.disturb_ledger() == {cell: 3 for cell in half}


def test_a_simulated_station_file_sets_the_disturb_and_names_a_bad_key(tmp_path) -> None:
    values = copy.deepcopy(DEFAULT_STATION)
    values["disturb"] = {"rate": 0.1, "exponent": 6.0, "float_fraction": 0.6}
    with SimulatedStation(SimStationSpec.model_validate(values)) as sim:
        assert sim.chip is not None
        assert sim.chip.config.disturb == DisturbSettings(rate=0.1, exponent=6.0, float_fraction=0.6)
    without = {key: value for key, value in DEFAULT_STATION.items() if key != "disturb"}
    assert SimStationSpec.model_validate(without).disturb == DisturbSettings()
    assert DisturbSettings().rate == 0.0  # off by default
    path = tmp_path / "station.toml"
    path.write_text('[[tiles]]\nname = "t"\nrows = 2\ncols = 2\n[disturb]\nrate = 2.0\n')
    with pytest.raises(ConfigError, match=r"disturb\.rate"):
        load_sim_station(path)


TASK = {"out": 4, "in": 8, "steps": 100, "lr": 0.2, "sigma": 0.1, "eval_window": 25,
        "log_every": 25}


def tiki_taka_rel_err(bias: str, seed: int, rate: float, steps: int = 100) -> tuple[float, EmulatedChip]:
    """Tiki-Taka least squares on a 4 x 8 fast and a 4 x 8 slow tile of an 8 x 8 chip, on-board
    coincidence pulses of 1.5 V (threshold 0.8 V), the given bias scheme and disturb rate."""
    chip = make_chip(8, 8, seed=seed, rate=rate)
    with SimulatedBoard(chip) as board:
        assert board.port is not None
        run = resolve_train_config(algorithm="tiki-taka", seed=seed, overrides={
            "task": {**TASK, "steps": steps}, "device": DEVICE, "periphery": {"is_perfect": True},
            "algorithm": {"fast_lr": 0.2}})
        outcome = train(run, "lab", backend_options={"station": station_for(chip, board.port, bias)})
    return outcome.final["rel_err"], chip


def test_v2_costs_tiki_taka_more_than_v3_under_disturb_and_nothing_without() -> None:
    """With disturb rate 0.2 and the default exponent 8, a half-selected cell takes a pulse
    with ``p = 0.2 (0.75/0.8)^8 = 0.119`` under ``v/2`` but ``0.2 (0.5/0.8)^8 = 0.0047`` under
    ``v/3``, 25.6x less. ``v/3`` half-selects more cells (all ``64 - k m`` others of a k-row,
    m-column pulse, against ``k (8 - m) + m (8 - k)``), at most 63/14 = 4.5x more, so every
    write disturbs at least 5.7x less in expectation and Tiki-Taka's error is lower.

    Seeds 0 and 1 (task and chip), 100 steps: the mean rel_err under ``v/2`` is more than 3x
    that under ``v/3`` (measured 0.256 against 0.037, 7x; without disturb 0.045 and 0.065).
    Without disturb the chip never looks at the scheme: the two runs of seed 0 agree exactly."""
    v2 = [tiki_taka_rel_err("v/2", seed, 0.2) for seed in (0, 1)]
    v3 = [tiki_taka_rel_err("v/3", seed, 0.2) for seed in (0, 1)]
    assert np.mean([err for err, _ in v2]) > 3 * np.mean([err for err, _ in v3])
    for (_, chip_v2), (_, chip_v3) in zip(v2, v3, strict=True):
        assert chip_v2.disturbs and chip_v3.disturbs
        assert sum(e.count for e in chip_v2.disturbs) > sum(e.count for e in chip_v3.disturbs)
    off_v2, chip = tiki_taka_rel_err("v/2", 0, 0.0, steps=40)
    off_v3, _ = tiki_taka_rel_err("v/3", 0, 0.0, steps=40)
    assert off_v2 == off_v3 and not chip.disturbs
