"""fit_peaks against references that are not gaussmix, one per option.

Every lineshape but the Gaussian and a cubic baseline against ``curve_fit`` with the
curve written from its formula in NumPy/scipy; the Poisson and StudentT likelihoods and
user priors against the stationary point of the negative log posterior written by hand
from ``scipy.stats`` densities (the default priors included as penalties), found by
scipy's optimizers; standard errors against ``curve_fit``'s ``pcov`` or the Fisher
information written by hand.

Tolerances. Two optimizers that stop at the same optimum agree in the parameters to the
accuracy of the worse stopping point, which for these small-residual problems is far below
the stopping tolerances (Levenberg-Marquardt and MINPACK's hybrid method converge
quadratically near the optimum); each check states the discrepancy measured here and a
bound about 10x above it, derived from float64 (eps = 2.2e-16) and the problem's
condition number. Parameters are compared in units of their standard errors (the scale on
which the optimum is determined); the objective is flat at the optimum, so RSS and
log-likelihoods agree to second order, much tighter than the parameters.
"""

import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import optimize, special, stats

from gaussmix.peaks import fit_peaks

SQRT2 = np.sqrt(2.0)
#: Half width at half maximum of a unit Gaussian: sigma sqrt(2 ln 2).
HALF_WIDTH = np.sqrt(2.0 * np.log(2.0))


# -- the lineshapes, written from their formulas (models/lineshapes.py module docstring) --


def gaussian(x, height, center, sigma):
    return height * np.exp(-0.5 * ((x - center) / sigma) ** 2)


def lorentzian(x, height, center, gamma):
    return height / (1.0 + ((x - center) / gamma) ** 2)


def voigt(x, height, center, sigma, gamma):
    return (
        height
        * special.voigt_profile(x - center, sigma, gamma)
        / special.voigt_profile(0.0, sigma, gamma)
    )


def voigt_area(x, area, center, sigma, gamma):
    return area * special.voigt_profile(x - center, sigma, gamma)


def pseudo_voigt(x, height, center, sigma, fraction):
    # One FWHM for both parts: the Lorentzian half width is the Gaussian's, sigma sqrt(2 ln 2).
    lorentz = 1.0 / (1.0 + ((x - center) / (sigma * HALF_WIDTH)) ** 2)
    return height * (
        (1.0 - fraction) * np.exp(-0.5 * ((x - center) / sigma) ** 2) + fraction * lorentz
    )


def skewed_gaussian(x, height, center, sigma, skew):
    u = (x - center) / sigma
    return height * np.exp(-0.5 * u**2) * (1.0 + special.erf(skew * u / SQRT2))


def numerical_jacobian(curve, x, p, relative_step=1e-6):
    """(M, P) central differences: truncation error ~ step^2 ~ 1e-12 relative."""
    p = np.asarray(p, float)
    columns = []
    for i in range(p.size):
        step = relative_step * max(abs(p[i]), 1e-3)
        up, down = p.copy(), p.copy()
        up[i] += step
        down[i] -= step
        columns.append((curve(x, *up) - curve(x, *down)) / (2 * step))
    return np.stack(columns, axis=1)


def in_standard_errors(fit, names, reference, errors):
    """max |fit - reference| / standard error over the named parameters."""
    got = np.array([fit.params[name] for name in names])
    return np.max(np.abs(got - reference) / errors)


# -- every non-Gaussian lineshape and a cubic baseline, in one spectrum ---------------------

MIXED = (
    ("lorentzian", lorentzian, ("height", "center", "gamma"), (5.0, 12.0, 1.5)),
    ("voigt", voigt, ("height", "center", "sigma", "gamma"), (4.0, 30.0, 1.5, 1.0)),
    ("voigt_area", voigt_area, ("area", "center", "sigma", "gamma"), (15.0, 48.0, 1.2, 0.8)),
    (
        "pseudo_voigt",
        pseudo_voigt,
        ("height", "center", "sigma", "fraction"),
        (4.5, 66.0, 2.0, 0.4),
    ),
    (
        "skewed_gaussian",
        skewed_gaussian,
        ("height", "center", "sigma", "skew"),
        (5.0, 80.0, 2.5, 3.0),
    ),
)
CUBIC = (1.0, 0.02, -3e-4, 2e-6)
MIXED_NAMES = [
    f"peak{i}_{parameter}"
    for i, (_, _, parameters, _) in enumerate(MIXED)
    for parameter in parameters
] + [f"baseline_c{k}" for k in range(4)]


def mixed_curve(x, *p):
    value, start = np.polynomial.polynomial.polyval(x, p[-4:]), 0
    for _, shape, parameters, _ in MIXED:
        value = value + shape(x, *p[start : start + len(parameters)])
        start += len(parameters)
    return value


