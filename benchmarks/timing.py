"""What the benchmarks share: their command line, and calls per second of a step over one
round."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

#: One call of the thing timed; the argument counts the calls (to cycle through prepared data).
Step = Callable[[int], None]


def calls_per_second(step: Step, seconds: float) -> float:
    """Calls per second over one round of about ``seconds``, after three calls to warm up."""
    for i in range(3):
        step(i)
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(4):
            step(calls)
            calls += 1
    return calls / elapsed


def round_arguments(description: str, seconds: float) -> argparse.Namespace:
    """The command line of a benchmark timed in alternating rounds: ``--rounds``,
    ``--seconds`` (default ``seconds``) and ``--json FILE``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per setting")
    parser.add_argument("--seconds", type=float, default=seconds, help="length of one round")
    parser.add_argument("--json", help="also write the results to this file")
    return parser.parse_args()
