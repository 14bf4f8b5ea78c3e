"""XPS backgrounds (active Shirley, Tougaard) and lineshapes in fits: against brute-force
quadrature, against lmfitxps on the same spectrum, a known truth, an independent optimizer
(scipy's least_squares on the same curve), NUTS, and hostile input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, optimize

from gaussmix.models.backgrounds import TOUGAARD_C, shirley, tougaard
from gaussmix.models.lineshapes import get_lineshape
from gaussmix.models.peaks import baseline_curve as eager_baseline_curve
from gaussmix.models.peaks import mean_curve as eager_mean_curve
from gaussmix.models.peaks import peak_model
from gaussmix.models.xps_lineshapes import doniach_sunjic_peak_shape
from gaussmix.peaks import fit_peaks

#: Two peaks on a binding-energy axis (eV): a Gaussian and a Doniach-Sunjic.
SHAPES = ("gaussian", "doniach_sunjic")
TRUTH_PEAKS = {
    "peak0_height": 50.0,
    "peak0_center": 285.0,
    "peak0_sigma": 0.6,
    "peak1_height": 80.0,
    "peak1_center": 289.5,
    "peak1_gamma": 0.5,
    "peak1_alpha": 0.15,
}
SHIRLEY = {**TRUTH_PEAKS, "baseline_offset": 20.0, "baseline_step": 0.12}
TOUGAARD = {**TRUTH_PEAKS, "baseline_offset": 20.0, "baseline_b": 2866.0}
X = np.linspace(280.0, 296.0, 121)
NOISE = 1.0

# Compiled once per model (op by op, the quadratures take a minute).
baseline_curve = jax.jit(eager_baseline_curve, static_argnums=1)
mean_curve = jax.jit(eager_mean_curve, static_argnums=1)


def pairs(model, params):
    return [
        (shape, [params[name] for name in model.peak_parameter_names(index)])
        for index, shape in enumerate(model.lineshapes)
    ]


def _peak_sum(x, model, params):
    return sum(shape.profile_fn(x, *arguments) for shape, arguments in pairs(model, params))


_compiled_peak_sum = jax.jit(_peak_sum, static_argnums=1)


def peak_sum(x, model, params):
    """The sum of the peaks, compiled (scipy's quad calls it point by point)."""
    return np.asarray(_compiled_peak_sum(jnp.asarray(x, float), model, params))


def spectrum(background, truth, seed):
    model = peak_model(SHAPES, background)
    clean = np.asarray(mean_curve(X, model, truth))
    return clean + np.random.default_rng(seed).normal(0.0, NOISE, X.size)


# -- the backgrounds as functions ------------------------------------------------------


@pytest.mark.slow
def test_shirley_is_the_cumulative_peak_area_on_a_fine_grid():
    """Against scipy's cumulative trapezoid of the peaks on a 2e5-point grid from far
    below; the peaks include the quadrature-integrated Voigt and Pearson VII."""
    shapes = ("gaussian", "doniach_sunjic", "voigt", "pearson7")
    model = peak_model(shapes, "shirley")
    params = {
        **TRUTH_PEAKS,
        "peak2_height": 30.0,
        "peak2_center": 292.0,
        "peak2_sigma": 0.4,
        "peak2_gamma": 0.2,
        "peak3_height": 20.0,
        "peak3_center": 283.0,
        "peak3_sigma": 0.5,
        "peak3_exponent": 1.4,
        "baseline_offset": 3.0,
        "baseline_step": 0.2,
    }
    # X's own points are nodes of the fine grid (200 steps between two of them): no
    # interpolation of the reference
    fine = np.concatenate(
        [np.linspace(-2000.0, 280.0, 400_001)[:-1], np.linspace(280, 296, 24_001)]
    )
    # the part below -2000 eV by adaptive quadrature: the tails of the Pearson VII
    # (|u|^-2.8), the Voigt's Lorentzian and the DS fast side (|v|^(alpha-2)) reach there
    below = integrate.quad(
        lambda t: peak_sum(np.array([t]), model, params)[0], -np.inf, -2000.0, epsrel=1e-10
    )[0]
    values = peak_sum(fine, model, params)
    cumulative = below + integrate.cumulative_trapezoid(values, fine, initial=0.0)
    reference = 3.0 + 0.2 * cumulative[400_000::200]
    assert np.allclose(fine[400_000::200], X, rtol=1e-15)
    value = np.asarray(baseline_curve(X, model, params))
    step = 0.2 * (cumulative[-1] - below)
    np.testing.assert_allclose(value, reference, rtol=0, atol=2e-6 * step)


def test_tougaard_is_the_kernel_convolution_by_adaptive_quadrature():
    model = peak_model(SHAPES, "tougaard")
    points = X[::12]
    value = np.asarray(baseline_curve(points, model, TOUGAARD))

    def integrand(source, x):
        t = x - source
        kernel = 2866.0 * t / (TOUGAARD_C + t**2) ** 2
        return kernel * peak_sum(np.array([source]), model, TOUGAARD)[0]

    reference = [
        20.0
        + integrate.quad(
            integrand, -np.inf, x, args=(x,), points=None, epsabs=0, epsrel=1e-11, limit=500
        )[0]
        if x < 284
        else 20.0
        + integrate.quad(integrand, 270.0, x, args=(x,), epsabs=0, epsrel=1e-11, limit=500)[0]
        + integrate.quad(integrand, -np.inf, 270.0, args=(x,), epsabs=0, epsrel=1e-11)[0]
        for x in points
    ]
    np.testing.assert_allclose(value, reference, rtol=1e-7)


def test_background_does_not_depend_on_the_order_of_x():
    for background, params in (("shirley", SHIRLEY), ("tougaard", TOUGAARD)):
        model = peak_model(SHAPES, background)
        order = np.random.default_rng(0).permutation(X.size)
        sorted_values = np.asarray(baseline_curve(X, model, params))
        np.testing.assert_allclose(
            np.asarray(baseline_curve(X[order], model, params)), sorted_values[order], rtol=1e-13
        )
        np.testing.assert_allclose(
            np.asarray(baseline_curve(X[::-1], model, params)), sorted_values[::-1], rtol=1e-13
        )
        # steps up toward higher x (binding energy), from the offset below the peaks
        assert np.all(np.diff(sorted_values) >= -1e-12)
        assert sorted_values[0] == pytest.approx(20.0, abs=0.5)


def test_backgrounds_agree_with_lmfitxps_up_to_its_discretization():
    """lmfitxps sums over the points in kinetic-energy order (x descending here): its
    Shirley ``k' cumsum`` with k' = k dx is ours plus k dx P(x)/2 (the point itself) and
    k dx^2 P'(x)/12 (Euler-Maclaurin); its Tougaard uses dx = range/M instead of range/(M-1). lmfitxps sums over the
    data only, ours integrates from -inf: two Gaussians well inside the range, whose tails
    beyond it are nil, make the two the same integral."""
    backgrounds = pytest.importorskip("lmfitxps.backgrounds")
    x = np.linspace(275.0, 305.0, 1201)
    dx = x[1] - x[0]
    params = {
        "peak0_height": 50.0,
        "peak0_center": 285.0,
        "peak0_sigma": 0.6,
        "peak1_height": 80.0,
        "peak1_center": 289.5,
        "peak1_sigma": 0.5,
        "baseline_offset": 20.0,
    }
    model = peak_model(("gaussian", "gaussian"), "shirley")
    params_shirley = {**params, "baseline_step": 0.12}
    peaks = peak_sum(x, model, params_shirley)
    ours = np.asarray(baseline_curve(x, model, params_shirley))
    raw = backgrounds.shirley(peaks[::-1], 0.12 * dx, 20.0)[::-1]
    step = ours[-1] - ours[0]
    # Euler-Maclaurin: the sum is the integral plus k dx P/2 + k dx^2 P'/12 + O(dx^4)
    slope = np.gradient(peaks, dx)
    theirs = raw - 0.12 * dx * peaks / 2 - 0.12 * dx**2 * slope / 12
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6 * step)
    # the half point is real: without it they differ by far more than the tolerance
    assert np.max(np.abs(ours - raw)) > 100 * 1e-5 * step

    model = peak_model(("gaussian", "gaussian"), "tougaard")
    ours = np.asarray(baseline_curve(x, model, {**params, "baseline_b": 2866.0})) - 20.0
    kinetic = -x[::-1]
    theirs = backgrounds.tougaard(kinetic, peaks[::-1], 2866.0, TOUGAARD_C, 1.0, 0.0)[::-1]
    theirs = theirs * x.size / (x.size - 1)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * np.max(ours))


