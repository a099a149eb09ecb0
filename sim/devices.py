"""Device physics of the emulated tile: per-cell response functions and their variations.

Each model draws its device-to-device variation once per cell at construction (aihwkit 1.1.0's
``PulsedDevice`` scheme) and gives the expected up and down step as functions of the weight; a
pulse adds its step with cycle-to-cycle noise and clips to the cell's bounds. Models whose
increment is affine in ``w`` also give its coefficients, so that :mod:`sim.pulse_engine` can
apply ``n`` pulses in closed form. Per-cell arrays (weight units) are stored flat in ``cells``;
``sel`` arguments index them (``None`` means every cell, in tile shape).

The equations: docs/emulator.md, section 2 (Device models).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from hilctl.config import (
    ExpStepConfig,
    LinearStepConfig,
    PiecewiseStepConfig,
    PowStepConfig,
    PulsedDeviceConfig,
    SoftBoundsConfig,
)

Array = NDArray[np.floating]
Selection = NDArray[np.intp] | None

# A bound drawn at (almost) zero is kept this fraction of the mean bound away from it, so
# soft-bounds steps never divide by zero; aihwkit guards the same division in its kernel.
_MIN_BOUND = 1e-6


def split_imbalance(up_down: float) -> tuple[float, float]:
    """``(up_bias, down_bias)``: aihwkit puts a positive ``up_down`` on the down step as
    ``-up_down`` and a negative one on the up step, so ``up_down > 0`` makes downs smaller."""
    return (0.0, -up_down) if up_down > 0 else (up_down, 0.0)


class DeviceModel(ABC):
    """The cells of one tile: per-cell parameters and the response functions over them."""

    name: ClassVar[str]
    #: True where ``affine_increments`` gives coefficients (closed-form pulse trains apply).
    affine: ClassVar[bool] = False
    #: True where the cycle-to-cycle noise scales with the step, False where it is additive.
    mult_noise: bool = True

    def __init__(
        self,
        config: PulsedDeviceConfig,
        shape: tuple[int, int],
        rng: np.random.Generator,
        dtype: type[np.floating] = np.float32,
    ) -> None:
        self.config = config
        self.shape = shape
        self.dtype = dtype
        self.cells: dict[str, Array] = {}
        self._draw_common(rng)
        self._draw_specific(rng)

    # -- construction ------------------------------------------------------------------------

    def _normal(self, rng: np.random.Generator) -> Array:
        """One standard-normal draw per cell, flat, in the state dtype (to save memory)."""
        size = self.shape[0] * self.shape[1]
        return rng.standard_normal(size, dtype=self.dtype)

    def _draw_common(self, rng: np.random.Generator) -> None:
        """Bounds, step gain and up/down imbalance, as aihwkit 1.1.0's PulsedDevice draws them
        (docs/emulator.md, section 2.3)."""
        c = self.config
        b_max = c.w_max * (1 + c.w_max_dtod * self._normal(rng))
        b_min = c.w_min * (1 + c.w_min_dtod * self._normal(rng))
        b_max, b_min = np.maximum(b_max, b_min), np.minimum(b_max, b_min)
        tiny = self.dtype(_MIN_BOUND * c.w_max)
        self.cells["b_max"] = np.maximum(np.abs(b_max), tiny)
        self.cells["b_min"] = -np.maximum(np.abs(b_min), tiny)
        del b_max, b_min
        up_bias, down_bias = split_imbalance(c.up_down)
        gain = 1 + c.dw_min_dtod * self._normal(rng)
        imbalance = c.up_down_dtod * self._normal(rng)
        self.cells["dw_up"] = np.abs(c.dw_min * (gain + imbalance + up_bias))
        self.cells["dw_down"] = np.abs(c.dw_min * (gain - imbalance + down_bias))

    def _draw_specific(self, rng: np.random.Generator) -> None:  # noqa: B027 - optional hook
        """Draw the model's own per-cell parameters (none by default)."""

    # -- access ------------------------------------------------------------------------------

    def cell(self, name: str, sel: Selection = None) -> Array:
        """Per-cell parameter ``name``: tile-shaped for ``sel=None``, else the selected cells."""
        flat = self.cells[name]
        return flat.reshape(self.shape) if sel is None else flat[sel]

    def bounds(self, sel: Selection = None) -> tuple[Array, Array]:
        """``(b_min, b_max)`` of the selected cells."""
        return self.cell("b_min", sel), self.cell("b_max", sel)

    # -- response ----------------------------------------------------------------------------

    @abstractmethod
    def step_up(self, w: Array, sel: Selection = None) -> Array:
        """Expected increase of the weight by one up pulse at weight ``w`` (no noise)."""

    @abstractmethod
    def step_down(self, w: Array, sel: Selection = None) -> Array:
        """Expected decrease of the weight by one down pulse at weight ``w`` (no noise)."""

    def granularity(self) -> float:
        """The step (weight units) that pulse-train update management plans with.

        ``dw_min`` unless a model overrides it with its typical step, as aihwkit does.
        """
        return self.config.dw_min

    def affine_increments(self, up: bool, sel: Selection = None) -> tuple[Array, Array] | None:
        """``(alpha, beta)`` with signed increment ``alpha + beta * w``, or None if not affine."""
        return None

    def fixed_point(self, up: bool) -> Array | None:
        """The weight up (or down) pulses converge to, per cell, where it is a stored array
        (soft bounds: the bound); None where it must be computed as ``-alpha / beta``."""
        return None

    def symmetric_point(self, sel: Selection = None, iterations: int = 60) -> Array:
        """The weight where an up and a down step are equal, per cell (docs/emulator.md, section 2.4).

        Where the up step exceeds the down step over the whole range the point is ``b_max`` (and
        ``b_min`` the other way round). Found by bisection, since every model's up step falls and
        down step rises with ``w``.
        """
        low, high = (b.astype(np.float64) for b in self.bounds(sel))
        low, high = low.copy(), high.copy()
        for _ in range(iterations):
            mid = 0.5 * (low + high)
            up_larger = self.step_up(mid, sel) > self.step_down(mid, sel)
            low = np.where(up_larger, mid, low)
            high = np.where(up_larger, high, mid)
        return 0.5 * (low + high)


