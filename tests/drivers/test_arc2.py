"""The ArC TWO bench (``drivers/arc2.py``) against the pyarc2 stand-in on the emulated chip:
the station's [arc2] section checked with messages that name the field, limits refused before
any pyarc2 call, the channel map, the safe state on every exit, and a training end to end
through ``hilctl train --backend lab``."""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from drivers.arc2 import Arc2Access, Arc2Bench
from drivers.backend import LabBackend
from drivers.lab_tile import LabTile
from drivers.limits import CommandRefused, LimitError
from drivers.station import load_station
from hilctl.cli import main
from hilctl.config import device_config, no_variation, tile_config
from hilctl.errors import BenchError, ConfigError
from hilctl.testing import check_tile
from hilctl.train_config import resolve_train_config
from hilctl.training import train
from protocols.station import ReadSection, StationConfig, WriteSection
from protocols.toml_writer import dump_toml
from sim.instruments import arc2 as standin
from sim.instruments.arc2 import IdleMode, SimulatedArc2
from sim.instruments.chip import ChipConfig, EmulatedChip

DEVICE = {**no_variation("soft-bounds"), "dw_min": 0.01, "tau": 1.0}
ROWS = [5, 2, 40, 0, 33, 1, 3, 4]  # deliberately not in order: the map is what counts
COLS = [16, 63, 17, 18, 50, 19, 20, 21]


def station_values(**arc2: object) -> dict[str, object]:
    return {
        "arc2": {"firmware": "fw.bin", "module": "sim.instruments.arc2", "rows": ROWS,
                 "cols": COLS, **arc2},
        "chip": {"rows": 8, "cols": 8},
        "tiles": [{"name": "fast", "rows": 4, "cols": 8},
                  {"name": "slow", "row": 4, "rows": 4, "cols": 8}],
        "write": {"via": "arc2"}, "read": {"via": "arc2"},
        "mapping": {"g_ref": 50e-6, "g_scale": 50e-6, "dw_min": 0.01},
    }


@pytest.fixture
def chip() -> EmulatedChip:
    return EmulatedChip(ChipConfig(rows=8, cols=8, read_noise=1e-10,
                                   device=device_config("soft-bounds", **DEVICE)))


@pytest.fixture
def board(chip):
    with SimulatedArc2(chip, rows=ROWS, cols=COLS, board=0, firmware="fw.bin") as sim:
        yield sim


@pytest.fixture
def station() -> StationConfig:
    return StationConfig.model_validate(station_values())


def calls_after_open(board: SimulatedArc2) -> list[str]:
    """The calls since the bench opened (its __init__ and first safe state)."""
    names = [name for name, _ in board.calls]
    return names[names.index("finalise_operation") + 1:]


# -- the station's [arc2] ---------------------------------------------------------------------

@pytest.mark.parametrize(("change", "named"), [
    ({"arc2": {"rows": [*ROWS[:7], 64]}}, "arc2.rows: channel(s) [64] do not exist; allowed 0-63"),
    ({"arc2": {"cols": [*COLS[:7], 5]}}, "arc2.rows/cols: channel(s) [5] used more than once"),
    ({"arc2": {"rows": ROWS[:7]}}, "arc2.rows: 7 channel(s) for the chip's 8 rows"),
    ({"arc2": {"rows": [*ROWS[:7], 22]}}, "rows must all be in one channel group"),
    ({"arc2": {"idle": "Off"}}, "arc2.idle"),
    ({"arc2": {"module": "pyarc2; import os"}}, "arc2.module"),
    ({"write": {"via": "board"}}, "with [arc2] both must be 'arc2'"),
    ({"arc2": None}, "arc2: write.via and read.via = 'arc2' needs [arc2]"),
    ({"write": {"via": "arc2", "width": 20e-9}}, "write.width: 2e-08 s is shorter than an ArC TWO"),
])
def test_a_bad_arc2_station_names_the_field_and_what_is_allowed(change, named) -> None:
    values = station_values()
    for section, update in change.items():
        values[section] = None if update is None else {**values[section], **update}
    if values["arc2"] is None:
        del values["arc2"]
    with pytest.raises(ValidationError) as refused:
        StationConfig.model_validate(values)
    assert named in str(refused.value)


