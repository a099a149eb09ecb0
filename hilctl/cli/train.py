"""``hilctl train`` and ``hilctl compare``: the main job, one run or several side by side."""

from __future__ import annotations

import argparse
import copy
import math
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hilctl.algorithms import ALGORITHMS
from hilctl.backends import Backend
from hilctl.cli.options import (
    add_backend_arguments,
    backend_from_args,
    emulator_settings_given,
    parse_sets,
    refuse_emulator_settings,
)
from hilctl.cli.output import EXIT_DIVERGED, EXIT_OK, error, print_json, progress_for, say
from hilctl.cli.parsing import nonnegative_int, positive_int
from hilctl.cli.signals import exit_code
from hilctl.config import DEVICE_CONFIGS, no_variation
from hilctl.errors import ConfigError
from hilctl.operations import per_step_line
from hilctl.runs import RunStore
from hilctl.tasks import TASKS
from hilctl.train_config import (
    SECTIONS,
    TrainConfig,
    load_toml,
    resolve_train_config,
)
from hilctl.training import DivergedRun, TrainOutcome, train

#: What ``compare`` runs by default: the paper's headline.
_HEADLINE = ("digital-sgd", "analog-sgd", "tiki-taka")
#: What each task's metrics mean, from the tasks themselves.
_METRIC_MEANING = {name: meaning for task in TASKS.values()
                   for name, meaning in task.metric_meanings.items()}


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def metric_meaning(task: Any, name: str) -> str:
    """What metric ``name`` of ``task`` means, with the task's own numbers filled in (the
    steps ``rel_err`` averages over, ``task.eval_window``)."""
    meaning = type(task).metric_meanings.get(name) or _METRIC_MEANING.get(name, "")
    return meaning.format_map(_Fields({k: getattr(task, k) for k in type(task).model_fields}))


@dataclass(frozen=True)
class Setting:
    """One device setting the no-argument ``compare`` runs: a name, what it is, and the
    command-line arguments that make it."""

    name: str
    title: str
    args: argparse.Namespace


#: The paper's setting: the ideal asymmetric linear device (soft bounds +-tau, no variation)
#: read through a perfect periphery (the README's tuned compare; ``reproduce successors``).
PAPER_SETS = ("device.tau=0.5", "periphery.is_perfect=true")


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    add_backend_arguments(parser)
    parser.add_argument("--task", choices=list(TASKS), help="task (default: least-squares)")
    parser.add_argument("--device", choices=list(DEVICE_CONFIGS),
                        help="device model of every analog cell (default: soft-bounds)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help=f"override one value; SECTION is one of {', '.join(SECTIONS)}; "
                        "repeatable (e.g. device.w_max=0.5, task.steps=2000)")
    parser.add_argument("--no-variation", action="store_true",
                        help="switch off every device-to-device and cycle-to-cycle variation "
                        "(before --set, which may turn single ones back on)")
    parser.add_argument("--config", metavar="FILE.toml",
                        help="read the sections from a TOML file first")
    parser.add_argument("--seed", type=nonnegative_int, help="seed of the run (default: 0)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object on stdout and nothing else")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress on stderr (by default a bar on a terminal, else a "
                        "log line at most every 10 s and at each epoch end)")
    parser.add_argument("--store", metavar="PATH",
                        help="run store (default: $HILCTL_HOME or ~/.local/share/hilctl)")


def register(subparsers: Any) -> None:
    """Add ``train`` and ``compare`` to the ``hilctl`` subcommands."""
    train_parser = subparsers.add_parser(
        "train", help="train a model on analog tiles (the main job)",
        description="Train a model with digital SGD, Analog SGD or Tiki-Taka on the tiles of a "
        "backend, record the run, and print a summary. With no arguments: least squares with "
        "Analog SGD on the emulator.",
    )
    _add_run_arguments(train_parser)
    train_parser.add_argument("--algorithm", choices=list(ALGORITHMS),
                              help="training algorithm (default: analog-sgd)")
    train_parser.set_defaults(handler=run_train)

    compare_parser = subparsers.add_parser(
        "compare", help="the same task and seeds under several algorithms, side by side",
        description="Run the same task with the same seeds under several algorithms and print "
        "one table: the paper's headline (digital SGD vs Analog SGD vs Tiki-Taka). With no "
        "--task, --device, --no-variation, --config, other backend or --set outside task.* and "
        "run.*, it runs two settings, one table each, and says what they show: the paper's "
        "(the ideal asymmetric linear device: soft bounds with tau 0.5, no variation, perfect "
        "periphery), where Tiki-Taka reaches digital SGD and Analog SGD keeps an error, and "
        "the realistic default (aihwkit's soft-bounds device with its variations, noisy "
        "periphery). With any of those options it runs just the setting asked for. --json "
        "prints one object: for one setting {\"rows\": [...], \"runs\": [...]}; for the two "
        "{\"settings\": [{\"name\", \"title\", \"rows\", \"runs\"}, ...], \"findings\": "
        "[line, ...]}.",
    )
    _add_run_arguments(compare_parser)
    compare_parser.add_argument(
        "--algorithms", default=",".join(_HEADLINE), metavar="A,B,...",
        help=f"comma-separated algorithms, from {', '.join(ALGORITHMS)} (default: %(default)s)")
    compare_parser.add_argument("--seeds", type=positive_int, default=1, metavar="N",
                                help="seeds per algorithm: seed, seed+1, ... (default: 1)")
    compare_parser.set_defaults(handler=run_compare)


