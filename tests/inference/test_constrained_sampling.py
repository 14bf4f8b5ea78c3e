"""NUTS on mclust's constrained models: starting points in the storage layout, one
dimension, and what reads the draws downstream (predictive, LOO, dimension names)."""

import numpy as np
import pytest

from gaussmix.inference.mixture_sampling import sample_mixture, with_latent_values
from gaussmix.models.eigen_covariance import covariance_from_parts


def test_with_latent_values_adds_only_what_is_missing():
    covariances = np.asarray(
        covariance_from_parts(
            np.array([1.0, 3.0]),
            np.array([2.0, 0.5]),
            np.array([[[1.0, 1.0]], [[1.0, -2.0]]]),
            "VEV",
            2,
            2,
        )
    )
    point = {"weights": np.full(2, 0.5), "means": np.zeros((2, 2)), "covariances": covariances}
    completed = with_latent_values(point, "VEV")
    assert set(completed) == set(point) | {"volumes", "log_shape", "orientation_bases"}
    np.testing.assert_allclose(completed["volumes"], [1.0, 3.0], rtol=1e-12)
    np.testing.assert_allclose(completed["log_shape"], np.log([2.0, 0.5]), rtol=1e-12)
    given = {**point, "volumes": np.array([5.0, 6.0])}  # a caller's value is kept
    assert with_latent_values(given, "VEV")["volumes"].tolist() == [5.0, 6.0]
    for classic in ("full", "VVV"):
        assert set(with_latent_values(point, classic)) == set(point)


@pytest.mark.slow
def test_one_dimensional_constrained_model_orders_and_keeps_one_variance():
    """D = 1: EEI has its volume only; the draws are ordered by the means and both
    components share the variance on every draw."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-3.0, 1.0, 80), rng.normal(3.0, 1.0, 80)])
    tree = sample_mixture(
        x,
        n_components=2,
        covariance_type="EEI",
        num_warmup=150,
        num_samples=150,
        num_chains=1,
        progress_bar=False,
    )
    posterior = tree.posterior
    assert set(posterior.data_vars) == {"weights", "means", "volume", "variances"}
    variances = posterior["variances"].values
    np.testing.assert_array_equal(variances[..., 0, 0], variances[..., 1, 0])
    means = posterior["means"].values[..., 0]
    assert np.all(means[..., 0] < means[..., 1])
    assert posterior.attrs["relabel_method"] == "order"


@pytest.mark.slow
def test_predictive_loo_and_dimensions_of_a_constrained_model():
    import arviz_stats

    rng = np.random.default_rng(1)
    x = np.concatenate(
        [rng.normal(size=(60, 2)) * [2.0, 0.5] - 4.0, rng.normal(size=(60, 2)) * [0.5, 2.0] + 4.0]
    )
    tree = sample_mixture(
        x,
        n_components=2,
        covariance_type="EEV",
        num_warmup=150,
        num_samples=150,
        num_chains=1,
        progress_bar=False,
        posterior_predictive=True,
    )
    posterior = tree.posterior
    assert posterior["covariances"].dims == (
        "chain", "draw", "components", "feature_row", "feature_column"
    )  # fmt: skip
    assert posterior["orientation_bases"].dims[2:] == ("components", "orientation_axis", "features")
    assert posterior["log_shape"].dims[2:] == ("features",)
    assert tree.posterior_predictive["x"].shape == (1, 150, 120, 2)
    assert np.all(np.isfinite(tree.posterior_predictive["x"].values))
    loo = arviz_stats.loo(tree)
    assert np.isfinite(loo.elpd)
    assert tree["mixture"]["reference_volume"].shape == ()
