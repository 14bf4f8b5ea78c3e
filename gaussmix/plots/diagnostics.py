"""MCMC diagnostic figures: trace, rank and forest plots of posterior draws."""

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

from gaussmix.plots.style import axes_or_new, component_color, finite_array

__all__ = ["plot_forest", "plot_rank", "plot_trace", "rank_histograms"]


def _posterior_group(data, group: str):
    """The ``group`` Dataset of a DataTree (or ``data`` itself when it is a Dataset)."""
    if hasattr(data, "children"):
        if group not in data.children:
            raise ValueError(
                f"data has no {group!r} group (groups: {sorted(data.children)}); pass a "
                "DataTree from gaussmix.inference.sample or sample_posterior."
            )
        return data[group].to_dataset()
    if hasattr(data, "data_vars"):
        return data
    raise ValueError(f"expected an ArviZ DataTree or an xarray Dataset, got {type(data).__name__}.")


def _scalar_draws(data, var_names, group: str) -> list[tuple[str, np.ndarray]]:
    """(label, draws (chain, draw)) of every scalar of the chosen variables, in order.

    A variable with more dimensions than (chain, draw) gives one scalar per index,
    labelled like ``means[1, 0]``.
    """
    dataset = _posterior_group(data, group)
    names = list(dataset.data_vars) if var_names is None else var_names
    names = [names] if isinstance(names, str) else list(names)
    unknown = [name for name in names if name not in dataset.data_vars]
    if unknown or not names:
        raise ValueError(
            f"var_names {unknown or names} not in the {group} group; it holds "
            f"{sorted(dataset.data_vars)}."
        )
    scalars = []
    for name in names:
        variable = dataset[name]
        if variable.dims[:2] != ("chain", "draw"):
            raise ValueError(f"{name} has dims {variable.dims}; expected ('chain', 'draw', ...).")
        values = finite_array(name, variable.values)
        if values.shape[1] < 2:
            raise ValueError(f"{name} has {values.shape[1]} draw per chain; need at least 2.")
        for index in np.ndindex(values.shape[2:]):
            label = f"{name}[{', '.join(map(str, index))}]" if index else name
            scalars.append((label, values[(slice(None), slice(None), *index)]))
    return scalars


def _panel_axes(axes, n_panels: int, height: float) -> np.ndarray:
    """The given Axes (one per panel) as a flat array, or a new column of ``n_panels``."""
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(
            n_panels, 1, figsize=(7.0, 0.6 + height * n_panels), sharex=True, squeeze=False
        )
    flat = np.asarray(axes, dtype=object).ravel()
    if flat.size != n_panels:
        raise ValueError(
            f"axes holds {flat.size} Axes but there are {n_panels} panels (one per scalar "
            "of var_names); pass that many, or choose var_names/coordinates to match."
        )
    return flat


def _diverging(data, n_chains: int, n_draws: int) -> np.ndarray | None:
    """sample_stats.diverging (chain, draw) as booleans when the tree has it."""
    if not hasattr(data, "children") or "sample_stats" not in data.children:
        return None
    stats = data["sample_stats"]
    if "diverging" not in stats:
        return None
    diverging = np.asarray(stats["diverging"], dtype=bool)
    return diverging if diverging.shape == (n_chains, n_draws) else None


def plot_trace(
    data,
    var_names: Sequence[str] | str | None = None,
    *,
    group: str = "posterior",
    axes=None,
):
    """Trace plot: each scalar's draws against iteration, one line per chain.

    Chains that explore the same region (overlapping, stationary "hairy caterpillars")
    are what convergence looks like; a chain stuck apart or drifting is not. Divergent
    transitions (``sample_stats.diverging``) are marked by ticks at the bottom, in
    their chain's colour.

    Args:
        data: a DataTree with a ``posterior`` group (e.g. from
            :func:`gaussmix.inference.sample`), or the posterior Dataset itself.
        var_names: variables to show; all by default. A variable with extra dimensions
            gives one panel per index (``means[0, 1]``, ...).
        group: the DataTree group to read.
        axes: one matplotlib Axes per panel (any array shape); a new figure with one row
            per panel when None.

    Returns:
        The flat array of Axes, one per panel.

    Example:
        >>> import arviz_base
        >>> tree = arviz_base.from_dict({"posterior": {"mu": np.zeros((2, 50))}})
        >>> axes = plot_trace(tree)
        >>> len(axes), len(axes[0].lines)
        (1, 2)
    """
    scalars = _scalar_draws(data, var_names, group)
    axes = _panel_axes(axes, len(scalars), height=1.5)
    for ax, (label, draws) in zip(axes, scalars, strict=True):
        iterations = np.arange(draws.shape[1])
        for chain, values in enumerate(draws):
            ax.plot(
                iterations, values, color=component_color(chain), lw=0.8, label=f"chain {chain}"
            )
        diverging = _diverging(data, *draws.shape) if group == "posterior" else None
        if diverging is not None and diverging.any():
            chains, positions = np.nonzero(diverging)
            ax.scatter(
                positions,
                np.zeros_like(positions, dtype=float),
                marker="|",
                s=60,
                c=np.array([component_color(chain) for chain in chains]),
                transform=ax.get_xaxis_transform(),
                label="divergent",
                zorder=3,
            )
        ax.set_ylabel(label)
    axes[-1].set_xlabel("draw")
    axes[0].legend(fontsize="small", loc="upper right", ncols=min(4, len(scalars[0][1]) + 1))
    return axes