def _config(args: argparse.Namespace, backend: Backend, algorithm: str | None, seed: int | None,
            shared_algorithm_keys: bool = False) -> TrainConfig:
    """The resolved config of the command line; device and periphery settings are refused on
    a physical backend. With ``shared_algorithm_keys`` (compare), an ``algorithm.KEY``
    applies to each compared algorithm that has the key."""
    overrides = parse_sets(args.set, SECTIONS)
    if shared_algorithm_keys and algorithm in ALGORITHMS:
        accepted = ALGORITHMS[algorithm].model_fields
        overrides["algorithm"] = {k: v for k, v in overrides["algorithm"].items() if k in accepted}
    file_values = load_toml(args.config) if args.config else None
    refuse_emulator_settings(backend, emulator_settings_given(args, overrides, file_values))
    if args.no_variation:
        model = args.device or (file_values or {}).get("device", {}).get("model", "soft-bounds")
        if model in DEVICE_CONFIGS:  # an unknown model is reported by the resolution below
            overrides["device"] = {**no_variation(model), **overrides["device"]}
    return resolve_train_config(
        file_values=file_values, task=args.task, algorithm=algorithm, device=args.device,
        seed=seed, overrides=overrides,
    )


def _train(config: TrainConfig, args: argparse.Namespace, store: RunStore, label: str,
           command: str, backend: Backend, options: dict[str, Any]) -> TrainOutcome:
    progress = progress_for(label, enabled=not args.quiet, metric=config.task.final_metric,
                            line_on_metrics=hasattr(config.task, "epochs"))
    try:
        with backend:  # closed after each run: the next opens its tiles afresh (a bench's regions)
            return train(config, backend, store=store, command=command, progress=progress,
                         backend_options=options,
                         on_metrics=None if progress is None else progress.metric)
    finally:
        if progress is not None:
            progress.close()


def run_train(args: argparse.Namespace) -> int:
    """``hilctl train``."""
    backend, options = backend_from_args(args)
    config = _config(args, backend, args.algorithm, args.seed)
    store = RunStore(args.store)
    return report_run(lambda: _train(config, args, store, config.summary(backend.physical), "train", backend,
                                     options), args.json)


def report_run(run: Callable[[], TrainOutcome], as_json: bool) -> int:
    """Do ``run`` and report it as ``hilctl train`` does: a summary or one JSON object, an
    interruption (128 + signal) or a divergence (4) in one line on stderr."""
    try:
        outcome = run()
    except KeyboardInterrupt as exc:
        say(f"hilctl: interrupted ({exc or 'SIGINT'}); {interrupted_run(exc)}")
        return exit_code(exc)
    except DivergedRun as exc:
        if as_json:
            print_json({**exc.outcome.as_json(), "error": str(exc)})
        return error(exc, exc.exit_code)
    if as_json:
        print_json(outcome.as_json())
        return EXIT_OK
    for line in summary_lines(outcome):
        print(line)
    return EXIT_OK


def interrupted_run(exc: BaseException) -> str:
    """What became of the run an interruption stopped, and how to go on with it."""
    run_id = getattr(exc, "run_id", None)
    if run_id is None:
        return ("the run is recorded as interrupted with its history so far and a checkpoint "
                "to resume from (see 'hilctl runs list')")
    return (f"run {run_id} is recorded as interrupted with its history so far and a checkpoint; "
            f"continue it with 'hilctl runs resume {run_id}'")


