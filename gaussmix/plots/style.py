"""Shared pieces of the figures: Axes, colours, aspect and the checks of plotted arrays.

matplotlib is imported inside the functions that need it, never at import time.
"""

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "axes_or_new",
    "check_dims",
    "component_color",
    "equal_aspect",
    "finite_array",
    "finite_points",
]


def axes_or_new(ax, figsize=(5.0, 4.0)):
    """``ax`` itself, or the Axes of a new figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def equal_aspect(ax) -> None:
    """Equal scales on both axes, by the data limits unless both axes are shared."""
    shared = all(
        len(group.get_siblings(ax)) > 1
        for group in (ax.get_shared_x_axes(), ax.get_shared_y_axes())
    )
    ax.set_aspect("equal", adjustable="box" if shared else "datalim")


def component_color(index: int):
    """RGBA (4,) of matplotlib's cycle colour ``C{index % 10}``."""
    import matplotlib.colors

    return np.asarray(matplotlib.colors.to_rgba(f"C{index % 10}"))


def finite_array(name: str, value: ArrayLike) -> np.ndarray:
    """``value`` as a float array, refused (naming it ``name``) when not all finite."""
    array = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity; plot only finite values.")
    return array


def finite_points(X: ArrayLike, dims: Sequence[int]) -> np.ndarray:
    """(N, D) finite points ``X``, whose features include the plotted ``dims``."""
    x = finite_array("X", X)
    if x.ndim != 2:
        raise ValueError(f"X must have shape (N, D), got shape {x.shape}.")
    check_dims(dims, x.shape[1])
    return x


def check_dims(dims: Sequence[int], n_features: int) -> None:
    """``dims`` must name two different features of ``n_features``."""
    if len(dims) != 2 or len(set(dims)) != 2 or not all(0 <= d < n_features for d in dims):
        raise ValueError(
            f"dims must name two different features in [0, {n_features}), got {tuple(dims)}."
        )
