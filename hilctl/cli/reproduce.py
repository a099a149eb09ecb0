"""``hilctl reproduce``: regenerate the paper's results on the emulator.

Progress goes to stderr, a summary of the claims to stdout. With ``--out DIR`` each experiment
writes its figure (PNG) and its results (``<name>.json``) there, and ``results.md`` and
``results.csv`` are rebuilt from every experiment saved in DIR, so experiments can be
regenerated one at a time into one table. With ``--workers N`` (alias ``--jobs``) or
``--scheduler ADDRESS``, the independent trainings of an experiment run on a Dask cluster
(:mod:`hilctl.cluster`), with the same results as one after the other. Exit 0 when every
qualitative claim holds, 4 otherwise (3 when the scheduler does not answer).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path
from typing import Any

from hilctl import reproduce
from hilctl.cli.output import EXIT_DIVERGED, EXIT_OK
from hilctl.cli.parsing import UsageError, nonnegative_int, positive_int
from hilctl.cluster import Cluster, check_address, local_cores, require_dask
from hilctl.errors import HilctlError
from hilctl.reproduce import report

_DESCRIPTION = """\
Regenerate the experiments of Wu et al., NeurIPS 2024 ("Towards Exact
Gradient-based Training on Analog In-memory Computing") on the emulator, with the settings of
the authors' scripts (github.com/Zhaoxian-Wu/analog-training, NeurIPS-2024/). Each experiment
checks the paper's qualitative claims on its own numbers.

experiments:
{experiments}

--quick runs fewer iterations, seeds and values (the CI set, about a minute in all).
Without EXPERIMENT, every experiment runs except those whose full run takes hours (fig5-fcn,
fig5-cnn; 'fig5' names both): name them to run them in full, with --workers to use more
cores, or --scheduler to use a Dask cluster's (docs/sweeps.md).
With --out DIR, results.md and results.csv cover every experiment saved in DIR so far.
"""


def _experiments_help() -> str:
    lines = [f"  {e.name:<11} {e.title}" for e in reproduce.EXPERIMENTS.values()]
    lines += [f"  {name:<11} = {' '.join(members)}" for name, members in reproduce.GROUPS.items()]
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    """Add ``reproduce`` to the ``hilctl`` subcommands."""
    parser = subparsers.add_parser(
        "reproduce", help="regenerate the paper's figures and results table",
        description=_DESCRIPTION.format(experiments=_experiments_help()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("experiments", nargs="*", metavar="EXPERIMENT",
                        help="experiments to run (default: all; in full, all but the ones "
                        "that take hours)")
    parser.add_argument("--quick", action="store_true",
                        help="the short CI versions (fewer iterations, seeds and values)")
    parser.add_argument("--out", metavar="DIR",
                        help="save each experiment's results (NAME.json) and figure (NAME.png) "
                        "in DIR and rebuild DIR/results.md and results.csv from all saved there")
    parser.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                        help="seed of the problems and the noise (default: %(default)s)")
    parser.add_argument("--workers", "--jobs", type=positive_int, default=1, metavar="N",
                        help="worker processes of a local Dask cluster for experiments made of "
                        f"independent trainings (fig5; this machine has {local_cores()} cores; "
                        "default: %(default)s, in this process)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run those trainings on the workers of a running Dask scheduler, "
                        "tcp://HOST:PORT (see docs/sweeps.md)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines on stderr")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``hilctl reproduce``."""
    names = reproduce.expand(args.experiments) or [
        name for name, experiment in reproduce.EXPERIMENTS.items()
        if args.quick or not experiment.not_run_note  # a full run that takes hours: ask for it
    ]
    unknown = [n for n in names if n not in reproduce.EXPERIMENTS]
    if unknown:
        raise UsageError(f"unknown experiment {unknown[0]!r}; allowed: "
                         f"{', '.join([*reproduce.EXPERIMENTS, *reproduce.GROUPS])}")
    if args.scheduler is not None:
        check_address(args.scheduler)
    if args.scheduler is not None or args.workers > 1:
        require_dask("hilctl reproduce --workers/--scheduler")
    out = Path(args.out) if args.out else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            report.load_results(out)  # refuse a directory whose saved results cannot be read
        except (OSError, ValueError) as exc:
            raise UsageError(f"--out {out}: {exc}") from exc
    started = time.perf_counter()

    def progress(message: str) -> None:
        if args.quiet:
            return
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    def save(result: reproduce.ExperimentResult) -> None:
        if out is None:
            return
        try:  # saved at once: a later experiment that fails loses nothing
            report.save_result(result, out)
            report.write_tables(out)
        except OSError as exc:
            raise HilctlError(f"cannot write to {out}: {exc}") from exc

    with contextlib.ExitStack() as stack:
        cluster = None
        if args.scheduler is not None or args.workers > 1:
            cluster = stack.enter_context(Cluster(workers=args.workers, scheduler=args.scheduler))
        results = reproduce.run_experiments(names, quick=args.quick, seed=args.seed, out=out,
                                            progress=progress, cluster=cluster, on_result=save)
    if out is not None:
        progress(f"wrote {out / 'results.md'}, {out / 'results.csv'} and the figures")
    print(report.summary(results))
    return EXIT_OK if reproduce.all_passed(results) else EXIT_DIVERGED
