"""BayesianGaussianMixture.sample_posterior: its program, hyperparameters and start.

One data set and one fitted estimator per prior type for the module (the refusals reuse
the Dirichlet-process fit): each other shape or option would compile its own programs.
"""

import functools

import numpy as np
import pytest

from gaussmix import BayesianGaussianMixture


@pytest.fixture(scope="module")
def X():
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-5, 1, (40, 2)), rng.normal(5, 1, (40, 2))])


@pytest.fixture(scope="module")
def fitted(X):
    """``fitted(prior_type)``: the estimator fitted on ``X`` (shared; tests only read it)."""

    @functools.cache
    def fit(prior_type):
        return BayesianGaussianMixture(
            n_components=4,
            covariance_type="spherical",
            weight_concentration_prior_type=prior_type,
            random_state=0,
        ).fit(X)

    return fit


@pytest.mark.slow
@pytest.mark.parametrize("prior_type", ["dirichlet_process", "dirichlet_distribution"])
def test_sample_posterior_starts_from_the_fit_and_counts_components(X, fitted, prior_type):
    bgm = fitted(prior_type)
    tree = bgm.sample_posterior(
        X, num_warmup=100, num_samples=100, num_chains=1, progress_bar=False
    )
    assert tree.sample_stats.attrs["init"] == "init"
    reference = tree["mixture"]["reference_weights"].values
    np.testing.assert_allclose(reference, bgm.weights_ / bgm.weights_.sum(), rtol=1e-6)
    occupied = tree.posterior["occupied_components"].values.ravel()
    assert occupied.min() >= 1 and occupied.max() <= 4
    assert np.bincount(occupied).argmax() == int(np.sum(bgm.weights_ > 0.1)) == 2


def test_sample_posterior_refuses_nan_and_wrong_features(X, fitted):
    bgm = fitted("dirichlet_process")
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        bgm.sample_posterior(bad, num_warmup=1, num_samples=1, num_chains=1)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 2\)"):
        bgm.sample_posterior(X[:, :1], num_warmup=1, num_samples=1, num_chains=1)
