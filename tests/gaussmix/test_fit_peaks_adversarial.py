"""Adversarial inputs to fit_peaks: every bad input is a ValueError, every failed fit is
flagged (converged False, NaN for what could not be computed, one PeakFitWarning), and no
input, however odd, gives another exception or a converged fit with NaN in it."""

import warnings

import jax
import numpy as np
import numpyro.distributions as dist
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpyro.distributions.distribution import validation_enabled

from gaussmix.models.peaks import peak_model
from gaussmix.peaks import PeakFitWarning, fit_peaks

X = np.linspace(0.0, 10.0, 40)


def gaussian(x, height=3.0, center=5.0, sigma=0.8):
    return height * np.exp(-0.5 * ((x - center) / sigma) ** 2)


def spectrum(seed=0, x=X):
    noise = 0.05 * np.random.default_rng(seed).normal(size=x.size)
    return gaussian(x) + noise


def no_validation(distribution, *args, **kwargs):
    """A numpyro distribution built without numpyro's own argument checks, as a user
    with validation off gets it."""
    with validation_enabled(False):
        return distribution(*args, **kwargs)


# ---------------------------------------------------------------------------------------
# Bad input: one ValueError each, before anything is fitted
# ---------------------------------------------------------------------------------------

BAD_PRIORS = [
    ("peak0_sigma", dist.Normal(1.0, 1.0), "support real, but peak0_sigma lives on the positive"),
    ("peak0_sigma", dist.Uniform(-1.0, 1.0), r"\[-1.0, 1.0\], but .* positive reals"),
    ("peak0_fraction", dist.Uniform(0.0, 2.0), r"\[0.0, 2.0\], but .* interval \[0, 1\]"),
    ("peak0_center", dist.Poisson(3.0), "support discrete"),
    ("sigma", dist.Cauchy(0.0, 1.0), "sigma lives on the positive reals"),
    ("peak0_center", no_validation(dist.Normal, np.nan, 1.0), "non-finite loc"),
    ("peak0_sigma", no_validation(dist.HalfNormal, -1.0), r"invalid scale \(-1.0\)"),
    ("peak0_height", no_validation(dist.Uniform, 2.0, 1.0), "empty or a single point"),
    ("peak0_center", no_validation(dist.Uniform, 0.0, np.inf), "non-finite high"),
]


@pytest.mark.parametrize(("site", "prior", "message"), BAD_PRIORS)
@pytest.mark.parametrize("backend", ["map", "mcmc"])
def test_a_prior_off_its_site_support_is_refused_by_both_back_ends(site, prior, message, backend):
    with pytest.raises(ValueError, match=rf"priors\['{site}'\].*{message}"):
        fit_peaks(X, spectrum(), peaks=("pseudo_voigt",), priors={site: prior}, backend=backend)


# The compiled programs of this file are few and shared (JAX compiles once per model,
# prior structure and data shape, seconds each): FRACTION_PRIOR on a pseudo-Voigt of 40
# points, a Gaussian of 40 points, two Gaussians with one fixed, and the batch.
FRACTION_PRIOR = {"peak0_fraction": dist.Beta(2.0, 2.0)}


def test_a_prior_inside_its_site_support_fits():
    # Which priors fit which site is tested case by case at the model layer
    # (tests/models/test_peaks.py); here one goes through fit_peaks end to end.
    fit = fit_peaks(X, spectrum(), peaks=("pseudo_voigt",), priors=FRACTION_PRIOR)
    assert fit.converged
    # Noise 0.05 on a height of 3: the centre to well within 0.1.
    assert fit.params["peak0_center"] == pytest.approx(5.0, abs=0.1)


@pytest.mark.parametrize(
    ("fixed", "message"),
    [
        ({"peak0_sigma": -1}, "fixed peak0_sigma = -1 is outside its support: sigma must be > 0"),
        ({"peak0_sigma": 0.0}, "sigma must be > 0"),
        ({"peak0_height": np.inf}, "not finite"),
        ({"peak0_fraction": 1.5}, r"fraction must lie in \[0, 1\]"),
        ({"peak0_sigma": np.nan}, "not finite"),
        ({"peak0_center": np.inf}, "not finite"),
        ({"peak0_center": "five"}, "must be a number"),
        ({"peak0_center": [4.0, 5.0]}, r"has shape \(2,\)"),
        ({"peak7_sigma": 1.0}, "unknown parameter"),
    ],
)
def test_bad_fixed_values_are_refused(fixed, message):
    with pytest.raises(ValueError, match=message):
        fit_peaks(X, spectrum(), peaks=("pseudo_voigt",), fixed=fixed)


