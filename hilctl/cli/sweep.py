"""``hilctl sweep SWEEP.toml``: every point of a grid of settings, algorithms and seeds trained
on a Dask cluster, each recorded in the run store, and the results summarised.

Progress goes to stderr (a line per point that ends: done, running, failed, time left); the
table (mean ± std over the seeds per setting, the best marked) or, with ``--json``, one object
to stdout. Exit 0 when every point completed, 4 when one diverged, 1 when one failed, 2 for a
sweep file refused before any training, 3 for a scheduler that does not answer, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from hilctl.cli.output import (
    EXIT_DIVERGED,
    EXIT_FAILURE,
    EXIT_OK,
    check_output_path,
    error,
    print_json,
    say,
)
from hilctl.cli.parsing import UsageError, positive_int
from hilctl.cli.signals import exit_code
from hilctl.cluster import Cluster, check_address, local_cores, require_dask
from hilctl.errors import ClusterError
from hilctl.plotting import require_matplotlib
from hilctl.runs import DIVERGED, FAILED, RunStore
from hilctl.sweep.figures import plot_sweep
from hilctl.sweep.runner import PointResult, Progress, run_sweep
from hilctl.sweep.spec import POINT_LIMIT, Sweep, load_sweep
from hilctl.sweep.summary import rows, table

_DESCRIPTION = f"""\
Train every point of a sweep on a Dask cluster and record each as 'hilctl train' records a
run (tagged with the sweep's id: 'hilctl runs list --sweep ID'). SWEEP.toml is a
'hilctl train --config' file with a [sweep] table:

    [task]
    name = "least-squares"
    steps = 2000
    [sweep]
    seeds = [0, 1, 2]
    algorithms = ["analog-sgd", "tiki-taka"]
    [sweep.grid]                # the Cartesian product of the lists
    "task.lr" = [0.01, 0.05, 0.1]
    [[sweep.zip]]               # lists that move together
    "device.w_max" = [0.5, 0.6]
    "device.w_min" = [-0.5, -0.6]

Without --scheduler, a local cluster of --workers processes; with it, the workers of a running
'dask scheduler' ('dask worker ADDRESS' on each machine). Only this process writes the run
store. Running the same sweep again skips the points already done (completed or diverged). A
sweep of more than {POINT_LIMIT} points needs --yes. See docs/sweeps.md.
"""


def register(subparsers: Any) -> None:
    """Add ``sweep`` to the ``hilctl`` subcommands."""
    parser = subparsers.add_parser(
        "sweep", help="train a grid of settings, algorithms and seeds on a Dask cluster",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", metavar="SWEEP.toml", help="the sweep file")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="a running Dask scheduler, tcp://HOST:PORT (default: a local "
                        "cluster on this machine)")
    parser.add_argument("--workers", type=positive_int, metavar="N",
                        help=f"worker processes of the local cluster (default: the cores, "
                        f"{local_cores()} here)")
    parser.add_argument("--store", metavar="PATH",
                        help="run store (default: $HILCTL_HOME or ~/.local/share/hilctl)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object (sweep_id, points, table) instead of the "
                        "table")
    parser.add_argument("--plot", type=Path, metavar="FILE.png",
                        help="draw the metric against each swept key (a heat map for two) "
                        "into FILE.png")
    parser.add_argument("--yes", action="store_true",
                        help=f"run a sweep of more than {POINT_LIMIT} points")
    parser.set_defaults(handler=run)


def _status_text(result: PointResult, metric: str) -> str:
    text = result.status
    if metric in result.final:
        text += f", {metric} {result.final[metric]:.4g}"
    if result.error:
        text += f" ({' '.join(result.error.split())})"
    return text + (f" (run {result.run_id})" if result.run_id else "")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def run(args: argparse.Namespace) -> int:
    """``hilctl sweep``."""
    require_dask("hilctl sweep")
    if args.scheduler is not None:
        if args.workers is not None:
            raise UsageError("--workers: sets the size of a local cluster; the workers of "
                             "--scheduler are the 'dask worker' processes started for it")
        check_address(args.scheduler)
    if args.plot is not None:
        check_output_path(args.plot, "--plot", ".png")
        require_matplotlib()
    sweep = load_sweep(args.file, confirmed=args.yes)
    store = RunStore(args.store)
    begun = time.perf_counter()
    recorded: list[PointResult] = []

    def open_cluster(points: int) -> Cluster:
        workers = None if args.scheduler else min(args.workers or local_cores(), points)
        return Cluster(workers=workers, scheduler=args.scheduler)

    def started(cluster: Cluster | None, earlier: int, todo: int) -> None:
        where = f" on {cluster.description}" if cluster is not None else ""
        say(f"sweep {sweep.sweep_id}: {len(sweep.points)} points, {earlier} done earlier, "
            f"{todo} to run{where}")

    def progress(p: Progress) -> None:
        recorded.append(p.last)
        left = f", about {_duration(p.seconds_left)} left" if p.running else ""
        say(f"[{time.perf_counter() - begun:6.1f} s] {p.last.point.label()}: "
            f"{_status_text(p.last, sweep.metric)}   {p.done}/{p.total} done, {p.running} "
            f"running, {p.failed} failed{left}")

    try:
        results = run_sweep(sweep, store, open_cluster, progress, started)
    except KeyboardInterrupt as exc:
        say(f"hilctl: interrupted ({exc or 'SIGINT'}); {len(recorded)} point(s) of this run "
            "are recorded, the running ones are cancelled; run the same command again to go on "
            "(points done are skipped)")
        return exit_code(exc)
    except ClusterError as exc:
        raise ClusterError(f"{exc}: {len(recorded)} point(s) of this run are recorded; run the "
                           "same command again to go on") from None
    return _report(args, sweep, results, store)


def _report(args: argparse.Namespace, sweep: Sweep, results: list[PointResult],
            store: RunStore) -> int:
    summary = rows(sweep, results)
    if args.json:
        print_json({"sweep_id": sweep.sweep_id, "metric": sweep.metric,
                    "points": [_point_json(r) for r in results],
                    "table": [row.as_json() for row in summary]})
    else:
        print(f"sweep {sweep.sweep_id} ({sweep.source}): {len(results)} runs in "
              f"{store.path} (hilctl runs list --sweep {sweep.sweep_id})")
        for line in table(sweep, summary):
            print(line)
    if args.plot is not None:
        try:
            plot_sweep(sweep, summary, args.plot)
        except OSError as exc:
            return error(f"could not write {str(args.plot)!r}: {exc.strerror or exc}",
                         EXIT_FAILURE)
        say(f"wrote {args.plot}")
    failed = [r for r in results if r.status == FAILED]
    if failed:
        return error(f"{len(failed)} of {len(results)} points failed, e.g. "
                     f"{failed[0].point.label()}: see 'hilctl runs show {failed[0].run_id}'",
                     EXIT_FAILURE)
    return EXIT_DIVERGED if any(r.status == DIVERGED for r in results) else EXIT_OK


def _point_json(result: PointResult) -> dict[str, Any]:
    return {"params": dict(result.point.params), "seed": result.point.seed,
            "algorithm": result.point.algorithm, "run_id": result.run_id,
            "status": result.status, "final": result.final,
            **({"error": result.error} if result.error else {}),
            "earlier": result.earlier}
