"""The mixture program on imperfect data: missing entries, measurement errors, background.

Each row's log-likelihood is checked against a brute-force sum over components of
scipy's multivariate normal density on the row's observed coordinates, with covariance
Sigma_k + S_n, plus the background's pi_0 / V.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from scipy import stats
from scipy.special import logsumexp

from gaussmix.models import gaussian_mixture, imperfect_data
from gaussmix.models.imperfect_data import (
    ImperfectMixtureDistribution,
    find_missing_patterns,
    imperfect_component_log_density,
)
from gaussmix.models.mixture import GaussianMixtureDistribution
from gaussmix.models.priors import COVARIANCE_LAYOUTS, COVARIANCE_SITES, MCLUST_MODELS

N, D, K = 25, 3, 2
ALL_TYPES = MCLUST_MODELS  # the four classic types are VVV, EEE, VVI, VII: the same programs


def data(seed=0, missing=0.3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D)) * 2.0
    holes = rng.random((N, D)) < missing
    holes[np.all(holes, axis=1), 0] = False  # every row observes something
    x[holes] = np.nan
    a = rng.normal(size=(N, D, D)) * 0.4
    full_errors = a @ np.swapaxes(a, 1, 2)
    full_errors[:3] = 0.0  # error-free rows too
    full_errors[np.isnan(x)] = np.nan  # entries in missing rows are ignored...
    full_errors = np.where(np.isnan(x)[:, None, :], np.nan, full_errors)  # ...and columns
    variances = rng.uniform(0.0, 0.6, size=(N, D))
    return x, full_errors, variances


def dense_covariances(params, covariance_type):
    layout = COVARIANCE_LAYOUTS[covariance_type]
    value = np.asarray(params[COVARIANCE_SITES[covariance_type]])
    if layout == "full":
        return value
    if layout == "tied":
        return np.broadcast_to(value, (K, D, D))
    if layout == "diag":
        return np.stack([np.diag(v) for v in value])
    return np.stack([v * np.eye(D) for v in value])


def brute_force(x, params, covariance_type, errors=None, log_density=None):
    """log sum_k pi_k N(x_O | mu_O, (Sigma_k + S_n)_OO) + pi_0 e^b, row by row (scipy)."""
    covariances = dense_covariances(params, covariance_type)
    rows = []
    for n in range(x.shape[0]):
        seen = ~np.isnan(x[n])
        terms = []
        for k in range(K):
            total = covariances[k].copy()
            if errors is not None:
                total = total + (errors[n] if errors.ndim == 3 else np.diag(errors[n]))
            normal = stats.multivariate_normal(params["means"][k][seen], total[np.ix_(seen, seen)])
            terms.append(np.log(params["weights"][k]) + normal.logpdf(x[n][seen]))
        if log_density is not None:
            row_density = log_density[n] if np.ndim(log_density) else log_density
            terms.append(np.log(params["background_weight"]) + row_density)
        rows.append(logsumexp(terms))
    return np.array(rows)


def trace_program(x, covariance_type, seed=0, **kwargs):
    trace = handlers.trace(handlers.seed(gaussian_mixture, seed)).get_trace(
        x, n_components=K, covariance_type=covariance_type, **kwargs
    )
    params = {
        name: np.asarray(site["value"])
        for name, site in trace.items()
        if site["type"] in ("sample", "deterministic") and name != "x"
    }
    return trace, params


@pytest.mark.parametrize("covariance_type", ALL_TYPES)
def test_all_three_together_match_scipy(covariance_type):
    x, full_errors, _ = data()
    log_density = -np.log(300.0)
    trace, params = trace_program(
        x,
        covariance_type,
        nan_policy="marginalize",
        measurement_covariances=full_errors,
        background_log_density=log_density,
    )
    value = np.asarray(trace["x"]["fn"].log_prob(x))
    expected = brute_force(x, params, covariance_type, full_errors, log_density)
    np.testing.assert_allclose(value, expected, rtol=0, atol=1e-10)
    assert params["proportions"].shape == (K + 1,)
    np.testing.assert_allclose(params["weights"], params["proportions"][:K], rtol=0)
    np.testing.assert_allclose(params["background_weight"], params["proportions"][K], rtol=0)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("case", ["missing", "full_errors", "diagonal_errors", "background"])
def test_each_imperfection_matches_scipy(covariance_type, case):
    x, full_errors, variances = data(seed=1)
    kwargs, errors, log_density = {}, None, None
    if case == "missing":
        kwargs["nan_policy"] = "marginalize"
    else:
        x = np.where(np.isnan(x), 0.7, x)
    if case == "full_errors":
        errors = np.where(np.isnan(full_errors), 0.1, full_errors)
        errors = 0.5 * (errors + np.swapaxes(errors, 1, 2)) + 0.3 * np.eye(D)
    if case == "diagonal_errors":
        errors = variances
    if case == "background":
        log_density = np.random.default_rng(2).uniform(-6, -3, size=N)  # one per row
        kwargs["background_log_density"] = log_density
    if errors is not None:
        kwargs["measurement_covariances"] = errors
    trace, params = trace_program(x, covariance_type, seed=3, **kwargs)
    value = np.asarray(trace["x"]["fn"].log_prob(x))
    expected = brute_force(x, params, covariance_type, errors, log_density)
    np.testing.assert_allclose(value, expected, rtol=0, atol=1e-10)
    # the pointwise log-likelihood is what the site records (what LOO reads)
    site = trace["x"]
    np.testing.assert_allclose(site["fn"].log_prob(site["value"]), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_pattern_table_and_per_row_factors_agree_under_jit(covariance_type):
    """A traced x without a pattern table makes each row its own pattern: same values."""
    x, _, _ = data(seed=4)
    _, params = trace_program(x, covariance_type, nan_policy="marginalize")
    site = COVARIANCE_SITES[covariance_type]
    patterns = find_missing_patterns(x)
    assert patterns.observed.shape[0] >= 8  # padded to a power of two

    def log_density(x, patterns):
        return imperfect_component_log_density(
            x, params["means"], params[site], covariance_type, patterns=patterns
        )

    by_pattern = jax.jit(log_density)(x, patterns)
    by_row = jax.jit(log_density)(x, None)
    np.testing.assert_allclose(by_pattern, by_row, rtol=1e-12, atol=1e-12)


def test_complete_data_under_marginalize_equals_the_complete_program():
    x = np.random.default_rng(5).normal(size=(40, 2))
    trace, params = trace_program(x, "full", nan_policy="marginalize")
    assert isinstance(trace["x"]["fn"], ImperfectMixtureDistribution)
    plain = GaussianMixtureDistribution(
        params["weights"], params["means"], params["covariances"], "full"
    )
    np.testing.assert_allclose(trace["x"]["fn"].log_prob(x), plain.log_prob(x), rtol=1e-12)
    # without NaN, errors or background the program keeps its complete-data distribution
    trace, _ = trace_program(x, "full")
    assert isinstance(trace["x"]["fn"].base_dist, GaussianMixtureDistribution)


def test_gradient_is_finite_with_missing_entries_and_zero_errors():
    """NaN entries and zero measurement errors give no NaN in the gradient NUTS uses."""
    x, _, _ = data(seed=6)
    errors = np.zeros((N, D))
    _, params = trace_program(x, "full", nan_policy="marginalize")

    def total(means, covariances):
        mixture = ImperfectMixtureDistribution(
            params["weights"],
            means,
            covariances,
            "full",
            measurement_covariances=jnp.asarray(errors),
            n_samples=N,
        )
        return mixture.log_prob(x).sum()

    gradients = jax.grad(total, argnums=(0, 1))(params["means"], params["covariances"])
    assert all(np.all(np.isfinite(np.asarray(g))) for g in gradients)


def test_float32_keeps_its_dtype():
    x, _, variances = data(seed=7)
    x32 = x.astype(np.float32)
    _, params = trace_program(x, "diag", nan_policy="marginalize")
    value = imperfect_component_log_density(
        jnp.asarray(x32),
        jnp.asarray(params["means"], jnp.float32),
        jnp.asarray(params["variances"], jnp.float32),
        "diag",
        measurement_covariances=jnp.asarray(variances, jnp.float32),
    )
    assert value.dtype == jnp.float32
    expected = imperfect_component_log_density(
        x, params["means"], params["variances"], "diag", measurement_covariances=variances
    )
    np.testing.assert_allclose(value, expected, rtol=2e-5)


def test_background_prior_is_a_dirichlet_over_k_plus_one():
    x, _, _ = data(seed=8)
    x = np.where(np.isnan(x), 0.0, x)
    trace, _ = trace_program(x, "spherical", background_log_density=-3.0)
    prior = trace["proportions"]["fn"]
    assert isinstance(prior, dist.Dirichlet)
    assert prior.event_shape == (K + 1,)
    assert trace["weights"]["type"] == "deterministic"
    given = dist.Dirichlet(np.array([2.0, 2.0, 0.5]))
    trace, _ = trace_program(
        x, "spherical", background_log_density=-3.0, priors={"proportions": given}
    )
    assert trace["proportions"]["fn"] is given


def refuses(match, x, **kwargs):
    with pytest.raises(ValueError, match=match):
        trace_program(x, "full", **kwargs)


def test_hostile_inputs_are_refused_with_the_fix():
    x, full_errors, variances = data(seed=9)
    complete = np.where(np.isnan(x), 0.0, x)
    refuses("nan_policy='marginalize'", x)  # NaN under "raise"
    refuses("Invalid nan_policy", x, nan_policy="omit")
    infinite = x.copy()
    infinite[0, 0] = np.inf
    refuses("infinity", infinite, nan_policy="marginalize")
    empty = x.copy()
    empty[2] = np.nan
    refuses("without any observed entry", empty, nan_policy="marginalize")
    refuses(r"expected \(25, 3, 3\)", complete, measurement_covariances=full_errors[:10])
    refuses(r"expected \(25, 3, 3\)", complete, measurement_covariances=variances[:, :2])
    refuses("NaN or infinite", complete, measurement_covariances=full_errors)
    asymmetric = np.tile(np.eye(D), (N, 1, 1))
    asymmetric[4, 0, 1] = 0.5
    refuses("not symmetric", complete, measurement_covariances=asymmetric)
    indefinite = np.tile(np.diag([1.0, -0.5, 1.0]), (N, 1, 1))
    refuses("not positive semi-definite", complete, measurement_covariances=indefinite)
    refuses("must be >= 0", complete, measurement_covariances=-variances)
    refuses("background_log_density has shape", complete, background_log_density=np.zeros(3))
    refuses("must be finite", complete, background_log_density=np.inf)
    refuses(
        "priors\\['proportions'\\]",
        complete,
        background_log_density=-2.0,
        priors={"weights": dist.Dirichlet(np.ones(K))},
    )
    refuses(
        "event shape",
        complete,
        background_log_density=-2.0,
        priors={"proportions": dist.Dirichlet(np.ones(K))},
    )
    refuses("Unknown prior site", complete, priors={"proportions": dist.Dirichlet(np.ones(3))})
    refuses("missing_patterns needs", complete, missing_patterns=find_missing_patterns(x))
    with pytest.raises(ValueError, match="pass x"):
        handlers.seed(gaussian_mixture, 0)(
            n_components=K, n_samples=5, n_features=2, background_log_density=-1.0
        )


def test_per_row_factors_by_lapack_above_the_unrolled_size(monkeypatch):
    """Above UNROLLED_MAX_FEATURES the per-row factors come from LAPACK: the same
    densities as scipy's, and as the written-out factorization."""
    rng = np.random.default_rng(10)
    n_rows, n_features = 12, imperfect_data.UNROLLED_MAX_FEATURES + 1
    x = rng.normal(size=(n_rows, n_features))
    x[rng.random(x.shape) < 0.25] = np.nan
    x[np.isnan(x).all(axis=1), 0] = 0.1
    a = rng.normal(size=(n_rows, n_features, n_features)) * 0.3
    errors = a @ np.swapaxes(a, 1, 2)
    b = rng.normal(size=(2, n_features, n_features))
    covariances = b @ np.swapaxes(b, 1, 2) + np.eye(n_features)
    means = rng.normal(size=(2, n_features))
    value = imperfect_component_log_density(
        x, means, covariances, "full", measurement_covariances=errors
    )
    for n in range(n_rows):
        seen = ~np.isnan(x[n])
        for k in range(2):
            total = (covariances[k] + errors[n])[np.ix_(seen, seen)]
            expected = stats.multivariate_normal(means[k][seen], total).logpdf(x[n][seen])
            np.testing.assert_allclose(value[k, n], expected, rtol=0, atol=1e-10)
    monkeypatch.setattr(imperfect_data, "UNROLLED_MAX_FEATURES", n_features)
    unrolled = imperfect_component_log_density(
        x, means, covariances, "full", measurement_covariances=errors
    )
    np.testing.assert_allclose(unrolled, value, rtol=1e-12)