def summary_lines(outcome: TrainOutcome) -> list[str]:
    """A readable account of one run."""
    config = outcome.config
    lines = [f"{config.summary(outcome.physical)} on {outcome.backend_label}, seed {config.seed}: "
             f"{config.task.length()} in {outcome.seconds:.1f} s"]
    for name, value in outcome.final.items():
        meaning = metric_meaning(config.task, name)
        lines.append(f"  {name:<9} {value:.4g}" + (f"   ({meaning})" if meaning else ""))
    if outcome.run_id:
        lines.append(f"  run       {outcome.run_id}   (hilctl runs show {outcome.run_id})")
    if outcome.operations is not None:
        lines.append(f"  {per_step_line(outcome.operations, outcome.steps)}")
    lines += [f"  {line}" for line in outcome.backend_lines]
    lines += [f"  drift     tile {d['tile']}: largest {d['max']:.3g}, mean {d['mean']:.3g} "
              f"(weight units) since the checkpoint; {d['reprogrammed']} cell(s) written back"
              for d in outcome.drift]
    return lines


def compare_settings(args: argparse.Namespace) -> list[Setting]:
    """The settings ``compare`` runs: the paper's and the realistic default when the command
    line names no setting of its own (no ``--task``, ``--device``, ``--no-variation``,
    ``--config``, other backend, or ``--set`` outside ``task.*`` and ``run.*``), else just the
    one asked for."""
    sets = parse_sets(args.set, SECTIONS)
    own = (args.task is not None or args.device is not None or args.no_variation
           or args.config is not None or args.backend != "sim"
           or any(values for section, values in sets.items() if section not in ("task", "run")))
    if own:
        return [Setting("", "", args)]
    paper = copy.copy(args)
    paper.no_variation = True
    paper.set = [*args.set, *PAPER_SETS]
    return [
        Setting("paper", "asymmetric linear device (soft bounds, tau 0.5), no variation, "
                "perfect periphery", paper),
        Setting("realistic", "aihwkit's default soft-bounds device: variations, noisy "
                "periphery", args),
    ]


def run_compare(args: argparse.Namespace) -> int:
    """``hilctl compare``."""
    names = [a.strip() for a in args.algorithms.split(",") if a.strip()]
    for name in names:
        if name not in ALGORITHMS:
            raise ConfigError(f"--algorithms: unknown algorithm {name!r}; allowed: "
                              f"{', '.join(ALGORITHMS)}")
    requested = parse_sets(args.set, SECTIONS)["algorithm"]
    for key in requested:
        if not any(key in ALGORITHMS[name].model_fields for name in names):
            raise ConfigError(f"algorithm.{key}: no compared algorithm ({', '.join(names)}) has "
                              "this key")
    backend, options = backend_from_args(args)
    first_seed = args.seed if args.seed is not None else 0
    settings = compare_settings(args)
    plans = [(setting, {(name, s): _config(setting.args, backend, name, first_seed + s,
                                           shared_algorithm_keys=True)
                        for name in names for s in range(args.seeds)})
             for setting in settings]  # every setting resolved before the first run
    store = RunStore(args.store)
    results: list[tuple[Setting, list[dict[str, Any]], dict[tuple[str, int], TrainOutcome]]] = []
    diverged: list[str] = []
    try:
        for setting, configs in plans:
            outcomes: dict[tuple[str, int], TrainOutcome] = {}
            for (name, s), config in configs.items():
                label = f"{setting.name + ': ' if setting.name else ''}{name} seed {first_seed + s}"
                try:
                    outcomes[(name, s)] = _train(config, args, store, label, "compare", backend,
                                                 options)
                except DivergedRun as exc:  # the others still run: the table says which diverged
                    outcomes[(name, s)] = exc.outcome
                    diverged.append(f"{label}: {exc}")
            results.append((setting, comparison_table(names, args.seeds, outcomes), outcomes))
    except KeyboardInterrupt as exc:
        run_id = getattr(exc, "run_id", None)
        current = f"the current one ({run_id}) as interrupted; continue it with 'hilctl runs " \
            f"resume {run_id}'" if run_id else "the current one as interrupted"
        say(f"hilctl: interrupted ({exc or 'SIGINT'}); finished runs are recorded, {current}")
        return exit_code(exc)
    code = EXIT_DIVERGED if diverged else EXIT_OK
    sample = next(iter(plans[0][1].values()))
    metric = sample.task.final_metric
    findings = [finding(setting, table, metric, sample.task.higher_is_better)
                for setting, table, _ in results] if len(results) > 1 else []
    findings = [line for line in findings if line]
    if args.json:
        if len(results) == 1:
            _, table, outcomes = results[0]
            print_json({"rows": table, "runs": [o.as_json() for o in outcomes.values()]})
        else:
            print_json({"settings": [{"name": setting.name, "title": setting.title, "rows": table,
                                      "runs": [o.as_json() for o in outcomes.values()]}
                                     for setting, table, outcomes in results],
                        "findings": findings})
        return code
    for (setting, table, _), (_, configs) in zip(results, plans, strict=True):
        config = next(iter(configs.values()))
        device = "chip" if backend.physical else config.device.model
        if setting.name:
            print(f"{setting.name} setting: {setting.title}")
        print(f"{config.task.name} on {backend.label(options)}, device {device}, "
              f"{args.seeds} seed(s) from {first_seed}")
        for line in format_table(table):
            print(line)
        if len(results) > 1:
            print()
    print(textwrap.fill(f"{metric}: {metric_meaning(sample.task, metric)}.", 90))
    for line in findings:
        print(line)
    for line in diverged:
        say(f"hilctl: {line}")
    return code


