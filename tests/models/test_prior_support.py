"""A prior must live where its site lives (issue 14): mixture cases.

``gaussmix.models.mixture.check_priors`` compares each prior's support with its site's
(weights on the simplex, means real, variances and scales positive, covariances positive
definite), refuses non-finite or invalid parameters and wrong shapes. Every back end reads
it before computing anything: the program itself, EM (``GaussianMixture.fit``) and NUTS
(``gaussmix.inference.sample``). The peak-model cases live in their own file.

numpyro (>= 0.16) validates distribution arguments when a distribution is built, so
pathological parameters are built here inside ``numpyro.validation_enabled(False)``: the
state a user reaches with ``validate_args=False`` or validation switched off, or with
parameters numpyro accepts (an infinite scale).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.distributions import constraints
from numpyro.distributions.transforms import StickBreakingTransform
from numpyro.infer.util import log_density

from gaussmix import GaussianMixture
from gaussmix.inference import em, sample
from gaussmix.inference.em import fit as em_fit
from gaussmix.inference.mcmc import driver as mcmc_driver
from gaussmix.models import gaussian_mixture
from gaussmix.models.mixture import check_priors
from gaussmix.models.priors import COVARIANCE_SITES, SITE_SUPPORTS, support_within

K, D = 2, 2
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")

#: What each site's error message says the site lives on.
EXPECTED = {
    "weights": "simplex",
    "means": "real numbers",
    "covariances": "positive definite",
    "covariance": "positive definite",
    "variances": "positive reals",
    "scales": "positive reals",
}


def two_clusters(seed=0):
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(-3.0, 1.0, (12, D)), rng.normal(3.0, 1.0, (12, D))])


def sites(covariance_type):
    """(site, shape of one component's value or of the whole site) of a covariance type."""
    covariance = COVARIANCE_SITES[covariance_type]
    return ["weights", "means", covariance] + (
        ["scales"] if covariance_type in ("diag", "spherical") else []
    )


def good_priors(site):
    """Priors whose support lies inside the site's (one component's value where per component)."""
    stick_breaking = dist.TransformedDistribution(
        dist.Normal(0.0, 1.0).expand([K - 1]).to_event(1), StickBreakingTransform()
    )
    positive = [
        dist.HalfNormal(2.0),
        dist.Uniform(0.0, 10.0),
        dist.Exponential(1.0),
        dist.Gamma(2.0, 1.0),
        dist.LogNormal(0.0, 1.0),
        dist.InverseGamma(2.0, 1.0),
        dist.HalfCauchy(1.0),
        dist.TruncatedNormal(1.0, 1.0, low=0.0),
    ]
    return {
        "weights": [dist.Dirichlet(jnp.ones(K)), dist.Dirichlet(jnp.full(K, 3.0)), stick_breaking],
        "means": [
            dist.Normal(0.0, 5.0),
            dist.Normal(jnp.zeros((K, D)), 5.0).to_event(1),  # one prior per component
            dist.MultivariateNormal(jnp.zeros(D), 25.0 * jnp.eye(D)),
            dist.StudentT(3.0, 0.0, 5.0),
        ],
        "covariances": [
            dist.InverseWishart(D + 1.0, jnp.eye(D)),
            dist.Wishart(D + 1.0, jnp.eye(D)),
            dist.LKJ(D, 2.0),  # correlation matrices are positive definite
        ],
        "covariance": [dist.InverseWishart(D + 1.0, jnp.eye(D)), dist.Wishart(D + 1.0, jnp.eye(D))],
        "variances": positive,
        "scales": positive,
    }[site]


def bad_support_priors(site):
    """Priors whose support is not inside the site's."""
    real = [dist.Normal(0.0, 1.0), dist.Uniform(-1.0, 1.0), dist.StudentT(3.0)]
    return {
        "weights": [
            dist.Normal(0.0, 1.0),  # the reported case
            dist.Exponential(1.0).expand([K]).to_event(1),
            dist.MultivariateNormal(jnp.full(K, 0.5), jnp.eye(K)),
        ],
        "means": [
            dist.Poisson(3.0),  # discrete
            dist.Delta(0.0),  # a point mass
            dist.ImproperUniform(constraints.real, (), (D,)),  # improper
        ],
        "covariances": [dist.Normal(0.0, 1.0), dist.HalfNormal(1.0), dist.LKJCholesky(D, 2.0)],
        "covariance": [dist.Normal(0.0, 1.0), dist.LKJCholesky(D, 2.0)],
        "variances": [*real, dist.Poisson(2.0)],
        "scales": [*real, dist.Poisson(2.0)],
    }[site]


def pathological_priors(site):
    """Valid supports, invalid parameters (numpyro's construction-time check switched off)."""
    with numpyro.validation_enabled(False):
        positive = [
            dist.HalfNormal(-1.0),
            dist.HalfNormal(jnp.inf),
            dist.Gamma(0.0, 1.0),
            dist.InverseGamma(2.0, jnp.nan),
            dist.Uniform(5.0, 1.0),  # empty interval
        ]
        return {
            "weights": [
                dist.Dirichlet(jnp.zeros(K)),
                dist.Dirichlet(-jnp.ones(K)),
                dist.Dirichlet(jnp.array([1.0, jnp.nan])),
                dist.Dirichlet(jnp.array([1.0, jnp.inf])),
            ],
            "means": [
                dist.Normal(jnp.nan, 1.0),
                dist.Normal(0.0, jnp.inf),
                dist.Normal(0.0, -2.0),
                dist.MultivariateNormal(jnp.zeros(D), jnp.array([[1.0, 2.0], [2.0, 1.0]])),
            ],
            "covariances": [
                dist.InverseWishart(0.5, jnp.eye(D)),  # degrees of freedom <= D - 1
                dist.InverseWishart(D + 1.0, jnp.array([[1.0, 2.0], [2.0, 1.0]])),
                dist.Wishart(D + 1.0, -jnp.eye(D)),
                dist.LKJ(D, -1.0),
            ],
            "covariance": [
                dist.InverseWishart(0.5, jnp.eye(D)),
                dist.InverseWishart(D + 1.0, jnp.full((D, D), jnp.nan)),
            ],
            "variances": positive,
            "scales": positive,
        }[site]


def cases(kind):
    table = {"good": good_priors, "bad": bad_support_priors, "pathological": pathological_priors}
    return [
        pytest.param(covariance_type, site, index, id=f"{covariance_type}-{site}-{index}")
        for covariance_type in COVARIANCE_TYPES
        for site in sites(covariance_type)
        for index in range(len(table[kind](site)))
    ]


def site_values(covariance_type, site):
    """Values inside the support of every good prior (LKJ: correlation matrices)."""
    correlation = np.array([[1.0, 0.3], [0.3, 1.0]])
    values = {"weights": np.array([0.4, 0.6]), "means": np.array([[-3.0, -3.0], [3.0, 3.0]])}
    covariance = COVARIANCE_SITES[covariance_type]
    shape = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}
    if covariance_type in ("full", "tied"):
        values[covariance] = np.broadcast_to(correlation, shape[covariance_type])
    else:
        name = "scales" if site == "scales" else covariance
        values[name] = np.full(shape[covariance_type], 1.5)
    return values