def test_an_unknown_module_or_board_is_refused_with_what_exists(board) -> None:
    with pytest.raises(ConfigError, match=r"arc2.module: 'no_such_arc2' cannot be imported"):
        Arc2Bench(StationConfig.model_validate(station_values(module="no_such_arc2")))
    with pytest.raises(ConfigError, match="has no find_ids, Instrument, IdleMode"):
        Arc2Bench(StationConfig.model_validate(station_values(module="json")))
    with pytest.raises(BenchError, match=r"arc2.board: no ArC TWO with id 3; found: \[0\]"):
        Arc2Bench(StationConfig.model_validate(station_values(board=3)))
    with pytest.raises(BenchError, match=r"firmware 'other\.bin'"):
        Arc2Bench(StationConfig.model_validate(station_values(firmware="other.bin")))
    assert [name for name, _ in board.calls] == []  # nothing opened, nothing pulsed


# -- limits before any call -------------------------------------------------------------------

def access_with(board: SimulatedArc2, station: StationConfig, **sections: object) -> Arc2Access:
    """An access whose write/read settings are changed after validation (as a bug could), so
    the send-time checks are what stands between them and the board."""
    changed = station.model_copy(update=sections)
    return Arc2Access(changed, standin.Instrument(0, "fw.bin"), IdleMode.SoftGnd)


ONE = (np.array([1]), np.array([2]))


@pytest.mark.parametrize(("sections", "operation", "refusal"), [
    ({"write": WriteSection.model_construct(amplitude=3.5, width=1e-6, via="arc2")}, "pulse",
     LimitError),
    ({"write": WriteSection.model_construct(amplitude=1.5, width=2e-3, via="arc2")}, "pulse",
     LimitError),
    ({"write": WriteSection.model_construct(amplitude=1.5, width=1e-8, via="arc2")}, "masks",
     LimitError),
    ({"read": ReadSection.model_construct(voltage=0.6, via="arc2")}, "read", LimitError),
    ({}, "polarity", CommandRefused),
    ({}, "off-chip", ValueError),
    ({}, "masks-off", CommandRefused),
    ({}, "mvm", CommandRefused),
])
def test_limits_and_bad_arguments_are_refused_before_any_pyarc2_call(board, station, sections,
                                                                     operation, refusal) -> None:
    if operation == "masks":
        station = StationConfig.model_validate(station_values(update="rows"))
    access = access_with(board, station, **sections)
    before = len(board.calls)
    run = {
        "pulse": lambda: access.pulse_cells(*ONE, +1, np.array([3])),
        "masks": lambda: access.pulse_masks(np.array([0, 1]), np.array([2, 3]), -1),
        "read": lambda: access.read_cells(np.array([0, 0, 1]), np.array([0, 1, 1])),
        "polarity": lambda: access.pulse_cells(*ONE, 0, np.array([1])),
        "off-chip": lambda: access.read_cells(np.array([8]), np.array([0])),
        "masks-off": lambda: access.pulse_masks(*ONE, 1),
        "mvm": lambda: access.mvm(np.full((1, 2), 0.1), "rows", np.array([0, 1]), np.arange(8)),
    }[operation]
    with pytest.raises(refusal):
        run()
    assert board.calls[before:] == [] and not board.chip.ledger


#: Limits that float32 cannot hold exactly: the voltages pyarc2 sends (as f32) must round inward.
ODD_LIMITS = {"max_pulse_amplitude": 2.95, "max_read_voltage": 0.33, "max_pulse_width": 1.3e-4}


