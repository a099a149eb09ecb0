"""Validated configuration of a crossbar tile: device, pulsed update and read periphery.

Parameter names and defaults follow IBM aihwkit 1.1.0 wherever the model is the same, so a
user can carry a configuration across. All weights and steps are in *weight units* (the
normalised conductance a tile exposes); a lab backend maps them to siemens.

Every model forbids unknown keys, so a typo is an error that lists the valid keys instead of a
silently ignored setting.
"""

from __future__ import annotations

import json
import tomllib
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, model_validator

from hilctl.errors import ConfigError
from protocols.schema import StrictModel

#: The smallest magnitude of a cell's mean bounds (weight units): a range narrower than this
#: leaves no room for a pulse (and ``1 / bound`` overflows for denormal bounds).
MIN_BOUND = 1e-6


class PulsedDeviceConfig(StrictModel):
    """Parameters that every pulsed device shares (aihwkit ``PulsedDevice``).

    A pulse moves a cell by ``dw_min`` times the model's response at its weight. Device-to-device
    spreads (``*_dtod``) are standard deviations drawn once per cell: relative for ``dw_min``,
    ``w_max`` and ``w_min``, in units of ``dw_min`` for ``up_down``, absolute for a model's
    exponents and slopes; ``dw_min_std`` is the relative cycle-to-cycle noise of every single
    pulse (docs/emulator.md, section 2).
    """


    dw_min: float = Field(0.001, ge=1e-9, le=1e3, description="mean step of one pulse (weight units)")
    dw_min_dtod: float = Field(0.3, ge=0, le=10, description="device-to-device spread of the step gain")
    dw_min_std: float = Field(0.3, ge=0, le=10, description="cycle-to-cycle noise of a pulse, relative")
    up_down: float = Field(0.0, ge=-10, le=10, description="systematic up/down step imbalance (all cells)")
    up_down_dtod: float = Field(0.01, ge=0, le=10, description="device-to-device spread of up_down")
    w_max: float = Field(0.6, le=1e6, description="mean upper bound of a cell (weight units)")
    w_min: float = Field(-0.6, ge=-1e6, description="mean lower bound of a cell (weight units)")
    w_max_dtod: float = Field(0.3, ge=0, le=10, description="device-to-device spread of w_max, relative")
    w_min_dtod: float = Field(0.3, ge=0, le=10, description="device-to-device spread of w_min, relative")

    @model_validator(mode="after")
    def _bounds_ordered(self) -> PulsedDeviceConfig:
        if not self.w_min <= -MIN_BOUND and self.w_max >= MIN_BOUND:
            raise ValueError(
                f"w_min <= -{MIN_BOUND} and w_max >= {MIN_BOUND} are required (got "
                f"w_min={self.w_min}, w_max={self.w_max})"
            )
        return self


class ConstantStepConfig(PulsedDeviceConfig):
    """Every pulse moves the cell by the same step until it hits a bound."""

    model: Literal["constant-step"] = "constant-step"


class LinearStepConfig(PulsedDeviceConfig):
    """The step changes linearly with the weight (aihwkit ``LinearStepDevice``).

    ``gamma_up``/``gamma_down`` are the relative slopes: an up step is
    ``dw_up * (1 - gamma_up * w / w_max)`` and a down step ``dw_down * (1 - gamma_down * w / w_min)``,
    against the configured mean bounds (aihwkit's ``mean_bound_reference``).
    """

    model: Literal["linear-step"] = "linear-step"
    gamma_up: float = Field(0.0, ge=0, le=1e3, description="relative slope of the up step")
    gamma_down: float = Field(0.0, ge=0, le=1e3, description="relative slope of the down step")
    gamma_up_dtod: float = Field(0.05, ge=0, le=1e3, description="device-to-device spread of gamma_up")
    gamma_down_dtod: float = Field(0.05, ge=0, le=1e3,
                                   description="device-to-device spread of gamma_down")
    mult_noise: bool = Field(True, description="cycle noise scales with the step (else additive)")