def model_log_density(covariance_type, priors, values):
    kwargs = {"n_components": K, "covariance_type": covariance_type, "priors": priors}
    return log_density(gaussian_mixture, (two_clusters(),), kwargs, values)


def must_not_run(*args, **kwargs):
    raise AssertionError("a back end computed before the priors were checked")


# -- the support comparison ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("support", "site_support", "expected"),
    [
        (constraints.real, constraints.real, True),
        (constraints.real_vector, constraints.real, True),
        (constraints.positive, constraints.real_vector, True),
        (constraints.interval(-1.0, 1.0), constraints.real, True),
        (constraints.ordered_vector, constraints.real_vector, True),
        (constraints.positive, constraints.positive, True),
        (constraints.independent(constraints.positive, 1), constraints.positive, True),
        (constraints.softplus_positive, constraints.positive, True),
        (constraints.greater_than(2.0), constraints.positive, True),
        (constraints.greater_than_eq(0.0), constraints.positive, True),  # {0} has probability 0
        (constraints.interval(0.0, 10.0), constraints.positive, True),
        (constraints.unit_interval, constraints.positive, True),
        (constraints.positive_ordered_vector, constraints.positive, True),
        (constraints.simplex, constraints.simplex, True),
        (constraints.positive_definite, constraints.positive_definite, True),
        (constraints.corr_matrix, constraints.positive_definite, True),
        (constraints.interval(1.0, 2.0), constraints.interval(0.0, 3.0), True),
        (constraints.real, constraints.positive, False),
        (constraints.real, constraints.simplex, False),
        (constraints.positive, constraints.simplex, False),
        (constraints.greater_than(-1.0), constraints.positive, False),
        (constraints.interval(-1.0, 10.0), constraints.positive, False),
        (constraints.interval(jnp.nan, 10.0), constraints.positive, False),
        (constraints.less_than(5.0), constraints.positive, False),
        (constraints.nonnegative_integer, constraints.positive, False),  # discrete
        (constraints.nonnegative_integer, constraints.real, False),
        (constraints.positive_semidefinite, constraints.positive_definite, False),
        (constraints.corr_cholesky, constraints.positive_definite, False),
        (constraints.lower_cholesky, constraints.positive_definite, False),
        (constraints.real, constraints.positive_definite, False),
        (constraints.interval(1.0, 4.0), constraints.interval(0.0, 3.0), False),
        (constraints.sphere, constraints.real_vector, False),  # unknown pair: refused
        (constraints.dependent, constraints.real, False),
    ],
)
def test_mixture_support_within(support, site_support, expected):
    assert support_within(support, site_support) is expected


