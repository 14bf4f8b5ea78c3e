"""Where the NUTS chains start: the mode, its Laplace approximation, jittered starts.

The chains start at the mode :math:`z^*` of the unconstrained potential :math:`U` with
jitter drawn from the Laplace approximation :math:`\\mathcal{N}(z^*, H^{-1})`,
:math:`H = \\nabla^2 U(z^*)` (central differences of the gradient), which also seeds
the mass matrix. The mode is given (constrained site values: ``init``, or the starting
point a program's sampling hooks provide) or found by BFGS from NumPyro's
``init_to_median`` (:func:`map_search`).
"""

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro.infer.initialization import init_to_median, init_to_value
from numpyro.infer.util import initialize_model

from gaussmix.inference.mcmc.program import Program, Structure

__all__ = ["FALLBACK_JITTER", "LAPLACE_MAX_DIMENSION", "build_prepare", "laplace", "map_search"]

#: Largest number of unconstrained dimensions for which the Laplace Hessian is formed.
LAPLACE_MAX_DIMENSION = 500
#: Standard deviation of the jitter (unconstrained space) when there is no Laplace fit.
FALLBACK_JITTER = 0.1
#: BFGS iterations of the generic MAP search, and restarts after a failed line search.
_MAP_MAX_ITERATIONS = 200
_MAP_RESTARTS = 10


def build_prepare(program: Program, num_chains: int, has_init: bool) -> Callable:
    """``build(found)`` of the preparation program, for :func:`~.program.compiled`.

    The compiled ``prepare(dynamic, init_values, rng_key)`` returns a dict with
    ``starts`` (C, P), ``covariance`` (P, P) or (P,), ``laplace_valid``, ``fallback``
    (``(center, U, dU)`` of the mode), ``start_valid`` (finite potential and gradient
    at the initial point) and ``map_accepted``; tracing it records the program's
    :class:`~.program.Structure` as ``found["structure"]``.
    """

    def build(found: dict):
        def prepare(dynamic, init_values, rng_key):
            args, kwargs = program.arguments(dynamic)
            init_key, noise_key = jax.random.split(rng_key)
            info = initialize_model(
                init_key,
                program.model,
                init_strategy=init_to_value(values=init_values) if has_init else init_to_median,
                dynamic_args=True,
                model_args=args,
                model_kwargs=kwargs,
            )
            start, unravel = ravel_pytree(info.param_info.z)
            sites = info.model_trace.items()
            found["structure"] = Structure(
                potential_fn_gen=info.potential_fn,
                unravel=unravel,
                latent=tuple(info.param_info.z),
                deterministic=tuple(n for n, s in sites if s["type"] == "deterministic"),
                observed=tuple(n for n, s in sites if s["type"] == "sample" and s["is_observed"]),
            )
            potential = info.potential_fn(*args, **kwargs)

            def flat_potential(flat):
                return potential(unravel(flat))

            start_energy = info.param_info.potential_energy
            start_valid = jnp.isfinite(start_energy) & jnp.all(
                jnp.isfinite(ravel_pytree(info.param_info.z_grad)[0])
            )
            if has_init:
                center, map_accepted = start, jnp.asarray(True)
            else:
                center, map_accepted = map_search(flat_potential, start, start_energy)
            noise = jax.random.normal(noise_key, (num_chains, start.size), start.dtype)
            starts, laplace_valid, covariance, fallback = laplace(flat_potential, center, noise)
            return {
                "starts": starts,
                "covariance": covariance,
                "laplace_valid": laplace_valid,
                "fallback": fallback,
                "start_valid": start_valid,
                "map_accepted": map_accepted,
            }

        return prepare

    return build


