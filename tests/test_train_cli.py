"""Tests of ``hilctl train`` and ``hilctl compare`` (:mod:`hilctl.cli.train`), run in-process
through :func:`hilctl.cli.main` with the run store in a temporary folder."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from hilctl.cli import main
from hilctl.runs import RunStore

FAST = ["--set", "task.steps=120"]


@pytest.fixture(autouse=True)
def store_home(tmp_path: Path, monkeypatch) -> Path:
    """Every run of these tests lands in a fresh store under tmp_path."""
    home = tmp_path / "home"
    monkeypatch.setenv("HILCTL_HOME", str(home))
    return home


#: A progress line off a terminal (hilctl/cli/output.py): "hilctl: LABEL: done/total (N%)...".
PROGRESS_LINE = re.compile(r"hilctl: .+: \d+/\d+ \(\d+%\)")


def run_json(capsys, *argv: str) -> dict:
    code = main([*argv, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    # Nothing on stderr but progress: a run that outlasts the 10-s interval (a first compile
    # on a loaded machine) logs a progress line there, by design.
    assert all(PROGRESS_LINE.match(line) for line in err.splitlines()), err
    assert out.count("\n") == 1  # exactly one JSON object, on one line
    return json.loads(out)


def refused(capsys, *argv: str) -> str:
    """Run a command that must be refused: exit 2, nothing on stdout, one line on stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("hilctl: error: ") and err.count("\n") == 1, err
    return err


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def test_train_json(capsys, store_home):
    record = run_json(capsys, "train", *FAST, "--seed", "3")
    assert set(record) == {"run_id", "status", "seconds", "config", "final", "history"}
    assert record["status"] == "completed"
    assert set(record["final"]) == {"rel_err", "loss"}
    assert 0 < record["final"]["rel_err"] < 10 and record["final"]["loss"] > 0
    assert record["seconds"] >= 0
    config = record["config"]
    # The resolved config: every section with its defaults, aliases as the user writes them.
    assert config["seed"] == 3
    assert config["task"] == {"name": "least-squares", "out": 8, "in": 16, "steps": 120,
                              "lr": 0.02, "sigma": 0.1, "w_star_std": 0.3, "eval_window": 500,
                              "log_every": 50}
    assert config["algorithm"] == {"name": "analog-sgd"}
    assert config["device"]["model"] == "soft-bounds" and config["device"]["dw_min"] == 0.001
    assert config["update"]["mode"] == "pulsed" and config["periphery"]["is_perfect"] is False
    assert config["tile"] == {"reference": "none", "max_input_size": 512, "max_output_size": 512,
                              "digital_bias": True}
    assert record["history"]["step"] == [50, 100, 120]
    assert len(record["history"]["rel_err"]) == len(record["history"]["loss"]) == 3
    # ... and the run is in the store under that id, with the same figures.
    run = RunStore(store_home).get_run(record["run_id"])
    assert run.status == "completed" and run.final == record["final"]
    assert run.metrics["rel_err"][1].tolist() == record["history"]["rel_err"]


