"""The mixture program against independent scipy densities."""

import jax
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro.infer import Predictive
from numpyro.infer.util import log_density, log_likelihood
from scipy import stats
from scipy.special import logsumexp

from gaussmix.models.mixture import gaussian_mixture
from gaussmix.models.priors import COVARIANCE_SITES, default_prior_parameters

K = 3


def random_parameters(covariance_type, D, seed=0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(K))
    means = rng.normal(size=(K, D))
    if covariance_type == "full":
        a = rng.normal(size=(K, D, D))
        covariance = a @ a.transpose(0, 2, 1) + D * np.eye(D)
    elif covariance_type == "tied":
        a = rng.normal(size=(D, D))
        covariance = a @ a.T + D * np.eye(D)
    elif covariance_type == "diag":
        covariance = rng.uniform(0.5, 2.0, size=(K, D))
    else:
        covariance = rng.uniform(0.5, 2.0, size=K)
    return {"weights": weights, "means": means, COVARIANCE_SITES[covariance_type]: covariance}


def full_covariances(params, covariance_type, D):
    c = params[COVARIANCE_SITES[covariance_type]]
    if covariance_type == "full":
        return c
    if covariance_type == "tied":
        return np.broadcast_to(c, (K, D, D))
    if covariance_type == "diag":
        return np.stack([np.diag(v) for v in c])
    return np.stack([v * np.eye(D) for v in c])


def scipy_pointwise(x, params, covariance_type, D):
    covariances = full_covariances(params, covariance_type, D)
    per_component = np.stack(
        [
            np.log(params["weights"][k])
            + stats.multivariate_normal(params["means"][k], covariances[k]).logpdf(x)
            for k in range(K)
        ],
        axis=-1,
    ).reshape(len(x), K)
    return logsumexp(per_component, axis=-1)


def scipy_log_prior(params, covariance_type, hyper, D):
    alpha = float(hyper.weight_concentration)
    m0 = np.asarray(hyper.mean_prior)
    kappa = float(hyper.mean_precision)
    nu = float(hyper.degrees_of_freedom)
    psi = np.asarray(hyper.covariance_prior)
    total = stats.dirichlet(alpha * np.ones(K)).logpdf(params["weights"])
    c = params[COVARIANCE_SITES[covariance_type]]
    covariances = full_covariances(params, covariance_type, D)
    if covariance_type == "full":
        total += sum(stats.invwishart(nu, psi).logpdf(c[k]) for k in range(K))
    elif covariance_type == "tied":
        total += stats.invwishart(nu, psi).logpdf(c)
    else:
        total += stats.invgamma(nu / 2, scale=psi / 2).logpdf(c).sum()
    for k in range(K):
        total += stats.multivariate_normal(m0, covariances[k] / kappa).logpdf(params["means"][k])
    return total


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("D", [1, 3])
def test_log_density_matches_scipy(covariance_type, D):
    x = np.random.default_rng(1).normal(size=(40, D)) * 2.0
    params = random_parameters(covariance_type, D)
    kwargs = {"n_components": K, "covariance_type": covariance_type}

    @jax.jit
    def evaluate(params):
        # One compiled program per case, as the back ends run the program; run eagerly,
        # the program compiled about 150 single operations per case instead. The eager
        # path is checked by test_sample_weight_scales_log_likelihood, the next test and
        # tests/models/test_prior_support.py.
        value, _ = log_density(gaussian_mixture, (x,), kwargs, params)
        pointwise = log_likelihood(gaussian_mixture, params, x, batch_ndims=0, **kwargs)["x"]
        return value, pointwise

    value, pointwise = evaluate(params)
    hyper = default_prior_parameters(x, covariance_type)
    expected = scipy_pointwise(x, params, covariance_type, D).sum() + scipy_log_prior(
        params, covariance_type, hyper, D
    )
    np.testing.assert_allclose(float(value), expected, rtol=1e-10)

    assert pointwise.shape == (40,)
    np.testing.assert_allclose(
        pointwise, scipy_pointwise(x, params, covariance_type, D), rtol=1e-10
    )


