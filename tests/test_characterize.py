"""Tests of :mod:`hilctl.characterize` (the measurement), :mod:`hilctl.plotting`, and the
per-cell traces, ``--out`` record and ``--config`` file of ``hilctl characterize``."""

from __future__ import annotations

import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilctl.backends import open_tile
from hilctl.characterize import CellTrace, PulseResponse, measure_pulse_response
from hilctl.cli import main
from hilctl.config import no_variation, tile_config
from hilctl.tile import Capabilities
from sim.instruments.station import SimulatedStation, load_sim_station

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class RecordingTile:
    """A tile that only implements the interface and records what is done to it.

    Each up pulse adds 0.1 and each down pulse subtracts 0.3, so every step is known.
    """

    capabilities = Capabilities(parallel_mvm=False, parallel_update=False, exact_read=True)

    def __init__(self, rows: int = 2, cols: int = 3) -> None:
        self.rows, self.cols = rows, cols
        self.w = np.zeros((rows, cols))
        self.calls: list[tuple[str, object]] = []

    def program_weights(self, target, tol=0.0):
        self.calls.append(("program", np.array(target)))
        self.w = np.array(target, dtype=float)
        return self.w.copy()

    def apply_pulses(self, counts):
        counts = np.asarray(counts)
        self.calls.append(("pulses", counts.copy()))
        self.w = self.w + np.where(counts > 0, 0.1, -0.3) * np.abs(counts)

    def read_weights(self):
        self.calls.append(("read", None))
        return self.w.copy()

    def forward(self, x):  # pragma: no cover - not used by the measurement
        raise AssertionError("characterize must not use forward")

    def backward(self, d):  # pragma: no cover
        raise AssertionError("characterize must not use backward")

    def update(self, x, d, lr):  # pragma: no cover
        raise AssertionError("characterize must not use update")


def sim_tile(rows=4, cols=4, device="soft-bounds", seed=0, **device_values):
    config = tile_config(rows=rows, cols=cols, device=device, device_values=device_values,
                         seed=seed)
    return open_tile("sim", config)


def test_uses_only_the_tile_interface_in_order():
    tile = RecordingTile()
    seen = []
    response = measure_pulse_response(tile, up=2, down=1, start=0.25,
                                      progress=lambda done, total: seen.append((done, total)))
    kinds = [kind for kind, _ in tile.calls]
    assert kinds == ["program", "pulses", "read", "pulses", "read", "pulses", "read"]
    np.testing.assert_array_equal(tile.calls[0][1], np.full((2, 3), 0.25))
    signs = [int(np.unique(counts)[0]) for kind, counts in tile.calls if kind == "pulses"]
    assert signs == [1, 1, -1]
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert response.mean == pytest.approx([0.35, 0.45, 0.15])
    assert response.std == pytest.approx([0.0, 0.0, 0.0])
    assert response.cells == 6


def test_summary_helpers():
    tile = RecordingTile()
    response = measure_pulse_response(tile, up=2, down=2, start=0.0)
    assert response.after_up == pytest.approx((0.2, 0.0))
    assert response.after_down == pytest.approx((-0.4, 0.0))
    assert response.first_up_step == pytest.approx(0.1)
    assert response.first_down_step == pytest.approx(-0.3)
    assert response.asymmetry == pytest.approx(1 / 3)
    summary = response.summary()
    assert summary["start"] == {"mean": 0.0, "std": 0.0}
    assert summary["asymmetry"] == pytest.approx(1 / 3)
    matches = [re.fullmatch(r"(\S+(?: \S+)*)\s{2,}(\S.*)", line)
               for line in response.summary_lines()]
    assert all(matches)
    assert [m.group(1) for m in matches] == [
        "start", "after 2 up", "after 2 down", "first up step", "first down step",
        "up/down ratio",
    ]
    assert len({m.start(2) for m in matches}) == 1  # the values are aligned in one column
    assert matches[3].group(2) == "+1.000e-01"


