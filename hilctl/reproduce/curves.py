"""Curves as the experiments' figures show them: thinned to a few hundred points and smoothed
as the authors smooth their loss curves."""

from __future__ import annotations

import numpy as np


def thin(curve: np.ndarray, points: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``points`` (index, value) pairs of a long curve, evenly spaced."""
    step = max(1, len(curve) // points)
    k = np.arange(0, len(curve), step)
    return k, curve[k]


def smooth(curve: np.ndarray, coef: float = 0.9) -> np.ndarray:
    """The authors' exponential smoothing of loss curves."""
    out = np.empty_like(curve)
    acc = curve[0]
    for i, v in enumerate(curve):
        acc = coef * acc + (1 - coef) * v if i else v
        out[i] = acc
    return out
