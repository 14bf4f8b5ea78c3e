"""fit_peaks / PeakFit / select_peaks against curve_fit, lmfit and scipy quadrature."""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import jax
import numpy as np
import pytest
import xarray
from scipy import integrate, optimize, stats

import gaussmix
from gaussmix.peaks import PeakFit, PeakFitWarning, fit_peaks, select_peaks

X = np.arange(10.0)
Y = np.array([0.0, 1, 2, 3, 4, 5, 4, 3, 2, 1])
NAMES = ["peak0_height", "peak0_center", "peak0_sigma", "peak1_height", "peak1_center"]
NAMES.append("peak1_sigma")
START = dict(zip(NAMES, [3.0, 3.0, 1.0, 4.0, 6.0, 1.0], strict=True))


def two_gaussians(x, h1, c1, s1, h2, c2, s2):
    return h1 * np.exp(-0.5 * ((x - c1) / s1) ** 2) + h2 * np.exp(-0.5 * ((x - c2) / s2) ** 2)


@pytest.fixture(scope="module")
def reference():
    """The ten-point example: curve_fit from the reference start, and fit_peaks."""
    values, pcov = optimize.curve_fit(two_gaussians, X, Y, p0=list(START.values()))
    values, pcov = optimize.curve_fit(two_gaussians, X, Y, p0=values, ftol=1e-15, xtol=1e-15)
    fit = fit_peaks(X, Y, peaks=("gaussian", "gaussian"), init=START, tol=1e-14)
    return values, pcov, fit


def test_lazy_exports():
    assert gaussmix.fit_peaks is fit_peaks
    assert gaussmix.PeakFit is PeakFit
    assert gaussmix.select_peaks is select_peaks


def test_same_optimum_and_pcov_as_curve_fit(reference):
    values, pcov, fit = reference
    errors = np.sqrt(np.diag(pcov))
    got = np.array([fit.params[name] for name in NAMES])
    np.testing.assert_allclose((got - values) / errors, 0.0, atol=1e-5)
    np.testing.assert_allclose([fit.stderr[name] for name in NAMES], errors, rtol=1e-4)
    scale = np.sqrt(np.outer(np.diag(pcov), np.diag(pcov)))
    np.testing.assert_allclose(fit.covariance / scale, pcov / scale, atol=1e-4)
    assert fit.parameter_names == tuple(NAMES)
    assert fit.rss == pytest.approx(np.sum((Y - two_gaussians(X, *values)) ** 2), rel=1e-10)
    assert fit.redchi == pytest.approx(fit.rss / (10 - 6))
    assert fit.converged is True and fit.n_iter > 0
    np.testing.assert_allclose(fit.predict(), two_gaussians(X, *got), rtol=1e-12)
    components = fit.components(np.linspace(0, 9, 7))
    np.testing.assert_allclose(
        components["peak0"] + components["peak1"], fit.predict(np.linspace(0, 9, 7))
    )


def test_aic_and_bic_follow_lmfit(reference):
    lmfit = pytest.importorskip("lmfit")
    values, _, fit = reference
    model = lmfit.models.GaussianModel(prefix="a") + lmfit.models.GaussianModel(prefix="b")
    params = model.make_params()
    for prefix, (h, c, s) in zip("ab", (values[:3], values[3:]), strict=True):
        params[f"{prefix}amplitude"].set(value=h * s * np.sqrt(2 * np.pi))
        params[f"{prefix}center"].set(value=c)
        params[f"{prefix}sigma"].set(value=s)
    result = model.fit(Y, params, x=X)
    assert result.chisqr == pytest.approx(fit.rss, rel=1e-6)
    # -2 log L at the maximum over the noise, and k = 6 + sigma.
    constant = 10 * (1 + np.log(2 * np.pi)) + 2
    assert fit.aic == pytest.approx(result.aic + constant, rel=1e-6)
    assert fit.bic == pytest.approx(result.bic + constant + np.log(10) - 2, rel=1e-6)


def test_derived_quantities_and_their_delta_method_errors(reference):
    values, pcov, fit = reference
    h, _, s = values[:3]
    assert fit.params["peak0_area"] == pytest.approx(h * s * np.sqrt(2 * np.pi), rel=1e-6)
    assert fit.params["peak0_fwhm"] == pytest.approx(2 * np.sqrt(2 * np.log(2)) * s, rel=1e-6)
    gradient = np.array([s, 0.0, h]) * np.sqrt(2 * np.pi)
    error = np.sqrt(gradient @ pcov[:3, :3] @ gradient)
    assert fit.stderr["peak0_area"] == pytest.approx(error, rel=1e-4)


