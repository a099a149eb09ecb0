"""Every figure hilctl draws, on bare :class:`matplotlib.figure.Figure` objects (no ``pyplot``):
plotting never opens a window, needs no display and leaves no global state behind.

Matplotlib is the optional extra ``plot`` and is imported only when a figure is drawn. The
experiments of ``hilctl reproduce`` draw theirs with :func:`subplots` and :func:`save`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hilctl.errors import HilctlError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from hilctl.characterize import PulseResponse
    from hilctl.fitting.twin import Quality
    from hilctl.runs import RunRecord

MATPLOTLIB_MISSING = (
    "plotting needs matplotlib, which is not installed; install it with: "
    "pip install 'hilctl[plot]'"
)

#: Metric values spanning more than this ratio (max/min, all positive) get a log-scale axis.
LOG_SCALE_RATIO = 100.0


def require_matplotlib() -> None:
    """Raise :class:`HilctlError` naming ``pip install 'hilctl[plot]'`` if matplotlib is missing.

    Call it before a slow measurement whose result is to be plotted.
    """
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        raise HilctlError(MATPLOTLIB_MISSING) from None


def subplots(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float],
             **kwargs: Any) -> tuple[Figure, Any]:
    """A new figure and its axes, as ``pyplot.subplots`` gives them but without pyplot."""
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="tight")
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save(fig: Figure, path: str | Path, dpi: float = 80) -> Path:
    """Write ``fig`` as a PNG file; returns the path."""
    target = Path(path)
    fig.savefig(target, format="png", dpi=dpi)
    return target


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
    return save(fig, path, dpi=150)


def plot_fit(quality: Quality, path: str | Path, title: str) -> Path:
    """Draw measured and emulated pulse responses of a fit into the PNG file ``path``.

    Top: the mean weight over the cells against the pulse number, measured and emulated from
    the fitted parameters, each with its +-1 std band. Bottom: the residuals, measured minus
    emulated, of the mean and of the spread.
    """
    require_matplotlib()
    from matplotlib.figure import Figure

    measured, emulated = quality.measured, quality.emulated
    pulses = np.arange(measured.mean.size)
    fig = Figure(figsize=(8, 6.4), dpi=150, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1.4))
    for traces, colour, label in ((measured, "tab:blue", "measured"),
                                  (emulated, "tab:orange", "emulated from the fit")):
        top.plot(pulses, traces.mean, color=colour, linewidth=1.5, label=f"{label}: mean")
        top.fill_between(pulses, traces.mean - traces.std, traces.mean + traces.std,
                         color=colour, alpha=0.2, linewidth=0, label=f"{label}: ±1 std")
    top.set_ylabel("weight (normalised units)")
    top.set_title(f"{title}\nquality: {quality.verdict} (mean off by "
                  f"{quality.mean_residual:.1%} of the swing, spread by "
                  f"{quality.spread_residual:.1%})", fontsize="medium")
    top.grid(True, alpha=0.3)
    top.legend(loc="best", fontsize="small", framealpha=0.9)
    bottom.plot(pulses, measured.mean - emulated.mean, color="tab:green", label="mean")
    bottom.plot(pulses, measured.std - emulated.std, color="tab:red", label="std")
    bottom.axhline(0, color="0.3", linewidth=0.8)
    bottom.set_xlim(0, max(pulses[-1], 1))
    bottom.set_xlabel("pulse number")
    bottom.set_ylabel("measured − emulated")
    bottom.grid(True, alpha=0.3)
    bottom.legend(loc="best", fontsize="small", framealpha=0.9)
    return save(fig, path, dpi=150)


def use_log_scale(values: np.ndarray) -> bool:
    """True if the finite values are all positive and span more than two decades."""
    finite = values[np.isfinite(values)]
    return bool(finite.size) and bool(finite.min() > 0) and finite.max() / finite.min() > LOG_SCALE_RATIO


def plot_metrics(record: RunRecord, names: list[str], path: Path) -> Path:
    """Draw the metrics ``names`` of ``record`` against the step (the epoch for a task that
    records its metrics once an epoch), one panel each, with whole-number ticks, into ``path``."""
    require_matplotlib()
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.4 * len(names) + 0.8), dpi=120, layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    for ax, name in zip(axes, names, strict=True):
        steps, values = record.metrics[name]
        ax.plot(steps, values, color="tab:blue", linewidth=1.4,
                marker="o" if values.size <= 50 else None, markersize=3)
        if use_log_scale(values):
            ax.set_yscale("log")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
    from matplotlib.ticker import MaxNLocator

    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs are whole
    task = record.config.get("task") if isinstance(record.config, dict) else None
    per_epoch = isinstance(task, dict) and "epochs" in task  # an MNIST task logs once an epoch
    axes[-1].set_xlabel("epoch" if per_epoch else "step")
    title = f"run {record.run_id}: {record.command}"
    if record.summary:
        title += f" ({record.summary})"
    fig.suptitle(f"{title}, {record.status}")
    return save(fig, path, dpi=120)
