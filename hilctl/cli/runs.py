"""``hilctl runs``: list, show and plot the runs recorded in the run store (:mod:`hilctl.runs`).

``hilctl runs list`` prints the newest runs (``--sweep ID``: those of one sweep), ``hilctl runs
show ID`` one run (config, status, final metrics, a summary of each metric, events) and
``hilctl runs plot ID`` draws its metrics against the step into a PNG file; ``hilctl runs watch
ID`` (:mod:`hilctl.cli.runs_watch`) follows a run as it goes and ``hilctl runs export``
(:mod:`hilctl.cli.runs_export`) writes runs into CSV or JSON files. ``ID`` is a run id
or a unique prefix of one. The store is ``--store PATH`` (a ``runs.sqlite`` file or the
directory holding it), else the default of
:func:`hilctl.runs.default_store_path` (``$HILCTL_HOME``, ``$XDG_DATA_HOME/hilctl``,
``~/.local/share/hilctl``).
"""

from __future__ import annotations

import argparse
import json
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from hilctl.cli.output import EXIT_FAILURE, EXIT_OK, error, json_ready, print_json, progress_for
from hilctl.cli.parsing import ArgumentParser, UsageError, positive_float, positive_int
from hilctl.cli.runs_export import add_subcommand as add_export
from hilctl.cli.runs_watch import add_subcommand as add_watch
from hilctl.cli.train import report_run
from hilctl.plotting import plot_metrics, require_matplotlib
from hilctl.runs import RunRecord, RunStore, RunStoreError, RunSummary, resolve_store_path
from hilctl.training import resume

_DESCRIPTION = """\
List, show and plot the runs recorded in the run store. A run is named by its id or by a unique
prefix of it. The store is --store PATH (the runs.sqlite file or its directory), else
$HILCTL_HOME/runs.sqlite, else $XDG_DATA_HOME/hilctl/runs.sqlite, else
~/.local/share/hilctl/runs.sqlite."""

#: Metric values spanning more than this ratio (max/min, all positive) get a log-scale axis.
LOG_SCALE_RATIO = 100.0


def _add_store(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", metavar="PATH", type=Path,
                        help="the run store: a runs.sqlite file or the directory holding it "
                        "(default: $HILCTL_HOME, $XDG_DATA_HOME/hilctl or ~/.local/share/hilctl)")


def register(subparsers: Any) -> None:
    """Add ``runs`` (with ``list``, ``show``, ``plot``, ``resume``, ``watch``, ``export``) to the
    ``hilctl`` subcommands."""
    parser = subparsers.add_parser(
        "runs", help="list, show, plot, watch and export recorded runs", description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(handler=_missing_subcommand)
    sub = parser.add_subparsers(title="runs commands", dest="runs_command", metavar="COMMAND",
                                parser_class=ArgumentParser)

    listing = sub.add_parser("list", help="list the newest runs, newest first",
                             description="List the newest runs, newest first.")
    listing.add_argument("--limit", type=positive_int, metavar="N",
                         help="show at most N runs (default: 20; with --sweep, all)")
    listing.add_argument("--sweep", metavar="ID",
                         help="only the runs of the sweep ID (as 'hilctl sweep' prints it)")
    listing.add_argument("--json", action="store_true",
                         help="print one JSON array of the runs instead of the table")
    _add_store(listing)
    listing.set_defaults(handler=run_list)

    show = sub.add_parser("show", help="show one run: config, status, metrics, events",
                          description="Show one run: config, status, final metrics, first/last/min "
                          "of each metric, snapshots and events.")
    show.add_argument("run_id", metavar="ID", help="run id or a unique prefix of it")
    show.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    _add_store(show)
    show.set_defaults(handler=run_show)

    plot = sub.add_parser("plot", help="plot a run's metrics against the step (PNG)",
                          description="Plot a run's metrics against the step into a PNG file, one "
                          "panel per metric (log-scale y where the values span more than two "
                          "decades). Needs matplotlib: pip install 'hilctl[plot]'.")
    plot.add_argument("run_id", metavar="ID", help="run id or a unique prefix of it")
    plot.add_argument("--metric", action="append", default=[], metavar="NAME",
                      help="a metric to plot; repeat for several (default: every metric)")
    plot.add_argument("--out", type=Path, metavar="FILE.png",
                      help="the PNG file to write (default: <run id>.png in this directory)")
    _add_store(plot)
    plot.set_defaults(handler=run_plot)

    resume = sub.add_parser(
        "resume", help="continue an interrupted, failed or lost run from its last checkpoint",
        description="Continue an interrupted, failed or lost run from its last checkpoint, on "
        "the backend it ran on, under the same run id (its history continues). On the "
        "emulator the result equals the uninterrupted run's, bit for bit. On a bench the chip "
        "is never re-initialised: the same station and instruments are required, each tile is "
        "read back and its drift from the checkpoint reported.")
    resume.add_argument("run_id", metavar="ID", help="run id or a unique prefix of it")
    resume.add_argument("--json", action="store_true",
                        help="print one JSON object (as hilctl train --json) and nothing else")
    resume.add_argument("--reprogram-beyond", type=positive_float, metavar="W",
                        help="on a bench: write back the cells that drifted more than W "
                        "(weight units) since the checkpoint (default: none)")
    _add_store(resume)
    resume.set_defaults(handler=run_resume)

    add_watch(sub, _add_store)
    add_export(sub, _add_store)


def _missing_subcommand(args: argparse.Namespace) -> int:
    raise UsageError("runs: a command is required; one of: list, show, plot, resume, watch, export "
                     "(see 'hilctl runs --help')")


# ---------------------------------------------------------------------------------------------
# Formatting.
# ---------------------------------------------------------------------------------------------


def _open_store(path: Path | None) -> RunStore | None:
    """The store to read, or None if the default store does not exist yet. A missing store
    given with --store is refused (exit 2), as it is most likely a typo."""
    try:
        return RunStore(path, create=False)
    except RunStoreError:
        if path is None and not resolve_store_path(None).exists():
            return None
        raise


def _local(moment: datetime | None) -> str:
    return "-" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.4g}"


