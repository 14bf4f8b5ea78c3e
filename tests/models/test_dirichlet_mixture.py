"""The Dirichlet-process and Dirichlet mixture programs against SciPy."""

import jax
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density
from scipy import integrate, special, stats

from gaussmix.models.dirichlet_mixture import (
    StickBreakingWeights,
    dirichlet_mixture,
    dirichlet_process_mixture,
    stick_breaking_weights,
)
from gaussmix.models.priors import default_prior_parameters


def _weights_by_loop(sticks):
    """pi_k = v_k prod_{j<k} (1 - v_j), the last the rest: a plain loop."""
    weights, rest = [], 1.0
    for v in sticks:
        weights.append(v * rest)
        rest *= 1.0 - v
    return np.array([*weights, rest])


def test_stick_breaking_weights_equal_a_loop():
    sticks = np.random.default_rng(0).beta(1.0, 3.0, size=(5, 7))
    expected = np.array([_weights_by_loop(row) for row in sticks])
    np.testing.assert_allclose(stick_breaking_weights(sticks), expected, rtol=1e-13)
    np.testing.assert_allclose(expected.sum(-1), 1.0, rtol=1e-13)


@pytest.mark.parametrize("alpha", [0.4, 1.0, 3.0])
def test_weights_density_is_the_sticks_density_over_the_jacobian(alpha):
    """log p(pi) = sum_k log Beta(v_k | 1, alpha) - log |d pi_{1:K-1} / d v| with the
    Jacobian's determinant computed by finite differences of the loop."""
    rng = np.random.default_rng(1)
    for sticks in rng.beta(1.0, alpha, size=(4, 4)):
        weights = _weights_by_loop(sticks)
        step = 1e-7
        jacobian = np.stack(
            [
                (
                    _weights_by_loop(sticks + step * e)[:-1]
                    - _weights_by_loop(sticks - step * e)[:-1]
                )
                / (2 * step)
                for e in np.eye(4)
            ],
            axis=1,
        )
        expected = np.sum(stats.beta(1.0, alpha).logpdf(sticks)) - np.log(
            abs(np.linalg.det(jacobian))
        )
        value = StickBreakingWeights(alpha, 5).log_prob(weights)
        np.testing.assert_allclose(value, expected, rtol=1e-7)


def test_weights_density_integrates_to_one():
    log_prob = jax.jit(StickBreakingWeights(1.7, 3).log_prob)

    def density(second, first):
        return float(np.exp(log_prob(np.array([first, second, 1.0 - first - second]))))

    total, _ = integrate.dblquad(density, 0.0, 1.0, 0.0, lambda first: 1.0 - first)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_two_sticks_are_a_beta():
    values = np.array([[0.1, 0.9], [0.6, 0.4]])
    np.testing.assert_allclose(
        StickBreakingWeights(2.5, 2).log_prob(values), stats.beta(1, 2.5).logpdf(values[:, 0])
    )
    assert float(StickBreakingWeights(2.5, 1).log_prob(np.array([1.0]))) == 0.0


def _point(K, D, rng):
    return {
        "weights": rng.dirichlet(np.ones(K)),
        "means": rng.normal(size=(K, D)),
        "variances": rng.gamma(3.0, 0.5, size=K),
    }


