"""The ``hilctl`` command line: a thin dispatcher over one module per command.

A command module has a function ``register(subparsers)`` that adds the command's parser and sets
its handler with ``parser.set_defaults(handler=run)``; ``run(args) -> int`` does the work and
returns the exit code (:mod:`hilctl.cli.output`). The core's commands are listed in
:data:`COMMANDS`; other packages add theirs through the entry-point group ``hilctl.commands``
(the lab's ``hilctl instruments``, the simulator's ``hilctl sim serve``), each entry point a
``register`` function. Shared argument types live in :mod:`hilctl.cli.parsing`, the options of
commands that open tiles in :mod:`hilctl.cli.options`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

from hilctl.cli import characterize, fit, reproduce, runs, sweep, train
from hilctl.cli.output import EXIT_FAILURE, EXIT_OK, PROG, error, say
from hilctl.cli.parsing import ArgumentParser, UsageError
from hilctl.cli.signals import exit_code, signals_as_interrupts
from hilctl.errors import HilctlError
from hilctl.version import code_version

#: The core's commands, in the order ``hilctl --help`` lists them.
COMMANDS = (train, sweep, characterize, fit, runs, reproduce)
#: Entry-point group of the commands other packages add.
ENTRY_POINT_GROUP = "hilctl.commands"

Register = Callable[[Any], None]


def _unloadable(name: str, exc: Exception) -> Register:
    """A stand-in for a command whose package could not be loaded: it says why when run."""

    def register(subparsers: Any) -> None:
        parser = subparsers.add_parser(name, help=f"(not available: {exc})")

        def run(args: argparse.Namespace) -> int:
            raise UsageError(f"{name}: the command could not be loaded: {exc}")

        parser.set_defaults(handler=run)

    return register


def _added_commands() -> list[Register]:
    registers = []
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            registers.append(entry.load())
        except Exception as exc:  # a broken extension must not take the core's commands down
            registers.append(_unloadable(entry.name, exc))
    return registers


def build_parser() -> ArgumentParser:
    """The top-level parser: the core's commands, then those of the entry-point group."""
    parser = ArgumentParser(
        prog=PROG,
        description="Hardware-in-the-loop training on analog in-memory computing tiles.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {code_version()}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                       parser_class=ArgumentParser)
    for register in [*(module.register for module in COMMANDS), *_added_commands()]:
        register(subparsers)
    parser.commands = tuple(subparsers.choices)
    return parser


class _WarningsToStderr(logging.Handler):
    """hilctl's warnings and errors (a reconnect, cells that do not move, an instrument not
    made safe) as ``hilctl: warning: ...`` lines on the stderr of the moment."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        say(f"{PROG}: {record.levelname.lower()}: {record.getMessage()}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hilctl`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code
    (:mod:`hilctl.errors`)."""
    logger = logging.getLogger(PROG)
    if not any(isinstance(h, _WarningsToStderr) for h in logger.handlers):
        logger.addHandler(_WarningsToStderr())
    try:
        with signals_as_interrupts():
            return _dispatch(argv)
    except HilctlError as exc:
        return error(exc, exc.exit_code)
    except KeyboardInterrupt as exc:
        say(f"{PROG}: interrupted ({exc or 'SIGINT'})")
        return exit_code(exc)
    except BrokenPipeError:  # the reader went away (``hilctl ... --json | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit cannot fail again
        return EXIT_FAILURE
    except Exception as exc:  # a bug: say so, with what is needed to report it
        say(f"{PROG}: internal error (a bug in hilctl; please report it with this traceback): "
            f"{type(exc).__name__}: {exc}")
        say("".join(traceback.format_exception(exc)).rstrip())
        return EXIT_FAILURE


def _dispatch(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        return error(exc)
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        return error(f"a command is required; one of: {', '.join(parser.commands)} "
                     "(see 'hilctl --help')")
    return handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