def test_integrate_is_analytic_with_delta_method_errors(reference):
    values, pcov, fit = reference
    result = fit.integrate(1.0, 7.5)
    assert result.method == "closed form (erf)"
    quadrature, _ = integrate.quad(lambda v: two_gaussians(v, *values), 1.0, 7.5, epsabs=0)
    assert result.value == pytest.approx(quadrature, rel=1e-6)

    def integral(p):
        return integrate.quad(lambda v: two_gaussians(v, *p), 1.0, 7.5, epsabs=0)[0]

    gradient = optimize.approx_fprime(values, integral, 1e-7)
    assert result.stderr == pytest.approx(np.sqrt(gradient @ pcov @ gradient), rel=1e-4)
    one = fit.integrate(-np.inf, np.inf, peaks=[1])
    assert one.value == pytest.approx(fit.params["peak1_area"], rel=1e-10)
    assert one.stderr == pytest.approx(fit.stderr["peak1_area"], rel=1e-8)


def test_report_is_a_table_of_every_quantity(reference):
    _, _, fit = reference
    text = fit.report()
    assert text.splitlines()[0].startswith("Peak fit: 2 peaks (gaussian, gaussian)")
    for name in [*NAMES, "peak0_area", "peak1_fwhm", "sigma"]:
        assert re.search(rf"^{name}\s", text, re.MULTILINE), name
    assert "converged: True" in text


def test_plot_draws_data_fit_and_components(reference):
    import matplotlib

    matplotlib.use("Agg")
    _, _, fit = reference
    ax = fit.plot()
    assert len(ax.lines) == 3  # two components and the fit
    matplotlib.pyplot.close(ax.figure)


def test_non_converged_fit_is_flagged_and_warned():
    with pytest.warns(PeakFitWarning, match="did not converge"):
        fit = fit_peaks(X, Y, init=START, max_iter=2)
    assert fit.converged is False


def test_nan_omit_equals_dropping_the_points():
    y = Y.copy()
    y[7] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinity at 1 point\(s\).*nan_policy='omit'"):
        fit_peaks(X, y, init=START)
    fit = fit_peaks(X, y, init=START, nan_policy="omit")
    keep = np.isfinite(y)
    values, pcov = optimize.curve_fit(
        two_gaussians, X[keep], y[keep], p0=[fit.params[n] for n in NAMES], ftol=1e-15
    )
    errors = np.sqrt(np.diag(pcov))
    got = np.array([fit.params[name] for name in NAMES])
    np.testing.assert_allclose((got - values) / errors, 0.0, atol=1e-4)
    assert fit.n_points == 9


def three_peaks(x, p):
    """Three Gaussians on a line; p = (h, c, s) x 3, c0, c1 on the first axis."""
    value = p[9] + p[10] * x
    for k in range(3):
        value = value + p[3 * k] * np.exp(-0.5 * ((x - p[3 * k + 1]) / p[3 * k + 2]) ** 2)
    return value


THREE_NAMES = [f"peak{k}_{p}" for k in range(3) for p in ("height", "center", "sigma")]
THREE_NAMES += ["baseline_c0", "baseline_c1"]


@pytest.fixture(scope="module")
def lost_peak():
    """Three peaks on a line; a start whose third peak sits 7 widths below its data, so
    that it fades to height 0 on the way; curve_fit from the truth for the optimum."""
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 100.0, 400)
    truth = np.array([10.0, 25.0, 3.0, 8.0, 50.0, 3.0, 9.0, 78.0, 2.0, 1.0, 0.01])
    y = three_peaks(x, truth[:, None]) + 0.5 * rng.normal(size=(3, x.size))
    start = np.tile(truth, (3, 1))
    start[1, 7] = 64.0  # spectrum 1: peak 2 starts 14 units (7 sigma) off

    def model(x, *p):
        return three_peaks(x, np.array(p)[:, None])

    optima = [optimize.curve_fit(model, x, row, p0=truth, ftol=1e-14)[0] for row in y]
    init = {name: start[:, i] for i, name in enumerate(THREE_NAMES)}
    return x, y, init, np.array(optima)


