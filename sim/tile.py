"""The emulated crossbar tile: device physics + pulse trains + read periphery behind the HAL.

:class:`EmulatedTile` keeps each cell's device weight (weight units, inside the cell's bounds)
and implements :class:`hilctl.tile.Tile`: reads go through :mod:`sim.periphery`, pulsed updates
through :mod:`hilctl.pulse_trains` and :mod:`sim.pulse_engine`, all drawing from random streams
split from the one seed.

The weights, the symmetric-point reference and the random streams: docs/emulator.md, section 1;
the update modes: sections 3, 4 and 7.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hilctl.checkpoints import rng_state, set_rng_state
from hilctl.config import PeripheryConfig, TileConfig
from hilctl.pulse_trains import coincidences
from hilctl.tile import (
    Capabilities,
    as_batch,
    as_matrix,
    as_pulse_counts,
    as_update,
)
from sim.devices import DeviceModel, make_device
from sim.engine import resolve_engine
from sim.periphery import analog_mvm
from sim.pulse_engine import PulseWriter

if TYPE_CHECKING:
    from sim.compiled_writer import CompiledWriter

Array = NDArray[np.float64]
#: A read through the periphery: ``(weights, x, periphery, rng) -> y`` (:func:`analog_mvm`).
MatrixVectorProduct = Callable[[NDArray[np.floating], Array, PeripheryConfig,
                                np.random.Generator], Array]

_FLOAT64 = np.dtype(np.float64)

#: Below this many coincidences per cell of the tile, an update touches only the cells that take
#: pulses (gathered); above it, it sweeps the whole tile in cache-sized blocks.
SPARSE_FRACTION = 0.1


class EmulatedTile:
    """A ``rows x cols`` tile of emulated devices implementing :class:`hilctl.tile.Tile`.

    Args:
        config: the validated tile configuration.
        dtype: storage precision of the per-cell state. float32 (default) as aihwkit; float64
            where accumulated rounding over very many single pulses must stay below 1e-7.
        closed_form: apply ``n`` same-sign pulses in closed form where the device allows it
            (see :mod:`sim.pulse_engine`); False applies every pulse one at a time.
    """

    capabilities = Capabilities(parallel_mvm=True, parallel_update=True, exact_read=True)

    def __init__(
        self,
        config: TileConfig,
        dtype: type[np.floating] = np.float32,
        closed_form: bool = True,
    ) -> None:
        self.config = config
        shape = (config.rows, config.cols)
        device_seed, write_seed, read_seed = np.random.SeedSequence(config.seed).spawn(3)
        state_dtype = np.float64 if config.update.mode == "ideal" else dtype
        self.device: DeviceModel = make_device(
            config.device, shape, np.random.default_rng(device_seed), state_dtype
        )
        self._write_rng = np.random.default_rng(write_seed)
        self._writer = PulseWriter(self.device, self._write_rng, closed_form)
        self.engine = resolve_engine(config.update) if state_dtype is np.float32 else "numpy"
        self._mvm: MatrixVectorProduct = analog_mvm
        self._compiled: CompiledWriter | None = None
        if self.engine == "numba":  # imports numba: only when used
            from sim.compiled_writer import CompiledWriter
            from sim.read_kernel import compiled_mvm

            self._compiled = CompiledWriter(self.device, self._write_rng, config.update,
                                            closed_form)
            self._mvm = compiled_mvm
        self._read_rng = np.random.default_rng(read_seed)
        self._w = np.zeros(shape, dtype=state_dtype)
        # What the compiled update's fast path checks against, kept as plain attributes.
        self._granularity = self.device.granularity()
        self._input_shape, self._output_shape = (config.cols,), (config.rows,)
        self._pulsed_aggregate = config.update.mode == "pulsed" and config.update.aggregate_batch
        # aihwkit's backward pass uses the tile's periphery with bound management off.
        self._backward_periphery = config.periphery.model_copy(update={"bound_management": "none"})
        self._reference: NDArray[np.floating] | None = None
        self._fingerprint: str | None = None
        if config.reference == "symmetric-point":
            self._reference = self.device.symmetric_point().astype(state_dtype)
            self._w[...] = self._reference

    # -- geometry ----------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        return self.config.rows

    @property
    def cols(self) -> int:
        return self.config.cols

    @property
    def shape(self) -> tuple[int, int]:
        return (self.config.rows, self.config.cols)

    # -- reading -----------------------------------------------------------------------------

    def _visible(self) -> NDArray[np.floating]:
        return self._w if self._reference is None else self._w - self._reference

    def read_weights(self) -> Array:
        """The weights as the tile exposes them (exact: the emulator has no read noise here)."""
        return self._visible().astype(np.float64)

    def device_weights(self) -> Array:
        """The raw device weights ``w``, not shifted by a reference (for physics checks)."""
        return self._w.astype(np.float64)

    def symmetric_point(self) -> Array:
        """Each cell's symmetric point, in device weight units."""
        return self.device.symmetric_point().astype(np.float64)

    def forward(self, x: ArrayLike) -> Array:
        """``(batch, cols) -> (batch, rows)``: ``W x`` through the read periphery."""
        batch = as_batch(x, self.cols, "x")
        return self._mvm(self._visible(), batch, self.config.periphery, self._read_rng)

    def backward(self, d: ArrayLike) -> Array:
        """``(batch, rows) -> (batch, cols)``: ``W^T d`` through the read periphery."""
        batch = as_batch(d, self.rows, "d")
        return self._mvm(self._visible().T, batch, self._backward_periphery, self._read_rng)

    # -- writing -----------------------------------------------------------------------------

    def program_weights(self, target: ArrayLike, tol: float = 0.0) -> Array:
        """Set the weights to ``target``, clipped to each cell's bounds; returns what was reached.

        The emulator writes exactly, so ``tol`` is met whenever ``target`` is inside the bounds.
        """
        values = as_matrix(target, self.shape, "target")
        if self._reference is not None:
            values = values + self._reference
        b_min, b_max = self.device.bounds()
        np.clip(values, b_min, b_max, out=self._w, casting="unsafe")
        return self.read_weights()

    def state_dict(self) -> dict[str, Any]:
        """The weights and both random streams, and a fingerprint of every cell's
        device-to-device draws: what it takes to continue bit for bit.

        The draws themselves (four to six numbers per cell, fixed for the tile's life) are
        made again, exactly, by a tile opened with the same config and seed; saving them would
        triple a checkpoint (a 4096 x 4096 tile: 470 MB instead of 134 MB), so the checkpoint
        keeps their SHA-256, and :meth:`load_state_dict` refuses draws that differ.
        """
        return {"w": self._w, "device_sha256": self._device_fingerprint(),
                "write_rng": rng_state(self._write_rng), "read_rng": rng_state(self._read_rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state["device_sha256"] != self._device_fingerprint():
            raise ValueError("the emulated tile's device-to-device draws differ from the "
                             "checkpoint's (another config or seed, or an emulator that changed "
                             "since the run started): it cannot continue exactly")
        self._w[...] = state["w"]
        set_rng_state(self._write_rng, state["write_rng"])
        set_rng_state(self._read_rng, state["read_rng"])

    def _device_fingerprint(self) -> str:
        if self._fingerprint is None:  # the draws never change: hashed once
            digest = hashlib.sha256()
            for name in sorted(self.device.cells):
                digest.update(name.encode())
                digest.update(np.ascontiguousarray(self.device.cells[name]).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def apply_pulses(self, counts: ArrayLike) -> None:
        """Apply signed pulse counts per cell (+ up, - down)."""
        checked = as_pulse_counts(counts, self.shape)
        if self._compiled is not None:
            self._compiled.apply_signed(self._w, checked.astype(np.int64, copy=False))
        else:
            self._writer.apply_signed(self._w, checked)

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        """``W <- W - lr d x^T`` for each sample of the mini-batch, in the configured mode."""
        if self._compiled is not None and self._compiled_update(x, d, lr):
            return
        xs, ds, rate = as_update(x, d, lr, self.shape)
        mode = self.config.update.mode
        if mode == "ideal":
            self._w -= rate * (ds.T @ xs)
        elif mode == "expected":
            for x_s, d_s in zip(xs, ds, strict=True):
                self._expected_step(-rate * np.outer(d_s, x_s))
        elif self.config.update.aggregate_batch:
            self._pulsed_step(xs, ds, rate)
        else:
            for i in range(xs.shape[0]):
                self._pulsed_step(xs[i : i + 1], ds[i : i + 1], rate)

    def _compiled_update(self, x: ArrayLike, d: ArrayLike, lr: float) -> bool:
        """A pulsed update on the compiled engine, with the checks of ``as_update`` done where
        they are cheapest (the kernel checks finiteness); False if this update is not one it
        takes (another mode, or input the full checks must look at and reject).

        The first branch is the common call (float64 C-order arrays of this shape, a float
        rate), checked with nothing but identity and attribute tests: at 64 x 64 and
        mini-batch 1 the kernel takes a few microseconds, and each Python step here shows."""
        assert self._compiled is not None
        if (self._pulsed_aggregate and type(lr) is float and 0.0 <= lr < math.inf
                and type(x) is np.ndarray and type(d) is np.ndarray and x.dtype is _FLOAT64
                and d.dtype is _FLOAT64 and x.flags.c_contiguous and d.flags.c_contiguous
                and x.shape[1:] == self._input_shape and d.shape[1:] == self._output_shape
                and x.shape[0] == d.shape[0]):
            return self._compiled.update(self._w, x, d, lr / self._granularity)
        update = self.config.update
        if update.mode != "pulsed" or not (isinstance(lr, float | int) and 0 <= lr < math.inf):
            return False
        x, d, lr = as_update(x, d, lr, self.shape)  # every sample checked before the first
        rate = lr / self._granularity
        if update.aggregate_batch:
            return self._compiled.update(self._w, x, d, rate)
        for i in range(x.shape[0]):
            self._compiled.update(self._w, x[i : i + 1], d[i : i + 1], rate)
        return True

    def _pulsed_step(self, xs: Array, ds: Array, lr: float) -> None:
        trains = coincidences(
            xs, ds, lr, self.device.granularity(), self.config.update, self._write_rng
        )
        if trains is None:
            return
        # Up before down or the other way round, at random: no systematic order bias.
        order = [True, False] if self._write_rng.random() < 0.5 else [False, True]
        if trains.pair_count() < SPARSE_FRACTION * self._w.size:
            cells, up, down = trains.sparse()
            counts = {True: up, False: down}
            self._writer.apply_cells(self._w, cells, [(d, counts[d]) for d in order])
        else:
            self._writer.apply(self._w, [(d, trains.blocks(d)) for d in order])

    def _expected_step(self, delta: Array) -> None:
        """The paper's discrete-time model: ``w + dW F(w) - |dW| G(w)``, clipped to the bounds
        (docs/emulator.md, section 7)."""
        w = self._w
        dw_min = self.device.granularity()
        response = np.where(delta > 0, self.device.step_up(w), self.device.step_down(w))
        b_min, b_max = self.device.bounds()
        np.clip(w + delta * response / dw_min, b_min, b_max, out=w, casting="unsafe")
