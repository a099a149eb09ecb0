"""Training through the whole lab path: lab tile, board client over pyserial, the simulated board
on a pseudo-terminal, the emulated chip. The same device model on the emulator is the yardstick."""

from __future__ import annotations

import pytest

from drivers.backend import LabBackend
from hilctl.config import device_config, no_variation
from hilctl.errors import HilctlError
from hilctl.runs import RunStore
from hilctl.train_config import resolve_train_config
from hilctl.training import train
from protocols import board as pb
from protocols.station import StationConfig
from sim.instruments.board import ALL_CAPABILITIES, SimulatedBoard
from sim.instruments.chip import ChipConfig, EmulatedChip
from sim.instruments.pulse_generator import SimulatedPulseGenerator
from sim.instruments.smu import SimulatedSmu

DEVICE = {**no_variation("soft-bounds"), "dw_min": 0.01, "tau": 1.0}
TASK = {"out": 4, "in": 8, "steps": 400, "lr": 0.05, "sigma": 0.1, "eval_window": 100,
        "log_every": 100}


@pytest.fixture(params=[("auto", True), ("off", True), ("auto", False)],
                ids=["mvm", "cell-reads", "mvm-per-slot-pulses"])
def station(request):
    """The board offers an analog MVM; ``read.mvm`` uses it (``auto``) or reads cells (``off``).
    It takes an update's mask pulses as one pulse train, or (``False``: no ``pulse_train``
    capability) one mask pulse per frame."""
    mvm, pulse_train = request.param
    capabilities = ALL_CAPABILITIES if pulse_train else ALL_CAPABILITIES & ~pb.Capability.PULSE_TRAIN
    chip = EmulatedChip(ChipConfig(rows=8, cols=8, read_noise=1e-10,
                                   device=device_config("soft-bounds", **DEVICE)))
    with SimulatedBoard(chip, capabilities=capabilities) as board:
        config = StationConfig.model_validate({
            "board": {"port": board.port, "timeout": 0.2},
            "chip": {"rows": 8, "cols": 8},
            "tiles": [{"name": "fast", "rows": 4, "cols": 8},
                      {"name": "slow", "row": 4, "rows": 4, "cols": 8}],
            "read": {"mvm": mvm},
            "mapping": {"g_ref": chip.config.g_ref, "g_scale": chip.config.g_scale,
                        "dw_min": 0.01},
        })
        yield config, chip, board


def config_for(algorithm: str, **algorithm_values: float):
    return resolve_train_config(
        algorithm=algorithm,
        overrides={"task": TASK, "device": DEVICE, "periphery": {"is_perfect": True},
                   "algorithm": algorithm_values},
    )


@pytest.mark.parametrize("algorithm", ["analog-sgd", "tiki-taka"])
def test_training_through_the_lab_path_matches_the_emulator(station, algorithm) -> None:
    """rel_err through the lab path, forward passes as the board's analog MVM or from cell
    reads, updates as pulse trains or one mask pulse per frame, is of the same order as on the
    emulator with the same device (within 3x either way: the two see different pulse-train and
    noise draws; measured ratios were within 1.5x), and well below the untrained 1.0."""
    config, chip, board = station
    values = {"fast_lr": 0.2} if algorithm == "tiki-taka" else {}
    lab = train(config_for(algorithm, **values), "lab", backend_options={"station": config})
    emulated = train(config_for(algorithm, **values), "sim")
    assert lab.final["rel_err"] < 0.5
    assert emulated.final["rel_err"] / 3 < lab.final["rel_err"] < 3 * emulated.final["rel_err"]
    assert chip.ledger  # the pulses went through the board
    mvms = [m for m in board.requests if isinstance(m, pb.Mvm)]
    assert bool(mvms) == (config.read.mvm == "auto")  # the forward passes took the chosen path
    offered = pb.Capability.PULSE_TRAIN in board.capabilities  # and the updates theirs
    assert any(isinstance(m, pb.PulseTrain) for m in board.requests) == offered
    assert any(isinstance(m, pb.Pulse) and isinstance(m.target, pb.MaskTarget)
               for m in board.requests) != offered


@pytest.fixture
def instrument_station():
    """Pulses from the pulse generator and reads from the SMU (pyvisa-py over TCP), each
    routed to its cell by the board (pyserial over a pty)."""
    chip = EmulatedChip(ChipConfig(rows=4, cols=8, read_noise=1e-10,
                                   device=device_config("soft-bounds", **DEVICE)))
    with SimulatedBoard(chip) as board, SimulatedPulseGenerator(chip) as generator, SimulatedSmu(chip) as smu:
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


def short_run():
    task = {**TASK, "out": 2, "steps": 60, "eval_window": 20, "log_every": 20}
    return resolve_train_config(
        algorithm="analog-sgd",
        overrides={"task": task, "device": DEVICE, "periphery": {"is_perfect": True}})


def test_a_dropped_instrument_connection_is_reconnected_and_the_run_goes_on(instrument_station,
                                                                             tmp_path) -> None:
    config, _chip, _generator, smu = instrument_station
    smu.faults.drop_after = 40  # the 41st message on the SMU's connection is lost, link closed
    store = RunStore(tmp_path)
    with LabBackend() as lab:
        outcome = train(short_run(), lab, store=store, backend_options={"station": config})
        assert store.get_run(outcome.run_id).status == "completed"
        assert smu.lost  # the fault did happen
        assert lab.bench(config).smu.reconnects >= 1


def test_an_instrument_that_dies_mid_run_stops_the_run_cleanly_and_names_it(instrument_station,
                                                                           tmp_path) -> None:
    """The SMU goes away at step 30: the run stops with an error naming the SMU's resource and
    the command that failed, and the store records it as failed with its history so far."""
    config, _chip, _generator, smu = instrument_station
    resource = smu.resource

    def pull_the_plug(done: int, total: int) -> None:
        if done == 30:
            smu.stop()

    store = RunStore(tmp_path)
    with pytest.raises(HilctlError) as failure:
        train(short_run(), "lab", store=store, progress=pull_the_plug,
              backend_options={"station": config})
    message = str(failure.value)
    assert resource in message and "READ?" in message.upper()
    (run,) = store.list_runs()
    record = store.get_run(run.run_id)
    assert record.status == "failed" and resource in (record.error or "")
    steps, _values = record.metrics["rel_err"]
    assert steps.tolist() == [20]