class ConstantStep(DeviceModel):
    """Same step everywhere in ``[b_min, b_max]``."""

    name = "constant-step"
    affine = True

    def step_up(self, w: Array, sel: Selection = None) -> Array:
        return np.broadcast_to(self.cell("dw_up", sel), np.shape(w))

    def step_down(self, w: Array, sel: Selection = None) -> Array:
        return np.broadcast_to(self.cell("dw_down", sel), np.shape(w))

    def affine_increments(self, up: bool, sel: Selection = None) -> tuple[Array, Array]:
        dw = self.cell("dw_up" if up else "dw_down", sel)
        return (dw if up else -dw), np.zeros_like(dw)

    def symmetric_point(self, sel: Selection = None, iterations: int = 60) -> Array:
        b_min, b_max = self.bounds(sel)
        dw_up, dw_down = self.cell("dw_up", sel), self.cell("dw_down", sel)
        middle = np.zeros_like(b_max)
        return np.where(dw_up > dw_down, b_max, np.where(dw_up < dw_down, b_min, middle))


class LinearStep(DeviceModel):
    """Step linear in ``w``: up ``dw_up (1 - g_up w / w_max)``, down ``dw_down (1 - g_down w / w_min)``.

    ``g`` is the cell's slope drawn around ``gamma_up``/``gamma_down``; ``w_max``/``w_min`` are
    the configured mean bounds. Soft bounds is the special case ``g = 1`` relative to the cell's
    own bounds, where the steps vanish at the bounds.
    """

    name = "linear-step"
    affine = True

    def __init__(
        self,
        config: PulsedDeviceConfig,
        shape: tuple[int, int],
        rng: np.random.Generator,
        dtype: type[np.floating] = np.float32,
    ) -> None:
        self.mult_noise = bool(getattr(config, "mult_noise", True))
        super().__init__(config, shape, rng, dtype)

    def _draw_specific(self, rng: np.random.Generator) -> None:
        """Per-cell relative slopes ``|gamma + gamma_dtod xi|`` (aihwkit: additive spread)."""
        c = self.config
        assert isinstance(c, LinearStepConfig)
        self.cells["gamma_up"] = np.abs(c.gamma_up + c.gamma_up_dtod * self._normal(rng))
        self.cells["gamma_down"] = np.abs(c.gamma_down + c.gamma_down_dtod * self._normal(rng))

    def _gamma(self, up: bool, sel: Selection) -> Array:
        return self.cell("gamma_up" if up else "gamma_down", sel)

    def _reference_bound(self, up: bool, sel: Selection) -> Array | float:
        """The bound a slope is relative to: the mean ``w_max``/``w_min`` (aihwkit's
        ``mean_bound_reference``), not the cell's own bound."""
        return self.config.w_max if up else self.config.w_min

    def affine_increments(self, up: bool, sel: Selection = None) -> tuple[Array, Array]:
        dw = self.cell("dw_up" if up else "dw_down", sel)
        slope = dw * self._gamma(up, sel) / self._reference_bound(up, sel)
        return (dw, -slope) if up else (-dw, slope)

    def step_up(self, w: Array, sel: Selection = None) -> Array:
        """Negative beyond the fixed point ``w_max / g``: an up pulse then moves the cell down."""
        alpha, beta = self.affine_increments(True, sel)
        return alpha + beta * w

    def step_down(self, w: Array, sel: Selection = None) -> Array:
        alpha, beta = self.affine_increments(False, sel)
        return -(alpha + beta * w)


