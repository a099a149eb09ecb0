"""The run store: every run recorded in an embedded SQLite database.

One database file (``runs.sqlite``) holds, per run, the resolved configuration (JSON), the
backend, the code version and the host it ran on, its status, metrics per step, events
(instrument and info messages) and the final metrics. Weight snapshots are ``.npy`` files
beside it, in ``snapshots/<run_id>/<step>_<name>.npy``, with one row each in the database.

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
  ``running`` in the database; readers report such a run as ``lost`` when it ran on this host
  and its process is gone.
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
import functools
import json
import math
import os
import platform
import re
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from hilctl import __version__
from hilctl.errors import HilctlError, Interrupted

#: Version of the database layout; :data:`_MIGRATIONS` upgrades older stores to it.
SCHEMA_VERSION = 1

#: File name of the database inside the store directory.
STORE_FILENAME = "runs.sqlite"

#: Status of a run while it runs, and the statuses :meth:`Run.finish` may set.
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"
DIVERGED = "diverged"
FINAL_STATUSES: tuple[str, ...] = (COMPLETED, FAILED, INTERRUPTED, DIVERGED)
#: Reported (never stored) for a ``running`` run whose process on this host is gone.
LOST = "lost"

#: Milliseconds a connection waits for another writer's lock before giving up.
BUSY_TIMEOUT_MS = 30_000

_SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")

# Statements are split at ";" and run one by one, so comments must not contain one.
_SCHEMA = """
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

