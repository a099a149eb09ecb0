"""``hilctl fit``: fit a device model to a measured pulse response (:mod:`hilctl.fitting`), print
the parameters with their uncertainties and the fit's quality, and write a ``[device]`` section
that ``hilctl train --config`` and ``hilctl characterize --config`` take."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from hilctl import __version__
from hilctl.cli.output import (
    EXIT_DIVERGED,
    EXIT_OK,
    check_output_path,
    error,
    print_json,
    say,
    write_atomically,
)
from hilctl.cli.parsing import positive_int
from hilctl.config import DEVICE_CONFIGS
from hilctl.fitting import (
    DEFAULT_NODES,
    DeviceFit,
    NotConverged,
    PulseData,
    Quality,
    choose_model,
    compare,
    fit_device,
    load_pulse_data,
)
from hilctl.plotting import plot_fit, require_matplotlib
from protocols.toml_writer import dump_toml

#: Share of the weight range each direction's pulses must start from before a note says the rest
#: of its response is extrapolated.
COVERED = 0.8

_DESCRIPTION = """\
Fit a device model to a measured pulse response and write it as a [device] section.

DATA is what 'hilctl characterize --per-cell --out FILE.json' writes (on the emulator or on a
bench), or a long-format CSV with one row per reading: columns device, pulse, direction (up or
down), weight or conductance (siemens), and optionally cycle.