def test_mixture_site_supports_are_the_programs_defaults():
    """Each site's support is that of its default prior (the check cannot drift from it)."""
    for covariance_type in COVARIANCE_TYPES:
        _, trace = model_log_density(covariance_type, None, site_values(covariance_type, None))
        for site in ("weights", "means", COVARIANCE_SITES[covariance_type]):
            support = trace[site]["fn"].support
            assert support_within(support, SITE_SUPPORTS[site]), (covariance_type, site)
            assert support_within(SITE_SUPPORTS[site], support), (covariance_type, site)


# -- the program -----------------------------------------------------------------------------


@pytest.mark.parametrize(("covariance_type", "site", "index"), cases("good"))
def test_mixture_program_takes_priors_inside_the_site_support(covariance_type, site, index):
    prior = good_priors(site)[index]
    priors = {site: prior}
    values = site_values(covariance_type, site)
    check_priors(priors, covariance_type, n_components=K, n_features=D)
    value, trace = model_log_density(covariance_type, priors, values)
    assert np.isfinite(float(value))
    name = "scales" if site == "scales" else site
    assert trace[name]["fn"].support is not None
    assert np.all(np.isfinite(np.asarray(trace[name]["fn"].log_prob(values[name]))))


@pytest.mark.parametrize(("covariance_type", "site", "index"), cases("bad"))
def test_mixture_program_refuses_priors_outside_the_site_support(covariance_type, site, index):
    prior = bad_support_priors(site)[index]
    name = type(prior).__name__
    with pytest.raises(ValueError, match=rf"priors\['{site}'\] is {name}.*{EXPECTED[site]}"):
        model_log_density(covariance_type, {site: prior}, site_values(covariance_type, site))


@pytest.mark.parametrize(("covariance_type", "site", "index"), cases("pathological"))
def test_mixture_program_refuses_invalid_prior_parameters(covariance_type, site, index):
    prior = pathological_priors(site)[index]
    with pytest.raises(ValueError, match=rf"priors\['{site}'\] is {type(prior).__name__}"):
        model_log_density(covariance_type, {site: prior}, site_values(covariance_type, site))


