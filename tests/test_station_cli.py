"""The command-line side of the physical backend, in-process against a simulated station:
``hilctl sim serve``, ``hilctl instruments``, and ``--station`` of train / compare /
characterize. Every instrument listens on 127.0.0.1 or a pty; fixtures stop them all and close
the lab bench, and a check after each test finds no leaked thread or file descriptor."""

from __future__ import annotations

import contextlib
import gc
import importlib
import json
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import serial.tools.list_ports

import drivers.scpi
from drivers.station import load_station
from hilctl.cli import main
from hilctl.runs import RunStore
from protocols.station import StationConfig
from protocols.toml_writer import dump_toml
from sim.instruments.station import SimulatedStation, load_sim_station

# `hilctl instruments` lists ArC TWO boards through pyarc2, whose import starts its runtime
# (pipes and a timer, once per process): imported before any test, so that the leak check after
# each test sees only what the test itself left open.
with contextlib.suppress(ImportError):
    importlib.import_module("pyarc2")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sim_station.toml"
RESOURCE = re.compile(r"TCPIP0::127\.0\.0\.1::\d+::SOCKET")


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()


@pytest.fixture(autouse=True)
def no_leaks():
    """After each test (and closing the bench): no new threads, no new file descriptors."""
    threads = set(threading.enumerate())
    fds = _fds()
    yield
    gc.collect()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        extra = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
        if not extra:
            break
        time.sleep(0.02)
    assert not extra, f"threads left running: {extra}"
    leaked = {fd: _target(fd) for fd in _fds() - fds}
    leaked = {fd: target for fd, target in leaked.items() if target is not None}
    assert not leaked, f"file descriptors left open: {leaked}"


def _target(fd: str) -> str | None:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # the fd of the listdir itself, closed by now
        return None


@pytest.fixture
def sim():
    with SimulatedStation.from_file(EXAMPLE) as station:
        yield station


