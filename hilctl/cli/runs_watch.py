"""``hilctl runs watch ID``: follow a run another process is recording in the same store.

Every ``--interval`` seconds the store is asked what the run wrote since the last look
(:meth:`hilctl.runs.RunStore.follow`): each new step is printed as one line (``step N  name=value
...``), each event as ``[kind] message``. On a terminal a small chart under those lines is
redrawn in place: one unicode sparkline per metric over the whole history, its last value and
its minimum, and the time since the run's last write. Elsewhere (a pipe, a file) only the plain
lines are printed. Watching ends when the run ends (a last line says how: completed, failed,
diverged, interrupted, or lost when its process is gone or its heartbeat went stale) with exit
0; Ctrl-C stops watching, not the run (exit 130, nothing printed).
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hilctl.cli.output import EXIT_OK
from hilctl.cli.parsing import positive_seconds
from hilctl.cli.signals import exit_code
from hilctl.runs import LOST, RUNNING, RunProgress, RunStore

#: Step lines shown of what a run recorded before watching began (the chart shows it all).
BACKLOG_LINES = 10
#: Metrics charted at most (the first ones, in the order they were first logged).
CHART_METRICS = 6
#: Values spanning more than this ratio (all positive) are charted on a log scale.
LOG_SCALE_RATIO = 100.0
#: A running run not heard from for this many heartbeat intervals gets a warning line.
STALE_BEATS = 2.5

_BARS = "▁▂▃▄▅▆▇█"


def add_subcommand(sub: Any, add_store: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``watch`` to the ``hilctl runs`` subcommands."""
    watch = sub.add_parser(
        "watch", help="follow a running run: new metrics as they come, a live chart",
        description="Follow a run that another process is recording in the same store: each "
        "new step's metrics as one line as they are written, its events, and on a terminal a "
        "live chart of every metric (unicode sparklines). Ends when the run ends, with a last "
        "line saying how (completed, failed, diverged, interrupted, or lost: its process was "
        "killed or its heartbeat went stale); exit 0. Ctrl-C stops watching, not the run "
        f"(exit 130). The last {BACKLOG_LINES} steps recorded before watching began are shown "
        "first. Output that is not a terminal gets the plain lines only.")
    watch.add_argument("run_id", metavar="ID", help="run id or a unique prefix of it")
    watch.add_argument("--interval", type=positive_seconds, default=1.0, metavar="SECONDS",
                       help="how often the store is asked for news (default: 1)")
    add_store(watch)
    watch.set_defaults(handler=run_watch)


# ---------------------------------------------------------------------------------------------
# Text.
# ---------------------------------------------------------------------------------------------


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def sparkline(values: Sequence[float] | np.ndarray, width: int) -> str:
    """``values`` as at most ``width`` unicode bars (the history split into ``width`` equal
    parts, each drawn at its mean), on a log scale where all are positive and span more than
    :data:`LOG_SCALE_RATIO`; parts without a finite value are blank."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0 or width < 1:
        return ""
    finite = data[np.isfinite(data)]
    log = finite.size > 0 and bool(np.all(finite > 0)) and finite.max() / finite.min() > LOG_SCALE_RATIO
    points: list[float] = []
    for part in np.array_split(data, min(width, data.size)):
        good = part[np.isfinite(part)]
        points.append(float(np.mean(np.log10(good) if log else good)) if good.size else math.nan)
    known = [p for p in points if math.isfinite(p)]
    if not known:
        return " " * len(points)
    low, high = min(known), max(known)
    span = high - low
    out = []
    for p in points:
        if not math.isfinite(p):
            out.append(" ")
        elif span <= 0:
            out.append(_BARS[len(_BARS) // 2])
        else:
            out.append(_BARS[min(len(_BARS) - 1, int((p - low) / span * len(_BARS)))])
    return "".join(out)


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment).astimezone().strftime("%H:%M:%S")


def _message(kind: str, message: str) -> str:
    """An event's message on one line (of a traceback, its last line: what went wrong)."""
    lines = message.strip().splitlines()
    if kind == "error" and len(lines) > 1:
        return lines[-1].strip()
    return " ".join(" ".join(lines).split())


def step_lines(rows: Sequence[tuple[int, str, float]]) -> list[str]:
    """One line per logged step: ``step N  name=value ...`` (rows as written, in order)."""
    lines: list[str] = []
    current: int | None = None
    parts: list[str] = []
    for step, name, value in rows:
        if step != current and parts:
            lines.append(f"step {current}  " + "  ".join(parts))
            parts = []
        current = step
        parts.append(f"{name}={_number(value)}")
    if parts:
        lines.append(f"step {current}  " + "  ".join(parts))
    return lines


