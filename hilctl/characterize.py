"""Pulse-response characterisation of a tile: ``hilctl characterize``.

Every cell is programmed to one start weight, then ``up`` single up pulses are applied to all
cells at once, and then ``down`` single down pulses; the weights are read after every pulse. The
mean and the spread over the cells against the pulse number show the device's response function
(how the step depends on the weight), its saturation, and its up/down asymmetry.

Only the tile interface (:class:`hilctl.tile.Tile`) is used, so the same measurement runs on the
emulator and on a chip on the bench (where each read is slow: pass a ``progress`` callback).
"""

from __future__ import annotations

import argparse
import json
import math
import operator
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hilctl import __version__
from hilctl.backends import open_tile
from hilctl.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    UsageError,
    add_tile_arguments,
    backend_options,
    close_backend,
    error,
    finite_float,
    nonnegative_int,
    progress_for,
    resolve_tile_shape,
    set_keys_help,
    tile_config_from_args,
)
from hilctl.errors import HilctlError
from hilctl.tile import Tile

#: ``progress(done, total)``: called after each pulse with the pulses applied so far.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PulseResponse:
    """Mean and spread over the cells of a tile after each pulse of an up-then-down sweep.

    Attributes:
        up: number of up pulses, applied first.
        down: number of down pulses, applied after the up pulses.
        start: the start weight that was requested.
        start_mean: mean weight read back after programming (differs from ``start`` where
            cells clipped at their bounds).
        start_std: spread of the weights after programming.
        mean: mean weight over the cells after each pulse; ``up + down`` entries, the up pulses
            first. Weight units (the normalised conductance the tile exposes).
        std: standard deviation over the cells (population, ``ddof=0``) after each pulse.
        cells: number of cells averaged over.
    """

    up: int
    down: int
    start: float
    start_mean: float
    start_std: float
    mean: list[float]
    std: list[float]
    cells: int

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            if len(getattr(self, name)) != self.up + self.down:
                raise ValueError(f"{name} must have up + down = {self.up + self.down} entries; "
                                 f"got {len(getattr(self, name))}")

    @property
    def pulses(self) -> int:
        """Total number of pulses, ``up + down``."""
        return self.up + self.down

    def _state(self, pulses: int) -> tuple[float, float]:
        if pulses == 0:
            return self.start_mean, self.start_std
        return self.mean[pulses - 1], self.std[pulses - 1]

    @property
    def after_up(self) -> tuple[float, float]:
        """``(mean, std)`` after the up pulses (the start if there were none)."""
        return self._state(self.up)

    @property
    def after_down(self) -> tuple[float, float]:
        """``(mean, std)`` at the end, after the down pulses."""
        return self._state(self.pulses)

    @property
    def first_up_step(self) -> float | None:
        """Change of the mean weight by the first up pulse (from the start); None if no up."""
        return self.mean[0] - self.start_mean if self.up else None

    @property
    def first_down_step(self) -> float | None:
        """Change of the mean weight by the first down pulse (negative for a normal device),
        taken where the up pulses left the cells; None if no down pulse."""
        if not self.down:
            return None
        return self.mean[self.up] - self._state(self.up)[0]

    @property
    def asymmetry(self) -> float | None:
        """``first_up_step / -first_down_step``: 1 for a symmetric device at those weights.

        The two steps are taken at different weights (the start, and after the up pulses), so
        for a weight-dependent device this mixes asymmetry with the response function. None
        when either step is missing or the down step is zero.
        """
        up, down = self.first_up_step, self.first_down_step
        if up is None or down is None or down == 0:
            return None
        return up / -down

    def summary(self) -> dict[str, Any]:
        """The headline numbers as a JSON-ready dict."""
        return {
            "start": {"mean": self.start_mean, "std": self.start_std},
            "after_up": dict(zip(("mean", "std"), self.after_up, strict=True)),
            "after_down": dict(zip(("mean", "std"), self.after_down, strict=True)),
            "first_up_step": self.first_up_step,
            "first_down_step": self.first_down_step,
            "asymmetry": self.asymmetry,
        }

    def summary_lines(self) -> list[str]:
        """The headline numbers as aligned lines for a person (weights in weight units)."""

        def weight(state: tuple[float, float]) -> str:
            mean = round(state[0], 4) + 0.0  # + 0.0: no "-0.0000"
            return f"{mean:+.4f} +- {state[1]:.4f}"

        def step(value: float | None) -> str:
            return "n/a" if value is None else f"{value:+.3e}"

        ratio = self.asymmetry
        rows = [
            ("start", weight((self.start_mean, self.start_std))),
            (f"after {self.up} up", weight(self.after_up)),
            (f"after {self.down} down", weight(self.after_down)),
            ("first up step", step(self.first_up_step)),
            ("first down step", step(self.first_down_step)),
            ("up/down ratio", "n/a" if ratio is None else
             f"{ratio:.3f}  (first up step / |first down step|)"),
        ]
        width = max(len(label) for label, _ in rows)
        return [f"{label:<{width}}  {value}" for label, value in rows]


def _pulse_count(value: int, name: str) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    count = operator.index(value)
    if count < 0:
        raise ValueError(f"{name} must be >= 0; got {count}")
    return count