def test_a_lost_peak_is_reseeded_from_the_residual_and_refitted(lost_peak):
    x, y, init, optima = lost_peak
    kwargs = dict(peaks=("gaussian",) * 3, baseline="linear", init=init, tol=1e-12)
    with pytest.warns(PeakFitWarning, match=r"\['peak2_height'\] ended at a bound"):
        first = fit_peaks(x, y, lost_peak_retries=0, **kwargs)
    assert first.params["peak2_height"][1] < 1e-3 and not first.converged[1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_peaks(x, y, **kwargs)
    assert np.all(fit.converged)
    got = np.column_stack([fit.params[name] for name in THREE_NAMES])
    np.testing.assert_allclose(got, optima, rtol=1e-6, atol=1e-9)
    optimum_rss = np.sum((y - three_peaks(x, optima.T[..., None])) ** 2, axis=1)
    np.testing.assert_allclose(fit.rss, optimum_rss, rtol=1e-10)
    # Only the lost spectrum was refitted, and its steps add up.
    for name in THREE_NAMES:
        np.testing.assert_array_equal(fit.params[name][[0, 2]], first.params[name][[0, 2]])
    assert fit.n_iter[1] > first.n_iter[1]
    single = fit_peaks(x, y[1], **kwargs | {"init": {k: v[1] for k, v in init.items()}})
    for name in THREE_NAMES:
        assert single.params[name] == pytest.approx(fit.params[name][1], rel=1e-8)


def test_noise_start_is_the_median_absolute_deviation_of_the_differences():
    from gaussmix.peaks.start import noise_start

    rng = np.random.default_rng(0)
    for size in (9, 10):
        y = rng.normal(size=(3, size))
        differences = np.diff(y, axis=1)
        deviation = np.abs(differences - np.median(differences, axis=1, keepdims=True))
        expected = np.median(deviation, axis=1) * 1.4826 / np.sqrt(2)
        for mask in (None, np.ones(y.shape, bool)):
            np.testing.assert_allclose(noise_start(y, mask, "student_t"), expected, rtol=1e-15)


def test_a_normal_likelihoods_noise_start_does_not_change_the_fit():
    """fit_map restarts a Normal scale at sqrt(RSS / n) of the starting curve."""
    first = fit_peaks(X, Y, init=START, tol=1e-14)
    for sigma in (0.01, 3.0):
        fit = fit_peaks(X, Y, init=START | {"sigma": sigma}, tol=1e-14)
        assert fit.n_iter == first.n_iter
        for name in [*NAMES, "sigma"]:
            assert fit.params[name] == first.params[name]


@pytest.fixture(scope="module")
def spectra():
    """Four noisy spectra of two Gaussians on a linear baseline, fitted from init='auto'."""
    rng = np.random.default_rng(0)
    x = np.linspace(0.0, 60.0, 150)
    centers = np.column_stack([rng.uniform(15, 25, 4), rng.uniform(35, 45, 4)])
    y = 1.0 + 0.02 * x + rng.normal(0, 0.1, (4, x.size))
    for k, height in enumerate((3.0, 2.0)):
        y = y + height * np.exp(-0.5 * ((x - centers[:, k : k + 1]) / 2.5) ** 2)
    fit = fit_peaks(x, y, peaks=("gaussian", "gaussian"), baseline="linear")
    return x, y, centers, fit


def test_batch_from_automatic_starting_values(spectra):
    _, y, centers, fit = spectra
    assert fit.n_spectra == 4
    assert np.all(fit.converged)
    assert fit.params["peak0_center"].shape == (4,)
    assert fit.covariance.shape == (4, 8, 8)
    for k in range(2):
        errors = np.abs(fit.params[f"peak{k}_center"] - centers[:, k])
        assert np.all(errors < 5 * fit.stderr[f"peak{k}_center"])
    assert fit.predict().shape == y.shape
    assert fit.integrate(0.0, 60.0).value.shape == (4,)
    assert "spectrum 2 of 4" in fit.report(index=2)
    np.testing.assert_allclose(fit.params["sigma"], 0.1, rtol=0.25)


def test_batch_equals_single_fits(spectra):
    x, y, _, fit = spectra
    start = {name: fit.params[name][1] for name in fit.model.site_names}
    single = fit_peaks(x, y[1], peaks=("gaussian", "gaussian"), baseline="linear", init=start)
    for name in fit.parameter_names:
        assert single.params[name] == pytest.approx(fit.params[name][1], rel=1e-8)


def test_ties_and_fixed_values_against_curve_fit():
    rng = np.random.default_rng(1)
    x = np.linspace(0.0, 10.0, 80)
    y = 2.0 * np.exp(-0.5 * ((x - 3.0) / 0.7) ** 2) + 1.5 * np.exp(-0.5 * ((x - 6.0) / 0.7) ** 2)
    y = y + 0.05 * rng.normal(size=x.size)
    fit = fit_peaks(
        x,
        y,
        init={"peak0_height": 1.5, "peak0_center": 2.8, "peak0_sigma": 1.0, "peak1_height": 1.0},
        ties={"peak1_sigma": "peak0_sigma"},
        fixed={"peak1_center": 6.0},
    )

    def tied(x, h1, c1, s, h2):
        return two_gaussians(x, h1, c1, s, h2, 6.0, s)

    values, pcov = optimize.curve_fit(tied, x, y, p0=[1.5, 2.8, 1.0, 1.0], ftol=1e-15)
    names = ["peak0_height", "peak0_center", "peak0_sigma", "peak1_height"]
    assert fit.parameter_names == tuple(names)
    np.testing.assert_allclose([fit.params[n] for n in names], values, rtol=1e-6)
    np.testing.assert_allclose([fit.stderr[n] for n in names], np.sqrt(np.diag(pcov)), rtol=1e-4)
    assert fit.params["peak1_sigma"] == fit.params["peak0_sigma"]
    assert fit.params["peak1_center"] == 6.0 and fit.stderr["peak1_center"] == 0.0


@pytest.fixture(scope="module")
def selection(spectra):
    x, y, _, _ = spectra
    return select_peaks(x, y[0], 3, baseline="linear")


def test_select_peaks_picks_two_by_bic(selection):
    assert selection.n_peaks == 2
    assert list(selection.candidates) == [1, 2, 3]
    assert selection.bic[1] < selection.bic[0]
    assert selection.elpd_loo is None
    assert selection.best.lineshapes == ("gaussian", "gaussian")


def peaks_on_a_line(x, *p):
    """Gaussians (h, c, s) on a line c0 + c1 x: p = (h, c, s) per peak, then c0, c1."""
    value = p[-2] + p[-1] * x
    for k in range(len(p) // 3):
        value = value + two_gaussians(x, *p[3 * k : 3 * k + 3], 0.0, 0.0, 1.0)
    return value


def test_select_peaks_bic_is_schwarzs_criterion_from_curve_fits_rss(spectra, selection):
    """BIC = -2 log L + k log n with the Gaussian log-likelihood maximized over the noise,
    -2 log L = n log(RSS / n) + n (1 + log 2 pi), and k counting every estimated
    parameter, the noise scale included (Schwarz 1978; lmfit leaves the noise out of k
    and the constant out of -2 log L, which shifts every candidate alike). RSS from
    curve_fit started 1 % off each candidate's optimum (the same basin)."""
    x, y, _, _ = spectra
    n = x.size
    for count, fit in zip(selection.candidates, selection.fits, strict=True):
        names = [f"peak{k}_{p}" for k in range(count) for p in ("height", "center", "sigma")]
        names += ["baseline_c0", "baseline_c1"]
        assert fit.parameter_names == tuple(names)
        start = np.array([fit.params[name] for name in names]) * 1.01
        values, _ = optimize.curve_fit(
            peaks_on_a_line, x, y[0], p0=start, ftol=1e-15, xtol=1e-15, gtol=1e-15
        )
        rss = np.sum((y[0] - peaks_on_a_line(x, *values)) ** 2)
        bic = n * np.log(rss / n) + n * (1 + np.log(2 * np.pi)) + (len(names) + 1) * np.log(n)
        # The MAP stops at a relative decrease below 1e-10 but converges quadratically:
        # measured RSS 1.1e-13 relative from curve_fit's: bound 1e-12. The BIC moves by
        # n times that relative error (150 x 1e-12): bound 2e-10 (one parameter more or
        # less in k would move it by log n = 5).
        assert fit.rss == pytest.approx(rss, rel=1e-12)
        assert fit.bic == pytest.approx(bic, rel=0, abs=2e-10)
    assert selection.bic == pytest.approx([fit.bic for fit in selection.fits], rel=0, abs=0)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit_peaks(X, Y[:-1]), "x has 10 points but y has 9"),
        (lambda: fit_peaks(X, np.where(X == 3, np.inf, Y)), "NaN or infinity"),
        (lambda: fit_peaks(np.where(X == 3, np.nan, X), Y), "x contains NaN"),
        (lambda: fit_peaks(X[:6], Y[:6]), "6 usable points for 6 free parameters"),
        (lambda: fit_peaks(X, Y, init=START | {"peak0_sigma": -1.0}), "widths must be > 0"),
        (lambda: fit_peaks(X, Y, init=START | {"peak1_sigma": 0.0}), "widths must be > 0"),
        (lambda: fit_peaks(X, Y, peaks=("gaussian", "gausian")), "Unknown lineshape 'gausian'"),
        (lambda: fit_peaks(X, Y, baseline="cubic"), "Unknown baseline 'cubic'"),
        (lambda: fit_peaks(X, Y, init={"peak0_width": 1.0}), "unknown parameter"),
        (lambda: fit_peaks(X, Y, init="guess"), "init must be 'auto' or a dict"),
        (lambda: fit_peaks(X, Y, nan_policy="drop"), "nan_policy must be one of"),
        (lambda: fit_peaks(X, Y, backend="nuts"), "backend must be one of"),
        (lambda: fit_peaks(X, np.stack([Y, Y]), backend="mcmc"), "one spectrum at a time"),
        (lambda: fit_peaks(X, Y + 0.5, likelihood="poisson"), "needs counts"),
        (lambda: fit_peaks(X, ["a"] * 10), "y must be numeric"),
        (lambda: fit_peaks(X, Y, init=START | {"peak0_height": np.ones(3)}), "shape"),
        (lambda: fit_peaks(X, Y, lost_peak_retries=-1), "lost_peak_retries must be an integer"),
        (lambda: fit_peaks(X, Y, max_iterations=2.5), "max_iterations must be an integer >= 1"),
        (lambda: fit_peaks(X, Y, batch_size=0), "batch_size must be an integer >= 1"),
    ],
)
def test_bad_input_is_a_value_error_that_says_what_is_wrong(call, match):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=match):
            call()


