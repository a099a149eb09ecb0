"""Training algorithms as weight arrays that use only the tile interface.

A network layer holds a :class:`WeightArray`: something that multiplies forward and backward and
takes ``update(x, d, lr)`` for ``W <- W - lr d x^T``. Which tiles sit behind it, and how the
update reaches them, is the algorithm (docs/architecture.md, "Training algorithms"):

- :mod:`~hilctl.algorithms.sgd`: digital SGD (one floating-point tile) and Analog SGD (one
  analog tile, updated by its pulsed outer product);
- :mod:`~hilctl.algorithms.tiki_taka`: Tiki-Taka v1, a fast tile A taking the gradients and a
  slow tile C fed from A by column reads, and residual learning (``gamma > 0`` on zero-shifted
  tiles);
- :mod:`~hilctl.algorithms.buffered`: TTv2, c-TTv2 and AGAD, a digital buffer between A and C.

:data:`AlgorithmConfig` is the one declaration of the registry; :data:`ALGORITHMS` (by name)
is derived from it.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from hilctl.algorithms.base import (
    DEFAULT_GRANULARITY,
    AlgorithmSettings,
    RunSettings,
    TileFactory,
    WeightArray,
)
from hilctl.algorithms.buffered import (
    AgadConfig,
    BufferedTransfer,
    ChoppedTransfer,
    ChoppedTtv2Config,
    DynamicTransfer,
    Ttv2Config,
)
from hilctl.algorithms.sgd import AnalogSgdConfig, DigitalSgdConfig, SingleTile
from hilctl.algorithms.tiki_taka import ResidualConfig, TikiTaka, TikiTakaConfig
from hilctl.config import registry

AlgorithmConfig = Annotated[
    DigitalSgdConfig | AnalogSgdConfig | TikiTakaConfig | Ttv2Config | ChoppedTtv2Config | AgadConfig
    | ResidualConfig,
    Field(discriminator="name"),
]
#: Every algorithm's config by name (``--algorithm``), in the order of :data:`AlgorithmConfig`.
ALGORITHMS = registry(AlgorithmConfig, "name", AlgorithmSettings)


def build_weights(
    algorithm: AlgorithmSettings,
    rows: int,
    cols: int,
    open_analog: TileFactory,
    *,
    granularity: float | None = None,
    reference: str | None = None,
    seed: int = 0,
) -> WeightArray:
    """The weight array of ``algorithm`` for a (rows, cols) layer.

    Args:
        granularity: weight change of one pulse of the run's device (its ``dw_min``), for the
            buffer thresholds of TTv2/c-TTv2/AGAD. The algorithm's own ``granularity`` wins;
            without either, :data:`DEFAULT_GRANULARITY`.
        reference: the run's ``tile.reference`` if the caller knows it. ``residual`` needs
            ``"symmetric-point"`` and raises :class:`~hilctl.errors.ConfigError` for any other
            value; None (not said) is taken on trust.
        seed: seed of the chopper draws (c-TTv2, AGAD).
    """
    return algorithm.build(rows, cols, open_analog, RunSettings(granularity, reference, seed))


__all__ = [
    "ALGORITHMS",
    "DEFAULT_GRANULARITY",
    "AgadConfig",
    "AlgorithmConfig",
    "AlgorithmSettings",
    "AnalogSgdConfig",
    "BufferedTransfer",
    "ChoppedTransfer",
    "ChoppedTtv2Config",
    "DigitalSgdConfig",
    "DynamicTransfer",
    "ResidualConfig",
    "RunSettings",
    "SingleTile",
    "TikiTaka",
    "TikiTakaConfig",
    "TileFactory",
    "Ttv2Config",
    "WeightArray",
    "build_weights",
]