def _final_text(final: dict[str, Any]) -> str:
    return " ".join(f"{k}={_number(v)}" for k, v in final.items())


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def _summary_json(run: RunSummary) -> dict[str, Any]:
    return {
        "run_id": run.run_id, "started": run.started.isoformat(), "seconds": run.seconds,
        "status": run.status, "command": run.command, "backend": run.backend,
        "task": run.task, "algorithm": run.algorithm, "summary": run.summary,
        "updated": None if run.updated is None else run.updated.isoformat(), "final": run.final,
        "sweep": run.sweep, "point": run.point,
    }


def metric_summary(steps: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """Points, first/last step, and the first, last, min and max value of one metric (NaN
    values are counted but left out of min and max; None where there is no finite value)."""
    finite = values[np.isfinite(values)]
    return {
        "points": int(values.size),
        "first_step": int(steps[0]) if steps.size else None,
        "last_step": int(steps[-1]) if steps.size else None,
        "first": float(values[0]) if values.size else None,
        "last": float(values[-1]) if values.size else None,
        "min": float(finite.min()) if finite.size else None,
        "min_step": int(steps[np.isfinite(values)][np.argmin(finite)]) if finite.size else None,
        "max": float(finite.max()) if finite.size else None,
    }


def _record_json(record: RunRecord) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "command": record.command,
        "backend": record.backend,
        "status": record.status,
        "started": record.started.isoformat(),
        "ended": None if record.ended is None else record.ended.isoformat(),
        "seconds": record.seconds,
        "summary": record.summary,
        "config": record.config,
        "metadata": record.metadata,
        "final": record.final,
        "error": record.error,
        "metrics": {name: metric_summary(s, v) for name, (s, v) in record.metrics.items()},
        "events": [{"time": datetime.fromtimestamp(e.time).astimezone().isoformat(),
                    "step": e.step, "kind": e.kind, "message": e.message} for e in record.events],
        "snapshots": [{"step": s.step, "name": s.name, "path": str(s.path), "shape": list(s.shape),
                       "dtype": s.dtype} for s in record.snapshots],
        "checkpoints": [{"step": c.step, "path": str(c.path), "bytes": c.bytes} for c in
                        record.checkpoints],
    }