def test_fixed_values_of_the_wrong_shape_for_a_batch_are_refused():
    batch = np.stack([spectrum(0), spectrum(1), spectrum(2)])
    with pytest.raises(ValueError, match=r"fixed\['peak0_sigma'\] has shape \(2,\)"):
        fit_peaks(X, batch, peaks=("gaussian",), fixed={"peak0_sigma": np.ones(2)})


def test_the_negative_sigma_of_the_issue_no_longer_gives_negative_area_and_fwhm():
    # The issue: fixed={"peak0_sigma": -1} converged to a negative area and FWHM.
    with pytest.raises(ValueError, match="outside its support"):
        fit_peaks(X, spectrum(), peaks=("gaussian",), fixed={"peak0_sigma": -1})


@pytest.mark.parametrize(
    ("ties", "message"),
    [
        ({"peak1_sigma": "peak0_center"}, "joins a width to a center"),
        ({"peak1_center": "peak0_gamma"}, "joins a center to a width"),
        ({"peak1_height": "peak0_area"}, "joins a height to a area"),
        ("peak1_sigma", "ties must be a dict"),
    ],
)
def test_ties_between_different_kinds_are_refused(ties, message):
    with pytest.raises(ValueError, match=message):
        fit_peaks(X, spectrum(), peaks=("voigt_area", "gaussian"), ties=ties)


def test_a_tie_between_widths_of_different_lineshapes_is_accepted():
    model = peak_model(("gaussian", "lorentzian"), ties={"peak1_gamma": "peak0_sigma"})
    assert "peak1_gamma" not in model.free_names


@pytest.mark.parametrize("degrees_of_freedom", [-1.0, 0.0, np.nan, np.inf, "four", [3.0, 4.0]])
@pytest.mark.parametrize("likelihood", ["student_t", "normal"])
def test_invalid_degrees_of_freedom_are_refused(degrees_of_freedom, likelihood):
    with pytest.raises(ValueError, match="degrees_of_freedom"):
        fit_peaks(
            X,
            spectrum(),
            peaks=("gaussian",),
            likelihood=likelihood,
            degrees_of_freedom=degrees_of_freedom,
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"init": {"peak0_sigma": -1.0}}, "widths must be > 0"),
        ({"init": {"peak0_sigma": np.nan}}, "must be finite"),
        ({"init": {"peak0_fraction": 2.0}}, r"fraction must lie in \[0, 1\]"),
        ({"init": {"sigma": 0.0}}, "sigma must be > 0"),
        ({"init": {"peak0_height": -1.0}}, "outside the support of its prior"),
        ({"init": {"peak0_center": 50.0}}, "outside the support of its prior"),
        ({"tolerance": -1.0}, "tolerance"),
        ({"tolerance": np.nan}, "tolerance"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"tol": 0.0}, "tol must be None or a number in"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
        ({"fixed": ["peak0_sigma"]}, "fixed must be a dict"),
        ({"priors": {"peak0_sigma": 1.0}}, "must be a numpyro distribution"),
        ({"nan_policy": "ignore"}, "nan_policy"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        fit_peaks(X, spectrum(), peaks=("pseudo_voigt",), **options)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.where(X == X[3], np.nan, X), spectrum(), "x contains NaN"),
        (X, np.where(X == X[3], np.nan, spectrum()), "y contains NaN"),
        (X, np.where(X == X[3], np.inf, spectrum()), "y contains NaN or infinity"),
        (np.full(X.size, 2.0), spectrum(), "two distinct"),
        (X[:-1], spectrum(), "give one y"),
        (X, spectrum()[:5], "give one y"),
    ],
)
def test_bad_data_are_refused(x, y, message):
    with pytest.raises(ValueError, match=message):
        fit_peaks(x, y, peaks=("gaussian",))


