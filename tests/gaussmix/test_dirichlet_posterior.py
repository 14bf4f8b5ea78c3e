"""BayesianGaussianMixture.sample_posterior: its program, hyperparameters and start."""

import numpy as np
import pytest

from gaussmix import BayesianGaussianMixture


@pytest.mark.slow
@pytest.mark.parametrize("prior_type", ["dirichlet_process", "dirichlet_distribution"])
def test_sample_posterior_starts_from_the_fit_and_counts_components(prior_type):
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-5, 1, (40, 2)), rng.normal(5, 1, (40, 2))])
    bgm = BayesianGaussianMixture(
        n_components=4,
        covariance_type="spherical",
        weight_concentration_prior_type=prior_type,
        random_state=0,
    ).fit(X)
    tree = bgm.sample_posterior(
        X, num_warmup=100, num_samples=100, num_chains=1, progress_bar=False
    )
    assert tree.sample_stats.attrs["init"] == "init"
    reference = tree["mixture"]["reference_weights"].values
    np.testing.assert_allclose(reference, bgm.weights_ / bgm.weights_.sum(), rtol=1e-6)
    occupied = tree.posterior["occupied_components"].values.ravel()
    assert occupied.min() >= 1 and occupied.max() <= 4
    assert np.bincount(occupied).argmax() == int(np.sum(bgm.weights_ > 0.1)) == 2


def test_sample_posterior_refuses_nan_and_wrong_features():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 2))
    bgm = BayesianGaussianMixture(n_components=2, random_state=0).fit(X)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="X contains NaN"):
        bgm.sample_posterior(bad, num_warmup=1, num_samples=1, num_chains=1)
    with pytest.raises(ValueError, match=r"X must have shape \(N, 2\)"):
        bgm.sample_posterior(X[:, :1], num_warmup=1, num_samples=1, num_chains=1)
