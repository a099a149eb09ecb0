"""``hilctl sim serve STATION.toml`` (entry point ``hilctl.commands``): run a simulated station
until Ctrl-C.

The simulated station (``sim/instruments/station.py``) is one emulated chip with the three
instruments a bench has: the controller board on a pseudo-terminal, a pulse generator and an SMU
as SCPI servers on 127.0.0.1. The command prints where each listens and writes the resolved
station file, which ``hilctl train/characterize --backend lab --station FILE`` and
``hilctl instruments --station FILE`` use from another shell.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hilctl.cli.output import EXIT_FAILURE, EXIT_OK, error
from hilctl.cli.parsing import UsageError, positive_seconds
from sim.instruments.station import SimStationSpec, SimulatedStation, load_sim_station

_DESCRIPTION = """\
Start a simulated station -- an emulated chip behind a controller board on a pseudo-terminal
and a pulse generator and an SMU on 127.0.0.1 -- print where each instrument listens and the
resolved station file, and serve until Ctrl-C (or --seconds). Use the station file with
--backend lab --station FILE in another shell. An example: examples/sim_station.toml."""


def register(subparsers: Any) -> None:
    """Add ``sim`` (with ``sim serve``) to the ``hilctl`` subcommands."""
    sim = subparsers.add_parser(
        "sim", help="simulated instruments: run a simulated station ('hilctl sim serve')",
        description="Simulated instruments that speak the real wire protocols.")
    sim.set_defaults(handler=_need_subcommand)
    commands = sim.add_subparsers(title="sim commands", dest="sim_command", metavar="SUBCOMMAND")
    serve = commands.add_parser(
        "serve", help="start a simulated station and serve until Ctrl-C",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("station", metavar="STATION.toml",
                       help="simulated station file (chip, device, faults and station settings)")
    serve.add_argument("--write-station", metavar="OUT.toml",
                       help="write the resolved station file here (default: a temporary file, "
                       "removed when the station stops)")
    serve.add_argument("--seconds", type=positive_seconds, metavar="N",
                       help="stop after N seconds (default: serve until Ctrl-C)")
    serve.set_defaults(handler=run_serve)


def _need_subcommand(args: argparse.Namespace) -> int:
    raise UsageError("sim: a subcommand is required: serve (see 'hilctl sim --help')")


def run_serve(args: argparse.Namespace) -> int:
    """``hilctl sim serve``."""
    spec = load_sim_station(args.station)  # ConfigError (exit 2) names the file and the field
    out = Path(args.write_station) if args.write_station else None
    if out is not None and not out.parent.is_dir():
        raise UsageError(f"--write-station: directory {str(out.parent)!r} does not exist")

    station = SimulatedStation(spec).start()
    temporary: Path | None = None
    try:
        if out is None:
            fd, name = tempfile.mkstemp(prefix="hilctl-sim-station-", suffix=".toml")
            os.close(fd)
            out = temporary = Path(name)
        try:
            station.write_station(out, header=f"Resolved station of the simulated station "
                                  f"{args.station} (hilctl sim serve, pid {os.getpid()});\n"
                                  "valid while it runs.")
        except OSError as exc:
            return error(f"--write-station: could not write {str(out)!r}: {exc.strerror or exc}",
                         EXIT_FAILURE)
        _print_addresses(args.station, station, out, temporary is not None, args.seconds)
        # Ctrl-C (or SIGTERM, SIGHUP: hilctl's main turns them into one) is how a server stops:
        # not an error
        with contextlib.suppress(KeyboardInterrupt):
            _serve(args.seconds)
        print(f"stopping: {_traffic(station)}", flush=True)
    finally:
        station.stop()
        if temporary is not None:
            temporary.unlink(missing_ok=True)
    return EXIT_OK


def example_commands(spec: SimStationSpec, station_file: Path) -> list[str]:
    """Commands that work on the simulated station: a training whose weight matrix fits the
    smallest tile region (two regions: Tiki-Taka too), a characterisation, an identification."""
    per_weight = 2 if spec.mapping is not None and spec.mapping.kind == "differential" else 1
    rows = min(region.rows for region in spec.tiles)
    cols = min(region.cols for region in spec.tiles) // per_weight
    where = f"--backend lab --station {station_file}"
    shape = f"--set task.out={rows} --set task.in={cols}"
    commands = [f"hilctl instruments --station {station_file}",
                f"hilctl characterize {where} --up 50 --down 50",
                f"hilctl train {where} {shape}"]
    if len(spec.tiles) >= 2:
        commands.append(f"hilctl train {where} --algorithm tiki-taka {shape} "
                        "--set algorithm.fast_lr=0.2")
    return commands


def _print_addresses(source: str, station: SimulatedStation, out: Path, temporary: bool,
                     seconds: float | None) -> None:
    spec = station.spec
    addresses = station.addresses()
    rows = [
        ("board", addresses["board"], "controller board, serial (pty)"),
        ("pulse generator", addresses["pulse_generator"], "33500B-class, SCPI over TCP"),
        ("smu", addresses["smu"], "2450-class, SCPI over TCP"),
        ("station file", str(out), "removed when the station stops" if temporary else ""),
    ]
    print(f"simulated station of {source}: {spec.chip.rows} x {spec.chip.cols} chip, "
          f"{spec.device.model} cells, tiles {', '.join(t.name for t in spec.tiles)}")
    if spec.disturb.enabled:
        print(f"  half-select disturb on: rate {spec.disturb.rate:g}, exponent "
              f"{spec.disturb.exponent:g}, under the station's bias {spec.write.bias}")
    width = max(len(label) for label, _, _ in rows)
    value_width = max(len(value) for _, value, _ in rows)
    for label, value, note in rows:
        print(f"  {label:<{width}}  {value:<{value_width}}  {note}".rstrip())
    until = f"for {seconds:g} s" if seconds is not None else "until Ctrl-C"
    print(f"serving {until}; in another shell, e.g.:")
    for command in example_commands(spec, out):
        print(f"  {command}")
    sys.stdout.flush()


def _serve(seconds: float | None) -> None:
    deadline = None if seconds is None else time.monotonic() + seconds
    while True:
        left = 1.0 if deadline is None else deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 1.0))


def _traffic(station: SimulatedStation) -> str:
    assert station.board and station.pulse_generator and station.smu and station.chip  # started
    served = (f"board {station.board.stats.frames_in} frame(s), pulse generator "
              f"{station.pulse_generator.message_count} message(s), smu "
              f"{station.smu.message_count} message(s) served")
    if not station.spec.disturb.enabled:
        return served
    disturbed = station.chip.disturb_ledger()
    return (f"{served}; disturb moved {len(disturbed)} cell(s) by "
            f"{sum(e.count for e in station.chip.disturbs)} device pulse(s)")
