"""The run store: every run recorded in an embedded SQLite database.

One database file (``runs.sqlite``) holds, per run, the resolved configuration (JSON), the
backend, the code version and the host it ran on, its status, metrics per step, events
(instrument and info messages), the final metrics and, for a run of a sweep, the sweep's id and
the point's key (``hilctl sweep``). Weight snapshots are ``.npy`` files
beside it, in ``snapshots/<run_id>/<step>_<name>.npy``, with one row each in the database;
checkpoints (a run's whole state, :mod:`hilctl.checkpoints`) are ``.npz`` files in
``checkpoints/<run_id>/``, the last two of each run kept, until the run completes.

Typical use by a command::

    store = RunStore()
    with store.start_run(command="train", config=config, backend="sim") as run:
        for step in ...:
            run.log_metrics(step, loss=loss, rel_err=rel_err)
        run.finish(final={"rel_err": rel_err})

Robustness:

* The database is in WAL mode with a busy timeout, and every write is one short
  ``BEGIN IMMEDIATE`` transaction, so several processes (and threads) may write the same store
  at once; readers never block writers.
* Metrics are buffered and written in one transaction every ``flush_seconds`` (checked when a
  metric is logged) or every ``flush_rows`` rows, and at the end of the run. A run killed hard
  (SIGKILL, power loss) therefore loses at most the last second of metrics and stays
  ``running`` until the store is next opened: a run whose process is gone (on this host: its
  PID is gone or belongs to another process now; on any host: no heartbeat for ten times its
  checkpoint interval, at least ten minutes) is then stored as ``lost``, and files that a kill
  left half written (``.partial``) or unrecorded are removed. ``lost``, ``interrupted`` and
  ``failed`` runs can be resumed from their last checkpoint (:meth:`RunStore.resume_run`).
* A run can also be recorded where no store is (a sweep's worker, :mod:`hilctl.run_log`) and
  written into the store afterwards, with the times it ran at.
* Leaving the ``with`` block by an exception records the status before re-raising:
  ``interrupted`` for ``KeyboardInterrupt``/``SystemExit`` (and the signal, for SIGTERM and
  SIGHUP), the exception's own ``run_status`` where it has one (``diverged``), ``failed`` (with
  the error text and an ``error`` event holding the traceback) for any other; the buffered
  metrics are written first.

The store lives on a local disk: SQLite's WAL mode does not work on network file systems.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import math
import os
import platform
import re
import secrets
import socket
import sqlite3
import sys
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import numpy as np

from hilctl import __version__, checkpoints
from hilctl.checkpoints import partial_files, write_atomically
from hilctl.errors import HilctlError, Interrupted
from hilctl.version import FROM_NOWHERE, code_version, resolve_commit

#: Version of the database layout; :data:`_MIGRATIONS` upgrades older stores to it.
SCHEMA_VERSION = 3

#: File name of the database inside the store directory.
STORE_FILENAME = "runs.sqlite"

#: Status of a run while it runs, and the statuses :meth:`Run.finish` may set.
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"
DIVERGED = "diverged"
#: Stored for a ``running`` run whose process is gone (see the module docstring).
LOST = "lost"
FINAL_STATUSES: tuple[str, ...] = (COMPLETED, FAILED, INTERRUPTED, DIVERGED, LOST)
#: The statuses a run can be resumed from.
RESUMABLE: tuple[str, ...] = (INTERRUPTED, FAILED, LOST)
#: Checkpoints kept per run (the newest); older ones are deleted when a new one is written.
KEEP_CHECKPOINTS = 2
#: A run with no heartbeat for this many checkpoint intervals (and at least
#: :data:`LOST_AFTER_SECONDS`) is lost, on any host.
LOST_AFTER_BEATS = 10
LOST_AFTER_SECONDS = 600.0
#: Heartbeat interval assumed for a run that recorded none (s).
DEFAULT_HEARTBEAT_SECONDS = 60.0

#: Milliseconds a connection waits for another writer's lock before giving up.
BUSY_TIMEOUT_MS = 30_000

_SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# Statements are split at ";" and run one by one, so comments must not contain one.
_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id   TEXT PRIMARY KEY,
    command  TEXT NOT NULL,
    backend  TEXT,
    status   TEXT NOT NULL,
    started  REAL NOT NULL,   -- Unix time (seconds, UTC)
    updated  REAL NOT NULL,   -- last write of the run: a heartbeat while it runs
    ended    REAL,
    config   TEXT NOT NULL,   -- JSON
    metadata TEXT NOT NULL,   -- JSON: code version, host, pid, python, numpy versions
    final    TEXT,            -- JSON: final metrics
    error    TEXT,
    hostname TEXT,
    pid      INTEGER
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE TABLE IF NOT EXISTS metrics (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    name   TEXT NOT NULL,
    step   INTEGER NOT NULL,
    value,                    -- no type affinity: floats round-trip bit for bit, NaN as NULL
    time   REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics (run_id, name, step);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY,
    run_id  TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    time    REAL NOT NULL,
    step    INTEGER,
    kind    TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_run ON events (run_id, id);
CREATE TABLE IF NOT EXISTS snapshots (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step   INTEGER NOT NULL,
    name   TEXT NOT NULL,
    path   TEXT NOT NULL,     -- relative to the store directory
    shape  TEXT NOT NULL,     -- JSON list
    dtype  TEXT NOT NULL,
    time   REAL NOT NULL,
    PRIMARY KEY (run_id, step, name)
);
"""

