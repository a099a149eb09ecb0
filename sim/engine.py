"""Which engine runs the emulator: the compiled one (numba) or the numpy reference.

``update.engine`` chooses: ``numba``, ``numpy``, or ``auto`` (the default: numba where it
imports, else numpy with one warning per process). Both engines implement the same equations
(docs/emulator.md) and agree in distribution; they draw their random numbers differently, so
they do not give the same numbers for one seed.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Literal

from hilctl.config import UpdateConfig
from hilctl.errors import ConfigError

Engine = Literal["numba", "numpy"]

_log = logging.getLogger("hilctl.sim")


@cache
def numba_available() -> bool:
    """True where numba imports (it is a dependency, but a platform may lack a wheel)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@cache
def _warn_numpy_fallback() -> None:
    _log.warning("numba does not import here; the emulator runs on its numpy engine, several "
                 "times slower (install numba, or set update.engine = \"numpy\" to silence this)")


def resolve_engine(update: UpdateConfig) -> Engine:
    """The engine ``update.engine`` names, ``auto`` resolved; ConfigError if numba is asked for
    and does not import."""
    if update.engine == "numpy":
        return "numpy"
    if numba_available():
        return "numba"
    if update.engine == "numba":
        raise ConfigError("update.engine: numba does not import here; allowed: auto, numpy")
    _warn_numpy_fallback()
    return "numpy"
