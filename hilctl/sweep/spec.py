"""A sweep file read, checked and expanded into its points, before any training starts.

A sweep file is a ``hilctl train --config`` file (``[task]``, ``[algorithm]``, ``[device]``,
... and a top-level ``seed``) with a ``[sweep]`` table::

    [task]
    name = "least-squares"
    steps = 2000

    [sweep]
    seeds = [0, 1, 2]                           # default: the file's seed, else 0
    algorithms = ["analog-sgd", "tiki-taka"]    # default: the file's algorithm
    [sweep.grid]                                # the Cartesian product of these lists
    "task.lr" = [0.01, 0.05, 0.1]
    [[sweep.zip]]                               # lists that move together (equal lengths)
    "device.w_max" = [0.5, 0.6]
    "device.w_min" = [-0.5, -0.6]

A point is one training: a seed, an algorithm and one value of every swept key, resolved as
``hilctl train --config FILE --algorithm A --seed S --set KEY=VALUE ...`` resolves it, so a
point trained by hand gives the same figures. Keys of ``[algorithm]`` apply to each algorithm
that has them, as in ``hilctl compare``. Every problem is one :class:`ConfigError` naming the
field and what is allowed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hilctl.algorithms import ALGORITHMS
from hilctl.errors import ConfigError
from hilctl.tasks import TASKS
from hilctl.train_config import SECTIONS, TrainConfig, load_toml, resolve_train_config

#: A sweep of more points than this runs only when confirmed (``hilctl sweep --yes``).
POINT_LIMIT = 1000
#: The keys of a ``[sweep]`` table.
SWEEP_KEYS = ("seeds", "algorithms", "grid", "zip")
#: Keys that are set in their own way, not swept in a grid, and why.
_NOT_SWEPT = {
    "algorithm.name": "list the algorithms in sweep.algorithms",
    "task.name": "a sweep trains one task; give each task a sweep file of its own",
}

Params = tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Point:
    """One training of a sweep: its swept values (``params``, ``(section.key, value)`` in the
    file's order), seed and algorithm, its resolved config and ``key``, a digest of that
    config that names the point in the run store."""

    params: Params
    seed: int
    algorithm: str
    config: TrainConfig
    key: str

    def label(self) -> str:
        """The point in a few words: ``task.lr=0.05 analog-sgd seed 1``."""
        return _label(self.params, self.algorithm, self.seed)


@dataclass(frozen=True)
class Sweep:
    """A checked sweep file and its points (seeds vary fastest, then algorithms, then the
    swept values).

    ``axes`` are the swept dimensions: each grid key alone, each zip group's keys together;
    ``sweep_id`` is a digest of the points, the same whenever the same points are swept.
    """

    source: str
    sweep_id: str
    axes: tuple[tuple[str, ...], ...]
    seeds: tuple[int, ...]
    algorithms: tuple[str, ...]
    points: tuple[Point, ...]
    metric: str
    higher_is_better: bool

    @property
    def keys(self) -> tuple[str, ...]:
        """Every swept ``section.key``, in the file's order."""
        return tuple(key for axis in self.axes for key in axis)


def _label(params: Params, algorithm: str, seed: int) -> str:
    values = " ".join(f"{key}={value_text(value)}" for key, value in params)
    return f"{values} {algorithm} seed {seed}".strip()


def value_text(value: Any) -> str:
    """A swept value as a person reads it: strings bare, numbers and lists as in TOML."""
    return value if isinstance(value, str) else json.dumps(value)


def load_sweep(path: str | Path, *, confirmed: bool = False) -> Sweep:
    """Read, check and expand the sweep file ``path``. More than :data:`POINT_LIMIT` points are
    refused unless ``confirmed``."""
    where = f"sweep file {path}"
    data = load_toml(path, what="sweep file", extra=("sweep",))
    table = data.pop("sweep", None)
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: no [sweep] table; add one, e.g. [sweep] seeds = [0, 1] and "
                          '[sweep.grid] "task.lr" = [0.01, 0.05]')
    extra = sorted(set(table) - set(SWEEP_KEYS))
    if extra:
        raise ConfigError(f"sweep.{extra[0]}: unknown key; allowed: {', '.join(SWEEP_KEYS)}")
    seeds = _seeds(table, data)
    algorithms = _algorithms(table, data)
    grid = _grid(table.get("grid", {}))
    zips = _zips(table.get("zip", []))
    axes = [(key,) for key in grid] + [tuple(group) for group in zips]
    keys = [key for axis in axes for key in axis]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ConfigError(f"sweep: {repeated[0]!r} is swept twice (in sweep.grid or sweep.zip); "
                          "sweep each key once")
    _check_algorithm_keys(keys, data.get("algorithm", {}), algorithms)
    # each axis as its list of values, a value being the (key, value) pairs it sets
    steps: list[list[Params]] = [[((key, v),) for v in grid[key]] for key in grid]
    steps += [[tuple(zip(group, column, strict=True)) for column in zip(*group.values(), strict=True)]
              for group in zips]
    count = len(seeds) * len(algorithms) * math.prod(len(axis) for axis in steps)
    if count > POINT_LIMIT and not confirmed:
        raise ConfigError(f"{where}: {count} points, more than the limit of {POINT_LIMIT}; "
                          "pass --yes to run them all")
    points = [_point(where, data, sum(combination, ()), algorithm, seed)
              for combination in itertools.product(*steps)
              for algorithm in algorithms for seed in seeds]
    task = TASKS[points[0].config.task.name]
    return Sweep(str(path), "sw-" + _digest([p.key for p in points], 10), tuple(axes),
                 tuple(seeds), tuple(algorithms), tuple(points), task.final_metric,
                 task.higher_is_better)


