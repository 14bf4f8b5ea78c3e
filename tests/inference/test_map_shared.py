"""The joint MAP of a batch with shared parameters (block-arrow Levenberg-Marquardt)
against independent references: scipy's least_squares on the stacked residuals, the
dense inverse of the stacked J^T J, and a generic minimizer of the full negative log
posterior."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import optimize, stats

from gaussmix.inference import compilation
from gaussmix.inference.map.shared import fit_shared_map
from gaussmix.models.peaks import peaks

TWO_GAUSSIANS = functools.partial(peaks, lineshapes=("gaussian", "gaussian"))
OWN = ("peak0_height", "peak0_center", "peak1_height", "peak1_center")


def gaussian(x, height, center, width):
    return height * np.exp(-0.5 * ((x - center) / width) ** 2)


def batch(n_spectra=4, seed=0, noise=0.05):
    """Two Gaussians per spectrum, widths 0.7 and 1.1 for all, heights and centres
    varying; per-spectrum noise levels differ when ``noise`` is a sequence."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, 60)
    truth = np.stack(
        [rng.uniform(1, 2, n_spectra), rng.uniform(3, 4, n_spectra),
         rng.uniform(1, 2, n_spectra), rng.uniform(6, 7, n_spectra)], axis=1,
    )  # fmt: skip
    curve = gaussian(x, truth[:, :1], truth[:, 1:2], 0.7) + gaussian(
        x, truth[:, 2:3], truth[:, 3:4], 1.1
    )
    scale = np.broadcast_to(np.asarray(noise, float), (n_spectra,))[:, None]
    y = curve + scale * rng.normal(size=curve.shape)
    init = {
        "peak0_height": truth[:, 0] * 1.1, "peak0_center": truth[:, 1] + 0.1,
        "peak0_sigma": 0.8, "peak1_height": truth[:, 2] * 0.9,
        "peak1_center": truth[:, 3] - 0.1, "peak1_sigma": 1.0, "sigma": 0.1,
    }  # fmt: skip
    return x, y, truth, init


def stacked_residuals(parameters, x, y):
    """Residuals of the stacked problem: (width0, width1, then 4 per spectrum)."""
    width0, width1 = parameters[0], parameters[1]
    own = parameters[2:].reshape(y.shape[0], 4)
    curve = gaussian(x, own[:, :1], own[:, 1:2], width0) + gaussian(
        x, own[:, 2:3], own[:, 3:4], width1
    )
    return (curve - y).ravel()


def stacked_optimum(x, y, init):
    start = np.concatenate(
        [[init["peak0_sigma"], init["peak1_sigma"]], np.stack([init[n] for n in OWN], 1).ravel()]
    )
    return optimize.least_squares(
        stacked_residuals, start, args=(x, y), xtol=1e-15, ftol=1e-15, gtol=1e-15
    ).x


def stacked_jacobian(parameters, x, y):
    """The dense (B M, 2 + 4B) Jacobian by JAX forward mode on the stacked residuals."""

    def residuals(p):
        own = p[2:].reshape(y.shape[0], 4)

        def g(h, c, w):
            return h * jnp.exp(-0.5 * ((x - c) / w) ** 2)

        curve = g(own[:, :1], own[:, 1:2], p[0]) + g(own[:, 2:3], own[:, 3:4], p[1])
        return (curve - y).ravel()

    return np.asarray(jax.jacfwd(residuals)(jnp.asarray(parameters)))


def test_shared_map_equals_stacked_least_squares_and_its_covariance():
    x, y, _, init = batch()
    result = fit_shared_map(
        TWO_GAUSSIANS, x, y, init, ("peak0_sigma", "peak1_sigma", "sigma"), tol=1e-14
    )
    assert result.converged and result.started
    # Other data of the same shapes (and other starts) reuse the compiled program.
    compiled = compilation.statistics()["compiled"]
    again = fit_shared_map(
        TWO_GAUSSIANS, x, 1.1 * y, init | {"peak0_sigma": 0.75},
        ("peak0_sigma", "peak1_sigma", "sigma"), tol=1e-14,
    )  # fmt: skip
    assert again.converged and compilation.statistics()["compiled"] == compiled
    reference = stacked_optimum(x, y, init)
    reference_rss = np.sum(stacked_residuals(reference, x, y) ** 2)
    assert np.sum(result.rss) == pytest.approx(reference_rss, rel=1e-6)
    assert abs(np.sum(result.rss) - reference_rss) <= 1e-9 * reference_rss
    got_shared = [result.shared_params["peak0_sigma"], result.shared_params["peak1_sigma"]]
    np.testing.assert_allclose(got_shared, reference[:2], rtol=1e-6)
    own = np.stack([result.params[name] for name in OWN], axis=1)
    np.testing.assert_allclose(own, reference[2:].reshape(-1, 4), rtol=1e-6)
    assert set(result.shared_params) == {"peak0_sigma", "peak1_sigma", "sigma"}
    np.testing.assert_allclose(result.params["sigma"], result.shared_params["sigma"])
    # least_squares' covariance: s^2 (J^T J)^{-1}, s^2 = RSS / (N - P), dense.
    jacobian = stacked_jacobian(reference, x, y)
    dof = y.size - reference.size
    dense = reference_rss / dof * np.linalg.inv(jacobian.T @ jacobian)
    np.testing.assert_allclose(result.shared_covariance, dense[:2, :2], rtol=1e-5)
    names = result.parameter_names
    order = [names.index(n) for n in ("peak0_sigma", "peak1_sigma")]
    for b in range(y.shape[0]):
        rows = [2 + 4 * b + k for k in range(4)]
        own_index = [names.index(n) for n in OWN]
        block = result.covariance[b]
        np.testing.assert_allclose(block[np.ix_(own_index, own_index)], dense[np.ix_(rows, rows)],
                                   rtol=1e-5, atol=1e-12)  # fmt: skip
        np.testing.assert_allclose(block[np.ix_(own_index, order)], dense[np.ix_(rows, [0, 1])],
                                   rtol=1e-5, atol=1e-12)  # fmt: skip