class SoftBoundsConfig(PulsedDeviceConfig):
    """Steps shrink linearly to zero at the bounds (aihwkit ``SoftBoundsDevice``).

    With ``tau`` set, the bounds are ``+-tau``: the paper's asymmetric linear device (ALD).
    """

    model: Literal["soft-bounds"] = "soft-bounds"
    mult_noise: bool = Field(True, description="cycle noise scales with the step (else additive)")
    tau: float | None = Field(None, ge=1e-6, le=1e6, description="set w_max = tau and w_min = -tau")

    @model_validator(mode="before")
    @classmethod
    def _tau_sets_bounds(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("tau"), int | float):
            return data  # no tau, or a bad one that field validation reports by name
        tau = float(data["tau"])
        for key, value in (("w_max", tau), ("w_min", -tau)):
            if key in data and data[key] != value:
                raise ValueError(f"tau={tau} sets {key}={value}, but {key}={data[key]!r} given")
        return {**data, "w_max": tau, "w_min": -tau}


class PowStepConfig(PulsedDeviceConfig):
    """Power-law response (aihwkit ``PowStepDevice``).

    With ``omega = (b_max - w) / (b_max - b_min)`` an up step is ``dw_up * omega**gamma_up`` and
    a down step ``dw_down * (1 - omega)**gamma_down`` (so the step in the middle of the range is
    ``dw * 0.5**gamma``).
    """

    model: Literal["pow-step"] = "pow-step"
    pow_gamma: float = Field(1.0, gt=0, le=100, description="exponent of the response")
    pow_gamma_dtod: float = Field(0.1, ge=0, le=100, description="device-to-device spread of pow_gamma")
    pow_up_down: float = Field(0.0, ge=-100, le=100, description="up/down difference of the exponent")
    pow_up_down_dtod: float = Field(0.0, ge=0, le=100, description="device-to-device spread of pow_up_down")


class ExpStepConfig(PulsedDeviceConfig):
    """Exponential response (aihwkit ``ExpStepDevice``).

    With ``z = 2 a w / (b_max - b_min) + b`` an up step is
    ``dw_up * max(1 - A_up exp(gamma_up z), 0)`` and a down step
    ``dw_down * max(1 - A_down exp(-gamma_down z), 0)``.
    """

    model: Literal["exp-step"] = "exp-step"
    A_up: float = Field(0.00081, ge=0, le=1e6)
    A_down: float = Field(0.36833, ge=0, le=1e6)
    gamma_up: float = Field(12.44625, ge=-1e3, le=1e3)
    gamma_down: float = Field(12.78785, ge=-1e3, le=1e3)
    a: float = Field(0.244, ge=-1e3, le=1e3)
    b: float = Field(0.2425, ge=-1e3, le=1e3)


class PiecewiseStepConfig(PulsedDeviceConfig):
    """Step sizes from a table (aihwkit ``PiecewiseStepDevice``), e.g. from measured data.

    ``piecewise_up``/``piecewise_down`` are relative step sizes at equally spaced weights from
    ``b_min`` to ``b_max``; the step at ``w`` interpolates linearly between the nodes.
    """

    model: Literal["piecewise"] = "piecewise"
    piecewise_up: list[Annotated[float, Field(ge=0, le=1e6)]] = Field(
        default_factory=lambda: [1.0], min_length=1, max_length=10_000)
    piecewise_down: list[Annotated[float, Field(ge=0, le=1e6)]] = Field(
        default_factory=lambda: [1.0], min_length=1, max_length=10_000)


DeviceConfig = Annotated[
    ConstantStepConfig
    | LinearStepConfig
    | SoftBoundsConfig
    | PowStepConfig
    | ExpStepConfig
    | PiecewiseStepConfig,
    Field(discriminator="model"),
]

_Model = TypeVar("_Model", bound=BaseModel)


def registry(union: Any, key: str, base: type[_Model]) -> dict[str, type[_Model]]:
    """``{name: model}`` of a discriminated union ``Annotated[A | B | ..., Field(...)]`` of
    models, each named by its default of ``key``: the union is the one declaration of a
    registry, and this dict is derived from it."""
    members = typing.get_args(typing.get_args(union)[0])
    table: dict[str, type[_Model]] = {}
    for model in members:
        if not issubclass(model, base):
            raise TypeError(f"{model.__name__} is not a {base.__name__}")
        table[model.model_fields[key].default] = model
    return table


#: Every device model's config by name (``--device``), in the order of :data:`DeviceConfig`.
DEVICE_CONFIGS = registry(DeviceConfig, "model", PulsedDeviceConfig)


def no_variation(model: str) -> dict[str, float]:
    """Overrides of ``model``'s config that switch off every device-to-device spread
    (``*_dtod``) and the cycle-to-cycle noise (``dw_min_std``)."""
    fields = DEVICE_CONFIGS[model].model_fields
    return {key: 0.0 for key in fields if key.endswith("_dtod") or key == "dw_min_std"}