def test_no_pulses_in_one_direction():
    only_down = measure_pulse_response(RecordingTile(), up=0, down=3, start=0.5)
    assert only_down.first_up_step is None and only_down.asymmetry is None
    assert only_down.first_down_step == pytest.approx(-0.3)
    assert only_down.after_up == (0.5, 0.0)
    nothing = measure_pulse_response(RecordingTile(), up=0, down=0, start=0.0)
    assert nothing.mean == [] and nothing.after_down == (0.0, 0.0)
    assert "n/a" in nothing.summary_lines()[-1]


@pytest.mark.parametrize("bad", [{"up": -1}, {"down": -2}, {"start": float("nan")},
                                 {"start": float("inf")}])
def test_bad_arguments_raise_value_error(bad):
    arguments = {"up": 1, "down": 1, "start": 0.0, **bad}
    with pytest.raises(ValueError, match=next(iter(bad))):
        measure_pulse_response(RecordingTile(), **arguments)


def test_response_checks_lengths():
    with pytest.raises(ValueError, match="mean must have up"):
        PulseResponse(up=2, down=1, start=0.0, start_mean=0.0, start_std=0.0, mean=[0.0],
                      std=[0.0, 0.0, 0.0], cells=1)


def test_soft_bounds_without_variation_matches_closed_form():
    # w_{k+1} = w_k + 0.01 (1 - w_k): after k up pulses from 0, w = 1 - 0.99**k;
    # down: w_{j+1} = w_j - 0.01 (1 + w_j), so w + 1 shrinks by 0.99 per pulse.
    tile = sim_tile(**no_variation("soft-bounds"), dw_min=0.01, w_max=1.0, w_min=-1.0)
    response = measure_pulse_response(tile, up=300, down=200, start=0.0)
    k = np.arange(1, 301)
    np.testing.assert_allclose(response.mean[:300], 1 - 0.99**k, rtol=0, atol=1e-5)
    top = 1 - 0.99**300
    j = np.arange(1, 201)
    np.testing.assert_allclose(response.mean[300:], -1 + (1 + top) * 0.99**j, rtol=0, atol=1e-5)
    assert max(response.std) < 1e-6


@settings(max_examples=25, deadline=None)
@given(up=st.integers(0, 12), down=st.integers(0, 12),
       device=st.sampled_from(["constant-step", "soft-bounds", "pow-step", "piecewise"]),
       start=st.floats(-0.3, 0.3))
def test_lengths_and_spread_on_the_emulator(up, down, device, start):
    response = measure_pulse_response(sim_tile(rows=2, cols=3, device=device), up, down, start)
    assert len(response.mean) == len(response.std) == up + down
    assert all(s >= 0 for s in response.std)
    assert response.start_mean == pytest.approx(start, abs=1e-6)
    assert all(np.isfinite(response.mean))


def test_plot_writes_png(tmp_path):
    from hilctl.plotting import plot_pulse_response

    response = measure_pulse_response(sim_tile(), up=40, down=40, start=0.0)
    path = plot_pulse_response(response, tmp_path / "curve.png", "test")
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # a real figure with axes, text and a curve, not an empty image


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    from hilctl.errors import HilctlError
    from hilctl.plotting import plot_pulse_response

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    response = measure_pulse_response(RecordingTile(), up=1, down=1, start=0.0)
    with pytest.raises(HilctlError, match=r"pip install 'hilctl\[plot\]'"):
        plot_pulse_response(response, tmp_path / "x.png", "t")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------
# Per-cell traces.
# ---------------------------------------------------------------------------------------------


class OffsetTile(RecordingTile):
    """A :class:`RecordingTile` whose cell ``(r, c)`` lands ``10 r + c`` above the programmed
    weight, so that every cell's trace differs and the row-major order can be checked."""

    def program_weights(self, target, tol=0.0):
        super().program_weights(target, tol)
        rows, cols = np.indices((self.rows, self.cols))
        self.w = self.w + 10.0 * rows + cols
        return self.w.copy()


