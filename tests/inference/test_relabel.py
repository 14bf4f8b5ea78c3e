"""Relabeling: exact assignment (against scipy), recovery of known permutations,
invariance of the log-likelihood, and R-hat after relabeling."""

import itertools

import arviz_base
import arviz_stats
import jax
import numpy as np
import pytest
from numpyro.infer.util import log_likelihood
from scipy.optimize import linear_sum_assignment
from scipy.stats import invwishart

from gaussmix.inference.relabel import (
    apply_permutation,
    assignment,
    component_cost,
    hungarian,
    label_switching_fraction,
    relabel_mixture,
    relabeling_permutation,
    sort_components,
)
from gaussmix.models.mixture import gaussian_mixture
from gaussmix.models.priors import COVARIANCE_SITES

TOLERANCE = {"float32": 1e-5, "float64": 1e-12}


def random_point(covariance_type, n_components, n_features, rng):
    """A mixture point with well separated components."""
    means = rng.normal(scale=8.0, size=(n_components, n_features))
    if covariance_type == "full":
        covariance = np.stack(
            [
                invwishart(n_features + 4, np.eye(n_features) * 3).rvs(random_state=rng)
                for _ in range(n_components)
            ]
        ).reshape(n_components, n_features, n_features)
    elif covariance_type == "tied":
        covariance = invwishart(n_features + 4, np.eye(n_features) * 3).rvs(random_state=rng)
        covariance = np.asarray(covariance).reshape(n_features, n_features)
    elif covariance_type == "diag":
        covariance = rng.uniform(0.5, 2.0, size=(n_components, n_features))
    else:
        covariance = rng.uniform(0.5, 2.0, size=n_components)
    weights = rng.dirichlet(np.full(n_components, 5.0))
    return {"weights": weights, "means": means, COVARIANCE_SITES[covariance_type]: covariance}


def scrambled_draws(point, covariance_type, shape, rng):
    """Noisy copies of ``point`` with a random permutation per draw, and the permutations."""
    n_components = point["weights"].shape[0]
    permutations = np.stack(
        [rng.permutation(n_components) for _ in range(int(np.prod(shape)))]
    ).reshape((*shape, n_components))
    draws = {}
    for name, value in point.items():
        value = np.broadcast_to(value, (*shape, *value.shape)).copy()
        if name == "means":
            value = value + rng.normal(scale=0.05, size=value.shape)
        draws[name] = value
    scrambled = {
        name: np.asarray(value)
        for name, value in apply_permutation(draws, permutations, covariance_type).items()
    }
    return scrambled, permutations


@pytest.mark.parametrize("n_components", [1, 3, 6, 7, 10])
def test_assignment_is_optimal_like_scipy(n_components):
    """Exhaustive search for K <= 6, the Hungarian algorithm beyond."""
    rng = np.random.default_rng(n_components)
    cost = rng.normal(size=(60, n_components, n_components))
    cost[:20] = rng.integers(0, 3, size=(20, n_components, n_components))  # ties
    chosen = np.asarray(assignment(cost))
    for matrix, permutation in zip(cost, chosen, strict=True):
        rows, columns = linear_sum_assignment(matrix)
        assert sorted(permutation.tolist()) == list(range(n_components))
        np.testing.assert_allclose(
            matrix[np.arange(n_components), permutation].sum(), matrix[rows, columns].sum()
        )


def test_hungarian_matches_scipy_on_small_matrices_with_ties():
    rng = np.random.default_rng(11)
    solve = jax.jit(hungarian)
    for _ in range(30):
        matrix = rng.integers(0, 4, size=(4, 4)).astype(float)
        rows, columns = linear_sum_assignment(matrix)
        permutation = np.asarray(solve(matrix))
        assert sorted(permutation.tolist()) == [0, 1, 2, 3]
        assert matrix[np.arange(4), permutation].sum() == matrix[rows, columns].sum()


def test_exhaustive_assignment_enumerates_every_permutation():
    cost = np.random.default_rng(0).normal(size=(4, 4))
    totals = {p: cost[np.arange(4), list(p)].sum() for p in itertools.permutations(range(4))}
    assert tuple(np.asarray(assignment(cost)).tolist()) == min(totals, key=totals.get)


