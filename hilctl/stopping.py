"""Stopping a run at a step boundary: a stop signal asks, the training controller obeys.

While a run trains (:func:`deferring`), the first SIGINT, SIGTERM or SIGHUP does not stop it in
the middle of a step: :func:`request` notes it, and the controller, at the next step boundary,
writes a checkpoint and raises :class:`~hilctl.errors.Interrupted`. A second signal before that
stops at once (the last periodic checkpoint remains). Outside a run, a signal stops at once.
The command line's signal handler (:mod:`hilctl.cli.signals`) calls :func:`request`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0  # nested deferring() blocks
_pending: int | None = None  # a stop signal waiting for the next boundary
_taken = False  # a run has acted on a stop request: it is stopping now


@contextlib.contextmanager
def deferring() -> Iterator[None]:
    """Within the block, a first stop signal waits for the next step boundary."""
    global _depth, _pending
    with _lock:
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _pending = None


def request(signum: int) -> bool:
    """Note stop signal ``signum``; True if a run will stop at its next boundary, False if the
    caller must stop now (no run is deferring, or a stop was already pending)."""
    global _pending
    with _lock:
        if _depth == 0 or _pending is not None or _taken:
            return False
        _pending = signum
        return True


def pending() -> int | None:
    """The stop signal waiting for the next step boundary, if any."""
    return _pending


def take() -> int | None:
    """The pending stop signal, now being acted on (later signals are then ignored)."""
    global _taken
    with _lock:
        if _pending is not None:
            _taken = True
        return _pending


def stopped() -> bool:
    """Whether a run has acted on a stop request (and is stopping)."""
    return _taken


def reset() -> None:
    """Forget every request (a new command begins)."""
    global _pending, _taken
    with _lock:
        _pending, _taken = None, False
