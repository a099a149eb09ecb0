"""Matplotlib helpers shared by the experiments' figures (imported lazily: plotting is an
extra, ``pip install 'hilctl[plot]'``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ticker() -> Any:
    pyplot()
    import matplotlib.ticker

    return matplotlib.ticker


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    pyplot().close(fig)


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
