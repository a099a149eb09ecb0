"""The experiment framework of ``hilctl reproduce``: result rows, claims, the registry, running.

An :class:`Experiment` follows one of the paper's experiments; its ``run`` takes a
:class:`RunContext` (quick or full, seed, progress, the Dask cluster its independent trainings
may go to) and returns an
:class:`ExperimentResult`: one :class:`Row` per measured number (with the seconds it took and the
command that reproduces it), the qualitative :class:`Claim` checked on those numbers, and the
curves its ``plot`` draws.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hilctl.cluster import Cluster

Progress = Callable[[str], None]
AUTHORS = "github.com/Zhaoxian-Wu/analog-training/NeurIPS-2024/"

T = TypeVar("T")
R = TypeVar("R")


def _silent(_message: str) -> None:
    pass


@dataclass
class Row:
    experiment: str
    setting: str
    algorithm: str
    metric: str
    value: float
    seconds: float
    command: str


@dataclass
class Claim:
    experiment: str
    claim: str
    passed: bool
    detail: str


@dataclass
class ExperimentResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    curves: dict[Any, Any] = field(default_factory=dict)  # whatever the figure needs
    figure: Path | None = None
    seconds: float = 0.0  # wall time of the whole experiment
    notes: list[str] = field(default_factory=list)  # printed under the experiment's heading
    command: str = ""  # the command that regenerates it
    produced: str = ""  # when and by which code version (see report.save_result)


@dataclass(frozen=True)
class RunContext:
    """How an experiment runs: ``quick`` (the CI version) or full, the seed of its problems and
    noise, where progress goes, and the Dask cluster :meth:`map` sends trainings to (None: one
    after the other in this process)."""

    quick: bool = False
    seed: int = 0
    progress: Progress = _silent
    cluster: Cluster | None = None

    def command(self, name: str) -> str:
        """The command line that regenerates experiment ``name`` in this context."""
        return command_for(name, self.quick, self.seed)

    def map(self, fn: Callable[[T], R], items: Sequence[T], labels: Sequence[str]) -> list[R]:
        """``[fn(item) for item in items]``, in order; on the cluster if there is one (``fn``
        and the items must then pickle: a module-level function and plain data). The results
        are the same either way: every training is seeded. Progress names each item as it
        starts (in this process) or ends (on the cluster)."""
        if self.cluster is None:
            out = []
            for item, label in zip(items, labels, strict=True):
                self.progress(label)
                out.append(fn(item))
            return out
        return self.cluster.map(fn, items, labels, self.progress)


RunFn = Callable[[RunContext], ExperimentResult]
PlotFn = Callable[[ExperimentResult, Path], None]


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    source: str
    run: RunFn
    plot: PlotFn
    #: why a default full run leaves this experiment out (it takes hours); ``hilctl reproduce``
    #: runs it in full only when named, and tables without it say why
    not_run_note: str = ""


EXPERIMENTS: dict[str, Experiment] = {}
#: names that stand for several experiments (``fig5`` = ``fig5-fcn fig5-cnn``)
GROUPS: dict[str, tuple[str, ...]] = {}


def register_experiment(experiment: Experiment) -> Experiment:
    """Add an experiment to the registry the CLI runs; tables list experiments in this order."""
    EXPERIMENTS[experiment.name] = experiment
    return experiment


def expand(names: Sequence[str]) -> list[str]:
    """Experiment names with groups expanded, each once, in the order given."""
    out: list[str] = []
    for name in names:
        for member in GROUPS.get(name, (name,)):
            if member not in out:
                out.append(member)
    return out


def command_for(name: str, quick: bool, seed: int) -> str:
    return f"hilctl reproduce {name}" + (" --quick" if quick else "") + f" --seed {seed}"


def run_experiments(names: Sequence[str], *, quick: bool = False, seed: int = 0,
                    out: Path | None = None, progress: Progress = _silent,
                    figures: bool = True, cluster: Cluster | None = None,
                    on_result: Callable[[ExperimentResult], None] | None = None,
                    ) -> list[ExperimentResult]:
    """Run ``names`` in order, their independent trainings on ``cluster`` if given; with
    ``out``, write a figure per experiment there. ``on_result`` hears each experiment as soon
    as it ends (to save it before the next one starts)."""
    ctx = RunContext(quick=quick, seed=seed, progress=progress, cluster=cluster)
    results = []
    for name in names:
        experiment = EXPERIMENTS[name]
        started = time.perf_counter()
        result = experiment.run(ctx)
        result.seconds = time.perf_counter() - started
        result.command = ctx.command(name)
        if out is not None and figures:
            out.mkdir(parents=True, exist_ok=True)
            result.figure = out / f"{name}.png"
            experiment.plot(result, result.figure)
        progress(f"{name}: done in {result.seconds:.1f} s")
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


def all_passed(results: Sequence[ExperimentResult]) -> bool:
    return all(c.passed for r in results for c in r.claims)


# -- helpers for the experiments ----------------------------------------------------------------

def claim(res: ExperimentResult, text: str, passed: bool, detail: str) -> None:
    res.claims.append(Claim(res.name, text, bool(passed), detail))


def add_row(res: ExperimentResult, ctx: RunContext, setting: str, algorithm: str, metric: str,
            value: float, seconds: float) -> None:
    res.rows.append(Row(res.name, setting, algorithm, metric, float(value), seconds,
                        ctx.command(res.name)))


def strictly_decreasing(values: Sequence[float]) -> bool:
    return all(b < a for a, b in itertools.pairwise(values))


def strictly_increasing(values: Sequence[float]) -> bool:
    return all(b > a for a, b in itertools.pairwise(values))


def fmt(values: Sequence[float]) -> str:
    return ", ".join(f"{v:.3g}" for v in values)
