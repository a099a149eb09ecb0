"""What ``hilctl reproduce --out DIR`` writes: one ``<experiment>.json`` per experiment run, and
``results.md`` / ``results.csv`` rebuilt from every such file in DIR.

Rebuilding from the files lets the experiments be regenerated one at a time (the MNIST runs take
hours, the rest minutes) into one table: each section says which command produced it, when, and
with which code version.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from hilctl.reproduce.core import EXPERIMENTS, Claim, ExperimentResult, Row

ROW_FIELDS = ("experiment", "setting", "algorithm", "metric", "value", "seconds", "command")


def save_result(result: ExperimentResult, out: Path) -> Path:
    """Write ``out/<name>.json`` (rows, claims, notes, timing, provenance; not the curves, which
    are in the figure)."""
    from hilctl.runs import code_version

    result.produced = f"{time.strftime('%Y-%m-%d')}, hilctl {code_version()}"
    path = out / f"{result.name}.json"
    record = {"name": result.name, "command": result.command, "seconds": result.seconds,
              "produced": result.produced, "notes": result.notes,
              "figure": result.figure.name if result.figure is not None else None,
              "rows": [asdict(r) for r in result.rows],
              "claims": [asdict(c) for c in result.claims]}
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def load_results(out: Path) -> list[ExperimentResult]:
    """Every registered experiment with a ``<name>.json`` in ``out``, in registry order."""
    results = []
    for name in EXPERIMENTS:
        path = out / f"{name}.json"
        if not path.exists():
            continue
        try:
            record = json.loads(path.read_text())
            figure = record["figure"]
            results.append(ExperimentResult(
                name=name, command=record["command"], seconds=record["seconds"],
                produced=record["produced"], notes=record["notes"],
                figure=out / figure if figure else None,
                rows=[Row(**r) for r in record["rows"]],
                claims=[Claim(**c) for c in record["claims"]]))
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a hilctl reproduce result ({exc}); delete it or "
                             "regenerate it with the command in results.md") from exc
    return results


def write_csv(results: Sequence[ExperimentResult], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(ROW_FIELDS)
        for r in results:
            for row in r.rows:
                writer.writerow([row.experiment, row.setting, row.algorithm, row.metric,
                                 f"{row.value:.6g}", f"{row.seconds:.2f}", row.command])


def claims_table(results: Sequence[ExperimentResult]) -> str:
    lines = ["| experiment | claim | result | measured |", "|---|---|---|---|"]
    for r in results:
        for c in r.claims:
            lines.append(f"| {c.experiment} | {c.claim} | {'PASS' if c.passed else 'FAIL'} | "
                         f"{c.detail} |")
    return "\n".join(lines)


def markdown(results: Sequence[ExperimentResult], *, figure_base: Path | None = None) -> str:
    """The results table (claims first, then every measured number) with figure links; the
    registered experiments without results get a note on why (and how to run them)."""
    out = ["# Paper reproduction", "",
           "Wu, Gokmen, Rasch, Chen, *Towards Exact Gradient-based Training on Analog "
           "In-memory Computing*, NeurIPS 2024, regenerated on the hilctl emulator "
           "(`hilctl reproduce`). Each section names the command that regenerates it.", "",
           "## Claims", "", claims_table(results), "", "## Experiments", ""]
    for r in results:
        exp = EXPERIMENTS[r.name]
        out.extend([f"### {r.name}: {exp.title}", ""])
        produced = f" Produced {r.produced}." if r.produced else ""
        out.extend([f"Settings from `{exp.source}`. Took {r.seconds:.1f} s; regenerate with "
                    f"`{r.command}`.{produced}", ""])
        if r.figure is not None:
            rel = r.figure.name if figure_base is None else r.figure.relative_to(figure_base)
            out.extend([f"![{r.name}]({rel})", ""])
        for note in r.notes:
            out.extend([note, ""])
        out.append("| setting | algorithm | metric | value | seconds |")
        out.append("|---|---|---|---|---|")
        for row in r.rows:
            out.append(f"| {row.setting} | {row.algorithm} | {row.metric} | {row.value:.4g} | "
                       f"{row.seconds:.2f} |")
        out.append("")
    done = {r.name for r in results}
    skipped = [e for e in EXPERIMENTS.values() if e.name not in done and e.not_run_note]
    if skipped:
        out.extend(["## Not run for this table", ""])
        for exp in skipped:
            out.extend([f"### {exp.name}: {exp.title}", "", exp.not_run_note, ""])
    return "\n".join(out)


def write_tables(out: Path) -> list[ExperimentResult]:
    """Rebuild ``out/results.md`` and ``out/results.csv`` from the results saved in ``out``."""
    results = load_results(out)
    write_csv(results, out / "results.csv")
    (out / "results.md").write_text(markdown(results, figure_base=out) + "\n")
    return results


def summary(results: Sequence[ExperimentResult]) -> str:
    """A plain-text summary for the terminal: one line per claim."""
    lines = []
    width = max((len(c.claim) for r in results for c in r.claims), default=10)
    for r in results:
        for c in r.claims:
            lines.append(f"{'PASS' if c.passed else 'FAIL'}  {r.name:<11} {c.claim:<{width}}  "
                         f"{c.detail}")
    total = sum(len(r.claims) for r in results)
    passed = sum(c.passed for r in results for c in r.claims)
    lines.append(f"{passed}/{total} claims hold; "
                 f"{sum(r.seconds for r in results):.1f} s in all")
    return "\n".join(lines)