def test_mixture_message_names_site_support_and_remedy():
    with pytest.raises(ValueError) as error:
        check_priors({"weights": dist.Normal(0.0, 1.0)}, "full")
    assert str(error.value) == (
        "priors['weights'] is Normal with support real, but weights live on the simplex; "
        "use a Dirichlet prior."
    )
    with pytest.raises(ValueError, match="Cholesky factors; the site takes the matrix itself"):
        check_priors({"covariances": dist.LKJCholesky(D)}, "full")
    with pytest.raises(ValueError, match=r"support the interval \[-1.0, 1.0\].*positive reals"):
        check_priors({"scales": dist.Uniform(-1.0, 1.0)}, "diag")


@pytest.mark.parametrize(
    ("covariance_type", "priors", "message"),
    [
        ("full", {"weights": dist.Dirichlet(jnp.ones(K + 1))}, r"event shape \(2,\)"),
        ("full", {"weights": dist.Dirichlet(jnp.ones((3, K)))}, r"batch shape \(\)"),
        ("tied", {"covariance": dist.InverseWishart(3.0, jnp.eye(D)).expand([K])}, "whole"),
        ("tied", {"covariance": dist.InverseWishart(4.0, jnp.eye(D + 1))}, r"\(2, 2\)"),
        ("full", {"covariances": dist.InverseWishart(3.0, jnp.eye(D)).expand([K + 1])}, "one"),
        ("diag", {"means": dist.Normal(jnp.zeros(K + 1), 1.0)}, r"shape \(2,\)"),
        ("diag", {"scales": dist.HalfNormal(jnp.ones((K + 1, D)))}, "per component"),
        ("spherical", {"variances": dist.HalfNormal(jnp.ones(K + 1))}, "per component"),
    ],
)
def test_mixture_program_refuses_prior_shapes_that_do_not_fit(covariance_type, priors, message):
    site = next(iter(priors))
    with pytest.raises(ValueError, match=rf"priors\['{site}'\].*{message}"):
        model_log_density(covariance_type, priors, site_values(covariance_type, site))


def test_mixture_per_component_batches_are_accepted():
    """Batch (K,) gives each component its own prior; the log density adds them up."""
    scales = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    values = site_values("diag", "scales")
    priors = {"scales": dist.HalfNormal(scales)}  # scalar of batch (K, D)
    value, trace = model_log_density("diag", priors, values)
    expected = dist.HalfNormal(scales).log_prob(values["scales"]).sum()
    np.testing.assert_allclose(trace["scales"]["fn"].log_prob(values["scales"]).sum(), expected)
    assert np.isfinite(float(value))


# -- EM: GaussianMixture.fit -----------------------------------------------------------------


@pytest.mark.parametrize(("covariance_type", "site", "index"), cases("bad"))
def test_mixture_em_refuses_priors_outside_the_site_support(
    covariance_type, site, index, monkeypatch
):
    prior = bad_support_priors(site)[index]
    monkeypatch.setattr(em_fit, "_fit_program_for", must_not_run)
    model = GaussianMixture(K, covariance_type=covariance_type, priors={site: prior})
    with pytest.raises(ValueError, match=rf"priors\['{site}'\].*{EXPECTED[site]}"):
        model.fit(two_clusters())


@pytest.mark.parametrize(("covariance_type", "site", "index"), cases("pathological"))
def test_mixture_em_refuses_invalid_prior_parameters(covariance_type, site, index, monkeypatch):
    prior = pathological_priors(site)[index]
    monkeypatch.setattr(em_fit, "_fit_program_for", must_not_run)
    model = GaussianMixture(K, covariance_type=covariance_type, priors={site: prior})
    with pytest.raises(ValueError, match=rf"priors\['{site}'\] is {type(prior).__name__}"):
        model.fit(two_clusters())


def test_mixture_em_refuses_a_weight_prior_of_another_size(monkeypatch):
    monkeypatch.setattr(em_fit, "_fit_program_for", must_not_run)
    model = GaussianMixture(3, priors={"weights": dist.Dirichlet(jnp.ones(2))})
    with pytest.raises(ValueError, match=r"priors\['weights'\].*event shape \(3,\)"):
        model.fit(two_clusters())