@settings(max_examples=80, deadline=None)
@given(amplitude=st.floats(0.01, 6.0) | st.sampled_from([2.95, np.nextafter(2.95, 0)]),
       width_ns=st.integers(1, 300_000) | st.just(130_000),
       vread=st.floats(0.01, 1.0) | st.sampled_from([0.33, np.nextafter(0.33, 0)]))
def test_nothing_beyond_the_limits_reaches_the_board(amplitude, width_ns, vread) -> None:
    """Whatever the settings, a pulse reaches the stand-in only if its amplitude and width (as
    the integer ns sent) are within the station's limits, and a read only if its voltage is;
    voltages reach it as the float32 pyarc2 takes, still within (limits float32 cannot hold
    exactly, values drawn at them)."""
    chip = EmulatedChip(ChipConfig(rows=8, cols=8))
    station = StationConfig.model_validate({**station_values(), "limits": ODD_LIMITS})
    with SimulatedArc2(chip, rows=ROWS, cols=COLS) as board:
        check_sends_within_limits(board, station, amplitude, width_ns, vread)


def check_sends_within_limits(board: SimulatedArc2, station: StationConfig, amplitude: float,
                              width_ns: int, vread: float) -> None:
    access = access_with(board, station,
                         write=WriteSection.model_construct(amplitude=amplitude,
                                                            width=width_ns * 1e-9, via="arc2"),
                         read=ReadSection.model_construct(voltage=vread, via="arc2"))
    limits = station.limits
    before = len(board.calls)
    with contextlib.suppress(LimitError):
        access.pulse_cells(*ONE, -1, np.array([1]))
    with contextlib.suppress(LimitError):
        access.read_cells(*ONE)
    sent = board.calls[before:]
    for name, args in sent:
        if name == "pulse_one":
            assert abs(float(np.float32(args[2]))) <= limits.max_pulse_amplitude
            assert limits.min_pulse_width <= args[3] / 1e9 <= limits.max_pulse_width
        if name == "read_one":
            assert abs(float(np.float32(args[2]))) <= limits.max_read_voltage
    sent_width = round(width_ns * 1e-9 * 1e9) / 1e9  # the integer ns the driver sends
    pulse_ok = (amplitude <= limits.max_pulse_amplitude
                and limits.min_pulse_width <= sent_width <= limits.max_pulse_width)
    assert any(name == "pulse_one" for name, _ in sent) == pulse_ok
    assert any(name == "read_one" for name, _ in sent) == (vread <= limits.max_read_voltage)


def test_long_trains_go_out_in_rounds_within_the_burst_limit(board) -> None:
    station = StationConfig.model_validate({**station_values(), "limits": {"max_burst_count": 4}})
    access = Arc2Access(station, standin.Instrument(0, "fw.bin"), IdleMode.SoftGnd)
    access.pulse_cells(np.array([0, 1]), np.array([0, 0]), +1, np.array([10, 3]))
    names = [name for name, _ in board.calls[1:]]
    assert names.count("execute") == 3  # 4 + 4 + 2 pulses of the first cell
    assert board.chip.pulse_ledger() == {(0, 0): 10, (1, 0): 3}


# -- the channel map --------------------------------------------------------------------------