#: Version 2: a run's checkpoints (:meth:`Run.save_checkpoint`).
_CHECKPOINTS_TABLE = """
CREATE TABLE IF NOT EXISTS checkpoints (
    run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step   INTEGER NOT NULL,
    path   TEXT NOT NULL,     -- relative to the store directory
    bytes  INTEGER NOT NULL,
    time   REAL NOT NULL,
    PRIMARY KEY (run_id, path)
)
"""
_SCHEMA = _SCHEMA_V1 + _CHECKPOINTS_TABLE


def _add_checkpoints(c: sqlite3.Connection) -> None:
    c.execute(_CHECKPOINTS_TABLE)


def _add_sweeps(c: sqlite3.Connection) -> None:
    """Version 3: the sweep a run belongs to and its point's key (``hilctl sweep``)."""
    c.execute("ALTER TABLE runs ADD COLUMN sweep TEXT")
    c.execute("ALTER TABLE runs ADD COLUMN point TEXT")
    c.execute("CREATE INDEX IF NOT EXISTS runs_sweep ON runs (sweep)")


#: ``version -> function(connection)`` upgrading a store from ``version`` to ``version + 1``,
#: run inside the write transaction that then records the new version. A new store is made at
#: version 2 (:data:`_SCHEMA`) and upgraded from there.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _add_checkpoints,
                                                                2: _add_sweeps}


class RunStoreError(HilctlError):
    """The run store could not be opened or is not one this hilctl can read."""


class UnknownRunError(HilctlError, LookupError):
    """No run has the given id (or id prefix); the message lists close ids."""


class AmbiguousRunError(HilctlError, LookupError):
    """More than one run id starts with the given prefix; the message lists them."""


# ---------------------------------------------------------------------------------------------
# Records read back from the store.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """One line of :meth:`RunStore.list_runs`.

    Attributes:
        run_id: the run's id, e.g. ``20261128-175501-3fa2`` (UTC start time + random hex).
        started: start time (timezone-aware, UTC).
        seconds: wall time from start to end; for a run still running, to now; for a lost
            run, to its last write.
        status: ``running``, ``completed``, ``failed``, ``interrupted``, ``diverged`` or
            ``lost``.
        command: the command that made the run (``train``, ...).
        backend: the backend it ran on, if recorded.
        summary: task and algorithm taken from the config (``"mnist / tiki-taka"``), or ``""``.
        final: the final metrics given to :meth:`Run.finish` (empty if none).
        updated: the run's last write (its heartbeat while it runs).
        task, algorithm: their names in the config, where it has them.
        sweep, point: for a run of a sweep, the sweep's id and the point's key.
    """

    run_id: str
    started: datetime
    seconds: float | None
    status: str
    command: str
    backend: str | None
    summary: str
    final: dict[str, Any]
    updated: datetime | None = None
    task: str | None = None
    algorithm: str | None = None
    sweep: str | None = None
    point: str | None = None


@dataclass(frozen=True)
class Event:
    """A message recorded during a run; ``time`` is Unix time, ``step`` optional."""

    time: float
    kind: str
    message: str
    step: int | None = None


@dataclass(frozen=True)
class Snapshot:
    """An array saved by :meth:`Run.save_snapshot`; :meth:`load` reads it back."""

    step: int
    name: str
    path: Path
    shape: tuple[int, ...]
    dtype: str
    time: float

    def load(self) -> np.ndarray:
        return np.load(self.path, allow_pickle=False)


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint a run wrote (:meth:`Run.save_checkpoint`); :meth:`load` reads its state."""

    step: int
    path: Path
    bytes: int
    time: float

    def load(self) -> dict[str, Any]:
        return checkpoints.load(self.path)


@dataclass(frozen=True, eq=False)
class RunRecord:
    """Everything recorded of one run (:meth:`RunStore.get_run`).

    ``metrics`` maps each metric name to ``(steps, values)``: an int64 and a float64 array in
    step order (values logged twice at one step appear twice, in logging order; NaN is
    recorded as NaN). ``events`` and ``snapshots`` are in recording order.
    """

    run_id: str
    command: str
    backend: str | None
    status: str
    started: datetime
    ended: datetime | None
    seconds: float | None
    config: dict[str, Any]
    metadata: dict[str, Any]
    final: dict[str, Any]
    error: str | None
    events: list[Event] = field(default_factory=list)
    metrics: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    snapshots: list[Snapshot] = field(default_factory=list)
    checkpoints: list[CheckpointInfo] = field(default_factory=list)

    @property
    def summary(self) -> str:
        return config_summary(self.config)


@dataclass(frozen=True)
class RunProgress:
    """What a run recorded since a watcher last looked (:meth:`RunStore.follow`).

    ``metrics`` are ``(step, name, value)`` in the order they were written (NaN for NaN);
    ``events`` likewise. ``status`` is ``lost`` for a ``running`` run whose process is gone or
    whose heartbeat is stale (see the module docstring). ``updated`` is the run's last write
    (Unix time), ``heartbeat_seconds`` the interval it beats at. Pass ``metric_cursor`` and
    ``event_cursor`` to the next call to get only what is newer.
    """

    run_id: str
    status: str
    updated: float
    ended: float | None
    error: str | None
    heartbeat_seconds: float
    final: dict[str, Any]
    metrics: list[tuple[int, str, float]]
    events: list[Event]
    metric_cursor: int
    event_cursor: int


# ---------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------