def _seeds(table: Mapping[str, Any], data: dict[str, Any]) -> list[int]:
    if "seeds" not in table:
        seed = data.pop("seed", 0)
        if not _is_seed(seed):
            raise ConfigError(f"seed: an integer >= 0; got {seed!r}")
        return [seed]
    if "seed" in data:
        raise ConfigError("seed: give the seeds as sweep.seeds only, not also as a top-level seed")
    seeds = table["seeds"]
    if not isinstance(seeds, list) or not seeds or not all(_is_seed(s) for s in seeds):
        raise ConfigError(f"sweep.seeds: a non-empty list of integers >= 0; got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"sweep.seeds: each seed once; got {seeds!r}")
    return list(seeds)


def _is_seed(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _algorithms(table: Mapping[str, Any], data: dict[str, Any]) -> list[str]:
    section = data.get("algorithm", {})
    if "algorithms" not in table:
        return [str(section.pop("name", "analog-sgd"))]
    if "name" in section:
        raise ConfigError("algorithm.name: give the algorithms as sweep.algorithms only, "
                          "not also in [algorithm]")
    names = table["algorithms"]
    if not isinstance(names, list) or not names:
        raise ConfigError(f"sweep.algorithms: a non-empty list, from {', '.join(ALGORITHMS)}; "
                          f"got {names!r}")
    for name in names:
        if name not in ALGORITHMS:
            raise ConfigError(f"sweep.algorithms: unknown algorithm {name!r}; allowed: "
                              f"{', '.join(ALGORITHMS)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep.algorithms: each algorithm once; got {names!r}")
    return list(names)


def _swept_list(where: str, key: Any, values: Any) -> list[Any]:
    """``values`` of the swept ``key`` if the key is ``section.key`` and the values a
    non-empty list."""
    if key in _NOT_SWEPT:
        raise ConfigError(f"{where} {key!r}: not swept in a grid; {_NOT_SWEPT[key]}")
    if key == "seed":
        raise ConfigError(f"{where} 'seed': give the seeds as sweep.seeds")
    section, dot, name = str(key).partition(".")
    if not dot or not name or section not in SECTIONS:
        raise ConfigError(f"{where} {key!r}: not SECTION.KEY; SECTION is one of "
                          f"{', '.join(SECTIONS)}")
    if not isinstance(values, list):
        raise ConfigError(f"{where} {key!r}: a list of values; got {values!r}")
    if not values:
        raise ConfigError(f"{where} {key!r}: empty list; give at least one value")
    return values


def _grid(grid: Any) -> dict[str, list[Any]]:
    if not isinstance(grid, dict):
        raise ConfigError(f'sweep.grid: a table of "section.key" = [values]; got {grid!r}')
    return {key: _swept_list("sweep.grid", key, values) for key, values in grid.items()}


def _zips(zips: Any) -> list[dict[str, list[Any]]]:
    if not isinstance(zips, list) or not all(isinstance(z, dict) for z in zips):
        raise ConfigError('sweep.zip: tables [[sweep.zip]] of "section.key" = [values]; '
                          f"got {zips!r}")
    groups = []
    for number, group in enumerate(zips, 1):
        where = f"sweep.zip #{number}"
        if not group:
            raise ConfigError(f"{where}: empty; give two or more keys whose lists move together")
        lists = {key: _swept_list(where, key, values) for key, values in group.items()}
        lengths = {key: len(values) for key, values in lists.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{key!r} has {n}" for key, n in lengths.items())
            raise ConfigError(f"{where}: lists of unequal length ({shown}); give them the same "
                              "length")
        groups.append(lists)
    return groups


def _check_algorithm_keys(keys: Sequence[str], section: Mapping[str, Any],
                          algorithms: Sequence[str]) -> None:
    """Every ``[algorithm]`` key must belong to one of the algorithms; every swept one to all."""
    for key in section:
        if not any(_accepts(name, key) for name in algorithms):
            known = sorted({k for name in algorithms for k in ALGORITHMS[name].model_fields} - {"name"})
            raise ConfigError(f"algorithm.{key}: no algorithm of the sweep "
                              f"({', '.join(algorithms)}) has this key; they have: "
                              f"{', '.join(known)}")
    for swept in keys:
        section_name, _, key = swept.partition(".")
        lacking = [name for name in algorithms if not _accepts(name, key)]
        if section_name == "algorithm" and lacking:
            keys_of = ", ".join(k for k in ALGORITHMS[lacking[0]].model_fields if k != "name")
            raise ConfigError(f"sweep {swept!r}: {lacking[0]} has no key {key!r} (its keys: "
                              f"{keys_of}); sweep it with only the algorithms that have it")


def _accepts(algorithm: str, key: str) -> bool:
    fields = ALGORITHMS[algorithm].model_fields
    return key in fields or any(f.alias == key for f in fields.values())


def _base(data: Mapping[str, Any], algorithm: str) -> dict[str, Any]:
    """The file's sections for one algorithm: its ``[algorithm]`` keys that it has."""
    section = {k: v for k, v in data.get("algorithm", {}).items() if _accepts(algorithm, k)}
    return {**data, "algorithm": section}


def _point(where: str, data: Mapping[str, Any], params: Params, algorithm: str,
           seed: int) -> Point:
    overrides: dict[str, dict[str, Any]] = {}
    for swept, value in params:
        section, _, key = swept.partition(".")
        overrides.setdefault(section, {})[key] = value
    try:
        config = resolve_train_config(file_values=_base(data, algorithm), algorithm=algorithm,
                                      seed=seed, overrides=overrides)
    except ConfigError as exc:
        raise ConfigError(f"{where}, point {_label(params, algorithm, seed)}: {exc}") from None
    recorded = json.dumps(config.model_dump(mode="json", by_alias=True), sort_keys=True)
    return Point(params, seed, algorithm, config, _digest([recorded], 16))


def _digest(parts: Sequence[str], length: int) -> str:
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:length]
