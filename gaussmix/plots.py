"""Figures for mixtures, k-means, peak fits, model selection and posteriors.

Every function draws on the matplotlib Axes given as ``ax`` (a new figure when it is
``None``) and returns that Axes; the multi-panel MCMC plots (:func:`plot_trace`,
:func:`plot_rank`) take ``axes``, one per panel, and return them. No function calls
``plt.show()``; matplotlib is imported only when one is called, so ``import gaussmix``
stays free of matplotlib. Arrays may be NumPy or JAX arrays.

The :math:`n`-sigma ellipse of a component is its Mahalanobis contour of radius
:math:`n`,

.. math::

    \\{x : (x - \\mu_k)^\\top \\Sigma_k^{-1} (x - \\mu_k) = n^2\\}
    = \\{\\mu_k + n L_k u : \\lVert u \\rVert = 1\\},\\qquad L_k L_k^\\top = \\Sigma_k,

drawn in the plane of two chosen features (the marginal covariance of those two).
"""

import math
from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "covariance_matrices",
    "plot_density",
    "plot_ellipses",
    "plot_forest",
    "plot_image_grid",
    "plot_information_criteria",
    "plot_kmeans",
    "plot_mixture",
    "plot_peaks",
    "plot_posterior_ellipses",
    "plot_rank",
    "plot_trace",
    "rank_histograms",
]

_COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_CIRCLE_POINTS = 100


def _axes(ax, figsize=(5.0, 4.0)):
    """``ax`` itself, or the Axes of a new figure."""
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _equal_aspect(ax) -> None:
    """Equal scales on both axes, by the data limits unless both axes are shared."""
    shared = all(
        len(group.get_siblings(ax)) > 1
        for group in (ax.get_shared_x_axes(), ax.get_shared_y_axes())
    )
    ax.set_aspect("equal", adjustable="box" if shared else "datalim")


def _color(index: int):
    import matplotlib.colors

    return np.asarray(matplotlib.colors.to_rgba(f"C{index % 10}"))


def _finite(name: str, value: ArrayLike) -> np.ndarray:
    array = np.asarray(value, dtype=float)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinity; plot only finite values.")
    return array


def _points(X: ArrayLike, dims: Sequence[int]) -> np.ndarray:
    x = _finite("X", X)
    if x.ndim != 2:
        raise ValueError(f"X must have shape (N, D), got shape {x.shape}.")
    _check_dims(dims, x.shape[1])
    return x


def _check_dims(dims: Sequence[int], n_features: int) -> None:
    if len(dims) != 2 or len(set(dims)) != 2 or not all(0 <= d < n_features for d in dims):
        raise ValueError(
            f"dims must name two different features in [0, {n_features}), got {tuple(dims)}."
        )


def covariance_matrices(
    covariances: ArrayLike, covariance_type: str, n_components: int, n_features: int
) -> np.ndarray:
    """Full (..., K, D, D) covariance matrices from any covariance type's storage.

    Args:
        covariances: (..., K, D, D) full, (..., D, D) tied, (..., K, D) diag or
            (..., K) spherical; leading dimensions (posterior draws) are kept.
        covariance_type: "full", "tied", "diag" or "spherical".
        n_components: K.
        n_features: D.

    Returns:
        (..., K, D, D) array.

    Example:
        >>> covariance_matrices(np.array([1.0, 4.0]), "spherical", 2, 2)[1]
        array([[4., 0.],
               [0., 4.]])
    """
    if covariance_type not in _COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {list(_COVARIANCE_TYPES)}, got {covariance_type!r}."
        )
    c = _finite("covariances", covariances)
    K, D = n_components, n_features
    expected = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}
    tail = expected[covariance_type]
    if c.shape[c.ndim - len(tail) :] != tail:
        raise ValueError(
            f"covariances of type {covariance_type!r} must end in shape {tail} for "
            f"K={K}, D={D}; got shape {c.shape}."
        )
    if covariance_type == "full":
        return c
    if covariance_type == "tied":
        return np.broadcast_to(c[..., None, :, :], (*c.shape[:-2], K, D, D))
    if covariance_type == "diag":
        return c[..., :, None] * np.eye(D)
    return c[..., None, None] * np.eye(D)


