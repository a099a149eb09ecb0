"""``hilctl runs watch`` (a run followed from another process) and ``hilctl runs export``
(a run's history, config, final figures and events in files pandas reads)."""

from __future__ import annotations

import io
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hilctl.cli import main
from hilctl.cli.runs_watch import Watcher, sparkline
from hilctl.runs import RUNNING, RunProgress, RunStore

# ---------------------------------------------------------------------------------------------
# watch
# ---------------------------------------------------------------------------------------------


class _Recorder(io.StringIO):
    """A stdout that notes, for each write, whether the training process was still running."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        super().__init__()
        self.process = process
        self.while_running: list[str] = []

    def write(self, text: str) -> int:
        if self.process.poll() is None:
            self.while_running.append(text)
        return super().write(text)


def _first_run_id(store_dir: Path, deadline: float) -> str:
    path = store_dir / "runs.sqlite"
    while time.monotonic() < deadline:
        if path.exists():
            runs = RunStore(path, create=False).list_runs()
            if runs:
                return runs[0].run_id
        time.sleep(0.05)
    raise AssertionError("the training process recorded no run")


def test_watch_follows_a_run_of_another_process_until_it_ends(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps, every = 60_000, 1_000
    train = subprocess.Popen(
        [sys.executable, "-m", "hilctl", "train", "--store", str(tmp_path), "--json",
         "--set", f"task.steps={steps}", "--set", f"task.log_every={every}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        run_id = _first_run_id(tmp_path, time.monotonic() + 30)
        out = _Recorder(train)
        monkeypatch.setattr(sys, "stdout", out)
        assert main(["runs", "watch", run_id[:15], "--store", str(tmp_path), "--interval", "0.05"]) == 0
        assert train.wait(timeout=30) == 0, train.stderr.read() if train.stderr else ""
    finally:
        if train.poll() is None:
            train.kill()
            train.wait()
    lines = out.getvalue().splitlines()
    step_lines = [line for line in lines if line.startswith("step ")]
    # Metrics were printed as they arrived, while the training still ran ...
    assert any(text.startswith("step ") for text in "".join(out.while_running).splitlines())
    # ... in step order, through the last one, and watching ended with the run.
    shown = [int(line.split()[1]) for line in step_lines]
    assert shown == sorted(shown) and shown[-1] == steps
    assert all("rel_err=" in line and "loss=" in line for line in step_lines)
    assert lines[-1].startswith(f"run {run_id} completed (final ")
    assert "\x1b[" not in out.getvalue()  # not a terminal: plain lines only


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_watch_says_a_killed_run_is_lost(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(tmp_path)
    run = store.start_run("train", {"task": "least-squares"}, backend="sim")
    run.log_metrics(10, loss=0.5)
    run.flush()
    # The process recording it is killed: its pid is gone (and the run stays "running").
    store._write(lambda c: c.execute("UPDATE runs SET pid = ? WHERE run_id = ?",
                                     (_dead_pid(), run.run_id)))
    assert main(["runs", "watch", run.run_id, "--store", str(tmp_path), "--interval", "0.01"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "step 10  loss=0.5"
    assert out[-1].startswith(f"run {run.run_id} lost: its process is gone")


def test_watch_says_a_run_of_another_host_whose_heartbeat_stopped_is_lost(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(tmp_path)
    run = store.start_run("train", {}, metadata={"heartbeat_seconds": 1.0})
    store._write(lambda c: c.execute("UPDATE runs SET hostname = 'elsewhere', updated = ? "
                                     "WHERE run_id = ?", (time.time() - 3600, run.run_id)))
    assert main(["runs", "watch", run.run_id, "--store", str(tmp_path)]) == 0
    assert "lost: its process is gone" in capsys.readouterr().out


def _progress(status: str = RUNNING, updated: float | None = None, **kwargs: object) -> RunProgress:
    values: dict[str, object] = {
        "run_id": "r1", "status": status, "updated": time.time() if updated is None else updated,
        "ended": None, "error": None, "heartbeat_seconds": 1.0, "final": {}, "metrics": [],
        "events": [], "metric_cursor": 0, "event_cursor": 0}
    values.update(kwargs)
    return RunProgress(**values)  # type: ignore[arg-type]


def test_a_stale_heartbeat_is_noticed_once_before_the_run_is_lost() -> None:
    stream = io.StringIO()
    watcher = Watcher(stream, live=False)
    watcher.show(_progress(updated=time.time() - 10))
    watcher.show(_progress(updated=time.time() - 11))
    text = stream.getvalue()
    assert text.count("no word from run r1 for 10s") == 1 and "may be gone" in text


def test_on_a_terminal_a_chart_is_drawn_under_the_lines_and_redrawn_in_place() -> None:
    stream = io.StringIO()
    watcher = Watcher(stream, live=True, width=80)
    watcher.show(_progress(metrics=[(1, "loss", 1.0), (1, "acc", 0.1), (2, "loss", 0.5)]))
    first = stream.getvalue()
    assert "step 1  loss=1  acc=0.1\nstep 2  loss=0.5\n" in first
    assert "loss" in first.splitlines()[2] and "running: step 2" in first.splitlines()[-1]
    watcher.show(_progress(status="completed", final={"loss": 0.25}, metrics=[(3, "loss", 0.25)]))
    second = stream.getvalue()[len(first):]
    assert second.startswith("\x1b[3F\x1b[J")  # up over the old chart (3 lines), cleared
    assert "run r1 completed (final loss=0.25)" in second


def test_sparkline() -> None:
    assert sparkline([], 10) == ""
    assert sparkline([1.0, 2.0, 3.0], 10) == "▁▅█"
    assert sparkline([2.0, 2.0], 5) == "▅▅"
    assert sparkline([1.0, float("nan"), 3.0], 3) == "▁ █"
    assert len(sparkline(list(range(1000)), 40)) == 40
    assert sparkline([1.0, 10.0, 1000.0], 3) == "▁▃█"  # log scale: values spanning 3 decades


def test_watch_an_unknown_run_is_one_line_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    RunStore(tmp_path).start_run("train", {}).finish()
    assert main(["runs", "watch", "nosuchrun", "--store", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.splitlines()) == 1
    assert captured.err.startswith("hilctl: error: no run 'nosuchrun'")


def test_ctrl_c_stops_watching_quietly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = RunStore(tmp_path).start_run("train", {})

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("hilctl.cli.runs_watch.time.sleep", interrupt)
    assert main(["runs", "watch", run.run_id, "--store", str(tmp_path)]) == 130
    assert capsys.readouterr().err == ""
