"""What a lab sees of a bench run from the command line, against a simulated station in this
process: the station describes the chip (device settings are refused, its weight range bounds
``characterize``), the run records what the bench had, link trouble is counted and shown,
cells that do not move are called out, ``sim serve`` prints commands that work, and a lossy
link still lands every pulse exactly once."""

from __future__ import annotations

import collections
import json
import shlex
from pathlib import Path

import pytest

from drivers.board import BoardClient
from hilctl.cli import main
from hilctl.runs import RunStore
from protocols import board as pb
from sim.cli import example_commands
from sim.instruments.chip import LedgerEntry
from sim.instruments.station import SimStationSpec, SimulatedStation, load_sim_station

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "sim_station.toml"
SHAPE = ["--set", "task.out=4", "--set", "task.in=8"]
SHORT = [*SHAPE, "--set", "task.steps=40", "--set", "task.log_every=10", "--set",
         "task.eval_window=10"]


def spec_with(**sections: dict[str, object]) -> SimStationSpec:
    """The example station with some sections changed (``conductance={...}``, ...)."""
    spec = load_sim_station(EXAMPLE)
    update = {name: getattr(spec, name).model_copy(update=values) for name, values in sections.items()}
    return spec.model_copy(update=update)


@pytest.fixture
def station(tmp_path: Path):
    with SimulatedStation(load_sim_station(EXAMPLE)) as sim:
        yield sim, sim.write_station(tmp_path / "station.toml")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [
    ["train", "--device", "pow-step"],
    ["train", "--set", "device.dw_min=0.01"],
    ["train", "--set", "periphery.out_noise=0"],
    ["train", "--no-variation"],
    ["characterize", "--device", "soft-bounds"],
    ["characterize", "--set", "device.tau=0.5"],
    ["train", "--set", "update.engine=numpy"],
    ["characterize", "--set", "update.threads=2"],
])
def test_device_settings_are_refused_on_the_lab(capsys, station, tmp_path, argv) -> None:
    sim, path = station
    store = ["--store", str(tmp_path / "store")] if argv[0] == "train" else []
    code, out, err = run(capsys, *argv, "--backend", "lab", "--station", str(path), *store)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "the station file describes the chip" in err
    assert not sim.chip.ledger  # refused before any instrument was touched


@pytest.mark.parametrize(("text", "named"), [
    ('[device]\nmodel = "soft-bounds"\n', "[device] of"),
    # the emulator's engine means nothing on a chip; the bench's own [update] keys still apply
    ('[update]\nengine = "numba"\n', "update.engine in"),
])
def test_a_config_files_emulator_settings_are_refused_on_the_lab(capsys, station, tmp_path,
                                                                 text, named) -> None:
    _, path = station
    config = tmp_path / "run.toml"
    config.write_text(text)
    code, _, err = run(capsys, "train", "--backend", "lab", "--station", str(path), "--config",
                       str(config))
    assert code == 2 and named in err and "describes the chip" in err


def test_characterize_on_the_lab_takes_the_stations_weight_range(capsys, station) -> None:
    """The example chip holds weights in [-1, 1] (its mapping's conductance window); the
    emulator's default device would have refused --start 0.8 (bounds +-0.6)."""
    _, path = station
    code, out, err = run(capsys, "characterize", "--backend", "lab", "--station", str(path),
                         "--start", "0.8", "--up", "2", "--down", "2", "--json")
    assert code == 0, err
    record = json.loads(out)
    assert record["summary"]["start"]["mean"] == pytest.approx(0.8, abs=0.02)
    assert "device" not in record and "device" not in record["config"]
    code, _, err = run(capsys, "characterize", "--backend", "lab", "--station", str(path),
                       "--start", "1.2")
    assert code == 2 and "[-1.0, 1.0]" in err and "the station file" in err


def test_a_lab_run_records_what_the_bench_had(capsys, tmp_path) -> None:
    # A reply timeout of 2 s, not the example's 0.2 s: on a loaded CI machine the in-process
    # board can be slower than 0.2 s, and this test is about the record, not the link's timing
    # (link trouble has its own tests below).
    with SimulatedStation(spec_with(board={"timeout": 2.0})) as sim:
        path = sim.write_station(tmp_path / "station.toml")
        store = tmp_path / "store"
        code, out, err = run(capsys, "train", "--backend", "lab", "--station", str(path),
                             "--algorithm", "tiki-taka", *SHORT, "--store", str(store))
        assert code == 0, err
        assert "no retries, timeouts or reconnects" in out and "hilctl-sim" in out  # the summary
        assert "tiki-taka / chip on lab" in out and "soft-bounds" not in out  # no emulator device
        record = RunStore(store).get_run(RunStore(store).list_runs()[0].run_id)
        assert "device" not in record.config and "periphery" not in record.config
        resolved = record.config["backend_options"]["resolved_station"]
        assert resolved["mapping"]["g_ref"] == 50e-6 and resolved["board"]["port"] == sim.board.port
        (event,) = [e for e in record.events if e.kind == "backend"]
        bench = json.loads(event.message)
        assert bench["instruments"]["board"]["identity"].startswith("hilctl-sim")
        assert [t["name"] for t in bench["tiles"]] == ["fast", "slow"]
        assert set(bench["instruments"]["board"]["link"]) >= {"retries", "timeouts", "reconnects"}


