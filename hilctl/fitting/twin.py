"""The emulated twin of a fitted device: the measured pulse sequence replayed on the emulator
with the fitted parameters, and how close its mean and spread traces come to the measured ones.

The twin has as many cells as were measured (in the measured tile's shape where there was
one), each started where its measured cell started, and gets the same pulses; its readings get
the read noise the fit found in the measurement, since the measured spread holds it too. Its draws of the
device-to-device variation and of the pulse noise are its own, so the traces agree in
distribution, not cell by cell: the comparison is of the mean and the spread over the cells
after each pulse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hilctl.backends import open_tile
from hilctl.config import tile_config
from hilctl.fitting.data import PulseData

Array = NDArray[np.float64]

#: The backend the twin runs on: the emulator.
EMULATOR = "sim"
#: The twin's read-noise draws: a stream of their own, apart from the emulator's.
READ_NOISE_STREAM = 7
#: A measured spread below this share of the swing is taken as this much: a chip whose cells
#: all move alike (its spread only read noise) is not judged by differences of a few 1e-4.
SMALLEST_SPREAD = 0.01
#: Verdicts by the largest normalised residuals of the mean and of the spread trace they allow.
VERDICTS = (("good", 0.05, 0.25), ("fair", 0.15, 0.5))


@dataclass(frozen=True)
class Traces:
    """Mean and spread over the cells of the weights: ``(pulses + 1,)`` each, the start first."""

    mean: Array
    std: Array

    @classmethod
    def of(cls, weights: Array) -> Traces:
        return cls(weights.mean(axis=0), weights.std(axis=0))


def replay(device: dict[str, Any], data: PulseData, read_noise: float = 0.0,
           seed: int = 0) -> Array:
    """``(devices, pulses + 1)`` readings of the twin: ``device`` (a ``[device]`` section) on the
    emulator, programmed to the measured starts, then the measured pulse sequence; each reading
    with normal read noise of ``read_noise`` (weight units), as the measurement had."""
    rows, cols = data.shape or (1, data.devices)
    values = {k: v for k, v in device.items() if k != "model"}
    config = tile_config(rows=rows, cols=cols, device=device["model"], device_values=values,
                         periphery_values={"is_perfect": True}, seed=seed)
    tile = open_tile(EMULATOR, config)
    weights = np.empty((data.pulses + 1, rows * cols))
    weights[0] = np.asarray(tile.program_weights(data.weights[:, 0].reshape(rows, cols))).ravel()
    for k, sign in enumerate(data.directions, start=1):
        tile.apply_pulses(np.full((rows, cols), int(sign), dtype=np.int64))
        weights[k] = np.asarray(tile.read_weights()).ravel()
    if read_noise > 0:
        weights += np.random.default_rng([seed, READ_NOISE_STREAM]).normal(0.0, read_noise,
                                                                             weights.shape)
    return weights.T


@dataclass(frozen=True)
class Quality:
    """How well the twin's traces follow the measured ones.

    Attributes:
        mean_residual: root mean square difference of the mean traces over the measured mean
            trace's range (0: identical; 0.05: off by 5% of the swing).
        spread_residual: root mean square difference of the spread traces over the measured
            spread's average (at least :data:`SMALLEST_SPREAD` of the swing).
        verdict: ``good``, ``fair`` or ``poor`` (:data:`VERDICTS`).
        measured, emulated: the traces compared.
    """

    mean_residual: float
    spread_residual: float
    verdict: str
    measured: Traces
    emulated: Traces

    def summary(self) -> dict[str, Any]:
        return {"mean_residual": self.mean_residual, "spread_residual": self.spread_residual,
                "verdict": self.verdict, "explanation": self.explanation()}

    def explanation(self) -> str:
        return (f"the emulated twin's mean trace is off by {self.mean_residual:.1%} of the "
                f"measured swing and its spread by {self.spread_residual:.1%} of the measured "
                f"spread (rms over {self.measured.mean.size - 1} pulses)")


def _rms(values: Array) -> float:
    return float(np.sqrt(np.mean(values**2)))


def compare(data: PulseData, device: dict[str, Any], read_noise: float = 0.0,
            seed: int = 0) -> Quality:
    """Replay ``device`` on the emulator, read with ``read_noise``, and compare its traces with
    ``data``'s."""
    measured = Traces.of(data.weights)
    emulated = Traces.of(replay(device, data, read_noise, seed))
    swing = float(np.ptp(measured.mean)) or 1.0
    spread = max(float(np.mean(measured.std)), SMALLEST_SPREAD * swing)
    mean_residual = _rms(measured.mean - emulated.mean) / swing
    spread_residual = _rms(measured.std - emulated.std) / spread
    verdict = "poor"
    for name, mean_limit, spread_limit in VERDICTS:
        if mean_residual <= mean_limit and spread_residual <= spread_limit:
            verdict = name
            break
    if not (math.isfinite(mean_residual) and math.isfinite(spread_residual)):
        verdict = "poor"
    return Quality(mean_residual, spread_residual, verdict, measured, emulated)
