"""``hilctl runs export``: runs out of the store into files pandas and spreadsheets read.

One run (``ID``), every run of the store (``--all``) or of one sweep (``--sweep ID``), as CSV
(the default) or one JSON object. The layout is in :data:`LAYOUT` (the command's help):
CSV gives a wide metrics table (one row per logged step, a column per metric) with two side
files, one row per run (status, times, final figures, the flattened config) and the events;
JSON gives the same in one object. Floats are written in their shortest exact form, so what is
read back equals what the store holds; strict JSON has no NaN or infinity, which become null.
Every file is written atomically.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hilctl.cli.output import EXIT_FAILURE, EXIT_OK, check_output_path, error, json_ready, write_atomically
from hilctl.cli.parsing import UsageError
from hilctl.runs import RunRecord, RunStore

LAYOUT = """\
CSV (--format csv, the default), --out FILE.csv:
  FILE.csv         the metrics: columns run_id, step and one per metric; one row per
                   logged step of each run (a value logged twice at one step gives two
                   rows); an empty cell: not logged at that step, or NaN.
                   pandas.read_csv("FILE.csv") reads it as is; values are
                   written in their shortest exact form (read back bit for bit).
  FILE.runs.csv    one row per run: run_id, command, backend, status, started, ended
                   (ISO 8601, UTC), seconds, sweep, point, code_version, git, error, then
                   final.<name> for each final figure and config.<section>.<key> for each
                   setting (lists as JSON). Read the text columns as text: a commit such
                   as 559e915 reads as a number otherwise (pandas.read_csv(...,
                   dtype={"git": str, "code_version": str, "sweep": str})).
  FILE.events.csv  the events: run_id, time (ISO 8601, UTC), step, kind, message.
JSON (--format json), --out FILE.json (or - for stdout): one object. For one run: run_id,
  command, backend, status, started, ended, seconds, sweep, point, summary, error, config,
  metadata, final, history (the metrics table as columns: step and one list per metric;
  pandas.DataFrame(obj["history"])), events (a list of time, step, kind, message). With
  --all or --sweep: {"store": ..., "sweep": ..., "runs": [one such object per run]}.
NaN and infinity are empty cells in CSV files (infinity as inf) and null in JSON.
Default FILE: the run id; with --all, runs; with --sweep ID, sweep-ID."""

FORMATS = ("csv", "json")


def add_subcommand(sub: Any, add_store: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``export`` to the ``hilctl runs`` subcommands."""
    export = sub.add_parser(
        "export", help="write runs' metrics, config, final figures and events to CSV or JSON",
        description="Write a run's metrics history, config, final figures and events (or every "
        "run's: --all, or a sweep's: --sweep ID) into files that pandas and spreadsheets read "
        "directly. Files are written atomically.", epilog=LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("run_id", metavar="ID", nargs="?",
                        help="run id or a unique prefix of it (or use --all or --sweep)")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="export every run of the store")
    which.add_argument("--sweep", metavar="SWEEP",
                       help="export the runs of the sweep SWEEP (as 'hilctl sweep' prints it)")
    export.add_argument("--format", choices=FORMATS, default="csv",
                        help="csv: a metrics table and two side files; json: one object "
                        "(default: csv)")
    export.add_argument("--out", metavar="FILE",
                        help="the file to write (.csv or .json; for json, - prints the object "
                        "on stdout); default: <run id>, runs or sweep-<id>, in this directory")
    add_store(export)
    export.set_defaults(handler=run_export)


# ---------------------------------------------------------------------------------------------
# Tables.
# ---------------------------------------------------------------------------------------------


def _iso(moment: datetime | float | None) -> str | None:
    if moment is None:
        return None
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).isoformat()


def history(record: RunRecord) -> tuple[list[str], list[list[Any]]]:
    """The run's metrics as a wide table: ``(names, rows)``, each row ``[step, value per
    name]`` (NaN where that metric was not logged), one row per logged step in step order; a
    metric logged n times at one step fills n rows of that step."""
    names = sorted(record.metrics)
    cells: dict[tuple[int, int], dict[str, float]] = {}
    for name in names:
        steps, values = record.metrics[name]
        seen: dict[int, int] = {}
        for step, value in zip(steps.tolist(), values.tolist(), strict=True):
            k = seen[step] = seen.get(step, -1) + 1
            cells.setdefault((step, k), {})[name] = value
    rows = [[step, *(row.get(name, math.nan) for name in names)]
            for (step, _k), row in sorted(cells.items())]
    return names, rows


