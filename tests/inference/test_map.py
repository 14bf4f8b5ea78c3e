"""The Levenberg-Marquardt MAP back end: NIST StRD, curve_fit, batches, masks, families."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from scipy import optimize, stats

from gaussmix.inference.map import batch as map_batch
from gaussmix.inference.map import fit_map
from gaussmix.models.peaks import peaks

TWO_GAUSSIANS = functools.partial(peaks, lineshapes=("gaussian", "gaussian"))
NIST_MODEL = functools.partial(peaks, lineshapes=("gaussian", "gaussian"), baseline="exponential")
THREE_ON_A_LINE = functools.partial(peaks, lineshapes=("gaussian",) * 3, baseline="linear")
NAMES = ["peak0_height", "peak0_center", "peak0_sigma", "peak1_height", "peak1_center"]
NAMES.append("peak1_sigma")


def two_gaussians(x, h1, c1, s1, h2, c2, s2):
    return h1 * np.exp(-0.5 * ((x - c1) / s1) ** 2) + h2 * np.exp(-0.5 * ((x - c2) / s2) ** 2)


def two_gaussians_jacobian(x, *p):
    columns = []
    for h, c, s in (p[:3], p[3:]):
        e = np.exp(-0.5 * ((x - c) / s) ** 2)
        columns += [e, h * e * (x - c) / s**2, h * e * (x - c) ** 2 / s**3]
    return np.stack(columns, axis=1)


# -- the reference two-Gaussian example ------------------------------------------------


def test_two_gaussian_example_reaches_curve_fits_optimum_and_pcov():
    x = np.arange(10.0)
    y = np.array([0.0, 1, 2, 3, 4, 5, 4, 3, 2, 1])
    start = [3.0, 3.0, 1.0, 4.0, 6.0, 1.0]
    # curve_fit (MINPACK lmder) from the same start, then polished to machine precision.
    p, _ = optimize.curve_fit(two_gaussians, x, y, p0=start, jac=two_gaussians_jacobian)
    p, pcov = optimize.curve_fit(
        two_gaussians, x, y, p0=p, jac=two_gaussians_jacobian, ftol=1e-15, xtol=1e-15
    )
    init = dict(zip(NAMES, start, strict=True)) | {"sigma": 1.0}
    result = fit_map(TWO_GAUSSIANS, x, y, init, tol=1e-14, step_tol=1e-14)
    assert bool(result.converged)
    assert result.parameter_names == tuple(NAMES)
    got = np.array([float(result.params[n]) for n in NAMES])
    standard_errors = np.sqrt(np.diag(pcov))
    # A flat valley (peak1 is barely determined): compare in units of the standard errors.
    np.testing.assert_allclose((got - p) / standard_errors, 0.0, atol=1e-6)
    rss = np.sum((y - two_gaussians(x, *p)) ** 2)
    assert float(result.rss) == pytest.approx(rss, rel=1e-10)
    scale = np.sqrt(np.outer(np.diag(pcov), np.diag(pcov)))
    np.testing.assert_allclose(np.asarray(result.covariance) / scale, pcov / scale, atol=1e-5)


# -- NIST StRD Gauss1-3 ----------------------------------------------------------------


def read_nist(path):
    lines = path.read_text().splitlines()
    starts, certified, deviations = [[], []], [], []
    rss = None
    for line in lines:
        match = re.match(r"\s*b(\d)\s*=\s*(\S+)\s+(\S+)\s+(\S+)\s+(\S+)", line)
        if match:
            starts[0].append(float(match[2]))
            starts[1].append(float(match[3]))
            certified.append(float(match[4]))
            deviations.append(float(match[5]))
        if line.strip().startswith("Residual Sum of Squares"):
            rss = float(line.split()[-1])
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("Data:   y"))
    table = np.array(
        [[float(v) for v in line.split()] for line in lines[first + 1 :] if line.strip()]
    )
    return table[:, 1], table[:, 0], starts, np.array(certified), np.array(deviations), rss


# y = b1 exp(-b2 x) + b3 exp(-(x - b4)^2 / b5^2) + b6 exp(-(x - b7)^2 / b8^2): b5 = sqrt(2) sigma.
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


@pytest.mark.parametrize("name", ["Gauss1", "Gauss2", "Gauss3"])
def test_nist_certified_values_from_both_starts(shared_data, name):
    x, y, starts, certified, deviations, certified_rss = read_nist(
        shared_data("nist", f"{name}.dat")
    )
    for start in starts:
        init = {
            site: value * factor for (site, factor), value in zip(NIST_SITES, start, strict=True)
        }
        result = fit_map(NIST_MODEL, x, y, init | {"sigma": 1.0})
        assert bool(result.converged)
        values = np.array([float(result.params[s]) / f for s, f in NIST_SITES])
        # NIST certifies 11 significant digits (rounding 5e-11). The fit stops at the
        # default tolerance (relative decrease 1e-10: within sqrt(1e-10 (n - p)) = 1.6e-4
        # standard errors of the optimum at worst), but Levenberg-Marquardt converges
        # quadratically: measured over both starts of Gauss1-3, values 1.7e-8 relative
        # (Gauss3, start 2), RSS 2.5e-11 (Gauss2) and standard errors 3.4e-8 (Gauss3,
        # start 2; they move with the values through the Jacobian). Bounds 10x.
        np.testing.assert_allclose(values, certified, rtol=2e-7)
        assert float(result.rss) == pytest.approx(certified_rss, rel=3e-10)
        index = [result.parameter_names.index(s) for s, _ in NIST_SITES]
        errors = np.sqrt(np.diag(np.asarray(result.covariance)))[index]
        errors /= np.array([f for _, f in NIST_SITES])
        np.testing.assert_allclose(errors, deviations, rtol=4e-7)


# -- batches, masks, compilation -------------------------------------------------------


def three_peak_spectra(n_spectra, seed=0):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 100.0, 200)
    truth = np.column_stack(
        [
            rng.uniform(5, 10, n_spectra),
            rng.uniform(20, 30, n_spectra),
            rng.uniform(3, 5, n_spectra),
            rng.uniform(5, 10, n_spectra),
            rng.uniform(45, 55, n_spectra),
            rng.uniform(3, 5, n_spectra),
            rng.uniform(5, 10, n_spectra),
            rng.uniform(70, 80, n_spectra),
            rng.uniform(3, 5, n_spectra),
            rng.uniform(0, 2, n_spectra),
            rng.uniform(-0.01, 0.01, n_spectra),
        ]
    )
    curve = truth[:, 9:10] + truth[:, 10:11] * x
    for k in range(3):
        h, c, s = (
            truth[:, 3 * k : 3 * k + 1],
            truth[:, 3 * k + 1 : 3 * k + 2],
            truth[:, 3 * k + 2 : 3 * k + 3],
        )
        curve = curve + h * np.exp(-0.5 * ((x - c) / s) ** 2)
    y = curve + 0.3 * rng.normal(size=curve.shape)
    start = truth * (1 + rng.uniform(-0.1, 0.1, truth.shape))
    names = [f"peak{k}_{p}" for k in range(3) for p in ("height", "center", "sigma")]
    names += ["baseline_c0", "baseline_c1"]
    init = {n: start[:, i] for i, n in enumerate(names)} | {"sigma": np.ones(n_spectra)}
    return x, y, init


@pytest.fixture(scope="module")
def batch():
    """Five spectra and their batched fit (two slots, so finished slots refill)."""
    x, y, init = three_peak_spectra(5)
    return x, y, init, fit_map(THREE_ON_A_LINE, x, y, init, batch_size=2)


def test_batched_fit_equals_one_by_one_and_does_not_recompile(batch):
    x, y, init, result = batch
    assert result.covariance.shape == (5, 11, 11)
    assert np.all(np.asarray(result.converged))
    for i in range(5):
        one = fit_map(THREE_ON_A_LINE, x, y[i], {n: v[i] for n, v in init.items()})
        for name in result.params:
            assert float(one.params[name]) == pytest.approx(float(result.params[name][i]), rel=1e-9)
        assert float(one.rss) == pytest.approx(float(result.rss[i]), rel=1e-12)
    compiled = map_batch._fit_batch_program_for.cache_size()
    fit_map(THREE_ON_A_LINE, x, y + 0.01, init, batch_size=2)
    assert map_batch._fit_batch_program_for.cache_size() == compiled


def test_a_batch_of_little_work_runs_the_program_compiled_with_fewer_optimizations(
    batch, monkeypatch
):
    """Spectra x points x parameters below 1e6: compile time, not run time, is the cost,
    so the fit runs the program compiled at XLA optimization level 0."""
    x, y, init, result = batch
    programs, chosen = map_batch._fit_batch_program_for, []

    def spy(work):
        chosen.append((work, programs(work).compiler_options))
        return programs(work)

    monkeypatch.setattr(map_batch, "_fit_batch_program_for", spy)
    again = fit_map(THREE_ON_A_LINE, x, y, init, batch_size=2)
    assert chosen == [(y.size * 11, {"xla_backend_optimization_level": 0})]  # 11 curve sites
    np.testing.assert_array_equal(np.asarray(again.rss), np.asarray(result.rss))


def test_active_spectra_alone_are_fitted_through_the_same_compilation(batch):
    x, y, init, result = batch
    active = np.array([False, True, False, True, True])
    compiled = map_batch._fit_batch_program_for.cache_size()
    subset = fit_map(THREE_ON_A_LINE, x, y, init, batch_size=2, active=active)
    assert map_batch._fit_batch_program_for.cache_size() == compiled
    for name, values in subset.params.items():
        np.testing.assert_allclose(
            np.asarray(values)[active], np.asarray(result.params[name])[active], rtol=1e-12
        )
        assert np.all(np.isnan(np.asarray(values)[~active]))
    np.testing.assert_array_equal(
        np.asarray(subset.n_iter)[active], np.asarray(result.n_iter)[active]
    )
    assert np.all(np.asarray(subset.n_iter)[~active] == 0)
    assert not np.any(np.asarray(subset.converged)[~active])
    assert np.all(np.isnan(np.asarray(subset.covariance)[~active]))
    with pytest.raises(ValueError, match=r"one boolean per spectrum, shape \(5,\)"):
        fit_map(THREE_ON_A_LINE, x, y, init, active=np.ones(4, bool))


def test_batched_fit_reaches_curve_fits_optimum(batch):
    x, y, init, result = batch
    names = [f"peak{k}_{p}" for k in range(3) for p in ("height", "center", "sigma")]
    names += ["baseline_c0", "baseline_c1"]

    def curve(x, *p):
        value = p[9] + p[10] * x
        for k in range(3):
            value = value + p[3 * k] * np.exp(-0.5 * ((x - p[3 * k + 1]) / p[3 * k + 2]) ** 2)
        return value

    for i in range(5):
        start = [init[n][i] for n in names]
        reference, _ = optimize.curve_fit(curve, x, y[i], p0=start)
        rss = np.sum((y[i] - curve(x, *reference)) ** 2)
        assert float(result.rss[i]) == pytest.approx(rss, rel=1e-7)
        assert float(result.rss[i]) <= rss * (1 + 1e-12)


def test_mask_equals_dropping_the_points(batch):
    x, y, init, result = batch
    y, init = y[0], {n: v[0] for n, v in init.items()}
    keep = np.ones(x.size, bool)
    keep[::7] = False
    masked = fit_map(THREE_ON_A_LINE, x, np.where(keep, y, np.nan), init, mask=keep)
    assert bool(masked.converged) and float(masked.n_points) == keep.sum()
    names = list(masked.parameter_names)

    def curve(x, *p):
        value = p[9] + p[10] * x
        for k in range(3):
            value = value + p[3 * k] * np.exp(-0.5 * ((x - p[3 * k + 1]) / p[3 * k + 2]) ** 2)
        return value

    start = [float(masked.params[n]) for n in names]
    reference, pcov = optimize.curve_fit(curve, x[keep], y[keep], p0=start, ftol=1e-14, xtol=1e-14)
    errors = np.sqrt(np.diag(pcov))
    np.testing.assert_allclose((np.array(start) - reference) / errors, 0.0, atol=1e-5)
    np.testing.assert_allclose(np.diag(masked.covariance), np.diag(pcov), rtol=1e-5)
    assert not np.isclose(float(masked.rss), float(result.rss[0]))


def test_non_converged_spectra_are_flagged(batch):
    x, y, init, _ = batch
    result = fit_map(THREE_ON_A_LINE, x, y, init, max_iter=2, batch_size=2)
    assert not np.any(np.asarray(result.converged))
    assert np.all(np.asarray(result.n_iter) == 2)


def test_float32_fit_stays_close_to_float64(batch):
    x, y, init, reference = batch
    with jax.enable_x64(False):
        single = fit_map(THREE_ON_A_LINE, x, y, init, batch_size=2)
    assert single.covariance.dtype == jnp.float32
    assert np.all(np.asarray(single.converged))
    np.testing.assert_allclose(np.asarray(single.rss), np.asarray(reference.rss), rtol=1e-4)


# -- other programs and likelihoods ----------------------------------------------------


def line(x, y, *, scale=1.0):
    slope = numpyro.sample("slope", dist.Normal(0.0, 2.0))
    intercept = numpyro.sample("intercept", dist.Normal(1.0, 3.0))
    with numpyro.plate("points", x.shape[0]):
        numpyro.sample("y", dist.Normal(intercept + slope * x, scale), obs=y)


def test_conjugate_linear_model_gives_the_exact_posterior_mode_and_covariance():
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 2, 30)
    y = 0.5 + 1.5 * x + 0.7 * rng.normal(size=x.size)
    result = fit_map(line, x, y, {"slope": 0.0, "intercept": 0.0}, model_kwargs={"scale": 0.7})
    design = np.column_stack([x, np.ones_like(x)])
    precision = design.T @ design / 0.49 + np.diag([1 / 4, 1 / 9])
    mode = np.linalg.solve(precision, design.T @ y / 0.49 + np.array([0.0, 1.0 / 9]))
    assert float(result.params["slope"]) == pytest.approx(mode[0], rel=1e-10)
    assert float(result.params["intercept"]) == pytest.approx(mode[1], rel=1e-10)
    # A fixed noise scale is known: the covariance is the posterior's (absolute_sigma).
    np.testing.assert_allclose(result.covariance, np.linalg.inv(precision), rtol=1e-10)


FLAT = dist.ImproperUniform(constraints.real, (), ())
POSITIVE = dist.ImproperUniform(constraints.positive, (), ())


def one_gaussian_counts(seed=0):
    x = np.linspace(0.0, 10.0, 60)
    counts = np.random.default_rng(seed).poisson(20 * np.exp(-0.5 * ((x - 4.0) / 1.2) ** 2) + 2)
    return x, counts.astype(float)


def test_poisson_map_is_the_maximum_likelihood_of_scipy():
    x, counts = one_gaussian_counts()
    model = functools.partial(
        peaks, lineshapes=("gaussian",), baseline="constant", likelihood="poisson"
    )
    priors = {
        "peak0_height": POSITIVE,
        "peak0_center": FLAT,
        "peak0_sigma": POSITIVE,
        "baseline_c0": POSITIVE,
    }
    init = {"peak0_height": 15.0, "peak0_center": 4.5, "peak0_sigma": 1.0, "baseline_c0": 1.0}
    result = fit_map(model, x, counts, init, model_kwargs={"priors": priors})
    assert bool(result.converged)

    def negative_log_likelihood(p):
        mean = p[0] * np.exp(-0.5 * ((x - p[1]) / p[2]) ** 2) + p[3]
        return -stats.poisson(mean).logpmf(counts).sum()

    reference = optimize.minimize(
        negative_log_likelihood, list(init.values()), method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
    )  # fmt: skip
    got = [float(result.params[n]) for n in init]
    np.testing.assert_allclose(got, reference.x, rtol=1e-5)
    assert float(result.log_likelihood) == pytest.approx(-reference.fun, rel=1e-10)


def test_student_t_map_matches_scipy_on_data_with_outliers():
    rng = np.random.default_rng(2)
    x = np.linspace(0.0, 10.0, 80)
    y = 3 * np.exp(-0.5 * ((x - 5.0) / 1.0) ** 2) + 0.1 * rng.normal(size=x.size)
    y[[10, 40, 70]] += 3.0
    priors = {  # flat on each site's support (a height is positive)
        "peak0_height": POSITIVE,
        "peak0_center": FLAT,
        "peak0_sigma": POSITIVE,
        "sigma": POSITIVE,
    }
    model = functools.partial(peaks, lineshapes=("gaussian",), likelihood="student_t")
    init = {"peak0_height": 2.5, "peak0_center": 4.8, "peak0_sigma": 1.2, "sigma": 0.3}
    result = fit_map(model, x, y, init, model_kwargs={"priors": priors, "degrees_of_freedom": 3.0})
    assert bool(result.converged)

    def negative_log_likelihood(p):
        mean = p[0] * np.exp(-0.5 * ((x - p[1]) / p[2]) ** 2)
        return -stats.t(3.0, mean, p[3]).logpdf(y).sum()

    reference = optimize.minimize(
        negative_log_likelihood, list(init.values()), method="Nelder-Mead",
        options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 20000},
    )  # fmt: skip
    got = [float(result.params[n]) for n in init]
    np.testing.assert_allclose(got, reference.x, rtol=1e-5)
    # The outliers barely move the peak (they would shift a least-squares fit).
    assert float(result.params["peak0_height"]) == pytest.approx(3.0, abs=0.1)


def test_bad_programs_and_starts_are_value_errors():
    x = np.arange(5.0)

    def laplace(x, y):
        slope = numpyro.sample("slope", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Laplace(slope * x, 1.0), obs=y)

    with pytest.raises(ValueError, match="Normal, StudentT or Poisson"):
        fit_map(laplace, x, x, {"slope": 0.0})
    with pytest.raises(ValueError, match=r"missing \['intercept'\]"):
        fit_map(line, x, x, {"slope": 0.0})
    with pytest.raises(ValueError, match="outside the support"):
        positive = functools.partial(peaks, lineshapes=("gaussian",))
        start = {"peak0_height": 1.0, "peak0_center": 2.0, "peak0_sigma": -1.0, "sigma": 1.0}
        fit_map(positive, x, jnp.exp(-((x - 2.0) ** 2)), start)
    with pytest.raises(ValueError, match="same M"):
        fit_map(line, x, x[:-1], {"slope": 0.0, "intercept": 0.0})


# -- failures --------------------------------------------------------------------------


def test_a_failed_start_is_nan_not_zeros_per_spectrum():
    # Beta(2, 2) has density 0 at a fraction of 0: the log posterior is -inf at the start
    # of spectrum 1 (in the support, so no ValueError), finite at that of spectrum 0.
    x = np.linspace(0.0, 10.0, 40)
    y = 3.0 * np.exp(-0.5 * ((x - 5.0) / 0.8) ** 2)
    y = np.stack([y, y]) + 0.05 * np.random.default_rng(0).normal(size=(2, x.size))
    model = functools.partial(peaks, lineshapes=("pseudo_voigt",))
    init = {
        "peak0_height": 3.0,
        "peak0_center": 5.0,
        "peak0_sigma": 0.8,
        "peak0_fraction": np.array([0.5, 0.0]),
        "sigma": 0.1,
    }
    priors = {"peak0_fraction": dist.Beta(2.0, 2.0)}
    result = fit_map(model, x, y, init, model_kwargs={"priors": priors})
    np.testing.assert_array_equal(result.started, [True, False])
    np.testing.assert_array_equal(result.converged, [True, False])
    for value in (result.rss, result.objective, result.log_likelihood, result.decrement):
        assert np.isfinite(value[0]) and np.isnan(value[1])
    for value in result.params.values():
        assert np.isfinite(value[0]) and np.isnan(value[1])
    assert np.all(np.isfinite(result.covariance[0])) and np.all(np.isnan(result.covariance[1]))
    np.testing.assert_array_equal(result.n_points, [x.size, x.size])


def test_a_singular_curvature_is_not_converged():
    # Two identical lines: only their sum is identified.
    def twins(x, y):
        first = numpyro.sample("first", dist.Normal(0.0, 10.0))
        second = numpyro.sample("second", dist.Normal(0.0, 10.0))
        numpyro.sample("y", dist.Normal((first + second) * x, 1.0), obs=y)

    x = np.arange(5.0)
    # With the priors the posterior is proper (its Hessian is not singular): converged.
    proper = fit_map(twins, x, 2.0 * x, {"first": 0.0, "second": 0.0})
    assert bool(proper.converged)

    def flat_twins(x, y):
        flat = dist.ImproperUniform(constraints.real, (), ())
        first = numpyro.sample("first", flat)
        second = numpyro.sample("second", flat)
        numpyro.sample("y", dist.Normal((first + second) * x, 1.0), obs=y)

    singular = fit_map(flat_twins, x, 2.0 * x, {"first": 0.0, "second": 0.0})
    assert not bool(singular.converged)
    assert np.isnan(np.asarray(singular.covariance)).any()


def test_the_program_checks_its_options_before_fitting():
    x = np.linspace(0.0, 10.0, 20)
    model = functools.partial(peaks, lineshapes=("gaussian",))
    init = {"peak0_height": 1.0, "peak0_center": 5.0, "peak0_sigma": 1.0, "sigma": 1.0}
    # model_kwargs stay concrete while the program is probed: bounds are compared.
    priors = {"peak0_sigma": dist.Uniform(-1.0, 2.0)}
    with pytest.raises(ValueError, match=r"priors\['peak0_sigma'\]"):
        fit_map(model, x, np.exp(-0.5 * (x - 5.0) ** 2), init, model_kwargs={"priors": priors})


# -- renamed keywords ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_gaussian_example():
    """The ten-point two-Gaussian example: data, start, and its fit with the defaults."""
    x = np.arange(10.0)
    y = np.array([0.0, 1, 2, 3, 4, 5, 4, 3, 2, 1])
    init = dict(zip(NAMES, [3.0, 3.0, 1.0, 4.0, 6.0, 1.0], strict=True)) | {"sigma": 1.0}
    return x, y, init, fit_map(TWO_GAUSSIANS, x, y, init)


@pytest.mark.parametrize(
    ("old", "new", "value"),
    [
        ("max_iterations", "max_iter", 1),
        ("tolerance", "tol", 1e-2),
        ("step_tolerance", "step_tol", 1e-2),
    ],
)
def test_old_keyword_spellings_warn_and_give_the_same_fit(two_gaussian_example, old, new, value):
    x, y, init, default = two_gaussian_example
    renamed = fit_map(TWO_GAUSSIANS, x, y, init, **{new: value})
    with pytest.warns(FutureWarning) as record:
        deprecated = fit_map(TWO_GAUSSIANS, x, y, init, **{old: value})
    assert [str(w.message) for w in record] == [
        f"fit_map: '{old}' is deprecated and will be removed in a future release; "
        f"use '{new}' instead."
    ]
    assert record[0].filename == __file__  # the warning points at the caller
    # The value travelled: the default fit takes 52 steps, these fewer.
    assert int(renamed.n_iter) < int(default.n_iter)
    # Same compiled fit, same inputs: equal to the last bit.
    jax.tree.map(np.testing.assert_array_equal, deprecated, renamed)


def test_both_spellings_of_a_keyword_with_different_values_are_refused(two_gaussian_example):
    x, y, init, _ = two_gaussian_example
    with pytest.raises(ValueError, match="got both 'max_iter'=3 and its deprecated spelling"):
        fit_map(TWO_GAUSSIANS, x, y, init, max_iter=3, max_iterations=4)