def test_shirley_and_tougaard_functions_match_the_model_and_differentiate():
    model = peak_model(SHAPES, "shirley")
    peaks = pairs(model, SHIRLEY)
    np.testing.assert_allclose(
        np.asarray(shirley(X, 20.0, 0.12, peaks)),
        np.asarray(baseline_curve(X, model, SHIRLEY)),
        rtol=1e-14,
    )
    # derivatives of the background at one point by every parameter: finite differences
    for background, params in (("shirley", SHIRLEY), ("tougaard", TOUGAARD)):
        model = peak_model(SHAPES, background)
        names = model.parameter_names

        def at(vector, point, model=model, names=names):
            values = dict(zip(names, vector, strict=True))
            return baseline_curve(jnp.asarray([point]), model, values)[0]

        vector = np.array([params[name] for name in names])
        gradient = np.asarray(jax.grad(at)(jnp.asarray(vector), 292.0))
        for index in range(len(names)):
            step = 1e-6 * max(1.0, abs(vector[index]))
            up, down = vector.copy(), vector.copy()
            up[index] += step
            down[index] -= step
            numerical = (float(at(up, 292.0)) - float(at(down, 292.0))) / (2 * step)
            assert gradient[index] == pytest.approx(numerical, rel=1e-5, abs=1e-7), names[index]
    gaussian_only = [(get_lineshape("gaussian"), (50.0, 285.0, 0.6))]
    assert float(tougaard(200.0, 1.0, 2866.0, gaussian_only)) == 1.0  # nothing below


