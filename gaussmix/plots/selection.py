"""Model-selection figures: information criteria against the number of components, and
the criterion table of several covariance models (mclust's BIC plot)."""

from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from gaussmix.plots.style import axes_or_new, finite_array

__all__ = ["plot_criterion_table", "plot_information_criteria"]


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


#: Markers of the models' lines (cycled with the colours, as mclust's symbols).
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "p", "h", "*", "d", "8")


def plot_criterion_table(table, *, ax=None):
    """One line per covariance model against K, the best cell starred (mclust's
    ``plot(mclustBIC)``, in scikit-learn's sign: lower is better).

    Args:
        table: a :class:`gaussmix.selection.CriterionTable` (from
            :func:`gaussmix.select_components` with several covariance types), or any
            object with ``n_components`` (M,), ``covariance_types`` (T,), ``criterion``
            (M, T) (NaN where a fit failed: a gap in that model's line) and
            ``criterion_name``.
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes; the legend names each model, the best cell's label says K and model.

    Example:
        >>> from types import SimpleNamespace
        >>> import numpy as np
        >>> table = SimpleNamespace(
        ...     n_components=np.array([1, 2, 3]), covariance_types=("full", "diag"),
        ...     criterion=np.array([[9.0, 8.0], [5.0, np.nan], [6.0, 7.0]]),
        ...     criterion_name="bic")
        >>> ax = plot_criterion_table(table)
        >>> [t.get_text() for t in ax.get_legend().get_texts()]
        ['full', 'diag', 'best: full, K = 2']
    """
    k = finite_array("n_components", table.n_components)
    values = np.asarray(table.criterion, dtype=float)
    models = tuple(table.covariance_types)
    if k.ndim != 1 or values.shape != (k.size, len(models)):
        raise ValueError(
            f"criterion has shape {values.shape}; expected (len(n_components), "
            f"len(covariance_types)) = ({k.size}, {len(models)}). For one covariance type "
            "use plot_information_criteria."
        )
    if np.isinf(values).any() or np.isnan(values).all():
        raise ValueError(
            "criterion must be finite, with NaN only for failed fits, and not all NaN."
        )
    ax = axes_or_new(ax, figsize=(6.0, 4.5))
    for index, model in enumerate(models):
        ax.plot(
            k,
            values[:, index],
            color=f"C{index % 10}",
            marker=_MARKERS[index % len(_MARKERS)],
            markersize=4,
            label=model,
        )
    row, column = np.unravel_index(np.nanargmin(values), values.shape)
    ax.plot(
        k[row],
        values[row, column],
        marker="*",
        markersize=16,
        color=f"C{column % 10}",
        markeredgecolor="black",
        linestyle="none",
        label=f"best: {models[column]}, K = {k[row]:g}",
    )
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("number of components K")
    ax.set_ylabel(f"{str(table.criterion_name).upper()} (lower is better)")
    ax.legend(ncol=2 if len(models) > 7 else 1, fontsize="small")
    return ax
