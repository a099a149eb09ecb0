"""Every way a bench run ends leaves the instruments safe: SMU output off at 0 V, pulse generator
output off and its bus trigger disarmed, the board idle (nothing selected, nothing routed).

``hilctl train --backend lab`` runs in a child process against a simulated station in this
process (pulses through the pulse generator, reads through the SMU, both routed by the board),
so each exit path is the real one: the run completes, fails on an instrument error, gets SIGINT,
SIGTERM or SIGHUP, or has its instrument links killed. Afterwards the simulated instruments are
asked for their state.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hilctl.runs import RunStore
from sim.instruments.station import SimulatedStation, load_sim_station

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sim_station.toml"
#: Seconds a child run may take before the test gives up on it.
DEADLINE_S = 60.0


@pytest.fixture
def bench(tmp_path: Path):
    """A simulated station whose writes go through the pulse generator and reads through the
    SMU, and its resolved station file."""
    spec = load_sim_station(EXAMPLE)
    spec = spec.model_copy(update={
        "write": spec.write.model_copy(update={"via": "pulse-generator"}),
        "read": spec.read.model_copy(update={"via": "smu"}),
    })
    with SimulatedStation(spec) as station:
        path = station.write_station(tmp_path / "station.toml")
        yield station, path


def start_run(station_file: Path, store: Path, steps: int) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "hilctl", "train", "--backend", "lab", "--station",
            str(station_file), "--algorithm", "tiki-taka", "--set", "task.out=4", "--set",
            "task.in=8", "--set", f"task.steps={steps}", "--set", "task.log_every=10",
            "--set", "task.eval_window=10", "--set", "algorithm.fast_lr=0.2", "--store", str(store),
            "--json"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_until_pulsing(station: SimulatedStation, process: subprocess.Popen[str]) -> None:
    """Until the run has fired bursts through the generator (it is mid-run)."""
    deadline = time.monotonic() + DEADLINE_S
    assert station.pulse_generator is not None
    while len(station.pulse_generator.fired) < 5:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never started pulsing"
        time.sleep(0.05)


def run_then_kill_links(station: SimulatedStation, station_file: Path, store: Path,
                        steps: int) -> subprocess.Popen[str]:
    """A bench run that is pulsing, with the pulse generator's and the SMU's connections then
    killed under it."""
    process = start_run(station_file, store, steps)
    wait_until_pulsing(station, process)
    assert station.pulse_generator is not None and station.smu is not None
    station.pulse_generator.drop_connections()
    station.smu.drop_connections()
    return process


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=DEADLINE_S)
    assert "Traceback" not in err, err
    return process.returncode, out, err


def assert_safe(station: SimulatedStation) -> None:
    """Every output off, nothing armed, nothing routed."""
    generator, smu, board = station.pulse_generator, station.smu, station.board
    assert generator is not None and smu is not None and board is not None and station.chip
    assert not smu.output and smu.level == 0.0, (smu.output, smu.level)
    assert not generator.output, "pulse generator output left on"
    assert not generator.burst_state and generator.trigger_source == "IMM", \
        (generator.burst_state, generator.trigger_source)
    assert station.chip.routing.pulse_cell is None and station.chip.routing.smu_cell is None
    assert board.selection is None
    # and a late bus trigger fires nothing
    fired = len(generator.fired)
    generator.execute("*TRG")
    assert len(generator.fired) == fired


def run_status(store: Path) -> str:
    (run,) = RunStore(store).list_runs()
    return run.status


def test_done(bench, tmp_path: Path) -> None:
    station, path = bench
    code, out, err = finish(start_run(path, tmp_path / "store", steps=30))
    assert code == 0, err
    assert json.loads(out)["status"] == "completed"
    assert_safe(station)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143),
                                              (signal.SIGHUP, 129)])
def test_interrupted_by_a_signal(bench, tmp_path: Path, signum: int, code: int) -> None:
    station, path = bench
    process = start_run(path, tmp_path / "store", steps=100_000)
    wait_until_pulsing(station, process)
    os.kill(process.pid, signum)
    returned, _, err = finish(process)
    assert returned == code, err
    assert run_status(tmp_path / "store") == "interrupted"
    assert_safe(station)


def test_an_instrument_error_mid_run(bench, tmp_path: Path) -> None:
    """The SMU's output goes off under the run (a front-panel press): the next read fails, the
    run fails with exit 3, naming the SMU, and the bench is left safe."""
    station, path = bench
    process = start_run(path, tmp_path / "store", steps=100_000)
    wait_until_pulsing(station, process)
    assert station.smu is not None
    station.smu.execute(":OUTP OFF")
    returned, _, err = finish(process)
    assert returned == 3, err
    assert station.smu.resource in err
    assert run_status(tmp_path / "store") == "failed"
    assert_safe(station)


def test_killed_links(bench, tmp_path: Path) -> None:
    """Mid-run, the pulse generator's and the SMU's connections are killed: the drivers
    reconnect (settings re-sent, no trigger replayed) and the run completes or stops with a
    pulse it cannot confirm; either way the bench ends safe."""
    station, path = bench
    process = run_then_kill_links(station, path, tmp_path / "store", steps=200)
    returned, _, err = finish(process)
    assert returned in (0, 3), err
    assert_safe(station)


def test_killed_links_then_interrupted(bench, tmp_path: Path) -> None:
    """The links die and Ctrl-C follows at once: the run stops at its next step (130) or on
    the pulse the dead link left unconfirmed (3), whichever comes first; either way the safe
    state reconnects to make the instruments safe."""
    station, path = bench
    process = run_then_kill_links(station, path, tmp_path / "store", steps=100_000)
    os.kill(process.pid, signal.SIGINT)
    returned, _, err = finish(process)
    assert returned in (3, 130), err
    assert_safe(station)