The fit estimates the mean parameters (dw_min, up_down, w_max, w_min and the model's own), the
device-to-device spreads (*_dtod) and the cycle-to-cycle noise (dw_min_std), each with a
standard error, then replays the measured pulses on the emulator with the fitted parameters and
compares the mean and spread traces (the quality). --device auto fits every model and keeps the
one whose twin follows best (verdict), then the lowest Bayesian information criterion (BIC).

Exit codes: 0 fitted; 2 the file is not a pulse response; 4 the fit did not converge (the best
parameters so far are printed)."""


def register(subparsers: Any) -> None:
    """Add ``fit`` to the ``hilctl`` subcommands."""
    parser = subparsers.add_parser(
        "fit",
        help="fit a device model to a measured pulse response",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data", type=Path, metavar="DATA",
                        help="characterize --per-cell JSON, or a long-format CSV")
    parser.add_argument("--device", required=True, choices=[*DEVICE_CONFIGS, "auto"],
                        help="device model to fit, or auto: every model, keeping the one whose emulated "
                        "twin follows best, then the lowest BIC")
    parser.add_argument("--nodes", type=positive_int, default=DEFAULT_NODES,
                        help="nodes per direction of a piecewise table (default: %(default)s)")
    output = parser.add_argument_group("output")
    output.add_argument("--json", action="store_true",
                        help="print one JSON object: device, uncertainty, quality, ...")
    output.add_argument("--out", type=Path, metavar="DEVICE.toml",
                        help="write the fitted [device] section as a config file")
    output.add_argument("--plot", type=Path, metavar="FIT.png",
                        help="draw measured and emulated mean and spread traces, and their "
                        "residuals, into a PNG file")
    parser.set_defaults(handler=run)


def device_toml(fit: DeviceFit, data: PulseData) -> str:
    """The ``[device]`` section as a config file, with a header saying where it came from."""
    header = (f"Device fitted by hilctl {__version__} (hilctl fit --device {fit.model}) to "
              f"{data.source}: {data.devices} devices, {data.pulses} pulses.\n"
              "Use it with: hilctl train --config FILE, hilctl characterize --config FILE.")
    return dump_toml({"device": fit.device}, header=header)


def _record(fit: DeviceFit, data: PulseData, quality: Quality,
            scores: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "hilctl": __version__,
        "command": "fit",
        "data": data.source,
        "devices": data.devices,
        "pulses": data.pulses,
        "converged": True,
        "device": fit.device,
        "uncertainty": fit.uncertainty,
        "quality": quality.summary(),
        "held": fit.held,
        "read_noise": fit.read_noise,
        "bounds_reached": fit.cell_fit.reached,
        "coverage": data.coverage(),
        "seconds": fit.seconds,
    }
    if scores is not None:
        record["selection"] = {"criterion": "the twin's verdict, then the BIC of the steps "
                                            "(lower is better)", "scores": scores}
    if data.mapping is not None:
        low = data.mapping.to_conductance(fit.device["w_min"])
        high = data.mapping.to_conductance(fit.device["w_max"])
        record["mapping"] = {"g_ref": data.mapping.g_ref, "g_scale": data.mapping.g_scale,
                             "dw_min": fit.device["dw_min"],
                             "conductance_range": [low, high]}
    return record


def _format(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_format(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print(fit: DeviceFit, data: PulseData, quality: Quality,
           scores: dict[str, dict[str, Any]] | None) -> None:
    print(f"{data.source}: {data.devices} devices, {data.pulses} pulses; "
          f"{fit.model} fitted in {fit.seconds:.2f} s")
    if scores is not None:
        print("  model chosen by the twin's verdict, then the BIC of the steps (lower is better):")
        for name, score in scores.items():
            bic = "did not fit" if score["bic"] is None else f"BIC {score['bic']:.6g}"
            print(f"    {name:<14} {score['verdict'] or '-':<5} {bic}")
    width = max(len(k) for k in fit.device)
    for name, value in fit.device.items():
        if name == "model":
            continue
        error = fit.uncertainty.get(name)
        note = f"  ({fit.held[name]})" if name in fit.held else ""
        spread = f" +- {_format(error)}" if error is not None and not isinstance(error, list) else ""
        print(f"  {name:<{width}}  {_format(value)}{spread}{note}")
    print(f"  read noise of a reading: {fit.read_noise:.3g} (weight units)")
    if fit.cell_fit.reached is not None and fit.cell_fit.reached < 0.9:
        print(f"  note: only {fit.cell_fit.reached:.0%} of the cells rested at both bounds; "
              "w_max and w_min are then too narrow: measure with more pulses")
    for direction, share in data.coverage().items():
        if share < COVERED:
            print(f"  note: the {direction} pulses started from only {share:.0%} of the weight "
                  f"range; the {direction} response is extrapolated over the rest: measure from "
                  "the lower bound up and back (characterize --start at w_min)")
    if data.mapping is not None:
        print(f"  mapping (station [mapping]): g_ref = {data.mapping.g_ref:.6g} S, "
              f"g_scale = {data.mapping.g_scale:.6g} S, dw_min = {fit.device['dw_min']:.4g}")
    print(f"  quality: {quality.verdict}: {quality.explanation()}")


def run(args: argparse.Namespace) -> int:
    """``hilctl fit``: see :data:`_DESCRIPTION`."""
    if args.out is not None:
        check_output_path(args.out, "--out", ".toml")
    if args.plot is not None:
        check_output_path(args.plot, "--plot", ".png")
        require_matplotlib()
    data = load_pulse_data(args.data)
    scores: dict[str, dict[str, Any]] | None = None
    try:
        if args.device == "auto":
            fit, scores = choose_model(data, nodes=args.nodes)
        else:
            fit = fit_device(data, args.device, nodes=args.nodes)
    except NotConverged as exc:
        if exc.best is not None:
            if args.json:
                print_json({"hilctl": __version__, "command": "fit", "data": data.source,
                            "converged": False, "error": str(exc), "device": exc.best})
            else:
                say("hilctl: the best parameters so far: " + ", ".join(
                    f"{k} = {_format(v)}" for k, v in exc.best.items()))
        return error(str(exc), EXIT_DIVERGED)
    quality = compare(data, fit.device, fit.read_noise)
    if args.out is not None:
        write_atomically(args.out, device_toml(fit, data))
    if args.plot is not None:
        plot_fit(quality, args.plot, f"{fit.model} fitted to {Path(data.source).name}")
    if args.json:
        print_json(_record(fit, data, quality, scores))
    else:
        _print(fit, data, quality, scores)
        for path, what in ((args.out, "device section"), (args.plot, "plot")):
            if path is not None:
                print(f"  {what} written to {path}")
    return EXIT_OK

