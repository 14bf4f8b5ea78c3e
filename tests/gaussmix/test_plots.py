"""gaussmix.plots: geometry checked against independent references, lazy imports, PNGs.

The ellipses are checked against scikit-learn's fitted precisions (not the covariances
the plot reads), k-means circles against scipy's distances, bands against NumPy
quantiles, densities against scikit-learn's ``score_samples``.
"""

import subprocess
import sys

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest

from gaussmix import datasets, plots

sklearn_mixture = pytest.importorskip("sklearn.mixture")
sklearn_cluster = pytest.importorskip("sklearn.cluster")
scipy_distance = pytest.importorskip("scipy.spatial.distance")

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module")
def blobs():
    return datasets.blobs(n_samples=200, seed=1)[0]


def precision_matrices(estimator, n_features):
    """scikit-learn's precisions_ in (K, D, D) form, built here independently."""
    p, K, D = np.asarray(estimator.precisions_), estimator.n_components, n_features
    if estimator.covariance_type == "full":
        return p
    if estimator.covariance_type == "tied":
        return np.broadcast_to(p, (K, D, D))
    if estimator.covariance_type == "diag":
        return np.stack([np.diag(row) for row in p])
    return np.stack([value * np.eye(D) for value in p])


def mahalanobis(points, mean, precision):
    centred = points - mean
    return np.sqrt(np.einsum("pi,ij,pj->p", centred, precision, centred))