def test_unsorted_and_repeated_x_fit_like_sorted_x():
    # Points are exchangeable in the likelihood: their order does not matter, and a
    # repeated x is a replicate measurement.
    order = np.random.default_rng(1).permutation(X.size)
    y = spectrum()
    fit = fit_peaks(X, y, peaks=("gaussian",))
    shuffled = fit_peaks(X[order], y[order], peaks=("gaussian",))
    # Same optimum reached from the same automatic start: agreement to the convergence
    # tolerance (1e-10 relative decrease), far below these 1e-6.
    for name in ("peak0_height", "peak0_center", "peak0_sigma"):
        assert shuffled.params[name] == pytest.approx(fit.params[name], rel=1e-6)
    half = slice(0, None, 2)  # every other point, each twice: 40 points again
    repeated = fit_peaks(np.repeat(X[half], 2), np.repeat(y[half], 2), peaks=("gaussian",))
    assert repeated.converged
    # Noise 0.05 on a height of 3 (stderr of the centre ~ 0.01): within 0.1 of the truth.
    assert repeated.params["peak0_center"] == pytest.approx(5.0, abs=0.1)


# ---------------------------------------------------------------------------------------
# Failed fits: NaN, not zeros; converged False; one warning per call
# ---------------------------------------------------------------------------------------


def fit_with_one_warning(*args, **kwargs):
    with pytest.warns(PeakFitWarning) as record:
        fit = fit_peaks(*args, **kwargs)
    failures = [w for w in record if "did not converge" in str(w.message)]
    assert len(failures) == 1, [str(w.message) for w in record]
    return fit, str(failures[0].message)


def assert_failed_at_start(fit, index=None):
    def pick(value):
        return value if index is None else np.asarray(value)[index]

    assert not pick(fit.converged)
    for value in (fit.rss, fit.redchi, fit.aic, fit.log_likelihood):
        assert np.isnan(pick(value))
    for name in fit.parameter_names:
        assert np.isnan(pick(fit.params[name])) and np.isnan(pick(fit.stderr[name]))
    assert np.all(np.isnan(pick(fit.covariance)))


def test_a_start_with_minus_infinite_log_prior_fails_with_nan_not_zeros():
    # Beta(2, 2) has density 0 at a fraction of 0: the log posterior is -inf at the start.
    fit, message = fit_with_one_warning(
        X,
        spectrum(),
        peaks=("pseudo_voigt",),
        priors=FRACTION_PRIOR,
        init={"peak0_fraction": 0.0},
    )
    assert_failed_at_start(fit)
    assert "failed at the start" in message
    assert fit.n_points == X.size  # what could be computed still is


def test_data_whose_squares_overflow_fail_at_the_start_with_nan():
    # y ~ 1e160: every squared residual overflows float64, the log posterior is -inf.
    fit, message = fit_with_one_warning(
        X, 1e160 * spectrum(), peaks=("pseudo_voigt",), priors=FRACTION_PRIOR
    )
    assert_failed_at_start(fit)
    assert "failed at the start" in message


def test_a_peak_whose_lineshape_underflows_on_x_gives_a_singular_covariance():
    # A Gaussian of width 1e-3 centred 990 widths of x away from the data is exactly 0
    # on every point: its height has no data, the curvature is singular.
    fit, message = fit_with_one_warning(
        X,
        spectrum(),
        peaks=("gaussian", "gaussian"),
        fixed={"peak1_center": 1000.0, "peak1_sigma": 1e-3},
    )
    assert not fit.converged
    assert np.isnan(fit.stderr["peak1_height"]) and np.isnan(fit.covariance).any()
    assert np.isfinite(fit.rss)  # the curve at the returned params is still computable
    assert "singular covariance" in message