@pytest.fixture(scope="module")
def mixed():
    """Five peaks, one of each non-Gaussian lineshape, on a cubic baseline; fit_peaks and
    curve_fit (MINPACK, 3-point Jacobian) from the same start 2 % off the truth."""
    rng = np.random.default_rng(7)
    x = np.linspace(0.0, 100.0, 500)
    truth = np.array([value for *_, values in MIXED for value in values] + list(CUBIC))
    y = mixed_curve(x, *truth) + 0.02 * rng.normal(size=x.size)
    start = truth * (1 + 0.02 * rng.choice([-1.0, 1.0], truth.size))
    fit = fit_peaks(
        x,
        y,
        tuple(name for name, *_ in MIXED),
        3,
        init=dict(zip(MIXED_NAMES, start, strict=True)),
        tol=1e-14,
    )
    values, pcov = optimize.curve_fit(
        mixed_curve, x, y, p0=start, method="trf", jac="3-point", ftol=1e-15, xtol=1e-15, gtol=1e-15
    )
    return x, y, fit, values, pcov


def test_every_lineshape_and_a_cubic_baseline_reach_curve_fits_optimum(mixed):
    x, y, fit, values, pcov = mixed
    assert fit.converged is True
    assert fit.parameter_names == tuple(MIXED_NAMES)
    errors = np.sqrt(np.diag(pcov))
    # The curve itself at the fitted values: the lineshapes agree to rounding (Voigt: the
    # Faddeeva function to 1e-13 relative, test_lineshapes). Measured 2.7e-15 on values
    # up to 6: bound 3e-14. A width constant off in its 7th digit moves it by ~1e-7.
    got = [fit.params[name] for name in MIXED_NAMES]
    np.testing.assert_allclose(fit.predict(), mixed_curve(x, *got), rtol=0, atol=3e-14)
    # Parameters: fit_peaks stops on a relative decrease of the RSS below tau = 1e-14,
    # which bounds the distance from the optimum by sqrt(tau n) = 2.2e-6 standard errors
    # (RSS/sigma^2 ~ n = 500); curve_fit polishes to ftol = xtol = 1e-15. Measured
    # 8.6e-8 standard errors: bound 1e-6.
    errors = np.sqrt(np.diag(pcov))
    assert in_standard_errors(fit, MIXED_NAMES, values, errors) < 1e-6
    # The RSS is flat at the optimum: second order in that distance, so it agrees to
    # rounding (measured 6.6e-15 relative): bound 1e-13.
    rss = np.sum((y - mixed_curve(x, *values)) ** 2)
    assert fit.rss == pytest.approx(rss, rel=1e-13)
    # Standard errors and covariance are curve_fit's pcov (J^T J s^2 with s^2 = RSS/(n-p)),
    # the Jacobian taken 1e-7 standard errors apart; measured 7.6e-8 relative (standard
    # errors) and 1.5e-7 (covariance over the product of standard errors): bound 1e-6.
    stderr = np.array([fit.stderr[name] for name in MIXED_NAMES])
    np.testing.assert_allclose(stderr, errors, rtol=1e-6)
    np.testing.assert_allclose(
        fit.covariance / np.outer(errors, errors),
        pcov / np.outer(errors, errors),
        rtol=0,
        atol=1e-6,
    )


# -- likelihoods and priors: the negative log posterior written by hand ----------------------


def peak_on_a_constant(x, height, center, sigma, c0):
    return gaussian(x, height, center, sigma) + c0


def peak_on_a_constant_jacobian(x, height, center, sigma, c0):
    e = np.exp(-0.5 * ((x - center) / sigma) ** 2)
    return np.stack(
        [
            e,
            height * e * (x - center) / sigma**2,
            height * e * (x - center) ** 2 / sigma**3,
            np.ones_like(x),
        ],
        axis=1,
    )


PEAK_NAMES = ["peak0_height", "peak0_center", "peak0_sigma", "baseline_c0"]


def stationary_point(objective, gradient, start):
    """BFGS into the basin, then MINPACK's hybrid root finder on the gradient (written
    by hand, so its root is the exact stationary point up to rounding)."""
    first = optimize.minimize(objective, start, jac=gradient, method="BFGS", options={"gtol": 1e-8})
    root = optimize.root(gradient, first.x, method="hybr", tol=1e-12)
    assert root.success, root.message
    return root.x


def count_data(seed=0):
    x = np.linspace(0.0, 10.0, 80)
    rate = peak_on_a_constant(x, 40.0, 4.6, 0.9, 5.0)
    return x, np.random.default_rng(seed).poisson(rate).astype(float)


