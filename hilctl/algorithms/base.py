"""What every training algorithm shares: the weight-array contract a layer uses, and the
config base whose ``build`` makes an algorithm's weight array from tiles.

An algorithm is one module of this package holding its config (a :class:`AlgorithmSettings`)
next to the class that implements it, and one line in the union of
:mod:`hilctl.algorithms`. Nothing here knows the backend: tiles come from a factory, so every
algorithm runs unchanged on the emulator and on a lab chip.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hilctl.config import PulsedDeviceConfig
from hilctl.tile import Tile
from protocols.schema import StrictModel

Array = NDArray[np.float64]
#: Opens an analog tile of (rows, cols) on the run's backend; each call a new tile.
TileFactory = Callable[[int, int], Tile]

#: Weight change of one pulse when neither the algorithm config nor the run gives one: the
#: default device's ``dw_min`` (weight units).
DEFAULT_GRANULARITY = float(PulsedDeviceConfig.model_fields["dw_min"].default)


class WeightArray(Protocol):
    """What a layer needs of its weights."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def forward(self, x: ArrayLike) -> Array: ...

    def backward(self, d: ArrayLike) -> Array: ...

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None: ...

    def read_weights(self) -> Array: ...

    def program_weights(self, target: ArrayLike) -> Array: ...

    def state_dict(self) -> dict[str, Any]:
        """The algorithm's own state (counters, buffers, random streams), not its tiles'."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...




@dataclass(frozen=True)
class RunSettings:
    """What an algorithm learns from the run it trains in.

    Attributes:
        granularity: weight change of one pulse of the run's device (its ``dw_min``, weight
            units), for buffer thresholds; None if the run does not say.
        reference: the run's ``tile.reference``; None (not said) is taken on trust.
        seed: seed of the algorithm's own draws (choppers, pulsed transfer writes).
    """

    granularity: float | None = None
    reference: str | None = None
    seed: int = 0


class AlgorithmSettings(StrictModel):
    """Base of every algorithm's config: its ``name`` (the registry key) and how to build it."""

    name: str
    #: False for an algorithm that needs no analog tiles (digital SGD): nothing to map onto tiles.
    analog: ClassVar[bool] = True

    @abstractmethod
    def build(self, rows: int, cols: int, open_analog: TileFactory, run: RunSettings
              ) -> WeightArray:
        """The weight array of a (rows, cols) layer, its analog tiles from ``open_analog``."""
