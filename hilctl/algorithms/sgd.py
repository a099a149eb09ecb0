"""SGD on one tile: digital SGD (floating point, the reference) and Analog SGD (pulsed
outer-product updates on one analog tile)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from numpy.typing import ArrayLike

from hilctl.algorithms.base import AlgorithmSettings, Array, RunSettings, TileFactory, WeightArray
from hilctl.digital import DigitalTile
from hilctl.tile import Tile


class SingleTile:
    """SGD on one tile: digital or Analog SGD, depending on the tile."""

    def __init__(self, tile: Tile) -> None:
        self.tile = tile

    @property
    def shape(self) -> tuple[int, int]:
        return (self.tile.rows, self.tile.cols)

    def forward(self, x: ArrayLike) -> Array:
        return self.tile.forward(x)

    def backward(self, d: ArrayLike) -> Array:
        return self.tile.backward(d)

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        self.tile.update(x, d, lr)

    def read_weights(self) -> Array:
        return self.tile.read_weights()

    def program_weights(self, target: ArrayLike) -> Array:
        return self.tile.program_weights(target)

    def state_dict(self) -> dict[str, Any]:
        return {}  # all of it is the tile's

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass




class DigitalWeights(SingleTile):
    """SGD on a floating-point tile of its own (not the backend's): its weights are the
    algorithm's state."""

    def state_dict(self) -> dict[str, Any]:
        return self.tile.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.tile.load_state_dict(state)


class DigitalSgdConfig(AlgorithmSettings):
    """Floating-point SGD: the reference."""

    name: Literal["digital-sgd"] = "digital-sgd"
    analog: ClassVar[bool] = False

    def build(self, rows: int, cols: int, open_analog: TileFactory, run: RunSettings
              ) -> WeightArray:
        return DigitalWeights(DigitalTile(rows, cols))


class AnalogSgdConfig(AlgorithmSettings):
    """Plain SGD written onto one tile by pulsed outer-product updates."""

    name: Literal["analog-sgd"] = "analog-sgd"

    def build(self, rows: int, cols: int, open_analog: TileFactory, run: RunSettings
              ) -> WeightArray:
        return SingleTile(open_analog(rows, cols))
