"""The ``hilctl`` command line: a thin dispatcher over one module per command.

Each command lives in its own module, listed in :data:`COMMAND_MODULES`. Such a module has a
function ``register(subparsers)`` that adds the command's parser and sets its handler with
``parser.set_defaults(handler=run)``; ``run(args) -> int`` does the work and returns the exit
code. Command modules are imported when the parser is built, so a command with a broken
optional dependency fails alone, and they may import the shared option helpers below.

Exit codes: 0 success; 1 a failure while running (e.g. the plot file could not be written);
2 the input was refused (bad argument, bad config value, unknown backend), reported as one line
``hilctl: error: ...`` on stderr; 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from hilctl import __version__
from hilctl.backends import available_backends
from hilctl.config import (
    DEVICE_CONFIGS,
    PeripheryConfig,
    PulsedDeviceConfig,
    TileConfig,
    UpdateConfig,
    no_variation,
    parse_assignments,
    tile_config,
)
from hilctl.errors import ConfigError, HilctlError

PROG = "hilctl"

#: Modules that each add one subcommand (see the module docstring). Add new commands here.
COMMAND_MODULES: tuple[str, ...] = (
    "hilctl.train_cli",
    "hilctl.characterize",
    "hilctl.runs_cli",
    "hilctl.instruments_cli",
    "hilctl.sim_cli",
    "hilctl.reproduce_cli",
)

#: Sections that ``--set SECTION.KEY=VALUE`` accepts.
SET_SECTIONS: tuple[str, ...] = ("device", "update", "periphery")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(HilctlError):
    """The command line was refused; the message is shown as ``hilctl: error: <message>``."""


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose errors raise :class:`UsageError` instead of exiting.

    :func:`main` turns the error into one line on stderr and exit code 2, the same as every
    other refused input. Subparsers inherit this class.
    """

    #: Names of the subcommands, filled in by :func:`build_parser`.
    commands: tuple[str, ...] = ()

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


# ---------------------------------------------------------------------------------------------
# Argument types: each names what it wants, argparse adds "argument --name:".
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Options shared by every command that opens a tile (characterize now; train, compare later).
# ---------------------------------------------------------------------------------------------


def _keys(model: type[Any], exclude: frozenset[str] = frozenset()) -> list[str]:
    return [k for k in model.model_fields if k != "model" and k not in exclude]


def set_keys_help(width: int = 79) -> str:
    """The keys ``--set`` accepts, per section and device model, for a parser's epilog."""
    common = set(_keys(PulsedDeviceConfig))
    groups = [("device.*, every model", sorted(common))]
    for name, model in DEVICE_CONFIGS.items():
        extra = sorted(set(_keys(model)) - common)
        if extra:
            groups.append((f"device.*, {name} only", extra))
    groups.append(("update.*", sorted(_keys(UpdateConfig))))
    groups.append(("periphery.*", sorted(_keys(PeripheryConfig))))
    lines = ["--set keys (SECTION.KEY=VALUE; VALUE is JSON where it parses, e.g. 0.01, true,",
             "[1, 0.5]; anything else is a string):"]
    for label, keys in groups:
        lines.append(textwrap.fill(", ".join(keys), width, initial_indent=f"  {label}: ",
                                   subsequent_indent="      ", break_on_hyphens=False))
    return "\n".join(lines)


def add_tile_arguments(parser: argparse.ArgumentParser, *, rows: int = 32, cols: int = 32,
                       station: bool = False) -> None:
    """Add the options that choose a backend and configure one tile on it.

    With ``station``, also ``--station`` and ``--tile`` (see :func:`add_station_arguments`), and
    ``--rows``/``--cols`` default to None: ``rows``/``cols`` on most backends, the size of the
    station's tile region on ``lab`` (see :func:`resolve_tile_shape`).
    """
    group = parser.add_argument_group("tile")
    group.add_argument(
        "--backend",
        default="sim",
        metavar="NAME",
        help=f"backend to open the tile on (registered: {', '.join(available_backends())}; "
        "default: %(default)s)",
    )
    group.add_argument(
        "--device",
        default="soft-bounds",
        choices=list(DEVICE_CONFIGS),
        help="device model (response function) of every cell (default: %(default)s)",
    )
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value; SECTION is device, update or periphery; repeatable "
        "(keys listed below)",
    )
    group.add_argument(
        "--no-variation",
        action="store_true",
        help="switch off every device-to-device and cycle-to-cycle variation of the device "
        "(applied before --set, which may turn single ones back on)",
    )
    lab_note = f", or the tile region's on --backend {LAB_BACKEND}" if station else ""
    group.add_argument("--rows", type=positive_int, default=None if station else rows,
                       help=f"rows (outputs) of the tile (default: {rows}{lab_note})")
    group.add_argument("--cols", type=positive_int, default=None if station else cols,
                       help=f"columns (inputs) of the tile (default: {cols}{lab_note})")
    group.add_argument("--seed", type=nonnegative_int, default=0,
                       help="seed of every random draw of the backend (default: %(default)s)")
    if station:
        add_station_arguments(parser, tile=True)
        parser.set_defaults(default_shape=(rows, cols))


# ---------------------------------------------------------------------------------------------
# The lab bench: --station (and --tile) become the options of backend 'lab'.
# ---------------------------------------------------------------------------------------------

#: The backend that drives a bench and takes ``station=`` (and ``tile=``) options.
LAB_BACKEND = "lab"


