"""Progress on stderr (hilctl/cli/output.py): a bar on a terminal, plain log lines elsewhere,
none with --quiet; and the no-argument compare's two settings."""

from __future__ import annotations

import argparse
import io
import json
import re

import pytest

from hilctl.cli import main
from hilctl.cli.output import Progress
from hilctl.cli.train import PAPER_SETS, compare_settings


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def store_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HILCTL_HOME", str(tmp_path / "home"))


def log(interval: float = 10.0, **options) -> tuple[Progress, io.StringIO, Clock]:
    clock = Clock()
    stream = io.StringIO()
    return Progress("job", stream, tty=False, interval=interval, clock=clock, **options), \
        stream, clock


def test_log_lines_at_most_one_per_interval_plus_the_final_line():
    progress, stream, clock = log(interval=10.0, metric="rel_err")
    for done in range(1, 801):  # one step every 0.125 s: 100 s in all
        clock.now += 0.125
        if done % 40 == 0:
            progress.metric(done, {"loss": 2.0, "rel_err": 1.0 / done})
        progress(done, 800)
    progress.close()
    lines = stream.getvalue().splitlines()
    # Lines at 10 s, 20 s, ... 90 s, and the final one at 100 s (which is also the 10th).
    assert len(lines) == 10
    assert all(line.startswith("hilctl: job: ") for line in lines)
    assert lines[0] == "hilctl: job: 80/800 (10%), 8 steps/s, 1 min 30 s left, rel_err 0.0125"
    assert lines[4].startswith("hilctl: job: 400/800 (50%), 8 steps/s, 50 s left")
    assert lines[-1] == "hilctl: job: 800/800 (100%), 8 steps/s, 1 min 40 s in all, " \
        "rel_err 0.00125"


def test_the_final_line_comes_even_between_intervals():
    progress, stream, clock = log(interval=10.0)
    for done in range(1, 16):  # 15 s, 1 step a second
        clock.now += 1.0
        progress(done, 15)
    lines = stream.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == ["hilctl: job: 10/15 (66%)",
                                                      "hilctl: job: 15/15 (100%)"]


def test_a_run_shorter_than_the_interval_logs_nothing():
    progress, stream, clock = log(interval=10.0)
    for done in range(1, 101):
        clock.now += 0.01
        progress(done, 100)
    progress.close()
    assert stream.getvalue() == ""


def test_a_line_at_each_epoch_end_with_the_epoch_metric():
    progress, stream, clock = log(interval=10.0, metric="test_acc", line_on_metrics=True)
    for epoch in range(1, 4):
        for done in range((epoch - 1) * 4 + 1, epoch * 4 + 1):
            clock.now += 0.5
            progress(done, 12)
        progress.metric(epoch, {"loss": 2.3, "test_acc": 0.1 * epoch})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3  # 6 s in all: only the epoch ends
    assert lines[0] == "hilctl: job: 4/12 (33%), 2 steps/s, 4 s left, test_acc 0.1"
    assert lines[2].startswith("hilctl: job: 12/12 (100%)") and lines[2].endswith("test_acc 0.3")


def test_the_terminal_bar_redraws_one_line_and_clears_it():
    clock = Clock()
    stream = io.StringIO()
    progress = Progress("job", stream, tty=True, clock=clock, columns=200)
    assert progress.interval == 0.1
    for done in range(1, 101):
        clock.now += 0.0625
        progress(done, 100)
        if done == 40:
            progress.metric(done, {"rel_err": 0.5})
    text = stream.getvalue()
    assert "\n" not in text
    draws = text.split("\r")[1:]
    assert len(draws) <= 6.25 / 0.1 + 1  # at most one per interval, plus the final draw
    assert draws[-1] == "job [########################] 100/100 (100%), 16 steps/s, 6 s in all, " \
        "rel_err 0.5"
    assert re.fullmatch(r"job \[#{11}\.{13}\] 49/100 \(49%\), 16 steps/s, 3 s left, rel_err 0\.5 *",
                        draws[24])  # drawn at steps 1, 3, 5, ...
    progress.close()
    assert stream.getvalue().endswith("\r")


def test_the_bar_is_cut_to_the_terminal_width():
    stream = io.StringIO()
    progress = Progress("a long label " * 10, stream, tty=True, columns=60)
    progress(1, 10)
    line = stream.getvalue().split("\r")[-1]
    assert len(line) == 59 and line.startswith("1/10 (10%) | a long label")