def test_poisson_likelihood_is_scipys_maximum_likelihood_with_fisher_errors():
    """Default priors are uniform boxes: flat inside, so the MAP is the maximum of
    sum(poisson.logpmf) when it lies inside them."""
    x, counts = count_data()
    start = [35.0, 4.4, 1.0, 4.0]
    fit = fit_peaks(
        x, counts, ("gaussian",), "constant", likelihood="poisson",
        init=dict(zip(PEAK_NAMES, start, strict=True)), tol=1e-14,
    )  # fmt: skip
    assert fit.converged is True and "sigma" not in fit.params

    def objective(p):
        return -np.sum(stats.poisson.logpmf(counts, peak_on_a_constant(x, *p)))

    def gradient(p):
        rate = peak_on_a_constant(x, *p)
        return -peak_on_a_constant_jacobian(x, *p).T @ (counts / rate - 1.0)

    reference = stationary_point(objective, gradient, start)
    jacobian = peak_on_a_constant_jacobian(x, *reference)
    rate = peak_on_a_constant(x, *reference)
    # The Laplace covariance of the MAP back end is the inverse Fisher information.
    covariance = np.linalg.inv(jacobian.T @ (jacobian / rate[:, None]))
    errors = np.sqrt(np.diag(covariance))
    # fit_peaks stops at a relative decrease of the half deviance (~ n/2) below 1e-14:
    # within sqrt(1e-14 n) = 9e-7 standard errors; the reference is a root of the exact
    # gradient. Measured 9.5e-8 standard errors: bound 1e-6.
    assert in_standard_errors(fit, PEAK_NAMES, reference, errors) < 1e-6
    # The log-likelihood, flat at the optimum, to rounding (measured 8e-16): bound 1e-14.
    assert fit.log_likelihood == pytest.approx(-objective(reference), rel=1e-14)
    # Standard errors: the Fisher information evaluated 1e-7 standard errors apart
    # (measured 3.6e-9 relative): bound 5e-8.
    stderr = np.array([fit.stderr[name] for name in PEAK_NAMES])
    np.testing.assert_allclose(stderr, errors, rtol=5e-8)


def outlier_data(seed=2):
    x = np.linspace(0.0, 10.0, 80)
    rng = np.random.default_rng(seed)
    y = peak_on_a_constant(x, 3.0, 5.0, 1.0, 0.5) + 0.1 * rng.normal(size=x.size)
    y[[10, 40, 70]] += 3.0
    return x, y


def test_student_t_likelihood_with_the_default_noise_prior_is_scipys_map():
    """StudentT(3) with the noise scale a parameter; default priors: uniform boxes (flat
    inside) and HalfNormal(max y - min y) on the noise scale, a penalty sigma^2 / (2 Y^2)."""
    x, y = outlier_data()
    df = 3.0
    spread = y.max() - y.min()
    start = [2.5, 4.8, 1.2, 0.3, 0.3]
    names = [*PEAK_NAMES, "sigma"]
    fit = fit_peaks(
        x, y, ("gaussian",), "constant", likelihood="student_t", degrees_of_freedom=df,
        init=dict(zip(names, start, strict=True)), tol=1e-14,
    )  # fmt: skip
    assert fit.converged is True

    def objective(p):
        mean = peak_on_a_constant(x, *p[:4])
        return -np.sum(stats.t.logpdf(y, df, mean, p[4])) - stats.halfnorm.logpdf(
            p[4], scale=spread
        )

    def gradient(p):
        residual = y - peak_on_a_constant(x, *p[:4])
        noise = p[4]
        denominator = df * noise**2 + residual**2
        location = -peak_on_a_constant_jacobian(x, *p[:4]).T @ ((df + 1) * residual / denominator)
        scale = (
            np.sum(1 / noise - (df + 1) * residual**2 / (noise * denominator)) + noise / spread**2
        )
        return np.append(location, scale)

    reference = stationary_point(objective, gradient, start)
    jacobian = peak_on_a_constant_jacobian(x, *reference[:4])
    # Fisher information of a StudentT location: (df + 1) / ((df + 3) sigma^2) per point.
    fisher = (df + 1) / ((df + 3) * reference[4] ** 2) * jacobian.T @ jacobian
    errors = np.sqrt(np.diag(np.linalg.inv(fisher)))
    # As for Poisson: within sqrt(1e-14 n) = 9e-7 standard errors of the optimum, and the
    # noise scale from two Newton steps on log(sigma) per step. Measured 1.9e-7 standard
    # errors and 4.6e-9 relative in sigma: bounds 2e-6 and 5e-8.
    assert in_standard_errors(fit, PEAK_NAMES, reference[:4], errors) < 2e-6
    assert fit.params["sigma"] == pytest.approx(reference[4], rel=5e-8)
    # The log-likelihood, flat at the optimum (measured 2.3e-14 relative): bound 3e-13.
    mean = peak_on_a_constant(x, *reference[:4])
    log_likelihood = np.sum(stats.t.logpdf(y, df, mean, reference[4]))
    assert fit.log_likelihood == pytest.approx(log_likelihood, rel=3e-13)
    # Standard errors: the Fisher information at points 2e-7 standard errors apart
    # (measured 5.7e-9 relative): bound 6e-8.
    stderr = np.array([fit.stderr[name] for name in PEAK_NAMES])
    np.testing.assert_allclose(stderr, errors, rtol=6e-8)
    # The outliers barely move the peak; a Normal likelihood would (the test can fail).
    assert fit.params["peak0_height"] == pytest.approx(3.0, abs=0.1)