def end_line(progress: RunProgress) -> str:
    """The last line: how the run ended."""
    final = " ".join(f"{k}={_number(v) if isinstance(v, float) else v}"
                     for k, v in progress.final.items())
    if progress.status == LOST:
        return (f"run {progress.run_id} lost: its process is gone (killed, or its host went "
                f"down); last heard from at {_clock(progress.updated)}; resume it with: hilctl "
                f"runs resume {progress.run_id}")
    text = f"run {progress.run_id} {progress.status}"
    if progress.error:
        text += f": {' '.join(progress.error.split())}"
    if final:
        text += f" (final {final})"
    return text


# ---------------------------------------------------------------------------------------------
# The watcher.
# ---------------------------------------------------------------------------------------------


class Watcher:
    """Prints what :meth:`RunStore.follow` returns: lines, and on a terminal the chart under
    them, redrawn in place (cursor up over the old chart, clear to the end, print again)."""

    def __init__(self, stream: TextIO, live: bool, width: int | None = None) -> None:
        self.stream = stream
        self.live = live
        self.width = width
        self.series: dict[str, list[float]] = {}
        self.last_step: int | None = None
        self._chart_lines = 0
        self._warned_stale = False

    def _columns(self) -> int:
        return self.width if self.width is not None else shutil.get_terminal_size((80, 24)).columns

    def chart(self, progress: RunProgress, now: float) -> list[str]:
        """The chart's lines: one per metric, then the run's state."""
        names = list(self.series)[:CHART_METRICS]
        label = max((len(n) for n in names), default=0)
        bars = max(8, min(60, self._columns() - label - 34))
        lines = []
        for name in names:
            values = np.asarray(self.series[name])
            finite = values[np.isfinite(values)]
            low = f"min {finite.min():.4g}" if finite.size else "min -"
            lines.append(f"{name.ljust(label)} {sparkline(values, bars).ljust(bars)} "
                         f"{_number(float(values[-1]))} ({low})")
        hidden = len(self.series) - len(names)
        if hidden > 0:
            lines.append(f"(and {hidden} more metrics)")
        step = "-" if self.last_step is None else str(self.last_step)
        lines.append(f"{progress.status}: step {step}, last write {_ago(now - progress.updated)} ago")
        return lines

    def show(self, progress: RunProgress, backlog: bool = False, now: float | None = None) -> None:
        """Print what is new in ``progress`` (of a first look: only the last
        :data:`BACKLOG_LINES` steps) and, on a terminal, the chart."""
        now = time.time() if now is None else now
        for _step, name, value in progress.metrics:
            self.series.setdefault(name, []).append(value)
        if progress.metrics:
            self.last_step = progress.metrics[-1][0]
        lines = step_lines(progress.metrics)
        if backlog and len(lines) > BACKLOG_LINES:
            lines = [f"({len(lines) - BACKLOG_LINES} earlier steps not shown)", *lines[-BACKLOG_LINES:]]
        lines.extend(f"{_clock(e.time)}{f' step {e.step}' if e.step is not None else ''} "
                     f"[{e.kind}] {_message(e.kind, e.message)}" for e in progress.events)
        quiet = now - progress.updated
        if progress.status == RUNNING and quiet > STALE_BEATS * progress.heartbeat_seconds:
            if not self._warned_stale:
                lines.append(f"no word from run {progress.run_id} for {_ago(quiet)} (it writes at "
                             f"least every {_ago(progress.heartbeat_seconds)}); its process may "
                             "be gone")
                self._warned_stale = True
        else:
            self._warned_stale = False
        if progress.status != RUNNING:
            lines.append(end_line(progress))
        out = []
        if self.live and self._chart_lines:
            out.append(f"\x1b[{self._chart_lines}F\x1b[J")
        out.extend(line + "\n" for line in lines)
        if self.live:
            chart = self.chart(progress, now)
            out.extend(line + "\n" for line in chart)
            self._chart_lines = len(chart)
        if out:
            self.stream.write("".join(out))
            self.stream.flush()


def watch(store: RunStore, run_id: str, interval: float, stream: TextIO, live: bool) -> RunProgress:
    """Follow ``run_id`` until it ends; return its last progress."""
    watcher = Watcher(stream, live)
    progress = store.follow(run_id)
    watcher.show(progress, backlog=True)
    while progress.status == RUNNING:
        time.sleep(interval)
        progress = store.follow(run_id, progress.metric_cursor, progress.event_cursor)
        watcher.show(progress)
    return progress


def run_watch(args: argparse.Namespace) -> int:
    """``hilctl runs watch ID``."""
    path: Path | None = args.store
    store = RunStore(path, create=False)
    run_id = store.resolve_id(args.run_id)
    stream = sys.stdout
    isatty = getattr(stream, "isatty", None)
    live = bool(isatty is not None and isatty())
    try:
        watch(store, run_id, args.interval, stream, live)
    except KeyboardInterrupt as exc:  # stop watching, quietly; the run goes on
        return exit_code(exc)
    return EXIT_OK