def test_importing_gaussmix_and_plots_does_not_import_matplotlib():
    probe = (
        "import sys, gaussmix, gaussmix.plots; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'matplotlib'); "
        "print(loaded); sys.exit(1 if loaded else 0)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_mixture_ellipses_are_mahalanobis_contours(blobs, covariance_type):
    fit = sklearn_mixture.GaussianMixture(4, covariance_type=covariance_type, random_state=0).fit(
        blobs
    )
    n_sigma = (1.0, 2.0, 3.0)
    ax = plots.plot_mixture(fit, blobs, n_sigma=n_sigma)
    (collection,) = [c for c in ax.collections if len(c.get_paths()) == 4 * len(n_sigma)]
    paths = collection.get_paths()
    precisions = precision_matrices(fit, 2)
    for index, path in enumerate(paths):
        radius, component = n_sigma[index // 4], index % 4
        distance = mahalanobis(path.vertices[:-1], fit.means_[component], precisions[component])
        np.testing.assert_allclose(distance, radius, rtol=1e-9)
    # Fill fades with the weight: the heaviest component has the most opaque fill.
    alphas = collection.get_facecolors()[:4, 3]
    assert np.argmax(alphas) == np.argmax(fit.weights_)


def test_ellipses_in_a_chosen_plane_use_the_marginal_covariance():
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(3, 3))
    covariance = factor @ factor.T + np.eye(3)
    mean = np.array([1.0, -2.0, 0.5])
    ax = plots.plot_ellipses(mean[None], covariance[None], n_sigma=(2.0,), dims=(2, 0))
    vertices = ax.collections[0].get_paths()[0].vertices[:-1]
    marginal = covariance[np.ix_([2, 0], [2, 0])]
    distance = mahalanobis(vertices, mean[[2, 0]], np.linalg.inv(marginal))
    np.testing.assert_allclose(distance, 2.0, rtol=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_covariance_matrices_match_numpy_construction(covariance_type):
    rng = np.random.default_rng(1)
    K, D = 3, 2
    factor = rng.normal(size=(K, D, D))
    full = factor @ np.swapaxes(factor, 1, 2) + np.eye(D)
    storage = {
        "full": full,
        "tied": full[0],
        "diag": np.stack([np.diag(c) for c in full]),
        "spherical": np.array([c[0, 0] for c in full]),
    }[covariance_type]
    expected = {
        "full": full,
        "tied": np.stack([full[0]] * K),
        "diag": np.stack([np.diag(np.diag(c)) for c in full]),
        "spherical": np.stack([c[0, 0] * np.eye(D) for c in full]),
    }[covariance_type]
    np.testing.assert_array_equal(
        plots.covariance_matrices(storage, covariance_type, K, D), expected
    )
    draws = np.stack([storage] * 5)
    assert plots.covariance_matrices(draws, covariance_type, K, D).shape == (5, K, D, D)


def test_responsibilities_as_size_and_as_colour(blobs):
    x = datasets.stretched(n_samples=200, seed=2)[0]
    fit = sklearn_mixture.GaussianMixture(4, random_state=0).fit(x)
    probabilities = fit.predict_proba(x)
    ax = plots.plot_mixture(fit, x, responsibilities="size", point_size=50.0)
    np.testing.assert_allclose(ax.collections[0].get_sizes(), 50.0 * probabilities.max(1) ** 2)
    ax = plots.plot_mixture(fit, x, responsibilities="color")
    palette = np.array([matplotlib.colors.to_rgba(f"C{k}") for k in range(4)])
    np.testing.assert_allclose(
        ax.collections[0].get_facecolors(), np.clip(probabilities @ palette, 0, 1)
    )


def test_posterior_ellipses_from_a_datatree_infer_the_covariance_type():
    arviz_base = pytest.importorskip("arviz_base")
    rng = np.random.default_rng(2)
    chains, draws, K, D = 2, 30, 3, 2
    means = rng.normal(size=(chains, draws, K, D))
    cases = {
        "covariances": np.broadcast_to(np.eye(D), (chains, draws, K, D, D)) * 2.0,
        "covariance": np.broadcast_to(np.eye(D), (chains, draws, D, D)) * 2.0,
        "variances": np.full((chains, draws, K, D), 2.0),
    }
    for name, covariance in [*cases.items(), ("variances", np.full((chains, draws, K), 2.0))]:
        tree = arviz_base.from_dict({"posterior": {"means": means, name: covariance}})
        ax = plots.plot_posterior_ellipses(tree, num_draws=7, n_sigma=(1.0, 2.0))
        paths = ax.collections[0].get_paths()
        assert len(paths) == 7 * K * 2
        # Every outline is a circle of radius n * sqrt(2) around one of the posterior means.
        centres = means.reshape(-1, D)
        for path in paths:
            distance = np.linalg.norm(path.vertices[:-1, None, :] - centres[None], axis=2)
            spread = np.ptp(distance, axis=0)
            centre = np.argmin(spread)
            assert spread[centre] < 1e-9
            assert np.isclose(distance[0, centre] / np.sqrt(2.0), [1.0, 2.0]).any()
    with pytest.raises(ValueError, match="means"):
        plots.plot_posterior_ellipses({"weights": np.ones((10, 2))})


def test_kmeans_circles_pass_through_the_farthest_member(blobs):
    fit = sklearn_cluster.KMeans(4, n_init=3, random_state=0).fit(blobs)
    ax = plots.plot_kmeans(fit, blobs)
    distances = scipy_distance.cdist(blobs, fit.cluster_centers_)
    expected = [distances[fit.labels_ == k, k].max() for k in range(4)]
    radii = [patch.get_radius() for patch in ax.patches]
    np.testing.assert_allclose(sorted(radii), sorted(expected), rtol=1e-12)


def test_peak_bands_are_the_quantiles_of_the_draws():
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 10.0, 40)
    centres = 5.0 + 0.1 * rng.standard_normal(200)
    draws = np.exp(-0.5 * (x[None, :] - centres[:, None]) ** 2)
    y = draws.mean(0) + 0.01 * rng.standard_normal(40)
    ax = plots.plot_peaks(
        x, y, total=draws, components={"baseline": np.zeros(40)}, quantiles=(0.1, 0.9)
    )
    (band,) = [c for c in ax.collections if len(c.get_paths()[0].vertices) > 40]
    vertices = band.get_paths()[0].vertices
    low, high = np.quantile(draws, [0.1, 0.9], axis=0)
    upper_edge = vertices[(vertices[:, 0][:, None] == x[None]).any(1)]
    for xi, lo, hi in zip(x, low, high, strict=True):
        values = upper_edge[upper_edge[:, 0] == xi, 1]
        assert np.isclose(values.min(), lo) and np.isclose(values.max(), hi)
    median = next(line for line in ax.lines if line.get_label() == "fit")
    np.testing.assert_allclose(median.get_ydata(), np.median(draws, axis=0))
    assert "80 % band" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_information_criteria_mark_the_best_k():
    k = np.arange(1, 8)
    bic = (k - 4.0) ** 2 + 10.0
    elpd = -((k - 3.0) ** 2)
    ax = plots.plot_information_criteria(
        k, {"BIC": bic, "ELPD": elpd}, lower_is_better={"ELPD": False}
    )
    stars = [line for line in ax.lines if line.get_marker() == "*"]
    assert [float(s.get_xdata()[0]) for s in stars] == [4.0, 3.0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["BIC (best K = 4)", "ELPD (best K = 3)"]


def test_image_grid_tiles_the_images_in_order():
    images = np.arange(7 * 12, dtype=float).reshape(7, 3, 4)
    ax = plots.plot_image_grid(images, n_columns=3, padding=1)
    mosaic = ax.images[0].get_array()
    assert mosaic.shape == (3 * 4 - 1, 3 * 5 - 1)
    for index, image in enumerate(images):
        row, column = divmod(index, 3)
        np.testing.assert_array_equal(
            mosaic[row * 4 : row * 4 + 3, column * 5 : column * 5 + 4], image
        )
    assert mosaic.mask[-1, -1]  # unused cells stay blank
    flat = plots.plot_image_grid(images.reshape(7, 12), (3, 4), n_columns=3).images[0]
    np.testing.assert_array_equal(flat.get_array(), mosaic)


def test_density_matches_score_samples(blobs):
    fit = sklearn_mixture.GaussianMixture(3, random_state=0).fit(blobs)
    bounds = [(-4.0, 5.0), (-1.0, 10.0)]
    ax = plots.plot_density(fit, blobs, bounds=bounds, resolution=30)
    (contours,) = [c for c in ax.collections if hasattr(c, "levels")]
    grid = np.column_stack([g.ravel() for g in np.meshgrid(*[np.linspace(*b, 30) for b in bounds])])
    density = np.exp(fit.score_samples(grid))
    assert contours.levels[0] <= density.min() < density.max() <= contours.levels[-1]
    assert contours.levels[-2] < density.max()
    ax = plots.plot_density(fit, blobs, bounds=bounds, resolution=30, log=True)
    (contours,) = [c for c in ax.collections if hasattr(c, "levels")]
    log_density = np.log(density)
    assert contours.levels[0] <= log_density.max() - 10.0 < contours.levels[1]
    assert contours.levels[-2] < log_density.max() <= contours.levels[-1]
    one_d = sklearn_mixture.GaussianMixture(2, random_state=0).fit(blobs[:, :1])
    ax = plots.plot_density(one_d, blobs[:, 0], resolution=50)
    line = ax.lines[0]
    np.testing.assert_allclose(
        line.get_ydata(), np.exp(one_d.score_samples(line.get_xdata()[:, None])), rtol=1e-12
    )


@pytest.fixture
def posterior_tree():
    """Two chains of 50 draws: a scalar mu and a (2,)-vector theta; two divergences."""
    arviz_base = pytest.importorskip("arviz_base")
    rng = np.random.default_rng(4)
    diverging = np.zeros((2, 50), dtype=bool)
    diverging[1, [7, 30]] = True
    return arviz_base.from_dict(
        {
            "posterior": {"mu": rng.normal(size=(2, 50)), "theta": rng.gamma(2.0, size=(2, 50, 2))},
            "sample_stats": {"diverging": diverging},
        }
    )


def test_trace_draws_each_chain_per_scalar_on_the_given_axes(posterior_tree):
    _, grid = plt.subplots(3, 1)
    axes = plots.plot_trace(posterior_tree, axes=grid)
    assert list(axes) == list(grid) and len(plt.get_fignums()) == 1
    assert [ax.get_ylabel() for ax in axes] == ["mu", "theta[0]", "theta[1]"]
    theta = posterior_tree["posterior"]["theta"].values
    for chain in range(2):
        np.testing.assert_array_equal(axes[2].lines[chain].get_ydata(), theta[chain, :, 1])
    # The divergent transitions, at their draw index.
    ticks = axes[0].collections[0].get_offsets()[:, 0]
    np.testing.assert_array_equal(ticks, [7, 30])
    # A new figure when no axes are given; one panel per chosen scalar.
    assert len(plots.plot_trace(posterior_tree, var_names="mu")) == 1


def test_rank_histograms_count_the_pooled_ranks_per_chain():
    rank_data = pytest.importorskip("scipy.stats").rankdata
    rng = np.random.default_rng(5)
    draws = rng.normal(size=(3, 40)) + np.array([[0.0], [0.0], [1.5]])  # chain 2 apart
    counts, edges = plots.rank_histograms(draws, bins=8)
    ranks = (rank_data(draws.ravel(), method="ordinal") - 1).reshape(draws.shape)
    expected = np.stack([np.histogram(row, bins=8, range=(0, 120))[0] for row in ranks])
    np.testing.assert_array_equal(counts, expected)
    np.testing.assert_allclose(edges, np.linspace(0, 120, 9))
    assert counts.sum(axis=1).tolist() == [40, 40, 40]
    assert counts[2, -1] > counts[:2, -1].max()  # the shifted chain holds the top ranks


def test_rank_plot_draws_the_histograms_on_the_given_axes(posterior_tree):
    _, grid = plt.subplots(1, 3)
    axes = plots.plot_rank(posterior_tree, bins=5, axes=grid)
    assert list(axes) == list(grid)
    counts, _ = plots.rank_histograms(posterior_tree["posterior"]["theta"].values[..., 0], 5)
    for chain in range(2):
        np.testing.assert_array_equal(axes[1].patches[chain].get_data().values, counts[chain])
    assert axes[1].lines[0].get_ydata()[0] == pytest.approx(50 / 5)  # the expected count


def test_forest_intervals_are_quantiles_of_the_pooled_draws(posterior_tree):
    _, ax = plt.subplots()
    assert plots.plot_forest(posterior_tree, quantiles=(0.1, 0.9), ax=ax) is ax
    draws = posterior_tree["posterior"]["theta"].values[..., 1].ravel()
    thin, thick = ax.collections[0].get_segments()[2], ax.collections[1].get_segments()[2]
    np.testing.assert_allclose(thin[:, 0], np.quantile(draws, [0.1, 0.9]))
    np.testing.assert_allclose(thick[:, 0], np.quantile(draws, [0.25, 0.75]))
    assert ax.lines[0].get_xdata()[2] == pytest.approx(np.median(draws))
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mu", "theta[0]", "theta[1]"]
    # Two models: one offset row each, and a legend naming them.
    _, ax = plt.subplots()
    plots.plot_forest({"a": posterior_tree, "b": posterior_tree}, var_names=["mu"], ax=ax)
    assert [line.get_ydata()[0] for line in ax.lines] == pytest.approx([-0.15, 0.15])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]


def test_mcmc_plots_name_bad_input(posterior_tree):
    with pytest.raises(ValueError, match="3 panels"):
        plots.plot_trace(posterior_tree, axes=plt.subplots(1, 2)[1])
    with pytest.raises(ValueError, match="not in the posterior group"):
        plots.plot_rank(posterior_tree, var_names=["sigma"])
    with pytest.raises(ValueError, match="no 'prior' group"):
        plots.plot_forest(posterior_tree, group="prior")
    with pytest.raises(ValueError, match="bins"):
        plots.rank_histograms(np.zeros((2, 3)), bins=7)
    with pytest.raises(ValueError, match="quantiles"):
        plots.plot_forest(posterior_tree, quantiles=(0.3, 0.9))


def test_saved_figure_is_a_non_blank_png(tmp_path, blobs):
    fit = sklearn_mixture.GaussianMixture(4, random_state=0).fit(blobs)
    ax = plots.plot_mixture(fit, blobs)
    path = tmp_path / "mixture.png"
    ax.figure.savefig(path, dpi=50)
    image = matplotlib.image.imread(path)
    width, height = ax.figure.get_size_inches() * 50
    assert image.shape[:2] == (round(height), round(width))
    assert image[..., :3].std() > 0.05


def test_given_axes_are_drawn_on_and_returned(blobs):
    fit = sklearn_mixture.GaussianMixture(2, random_state=0).fit(blobs)
    figure, axes = plt.subplots(1, 2)
    assert plots.plot_mixture(fit, blobs, ax=axes[1]) is axes[1]
    assert not axes[0].collections and axes[1].collections
    assert plt.get_fignums() == [figure.number]  # no figure of its own
    # Axes sharing both x and y get equal aspect by box (datalim would fail at draw time).
    _, shared = plt.subplots(1, 2, sharex=True, sharey=True)
    plots.plot_mixture(fit, blobs, ax=shared[0])
    plots.plot_kmeans(
        sklearn_cluster.KMeans(2, n_init=1, random_state=0).fit(blobs), blobs, ax=shared[1]
    )
    shared[0].figure.canvas.draw()
    assert shared[0].get_adjustable() == "box"


def test_bad_input_names_the_problem(blobs):
    fit = sklearn_mixture.GaussianMixture(2, random_state=0).fit(blobs)
    with pytest.raises(ValueError, match="fit it first"):
        plots.plot_mixture(object())
    with pytest.raises(ValueError, match="responsibilities"):
        plots.plot_mixture(fit, blobs, responsibilities="alpha")
    with pytest.raises(ValueError, match="dims"):
        plots.plot_mixture(fit, blobs, dims=(0, 0))
    with pytest.raises(ValueError, match="NaN"):
        plots.plot_mixture(fit, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match="covariance_type"):
        plots.plot_ellipses(np.zeros((1, 2)), np.eye(2)[None], "round")
    with pytest.raises(ValueError, match="must end in shape"):
        plots.plot_ellipses(np.zeros((2, 2)), np.eye(2)[None], "full")
    with pytest.raises(ValueError, match="positive definite"):
        plots.plot_ellipses(np.zeros((1, 2)), -np.eye(2)[None])
    with pytest.raises(ValueError, match="n_sigma"):
        plots.plot_ellipses(np.zeros((1, 2)), np.eye(2)[None], n_sigma=(0.0,))
    with pytest.raises(ValueError, match="image_shape"):
        plots.plot_image_grid(np.zeros((3, 10)))
    with pytest.raises(ValueError, match="equal length"):
        plots.plot_peaks(np.arange(3.0), np.arange(4.0))
    with pytest.raises(ValueError, match="quantiles"):
        plots.plot_peaks(np.arange(3.0), np.arange(3.0), quantiles=(0.9, 0.1))
    with pytest.raises(ValueError, match="shape"):
        plots.plot_information_criteria([1, 2], {"BIC": [1.0, 2.0, 3.0]})
    with pytest.raises(ValueError, match="bounds"):
        plots.plot_density(fit)
