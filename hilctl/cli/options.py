"""Options shared by the commands that open tiles: the backend and its own options, the device,
``--set`` overrides, and the tile's shape and seed."""

from __future__ import annotations

import argparse
import math
import textwrap
from typing import Any

from hilctl.backends import Backend, BackendOption, available_backends, get_backend
from hilctl.cli.parsing import UsageError, nonnegative_int, positive_int
from hilctl.config import (
    DEVICE_CONFIGS,
    PeripheryConfig,
    PulsedDeviceConfig,
    TileConfig,
    UpdateConfig,
    no_variation,
    parse_assignments,
    tile_config,
)
from hilctl.errors import BackendError, ConfigError
from hilctl.train_config import TILE_SECTIONS, load_tile_toml

#: Sections that ``--set SECTION.KEY=VALUE`` accepts where one tile is configured.
SET_SECTIONS: tuple[str, ...] = TILE_SECTIONS


# ---------------------------------------------------------------------------------------------
# The backend and the options each backend adds.
# ---------------------------------------------------------------------------------------------


def _loadable_backends() -> list[Backend]:
    """Every registered backend that loads (one that does not says why when chosen)."""
    backends = []
    for name in available_backends():
        try:
            backends.append(get_backend(name))
        except BackendError:
            continue
    return backends


def add_backend_arguments(parser: argparse.ArgumentParser, *, one_tile: bool = False,
                          group: Any = None) -> None:
    """Add ``--backend`` and the options every registered backend declares (each in a group
    titled by its backend); with ``one_tile``, also the options for a single tile
    (:attr:`BackendOption.one_tile`)."""
    target = group if group is not None else parser
    target.add_argument("--backend", default="sim", metavar="NAME",
                        help=f"backend to open the tiles on (registered: "
                        f"{', '.join(available_backends())}; default: %(default)s)")
    declared: list[BackendOption] = []
    for backend in _loadable_backends():
        options = [o for o in backend.options if one_tile or not o.one_tile]
        if not options:
            continue
        title = f"{backend.title} (--backend {backend.name})" if backend.title else \
            f"--backend {backend.name}"
        backend_group = parser.add_argument_group(title)
        for option in options:
            if any(o.name == option.name for o in declared):
                continue  # two backends share an option: one flag serves both
            backend_group.add_argument(option.flag, dest=option.name, metavar=option.metavar,
                                       help=option.help)
            declared.append(option)
    parser.set_defaults(backend_options_declared=tuple(declared))


def backend_from_args(args: argparse.Namespace) -> tuple[Backend, dict[str, Any]]:
    """The backend ``--backend`` names and its resolved options, checked before anything opens.

    An option of another backend is refused with that option's reason; the backend's own check
    (a station file that is missing or invalid, ...) raises :class:`ConfigError` naming the
    option (exit 2 either way).
    """
    backend = get_backend(args.backend)
    own = {option.name for option in backend.options}
    declared: tuple[BackendOption, ...] = getattr(args, "backend_options_declared", ())
    for option in declared:
        if option.name not in own and getattr(args, option.name, None) is not None:
            raise UsageError(f"{option.flag}: {option.misuse}; got --backend {backend.name}")
    given = {option.name: getattr(args, option.name, None) for option in backend.options}
    return backend, backend.resolve_options(given)


#: ``[update]`` keys that choose how the emulator computes, with no meaning on a chip.
EMULATOR_UPDATE_KEYS = ("engine", "threads")


def refuse_emulator_settings(backend: Backend, given: list[str]) -> None:
    """On a physical backend, refuse the device, periphery and emulator-engine settings named in
    ``given`` (``--device``, ``device.dw_min``, ``update.engine``, ``[device] of run.toml``,
    ...): they describe an emulator, and the chip has its own."""
    if backend.physical and given:
        source = f"{backend.chip_source} describes the chip" if backend.chip_source else \
            "the chip is real"
        raise UsageError(f"{given[0]}: on --backend {backend.name} {source}; device, "
                         "periphery and engine settings describe an emulated tile (--backend "
                         "sim) and do not apply")


def emulator_settings_given(args: argparse.Namespace, sections: dict[str, dict[str, Any]],
                            file_values: dict[str, Any] | None = None) -> list[str]:
    """Every device, periphery or emulator-engine setting the command line (and a config
    file) gave."""
    given = ["--device"] if getattr(args, "device", None) is not None else []
    given += ["--no-variation"] if getattr(args, "no_variation", False) else []
    given += [f"{section}.{key}" for section in ("device", "periphery")
              for key in sections.get(section, {})]
    given += [f"[{section}] of {args.config}" for section in ("device", "periphery")
              if section in (file_values or {})]
    given += [f"update.{key}" for key in EMULATOR_UPDATE_KEYS if key in sections.get("update", {})]
    filed_update = (file_values or {}).get("update", {})
    given += [f"update.{key} in {args.config}" for key in EMULATOR_UPDATE_KEYS
              if isinstance(filed_update, dict) and key in filed_update]
    return given


# ---------------------------------------------------------------------------------------------
# One tile: device, --set, shape and seed.
# ---------------------------------------------------------------------------------------------


def _keys(model: type[Any], exclude: frozenset[str] = frozenset()) -> list[str]:
    return [k for k in model.model_fields if k != "model" and k not in exclude]