class UpdateConfig(StrictModel):
    """How ``update(x, d, lr)`` writes ``W <- W - lr d x^T`` onto the devices.

    ``pulsed``: stochastic pulse trains of ``desired_bl`` slots, as aihwkit does it.
    ``expected``: the paper's discrete-time model, ``W + dW F(W) - |dW| G(W)``, no granularity.
    ``ideal``: floating point, the digital reference (no bounds, no noise).
    """


    mode: Literal["pulsed", "expected", "ideal"] = "pulsed"
    desired_bl: int = Field(31, ge=1, le=10_000, description="bit length of a pulse train")
    update_management: bool = Field(True, description="balance the x and d trains")
    update_bl_management: bool = Field(True, description="shorten the train when fewer slots do")
    aggregate_batch: bool = Field(
        True, description="apply a mini-batch's up and down pulse counts in one pass per cell"
    )
    engine: Literal["auto", "numba", "numpy"] = Field(
        "auto", description="the emulator's engine: compiled (numba), the numpy reference, or "
        "auto (numba where it imports)")
    threads: int = Field(1, ge=1, le=256, description="threads of the compiled engine (results "
                         "are the same for any count)")


class PeripheryConfig(StrictModel):
    """Read periphery of a forward or backward pass (aihwkit ``IOParameters``).

    Inputs are scaled by ``max|x|`` (noise management), quantised with step
    ``2 inp_bound inp_res`` and clipped to ``+-inp_bound``; outputs get Gaussian noise
    ``out_noise``, are quantised with step ``2 out_bound out_res`` and clipped to ``+-out_bound``
    (resolutions are fractions of the full range, as in aihwkit). Bound management repeats a
    saturated sample with its input halved. See :mod:`sim.periphery` for the exact sequence.
    """


    is_perfect: bool = Field(False, description="turn every periphery effect off")
    inp_bound: float = Field(1.0, ge=1e-9, le=1e6)
    inp_res: float = Field(1 / 126, ge=0, le=1, description="DAC step / full range (0: none, "
                           "else at least 1e-9)")
    out_bound: float = Field(12.0, ge=1e-9, le=1e9)
    out_res: float = Field(1 / 510, ge=0, le=1, description="ADC step / full range (0: none, "
                           "else at least 1e-9)")
    out_noise: float = Field(0.06, ge=0, le=1e6, description="output noise std (output units)")
    w_noise: float = Field(0.0, ge=0, le=1e6, description="weight read noise std per MVM (weight units)")
    noise_management: Literal["abs-max", "none"] = "abs-max"
    bound_management: Literal["iterative", "none"] = "iterative"
    max_bm_factor: float = Field(1000, ge=1, le=1e12, description="largest input reduction of bound mgmt")
    max_bm_res: float = Field(0.25, ge=1e-9, le=1e6,
                              description="bound mgmt stops at reduction max_bm_res/r_in")

    @model_validator(mode="after")
    def _resolutions_usable(self) -> PeripheryConfig:
        for key in ("inp_res", "out_res"):
            if 0 < getattr(self, key) < 1e-9:
                raise ValueError(f"{key}: 0 (no quantisation) or at least 1e-9; got "
                                 f"{getattr(self, key)}")
        return self


#: Largest tile: 4 x 4096 x 4096 cells (every per-cell array then takes 256 MiB in float32).
MAX_CELLS = 1 << 26