def test_cells_are_reached_through_the_station_channel_map(board, station, chip) -> None:
    """Pulses on chip cell (i, j) go out between channels ROWS[i] (low) and COLS[j] (high) and
    land on that cell; reads of two or more cells of a line are one slice read, and give each
    cell's own current."""
    access = Arc2Access(station, standin.Instrument(0, "fw.bin"), IdleMode.SoftGnd)
    rows, cols = np.array([0, 3, 7, 7]), np.array([1, 4, 0, 6])
    access.pulse_cells(rows, cols, +1, np.array([1, 2, 3, 4]))
    pulses = [args for name, args in board.calls if name == "pulse_one"]
    assert {(low, high) for low, high, *_ in pulses} == {(ROWS[r], COLS[c])
                                                        for r, c in zip(rows, cols, strict=True)}
    assert chip.pulse_ledger() == {(0, 1): 1, (3, 4): 2, (7, 0): 3, (7, 6): 4}
    everything = np.indices((8, 8)).reshape(2, -1)
    before = len(board.calls)
    currents = access.read_cells(everything[0], everything[1])
    assert [name for name, _ in board.calls[before:]] == ["read_slice"] * 8
    expected = chip.conductance().reshape(-1) * station.read.voltage
    # read noise 1e-10 A: 10 sigma
    assert np.abs(currents - expected).max() < 1e-9
    before = len(board.calls)
    column = access.read_cells(np.arange(4), np.full(4, 6))  # a one-hot column read: one call
    sent_vread = float(np.float32(station.read.voltage))  # pyarc2 takes float32
    assert board.calls[before:] == [("read_slice", (COLS[6], sent_vread))]
    assert np.abs(column - chip.conductance()[:4, 6] * station.read.voltage).max() < 1e-9


def test_negative_potentiation_flips_the_voltage(board, chip) -> None:
    station = StationConfig.model_validate(station_values(potentiate="negative"))
    access = Arc2Access(station, standin.Instrument(0, "fw.bin"), IdleMode.SoftGnd)
    access.pulse_cells(*ONE, +1, np.array([1]))
    (pulse,) = [args for name, args in board.calls if name == "pulse_one"]
    assert pulse == (ROWS[1], COLS[2], -station.write.amplitude, 1000)
    assert chip.pulse_ledger() == {(1, 2): -1}  # the stand-in's cells go up on positive


def test_row_updates_fire_each_row_once_per_slot(board, chip) -> None:
    station = StationConfig.model_validate(station_values(update="rows"))
    access = Arc2Access(station, standin.Instrument(0, "fw.bin"), IdleMode.SoftGnd)
    assert access.parallel_update
    access.pulse_masks(np.array([0, 2]), np.array([1, 3, 5]), -1)
    assert [name for name, _ in board.calls[1:]] == ["pulse_slice_masked"] * 2 + ["execute"]
    assert chip.pulse_ledger() == {(r, c): -1 for r in (0, 2) for c in (1, 3, 5)}
    assert access.round_trips() == 1


# -- the safe state ---------------------------------------------------------------------------

def test_opening_and_closing_leave_the_channels_idle(board, station) -> None:
    bench = Arc2Bench(station)
    assert [name for name, _ in board.calls] == ["__init__", "finalise_operation"]
    assert board.idle is IdleMode.SoftGnd
    bench.access.read_cells(*ONE)
    assert board.idle is None
    bench.close()
    assert board.calls[-1] == ("finalise_operation", (IdleMode.SoftGnd, None))
    assert board.idle is IdleMode.SoftGnd
    calls = len(board.calls)
    bench.close()  # again: nothing sent
    with pytest.raises(BenchError, match="read_one after the bench was closed"):
        bench.access.read_cells(*ONE)
    assert len(board.calls) == calls and bench.instruments() == {}
    floating = Arc2Bench(StationConfig.model_validate(station_values(idle="Float")))
    floating.close()
    assert board.idle is IdleMode.Float


def test_a_failed_safe_state_is_reported(board, station) -> None:
    bench = Arc2Bench(station)
    board.fail_at["finalise_operation"] = 1
    with pytest.raises(BenchError, match=r"NOT in its safe state.*arc2: .*finalise_operation"):
        bench.close()
    board.fail_at["finalise_operation"] = 1
    with pytest.raises(BenchError, match="could not be put in its safe state when it was opened"):
        Arc2Bench(station)


def short_run(steps: int = 60):
    task = {"out": 4, "in": 8, "steps": steps, "lr": 0.05, "sigma": 0.1, "eval_window": 20,
            "log_every": 20}
    return resolve_train_config(algorithm="tiki-taka",
                                overrides={"task": task, "algorithm": {"fast_lr": 0.2}})


