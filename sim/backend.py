"""Registration of the emulator as hilctl backend ``sim`` (entry point ``hilctl.backends``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hilctl.config import TileConfig
from hilctl.errors import BackendError
from sim.tile import EmulatedTile

_DTYPES: dict[str, type[np.floating]] = {"float32": np.float32, "float64": np.float64}


def open_tile(config: TileConfig, *, dtype: str = "float32", closed_form: bool = True,
              **options: Any) -> EmulatedTile:
    """An :class:`EmulatedTile` of ``config``.

    Options: ``dtype`` (``float32`` or ``float64``) and ``closed_form`` (see EmulatedTile).
    """
    if options:
        raise BackendError(
            f"backend 'sim': unknown option(s) {', '.join(sorted(options))}; "
            "allowed: dtype, closed_form"
        )
    if dtype not in _DTYPES:
        raise BackendError(f"backend 'sim': dtype {dtype!r} not allowed; allowed: float32, float64")
    return EmulatedTile(config, dtype=_DTYPES[dtype], closed_form=closed_form)
