"""sample_posterior on imperfect data: missing entries, measurement errors, a background.

The posterior means are compared with the estimator's MAP fit under the program's
default prior (EM on the same data and imperfections), within a few posterior standard
deviations; the pointwise log-likelihood LOO reads is checked against scipy's marginal
densities at posterior draws.
"""

import warnings

import numpy as np
import pytest
from arviz_stats import loo
from scipy import stats
from scipy.special import logsumexp

from gaussmix import GaussianMixture
from gaussmix._posterior_data import posterior_arguments
from gaussmix.inference.mcmc import sample_mixture
from gaussmix.inference.mixture_sampling import imperfect_data_arguments, mixture_sampling_hooks

SETTINGS = {"num_warmup": 200, "num_samples": 200, "num_chains": 2, "progress_bar": False}


def two_clusters(seed=0, n=200):
    rng = np.random.default_rng(seed)
    half = n // 2
    return np.concatenate([rng.normal(-3, 1, (half, 2)), rng.normal(3, 1, (n - half, 2))])


def with_holes(x, fraction=0.15, seed=1):
    rng = np.random.default_rng(seed)
    x = x.copy()
    holes = rng.random(x.shape) < fraction
    holes[holes.all(axis=1), 0] = False
    x[holes] = np.nan
    return x


def assert_near_fit(tree, gm, site="means", spread_factor=4.0, slack=0.05):
    """Posterior mean within ``spread_factor`` posterior sds (plus prior shrinkage) of
    the fitted value of the same label."""
    draws = tree.posterior[site].values
    draws = draws.reshape(-1, *draws.shape[2:])
    fitted = getattr(gm, f"{site}_")
    gap = np.abs(draws.mean(axis=0) - fitted)
    assert np.all(gap < spread_factor * draws.std(axis=0) + slack), (gap, draws.std(axis=0))


def marginal_log_density(x, weights, means, covariances, errors=None, background=None):
    """Brute force: each row's observed coordinates under Sigma_k + S_n, plus pi_0 / V."""
    rows = []
    for n in range(x.shape[0]):
        seen = ~np.isnan(x[n])
        terms = []
        for k in range(len(weights)):
            total = covariances[k] + (0 if errors is None else np.diag(errors[n]))
            normal = stats.multivariate_normal(means[k][seen], total[np.ix_(seen, seen)])
            terms.append(np.log(weights[k]) + normal.logpdf(x[n][seen]))
        if background is not None:
            terms.append(np.log(background[0]) - np.log(background[1]))
        rows.append(logsumexp(terms))
    return np.array(rows)


