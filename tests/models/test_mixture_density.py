"""The observed site's distribution: Cholesky-based component densities, log-sum-exp over K."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats
from scipy.special import logsumexp

from gaussmix.models.mixture import (
    GaussianMixtureDistribution,
    component_distribution,
    component_log_density,
)

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def parameters(covariance_type, n_components=3, n_features=2, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(n_components))
    means = rng.normal(size=(n_components, n_features)) * 2
    if covariance_type == "full":
        a = rng.normal(size=(n_components, n_features, n_features))
        covariance = a @ a.transpose(0, 2, 1) + 0.5 * np.eye(n_features)
    elif covariance_type == "tied":
        a = rng.normal(size=(n_features, n_features))
        covariance = a @ a.T + 0.5 * np.eye(n_features)
    elif covariance_type == "diag":
        covariance = rng.uniform(0.3, 3.0, size=(n_components, n_features))
    else:
        covariance = rng.uniform(0.3, 3.0, size=n_components)
    return weights, means, covariance


def dense(covariance, covariance_type, n_components, n_features):
    if covariance_type == "full":
        return covariance
    if covariance_type == "tied":
        return np.broadcast_to(covariance, (n_components, n_features, n_features))
    if covariance_type == "diag":
        return np.stack([np.diag(v) for v in covariance])
    return np.stack([v * np.eye(n_features) for v in covariance])


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_component_log_density_matches_scipy_with_batch_axes(covariance_type):
    weights, means, covariance = parameters(covariance_type)
    x = np.random.default_rng(1).normal(size=(4, 5, 2)) * 3
    value = component_log_density(x, means, covariance, covariance_type)
    assert value.shape == (4, 5, 3)
    covariances = dense(covariance, covariance_type, 3, 2)
    for k in range(3):
        expected = stats.multivariate_normal(means[k], covariances[k]).logpdf(x)
        np.testing.assert_allclose(value[..., k], expected, rtol=1e-12)
    mixture = GaussianMixtureDistribution(weights, means, covariance, covariance_type)
    expected = logsumexp(np.log(weights) + np.asarray(value), axis=-1)
    np.testing.assert_allclose(mixture.log_prob(x), expected, rtol=1e-12)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_same_value_and_gradient_as_mixture_same_family(covariance_type):
    weights, means, covariance = parameters(covariance_type, seed=2)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(30, 2)) * 3)

    def ours(weights, means, covariance):
        mixture = GaussianMixtureDistribution(weights, means, covariance, covariance_type)
        return jnp.sum(mixture.log_prob(x))

    def numpyros(weights, means, covariance):
        components = component_distribution(means, covariance, covariance_type)
        mixture = dist.MixtureSameFamily(dist.Categorical(probs=weights), components)
        return jnp.sum(mixture.log_prob(x))

    arguments = tuple(jnp.asarray(value) for value in (weights, means, covariance))
    ours_value, ours_gradient = jax.jit(jax.value_and_grad(ours, (0, 1, 2)))(*arguments)
    reference = jax.jit(jax.value_and_grad(numpyros, (0, 1, 2)))(*arguments)
    reference_value, reference_gradient = reference
    np.testing.assert_allclose(ours_value, reference_value, rtol=1e-12)
    # numpyro normalizes the weights (log-softmax), which adds N to every weight's
    # derivative; along the simplex (the only directions a sampler moves) they agree.
    ours_gradient = (ours_gradient[0] - ours_gradient[0].mean(), *ours_gradient[1:])
    reference_gradient = (
        reference_gradient[0] - reference_gradient[0].mean(),
        *reference_gradient[1:],
    )
    for mine, theirs in zip(ours_gradient, reference_gradient, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-9, atol=1e-12)


def test_a_component_of_zero_weight_adds_nothing_and_keeps_gradients_finite():
    weights, means, covariance = parameters("full", seed=4)
    weights = np.array([0.6, 0.4, 0.0])
    x = np.random.default_rng(5).normal(size=(20, 2))

    def total(means):
        return jnp.sum(GaussianMixtureDistribution(weights, means, covariance, "full").log_prob(x))

    value, gradient = jax.value_and_grad(total)(jnp.asarray(means))
    expected = logsumexp(
        [
            np.log(weights[k]) + stats.multivariate_normal(means[k], covariance[k]).logpdf(x)
            for k in range(2)
        ],
        axis=0,
    ).sum()
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert np.all(np.isfinite(gradient)) and np.all(gradient[2] == 0.0)


@pytest.mark.parametrize("covariance_type", ["full", "spherical"])
def test_draws_are_those_of_mixture_same_family(covariance_type):
    weights, means, covariance = parameters(covariance_type, seed=6)
    key = jax.random.key(7)
    ours = GaussianMixtureDistribution(weights, means, covariance, covariance_type)
    theirs = dist.MixtureSameFamily(
        dist.Categorical(probs=weights), component_distribution(means, covariance, covariance_type)
    )
    draws = ours.sample(key, (200,))
    assert draws.shape == (200, 2)
    np.testing.assert_array_equal(draws, theirs.sample(key, (200,)))
    # Under a plate the site still samples: one point per row.
    assert ours.expand((40,)).sample(key).shape == (40, 2)


def test_refuses_batched_parameters():
    weights, means, covariance = parameters("diag")
    with pytest.raises(ValueError, match="vmap"):
        GaussianMixtureDistribution(np.stack([weights, weights]), means, covariance, "diag")
    with pytest.raises(ValueError, match="covariance_type"):
        GaussianMixtureDistribution(weights, means, covariance, "banana")
