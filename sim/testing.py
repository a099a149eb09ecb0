"""pytest plugin ``hilctl``: an emulated tile and a simulated bench as fixtures, for labs' own CI.

Installing hilctl registers this module with pytest (entry point ``pytest11``, name ``hilctl``),
so a lab's tests use the fixtures without importing anything::

    def test_my_training_loop(sim_tile):          # an EmulatedTile, 8 x 8 soft bounds, seed 0
        ...

    def test_my_bench_script(sim_station):        # path of a station file of a running bench
        main(["characterize", "--backend", "lab", "--station", str(sim_station)])

    def test_my_arc2_script(sim_arc2_station):    # the same chip behind an ArC TWO stand-in
        main(["characterize", "--backend", "lab", "--station", str(sim_arc2_station)])

A lab changes what they give by overriding ``sim_tile_config`` (a ``hilctl.config.TileConfig``)
or ``sim_station_spec`` (a :class:`~sim.instruments.station.SimStationSpec`) in its
``conftest.py``. It lives in ``sim`` because it starts the simulator, which the core may not
import.

pytest imports every plugin at startup, in every session of the environment: the simulator is
imported only when a fixture is first used, so a session that uses none pays nothing for it (and
coverage of hilctl measured with pytest-cov is not skewed by modules imported before it starts).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from hilctl.config import TileConfig
    from sim.instruments.station import SimStationSpec
    from sim.tile import EmulatedTile

#: Shape, device and seed of the default :func:`sim_tile_config`.
DEFAULT_TILE: dict[str, Any] = {"rows": 8, "cols": 8, "device": "soft-bounds", "seed": 0}

#: The simulated station of ``examples/sim_station.toml`` (which is not installed with the
#: package): an 8 x 8 chip of clean soft-bounds devices behind a board, a pulse generator and an
#: SMU, and two 4 x 8 tile regions ``fast`` (rows 0-3) and ``slow`` (rows 4-7).
DEFAULT_STATION: dict[str, Any] = {
    "chip": {"rows": 8, "cols": 8, "seed": 0},
    "device": {"model": "soft-bounds", "tau": 1.0, "dw_min": 0.01, "dw_min_dtod": 0.0,
               "dw_min_std": 0.0, "up_down_dtod": 0.0, "w_max_dtod": 0.0, "w_min_dtod": 0.0},
    "conductance": {"g_ref": 50e-6, "g_scale": 50e-6, "read_noise": 1e-9, "set_threshold": 0.8,
                    "min_width": 10e-9},
    "disturb": {"rate": 0.0, "exponent": 8.0, "float_fraction": 0.5},
    "faults": {"board_drop": 0.0, "board_corrupt": 0.0, "board_delay": 0.0,
               "scpi_reply_delay": 0.0, "seed": 0},
    "board": {"timeout": 0.2, "retries": 20},
    "pulse_generator": {"timeout": 2.0},
    "smu": {"timeout": 2.0},
    "tiles": [{"name": "fast", "row": 0, "col": 0, "rows": 4, "cols": 8},
              {"name": "slow", "row": 4, "col": 0, "rows": 4, "cols": 8}],
    "write": {"amplitude": 1.5, "width": 1e-6, "bias": "v/2", "via": "board"},
    "read": {"voltage": 0.1, "compliance": 1e-4, "nplc": 0.1, "via": "board"},
    "mapping": {"g_ref": 50e-6, "g_scale": 50e-6, "dw_min": 0.01},
    "limits": {"max_pulse_amplitude": 3.0, "min_pulse_width": 20e-9, "max_pulse_width": 1e-3,
               "max_read_voltage": 0.5, "max_compliance": 1e-3, "max_burst_count": 1000},
}

#: Name of the resolved station file :func:`sim_station` writes into the test's ``tmp_path``.
STATION_FILE = "sim-station.toml"


def default_station_spec() -> SimStationSpec:
    """A fresh, validated :class:`SimStationSpec` of :data:`DEFAULT_STATION`."""
    from sim.instruments.station import SimStationSpec

    return SimStationSpec.model_validate(copy.deepcopy(DEFAULT_STATION)).check()


@pytest.fixture
def sim_tile_config() -> TileConfig:
    """The config of ``sim_tile``: 8 x 8, soft-bounds devices (default variations), seed 0.

    Override it in a ``conftest.py`` to test on another tile, e.g. the device a lab measured::

        @pytest.fixture
        def sim_tile_config():
            return hilctl.config.tile_config(rows=16, cols=32, device="exp-step", seed=1)
    """
    from hilctl.config import tile_config

    return tile_config(**DEFAULT_TILE)


@pytest.fixture
def sim_tile(sim_tile_config: TileConfig) -> EmulatedTile:
    """A fresh emulated tile (``sim.tile.EmulatedTile``, the ``--backend sim`` tile) of
    ``sim_tile_config``; same seed, same numbers, so a test on it is reproducible."""
    from sim.tile import EmulatedTile

    return EmulatedTile(sim_tile_config)


@pytest.fixture
def sim_station_spec() -> SimStationSpec:
    """The simulated station ``sim_station`` starts: by default that of
    ``examples/sim_station.toml`` (two 4 x 8 tile regions, ``fast`` and ``slow``, of an 8 x 8
    chip of clean soft-bounds devices). Override it in a ``conftest.py``, e.g. with
    ``sim.instruments.station.load_sim_station(path)`` of a lab's own file, or with faults
    switched on: ``SimStationSpec.model_validate({**sim.testing.DEFAULT_STATION, "faults":
    {"board_drop": 0.02}})``."""
    return default_station_spec()


@pytest.fixture
def sim_station(sim_station_spec: SimStationSpec, tmp_path: Path) -> Iterator[Path]:
    """A simulated bench (board on a pty, pulse generator and SMU on 127.0.0.1) running in the
    test's process for the test's duration; the path of its resolved station file (in the
    test's ``tmp_path``), for ``--backend lab --station PATH`` or
    ``drivers.backend.LabBackend().open_tile(config, station=PATH)``.

    The instruments are stopped (threads joined, pty and sockets closed) after the test. A
    ``LabBackend`` the test opens itself it must close (``with`` or ``.close()``) before then,
    or its connections stay open; the command line (``hilctl.cli.main``) closes its own.
    """
    from sim.instruments.station import SimulatedStation

    with SimulatedStation(sim_station_spec) as station:
        yield station.write_station(tmp_path / STATION_FILE)


#: Name of the station file :func:`sim_arc2_station` writes into the test's ``tmp_path``.
ARC2_STATION_FILE = "sim-arc2-station.toml"


@pytest.fixture
def sim_arc2_station(sim_station_spec: SimStationSpec, tmp_path: Path) -> Iterator[Path]:
    """The chip of ``sim_station_spec`` behind the pyarc2 stand-in (``sim.instruments.arc2``:
    an ArC TWO with id 0, rows on channels 0.., columns on 16..), registered for the test's
    duration; the path of its station file (``[arc2] module = "sim.instruments.arc2"``, in the
    test's ``tmp_path``), for ``--backend lab --station PATH`` in the test's process."""
    from protocols.toml_writer import dump_toml
    from sim.instruments.arc2 import SimulatedArc2

    with SimulatedArc2.from_spec(sim_station_spec) as board:
        path = tmp_path / ARC2_STATION_FILE
        path.write_text(dump_toml(board.station_values(sim_station_spec)), encoding="utf-8")
        yield path