_NAMES = {"digital-sgd": "digital SGD", "analog-sgd": "Analog SGD", "tiki-taka": "Tiki-Taka"}


def finding(setting: Setting, rows: list[dict[str, Any]], metric: str,
            higher_is_better: bool) -> str:
    """One plain line on what a setting's table shows: which algorithms reach digital SGD
    (within a factor 2 of its error, or 0.01 of its accuracy) and which do not, with the
    numbers; empty without a completed digital SGD row to measure against."""
    by_name = {row["algorithm"]: row for row in rows if "diverged" not in row}
    digital = by_name.get("digital-sgd", {}).get(metric)
    if digital is None or not math.isfinite(digital):
        return ""

    def reaches(value: float) -> bool:
        return value >= digital - 0.01 if higher_is_better else value <= 2 * digital

    reached: list[str] = []
    missed: list[str] = []
    for row in rows:
        name = row["algorithm"]
        if name == "digital-sgd":
            continue
        shown = _NAMES.get(name, name)
        if "diverged" in row:
            missed.append(f"{shown} (diverged)")
        else:
            (reached if reaches(row[metric]) else missed).append(f"{shown} ({row[metric]:.2g})")
    target = f"digital SGD ({metric} {digital:.2g})"
    if reached:
        text = f"{' and '.join(reached)} reach{'es' if len(reached) == 1 else ''} {target}"
        if missed:
            text += f"; {' and '.join(missed)} {'does' if len(missed) == 1 else 'do'} not"
    else:
        text = (f"{'neither ' if len(missed) == 2 else ''}{' nor '.join(missed)} "
                f"reach{'es' if len(missed) <= 2 else ''} {target}" if len(missed) <= 2
                else f"none of {', '.join(missed)} reaches {target}")
        if len(missed) == 1:
            text = f"{missed[0]} does not reach {target}"
    return f"{setting.name.capitalize()} setting: {text}."


def comparison_table(names: list[str], seeds: int,
                     outcomes: dict[tuple[str, int], TrainOutcome]) -> list[dict[str, Any]]:
    """One row per algorithm: mean and spread of each final metric over the seeds."""
    completed = [o for o in outcomes.values() if o.status == "completed"]
    metrics = list((completed or list(outcomes.values()))[0].final)
    rows = []
    for name in names:
        runs = [outcomes[(name, s)] for s in range(seeds)]
        row: dict[str, Any] = {"algorithm": name}
        if any(r.status != "completed" for r in runs):
            row["diverged"] = sum(r.status != "completed" for r in runs)
        for metric in metrics:
            values = [r.final.get(metric, math.nan) for r in runs]
            row[metric] = sum(values) / len(values)
            if seeds > 1:
                mean = row[metric]
                row[f"{metric}_std"] = math.sqrt(sum((v - mean) ** 2 for v in values)
                                                 / (len(values) - 1))
        row["seconds"] = sum(r.seconds for r in runs) / len(runs)
        row["run_ids"] = [r.run_id for r in runs]
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    metrics = [k for k in rows[0] if k not in ("algorithm", "seconds", "run_ids", "diverged")
               and not k.endswith("_std")]
    header = ["algorithm", *metrics, "seconds"]
    body = []
    for row in rows:
        cells = [row["algorithm"] + (f" ({row['diverged']} diverged)" if "diverged" in row else "")]
        for m in metrics:
            text = f"{row[m]:.4g}"
            if f"{m}_std" in row:
                text += f" ± {row[f'{m}_std']:.2g}"
            cells.append(text)
        cells.append(f"{row['seconds']:.1f}")
        body.append(cells)
    widths = [max(len(str(r[i])) for r in [header, *body]) for i in range(len(header))]
    return ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True))
            for r in [header, *body]]