class SoftBounds(LinearStep):
    """Up ``dw_up (1 - w / b_max)``, down ``dw_down (1 - w / b_min)``: steps vanish at the bounds."""

    name = "soft-bounds"

    def _draw_specific(self, rng: np.random.Generator) -> None:
        assert isinstance(self.config, SoftBoundsConfig)

    def _gamma(self, up: bool, sel: Selection) -> Array:
        return np.ones((), dtype=self.dtype)

    def _reference_bound(self, up: bool, sel: Selection) -> Array | float:
        return self.cell("b_max" if up else "b_min", sel)

    def fixed_point(self, up: bool) -> Array:
        return self.cell("b_max" if up else "b_min")

    def symmetric_point(self, sel: Selection = None, iterations: int = 60) -> Array:
        """Closed form ``(dw_up - dw_down) / (dw_up / b_max - dw_down / b_min)``."""
        dw_up, dw_down = self.cell("dw_up", sel), self.cell("dw_down", sel)
        b_min, b_max = self.bounds(sel)
        return (dw_up - dw_down) / (dw_up / b_max - dw_down / b_min)


class PowStep(DeviceModel):
    """Power-law response over ``omega = (b_max - w) / (b_max - b_min)``.

    Up ``dw_up * omega**g_up``, down ``dw_down * (1 - omega)**g_down``, with per-cell exponents
    drawn around ``pow_gamma`` (``pow_up_down > 0`` lowers the down exponent).
    """

    name = "pow-step"

    def _draw_specific(self, rng: np.random.Generator) -> None:
        """Per-cell exponents, drawn like the steps: ``|pow_gamma (gain + r + bias)|``."""
        c = self.config
        assert isinstance(c, PowStepConfig)
        up_bias, down_bias = split_imbalance(c.pow_up_down)
        gain = 1 + c.pow_gamma_dtod * self._normal(rng)
        imbalance = c.pow_up_down_dtod * self._normal(rng)
        self.cells["gamma_up"] = np.abs(c.pow_gamma * (gain + imbalance + up_bias))
        self.cells["gamma_down"] = np.abs(c.pow_gamma * (gain - imbalance + down_bias))

    def granularity(self) -> float:
        """The step in the middle of the range, ``dw_min * 0.5**pow_gamma`` (as aihwkit)."""
        c = self.config
        assert isinstance(c, PowStepConfig)
        return c.dw_min * 0.5**c.pow_gamma

    def _omega(self, w: Array, sel: Selection) -> Array:
        b_min, b_max = self.bounds(sel)
        return np.clip((b_max - w) / (b_max - b_min), 0, 1)

    def step_up(self, w: Array, sel: Selection = None) -> Array:
        omega = self._omega(w, sel)
        return self.cell("dw_up", sel) * omega ** self.cell("gamma_up", sel)

    def step_down(self, w: Array, sel: Selection = None) -> Array:
        omega = self._omega(w, sel)
        return self.cell("dw_down", sel) * (1 - omega) ** self.cell("gamma_down", sel)


