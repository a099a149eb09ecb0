"""The tile interface: the one hardware abstraction layer the training controller talks to.

A tile is a ``rows x cols`` array of cells holding ``W`` (rows = outputs, cols = inputs).
Backends (the ``sim`` emulator, the ``drivers`` lab tile) implement :class:`Tile`; the core
never imports them by name (see :mod:`hilctl.backends`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hilctl.errors import NonFiniteValue


@dataclass(frozen=True)
class Capabilities:
    """What a backend does natively; the controller may pick faster paths from these.

    Attributes:
        parallel_mvm: ``forward``/``backward`` are one analog matrix-vector product, not
            assembled from cell reads.
        parallel_update: ``update`` fires pulse trains on rows and columns at once
            (coincidence update) rather than cell by cell.
        exact_read: ``read_weights`` returns the stored weights without read noise.
    """

    parallel_mvm: bool
    parallel_update: bool
    exact_read: bool


@runtime_checkable
class Tile(Protocol):
    """One crossbar tile as the training controller sees it."""

    @property
    def rows(self) -> int:
        """Number of outputs (rows of ``W``)."""
        ...

    @property
    def cols(self) -> int:
        """Number of inputs (columns of ``W``)."""
        ...

    @property
    def capabilities(self) -> Capabilities:
        """What the backend does natively."""
        ...

    def forward(self, x: ArrayLike) -> NDArray[np.float64]:
        """``(batch, cols) -> (batch, rows)``: ``y = W x`` through the read periphery."""
        ...

    def backward(self, d: ArrayLike) -> NDArray[np.float64]:
        """``(batch, rows) -> (batch, cols)``: ``W^T d`` through the read periphery."""
        ...

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        """Pulsed outer-product update ``W <- W - lr d x^T``, one sample after another."""
        ...

    def apply_pulses(self, counts: ArrayLike) -> None:
        """Apply signed integer pulse counts per cell (``+`` up, ``-`` down), shape (rows, cols)."""
        ...

    def read_weights(self) -> NDArray[np.float64]:
        """Best estimate of ``W`` (rows, cols) from cell reads."""
        ...

    def program_weights(self, target: ArrayLike, tol: float = 0.0) -> NDArray[np.float64]:
        """Closed-loop write of ``target`` to within ``tol``; returns the weights reached."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly (arrays and JSON values; arrays may be views,
        valid until the next write). A physical tile holds its host-side state and its
        weights read back under the key ``weights``: the chip keeps its own state."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict` of a tile opened the same way).
        A physical tile never writes the chip here."""
        ...


def as_batch(values: ArrayLike, width: int, name: str) -> NDArray[np.float64]:
    """``values`` as a finite float array of shape (batch, width); a 1-D vector is one sample.

    Raises ``ValueError`` naming ``name``, the expected and the actual shape, or the bad entries.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[np.newaxis, :]
    if array.ndim != 2 or array.shape[1] != width:
        raise ValueError(f"{name} must have shape (batch, {width}) or ({width},); got {array.shape}")
    require_finite(array, name)
    return array


def as_update(x: ArrayLike, d: ArrayLike, lr: float, shape: tuple[int, int]
              ) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """The checked arguments of ``update``: ``x`` (batch, cols), ``d`` (batch, rows), ``lr``.

    Raises ``ValueError`` naming the argument for a wrong shape, mismatched batch sizes, a
    non-finite entry or a negative learning rate.
    """
    rows, cols = shape
    xs, ds = as_batch(x, cols, "x"), as_batch(d, rows, "d")
    if xs.shape[0] != ds.shape[0]:
        raise ValueError(f"x and d must have the same batch size; got {xs.shape[0]} and "
                         f"{ds.shape[0]}")
    return xs, ds, require_learning_rate(lr)


def as_matrix(values: ArrayLike, shape: tuple[int, int], name: str) -> NDArray[np.float64]:
    """``values`` as a finite float array of exactly ``shape``; raises ``ValueError`` otherwise."""
    array = np.asarray(values, dtype=np.float64)
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}; got {array.shape}")
    require_finite(array, name)
    return array


#: Most pulses one ``apply_pulses`` may ask of a cell (far beyond any device's range).
MAX_PULSES = 1 << 31


def as_pulse_counts(values: ArrayLike, shape: tuple[int, int]) -> NDArray[np.int64]:
    """Signed integer pulse counts of exactly ``shape``; raises ``ValueError`` otherwise."""
    array = np.asarray(values)
    if array.shape != shape:
        raise ValueError(f"counts must have shape {shape}; got {array.shape}")
    if array.dtype.kind == "f":
        require_finite(array, "counts")
        if not np.array_equal(array, np.round(array)):
            raise ValueError("counts must be whole numbers of pulses")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"counts must be integers; got dtype {array.dtype}")
    if array.size and np.abs(array.astype(np.float64)).max() > MAX_PULSES:
        raise ValueError(f"counts must be at most {MAX_PULSES:,} pulses per cell in magnitude")
    return array.astype(np.int64)


def require_finite(array: NDArray[np.floating], name: str) -> None:
    """Raise :class:`~hilctl.errors.NonFiniteValue` (a ``ValueError``) if ``array`` holds NaN or
    infinity, saying where the first one is."""
    bad = ~np.isfinite(array)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteValue(f"{name} must be finite; {name}{list(where)} = {array[where]}")


def require_learning_rate(lr: float) -> float:
    """``lr`` as a finite float >= 0; raises ``ValueError`` otherwise."""
    value = float(lr)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"lr must be a finite number >= 0; got {lr}")
    return value