def test_cost_is_the_kl_divergence_of_gaussians():
    rng = np.random.default_rng(1)
    point = random_point("full", 3, 2, rng)
    other = random_point("full", 3, 2, rng)
    cost = np.asarray(
        component_cost(
            other["means"], other["covariances"], point["means"], point["covariances"], "full"
        )
    )
    for j, k in itertools.product(range(3), range(3)):
        mean_draw, cov_draw = other["means"][k], other["covariances"][k]
        mean_ref, cov_ref = point["means"][j], point["covariances"][j]
        precision = np.linalg.inv(cov_ref)
        difference = mean_draw - mean_ref
        expected = 0.5 * (
            np.trace(precision @ cov_draw)
            + difference @ precision @ difference
            - 2
            + np.log(np.linalg.det(cov_ref) / np.linalg.det(cov_draw))
        )
        np.testing.assert_allclose(cost[j, k], expected, rtol=1e-10)


@pytest.mark.parametrize(
    ("covariance_type", "n_components"),
    [("full", 3), ("tied", 3), ("diag", 3), ("spherical", 3), ("full", 8)],
)
def test_relabeling_undoes_known_permutations(covariance_type, n_components):
    rng = np.random.default_rng(2)
    point = random_point(covariance_type, n_components, 2, rng)
    draws, _ = scrambled_draws(point, covariance_type, (3, 40), rng)
    relabeled, permutation = relabel_mixture(draws, point, covariance_type)
    assert permutation.shape == (3, 40, n_components)
    np.testing.assert_allclose(
        relabeled["means"], np.broadcast_to(point["means"], (3, 40, n_components, 2)), atol=0.5
    )
    np.testing.assert_allclose(
        relabeled["weights"], np.broadcast_to(point["weights"], (3, 40, n_components))
    )
    site = COVARIANCE_SITES[covariance_type]
    if covariance_type == "tied":  # shared, never permuted
        np.testing.assert_array_equal(relabeled[site], draws[site])
    else:
        np.testing.assert_allclose(relabeled[site], np.broadcast_to(point[site], draws[site].shape))


def test_one_dimension_orders_by_the_means():
    rng = np.random.default_rng(3)
    means = rng.normal(size=(2, 50, 4, 1))
    draws = {
        "weights": rng.dirichlet(np.ones(4), size=(2, 50)),
        "means": means,
        "variances": rng.uniform(size=(2, 50, 4)),
    }
    relabeled, permutation = relabel_mixture(draws, None, "spherical")
    assert np.all(np.diff(np.asarray(relabeled["means"])[..., 0], axis=-1) >= 0)
    order = np.argsort(means[..., 0], axis=-1)
    np.testing.assert_array_equal(permutation, order)
    np.testing.assert_array_equal(
        relabeled["weights"], np.take_along_axis(draws["weights"], order, axis=-1)
    )


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_log_likelihood_is_unchanged_by_relabeling(covariance_type):
    rng = np.random.default_rng(4)
    point = random_point(covariance_type, 3, 2, rng)
    draws, _ = scrambled_draws(point, covariance_type, (2, 5), rng)
    # Make the draws differ from each other.
    draws["means"] = draws["means"] + rng.normal(size=draws["means"].shape)
    relabeled, _ = relabel_mixture(draws, point, covariance_type)
    x = rng.normal(scale=5.0, size=(30, 2))
    kwargs = {"n_components": 3, "covariance_type": covariance_type}
    before = log_likelihood(gaussian_mixture, draws, x, batch_ndims=2, parallel=True, **kwargs)["x"]
    after = log_likelihood(gaussian_mixture, relabeled, x, batch_ndims=2, parallel=True, **kwargs)[
        "x"
    ]
    assert not np.allclose(relabeled["means"], draws["means"])  # something was permuted
    dtype = str(np.asarray(before).dtype)
    np.testing.assert_allclose(after, before, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype])


def test_r_hat_is_computed_after_relabeling():
    """Chains that sit in different labellings of one mode: R-hat is huge before, fine after."""
    rng = np.random.default_rng(5)
    point = random_point("diag", 3, 2, rng)
    chains, draws_per_chain = 4, 500
    samples = {
        "weights": rng.dirichlet(point["weights"] * 400, size=(chains, draws_per_chain)),
        "means": point["means"] + 0.1 * rng.normal(size=(chains, draws_per_chain, 3, 2)),
        "variances": point["variances"]
        * rng.gamma(200, 1 / 200, size=(chains, draws_per_chain, 3, 2)),
    }
    swap = np.array([[0, 1, 2], [1, 0, 2], [2, 0, 1], [0, 2, 1]])[:, None, :]
    swap = np.broadcast_to(swap, (chains, draws_per_chain, 3))
    switched = {k: np.asarray(v) for k, v in apply_permutation(samples, swap, "diag").items()}
    before = arviz_stats.rhat(arviz_base.from_dict({"posterior": switched}))
    relabeled, permutation = relabel_mixture(switched, point, "diag")
    after = arviz_stats.rhat(
        arviz_base.from_dict({"posterior": {k: np.asarray(v) for k, v in relabeled.items()}})
    )
    assert float(before["means"].max()) > 1.5
    assert float(after["means"].max()) < 1.01
    assert float(after["weights"].max()) < 1.01
    # Each chain stays in one labelling: no switching within chains.
    assert label_switching_fraction(permutation) == 0.0


