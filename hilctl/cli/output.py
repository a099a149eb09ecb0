"""What a command gives back: exit codes, one-line errors, JSON, and progress on stderr.

Exit codes (:mod:`hilctl.errors`): 0 done; 1 an internal error, output that could not be
written, or (``sweep``) a point that failed; 2 the input was refused before any instrument was
touched (bad argument, bad config value, unknown backend), reported as one line
``hilctl: error: ...`` on stderr; 3 an instrument or the bench failed, or a Dask scheduler did
not answer; 4 the run diverged (or, for ``reproduce``, a claim did not hold); 128 + N
interrupted by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import collections
import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hilctl.cli.parsing import UsageError

PROG = "hilctl"

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_BENCH = 3
EXIT_DIVERGED = 4


def say(text: str) -> None:
    """Print ``text`` on stderr; quietly nothing where stderr is gone (a dropped SSH session)."""
    with contextlib.suppress(OSError, ValueError):
        print(text, file=sys.stderr, flush=True)


def error(message: object, code: int = EXIT_USAGE) -> int:
    """Print ``hilctl: error: message`` as one line on stderr; return ``code``."""
    text = " ".join(str(message).split())
    say(f"{PROG}: error: {text}")
    return code


# ---------------------------------------------------------------------------------------------
# JSON: one encoder for every --json.
# ---------------------------------------------------------------------------------------------


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON data: non-finite floats as None (strict JSON has no NaN or
    Infinity), numpy scalars and arrays as Python numbers and lists, tuples as lists, mapping
    keys as strings, paths as text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def print_json(value: Any) -> None:
    """Print ``value`` as one line of strict JSON on stdout (see :func:`json_ready`)."""
    print(json.dumps(json_ready(value), allow_nan=False))


# ---------------------------------------------------------------------------------------------
# Progress on stderr for slow runs.
# ---------------------------------------------------------------------------------------------


class Progress:
    """Progress of a slow operation on stderr: one object for every command.

    Call it as ``progress(done, total)`` (the ``progress`` callback of a training, a pulse
    sweep or a resume) and, where metrics come, ``progress.metric(step, values)`` (the
    ``on_metrics`` callback); call :meth:`close` at the end or on failure.

    On a terminal it redraws one line at most every ``interval`` seconds (default 0.1): a bar,
    done/total, the percentage, the rate, the time left and the latest metric; :meth:`close`
    clears it. Elsewhere (a log file, ``nohup``, CI) it writes plain lines with the same facts,
    at most one every ``interval`` seconds (default 10), one at each metric when
    ``line_on_metrics`` (an MNIST epoch end), and a final one when the operation ran at least
    one interval; an operation shorter than that writes nothing. ``clock`` (seconds, default
    :func:`time.monotonic`) can be injected for tests, and ``columns`` (the terminal's width,
    which a bar is cut to).
    """

    BAR = 24

    def __init__(self, label: str, stream: TextIO | None = None, *, tty: bool | None = None,
                 interval: float | None = None, unit: str = "steps",
                 metric: str | None = None, line_on_metrics: bool = False,
                 clock: Callable[[], float] = time.monotonic,
                 columns: int | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty is not None and isatty())
        self.tty = tty
        self.interval = interval if interval is not None else (0.1 if tty else 10.0)
        self.unit = unit
        self.metric_name = metric
        self.line_on_metrics = line_on_metrics
        self.clock = clock
        #: A terminal's width: a longer bar would wrap and no longer redraw in place.
        self.columns = columns or _columns(self.stream)
        self._start = clock()
        self._last = -math.inf if tty else self._start
        self._lines = 0
        self._width = 0
        self._done = 0
        self._total = 0
        self._shown = -1
        self._first: tuple[float, int] | None = None
        self._metric: tuple[str, float] | None = None
        self._seen: collections.deque[tuple[float, int]] = collections.deque()

    def __call__(self, done: int, total: int) -> None:
        self._done, self._total = done, total
        now = self.clock()
        if self._first is None:  # the rate counts from the first step, not from the setup
            self._first = (now, done)
        final = total > 0 and done >= total
        if now - self._last < self.interval and not (final and (self.tty or self._lines)):
            return
        if final and not self.tty and (self.line_on_metrics or (
                now - self._start < self.interval and not self._lines)):
            return  # the epoch's metrics bring the final line; a short run needs none
        self._show(now)

    def metric(self, step: int, values: Mapping[str, float]) -> None:
        """Keep the latest value of the metric (the one named, else the first) for the line."""
        del step
        name = self.metric_name if self.metric_name in values else next(iter(values), None)
        if name is None:
            return
        self._metric = (name, float(values[name]))
        if self.line_on_metrics and not self.tty:
            self._show(self.clock())

    def text(self, now: float) -> str:
        """The facts of one line: done/total, percentage, rate, time left, latest metric."""
        done, total = self._done, self._total
        percent = 100 * done // total if total else 100
        elapsed = now - self._start
        since, done_then = self._seen[0] if self._seen else (self._first or (self._start, 0))
        rate = (done - done_then) / (now - since) if now > since else math.nan
        parts = [f"{done}/{total} ({percent}%)"]
        if math.isfinite(rate) and rate > 0:
            parts.append(f"{_count(rate)} {self.unit}/s")
            parts.append(f"{_duration((total - done) / rate)} left" if done < total
                         else f"{_duration(elapsed)} in all")
        if self._metric is not None:
            parts.append(f"{self._metric[0]} {self._metric[1]:.4g}")
        return ", ".join(parts)

    def _show(self, now: float) -> None:
        self._last = now
        text = self.text(now)
        # The rate over the last few lines: the first steps (compiling, loading) do not count
        # for long in the time left.
        self._seen.append((now, self._done))
        while len(self._seen) > 1 and now - self._seen[0][0] > max(3 * self.interval, 5.0):
            self._seen.popleft()
        with contextlib.suppress(OSError, ValueError):
            if self.tty:
                filled = self.BAR * self._done // self._total if self._total else self.BAR
                bar = "#" * filled + "." * (self.BAR - filled)
                width = max(self.columns - 1, 20)
                line = f"{self.label} [{bar}] {text}"
                if len(line) > width:  # a narrow terminal: the facts before the bar and label
                    line = f"{text} | {self.label}"[:width]
                self._width = max(self._width, len(line))
                self.stream.write("\r" + line.ljust(self._width))
            else:
                self.stream.write(f"{PROG}: {self.label}: {text}\n")
                self._lines += 1
            self._shown = self._done
            self.stream.flush()

    def close(self) -> None:
        """Clear a terminal's line; a plain log keeps its lines (and gets the final one if it
        has lines but not that one yet)."""
        if not self.tty and self._lines and self._shown != self._done:
            self._show(self.clock())
        if self._width:
            with contextlib.suppress(OSError, ValueError):
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
            self._width = 0


def _columns(stream: TextIO) -> int:
    """The width of the terminal ``stream`` writes to (else $COLUMNS, else 100)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size((100, 24)).columns


