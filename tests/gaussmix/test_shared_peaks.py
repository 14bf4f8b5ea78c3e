"""fit_peaks(..., shared=...): parameters with one value for the whole batch."""

import numpy as np
import pytest
from scipy import optimize

from gaussmix import fit_peaks


def series(n_spectra=4, seed=0, width=0.7, n_points=50):
    """One Gaussian of fixed width on a constant baseline, heights and centres varying."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, n_points)
    heights = rng.uniform(1.0, 2.0, n_spectra)
    centers = rng.uniform(4.0, 6.0, n_spectra)
    y = heights[:, None] * np.exp(-0.5 * ((x - centers[:, None]) / width) ** 2) + 0.3
    return x, y + 0.03 * rng.normal(size=y.shape), heights, centers


def test_shared_width_shapes_report_and_stacked_optimum():
    x, y, heights, centers = series()
    fit = fit_peaks(x, y, peaks=("gaussian",), baseline="constant", shared=("peak0_sigma", "sigma"))
    assert fit.shared == ("peak0_sigma", "sigma")
    assert set(fit.shared_params) == {"peak0_sigma", "sigma"}
    assert fit.params["peak0_center"].shape == (4,)
    np.testing.assert_array_equal(fit.params["peak0_sigma"], fit.shared_params["peak0_sigma"])
    assert fit.covariance.shape == (4, 4, 4)
    assert fit.shared_covariance.shape == (1, 1)
    assert fit.shared_stderr["peak0_sigma"] == pytest.approx(fit.stderr["peak0_sigma"][0])
    assert np.all(fit.converged)

    # The stacked least-squares problem with one width (independent optimizer).
    def residuals(p):
        own = p[1:].reshape(-1, 3)
        curve = own[:, :1] * np.exp(-0.5 * ((x - own[:, 1:2]) / p[0]) ** 2) + own[:, 2:]
        return (curve - y).ravel()

    start = np.concatenate([[1.0], np.stack([heights, centers, np.full(4, 0.2)], 1).ravel()])
    reference = optimize.least_squares(residuals, start, xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert np.sum(fit.rss) == pytest.approx(np.sum(reference.fun**2), rel=1e-6)
    assert fit.shared_params["peak0_sigma"] == pytest.approx(reference.x[0], rel=1e-6)
    # Derived quantities per spectrum, from the per-spectrum covariance.
    fwhm = 2 * np.sqrt(2 * np.log(2)) * fit.shared_params["peak0_sigma"]
    np.testing.assert_allclose(fit.params["peak0_fwhm"], fwhm, rtol=1e-10)
    assert fit.predict().shape == y.shape
    report = fit.report(2)
    assert "spectrum 2 of 4" in report
    assert any(line.startswith("peak0_sigma") and "shared" in line for line in report.splitlines())
    # AIC counts a shared parameter once over the batch.
    own = 3 * 4 + 1 + 1  # per spectrum height, centre, c0; one width, one noise
    total_log_likelihood = np.sum(fit.log_likelihood)
    assert np.sum(fit.aic) == pytest.approx(-2 * total_log_likelihood + 2 * own)


def test_ties_and_masked_points_keep_working_with_shared():
    x, y, _, _ = series(n_spectra=3, seed=1)
    second = 0.5 * np.exp(-0.5 * ((x - 8.0) / 0.7) ** 2)
    y = y + second
    y_bad = y.copy()
    y_bad[1, 10] = np.nan
    kwargs = dict(peaks=("gaussian", "gaussian"), baseline="constant", shared=("peak0_sigma",))
    init = {"peak1_center": 8.0, "peak1_height": 0.5}
    tied = fit_peaks(x, y_bad, ties={"peak1_sigma": "peak0_sigma"}, nan_policy="omit",
                     init=init, **kwargs)  # fmt: skip
    np.testing.assert_array_equal(tied.params["peak1_sigma"], tied.params["peak0_sigma"])
    assert tied.n_points.tolist() == [50, 49, 50]
    y_other = y_bad.copy()
    y_other[1, 10] = 1e6  # masked: its value must not matter
    mask = np.isfinite(y_bad)
    y_masked = np.where(mask, y_other, np.nan)
    again = fit_peaks(x, y_masked, ties={"peak1_sigma": "peak0_sigma"}, nan_policy="omit",
                      init=init, **kwargs)  # fmt: skip
    assert again.shared_params["peak0_sigma"] == pytest.approx(
        tied.shared_params["peak0_sigma"], rel=1e-12
    )


@pytest.mark.parametrize(
    ("y_index", "kwargs", "message"),
    [
        (0, {"shared": ("peak0_sigma",)}, "needs a batch"),
        (None, {"shared": ("peak1_sigma",), "peaks": ("gaussian", "gaussian"),
                "ties": {"peak1_sigma": "peak0_sigma"}}, "tied to 'peak0_sigma'"),
        (None, {"shared": ("peak0_sigma",), "fixed": {"peak0_sigma": 1.0}}, "fixed"),
        (None, {"shared": ("peak0_width",)}, "unknown parameter 'peak0_width'"),
        (None, {"shared": ("peak0_height", "peak0_center", "peak0_sigma")}, "every curve"),
        (None, {"shared": 3}, "sequence of parameter names"),
    ],
)  # fmt: skip
def test_shared_refuses_bad_names(y_index, kwargs, message):
    x, y, _, _ = series(n_spectra=2)
    y = y if y_index is None else y[y_index]
    kwargs = {"peaks": ("gaussian",), **kwargs}
    with pytest.raises(ValueError, match=message):
        fit_peaks(x, y, **kwargs)


def test_shared_nuts_posterior_agrees_with_the_joint_laplace_approximation():
    """NUTS on the joint posterior (shared width once, the rest plated): near-Gaussian
    here, so the posterior means sit at the MAP and the sds at the Laplace errors (MC
    error about sd / sqrt(ESS) with ESS of a few hundred)."""
    x, y, _, _ = series(n_spectra=3, seed=3, n_points=40)
    options = dict(peaks=("gaussian",), baseline="constant", shared=("peak0_sigma",))
    laplace = fit_peaks(x, y, **options)
    fit = fit_peaks(x, y, backend="mcmc", num_warmup=200, num_samples=200, num_chains=2,
                    progress_bar=False, **options)  # fmt: skip
    import arviz_stats

    assert fit.backend == "mcmc"
    assert int(np.asarray(fit.posterior["sample_stats"]["diverging"]).sum()) == 0
    rhat = arviz_stats.rhat(fit.posterior, var_names=["peak0_sigma", "peak0_center", "sigma"])
    assert max(float(np.asarray(rhat[name]).max()) for name in rhat.data_vars) < 1.05
    assert np.asarray(fit.posterior["posterior"]["peak0_sigma"]).shape == (2, 200)
    assert np.asarray(fit.posterior["posterior"]["peak0_center"]).shape == (2, 200, 3)
    error = laplace.shared_stderr["peak0_sigma"]
    assert (
        abs(fit.shared_params["peak0_sigma"] - laplace.shared_params["peak0_sigma"]) < 0.4 * error
    )
    assert fit.shared_stderr["peak0_sigma"] == pytest.approx(error, rel=0.3)
    for name in ("peak0_center", "peak0_height", "baseline_c0"):
        np.testing.assert_array_less(
            np.abs(fit.params[name] - laplace.params[name]), 0.4 * laplace.stderr[name]
        )
        np.testing.assert_allclose(fit.stderr[name], laplace.stderr[name], rtol=0.3)
    assert fit.covariance.shape == (3, 4, 4)


def test_pooled_map_is_the_marginal_optimum_then_gaussian_conditioning():
    """Pooled MAP: (mu, tau) maximize the marginal likelihood of the unpooled estimates
    (a generic minimizer over (mu, log tau) agrees), and each spectrum is its Laplace
    posterior conditioned on Normal(mu, tau) (the dense precision-form update agrees)."""
    rng = np.random.default_rng(5)
    x = np.linspace(0.0, 10.0, 40)
    centers = 5.0 + 0.08 * rng.normal(size=6)
    y = np.exp(-0.5 * ((x - centers[:, None]) / 0.7) ** 2) + 0.15 * rng.normal(size=(6, 40))
    options = dict(peaks=("gaussian",), baseline="constant")
    free = fit_peaks(x, y, **options)
    fit = fit_peaks(x, y, pooled=("peak0_center",), **options)
    values, errors = free.params["peak0_center"], free.stderr["peak0_center"]

    def marginal(vector):
        mu, tau = vector[0], np.exp(vector[1])
        variance = tau**2 + errors**2
        return 0.5 * np.sum(np.log(variance) + (values - mu) ** 2 / variance)

    reference = optimize.minimize(marginal, [values.mean(), np.log(values.std())],
                                  method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14})  # fmt: skip
    mu, tau = fit.population_params["peak0_center_mu"], fit.population_params["peak0_center_tau"]
    assert tau > 0.01  # a case with partial pooling
    assert marginal([mu, np.log(tau)]) <= reference.fun + 1e-9
    np.testing.assert_allclose([mu, tau], [reference.x[0], np.exp(reference.x[1])], rtol=1e-4)
    names = list(free.parameter_names)
    j = names.index("peak0_center")
    for b in range(6):
        theta = np.array([free.params[name][b] for name in names])
        precision = np.linalg.inv(free.covariance[b])
        added = np.zeros_like(precision)
        added[j, j] = 1 / tau**2
        covariance = np.linalg.inv(precision + added)
        expected = covariance @ (precision @ theta + added[:, j] * mu)
        got = np.array([fit.params[name][b] for name in names])
        np.testing.assert_allclose(got, expected, rtol=1e-8)
        np.testing.assert_allclose(fit.covariance[b], covariance, rtol=1e-6, atol=1e-14)
    # Shrinkage toward mu: every centre moves toward it, none past it.
    before, after = values - mu, fit.params["peak0_center"] - mu
    assert np.all(np.abs(after) < np.abs(before)) and np.all(before * after > 0)
    assert "peak0_center_tau" in fit.report()


def test_population_marginal_pools_completely_when_errors_explain_the_spread():
    from gaussmix.peaks.shared import population_marginal

    values, errors = np.array([1.0, 1.1, 0.95, 1.02]), np.array([0.3, 0.2, 0.4, 0.25])
    mu, tau, mu_error = population_marginal(values, errors)
    weights = 1 / errors**2
    assert tau == 0.0
    assert mu == pytest.approx(np.sum(weights * values) / np.sum(weights), rel=1e-12)
    assert mu_error == pytest.approx(1 / np.sqrt(np.sum(weights)), rel=1e-12)


def test_pooled_refuses_widths_and_names_also_shared():
    x, y, _, _ = series(n_spectra=3, seed=4)
    with pytest.raises(ValueError, match="Normal population would leave its support"):
        fit_peaks(x, y, peaks=("gaussian",), pooled=("peak0_sigma",))
    with pytest.raises(ValueError, match="both shared and pooled"):
        fit_peaks(x, y, peaks=("gaussian",), pooled=("peak0_center",), shared=("peak0_center",))


@pytest.mark.slow
def test_pooled_nuts_is_calibrated_sbc():
    """Simulation-based calibration (Talts et al. 2018) of the pooled program under NUTS
    on a tiny case: 3 spectra of 25 points, one Gaussian whose centre is pooled
    (non-centred), proper user priors elsewhere so that nothing depends on the data. For
    each of M datasets drawn from the prior, the rank of each true value among L
    posterior draws is uniform on {0..L} when program and sampler are right: a
    chi-square test over 5 bins, Bonferroni over the checked quantities; and the same
    test must reject overconfident draws (spread shrunk by 35 %)."""
    import functools

    import jax
    import numpyro.distributions as dist
    from numpyro.infer import Predictive
    from scipy import stats

    from gaussmix.inference.mcmc import sample
    from gaussmix.models.shared_peaks import shared_peaks

    # Ranks are uniform only for (nearly) independent draws (Talts et al. 2018, sec. 5.1):
    # the pooled mean's effective sample size is 6-110 in 99 consecutive draws (median
    # about 30; the hierarchical funnel), so autocorrelated draws give U-shaped ranks
    # (10 of 40 at 0) whatever the program's correctness. Every thin-th of n_draws * thin
    # draws is kept, after a longer warm-up; at NUTS's default target_accept_prob 0.8 one
    # dataset of the 40 diverged on 201 of 495 transitions (well-identified centres: the
    # non-centred funnel), so the run takes the 0.95 the sampler's warning names
    # (then at most 4 divergent transitions of 495 on any dataset).
    n_datasets, n_draws, thin = 40, 99, 5
    x = np.linspace(0.0, 10.0, 25)
    priors = {
        "peak0_height": dist.Normal(2.0, 0.3),
        "peak0_sigma": dist.LogNormal(0.0, 0.2),
        "sigma": dist.LogNormal(np.log(0.3), 0.2),
    }
    program = functools.partial(shared_peaks, lineshapes=("gaussian",), pooled=("peak0_center",))
    truth = Predictive(program, num_samples=n_datasets)(
        jax.random.key(1), x, priors=priors, y_range=(np.zeros(3), np.ones(3)), n_spectra=3
    )
    checked = {
        "mu": lambda t: t["peak0_center_mu"],
        "tau": lambda t: t["peak0_center_tau"],
        "center 0": lambda t: t["peak0_center"][..., 0],
        "sigma 1": lambda t: t["peak0_sigma"][..., 1],
    }
    ranks = {name: [] for name in checked}
    shrunk = {name: [] for name in checked}
    for m in range(n_datasets):
        y = np.asarray(truth["y"][m])
        tree = sample(program, x, y, num_warmup=300, num_samples=n_draws * thin, num_chains=1,
                      seed=m, progress_bar=False, priors=priors,
                      nuts_options={"target_accept_prob": 0.95})  # fmt: skip
        posterior = {name: np.asarray(tree["posterior"][name])[0, ::thin] for name in
                     ("peak0_center_mu", "peak0_center_tau", "peak0_center", "peak0_sigma")}  # fmt: skip
        true = {name: np.asarray(value[m]) for name, value in truth.items()}
        for name, function in checked.items():
            draws, value = function(posterior), function(true)
            ranks[name].append(int(np.sum(draws < value)))
            narrow = draws.mean() + 0.65 * (draws - draws.mean())
            shrunk[name].append(int(np.sum(narrow < value)))

    def p_value(values):
        counts = np.bincount(np.minimum(np.asarray(values) * 5 // (n_draws + 1), 4), minlength=5)
        return stats.chisquare(counts).pvalue

    alpha = 0.001 / len(checked)
    for name in checked:
        assert p_value(ranks[name]) > alpha, (name, sorted(ranks[name]))
    assert min(p_value(shrunk[name]) for name in checked) < 0.05


def spread_series(n_points=40, noise=0.5, seed=11):
    """Three spectra whose y ranges differ 5-fold: per-spectrum and batch-wide default
    priors differ most."""
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 10.0, n_points)
    heights, centers = np.array([1.0, 4.0, 16.0]), np.array([4.5, 5.0, 5.5])
    y = heights[:, None] * np.exp(-0.5 * ((x - centers[:, None]) / 0.8) ** 2) + 0.2
    return x, y + noise * rng.normal(size=y.shape)


def test_shared_noise_map_takes_the_joint_programs_prior_on_the_batch():
    """The MAP of a shared noise maximizes the joint NumPyro program's posterior, whose
    prior on it is HalfNormal(Y) with Y the y range of the whole batch (not the mean of
    each spectrum's HalfNormal(Y_b) log densities, 1e-4 away here). Flat boxes on the
    curve leave its MAP at least squares, so sigma solves d/dsigma [N log sigma + RSS /
    (2 sigma^2) + sigma^2 / (2 Y^2)] = 0: u = sigma^2 is the positive root of
    u^2 / Y^2 + N u - RSS = 0."""
    x, y = spread_series()
    fit = fit_peaks(x, y, peaks=("gaussian",), baseline="constant", shared=("sigma", "peak0_sigma"))
    assert np.all(fit.converged)
    n, rss, spread = y.size, float(np.sum(fit.rss)), float(y.max() - y.min())
    u = (-n + np.sqrt(n**2 + 4.0 * rss / spread**2)) * spread**2 / 2.0
    assert fit.shared_params["sigma"] == pytest.approx(np.sqrt(u), rel=1e-9)
    # The per-spectrum mean (the MAP's default before) would be this far off:
    mean_inverse = np.mean(1.0 / (y.max(axis=1) - y.min(axis=1)) ** 2)
    other = (-n + np.sqrt(n**2 + 4.0 * rss * mean_inverse)) / (2.0 * mean_inverse)
    assert abs(np.sqrt(other) / np.sqrt(u) - 1.0) > 1e-5


@pytest.mark.parametrize(
    ("shared", "pooled"),
    [
        (("peak0_height",), ()),
        (("baseline_c0", "sigma"), ()),
        (("peak0_sigma",), ("peak0_center", "baseline_c0")),
    ],
)
def test_shared_map_objective_is_minus_the_joint_programs_log_density(shared, pooled):
    """At points off the optimum (one step from random starts), the joint MAP's objective
    F equals minus the log density of the joint NumPyro program (``shared_peaks``, the
    NUTS target; all its priors on the constrained scale are the MAP's: no Jacobian),
    to rounding. With pooled sites, the program's log density also holds the population
    (Normal(mu, tau) of each spectrum's value and the hyperpriors on the batch's box,
    written out here by hand) where the MAP, fitted before pooling, holds each
    spectrum's own box."""
    import functools

    import jax
    from numpyro.infer.util import log_density
    from scipy import stats

    from gaussmix.inference.map.shared import fit_shared_map
    from gaussmix.models.peaks import peak_model, peaks
    from gaussmix.models.shared_peaks import shared_peaks
    from gaussmix.peaks.shared import shared_site_priors

    x, y = spread_series(noise=0.3)
    options = dict(lineshapes=("gaussian",), baseline="constant")
    model = peak_model(options["lineshapes"], options["baseline"])
    priors = shared_site_priors(model, x, y, None, shared, None)
    kwargs = {"priors": jax.tree.map(np.asarray, priors)}
    rng = np.random.default_rng(len(shared) + 10 * len(pooled))
    low, high = np.nanmin(y, axis=1), np.nanmax(y, axis=1)  # per spectrum: Y_b, A_b
    box_c0 = 10.0 * (np.maximum(np.abs(low), np.abs(high)) + high - low)
    for _ in range(2):
        start = {
            "peak0_height": rng.uniform(0.5, 3.0, 3),
            "peak0_center": rng.uniform(4.0, 6.0, 3),
            "peak0_sigma": rng.uniform(0.5, 1.5),
            "baseline_c0": rng.uniform(0.0, 0.5, 3),
            "sigma": rng.uniform(0.1, 0.6, 3),
        }
        program = functools.partial(peaks, **options)
        result = fit_shared_map(program, x, y, start, shared, model_kwargs=kwargs, max_iter=1)
        assert result.started
        values = {
            name: result.shared_params[name] if name in shared else result.params[name]
            for name in model.site_names
        }
        expected = -result.objective
        if pooled:
            population = {}
            for name in pooled:
                value = values[name]
                mu, tau = rng.normal(value.mean(), 0.1), rng.uniform(0.1, 1.0)
                population[name + "_mu"], population[name + "_tau"] = mu, tau
                if name == "peak0_center":  # the box: x's range; each spectrum's too
                    a, b = 0.0, 10.0
                    own = np.full(3, -np.log(10.0))
                else:  # baseline_c0: +-10(A + Y) on the batch's y, and on each spectrum's
                    bound = 10.0 * (max(abs(y.min()), abs(y.max())) + y.max() - y.min())
                    a, b = -bound, bound
                    own = -np.log(2.0 * box_c0)
                expected += (
                    np.sum(stats.norm.logpdf(value, mu, tau))
                    - np.sum(own)
                    + stats.norm.logpdf(mu, (a + b) / 2, (b - a) / 2)
                    + stats.halfnorm.logpdf(tau, scale=(b - a) / 4)
                )
            values.update(population)
        joint = functools.partial(shared_peaks, **options, shared=shared, pooled=pooled,
                                  centered=pooled)  # fmt: skip
        density, _ = log_density(joint, (x, y), {}, values)
        assert float(density) == pytest.approx(expected, rel=1e-11, abs=1e-9)
