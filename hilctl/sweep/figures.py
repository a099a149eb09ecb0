"""A sweep's figure (``hilctl sweep --plot FILE.png``), drawn with :mod:`hilctl.plotting`.

One panel per swept dimension (a grid key, or a zip group's keys together): the task's final
metric against the swept value, one line per algorithm, error bars of one standard deviation
over the seeds; where more than one dimension is swept, the others are held at each
algorithm's best setting. With exactly two swept dimensions, a heat map per algorithm follows:
the mean metric on the grid of both, on one colour scale for all. With none (seeds and
algorithms only), one panel of the metric per algorithm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hilctl.plotting import require_matplotlib, save, subplots, use_log_scale
from hilctl.sweep.spec import Sweep, value_text
from hilctl.sweep.summary import Row

Value = tuple[Any, ...]


def _value(row: Row, axis: tuple[str, ...]) -> Value:
    params = dict(row.params)
    return tuple(params[key] for key in axis)


def _values(sweep: Sweep, axis: tuple[str, ...]) -> list[Value]:
    """The values of one swept dimension, in the file's order."""
    seen: dict[Value, None] = {}
    for point in sweep.points:
        params = dict(point.params)
        seen.setdefault(tuple(params[key] for key in axis), None)
    return list(seen)


def _numeric(values: list[Value]) -> bool:
    return all(len(v) == 1 and isinstance(v[0], int | float) and not isinstance(v[0], bool)
               for v in values)


def _label(value: Value) -> str:
    return " / ".join(value_text(v) for v in value)


def plot_sweep(sweep: Sweep, summary: list[Row], path: str | Path) -> Path:
    """Draw the sweep's figure (see the module docstring) into the PNG file ``path``."""
    require_matplotlib()
    heat_maps = list(sweep.algorithms) if len(sweep.axes) == 2 else []
    panels = max(len(sweep.axes), 1) + len(heat_maps)
    fig, axes = subplots(1, panels, figsize=(4.6 * panels, 3.8), squeeze=False)
    spread = f"mean ± std over {len(sweep.seeds)} seeds" if len(sweep.seeds) > 1 else "1 seed"
    fig.suptitle(f"sweep {sweep.sweep_id}: {sweep.metric} ({spread})")
    if sweep.axes:
        for ax, axis in zip(axes[0], sweep.axes, strict=False):
            _line_panel(ax, sweep, summary, axis)
    else:
        _algorithm_panel(axes[0][0], sweep, summary)
    grids = {algorithm: _grid(sweep, summary, algorithm) for algorithm in heat_maps}
    if grids:
        norm = _norm(np.concatenate([grid.ravel() for grid in grids.values()]))
        for ax, (algorithm, grid) in zip(axes[0][len(sweep.axes):], grids.items(), strict=True):
            _heat_map(fig, ax, sweep, grid, norm, algorithm)
    return save(fig, path, dpi=110)


def _line_panel(ax: Any, sweep: Sweep, summary: list[Row], axis: tuple[str, ...]) -> None:
    """The metric against one swept dimension, a line per algorithm, the others held at the
    algorithm's best setting."""
    values = _values(sweep, axis)
    numeric = _numeric(values)
    means: list[float] = []
    for colour, algorithm in enumerate(sweep.algorithms):
        scored = [r for r in summary if r.algorithm == algorithm and r.mean is not None]
        if not scored:
            continue
        best = min(scored, key=lambda r: (-1 if sweep.higher_is_better else 1) * (r.mean or 0.0))
        held = {k: v for k, v in best.params if k not in axis}
        line = [r for r in scored if all(dict(r.params)[k] == v for k, v in held.items())]
        line.sort(key=lambda r: values.index(_value(r, axis)))
        x = [(_value(r, axis)[0] if numeric else values.index(_value(r, axis))) for r in line]
        y = [r.mean or 0.0 for r in line]
        means += y
        ax.errorbar(x, y, yerr=[r.std or 0.0 for r in line], color=f"C{colour}", marker="o",
                    markersize=4, capsize=3, label=algorithm)
        if best in line:
            star = x[line.index(best)]
            ax.plot([star], [best.mean], marker="*", markersize=14, color=f"C{colour}",
                    markeredgecolor="k", linestyle="none")
    if numeric and use_log_scale(np.array([v[0] for v in values], dtype=float)):
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(range(len(values)), [_label(v) for v in values], rotation=30,
                      ha="right", fontsize="small")
    if means and use_log_scale(np.array(means)):
        ax.set_yscale("log")
    ax.set_xlabel(" / ".join(axis))
    ax.set_ylabel(sweep.metric)
    if len(sweep.axes) > 1:
        ax.set_title("other keys at each algorithm's best (*)", fontsize="small")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")


def _algorithm_panel(ax: Any, sweep: Sweep, summary: list[Row]) -> None:
    """Nothing swept but seeds and algorithms: the metric per algorithm."""
    scored = [r for r in summary if r.mean is not None]
    ax.errorbar(range(len(scored)), [r.mean for r in scored], yerr=[r.std or 0.0 for r in scored],
                marker="o", linestyle="none", capsize=4)
    ax.set_xticks(range(len(scored)), [r.algorithm + (" *" if r.best else "") for r in scored])
    ax.set_ylabel(sweep.metric)
    ax.grid(True, alpha=0.3)


def _grid(sweep: Sweep, summary: list[Row], algorithm: str) -> np.ndarray:
    """The mean metric of ``algorithm`` on the grid of the two swept dimensions (NaN where no
    seed completed)."""
    rows_axis, cols_axis = sweep.axes
    row_values, col_values = _values(sweep, rows_axis), _values(sweep, cols_axis)
    grid = np.full((len(row_values), len(col_values)), np.nan)
    for r in summary:
        if r.algorithm == algorithm and r.mean is not None:
            grid[row_values.index(_value(r, rows_axis)), col_values.index(_value(r, cols_axis))] = r.mean
    return grid


def _norm(values: np.ndarray) -> Any:
    """One colour scale for every heat map: logarithmic where the values span decades."""
    from matplotlib.colors import LogNorm, Normalize

    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    return LogNorm(low, high) if use_log_scale(values) else Normalize(low, high)


def _heat_map(fig: Any, ax: Any, sweep: Sweep, grid: np.ndarray, norm: Any,
              algorithm: str) -> None:
    """``grid``, the mean metric of ``algorithm``, over the two swept dimensions."""
    rows_axis, cols_axis = sweep.axes
    image = ax.imshow(grid, cmap="viridis" if sweep.higher_is_better else "viridis_r",
                      norm=norm, aspect="auto", origin="lower")
    for (i, j), value in np.ndenumerate(grid):
        red, green, blue, _ = image.cmap(norm(value)) if np.isfinite(value) else (1, 1, 1, 1)
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(j, i, "-" if np.isnan(value) else f"{value:.3g}", ha="center", va="center",
                fontsize="x-small", color="w" if dark else "k")
    ax.set_xticks(range(grid.shape[1]), [_label(v) for v in _values(sweep, cols_axis)],
                  fontsize="small")
    ax.set_yticks(range(grid.shape[0]), [_label(v) for v in _values(sweep, rows_axis)],
                  fontsize="small")
    ax.set_xlabel(" / ".join(cols_axis))
    ax.set_ylabel(" / ".join(rows_axis))
    ax.set_title(f"{algorithm}: mean {sweep.metric}", fontsize="small")
    fig.colorbar(image, ax=ax)
