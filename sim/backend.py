"""The emulator as hilctl backend ``sim`` (entry point ``hilctl.backends``)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from hilctl.backends import Backend
from hilctl.config import TileConfig
from hilctl.errors import BackendError
from sim.tile import EmulatedTile

_DTYPES: dict[str, type[np.floating]] = {"float32": np.float32, "float64": np.float64}


class SimBackend(Backend):
    """Tiles of emulated devices: the run's device, update and periphery settings apply.

    ``open_tile`` takes two options from code (none from the command line): ``dtype``
    (``float32``, as aihwkit, or ``float64``) and ``closed_form`` (see :class:`EmulatedTile`).
    """

    name: ClassVar[str] = "sim"
    title: ClassVar[str] = "emulator"

    def open_tile(self, config: TileConfig, **options: Any) -> EmulatedTile:
        dtype = options.pop("dtype", "float32")
        closed_form = options.pop("closed_form", True)
        if options:
            raise BackendError(
                f"backend 'sim': unknown option(s) {', '.join(sorted(options))}; "
                "allowed: dtype, closed_form"
            )
        if dtype not in _DTYPES:
            raise BackendError(f"backend 'sim': dtype {dtype!r} not allowed; allowed: float32, float64")
        return EmulatedTile(config, dtype=_DTYPES[dtype], closed_form=closed_form)