def test_per_cell_traces_are_row_major_and_in_pulse_order():
    response = measure_pulse_response(OffsetTile(rows=2, cols=3), up=2, down=1, start=0.5,
                                      per_cell=True)
    trace = response.per_cell
    assert trace is not None and (trace.rows, trace.cols) == (2, 3)
    offsets = np.array([0.0, 1, 2, 10, 11, 12])
    np.testing.assert_allclose(trace.start, 0.5 + offsets)
    np.testing.assert_allclose(trace.weights, 0.5 + offsets + np.array([[0.1], [0.2], [-0.1]]))
    assert trace.weights.dtype == np.float64 and trace.weights.shape == (3, 6)


def test_per_cell_traces_agree_with_mean_and_spread():
    response = measure_pulse_response(sim_tile(rows=4, cols=4), up=6, down=5, start=0.1,
                                      per_cell=True)
    trace = response.per_cell
    assert trace is not None and trace.weights.shape == (11, 16)
    np.testing.assert_allclose(trace.weights.mean(axis=1), response.mean, rtol=0, atol=1e-12)
    np.testing.assert_allclose(trace.weights.std(axis=1), response.std, rtol=0, atol=1e-12)
    assert trace.start.mean() == pytest.approx(response.start_mean, abs=1e-12)
    assert trace.start.std() == pytest.approx(response.start_std, abs=1e-12)
    assert trace.weights.std(axis=1).max() > 0  # the cells do differ (device-to-device spread)


def test_no_per_cell_traces_unless_asked():
    assert measure_pulse_response(RecordingTile(), up=2, down=2, start=0.0).per_cell is None


def test_per_cell_traces_check_their_shapes():
    with pytest.raises(ValueError, match="start must have shape"):
        CellTrace(rows=2, cols=2, start=np.zeros(3), weights=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="weights must have shape"):
        CellTrace(rows=2, cols=2, start=np.zeros(4), weights=np.zeros((1, 3)))
    trace = CellTrace(rows=1, cols=1, start=np.zeros(1), weights=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="per_cell must hold up \\+ down = 3 pulses"):
        PulseResponse(up=2, down=1, start=0.0, start_mean=0.0, start_std=0.0, mean=[0.0] * 3,
                      std=[0.0] * 3, cells=1, per_cell=trace)


# ---------------------------------------------------------------------------------------------
# The command line: --per-cell, --out, --config.
# ---------------------------------------------------------------------------------------------

SMALL = ["--rows", "4", "--cols", "4"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def finite_numbers(values: list[object]) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) for v in values)