def _flatten(config: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(config, dict) and config:
        out: list[tuple[str, Any]] = []
        for key, value in config.items():
            out.extend(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return [(prefix, config)]


def _show_lines(record: RunRecord) -> list[str]:
    lines = [
        f"run {record.run_id}: {record.command}"
        + (f" on {record.backend}" if record.backend else "")
        + (f" ({record.summary})" if record.summary else ""),
        f"  status:   {record.status}" + (f": {record.error}" if record.error else ""),
        f"  started:  {_local(record.started)}   ended: {_local(record.ended)}   "
        f"time: {_duration(record.seconds)}",
    ]
    meta = record.metadata
    if meta:
        lines.append(f"  code:     hilctl {meta.get('code_version', '?')}, python {meta.get('python', '?')}"
                     f", numpy {meta.get('numpy', '?')}, host {meta.get('hostname', '?')}")
    if record.final:
        lines.append(f"  final:    {_final_text(record.final)}")
    lines.append("config:")
    flat = _flatten(record.config)
    if flat == [("", {})]:
        lines.append("  (empty)")
    else:
        lines.extend(f"  {key} = {json.dumps(json_ready(value))}" for key, value in flat)
    lines.append("metrics:")
    if record.metrics:
        rows = [["name", "points", "steps", "first", "last", "min (at step)"]]
        for name, (steps, values) in record.metrics.items():
            s = metric_summary(steps, values)
            minimum = "-" if s["min"] is None else f"{_number(s['min'])} ({s['min_step']})"
            rows.append([name, str(s["points"]), f"{s['first_step']}..{s['last_step']}",
                         _number(s["first"]), _number(s["last"]), minimum])
        lines.extend("  " + line for line in _table(rows))
    else:
        lines.append("  (none)")
    if record.snapshots:
        names = sorted({s.name for s in record.snapshots})
        snapshot_steps = sorted({s.step for s in record.snapshots})
        lines.append(f"snapshots: {len(record.snapshots)} ({', '.join(names)}) at steps "
                     f"{snapshot_steps[0]}..{snapshot_steps[-1]}, in {record.snapshots[0].path.parent}")
    if record.checkpoints:
        latest = record.checkpoints[-1]
        weights = latest.load()["task"].get("weights", {})
        shapes = ", ".join(f"{name} {'x'.join(map(str, np.shape(a)))}" for name, a in weights.items())
        lines.append(f"checkpoint: step {latest.step}, {latest.bytes / 1e6:.1f} MB, weights "
                     f"{shapes or 'none'} ({latest.path}); resume with: hilctl runs resume "
                     f"{record.run_id}")
    lines.append("events:" if record.events else "events: (none)")
    for event in record.events:
        when = datetime.fromtimestamp(event.time).astimezone().strftime("%H:%M:%S")
        step = f" step {event.step}" if event.step is not None else ""
        message = event.message.rstrip()
        if event.kind == "error" and "\n" in message:  # a traceback: its last line says what
            message = message.splitlines()[-1]
        lines.append(f"  {when}{step} [{event.kind}] {message}")
    return lines


# ---------------------------------------------------------------------------------------------
# Commands.
# ---------------------------------------------------------------------------------------------


def run_list(args: argparse.Namespace) -> int:
    """``hilctl runs list``."""
    store = _open_store(args.store)
    limit = args.limit if args.limit is not None or args.sweep is not None else 20
    runs = store.list_runs(limit=limit, sweep=args.sweep) if store is not None else []
    if args.json:
        print_json([_summary_json(r) for r in runs])
        return EXIT_OK
    if not runs:
        where = store.path if store is not None else resolve_store_path(None)
        of_sweep = f" of sweep {args.sweep}" if args.sweep is not None else ""
        print(f"no runs{of_sweep} recorded in {where}")
        return EXIT_OK
    rows = [["ID", "STARTED", "TIME", "STATUS", "COMMAND", "TASK / ALGORITHM", "FINAL"]]
    for r in runs:
        rows.append([r.run_id, _local(r.started), _duration(r.seconds), r.status,
                     r.command + (f" ({r.backend})" if r.backend else ""), r.summary or "-",
                     _final_text(r.final) or "-"])
    for line in _table(rows):
        print(line)
    return EXIT_OK


def _store_of_run(args: argparse.Namespace) -> RunStore:
    """The store that must hold run ``args.run_id``; refused if no store exists yet."""
    store = _open_store(args.store)
    if store is None:
        raise UsageError(f"no run {args.run_id!r}: no runs recorded yet "
                         f"(no run store at {str(resolve_store_path(None))!r})")
    return store


def _load_record(args: argparse.Namespace) -> RunRecord:
    return _store_of_run(args).get_run(args.run_id)


def run_show(args: argparse.Namespace) -> int:
    """``hilctl runs show ID``."""
    record = _load_record(args)
    if args.json:
        print_json(_record_json(record))
    else:
        print("\n".join(_show_lines(record)))
    return EXIT_OK


def run_resume(args: argparse.Namespace) -> int:
    """``hilctl runs resume ID``."""
    store = _store_of_run(args)
    progress = progress_for(f"resume {args.run_id}", enabled=not args.json)
    try:
        return report_run(lambda: resume(args.run_id, store, progress=progress,
                                         reprogram_beyond=args.reprogram_beyond), args.json)
    finally:
        if progress is not None:
            progress.close()


def run_plot(args: argparse.Namespace) -> int:
    """``hilctl runs plot ID``."""
    out: Path | None = args.out
    if out is not None:
        if out.suffix.lower() != ".png":
            raise UsageError(f"--out: the file name must end in .png; got {str(out)!r}")
        if not out.parent.is_dir():
            raise UsageError(f"--out: directory {str(out.parent)!r} does not exist")
    require_matplotlib()
    record = _load_record(args)
    if not record.metrics:
        raise UsageError(f"run {record.run_id} has no metrics to plot")
    names = list(dict.fromkeys(args.metric)) or list(record.metrics)
    unknown = [n for n in names if n not in record.metrics]
    if unknown:
        raise UsageError(f"--metric: run {record.run_id} has no metric "
                         f"{', '.join(repr(n) for n in unknown)}; it has: {', '.join(record.metrics)}")
    path = out if out is not None else Path(f"{record.run_id}.png")
    try:
        plot_metrics(record, names, path)
    except OSError as exc:
        return error(f"could not write {str(path)!r}: {exc.strerror or exc}", EXIT_FAILURE)
    print(f"wrote {path} ({', '.join(names)})")
    return EXIT_OK

