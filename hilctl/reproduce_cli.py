"""``hilctl reproduce``: regenerate the paper's least-squares results on the emulator.

Progress goes to stderr, a summary of the claims to stdout; with ``--out DIR`` the figures
(PNG), ``results.md`` and ``results.csv`` are written there. Exit 0 when every qualitative claim
holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from hilctl.cli import EXIT_FAILURE, EXIT_OK, UsageError, nonnegative_int

_DESCRIPTION = """\
Regenerate the experiments of Wu et al., NeurIPS 2024 ("Towards Exact
Gradient-based Training on Analog In-memory Computing") on the emulator, with the settings of
the authors' scripts (github.com/Zhaoxian-Wu/analog-training, NeurIPS-2024/). Each experiment
checks the paper's qualitative claims on its own numbers.

experiments:
{experiments}

--quick runs fewer iterations, seeds and values (the CI set, under a minute in all).
Without EXPERIMENT, every experiment runs except those whose full run takes hours (fig5):
name them to run them in full.
"""


def _experiments_help() -> str:
    from hilctl.reproduce import EXPERIMENTS

    return "\n".join(f"  {e.name:<11} {e.title}" for e in EXPERIMENTS.values())


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
                        help="write figures, results.md and results.csv to DIR")
    parser.add_argument("--seed", type=nonnegative_int, default=0, metavar="S",
                        help="seed of the problems and the noise (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from hilctl import reproduce

    names = list(args.experiments) or [
        name for name, experiment in reproduce.EXPERIMENTS.items()
        if args.quick or not experiment.not_run_note  # a full run that takes hours: ask for it
    ]
    unknown = [n for n in names if n not in reproduce.EXPERIMENTS]
    if unknown:
        raise UsageError(f"unknown experiment {unknown[0]!r}; allowed: "
                         f"{', '.join(reproduce.EXPERIMENTS)}")
    out = Path(args.out) if args.out else None
    started = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    results = reproduce.run_experiments(names, quick=args.quick, seed=args.seed, out=out,
                                        progress=progress)
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
            reproduce.write_csv(results, out / "results.csv")
            (out / "results.md").write_text(
                reproduce.markdown(results, quick=args.quick, seed=args.seed, figure_base=out)
                + "\n")
        except OSError as exc:
            print(f"hilctl: error: cannot write to {out}: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        progress(f"wrote {out / 'results.md'}, {out / 'results.csv'} and the figures")
    print(reproduce.summary(results))
    return EXIT_OK if reproduce.all_passed(results) else EXIT_FAILURE
