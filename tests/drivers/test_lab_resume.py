"""A bench run killed mid-way resumes on the chip as the chip is: never re-initialised, read
back and compared with the checkpoint, then trained on to a result within the spread of an
uninterrupted run. Against a simulated station in this process; the run is a child process
killed with SIGKILL."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hilctl.errors import ConfigError
from hilctl.runs import RunStore
from hilctl.training import resume
from sim.instruments.station import SimulatedStation, load_sim_station

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sim_station.toml"
RUN = ["--algorithm", "tiki-taka", "--set", "task.out=4", "--set", "task.in=8", "--set",
       "task.steps=400", "--set", "task.log_every=20", "--set", "task.eval_window=100",
       "--set", "algorithm.fast_lr=0.2", "--set", "run.checkpoint_seconds=0.2"]


@pytest.fixture
def station(tmp_path: Path):
    with SimulatedStation(load_sim_station(EXAMPLE)) as sim:
        yield sim, sim.write_station(tmp_path / "station.toml")


def train_argv(station_file: Path, store: Path) -> list[str]:
    store.mkdir(exist_ok=True)
    return ["train", "--backend", "lab", "--station", str(station_file), *RUN, "--store",
            str(store)]


def checkpointed_step(store: Path) -> int:
    with sqlite3.connect(store / "runs.sqlite", timeout=5) as db:
        try:
            return int(db.execute("SELECT COALESCE(MAX(step), 0) FROM checkpoints").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def kill_after_checkpoint(station_file: Path, store: Path, step: int) -> None:
    """Run the bench training in a child and SIGKILL it once it has checkpointed ``step``."""
    child = subprocess.Popen([sys.executable, "-m", "hilctl", *train_argv(station_file, store)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (store / "runs.sqlite").exists() or checkpointed_step(store) < step:
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)


def test_a_killed_bench_run_resumes_without_reprogramming_the_chip(station, tmp_path: Path) -> None:
    sim, station_file = station
    reference = subprocess.run([sys.executable, "-m", "hilctl", *train_argv(
        station_file, tmp_path / "reference"), "--json"], capture_output=True, text=True,
        timeout=120, check=True)
    assert '"status": "completed"' in reference.stdout
    reference_error = RunStore(tmp_path / "reference").list_runs()[0].final["rel_err"]

    store = tmp_path / "store"
    kill_after_checkpoint(station_file, store, 150)
    pulses_before = len(sim.chip.ledger)

    (run,) = RunStore(store).list_runs()
    assert run.status == "lost"
    resumed = resume(run.run_id, RunStore(store))

    # never re-initialised: programming pulses a cell many times at once (write-verify), the
    # training's coincidence pulses one at a time; after the kill, only the latter
    after = sim.chip.ledger[pulses_before:]
    assert after and max(entry.count for entry in after) == 1
    # the chip was read back and compared with the checkpoint: it moved only by the few steps
    # the killed run trained after its last checkpoint (pulses of 0.01), and nothing was
    # written back (no --reprogram-beyond)
    assert [d["tile"] for d in resumed.drift] == [0, 1]
    assert all(d["max"] < 0.5 and d["reprogrammed"] == 0 for d in resumed.drift), resumed.drift
    record = RunStore(store).get_run(run.run_id)
    assert record.status == "completed" and any(e.kind == "drift" for e in record.events)
    # within the spread of an uninterrupted run (the read noise differs; measured within 1.5x)
    assert resumed.final["rel_err"] < 0.5
    assert reference_error / 3 < resumed.final["rel_err"] < 3 * reference_error


def test_another_station_is_refused_and_drifted_cells_written_back(station, tmp_path: Path) -> None:
    """Resuming on a station that describes another chip is refused; on the right one, a cell
    that drifted (moved by hand here) is written back with --reprogram-beyond."""
    sim, station_file = station
    store = tmp_path / "store"
    kill_after_checkpoint(station_file, store, 40)
    original = station_file.read_text()
    station_file.write_text(original.replace("g_ref = 5e-05", "g_ref = 6e-05"))
    (run,) = RunStore(store).list_runs()
    with pytest.raises(ConfigError, match="not the station the run ran on"):
        resume(run.run_id, RunStore(store))
    station_file.write_text(original)
    saved = RunStore(store).get_run(run.run_id).checkpoints[-1].load()
    fast_before = saved["tiles"][0]["weights"]
    # the chip's cell (0, 0) of the fast tile drifts by 30 pulses while nobody looks
    sim.chip.pulse((np.array([0]), np.array([0])), +1, 30, amplitude=1.5, width=1e-6)
    resumed = resume(run.run_id, RunStore(store), reprogram_beyond=0.1)
    fast = resumed.drift[0]
    assert fast["max"] > 0.1 and fast["reprogrammed"] >= 1
    assert abs(fast_before[0, 0]) < 2  # a sane checkpoint
