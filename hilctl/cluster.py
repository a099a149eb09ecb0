"""The Dask cluster that ``hilctl sweep`` and ``hilctl reproduce`` spread trainings over.

Without a scheduler address, a local cluster: ``workers`` processes on this machine, one thread
each, listening on 127.0.0.1 only. With one (``tcp://HOST:PORT``), the cluster behind a running
scheduler: ``dask scheduler`` on one machine and ``dask worker ADDRESS`` on every machine that
lends its cores (``docs/sweeps.md``). A task goes out as a module-level function and plain
data and comes back as plain data; workers write nothing, so the machines need no shared file
system, only hilctl installed.

Ctrl-C in a terminal reaches every process of its process group, a local cluster's workers
too; they ignore it (:func:`dask_setup`, preloaded into each), so that the client alone stops
and closes them in order.

A worker that dies (killed, out of memory, its machine gone) has its task run again on another:
the scheduler retries it up to ``distributed.scheduler.allowed-failures`` times (Dask's
default: 3) and then gives up, and the task comes back as :class:`TaskLost`. Leaving the
``with`` block (at the end, or on Ctrl-C) cancels what has not finished and, for a local
cluster, stops its processes.

Dask is the optional extra ``sweep``; it is imported only when a cluster is opened.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import re
import secrets
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from hilctl.errors import ClusterError, HilctlError

T = TypeVar("T")
R = TypeVar("R")

#: Seconds to wait for a scheduler to answer before giving up on it.
CONNECT_TIMEOUT = 5.0
#: Seconds to wait for a scheduler that answers to have a worker.
WORKERS_TIMEOUT = 30.0
#: The thread-count variables of the BLAS libraries numpy may use. Dask starts each worker
#: process with them at 1 (several workers, each with a thread per core, oversubscribe the
#: cores: a digital FCN run took 17x longer that way); a value the user set is passed on.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

_ADDRESS = re.compile(r"(?:[a-z]+://)?(?:\[[0-9a-fA-F:.]+\]|[^\s/:\[\]]+):\d{1,5}")


def dask_missing(command: str) -> str:
    """The one line that says how to get Dask for ``command``."""
    return (f"{command} runs on Dask, which is not installed; install it with: "
            "pip install 'hilctl[sweep]'")


def require_dask(command: str) -> None:
    """Raise :class:`HilctlError` (exit 2) saying how to install Dask if it does not import."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise HilctlError(dask_missing(command)) from None


def check_address(address: str) -> str:
    """``address`` if it looks like a scheduler's (``tcp://HOST:PORT`` or ``HOST:PORT``)."""
    if not _ADDRESS.fullmatch(address):
        raise HilctlError(f"--scheduler: {address!r} is not a scheduler address; give "
                          "tcp://HOST:PORT, as 'dask scheduler' prints it")
    return address


def local_cores() -> int:
    """The cores this process may run on."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def dask_setup(worker: Any) -> None:
    """Run in each worker process of a local cluster as it starts (a Dask preload): SIGINT is
    ignored there, so that Ctrl-C stops the sweep through the client, not the workers under it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


#: What a client call raises when the scheduler is gone (its futures are then cancelled).
_TRANSPORT_ERRORS = (OSError, TimeoutError, concurrent.futures.CancelledError)


@dataclass(frozen=True)
class TaskLost:
    """A task the cluster could not finish: every worker that ran it died; ``error`` says so,
    as Dask reports it."""

    error: str