def test_user_priors_are_penalties_of_scipys_objective():
    """Normal likelihood, noise scale fitted, user priors on a centre (Normal), a width
    (Gamma) and the noise (LogNormal), the rest default (uniform, flat inside)."""
    rng = np.random.default_rng(4)
    x = np.linspace(0.0, 10.0, 60)
    y = peak_on_a_constant(x, 3.0, 4.6, 0.8, 0.5) + 0.05 * rng.normal(size=x.size)
    priors = {
        "peak0_center": dist.Normal(4.5, 0.02),
        "peak0_sigma": dist.Gamma(20.0, 25.0),
        "sigma": dist.LogNormal(np.log(0.08), 0.3),
    }
    start = [2.8, 4.5, 0.9, 0.4, 0.1]
    names = [*PEAK_NAMES, "sigma"]
    fit = fit_peaks(
        x, y, ("gaussian",), "constant", priors=priors,
        init=dict(zip(names, start, strict=True)), tol=1e-14,
    )  # fmt: skip
    assert fit.converged is True
    n = x.size

    def log_prior(p):
        return (
            stats.norm.logpdf(p[1], 4.5, 0.02)
            + stats.gamma.logpdf(p[2], 20.0, scale=1 / 25.0)
            + stats.lognorm.logpdf(p[4], 0.3, scale=0.08)
        )

    def objective(p):
        mean = peak_on_a_constant(x, *p[:4])
        return -np.sum(stats.norm.logpdf(y, mean, p[4])) - log_prior(p)

    def gradient(p):
        residual = y - peak_on_a_constant(x, *p[:4])
        noise = p[4]
        location = -peak_on_a_constant_jacobian(x, *p[:4]).T @ residual / noise**2
        location[1] += (p[1] - 4.5) / 0.02**2
        location[2] -= (20.0 - 1) / p[2] - 25.0
        scale = n / noise - np.sum(residual**2) / noise**3
        scale += (1 + (np.log(noise) - np.log(0.08)) / 0.3**2) / noise
        return np.append(location, scale)

    reference = stationary_point(objective, gradient, start)
    # The Laplace covariance documented in inference/map/__init__.py: the noise variance at
    # s^2 = RSS / (n - p), s^2 (J^T J - s^2 Hessian of the log prior)^-1.
    residual = y - peak_on_a_constant(x, *reference[:4])
    variance = np.sum(residual**2) / (n - 4)
    jacobian = peak_on_a_constant_jacobian(x, *reference[:4])
    prior_hessian = np.diag([0.0, -1 / 0.02**2, -(20.0 - 1) / reference[2] ** 2, 0.0])
    covariance = variance * np.linalg.inv(jacobian.T @ jacobian - variance * prior_hessian)
    errors = np.sqrt(np.diag(covariance))
    # The noise scale is not polished to the tolerance: it takes two Newton steps on
    # log(sigma) per Levenberg-Marquardt step, and the convergence tests look at the curve
    # parameters only. Under this LogNormal prior (median 0.08, the residuals' scale
    # 0.05: the MAP is far from where each update starts, sqrt(RSS / n)) that leaves sigma 1.1e-5 of its standard error (1.0e-6
    # relative) from the optimum, and the centre, coupled to it through its prior, 2.8e-6
    # standard errors (with four Newton steps both drop below 3e-8). Bounds 10x: 3e-5
    # standard errors, 1e-5 relative.
    assert in_standard_errors(fit, PEAK_NAMES, reference[:4], errors) < 3e-5
    assert fit.params["sigma"] == pytest.approx(reference[4], rel=1e-5)
    # Standard errors from curvatures 3e-6 standard errors apart (measured 7.3e-8
    # relative): bound 8e-7.
    stderr = np.array([fit.stderr[name] for name in PEAK_NAMES])
    np.testing.assert_allclose(stderr, errors, rtol=8e-7)
    # The priors matter: least squares puts the centre 1.6 standard errors away.
    least_squares, _ = optimize.curve_fit(peak_on_a_constant, x, y, p0=start[:4])
    assert abs(least_squares[1] - reference[1]) > 1.0 * errors[1]
