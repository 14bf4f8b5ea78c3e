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

__all__ = [
    "FALLBACK_JITTER",
    "LAPLACE_MAX_DIMENSION",
    "NEWTON_STEPS",
    "build_prepare",
    "laplace",
    "map_search",
]

#: Largest number of unconstrained dimensions for which the Laplace Hessian is formed.
LAPLACE_MAX_DIMENSION = 500
#: Newton steps at most from the given (or found) center toward the mode (:func:`laplace`).
NEWTON_STEPS = 20
#: Standard deviation of the jitter (unconstrained space) when there is no Laplace fit.
FALLBACK_JITTER = 0.1
#: BFGS iterations of the generic MAP search, and restarts after a failed line search.
_MAP_MAX_ITERATIONS = 200
_MAP_RESTARTS = 10


def build_prepare(program: Program, num_chains: int, has_init: bool) -> Callable:
    """``build(found)`` of the preparation program, for :func:`~.program.compiled`.

    The compiled ``prepare(dynamic, init_values, seed)`` (``seed``: an integer scalar or
    a JAX key) returns a dict with ``starts`` (C, P), ``covariance`` (P, P) or (P,),
    ``laplace_valid``, ``fallback`` (``(center, U, dU)`` of the mode), ``valid`` (finite
    potential and gradient at the initial point and at the mode), ``map_accepted``, and
    the keys of the later programs: ``chain_keys`` (C,) and ``predictive_key``. Tracing
    it records the program's :class:`~.program.Structure` as ``found["structure"]``.
    """

    def build(found: dict):
        def prepare(dynamic, init_values, seed):
            args, kwargs = program.arguments(dynamic)
            rng_key = (
                seed if jnp.issubdtype(seed.dtype, jax.dtypes.prng_key) else jax.random.key(seed)
            )
            # Every key of the three programs from one split (each split is a threefry).
            keys = jax.random.split(rng_key, 3 + num_chains)
            init_key, noise_key, predictive_key, chain_keys = keys[0], keys[1], keys[2], keys[3:]
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
            starts, laplace_valid, covariance, fallback = laplace(
                flat_potential, center, noise, NEWTON_STEPS
            )
            valid = start_valid & jnp.isfinite(fallback[1]) & jnp.all(jnp.isfinite(fallback[2]))
            return {
                "starts": starts,
                "covariance": covariance,
                "laplace_valid": laplace_valid,
                "fallback": fallback,
                "valid": valid,
                "map_accepted": map_accepted,
                "chain_keys": chain_keys,
                "predictive_key": predictive_key,
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
    accepted = (
        jnp.all(jnp.isfinite(position)) & jnp.isfinite(energy) & _stationary(energy, gradient)
    )
    return jnp.where(accepted, position, start), accepted


def _stationary(energy, gradient):
    r"""Nearly stationary: :math:`\max_i |\partial_i U| \le 10^{-3} \max(1, |U|)`."""
    return jnp.max(jnp.abs(gradient)) <= 1e-3 * jnp.maximum(1.0, jnp.abs(energy))


def laplace(flat_potential: Callable, center: jax.Array, noise: jax.Array, max_steps: int = 0):
    """The mode refined by Newton steps, its Laplace covariance, jittered chain starts.

    The Hessian is the central difference of gradients, one coordinate after the other
    (``lax.map``: the gradient is compiled once, unlike ``jax.hessian``). While the
    point is not stationary (as :func:`map_search` accepts a mode), at most
    ``max_steps`` damped Newton steps :math:`z \\leftarrow z - s\\,|H|^{-1} \nabla U`
    move it toward the mode (:math:`|H|`: the Hessian with its eigenvalues made
    positive, so that a saddle is left downhill; :math:`s` halves after a step that does
    not lower :math:`U`, and grows back after one that does). A start given away from the
    mode (e.g. a maximum-likelihood fit, where the posterior's Hessian can be
    indefinite) thus ends at the mode and its curvature; where the steps find no
    stationary point (a density without a mode), the center stays as given. One loop
    evaluates every point, so the gradient is compiled once. A start is :math:`z^* + L^{-\top} e`,
    :math:`H = L L^\top`, :math:`e` = ``noise``, so that it has covariance
    :math:`H^{-1}`. Beyond :data:`LAPLACE_MAX_DIMENSION` dimensions, or where :math:`H`
    is not positive definite, the jitter is :data:`FALLBACK_JITTER` ``* noise`` and the
    covariance the identity.

    Args:
        flat_potential: :math:`U` of a flat (P,) unconstrained position.
        center: (P,) the mode, or a point near it.
        noise: (C, P) standard normal draws, one row per chain.
        max_steps: (static) Newton steps at most (0: the Hessian at ``center`` only).

    Returns:
        ``(starts (C, P), valid, covariance (P, P) or ones (P,), (center, U, dU))``, the
        center after the Newton steps.

    Example:
        >>> import jax.numpy as jnp
        >>> starts, valid, covariance, (mode, _, _) = laplace(
        ...     lambda z: 2.0 * jnp.sum((z - 1.0) ** 2), jnp.zeros(2), jnp.ones((1, 2)), 5)
        >>> bool(valid), covariance.round(4).tolist(), mode.round(3).tolist()
        (True, [[0.25, 0.0], [0.0, 0.25]], [1.0, 1.0])
    """
    dimension = center.size
    identity = jnp.eye(dimension, dtype=center.dtype)
    value_and_grad = jax.value_and_grad(flat_potential)
    if dimension > LAPLACE_MAX_DIMENSION:
        energy, gradient = value_and_grad(center)
        return (
            center + FALLBACK_JITTER * noise,
            jnp.asarray(False),
            jnp.ones_like(center),
            (center, energy, gradient),
        )

    def evaluate(point):
        """U, its gradient and the central-difference Hessian at ``point``."""
        step = jnp.finfo(point.dtype).eps ** (1 / 3) * jnp.maximum(1.0, jnp.abs(point))
        offsets = jnp.concatenate(
            [jnp.zeros((1, dimension), point.dtype), identity * step, -identity * step]
        )
        energies, gradients = lax.map(value_and_grad, point + offsets)
        # Row i: the change of the gradient along coordinate i.
        hessian = (gradients[1 : dimension + 1] - gradients[dimension + 1 :]) / (2 * step[:, None])
        return energies[0], gradients[0], 0.5 * (hessian + hessian.T)

    def newton_step(point, gradient, hessian):
        eigenvalues, vectors = jnp.linalg.eigh(hessian)
        magnitude = jnp.abs(eigenvalues)
        magnitude = jnp.maximum(magnitude, 1e-6 * jnp.max(magnitude) + jnp.finfo(point.dtype).tiny)
        return vectors @ ((vectors.T @ gradient) / magnitude)

    def keep_going(state):
        _, _, energy, gradient, _, scale, steps, _ = state
        return (steps == 0) | (
            (steps <= max_steps) & ~_stationary(energy, gradient) & (scale > 1e-3)
        )

    def iterate(state):
        candidate, point, energy, gradient, hessian, scale, steps, first = state
        new_energy, new_gradient, new_hessian = evaluate(candidate)
        finite = (
            jnp.isfinite(new_energy)
            & jnp.all(jnp.isfinite(new_gradient))
            & jnp.all(jnp.isfinite(new_hessian))
        )
        better = (steps == 0) | (finite & (new_energy < energy))
        point = jnp.where(better, candidate, point)
        energy = jnp.where(better, new_energy, energy)
        gradient = jnp.where(better, new_gradient, gradient)
        hessian = jnp.where(better, new_hessian, hessian)
        first = jax.tree.map(
            lambda new, old: jnp.where(steps == 0, new, old), (energy, gradient, hessian), first
        )
        scale = jnp.where(
            steps == 0, 1.0, jnp.where(better, jnp.minimum(1.0, 2 * scale), scale / 2)
        )
        step = newton_step(point, gradient, hessian)
        candidate = jnp.where(jnp.all(jnp.isfinite(step)), point - scale * step, point)
        return candidate, point, energy, gradient, hessian, scale, steps + 1, first

    zero = jnp.zeros((), center.dtype)
    first = (zero, jnp.zeros_like(center), identity)
    initial = (center, center, zero, jnp.zeros_like(center), identity, zero + 1, 0, first)
    _, point, energy, gradient, hessian, _, _, first = lax.while_loop(keep_going, iterate, initial)
    # Moved only to a mode (as map_search accepts one): a density without one (a funnel)
    # keeps the given center.
    found = jnp.all(jnp.isfinite(point)) & jnp.isfinite(energy) & _stationary(energy, gradient)
    center = jnp.where(found, point, center)
    energy, gradient, hessian = jax.tree.map(
        lambda refined, given: jnp.where(found, refined, given),
        (energy, gradient, hessian),
        first,
    )
    fallback = (center, energy, gradient)
    cholesky = jnp.linalg.cholesky(hessian)
    valid = jnp.all(jnp.isfinite(cholesky))
    safe = jnp.where(valid, cholesky, identity)
    # z = z* + L^{-T} e has covariance H^{-1}.
    jitter = jax.scipy.linalg.solve_triangular(safe.T, noise.T, lower=False).T
    jitter = jnp.where(valid, jitter, FALLBACK_JITTER * noise)
    covariance = jnp.where(valid, jax.scipy.linalg.cho_solve((safe, True), identity), identity)
    return center + jitter, valid, covariance, fallback