def _count(rate: float) -> str:
    return f"{rate:.0f}" if rate >= 10 else f"{rate:.2g}"


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def progress_for(label: str, enabled: bool = True, **options: Any) -> Progress | None:
    """A :class:`Progress` on stderr when ``enabled`` (not ``--quiet``), else None; ``options``
    go to :class:`Progress` (``unit``, ``metric``, ``line_on_metrics``, ``interval``)."""
    return Progress(label, **options) if enabled else None


def check_output_path(path: Path, option: str, suffix: str) -> None:
    """Refuse (:class:`UsageError`) a file ``option`` names that could not be written, before
    work that may take hours: a wrong suffix, a missing or read-only directory, a directory."""
    if path.suffix.lower() != suffix:
        raise UsageError(f"{option}: the file name must end in {suffix}; got {str(path)!r}")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"{option}: directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option}: directory {str(parent)!r} is not writable")
    if path.is_dir():
        raise UsageError(f"{option}: {str(path)!r} is a directory")


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` into ``path`` through a temporary file in the same directory and one
    rename, so ``path`` holds either its old content or all of ``text``.

    The file gets the permissions a plain ``open`` would give it (0666 less the umask), not
    the owner-only ones of a temporary file."""
    umask = os.umask(0)
    os.umask(umask)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            os.fchmod(stream.fileno(), 0o666 & ~umask)
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
