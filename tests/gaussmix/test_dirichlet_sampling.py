"""NUTS on the Dirichlet-process mixture: occupied components, LOO against a finite one."""

import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats

from gaussmix.comparison import compare
from gaussmix.inference import em
from gaussmix.inference.dirichlet_sampling import (
    occupied_components,
    pad_components,
    sample_dirichlet_mixture,
)
from gaussmix.inference.mcmc import sample_mixture


def test_occupied_components_mean_is_the_closed_form():
    """With one draw repeated, E[#occupied] = sum_k 1 - prod_n (1 - r_nk): the mean
    count over S draws within 4 Monte Carlo standard errors."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 1))
    weights = np.array([0.5, 0.3, 0.15, 0.05])
    means = np.array([[-1.0], [0.0], [1.0], [4.0]])
    variances = np.array([1.0, 0.5, 1.0, 0.3])
    S = 4000
    counts = occupied_components(
        x,
        np.tile(weights, (S, 1)),
        np.tile(means, (S, 1, 1)),
        np.tile(variances, (S, 1)),
        "spherical",
        seed=1,
    )
    joint = np.log(weights) + np.stack(
        [stats.norm(means[k, 0], np.sqrt(variances[k])).logpdf(x[:, 0]) for k in range(4)], axis=1
    )
    responsibilities = np.exp(joint - np.logaddexp.reduce(joint, axis=1, keepdims=True))
    expected = np.sum(1 - np.prod(1 - responsibilities, axis=0))
    assert abs(counts.mean() - expected) < 4 * counts.std() / np.sqrt(S)
    # rows of weight 0 occupy nothing: only the row far right, certainly component 3
    only = np.zeros(12)
    only[0] = 1.0
    far = x.copy()
    far[0] = 4.0
    counts = occupied_components(
        far, weights[None], means[None], variances[None], "spherical", sample_weight=only
    )
    assert counts.tolist() == [1]


def test_pad_components_keeps_the_mixture():
    x = np.random.default_rng(0).normal(size=(20, 2))
    point = {
        "weights": np.array([0.3, 0.7]),
        "means": np.zeros((2, 2)),
        "covariances": np.stack([np.eye(2), 2 * np.eye(2)]),
    }
    padded = pad_components(point, 5, x, "full")
    assert padded["weights"].sum() == pytest.approx(1.0)
    np.testing.assert_allclose(padded["weights"][:2], [0.7, 0.3], rtol=1e-2)
    np.testing.assert_allclose(padded["covariances"][0], 2 * np.eye(2))
    np.testing.assert_allclose(padded["covariances"][2], np.cov(x, rowvar=False))
    with pytest.raises(ValueError, match="more than the 1"):
        pad_components(point, 1, x, "full")


def test_bad_arguments_are_refused():
    x = np.zeros((5, 1))
    with pytest.raises(ValueError, match="Invalid weight_concentration_prior_type 'gem'"):
        sample_dirichlet_mixture(x, max_components=2, weight_concentration_prior_type="gem")
    with pytest.raises(ValueError, match=r"weight_threshold must lie in \[0, 1\)"):
        sample_dirichlet_mixture(x, max_components=2, weight_threshold=1.5)
    with pytest.raises(ValueError, match="Invalid concentration"):
        sample_dirichlet_mixture(x, max_components=2, concentration=-1.0, num_warmup=1)
    with pytest.raises(ValueError, match=r"target_accept_prob must lie in \(0, 1\)"):
        sample_dirichlet_mixture(x, max_components=2, nuts_options={"target_accept_prob": 2.0})
    with pytest.raises(ValueError, match="x contains NaN"):
        sample_dirichlet_mixture(np.array([0.0, np.nan, 1.0]), max_components=2, num_warmup=1)


@pytest.mark.slow
# a few divergences near alpha -> 0 (the sticks' funnel) in these short chains
@pytest.mark.filterwarnings("ignore::gaussmix.inference.diagnostics.SamplingWarning")
def test_two_clusters_occupy_two_of_six_sticks_and_loo_compares():
    """Two well-separated clusters, K_max = 6, alpha ~ Gamma(1, 1), chains started from EM with three
    components (one too many, padded): the posterior of the number of occupied
    components has its mode at 2, nearly all of the weight sits on two components, and
    LOO ranks the program against the finite two-component mixture in one table."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-4, 1, 60), rng.normal(4, 1, 60)])
    start = em.fit_em(x[:, None], n_components=3, covariance_type="spherical", priors="default")
    settings = {"num_warmup": 150, "num_samples": 150, "num_chains": 2, "progress_bar": False}
    tree = sample_dirichlet_mixture(
        x,
        max_components=6,
        covariance_type="spherical",
        concentration=dist.Gamma(1.0, 1.0),
        init={name: np.asarray(value) for name, value in start.params.items()},
        **settings,
    )
    occupied = tree.posterior["occupied_components"].values.ravel()
    assert np.bincount(occupied).argmax() == 2
    assert np.mean(occupied <= 3) > 0.8
    weights = np.sort(tree.posterior["weights"].values, axis=-1)
    assert np.mean(weights[..., -2:].sum(-1)) > 0.95
    heavy = tree.posterior["weighted_components"].values.ravel()
    assert np.bincount(heavy).argmax() == 2
    assert tree["mixture"]["responsibilities"].shape == (120, 6)
    concentration = tree.posterior["concentration"]
    assert concentration.dims == ("chain", "draw") and bool((concentration > 0).all())

    finite = sample_mixture(x, n_components=2, covariance_type="spherical", **settings)
    table = compare({"dirichlet_process": tree, "finite_2": finite})
    assert sorted(table.index) == ["dirichlet_process", "finite_2"]
    assert np.all(np.isfinite(table["elpd"]))
