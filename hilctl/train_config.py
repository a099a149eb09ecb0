"""Validated configuration of a training run: task, algorithm and the tiles they run on.

A run is resolved from, in order of precedence (later wins): the defaults, a TOML file
(sections ``[task]``, ``[algorithm]``, ``[device]``, ``[update]``, ``[periphery]``, ``[tile]``
and a top-level ``seed``), the command-line choices (``--task``, ``--algorithm``, ``--device``,
``--seed``) and ``--set section.key=value`` overrides. Every section forbids unknown keys, and
an error names ``section.key`` and the keys that are allowed.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hilctl.config import (
    DEVICE_CONFIGS,
    DeviceConfig,
    PeripheryConfig,
    SoftBoundsConfig,
    UpdateConfig,
    build_section,
    device_config,
    read_toml,
    validation_message,
)
from hilctl.errors import ConfigError

_STRICT = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)


# -- algorithms ---------------------------------------------------------------------------------


class DigitalSgdConfig(BaseModel):
    """Floating-point SGD: the reference."""

    model_config = _STRICT
    name: Literal["digital-sgd"] = "digital-sgd"


class AnalogSgdConfig(BaseModel):
    """Plain SGD written onto one tile by pulsed outer-product updates."""

    model_config = _STRICT
    name: Literal["analog-sgd"] = "analog-sgd"


class TikiTakaConfig(BaseModel):
    """Tiki-Taka v1 (aihwkit ``TransferCompound``): fast tile A, slow tile C, ``W = gamma A + C``.

    Gradients go to A at the absolute rate ``fast_lr``; every ``transfer_every`` updates,
    ``n_reads_per_transfer`` columns of A are read (cyclically, one-hot forward) and written
    onto C at ``transfer_lr * lr``. ``n_reads_per_transfer`` equal to the columns is the
    full-matrix transfer of the paper's analysis.
    """

    model_config = _STRICT
    name: Literal["tiki-taka"] = "tiki-taka"
    gamma: float = Field(0.0, ge=0, description="weight of the fast tile in W = gamma A + C")
    fast_lr: float = Field(0.1, gt=0, description="learning rate of the fast tile (absolute)")
    transfer_lr: float = Field(1.0, ge=0, description="transfer rate, times the SGD lr")
    transfer_every: int = Field(1, ge=1, description="updates (mini-batches) between transfers")
    n_reads_per_transfer: int = Field(1, ge=1, description="columns of A moved per transfer")


_GRANULARITY = Field(
    None, gt=0, description="weight change of one pulse (weight units; aihwkit's weight "
    "granularity, the device's dw_min); None: from the run's device")
_FAST_LR = Field(0.1, gt=0, description="learning rate of the fast tile A (absolute)")
_TRANSFER_LR = Field(1.0, ge=0, description="rate of the read into the buffer, times the SGD lr")
_DESIRED_BL = Field(1, ge=1, le=10_000, description="most pulses written per cell and transfer "
                    "(aihwkit transfer_update.desired_bl)")
_FORGET_BUFFER = Field(True, description="after a write, H <- momentum H (True) or "
                       "H <- H - (1 - momentum) n thr (False)")


class Ttv2Config(BaseModel):
    """Tiki-Taka v2 (aihwkit ``BufferedTransferCompound``): A, a digital buffer H, C.

    Gradients go to A at ``fast_lr`` (absolute). Every ``transfer_every`` updates (mini-batches
    if ``units_in_mbatch``, else samples) the next ``n_reads_per_transfer`` columns j of A are
    read (one-hot forward) into ``H[:, j] += transfer_lr * lr * A[:, j]`` (times ``gamma`` when
    ``gamma > 0``). Cells with ``|H| >= thr = thres_scale * granularity`` get
    ``n = trunc(H / thr)`` pulses (at most ``desired_bl``) on C; then H is forgotten to
    ``momentum * H`` (``forget_buffer``) or reduced by ``(1 - momentum) n thr``.
    """

    model_config = _STRICT
    name: Literal["ttv2"] = "ttv2"
    gamma: float = Field(0.0, ge=0, description="weight of the fast tile in W = gamma A + C")
    fast_lr: float = _FAST_LR
    transfer_lr: float = _TRANSFER_LR
    transfer_every: float = Field(1.0, gt=0, description="updates between transfers (see "
                                  "units_in_mbatch)")
    units_in_mbatch: bool = Field(True, description="transfer_every counts mini-batches "
                                  "(True) or samples (False)")
    n_reads_per_transfer: int = Field(1, ge=1, description="columns of A read per transfer")
    thres_scale: float = Field(1.0, gt=0, description="buffer threshold, in units of granularity")
    momentum: float = Field(0.1, ge=0, le=1, description="fraction of the buffer kept after a write")
    forget_buffer: bool = _FORGET_BUFFER
    desired_bl: int = _DESIRED_BL
    granularity: float | None = _GRANULARITY


class _ChopperBufferConfig(BaseModel):
    """The settings c-TTv2 and AGAD share: the fast tile's rates, the transfer period and the
    digital buffer in threshold units (see :class:`ChoppedTtv2Config`)."""

    model_config = _STRICT
    fast_lr: float = _FAST_LR
    transfer_lr: float = _TRANSFER_LR
    transfer_every: float = Field(1.0, gt=0, description="updates between transfers (see "
                                  "units_in_mbatch)")
    units_in_mbatch: bool = Field(False, description="transfer_every counts mini-batches "
                                  "(True) or samples (False)")
    buffer_granularity: float = Field(1.0, gt=0, description="buffer threshold, in units of "
                                      "granularity")
    auto_granularity: float = Field(0.0, ge=0, description="if > 0, scale the threshold by "
                                    "auto_granularity / (cols transfer_every), e.g. 1000")
    momentum: float = Field(0.0, ge=0, le=1, description="fraction of the buffer kept after a write")
    forget_buffer: bool = _FORGET_BUFFER
    desired_bl: int = _DESIRED_BL
    granularity: float | None = _GRANULARITY


class ChoppedTtv2Config(_ChopperBufferConfig):
    """c-TTv2 (aihwkit ``ChoppedTransferCompound``): TTv2 with sign choppers on A.

    A takes ``-fast_lr (c_out * d)(c_in * x)^T`` with chopper signs ``c_in`` (per column) and
    ``c_out`` (per row); a read of column j is multiplied by ``c_in[j] c_out`` again, which undoes
    the chopping of the gradient but not of A's drift. H is in threshold units:
    ``H[:, j] += c_in[j] c_out A[:, j] transfer_lr lr / bg`` with
    ``bg = buffer_granularity * granularity`` (times ``auto_granularity / (cols transfer_every)``
    when ``auto_granularity > 0``); ``|H| >= 1`` writes ``n = trunc(H)`` pulses (at most
    ``desired_bl``). After reading column j its ``c_in[j]`` flips with probability
    ``in_chop_prob`` (``in_chop_random``) or every ``max(ceil(1/in_chop_prob), 2)`` sweeps; after
    the last column each ``c_out`` flips with probability ``out_chop_prob``. One column per
    transfer; ``W = C``.
    """

    name: Literal["c-ttv2"] = "c-ttv2"
    in_chop_prob: float = Field(0.1, ge=0, le=1, description="flip probability (or frequency) "
                                "of a column's input chopper, per read")
    in_chop_random: bool = Field(True, description="flip at random (True) or regularly (False)")
    out_chop_prob: float = Field(0.0, ge=0, le=1, description="flip probability of each output "
                                 "chopper, per full sweep")
    no_buffer: bool = Field(False, description="start each read from an empty buffer")


class AgadConfig(_ChopperBufferConfig):
    """AGAD (aihwkit ``DynamicTransferCompound``): c-TTv2 with a dynamic reference.

    Column j's input chopper flips every ``n = max(ceil(1/in_chop_prob), 2)`` full sweeps
    (``in_chop_random`` adds random flips). Each read ``v`` of column j updates a running mean
    ``m <- (1 - s) m + s v`` with ``s = min(tail_weightening / n, 1)``; at the first read after a
    flip the reference ``mu`` takes the running mean, and the buffer gets
    ``c_in[j] (v - mu) transfer_lr lr / bg`` (thresholds and writes as in c-TTv2). Nothing is
    written to C during the first ``n`` sweeps. ``W = C``.
    """

    name: Literal["agad"] = "agad"
    in_chop_prob: float = Field(0.1, gt=0, le=1, description="chopper frequency: a flip every "
                                "max(ceil(1/in_chop_prob), 2) sweeps")
    in_chop_random: bool = Field(False, description="also flip at random with in_chop_prob")
    tail_weightening: float = Field(5.0, gt=0, description="weight of recent reads in the "
                                    "running mean (s = tail_weightening / period)")
    buffer_cap: float = Field(0.0, ge=0, description="without forget_buffer: clip H to "
                              "+-buffer_cap desired_bl (0: no cap)")


class ResidualConfig(TikiTakaConfig):
    """Residual learning (Wu et al. 2025, RL-v1): Tiki-Taka v1 with ``gamma > 0``, ``W = gamma A
    + C``, on zero-shifted tiles (``tile.reference = "symmetric-point"``, so ``G(0) = 0``).

    The transfer is Tiki-Taka's; A holds the residual ``(W* - C) / gamma`` that C has not
    learned yet. The authors use gamma 0.4 (their toy problem and ResNet runs).
    """

    name: Literal["residual"] = "residual"  # type: ignore[assignment]
    gamma: float = Field(0.4, gt=0, description="weight of the fast tile in W = gamma A + C")


AlgorithmConfig = Annotated[
    DigitalSgdConfig | AnalogSgdConfig | TikiTakaConfig | Ttv2Config | ChoppedTtv2Config | AgadConfig
    | ResidualConfig,
    Field(discriminator="name"),
]
ALGORITHMS: dict[str, type[BaseModel]] = {
    "digital-sgd": DigitalSgdConfig,
    "analog-sgd": AnalogSgdConfig,
    "tiki-taka": TikiTakaConfig,
    "ttv2": Ttv2Config,
    "c-ttv2": ChoppedTtv2Config,
    "agad": AgadConfig,
    "residual": ResidualConfig,
}


# -- tasks --------------------------------------------------------------------------------------


class LeastSquaresConfig(BaseModel):
    """Streaming linear regression ``y = W* x + eps`` with ``x ~ N(0, I)``, batch 1.

    ``W*`` (out x in) is drawn ``N(0, w_star_std^2)`` and clipped to ``+-0.9 tau`` when the
    device has bounds ``+-tau``. The loss is ``0.5 ||W x - y||^2``; ``rel_err`` is
    ``||W - W*||_F^2 / ||W*||_F^2`` averaged over the last ``eval_window`` steps.
    """

    model_config = _STRICT
    name: Literal["least-squares"] = "least-squares"
    out: int = Field(8, ge=1, le=4096, description="outputs (rows of W)")
    in_: int = Field(16, ge=1, le=4096, alias="in", description="inputs (columns of W)")
    steps: int = Field(4000, ge=1, description="samples, one update each")
    lr: float = Field(0.02, gt=0, description="SGD learning rate")
    sigma: float = Field(0.1, ge=0, description="std of the label noise eps")
    w_star_std: float = Field(0.3, gt=0, description="std of the entries of W*")
    eval_window: int = Field(500, ge=1, description="steps the final rel_err averages over")
    log_every: int = Field(50, ge=1, description="steps per recorded history point")


class MnistFcnConfig(BaseModel):
    """A 784-256-128-10 sigmoid network on MNIST, softmax cross-entropy, every layer analog."""

    model_config = _STRICT
    name: Literal["mnist-fcn"] = "mnist-fcn"
    epochs: int = Field(10, ge=1)
    batch: int = Field(10, ge=1)
    lr: float = Field(0.05, gt=0)
    hidden: list[int] = Field(default_factory=lambda: [256, 128], min_length=1)
    lr_step_epochs: int | None = Field(None, ge=1, description="StepLR: decay lr every N epochs")
    lr_step_gamma: float = Field(0.1, gt=0, description="StepLR decay factor")
    data_dir: str | None = Field(None, description="folder with the MNIST IDX files")
    limit_train: int | None = Field(None, ge=1, description="use only the first N training images")


class MnistCnnConfig(BaseModel):
    """A LeNet-like CNN on MNIST (the paper's Fig. 5), softmax cross-entropy, every layer analog.

    ``conv5x5 channels[0] -> tanh -> maxpool 2 -> conv5x5 channels[1] -> tanh -> maxpool 2 ->
    FC hidden -> tanh -> FC 10``; each convolution runs on one tile through im2col. The paper
    trains 80 epochs at batch 8 and lr 0.05 (its digital baseline at 0.1) with StepLR(35, 0.1).
    """

    model_config = _STRICT
    name: Literal["mnist-cnn"] = "mnist-cnn"
    epochs: int = Field(10, ge=1)
    batch: int = Field(8, ge=1)
    lr: float = Field(0.05, gt=0)
    channels: tuple[Annotated[int, Field(ge=1)], Annotated[int, Field(ge=1)]] = Field(
        (16, 32), description="output channels of the two convolutions")
    kernel_size: int = Field(5, ge=1, le=9, description="side of the square kernels (28x28 input)")
    hidden: int = Field(128, ge=1, description="width of the fully connected hidden layer")
    lr_step_epochs: int | None = Field(None, ge=1, description="StepLR: decay lr every N epochs")
    lr_step_gamma: float = Field(0.1, gt=0, description="StepLR decay factor")
    data_dir: str | None = Field(None, description="folder with the MNIST IDX files")
    limit_train: int | None = Field(None, ge=1, description="use only the first N training images")


TaskConfig = Annotated[LeastSquaresConfig | MnistFcnConfig | MnistCnnConfig, Field(discriminator="name")]
TASKS: dict[str, type[BaseModel]] = {
    "least-squares": LeastSquaresConfig,
    "mnist-fcn": MnistFcnConfig,
    "mnist-cnn": MnistCnnConfig,
}


class TileSection(BaseModel):
    """Options of every tile a run opens, and how a layer's weights map onto tiles.

    The mapping follows aihwkit 1.1.0's ``MappingParameter`` (names and defaults): a layer with
    more inputs than ``max_input_size`` or more outputs than ``max_output_size`` is split over
    several tiles (0: never split), and with ``digital_bias`` the biases are trained in floating
    point instead of as a last column of the tile.
    """

    model_config = _STRICT
    reference: Literal["none", "symmetric-point"] = "none"
    max_input_size: int = Field(512, ge=0)
    max_output_size: int = Field(512, ge=0)
    digital_bias: bool = True


class TrainConfig(BaseModel):
    """One training run, resolved and validated."""

    model_config = _STRICT
    task: TaskConfig = Field(default_factory=LeastSquaresConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AnalogSgdConfig)
    device: DeviceConfig = Field(default_factory=SoftBoundsConfig)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    periphery: PeripheryConfig = Field(default_factory=PeripheryConfig)
    tile: TileSection = Field(default_factory=TileSection)
    seed: int = Field(0, ge=0)

    def summary(self) -> str:
        """``task / algorithm / device`` in a few words, for tables and run lists."""
        return f"{self.task.name} / {self.algorithm.name} / {self.device.model}"


SECTIONS = ("task", "algorithm", "device", "update", "periphery", "tile")


def _choose(kind: str, name: str, table: Mapping[str, Any]) -> str:
    if name not in table:
        raise ConfigError(f"{kind}: unknown {kind} {name!r}; allowed: {', '.join(table)}")
    return name


def load_toml(path: str | Path) -> dict[str, Any]:
    """The sections of a TOML config file; ``ConfigError`` names the file if it cannot be read."""
    data = read_toml(path, "--config")
    unknown = sorted(set(data) - {*SECTIONS, "seed"})
    if unknown:
        raise ConfigError(f"--config {path}: unknown section {unknown[0]!r}; allowed: "
                          f"{', '.join(SECTIONS)} and seed")
    for section in SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise ConfigError(f"--config {path}: [{section}] must be a table of keys, "
                              f"got {data[section]!r}")
    return data


def resolve_train_config(
    *,
    file_values: Mapping[str, Any] | None = None,
    task: str | None = None,
    algorithm: str | None = None,
    device: str | None = None,
    seed: int | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> TrainConfig:
    """Merge defaults, a config file, command-line choices and ``--set`` overrides, validated."""
    base = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (file_values or {}).items()}
    sections: dict[str, dict[str, Any]] = {s: dict(base.get(s, {})) for s in SECTIONS}
    overrides = overrides or {}

    def name_of(section: str, key: str, flag: str | None, default: str) -> str:
        """``--set`` wins over the flag, the flag over the file, the file over the default."""
        filed = sections[section].pop(key, default)
        return str(overrides.get(section, {}).get(key, flag or filed))

    task_name = _choose("task", name_of("task", "name", task, "least-squares"), TASKS)
    algo_name = _choose("algorithm", name_of("algorithm", "name", algorithm, "analog-sgd"),
                        ALGORITHMS)
    model = _choose("device.model", name_of("device", "model", device, "soft-bounds"),
                    DEVICE_CONFIGS)
    for section, values in overrides.items():
        sections[section].update(values)
    for section, key in (("task", "name"), ("algorithm", "name"), ("device", "model")):
        sections[section].pop(key, None)
    parts = {
        "task": build_section("task", TASKS[task_name], {**sections["task"], "name": task_name}),
        "algorithm": build_section("algorithm", ALGORITHMS[algo_name],
                                   {**sections["algorithm"], "name": algo_name}),
        "device": device_config(model, **sections["device"]),
        "update": build_section("update", UpdateConfig, sections["update"]),
        "periphery": build_section("periphery", PeripheryConfig, sections["periphery"]),
        "tile": build_section("tile", TileSection, sections["tile"]),
    }
    chosen_seed = seed if seed is not None else base.get("seed", 0)
    try:
        return TrainConfig(seed=chosen_seed, **parts)
    except ValidationError as exc:
        raise ConfigError(validation_message("", exc)) from None


def device_bound(config: TrainConfig) -> float:
    """The smaller of the mean bounds ``w_max`` and ``-w_min``: the ``tau`` of the device."""
    return min(config.device.w_max, -config.device.w_min)