def test_missing_entries_posterior_near_em_fit_and_loo_reads_marginal_densities():
    x = with_holes(two_clusters())
    gm = GaussianMixture(2, nan_policy="marginalize", priors="default", random_state=0).fit(x)
    tree = gm.sample_posterior(x, random_state=1, **SETTINGS)
    assert_near_fit(tree, gm, "means")
    assert_near_fit(tree, gm, "weights")
    assert np.isnan(tree.observed_data["x"].values).sum() == np.isnan(x).sum()
    pointwise = tree.log_likelihood["x"].values
    assert pointwise.shape == (2, 200, 200) and np.all(np.isfinite(pointwise))
    # spot check: the pointwise values are the marginal densities at the draws
    posterior = tree.posterior
    for chain, draw in [(0, 0), (1, 123)]:
        expected = marginal_log_density(
            x,
            posterior["weights"].values[chain, draw],
            posterior["means"].values[chain, draw],
            posterior["covariances"].values[chain, draw],
        )
        np.testing.assert_allclose(pointwise[chain, draw], expected, rtol=1e-10, atol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pareto k warnings of a short run
        result = loo(tree, pointwise=True)
    assert np.isfinite(result.elpd) and result.elpd_i.shape == (200,)
    # LOO's elpd lies below the in-sample log predictive density of the same draws
    lpd = logsumexp(pointwise.reshape(-1, 200), axis=0) - np.log(400)
    assert result.elpd < lpd.sum()
    responsibilities = tree["mixture"]["responsibilities"].values
    np.testing.assert_allclose(responsibilities.sum(axis=1), 1.0, rtol=1e-10)
    assert (responsibilities.argmax(1) == gm.predict(x)).mean() > 0.97


@pytest.mark.slow
def test_measurement_errors_posterior_near_the_deconvolved_fit():
    rng = np.random.default_rng(2)
    errors = rng.uniform(0.2, 1.0, size=(200, 2))  # heteroscedastic variances
    x = two_clusters(seed=3) + rng.normal(size=(200, 2)) * np.sqrt(errors)
    gm = GaussianMixture(2, priors="default", random_state=0)
    gm.fit(x, measurement_covariances=errors)
    tree = gm.sample_posterior(x, measurement_covariances=errors, random_state=1, **SETTINGS)
    assert_near_fit(tree, gm, "means")
    assert_near_fit(tree, gm, "weights")
    assert_near_fit(tree, gm, "covariances", slack=0.1)
    posterior = tree.posterior
    expected = marginal_log_density(
        x,
        posterior["weights"].values[1, 50],
        posterior["means"].values[1, 50],
        posterior["covariances"].values[1, 50],
        errors,
    )
    np.testing.assert_allclose(tree.log_likelihood["x"].values[1, 50], expected, rtol=1e-10)


@pytest.mark.slow
def test_background_posterior_near_the_noise_fit_and_relabeling_keeps_it_last():
    rng = np.random.default_rng(4)
    x = np.concatenate([two_clusters(seed=5, n=170), rng.uniform(-9, 9, (30, 2))])
    gm = GaussianMixture(2, background="uniform", priors="default", random_state=0).fit(x)
    tree = gm.sample_posterior(x, random_state=1, **SETTINGS)
    posterior = tree.posterior
    assert_near_fit(tree, gm, "means")
    assert_near_fit(tree, gm, "weights")
    assert_near_fit(tree, gm, "background_weight")
    proportions = posterior["proportions"].values
    np.testing.assert_allclose(proportions[..., :2], posterior["weights"].values, rtol=0)
    np.testing.assert_allclose(proportions[..., 2], posterior["background_weight"].values, rtol=0)
    np.testing.assert_allclose(proportions.sum(-1), 1.0, rtol=1e-12)
    responsibilities = tree["mixture"]["responsibilities"]
    assert responsibilities.dims == ("data", "components_and_background")
    assert responsibilities.shape == (200, 3)
    # the uniform points are mostly given to the background
    assert (responsibilities.values[170:].argmax(1) == 2).mean() > 0.5
    expected = marginal_log_density(
        x,
        posterior["weights"].values[0, 7],
        posterior["means"].values[0, 7],
        posterior["covariances"].values[0, 7],
        background=(posterior["background_weight"].values[0, 7], gm.background_volume_),
    )
    np.testing.assert_allclose(tree.log_likelihood["x"].values[0, 7], expected, rtol=1e-10)


def test_policies_and_hostile_arguments_before_any_sampling():
    x = with_holes(two_clusters(n=40))
    complete = np.where(np.isnan(x), 0.0, x)
    rows = ~np.isnan(x).any(axis=1)
    # fitted on the rows "omit" keeps: the same compiled fit as the omitting estimator's
    raising = GaussianMixture(2, random_state=0).fit(x[rows])
    with pytest.raises(ValueError, match="nan_policy='marginalize'"):
        raising.sample_posterior(x, **SETTINGS)
    omitting = GaussianMixture(2, nan_policy="omit", random_state=0).fit(x)
    weights = np.arange(40.0)
    kept, arguments, init = posterior_arguments(omitting, x, weights, np.ones((40, 2)))
    np.testing.assert_array_equal(kept, x[rows])
    np.testing.assert_array_equal(arguments["sample_weight"], weights[rows])
    assert arguments["measurement_covariances"].shape == (rows.sum(), 2)
    assert "nan_policy" not in arguments and set(init) == {"weights", "means", "covariances"}
    with pytest.raises(ValueError, match=r"measurement_covariances has shape \(40, 3\)"):
        raising.sample_posterior(complete, measurement_covariances=np.ones((40, 3)), **SETTINGS)
    indefinite = np.tile(np.diag([1.0, -1.0]), (40, 1, 1))
    with pytest.raises(ValueError, match="not positive semi-definite"):
        raising.sample_posterior(complete, measurement_covariances=indefinite, **SETTINGS)


@pytest.mark.parametrize("with_errors", [False, True])
def test_sample_mixture_starts_from_em_on_imperfect_data(with_errors):
    """Without init the chains start at EM's answer on the same imperfect data: the
    background's weight from EM's noise fit, or 0.1 where EM does not take it (with
    measurement errors); refusals come before any sampling."""
    rng = np.random.default_rng(6)
    x = with_holes(np.concatenate([two_clusters(seed=7, n=80), rng.uniform(-9, 9, (20, 2))]))
    complete = np.where(np.isnan(x), 0.0, x)
    arguments = imperfect_data_arguments(
        complete, "raise", np.full((100, 2), 0.1) if with_errors else None, 400.0
    )
    hooks = mixture_sampling_hooks((complete,), {"n_components": 2, **arguments})
    start = hooks.initial_values_fn(0)
    assert set(start) >= {"weights", "means", "covariances", "proportions", "background_weight"}
    np.testing.assert_allclose(start["proportions"].sum(), 1.0, rtol=1e-12)
    fit = GaussianMixture(
        2, background="uniform", background_volume=400.0, priors="default", random_state=0
    )  # the chains' EM: seed 0 (an unseeded fit may stop at another optimum)
    if with_errors:  # 0.1 while EM takes no background with errors, else EM's (clipped)
        assert 1e-3 <= float(start["background_weight"]) <= 0.5
    else:
        fit.fit(complete)
        assert float(start["background_weight"]) == pytest.approx(fit.background_weight_, rel=1e-6)
    arguments = imperfect_data_arguments(x, "marginalize", None, None)
    assert arguments["missing_patterns"].index.shape == (100,)
    hooks = mixture_sampling_hooks((x,), {"n_components": 2, **arguments})
    reference = GaussianMixture(
        2, nan_policy="marginalize", priors="default", tol=1e-8, random_state=0
    ).fit(x)
    means = hooks.initial_values_fn(0)["means"]  # EM at its default tol, 1e-3
    order, expected = np.argsort(means[:, 0]), np.argsort(reference.means_[:, 0])
    np.testing.assert_allclose(means[order], reference.means_[expected], atol=0.02)
    with pytest.raises(ValueError, match="posterior_predictive"):
        sample_mixture(x, n_components=2, nan_policy="marginalize", posterior_predictive=True)
    with pytest.raises(ValueError, match="background_volume must be"):
        sample_mixture(complete, n_components=2, background_volume=-1.0)
    with pytest.raises(ValueError, match="Invalid nan_policy"):
        sample_mixture(x, n_components=2, nan_policy="omit")