def em_priors(covariance_type):
    """Valid non-conjugate priors: generalized EM."""
    return {
        "diag": {
            "weights": good_priors("weights")[2],  # stick-breaking image of a Normal
            "means": dist.Normal(0.0, 5.0),
            "variances": dist.Uniform(0.0, 10.0),
        },
        "spherical": {"scales": dist.LogNormal(0.0, 1.0)},
        "full": {"covariances": dist.Wishart(D + 1.0, jnp.eye(D))},
        "tied": {"means": dist.MultivariateNormal(jnp.zeros(D), 25.0 * jnp.eye(D))},
    }[covariance_type]


@pytest.mark.slow
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_mixture_em_fits_under_priors_inside_the_site_support(covariance_type):
    """Generalized EM under valid non-conjugate priors: weights on the simplex, finite."""
    priors = em_priors(covariance_type)
    model = GaussianMixture(K, covariance_type=covariance_type, priors=priors, random_state=0)
    model.fit(two_clusters())
    assert model.method_ == "generalized_em"
    # the weights of every M-step are the simplex's (stick-breaking or closed form): they
    # sum to 1 up to the rounding of a few float64 operations
    np.testing.assert_allclose(model.weights_.sum(), 1.0, rtol=0, atol=10 * np.finfo(float).eps)
    assert np.all(model.weights_ > 0)
    assert np.all(np.isfinite(model.means_)) and np.all(np.isfinite(model.covariances_))
    if covariance_type == "diag":  # the Uniform(0, 10) prior keeps the variances inside
        assert np.all((model.covariances_ > 0) & (model.covariances_ < 10))


# -- NUTS: gaussmix.inference.sample and sample_posterior ------------------------------------


def nuts(covariance_type, priors):
    return sample(
        gaussian_mixture,
        two_clusters(),
        n_components=K,
        covariance_type=covariance_type,
        priors=priors,
        num_warmup=1,
        num_samples=1,
        num_chains=1,
        progress_bar=False,
    )


@pytest.mark.parametrize(("covariance_type", "site", "index"), cases("bad"))
def test_mixture_nuts_refuses_priors_outside_the_site_support(
    covariance_type, site, index, monkeypatch
):
    prior = bad_support_priors(site)[index]
    monkeypatch.setattr(em, "fit_em", must_not_run)  # the EM starting point
    monkeypatch.setattr(mcmc_driver, "_sample", must_not_run)
    with pytest.raises(ValueError, match=rf"priors\['{site}'\].*{EXPECTED[site]}"):
        nuts(covariance_type, {site: prior})


@pytest.mark.parametrize(("covariance_type", "site", "index"), cases("pathological"))
def test_mixture_nuts_refuses_invalid_prior_parameters(covariance_type, site, index, monkeypatch):
    prior = pathological_priors(site)[index]
    monkeypatch.setattr(em, "fit_em", must_not_run)
    monkeypatch.setattr(mcmc_driver, "_sample", must_not_run)
    with pytest.raises(ValueError, match=rf"priors\['{site}'\] is {type(prior).__name__}"):
        nuts(covariance_type, {site: prior})


def test_mixture_nuts_refuses_prior_shapes_that_do_not_fit(monkeypatch):
    monkeypatch.setattr(em, "fit_em", must_not_run)
    monkeypatch.setattr(mcmc_driver, "_sample", must_not_run)
    with pytest.raises(ValueError, match=r"priors\['weights'\].*event shape \(2,\)"):
        nuts("full", {"weights": dist.Dirichlet(jnp.ones(K + 1))})


def test_mixture_sample_posterior_refuses_a_bad_prior_of_a_fitted_model(monkeypatch):
    """A fitted estimator whose priors are changed afterwards: NUTS still checks them."""
    x = two_clusters()
    model = GaussianMixture(K, covariance_type="spherical", random_state=0).fit(x)
    model.set_params(priors={"scales": dist.Normal(0.0, 1.0)})
    monkeypatch.setattr(mcmc_driver, "_sample", must_not_run)
    with pytest.raises(ValueError, match=r"priors\['scales'\].*positive reals"):
        model.sample_posterior(x, num_warmup=1, num_samples=1, num_chains=1, progress_bar=False)