def test_train_summary_and_runs_commands(capsys, store_home):
    assert main(["train", *FAST, "--algorithm", "tiki-taka", "--seed", "2"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # stderr is not a terminal here: no progress line
    lines = out.splitlines()
    assert lines[0].startswith("least-squares / tiki-taka / soft-bounds on sim, seed 2: "
                               "120 steps in ")
    assert lines[1].split()[0] == "rel_err" and "||W - W*||^2" in lines[1]
    assert lines[2].split()[0] == "loss"
    (run,) = RunStore(store_home).list_runs()
    assert lines[3].split() == ["run", run.run_id, "(hilctl", "runs", "show", f"{run.run_id})"]
    assert float(lines[1].split()[1]) == pytest.approx(run.final["rel_err"], rel=1e-3)

    assert main(["runs", "list"]) == 0
    out, _ = capsys.readouterr()
    assert run.run_id in out and "tiki-taka" in out and "completed" in out
    assert main(["runs", "show", run.run_id[:-1]]) == 0
    out, _ = capsys.readouterr()
    assert run.run_id in out and "rel_err" in out
    assert main(["runs", "show", "--json", run.run_id]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["run_id"] == run.run_id and shown["status"] == "completed"


def test_store_option_overrides_home(capsys, tmp_path, store_home):
    other = tmp_path / "other"
    other.mkdir()
    record = run_json(capsys, "train", *FAST, "--store", str(other))
    assert [r.run_id for r in RunStore(other).list_runs()] == [record["run_id"]]
    assert not (store_home / "runs.sqlite").exists()


def test_train_with_no_arguments_finishes_within_a_minute(capsys):
    started = time.perf_counter()
    code = main(["train"])
    elapsed = time.perf_counter() - started
    out, err = capsys.readouterr()
    assert code == 0, err
    # The README's promise: the bare command gives an answer in under a minute (measured ~2 s).
    assert elapsed < 60
    assert out.startswith("least-squares / analog-sgd / soft-bounds on sim, seed 0: 4000 steps in ")
    assert "rel_err" in out and "hilctl runs show" in out


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------


def test_compare_json_rows(capsys, store_home):
    # --device names a setting: just that one runs (one table, the old JSON shape).
    record = run_json(capsys, "compare", "--device", "soft-bounds", "--seeds", "2", "--set",
                      "task.steps=300")
    rows = record["rows"]
    assert [r["algorithm"] for r in rows] == ["digital-sgd", "analog-sgd", "tiki-taka"]
    runs = {r["run_id"]: r for r in record["runs"]}
    assert len(runs) == 6
    for row in rows:
        assert len(row["run_ids"]) == 2
        finals = [runs[i]["final"]["rel_err"] for i in row["run_ids"]]
        assert [runs[i]["config"]["seed"] for i in row["run_ids"]] == [0, 1]
        assert {runs[i]["config"]["algorithm"]["name"] for i in row["run_ids"]} == {row["algorithm"]}
        assert row["rel_err"] == pytest.approx(sum(finals) / 2)
        assert row["rel_err_std"] == pytest.approx(abs(finals[0] - finals[1]) / 2**0.5)
        assert set(row) >= {"loss", "loss_std", "seconds"}
    # Even 300 steps with the default device separate digital SGD from Analog SGD: measured
    # 0.096 vs 0.34 rel_err (both seeds within 0.02 of that).
    assert rows[0]["rel_err"] < rows[1]["rel_err"] / 2
    stored = RunStore(store_home).list_runs(limit=None)
    assert {s.run_id for s in stored} == set(runs)
    assert {s.command for s in stored} == {"compare"}


def test_compare_table(capsys):
    assert main(["compare", "--algorithms", "digital-sgd,analog-sgd", "--seeds", "2",
                 "--seed", "4", "--device", "soft-bounds", *FAST]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "least-squares on sim, device soft-bounds, 2 seed(s) from 4"
    assert lines[1].split() == ["algorithm", "rel_err", "loss", "seconds"]
    assert lines[2].startswith("digital-sgd") and "±" in lines[2]
    assert lines[3].startswith("analog-sgd")
    assert lines[4].startswith("rel_err:")


def test_compare_applies_algorithm_keys_to_the_algorithms_that_have_them(capsys):
    record = run_json(capsys, "compare", "--set", "task.steps=50", "--set",
                      "algorithm.fast_lr=0.3")
    algorithms = {r["config"]["algorithm"]["name"]: r["config"]["algorithm"]
                  for r in record["runs"]}
    assert algorithms["tiki-taka"]["fast_lr"] == 0.3
    assert algorithms["analog-sgd"] == {"name": "analog-sgd"}


def test_compare_refuses_an_algorithm_key_no_compared_algorithm_has(capsys):
    err = refused(capsys, "compare", "--algorithms", "digital-sgd,analog-sgd", "--set",
                  "algorithm.fast_lr=0.3")
    assert "algorithm.fast_lr" in err and "analog-sgd" in err


def test_compare_unknown_algorithm_is_refused(capsys):
    err = refused(capsys, "compare", "--algorithms", "digital-sgd,adam")
    assert "--algorithms" in err and "'adam'" in err and "tiki-taka" in err


# ---------------------------------------------------------------------------------------------
# --config FILE.toml and precedence
# ---------------------------------------------------------------------------------------------

FULL_TOML = """\
seed = 5

[task]
name = "least-squares"
steps = 100
lr = 0.05
out = 4
in = 6

[algorithm]
name = "tiki-taka"
fast_lr = 0.2
transfer_every = 2

[device]
model = "constant-step"
dw_min = 0.002

[update]
mode = "expected"

[periphery]
is_perfect = true

[tile]
reference = "symmetric-point"
"""


def write(tmp_path: Path, text: str, name: str = "run.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_config_file_every_section(capsys, tmp_path):
    config = run_json(capsys, "train", "--config", write(tmp_path, FULL_TOML))["config"]
    assert config["seed"] == 5
    assert (config["task"]["steps"], config["task"]["lr"]) == (100, 0.05)
    assert (config["task"]["out"], config["task"]["in"]) == (4, 6)
    assert config["algorithm"]["name"] == "tiki-taka"
    assert (config["algorithm"]["fast_lr"], config["algorithm"]["transfer_every"]) == (0.2, 2)
    assert config["device"]["model"] == "constant-step" and config["device"]["dw_min"] == 0.002
    assert config["update"]["mode"] == "expected"
    assert config["periphery"]["is_perfect"] is True
    assert config["tile"]["reference"] == "symmetric-point"


def test_config_precedence_file_then_flags_then_set(capsys, tmp_path):
    config = run_json(
        capsys, "train", "--config", write(tmp_path, FULL_TOML),
        "--seed", "7", "--device", "soft-bounds",
        "--set", "task.steps=60", "--set", "algorithm.fast_lr=0.3", "--set", "device.tau=0.8",
    )["config"]
    assert config["seed"] == 7                                   # flag over file
    assert config["device"]["model"] == "soft-bounds"            # flag over file
    assert config["device"]["dw_min"] == 0.002                   # file value kept
    assert (config["device"]["w_max"], config["device"]["w_min"]) == (0.8, -0.8)  # --set
    assert config["task"]["steps"] == 60                         # --set over file
    assert config["task"]["lr"] == 0.05                          # file value kept
    assert config["algorithm"]["fast_lr"] == 0.3                 # --set over file
    assert config["algorithm"]["transfer_every"] == 2            # file value kept


def test_algorithm_flag_over_file(capsys, tmp_path):
    path = write(tmp_path, '[algorithm]\nname = "tiki-taka"\n[task]\nsteps = 50\n')
    assert run_json(capsys, "train", "--config", path)["config"]["algorithm"]["name"] == "tiki-taka"
    config = run_json(capsys, "train", "--config", path, "--algorithm", "digital-sgd")["config"]
    assert config["algorithm"] == {"name": "digital-sgd"} and config["task"]["steps"] == 50


def test_set_name_wins_over_flag(capsys):
    config = run_json(capsys, "train", "--device", "constant-step", "--set", "device.model=pow-step",
                      "--set", "task.steps=10")["config"]
    assert config["device"]["model"] == "pow-step"


def test_no_variation_switches_off_every_spread_before_set(capsys, tmp_path):
    device = run_json(capsys, "train", *FAST, "--no-variation",
                      "--set", "device.dw_min_std=0.1")["config"]["device"]
    assert device["model"] == "soft-bounds"
    for key in ("dw_min_dtod", "up_down_dtod", "w_max_dtod", "w_min_dtod"):
        assert device[key] == 0, key
    assert device["dw_min_std"] == 0.1  # --set turns one back on
    # The model of the config file decides which keys exist (linear-step has gamma spreads).
    path = write(tmp_path, '[device]\nmodel = "linear-step"\n')
    device = run_json(capsys, "train", *FAST, "--config", path, "--no-variation")["config"]["device"]
    assert device["model"] == "linear-step"
    assert device["gamma_up_dtod"] == device["gamma_down_dtod"] == device["dw_min_std"] == 0


# ---------------------------------------------------------------------------------------------
# Refused input: exit 2, one line on stderr naming the field.
# ---------------------------------------------------------------------------------------------


def test_unknown_set_key_lists_the_section_keys(capsys):
    err = refused(capsys, "train", "--set", "task.foo=1")
    assert "task.foo" in err
    keys = err.split("valid keys are:")[1].replace(",", " ").split()
    assert keys == ["eval_window", "in", "log_every", "lr", "out", "sigma", "steps", "w_star_std"]


def test_unknown_set_key_of_mnist_lists_mnist_keys(capsys):
    err = refused(capsys, "train", "--task", "mnist-fcn", "--set", "task.steps=3")
    assert "task.steps" in err and "epochs" in err and "limit_train" in err


def test_key_of_another_algorithm_says_so(capsys):
    err = refused(capsys, "train", "--set", "algorithm.fast_lr=0.2")
    assert "algorithm.fast_lr" in err
    assert not err.rstrip().endswith("valid keys are:")


@pytest.mark.parametrize(("argv", "needles"), [
    (["--set", "task.steps=abc"], ["task.steps", "integer", "'abc'"]),
    (["--set", "task.steps=0"], ["task.steps", "greater than or equal to 1"]),
    (["--set", "task.lr=NaN"], ["task.lr", "finite"]),
    (["--set", "bogus.x=1"], ["bogus", "task, algorithm, device, update, periphery, tile"]),
    (["--set", "task.steps"], ["task.steps", "section.key=value"]),
    (["--set", "device.nope=1"], ["device.nope", "dw_min"]),
    (["--set", "algorithm.gamma=-1", "--algorithm", "tiki-taka"], ["algorithm.gamma"]),
    (["--set", "update.mode=fast"], ["update.mode", "pulsed"]),
    (["--seed", "-1"], ["--seed"]),
    (["--task", "regression"], ["--task", "least-squares"]),
    (["--algorithm", "adam"], ["--algorithm", "tiki-taka"]),
    (["--backend", "nope"], ["--backend", "'nope'", "sim"]),
])
def test_bad_command_line_is_refused(capsys, argv, needles):
    err = refused(capsys, "train", *argv)
    for needle in needles:
        assert needle in err, (needle, err)


@pytest.mark.parametrize(("toml", "needles"), [
    ('[task]\nname = "regression"\n', ["task", "'regression'", "least-squares, mnist-fcn"]),
    ('[algorithm]\nname = "adam"\n', ["algorithm", "'adam'", "digital-sgd, analog-sgd, tiki-taka"]),
    ('[device]\nmodel = "memristor"\n', ["device.model", "'memristor'", "soft-bounds"]),
    ("[bogus]\nx = 1\n", ["unknown section 'bogus'", "task, algorithm", "seed"]),
    ("[task]\nsteps = 'many'\n", ["task.steps", "'many'"]),
    ("[task]\nfoo = 1\n", ["task.foo", "steps"]),
    ('seed = "x"\n', ["seed", "'x'"]),
    ("[task\n", ["--config", "run.toml"]),
])
def test_bad_config_file_is_refused(capsys, tmp_path, toml, needles):
    err = refused(capsys, "train", "--config", write(tmp_path, toml))
    for needle in needles:
        assert needle in err, (needle, err)


def test_config_section_that_is_not_a_table_is_refused(capsys, tmp_path):
    err = refused(capsys, "train", "--config", write(tmp_path, "task = 3\n"))
    assert "task" in err


def test_missing_config_file_is_refused(capsys, tmp_path):
    err = refused(capsys, "train", "--config", str(tmp_path / "absent.toml"))
    assert "--config" in err and "absent.toml" in err


def test_missing_dataset_folder_is_refused(capsys, tmp_path, store_home):
    err = refused(capsys, "train", "--task", "mnist-fcn", "--set", "task.data_dir=/nonexistent")
    assert "/nonexistent" in err
    # A config error raised before the run starts records nothing; a data set missing at run
    # time is a failed run in the store.
    (run,) = RunStore(store_home).list_runs()
    assert run.status == "failed"


def test_refused_config_records_no_run(capsys, store_home):
    refused(capsys, "train", "--set", "task.foo=1")
    assert not (store_home / "runs.sqlite").exists() or RunStore(store_home).list_runs() == []


# ---------------------------------------------------------------------------------------------
# Ctrl-C
# ---------------------------------------------------------------------------------------------


class InterruptAfter:
    """A progress callback that presses Ctrl-C at step ``at``."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.closed = False

    def __call__(self, done: int, total: int) -> None:
        if done >= self.at:
            raise KeyboardInterrupt

    def metric(self, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def interrupt_at(monkeypatch, at: int) -> list[InterruptAfter]:
    made: list[InterruptAfter] = []

    def progress_for(label: str, enabled: bool = True, **options) -> InterruptAfter:
        made.append(InterruptAfter(at))
        return made[-1]

    monkeypatch.setattr("hilctl.cli.train.progress_for", progress_for)
    return made


def test_ctrl_c_marks_the_run_interrupted_with_its_history(capsys, monkeypatch, store_home):
    made = interrupt_at(monkeypatch, 120)
    code = main(["train", "--set", "task.steps=1000"])
    out, err = capsys.readouterr()
    assert code == 130
    assert out == ""
    assert err.count("\n") == 1 and "interrupted" in err
    assert made[0].closed  # the progress line is cleared on the way out
    store = RunStore(store_home)
    (summary,) = store.list_runs()
    # The line names the run and how to go on with it.
    assert f"run {summary.run_id} " in err and f"hilctl runs resume {summary.run_id}" in err
    assert summary.status == "interrupted" and summary.final == {}
    record = store.get_run(summary.run_id)
    # Metrics are logged every 50 steps; the interrupt came at step 120.
    assert record.metrics["rel_err"][0].tolist() == [50, 100]
    assert record.metrics["loss"][0].tolist() == [50, 100]
    assert record.error == "KeyboardInterrupt"

    assert main(["runs", "list"]) == 0
    listing = capsys.readouterr().out
    assert summary.run_id in listing and "interrupted" in listing


def test_ctrl_c_in_compare_keeps_finished_runs(capsys, monkeypatch, store_home):
    labels: list[str] = []

    def progress_for(label: str, enabled: bool = True, **options) -> InterruptAfter:
        labels.append(label)
        # Ctrl-C in the second algorithm's run only.
        return InterruptAfter(100 if label.startswith("paper: analog-sgd") else 10**9)

    monkeypatch.setattr("hilctl.cli.train.progress_for", progress_for)
    code = main(["compare", "--set", "task.steps=150"])
    out, err = capsys.readouterr()
    assert code == 130 and out == ""
    assert err.count("\n") == 1 and "interrupted" in err
    # The paper's setting runs first; its tiki-taka and the realistic setting never started.
    assert labels == ["paper: digital-sgd seed 0", "paper: analog-sgd seed 0"]
    runs = RunStore(store_home).list_runs()
    interrupted = next(r for r in runs if r.status == "interrupted")
    assert f"hilctl runs resume {interrupted.run_id}" in err
    assert [(r.summary, r.status) for r in runs] == [
        ("least-squares / analog-sgd", "interrupted"),
        ("least-squares / digital-sgd", "completed"),
    ]
