"""Where the NUTS chains start: the mode, its Laplace approximation, jittered starts.

The chains start at the mode :math:`z^*` of the unconstrained potential :math:`U` with
jitter drawn from the Laplace approximation :math:`\\mathcal{N}(z^*, H^{-1})`,
:math:`H = \\nabla^2 U(z^*)` (central differences of the gradient), which also seeds
the mass matrix. The mode is given (constrained site values: ``init``, or the starting
point a program's sampling hooks provide) or found by BFGS from NumPyro's
``init_to_median`` (:func:`map_search`).
"""

from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from numpyro.handlers import seed
from numpyro.infer.initialization import init_to_median, init_to_value
from numpyro.infer.util import initialize_model, unconstrain_fn

from gaussmix.inference.mcmc.program import Program, Structure

__all__ = [
    "FALLBACK_JITTER",
    "LAPLACE_MAX_DIMENSION",
    "NEWTON_STEPS",
    "LaplaceFit",
    "build_prepare",
    "build_structure",
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


def build_prepare(
    program: Program, num_chains: int, has_init: bool, potential_fn_gen: Callable | None = None
) -> Callable:
    """``build(found)`` of the preparation program, for :func:`~.program.compiled`.

    The compiled ``prepare(dynamic, init_values, seed)`` (``seed``: an integer scalar or
    a JAX key) returns a dict with ``starts`` (C, P), ``start_values`` (``(U (C,), dU
    (C, P))`` at the starts), ``covariance`` (P, P) or (P,), ``laplace_valid``,
    ``fallback`` (``(center, U, dU)`` of the mode), ``valid`` (finite potential and
    gradient at the initial point and at the mode), ``map_accepted``, and the keys of
    the later programs: ``chain_keys`` (C,) and ``predictive_key``. Tracing it records
    the program's :class:`~.program.Structure` as ``found["structure"]``.

    When ``init_values`` name every latent site with its shape (the sampling hooks'
    starting point, a full ``init``), the initial point is their unconstrained image
    and the program evaluates the potential in one place only, the Laplace fit's loop
    (NumPyro's ``initialize_model`` runs in an abstract trace, for the structure): the
    gradient, most of the program, is compiled once.

    ``potential_fn_gen`` (the sampling hooks' closed form) replaces the structure's
    potential in the search of the mode and the Laplace fit.
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

            # Abstractly first: the structure and the latent sites' shapes, nothing compiled
            # (and no gradient traced: only the shapes are read).
            latent_shapes = jax.eval_shape(
                partial(_initialize, program, found, has_init, validate_grad=False),
                dynamic,
                init_values,
                init_key,
            )[0]
            structure = found["structure"]
            start = _unconstrained_start(
                program, args, kwargs, init_values, latent_shapes, init_key
            )
            start_given = start is not None
            if not start_given:  # NumPyro's search for a valid point, compiled
                _, start, start_energy, start_valid = _initialize(
                    program, found, has_init, dynamic, init_values, init_key
                )
            potential = (potential_fn_gen or structure.potential_fn_gen)(*args, **kwargs)

            def flat_potential(flat):
                return potential(structure.unravel(flat))

            if has_init:
                center, map_accepted = start, jnp.asarray(True)
            else:
                center, map_accepted = map_search(flat_potential, start, start_energy)
            noise = jax.random.normal(noise_key, (num_chains, start.size), start.dtype)
            fit = laplace(flat_potential, center, noise, NEWTON_STEPS)
            if start_given:  # the start is the Laplace fit's given center
                start_valid = fit.given_finite
            fallback = fit.fallback
            valid = start_valid & jnp.isfinite(fallback[1]) & jnp.all(jnp.isfinite(fallback[2]))
            return {
                "starts": fit.starts,
                "start_values": fit.start_values,
                "covariance": fit.covariance,
                "laplace_valid": fit.valid,
                "fallback": fallback,
                "valid": valid,
                "map_accepted": map_accepted,
                "chain_keys": chain_keys,
                "predictive_key": predictive_key,
            }

        return prepare

    return build


def build_structure(program: Program, has_init: bool) -> Callable:
    """``build(found)`` that only records the program's :class:`~.program.Structure` in
    ``found`` (an abstract trace of NumPyro's initialization, no gradient traced):
    what a preparation program loaded from the persistent cache needs, without tracing
    the whole preparation again (:func:`~.program.compiled`'s ``refill``)."""

    def build(found: dict):
        def record(dynamic, init_values, seed):
            return _initialize(
                program, found, has_init, dynamic, init_values, jax.random.key(0), False
            )[0]

        return record

    return build


def _initialize(program, found, has_init, dynamic, init_values, init_key, validate_grad=True):
    """NumPyro's ``initialize_model`` of the program: records its structure in ``found``
    and returns ``(latent values, flat start, potential, valid)``; without
    ``validate_grad`` no gradient is traced (the validity is then the potential's)."""
    args, kwargs = program.arguments(dynamic)
    info = initialize_model(
        init_key,
        program.model,
        init_strategy=init_to_value(values=init_values) if has_init else init_to_median,
        dynamic_args=True,
        model_args=args,
        model_kwargs=kwargs,
        validate_grad=validate_grad,
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
    start_valid = jnp.isfinite(info.param_info.potential_energy)
    if validate_grad:
        start_valid = start_valid & jnp.all(jnp.isfinite(ravel_pytree(info.param_info.z_grad)[0]))
    return info.param_info.z, start, info.param_info.potential_energy, start_valid


def _unconstrained_start(program, args, kwargs, init_values, latent_shapes, rng_key):
    """The flat unconstrained image of ``init_values`` (what NumPyro's ``init_to_value``
    starts from), or None when they do not name every latent site with its shape and
    dtype (NumPyro's initialization then fills the rest)."""
    if init_values is None or not set(latent_shapes) <= set(init_values):
        return None
    values = {name: init_values[name] for name in latent_shapes}
    unconstrained = unconstrain_fn(seed(program.model, rng_key), args, kwargs, values)
    for name, shape in latent_shapes.items():
        value = unconstrained.get(name)
        if value is None or (jnp.shape(value), jnp.result_type(value)) != (
            shape.shape,
            shape.dtype,
        ):
            return None
    return ravel_pytree({name: unconstrained[name] for name in latent_shapes})[0]


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


class LaplaceFit(NamedTuple):
    """What :func:`laplace` returns.

    Attributes:
        starts: (C, P) jittered chain starts.
        valid: the Hessian at the center is positive definite.
        covariance: (P, P) :math:`H^{-1}` (the identity where not valid), or ones (P,)
            beyond :data:`LAPLACE_MAX_DIMENSION` dimensions.
        fallback: ``(center, U, dU)``, the center after the Newton steps.
        start_values: ``(U (C,), dU (C, P))`` at the starts.
        given_finite: :math:`U` and its gradient are finite at the center given.
    """

    starts: jax.Array
    valid: jax.Array
    covariance: jax.Array
    fallback: tuple
    start_values: tuple
    given_finite: jax.Array


class _NewtonState(NamedTuple):
    points: jax.Array  # (R, P) evaluated by the next iteration
    step: jax.Array  # (P,) finite-difference step of the stencil in points
    phase: jax.Array  # 0: Newton steps, 1: the starts are being evaluated, 2: done
    point: jax.Array
    energy: jax.Array
    gradient: jax.Array
    hessian: jax.Array
    scale: jax.Array
    steps: jax.Array
    first: tuple  # (U, dU, H) at the given center
    fit: LaplaceFit


def laplace(
    flat_potential: Callable, center: jax.Array, noise: jax.Array, max_steps: int = 0
) -> LaplaceFit:
    """The mode refined by Newton steps, its Laplace covariance, jittered chain starts.

    The Hessian is the central difference of gradients, one coordinate after the other.
    While the point is not stationary (as :func:`map_search` accepts a mode), at most
    ``max_steps`` damped Newton steps :math:`z \\leftarrow z - s\\,|H|^{-1} \\nabla U`
    move it toward the mode (:math:`|H|`: the Hessian with its eigenvalues made
    positive, so that a saddle is left downhill; :math:`s` halves after a step that does
    not lower :math:`U`, and grows back after one that does). A start given away from the
    mode (e.g. a maximum-likelihood fit, where the posterior's Hessian can be
    indefinite) thus ends at the mode and its curvature; where the steps find no
    stationary point (a density without a mode), the center stays as given. A start is
    :math:`z^* + L^{-\\top} e`, :math:`H = L L^\\top`, :math:`e` = ``noise``, so that it
    has covariance :math:`H^{-1}`. Beyond :data:`LAPLACE_MAX_DIMENSION` dimensions, or
    where :math:`H` is not positive definite, the jitter is :data:`FALLBACK_JITTER`
    ``* noise`` and the covariance the identity.

    Every point, the stencils of the Newton steps and at last the chain starts (whose
    potential and gradient the chains begin with), is evaluated by one ``lax.map`` in
    one loop: the potential and its gradient, most of the program, are compiled once.

    Args:
        flat_potential: :math:`U` of a flat (P,) unconstrained position.
        center: (P,) the mode, or a point near it.
        noise: (C, P) standard normal draws, one row per chain.
        max_steps: (static) Newton steps at most (0: the Hessian at ``center`` only).

    Returns:
        :class:`LaplaceFit`.

    Example:
        >>> import jax.numpy as jnp
        >>> fit = laplace(
        ...     lambda z: 2.0 * jnp.sum((z - 1.0) ** 2), jnp.zeros(2), jnp.ones((1, 2)), 5)
        >>> bool(fit.valid), fit.covariance.round(4).tolist(), fit.fallback[0].round(3).tolist()
        (True, [[0.25, 0.0], [0.0, 0.25]], [1.0, 1.0])
        >>> bool(jnp.allclose(fit.start_values[0], 2.0 * jnp.sum((fit.starts - 1.0) ** 2, -1)))
        True
    """
    dimension = center.size
    num_chains = noise.shape[0]
    identity = jnp.eye(dimension, dtype=center.dtype)
    value_and_grad = jax.value_and_grad(flat_potential)

    def finite(energy, gradient):
        return jnp.isfinite(energy) & jnp.all(jnp.isfinite(gradient), axis=-1)

    if dimension > LAPLACE_MAX_DIMENSION:
        starts = center + FALLBACK_JITTER * noise
        energies, gradients = lax.map(value_and_grad, jnp.concatenate([center[None], starts]))
        return LaplaceFit(
            starts,
            jnp.asarray(False),
            jnp.ones_like(center),
            (center, energies[0], gradients[0]),
            (energies[1:], gradients[1:]),
            finite(energies[0], gradients[0]),
        )

    rows = max(2 * dimension + 1, num_chains)

    def stencil(point):
        """The point, then the point moved by + and - a step along each coordinate."""
        step = jnp.finfo(point.dtype).eps ** (1 / 3) * jnp.maximum(1.0, jnp.abs(point))
        offsets = jnp.concatenate(
            [
                jnp.zeros((1, dimension), point.dtype),
                identity * step,
                -identity * step,
                jnp.zeros((rows - 2 * dimension - 1, dimension), point.dtype),
            ]
        )
        return point + offsets, step

    def newton_step(point, gradient, hessian):
        eigenvalues, vectors = jnp.linalg.eigh(hessian)
        magnitude = jnp.abs(eigenvalues)
        magnitude = jnp.maximum(magnitude, 1e-6 * jnp.max(magnitude) + jnp.finfo(point.dtype).tiny)
        return vectors @ ((vectors.T @ gradient) / magnitude)

    def finish(state: _NewtonState) -> LaplaceFit:
        """Center, covariance and starts once the Newton steps have stopped."""
        # Moved only to a mode (as map_search accepts one): a density without one (a
        # funnel) keeps the given center.
        found = (
            jnp.all(jnp.isfinite(state.point))
            & jnp.isfinite(state.energy)
            & _stationary(state.energy, state.gradient)
        )
        point = jnp.where(found, state.point, center)
        energy, gradient, hessian = jax.tree.map(
            lambda refined, given: jnp.where(found, refined, given),
            (state.energy, state.gradient, state.hessian),
            state.first,
        )
        cholesky = jnp.linalg.cholesky(hessian)
        valid = jnp.all(jnp.isfinite(cholesky))
        safe = jnp.where(valid, cholesky, identity)
        # z = z* + L^{-T} e has covariance H^{-1}.
        jitter = jax.scipy.linalg.solve_triangular(safe.T, noise.T, lower=False).T
        jitter = jnp.where(valid, jitter, FALLBACK_JITTER * noise)
        covariance = jnp.where(valid, jax.scipy.linalg.cho_solve((safe, True), identity), identity)
        return state.fit._replace(
            starts=point + jitter,
            valid=valid,
            covariance=covariance,
            fallback=(point, energy, gradient),
        )

    def newton(state: _NewtonState, energies, gradients) -> _NewtonState:
        """One Newton iteration from the stencil evaluated at ``state.points[0]``."""
        candidate, steps = state.points[0], state.steps
        # Row i: the change of the gradient along coordinate i.
        difference = gradients[1 : dimension + 1] - gradients[dimension + 1 : 2 * dimension + 1]
        new_hessian = difference / (2 * state.step[:, None])
        new_hessian = 0.5 * (new_hessian + new_hessian.T)
        new_energy, new_gradient = energies[0], gradients[0]
        usable = finite(new_energy, new_gradient) & jnp.all(jnp.isfinite(new_hessian))
        better = (steps == 0) | (usable & (new_energy < state.energy))
        point, energy, gradient, hessian = jax.tree.map(
            lambda new, old: jnp.where(better, new, old),
            (candidate, new_energy, new_gradient, new_hessian),
            (state.point, state.energy, state.gradient, state.hessian),
        )
        first = jax.tree.map(
            lambda new, old: jnp.where(steps == 0, new, old),
            (energy, gradient, hessian),
            state.first,
        )
        scale = jnp.where(
            steps == 0, 1.0, jnp.where(better, jnp.minimum(1.0, 2 * state.scale), state.scale / 2)
        )
        steps = steps + 1
        state = state._replace(
            point=point,
            energy=energy,
            gradient=gradient,
            hessian=hessian,
            scale=scale,
            steps=steps,
            first=first,
        )
        step = newton_step(point, gradient, hessian)
        candidate = jnp.where(jnp.all(jnp.isfinite(step)), point - scale * step, point)
        going = (steps <= max_steps) & ~_stationary(energy, gradient) & (scale > 1e-3)

        def next_step(state):
            points, step = stencil(candidate)
            return state._replace(points=points, step=step)

        def evaluate_starts(state):
            fit = finish(state)
            padding = jnp.broadcast_to(fit.fallback[0], (rows - num_chains, dimension))
            points = jnp.concatenate([fit.starts, padding])
            return state._replace(points=points, phase=jnp.ones_like(state.phase), fit=fit)

        return lax.cond(going, next_step, evaluate_starts, state)

    def record_starts(state: _NewtonState, energies, gradients) -> _NewtonState:
        fit = state.fit._replace(
            start_values=(energies[:num_chains], gradients[:num_chains]),
            given_finite=finite(state.first[0], state.first[1]),
        )
        return state._replace(phase=jnp.full_like(state.phase, 2), fit=fit)

    def iterate(state: _NewtonState) -> _NewtonState:
        energies, gradients = lax.map(value_and_grad, state.points)  # the one evaluation
        return lax.cond(state.phase == 0, newton, record_starts, state, energies, gradients)

    zero = jnp.zeros((), center.dtype)
    zeros = jnp.zeros_like(center)
    points, step = stencil(center)
    initial = _NewtonState(
        points=points,
        step=step,
        phase=jnp.asarray(0),
        point=center,
        energy=zero,
        gradient=zeros,
        hessian=identity,
        scale=zero + 1,
        steps=jnp.asarray(0),
        first=(zero, zeros, identity),
        fit=LaplaceFit(
            starts=jnp.zeros_like(noise),
            valid=jnp.asarray(False),
            covariance=identity,
            fallback=(center, zero, zeros),
            start_values=(jnp.zeros(num_chains, center.dtype), jnp.zeros_like(noise)),
            given_finite=jnp.asarray(False),
        ),
    )
    return lax.while_loop(lambda state: state.phase < 2, iterate, initial).fit