# -- fits ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shirley_fit():
    y = spectrum("shirley", SHIRLEY, seed=3)
    order = np.argsort(-X)  # binding energy descending, as instruments often write it
    return y, fit_peaks(X[order], y[order], peaks=SHAPES, baseline="shirley")


def test_shirley_fit_recovers_the_truth_within_its_standard_errors(shirley_fit):
    _, fit = shirley_fit
    assert fit.converged
    for name, value in SHIRLEY.items():
        z = (fit.params[name] - value) / fit.stderr[name]
        assert abs(z) < 4, (name, fit.params[name], value, fit.stderr[name])
    assert fit.redchi == pytest.approx(NOISE**2, rel=0.3)
    assert "peak1_area" not in fit.params  # the DS area diverges
    assert fit.params["peak1_fwhm"] > 2 * fit.params["peak1_gamma"]  # the tail widens it


def test_integrals_of_the_new_lineshapes_are_their_curves_quadrature(shirley_fit):
    """PeakFit.integrate on a Doniach-Sunjic peak (closed form) over a finite range is
    scipy's adaptive quadrature of the fitted peak; its infinite integral diverges."""
    from scipy.integrate import quad

    _, fit = shirley_fit
    names = fit.model.peak_parameter_names(1)
    shape = get_lineshape("doniach_sunjic")
    values = [fit.params[name] for name in names]
    a, b = float(X.min()), float(X.max())
    result = fit.integrate(a, b, peaks=[1])
    assert result.method == "closed form (complex power)"
    expected, _ = quad(lambda t: float(shape.profile_fn(t, *values)), a, b, limit=200, epsabs=1e-12)
    assert float(result.value) == pytest.approx(expected, rel=1e-8)
    assert np.isfinite(result.stderr) and result.stderr > 0
    with pytest.raises(ValueError, match="baseline"):
        fit.integrate(a, b, baseline=True)


