"""SIGINT, SIGTERM and SIGHUP stop a command as Ctrl-C does.

A batch queue, ``systemctl stop``, ``docker stop`` and a dropped SSH session send SIGTERM or
SIGHUP; without a handler Python dies at once, leaving the run recorded as ``running`` and the
bench energised. Within :func:`signals_as_interrupts` the first of these signals raises
:class:`~hilctl.errors.Interrupted` in the main thread, so every ``finally`` runs: the run is
recorded as ``interrupted`` and the backend closes (a bench goes to its safe state). Later
signals are ignored with a note until the block ends, so that a second Ctrl-C cannot cut the
safe-state sequence short. While a run trains, the first signal waits for the next step
boundary, where the run writes a checkpoint before it stops (:mod:`hilctl.stopping`); a second
signal then stops it at once.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

from hilctl import stopping
from hilctl.errors import Interrupted

#: The signals that stop a command as Ctrl-C does.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def signals_as_interrupts() -> Iterator[None]:
    """Within the block, the first stop signal raises :class:`Interrupted`; later ones are
    noted and ignored. Outside the main thread (where handlers cannot be set) it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    raised: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if raised or stopping.stopped():
            _note(f"hilctl: {name} received; still stopping (closing the run and putting the "
                  "instruments in their safe state)")
            return
        if stopping.request(signum):
            _note(f"hilctl: {name} received; stopping after this step (writing a checkpoint); "
                  "send it again to stop at once")
            return
        raised.append(signum)
        raise Interrupted(signum)

    previous: dict[int, Any] = {}
    stopping.reset()
    try:
        for signum in STOP_SIGNALS:
            previous[signum] = signal.signal(signum, handler)
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)
        stopping.reset()


def _note(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr may be gone (SIGHUP)
        print(text, file=sys.stderr, flush=True)


def exit_code(interruption: KeyboardInterrupt) -> int:
    """128 + the signal that interrupted (130 for a plain Ctrl-C)."""
    return int(getattr(interruption, "exit_code", 128 + signal.SIGINT))
