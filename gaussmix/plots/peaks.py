"""Peak-fit figures: data, fitted curve, components and posterior bands."""

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from gaussmix.plots.style import axes_or_new, finite_array

__all__ = ["plot_peaks"]


def _curve_or_band(
    ax, grid, values, quantiles, color, label, linestyle="-", linewidth=1.5, band_label=None
):
    """Plot a curve (G,), or the median and a quantile band of draws (S, G)."""
    curve = finite_array(label or "curve", values)
    if curve.ndim == 1:
        if curve.shape != grid.shape:
            raise ValueError(f"{label}: curve has shape {curve.shape}, grid {grid.shape}.")
        ax.plot(grid, curve, color=color, label=label, linestyle=linestyle, linewidth=linewidth)
        return
    if curve.ndim != 2 or curve.shape[1] != grid.shape[0]:
        raise ValueError(f"{label}: draws must have shape (S, {grid.shape[0]}), got {curve.shape}.")
    low, median, high = np.quantile(curve, [quantiles[0], 0.5, quantiles[1]], axis=0)
    ax.fill_between(grid, low, high, color=color, alpha=0.3, linewidth=0, label=band_label)
    ax.plot(grid, median, color=color, label=label, linestyle=linestyle, linewidth=linewidth)


def plot_peaks(
    x: ArrayLike,
    y: ArrayLike,
    *,
    grid: ArrayLike | None = None,
    total: ArrayLike | None = None,
    components: Mapping[str, ArrayLike] | None = None,
    quantiles: tuple[float, float] = (0.05, 0.95),
    total_label: str = "fit",
    ax=None,
):
    """A peak decomposition: data, the fitted curve, each component, posterior bands.

    ``total`` and every component are either one curve (G,) or posterior draws (S, G);
    draws are drawn as their median with a band between the two ``quantiles``.

    Args:
        x: (M,) data abscissae.
        y: (M,) data.
        grid: (G,) abscissae of the curves; default ``x``.
        total: the whole model, (G,) or (S, G).
        components: name -> (G,) or (S, G) curve of one peak or the baseline.
        quantiles: lower and upper quantile of the bands.
        total_label: legend label of ``total``.
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes.

    Example:
        >>> x = np.linspace(0, 10, 50)
        >>> peak = np.exp(-0.5 * (x - 5) ** 2)
        >>> ax = plot_peaks(x, peak, total=peak, components={"peak0": peak})
        >>> len(ax.lines)
        2
    """
    x_data, y_data = finite_array("x", x), finite_array("y", y)
    if x_data.ndim != 1 or x_data.shape != y_data.shape:
        raise ValueError(
            f"x and y must be 1-D of equal length, got {x_data.shape} and {y_data.shape}."
        )
    low_quantile, high_quantile = quantiles
    if not 0 <= low_quantile < high_quantile <= 1:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}.")
    grid = x_data if grid is None else finite_array("grid", grid)
    ax = axes_or_new(ax, figsize=(6.0, 4.0))
    ax.scatter(x_data, y_data, s=8, color="0.35", label="data", zorder=3)
    band_label = f"{round(100 * (high_quantile - low_quantile))} % band"
    for k, (name, curve) in enumerate((components or {}).items()):
        _curve_or_band(ax, grid, curve, quantiles, f"C{(k + 1) % 10}", name, linestyle="--")
    if total is not None:
        _curve_or_band(
            ax, grid, total, quantiles, "C0", total_label, linewidth=2, band_label=band_label
        )
    ax.legend(fontsize="small")
    return ax