def read_nist(path):
    """x, y, the two starting points, certified values and standard deviations."""
    lines = path.read_text().splitlines()
    rows = [
        [float(v) for v in match.groups()[1:]]
        for line in lines
        if (match := re.match(r"\s*b(\d)\s*=\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", line))
    ]
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("Data:   y"))
    data = np.array(
        [[float(v) for v in line.split()] for line in lines[first + 1 :] if line.strip()]
    )
    start, _, certified, deviations = np.array(rows).T
    return data[:, 1], data[:, 0], start, certified, deviations


# b1 exp(-b2 x) + b3 exp(-(x - b4)^2 / b5^2) + b6 exp(-(x - b7)^2 / b8^2): b5 = sqrt(2) sigma.
NIST_SITES = [
    ("baseline_amplitude", 1.0),
    ("baseline_rate", 1.0),
    ("peak0_height", 1.0),
    ("peak0_center", 1.0),
    ("peak0_sigma", 1 / np.sqrt(2)),
    ("peak1_height", 1.0),
    ("peak1_center", 1.0),
    ("peak1_sigma", 1 / np.sqrt(2)),
]


@pytest.mark.slow
def test_mcmc_posterior_means_match_nist_gauss1(shared_data):
    """NUTS under the wide default priors: posterior means within 0.1 certified SD."""
    x, y, start, certified, deviations = read_nist(shared_data("nist", "Gauss1.dat"))
    init = {site: value * factor for (site, factor), value in zip(NIST_SITES, start, strict=True)}
    fit = fit_peaks(
        x,
        y,
        ("gaussian", "gaussian"),
        "exponential",
        init=init,
        backend="mcmc",
        num_warmup=500,
        num_samples=1000,
        num_chains=2,
        progress_bar=False,
    )
    assert fit.converged
    arviz_stats = pytest.importorskip("arviz_stats")
    posterior = fit.posterior["posterior"]
    ess = arviz_stats.ess(fit.posterior, var_names=[site for site, _ in NIST_SITES])
    for (site, factor), value, deviation in zip(NIST_SITES, certified, deviations, strict=True):
        draws = np.asarray(posterior[site]).ravel() / factor
        # The Monte Carlo error of the mean must be well below the 0.1 SD criterion.
        standard_error = np.std(draws) / np.sqrt(float(ess[site]))
        assert standard_error < 0.04 * deviation
        assert abs(draws.mean() - value) < 0.1 * deviation, site
        assert float(fit.stderr[site]) / factor == pytest.approx(deviation, rel=0.15)


