"""What a run cost the bench (:mod:`hilctl.operations`): the totals and their JSON and text, and
lab trainings on a simulated station whose ``operations`` agree with what the instruments and
the chip received. The emulator's runs have none (``test_train_json`` checks its keys)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from drivers.backend import LabBackend
from hilctl.cli import main
from hilctl.operations import Operations, per_step_line
from hilctl.runs import RunStore
from hilctl.train_config import resolve_train_config
from hilctl.training import train
from protocols import board as pb
from sim.instruments.station import SimStationSpec, SimulatedStation, load_sim_station

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sim_station.toml"
KEYS = {"pulses", "cell_reads", "mvms", "round_trips", "instrument_wait_share"}
STEPS = 40
SHORT = ["--set", "task.out=4", "--set", "task.in=8", "--set", f"task.steps={STEPS}",
         "--set", "task.log_every=10", "--set", "task.eval_window=10"]
LINE = re.compile(r"operations per step: ([\d.]+) pulses, ([\d.]+) cell reads, ([\d.]+) MVMs, "
                  r"([\d.]+) round trips; (\d+)% of the time waiting on instruments")


def spec_with(**sections: dict[str, object]) -> SimStationSpec:
    """The example station with some sections changed; a board reply timeout of 2 s (a loaded
    CI machine can be slower than the example's 0.2 s; link trouble is not the subject here)."""
    spec = load_sim_station(EXAMPLE)
    sections = {"board": {"timeout": 2.0}, **sections}
    update = {name: getattr(spec, name).model_copy(update=values) for name, values in sections.items()}
    return spec.model_copy(update=update)


# -- the totals ------------------------------------------------------------------------------


def test_a_report_without_totals_has_no_operations() -> None:
    assert Operations.in_report({}) is None
    assert Operations.in_report({"instruments": {}}) is None


def test_a_runs_share_is_the_difference_of_totals_and_a_fraction_of_its_time() -> None:
    before = Operations(pulses=10, cell_reads=5, mvms=1, round_trips=7, wait_seconds=1.0)
    report = {"operations": {"pulses": 110, "cell_reads": 25, "mvms": 4, "round_trips": 57,
                             "wait_seconds": 4.0}}
    run = Operations.in_report(report).since(before)
    assert run == Operations(pulses=100, cell_reads=20, mvms=3, round_trips=50, wait_seconds=3.0)
    assert run.as_json(seconds=4.0) == {"pulses": 100, "cell_reads": 20, "mvms": 3,
                                        "round_trips": 50, "instrument_wait_share": 0.75}
    assert run.as_json(seconds=2.0)["instrument_wait_share"] == 1.0  # never above 1
    assert run.as_json(seconds=0.0)["instrument_wait_share"] == 0.0  # no time, no share
    assert Operations().since(before) == Operations()  # a backend that started again
    assert Operations.in_report({"operations": run.report_entry()}) == run


def test_the_text_gives_figures_per_step_or_totals_without_steps() -> None:
    operations = {"pulses": 246, "cell_reads": 128, "mvms": 0, "round_trips": 421,
                  "instrument_wait_share": 0.8123}
    assert per_step_line(operations, 2) == ("operations per step: 123 pulses, 64 cell reads, "
                                            "0 MVMs, 210.5 round trips; 81% of the time waiting "
                                            "on instruments")
    assert per_step_line(operations, 0).startswith(
        "operations (no training step completed): 246 pulses, 128 cell reads")


# -- lab runs on a simulated station ---------------------------------------------------------


def test_a_lab_run_reports_and_stores_its_operations(capsys, tmp_path) -> None:
    """``--json`` has the five keys; the pulses are what the chip's ledger received, the round
    trips every request the board answered before the bench was closed (its closing reset is
    after the report), the cell reads at least one per weight per step (``rel_err`` reads the
    tile every step); the share is a fraction. The text summary gives the same per step, and
    the run store keeps them."""
    with SimulatedStation(spec_with()) as sim:
        path = sim.write_station(tmp_path / "station.toml")
        store = tmp_path / "store"
        argv = ["train", "--backend", "lab", "--station", str(path), "--algorithm", "tiki-taka",
                *SHORT, "--store", str(store)]
        assert main([*argv, "--json"]) == 0
        record = json.loads(capsys.readouterr().out)
        operations = record["operations"]
        assert set(operations) == KEYS
        assert all(type(operations[k]) is int for k in KEYS - {"instrument_wait_share"})
        assert operations["pulses"] == sum(entry.count for entry in sim.chip.ledger) > 0
        assert isinstance(sim.board.requests[-1], pb.Reset)
        assert operations["round_trips"] == len(sim.board.requests) - 1
        assert operations["cell_reads"] >= 4 * 8  # rel_err read every weight at least once
        assert operations["mvms"] >= 0
        assert 0 < operations["instrument_wait_share"] <= 1
        assert record["backend"]["operations"]["pulses"] == operations["pulses"]

        (event,) = [e for e in RunStore(store).get_run(record["run_id"]).events
                    if e.kind == "operations"]
        assert json.loads(event.message) == {**operations, "steps": STEPS}
        assert main(["runs", "show", record["run_id"], "--store", str(store)]) == 0
        assert "[operations]" in capsys.readouterr().out

        pulses_before, requests_before = sum(e.count for e in sim.chip.ledger), len(sim.board.requests)
        assert main([*argv, "--quiet"]) == 0
        out = capsys.readouterr().out
        pulses_sent = sum(e.count for e in sim.chip.ledger) - pulses_before
        answered = len(sim.board.requests) - requests_before - 1  # without the closing reset
    (line,) = [line for line in out.splitlines() if "operations per step" in line]
    pulses, cell_reads, mvms, round_trips, share = (float(x) for x in LINE.search(line).groups())
    assert pulses == pytest.approx(pulses_sent / STEPS, abs=0.05)  # shown to one decimal
    assert round_trips == pytest.approx(answered / STEPS, abs=0.05)
    assert cell_reads > 0 and mvms >= 0 and 0 < share <= 100


def _config(algorithm: str, steps: int):
    return resolve_train_config(algorithm=algorithm, overrides={
        "task": {"out": 4, "in": 8, "steps": steps, "log_every": steps, "eval_window": steps}})


def test_a_backend_kept_open_charges_each_run_its_own(tmp_path) -> None:
    """Two runs on one open lab backend (each on its own tile region): the second run's
    operations are the pulses and requests since the first ended, not the backend's totals."""
    with SimulatedStation(spec_with()) as sim, LabBackend() as backend:
        options = {"station": sim.station}
        first = train(_config("analog-sgd", 10), backend, backend_options=options)
        pulses, requests = sum(e.count for e in sim.chip.ledger), len(sim.board.requests)
        second = train(_config("analog-sgd", 10), backend, backend_options=options)
        assert first.operations is not None and second.operations is not None
        assert first.operations["pulses"] == pulses
        assert second.operations["pulses"] == sum(e.count for e in sim.chip.ledger) - pulses
        assert second.operations["round_trips"] == len(sim.board.requests) - requests
        assert first.steps == second.steps == 10


def test_pulse_generator_and_smu_traffic_is_counted(tmp_path) -> None:
    """Pulses from the pulse generator and reads from the SMU, routed by the board: on clean
    links every message each instrument received before the report is one round trip (each
    driver's last message is a query, so every write had arrived), and the pulses are the
    chip's."""
    spec = spec_with(write={"via": "pulse-generator"}, read={"via": "smu"})
    with SimulatedStation(spec) as sim, LabBackend() as backend:
        outcome = train(_config("analog-sgd", 3), backend, backend_options={"station": sim.station})
        received = (len(sim.board.requests) + sim.pulse_generator.message_count
                    + sim.smu.message_count)
        operations = outcome.operations
        assert operations is not None
        assert operations["round_trips"] == received
        assert operations["pulses"] == sum(e.count for e in sim.chip.ledger)
        assert operations["cell_reads"] >= 4 * 8 and operations["mvms"] == 0
        assert 0 < operations["instrument_wait_share"] <= 1