def test_a_board_failure_mid_run_names_the_call_and_leaves_the_channels_idle(board,
                                                                            station) -> None:
    board.fail_at["read_slice"] = 40
    with pytest.raises(BenchError, match=r"ArC TWO 0: read_slice\(.*\) failed: ArC2Error"):
        train(short_run(), "lab", backend_options={"station": station})
    assert board.calls[-1][0] == "finalise_operation" and board.idle is IdleMode.SoftGnd


def test_ctrl_c_mid_run_leaves_the_channels_idle(board, station) -> None:
    def interrupt(done: int, total: int) -> None:
        if done == 20:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(short_run(), "lab", progress=interrupt, backend_options={"station": station})
    assert board.calls[-1][0] == "finalise_operation" and board.idle is IdleMode.SoftGnd


# -- end to end -------------------------------------------------------------------------------

TASK = {"out": 4, "in": 8, "steps": 400, "lr": 0.05, "sigma": 0.1, "eval_window": 100,
        "log_every": 100}
EMULATOR_SEEDS = range(1, 9)


def test_hilctl_train_tiki_taka_least_squares_on_the_arc2_standin(board, chip, tmp_path,
                                                                  capsys) -> None:
    """``hilctl train --backend lab --station arc2.toml``: Tiki-Taka least squares on a 4 x 8
    tile through the ArC TWO driver and the stand-in, against the emulator with the same
    device (no read periphery: the lab tile reads cells, whose read noise here is 2e-5 weight
    units, far below dw_min = 0.01).

    The bound comes from the seed-to-seed spread: the lab run is one more draw of the
    stochastic pulse trains, so its log rel_err should lie within 4 standard deviations of the
    emulator's over 8 seeds (sd of log rel_err 0.32 over seeds 1-8, 0.36 over seeds 0-11: a
    factor ~3.6 either way from the geometric mean). Measured: lab 0.0069, emulator geometric
    mean 0.0102.
    """
    path = tmp_path / "arc2.toml"
    path.write_text(dump_toml(StationConfig.model_validate(station_values()).model_dump(
        mode="json", exclude_none=True)))
    argv = ["train", "--backend", "lab", "--station", str(path), "--algorithm", "tiki-taka",
            *[f"--set=task.{k}={v}" for k, v in TASK.items()], "--set=algorithm.fast_lr=0.2",
            "--store", str(tmp_path / "store"), "--json"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)
    lab = record["final"]["rel_err"]
    assert record["backend"]["instruments"]["arc2"]["link"]["round_trips"] > 0
    assert chip.ledger and board.idle is IdleMode.SoftGnd

    emulated = np.log([train(resolve_train_config(
        algorithm="tiki-taka", seed=seed,
        overrides={"task": TASK, "device": DEVICE, "periphery": {"is_perfect": True},
                   "algorithm": {"fast_lr": 0.2}}), "sim").final["rel_err"]
        for seed in EMULATOR_SEEDS])
    assert lab < 0.1  # trained: the untrained rel_err is 1
    assert abs(np.log(lab) - emulated.mean()) < 4 * emulated.std(ddof=1)


def test_the_backend_opens_one_arc2_bench_per_station(board, station) -> None:
    with LabBackend() as lab:
        first = lab.bench(station)
        assert isinstance(first, Arc2Bench) and lab.bench(station) is first
        report = lab.report()
    assert report["instruments"]["arc2"]["address"] == "board 0"
    assert Path(report["instruments"]["arc2"]["identity"]).name.startswith("ArC TWO")


# -- hilctl instruments -----------------------------------------------------------------------

