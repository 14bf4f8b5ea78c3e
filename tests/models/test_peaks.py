"""The peaks program: sites, log density against scipy, default priors, ties, bad input."""

import jax
import numpy as np
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.distributions.distribution import validation_enabled
from numpyro.infer import Predictive
from numpyro.infer.util import log_density
from scipy import stats

from gaussmix.inference import sample
from gaussmix.models.lineshapes import LINESHAPES
from gaussmix.models.peaks import (
    check_fixed,
    check_priors,
    default_priors,
    mean_curve,
    peak_model,
    peaks,
    site_support,
)

X = np.linspace(0.0, 10.0, 41)
PARAMS = {
    "peak0_height": 3.0,
    "peak0_center": 4.0,
    "peak0_sigma": 0.8,
    "peak1_height": 2.0,
    "peak1_center": 6.5,
    "peak1_gamma": 0.5,
    "baseline_c0": 0.5,
    "baseline_c1": 0.1,
    "sigma": 0.2,
}
KWARGS = {"lineshapes": ("gaussian", "lorentzian"), "baseline": "linear"}


def truth_curve(x):
    gaussian = 3.0 * np.exp(-0.5 * ((x - 4.0) / 0.8) ** 2)
    lorentzian = 2.0 / (1 + ((x - 6.5) / 0.5) ** 2)
    return gaussian + lorentzian + 0.5 + 0.1 * x


def data(seed=0):
    return truth_curve(X) + 0.2 * np.random.default_rng(seed).normal(size=X.size)


def trace_of(model_kwargs, params, y):
    return handlers.trace(handlers.substitute(peaks, data=params)).get_trace(X, y, **model_kwargs)


def test_sites_are_named_by_the_contract():
    trace = trace_of(KWARGS, PARAMS, data())
    latent = [n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]]
    assert latent == list(PARAMS)
    deterministic = {n for n, s in trace.items() if s["type"] == "deterministic"}
    assert deterministic == {"peak0_area", "peak0_fwhm", "peak1_area", "peak1_fwhm"}
    assert float(trace["peak0_area"]["value"]) == pytest.approx(3.0 * 0.8 * np.sqrt(2 * np.pi))
    assert float(trace["peak1_fwhm"]["value"]) == pytest.approx(1.0)
    assert trace["y"]["is_observed"]


def test_exponential_baseline_and_voigt_area_sites():
    model = peak_model(("voigt_area",), "exponential")
    assert model.site_names == (
        "peak0_area",
        "peak0_center",
        "peak0_sigma",
        "peak0_gamma",
        "baseline_amplitude",
        "baseline_rate",
        "sigma",
    )
    assert model.derived_names == ("peak0_fwhm", "peak0_height")
    assert peak_model(("gaussian",), 2).site_names[-4:] == (
        "baseline_c0",
        "baseline_c1",
        "baseline_c2",
        "sigma",
    )


def test_log_density_matches_scipy_for_each_likelihood():
    y = data()
    mean = truth_curve(X)
    priors = default_priors(peak_model(**_structure(KWARGS)), (0.0, 10.0), (y.min(), y.max()))
    log_prior = sum(float(priors[n].log_prob(v)) for n, v in PARAMS.items())
    value, _ = log_density(peaks, (X, y), KWARGS, PARAMS)
    expected = stats.norm(mean, 0.2).logpdf(y).sum() + log_prior
    assert float(value) == pytest.approx(expected, rel=1e-12)

    value, _ = log_density(
        peaks, (X, y), {**KWARGS, "likelihood": "student_t", "degrees_of_freedom": 3.0}, PARAMS
    )
    expected = stats.t(3.0, mean, 0.2).logpdf(y).sum() + log_prior
    assert float(value) == pytest.approx(expected, rel=1e-12)

    counts = np.random.default_rng(1).poisson(mean)
    poisson_params = {n: v for n, v in PARAMS.items() if n != "sigma"}
    value, _ = log_density(peaks, (X, counts), {**KWARGS, "likelihood": "poisson"}, poisson_params)
    priors = default_priors(
        peak_model(**_structure(KWARGS)), (0.0, 10.0), (counts.min(), counts.max())
    )
    expected = stats.poisson(mean).logpmf(counts).sum() + sum(
        float(priors[n].log_prob(v)) for n, v in poisson_params.items()
    )
    assert float(value) == pytest.approx(expected, rel=1e-12)


def _structure(kwargs):
    return {"lineshapes": kwargs["lineshapes"], "baseline": kwargs["baseline"]}


