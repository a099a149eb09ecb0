"""Training algorithms as weight arrays that use only the tile interface.

A network layer holds a :class:`WeightArray`: something that multiplies forward and backward and
takes ``update(x, d, lr)`` for ``W <- W - lr d x^T``. Which tiles sit behind it, and how the
update reaches them, is the algorithm (DESIGN.md section 7):

- digital SGD: one :class:`~hilctl.digital.DigitalTile` (floating point);
- Analog SGD: one analog tile, updated by its pulsed outer product;
- Tiki-Taka v1: a fast tile A taking the gradients and a slow tile C fed from A by column reads;
- residual learning: Tiki-Taka v1 with ``gamma > 0`` on zero-shifted tiles;
- TTv2, c-TTv2 and AGAD: a digital buffer H between A and C, thresholded into whole pulses on C
  (:class:`BufferedTransfer`, :class:`ChoppedTransfer`, :class:`DynamicTransfer`).

The later algorithms follow aihwkit 1.1.0 (``rpu_transfer_device.cpp``,
``rpu_buffered_transfer_device.cpp``, ``rpu_chopped_transfer_device.cpp``,
``rpu_dynamic_transfer_device.cpp``), except that C is written with ``Tile.apply_pulses``
(exactly ``n`` pulses) where aihwkit fires a one-hot pulse train of bit length ``desired_bl``
(the same ``n`` pulses for aihwkit's default ``desired_bl = 1``).

Nothing here knows the backend: tiles come from a factory, so every algorithm runs unchanged on
the emulator and on a lab chip.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hilctl.config import PulsedDeviceConfig
from hilctl.digital import DigitalTile
from hilctl.errors import ConfigError
from hilctl.tile import Tile, as_update
from hilctl.train_config import (
    AgadConfig,
    AnalogSgdConfig,
    ChoppedTtv2Config,
    DigitalSgdConfig,
    ResidualConfig,
    TikiTakaConfig,
    Ttv2Config,
)

Array = NDArray[np.float64]
#: Opens an analog tile of (rows, cols) on the run's backend; each call a new tile.
TileFactory = Callable[[int, int], Tile]


class WeightArray(Protocol):
    """What a layer needs of its weights."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def forward(self, x: ArrayLike) -> Array: ...

    def backward(self, d: ArrayLike) -> Array: ...

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None: ...

    def read_weights(self) -> Array: ...

    def program_weights(self, target: ArrayLike) -> Array: ...


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


class TikiTaka:
    """Tiki-Taka v1 (aihwkit's ``TransferCompound``): ``W = gamma A + C``.

    Every update goes to the fast tile A at the absolute rate ``fast_lr``. Every
    ``transfer_every`` updates, the next ``n_reads_per_transfer`` columns of A (cyclically) are
    read with a one-hot forward through A's periphery and written onto C as a pulsed update at
    ``transfer_lr * lr``: ``C[:, j] += transfer_lr * lr * A[:, j]``.
    """

    def __init__(self, fast: Tile, slow: Tile, config: TikiTakaConfig) -> None:
        if (fast.rows, fast.cols) != (slow.rows, slow.cols):
            raise ValueError("the fast and the slow tile must have the same shape")
        self.fast, self.slow, self.config = fast, slow, config
        self._updates = 0
        self._next_column = 0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.slow.rows, self.slow.cols)

    def forward(self, x: ArrayLike) -> Array:
        y = self.slow.forward(x)
        if self.config.gamma:
            y = y + self.config.gamma * self.fast.forward(x)
        return y

    def backward(self, d: ArrayLike) -> Array:
        g = self.slow.backward(d)
        if self.config.gamma:
            g = g + self.config.gamma * self.fast.backward(d)
        return g

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        self.fast.update(x, d, self.config.fast_lr)
        self._updates += 1
        if self._updates % self.config.transfer_every == 0:
            self.transfer(lr)

    def transfer(self, lr: float) -> None:
        """Move the next columns of A onto C."""
        cols = self.slow.cols
        count = min(self.config.n_reads_per_transfer, cols)
        columns = (self._next_column + np.arange(count)) % cols
        self._next_column = int(columns[-1] + 1) % cols
        one_hot = np.zeros((count, cols))
        one_hot[np.arange(count), columns] = 1.0
        read = self.fast.forward(one_hot)  # (count, rows): the columns of A
        self.slow.update(one_hot, -read, self.config.transfer_lr * lr)

    def read_weights(self) -> Array:
        weights = self.slow.read_weights()
        if self.config.gamma:
            weights = weights + self.config.gamma * self.fast.read_weights()
        return weights

    def program_weights(self, target: ArrayLike) -> Array:
        """C takes the target and A starts at zero."""
        self.fast.program_weights(np.zeros(self.shape))
        self.slow.program_weights(target)
        return self.read_weights()


#: Weight change of one pulse when neither the algorithm config nor the caller of
#: :func:`build_weights` gives one: the default device's ``dw_min`` (weight units).
DEFAULT_GRANULARITY = float(PulsedDeviceConfig.model_fields["dw_min"].default)


class BufferedTransfer:
    """Tiki-Taka v2 (aihwkit ``BufferedTransferCompound``): A, a float buffer H, C; ``W = gamma A
    + C``.

    - Every sample goes to A at the absolute rate ``fast_lr``, through the choppers (all +1 here;
      :class:`ChoppedTransfer` flips them).
    - After every ``transfer_every`` mini-batches (``units_in_mbatch``) or samples, a transfer
      reads the next ``n_reads_per_transfer`` columns j of A (one-hot forward through A's
      periphery) into the buffer, ``H[:, j] += lr_t A[:, j]`` with ``lr_t = transfer_lr * lr``
      (times ``gamma`` when ``gamma > 0``; aihwkit's ``getTransferLR``).
    - Each cell with ``n = trunc(H / thr) != 0``, ``thr = thres_scale * granularity``, gets
      ``clip(n, +-desired_bl)`` pulses on C (``apply_pulses``; + is up); then
      ``H <- momentum H`` (``forget_buffer``) or ``H <- H - (1 - momentum) n thr``.

    A batch is split at the transfer boundaries, so a transfer due after sample k of a
    mini-batch sees A after sample k exactly as aihwkit's per-sample update cycle does.

    Args:
        fast, slow: the tiles A and C, of the same shape.
        config: the algorithm config.
        granularity: weight change of one pulse (weight units), aihwkit's weight granularity.
        seed: seed of the chopper draws (unused without choppers).
    """

    def __init__(self, fast: Tile, slow: Tile, config: Ttv2Config | ChoppedTtv2Config | AgadConfig,
                 granularity: float, seed: int = 0) -> None:
        if (fast.rows, fast.cols) != (slow.rows, slow.cols):
            raise ValueError("the fast and the slow tile must have the same shape")
        if not granularity > 0:
            raise ValueError(f"granularity must be > 0; got {granularity}")
        self.fast, self.slow, self.config = fast, slow, config
        self.granularity = float(granularity)
        rows, cols = self.shape
        #: The digital transfer buffer H, (rows, cols).
        self.buffer = np.zeros((rows, cols))
        #: Chopper signs (+1/-1) of A's inputs (per column) and outputs (per row).
        self.in_chopper = np.ones(cols)
        self.out_chopper = np.ones(rows)
        self.rng = np.random.default_rng([seed, rows, cols])
        self.samples = 0  # samples written to A so far (aihwkit's current_update_idx)
        self.next_column = 0

    gamma = property(lambda self: getattr(self.config, "gamma", 0.0))

    @property
    def shape(self) -> tuple[int, int]:
        return (self.slow.rows, self.slow.cols)

    def forward(self, x: ArrayLike) -> Array:
        y = self.slow.forward(x)
        return y + self.gamma * self.fast.forward(x) if self.gamma else y

    def backward(self, d: ArrayLike) -> Array:
        g = self.slow.backward(d)
        return g + self.gamma * self.fast.backward(d) if self.gamma else g

    def read_weights(self) -> Array:
        weights = self.slow.read_weights()
        return weights + self.gamma * self.fast.read_weights() if self.gamma else weights

    def program_weights(self, target: ArrayLike) -> Array:
        """C takes the target; A and the buffer start at zero."""
        self.fast.program_weights(np.zeros(self.shape))
        self.slow.program_weights(target)
        self.buffer[...] = 0.0
        return self.read_weights()

    def transfer_period(self, batch: int) -> int:
        """Samples between transfers: aihwkit's ``getTransferEvery`` (at least 1)."""
        every = self.config.transfer_every
        if self.config.units_in_mbatch:
            return max(math.ceil(every * batch), 1)
        return max(round(every), 1)

    def update(self, x: ArrayLike, d: ArrayLike, lr: float) -> None:
        xs, ds, rate = as_update(x, d, lr, self.shape)
        period = self.transfer_period(xs.shape[0])
        start = 0
        while start < xs.shape[0]:
            take = min(period - self.samples % period, xs.shape[0] - start)
            rows = slice(start, start + take)
            self.fast.update(xs[rows] * self.in_chopper, ds[rows] * self.out_chopper,
                             self.config.fast_lr)
            self.samples += take
            start += take
            if self.samples % period == 0:
                self.transfer(rate)

    def transfer_lr(self, lr: float) -> float:
        """The rate of the read into the buffer: ``transfer_lr * lr`` (times gamma if > 0)."""
        rate = self.config.transfer_lr * lr
        return rate * self.gamma if self.gamma > 0 else rate

    def read_column(self, column: int) -> Array:
        """Column ``column`` of A, read by a one-hot forward through A's periphery."""
        one_hot = np.zeros((1, self.shape[1]))
        one_hot[0, column] = 1.0
        return self.fast.forward(one_hot)[0]

    def threshold(self, omega: Array, unit: float) -> tuple[Array, Array]:
        """Pulses ``n = clip(trunc(omega / unit), +-desired_bl)`` and the buffer left after them."""
        cap = self.config.desired_bl
        n = np.clip(np.trunc(omega / unit), -cap, cap)
        if self.config.forget_buffer:
            left = omega * self.config.momentum
        else:
            left = omega - (1.0 - self.config.momentum) * n * unit
            cap_h = getattr(self.config, "buffer_cap", 0.0) * cap * unit
            if cap_h > 0:
                left = np.clip(left, -cap_h, cap_h)
        return n, np.where(n != 0, left, omega)

    def write(self, column_counts: dict[int, Array]) -> None:
        """``n`` pulses onto the cells of C (+ up), one call for all the columns."""
        counts = np.zeros(self.shape, dtype=np.int64)
        for column, n in column_counts.items():
            counts[:, column] = n.astype(np.int64)
        if counts.any():
            self.slow.apply_pulses(counts)

    def transfer(self, lr: float) -> None:
        """Read the next columns of A into H and write H's whole thresholds onto C."""
        config = self.config
        assert isinstance(config, Ttv2Config)  # ChoppedTransfer overrides this method
        cols = self.shape[1]
        count = min(config.n_reads_per_transfer, cols)
        columns = [(self.next_column + k) % cols for k in range(count)]
        self.next_column = (columns[-1] + 1) % cols
        rate = abs(self.transfer_lr(lr))
        unit = config.thres_scale * self.granularity
        written = {}
        for j in columns:
            n, self.buffer[:, j] = self.threshold(self.buffer[:, j] + rate * self.read_column(j),
                                                  unit)
            written[j] = n
        self.write(written)


class ChoppedTransfer(BufferedTransfer):
    """c-TTv2 (aihwkit ``ChoppedTransferCompound``): TTv2 with sign choppers on A; ``W = C``.

    A takes ``-fast_lr (c_out d)(c_in x)^T``. A transfer reads one column j (cyclically) and adds
    ``c_in[j] c_out A[:, j] * |lr_t| / bg`` to ``H[:, j]``, which is in threshold units:
    ``bg = buffer_granularity * granularity``, times ``auto_granularity / (cols *
    transfer_every)`` if ``auto_granularity > 0``. Cells with ``|H| >= 1`` get ``n = trunc(H)``
    pulses (at most ``desired_bl``), then ``H <- momentum H`` or ``H - (1 - momentum) n``.
    After the read, ``c_in[j]`` flips with probability ``in_chop_prob`` (``in_chop_random``) or
    on the last of every ``max(ceil(1 / in_chop_prob), 2)`` full sweeps; after the last column,
    every ``c_out`` flips with probability ``out_chop_prob`` and the sweep counter advances.
    """

    config: ChoppedTtv2Config | AgadConfig

    def __init__(self, fast: Tile, slow: Tile, config: ChoppedTtv2Config | AgadConfig,
                 granularity: float, seed: int = 0) -> None:
        super().__init__(fast, slow, config, granularity, seed)
        self.sweeps = 0  # full sweeps over the columns (aihwkit's transfer_counter)

    def buffer_unit(self) -> float:
        """``bg``, the weight change one buffer unit stands for (aihwkit's getBufferGranularity)."""
        unit = self.config.buffer_granularity * self.granularity
        if self.config.auto_granularity > 0:
            unit *= self.config.auto_granularity / (self.shape[1] * self.config.transfer_every)
        return unit

    def chop_samples(self) -> int:
        """Full sweeps per chopper phase when chopping regularly: ``max(ceil(1/p), 2)``."""
        p = self.config.in_chop_prob
        return max(math.ceil(1.0 / p), 2) if p > 0 else 2

    def next_transfer_column(self) -> int:
        j = self.next_column
        self.next_column = (j + 1) % self.shape[1]
        return j

    def transfer(self, lr: float) -> None:
        config = self.config
        assert isinstance(config, ChoppedTtv2Config)  # DynamicTransfer overrides this method
        j = self.next_transfer_column()
        scale = abs(self.transfer_lr(lr)) / self.buffer_unit()
        signs = self.in_chopper[j] * self.out_chopper
        start = 0.0 if config.no_buffer else self.buffer[:, j]
        n, self.buffer[:, j] = self.threshold(start + signs * self.read_column(j) * scale, 1.0)
        self.write({j: n})
        p = self.config.in_chop_prob
        if p > 0:
            if self.config.in_chop_random:
                flip = self.rng.random() < p
            else:
                flip = self.sweeps % self.chop_samples() + 1 == self.chop_samples()
            if flip:
                self.in_chopper[j] *= -1
        if j == self.shape[1] - 1:
            if config.out_chop_prob > 0:
                flips = self.rng.random(self.shape[0]) < config.out_chop_prob
                self.out_chopper[flips] *= -1
            self.sweeps += 1


class DynamicTransfer(ChoppedTransfer):
    """AGAD (aihwkit ``DynamicTransferCompound``): c-TTv2 whose reads are taken against a
    dynamic reference; ``W = C``.

    With ``n = max(ceil(1 / in_chop_prob), 2)`` sweeps per chopper phase and
    ``s = min(tail_weightening / n, 1)``, a read ``v`` of column j (raw, not sign corrected):

    - if ``c_in[j]`` flipped after the previous read of j, the reference takes the running mean,
      ``mu[:, j] <- m[:, j]`` (the mean of the phase that just ended);
    - ``H[:, j] += c_in[j] (v - mu[:, j]) |lr_t| / bg``, thresholded as in c-TTv2; the pulses are
      written only once more than ``n`` sweeps are done;
    - ``m[:, j] <- (1 - s) m[:, j] + s v``;
    - ``c_in[j]`` flips on the last sweep of each phase (and, with ``in_chop_random``, also at
      random with probability ``in_chop_prob``).

    The output choppers stay +1 (aihwkit's AGAD never flips them).
    """

    config: AgadConfig

    def __init__(self, fast: Tile, slow: Tile, config: AgadConfig, granularity: float,
                 seed: int = 0) -> None:
        super().__init__(fast, slow, config, granularity, seed)
        rows, cols = self.shape
        #: Running mean of the reads (m) and the reference (mu), per cell.
        self.running_mean = np.zeros((rows, cols))
        self.reference = np.zeros((rows, cols))
        self.switched = np.zeros(cols, dtype=bool)

    def program_weights(self, target: ArrayLike) -> Array:
        weights = super().program_weights(target)
        self.running_mean[...] = 0.0
        self.reference[...] = 0.0
        return weights

    def transfer(self, lr: float) -> None:
        j = self.next_transfer_column()
        n_samples = self.chop_samples()
        current_sample = self.sweeps % n_samples + 1
        momentum = min(self.config.tail_weightening / n_samples, 1.0)
        if self.switched[j]:
            self.reference[:, j] = self.running_mean[:, j]
        self.switched[j] = False
        v = self.read_column(j)
        scale = abs(self.transfer_lr(lr)) / self.buffer_unit()
        signs = self.in_chopper[j] * self.out_chopper
        delta = signs * (v - self.reference[:, j]) * scale
        n, self.buffer[:, j] = self.threshold(self.buffer[:, j] + delta, 1.0)
        self.running_mean[:, j] = (1.0 - momentum) * self.running_mean[:, j] + momentum * v
        if self.sweeps > n_samples:
            self.write({j: n})
        flip = current_sample == n_samples
        if self.config.in_chop_random and self.rng.random() < self.config.in_chop_prob:
            flip = True
        if flip:
            self.in_chopper[j] *= -1
            self.switched[j] = True
        if j == self.shape[1] - 1:
            self.sweeps += 1


AnyAlgorithmConfig = (DigitalSgdConfig | AnalogSgdConfig | TikiTakaConfig | Ttv2Config
                      | ChoppedTtv2Config | AgadConfig | ResidualConfig)


def build_weights(
    algorithm: AnyAlgorithmConfig,
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
    if isinstance(algorithm, DigitalSgdConfig):
        return SingleTile(DigitalTile(rows, cols))
    if isinstance(algorithm, AnalogSgdConfig):
        return SingleTile(open_analog(rows, cols))
    if isinstance(algorithm, ResidualConfig) and reference not in (None, "symmetric-point"):
        raise ConfigError(
            f"algorithm residual: needs zero-shifted tiles (G(0) = 0); tile.reference is "
            f"{reference!r}. Set --set tile.reference=symmetric-point (or [tile] reference = "
            f'"symmetric-point" in the config file)')
    if isinstance(algorithm, TikiTakaConfig):
        return TikiTaka(open_analog(rows, cols), open_analog(rows, cols), algorithm)
    step = algorithm.granularity or granularity or DEFAULT_GRANULARITY
    fast, slow = open_analog(rows, cols), open_analog(rows, cols)
    if isinstance(algorithm, AgadConfig):
        return DynamicTransfer(fast, slow, algorithm, step, seed)
    if isinstance(algorithm, ChoppedTtv2Config):
        return ChoppedTransfer(fast, slow, algorithm, step, seed)
    return BufferedTransfer(fast, slow, algorithm, step, seed)
