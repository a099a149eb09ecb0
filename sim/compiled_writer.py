"""The compiled engine's writer: pulsed updates and pulse counts through :mod:`sim.kernels`.

It holds a device's constants in the layout the kernels read (float32 planes of the tile's
shape, made once), takes one 64-bit key per call from the tile's write Generator, and runs the
serial or the parallel kernel. Its results agree in distribution with :class:`sim.pulse_engine.
PulseWriter` (the numpy reference); serial and parallel runs agree bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numpy.typing import NDArray

from hilctl.config import ExpStepConfig, PiecewiseStepConfig, UpdateConfig
from sim import kernels
from sim.counter_rng import stream_key
from sim.devices import DeviceModel
from sim.noise import _quantile_table
from sim.pulse_engine import AffineForm, affine_form

Planes = NDArray[np.float32]

_DEVICE_CODES = {"pow-step": kernels.POW, "exp-step": kernels.EXP, "piecewise": kernels.PIECEWISE}


class CompiledWriter:
    """Applies pulsed updates and signed pulse counts to a float32 tile's weights, compiled.

    Args:
        device: the tile's cells (float32).
        rng: the tile's write Generator; each call takes one key from it.
        update: the tile's update settings (bit length, management, threads of the cell
            kernels: 1 runs the serial kernel).
        closed_form: as :class:`sim.pulse_engine.PulseWriter`: n same-sign pulses in closed form
            where the device is affine; else pulse by pulse.
    """

    def __init__(self, device: DeviceModel, rng: np.random.Generator, update: UpdateConfig,
                 closed_form: bool = True) -> None:
        if device.dtype is not np.float32:
            raise ValueError("the compiled engine runs float32 tiles; use the numpy engine")
        self.device = device
        self.rng = rng
        self.threads = min(update.threads, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        self._trains = (update.desired_bl, update.update_management, update.update_bl_management)
        #: Visit only the firing columns' cells where they are at most this fraction of all.
        self.sparse_columns = kernels.SPARSE_COLUMNS
        self._table = _quantile_table(np.float32)
        forms = (affine_form(device, True), affine_form(device, False)) if closed_form else None
        # The kernels' arguments, prepared once: the cells' constants (before the inputs of an
        # update or the counts) and the device's (after the trains' settings).
        self._cells: tuple[object, ...]
        self._device: tuple[object, ...]
        if forms is not None and forms[0] is not None and forms[1] is not None:
            self.closed_form = True
            planes, fixed = _closed_form_planes(device, forms[0], forms[1])
            self._cells = (planes, *fixed, _row_limits(planes))
            self._device = (forms[0].contracting, forms[1].contracting, device.mult_noise)
            self._kernels: tuple[Callable[..., bool], Callable[..., bool]] = (
                kernels.closed_form_update, kernels.closed_form_update_parallel)
            self._counts_kernel: Callable[..., None] = kernels.closed_form_counts
        else:
            self.closed_form = False
            code = _DEVICE_CODES.get(device.name, kernels.AFFINE)
            planes, constants, nodes = _pulse_constants(device)
            self._cells = ()
            self._device = (code, planes, constants, *nodes)
            self._kernels = (kernels.pulsed_update, kernels.pulsed_update_parallel)
            self._counts_kernel = kernels.pulsed_counts

    def update(self, weights: Planes, xs: NDArray[np.float64], ds: NDArray[np.float64],
               rate: float) -> bool:
        """One pulsed update of ``weights`` (in place) from the mini-batch ``xs``, ``ds`` at
        ``rate = lr / granularity``; False (nothing written) if an input is not finite.

        The call path is kept thin (argument tuples prepared once): at 64 x 64 and mini-batch 1
        the kernel's work is a few microseconds, so every Python step here shows."""
        key = stream_key(self.rng)
        kernel = self._kernels[self.threads > 1]
        if self.threads > 1:
            numba.set_num_threads(self.threads)
        if self.closed_form:
            return kernel(weights, *self._cells, xs, ds, rate, *self._trains, *self._device, key,
                          self._table, self.sparse_columns)
        return kernel(weights, xs, ds, rate, *self._trains, *self._device, key, self._table)

    def apply_signed(self, weights: Planes, counts: NDArray[np.int64]) -> None:
        """Signed pulse counts (+ up, - down) per cell, applied to ``weights`` in place."""
        self._counts_kernel(weights, *self._cells, counts, *self._device, stream_key(self.rng),
                            self._table)