def test_batch_split_over_four_cpu_devices_equals_one_device(tmp_path):
    """fit_peaks(devices=4) on forced CPU devices (a fresh interpreter) gives the
    one-device fits: ten spectra (two padded), one with an omitted NaN point; and so do
    the lost-peak refits of two of them."""
    worker = Path(__file__).with_name("peaks_devices_worker.py")
    out = tmp_path / "fits.npz"
    completed = subprocess.run(
        [sys.executable, str(worker), str(out)], capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    results = np.load(out)
    assert int(results["device_count"]) == 4
    names = [key.split("/")[-1] for key in results if key.startswith("one/params/")]
    assert len(names) == 4
    for one, split in (("one", "split"), ("lost_one", "lost_split")):
        for key in [f"params/{name}" for name in names] + ["rss", "bic"]:
            np.testing.assert_allclose(
                results[f"{split}/{key}"], results[f"{one}/{key}"], rtol=1e-12
            )
        # Covariances in units of sqrt(C_ii C_jj): a near-zero entry (1e-11 beside 1e-4 on
        # the diagonal) carries the rounding of the larger ones, and the one-device fit of
        # a small batch is compiled with fewer optimizations than the split one.
        expected, got = results[f"{one}/covariance"], results[f"{split}/covariance"]
        scale = np.sqrt(np.einsum("bii->bi", expected))
        scale = scale[:, :, None] * scale[:, None, :]
        np.testing.assert_allclose(got / scale, expected / scale, rtol=0, atol=1e-12)
        for key in ("converged", "n_iter", "n_points"):
            np.testing.assert_array_equal(results[f"{split}/{key}"], results[f"{one}/{key}"])
        assert results[f"{one}/converged"].all() and results[f"{one}/n_points"][3] == 60
    first_converged = results["lost_first/converged"]
    assert not first_converged[[0, 5]].any() and first_converged.sum() == 8
    refitted = results["lost_one/n_iter"] != results["lost_first/n_iter"]
    np.testing.assert_array_equal(np.flatnonzero(refitted), [0, 5])


def test_more_devices_than_exist_is_a_value_error():
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=64"):
        fit_peaks(X, Y, init=START, devices=64)


@pytest.mark.slow
def test_select_peaks_by_loo_picks_two_and_agrees_with_the_laplace_approximation():
    """select_peaks(backend="mcmc") on two clear peaks: short NUTS chains for one and two
    peaks (two compiled programs), PSIS-LOO per candidate. References: the MAP's AIC
    (for a regular model under flat priors elpd_loo = log L - k + O(1/n)), and the
    Laplace approximation of the two-peak MAP fit (posterior means and sds)."""
    arviz_stats = pytest.importorskip("arviz_stats")
    rng = np.random.default_rng(5)
    x = np.linspace(0.0, 10.0, 60)
    y = np.exp(-0.5 * ((x - 3.5) / 0.6) ** 2) + 0.8 * np.exp(-0.5 * ((x - 6.5) / 0.6) ** 2)
    y = y + rng.normal(0.0, 0.05, x.size)
    options = {"num_warmup": 200, "num_samples": 200, "num_chains": 1, "progress_bar": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PSIS: a few Pareto k above 0.7
        selection = select_peaks(x, y, 2, backend="mcmc", **options)
    assert selection.n_peaks == 2 and list(selection.candidates) == [1, 2]
    assert selection.elpd_loo.shape == (2,) and np.all(np.isfinite(selection.elpd_loo))
    assert selection.elpd_loo[1] - selection.elpd_loo[0] > 20  # about 100 nats here
    assert np.argmin(selection.bic) == 1
    for fit, elpd in zip(selection.fits, selection.elpd_loo, strict=True):
        assert fit.backend == "mcmc"
        assert fit.posterior["log_likelihood"]["y"].shape == (1, 200, x.size)
        # The reference: the pointwise log-likelihood of every draw written by hand
        # (scipy's normal density of the hand-written curve), and ArviZ's PSIS-LOO of a
        # tree holding only that (one chain: relative efficiency 1, as for the product).
        draws = fit.posterior["posterior"]
        mean = sum(
            two_gaussians(
                x[:, None, None],
                *(np.asarray(draws[f"peak{k}_{p}"]) for p in ("height", "center", "sigma")),
                0.0, 0.0, 1.0,
            )
            for k in range(len(fit.lineshapes))
        )  # fmt: skip
        log_likelihood = stats.norm.logpdf(y[:, None, None], mean, np.asarray(draws["sigma"]))
        log_likelihood = np.moveaxis(log_likelihood, 0, -1)  # (chain, draw, point)
        stored = np.asarray(fit.posterior["log_likelihood"]["y"])
        # Float64 rounding of log densities of a few nats: measured 1e-14: bound 1e-13.
        np.testing.assert_allclose(stored, log_likelihood, rtol=0, atol=1e-13)
        tree = xarray.DataTree.from_dict(
            {
                "posterior": xarray.Dataset({"sigma": (("chain", "draw"), draws["sigma"].values)}),
                "log_likelihood": xarray.Dataset(
                    {"y": (("chain", "draw", "point"), log_likelihood)}
                ),
            }
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            reference = float(arviz_stats.loo(tree).elpd)
        # The same PSIS on log-likelihoods 1e-14 apart: a sum over 60 points of
        # log-sum-exps, each rounded to ~1e-15; measured 1.8e-15: bound 1e-13.
        assert elpd == pytest.approx(reference, rel=0, abs=1e-13)
        assert abs(elpd - (-fit.aic / 2)) < 2.0
    best = selection.best
    laplace = fit_peaks(x, y, ("gaussian", "gaussian"))
    for name in laplace.parameter_names:
        assert abs(best.params[name] - laplace.params[name]) < 0.5 * laplace.stderr[name], name
        assert best.stderr[name] == pytest.approx(laplace.stderr[name], rel=0.3), name


# -- renamed keywords ------------------------------------------------------------------


def future_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, FutureWarning)]


@pytest.mark.parametrize(
    ("old", "new", "value"), [("max_iterations", "max_iter", 2), ("tolerance", "tol", 1e-2)]
)
def test_fit_peaks_old_keyword_spellings_warn_and_give_the_same_fit(reference, old, new, value):
    *_, precise = reference
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PeakFitWarning)  # max_iter=2 does not converge
        renamed = fit_peaks(X, Y, init=START, **{new: value})
    with pytest.warns(FutureWarning) as record, warnings.catch_warnings():
        warnings.simplefilter("ignore", PeakFitWarning)
        deprecated = fit_peaks(X, Y, init=START, **{old: value})
    assert future_warnings(record) == [
        f"fit_peaks: '{old}' is deprecated and will be removed in a future release; "
        f"use '{new}' instead."
    ]
    assert next(w for w in record if w.category is FutureWarning).filename == __file__
    assert renamed.n_iter < precise.n_iter  # the value travelled
    for name in ("params", "stderr", "covariance", "rss", "n_iter", "converged"):
        # Same compiled fit, same inputs: equal to the last bit.
        jax.tree.map(
            np.testing.assert_array_equal, getattr(deprecated, name), getattr(renamed, name)
        )


