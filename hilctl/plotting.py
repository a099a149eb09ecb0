"""Figures of measurements. Needs the optional extra ``plot`` (matplotlib), imported lazily.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` (no ``pyplot``), so plotting never
opens a window, never needs a display and leaves no global state behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hilctl.errors import HilctlError

if TYPE_CHECKING:
    from hilctl.characterize import PulseResponse

MATPLOTLIB_MISSING = (
    "plotting needs matplotlib, which is not installed; install it with: "
    "pip install 'hilctl[plot]'"
)


def require_matplotlib() -> None:
    """Raise :class:`HilctlError` naming ``pip install 'hilctl[plot]'`` if matplotlib is missing.

    Call it before a slow measurement whose result is to be plotted.
    """
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise HilctlError(MATPLOTLIB_MISSING) from None


def plot_pulse_response(response: PulseResponse, path: str | Path, title: str) -> Path:
    """Draw ``response`` into the PNG file ``path``; returns the path.

    The mean weight over the cells against the pulse number (0 is the programmed start), a
    band of +-1 standard deviation over the cells, and a dashed line where the down pulses start.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    pulses = np.arange(response.pulses + 1)
    mean = np.array([response.start_mean, *response.mean])
    std = np.array([response.start_std, *response.std])

    fig = Figure(figsize=(8, 4.8), dpi=150, layout="constrained")
    ax = fig.add_subplot()
    ax.plot(pulses, mean, color="tab:blue", linewidth=1.6, zorder=3,
            label=f"mean over {response.cells} cells")
    ax.fill_between(pulses, mean - std, mean + std, color="tab:blue", alpha=0.25, linewidth=0,
                    zorder=2, label="±1 std over cells")
    if response.up and response.down:
        ax.axvline(response.up, color="0.3", linestyle="--", linewidth=1.0,
                   label=f"down pulses start (after {response.up} up)")
    ax.set_xlim(0, max(response.pulses, 1))
    ax.set_xlabel("pulse number")
    ax.set_ylabel("weight (normalised units)")
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize="small", framealpha=0.9)

    target = Path(path)
    fig.savefig(target, format="png")
    return target
