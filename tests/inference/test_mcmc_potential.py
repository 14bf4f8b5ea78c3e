"""A program's potential in closed form (the sampling hooks' ``potential_fn_gen``): the
full-covariance mixture's against NumPyro's potential of the program, where the hooks
offer it, and that the chains run on it."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from jax.flatten_util import ravel_pytree
from numpyro.infer.util import potential_energy

from gaussmix.inference.mcmc import sample
from gaussmix.inference.mixture_sampling import mixture_sampling_hooks
from gaussmix.inference.sampling_hooks import SamplingHooks, register_sampling_hooks
from gaussmix.models.mixture import full_covariance_potential, gaussian_mixture
from gaussmix.models.priors import MixturePriorParameters


@pytest.mark.parametrize(
    "n_components, n_features, given, one_dimensional",
    [(1, 1, False, False), (2, 2, False, False), (3, 3, True, False), (2, 1, True, True)],
)
def test_full_covariance_potential_equals_numpyros(
    n_components, n_features, given, one_dimensional
):
    rng = np.random.default_rng(n_components + 10 * n_features)
    x = 1.0 + 2.0 * rng.normal(size=(40, n_features))
    if one_dimensional:
        x = x[:, 0]
    kwargs = {"n_components": n_components, "covariance_type": "full"}
    prior_parameters = None
    if given:
        prior_parameters = MixturePriorParameters(
            jnp.asarray(1.5),
            jnp.full(n_features, -0.5),
            jnp.asarray(0.4),
            jnp.asarray(n_features + 2.0),
            2.0 * jnp.eye(n_features) + 0.3,
        )
        kwargs["prior_parameters"] = prior_parameters
    reference = jax.jit(
        jax.value_and_grad(lambda sites: potential_energy(gaussian_mixture, (x,), kwargs, sites))
    )

    @jax.jit
    def closed_form(prior_parameters, sites):  # given hyperparameters traced
        return jax.value_and_grad(full_covariance_potential(x, n_components, prior_parameters))(
            sites
        )

    shapes = {
        "weights": (n_components - 1,),
        "covariances": (n_components, n_features * (n_features + 1) // 2),
        "means": (n_components, n_features),
    }
    for _ in range(4):
        sites = {name: jnp.asarray(rng.normal(size=shape)) for name, shape in shapes.items()}
        value, gradient = reference(sites)
        closed_value, closed_gradient = closed_form(prior_parameters, sites)
        np.testing.assert_allclose(closed_value, value, rtol=1e-11)
        np.testing.assert_allclose(
            ravel_pytree(closed_gradient)[0], ravel_pytree(gradient)[0], rtol=1e-9, atol=1e-9
        )


@pytest.mark.parametrize(
    "kwargs, closed",
    [
        ({}, True),
        ({"covariance_type": "VVV"}, True),
        ({"prior_parameters": None, "sample_weight": None}, True),
        ({"covariance_type": "tied"}, False),
        ({"covariance_type": "diag"}, False),
        ({"covariance_type": "EEV"}, False),
        ({"sample_weight": np.ones(30)}, False),
        ({"priors": {"weights": dist.Dirichlet(jnp.ones(2))}}, False),
        ({"nan_policy": "marginalize"}, False),
        ({"background_log_density": np.asarray(-3.0)}, False),
        (  # a concentration per component: the program takes it, the closed form does not
            {
                "prior_parameters": MixturePriorParameters(
                    np.array([1.0, 2.0]), np.zeros(2), 1.0, 2.0, np.eye(2)
                )
            },
            False,
        ),
        (
            {"prior_parameters": MixturePriorParameters(2.0, np.zeros(2), 0.5, 4.0, np.eye(2))},
            True,
        ),
    ],
)
def test_the_mixture_hooks_offer_the_closed_form_only_where_it_is_the_programs(kwargs, closed):
    x = np.random.default_rng(0).normal(size=(30, 2))
    arguments = {"n_components": 2, "covariance_type": "full", **kwargs}
    hooks = mixture_sampling_hooks((x,), arguments)
    assert (hooks.potential_fn_gen is not None) == closed


@pytest.mark.parametrize("prior_type", ["dirichlet_process", "dirichlet_distribution"])
def test_the_dirichlet_programs_keep_numpyros_potential(prior_type):
    """The Dirichlet programs reuse the mixture's hooks, but their weights have another
    prior (stick breaking, or a Dirichlet with its concentration): the finite mixture's
    closed form would sample another posterior."""
    from gaussmix.inference.dirichlet_sampling import _COUNT_ARGUMENT, WEIGHT_PRIOR_TYPES
    from gaussmix.inference.sampling_hooks import sampling_hooks

    program = WEIGHT_PRIOR_TYPES[prior_type]
    x = np.random.default_rng(0).normal(size=(30, 2))
    arguments = {_COUNT_ARGUMENT[program]: 3, "covariance_type": "full", "concentration": 0.5}
    assert mixture_sampling_hooks((x,), {"n_components": 3}).potential_fn_gen is not None
    assert sampling_hooks(program, (x,), arguments).potential_fn_gen is None


def shifted_location(y):
    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)


def test_the_chains_and_the_preparation_run_on_the_hooks_potential():
    """A hooks' potential of another density (loc ~ N(50, 0.5^2)) moves the draws there:
    both the preparation (the mode it refines from the program's start) and the chains
    use it, the program's own posterior (near 0) is not sampled."""

    def potential_fn_gen(y):
        return lambda sites: 0.5 * ((sites["loc"] - 50.0) / 0.5) ** 2

    register_sampling_hooks(shifted_location, SamplingHooks(potential_fn_gen=potential_fn_gen))
    y = np.random.default_rng(1).normal(0.0, 1.0, 20)
    tree = sample(
        shifted_location, y, num_warmup=200, num_samples=300, num_chains=1, progress_bar=False
    )
    draws = tree.posterior["loc"].values.ravel()
    assert abs(draws.mean() - 50.0) < 0.2
    assert 0.35 < draws.std() < 0.65


@pytest.mark.parametrize("n_features", [1, 3])
def test_the_closed_forms_default_scalars_are_the_default_priors(n_features):
    from gaussmix.models.mixture import _default_scalar_hyperparameters
    from gaussmix.models.priors import default_prior_parameters

    defaults = default_prior_parameters(np.ones((5, n_features)), "full")
    expected = (defaults.weight_concentration, defaults.mean_precision, defaults.degrees_of_freedom)
    assert _default_scalar_hyperparameters(n_features) == tuple(float(v) for v in expected)
