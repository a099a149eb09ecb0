"""What a run cost the bench's instruments: pulses, cell reads, MVMs, round trips, waiting.

A backend whose tiles drive instruments reports its running totals in its end-of-run report
(:meth:`hilctl.backends.Backend.report`) under the key ``operations`` (:data:`REPORT_KEY`):
``pulses``, ``cell_reads``, ``mvms``, ``round_trips`` (integers) and ``wait_seconds`` (a
float, seconds spent waiting on instruments), each only ever growing while the backend is
open. The training controller takes them at the start and at the end of a run; the difference
is the run's cost (:class:`Operations`), stored with the run and shown per training step. A
backend without instruments (the emulator) reports none, and its runs have no ``operations``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Where a backend's report holds its totals.
REPORT_KEY = "operations"


@dataclass(frozen=True)
class Operations:
    """Instrument work, as totals.

    Attributes:
        pulses: device pulses sent (a coincidence pulse on a row mask and a column mask is one
            pulse per crossing cell).
        cell_reads: cells read one by one (each cell of a read counts once).
        mvms: analog matrix-vector products (one per input vector).
        round_trips: exchanges completed with the instruments: a request answered, a command
            written (an attempt that got no answer is not one; the driver counts it a retry).
        wait_seconds: wall time spent waiting on instruments (s).
    """

    pulses: int = 0
    cell_reads: int = 0
    mvms: int = 0
    round_trips: int = 0
    wait_seconds: float = 0.0

    @classmethod
    def in_report(cls, report: Mapping[str, Any]) -> Operations | None:
        """The totals a backend's report holds, or None if it holds none (no instruments)."""
        totals = report.get(REPORT_KEY)
        if not isinstance(totals, Mapping):
            return None
        wait = float(totals.get("wait_seconds", 0.0))
        return cls(pulses=int(totals.get("pulses", 0)), cell_reads=int(totals.get("cell_reads", 0)),
                   mvms=int(totals.get("mvms", 0)), round_trips=int(totals.get("round_trips", 0)),
                   wait_seconds=wait if math.isfinite(wait) else 0.0)

    def __add__(self, other: Operations) -> Operations:
        return Operations(pulses=self.pulses + other.pulses,
                          cell_reads=self.cell_reads + other.cell_reads,
                          mvms=self.mvms + other.mvms,
                          round_trips=self.round_trips + other.round_trips,
                          wait_seconds=self.wait_seconds + other.wait_seconds)

    def report_entry(self) -> dict[str, Any]:
        """The totals as a backend's report holds them (:meth:`in_report` reads them back);
        the wait rounded to the microsecond."""
        return {"pulses": self.pulses, "cell_reads": self.cell_reads, "mvms": self.mvms,
                "round_trips": self.round_trips, "wait_seconds": round(self.wait_seconds, 6)}

    def since(self, before: Operations | None) -> Operations:
        """The work done since ``before`` (an earlier total of the same backend; None: none);
        never negative (a backend that closed its instruments in between started again)."""
        if before is None:
            return self
        return Operations(pulses=max(0, self.pulses - before.pulses),
                          cell_reads=max(0, self.cell_reads - before.cell_reads),
                          mvms=max(0, self.mvms - before.mvms),
                          round_trips=max(0, self.round_trips - before.round_trips),
                          wait_seconds=max(0.0, self.wait_seconds - before.wait_seconds))

    def as_json(self, seconds: float) -> dict[str, Any]:
        """The run's ``operations`` object: the four counts and ``instrument_wait_share``, the
        share of the run's ``seconds`` of wall time spent waiting on instruments (in [0, 1];
        0 for a run of no measurable length)."""
        share = min(1.0, self.wait_seconds / seconds) if seconds > 0 else 0.0
        return {"pulses": self.pulses, "cell_reads": self.cell_reads, "mvms": self.mvms,
                "round_trips": self.round_trips, "instrument_wait_share": round(share, 4)}


def per_step_line(operations: Mapping[str, Any], steps: int) -> str:
    """A run's ``operations`` object (:meth:`Operations.as_json`) for a person: per training
    step, or as totals when no step was completed."""
    if steps > 0:
        head, divide = "operations per step: ", steps
    else:
        head, divide = "operations (no training step completed): ", 1
    counts = ", ".join(f"{_amount(operations[key] / divide)} {name}" for key, name in (
        ("pulses", "pulses"), ("cell_reads", "cell reads"), ("mvms", "MVMs"),
        ("round_trips", "round trips")))
    share = 100 * operations["instrument_wait_share"]
    return f"{head}{counts}; {share:.0f}% of the time waiting on instruments"


def _amount(value: float) -> str:
    """A per-step figure: one decimal, none for a whole number (``12``, ``0.5``, ``210.3``)."""
    return f"{value:.1f}".removesuffix(".0")