@pytest.mark.parametrize("program", ["process", "distribution"])
@pytest.mark.parametrize("random_concentration", [False, True])
def test_log_density_equals_scipy(program, random_concentration):
    """The whole program's log joint against an independent SciPy computation: the
    weights' prior, the conjugate spherical prior of the components and the marginal
    likelihood (logsumexp over components) to 1e-10."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 2))
    K, alpha = 4, 0.8
    point = _point(K, 2, rng)
    kwargs = {"covariance_type": "spherical"}
    if program == "process":
        kwargs["max_components"] = K
        fn = dirichlet_process_mixture
    else:
        kwargs["n_components"] = K
        fn = dirichlet_mixture
    if random_concentration:
        kwargs["concentration"] = dist.Gamma(2.0, 3.0)
        point["concentration"] = np.array(alpha)
    else:
        kwargs["concentration"] = alpha
    value, _ = log_density(fn, (x,), kwargs, point)

    w, mu, var = point["weights"], point["means"], point["variances"]
    if program == "process":
        sticks = w[:-1] / np.cumsum(w[::-1])[::-1][:-1]
        # d pi_{1:K-1} / d v is triangular, its diagonal the stick left before k
        left = np.concatenate([[1.0], np.cumprod(1 - sticks)[:-1]])
        expected = np.sum(stats.beta(1, alpha).logpdf(sticks)) - np.sum(np.log(left))
    else:
        expected = stats.dirichlet(np.full(K, alpha / K)).logpdf(w)
    if random_concentration:
        expected += stats.gamma(2.0, scale=1 / 3.0).logpdf(alpha)
    p = default_prior_parameters(x, "spherical")
    expected += np.sum(
        stats.invgamma(float(p.degrees_of_freedom) / 2, scale=float(p.covariance_prior) / 2).logpdf(
            var
        )
    )
    for k in range(K):
        expected += np.sum(
            stats.norm(np.asarray(p.mean_prior), np.sqrt(var[k] / float(p.mean_precision))).logpdf(
                mu[k]
            )
        )
    component = np.stack(
        [
            np.log(w[k]) + stats.multivariate_normal(mu[k], var[k] * np.eye(2)).logpdf(x)
            for k in range(K)
        ],
        axis=1,
    )
    expected += np.sum(special.logsumexp(component, axis=1))
    np.testing.assert_allclose(float(value), expected, rtol=1e-10)


def test_prior_mean_weights_are_the_dirichlet_process_ones():
    """E[pi_k] = 1/(1+a) (a/(1+a))^(k-1), the last stick (a/(1+a))^(K-1), within 4
    Monte Carlo standard errors."""
    alpha, K, S = 2.0, 5, 4000
    draws = StickBreakingWeights(alpha, K).sample(jax.random.key(3), (S,))
    ratio = alpha / (1 + alpha)
    expected = np.array([ratio ** (k - 1) / (1 + alpha) for k in range(1, K)] + [ratio ** (K - 1)])
    error = np.std(draws, axis=0) / np.sqrt(S)
    assert np.all(np.abs(np.mean(draws, axis=0) - expected) < 4 * error)


@pytest.mark.parametrize("concentration", [0.0, -1.0, np.nan, np.inf])
def test_invalid_concentration_is_refused(concentration):
    with pytest.raises(ValueError, match=r"Invalid concentration .* finite number > 0"):
        log_density(
            dirichlet_process_mixture,
            (np.zeros((3, 1)),),
            {"max_components": 2, "concentration": concentration},
            {},
        )


def test_bad_arguments_are_refused():
    x = np.zeros((3, 1))

    def run(fn=dirichlet_process_mixture, data=x, **kwargs):
        handlers.trace(handlers.seed(fn, 0)).get_trace(data, **kwargs)

    with pytest.raises(ValueError, match="'max_components': 0; it must be an integer >= 1"):
        run(max_components=0)
    with pytest.raises(ValueError, match=r"'max_components': 2\.5"):
        run(max_components=2.5)
    with pytest.raises(ValueError, match="'n_components': True"):
        run(dirichlet_mixture, n_components=True)
    with pytest.raises(ValueError, match=r"concentration is a positive number; use e\.g\. Gamma"):
        run(max_components=2, concentration=dist.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match="concentration must be a number > 0"):
        run(max_components=2, concentration="1")
    with pytest.raises(ValueError, match="instead of priors\\['weights'\\]"):
        run(max_components=2, priors={"weights": dist.Dirichlet(np.ones(2))})
    with pytest.raises(ValueError, match="x contains NaN"):
        run(data=np.array([[0.0], [np.nan]]), max_components=2)
    with pytest.raises(ValueError, match="number of sticks"):
        StickBreakingWeights(1.0, 0)