def check_per_cell(record: dict, rows: int, cols: int) -> None:
    """The ``per_cell`` key of a record: its shape, and that it agrees with mean and start."""
    per_cell = record["per_cell"]
    assert set(per_cell) == {"rows", "cols", "start", "weights"}
    assert (per_cell["rows"], per_cell["cols"]) == (rows, cols)
    assert len(per_cell["start"]) == rows * cols and finite_numbers(per_cell["start"])
    assert len(per_cell["weights"]) == record["up"] + record["down"]
    for weights in per_cell["weights"]:
        assert len(weights) == rows * cols and finite_numbers(weights)
    weights = np.array(per_cell["weights"])
    np.testing.assert_allclose(weights.mean(axis=1), record["mean"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(weights.std(axis=1), record["std"], rtol=0, atol=1e-12)
    start = record["summary"]["start"]
    assert np.mean(per_cell["start"]) == pytest.approx(start["mean"], abs=1e-12)


def test_out_writes_the_record_json_prints(capsys, tmp_path):
    path = tmp_path / "chip.json"
    code, out, err = run(capsys, "characterize", *SMALL, "--up", "4", "--down", "3",
                         "--per-cell", "--json", "--out", str(path))
    assert code == 0, err
    printed = json.loads(out)
    assert json.loads(path.read_text()) == printed
    check_per_cell(printed, 4, 4)
    assert os.listdir(tmp_path) == ["chip.json"]  # no temporary file left behind


def test_out_without_json_prints_the_summary(capsys, tmp_path):
    path = tmp_path / "chip.json"
    code, out, err = run(capsys, "characterize", *SMALL, "--up", "3", "--down", "3",
                         "--out", str(path))
    assert code == 0, err
    assert out.splitlines()[0].startswith("soft-bounds on sim: 4 x 4 cells")
    assert out.splitlines()[-1] == f"  record written to {path}"
    record = json.loads(path.read_text())
    assert "per_cell" not in record  # only with --per-cell
    assert len(record["mean"]) == 6 and record["command"] == "characterize"


def test_per_cell_with_json_only(capsys):
    code, out, err = run(capsys, "characterize", "--rows", "2", "--cols", "3", "--up", "2",
                         "--down", "2", "--per-cell", "--json")
    assert code == 0, err
    check_per_cell(json.loads(out), 2, 3)


def test_per_cell_needs_json_or_out(capsys, monkeypatch):
    monkeypatch.setattr("hilctl.cli.characterize.backend_from_args", _must_not_run)
    code, out, err = run(capsys, "characterize", "--per-cell")
    assert code == 2 and out == ""
    assert err.startswith("hilctl: error: --per-cell") and err.count("\n") == 1, err
    assert "Traceback" not in err


def _must_not_run(*args: object, **kwargs: object) -> None:
    raise AssertionError("a refused command line must not reach the backend")


@pytest.mark.parametrize(("target", "expected"), [
    ("missing/chip.json", "does not exist"),
    ("chip.txt", ".json"),
    ("adir.json", "is a directory"),
])
def test_a_bad_out_path_is_refused_before_measuring(capsys, monkeypatch, tmp_path, target,
                                                    expected):
    (tmp_path / "adir.json").mkdir()
    monkeypatch.setattr("hilctl.cli.characterize.measure_pulse_response", _must_not_run)
    code, out, err = run(capsys, "characterize", "--out", str(tmp_path / target))
    assert code == 2 and out == ""
    assert err.startswith("hilctl: error: --out: ") and err.count("\n") == 1, err
    assert expected in err


def test_a_failed_write_keeps_the_old_file_and_the_results(capsys, monkeypatch, tmp_path):
    path = tmp_path / "chip.json"
    path.write_text("old")

    def refuse(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("hilctl.cli.output.os.replace", refuse)
    code, out, err = run(capsys, "characterize", *SMALL, "--up", "2", "--down", "2", "--json",
                         "--out", str(path))
    assert code == 1
    assert len(json.loads(out)["mean"]) == 4  # the results are still shown
    assert "--out: could not write" in err and "No space left" in err
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["chip.json"]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


DEVICE_FILE = '[device]\nmodel = "soft-bounds"\ndw_min = 0.01\nw_max = 0.6\n'


def characterize_json(capsys, *argv: str) -> dict:
    code, out, err = run(capsys, "characterize", *SMALL, "--up", "2", "--down", "2",
                         "--no-variation", "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def test_config_file_is_honoured_and_the_command_line_overrides_it(capsys, tmp_path):
    path = str(write(tmp_path / "device.toml", DEVICE_FILE))
    record = characterize_json(capsys, "--config", path)
    assert record["device"] == "soft-bounds"
    assert record["config"]["device"]["w_max"] == 0.6
    assert record["summary"]["first_up_step"] == pytest.approx(0.01, rel=1e-5)
    record = characterize_json(capsys, "--config", path, "--set", "device.dw_min=0.02")
    assert record["summary"]["first_up_step"] == pytest.approx(0.02, rel=1e-5)
    assert record["config"]["device"]["w_max"] == 0.6  # the rest of the file still holds
    record = characterize_json(capsys, "--config", path, "--device", "constant-step")
    assert record["device"] == "constant-step" and record["config"]["device"]["dw_min"] == 0.01


def test_config_files_seed_and_the_seed_option(capsys, tmp_path):
    path = str(write(tmp_path / "run.toml", "seed = 7\n" + DEVICE_FILE))
    assert characterize_json(capsys, "--config", path)["seed"] == 7
    assert characterize_json(capsys, "--config", path, "--seed", "0")["seed"] == 0


def test_a_train_config_file_is_accepted(capsys, tmp_path):
    """characterize reads the tile's sections of a file written for train, and ignores the
    sections only a training run uses; train accepts a file holding only [device]."""
    train_file = write(tmp_path / "run.toml", '[task]\nname = "least-squares"\nsteps = 50\n'
                       '[algorithm]\nname = "tiki-taka"\n[tile]\nmax_input_size = 4\n'
                       '[run]\ncheckpoint_seconds = 5\n' + DEVICE_FILE)
    record = characterize_json(capsys, "--config", str(train_file))
    assert record["config"]["device"]["dw_min"] == 0.01
    device_file = str(write(tmp_path / "device.toml", DEVICE_FILE))
    code, out, err = run(capsys, "train", "--config", device_file, "--set", "task.steps=20",
                         "--store", str(tmp_path / "store"), "--json")
    assert code == 0, err
    assert json.loads(out)["config"]["device"]["dw_min"] == 0.01


@pytest.mark.parametrize(("text", "expected"), [
    (DEVICE_FILE + "bogus = 1\n", ["device.bogus", "unknown key", "dw_min", "w_max"]),
    ('[device]\nmodel = "nope"\n', ["device.model", "'nope'", "soft-bounds", "pow-step"]),
    ("[update]\nspeed = 2\n", ["update.speed", "desired_bl"]),
    ("[bogus]\nx = 1\n", ["unknown section 'bogus'", "device"]),
    ("seed = -1\n", ["seed", ">= 0"]),
    ("[device\n", ["--config"]),
])
def test_bad_config_files_are_one_line_and_exit_2(capsys, monkeypatch, tmp_path, text,
                                                   expected):
    monkeypatch.setattr("hilctl.cli.characterize.measure_pulse_response", _must_not_run)
    path = write(tmp_path / "device.toml", text)
    code, out, err = run(capsys, "characterize", "--config", str(path))
    assert code == 2 and out == ""
    assert err.startswith("hilctl: error: ") and err.count("\n") == 1, err
    for part in expected:
        assert part in err, (part, err)


# ---------------------------------------------------------------------------------------------
# On the lab backend, against a simulated station in this process.
# ---------------------------------------------------------------------------------------------

STATION = Path(__file__).resolve().parents[1] / "examples" / "sim_station.toml"


@pytest.fixture
def station(tmp_path: Path):
    with SimulatedStation(load_sim_station(STATION)) as sim:
        yield sim, sim.write_station(tmp_path / "station.toml")


@pytest.mark.parametrize("section", ["device", "periphery"])
def test_a_config_files_device_section_is_refused_on_the_lab(capsys, station, tmp_path,
                                                            section):
    sim, path = station
    config = write(tmp_path / "device.toml", DEVICE_FILE if section == "device" else
                   "[periphery]\nout_noise = 0.0\n")
    code, out, err = run(capsys, "characterize", "--backend", "lab", "--station", str(path),
                         "--config", str(config), "--out", str(tmp_path / "chip.json"))
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert f"[{section}] of {config}" in err and "describes the chip" in err
    assert not sim.chip.ledger  # refused before any instrument was touched
    assert not (tmp_path / "chip.json").exists()


def test_per_cell_out_on_the_lab(capsys, station, tmp_path):
    _, path = station
    out_path = tmp_path / "chip.json"
    code, out, err = run(capsys, "characterize", "--backend", "lab", "--station", str(path),
                         "--tile", "fast", "--up", "3", "--down", "3", "--per-cell", "--out",
                         str(out_path))
    assert code == 0, err
    assert f"record written to {out_path}" in out
    record = json.loads(out_path.read_text())
    assert record["backend"] == "lab" and "device" not in record
    check_per_cell(record, 4, 8)  # the station's tile region "fast" is 4 x 8 cells