def rank_histograms(draws: ArrayLike, bins: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Per-chain histograms of the ranks of the pooled draws.

    Every draw of every chain is ranked among all :math:`C \\times S` draws (0 for the
    smallest; ties broken by position); chain :math:`c`'s histogram counts its ranks in
    ``bins`` equal bins of :math:`[0, CS)`. When the chains sample the same
    distribution, each rank is equally likely in every chain and each count is about
    :math:`S / \\text{bins}`.

    Args:
        draws: (chains, draws) of one scalar.
        bins: number of equal rank bins.

    Returns:
        (counts (chains, bins), bin edges (bins + 1,)).

    Example:
        >>> counts, edges = rank_histograms(np.arange(8.0).reshape(2, 4), bins=2)
        >>> counts.tolist()
        [[4, 0], [0, 4]]
    """
    values = finite_array("draws", draws)
    if values.ndim != 2:
        raise ValueError(f"draws must have shape (chains, draws), got {values.shape}.")
    total = values.size
    if not isinstance(bins, int | np.integer) or not 1 <= bins <= total:
        raise ValueError(f"bins must be an integer in [1, {total}] (the draws), got {bins}.")
    order = np.argsort(values.ravel(), kind="stable")
    ranks = np.empty(total, dtype=float)
    ranks[order] = np.arange(total)
    edges = np.linspace(0.0, float(total), bins + 1)
    counts = np.stack([np.histogram(row, edges)[0] for row in ranks.reshape(values.shape)])
    return counts, edges


def plot_rank(
    data,
    var_names: Sequence[str] | str | None = None,
    *,
    group: str = "posterior",
    bins: int = 20,
    axes=None,
):
    """Rank plot: per-chain histograms of the pooled ranks (see :func:`rank_histograms`).

    Flat, overlapping histograms mean the chains mix; a chain whose ranks pile up at one
    end sampled a different region. The dotted line is the expected count
    :math:`S / \\text{bins}`. Arguments as in :func:`plot_trace`; ``bins`` is the number
    of rank bins.

    Returns:
        The flat array of Axes, one per panel.

    Example:
        >>> import arviz_base
        >>> tree = arviz_base.from_dict({"posterior": {"mu": np.zeros((2, 50))}})
        >>> axes = plot_rank(tree, bins=10)
        >>> len(axes[0].patches)
        2
    """
    scalars = _scalar_draws(data, var_names, group)
    axes = _panel_axes(axes, len(scalars), height=1.5)
    for ax, (label, draws) in zip(axes, scalars, strict=True):
        counts, edges = rank_histograms(draws, bins)
        for chain, row in enumerate(counts):
            ax.stairs(row, edges, color=component_color(chain), lw=1.5, label=f"chain {chain}")
        ax.axhline(draws.shape[1] / bins, color="0.4", ls=":", lw=1)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
    axes[-1].set_xlabel("rank of the draw among all chains")
    axes[0].legend(fontsize="small", loc="upper right", ncols=min(4, len(scalars[0][1])))
    return axes


def plot_forest(
    data,
    var_names: Sequence[str] | str | None = None,
    *,
    group: str = "posterior",
    quantiles: tuple[float, float] = (0.05, 0.95),
    ax=None,
):
    """Forest plot: each scalar's posterior median and central intervals, one row each.

    The thin line spans the ``quantiles`` (default the central 90 %), the thick line the
    central 50 % (quartiles), the dot is the median, all over the pooled chains. ``data``
    may be a dict of name -> DataTree to compare models: each row then has one line per
    model, offset and coloured, with a legend.

    Args:
        data: a DataTree (or posterior Dataset), or a dict of name -> DataTree.
        var_names: variables to show; all (of the first model) by default.
        group: the DataTree group to read.
        quantiles: lower and upper quantile of the thin line.
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes.

    Example:
        >>> import arviz_base
        >>> tree = arviz_base.from_dict({"posterior": {"mu": np.zeros((2, 50))}})
        >>> ax = plot_forest(tree)
        >>> [text.get_text() for text in ax.get_yticklabels()]
        ['mu']
    """
    low_quantile, high_quantile = quantiles
    if not (0 <= low_quantile < 0.25 and 0.75 < high_quantile <= 1):
        raise ValueError(
            f"quantiles must satisfy 0 <= low < 0.25 and 0.75 < high <= 1 (wider than the "
            f"quartiles drawn thick), got {quantiles}."
        )
    # A DataTree or Dataset is itself a Mapping: a dict of models is a Mapping of those.
    one_model = hasattr(data, "children") or hasattr(data, "data_vars")
    models = dict(data) if isinstance(data, Mapping) and not one_model else {"": data}
    if not models:
        raise ValueError("data is an empty dict; pass at least one DataTree.")
    per_model = {name: dict(_scalar_draws(tree, var_names, group)) for name, tree in models.items()}
    labels = list(next(iter(per_model.values())))
    n_models = len(models)
    ax = axes_or_new(ax, figsize=(6.0, 0.6 + 0.35 * len(labels) * n_models))
    offsets = (np.arange(n_models) - (n_models - 1) / 2) * (0.6 / max(n_models, 1))
    for model, (name, scalars) in enumerate(per_model.items()):
        rows = [(row, scalars[label]) for row, label in enumerate(labels) if label in scalars]
        if not rows:
            continue
        position = np.array([row for row, _ in rows], dtype=float) + offsets[model]
        values = np.stack([draws.ravel() for _, draws in rows])
        low, quartile_low, median, quartile_high, high = np.quantile(
            values, [low_quantile, 0.25, 0.5, 0.75, high_quantile], axis=1
        )
        color = component_color(model)
        ax.hlines(position, low, high, color=color, lw=1.2)
        ax.hlines(position, quartile_low, quartile_high, color=color, lw=3.5)
        ax.plot(median, position, "o", color=color, ms=4, label=name or None)
    ax.set_yticks(np.arange(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    if n_models > 1:
        ax.legend(fontsize="small")
    return ax
