"""The MAP back end's NumPyro-free parts against NumPyro (issue 17): the families' log
densities, and the peak program's registered priors and observed site
(:data:`gaussmix.inference.map.closed_form.PEAKS_CLOSED_FORM`) against what a trace of the
program gives, bit for bit, for every kind of peak model; a caller's NumPyro prior still
takes the traced path."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest

from gaussmix.inference.map import closed_form
from gaussmix.inference.map.families import FAMILIES
from gaussmix.inference.map.problem import MAPProblem, Sites, batch_problems
from gaussmix.models.lineshapes import LINESHAPES
from gaussmix.models.peak_priors import HalfNormalPrior, UniformPrior
from gaussmix.models.peaks import latent_priors, location_and_jacobian, peak_model, peaks

X = np.linspace(0.0, 10.0, 60)


@pytest.mark.filterwarnings("ignore:Out-of-support values:UserWarning")  # NumPyro's, eager
@pytest.mark.parametrize("x64", [True, False])
def test_family_log_densities_are_numpyros(x64):
    """Normal, StudentT and Poisson log densities (-inf outside the support, as NumPyro's
    with its default validation), and the StudentT noise loss with the slope and
    curvature the noise's Newton steps take, equal to NumPyro's to the last bit, on
    values out in the tails, eager and compiled, in float32 and float64."""
    with jax.enable_x64(x64):
        dtype = jnp.result_type(float)
        y = jnp.asarray(
            [-1e30, -40.0, -3.0, 0.0, 1.0, 2.5, 7.0, 60.0, 1e30, jnp.inf, jnp.nan], dtype
        )
        loc = jnp.linspace(-2.0, 3.0, y.shape[0], dtype=dtype)
        scale = jnp.linspace(0.1, 4.0, y.shape[0], dtype=dtype)
        df = jnp.asarray(3.5, dtype)
        counts = jnp.asarray(
            [0.0, 1.0, 2.0, 7.0, 40.0, 1e4, 0.5, -1.0, 3.0, jnp.inf, jnp.nan], dtype
        )
        rate = jnp.asarray([1e-30, 0.2, 2.0, 7.0, 1.0, 1e4, 1.0, 1.0, 1e-300, 1.0, 1.0], dtype)

        def ours():
            return (
                FAMILIES["normal"].log_prob_fn(y, loc, scale, ()),
                FAMILIES["student_t"].log_prob_fn(y, loc, scale, df),
                FAMILIES["poisson"].log_prob_fn(counts, rate, None, ()),
                newton_terms(FAMILIES["student_t"].noise_loss_fn(y[1:8], loc[1:8], 1.0, df)),
            )

        def numpyros():
            def loss(noise):
                return -jnp.sum(dist.StudentT(df, loc[1:8], noise).log_prob(y[1:8]))

            return (
                dist.Normal(loc, scale).log_prob(y),
                dist.StudentT(df, loc, scale).log_prob(y),
                dist.Poisson(rate).log_prob(counts),
                newton_terms(loss),
            )

        for run in (lambda f: f(), lambda f: jax.jit(f)()):
            got, want = jax.tree.leaves(run(ours)), jax.tree.leaves(run(numpyros))
            assert len(got) == len(want) == 6
            for index, (a, b) in enumerate(zip(got, want, strict=True)):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a, b, err_msg=f"output {index}")


def newton_terms(loss):
    """The loss of log sigma, its slope and curvature, as ``newton_on_log_noise`` takes
    them (one forward-over-reverse pass)."""
    derivatives = jax.value_and_grad(lambda log_noise: loss(jnp.exp(log_noise)))
    log_noise = jnp.log(jnp.asarray(0.8, jnp.result_type(float)))
    (value, slope), (_, curvature) = jax.jvp(derivatives, (log_noise,), (jnp.ones_like(log_noise),))
    return value, slope, curvature


# Every lineshape, each baseline kind, the three likelihoods, ties, fixed values, a mask
# and the priors' y_range (as test_fit_peaks_imports' list, with the options the priors
# and the observation read).
MODELS = [
    *[((name,), None, "normal", {}, {}, {}) for name in LINESHAPES],
    (("gaussian", "lorentzian"), "constant", "student_t", {}, {}, {"mask": True}),
    (("voigt", "pseudo_voigt"), "linear", "poisson", {}, {}, {}),
    (("gaussian",), "exponential", "normal", {}, {}, {"y_range": (-1.0, 4.0)}),
    (("skewed_gaussian", "gaussian"), 3, "student_t", {}, {"baseline_c2": 0.0}, {}),
    (("gaussian", "gaussian"), "shirley", "normal", {"peak1_sigma": "peak0_sigma"}, {}, {}),
    (("voigt_area", "doniach_sunjic"), "tougaard", "poisson", {}, {"peak1_alpha": 0.1},
     {"mask": True}),
    (("gaussian", "gaussian", "lorentzian"), "linear", "normal",
     {"peak1_sigma": "peak0_sigma", "peak2_center": "peak0_center"},
     {"peak0_height": 2.0, "baseline_c1": 0.5}, {"mask": True, "y_range": (0.0, 9.0)}),
]  # fmt: skip


def _problem(lineshapes, baseline, likelihood, ties, fixed, options):
    """The MAPProblem of one spectrum as fit_peaks builds it (program, keywords)."""
    model = peak_model(lineshapes, baseline, likelihood, ties, fixed)
    program = functools.partial(
        peaks, lineshapes=lineshapes, baseline=baseline, likelihood=likelihood, ties=ties
    )
    y = 2.0 * np.exp(-0.5 * ((X - 4.0) / 0.8) ** 2) + 0.3 + 0.05 * np.cos(3.0 * X)
    y = np.round(10.0 * y) if likelihood == "poisson" else y
    kwargs = {}
    if fixed:
        kwargs["fixed"] = {name: jnp.asarray(value) for name, value in fixed.items()}
    if likelihood == "student_t":
        kwargs["degrees_of_freedom"] = jnp.asarray(4.0)
    if options.get("mask"):
        kwargs["mask"] = jnp.asarray(X < 8.5)
        y = np.where(X < 8.5, y, 0.0)
    if "y_range" in options:
        kwargs["y_range"] = tuple(jnp.asarray(v) for v in options["y_range"])
    names = model.site_names
    sites = Sites(names, tuple(() for _ in names), names.index("sigma") if model.has_noise else -1)
    family = FAMILIES[likelihood]
    return MAPProblem(program, sites, "y", family, jnp.asarray(X), jnp.asarray(y), kwargs), model


def _points(problem, model):
    """Curve parameters inside every prior's box, on its lower and upper bounds, and out
    of it on both sides; noise scales inside, on and outside the support."""
    boxes = latent_priors(problem.x, problem.y, **problem.model.keywords, **problem.model_kwargs)
    low = np.array([float(boxes[name].low) for name in model.free_names])
    high = np.array([float(boxes[name].high) for name in model.free_names])
    width = high - low
    thetas = [low + 0.37 * width, low, high, low - 0.1 * width, high + 0.1 * width]
    return jnp.asarray(np.stack(thetas)), jnp.asarray([0.7, 0.0, -0.4, 0.7, 3.0])


def _evaluate(problem, thetas, noises):
    """The priors read at the first point by ``batch_problems`` (as the compiled fit reads
    them: mapped over the batch, so a NumPyro prior no longer validates), then at every
    point: the prior's log density, gradient, Hessian and supports, the noise's log prior,
    and the observed site."""
    kwargs = {name: value for name, value in problem.model_kwargs.items() if name != "mask"}
    mask = problem.model_kwargs.get("mask")

    def run(thetas, noises):
        problem_for, priors = batch_problems(
            problem.model, problem.sites, problem.observed, problem.family, problem.x,
            kwargs, thetas[:1], noises[:1], problem.y[None],
            None if mask is None else mask[None],
        )  # fmt: skip
        spectrum = problem_for(problem.y, mask, jax.tree.map(lambda leaf: leaf[0], priors))
        evaluated = [
            (
                spectrum.prior_terms(theta, noise),
                spectrum.noise_log_prior(theta, noise),
                spectrum.observe(theta, noise),
            )
            for theta, noise in zip(thetas, noises, strict=True)
        ]
        bounds = {
            name: (prior.scale,) if hasattr(prior, "scale") else (prior.low, prior.high)
            for name, prior in spectrum.priors.items()
        }
        return bounds, evaluated

    return jax.jit(run)(thetas, noises)


@pytest.mark.parametrize(
    ("lineshapes", "baseline", "likelihood", "ties", "fixed", "options"), MODELS
)
def test_registered_priors_and_observation_are_the_programs_trace(
    monkeypatch, lineshapes, baseline, likelihood, ties, fixed, options
):
    """The closed form's priors (boxes, log prior with its gradient and Hessian, supports
    inside, on and outside the bounds, the noise's log prior) and observed site (location,
    scale, degrees of freedom, mask) equal, bit for bit, what the MAP back end reads from
    a trace of the program, as its compiled fit reads them."""
    problem, model = _problem(lineshapes, baseline, likelihood, ties, fixed, options)
    thetas, noises = _points(problem, model)
    priors = problem.with_priors(thetas[0], noises[0]).priors
    assert all(isinstance(p, UniformPrior | HalfNormalPrior) for p in priors.values())
    registered = _evaluate(problem, thetas, noises)
    monkeypatch.setattr(closed_form, "_REGISTRY", {})
    closed_form.register_location_jacobian(
        peaks, location_and_jacobian
    )  # no priors, no observation
    assert isinstance(
        problem.with_priors(thetas[0], noises[0]).priors[model.free_names[0]], dist.Uniform
    )
    traced = _evaluate(problem, thetas, noises)
    got, structure = jax.tree_util.tree_flatten_with_path(registered)
    want, traced_structure = jax.tree.flatten(traced)
    assert structure == traced_structure
    for (path, a), b in zip(got, want, strict=True):
        where = jax.tree_util.keystr(path)
        if where.endswith(".extra"):  # StudentT's df: () here, (1,) as NumPyro promotes it
            b = b.reshape(a.shape)
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    # The points reach every case: inside, on and outside a box and the noise support.
    support = np.stack([np.asarray(terms.support) for terms, _, _ in registered[1]])
    curve = support[:, : len(model.free_names)]
    assert curve[:3].all() and not curve[3:].any()
    if model.has_noise:
        assert support[:, -1].tolist() == [True, False, False, True, True]


def test_a_users_numpyro_prior_takes_the_traced_path():
    """priors={...} (NumPyro distributions): the closed form gives no priors, the problem
    reads them from a trace (the user's and the defaults), and fit_peaks honours the
    user's bound (the true width 0.3 lies below it: the fit ends on it)."""
    import gaussmix
    from gaussmix.peaks.result import PeakFitWarning

    user = {"peak0_sigma": dist.Uniform(0.5, 9.0)}
    problem, _ = _problem(("gaussian",), "linear", "normal", {}, {}, {})
    problem = problem._replace(model_kwargs={**problem.model_kwargs, "priors": user})
    assert latent_priors(problem.x, problem.y, **problem.model.keywords, priors=user) is None
    theta = jnp.asarray([2.0, 4.0, 0.8, 0.3, 0.0])
    priors = problem.with_priors(theta, jnp.asarray(0.1)).priors
    assert isinstance(priors["peak0_sigma"], dist.Uniform)
    assert float(priors["peak0_sigma"].low) == 0.5
    assert isinstance(priors["peak0_height"], dist.Uniform)
    assert isinstance(priors["sigma"], dist.HalfNormal)

    rng = np.random.default_rng(0)
    y = 3.0 * np.exp(-0.5 * ((X - 4.0) / 0.3) ** 2) + 0.2 + 0.01 * rng.normal(size=X.size)
    init = {"peak0_height": 2.5, "peak0_center": 4.1, "peak0_sigma": 0.8}  # inside the prior
    with pytest.warns(PeakFitWarning, match="ended at a bound"):
        fit = gaussmix.fit_peaks(X, y, ("gaussian",), baseline="linear", init=init, priors=user)
    assert float(fit.params["peak0_sigma"]) == pytest.approx(0.5, abs=1e-6)
    free = gaussmix.fit_peaks(X, y, ("gaussian",), baseline="linear", init=init)
    assert float(free.params["peak0_sigma"]) == pytest.approx(0.3, rel=0.05)