@pytest.fixture
def station_file(sim, tmp_path) -> Path:
    return sim.write_station(tmp_path / "station.toml")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv: str) -> str:
    """A command that must be refused: exit 2, nothing on stdout, one line on stderr."""
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("hilctl: error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------------------------
# The simulated station
# ---------------------------------------------------------------------------------------------


def test_simulated_station_resolves_a_valid_station_that_round_trips(sim, tmp_path):
    spec = load_sim_station(EXAMPLE)
    assert (spec.chip.rows, spec.chip.cols) == (8, 8) and spec.device.model == "soft-bounds"
    station = sim.station
    assert isinstance(station, StationConfig)
    assert station.board.port == sim.board.port and os.path.exists(station.board.port)
    assert RESOURCE.fullmatch(station.pulse_generator.resource)
    assert RESOURCE.fullmatch(station.smu.resource)
    assert station.pulse_generator.resource != station.smu.resource
    assert [t.name for t in station.tiles] == ["fast", "slow"]
    assert (station.mapping.g_ref, station.mapping.g_scale) == (spec.conductance.g_ref,
                                                                spec.conductance.g_scale)
    written = sim.write_station(tmp_path / "resolved.toml")
    assert load_station(written) == station


def test_toml_writer_escapes_and_round_trips():
    import tomllib

    data = {"title": 'a "quoted"\\ line\nnext\x7f', "t": {"x": 1e-07, "flag": True, "n": -3,
            "big": 1e300, "list": [1.5, 2]}, "arr": [{"name": "é"}, {"name": "b"}]}
    assert tomllib.loads(dump_toml(data)) == data


def test_simulated_station_refuses_a_bad_spec(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(EXAMPLE.read_text().replace('name = "slow"\nrow = 4', 'name = "slow"\nrow = 6'))
    with pytest.raises(ValueError, match=r"tiles\.slow"):
        load_sim_station(bad)


# ---------------------------------------------------------------------------------------------
# hilctl sim serve
# ---------------------------------------------------------------------------------------------


def test_sim_serve_prints_addresses_and_writes_a_station(capsys, tmp_path):
    out_file = tmp_path / "served.toml"
    code, out, err = run(capsys, "sim", "serve", str(EXAMPLE), "--seconds", "0.5",
                         "--write-station", str(out_file))
    assert code == 0, err
    station = load_station(out_file)
    assert station.board.port in out and "/dev/" in station.board.port
    assert station.pulse_generator.resource in out and station.smu.resource in out
    assert len(RESOURCE.findall(out)) == 2
    assert str(out_file) in out
    assert "stopping" in out


def test_sim_serve_default_station_file_is_temporary(capsys):
    code, out, err = run(capsys, "sim", "serve", str(EXAMPLE), "--seconds", "0.2")
    assert code == 0, err
    path = re.search(r"station file\s+(\S+)", out).group(1)
    assert path.endswith(".toml") and not os.path.exists(path)  # removed at stop


def test_sim_serve_says_when_half_select_disturb_is_on(capsys, tmp_path):
    served = tmp_path / "disturbed.toml"
    served.write_text(EXAMPLE.read_text().replace("rate = 0.0", "rate = 0.2"))
    code, out, err = run(capsys, "sim", "serve", str(served), "--seconds", "0.2")
    assert code == 0, err
    assert "half-select disturb on: rate 0.2, exponent 8, under the station's bias v/2" in out
    assert "disturb moved 0 cell(s) by 0 device pulse(s)" in out
    code, out, err = run(capsys, "sim", "serve", str(EXAMPLE), "--seconds", "0.2")
    assert code == 0 and "half-select" not in out and "disturb moved" not in out


def test_sim_serve_refuses_a_missing_file(capsys, tmp_path):
    err = refused(capsys, "sim", "serve", str(tmp_path / "nope.toml"))
    assert "nope.toml" in err


# ---------------------------------------------------------------------------------------------
# hilctl instruments
# ---------------------------------------------------------------------------------------------


def test_instruments_identifies_every_instrument_of_a_station(capsys, sim, station_file):
    code, out, err = run(capsys, "instruments", "--station", str(station_file))
    assert code == 0, (out, err)
    assert "hilctl-sim 0.1" in out and "8 x 8" in out and "parallel_update" in out
    assert "33522B" in out and "MODEL 2450" in out
    assert "all 3 instrument(s) answered" in out

    code, out, _ = run(capsys, "instruments", "--station", str(station_file), "--json")
    record = json.loads(out)
    assert code == 0 and record["ok"]
    by_name = {r["name"]: r for r in record["instruments"]}
    assert by_name["board"]["firmware"] == "hilctl-sim 0.1"
    assert by_name["pulse_generator"]["idn"].startswith("Keysight")
    assert by_name["smu"]["address"] == sim.station.smu.resource


def test_instruments_names_what_failed_when_the_station_is_gone(capsys, tmp_path):
    with SimulatedStation.from_file(EXAMPLE) as station:
        path = station.write_station(tmp_path / "station.toml")
        addresses = station.addresses()
    code, out, _ = run(capsys, "instruments", "--station", str(path))
    assert code == 3  # an instrument failed
    assert "FAILED" in out and "3 of 3 instrument(s) failed" in out
    for address in addresses.values():
        assert address in out


def test_instruments_listing_tolerates_failures(capsys, monkeypatch):
    def broken():
        raise OSError("no VISA for you")

    monkeypatch.setattr(drivers.scpi, "shared_resource_manager", broken)
    monkeypatch.setattr(serial.tools.list_ports, "comports", lambda: (_ for _ in ()).throw(
        RuntimeError("no ports either")))
    code, out, _ = run(capsys, "instruments")
    assert code == 0
    assert "could not list VISA resources: OSError: no VISA for you" in out
    assert "could not list serial ports: RuntimeError: no ports either" in out


# ---------------------------------------------------------------------------------------------
# --station in characterize, train and compare
# ---------------------------------------------------------------------------------------------


def test_characterize_on_the_lab_backend(capsys, sim, station_file):
    code, out, err = run(capsys, "characterize", "--backend", "lab", "--station", str(station_file),
                         "--up", "20", "--down", "20", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert (record["rows"], record["cols"]) == (4, 8)  # the first region's size
    assert record["station"] == str(station_file)
    mean = np.array(record["mean"])
    peak = mean[19]
    assert peak > record["summary"]["start"]["mean"] + 0.1  # rises ...
    assert np.all(np.diff(mean[:20]) > 0)
    assert mean[-1] < peak - 0.1 and np.all(np.diff(mean[20:]) < 0)  # ... then falls
    rows = {entry.row for entry in sim.chip.ledger}
    assert rows <= {0, 1, 2, 3}

    sim.chip.ledger.clear()
    code, out, err = run(capsys, "characterize", "--backend", "lab", "--station", str(station_file),
                         "--tile", "slow", "--up", "2", "--down", "2")
    assert code == 0, err
    assert "tile slow of station" in out
    assert {entry.row for entry in sim.chip.ledger} <= {4, 5, 6, 7}


def test_train_on_the_lab_backend_records_a_run(capsys, sim, station_file, tmp_path):
    store = tmp_path / "store"
    code, out, err = run(capsys, "train", "--backend", "lab", "--station", str(station_file),
                         "--set", "task.steps=100", "--set", "task.out=4", "--set", "task.in=8",
                         "--json", "--store", str(store))
    assert code == 0, err
    record = json.loads(out)
    assert record["config"]["algorithm"]["name"] == "analog-sgd"
    assert 0 < record["final"]["rel_err"] < 10
    runs = RunStore(store).list_runs()
    assert [(r.run_id, r.backend, r.status) for r in runs] == [(record["run_id"], "lab", "completed")]
    assert sim.chip.ledger  # the pulses went through the board


def test_compare_on_the_lab_backend_reopens_the_bench_per_run(capsys, sim, station_file, tmp_path):
    """Each run takes the station's regions from the first again (the bench is closed between
    runs), so analog-sgd and then tiki-taka (two tiles) fit the two regions."""
    code, out, err = run(capsys, "compare", "--backend", "lab", "--station", str(station_file),
                         "--algorithms", "analog-sgd,tiki-taka", "--set", "task.steps=20",
                         "--set", "task.out=4", "--set", "task.in=8", "--store",
                         str(tmp_path / "store"), "--json")
    assert code == 0, err
    assert [row["algorithm"] for row in json.loads(out)["rows"]] == ["analog-sgd", "tiki-taka"]


@pytest.mark.parametrize("command", ["train", "characterize"])
def test_station_options_are_refused_where_they_do_not_apply(capsys, tmp_path, command):
    err = refused(capsys, command, "--backend", "lab")
    assert "--backend lab needs --station" in err
    missing = tmp_path / "missing-station.toml"
    err = refused(capsys, command, "--backend", "lab", "--station", str(missing))
    assert str(missing) in err
    existing = tmp_path / "station.toml"
    existing.write_text("")
    err = refused(capsys, command, "--backend", "sim", "--station", str(existing))
    assert "only --backend lab uses a station file" in err


def test_characterize_refuses_an_unknown_tile(capsys, station_file):
    err = refused(capsys, "characterize", "--backend", "lab", "--station", str(station_file),
                  "--tile", "medium")
    assert "no tile 'medium'" in err and "fast, slow" in err
    assert "--tile" in refused(capsys, "characterize", "--tile", "fast")


def test_an_invalid_station_file_is_refused_before_a_run(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[chip]\nrows = 8\ncols = 8\n\n[[tiles]]\nname = "a"\nrows = 9\ncols = 8\n')
    err = refused(capsys, "train", "--backend", "lab", "--station", str(bad), "--store",
                  str(tmp_path / "store"))
    assert str(bad) in err and "tiles.a" in err
    assert RunStore(tmp_path / "store").list_runs() == []