def test_select_peaks_old_keyword_spelling_warns_once_and_gives_the_same_selection():
    # Two peaks only: the reference fit's program (two Gaussians on the ten points; the
    # iteration limit is an argument, not a constant of the program), no new compilation.
    selection = select_peaks(X, Y, 2, min_peaks=2, max_iter=2)
    assert selection.fits[0].n_iter == 2  # the value travelled (unlimited: more steps)
    with pytest.warns(FutureWarning) as record:
        deprecated = select_peaks(X, Y, 2, min_peaks=2, max_iterations=2)
    assert future_warnings(record) == [
        "select_peaks: 'max_iterations' is deprecated and will be removed in a future "
        "release; use 'max_iter' instead."
    ]
    np.testing.assert_array_equal(deprecated.bic, selection.bic)
    assert deprecated.fits[0].n_iter == selection.fits[0].n_iter


def test_mcmc_from_a_complete_init_runs_no_map_fit(monkeypatch):
    """backend="mcmc" with every site in init (a previous fit's params): the chains start
    there and the Levenberg-Marquardt fit never runs (its entry point fails if called);
    the log-likelihood, AIC and BIC are those at the start, here the MAP's. Reference:
    the Laplace approximation of the MAP fit (one clear peak, 60 points: the posterior is
    close to Gaussian), within the Monte Carlo error of the draws."""
    arviz_stats = pytest.importorskip("arviz_stats")
    from gaussmix.peaks import fit as fitting

    rng = np.random.default_rng(11)
    x = np.linspace(0.0, 10.0, 60)
    y = np.exp(-0.5 * ((x - 4.0) / 0.6) ** 2) + 0.2 + rng.normal(0.0, 0.05, x.size)
    shape = {"peaks": ("gaussian",), "baseline": "constant"}
    map_fit = fit_peaks(x, y, **shape)
    options = {"num_warmup": 300, "num_samples": 400, "num_chains": 1, "progress_bar": False}

    def no_map_fit(*args, **kwargs):
        raise AssertionError("the Levenberg-Marquardt fit ran")

    monkeypatch.setattr(fitting, "fit_map", no_map_fit)
    fit = fit_peaks(x, y, **shape, init=map_fit.params, backend="mcmc", **options)
    assert fit.backend == "mcmc" and fit.n_iter == 0
    for name in ("log_likelihood", "aic", "bic"):
        assert getattr(fit, name) == pytest.approx(getattr(map_fit, name), rel=1e-10), name
    assert fit.n_points == map_fit.n_points == 60 and fit.n_parameters == map_fit.n_parameters
    assert fit.parameter_names == map_fit.parameter_names
    diverging = int(np.asarray(fit.posterior["sample_stats"]["diverging"]).sum())
    assert fit.converged is (diverging == 0)
    assert fit.rss == pytest.approx(np.sum((y - fit.predict()) ** 2), rel=1e-12)
    ess = arviz_stats.ess(fit.posterior, var_names=list(map_fit.parameter_names))
    for name in map_fit.parameter_names:
        standard_error = fit.stderr[name] / np.sqrt(float(ess[name]))
        bound = 0.1 * map_fit.stderr[name] + 4 * standard_error
        assert abs(fit.params[name] - map_fit.params[name]) < bound, name
        assert fit.stderr[name] == pytest.approx(map_fit.stderr[name], rel=0.25), name
    assert {"peak0_area", "peak0_fwhm", "sigma"} <= set(fit.params)
    _check_posterior_plot(fit, x)
    # Without sigma the init is not complete: the MAP fit starts the chains, as before.
    partial = {name: value for name, value in map_fit.params.items() if name != "sigma"}
    with pytest.raises(AssertionError, match="Levenberg-Marquardt fit ran"):
        fit_peaks(x, y, **shape, init=partial, backend="mcmc", **options)