def test_link_trouble_is_counted_shown_and_recorded(capsys, tmp_path) -> None:
    spec = spec_with(faults={"board_drop": 0.05, "board_corrupt": 0.05, "seed": 3},
                     board={"timeout": 0.03, "retries": 30})
    with SimulatedStation(spec) as sim:
        path = sim.write_station(tmp_path / "station.toml")
        store = tmp_path / "store"
        code, out, err = run(capsys, "train", "--backend", "lab", "--station", str(path),
                             *SHORT, "--store", str(store), "--json")
    assert code == 0, err
    link = json.loads(out)["backend"]["instruments"]["board"]["link"]
    assert link["retries"] > 0 and link["timeouts"] + link["corrupt_replies"] > 0
    record = RunStore(store).get_run(json.loads(out)["run_id"])
    assert any(e.kind == "backend" and '"retries"' in e.message for e in record.events)


def test_cells_that_do_not_move_are_called_out(capsys, tmp_path) -> None:
    """The chip switches only above 2 V; the station writes at 1.5 V: nothing moves."""
    spec = spec_with(conductance={"set_threshold": 2.0})
    with SimulatedStation(spec) as sim:
        path = sim.write_station(tmp_path / "station.toml")
        code, _, err = run(capsys, "characterize", "--backend", "lab", "--station", str(path),
                           "--start", "0", "--up", "3", "--down", "3")
    assert code == 0
    assert "did not move" in err and "switching threshold" in err


def test_sim_serve_prints_commands_that_work(capsys, station, tmp_path) -> None:
    sim, path = station
    for command in example_commands(sim.spec, path):
        argv = shlex.split(command)[1:]
        if argv[0] == "train":
            argv += ["--set", "task.steps=30", "--store", str(tmp_path / "store")]
        code, _, err = run(capsys, *argv)
        assert code == 0, (command, err)


@pytest.mark.parametrize("rate", [0.02, 0.10])
def test_a_lossy_link_run_lands_every_pulse_exactly_once(capsys, tmp_path, monkeypatch,
                                                         rate) -> None:
    """A whole training through a board link that drops and corrupts ``rate`` of the frames
    each way: the chip received exactly the pulses the host had acknowledged, in order (single
    pulses and the slots of pulse trains alike)."""
    acknowledged: list[LedgerEntry] = []
    request = BoardClient.request

    def recording(self: BoardClient, message: pb.Message) -> pb.Message:
        reply = request(self, message)
        pulses: list[tuple[int, int, pb.CellTarget | pb.MaskTarget]] = (
            [(message.polarity, message.count, message.target)] if isinstance(message, pb.Pulse)
            else [(slot.polarity, 1, slot.target) for slot in message.slots]
            if isinstance(message, pb.PulseTrain) else [])
        for polarity, count, target in pulses:
            cells = ([(target.row, target.col)] if isinstance(target, pb.CellTarget) else
                     [(r, c) for r in sorted(target.rows) for c in sorted(target.cols)])
            acknowledged.extend(LedgerEntry(r, c, polarity, count) for r, c in cells)
        return reply

    monkeypatch.setattr(BoardClient, "request", recording)
    spec = spec_with(faults={"board_drop": rate, "board_corrupt": rate, "seed": 11},
                     board={"timeout": 0.03, "retries": 30})
    with SimulatedStation(spec) as sim:
        path = sim.write_station(tmp_path / "station.toml")
        code, _, err = run(capsys, "train", "--backend", "lab", "--station", str(path), *SHORT,
                           "--set", "task.steps=20", "--store", str(tmp_path / "store"))
        assert code == 0, err
        assert sim.board.stats.dropped_in + sim.board.stats.corrupted_in > 0  # faults happened
        assert collections.Counter(sim.chip.ledger) == collections.Counter(acknowledged)
        assert len(acknowledged) > 100