def default_store_path() -> Path:
    """``$HILCTL_HOME/runs.sqlite``, else ``$XDG_DATA_HOME/hilctl/runs.sqlite``, else
    ``~/.local/share/hilctl/runs.sqlite``."""
    home = os.environ.get("HILCTL_HOME")
    if home:
        return Path(home).expanduser() / STORE_FILENAME
    data = os.environ.get("XDG_DATA_HOME")
    base = Path(data).expanduser() if data else Path.home() / ".local" / "share"
    return base / "hilctl" / STORE_FILENAME


def resolve_store_path(path: str | os.PathLike[str] | None) -> Path:
    """The database file for ``path``: the default if None, ``path/runs.sqlite`` if ``path`` is
    an existing directory, else ``path`` itself."""
    if path is None:
        return default_store_path()
    resolved = Path(path).expanduser()
    return resolved / STORE_FILENAME if resolved.is_dir() else resolved


def new_run_id(now: float | None = None) -> str:
    """A short, sortable, unique id: UTC start time and 4 random hex digits."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    return f"{stamp:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_metadata() -> dict[str, Any]:
    """What is recorded of the environment of a run: code version (the commit from the live
    checkout or, for an installed copy, from its build: :mod:`hilctl.version`), host, process,
    versions."""
    commit, source = resolve_commit()
    try:
        hostname = socket.gethostname()
    except OSError:
        hostname = None
    return {
        "code_version": code_version(),
        "hilctl": __version__,
        "git": None if source == FROM_NOWHERE else commit,
        "git_source": source,
        "hostname": hostname,
        "pid": os.getpid(),
        "process_start": process_start(os.getpid()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "argv": list(sys.argv),
    }


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    return str(value)


def to_json(value: Any) -> str:
    """``value`` as JSON; numpy values, paths and pydantic models are converted, anything else
    unknown is stored as its ``str``."""
    return json.dumps(value, default=_json_default)


def _describe_value(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        for key in ("name", "kind", "type", "model"):
            if isinstance(value.get(key), str):
                return value[key]
    return None


def config_summary(config: Mapping[str, Any]) -> str:
    """``"<task> / <algorithm>"`` from a run's config, for listings; parts not found are left out.

    Each key is looked for at the top level, then one level down (e.g. ``config["train"]``);
    its value is used if it is a string, or a mapping with a string ``name``/``kind``/``type``.
    """
    parts = []
    for key in ("task", "algorithm"):
        candidates = [config.get(key)] + [v.get(key) for v in config.values() if isinstance(v, Mapping)]
        for candidate in candidates:
            text = _describe_value(candidate)
            if text:
                parts.append(text)
                break
    return " / ".join(parts)


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, as the kernel counts it (Linux: clock ticks since boot),
    to tell a process from a later one that reuses its PID; None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        return fields[19]  # field 22 of the line; the command name (field 2) is cut off above
    except (OSError, IndexError):
        return None


def _process_gone(hostname: str | None, pid: int | None, started: str | None) -> bool:
    """True only if the process ``pid`` ran on this host and is certainly gone: no such PID,
    or one that started at another time (POSIX only)."""
    if os.name != "posix" or pid is None or pid <= 0 or pid == os.getpid():
        return False
    try:
        if hostname != socket.gethostname():
            return False
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, someone else's
        return False
    now = process_start(pid)
    return started is not None and now is not None and now != started


def _is_lost(updated: float, hostname: str | None, pid: int | None, metadata: Mapping[str, Any],
             now: float) -> bool:
    """Whether a ``running`` run's process is gone (see the module docstring)."""
    if _process_gone(hostname, pid, metadata.get("process_start")):
        return True
    beat = float(metadata.get("heartbeat_seconds") or DEFAULT_HEARTBEAT_SECONDS)
    return now - updated > max(LOST_AFTER_BEATS * beat, LOST_AFTER_SECONDS)


def _unlink(directory: Path, relative_paths: list[str]) -> None:
    """Delete files of the store whose rows are gone (a leftover is swept at the next open)."""
    for relative in relative_paths:
        with contextlib.suppress(OSError):
            (directory / relative).unlink()