def _check_posterior_plot(fit, x):
    """The plot of an MCMC fit of one Gaussian on a constant: its curves are the posterior
    medians of the curves of 400 draws, against NumPy's, and they come from the two
    compiled curve programs (evaluated operation by operation, the draws' curves compiled
    a dozen programs of their own, in every process)."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    compiled = []

    class Programs(logging.Handler):
        def emit(self, record):
            found = re.search(r"Compiling (\S+)", record.getMessage())
            if found:
                compiled.append(found.group(1))

    handler, logger = Programs(), logging.getLogger("jax")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        with jax.log_compiles(True):
            ax = fit.plot()
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert set(compiled) <= {"jit(mean_curve)", "jit(component_curves)"}, compiled
    posterior = fit.posterior["posterior"]
    draws = {name: np.asarray(posterior[name]).ravel() for name in fit.parameter_names}
    chosen = np.linspace(0, draws["peak0_height"].size - 1, 400).astype(int)
    grid = np.linspace(x.min(), x.max(), 400)
    height, center, width = (
        draws[f"peak0_{p}"][chosen, None] for p in ("height", "center", "sigma")
    )
    peak = height * np.exp(-0.5 * ((grid - center) / width) ** 2)
    total = peak + draws["baseline_c0"][chosen, None]
    lines = {line.get_label(): line.get_ydata() for line in ax.lines}
    np.testing.assert_allclose(lines["peak0"], np.median(peak, axis=0), rtol=1e-10, atol=1e-12)
    total_line = ax.lines[-1].get_ydata()  # the total is drawn last
    np.testing.assert_allclose(total_line, np.median(total, axis=0), rtol=1e-10)
    matplotlib.pyplot.close(ax.figure)


@pytest.mark.parametrize("likelihood", ["student_t", "poisson"])
def test_mcmc_from_a_complete_init_has_the_maps_log_likelihood_at_the_map(likelihood):
    """The log-likelihood at the starting values is written out on the host for the
    StudentT and Poisson likelihoods; at a MAP fit's params it must be the one the MAP
    back end computed from the program (NumPyro's densities), and so AIC and BIC."""
    rng = np.random.default_rng(3)
    x = np.linspace(0.0, 10.0, 40)
    curve = 30.0 * np.exp(-0.5 * ((x - 5.0) / 1.2) ** 2) + 5.0
    if likelihood == "poisson":
        y = rng.poisson(curve).astype(float)
        y[0] = 0.0  # a zero count: the clipped mean's log never multiplies it
    else:
        y = curve + rng.standard_t(3.0, x.size)
    shape = {"peaks": ("gaussian",), "baseline": "constant", "likelihood": likelihood}
    map_fit = fit_peaks(x, y, **shape)
    options = {"num_warmup": 5, "num_samples": 5, "num_chains": 1, "progress_bar": False}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # five draws: no converged posterior is asked for
        fit = fit_peaks(x, y, **shape, init=map_fit.params, backend="mcmc", **options)
    assert fit.n_iter == 0
    for name in ("log_likelihood", "aic", "bic"):
        assert getattr(fit, name) == pytest.approx(getattr(map_fit, name), rel=1e-10), name
