"""``hilctl characterize``: measure a tile's pulse response (:mod:`hilctl.characterize`) on any
backend, print it, plot it, and write its JSON record to a file."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from hilctl import __version__
from hilctl.characterize import measure_pulse_response
from hilctl.cli.options import (
    add_tile_arguments,
    backend_from_args,
    resolve_tile_shape,
    set_keys_help,
    tile_config_from_args,
)
from hilctl.cli.output import (
    EXIT_FAILURE,
    EXIT_OK,
    check_output_path,
    error,
    json_ready,
    print_json,
    progress_for,
    say,
    write_atomically,
)
from hilctl.cli.parsing import UsageError, finite_float, nonnegative_int
from hilctl.errors import HilctlError
from hilctl.plotting import plot_pulse_response, require_matplotlib

# ---------------------------------------------------------------------------------------------

_DESCRIPTION = """\
Measure the pulse response of a tile: program every cell to --start, apply --up single up
pulses to all cells, then --down single down pulses, and read the weights after each pulse.
Prints the mean and spread over the cells (a short summary, or every point with --json), can
write that JSON record to a file (--out, with every cell's trace too with --per-cell) and can
plot the curve (--plot, needs matplotlib). The device can come from a config file (--config,
e.g. the [device] section of a 'hilctl train' config).

On a bench: --backend lab --station FILE.toml [--tile NAME] measures the cells of that tile
region of the station (the first region by default; --rows/--cols default to its size)."""


def register(subparsers: Any) -> None:
    """Add ``characterize`` to the ``hilctl`` subcommands."""
    parser = subparsers.add_parser(
        "characterize",
        help="measure a tile's pulse response (up then down pulse sweep)",
        description=_DESCRIPTION,
        epilog=set_keys_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_tile_arguments(parser, config_file=True)
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--up", type=nonnegative_int, default=500,
                       help="up pulses, applied first (default: %(default)s)")
    sweep.add_argument("--down", type=nonnegative_int, default=500,
                       help="down pulses, applied after the up pulses (default: %(default)s)")
    sweep.add_argument("--start", type=finite_float, default=0.0, metavar="W",
                       help="weight every cell is programmed to first, within the device "
                       "bounds [w_min, w_max] (default: %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (by default a bar on a terminal, else a "
                        "log line at most every 10 s)")
    output.add_argument("--json", action="store_true",
                        help="print one JSON object with every point instead of the summary")
    output.add_argument("--out", metavar="FILE.json", type=Path,
                        help="also write the JSON record --json prints into FILE.json "
                        "(replaced whole, never left half-written)")
    output.add_argument("--per-cell", action="store_true",
                        help="add every cell's weight after programming and after each pulse "
                        "to the JSON record (key per_cell; needs --json or --out)")
    output.add_argument("--plot", metavar="FILE.png", type=Path,
                        help="draw mean +- 1 std against pulse number into a PNG file")
    parser.set_defaults(handler=run)


def _check_plot_path(path: Path) -> None:
    check_output_path(path, "--plot", ".png")
    require_matplotlib()


def _write_json(record: dict[str, Any], path: Path) -> None:
    """Write ``record`` as strict JSON into ``path``, replaced whole (never half-written)."""
    write_atomically(path, json.dumps(json_ready(record), allow_nan=False) + "\n")


def run(args: argparse.Namespace) -> int:
    """``hilctl characterize``: see :data:`_DESCRIPTION`."""
    if args.per_cell and not (args.json or args.out is not None):
        raise UsageError("--per-cell: the traces go into the JSON record; add --json or "
                         "--out FILE.json")
    if args.out is not None:
        check_output_path(args.out, "--out", ".json")  # before a run that may take hours on a chip
    backend, options = backend_from_args(args)
    resolve_tile_shape(args, backend, options)
    try:
        config = tile_config_from_args(args, backend)
    except (HilctlError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    chip = backend.chip(options)
    if chip is not None:
        low, high, step, where = chip.w_min, chip.w_max, chip.dw_min, f"{backend.chip_source}'s"
    else:
        device = config.device
        low, high, step, where = device.w_min, device.w_max, device.dw_min, "the device's"
    if not low <= args.start <= high:
        raise UsageError(f"--start: must lie within {where} weight range [w_min, w_max] = "
                         f"[{low}, {high}]; got {args.start}")
    if args.plot is not None:
        _check_plot_path(args.plot)  # before a run that may take hours on a chip

    progress = progress_for("characterize", enabled=not args.quiet, unit="pulses")
    began = time.perf_counter()
    try:
        with backend:
            try:
                tile = backend.open_tile(config, **options)
                response = measure_pulse_response(tile, args.up, args.down, args.start,
                                                  progress=progress, per_cell=args.per_cell)
            finally:
                report = backend.report()
    finally:
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - began
    if response.pulses and not response.moved(step / 2):
        say(f"hilctl: warning: the cells did not move (the mean weight changed by at most "
            f"{response.largest_change:.3g} over {response.pulses} pulses, less than half a "
            f"pulse step, {step:g}): the write amplitude may be below the switching threshold, "
            "or the pulses do not reach the cells")

    plotted: str | None = None
    plot_error: str | None = None
    if args.plot is not None:
        what = "chip" if backend.physical else config.device.model
        title = (f"Pulse response: {what}, {config.rows} x {config.cols} cells "
                 f"({backend.label(options)}, seed {config.seed})")
        try:
            plotted = str(plot_pulse_response(response, args.plot, title))
        except OSError as exc:  # report after the results, which are not lost
            plot_error = f"--plot: could not write {str(args.plot)!r}: {exc.strerror or exc}"

    written: str | None = None
    out_error: str | None = None
    if args.json or args.out is not None:
        record = {
            "hilctl": __version__,
            "command": "characterize",
            "backend": args.backend,
            **options,
            **({} if backend.physical else {"device": config.device.model}),
            "config": config.model_dump(
                mode="json", exclude={"device", "periphery"} if backend.physical else None),
            "rows": config.rows,
            "cols": config.cols,
            "up": response.up,
            "down": response.down,
            "start": response.start,
            "seed": config.seed,
            "seconds": seconds,
            "summary": response.summary(),
            "plot": plotted,
            "mean": response.mean,
            "std": response.std,
            **({"per_cell": response.per_cell.as_json()} if response.per_cell is not None else {}),
            **({"bench": report} if report else {}),
        }
        if args.out is not None:
            try:
                _write_json(record, args.out)
                written = str(args.out)
            except OSError as exc:  # report after the results, which are not lost
                out_error = f"--out: could not write {str(args.out)!r}: {exc.strerror or exc}"
    if args.json:
        print_json(record)
    else:
        where = backend.tile_label(tile, config, options)
        print(f"{where}: {config.rows} x {config.cols} cells, "
              f"seed {config.seed}, {response.pulses} pulses in {seconds:.2f} s")
        for line in response.summary_lines():
            print(f"  {line}")
        for line in backend.report_lines(report):
            print(f"  {line}")
        if plotted is not None:
            print(f"  plot written to {plotted}")
        if written is not None:
            print(f"  record written to {written}")
    for problem in (plot_error, out_error):
        if problem is not None:
            error(problem)
    return EXIT_FAILURE if plot_error or out_error else EXIT_OK