class ExpStep(DeviceModel):
    """Exponential response over ``z = 2 a w / (b_max - b_min) + b``.

    Up ``dw_up * max(1 - A_up exp(gamma_up z), 0)``, down ``dw_down * max(1 - A_down exp(-gamma_down z), 0)``.
    """

    name = "exp-step"

    def _z(self, w: Array, sel: Selection) -> Array:
        c = self.config
        assert isinstance(c, ExpStepConfig)
        b_min, b_max = self.bounds(sel)
        return 2 * c.a * w / (b_max - b_min) + c.b

    def granularity(self) -> float:
        """The mean of the up and down step at ``w = 0``.

        aihwkit 1.1.0 means to take the same but adds the down step twice; at the defaults the
        two differ by 0.03%.
        """
        c = self.config
        assert isinstance(c, ExpStepConfig)
        up = max(1 - c.A_up * np.exp(c.gamma_up * c.b), 0.0)
        down = max(1 - c.A_down * np.exp(-c.gamma_down * c.b), 0.0)
        return c.dw_min * 0.5 * (up + down)

    def step_up(self, w: Array, sel: Selection = None) -> Array:
        c = self.config
        assert isinstance(c, ExpStepConfig)
        response = np.maximum(1 - c.A_up * np.exp(c.gamma_up * self._z(w, sel)), 0)
        return self.cell("dw_up", sel) * response

    def step_down(self, w: Array, sel: Selection = None) -> Array:
        c = self.config
        assert isinstance(c, ExpStepConfig)
        response = np.maximum(1 - c.A_down * np.exp(-c.gamma_down * self._z(w, sel)), 0)
        return self.cell("dw_down", sel) * response


class PiecewiseStep(DeviceModel):
    """Relative step sizes from a node table, interpolated linearly over ``[b_min, b_max]``."""

    name = "piecewise"

    def granularity(self) -> float:
        """``dw_min`` times the middle node of ``piecewise_up`` (as aihwkit)."""
        c = self.config
        assert isinstance(c, PiecewiseStepConfig)
        return c.dw_min * c.piecewise_up[len(c.piecewise_up) // 2]

    def _interpolate(self, nodes: list[float], w: Array, sel: Selection) -> Array:
        table = np.asarray(nodes, dtype=np.float64)
        if table.size == 1:
            return np.full(np.shape(w), table[0])
        b_min, b_max = self.bounds(sel)
        position = np.clip((w - b_min) / (b_max - b_min), 0, 1) * (table.size - 1)
        return np.interp(position, np.arange(table.size), table)

    def step_up(self, w: Array, sel: Selection = None) -> Array:
        c = self.config
        assert isinstance(c, PiecewiseStepConfig)
        return self.cell("dw_up", sel) * self._interpolate(c.piecewise_up, w, sel)

    def step_down(self, w: Array, sel: Selection = None) -> Array:
        c = self.config
        assert isinstance(c, PiecewiseStepConfig)
        return self.cell("dw_down", sel) * self._interpolate(c.piecewise_down, w, sel)


DEVICE_MODELS: dict[str, type[DeviceModel]] = {
    model.name: model
    for model in (ConstantStep, LinearStep, SoftBounds, PowStep, ExpStep, PiecewiseStep)
}


def make_device(
    config: PulsedDeviceConfig,
    shape: tuple[int, int],
    rng: np.random.Generator,
    dtype: type[np.floating] = np.float32,
) -> DeviceModel:
    """The device model of ``config`` for a tile of ``shape``, variations drawn from ``rng``."""
    model_name = getattr(config, "model", None)
    if model_name not in DEVICE_MODELS:
        raise ValueError(f"device.model: unknown {model_name!r}; allowed: {', '.join(DEVICE_MODELS)}")
    return DEVICE_MODELS[model_name](config, shape, rng, dtype)


__all__ = [
    "DEVICE_MODELS",
    "ConstantStep",
    "DeviceModel",
    "ExpStep",
    "LinearStep",
    "PiecewiseStep",
    "PowStep",
    "SoftBounds",
    "make_device",
]