class Cluster:
    """A Dask client on a local cluster of ``workers`` processes (default: the cores), or on
    the cluster of the scheduler at ``scheduler``. Use it as a context manager: entering
    starts or reaches the cluster (:class:`ClusterError`, exit 3, if the scheduler does not
    answer or has no worker), leaving cancels what is left and closes it."""

    def __init__(self, *, workers: int | None = None, scheduler: str | None = None) -> None:
        self.workers = workers if workers is not None else local_cores()
        self.scheduler = check_address(scheduler) if scheduler is not None else None
        self._client: Any = None
        self._local: Any = None

    @property
    def description(self) -> str:
        """The cluster in a few words, for progress lines."""
        if self.scheduler is None:
            return f"a local cluster of {self.workers} worker process(es)"
        workers = len(self._client.nthreads()) if self._client is not None else "?"
        return f"the cluster of scheduler {self.scheduler} ({workers} worker(s) now)"

    def __enter__(self) -> Cluster:
        require_dask("this command")
        import dask
        from distributed import Client, LocalCluster

        if self.scheduler is None:
            # Its HTTP server on a free port of 127.0.0.1: two sweeps at once do not collide
            # on Dask's default 8787. The workers' statistical profiler is off: no dashboard
            # shows it here, and its sampling cost about 5% of a least-squares training. Its
            # processes log only what is critical: a task's failure reaches the client as an
            # exception, and a cluster stopped by Ctrl-C would otherwise print a worker's
            # failed heartbeat, traceback and all.
            with dask.config.set({"distributed.worker.profile.enabled": False}):
                self._local = LocalCluster(
                    n_workers=self.workers, threads_per_worker=1, processes=True,
                    host="127.0.0.1", dashboard_address="127.0.0.1:0",
                    silence_logs=logging.CRITICAL, preload=[__name__],
                    env={key: os.environ[key] for key in BLAS_THREADS if key in os.environ})
            self._client = Client(self._local)
            return self
        try:
            self._client = Client(self.scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"--scheduler {self.scheduler}: no answer within {CONNECT_TIMEOUT:g} s "
                f"({type(exc).__name__}); start one with 'dask scheduler', or leave out "
                "--scheduler to run on this machine") from None
        try:
            self._client.wait_for_workers(1, timeout=WORKERS_TIMEOUT)
        except (OSError, TimeoutError):
            self.close()
            raise ClusterError(
                f"--scheduler {self.scheduler}: the scheduler has no worker after "
                f"{WORKERS_TIMEOUT:g} s; start some with 'dask worker {self.scheduler}'"
            ) from None
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Cancel every task not finished and disconnect; stop a local cluster's processes."""
        client, local = self._client, self._local
        self._client = self._local = None
        if client is not None:
            with contextlib.suppress(Exception):  # closing: a cluster already gone is fine
                client.close()
        if local is not None:
            with contextlib.suppress(Exception):
                local.close()

    def _where(self) -> str:
        return f"--scheduler {self.scheduler}" if self.scheduler else "the local cluster"

    def _lost(self, exc: BaseException | None = None) -> ClusterError:
        """The error for a cluster this client lost: the points recorded so far stay."""
        cause = f" ({type(exc).__name__}: {' '.join(str(exc).split())})" if exc else ""
        return ClusterError(f"{self._where()}: the connection to the scheduler was lost, or it "
                            f"restarted{cause}")

    def threads(self) -> int:
        """How many tasks the cluster runs at once now (its workers' threads)."""
        if self._client is None:
            return 0
        try:
            return int(sum(self._client.nthreads().values()))
        except _TRANSPORT_ERRORS as exc:
            raise self._lost(exc) from None

    def completed(self, fn: Callable[[T], R], items: Sequence[T],
                  name: str = "task") -> Iterator[tuple[int, R | TaskLost]]:
        """``fn(item)`` for every item on the cluster; yields ``(index, result)`` as each
        ends, a :class:`TaskLost` for a task every worker that ran it died on. ``fn`` must be a
        module-level function and the items plain data (they are pickled). An exception that
        ``fn`` raises is raised here; a scheduler lost on the way is a :class:`ClusterError`."""
        from distributed import as_completed

        if self._client is None:
            raise RuntimeError("the cluster is not open (use it in a with block)")
        token = secrets.token_hex(4)
        futures = [self._client.submit(fn, item, key=f"{name}-{i}-{token}", pure=False)
                   for i, item in enumerate(items)]
        index = {future.key: i for i, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                i = index[future.key]
                if future.status == "cancelled":  # not by us: we cancel only after the loop
                    raise self._lost()
                if future.status != "error":
                    yield i, self._fetch(future.result)
                    continue
                error = self._fetch(future.exception)
                if type(error).__name__ != "KilledWorker":
                    raise error
                yield i, TaskLost(f"every worker that ran it died: {error}")
        finally:
            with contextlib.suppress(Exception):  # a scheduler already gone has nothing to cancel
                self._client.cancel([f for f in futures if not f.done()])

    def _fetch(self, get: Callable[[], T]) -> T:
        """``get()``, a client call; a scheduler gone meanwhile is a :class:`ClusterError`."""
        try:
            return get()
        except _TRANSPORT_ERRORS as exc:
            raise self._lost(exc) from None

    def map(self, fn: Callable[[T], R], items: Sequence[T], labels: Sequence[str],
            progress: Callable[[str], None]) -> list[R]:
        """``[fn(item) for item in items]`` on the cluster, in order; ``progress`` hears each
        as it ends. A task the cluster could not finish raises :class:`ClusterError`."""
        progress(f"{len(items)} runs on {self.description}")
        results: dict[int, R] = {}
        for i, result in self.completed(fn, items):
            if isinstance(result, TaskLost):
                raise ClusterError(f"{labels[i]}: {result.error}")
            results[i] = result
            progress(f"{labels[i]}: done ({len(results)}/{len(items)})")
        return [results[i] for i in range(len(items))]
