"""The pytest plugin ``hilctl`` (sim/testing.py): fixtures ``sim_tile`` and ``sim_station`` used
as a lab's own tests use them (no import), and found through the installed entry point by a
pytest run of its own in a subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drivers.station import load_station
from hilctl.cli import main
from hilctl.testing import check_tile
from hilctl.tile import Tile
from sim.instruments.station import load_sim_station
from sim.testing import default_station_spec

pytest_plugins = ["pytester"]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sim_station.toml"


def test_the_fixtures_as_a_lab_uses_them(sim_tile: Tile, sim_station: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert (sim_tile.rows, sim_tile.cols) == (8, 8)
    before = sim_tile.read_weights()
    sim_tile.update(np.ones(8), np.ones(8), 0.1)
    assert sim_tile.read_weights().mean() < before.mean()
    assert sim_tile.forward(np.ones((2, 8))).shape == (2, 8)
    check_tile(lambda: sim_tile)  # the checks program their start, so one tile serves them all

    assert isinstance(sim_station, Path) and sim_station.is_file()
    assert load_station(sim_station).tiles[0].name == "fast"
    code = main(["characterize", "--backend", "lab", "--station", str(sim_station),
                 "--up", "5", "--down", "5", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)
    assert (record["rows"], record["cols"]) == (4, 8)  # the first tile region
    mean = np.array(record["mean"])
    assert np.all(np.diff(mean[:5]) > 0) and mean[4] > record["summary"]["start"]["mean"]


def test_the_default_station_is_the_examples_one() -> None:
    """The plugin builds examples/sim_station.toml's station in code (examples/ is not installed)."""
    assert default_station_spec() == load_sim_station(EXAMPLE)


LAB_TESTS = '''
import json

import numpy as np

from hilctl.cli import main


def test_update_lowers_the_weights(sim_tile):
    before = sim_tile.read_weights().mean()
    sim_tile.update(np.ones(sim_tile.cols), np.ones(sim_tile.rows), 0.1)
    assert sim_tile.read_weights().mean() < before


def test_characterize_the_bench(sim_station, capsys):
    assert main(["characterize", "--backend", "lab", "--station", str(sim_station),
                 "--up", "3", "--down", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 4
'''

LAB_CONFTEST = '''
import os
import threading
import time

import pytest

from hilctl.config import tile_config


@pytest.fixture
def sim_tile_config():
    return tile_config(rows=3, cols=5, device="exp-step", seed=1)


@pytest.fixture(autouse=True)
def no_leaks():
    """Set up first, torn down last: after sim_station has stopped the bench, no thread of it
    runs and no descriptor of it is open."""
    threads, fds = set(threading.enumerate()), _fds()
    yield
    deadline = time.monotonic() + 2.0
    while [t for t in threading.enumerate() if t not in threads] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert set(threading.enumerate()) <= threads
    leaked = [fd for fd in _fds() - fds if os.path.exists(f"/proc/self/fd/{fd}")]
    assert not leaked, [os.readlink(f"/proc/self/fd/{fd}") for fd in leaked]


def _fds():
    return set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
'''


def test_a_lab_finds_the_fixtures_through_the_entry_point(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_lab=LAB_TESTS)
    pytester.makepyfile(test_override="def test_shape(sim_tile):\n"
                                      "    assert (sim_tile.rows, sim_tile.cols) == (3, 5)\n")
    pytester.makeconftest(LAB_CONFTEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