def add_station_arguments(parser: argparse.ArgumentParser, *, tile: bool = False) -> None:
    """Add ``--station FILE`` (and, with ``tile``, ``--tile NAME``) for ``--backend lab``."""
    group = parser.add_argument_group("lab bench (--backend lab)")
    group.add_argument("--station", metavar="FILE.toml",
                       help=f"station file of the bench; needed by --backend {LAB_BACKEND} and only "
                       "by it ('hilctl sim serve' starts a simulated bench and writes one)")
    if tile:
        group.add_argument("--tile", metavar="NAME",
                           help="tile region of the station to use (default: the first)")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """The backend options of ``--station`` / ``--tile``: ``{"station": path[, "tile": name]}``
    on the lab backend, ``{}`` elsewhere.

    Raises :class:`UsageError` for ``--station``/``--tile`` on another backend and for the lab
    backend without ``--station``; a station file that is missing or invalid raises
    :class:`hilctl.errors.ConfigError` naming the file (exit 2 either way), before any run.
    """
    station = getattr(args, "station", None)
    tile = getattr(args, "tile", None)
    if args.backend != LAB_BACKEND:
        if station is not None:
            raise UsageError(f"--station: only --backend {LAB_BACKEND} uses a station file; "
                             f"got --backend {args.backend}")
        if tile is not None:
            raise UsageError(f"--tile: only --backend {LAB_BACKEND} has tile regions; "
                             f"got --backend {args.backend}")
        return {}
    if station is None:
        raise UsageError(f"--backend {LAB_BACKEND} needs --station FILE.toml, the station file of "
                         "the bench ('hilctl sim serve' starts a simulated bench and writes one)")
    config = load_station_file(station)
    options: dict[str, Any] = {"station": str(Path(station))}
    if tile is not None:
        config.region(tile)  # ConfigError naming the regions the station has
        options["tile"] = tile
    return options


def load_station_file(path: str) -> Any:
    """The validated station (``drivers.station.StationConfig``) of ``path``.

    ``drivers`` is imported here, not at module level: hilctl's core imports no backend, and
    only a command given ``--backend lab`` needs the lab drivers (and pays for importing them).
    """
    from drivers.station import load_station

    return load_station(path)


def resolve_tile_shape(args: argparse.Namespace, options: dict[str, Any]) -> None:
    """Fill in ``args.rows`` / ``args.cols`` left at None by ``add_tile_arguments(station=True)``:
    the tile region's size on the lab backend (region ``--tile``, else the first), else the
    defaults given to :func:`add_tile_arguments`."""
    if args.rows is not None and args.cols is not None:
        return
    rows, cols = args.default_shape
    if "station" in options:
        region = load_station_file(options["station"]).region(options.get("tile", 0))
        rows, cols = region.rows, region.cols
    args.rows = rows if args.rows is None else args.rows
    args.cols = cols if args.cols is None else args.cols


def close_backend(backend: str) -> None:
    """Close the connections a backend keeps between tiles (the lab bench's instruments), at
    the end of a command, so the next command (or run of ``compare``) starts afresh.

    ``drivers`` is imported lazily for the same reason as in :func:`load_station_file`.
    """
    if backend == LAB_BACKEND:
        from drivers.bench import Bench

        Bench.close_all()


def _all_finite(value: Any) -> bool:
    """False if ``value`` is (or holds) a NaN or infinite float; ``--set`` parses JSON, which
    reads ``NaN``, ``Infinity`` and ``1e999`` as such."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return True


def tile_config_from_args(args: argparse.Namespace) -> TileConfig:
    """The validated tile config of the options added by :func:`add_tile_arguments`.

    Raises :class:`hilctl.errors.ConfigError` (a ``ValueError``) naming the field and what is
    allowed.
    """
    sections = parse_assignments(args.set, SET_SECTIONS)
    for section, values in sections.items():
        for key, value in values.items():
            if not _all_finite(value):
                raise ConfigError(f"{section}.{key}: must be finite; got {value!r}")
    device_values = {**(no_variation(args.device) if args.no_variation else {}),
                     **sections["device"]}
    if "model" in device_values:
        raise ConfigError(
            "device.model: choose the model with --device, not --set; allowed: "
            + ", ".join(DEVICE_CONFIGS)
        )
    return tile_config(
        rows=args.rows,
        cols=args.cols,
        device=args.device,
        device_values=device_values,
        update_values=sections["update"],
        periphery_values=sections["periphery"],
        seed=args.seed,
    )


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


# ---------------------------------------------------------------------------------------------
# Dispatch.
# ---------------------------------------------------------------------------------------------


def error(message: object, code: int = EXIT_USAGE) -> int:
    """Print ``hilctl: error: message`` as one line on stderr; return ``code``."""
    text = " ".join(str(message).split())
    print(f"{PROG}: error: {text}", file=sys.stderr)
    return code


def build_parser() -> ArgumentParser:
    """The top-level parser with one subparser per module of :data:`COMMAND_MODULES`."""
    parser = ArgumentParser(
        prog=PROG,
        description="Hardware-in-the-loop training on analog in-memory computing tiles.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(title="commands", dest="command", metavar="COMMAND",
                                       parser_class=ArgumentParser)
    for name in COMMAND_MODULES:
        register: Callable[[Any], None] = importlib.import_module(name).register
        register(subparsers)
    parser.commands = tuple(subparsers.choices)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``hilctl`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
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
    try:
        return handler(args)
    except HilctlError as exc:
        return error(exc)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (``hilctl ... --json | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that flushing stdout at exit cannot fail again
        return EXIT_FAILURE


if __name__ == "__main__":
    raise SystemExit(main())