def map_search(flat_potential: Callable, start: jax.Array, start_energy: jax.Array):
    """Minimize the potential by BFGS, restarted (fresh Hessian estimate) until it converges.

    JAX's BFGS stops at the first failed line search; restarting from where it stopped
    resets its Hessian estimate and usually finishes the job. A mode is accepted when it
    is finite, no worse than the start and (nearly) stationary,
    :math:`\\max_i |\\partial_i U| \\le 10^{-3} \\max(1, |U|)`, so that a search running
    off to an unbounded density is refused.

    Args:
        flat_potential: :math:`U` of a flat (P,) unconstrained position.
        start: (P,) starting position.
        start_energy: :math:`U` there.

    Returns:
        ``(mode (P,), accepted)``; the mode is ``start`` when not accepted.

    Example:
        >>> import jax.numpy as jnp
        >>> mode, accepted = map_search(lambda z: jnp.sum((z - 1.0) ** 2), jnp.zeros(2), 2.0)
        >>> mode.round(4).tolist(), bool(accepted)
        ([1.0, 1.0], True)
    """

    def keep_going(carry):
        _, _, _, success, restarts = carry
        return ~success & (restarts < _MAP_RESTARTS)

    def restart(carry):
        position, energy, gradient, _, restarts = carry
        result = jax.scipy.optimize.minimize(
            flat_potential, position, method="BFGS", options={"maxiter": _MAP_MAX_ITERATIONS}
        )
        usable = jnp.all(jnp.isfinite(result.x)) & jnp.isfinite(result.fun) & (result.fun <= energy)
        return (
            jnp.where(usable, result.x, position),
            jnp.where(usable, result.fun, energy),
            jnp.where(usable, result.jac, gradient),
            result.success | ~usable,
            restarts + 1,
        )

    initial = (start, start_energy, jnp.full_like(start, jnp.inf), jnp.asarray(False), 0)
    position, energy, gradient, _, _ = lax.while_loop(keep_going, restart, initial)
    stationary = jnp.max(jnp.abs(gradient)) <= 1e-3 * jnp.maximum(1.0, jnp.abs(energy))
    accepted = jnp.all(jnp.isfinite(position)) & jnp.isfinite(energy) & stationary
    return jnp.where(accepted, position, start), accepted


def laplace(flat_potential: Callable, center: jax.Array, noise: jax.Array):
    """Potential and gradient at the mode, Laplace covariance, jittered chain starts.

    The Hessian is the central difference of gradients, one coordinate after the other
    (``lax.map``: the gradient is compiled once, unlike ``jax.hessian``); a start is
    :math:`z^* + L^{-\\top} e`, :math:`H = L L^\\top`, :math:`e` = ``noise``, so that it
    has covariance :math:`H^{-1}`. Beyond :data:`LAPLACE_MAX_DIMENSION` dimensions, or
    where :math:`H` is not positive definite, the jitter is :data:`FALLBACK_JITTER`
    ``* noise`` and the covariance the identity.

    Args:
        flat_potential: :math:`U` of a flat (P,) unconstrained position.
        center: (P,) the mode.
        noise: (C, P) standard normal draws, one row per chain.

    Returns:
        ``(starts (C, P), valid, covariance (P, P) or ones (P,), (center, U, dU))``.

    Example:
        >>> import jax.numpy as jnp
        >>> starts, valid, covariance, _ = laplace(
        ...     lambda z: 2.0 * jnp.sum(z**2), jnp.zeros(2), jnp.ones((1, 2)))
        >>> bool(valid), covariance.round(4).tolist()
        (True, [[0.25, 0.0], [0.0, 0.25]])
    """
    dimension = center.size
    with_hessian = dimension <= LAPLACE_MAX_DIMENSION
    identity = jnp.eye(dimension, dtype=center.dtype)
    if with_hessian:
        step = jnp.finfo(center.dtype).eps ** (1 / 3) * jnp.maximum(1.0, jnp.abs(center))
        offsets = jnp.concatenate(
            [jnp.zeros((1, dimension), center.dtype), identity * step, -identity * step]
        )
    else:
        offsets = jnp.zeros((1, dimension), center.dtype)
    energies, gradients = lax.map(jax.value_and_grad(flat_potential), center + offsets)
    fallback = (center, energies[0], gradients[0])
    if not with_hessian:
        return (
            center + FALLBACK_JITTER * noise,
            jnp.asarray(False),
            jnp.ones_like(center),
            fallback,
        )
    # Row i: the change of the gradient along coordinate i.
    hessian = (gradients[1 : dimension + 1] - gradients[dimension + 1 :]) / (2 * step[:, None])
    hessian = 0.5 * (hessian + hessian.T)
    cholesky = jnp.linalg.cholesky(hessian)
    valid = jnp.all(jnp.isfinite(cholesky))
    safe = jnp.where(valid, cholesky, identity)
    # z = z* + L^{-T} e has covariance H^{-1}.
    jitter = jax.scipy.linalg.solve_triangular(safe.T, noise.T, lower=False).T
    jitter = jnp.where(valid, jitter, FALLBACK_JITTER * noise)
    covariance = jnp.where(valid, jax.scipy.linalg.cho_solve((safe, True), identity), identity)
    return center + jitter, valid, covariance, fallback