def test_shirley_fit_is_the_optimum_of_an_independent_least_squares(shirley_fit):
    """scipy's least_squares (trust region, numerical Jacobian) on the same curve, started
    from the fit, finds no lower RSS; started from the truth, it lands on the same point."""
    y, fit = shirley_fit
    model = peak_model(SHAPES, "shirley")
    names = model.parameter_names
    curve = jax.jit(lambda vector: mean_curve(X, model, dict(zip(names, vector, strict=True))))

    def residuals(vector):
        return np.asarray(curve(jnp.asarray(vector))) - y

    start = np.array([SHIRLEY[name] for name in names])
    result = optimize.least_squares(residuals, start, x_scale="jac", xtol=1e-14, ftol=1e-14)
    assert fit.rss <= result.cost * 2 * (1 + 1e-9)
    got = np.array([fit.params[name] for name in names])
    errors = np.array([fit.stderr[name] for name in names])
    np.testing.assert_allclose((got - result.x) / errors, 0.0, atol=1e-3)


def test_shirley_fit_agrees_with_lmfit_and_lmfitxps_on_the_same_spectrum(shirley_fit):
    """lmfit with lmfitxps's (discrete) Shirley of the peak sum, same spectrum. lmfitxps
    integrates from the data's low end, ours from -inf: its offset is our background at
    X[0] (the DS tail below the data is already there). The optima agree within a tenth of
    a standard error, and ours is at least as good on our curve."""
    lmfit = pytest.importorskip("lmfit")
    backgrounds = pytest.importorskip("lmfitxps.backgrounds")
    y, fit = shirley_fit
    dx = X[1] - X[0]

    def curve(x, h0, c0, s0, h1, c1, g1, a1, offset, k):
        gauss = lmfit.lineshapes.gaussian(x, h0 * s0 * np.sqrt(2 * np.pi), c0, s0)
        s_max = float(doniach_sunjic_peak_shape(a1)[1])
        ds = lmfit.lineshapes.doniach(2 * c1 - x, h1 * g1 ** (1 - a1) / s_max, c1, g1, a1)
        peaks = gauss + ds
        return peaks + backgrounds.shirley(peaks[::-1], k * dx, offset)[::-1] - k * dx * peaks / 2

    lmfit_model = lmfit.Model(curve)
    start = dict(zip(lmfit_model.param_names, SHIRLEY.values(), strict=True))
    params = lmfit_model.make_params(**start)
    params["a1"].set(min=0.0, max=0.99)
    result = lmfit_model.fit(y, params, x=X)
    values = [result.params[n].value for n in lmfit_model.param_names]
    theirs = dict(zip(SHIRLEY, values, strict=True))
    model = peak_model(SHAPES, "shirley")
    low_end = float(baseline_curve(X[:1], model, fit.params)[0])
    assert abs(low_end - theirs["baseline_offset"]) < 0.1 * fit.stderr["baseline_offset"]
    for name in (n for n in SHIRLEY if n != "baseline_offset"):
        assert abs(fit.params[name] - theirs[name]) < 0.1 * fit.stderr[name], name
    below = float(baseline_curve(X[:1], model, {**theirs, "baseline_offset": 0.0})[0])
    theirs["baseline_offset"] -= below  # their parameters in our terms
    ours_at_theirs = np.sum((y - np.asarray(mean_curve(X, model, theirs))) ** 2)
    assert fit.rss <= ours_at_theirs * (1 + 1e-9)
    assert fit.rss == pytest.approx(result.chisqr, rel=1e-3)