def set_keys_help(width: int = 79) -> str:
    """The keys ``--set`` accepts, per section and device model, for a parser's epilog."""
    common = set(_keys(PulsedDeviceConfig))
    groups = [("device.*, every model", sorted(common))]
    for name, model in DEVICE_CONFIGS.items():
        extra = sorted(set(_keys(model)) - common)
        if extra:
            groups.append((f"device.*, {name} only", extra))
    groups.append(("update.*", sorted(_keys(UpdateConfig))))
    groups.append(("periphery.*", sorted(_keys(PeripheryConfig))))
    lines = ["--set keys (SECTION.KEY=VALUE; VALUE is JSON where it parses, e.g. 0.01, true,",
             "[1, 0.5]; anything else is a string):"]
    for label, keys in groups:
        lines.append(textwrap.fill(", ".join(keys), width, initial_indent=f"  {label}: ",
                                   subsequent_indent="      ", break_on_hyphens=False))
    return "\n".join(lines)


def add_tile_arguments(parser: argparse.ArgumentParser, *, rows: int = 32, cols: int = 32,
                       config_file: bool = False) -> None:
    """Add the options that choose a backend and configure one tile on it.

    ``--rows``/``--cols`` default to None: the backend's own tile shape where it has one (a
    bench's tile region), else ``rows``/``cols`` (see :func:`resolve_tile_shape`). With
    ``config_file``, also ``--config FILE.toml`` (:func:`hilctl.train_config.load_tile_toml`),
    and ``--seed`` defaults to None (the file's seed, else 0; see :func:`tile_config_from_args`).
    """
    group = parser.add_argument_group("tile")
    add_backend_arguments(parser, one_tile=True, group=group)
    group.add_argument(
        "--device",
        choices=list(DEVICE_CONFIGS),
        help="device model (response function) of every cell (default: soft-bounds)",
    )
    group.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value; SECTION is device, update or periphery; repeatable "
        "(keys listed below)",
    )
    group.add_argument(
        "--no-variation",
        action="store_true",
        help="switch off every device-to-device and cycle-to-cycle variation of the device "
        "(applied before --set, which may turn single ones back on)",
    )
    if config_file:
        group.add_argument(
            "--config",
            metavar="FILE.toml",
            help="read [device], [update], [periphery] and seed from a TOML file first, the "
            "sections 'hilctl train --config' reads (a train file's [task], [algorithm], [tile] "
            "and [run] are ignored); --device, --no-variation, --set and --seed override it",
        )
    note = ", or the backend's own tile size where it has one (a bench's tile region)"
    group.add_argument("--rows", type=positive_int, default=None,
                       help=f"rows (outputs) of the tile (default: {rows}{note})")
    group.add_argument("--cols", type=positive_int, default=None,
                       help=f"columns (inputs) of the tile (default: {cols}{note})")
    group.add_argument("--seed", type=nonnegative_int, default=None if config_file else 0,
                       help="seed of every random draw of the backend (default: 0"
                       + (", or the config file's seed)" if config_file else ")"))
    parser.set_defaults(default_shape=(rows, cols))


def resolve_tile_shape(args: argparse.Namespace, backend: Backend, options: dict[str, Any]) -> None:
    """Fill in ``args.rows`` / ``args.cols`` left at None by :func:`add_tile_arguments`: the
    backend's tile shape where it has one, else the command's defaults."""
    if args.rows is not None and args.cols is not None:
        return
    rows, cols = backend.tile_shape(options) or args.default_shape
    args.rows = rows if args.rows is None else args.rows
    args.cols = cols if args.cols is None else args.cols


def _all_finite(value: Any) -> bool:
    """False if ``value`` is (or holds) a NaN or infinite float; ``--set`` parses JSON, which
    reads ``NaN``, ``Infinity`` and ``1e999`` as such."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(_all_finite(v) for v in value)
    return True


def parse_sets(items: list[str], sections: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The ``--set SECTION.KEY=VALUE`` items by section; a non-finite number is refused naming
    its key."""
    parsed = parse_assignments(items, sections)
    for section, values in parsed.items():
        for key, value in values.items():
            if not _all_finite(value):
                raise ConfigError(f"{section}.{key}: must be finite; got {value!r}")
    return parsed


def tile_config_from_args(args: argparse.Namespace, backend: Backend) -> TileConfig:
    """The validated tile config of the options added by :func:`add_tile_arguments`; device
    and periphery settings (of the command line or the ``--config`` file) are refused on a
    physical ``backend``.

    Precedence as in ``hilctl train``: ``--set`` over ``--no-variation`` over the file, and the
    model from ``--device``, else the file's ``[device] model``, else soft-bounds; ``--seed``
    over the file's ``seed`` over 0.

    Raises :class:`hilctl.errors.ConfigError` (a ``ValueError``) naming the field and what is
    allowed.
    """
    sections = parse_sets(args.set, SET_SECTIONS)
    path = getattr(args, "config", None)
    file_values = load_tile_toml(path) if path else {}
    refuse_emulator_settings(backend, emulator_settings_given(args, sections, file_values))
    if "model" in sections["device"]:
        raise ConfigError(
            "device.model: choose the model with --device, not --set; allowed: "
            + ", ".join(DEVICE_CONFIGS)
        )
    filed = {section: dict(file_values.get(section, {})) for section in SET_SECTIONS}
    device = args.device or str(filed["device"].pop("model", "soft-bounds"))
    filed["device"].pop("model", None)  # --device chose the model over the file's
    variation = no_variation(device) if args.no_variation and device in DEVICE_CONFIGS else {}
    return tile_config(  # an unknown model is reported here, naming device.model
        rows=args.rows,
        cols=args.cols,
        device=device,
        device_values={**filed["device"], **variation, **sections["device"]},
        update_values={**filed["update"], **sections["update"]},
        periphery_values={**filed["periphery"], **sections["periphery"]},
        seed=args.seed if args.seed is not None else file_values.get("seed", 0),
    )
