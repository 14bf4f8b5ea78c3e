"""Mixture figures: component ellipses, fitted mixtures, posterior draws, k-means, densities."""

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from gaussmix.models.priors import COVARIANCE_LAYOUTS
from gaussmix.plots.style import (
    axes_or_new,
    check_dims,
    component_color,
    equal_aspect,
    finite_array,
    finite_points,
)

__all__ = [
    "covariance_matrices",
    "plot_density",
    "plot_ellipses",
    "plot_kmeans",
    "plot_mixture",
    "plot_posterior_ellipses",
]

_CIRCLE_POINTS = 100


def covariance_matrices(
    covariances: ArrayLike, covariance_type: str, n_components: int, n_features: int
) -> np.ndarray:
    """Full (..., K, D, D) covariance matrices from any covariance type's storage.

    Args:
        covariances: (..., K, D, D) full, (..., D, D) tied, (..., K, D) diag or
            (..., K) spherical; leading dimensions (posterior draws) are kept.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's
            models (stored in one of those four layouts).
        n_components: K.
        n_features: D.

    Returns:
        (..., K, D, D) array.

    Example:
        >>> covariance_matrices(np.array([1.0, 4.0]), "spherical", 2, 2)[1]
        array([[4., 0.],
               [0., 4.]])
    """
    if covariance_type not in COVARIANCE_LAYOUTS:
        raise ValueError(
            f"covariance_type must be one of {list(COVARIANCE_LAYOUTS)}, got {covariance_type!r}."
        )
    covariance_type = COVARIANCE_LAYOUTS[covariance_type]
    c = finite_array("covariances", covariances)
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

    mean = finite_array("means", means)
    if mean.ndim < 2:
        raise ValueError(f"means must have shape (..., K, D), got shape {mean.shape}.")
    n_components, n_features = mean.shape[-2:]
    check_dims(dims, n_features)
    covariance = covariance_matrices(covariances, covariance_type, n_components, n_features)
    leading = mean.shape[:-2]
    covariance = np.broadcast_to(covariance, (*leading, n_components, n_features, n_features))
    if weights is None:
        weight = np.ones((*leading, n_components))
    else:
        weight = finite_array("weights", weights)
        if weight.shape != (*leading, n_components):
            raise ValueError(
                f"weights must have shape {(*leading, n_components)}, got {weight.shape}."
            )
    sigmas = [float(n) for n in np.atleast_1d(n_sigma)]
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"n_sigma must hold positive radii, got {n_sigma!r}.")
    ax = axes_or_new(ax)
    if color is None:
        colors = np.stack([component_color(k) for k in range(n_components)])
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
    ax = axes_or_new(ax)
    if X is not None:
        x = finite_points(X, dims)
        probabilities = np.asarray(estimator.predict_proba(X), float)
        labels = probabilities.argmax(axis=1)
        colors = np.stack([component_color(k) for k in range(probabilities.shape[1])])
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
    equal_aspect(ax)
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
    equal_aspect(ax)
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
    x = finite_points(X, dims)
    centers = finite_array("cluster_centers_", estimator.cluster_centers_)
    if centers.ndim != 2 or centers.shape[1] != x.shape[1]:
        raise ValueError(
            f"cluster_centers_ {centers.shape} does not match X with {x.shape[1]} features."
        )
    labels = np.asarray(estimator.predict(X))
    ax = axes_or_new(ax)
    colors = np.stack([component_color(k) for k in range(len(centers))])
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
    equal_aspect(ax)
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
        x = finite_array("X", X)
        x = x[:, None] if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] not in (1, 2):
            raise ValueError(f"X must have shape (N, 1) or (N, 2), got {x.shape}.")
    if bounds is None:
        if x is None:
            raise ValueError("Give X or bounds to set the plotted range.")
        low, high = x.min(axis=0), x.max(axis=0)
        pad = 0.1 * np.where(high > low, high - low, 1.0)
        bounds = np.stack([low - pad, high + pad], axis=1)
    bounds = finite_array("bounds", bounds)
    if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] not in (1, 2):
        raise ValueError(f"bounds must be ((low, high),) or two such pairs, got {bounds.shape}.")
    if x is not None and x.shape[1] != bounds.shape[0]:
        raise ValueError(f"X has {x.shape[1]} features but bounds gives {bounds.shape[0]}.")
    ax = axes_or_new(ax)
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
    equal_aspect(ax)
    return ax
