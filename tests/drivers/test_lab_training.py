"""Training through the whole lab path: lab tile, board client over pyserial, the simulated board
on a pseudo-terminal, the emulated chip. The same device model on the emulator is the yardstick."""

from __future__ import annotations

import pytest

from drivers.bench import Bench
from drivers.station import StationConfig
from hilctl.config import device_config, no_variation
from hilctl.train_config import resolve_train_config
from hilctl.training import train
from sim.instruments.board import SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.pulse_generator import PulseGeneratorSim
from sim.instruments.smu import SmuSim

DEVICE = {**no_variation("soft-bounds"), "dw_min": 0.01, "tau": 1.0}
TASK = {"out": 4, "in": 8, "steps": 400, "lr": 0.05, "sigma": 0.1, "eval_window": 100,
        "log_every": 100}


@pytest.fixture
def station():
    chip = EmulatedChip(ChipConfig(rows=8, cols=8, read_noise=1e-10,
                                   device=device_config("soft-bounds", **DEVICE)))
    with SimulatedBoard(chip) as board:
        config = StationConfig.model_validate({
            "board": {"port": board.port, "timeout": 0.2},
            "chip": {"rows": 8, "cols": 8},
            "tiles": [{"name": "fast", "rows": 4, "cols": 8},
                      {"name": "slow", "row": 4, "rows": 4, "cols": 8}],
            "mapping": {"g_ref": chip.config.g_ref, "g_scale": chip.config.g_scale,
                        "dw_min": 0.01},
        })
        yield config, chip
        Bench.close_all()


def config_for(algorithm: str, **algorithm_values: float):
    return resolve_train_config(
        algorithm=algorithm,
        overrides={"task": TASK, "device": DEVICE, "periphery": {"is_perfect": True},
                   "algorithm": algorithm_values},
    )


@pytest.mark.parametrize("algorithm", ["analog-sgd", "tiki-taka"])
def test_training_through_the_lab_path_matches_the_emulator(station, algorithm) -> None:
    """rel_err through the lab path is of the same order as on the emulator with the same
    device (within 3x either way: the two see different pulse-train and noise draws; measured
    ratios were within 1.5x), and well below the untrained 1.0."""
    config, chip = station
    values = {"fast_lr": 0.2} if algorithm == "tiki-taka" else {}
    lab = train(config_for(algorithm, **values), "lab", backend_options={"station": config})
    emulated = train(config_for(algorithm, **values), "sim")
    assert lab.final["rel_err"] < 0.5
    assert emulated.final["rel_err"] / 3 < lab.final["rel_err"] < 3 * emulated.final["rel_err"]
    assert chip.ledger  # the pulses went through the board


@pytest.fixture
def instrument_station():
    """Pulses from the pulse generator and reads from the SMU (pyvisa-py over TCP), each
    routed to its cell by the board (pyserial over a pty)."""
    chip = EmulatedChip(ChipConfig(rows=4, cols=8, read_noise=1e-10,
                                   device=device_config("soft-bounds", **DEVICE)))
    with SimulatedBoard(chip) as board, PulseGeneratorSim(chip) as generator, SmuSim(chip) as smu:
        config = StationConfig.model_validate({
            "board": {"port": board.port, "timeout": 0.2},
            "pulse_generator": {"resource": generator.resource},
            "smu": {"resource": smu.resource},
            "chip": {"rows": 4, "cols": 8},
            "tiles": [{"name": "fast", "rows": 2, "cols": 8},
                      {"name": "slow", "row": 2, "rows": 2, "cols": 8}],
            "write": {"via": "pulse-generator"},
            "read": {"via": "smu"},
            "mapping": {"g_ref": chip.config.g_ref, "g_scale": chip.config.g_scale,
                        "dw_min": 0.01},
        })
        yield config, chip, generator, smu
        Bench.close_all()


def test_tiki_taka_through_pulse_generator_and_smu(instrument_station) -> None:
    """The whole lab path with the SCPI instruments: Tiki-Taka least squares on a 2 x 8 tile.
    Same bound as above against the emulator (measured within 1.5x)."""
    config, chip, generator, smu = instrument_station
    task = {**TASK, "out": 2, "steps": 300}
    values = {"task": task, "device": DEVICE, "periphery": {"is_perfect": True},
              "algorithm": {"fast_lr": 0.2}}
    run = resolve_train_config(algorithm="tiki-taka", overrides=values)
    lab = train(run, "lab", backend_options={"station": config})
    emulated = train(run, "sim")
    assert lab.final["rel_err"] < 0.5
    assert emulated.final["rel_err"] / 3 < lab.final["rel_err"] < 3 * emulated.final["rel_err"]
    assert generator.fired and smu.reads  # pulses and reads went through the instruments
    # every pulse the chip received came from a burst of the generator, and vice versa
    assert sum(entry.count for entry in chip.ledger) == sum(burst.count for burst in generator.fired)