def test_label_switching_fraction_counts_switches_within_chains():
    permutation = np.zeros((2, 10, 2), int)
    permutation[..., :] = [0, 1]
    permutation[1, :, :] = [1, 0]  # chain 1 in another labelling: not a switch
    permutation[0, :3] = [1, 0]  # three switched draws in chain 0
    assert label_switching_fraction(permutation) == pytest.approx(3 / 20)


def test_sort_components_sorts_component_sites_only():
    point = {
        "weights": np.array([0.2, 0.5, 0.3]),
        "means": np.array([[3.0], [-1.0], [0.0]]),
        "covariance": np.eye(1),
    }
    ordered = sort_components(point, "tied")
    np.testing.assert_array_equal(ordered["means"][:, 0], [-1.0, 0.0, 3.0])
    np.testing.assert_array_equal(ordered["weights"], [0.5, 0.3, 0.2])
    np.testing.assert_array_equal(ordered["covariance"], np.eye(1))


def test_bad_input():
    with pytest.raises(ValueError, match="square"):
        hungarian(np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"\(\.\.\., K, K\)"):
        assignment(np.ones((2, 3)))
    with pytest.raises(ValueError, match="method"):
        relabeling_permutation({"means": np.ones((4, 2, 2))}, None, "diag", method="magic")
    with pytest.raises(ValueError, match="reference"):
        relabeling_permutation({"means": np.ones((4, 2, 2))}, None, "diag")
    with pytest.raises(ValueError, match="covariance_type"):
        relabeling_permutation({"means": np.ones((4, 2, 2))}, None, "banana")


@pytest.mark.parametrize("covariance_type", ["VEV", "EVE", "EEI"])
def test_constrained_models_permute_their_varying_parts_only(covariance_type):
    """mclust's constrained models: per-component parts (``volumes``, ``log_shapes``,
    ``shapes``, ``orientation_bases``, the covariance site) follow the labels, shared
    ones (``volume``, ``log_shape``, ``shape``, ``orientation_basis``) stay; K = D = 3,
    so a shared (D,) site permuted by mistake would show."""
    from gaussmix.models.eigen_covariance import covariance_from_parts, eigen_sites

    rng = np.random.default_rng(4)
    K = D = 3
    sites = eigen_sites(covariance_type, D)
    point = {
        "weights": rng.dirichlet(np.full(K, 5.0)),
        "means": rng.normal(scale=8.0, size=(K, D)),
    }
    point[sites.volume] = rng.uniform(0.5, 2.0, size=K if sites.volume == "volumes" else ())
    log_shape = rng.normal(size=(K, D) if sites.log_shape == "log_shapes" else D)
    point[sites.log_shape] = log_shape
    point[sites.shape] = np.exp(log_shape - log_shape.mean(-1, keepdims=True))
    basis = None
    if sites.orientation:
        per_component = sites.orientation == "orientation_bases"
        basis = rng.normal(size=(K, D - 1, D) if per_component else (D - 1, D))
        point[sites.orientation] = basis
    site = COVARIANCE_SITES[covariance_type]
    point[site] = np.asarray(
        covariance_from_parts(point[sites.volume], point[sites.shape], basis, covariance_type, K, D)
    )
    varying = {"weights", "means", site, "volumes", "log_shapes", "shapes", "orientation_bases"}
    permutations = np.stack([rng.permutation(K) for _ in range(12)]).reshape(2, 6, K)
    draws = {}
    for name, value in point.items():
        value = np.broadcast_to(value, (2, 6, *np.shape(value))).copy()
        if name in varying:
            index = permutations.reshape(2, 6, K, *(1,) * (value.ndim - 3))
            value = np.take_along_axis(value, index, axis=2)
        draws[name] = value
    relabeled, _ = relabel_mixture(draws, point, covariance_type, method="match")
    for name, value in point.items():
        np.testing.assert_allclose(
            relabeled[name], np.broadcast_to(value, relabeled[name].shape), err_msg=name
        )
