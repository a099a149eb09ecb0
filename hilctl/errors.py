"""Exceptions that carry a message a person can act on, and the exit code each one means.

Exit codes of the ``hilctl`` command (README, "Exit codes"): 0 done; 1 an internal error (a
bug); 2 bad input, refused before any instrument is touched (:class:`HilctlError` and most of
its subclasses); 3 an instrument or the bench failed (:class:`BenchError`), or a Dask
scheduler could not be reached or lost a task (:class:`ClusterError`); 4 the run diverged
(:class:`Diverged`); 128 + N interrupted by signal N (:class:`Interrupted`: 130 for Ctrl-C,
143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import signal


class HilctlError(Exception):
    """Base class of every error hilctl raises on purpose; by default the input was refused."""

    #: The exit code of the ``hilctl`` command that ends with this error.
    exit_code: int = 2


class ConfigError(HilctlError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range.

    The message names the field (``section.key``) and what is allowed.
    """


class BackendError(HilctlError):
    """A backend name is unknown or the backend could not be opened."""


class NonFiniteValue(HilctlError, ValueError):
    """An array given to a tile holds NaN or infinity (the tile takes nothing of it). Inside a
    training run it means the run diverged."""


class BenchError(HilctlError):
    """An instrument or the bench failed: it refused, timed out, went away or answered nonsense.

    Its message names the instrument (resource or port) and the last command.
    """

    exit_code = 3


class ClusterError(HilctlError):
    """The Dask scheduler a command was pointed at does not answer or has no worker, or the
    cluster could not finish a task; the message names the scheduler's address or the task."""

    exit_code = 3


class Diverged(HilctlError):
    """A run's metrics became NaN or infinite: the run is recorded as ``diverged``."""

    exit_code = 4
    #: The status the run store records for a run that ends with this error.
    run_status = "diverged"


class Interrupted(KeyboardInterrupt):
    """The process got SIGINT, SIGTERM or SIGHUP: stop as Ctrl-C stops (the run is recorded as
    ``interrupted``, the bench is put in its safe state) and exit with 128 + the signal."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum
