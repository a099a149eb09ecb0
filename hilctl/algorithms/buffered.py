"""The buffered-transfer family: TTv2, c-TTv2 and AGAD, a digital buffer H between the fast tile
A and the slow tile C, thresholded into whole pulses on C.

They follow aihwkit 1.1.0 (``rpu_buffered_transfer_device.cpp``,
``rpu_chopped_transfer_device.cpp``, ``rpu_dynamic_transfer_device.cpp``). A transfer's whole
pulse counts ``n`` (at most ``desired_bl``) reach C as aihwkit writes them by default
(``transfer_write = "pulsed"``): each column read is a pulsed update with a one-hot ``x``, ``d =
-n``, ``desired_bl`` slots and update and BL management off
(:func:`hilctl.pulse_trains.transfer_counts`), so a cell takes a random number of pulses,
``min(|n|, sqrt(desired_bl))`` on average, and exactly ``n`` only at aihwkit's default
``desired_bl = 1``. ``transfer_write = "exact"`` departs from aihwkit: C takes exactly ``n``
pulses. Either way the counts go to C through ``Tile.apply_pulses``, and the buffer is reduced
by the intended ``n``, not by the pulses that landed (as in aihwkit).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from pydantic import Field

from hilctl.algorithms.base import (
    DEFAULT_GRANULARITY,
    AlgorithmSettings,
    Array,
    RunSettings,
    TileFactory,
    WeightArray,
)
from hilctl.checkpoints import rng_state, set_rng_state
from hilctl.pulse_trains import transfer_counts
from hilctl.tile import Tile, as_update


class _BufferSettings(AlgorithmSettings):
    """What the buffered-transfer family shares: the fast tile's rate, the transfer rate and
    period, and how the buffer writes C (``desired_bl``, ``transfer_write``)."""

    fast_lr: float = Field(0.1, gt=0, le=1e6, description="learning rate of the fast tile A (absolute)")
    transfer_lr: float = Field(1.0, ge=0, le=1e6, description="rate of the read into the buffer, times "
                               "the SGD lr")
    transfer_every: float = Field(1.0, ge=1e-6, le=1e9, description="updates between transfers (see "
                                  "units_in_mbatch)")
    forget_buffer: bool = Field(True, description="after a write, H <- momentum H (True) or "
                                "H <- H - (1 - momentum) n thr (False)")
    desired_bl: int = Field(1, ge=1, le=10_000, description="most pulses n per cell and transfer, "
                            "and the slots of a pulsed write (aihwkit transfer_update.desired_bl)")
    transfer_write: Literal["pulsed", "exact"] = Field(
        "pulsed", description="how n reaches C: 'pulsed' as aihwkit, a one-hot pulse train of "
        "desired_bl slots per column (min(|n|, sqrt(desired_bl)) pulses on average); 'exact' "
        "exactly n pulses (not aihwkit)")
    granularity: float | None = Field(
        None, ge=1e-9, le=1e3, description="weight change of one pulse (weight units; aihwkit's weight "
        "granularity, the device's dw_min); None: from the run's device")

    def pulse_size(self, run: RunSettings) -> float:
        """The buffer's pulse size: the algorithm's own, else the run's device's, else the
        default device's."""
        return self.granularity or run.granularity or DEFAULT_GRANULARITY


class Ttv2Config(_BufferSettings):
    """Tiki-Taka v2 (aihwkit ``BufferedTransferCompound``): A, a digital buffer H, C.

    Gradients go to A at ``fast_lr`` (absolute). Every ``transfer_every`` updates (mini-batches
    if ``units_in_mbatch``, else samples) the next ``n_reads_per_transfer`` columns j of A are
    read (one-hot forward) into ``H[:, j] += transfer_lr * lr * A[:, j]`` (times ``gamma`` when
    ``gamma > 0``). Cells with ``|H| >= thr = thres_scale * granularity`` get
    ``n = trunc(H / thr)`` (at most ``desired_bl``); then H is forgotten to ``momentum * H``
    (``forget_buffer``) or reduced by ``(1 - momentum) n thr``. ``n`` goes to C by aihwkit's
    pulsed write, a one-hot pulse train of ``desired_bl`` slots per column that lands
    ``min(|n|, sqrt(desired_bl))`` pulses on average (``transfer_write = "pulsed"``), or, departing
    from aihwkit, as exactly ``n`` pulses (``"exact"``).
    """

    name: Literal["ttv2"] = "ttv2"
    gamma: float = Field(0.0, ge=0, le=1e3, description="weight of the fast tile in W = gamma A + C")
    units_in_mbatch: bool = Field(True, description="transfer_every counts mini-batches "
                                  "(True) or samples (False)")
    n_reads_per_transfer: int = Field(1, ge=1, le=65_536, description="columns of A read per transfer")
    thres_scale: float = Field(1.0, ge=1e-9, le=1e9, description="buffer threshold, in units of granularity")
    momentum: float = Field(0.1, ge=0, le=1, description="fraction of the buffer kept after a write")

    def build(self, rows: int, cols: int, open_analog: TileFactory, run: RunSettings
              ) -> WeightArray:
        return BufferedTransfer(open_analog(rows, cols), open_analog(rows, cols), self,
                                self.pulse_size(run), run.seed)


class _ChopperBufferConfig(_BufferSettings):
    """The settings c-TTv2 and AGAD share: the buffer in threshold units (see
    :class:`ChoppedTtv2Config`)."""

    units_in_mbatch: bool = Field(False, description="transfer_every counts mini-batches "
                                  "(True) or samples (False)")
    buffer_granularity: float = Field(1.0, ge=1e-9, le=1e9, description="buffer threshold, in units of "
                                      "granularity")
    auto_granularity: float = Field(0.0, ge=0, le=1e9, description="if > 0, scale the threshold by "
                                    "auto_granularity / (cols transfer_every), e.g. 1000")
    momentum: float = Field(0.0, ge=0, le=1, description="fraction of the buffer kept after a write")


class ChoppedTtv2Config(_ChopperBufferConfig):
    """c-TTv2 (aihwkit ``ChoppedTransferCompound``): TTv2 with sign choppers on A.

    A takes ``-fast_lr (c_out * d)(c_in * x)^T`` with chopper signs ``c_in`` (per column) and
    ``c_out`` (per row); a read of column j is multiplied by ``c_in[j] c_out`` again, which undoes
    the chopping of the gradient but not of A's drift. H is in threshold units:
    ``H[:, j] += c_in[j] c_out A[:, j] transfer_lr lr / bg`` with
    ``bg = buffer_granularity * granularity`` (times ``auto_granularity / (cols transfer_every)``
    when ``auto_granularity > 0``); ``|H| >= 1`` writes ``n = trunc(H)`` (at most
    ``desired_bl``) to C as in TTv2 (``transfer_write``: aihwkit's pulse train, or exactly ``n``
    pulses, which aihwkit does not do). After reading column j its ``c_in[j]`` flips with
    probability ``in_chop_prob`` (``in_chop_random``) or every ``max(ceil(1/in_chop_prob), 2)``
    sweeps; after the last column each ``c_out`` flips with probability ``out_chop_prob``. One
    column per transfer; ``W = C``.
    """

    name: Literal["c-ttv2"] = "c-ttv2"
    in_chop_prob: float = Field(0.1, ge=0, le=1, description="flip probability (or frequency) "
                                "of a column's input chopper, per read")
    in_chop_random: bool = Field(True, description="flip at random (True) or regularly (False)")
    out_chop_prob: float = Field(0.0, ge=0, le=1, description="flip probability of each output "
                                 "chopper, per full sweep")
    no_buffer: bool = Field(False, description="start each read from an empty buffer")

    def build(self, rows: int, cols: int, open_analog: TileFactory, run: RunSettings
              ) -> WeightArray:
        return ChoppedTransfer(open_analog(rows, cols), open_analog(rows, cols), self,
                               self.pulse_size(run), run.seed)


class AgadConfig(_ChopperBufferConfig):
    """AGAD (aihwkit ``DynamicTransferCompound``): c-TTv2 with a dynamic reference.

    Column j's input chopper flips every ``n = max(ceil(1/in_chop_prob), 2)`` full sweeps
    (``in_chop_random`` adds random flips). Each read ``v`` of column j updates a running mean
    ``m <- (1 - s) m + s v`` with ``s = min(tail_weightening / n, 1)``; at the first read after a
    flip the reference ``mu`` takes the running mean, and the buffer gets
    ``c_in[j] (v - mu) transfer_lr lr / bg`` (thresholds and writes, pulsed as aihwkit or exact,
    as in c-TTv2). Nothing is written to C during the first ``n`` sweeps. ``W = C``.
    """

    name: Literal["agad"] = "agad"
    in_chop_prob: float = Field(0.1, gt=0, le=1, description="chopper frequency: a flip every "
                                "max(ceil(1/in_chop_prob), 2) sweeps")
    in_chop_random: bool = Field(False, description="also flip at random with in_chop_prob")
    tail_weightening: float = Field(5.0, ge=1e-9, le=1e9, description="weight of recent reads in the "
                                    "running mean (s = tail_weightening / period)")
    buffer_cap: float = Field(0.0, ge=0, le=1e9, description="without forget_buffer: clip H to "
                              "+-buffer_cap desired_bl (0: no cap)")

    def build(self, rows: int, cols: int, open_analog: TileFactory, run: RunSettings
              ) -> WeightArray:
        return DynamicTransfer(open_analog(rows, cols), open_analog(rows, cols), self,
                               self.pulse_size(run), run.seed)


class BufferedTransfer:
    """Tiki-Taka v2 (aihwkit ``BufferedTransferCompound``): A, a float buffer H, C; ``W = gamma A
    + C``.

    - Every sample goes to A at the absolute rate ``fast_lr``, through the choppers (all +1 here;
      :class:`ChoppedTransfer` flips them).
    - After every ``transfer_every`` mini-batches (``units_in_mbatch``) or samples, a transfer
      reads the next ``n_reads_per_transfer`` columns j of A (one-hot forward through A's
      periphery) into the buffer, ``H[:, j] += lr_t A[:, j]`` with ``lr_t = transfer_lr * lr``
      (times ``gamma`` when ``gamma > 0``; aihwkit's ``getTransferLR``).
    - Each cell with ``n = trunc(H / thr) != 0``, ``thr = thres_scale * granularity``, takes
      ``n = clip(n, +-desired_bl)``: ``H <- momentum H`` (``forget_buffer``) or
      ``H <- H - (1 - momentum) n thr``, and ``n`` goes to C (``apply_pulses``; + is up) through
      a pulse train per column as aihwkit writes (``transfer_write = "pulsed"``, drawn from the
      algorithm's random stream) or as exactly ``n`` pulses (``"exact"``, not aihwkit).

    A batch is split at the transfer boundaries, so a transfer due after sample k of a
    mini-batch sees A after sample k exactly as aihwkit's per-sample update cycle does.

    Args:
        fast, slow: the tiles A and C, of the same shape.
        config: the algorithm config.
        granularity: weight change of one pulse (weight units), aihwkit's weight granularity.
        seed: seed of the algorithm's draws (the choppers and the pulsed writes to C).
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

    def state_dict(self) -> dict[str, Any]:
        """The buffer, the choppers, the counters and the random stream of the chopper draws
        and the pulsed writes."""
        return {"buffer": self.buffer, "in_chopper": self.in_chopper,
                "out_chopper": self.out_chopper, "rng": rng_state(self.rng),
                "samples": self.samples, "next_column": self.next_column}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for name in ("buffer", "in_chopper", "out_chopper"):
            getattr(self, name)[...] = state[name]
        set_rng_state(self.rng, state["rng"])
        self.samples, self.next_column = int(state["samples"]), int(state["next_column"])

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
        """Write the whole-pulse counts ``n`` of the columns read onto C (+ up) in one
        ``apply_pulses`` call: through a pulse train per column (``transfer_write = "pulsed"``,
        :func:`~hilctl.pulse_trains.transfer_counts`) or exactly (``"exact"``). A column whose
        ``n`` is all zero is not written (and draws nothing), as in aihwkit."""
        columns = [j for j, n in column_counts.items() if n.any()]
        if not columns:
            return
        n = np.stack([column_counts[j] for j in columns], axis=1)
        counts = np.zeros(self.shape, dtype=np.int64)
        if self.config.transfer_write == "pulsed":
            counts[:, columns] = transfer_counts(n, self.config.desired_bl, self.rng)
        else:
            counts[:, columns] = n
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
    (at most ``desired_bl``), written to C as in :class:`BufferedTransfer`, then
    ``H <- momentum H`` or ``H - (1 - momentum) n``.
    After the read, ``c_in[j]`` flips with probability ``in_chop_prob`` (``in_chop_random``) or
    on the last of every ``max(ceil(1 / in_chop_prob), 2)`` full sweeps; after the last column,
    every ``c_out`` flips with probability ``out_chop_prob`` and the sweep counter advances.
    """

    config: ChoppedTtv2Config | AgadConfig

    def __init__(self, fast: Tile, slow: Tile, config: ChoppedTtv2Config | AgadConfig,
                 granularity: float, seed: int = 0) -> None:
        super().__init__(fast, slow, config, granularity, seed)
        self.sweeps = 0  # full sweeps over the columns (aihwkit's transfer_counter)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "sweeps": self.sweeps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.sweeps = int(state["sweeps"])

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

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "running_mean": self.running_mean,
                "reference": self.reference, "switched": self.switched}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        for name in ("running_mean", "reference", "switched"):
            getattr(self, name)[...] = state[name]

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