def _closed_form_planes(device: DeviceModel, up: AffineForm, down: AffineForm
                        ) -> tuple[Planes, tuple[int, int]]:
    """The closed form's constants as the planes :mod:`sim.kernels` reads (``log g`` and the
    noise factor per direction, the bounds, the fixed points or steps), and the plane numbers
    of the up and down fixed points: the bounds' own where they are the bounds (soft bounds,
    two planes fewer to read per update)."""
    bounds = device.bounds()
    bound_planes = (kernels.B_MAX, kernels.B_MIN)  # the bound up (down) pulses approach
    shared = [form.contracting and form.fixed is not None
              and np.shares_memory(form.fixed, bounds[1 - index])
              for index, form in enumerate((up, down))]
    planes = np.zeros((kernels.B_MAX + 1 + 2 * (not all(shared)), *device.shape),
                      dtype=np.float32)
    planes[kernels.B_MIN], planes[kernels.B_MAX] = bounds
    fixed_planes = []
    for index, form in enumerate((up, down)):
        if form.contracting:
            assert form.fixed is not None and form.log_growth is not None
            planes[2 * index] = form.log_growth
        if form.contracting and form.multiplicative:
            planes[2 * index + 1] = np.log1p(form.noise.astype(np.float64))
        else:
            planes[2 * index + 1] = form.noise
        if shared[index]:
            fixed_planes.append(bound_planes[index])
        else:
            fixed_planes.append((kernels.FIXED_UP, kernels.FIXED_DOWN)[index])
            planes[fixed_planes[-1]] = form.fixed if form.contracting else form.step
    return planes, (fixed_planes[0], fixed_planes[1])


def _row_limits(planes: Planes) -> Planes:
    """Each row's largest ``|log g|`` and noise factor, up then down: (rows, 4)."""
    return np.stack([np.abs(planes[k]).max(axis=1) for k in range(4)], axis=1)


def _pulse_constants(device: DeviceModel
                     ) -> tuple[Planes, NDArray[np.float64], tuple[NDArray[np.float64], ...]]:
    """Per-cell planes, scalar constants and piecewise node tables of the pulse-by-pulse kernel."""
    planes = np.zeros((kernels.PULSE_PLANES, *device.shape), dtype=np.float32)
    planes[kernels.P_DW_UP] = device.cell("dw_up")
    planes[kernels.P_DW_DOWN] = device.cell("dw_down")
    planes[kernels.P_MIN], planes[kernels.P_MAX] = device.bounds()
    for direction, (alpha, beta) in ((True, (kernels.P_A_UP, kernels.P_B_UP)),
                                     (False, (kernels.P_A_DOWN, kernels.P_B_DOWN))):
        increments = device.affine_increments(direction)
        if increments is not None:
            planes[alpha], planes[beta] = increments
    if "gamma_up" in device.cells and device.name == "pow-step":
        planes[kernels.P_G_UP] = device.cell("gamma_up")
        planes[kernels.P_G_DOWN] = device.cell("gamma_down")
    config = device.config
    constants = np.zeros(kernels.C_GAMMA_DOWN + 1)
    constants[kernels.C_SIGMA] = config.dw_min_std
    constants[kernels.C_MULT] = float(device.mult_noise)
    if isinstance(config, ExpStepConfig):
        constants[kernels.C_A:] = (config.a, config.b, config.A_up, config.A_down,
                                   config.gamma_up, config.gamma_down)
    nodes: tuple[NDArray[np.float64], ...] = (np.ones(1), np.ones(1))
    if isinstance(config, PiecewiseStepConfig):
        nodes = (np.asarray(config.piecewise_up, dtype=np.float64),
                 np.asarray(config.piecewise_down, dtype=np.float64))
    return planes, constants, nodes
