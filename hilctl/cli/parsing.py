"""The parser every command builds on, and the argument types commands share.

Each type names what it wants; argparse adds ``argument --name:`` in front of the message.
"""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

from hilctl.errors import HilctlError


class UsageError(HilctlError):
    """The command line was refused; the message is shown as ``hilctl: error: <message>``."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors raise :class:`UsageError` instead of exiting.

    :func:`hilctl.cli.main` turns the error into one line on stderr and exit code 2, the same
    as every other refused input. Subparsers inherit this class.
    """

    #: Names of the subcommands, filled in by :func:`hilctl.cli.build_parser`.
    commands: tuple[str, ...] = ()

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _integer(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}; got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}; got {value}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    return _integer(text, 1)


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _integer(text, 0)


def finite_float(text: str) -> float:
    """argparse type: a finite number (no nan or inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number; got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number; got {text!r}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds; got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0; got {text!r}")
    return value