def test_a_degenerate_design_gives_a_singular_covariance():
    # Four free parameters (a Gaussian, a second one's height; the second's centre and
    # width fixed) on three distinct abscissae: a curve of lines of optima.
    x = np.repeat([4.0, 5.0, 6.0, 5.0], X.size // 4)
    y = gaussian(x) + gaussian(x, 1.0, 5.0, 1.0)
    fit, message = fit_with_one_warning(
        x, y, peaks=("gaussian", "gaussian"), fixed={"peak1_center": 5.0, "peak1_sigma": 1.0}
    )
    assert not fit.converged
    assert any(np.isnan(fit.stderr[name]) for name in fit.parameter_names)
    assert "singular covariance" in message


def test_running_out_of_iterations_is_flagged_and_keeps_what_was_computed():
    fit, message = fit_with_one_warning(X, spectrum(), peaks=("gaussian",), max_iter=1)
    assert not fit.converged
    assert "did not converge in 1 iterations" in message
    assert np.isfinite(fit.rss) and fit.rss > 0


def test_a_batch_reports_nan_per_spectrum_and_warns_once_naming_them():
    batch = np.stack([spectrum(seed) for seed in range(4)])
    fractions = np.array([0.5, 0.0, 0.5, 0.0])  # spectra 1 and 3 start at Beta's zero
    fit, message = fit_with_one_warning(
        X,
        batch,
        peaks=("pseudo_voigt",),
        priors=FRACTION_PRIOR,
        init={"peak0_fraction": fractions},
    )
    assert "spectra [1, 3] failed at the start" in message
    np.testing.assert_array_equal(fit.converged, [True, False, True, False])
    for index in (1, 3):
        assert_failed_at_start(fit, index)
    assert np.all(np.isfinite(fit.rss[[0, 2]]))


def test_mcmc_from_a_failed_start_is_a_value_error():
    with pytest.raises(ValueError, match="failed at its start"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PeakFitWarning)
            fit_peaks(
                X,
                spectrum(),
                peaks=("pseudo_voigt",),
                priors=FRACTION_PRIOR,
                init={"peak0_fraction": 0.0},
                backend="mcmc",
                num_warmup=10,
                num_samples=10,
                num_chains=1,
                progress_bar=False,
            )


def test_float32_fits_stay_finite_and_failures_are_nan():
    x, y = X.astype(np.float32), spectrum().astype(np.float32)
    with jax.enable_x64(False):
        fit = fit_peaks(x, y, peaks=("pseudo_voigt",), priors=FRACTION_PRIOR)
        assert fit.converged
        # float32 on data of unit scale: the centre's stderr is ~0.01, float32 rounding
        # ~1e-6: 0.1 is a sensible-fit check, not a precision one.
        assert fit.params["peak0_center"] == pytest.approx(5.0, abs=0.1)
        assert all(np.isfinite(fit.stderr[name]) for name in fit.parameter_names)
        failed, _ = fit_with_one_warning(
            x, y, peaks=("pseudo_voigt",), priors=FRACTION_PRIOR, init={"peak0_fraction": 0.0}
        )
        assert_failed_at_start(failed)
        with pytest.raises(ValueError, match="outside its support"):
            fit_peaks(x, y, peaks=("gaussian",), fixed={"peak0_sigma": -1.0})


# ---------------------------------------------------------------------------------------
# Property: any input works or is a ValueError; a converged spectrum has no NaN
# ---------------------------------------------------------------------------------------

SIZES = (40, 13)  # few shapes: JAX compiles once per shape and model
#: (peaks, baselines, likelihood, priors): few models, so that compilations are reused.
MODELS = (
    (("gaussian",), (None,), "normal", None),
    (("pseudo_voigt",), (None,), "normal", FRACTION_PRIOR),
    (("gaussian", "lorentzian"), ("linear", 1), "student_t", None),
    (("lorentzian",), (0,), "poisson", None),
)
SPECIAL = (np.nan, np.inf, -np.inf, 1e300, -1e300, 1e-300, 0.0, 1.0, -1.0, 1e20)
VALUES = (-1.0, 0.0, 0.5, 3.0, 1e-300, 1e300, np.nan, np.inf)


@st.composite
def arrays(draw, size):
    kind = draw(st.sampled_from(["peak", "peak", "random", "counts", "constant"]))
    if kind == "peak":
        height = draw(st.sampled_from([1e-6, 1.0, 100.0]))
        values = gaussian(np.linspace(0.0, 10.0, size), height, draw(st.floats(0.0, 10.0)))
    elif kind == "counts":
        values = np.asarray(draw(st.lists(st.integers(0, 50), min_size=size, max_size=size)))
    elif kind == "constant":
        values = np.full(size, draw(st.sampled_from(SPECIAL[3:])))
    else:
        values = np.asarray(
            draw(st.lists(st.floats(-1e6, 1e6), min_size=size, max_size=size)), float
        )
    values = np.asarray(values, float)
    if draw(st.integers(0, 3)) == 0:
        values[draw(st.integers(0, size - 1))] = draw(st.sampled_from(SPECIAL))
    return values


@st.composite
def problems(draw):
    size = draw(st.sampled_from(SIZES))
    x = np.linspace(0.0, 10.0, size)
    x_kind = draw(st.sampled_from(["sorted", "sorted", "unsorted", "repeated", "random"]))
    if x_kind == "unsorted":
        x = np.random.default_rng(draw(st.integers(0, 9))).permutation(x)
    elif x_kind == "repeated":
        x = np.sort(np.concatenate([x[: size // 2], x[: size - size // 2]]))
    elif x_kind == "random":
        x = draw(arrays(size))
    y = draw(arrays(size))
    if draw(st.booleans()):  # float32 inputs (huge values become infinite)
        with np.errstate(over="ignore"):
            x, y = x.astype(np.float32), y.astype(np.float32)
    peaks, baselines, likelihood, priors = draw(st.sampled_from(MODELS))
    options = {
        "peaks": peaks,
        "baseline": draw(st.sampled_from(baselines)),
        "likelihood": likelihood,
        "priors": priors,
        "degrees_of_freedom": draw(st.sampled_from([4.0, 1.0, 0.5, -1.0, 0.0, np.nan, np.inf])),
        "nan_policy": draw(st.sampled_from(["raise", "omit"])),
    }
    width = "gamma" if peaks[0] == "lorentzian" else "sigma"
    name = f"peak0_{draw(st.sampled_from([width, 'center', 'height']))}"
    value = draw(st.sampled_from(VALUES))
    which = draw(st.sampled_from(["none", "none", "fixed", "init"]))
    if which == "fixed":
        options["fixed"] = {name: value}
    elif which == "init":
        options["init"] = {name: value}
    return x, y, options


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_any_input_fits_or_is_a_value_error(problem):
    x, y, options = problem
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PeakFitWarning)
            fit = fit_peaks(x, y, **options)
    except ValueError:
        return
    converged = np.atleast_1d(fit.converged)
    assert converged.dtype == bool
    if not converged.any():
        return
    for name, value in fit.params.items():
        assert np.all(np.isfinite(np.atleast_1d(value)[converged])), name
    for name, value in fit.stderr.items():
        assert np.all(np.isfinite(np.atleast_1d(value)[converged])), name
    assert np.all(np.isfinite(np.atleast_1d(fit.rss)[converged]))


def test_a_residual_sum_of_squares_of_zero_is_said_not_a_divide_by_zero():
    """A spectrum of zeros under a peak of height fixed at 0: the curve goes through every
    point whatever path the optimizer takes, the RSS is exactly 0 and log(RSS) would be
    -inf with a RuntimeWarning. The fit says so in one PeakFitWarning; its log-likelihood
    is +inf and AIC/BIC -inf. (With the height free the optimizer may stop at a height of
    1e-37 and an RSS of 1e-73, as rounding decides: the next test.)"""
    with pytest.warns(PeakFitWarning, match="residual sum of squares of the spectrum is 0"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            fit = fit_peaks(X, np.zeros(X.shape), peaks=("gaussian",), fixed={"peak0_height": 0.0})
    assert float(fit.rss) == 0.0
    assert float(fit.log_likelihood) == np.inf
    assert float(fit.aic) == -np.inf and float(fit.bic) == -np.inf


def test_a_spectrum_whose_squares_underflow_gives_no_nan_and_no_runtime_warning():
    """y = 1e-300 everywhere (found by the property test above): squared residuals
    underflow. Whether the fit ends with an RSS of exactly 0 (then said, as above) or
    tiny (rounding decides: XLA's optimization level changes it), nothing is NaN, NumPy
    warns of nothing, and the log-likelihood is +inf exactly when the RSS is 0."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.simplefilter("error", RuntimeWarning)
        fit = fit_peaks(X, np.full(X.shape, 1e-300), peaks=("gaussian",))
    assert all(issubclass(warning.category, PeakFitWarning) for warning in caught)
    rss, log_likelihood = float(fit.rss), float(fit.log_likelihood)
    assert np.isfinite(rss) and rss >= 0.0 and not np.isnan(log_likelihood)
    assert (log_likelihood == np.inf) == (rss == 0.0)
    assert all(not np.isnan(float(np.asarray(value))) for value in fit.params.values())