def measure_pulse_response(
    tile: Tile,
    up: int,
    down: int,
    start: float,
    *,
    progress: Progress | None = None,
) -> PulseResponse:
    """Program every cell of ``tile`` to ``start``, then apply ``up`` up pulses and ``down``
    down pulses to all cells, reading the weights after each pulse.

    Args:
        tile: any backend's tile; only ``program_weights``, ``apply_pulses`` and
            ``read_weights`` are used.
        up: number of single up pulses (>= 0), applied first.
        down: number of single down pulses (>= 0), applied after the up pulses.
        start: the weight every cell is programmed to first (weight units, finite).
        progress: called as ``progress(done, up + down)`` after each pulse.

    Raises:
        ValueError: ``up`` or ``down`` negative, or ``start`` not finite.
    """
    up = _pulse_count(up, "up")
    down = _pulse_count(down, "down")
    start = float(start)
    if not math.isfinite(start):
        raise ValueError(f"start must be a finite weight; got {start}")
    shape = (tile.rows, tile.cols)
    reached = np.asarray(tile.program_weights(np.full(shape, start)), dtype=np.float64)
    means: list[float] = []
    stds: list[float] = []
    total = up + down
    for sign, count in ((1, up), (-1, down)):
        pulses = np.full(shape, sign, dtype=np.int64)
        for _ in range(count):
            tile.apply_pulses(pulses)
            weights = np.asarray(tile.read_weights(), dtype=np.float64)
            means.append(float(weights.mean()))
            stds.append(float(weights.std()))
            if progress is not None:
                progress(len(means), total)
    return PulseResponse(
        up=up,
        down=down,
        start=start,
        start_mean=float(reached.mean()),
        start_std=float(reached.std()),
        mean=means,
        std=stds,
        cells=shape[0] * shape[1],
    )


# ---------------------------------------------------------------------------------------------
# The command.
# ---------------------------------------------------------------------------------------------

_DESCRIPTION = """\
Measure the pulse response of a tile: program every cell to --start, apply --up single up
pulses to all cells, then --down single down pulses, and read the weights after each pulse.
Prints the mean and spread over the cells (a short summary, or every point with --json) and
can plot the curve (--plot, needs matplotlib).

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
    add_tile_arguments(parser, station=True)
    sweep = parser.add_argument_group("sweep")
    sweep.add_argument("--up", type=nonnegative_int, default=500,
                       help="up pulses, applied first (default: %(default)s)")
    sweep.add_argument("--down", type=nonnegative_int, default=500,
                       help="down pulses, applied after the up pulses (default: %(default)s)")
    sweep.add_argument("--start", type=finite_float, default=0.0, metavar="W",
                       help="weight every cell is programmed to first, within the device "
                       "bounds [w_min, w_max] (default: %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true",
                        help="print one JSON object with every point instead of the summary")
    output.add_argument("--plot", metavar="FILE.png", type=Path,
                        help="draw mean +- 1 std against pulse number into a PNG file")
    parser.set_defaults(handler=run)


def _check_plot_path(path: Path) -> None:
    from hilctl.plotting import require_matplotlib

    if path.suffix.lower() != ".png":
        raise UsageError(f"--plot: the file name must end in .png; got {str(path)!r}")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"--plot: directory {str(parent)!r} does not exist")
    require_matplotlib()


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats as None, so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def run(args: argparse.Namespace) -> int:
    """``hilctl characterize``: see :data:`_DESCRIPTION`."""
    options = backend_options(args)
    resolve_tile_shape(args, options)
    try:
        config = tile_config_from_args(args)
    except (HilctlError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    device = config.device
    if not device.w_min <= args.start <= device.w_max:
        raise UsageError(f"--start: must lie within the device bounds [w_min, w_max] = "
                         f"[{device.w_min}, {device.w_max}]; got {args.start}")
    if args.plot is not None:
        _check_plot_path(args.plot)  # before a run that may take hours on a chip

    progress = progress_for("characterize", enabled=not args.json)
    began = time.perf_counter()
    try:
        tile = open_tile(args.backend, config, **options)
        response = measure_pulse_response(tile, args.up, args.down, args.start,
                                          progress=progress)
    finally:
        if progress is not None:
            progress.close()
        close_backend(args.backend)
    seconds = time.perf_counter() - began

    plotted: str | None = None
    plot_error: str | None = None
    if args.plot is not None:
        from hilctl.plotting import plot_pulse_response

        title = (f"Pulse response: {args.device}, {config.rows} x {config.cols} cells "
                 f"({args.backend}, seed {config.seed})")
        try:
            plotted = str(plot_pulse_response(response, args.plot, title))
        except OSError as exc:  # report after the results, which are not lost
            plot_error = f"--plot: could not write {str(args.plot)!r}: {exc.strerror or exc}"

    if args.json:
        record = {
            "hilctl": __version__,
            "command": "characterize",
            "backend": args.backend,
            **options,
            "device": args.device,
            "config": config.model_dump(mode="json"),
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
        }
        print(json.dumps(_json_safe(record)))
    else:
        if options:  # a bench: the chip's cells, whatever --device says
            region = options.get("tile") or getattr(getattr(tile, "region", None), "name", "?")
            where = f"tile {region} of station {options['station']}"
        else:
            where = f"{args.device} on {args.backend}"
        print(f"{where}: {config.rows} x {config.cols} cells, "
              f"seed {config.seed}, {response.pulses} pulses in {seconds:.2f} s")
        for line in response.summary_lines():
            print(f"  {line}")
        if plotted is not None:
            print(f"  plot written to {plotted}")
    if plot_error is not None:
        return error(plot_error, EXIT_FAILURE)
    return EXIT_OK