def test_tougaard_fit_with_pearson7_recovers_the_truth():
    shapes = ("pearson7", "lorentzian")
    truth = {
        "peak0_height": 50.0,
        "peak0_center": 285.0,
        "peak0_sigma": 0.8,
        "peak0_exponent": 1.8,
        "peak1_height": 80.0,
        "peak1_center": 289.5,
        "peak1_gamma": 0.4,
        "baseline_offset": 20.0,
        "baseline_b": 2866.0,
    }
    model = peak_model(shapes, "tougaard")
    y = np.asarray(mean_curve(X, model, truth))
    y = y + np.random.default_rng(5).normal(0.0, NOISE, X.size)
    fit = fit_peaks(X, y, peaks=shapes, baseline="tougaard")
    assert fit.converged
    for name, value in truth.items():
        z = (fit.params[name] - value) / fit.stderr[name]
        assert abs(z) < 4, (name, fit.params[name], value, fit.stderr[name])
    assert fit.params["peak0_area"] == pytest.approx(
        float(
            get_lineshape("pearson7").area_fn(
                *[fit.params[f"peak0_{p}"] for p in ("height", "center", "sigma", "exponent")]
            )
        )
    )
    whole = fit.integrate(-np.inf, np.inf, peaks=[0])
    assert "quadrature" in whole.method
    assert float(whole.value) == pytest.approx(fit.params["peak0_area"], rel=1e-8)
    assert float(whole.stderr) == pytest.approx(fit.stderr["peak0_area"], rel=1e-4)


@pytest.mark.slow
def test_nuts_samples_a_shirley_fit_and_agrees_with_laplace():
    """A small NUTS run on one Gaussian on a Shirley background: the posterior means lie
    within 4 posterior sd of the truth and the posterior sd within 35 % of the Laplace
    standard errors (the posterior is close to normal with 121 points)."""
    truth = {
        "peak0_height": 50.0,
        "peak0_center": 288.0,
        "peak0_sigma": 0.8,
        "baseline_offset": 20.0,
        "baseline_step": 0.12,
    }
    model = peak_model(("gaussian",), "shirley")
    y = np.asarray(mean_curve(X, model, truth))
    y = y + np.random.default_rng(11).normal(0.0, NOISE, X.size)
    laplace = fit_peaks(X, y, peaks=("gaussian",), baseline="shirley")
    nuts = fit_peaks(
        X,
        y,
        peaks=("gaussian",),
        baseline="shirley",
        backend="mcmc",
        init=laplace.params,
        num_warmup=200,
        num_samples=300,
        num_chains=1,
        progress_bar=False,
    )
    diverging = int(np.asarray(nuts.posterior["sample_stats"]["diverging"]).sum())
    assert diverging == 0
    for name, value in truth.items():
        assert abs(nuts.params[name] - value) < 4 * nuts.stderr[name], name
        assert nuts.stderr[name] == pytest.approx(laplace.stderr[name], rel=0.35), name


# -- hostile input ---------------------------------------------------------------------


@pytest.mark.slow
def test_duplicate_x_and_a_descending_axis_fit_like_the_sorted_one(shirley_fit):
    """Every point twice: the same optimum; the Laplace errors scale by
    sqrt((n - p) / (2n - p)) (the noise is estimated as RSS / (n - p))."""
    y, fit = shirley_fit
    n, p = X.size, len(SHIRLEY)
    doubled = fit_peaks(
        np.concatenate([X, X]), np.concatenate([y, y]), peaks=SHAPES, baseline="shirley"
    )
    for name in SHIRLEY:
        assert doubled.params[name] == pytest.approx(fit.params[name], rel=1e-5, abs=1e-7)
        expected = fit.stderr[name] * np.sqrt((n - p) / (2 * n - p))
        assert doubled.stderr[name] == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fixed": {"peak1_alpha": 1.0}}, r"peak1_alpha = 1 is outside .* must lie in \[0, 1\)"),
        ({"fixed": {"peak1_alpha": -0.1}}, r"must lie in \[0, 1\)"),
        ({"init": {"peak1_alpha": 1.5}}, "peak1_alpha"),
        ({"peaks": ("pearson7",), "fixed": {"peak0_exponent": 0.5}}, r"must be > 0\.5"),
        ({"peaks": ("pearson7",), "init": {"peak0_exponent": 0.3}}, "peak0_exponent"),
        ({"baseline": "shirly"}, "'shirley', 'tougaard'"),
        ({"peaks": ("doniach",)}, "Unknown lineshape 'doniach'"),
    ],
)
def test_bad_xps_options_are_value_errors(kwargs, match):
    options = {"peaks": SHAPES, "baseline": "shirley", **kwargs}
    with pytest.raises(ValueError, match=match):
        fit_peaks(X, np.ones(X.size), **options)


