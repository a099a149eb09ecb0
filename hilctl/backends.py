"""Backend registry: open a tile by backend name without importing any backend here.

Backends register a factory ``open_tile(config: TileConfig, **options) -> Tile`` under the
entry-point group ``hilctl.backends`` (see ``pyproject.toml``). The built-in names below are a
fallback for running from a source tree that was never installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from hilctl.config import TileConfig
from hilctl.errors import BackendError
from hilctl.tile import Tile

ENTRY_POINT_GROUP = "hilctl.backends"
_BUILTIN = {"sim": "sim.backend:open_tile", "lab": "drivers.backend:open_tile"}

TileFactory = Callable[..., Tile]


def _targets() -> dict[str, str]:
    found = dict(_BUILTIN)
    found.update({ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)})
    return found


def available_backends() -> list[str]:
    """Names of every registered backend, sorted."""
    return sorted(_targets())


def backend_factory(name: str) -> TileFactory:
    """The tile factory registered as ``name``; ``BackendError`` lists the names if unknown."""
    targets = _targets()
    if name not in targets:
        raise BackendError(
            f"--backend: unknown backend {name!r}; allowed: {', '.join(sorted(targets))}"
        )
    module_name, _, attribute = targets[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendError(f"backend {name!r} could not be loaded: {exc}") from exc
    factory: TileFactory = getattr(module, attribute)
    return factory


def open_tile(backend: str, config: TileConfig, **options: Any) -> Tile:
    """Open one tile of ``config`` on the backend called ``backend``."""
    return backend_factory(backend)(config, **options)