def _ellipse_outlines(
    means: np.ndarray, covariances: np.ndarray, n_sigma: float, dims: Sequence[int]
) -> np.ndarray:
    """(..., P, 2) outline points of the n-sigma ellipses of means (..., D), cov (..., D, D)."""
    index = np.asarray(dims)
    centre = means[..., index]
    marginal = covariances[..., index[:, None], index[None, :]]
    try:
        cholesky = np.linalg.cholesky(marginal)
    except np.linalg.LinAlgError:
        raise ValueError(
            "A covariance is not positive definite in the plotted plane; check the fit."
        ) from None
    angle = np.linspace(0.0, 2.0 * np.pi, _CIRCLE_POINTS)
    circle = np.stack([np.cos(angle), np.sin(angle)])  # (2, P)
    return centre[..., None, :] + n_sigma * np.swapaxes(cholesky @ circle, -1, -2)


def plot_ellipses(
    means: ArrayLike,
    covariances: ArrayLike,
    covariance_type: str = "full",
    *,
    weights: ArrayLike | None = None,
    n_sigma: Sequence[float] = (1.0, 2.0, 3.0),
    dims: Sequence[int] = (0, 1),
    color=None,
    alpha: float | None = None,
    fill: bool = True,
    linewidth: float = 1.0,
    label: str | None = None,
    zorder: float = 1.0,
    ax=None,
):
    """Draw the 1-, 2-, 3-sigma ellipses of mixture components.

    Leading dimensions of ``means`` (posterior draws) draw one set of ellipses per draw;
    the ``covariances`` share them.

    Args:
        means: (..., K, D), D >= 2.
        covariances: the covariance type's storage with the same leading dimensions:
            (..., K, D, D) full, (..., D, D) tied, (..., K, D) diag, (..., K) spherical.
        covariance_type: "full", "tied", "diag" or "spherical".
        weights: (..., K) mixture weights; the fill of each ellipse fades with its weight.
        n_sigma: Mahalanobis radii to draw.
        dims: the two features spanning the plane.
        color: one matplotlib colour for all components; default C0, C1, ... per component.
        alpha: opacity of the fill (default 0.25 at the largest weight) or, with
            ``fill=False``, of the outline (default 1).
        fill: fill the ellipses (outlines only when False).
        linewidth: outline width.
        label: legend label, given to the first outline.
        zorder: drawing order (matplotlib's; points are drawn at 1 by default).
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes.

    Example:
        >>> ax = plot_ellipses(np.zeros((1, 2)), np.array([[[2.0, 0.5], [0.5, 1.0]]]))
        >>> len(ax.collections)
        1
    """
    from matplotlib.collections import PolyCollection

    mean = _finite("means", means)
    if mean.ndim < 2:
        raise ValueError(f"means must have shape (..., K, D), got shape {mean.shape}.")
    n_components, n_features = mean.shape[-2:]
    _check_dims(dims, n_features)
    covariance = covariance_matrices(covariances, covariance_type, n_components, n_features)
    leading = mean.shape[:-2]
    covariance = np.broadcast_to(covariance, (*leading, n_components, n_features, n_features))
    if weights is None:
        weight = np.ones((*leading, n_components))
    else:
        weight = _finite("weights", weights)
        if weight.shape != (*leading, n_components):
            raise ValueError(
                f"weights must have shape {(*leading, n_components)}, got {weight.shape}."
            )
    sigmas = [float(n) for n in np.atleast_1d(n_sigma)]
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"n_sigma must hold positive radii, got {n_sigma!r}.")
    ax = _axes(ax)
    if color is None:
        colors = np.stack([_color(k) for k in range(n_components)])
    else:
        import matplotlib.colors

        colors = np.tile(matplotlib.colors.to_rgba(color), (n_components, 1))
    component = np.broadcast_to(np.arange(n_components), weight.shape).ravel()
    relative = (weight / weight.max(axis=-1, keepdims=True)).ravel()
    outlines, faces, edges = [], [], []
    for radius in sigmas:
        polygons = _ellipse_outlines(mean, covariance, radius, dims)
        polygons = polygons.reshape(-1, *polygons.shape[-2:])
        face = colors[component].copy()
        face[:, 3] = (0.25 if alpha is None else alpha) * relative / len(sigmas) if fill else 0.0
        edge = colors[component].copy()
        edge[:, 3] = 1.0 if (fill or alpha is None) else alpha
        outlines.append(polygons)
        faces.append(face)
        edges.append(edge)
    collection = PolyCollection(
        np.concatenate(outlines),
        facecolors=np.concatenate(faces),
        edgecolors=np.concatenate(edges),
        linewidths=linewidth,
        label=label,
        zorder=zorder,
    )
    ax.add_collection(collection)
    ax.autoscale_view()
    return ax