def test_mask_drops_points_from_the_likelihood():
    y = data()
    keep = np.ones(X.size, bool)
    keep[[3, 17, 30]] = False
    masked = np.where(keep, y, 1e6)
    y_range = {"y_range": (y.min(), y.max())}  # the same priors with and without the mask
    value, _ = log_density(peaks, (X, masked), {**KWARGS, **y_range, "mask": keep}, PARAMS)
    value_all, _ = log_density(peaks, (X, y), {**KWARGS, **y_range}, PARAMS)
    mean = truth_curve(X)
    dropped = stats.norm(mean[~keep], 0.2).logpdf(y[~keep]).sum()
    assert float(value_all) - float(value) == pytest.approx(dropped, rel=1e-10)


def test_default_priors_respect_the_bounds():
    simulate = jax.jit(
        lambda key: Predictive(peaks, num_samples=500)(key, X, **KWARGS, y_range=(0.0, 5.0))
    )
    draws = simulate(jax.random.key(0))
    assert np.all((draws["peak0_center"] >= 0) & (draws["peak0_center"] <= 10))
    assert np.all((draws["peak1_center"] >= 0) & (draws["peak1_center"] <= 10))
    assert np.all(draws["peak0_sigma"] > 0) and np.all(draws["peak1_gamma"] > 0)
    assert np.all(draws["peak0_height"] > 0) and np.all(draws["sigma"] > 0)
    assert draws["y"].shape == (500, X.size)
    curve = mean_curve(X, peak_model(**_structure(KWARGS)), {n: v[0] for n, v in draws.items()})
    assert curve.shape == X.shape


def test_user_priors_replace_defaults():
    priors = {"peak0_center": dist.Normal(4.0, 0.1), "sigma": dist.HalfCauchy(1.0)}
    trace = trace_of({**KWARGS, "priors": priors}, PARAMS, data())
    assert isinstance(trace["peak0_center"]["fn"], dist.Normal)
    assert isinstance(trace["sigma"]["fn"], dist.HalfCauchy)
    assert isinstance(trace["peak1_center"]["fn"], dist.Uniform)


def test_ties_and_fixed_values_are_deterministic_sites():
    kwargs = {
        "lineshapes": ("gaussian", "gaussian"),
        "ties": {"peak1_sigma": "peak0_sigma"},
        "fixed": {"peak1_center": 7.0},
    }
    params = {
        "peak0_height": 2.0,
        "peak0_center": 3.0,
        "peak0_sigma": 0.5,
        "peak1_height": 1.0,
        "sigma": 0.1,
    }
    trace = trace_of(kwargs, params, data())
    latent = [n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]]
    assert latent == list(params)
    assert float(trace["peak1_sigma"]["value"]) == 0.5
    assert float(trace["peak1_center"]["value"]) == 7.0
    assert float(trace["peak1_fwhm"]["value"]) == pytest.approx(0.5 * 2 * np.sqrt(2 * np.log(2)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lineshapes": ("gaussian", "gauss")}, "Unknown lineshape 'gauss'"),
        ({"baseline": "cubic"}, "Unknown baseline 'cubic'"),
        ({"likelihood": "laplace"}, "Unknown likelihood 'laplace'"),
        ({"priors": {"peak3_height": dist.Normal(0, 1)}}, r"Unknown prior site\(s\)"),
        ({"priors": {"peak0_height": 1.0}}, "must be a numpyro distribution"),
        ({"priors": {"peak0_height": dist.Normal(np.zeros(2), 1.0)}}, "scalar distribution"),
        ({"ties": {"peak0_sigma": "peak9_sigma"}}, "unknown parameter"),
        ({"fixed": {"peak0_width": 1.0}}, "unknown parameter"),
    ],
)
def test_bad_options_are_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        trace_of({"lineshapes": ("gaussian",), **kwargs}, {}, data())


def test_bad_data_are_value_errors():
    with pytest.raises(ValueError, match="give one y per x"):
        peaks(X, data()[:-1])
    with pytest.raises(ValueError, match="give y_range"):
        peaks(X)
    with pytest.raises(ValueError, match="needs counts"):
        with handlers.seed(rng_seed=0):
            peaks(X, data(), likelihood="poisson")


def test_every_lineshape_names_its_sites():
    model = peak_model(tuple(LINESHAPES))
    for index, lineshape in enumerate(LINESHAPES.values()):
        names = model.peak_parameter_names(index)
        assert names == tuple(f"peak{index}_{p}" for p in lineshape.parameters)
        assert set(names) <= set(model.site_names)
    assert model.site_names[-1] == "sigma"
    assert "sigma" not in peak_model(("gaussian",), likelihood="poisson").site_names