# ---------------------------------------------------------------------------------------------
# The commands: --quiet, --json, and the no-argument compare
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def every_step_logs(monkeypatch):
    """Progress logs with a zero interval, so even a short run writes its lines."""
    real = Progress.__init__

    def init(self, *args, **options):
        real(self, *args, **{**options, "interval": 0.0})

    monkeypatch.setattr(Progress, "__init__", init)


def test_train_logs_progress_on_stderr_and_json_on_stdout(capsys, every_step_logs):
    assert main(["train", "--set", "task.steps=100", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["final"]["rel_err"] > 0 and out.count("\n") == 1
    assert "hilctl: least-squares / analog-sgd / soft-bounds: 100/100 (100%)" in err
    assert "rel_err" in err


@pytest.mark.parametrize("command", [
    ["train", "--set", "task.steps=100"],
    ["compare", "--set", "task.steps=60", "--algorithms", "digital-sgd"],
    ["characterize", "--rows", "4", "--cols", "4", "--up", "5", "--down", "5"],
])
def test_quiet_prints_no_progress(capsys, every_step_logs, command):
    assert main([*command, "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and out
    assert main(command) == 0
    assert "hilctl: " in capsys.readouterr().err  # without --quiet the lines come


def _compare_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    from hilctl.cli.train import register

    register(subparsers)
    return parser.parse_args(["compare", *argv])


def test_compare_runs_two_settings_unless_one_is_named():
    paper, realistic = compare_settings(_compare_args("--set", "task.steps=50", "--seeds", "2"))
    assert (paper.name, realistic.name) == ("paper", "realistic")
    assert paper.args.no_variation and paper.args.set == ["task.steps=50", *PAPER_SETS]
    assert not realistic.args.no_variation and realistic.args.set == ["task.steps=50"]
    for named in (["--device", "soft-bounds"], ["--no-variation"], ["--task", "least-squares"],
                  ["--set", "device.tau=0.5"], ["--set", "periphery.is_perfect=true"],
                  ["--set", "algorithm.fast_lr=0.2"]):
        (only,) = compare_settings(_compare_args(*named))
        assert only.name == "" and only.args.set == _compare_args(*named).set


def test_no_argument_compare_json_holds_both_settings(capsys):
    assert main(["compare", "--set", "task.steps=600", "--set", "task.eval_window=100",
                 "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    record = json.loads(out)
    assert set(record) == {"settings", "findings"}
    assert [s["name"] for s in record["settings"]] == ["paper", "realistic"]
    for setting in record["settings"]:
        assert [r["algorithm"] for r in setting["rows"]] == ["digital-sgd", "analog-sgd",
                                                             "tiki-taka"]
        assert len(setting["runs"]) == 3
    paper = {r["config"]["algorithm"]["name"]: r["config"] for r in record["settings"][0]["runs"]}
    assert paper["tiki-taka"]["device"]["tau"] == 0.5
    assert paper["tiki-taka"]["periphery"]["is_perfect"] is True
    assert len(record["findings"]) == 2
    assert record["findings"][0].startswith("Paper setting: ")
    assert record["findings"][1].startswith("Realistic setting: ")


def test_no_argument_compare_prints_both_tables_and_what_they_show(capsys):
    assert main(["compare", "--set", "task.steps=600", "--set", "task.eval_window=100"]) == 0
    out = capsys.readouterr().out
    assert out.count("algorithm    rel_err") == 2
    assert out.splitlines()[0].startswith("paper setting: ")
    assert "realistic setting: " in out
    assert "rel_err: ||W - W*||^2 / ||W*||^2, mean over the last 100 steps." in out
    last = out.splitlines()[-2:]
    assert last[0].startswith("Paper setting: ") and "digital SGD (rel_err " in last[0]
    assert last[1].startswith("Realistic setting: ")


def test_reproduce_quiet_prints_no_progress(capsys, monkeypatch):
    from hilctl import reproduce

    def run_experiments(names, *, progress, **options):
        progress("fig1: analog-sgd lr=0.1")
        return []

    monkeypatch.setattr(reproduce, "run_experiments", run_experiments)
    monkeypatch.setattr(reproduce.report, "summary", lambda results: "summary")
    main(["reproduce", "fig1", "--quick"])
    assert "fig1: analog-sgd lr=0.1" in capsys.readouterr().err
    main(["reproduce", "fig1", "--quick", "--quiet"])
    out, err = capsys.readouterr()
    assert err == "" and out == "summary\n"
