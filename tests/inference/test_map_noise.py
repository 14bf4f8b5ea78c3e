"""The MAP back end's noise scale at fixed curve parameters
(:func:`gaussmix.inference.map.problem.update_noise`) against a numerical maximization of
the log posterior written with SciPy's densities: in closed form for a Normal likelihood
under a half-normal prior (gaussmix's default or NumPyro's), by Newton steps under any
other prior."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import optimize, stats

from gaussmix.inference.map.families import FAMILIES
from gaussmix.inference.map.problem import (
    Evaluation,
    MAPProblem,
    Sites,
    half_normal_scale,
    normal_noise_map,
    update_noise,
)
from gaussmix.models.peak_priors import HalfNormalPrior, UniformPrior


def numerical_map(residuals: np.ndarray, log_prior) -> float:
    """The sigma maximizing sum log N(r | 0, sigma) + log_prior(sigma), by SciPy's bounded
    scalar minimization on log sigma (an independent reference)."""

    def negative(log_sigma):
        sigma = np.exp(log_sigma)
        return -(np.sum(stats.norm.logpdf(residuals, scale=sigma)) + log_prior(sigma))

    result = optimize.minimize_scalar(negative, bounds=(-30.0, 30.0), method="bounded",
                                      options={"xatol": 1e-12})  # fmt: skip
    return float(np.exp(result.x))


def spectrum_problem(residuals: np.ndarray, prior, mask=None):
    """A problem whose location is 0 and observations the residuals, and its evaluation."""
    y = jnp.asarray(residuals)
    mask = jnp.ones_like(y) if mask is None else jnp.asarray(mask, y.dtype)
    sites = Sites(("slope", "sigma"), ((), ()), 1)
    problem = MAPProblem(None, sites, "y", FAMILIES["normal"], jnp.zeros_like(y), y, {},
                         {"slope": UniformPrior(-1.0, 1.0), "sigma": prior})  # fmt: skip
    empty = jnp.zeros((), y.dtype)
    evaluation = Evaluation(jnp.zeros_like(y), None, (), empty, jnp.ones(2, bool), mask)
    return problem, evaluation


@pytest.mark.parametrize("prior_scale", [1e-3, 0.05, 0.3, 2.0, 1e6])
@pytest.mark.parametrize("n_points", [1, 7, 500])
def test_the_closed_form_is_the_maximum_of_the_log_posterior(prior_scale, n_points):
    """A prior that dominates the data (scale 1e-3 against residuals of 0.3), one that
    matters, and flat ones; one point to many: SciPy's maximization finds the same sigma."""
    rng = np.random.default_rng(n_points)
    residuals = 0.3 * rng.normal(size=n_points)
    expected = numerical_map(residuals, lambda s: stats.halfnorm.logpdf(s, scale=prior_scale))
    problem, evaluation = spectrum_problem(residuals, HalfNormalPrior(jnp.asarray(prior_scale)))
    sigma = float(update_noise(problem, jnp.zeros(1), jnp.asarray(1.0), evaluation, n_steps=2))
    # SciPy locates the flat maximum to about 1e-8; the log posterior is no higher a
    # hair's breadth either side.
    np.testing.assert_allclose(sigma, expected, rtol=1e-7)

    def log_posterior(s):
        return np.sum(stats.norm.logpdf(residuals, scale=s)) + stats.halfnorm.logpdf(
            s, scale=prior_scale
        )

    assert log_posterior(sigma) >= max(log_posterior(sigma * (1 + 1e-5)),
                                       log_posterior(sigma * (1 - 1e-5)))  # fmt: skip


def test_masked_points_do_not_count():
    """A masked point with a huge residual changes nothing: n and the RSS are the
    unmasked points'."""
    residuals = np.array([0.2, -0.1, 0.4, 1e6, -0.3])
    mask = np.array([1.0, 1.0, 1.0, 0.0, 1.0])
    prior = HalfNormalPrior(jnp.asarray(0.5))
    problem, evaluation = spectrum_problem(residuals, prior, mask)
    sigma = update_noise(problem, jnp.zeros(1), jnp.asarray(1.0), evaluation, n_steps=2)
    kept = residuals[mask > 0]
    expected = numerical_map(kept, lambda s: stats.halfnorm.logpdf(s, scale=0.5))
    np.testing.assert_allclose(float(sigma), expected, rtol=1e-7)


def test_numpyros_half_normal_takes_the_closed_form_and_another_prior_newton_steps():
    """NumPyro's HalfNormal gives gaussmix's half-normal's sigma exactly; a log-normal prior
    (no closed form) takes the Newton steps, which end near SciPy's maximum."""
    residuals = 0.3 * np.random.default_rng(1).normal(size=40)
    ours = spectrum_problem(residuals, HalfNormalPrior(jnp.asarray(0.2)))
    numpyros = spectrum_problem(residuals, dist.HalfNormal(jnp.asarray(0.2)))
    assert half_normal_scale(dist.HalfNormal(0.2)) == 0.2
    assert half_normal_scale(dist.LogNormal(0.0, 1.0)) is None
    sigmas = [
        update_noise(problem, jnp.zeros(1), jnp.asarray(1.0), evaluation, n_steps=2)
        for problem, evaluation in (ours, numpyros)
    ]
    assert float(sigmas[0]) == float(sigmas[1])
    problem, evaluation = spectrum_problem(residuals, dist.LogNormal(0.0, 1.0))
    sigma = update_noise(problem, jnp.zeros(1), jnp.asarray(1.0), evaluation, n_steps=4)
    expected = numerical_map(residuals, lambda s: stats.lognorm.logpdf(s, 1.0))
    np.testing.assert_allclose(float(sigma), expected, rtol=1e-6)


def test_a_residual_sum_of_zero_keeps_the_noise():
    """No residual at all: the posterior grows without bound as sigma goes to 0; the
    noise is left where it was, finite (no division by zero, no NaN)."""
    problem, evaluation = spectrum_problem(np.zeros(5), HalfNormalPrior(jnp.asarray(1.0)))
    sigma = update_noise(problem, jnp.zeros(1), jnp.asarray(0.7), evaluation, n_steps=2)
    assert float(sigma) == pytest.approx(0.7)


def test_float32_keeps_its_precision():
    """In float32 the closed form is as good as float32 allows (no cancellation between
    n and the square root: the root is written as 2R / (n + sqrt(...)))."""
    residuals = 1e-3 * np.random.default_rng(2).normal(size=300)
    expected = numerical_map(residuals, lambda s: stats.halfnorm.logpdf(s, scale=50.0))
    with jax.enable_x64(False):
        y = jnp.asarray(residuals, jnp.float32)
        residual_sum, n_points = jnp.sum(y**2), jnp.asarray(y.shape[0], jnp.float32)
        sigma = normal_noise_map(residual_sum, n_points, jnp.asarray(50.0, jnp.float32),
                                 jnp.asarray(1.0, jnp.float32))  # fmt: skip
        assert sigma.dtype == jnp.float32
    np.testing.assert_allclose(float(sigma), expected, rtol=1e-6)