def _estimator_parameters(estimator):
    missing = [a for a in ("means_", "covariances_", "weights_") if not hasattr(estimator, a)] + (
        [] if hasattr(estimator, "covariance_type") else ["covariance_type"]
    )
    if missing:
        raise ValueError(
            f"The estimator lacks {missing}; fit it first (anything with means_, "
            "covariances_, weights_ and covariance_type, like GaussianMixture, works)."
        )
    return (
        np.asarray(estimator.means_, float),
        np.asarray(estimator.covariances_, float),
        np.asarray(estimator.weights_, float),
        estimator.covariance_type,
    )


def plot_mixture(
    estimator,
    X: ArrayLike | None = None,
    *,
    responsibilities: str | None = "size",
    n_sigma: Sequence[float] = (1.0, 2.0, 3.0),
    dims: Sequence[int] = (0, 1),
    point_size: float = 20.0,
    ax=None,
):
    """A fitted mixture: its ellipses and, given ``X``, the points and their assignment.

    Points are coloured by ``estimator.predict(X)``. Responsibilities
    :math:`r_{nk}` from ``estimator.predict_proba(X)`` are shown as

    - ``"size"``: point size :math:`s \\max_k r_{nk}^2` (uncertain points shrink);
    - ``"color"``: the component colours mixed by :math:`r_{nk}`;
    - ``None``: not shown.

    Args:
        estimator: fitted, with ``means_`` (K, D), ``covariances_``, ``weights_`` (K,),
            ``covariance_type`` (and ``predict`` / ``predict_proba`` when ``X`` is given),
            such as :class:`gaussmix.GaussianMixture` or scikit-learn's.
        X: (N, D) points, optional.
        responsibilities: "size", "color" or None.
        n_sigma: Mahalanobis radii of the ellipses.
        dims: the two features spanning the plane.
        point_size: size of a point with responsibility 1.
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes.

    Example:
        >>> from types import SimpleNamespace
        >>> fit = SimpleNamespace(means_=np.zeros((1, 2)), covariances_=np.eye(2)[None],
        ...                       weights_=np.ones(1), covariance_type="full")
        >>> plot_mixture(fit).get_aspect()
        1.0
    """
    if responsibilities not in ("size", "color", None):
        raise ValueError(
            f"responsibilities must be 'size', 'color' or None, got {responsibilities!r}."
        )
    means, covariances, weights, covariance_type = _estimator_parameters(estimator)
    ax = _axes(ax)
    if X is not None:
        x = _points(X, dims)
        probabilities = np.asarray(estimator.predict_proba(X), float)
        labels = probabilities.argmax(axis=1)
        colors = np.stack([_color(k) for k in range(probabilities.shape[1])])
        sizes = np.full(len(x), point_size / 4)
        point_colors = colors[labels]
        if responsibilities == "size":
            sizes = point_size * probabilities.max(axis=1) ** 2
        elif responsibilities == "color":
            point_colors = np.clip(probabilities @ colors, 0.0, 1.0)
        ax.scatter(x[:, dims[0]], x[:, dims[1]], s=sizes, c=point_colors, zorder=2)
    plot_ellipses(
        means,
        covariances,
        covariance_type,
        weights=weights,
        n_sigma=n_sigma,
        dims=dims,
        zorder=3,
        ax=ax,
    )
    _equal_aspect(ax)
    return ax


_COVARIANCE_VARIABLES = ("covariances", "covariance", "variances")


def _posterior_arrays(posterior) -> tuple[np.ndarray, np.ndarray, str]:
    """(S, K, D) means, covariance storage with leading S, and the covariance type."""
    group = posterior
    if hasattr(posterior, "children") and "posterior" in posterior.children:
        group = posterior["posterior"]
    names = [name for name in _COVARIANCE_VARIABLES if name in group]
    if "means" not in group or not names:
        raise ValueError(
            "posterior must hold 'means' and one of "
            f"{list(_COVARIANCE_VARIABLES)} (a DataTree from sample_posterior, its "
            "posterior group, or a dict of arrays)."
        )
    means = np.asarray(group["means"], float)
    covariances = np.asarray(group[names[0]], float)
    if means.ndim < 2:
        raise ValueError(f"means must have shape (..., K, D), got shape {means.shape}.")
    n_leading = means.ndim - 2
    leading = means.shape[:n_leading]
    if covariances.shape[:n_leading] != leading:
        raise ValueError(
            f"means {means.shape} and {names[0]} {covariances.shape} disagree on the "
            "leading (chain, draw) dimensions."
        )
    tail = covariances.shape[n_leading:]
    if names[0] == "covariances":
        covariance_type = "full"
    elif names[0] == "covariance":
        covariance_type = "tied"
    else:
        covariance_type = "diag" if len(tail) == 2 else "spherical"
    n_draws = int(np.prod(leading)) if leading else 1
    return (
        means.reshape(n_draws, *means.shape[n_leading:]),
        covariances.reshape(n_draws, *tail),
        covariance_type,
    )


def plot_posterior_ellipses(
    posterior,
    *,
    num_draws: int = 50,
    n_sigma: Sequence[float] = (2.0,),
    dims: Sequence[int] = (0, 1),
    alpha: float = 0.15,
    seed: int = 0,
    ax=None,
):
    """Ellipses of posterior draws of a mixture: one thin outline per draw and component.

    Args:
        posterior: a DataTree with a ``posterior`` group (as returned by
            ``GaussianMixture.sample_posterior``), that group, or a dict of arrays, holding
            ``means`` (..., K, D) and ``covariances`` (full), ``covariance`` (tied) or
            ``variances`` ((..., K, D) diag, (..., K) spherical) with the same leading
            (chain, draw) dimensions. Draws should be relabeled (they are, from gaussmix).
        num_draws: number of draws drawn, picked at random without replacement.
        n_sigma: Mahalanobis radii of the ellipses.
        dims: the two features spanning the plane.
        alpha: opacity of each outline.
        seed: seed picking the draws.
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes.

    Example:
        >>> draws = {"means": np.zeros((2, 10, 1, 2)), "variances": np.ones((2, 10, 1))}
        >>> ax = plot_posterior_ellipses(draws, num_draws=5)
        >>> len(ax.collections[0].get_paths())
        5
    """
    means, covariances, covariance_type = _posterior_arrays(posterior)
    if isinstance(num_draws, bool) or not isinstance(num_draws, int) or num_draws < 1:
        raise ValueError(f"num_draws must be a positive integer, got {num_draws!r}.")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(means), size=min(num_draws, len(means)), replace=False)
    ax = plot_ellipses(
        means[chosen],
        covariances[chosen],
        covariance_type,
        n_sigma=n_sigma,
        dims=dims,
        fill=False,
        alpha=alpha,
        linewidth=0.8,
        ax=ax,
    )
    _equal_aspect(ax)
    return ax


def plot_kmeans(estimator, X: ArrayLike, *, dims: Sequence[int] = (0, 1), ax=None):
    """k-means clusters, each with the circle through its farthest member.

    The circle of cluster :math:`k` has radius :math:`\\max_{n: c_n = k}
    \\lVert x_n - m_k \\rVert` (in all D features), the picture of k-means' implicit
    assumption that clusters are round.

    Args:
        estimator: fitted, with ``cluster_centers_`` (K, D) and ``predict``, such as
            :class:`gaussmix.KMeans` or scikit-learn's.
        X: (N, D) points.
        dims: the two features spanning the plane.
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes.

    Example:
        >>> from types import SimpleNamespace
        >>> km = SimpleNamespace(cluster_centers_=np.zeros((1, 2)),
        ...                      predict=lambda x: np.zeros(len(x), int))
        >>> ax = plot_kmeans(km, np.array([[3.0, 4.0], [1.0, 0.0]]))
        >>> float(ax.patches[0].get_radius())
        5.0
    """
    from matplotlib.patches import Circle

    if not hasattr(estimator, "cluster_centers_"):
        raise ValueError("The estimator lacks cluster_centers_; fit it first.")
    x = _points(X, dims)
    centers = _finite("cluster_centers_", estimator.cluster_centers_)
    if centers.ndim != 2 or centers.shape[1] != x.shape[1]:
        raise ValueError(
            f"cluster_centers_ {centers.shape} does not match X with {x.shape[1]} features."
        )
    labels = np.asarray(estimator.predict(X))
    ax = _axes(ax)
    colors = np.stack([_color(k) for k in range(len(centers))])
    ax.scatter(x[:, dims[0]], x[:, dims[1]], s=10, c=colors[labels], zorder=2)
    for k, center in enumerate(centers):
        members = x[labels == k]
        if len(members) == 0:
            continue
        radius = np.linalg.norm(members - center, axis=1).max()
        ax.add_patch(
            Circle(
                (center[dims[0]], center[dims[1]]),
                radius,
                facecolor=(*colors[k][:3], 0.15),
                edgecolor=colors[k],
                linewidth=1.5,
                zorder=1,
            )
        )
    ax.scatter(centers[:, dims[0]], centers[:, dims[1]], marker="x", s=60, c="black", zorder=3)
    _equal_aspect(ax)
    ax.autoscale_view()
    return ax


def plot_density(
    estimator,
    X: ArrayLike | None = None,
    *,
    bounds: Sequence[Sequence[float]] | None = None,
    resolution: int = 100,
    levels: int = 12,
    log: bool = False,
    ax=None,
):
    """The density :math:`\\exp(\\text{score\\_samples})` of a fitted model.

    With one feature: a curve over ``bounds`` (and a histogram of ``X``). With two: filled
    contours over a ``resolution`` x ``resolution`` grid (and ``X`` scattered) of the
    density, or with ``log=True`` of the log density floored 10 nats below its maximum
    (shows sharp, many-component fits better).

    Args:
        estimator: fitted, with ``score_samples(x)`` returning (M,) log densities.
        X: (N, D) data shown with the density, D in {1, 2}; (N,) is read as D = 1.
        bounds: per feature ``(low, high)``; by default the range of ``X`` widened by 10 %.
        resolution: grid points per feature.
        levels: number of contour levels (2-D).
        log: contour the log density instead (2-D).
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes.

    Example:
        >>> from types import SimpleNamespace
        >>> normal = SimpleNamespace(score_samples=lambda g: -0.5 * (g**2).sum(1)
        ...                          - np.log(2 * np.pi))
        >>> ax = plot_density(normal, bounds=[(-3, 3), (-3, 3)], resolution=20)
    """
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 2:
        raise ValueError(f"resolution must be an integer >= 2, got {resolution!r}.")
    x = None
    if X is not None:
        x = _finite("X", X)
        x = x[:, None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] not in (1, 2):
            raise ValueError(f"X must have shape (N, 1) or (N, 2), got {x.shape}.")
    if bounds is None:
        if x is None:
            raise ValueError("Give X or bounds to set the plotted range.")
        low, high = x.min(axis=0), x.max(axis=0)
        pad = 0.1 * np.where(high > low, high - low, 1.0)
        bounds = np.stack([low - pad, high + pad], axis=1)
    bounds = _finite("bounds", bounds)
    if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] not in (1, 2):
        raise ValueError(f"bounds must be ((low, high),) or two such pairs, got {bounds.shape}.")
    if x is not None and x.shape[1] != bounds.shape[0]:
        raise ValueError(f"X has {x.shape[1]} features but bounds gives {bounds.shape[0]}.")
    ax = _axes(ax)
    axes_grid = [np.linspace(low, high, resolution) for low, high in bounds]
    if len(axes_grid) == 1:
        grid = axes_grid[0][:, None]
        density = np.exp(np.asarray(estimator.score_samples(grid), float))
        if x is not None:
            ax.hist(x[:, 0], bins="auto", density=True, color="0.8", label="data")
        ax.plot(grid[:, 0], density, color="C0", label="density")
        ax.set_ylabel("density")
        return ax
    first, second = np.meshgrid(*axes_grid)
    grid = np.column_stack([first.ravel(), second.ravel()])
    log_density = np.asarray(estimator.score_samples(grid), float).reshape(first.shape)
    if log:
        values = np.maximum(log_density, log_density.max() - 10.0)
    else:
        values = np.exp(log_density)
    ax.contourf(first, second, values, levels=levels, cmap="Blues")
    if x is not None:
        ax.scatter(x[:, 0], x[:, 1], s=4, c="black", alpha=0.6)
    _equal_aspect(ax)
    return ax


def _curve_or_band(
    ax, grid, values, quantiles, color, label, linestyle="-", linewidth=1.5, band_label=None
):
    """Plot a curve (G,), or the median and a quantile band of draws (S, G)."""
    curve = _finite(label or "curve", values)
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
    x_data, y_data = _finite("x", x), _finite("y", y)
    if x_data.ndim != 1 or x_data.shape != y_data.shape:
        raise ValueError(
            f"x and y must be 1-D of equal length, got {x_data.shape} and {y_data.shape}."
        )
    low_quantile, high_quantile = quantiles
    if not 0 <= low_quantile < high_quantile <= 1:
        raise ValueError(f"quantiles must satisfy 0 <= low < high <= 1, got {quantiles}.")
    grid = x_data if grid is None else _finite("grid", grid)
    ax = _axes(ax, figsize=(6.0, 4.0))
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
    k = _finite("n_components", n_components)
    if k.ndim != 1 or not criteria:
        raise ValueError("Give n_components (C,) and at least one criterion of shape (C,).")
    ax = _axes(ax)
    for index, (name, values) in enumerate(criteria.items()):
        value = _finite(name, values)
        if value.shape != k.shape:
            raise ValueError(f"{name} has shape {value.shape}; n_components has {k.shape}.")
        lower = (
            lower_is_better.get(name, True)
            if isinstance(lower_is_better, Mapping)
            else lower_is_better
        )
        best = int(np.argmin(value) if lower else np.argmax(value))
        color = f"C{index % 10}"
        error = None if errors is None or name not in errors else _finite(name, errors[name])
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


def plot_image_grid(
    images: ArrayLike,
    image_shape: tuple[int, int] | None = None,
    *,
    n_columns: int = 10,
    padding: int = 1,
    cmap: str = "binary",
    ax=None,
):
    """Tile images into one grid, row by row, drawn as a single image.

    Args:
        images: (N, H, W), or (N, H * W) with ``image_shape``; (N, P) with P a square
            is read as square images (e.g. 8 x 8 digits).
        image_shape: (H, W) for flattened images.
        n_columns: images per row.
        padding: blank pixels between images.
        cmap: matplotlib colormap.
        ax: matplotlib Axes; a new figure when None.

    Returns:
        The Axes (axis lines hidden).

    Example:
        >>> ax = plot_image_grid(np.zeros((12, 64)), n_columns=6)
        >>> ax.images[0].get_array().shape
        (17, 53)
    """
    stack = _finite("images", images)
    if stack.ndim == 2:
        if image_shape is None:
            side = math.isqrt(stack.shape[1])
            if side * side != stack.shape[1]:
                raise ValueError(
                    f"Images of {stack.shape[1]} pixels are not square; give image_shape."
                )
            image_shape = (side, side)
        if int(np.prod(image_shape)) != stack.shape[1]:
            raise ValueError(f"image_shape {image_shape} does not hold {stack.shape[1]} pixels.")
        stack = stack.reshape(len(stack), *image_shape)
    if stack.ndim != 3 or len(stack) == 0:
        raise ValueError(f"images must have shape (N, H, W) or (N, P), got {np.shape(images)}.")
    if isinstance(n_columns, bool) or not isinstance(n_columns, int) or n_columns < 1:
        raise ValueError(f"n_columns must be a positive integer, got {n_columns!r}.")
    count, height, width = stack.shape
    columns = min(n_columns, count)
    rows = -(-count // columns)
    mosaic = np.full(
        (rows * (height + padding) - padding, columns * (width + padding) - padding), np.nan
    )
    for index, image in enumerate(stack):
        row, column = divmod(index, columns)
        top, left = row * (height + padding), column * (width + padding)
        mosaic[top : top + height, left : left + width] = image
    ax = _axes(ax, figsize=(columns * 0.5 + 0.5, rows * 0.5 + 0.5))
    ax.imshow(np.ma.masked_invalid(mosaic), cmap=cmap, interpolation="nearest")
    ax.set_axis_off()
    return ax


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
        values = _finite(name, variable.values)
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
            ax.plot(iterations, values, color=_color(chain), lw=0.8, label=f"chain {chain}")
        diverging = _diverging(data, *draws.shape) if group == "posterior" else None
        if diverging is not None and diverging.any():
            chains, positions = np.nonzero(diverging)
            ax.scatter(
                positions,
                np.zeros_like(positions, dtype=float),
                marker="|",
                s=60,
                c=np.array([_color(chain) for chain in chains]),
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
    values = _finite("draws", draws)
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
            ax.stairs(row, edges, color=_color(chain), lw=1.5, label=f"chain {chain}")
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
    ax = _axes(ax, figsize=(6.0, 0.6 + 0.35 * len(labels) * n_models))
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
        color = _color(model)
        ax.hlines(position, low, high, color=color, lw=1.2)
        ax.hlines(position, quartile_low, quartile_high, color=color, lw=3.5)
        ax.plot(median, position, "o", color=color, ms=4, label=name or None)
    ax.set_yticks(np.arange(len(labels)), labels)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.grid(axis="x", alpha=0.3)
    if n_models > 1:
        ax.legend(fontsize="small")
    return ax
