"""A sweep's results as a person reads them: per swept setting and algorithm, the task's final
metric as mean ± standard deviation over the seeds, and the best setting marked.

Only completed runs enter a mean; a setting with a seed that diverged or failed says how many.
The best setting is the one with the lowest mean (the highest, for a metric where higher is
better, such as test accuracy).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from typing import Any

from hilctl.runs import COMPLETED, DIVERGED, FAILED
from hilctl.sweep.runner import PointResult
from hilctl.sweep.spec import Params, Sweep, value_text


@dataclass(frozen=True)
class Row:
    """One setting of the swept keys under one algorithm, over the sweep's seeds."""

    params: Params
    algorithm: str
    mean: float | None  # None when no seed completed
    std: float | None  # None with fewer than two completed seeds
    completed: int
    diverged: int
    failed: int
    seeds: int
    best: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"params": dict(self.params), "algorithm": self.algorithm, "mean": self.mean,
                "std": self.std, "completed": self.completed, "diverged": self.diverged,
                "failed": self.failed, "seeds": self.seeds, "best": self.best}


def rows(sweep: Sweep, results: list[PointResult]) -> list[Row]:
    """One :class:`Row` per setting and algorithm, in the sweep's order, the best marked."""
    groups: dict[tuple[Params, str], list[PointResult]] = {}
    for result in results:
        groups.setdefault((result.point.params, result.point.algorithm), []).append(result)
    out = []
    for (params, algorithm), members in groups.items():
        values = [float(r.final[sweep.metric]) for r in members
                  if r.status == COMPLETED and math.isfinite(r.final.get(sweep.metric, math.nan))]
        out.append(Row(params, algorithm,
                       statistics.fmean(values) if values else None,
                       statistics.stdev(values) if len(values) > 1 else None,
                       len(values), sum(r.status == DIVERGED for r in members),
                       sum(r.status == FAILED for r in members), len(members)))
    scored = [row for row in out if row.mean is not None]
    if scored:
        sign = -1.0 if sweep.higher_is_better else 1.0
        best = min(scored, key=lambda row: sign * (row.mean or 0.0))
        out = [replace(row, best=True) if row is best else row for row in out]
    return out


def table(sweep: Sweep, summary: list[Row]) -> list[str]:
    """The rows as an aligned text table, with a line saying what the mark means."""
    spread = f"mean ± std over {len(sweep.seeds)} seeds" if len(sweep.seeds) > 1 else "1 seed"
    header = [*sweep.keys, "algorithm", f"{sweep.metric} ({spread})", "runs"]
    body = []
    for row in summary:
        value = "-" if row.mean is None else f"{row.mean:.4g}"
        if row.std is not None:
            value += f" ± {row.std:.2g}"
        runs = f"{row.completed}/{row.seeds} completed"
        runs += f", {row.diverged} diverged" if row.diverged else ""
        runs += f", {row.failed} failed" if row.failed else ""
        params = dict(row.params)
        body.append([*(value_text(params[key]) for key in sweep.keys), row.algorithm, value,
                     runs + ("   <- best" if row.best else "")])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, *body]]
    goal = "highest" if sweep.higher_is_better else "lowest"
    return [*lines, f"best: the {goal} mean {sweep.metric} of the completed runs"]