class TileConfig(StrictModel):
    """Everything needed to open one tile of ``rows x cols`` cells (rows = outputs)."""


    rows: int = Field(32, ge=1, le=65_536)
    cols: int = Field(32, ge=1, le=65_536)
    device: DeviceConfig = Field(default_factory=SoftBoundsConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    periphery: PeripheryConfig = Field(default_factory=PeripheryConfig)
    reference: Literal["none", "symmetric-point"] = Field(
        "none", description="read weights relative to each cell's symmetric point"
    )
    seed: int | None = Field(0, ge=0, description="seed of every random draw; None: fresh entropy")

    @model_validator(mode="after")
    def _fits_in_memory(self) -> TileConfig:
        if self.rows * self.cols > MAX_CELLS:
            raise ValueError(
                f"rows x cols = {self.rows * self.cols:,} cells; at most {MAX_CELLS:,} are allowed"
            )
        return self


# ---------------------------------------------------------------------------------------------
# Building configs from user input, with errors that name the field and the allowed values.
# ---------------------------------------------------------------------------------------------

_SECTIONS: dict[str, type[BaseModel]] = {"update": UpdateConfig, "periphery": PeripheryConfig}


def _allowed(model: type[BaseModel]) -> str:
    names = (f.alias or k for k, f in model.model_fields.items())
    return ", ".join(sorted(k for k in names if k not in ("model", "name")))


def validation_message(prefix: str, exc: ValidationError) -> str:
    """One line per problem: ``prefix.field: what is wrong (got value)``."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if isinstance(got, Mapping) else f" (got {got!r})"
        lines.append(f"{where}: {msg}{shown}")
    return "; ".join(lines)


def build_section(prefix: str, model: type[BaseModel], values: Mapping[str, Any]) -> BaseModel:
    """``model`` validated from ``values``; ``ConfigError`` names ``prefix.key`` and the allowed keys."""
    known = set(model.model_fields) | {f.alias for f in model.model_fields.values() if f.alias}
    unknown = sorted(set(values) - known)
    if unknown:
        allowed = _allowed(model)
        raise ConfigError(
            f"{prefix}.{unknown[0]}: unknown key; "
            + (f"valid keys are: {allowed}" if allowed else f"this {prefix} takes no keys")
        )
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise ConfigError(validation_message(prefix, exc)) from None


def device_config(model: str, /, **values: Any) -> PulsedDeviceConfig:
    """The validated device config of ``model`` with ``values`` overriding the defaults."""
    if model not in DEVICE_CONFIGS:
        raise ConfigError(
            f"device.model: unknown device model {model!r}; allowed: {', '.join(DEVICE_CONFIGS)}"
        )
    if "model" in values:
        raise ConfigError("device.model: choose the model with --device, not as a device key")
    built = build_section("device", DEVICE_CONFIGS[model], {**values, "model": model})
    assert isinstance(built, PulsedDeviceConfig)
    return built


def section_config(section: str, **values: Any) -> BaseModel:
    """The validated ``update`` or ``periphery`` config with ``values`` over the defaults."""
    if section not in _SECTIONS:
        raise ConfigError(f"unknown section {section!r}; allowed: {', '.join(_SECTIONS)}")
    return build_section(section, _SECTIONS[section], values)


def read_toml(path: str | Path, option: str) -> dict[str, Any]:
    """The contents of a TOML file given with ``option`` (e.g. ``--config``); ``ConfigError``
    names the option and the file when it is missing, unreadable, not UTF-8 or not TOML.

    A leading byte-order mark (as some Windows editors write) is skipped.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"{option}: no such file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{option} {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{option} {path}: not UTF-8 text (byte {exc.start}: "
                          f"{raw[exc.start:exc.start + 1]!r}); save the file as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{option} {path}: {exc}") from None


def parse_value(text: str) -> Any:
    """A ``--set`` value: JSON where it parses (numbers, true/false, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        lowered = text.strip().lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        return text


def parse_assignments(items: Iterable[str], sections: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Split ``section.key=value`` strings into ``{section: {key: value}}``.

    Raises :class:`ConfigError` naming the item when it is malformed or its section unknown.
    """
    allowed = tuple(sections)
    out: dict[str, dict[str, Any]] = {s: {} for s in allowed}
    for item in items:
        name, sep, raw = item.partition("=")
        section, dot, key = name.strip().partition(".")
        if not sep or not dot or not key:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. device.dw_min=0.01")
        if section not in out:
            raise ConfigError(
                f"--set {item!r}: unknown section {section!r}; allowed: {', '.join(allowed)}"
            )
        out[section][key] = parse_value(raw)
    return out


def tile_config(
    *,
    rows: int,
    cols: int,
    device: str,
    device_values: Mapping[str, Any] | None = None,
    update_values: Mapping[str, Any] | None = None,
    periphery_values: Mapping[str, Any] | None = None,
    reference: str = "none",
    seed: int | None = 0,
) -> TileConfig:
    """A validated :class:`TileConfig` from a device model name and per-section overrides."""
    parts: dict[str, Any] = {
        "device": device_config(device, **dict(device_values or {})),
        "update": section_config("update", **dict(update_values or {})),
        "periphery": section_config("periphery", **dict(periphery_values or {})),
    }
    try:
        return TileConfig.model_validate({"rows": rows, "cols": cols, "reference": reference,
                                          "seed": seed, **parts})
    except ValidationError as exc:
        raise ConfigError(validation_message("tile", exc)) from None

