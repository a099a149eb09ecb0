"""What a command gives back: exit codes, one-line errors, JSON, and progress on stderr.

Exit codes (:mod:`hilctl.errors`): 0 done; 1 an internal error, output that could not be
written, or (``sweep``) a point that failed; 2 the input was refused before any instrument was
touched (bad argument, bad config value, unknown backend), reported as one line
``hilctl: error: ...`` on stderr; 3 an instrument or the bench failed, or a Dask scheduler did
not answer; 4 the run diverged (or, for ``reproduce``, a claim did not hold); 128 + N
interrupted by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
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


class StderrProgress:
    """A one-line ``label: done/total`` counter, redrawn at most every ``interval`` seconds.

    Use it as the ``progress`` callback of a slow operation, and call :meth:`close` at the end
    (or on failure) to clear the line.
    """

    def __init__(self, label: str, stream: TextIO | None = None, interval: float = 0.1) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._last = -math.inf
        self._width = 0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.interval:
            return
        self._last = now
        percent = 100 * done // total if total else 100
        text = f"{self.label}: {done}/{total} ({percent}%)"
        self._width = max(self._width, len(text))
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()

    def close(self) -> None:
        if self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0


def progress_for(label: str, enabled: bool) -> StderrProgress | None:
    """A :class:`StderrProgress` when ``enabled`` and stderr is a terminal, else None."""
    if not enabled:
        return None
    isatty = getattr(sys.stderr, "isatty", None)
    return StderrProgress(label) if isatty is not None and isatty() else None


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