def test_site_supports_by_kind():
    model = peak_model(("voigt_area", "pseudo_voigt", "skewed_gaussian"), "exponential")
    expected = {
        "peak0_area": constraints.real,
        "peak0_center": constraints.real,
        "peak0_sigma": constraints.positive,
        "peak0_gamma": constraints.positive,
        "peak1_height": constraints.real,
        "peak1_fraction": constraints.unit_interval,
        "peak2_skew": constraints.real,
        "baseline_amplitude": constraints.real,
        "baseline_rate": constraints.real,
        "sigma": constraints.positive,
    }
    for name, support in expected.items():
        assert site_support(model, name) is support, name
    # Every default prior lies in its site's support: the check accepts all of them.
    priors = default_priors(model, (0.0, 10.0), (0.0, 2.0))
    assert set(check_priors(priors, model)) == set(model.site_names)


PRIOR_CASES = [
    # (site, prior, accepted)
    ("peak0_sigma", dist.HalfNormal(1.0), True),
    ("peak0_sigma", dist.Gamma(2.0, 1.0), True),
    ("peak0_sigma", dist.LogNormal(0.0, 1.0), True),
    ("peak0_sigma", dist.Exponential(1.0), True),
    ("peak0_sigma", dist.Uniform(0.0, 3.0), True),
    ("peak0_sigma", dist.TruncatedNormal(1.0, 1.0, low=0.0), True),
    ("peak0_sigma", dist.Normal(1.0, 1.0), False),
    ("peak0_sigma", dist.Uniform(-0.5, 3.0), False),
    ("peak0_sigma", dist.TruncatedNormal(1.0, 1.0, low=-1.0), False),
    ("peak0_sigma", dist.Poisson(2.0), False),
    ("peak0_height", dist.Cauchy(0.0, 1.0), True),  # heights take either sign (a dip)
    ("peak0_height", dist.Uniform(-100.0, 100.0), True),
    ("peak0_height", dist.Poisson(2.0), False),
    ("peak1_fraction", dist.Beta(2.0, 2.0), True),
    ("peak1_fraction", dist.Uniform(0.0, 1.0), True),
    ("peak1_fraction", dist.Uniform(0.2, 0.8), True),
    ("peak1_fraction", dist.Uniform(0.0, 1.5), False),
    ("peak1_fraction", dist.HalfNormal(1.0), False),
    ("peak0_center", dist.Normal(5.0, 1.0), True),
    ("peak0_center", dist.Uniform(2.0, 8.0), True),
    ("peak0_center", dist.Bernoulli(probs=0.5), False),
    ("baseline_c1", dist.StudentT(3.0, 0.0, 1.0), True),
    ("sigma", dist.HalfCauchy(1.0), True),
    ("sigma", dist.Normal(0.0, 1.0), False),
    ("sigma", dist.ImproperUniform(constraints.real, (), ()), False),
    ("sigma", dist.ImproperUniform(constraints.positive, (), ()), True),
]


@pytest.mark.parametrize(("site", "prior", "accepted"), PRIOR_CASES)
def test_priors_are_checked_against_the_support_of_their_site(site, prior, accepted):
    model = peak_model(("gaussian", "pseudo_voigt"), "linear")
    if accepted:
        assert site in check_priors({site: prior}, model)
        return
    with pytest.raises(
        ValueError, match=rf"priors\['{site}'\] is .* with support .*, but {site} lives on"
    ):
        check_priors({site: prior}, model)


def test_priors_with_invalid_parameters_name_their_site():
    model = peak_model("gaussian")
    with validation_enabled(False):  # as a user without numpyro's checks builds them
        bad = {
            "peak0_center": dist.Normal(np.nan, 1.0),
            "peak0_height": dist.HalfNormal(-1.0),
            "peak0_sigma": dist.Gamma(2.0, np.inf),
        }
    for site, prior in bad.items():
        with pytest.raises(ValueError, match=rf"priors\['{site}'\]"):
            check_priors({site: prior}, model)


