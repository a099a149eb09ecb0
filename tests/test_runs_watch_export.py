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
    run.log_event("info", "a message\non two lines", step=10)
    # The process recording it is killed: its pid is gone (and the run stays "running").
    store._write(lambda c: c.execute("UPDATE runs SET pid = ? WHERE run_id = ?",
                                     (_dead_pid(), run.run_id)))
    assert main(["runs", "watch", run.run_id, "--store", str(tmp_path), "--interval", "0.01"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "step 10  loss=0.5"
    assert out[1].endswith(" step 10 [info] a message on two lines")
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


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------

pd = pytest.importorskip("pandas")


#: The runs table's text columns, read as text as the export's help says: a commit such as
#: 559e915 would read as a number (infinity) otherwise.
TEXT_COLUMNS = {"git": str, "code_version": str, "sweep": str}


def _read_csv(path: object) -> object:
    """pandas' reader, exact to the last bit (pandas 3's default; before it, round_trip)."""
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}
    return pd.read_csv(path, **exact)


def _record(store: RunStore, seed: int, sweep: str | None = None, point: str | None = None) -> str:
    config = {"task": {"name": "least-squares", "steps": 40, "lr": 0.1 / 3}, "seed": seed,
              "algorithm": {"name": "tiki-taka", "gammas": [0.5, 0.25]}}
    with store.start_run("train", config, backend="sim", sweep=sweep, point=point) as run:
        for step in range(0, 40, 5):
            run.log_metrics(step, loss=(seed + 1) / (step + 3), rel_err=2.0 ** -step / 7)
        run.log_metrics(40, loss=float("nan"))  # NaN, and a metric missing at a step
        run.log_metrics(40, {"eval/acc": 0.1 + seed})
        run.log_metrics(40, {"eval/acc": 0.3 + seed})  # logged twice at one step
        run.log_event("info", "a message, with a comma\nand a second line", step=5)
        run.finish(final={"rel_err": 1e-3 * (seed + 1), "loss": 1 / 3})
    return run.run_id


def _logged(frame: object, run_id: str, name: str) -> tuple[list[int], list[float]]:
    """One metric's (steps, values) in a history frame: the rows that hold a value."""
    rows = frame[frame["run_id"] == run_id] if "run_id" in frame else frame  # type: ignore[operator,index]
    kept = rows[rows[name].notna()]
    return [int(s) for s in kept["step"]], [float(v) for v in kept[name]]


def _stored(store: RunStore, run_id: str, name: str) -> tuple[list[int], list[float]]:
    steps, values = store.get_run(run_id).metrics[name]
    keep = values == values  # NaN is an empty cell, as a metric not logged at that step is
    return steps[keep].tolist(), values[keep].tolist()


def test_export_csv_round_trips_the_history_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(tmp_path / "store")
    run_id = _record(store, seed=1)
    monkeypatch.chdir(tmp_path)
    assert main(["runs", "export", run_id[:17], "--store", str(tmp_path / "store")]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {run_id}.csv, {run_id}.runs.csv, {run_id}.events.csv")
    metrics = _read_csv(f"{run_id}.csv")
    assert list(metrics.columns) == ["run_id", "step", "eval/acc", "loss", "rel_err"]
    assert metrics["step"].tolist() == [0, 5, 10, 15, 20, 25, 30, 35, 40, 40]  # one row per logged step
    for name in ("eval/acc", "loss", "rel_err"):
        assert _logged(metrics, run_id, name) == _stored(store, run_id, name)
    assert pd.isna(metrics["loss"].iloc[-1]) and metrics["eval/acc"].iloc[-2:].tolist() == [1.1, 1.3]

    runs = pd.read_csv(f"{run_id}.runs.csv", dtype=TEXT_COLUMNS)
    assert runs["run_id"].tolist() == [run_id] and runs["status"].tolist() == ["completed"]
    assert runs["final.loss"].iloc[0] == 1 / 3 and runs["config.task.lr"].iloc[0] == 0.1 / 3
    assert runs["config.algorithm.gammas"].iloc[0] == "[0.5, 0.25]"
    assert runs["git"].iloc[0] == store.get_run(run_id).metadata["git"]
    events = pd.read_csv(f"{run_id}.events.csv")
    assert events["message"].tolist() == ["a message, with a comma\nand a second line"]
    assert events["step"].tolist() == [5] and events["kind"].tolist() == ["info"]
    assert not list(tmp_path.glob(".*.tmp"))  # written through temporary files, renamed


def test_export_json_is_one_object_with_the_history_exactly(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(tmp_path)
    run_id = _record(store, seed=2)
    out = tmp_path / "run.json"
    assert main(["runs", "export", run_id, "--store", str(tmp_path), "--format", "json",
                 "--out", str(out)]) == 0
    text = out.read_text()
    assert "NaN" not in text and "Infinity" not in text
    import json

    obj = json.loads(text)
    record = store.get_run(run_id)
    assert obj["run_id"] == run_id and obj["config"] == record.config and obj["final"] == record.final
    assert obj["metadata"]["git"] == record.metadata["git"]
    assert obj["events"][0]["message"].startswith("a message")
    history = pd.DataFrame(obj["history"])
    for name in ("eval/acc", "loss", "rel_err"):
        assert _logged(history, run_id, name) == _stored(store, run_id, name)
    capsys.readouterr()
    assert main(["runs", "export", run_id, "--store", str(tmp_path), "--format", "json", "--out", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == obj


def test_export_all_and_a_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = RunStore(tmp_path / "store")
    first = _record(store, seed=0)
    swept = [_record(store, seed=s, sweep="sw1", point=f"seed={s}") for s in (3, 4)]
    args = ["--store", str(tmp_path / "store")]
    assert main(["runs", "export", "--all", *args, "--out", str(tmp_path / "all.csv")]) == 0
    metrics = _read_csv(tmp_path / "all.csv")
    assert list(dict.fromkeys(metrics["run_id"])) == [first, *swept]  # oldest first
    for run_id in (first, *swept):
        assert _logged(metrics, run_id, "rel_err") == _stored(store, run_id, "rel_err")
    runs = pd.read_csv(tmp_path / "all.runs.csv", dtype=TEXT_COLUMNS)
    assert runs["sweep"].fillna("").tolist() == ["", "sw1", "sw1"]
    assert runs["point"].fillna("").tolist() == ["", "seed=3", "seed=4"]
    assert len(pd.read_csv(tmp_path / "all.events.csv")) == 3

    import json

    assert main(["runs", "export", "--sweep", "sw1", *args, "--format", "json",
                 "--out", str(tmp_path / "sweep.json")]) == 0
    obj = json.loads((tmp_path / "sweep.json").read_text())
    assert obj["sweep"] == "sw1" and [r["run_id"] for r in obj["runs"]] == swept
    assert [r["point"] for r in obj["runs"]] == ["seed=3", "seed=4"]

    capsys.readouterr()
    assert main(["runs", "export", "--sweep", "nosuch", *args]) == 2
    assert "no runs of sweep 'nosuch'" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["runs", "export"], "give a run ID, or --all, or --sweep"),
    (["runs", "export", "x", "--all"], "give a run ID, or --all, or --sweep"),
    (["runs", "export", "--all", "--out", "-"], "only --format json"),
    (["runs", "export", "--all", "--out", "runs.txt"], "must end in .csv"),
    (["runs", "export", "--all", "--format", "json", "--out", "nodir/x.json"], "does not exist"),
    (["runs", "export", "nosuchrun"], "no run 'nosuchrun'"),
    (["runs", "export", "--all", "--out", "a\x00b.csv"], "NUL"),
])
def test_export_refusals_are_one_line_and_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str], message: str) -> None:
    RunStore(tmp_path).start_run("train", {}).finish()
    monkeypatch.chdir(tmp_path)
    assert main([*argv, "--store", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err