def _loads(text: str | None, default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


# ---------------------------------------------------------------------------------------------
# The store.
# ---------------------------------------------------------------------------------------------

_T = TypeVar("_T")


class RunStore:
    """An SQLite run store (see the module docstring); safe to share between threads.

    Args:
        path: the database file, or a directory to hold ``runs.sqlite``; None for
            :func:`default_store_path`.
        create: create the file (and its directories) if missing; with False a missing store
            raises :class:`RunStoreError` (for read-only commands).
        flush_seconds, flush_rows: when buffered metrics are written (see :meth:`Run.log_metrics`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        create: bool = True,
        flush_seconds: float = 1.0,
        flush_rows: int = 500,
    ) -> None:
        self.path = resolve_store_path(path)
        self.directory = self.path.parent
        self.flush_seconds = float(flush_seconds)
        self.flush_rows = max(1, int(flush_rows))
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = -1
        if not self.path.exists():
            if not create:
                raise RunStoreError(f"no run store at {str(self.path)!r}")
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RunStoreError(f"cannot create the run store directory "
                                    f"{str(self.directory)!r}: {exc.strerror or exc}") from None
        self._connection()  # open, set up and check the schema now, not at the first write
        self._sweep()

    def __repr__(self) -> str:
        return f"RunStore({str(self.path)!r})"

    # -- connection and transactions --------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        # A connection never crosses a fork: a child process opens its own.
        if self._conn is None or self._pid != os.getpid():
            self._conn = self._open()
            self._pid = os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                   check_same_thread=False)
        except sqlite3.Error as exc:
            raise RunStoreError(f"cannot open the run store {str(self.path)!r}: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA foreign_keys = ON")
            deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
            while True:  # switching to WAL can report "locked" without waiting while others open
                try:
                    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                    break
                except sqlite3.OperationalError as exc:
                    if "locked" not in str(exc) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            if str(mode).lower() != "wal":
                raise RunStoreError(f"the run store {str(self.path)!r} cannot use WAL mode "
                                    f"(journal mode {mode!r}); put it on a local disk")
            conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fast commits
            self._setup(conn)
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise RunStoreError(f"{str(self.path)!r} is not a usable run store: {exc}") from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _setup(self, conn: sqlite3.Connection) -> None:
        def setup(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT name FROM sqlite_master WHERE name = 'schema_version'").fetchone()
            if row is None:
                # one statement at a time: executescript() would COMMIT the transaction
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        c.execute(statement)
                for version in range(2, SCHEMA_VERSION):
                    _MIGRATIONS[version](c)
                c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                return
            found = c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            if found is None:
                c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
                return
            if found > SCHEMA_VERSION:
                raise RunStoreError(f"the run store {str(self.path)!r} has schema version {found}, "
                                    f"newer than this hilctl {__version__} reads "
                                    f"({SCHEMA_VERSION}); upgrade hilctl")
            for version in range(found, SCHEMA_VERSION):
                _MIGRATIONS[version](c)
            if found < SCHEMA_VERSION:
                c.execute("DELETE FROM schema_version")
                c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

        # Fast path without a write lock: the schema is usually there and current.
        try:
            row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            if row is not None and row[0] == SCHEMA_VERSION:
                return
        except sqlite3.OperationalError:
            pass
        self._write(setup, conn)

    def _write(self, work: Callable[[sqlite3.Connection], _T],
               conn: sqlite3.Connection | None = None) -> _T:
        """Run ``work(connection)`` in one ``BEGIN IMMEDIATE`` transaction (the write lock is
        taken first, so the busy timeout applies and two writers cannot deadlock)."""
        with self._lock:
            c = conn if conn is not None else self._connection()
            c.execute("BEGIN IMMEDIATE")
            try:
                result = work(c)
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
                raise
            c.execute("COMMIT")
            return result

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: a consistent view while several queries run."""
        with self._lock:
            c = self._connection()
            c.execute("BEGIN")
            try:
                yield c
            finally:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("COMMIT")

    def close(self) -> None:
        """Close this process's connection (reopened if the store is used again)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def journal_mode(self) -> str:
        """The database's journal mode (``wal``)."""
        with self._lock:
            return str(self._connection().execute("PRAGMA journal_mode").fetchone()[0]).lower()

    def schema_version(self) -> int:
        with self._read() as c:
            return int(c.execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    # -- writing ----------------------------------------------------------------------------

    def start_run(
        self,
        command: str,
        config: Mapping[str, Any] | None = None,
        backend: str | None = None,
        *,
        metadata: Mapping[str, Any] | None = None,
        started: float | None = None,
        sweep: str | None = None,
        point: str | None = None,
    ) -> Run:
        """Record a new run with status ``running`` and return it (use it as a context manager).

        ``config`` (the resolved configuration) is stored as JSON; ``metadata`` adds to the
        recorded environment (code version, hostname, pid, python and numpy versions, ...).
        ``started`` (Unix time) is when the run began, if not now (a run recorded where no
        store was, written in afterwards); ``sweep`` and ``point`` tag a run of a sweep.
        """
        config_json = to_json(dict(config or {}))
        meta = run_metadata()
        if metadata:
            meta.update(metadata)
        meta_json = to_json(meta)
        for _attempt in range(10):
            now = time.time()
            begun = now if started is None else float(started)
            run_id = new_run_id(begun)

            def insert(c: sqlite3.Connection, run_id: str = run_id, begun: float = begun,
                       now: float = now) -> None:
                c.execute(
                    "INSERT INTO runs (run_id, command, backend, status, started, updated, config,"
                    " metadata, hostname, pid, sweep, point) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                    " ?, ?)",
                    (run_id, command, backend, RUNNING, begun, now, config_json, meta_json,
                     meta.get("hostname"), os.getpid(), sweep, point),
                )

            try:
                self._write(insert)
            except sqlite3.IntegrityError:  # the same id in the same second: draw again
                continue
            return Run(self, run_id, started=begun)
        raise RunStoreError("could not draw an unused run id")  # pragma: no cover

    def snapshot_dir(self, run_id: str) -> Path:
        return self.directory / "snapshots" / run_id

    def checkpoint_dir(self, run_id: str) -> Path:
        return self.directory / "checkpoints" / run_id

    # -- crashes: lost runs and the files a kill left -------------------------------------------

    def _sweep(self) -> None:
        """Store the runs whose process is gone as ``lost``; remove checkpoint files that a
        kill left half written or unrecorded (of runs that are not running)."""
        now = time.time()
        with self._read() as c:
            running = c.execute("SELECT run_id, updated, hostname, pid, metadata FROM runs "
                                "WHERE status = ?", (RUNNING,)).fetchall()
        lost = [(run_id, updated) for run_id, updated, hostname, pid, metadata in running
                if _is_lost(updated, hostname, pid, _loads(metadata, {}), now)]
        if lost:
            def mark(c: sqlite3.Connection) -> None:
                for run_id, updated in lost:
                    c.execute("UPDATE runs SET status = ?, ended = ?, error = ? WHERE run_id = ? "
                              "AND status = ?", (LOST, updated, "the process running it is gone "
                                                 "(killed, or its host went down)", run_id, RUNNING))

            self._write(mark)
        root = self.directory / "checkpoints"
        if not root.is_dir():
            return
        for partial in partial_files(root):
            with contextlib.suppress(OSError):
                partial.unlink()
        with self._read() as c:
            live = {r[0] for r in c.execute("SELECT run_id FROM runs WHERE status = ?", (RUNNING,))}
            recorded = {r[0] for r in c.execute("SELECT path FROM checkpoints")}
        for folder in root.iterdir():
            if not folder.is_dir() or folder.name in live:
                continue  # a live run may be between its rename and its row
            for path in folder.glob("*.npz"):
                if path.relative_to(self.directory).as_posix() not in recorded:
                    with contextlib.suppress(OSError):
                        path.unlink()

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoints(self, run_id: str) -> list[CheckpointInfo]:
        """The run's checkpoints, oldest first."""
        with self._read() as c:
            rows = c.execute("SELECT step, path, bytes, time FROM checkpoints WHERE run_id = ? "
                             "ORDER BY time, step", (run_id,)).fetchall()
        return [CheckpointInfo(step, self.directory / path, size, t) for step, path, size, t in rows]

    def resume_run(self, run_id: str, *, keep_metrics_through: int, step: int,
                   metadata: Mapping[str, Any] | None = None) -> Run:
        """Take the ended run ``run_id`` up again (status ``running`` in this process): the
        metrics recorded after step ``keep_metrics_through`` are dropped (the resumed run
        records them again) and a ``resumed`` event names the checkpoint's ``step``."""
        meta = {**run_metadata(), **(metadata or {})}
        now = time.time()

        def take_up(c: sqlite3.Connection) -> None:
            row = c.execute("SELECT status, metadata FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise UnknownRunError(f"no run {run_id!r} in {str(self.path)!r}")
            if row[0] not in RESUMABLE:
                raise RunStoreError(f"run {run_id} is {row[0]}; only {', '.join(RESUMABLE)} runs "
                                    "can be resumed")
            previous = _loads(row[1], {})
            c.execute("UPDATE runs SET status = ?, updated = ?, ended = NULL, final = NULL, "
                      "error = NULL, hostname = ?, pid = ?, metadata = ? WHERE run_id = ?",
                      (RUNNING, now, meta.get("hostname"), os.getpid(),
                       to_json({**previous, **meta, "resumes": previous.get("resumes", 0) + 1}),
                       run_id))
            c.execute("DELETE FROM metrics WHERE run_id = ? AND step > ?",
                      (run_id, int(keep_metrics_through)))
            c.execute("INSERT INTO events (run_id, time, step, kind, message) VALUES "
                      "(?, ?, ?, ?, ?)", (run_id, now, int(step), "resumed",
                                          f"resumed from the checkpoint at step {step}"))

        self._write(take_up)
        with self._read() as c:
            started = c.execute("SELECT started FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
        return Run(self, run_id, started=started)

    # -- reading ----------------------------------------------------------------------------

    def _status_and_seconds(self, row: sqlite3.Row | tuple[Any, ...]) -> tuple[str, float | None]:
        status, started, updated, ended, hostname, pid, metadata = row
        if ended is not None:
            return status, ended - started
        if status == RUNNING:
            if _is_lost(updated, hostname, pid, _loads(metadata, {}), time.time()):
                return LOST, updated - started
            return status, max(0.0, time.time() - started)
        return status, updated - started

    def list_runs(self, limit: int | None = 20, *, sweep: str | None = None) -> list[RunSummary]:
        """The newest ``limit`` runs (all if None), newest first; with ``sweep``, only the runs
        of that sweep."""
        sql = ("SELECT run_id, command, backend, config, final, sweep, point, status, started,"
               " updated, ended, hostname, pid, metadata FROM runs")
        params: tuple[Any, ...] = ()
        if sweep is not None:
            sql += " WHERE sweep = ?"
            params = (sweep,)
        sql += " ORDER BY started DESC, run_id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params = (*params, max(0, int(limit)))
        with self._read() as c:
            rows = c.execute(sql, params).fetchall()
        out = []
        for run_id, command, backend, config, final, sweep_id, point, *timing in rows:
            status, seconds = self._status_and_seconds(timing)
            parsed = _loads(config, {})
            out.append(RunSummary(
                run_id=run_id, started=_utc(timing[1]), seconds=seconds, status=status,
                command=command, backend=backend, summary=config_summary(parsed),
                final=_loads(final, {}) or {}, updated=_utc(timing[2]),
                task=_describe_value(parsed.get("task")),
                algorithm=_describe_value(parsed.get("algorithm")),
                sweep=sweep_id, point=point,
            ))
        return out

    def run_ids(self) -> list[str]:
        """Every run id, newest first."""
        with self._read() as c:
            return [r[0] for r in c.execute("SELECT run_id FROM runs ORDER BY started DESC, run_id DESC")]

    def resolve_id(self, id_or_prefix: str) -> str:
        """The run id equal to, or else the only one starting with, ``id_or_prefix``.

        Raises :class:`UnknownRunError` (listing close ids) or :class:`AmbiguousRunError`.
        """
        key = str(id_or_prefix).strip()
        with self._read() as c:
            if key and c.execute("SELECT 1 FROM runs WHERE run_id = ?", (key,)).fetchone():
                return key
            escaped = key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            matches = [r[0] for r in c.execute(
                "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' "
                "ORDER BY started DESC, run_id DESC LIMIT 11", (escaped + "%",))] if key else []
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            shown = ", ".join(matches[:10]) + (", ..." if len(matches) > 10 else "")
            raise AmbiguousRunError(f"run id prefix {key!r} matches several runs: {shown}; "
                                    "give more characters")
        ids = self.run_ids()
        if not ids:
            raise UnknownRunError(f"no run {key!r}: the run store {str(self.path)!r} has no runs")
        close = difflib.get_close_matches(key, ids, n=5, cutoff=0.5)
        if close:
            hint = f"close ids: {', '.join(close)}"
        else:
            hint = f"newest ids: {', '.join(ids[:5])}"
        raise UnknownRunError(f"no run {key!r} in {str(self.path)!r}; {hint} "
                              "(see 'hilctl runs list')")

    def follow(self, run_id: str, metric_cursor: int = 0, event_cursor: int = 0) -> RunProgress:
        """The run ``run_id``'s status and the metrics and events written after the cursors
        (0: from the start), read in one transaction (``hilctl runs watch``)."""
        with self._read() as c:
            row = c.execute("SELECT final, error, status, started, updated, ended, hostname, pid,"
                            " metadata FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise UnknownRunError(f"no run {run_id!r} in {str(self.path)!r}")
            metric_rows = c.execute("SELECT rowid, step, name, value FROM metrics WHERE run_id = ?"
                                    " AND rowid > ? ORDER BY rowid", (run_id, metric_cursor)).fetchall()
            event_rows = c.execute("SELECT id, time, kind, message, step FROM events WHERE "
                                   "run_id = ? AND id > ? ORDER BY id", (run_id, event_cursor)).fetchall()
        final, error, *timing = row
        status, _seconds = self._status_and_seconds(timing)
        metadata = _loads(timing[-1], {})
        return RunProgress(
            run_id=run_id, status=status, updated=timing[2], ended=timing[3], error=error,
            heartbeat_seconds=float(metadata.get("heartbeat_seconds") or DEFAULT_HEARTBEAT_SECONDS),
            final=_loads(final, {}) or {},
            metrics=[(step, name, math.nan if value is None else float(value))
                     for _rowid, step, name, value in metric_rows],
            events=[Event(time=t, kind=k, message=m, step=st) for _id, t, k, m, st in event_rows],
            metric_cursor=metric_rows[-1][0] if metric_rows else metric_cursor,
            event_cursor=event_rows[-1][0] if event_rows else event_cursor,
        )

    def sweep_of(self, run_id: str) -> tuple[str | None, str | None]:
        """The sweep run ``run_id`` belongs to and its point's key (None, None for a run of no
        sweep)."""
        with self._read() as c:
            row = c.execute("SELECT sweep, point FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        if row is None:
            raise UnknownRunError(f"no run {run_id!r} in {str(self.path)!r}")
        return row[0], row[1]

    def get_run(self, id_or_prefix: str) -> RunRecord:
        """Everything recorded of the run ``id_or_prefix`` (a full id or a unique prefix)."""
        run_id = self.resolve_id(id_or_prefix)
        with self._read() as c:
            row = c.execute(
                "SELECT command, backend, config, metadata, final, error, status, started, updated,"
                " ended, hostname, pid, metadata FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:  # deleted in between
                raise UnknownRunError(f"no run {run_id!r} in {str(self.path)!r}")
            events = [Event(time=t, kind=k, message=m, step=s) for t, k, m, s in c.execute(
                "SELECT time, kind, message, step FROM events WHERE run_id = ? ORDER BY id",
                (run_id,))]
            metric_rows = c.execute(
                "SELECT name, step, value FROM metrics WHERE run_id = ? ORDER BY name, step, rowid",
                (run_id,)).fetchall()
            snapshots = [
                Snapshot(step=st, name=n, path=self.directory / p, shape=tuple(json.loads(sh)),
                         dtype=dt, time=t)
                for st, n, p, sh, dt, t in c.execute(
                    "SELECT step, name, path, shape, dtype, time FROM snapshots WHERE run_id = ? "
                    "ORDER BY step, time, name", (run_id,))
            ]
        command, backend, config, metadata, final, error, *timing = row
        status, seconds = self._status_and_seconds(timing)
        grouped: dict[str, tuple[list[int], list[float]]] = {}
        for name, step, value in metric_rows:
            steps, values = grouped.setdefault(name, ([], []))
            steps.append(step)
            values.append(math.nan if value is None else value)
        metrics = {name: (np.array(s, dtype=np.int64), np.array(v, dtype=np.float64))
                   for name, (s, v) in grouped.items()}
        return RunRecord(
            run_id=run_id, command=command, backend=backend, status=status,
            started=_utc(timing[1]), ended=None if timing[3] is None else _utc(timing[3]),
            seconds=seconds, config=_loads(config, {}), metadata=_loads(metadata, {}),
            final=_loads(final, {}) or {}, error=error, events=events, metrics=metrics,
            snapshots=snapshots, checkpoints=self.checkpoints(run_id),
        )


# ---------------------------------------------------------------------------------------------
# One run being recorded.
# ---------------------------------------------------------------------------------------------


def run_ending(exc_type: type[BaseException], exc: BaseException | None,
               tb: TracebackType | None) -> tuple[str, str, str | None]:
    """How a run that an exception ends is recorded: its status, its error text and, for a
    failure, the traceback (an ``error`` event). See the module docstring."""
    if issubclass(exc_type, KeyboardInterrupt | SystemExit):
        if isinstance(exc, Interrupted):
            return INTERRUPTED, f"interrupted by {exc}", None
        cause = ("KeyboardInterrupt" if issubclass(exc_type, KeyboardInterrupt)
                 else f"SystemExit: {exc}")
        return INTERRUPTED, cause, None
    if (status := getattr(exc, "run_status", None)) in FINAL_STATUSES:
        return status, str(exc), None
    text = "".join(traceback.format_exception_only(exc_type, exc)).strip()
    return FAILED, text, "".join(traceback.format_exception(exc_type, exc, tb))


class RecordingRun(ABC):
    """What the training controller records a run through: a :class:`Run` of a store, or a
    run recorded in memory where no store is (:class:`hilctl.run_log.LoggedRun`).

    As a context manager it finishes the run when the block is left (see the module
    docstring): completed, or as :func:`run_ending` says for the exception that left it.
    """

    #: The run's id in its store; None while it is recorded in memory only.
    run_id: str | None

    @property
    @abstractmethod
    def finished(self) -> bool:
        """Whether the run's end has been recorded."""

    @abstractmethod
    def log_metrics(self, step: int, metrics: Mapping[str, float] | None = None, /,
                    **values: float) -> None:
        """Record metric values at ``step``."""

    @abstractmethod
    def log_event(self, kind: str, message: str, *, step: int | None = None,
                  at: float | None = None) -> None:
        """Record a message (at Unix time ``at``, default now)."""

    @abstractmethod
    def save_snapshot(self, step: int, name: str, array: Any) -> object:
        """Keep ``array`` (a layer's weights) as the run's snapshot ``name`` at ``step``."""

    @abstractmethod
    def save_checkpoint(self, step: int, state: Mapping[str, Any]) -> object:
        """Keep ``state`` to resume the run from."""

    @abstractmethod
    def heartbeat(self) -> None:
        """Note that the run is alive."""

    @abstractmethod
    def finish(self, final: Mapping[str, Any] | None = None, status: str = COMPLETED,
               error: str | None = None, *, ended: float | None = None) -> None:
        """Record the end (at Unix time ``ended``, default now)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.finished:
            return
        if exc_type is None:
            self.finish()
            return
        status, text, trace = run_ending(exc_type, exc, tb)
        if trace is not None:
            self.log_event("error", trace)
        self.finish(status=status, error=text)


class Run(RecordingRun):
    """A run being recorded; made by :meth:`RunStore.start_run`. Safe to share between threads.

    As a context manager it finishes the run when the block is left (see the module docstring).
    """

    run_id: str

    def __init__(self, store: RunStore, run_id: str, started: float) -> None:
        self.store = store
        self.run_id = run_id
        self.started = started
        self.status = RUNNING
        self._buffer: list[tuple[str, str, int, float | None, float]] = []
        self._last_flush = time.monotonic()
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Run({self.run_id!r}, status={self.status!r})"

    @property
    def finished(self) -> bool:
        return self.status != RUNNING

    def _check_open(self) -> None:
        if self.finished:
            raise RuntimeError(f"run {self.run_id} is already finished ({self.status})")

    # -- metrics and events -----------------------------------------------------------------

    def log_metrics(self, step: int, metrics: Mapping[str, float] | None = None, /,
                    **values: float) -> None:
        """Record metric values at ``step``: ``log_metrics(10, loss=0.3)`` or, for names that are
        not identifiers, ``log_metrics(10, {"train/loss": 0.3})``.

        Buffered; written in one transaction when ``flush_seconds`` have passed since the last
        write or ``flush_rows`` rows are waiting, and by :meth:`flush` and :meth:`finish`.
        """
        self.log_metrics_at(time.time(), step, {**(metrics or {}), **values})

    def log_metrics_at(self, when: float, step: int, items: Mapping[str, float]) -> None:
        """Record metric values at ``step`` as logged at Unix time ``when`` (a run recorded
        where no store was, written in afterwards); otherwise as :meth:`log_metrics`."""
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"step must be an integer; got {step!r}")
        now = float(when)
        rows = []
        for name, value in items.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"metric names must be non-empty strings; got {name!r}")
            number = float(value)
            rows.append((self.run_id, name, int(step), None if math.isnan(number) else number, now))
        with self._lock:
            self._check_open()
            self._buffer.extend(rows)
            if (len(self._buffer) >= self.store.flush_rows
                    or time.monotonic() - self._last_flush >= self.store.flush_seconds):
                self._flush()

    def _insert_metrics(self, c: sqlite3.Connection) -> None:
        if self._buffer:
            c.executemany("INSERT INTO metrics (run_id, name, step, value, time) "
                          "VALUES (?, ?, ?, ?, ?)", self._buffer)
        c.execute("UPDATE runs SET updated = ? WHERE run_id = ?", (time.time(), self.run_id))

    def _flush(self, extra: Callable[[sqlite3.Connection], None] | None = None) -> None:
        # The buffer is cleared only after the commit, so a write interrupted (Ctrl-C) or
        # refused is retried by the next flush or by finish.
        def work(c: sqlite3.Connection) -> None:
            self._insert_metrics(c)
            if extra is not None:
                extra(c)

        self.store._write(work)
        self._buffer.clear()
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        """Write the buffered metrics now."""
        with self._lock:
            if self._buffer:
                self._flush()

    def log_event(self, kind: str, message: str, *, step: int | None = None,
                  at: float | None = None) -> None:
        """Record a message (``kind`` e.g. ``instrument``, ``info``, ``warning``) now, with the
        buffered metrics; ``at`` is when it happened, if not now (Unix time)."""
        now = time.time() if at is None else float(at)

        def insert(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO events (run_id, time, step, kind, message) VALUES (?, ?, ?, ?, ?)",
                      (self.run_id, now, None if step is None else int(step), str(kind), str(message)))

        with self._lock:
            self._check_open()
            self._flush(insert)

    # -- snapshots --------------------------------------------------------------------------

    def save_snapshot(self, step: int, name: str, array: Any) -> Path:
        """Save ``array`` as ``snapshots/<run_id>/<step>_<name>.npy`` beside the database and
        record it; returns the file's path. Saving the same step and name again replaces it.

        ``name`` is letters, digits, ``_``, ``.`` and ``-`` (it becomes part of a file name).
        """
        if not isinstance(name, str) or not _SNAPSHOT_NAME.fullmatch(name):
            raise ValueError(f"snapshot name must be letters, digits, '_', '.' or '-' (not first); "
                             f"got {name!r}")
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"step must be an integer; got {step!r}")
        data = np.asarray(array)
        if data.dtype.hasobject:
            raise TypeError("snapshot arrays must be numeric, not of object dtype")
        with self._lock:
            self._check_open()
            folder = self.store.snapshot_dir(self.run_id)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{int(step)}_{name}.npy"
            buffer = io.BytesIO()
            np.save(buffer, data, allow_pickle=False)
            write_atomically(path, buffer.getvalue())
            relative = path.relative_to(self.store.directory).as_posix()
            now = time.time()

            def insert(c: sqlite3.Connection) -> None:
                c.execute("INSERT OR REPLACE INTO snapshots (run_id, step, name, path, shape, dtype,"
                          " time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (self.run_id, int(step), name, relative, json.dumps(list(data.shape)),
                           data.dtype.str, now))

            self._flush(insert)
            return path

    # -- checkpoints and heartbeat ----------------------------------------------------------

    def heartbeat(self) -> None:
        """Record that the run is alive (with the buffered metrics)."""
        with self._lock:
            self._check_open()
            self._flush()

    def save_checkpoint(self, step: int, state: Mapping[str, Any]) -> CheckpointInfo:
        """Write ``state`` (:mod:`hilctl.checkpoints`) as the run's newest checkpoint: the file
        atomically, then its row, the metrics so far and the heartbeat in one transaction;
        checkpoints beyond the newest :data:`KEEP_CHECKPOINTS` are then deleted."""
        with self._lock:
            self._check_open()
            folder = self.store.checkpoint_dir(self.run_id)
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{int(step):012d}-{time.time_ns()}.npz"
            size = checkpoints.save(path, state)
            relative = path.relative_to(self.store.directory).as_posix()
            now = time.time()
            pruned: list[str] = []

            def record(c: sqlite3.Connection) -> None:
                c.execute("INSERT INTO checkpoints (run_id, step, path, bytes, time) VALUES "
                          "(?, ?, ?, ?, ?)", (self.run_id, int(step), relative, size, now))
                old = [r[0] for r in c.execute(
                    "SELECT path FROM checkpoints WHERE run_id = ? ORDER BY time DESC, step DESC",
                    (self.run_id,)).fetchall()[KEEP_CHECKPOINTS:]]
                c.executemany("DELETE FROM checkpoints WHERE run_id = ? AND path = ?",
                              [(self.run_id, p) for p in old])
                pruned.extend(old)

            self._flush(record)
            _unlink(self.store.directory, pruned)
            return CheckpointInfo(int(step), path, size, now)

    def _drop_checkpoints(self, c: sqlite3.Connection) -> list[str]:
        paths = [r[0] for r in c.execute("SELECT path FROM checkpoints WHERE run_id = ?",
                                         (self.run_id,))]
        c.execute("DELETE FROM checkpoints WHERE run_id = ?", (self.run_id,))
        return paths

    # -- the end ----------------------------------------------------------------------------

    def finish(self, final: Mapping[str, Any] | None = None, status: str = COMPLETED,
               error: str | None = None, *, ended: float | None = None) -> None:
        """Write the buffered metrics and record the end: ``final`` metrics, ``status``
        (``completed``, ``failed``, ``interrupted``, ...) and, for a failure, the error text;
        ``ended`` is when the run ended, if not now (Unix time). A completed run's checkpoints
        are deleted (its snapshots hold its weights); any other keeps them, to be resumed."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}; got {status!r}")
        final_json = to_json(dict(final)) if final is not None else None
        with self._lock:
            self._check_open()
            now = time.time() if ended is None else float(ended)
            dropped: list[str] = []

            def end(c: sqlite3.Connection) -> None:
                c.execute("UPDATE runs SET status = ?, ended = ?, updated = ?, final = ?, error = ? "
                          "WHERE run_id = ?", (status, now, now, final_json, error, self.run_id))
                if status == COMPLETED:
                    dropped.extend(self._drop_checkpoints(c))

            self._flush(end)
            self.status = status
            _unlink(self.store.directory, dropped)