def test_the_program_refuses_bad_priors_fixed_values_and_options():
    base = {"lineshapes": ("gaussian",)}
    with pytest.raises(ValueError, match=r"priors\['peak0_sigma'\]"):
        trace_of({**base, "priors": {"peak0_sigma": dist.Normal(1.0, 1.0)}}, {}, data())
    with pytest.raises(ValueError, match="fixed peak0_sigma = -1 is outside its support"):
        trace_of({**base, "fixed": {"peak0_sigma": -1.0}}, {}, data())
    with pytest.raises(ValueError, match="not finite"):
        trace_of({**base, "fixed": {"peak0_center": np.nan}}, {}, data())
    with pytest.raises(ValueError, match="degrees_of_freedom"):
        trace_of({**base, "likelihood": "student_t", "degrees_of_freedom": -1.0}, {}, data())
    with pytest.raises(ValueError, match="joins a width to a center"):
        trace_of(
            {**base, "lineshapes": ("gaussian",) * 2, "ties": {"peak1_sigma": "peak0_center"}},
            {},
            data(),
        )
    with pytest.raises(ValueError, match="y contains NaN"):
        trace_of(base, {}, np.where(X > 5, np.nan, data()))
    with pytest.raises(ValueError, match="x contains NaN"):
        peaks(np.where(X > 5, np.nan, X), data(), **base)


def test_fixed_values_are_checked_against_their_support():
    model = peak_model(("pseudo_voigt",), fixed=["peak0_fraction", "peak0_height"])
    assert check_fixed(model, {"peak0_fraction": 0.0, "peak0_height": 1.0})
    assert check_fixed(model, {"peak0_fraction": 1.0, "peak0_height": -2.0})  # a dip
    for fixed, match in [
        ({"peak0_fraction": 1.01}, r"must lie in \[0, 1\]"),
        ({"peak0_height": np.inf}, "not finite"),
        ({"peak0_height": np.ones(3)}, r"shape \(3,\)"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_fixed(model, fixed)


def test_nuts_on_the_program_refuses_a_bad_prior_before_sampling():
    # Both concrete (Python floats) and traced (arrays) parameters: the support kind is
    # checked on either; the bounds of the concrete ones too.
    priors = [
        {"peak0_sigma": dist.Normal(1.0, 1.0)},
        {"peak0_sigma": dist.Normal(np.asarray(1.0), np.asarray(1.0))},
        {"peak0_sigma": dist.Uniform(-1.0, 1.0)},
    ]
    for prior in priors:
        with pytest.raises(ValueError, match=r"priors\['peak0_sigma'\]"):
            sample(
                peaks, X, data(), lineshapes=("gaussian",), priors=prior,
                num_warmup=1, num_samples=1, num_chains=1, progress_bar=False,
            )  # fmt: skip


def test_the_batch_program_refuses_what_the_one_spectrum_program_refuses():
    """shared_peaks runs the checks of peaks (check_program_inputs) on a batch (B, M)."""
    from gaussmix.models.shared_peaks import shared_peaks

    y = np.stack([data(), 2.0 * data()])
    base = {"lineshapes": ("gaussian",), "shared": ("peak0_sigma",)}
    cases = [
        ({"fixed": {"peak0_center": -np.inf}}, y, "not finite"),
        ({"fixed": {"peak0_sigma": -1.0}}, y, "fixed peak0_sigma = -1 is outside its support"),
        ({"likelihood": "student_t", "degrees_of_freedom": 0.0}, y, "degrees_of_freedom"),
        ({"priors": {"peak0_sigma": dist.Normal(1.0, 1.0)}}, y, r"priors\['peak0_sigma'\]"),
        ({}, data(), r"give y of shape \(B, 41\)"),
        ({}, y[:, :-1], r"give y of shape \(B, 41\)"),
        ({}, np.where(X > 5, np.nan, y), "y contains NaN"),
        ({"mask": np.ones(41, bool)}, y, r"mask has shape \(41,\); expected \(2, 41\)"),
        ({"likelihood": "poisson"}, y + 0.5, "needs counts"),
        ({}, None, "give n_spectra"),
        ({"n_spectra": 2}, None, "give y_range"),
    ]
    for options, observed, match in cases:
        with pytest.raises(ValueError, match=match):
            with handlers.seed(rng_seed=0):
                shared_peaks(X, observed, **{**base, **options})
    with pytest.raises(ValueError, match="x contains NaN"):
        shared_peaks(np.where(X > 5, np.nan, X), y, **base)
    with pytest.raises(ValueError, match="give one y per x"):  # the one-spectrum program
        peaks(X, y, lineshapes=("gaussian",))
    # masked NaN are fine: the program runs (and counts) the rest
    mask = np.ones(y.shape, bool)
    mask[1, 3] = False
    with handlers.seed(rng_seed=0):
        trace = handlers.trace(shared_peaks).get_trace(
            X, np.where(mask, y, np.nan), mask=mask, **base
        )
    assert trace["y"]["value"].shape == (2, 41)