def test_per_spectrum_noise_reaches_the_profile_optimum_and_the_weighted_covariance():
    """Noise per spectrum, flat priors: the MAP minimizes sum_b n_b/2 log RSS_b (the
    likelihood profiled over each noise); a generic minimizer of that gives the same value."""
    x, y, _, init = batch(noise=(0.02, 0.05, 0.1, 0.2), seed=1)
    flat = {"sigma": dist.Uniform(0.0, 100.0)}
    result = fit_shared_map(
        TWO_GAUSSIANS, x, y, init, ("peak0_sigma", "peak1_sigma"),
        model_kwargs={"priors": flat}, tol=1e-14,
    )  # fmt: skip
    assert result.converged

    def profile(parameters):
        rss = np.sum(stacked_residuals(parameters, x, y).reshape(y.shape) ** 2, axis=1)
        return 0.5 * x.size * np.sum(np.log(rss))

    start = stacked_optimum(x, y, init)
    reference = optimize.minimize(profile, start, method="BFGS", options={"gtol": 1e-10})
    ours = np.concatenate(
        [[result.shared_params["peak0_sigma"], result.shared_params["peak1_sigma"]],
         np.stack([result.params[n] for n in OWN], 1).ravel()]
    )  # fmt: skip
    assert profile(ours) <= reference.fun + 1e-8
    assert profile(start) > profile(ours) + 1.0  # the weighting matters here
    # The covariance: the dense inverse of J^T W J, W_b = 1 / (RSS_b / (n_b - p - s/B)).
    rss = np.sum(stacked_residuals(ours, x, y).reshape(y.shape) ** 2, axis=1)
    variance = rss / (x.size - 4 - 2 / y.shape[0])
    jacobian = stacked_jacobian(ours, x, y)
    weights = np.repeat(1 / variance, x.size)
    dense = np.linalg.inv(jacobian.T @ (weights[:, None] * jacobian))
    np.testing.assert_allclose(result.shared_covariance, dense[:2, :2], rtol=1e-6)
    own_index = [result.parameter_names.index(n) for n in OWN]
    rows = [2 + 4 * 3 + k for k in range(4)]
    np.testing.assert_allclose(
        result.covariance[3][np.ix_(own_index, own_index)], dense[np.ix_(rows, rows)], rtol=1e-6
    )


def test_a_shared_sites_prior_counts_once():
    """A Gamma prior on a shared width: the joint MAP minimizes the full negative log
    posterior with that prior once (a generic minimizer over all parameters and log noise
    agrees), not B times."""
    x, y, _, init = batch(n_spectra=3, seed=2, noise=0.2)
    prior = dist.Gamma(50.0, 50.0 / 0.9)  # pulls peak0_sigma toward 0.9
    result = fit_shared_map(
        TWO_GAUSSIANS, x, y, init, ("peak0_sigma", "peak1_sigma", "sigma"),
        model_kwargs={"priors": {"peak0_sigma": prior}}, tol=1e-14,
    )  # fmt: skip
    assert result.converged
    y_scale = y.max(axis=1) - y.min(axis=1)  # the default noise prior HalfNormal(range)

    def objective(vector, times=1):
        parameters, log_noise = vector[:-1], vector[-1]
        noise = np.exp(log_noise)
        rss = np.sum(stacked_residuals(parameters, x, y) ** 2)
        value = y.size * log_noise + rss / (2 * noise**2)
        value -= times * stats.gamma.logpdf(parameters[0], 50.0, scale=0.9 / 50.0)
        return value - np.mean(stats.halfnorm.logpdf(noise, scale=y_scale))

    start = np.concatenate([stacked_optimum(x, y, init), [np.log(0.2)]])
    ours = np.concatenate(
        [[result.shared_params["peak0_sigma"], result.shared_params["peak1_sigma"]],
         np.stack([result.params[n] for n in OWN], 1).ravel(),
         [np.log(result.shared_params["sigma"])]]
    )  # fmt: skip
    reference = optimize.minimize(objective, start, method="BFGS", options={"gtol": 1e-9})
    assert objective(ours) <= reference.fun + 1e-7
    counted_thrice = optimize.minimize(
        objective, start, args=(3,), method="BFGS", options={"gtol": 1e-9}
    )
    assert abs(counted_thrice.x[0] - ours[0]) > 1e-3  # the count matters


def test_refuses_bad_shared_names_and_unbatched_data():
    x, y, _, init = batch(n_spectra=2)
    with pytest.raises(ValueError, match="B >= 2"):
        fit_shared_map(TWO_GAUSSIANS, x, y[0], init, ("peak0_sigma",))
    with pytest.raises(ValueError, match="not scalar latent sites"):
        fit_shared_map(TWO_GAUSSIANS, x, y, init, ("peak9_sigma",))
    with pytest.raises(ValueError, match="at least one curve parameter"):
        fit_shared_map(TWO_GAUSSIANS, x, y, init, ("sigma",))