def test_sample_weight_scales_log_likelihood():
    x = np.random.default_rng(2).normal(size=(30, 2))
    params = random_parameters("full", 2)
    weight = np.random.default_rng(3).uniform(0.0, 3.0, size=30)
    weight[:5] = 0.0
    kwargs = {"n_components": K, "covariance_type": "full"}
    plain, _ = log_density(gaussian_mixture, (x,), kwargs, params)
    weighted, _ = log_density(gaussian_mixture, (x,), {**kwargs, "sample_weight": weight}, params)
    pointwise = scipy_pointwise(x, params, "full", 2)
    np.testing.assert_allclose(
        float(weighted) - float(plain), ((weight - 1.0) * pointwise).sum(), rtol=1e-9
    )


def test_user_prior_replaces_default():
    x = np.random.default_rng(4).normal(size=(25, 2))
    params = random_parameters("diag", 2)
    scales = np.sqrt(params.pop("variances"))
    params["scales"] = scales
    priors = {"scales": dist.HalfNormal(2.0), "means": dist.Normal(0.0, 5.0)}
    kwargs = {"n_components": K, "covariance_type": "diag", "priors": priors}
    value, trace = log_density(gaussian_mixture, (x,), kwargs, params)
    assert trace["variances"]["type"] == "deterministic"
    np.testing.assert_allclose(trace["variances"]["value"], scales**2)
    expected = (
        stats.dirichlet(np.ones(K)).logpdf(params["weights"])
        + stats.halfnorm(scale=2.0).logpdf(scales).sum()
        + stats.norm(0.0, 5.0).logpdf(params["means"]).sum()
        + scipy_pointwise(x, {**params, "variances": scales**2}, "diag", 2).sum()
    )
    np.testing.assert_allclose(float(value), expected, rtol=1e-10)


@pytest.mark.parametrize(
    ("covariance_type", "site", "shape"),
    [
        ("full", "covariances", (4, 3, 3)),
        ("tied", "covariance", (3, 3)),
        ("diag", "variances", (4, 3)),
        ("spherical", "variances", (4,)),
    ],
)
def test_prior_predictive_shapes(covariance_type, site, shape):
    draws = Predictive(gaussian_mixture, num_samples=5)(
        jax.random.key(0),
        n_components=4,
        covariance_type=covariance_type,
        n_samples=30,
        n_features=3,
    )
    assert draws["x"].shape == (5, 30, 3)
    assert draws["weights"].shape == (5, 4)
    assert draws["means"].shape == (5, 4, 3)
    assert draws[site].shape == (5, *shape)
    np.testing.assert_allclose(draws["weights"].sum(-1), 1.0, rtol=1e-12)
    assert np.all(np.isfinite(draws["x"]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_components": 0}, "n_components"),
        ({"n_components": 2, "covariance_type": "banana"}, "covariance_type"),
        ({"n_components": 2, "priors": {"sigma": dist.Normal()}}, "Unknown prior site"),
        ({"n_components": 2, "priors": {"means": 3.0}}, "numpyro distribution"),
        ({"n_components": 2, "priors": {"weights": dist.Normal()}}, "live on the simplex"),
        ({"n_components": 2, "priors": {"covariances": dist.LKJCholesky(2)}}, "Cholesky"),
        ({"n_components": 2, "sample_weight": -np.ones(10)}, "non-negative"),
        ({"n_components": 2, "sample_weight": np.ones(3)}, "one weight per point"),
    ],
)
def test_bad_arguments(kwargs, message):
    x = np.random.default_rng(0).normal(size=(10, 2))
    params = random_parameters("full", 2)
    params["weights"] = params["weights"][:2] / params["weights"][:2].sum()
    with pytest.raises(ValueError, match=message):
        log_density(gaussian_mixture, (x,), kwargs, params)


def test_nan_data_is_refused():
    x = np.random.default_rng(0).normal(size=(10, 2))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        Predictive(gaussian_mixture, num_samples=1)(jax.random.key(0), x, n_components=2)