def test_a_prior_off_the_exponent_support_names_the_site():
    import numpyro.distributions as dist

    with pytest.raises(ValueError, match=r"peak0_exponent lives on \(1/2, infinity\)"):
        fit_peaks(
            X, np.ones(X.size), peaks=("pearson7",), priors={"peak0_exponent": dist.HalfNormal(3.0)}
        )


def test_too_few_points_for_the_background_parameters():
    with pytest.raises(ValueError, match="8 usable points for 9 free parameters"):
        fit_peaks(X[:8], np.ones(8), peaks=SHAPES, baseline="shirley")


def test_shirley_on_a_spectrum_without_peaks_finds_no_step():
    """No peak in the data: the peak fits the largest noise spike, the step is consistent
    with zero, everything stays finite; the background's integral is refused clearly."""
    y = 20.0 + np.random.default_rng(2).normal(0.0, NOISE, X.size)
    fit = fit_peaks(X, y, peaks=("gaussian",), baseline="shirley")
    assert all(np.isfinite(value) for value in fit.params.values())
    assert all(np.isfinite(value) for value in fit.stderr.values())
    assert abs(fit.params["baseline_step"]) < 3 * fit.stderr["baseline_step"]
    assert fit.params["baseline_offset"] == pytest.approx(20.0, abs=3 * NOISE / np.sqrt(X.size))
    curve = fit.predict()
    assert np.mean(np.abs(curve - 20.0)) < 0.3 * NOISE
    with pytest.raises(ValueError, match="integral of a Shirley or Tougaard background"):
        fit.integrate(281.0, 295.0, baseline=True)


@pytest.mark.parametrize("x64", [True, False])
@pytest.mark.parametrize("baseline", ["shirley", "tougaard"])
def test_default_priors_on_host_are_the_programs_for_the_xps_kinds(x64, baseline):
    """The host twin of the default priors (used by the start and bound checks) gives the
    program's boxes for the exponent, the asymmetry, the offset, the step and B."""
    import numpyro.distributions as dist

    from gaussmix.models.peaks import default_priors
    from gaussmix.peaks.checks import default_priors_on_host

    model = peak_model(("pearson7", "doniach_sunjic"), baseline)
    with jax.enable_x64(x64):
        for x_range, y_range in [((280.0, 296.0), (1.0, 90.0)), ((-3.0, 1e-3), (-5.0, -1.0))]:
            expected = default_priors(model, x_range, y_range)
            got = default_priors_on_host(model, x_range, y_range)
            assert list(got) == list(expected)
            for name, prior in expected.items():
                fields = ("low", "high") if isinstance(prior, dist.Uniform) else ("scale",)
                for field in fields:
                    want = np.asarray(getattr(prior, field))
                    have = np.asarray(getattr(got[name], field))
                    assert have.dtype == want.dtype, (name, field)
                    np.testing.assert_allclose(
                        have, want, rtol=2 * np.finfo(want.dtype).eps, err_msg=f"{name}.{field}"
                    )
    priors = default_priors(model, (280.0, 296.0), (1.0, 90.0))
    assert float(priors["peak0_exponent"].low) == 0.5
    assert float(priors["peak1_alpha"].high) < 1.0