def test_mixture_traced_prior_parameters_are_checked_before_tracing(monkeypatch):
    """Array parameters are traced by NUTS; the check reads them concretely first."""
    with numpyro.validation_enabled(False):
        priors = {"weights": dist.Dirichlet(jnp.array([1.0, -1.0]))}
    monkeypatch.setattr(em, "fit_em", must_not_run)
    monkeypatch.setattr(mcmc_driver, "_sample", must_not_run)
    with pytest.raises(ValueError, match=r"invalid concentration \(\[1.0, -1.0\]\)"):
        nuts("diag", priors)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::gaussmix.inference.diagnostics.SamplingWarning")
def test_mixture_nuts_samples_under_valid_priors_with_array_parameters():
    """Array parameters are traced when NUTS compiles the program; the interval bounds of
    Uniform cannot be read there, and the check (done concretely before) lets them pass.
    One warmup draw adapts nothing: divergences are expected and ignored."""
    priors = {
        "weights": dist.Dirichlet(jnp.full(K, 2.0)),
        "variances": dist.Uniform(jnp.asarray(0.0), jnp.asarray(10.0)),
    }
    tree = nuts("diag", priors)
    weights = tree.posterior["weights"].values
    variances = tree.posterior["variances"].values
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=0, atol=4 * np.finfo(float).eps)
    assert np.all((variances > 0) & (variances < 10))


# -- the reported case -----------------------------------------------------------------------


def test_mixture_reported_case_normal_weight_prior_is_refused():
    """Issue 14: a Normal weight prior gave weights summing to 14 and a score above the
    maximum likelihood; now it is refused before fitting."""
    with pytest.raises(ValueError, match=r"priors\['weights'\] is Normal.*simplex.*Dirichlet"):
        GaussianMixture(2, priors={"weights": dist.Normal(0, 1)}).fit(two_clusters())


def test_mixture_flat_dirichlet_weight_prior_keeps_weights_on_the_simplex():
    """Dirichlet(1) is flat on the simplex: its MAP weights are the maximum-likelihood
    weights given the responsibilities (the mean responsibility), they sum to 1, and the
    fit is the default-prior fit (whose weight prior is this Dirichlet(1)). The other sites
    keep the program's default prior, so the means and covariances are MAP, not ML."""
    rng = np.random.default_rng(0)  # unequal, overlapping clusters: soft responsibilities
    x = np.concatenate([rng.normal(-2.0, 1.0, (10, D)), rng.normal(2.0, 1.0, (20, D))])
    options = {"random_state": 0, "tol": 1e-12, "max_iter": 500}
    flat = GaussianMixture(2, priors={"weights": dist.Dirichlet(jnp.ones(2))}, **options).fit(x)
    default = GaussianMixture(2, priors="default", **options).fit(x)
    maximum_likelihood = GaussianMixture(2, **options).fit(x)
    assert flat.converged_ and maximum_likelihood.converged_
    # float64 rounding of a sum of two numbers
    np.testing.assert_allclose(flat.weights_.sum(), 1.0, rtol=0, atol=4 * np.finfo(float).eps)
    # the same closed-form M-step from the same start: equal to rounding
    np.testing.assert_allclose(flat.weights_, default.weights_, rtol=1e-12)
    np.testing.assert_allclose(flat.means_, default.means_, rtol=1e-12)
    # the weight equation of maximum likelihood holds at the converged fit: near a fixed
    # point the lower bound changes quadratically in the step, so tol = 1e-12 leaves the
    # weights within about sqrt(1e-12) = 1e-6 of it (Dirichlet(3) would be 0.02 away)
    np.testing.assert_allclose(flat.weights_, flat.predict_proba(x).mean(axis=0), atol=1e-6)
    # the bug gave a score above the maximum likelihood; a prior can only lower it
    assert flat.score(x) <= maximum_likelihood.score(x) + 1e-12