def test_instruments_lists_arc2_boards_or_says_pyarc2_is_missing(capsys, monkeypatch) -> None:
    """The listing asks pyarc2 where it is installed (no board is attached in CI: none
    found); where it is missing the listing says so and how to install it."""
    assert main(["instruments", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["arc2"]
    assert listed["installed"] == (importlib.util.find_spec("pyarc2") is not None)
    assert listed["error"] is None and listed["boards"] == []
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyarc2" else find_spec(name, *a))
    assert main(["instruments"]) == 0
    assert "ArC TWO boards (pyarc2):\n  pyarc2 not installed (pip install 'hilctl[arc2]')" in \
        capsys.readouterr().out


def test_instruments_identifies_a_stations_arc2(board, tmp_path, capsys) -> None:
    path = tmp_path / "arc2.toml"
    path.write_text(dump_toml(station_values()))
    assert main(["instruments", "--station", str(path)]) == 0
    out = capsys.readouterr().out
    assert "arc2  board 0  ok" in out and "sim.instruments.arc2.find_ids(): [0]" in out
    path.write_text(dump_toml(station_values(board=5)))
    assert main(["instruments", "--station", str(path), "--json"]) == 3
    (result,) = json.loads(capsys.readouterr().out)["instruments"]
    assert not result["ok"] and "no ArC TWO with id 5" in result["error"]
    assert board.calls == []  # identifying opens nothing


def test_the_example_station_without_its_board_fails_as_a_bench_failure(capsys, tmp_path) -> None:
    """``examples/arc2_station.toml`` is a valid station for pyarc2; with no ArC TWO attached
    (as in CI) a run on it stops before any pulse, exit 3, naming the board id. (Where pyarc2
    cannot be installed, it is refused as bad input, exit 2, saying how to install it.)"""
    example = Path(__file__).resolve().parents[2] / "examples" / "arc2_station.toml"
    station = load_station(example)
    assert station.arc2 is not None and station.arc2.module == "pyarc2"
    code = main(["train", "--backend", "lab", "--station", str(example), "--set=task.out=4",
                 "--set=task.in=8", "--store", str(tmp_path / "store")])
    err = capsys.readouterr().err
    if importlib.util.find_spec("pyarc2") is None:
        assert code == 2 and "pip install 'hilctl[arc2]'" in err, err
    else:
        assert code == 3 and "arc2.board: no ArC TWO with id 0; found: none" in err, err


@pytest.mark.parametrize("update", ["cells", "rows"])
def test_the_lab_tile_on_an_arc2_keeps_the_tile_contract(board, update) -> None:
    """:func:`hilctl.testing.check_tile` over 4 x 8 lab tiles on the stand-in, each on a fresh
    backend (so it takes region ``fast`` again), with either update scheme."""
    station = StationConfig.model_validate(station_values(update=update))
    backends: list[LabBackend] = []

    def make() -> LabTile:
        while backends:
            backends.pop().close()
        backends.append(LabBackend())
        return backends[-1].open_tile(tile_config(rows=4, cols=8, device="soft-bounds"),
                                      station=station)

    try:
        check_tile(make)
    finally:
        while backends:
            backends.pop().close()
    assert board.idle is IdleMode.SoftGnd
    masked = any(name == "pulse_slice_masked" for name, _ in board.calls)
    assert masked == (update == "rows")  # the capability the tile reports is the path it takes


def test_the_pytest_plugins_arc2_station(sim_arc2_station, capsys) -> None:
    """The plugin's ``sim_arc2_station`` (the default simulated station's chip behind the
    stand-in) is a valid ArC TWO station the command line characterises, through ArC TWO calls."""
    station = load_station(sim_arc2_station)
    assert station.arc2 is not None and station.arc2.module == "sim.instruments.arc2"
    assert station.arc2.rows == list(range(8)) and station.arc2.cols == list(range(16, 24))
    code = main(["characterize", "--backend", "lab", "--station", str(sim_arc2_station),
                 "--up", "5", "--down", "5", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    mean = np.array(json.loads(out)["mean"])
    assert np.all(np.diff(mean[:5]) > 0) and np.all(np.diff(mean[5:]) < 0)
    (board,) = standin.BOARDS.values()
    assert any(name == "pulse_one" for name, _ in board.calls)
