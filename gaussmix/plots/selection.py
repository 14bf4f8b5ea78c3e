"""Model-selection figures: information criteria against the number of components."""

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from gaussmix.plots.style import axes_or_new, finite_array

__all__ = ["plot_information_criteria"]


def plot_information_criteria(
    n_components: ArrayLike,
    criteria: Mapping[str, ArrayLike],
    *,
    errors: Mapping[str, ArrayLike] | None = None,
    lower_is_better: bool | Mapping[str, bool] = True,
    ax=None,
):
    """Information criteria against the number of components, the best of each marked.

    Args:
        n_components: (C,) values of K.
        criteria: name -> (C,) values, e.g. ``{"AIC": ..., "BIC": ...}``.
        errors: name -> (C,) standard errors drawn as error bars (e.g. LOO's).
        lower_is_better: whether each criterion is minimised (AIC, BIC, LOO on the
            deviance scale) or maximised (ELPD); one bool for all or a mapping by name.
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes; the marked best K of each criterion is in the legend.

    Example:
        >>> ax = plot_information_criteria([1, 2, 3], {"BIC": [10.0, 4.0, 6.0]})
        >>> ax.get_legend().get_texts()[0].get_text()
        'BIC (best K = 2)'
    """
    k = finite_array("n_components", n_components)
    if k.ndim != 1 or not criteria:
        raise ValueError("Give n_components (C,) and at least one criterion of shape (C,).")
    ax = axes_or_new(ax)
    for index, (name, values) in enumerate(criteria.items()):
        value = finite_array(name, values)
        if value.shape != k.shape:
            raise ValueError(f"{name} has shape {value.shape}; n_components has {k.shape}.")
        lower = (
            lower_is_better.get(name, True)
            if isinstance(lower_is_better, Mapping)
            else lower_is_better
        )
        best = int(np.argmin(value) if lower else np.argmax(value))
        color = f"C{index % 10}"
        error = None if errors is None or name not in errors else finite_array(name, errors[name])
        ax.errorbar(
            k,
            value,
            yerr=error,
            color=color,
            marker="o",
            markersize=3,
            label=f"{name} (best K = {k[best]:g})",
        )
        ax.plot(
            k[best],
            value[best],
            marker="*",
            markersize=16,
            color=color,
            markeredgecolor="black",
            linestyle="none",
        )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of components K")
    ax.set_ylabel("criterion")
    ax.legend()
    return ax