#: ``version -> function(connection)`` upgrading a store from ``version`` to ``version + 1``,
#: run inside the write transaction that then records the new version.
_MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {}


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
        status: ``running``, ``completed``, ``failed``, ``interrupted`` or ``lost``.
        command: the command that made the run (``train``, ...).
        backend: the backend it ran on, if recorded.
        summary: task and algorithm taken from the config (``"mnist / tiki-taka"``), or ``""``.
        final: the final metrics given to :meth:`Run.finish` (empty if none).
    """

    run_id: str
    started: datetime
    seconds: float | None
    status: str
    command: str
    backend: str | None
    summary: str
    final: dict[str, Any]


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

    @property
    def summary(self) -> str:
        return config_summary(self.config)


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


@functools.lru_cache(maxsize=1)
def git_describe() -> str | None:
    """``git describe --always --dirty --tags`` of the source tree hilctl runs from, or None.

    Only asked when the directory holding the ``hilctl`` package is a git work tree's root (an
    editable or source checkout), so an installed copy never reports an unrelated repository.
    Never raises; gives up after 2 s; cached for the life of the process.
    """
    try:
        root = Path(__file__).resolve().parent.parent
        git = shutil.which("git")
        if git is None or not (root / ".git").exists():
            return None
        done = subprocess.run(
            [git, "-C", str(root), "describe", "--always", "--dirty", "--tags"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=2, check=False,
        )
        text = done.stdout.strip()
        return text if done.returncode == 0 and text else None
    except Exception:
        return None


def code_version() -> str:
    """``hilctl <version>``, plus ``(git <describe>)`` when running from a git checkout."""
    described = git_describe()
    return f"{__version__} (git {described})" if described else __version__


def run_metadata() -> dict[str, Any]:
    """What is recorded of the environment of a run: code version, host, process, versions."""
    try:
        hostname = socket.gethostname()
    except OSError:
        hostname = None
    return {
        "code_version": code_version(),
        "hilctl": __version__,
        "git": git_describe(),
        "hostname": hostname,
        "pid": os.getpid(),
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


def _process_gone(hostname: str | None, pid: int | None) -> bool:
    """True only if the process ``pid`` ran on this host and is certainly gone (POSIX only)."""
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
    return False


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
    ) -> Run:
        """Record a new run with status ``running`` and return it (use it as a context manager).

        ``config`` (the resolved configuration) is stored as JSON; ``metadata`` adds to the
        recorded environment (code version, hostname, pid, python and numpy versions, ...).
        """
        config_json = to_json(dict(config or {}))
        meta = run_metadata()
        if metadata:
            meta.update(metadata)
        meta_json = to_json(meta)
        for _attempt in range(10):
            now = time.time()
            run_id = new_run_id(now)

            def insert(c: sqlite3.Connection, run_id: str = run_id, now: float = now) -> None:
                c.execute(
                    "INSERT INTO runs (run_id, command, backend, status, started, updated, config,"
                    " metadata, hostname, pid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (run_id, command, backend, RUNNING, now, now, config_json, meta_json,
                     meta.get("hostname"), os.getpid()),
                )

            try:
                self._write(insert)
            except sqlite3.IntegrityError:  # the same id in the same second: draw again
                continue
            return Run(self, run_id, started=now)
        raise RunStoreError("could not draw an unused run id")  # pragma: no cover

    def snapshot_dir(self, run_id: str) -> Path:
        return self.directory / "snapshots" / run_id

    # -- reading ----------------------------------------------------------------------------

    def _status_and_seconds(self, row: sqlite3.Row | tuple[Any, ...]) -> tuple[str, float | None]:
        status, started, updated, ended, hostname, pid = row
        if ended is not None:
            return status, ended - started
        if status == RUNNING:
            if _process_gone(hostname, pid):
                return LOST, updated - started
            return status, max(0.0, time.time() - started)
        return status, updated - started

    def list_runs(self, limit: int | None = 20) -> list[RunSummary]:
        """The newest ``limit`` runs (all if None), newest first."""
        sql = ("SELECT run_id, command, backend, config, final, status, started, updated, ended,"
               " hostname, pid FROM runs ORDER BY started DESC, run_id DESC")
        params: tuple[Any, ...] = ()
        if limit is not None:
            sql += " LIMIT ?"
            params = (max(0, int(limit)),)
        with self._read() as c:
            rows = c.execute(sql, params).fetchall()
        out = []
        for run_id, command, backend, config, final, *timing in rows:
            status, seconds = self._status_and_seconds(timing)
            out.append(RunSummary(
                run_id=run_id, started=_utc(timing[1]), seconds=seconds, status=status,
                command=command, backend=backend, summary=config_summary(_loads(config, {})),
                final=_loads(final, {}) or {},
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

    def get_run(self, id_or_prefix: str) -> RunRecord:
        """Everything recorded of the run ``id_or_prefix`` (a full id or a unique prefix)."""
        run_id = self.resolve_id(id_or_prefix)
        with self._read() as c:
            row = c.execute(
                "SELECT command, backend, config, metadata, final, error, status, started, updated,"
                " ended, hostname, pid FROM runs WHERE run_id = ?", (run_id,)).fetchone()
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
            snapshots=snapshots,
        )


# ---------------------------------------------------------------------------------------------
# One run being recorded.
# ---------------------------------------------------------------------------------------------


class Run:
    """A run being recorded; made by :meth:`RunStore.start_run`. Safe to share between threads.

    As a context manager it finishes the run when the block is left (see the module docstring).
    """

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
        if isinstance(step, bool) or not isinstance(step, int | np.integer):
            raise TypeError(f"step must be an integer; got {step!r}")
        items = {**(metrics or {}), **values}
        now = time.time()
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

    def log_event(self, kind: str, message: str, *, step: int | None = None) -> None:
        """Record a message (``kind`` e.g. ``instrument``, ``info``, ``warning``) now, with the
        buffered metrics."""
        now = time.time()

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
            partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
            try:
                with open(partial, "wb") as handle:
                    np.save(handle, data, allow_pickle=False)
                os.replace(partial, path)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    partial.unlink()
            relative = path.relative_to(self.store.directory).as_posix()
            now = time.time()

            def insert(c: sqlite3.Connection) -> None:
                c.execute("INSERT OR REPLACE INTO snapshots (run_id, step, name, path, shape, dtype,"
                          " time) VALUES (?, ?, ?, ?, ?, ?, ?)",
                          (self.run_id, int(step), name, relative, json.dumps(list(data.shape)),
                           data.dtype.str, now))

            self._flush(insert)
            return path

    # -- the end ----------------------------------------------------------------------------

    def finish(self, final: Mapping[str, Any] | None = None, status: str = COMPLETED,
               error: str | None = None) -> None:
        """Write the buffered metrics and record the end: ``final`` metrics, ``status``
        (``completed``, ``failed`` or ``interrupted``) and, for a failure, the error text."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(FINAL_STATUSES)}; got {status!r}")
        final_json = to_json(dict(final)) if final is not None else None
        with self._lock:
            self._check_open()
            now = time.time()

            def end(c: sqlite3.Connection) -> None:
                c.execute("UPDATE runs SET status = ?, ended = ?, updated = ?, final = ?, error = ? "
                          "WHERE run_id = ?", (status, now, now, final_json, error, self.run_id))

            self._flush(end)
            self.status = status

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.finished:
            return
        if exc_type is None:
            self.finish()
        elif issubclass(exc_type, KeyboardInterrupt | SystemExit):
            if isinstance(exc, Interrupted):
                cause = f"interrupted by {exc}"
            else:
                cause = ("KeyboardInterrupt" if issubclass(exc_type, KeyboardInterrupt)
                         else f"SystemExit: {exc}")
            self.finish(status=INTERRUPTED, error=cause)
        elif (status := getattr(exc, "run_status", None)) in FINAL_STATUSES:
            self.finish(status=status, error=str(exc))
        else:
            text = "".join(traceback.format_exception_only(exc_type, exc)).strip()
            with self._lock:
                now = time.time()
                trace = "".join(traceback.format_exception(exc_type, exc, tb))

                def record(c: sqlite3.Connection) -> None:
                    c.execute("INSERT INTO events (run_id, time, kind, message) VALUES (?, ?, ?, ?)",
                              (self.run_id, now, "error", trace))

                self._flush(record)
            self.finish(status=FAILED, error=text)