def _flatten(value: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        out: list[tuple[str, Any]] = []
        for key, item in value.items():
            out.extend(_flatten(item, f"{prefix}.{key}"))
        return out
    return [(prefix, value)]


def _run_row(record: RunRecord, sweep: str | None, point: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": record.run_id, "command": record.command, "backend": record.backend,
        "status": record.status, "started": _iso(record.started), "ended": _iso(record.ended),
        "seconds": record.seconds, "sweep": sweep, "point": point,
        "code_version": record.metadata.get("code_version"), "git": record.metadata.get("git"),
        "error": record.error,
    }
    row.update(_flatten(record.final, "final") if record.final else [])
    row.update(_flatten(record.config, "config") if record.config else [])
    return row


def _cell(value: Any) -> Any:
    """A CSV cell: floats exact (shortest repr), NaN and None empty, lists and dicts as JSON."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, list | dict):
        return json.dumps(json_ready(value), allow_nan=False)
    return value


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def csv_files(records: Sequence[tuple[RunRecord, str | None, str | None]]) -> tuple[str, str, str]:
    """The three CSV files' text (metrics, runs, events) of ``records`` (each with its sweep
    and point); see :data:`LAYOUT`."""
    tables = [(record, *history(record)) for record, _s, _p in records]
    names = sorted({name for _r, metric_names, _rows in tables for name in metric_names})
    metric_rows: list[list[Any]] = []
    for record, metric_names, rows in tables:
        where = [metric_names.index(n) + 1 if n in metric_names else None for n in names]
        metric_rows.extend([record.run_id, row[0], *(math.nan if i is None else row[i] for i in where)]
                           for row in rows)
    metrics = _csv(["run_id", "step", *names], metric_rows)
    run_rows = [_run_row(record, sweep, point) for record, sweep, point in records]
    columns = list(dict.fromkeys(key for row in run_rows for key in row))
    runs = _csv(columns, ([row.get(c) for c in columns] for row in run_rows))
    events = _csv(["run_id", "time", "step", "kind", "message"],
                  ([record.run_id, _iso(e.time), e.step, e.kind, e.message]
                   for record, _s, _p in records for e in record.events))
    return metrics, runs, events


def run_object(record: RunRecord, sweep: str | None, point: str | None) -> dict[str, Any]:
    """One run as the JSON export holds it (see :data:`LAYOUT`)."""
    names, rows = history(record)
    columns: dict[str, list[Any]] = {"step": [row[0] for row in rows]}
    for i, name in enumerate(names, 1):
        columns[name] = [row[i] for row in rows]
    return {
        "run_id": record.run_id, "command": record.command, "backend": record.backend,
        "status": record.status, "started": _iso(record.started), "ended": _iso(record.ended),
        "seconds": record.seconds, "sweep": sweep, "point": point, "summary": record.summary,
        "error": record.error, "config": record.config, "metadata": record.metadata,
        "final": record.final, "history": columns,
        "events": [{"time": _iso(e.time), "step": e.step, "kind": e.kind, "message": e.message}
                   for e in record.events],
    }


# ---------------------------------------------------------------------------------------------
# The command.
# ---------------------------------------------------------------------------------------------


def _selected(store: RunStore, args: argparse.Namespace) -> list[tuple[RunRecord, str | None, str | None]]:
    if args.run_id is not None:
        record = store.get_run(args.run_id)
        return [(record, *store.sweep_of(record.run_id))]
    summaries = store.list_runs(limit=None, sweep=args.sweep)
    if not summaries:
        of = f" of sweep {args.sweep!r}" if args.sweep is not None else ""
        raise UsageError(f"no runs{of} in {str(store.path)!r} (see 'hilctl runs list')")
    return [(store.get_run(s.run_id), s.sweep, s.point) for s in reversed(summaries)]  # oldest first


def _default_name(args: argparse.Namespace, records: Sequence[tuple[RunRecord, Any, Any]]) -> str:
    if args.run_id is not None:
        return records[0][0].run_id
    return "runs" if args.sweep is None else f"sweep-{args.sweep}"


def _side(path: Path, kind: str) -> Path:
    return path.with_name(f"{path.stem}.{kind}.csv")


def run_export(args: argparse.Namespace) -> int:
    """``hilctl runs export``."""
    if (args.run_id is not None) == bool(args.all or args.sweep is not None):
        raise UsageError("export: give a run ID, or --all, or --sweep ID (one of them)")
    suffix = f".{args.format}"
    to_stdout = args.out == "-"
    if to_stdout and args.format != "json":
        raise UsageError("--out -: only --format json can be written to stdout")
    if args.out is not None and "\x00" in args.out:
        raise UsageError("--out: a file name cannot hold a NUL character")
    out = None if args.out is None or to_stdout else Path(args.out)
    if out is not None:
        check_output_path(out, "--out", suffix)
    store = RunStore(args.store, create=False)
    records = _selected(store, args)
    if out is None and not to_stdout:
        out = Path(_default_name(args, records) + suffix)
        check_output_path(out, "--out", suffix)
    if args.format == "json":
        objects = [run_object(*item) for item in records]
        value = objects[0] if args.run_id is not None else {
            "store": str(store.path), "sweep": args.sweep, "runs": objects}
        text = json.dumps(json_ready(value), allow_nan=False)
        if to_stdout:
            print(text)
            return EXIT_OK
        files = {out: text + "\n"}
    else:
        assert out is not None
        metrics, runs, events = csv_files(records)
        files = {out: metrics, _side(out, "runs"): runs, _side(out, "events"): events}
    for path, content in files.items():
        assert path is not None
        try:
            write_atomically(path, content)
        except OSError as exc:
            return error(f"could not write {str(path)!r}: {exc.strerror or exc}", EXIT_FAILURE)
    count = f"{len(records)} run{'s' if len(records) != 1 else ''}"
    print(f"wrote {', '.join(str(p) for p in files)} ({count})")
    return EXIT_OK
