"""Validated configuration of a training run: task, algorithm and the tiles they run on.

A run is resolved from, in order of precedence (later wins): the defaults, a TOML file
(sections ``[task]``, ``[algorithm]``, ``[device]``, ``[update]``, ``[periphery]``, ``[tile]``,
``[run]`` and a top-level ``seed``), the command-line choices (``--task``, ``--algorithm``, ``--device``,
``--seed``) and ``--set section.key=value`` overrides. Every section forbids unknown keys, and
an error names ``section.key`` and the keys that are allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from hilctl.algorithms import ALGORITHMS, AlgorithmConfig, AnalogSgdConfig
from hilctl.config import (
    DEVICE_CONFIGS,
    DeviceConfig,
    PeripheryConfig,
    SoftBoundsConfig,
    UpdateConfig,
    build_section,
    device_config,
    read_toml,
    validation_message,
)
from hilctl.errors import ConfigError
from hilctl.tasks import TASKS, LeastSquaresConfig, TaskConfig
from protocols.schema import StrictModel


class TileSection(StrictModel):
    """Options of every tile a run opens, and how a layer's weights map onto tiles.

    The mapping follows aihwkit 1.1.0's ``MappingParameter`` (names and defaults): a layer with
    more inputs than ``max_input_size`` or more outputs than ``max_output_size`` is split over
    several tiles (0: never split), and with ``digital_bias`` the biases are trained in floating
    point instead of as a last column of the tile.
    """

    reference: Literal["none", "symmetric-point"] = "none"
    max_input_size: int = Field(512, ge=0, le=65_536)
    max_output_size: int = Field(512, ge=0, le=65_536)
    digital_bias: bool = True


class RunSection(StrictModel):
    """How a run keeps itself resumable."""

    checkpoint_seconds: float = Field(60.0, ge=0.01, le=86_400, description="wall time between "
                                      "checkpoints (s); also at every epoch end and on a stop "
                                      "signal")


class TrainConfig(StrictModel):
    """One training run, resolved and validated."""

    task: TaskConfig = Field(default_factory=LeastSquaresConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AnalogSgdConfig)
    device: DeviceConfig = Field(default_factory=SoftBoundsConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    periphery: PeripheryConfig = Field(default_factory=PeripheryConfig)
    tile: TileSection = Field(default_factory=TileSection)
    run: RunSection = Field(default_factory=RunSection)
    seed: int = Field(0, ge=0, le=2**63 - 1)

    def summary(self, physical: bool = False) -> str:
        """``task / algorithm / device`` in a few words, for tables and run lists; on a chip's
        own cells (``physical``) the device is the chip, whatever the config's default says."""
        device = "chip" if physical else self.device.model
        return f"{self.task.name} / {self.algorithm.name} / {device}"


SECTIONS = ("task", "algorithm", "device", "update", "periphery", "tile", "run")


def _choose(kind: str, name: str, table: Mapping[str, Any]) -> str:
    if name not in table:
        raise ConfigError(f"{kind}: unknown {kind} {name!r}; allowed: {', '.join(table)}")
    return name


def load_toml(path: str | Path, *, what: str = "--config",
              extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """The sections of a TOML config file (``what`` names it in messages; ``extra``: sections
    a caller adds, such as a sweep's); ``ConfigError`` names the file if it cannot be read or
    holds an unknown section."""
    data = read_toml(path, what)
    allowed = [*SECTIONS, "seed", *extra]
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{what} {path}: unknown section {unknown[0]!r}; allowed: "
                          f"{', '.join(allowed[:-1])} and {allowed[-1]}")
    for section in SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"{what} {path}: [{section}] must be a table of keys, "
                              f"got {data[section]!r}")
    return data


#: The sections of a config file that configure one tile (with the top-level ``seed``, what
#: ``hilctl characterize --config`` reads); the other sections only a training run uses.
TILE_SECTIONS = ("device", "update", "periphery")


def load_tile_toml(path: str | Path) -> dict[str, Any]:
    """The ``[device]``, ``[update]`` and ``[periphery]`` sections and the ``seed`` of a config
    file, for a command that opens one tile.

    The file is checked as :func:`load_toml` checks it, so a file written for ``hilctl train``
    (or one holding only a ``[device]`` section) is accepted as is; its sections that only a
    training run uses (``[task]``, ``[algorithm]``, ``[tile]``, ``[run]``) are left out
    unvalidated. ``ConfigError`` names the file for an unknown section or a bad seed.
    """
    data = load_toml(path)
    seed = data.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"--config {path}: seed must be an integer >= 0; got {seed!r}")
    return {key: value for key, value in data.items() if key in (*TILE_SECTIONS, "seed")}


def resolve_train_config(
    *,
    file_values: Mapping[str, Any] | None = None,
    task: str | None = None,
    algorithm: str | None = None,
    device: str | None = None,
    seed: int | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> TrainConfig:
    """Merge defaults, a config file, command-line choices and ``--set`` overrides, validated."""
    base = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (file_values or {}).items()}
    sections: dict[str, dict[str, Any]] = {s: dict(base.get(s, {})) for s in SECTIONS}
    overrides = overrides or {}

    def name_of(section: str, key: str, flag: str | None, default: str) -> str:
        """``--set`` wins over the flag, the flag over the file, the file over the default."""
        filed = sections[section].pop(key, default)
        return str(overrides.get(section, {}).get(key, flag or filed))

    task_name = _choose("task", name_of("task", "name", task, "least-squares"), TASKS)
    algo_name = _choose("algorithm", name_of("algorithm", "name", algorithm, "analog-sgd"),
                        ALGORITHMS)
    model = _choose("device.model", name_of("device", "model", device, "soft-bounds"),
                    DEVICE_CONFIGS)
    for section, values in overrides.items():
        sections[section].update(values)
    for section, key in (("task", "name"), ("algorithm", "name"), ("device", "model")):
        sections[section].pop(key, None)
    parts = {
        "task": build_section("task", TASKS[task_name], {**sections["task"], "name": task_name}),
        "algorithm": build_section("algorithm", ALGORITHMS[algo_name],
                                   {**sections["algorithm"], "name": algo_name}),
        "device": device_config(model, **sections["device"]),
        "update": build_section("update", UpdateConfig, sections["update"]),
        "periphery": build_section("periphery", PeripheryConfig, sections["periphery"]),
        "tile": build_section("tile", TileSection, sections["tile"]),
        "run": build_section("run", RunSection, sections["run"]),
    }
    chosen_seed = seed if seed is not None else base.get("seed", 0)
    try:
        return TrainConfig.model_validate({"seed": chosen_seed, **parts})
    except ValidationError as exc:
        raise ConfigError(validation_message("", exc)) from None


def device_bound(config: TrainConfig) -> float:
    """The smaller of the mean bounds ``w_max`` and ``-w_min``: the ``tau`` of the device."""
    return min(config.device.w_max, -config.device.w_min)
