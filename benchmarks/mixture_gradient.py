"""One gradient of the mixture program's potential: its observed site against NumPyro's.

The program's observed site ``x`` is :class:`gaussmix.models.mixture.GaussianMixtureDistribution`
(inverse Cholesky factors, all N points at once, log-sum-exp over K). Its peer is the
same program with that site written the plain NumPyro way, ``MixtureSameFamily`` of
``MultivariateNormal(scale_tril)`` (full, tied) or ``Normal(...).to_event(1)`` (diag,
spherical), which is what the program used before. Both potentials (unconstrained, as
NUTS sees them) are jitted once, timed interleaved (best of 7 x 300 calls), and checked to
agree in value and gradient.

Run: ``.venv/bin/python benchmarks/mixture_gradient.py``. Numbers go to BENCHMARKS.md.
"""

import os
import time
from unittest import mock

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import numpyro.distributions as dist  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402
from numpyro.infer.util import initialize_model  # noqa: E402

from gaussmix.models import mixture  # noqa: E402


def mixture_same_family(weights, means, covariance, covariance_type):
    """The observed site as plain NumPyro writes it."""
    components = mixture.component_distribution(means, covariance, covariance_type)
    return dist.MixtureSameFamily(dist.Categorical(probs=weights), components)


def potential_gradient(x, kwargs, plain: bool):
    """Jitted value and gradient of the potential, traced with the chosen observed site."""
    site = mixture_same_family if plain else mixture.GaussianMixtureDistribution
    patch = mock.patch.object(mixture, "GaussianMixtureDistribution", site)
    with patch:
        info = initialize_model(
            jax.random.key(0), mixture.gaussian_mixture, model_args=(x,), model_kwargs=kwargs
        )
        flat, unravel = ravel_pytree(info.param_info.z)
        function = jax.jit(jax.value_and_grad(lambda z: info.potential_fn(unravel(z))))
        jax.block_until_ready(function(flat))  # traced and compiled inside the patch
    return function, flat


def seconds_per_call(function, flat, calls=300) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        result = function(flat)
    jax.block_until_ready(result)
    return (time.perf_counter() - start) / calls


def main() -> None:
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(1000, 1))
    x2 = rng.normal(size=(2000, 2)) * 4
    x5 = rng.normal(size=(2000, 5))
    m1_priors = {
        "weights": dist.Dirichlet(jnp.array([5.0, 5.0])),
        "means": dist.Normal(0.0, 2.0),
        "scales": dist.HalfNormal(2.0),
    }
    cases = [
        (
            "M1: 1-D, K=2 spherical, N=1000",
            x1,
            {"n_components": 2, "covariance_type": "spherical", "priors": m1_priors},
        ),
        ("M2: 2-D, K=4 full, N=2000", x2, {"n_components": 4, "covariance_type": "full"}),
        ("2-D, K=4 tied, N=2000", x2, {"n_components": 4, "covariance_type": "tied"}),
        ("2-D, K=4 diag, N=2000", x2, {"n_components": 4, "covariance_type": "diag"}),
        ("SBC: 2-D, K=3 full, N=90", x2[:90], {"n_components": 3, "covariance_type": "full"}),
        ("5-D, K=4 full, N=2000", x5, {"n_components": 4, "covariance_type": "full"}),
    ]
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(
        f"{'case':32s} {'NumPyro us':>10s} {'gaussmix us':>11s} {'speed-up':>8s}  max |diff| (value, gradient)"
    )
    for name, x, kwargs in cases:
        plain, flat = potential_gradient(x, kwargs, plain=True)
        ours, _ = potential_gradient(x, kwargs, plain=False)
        plain_best = ours_best = np.inf
        for _ in range(7):
            plain_best = min(plain_best, seconds_per_call(plain, flat))
            ours_best = min(ours_best, seconds_per_call(ours, flat))
        (plain_value, plain_gradient), (our_value, our_gradient) = plain(flat), ours(flat)
        print(
            f"{name:32s} {plain_best * 1e6:10.1f} {ours_best * 1e6:11.1f} "
            f"{plain_best / ours_best:7.1f}x  {abs(float(plain_value - our_value)):.1e}, "
            f"{float(jnp.max(jnp.abs(plain_gradient - our_gradient))):.1e}",
            flush=True,
        )
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
