"""NUTS chains: one pure chain (warmup and sampling in one scan), mapped or sharded.

A chain is NumPyro's NUTS step in a ``lax.scan``; the metric starts as the Laplace
covariance and changes once, at the end of the slow windows of the warmup, to the
covariance of the positions visited there shrunk toward it (:func:`adapted_metric`).
Chains run one after the other on one device (``lax.map``): measured on a 2-core CPU
this is 2-3x faster than vectorizing them with ``vmap``, whose tree building waits for
the slowest chain at every step. With several host devices they are split over them
(``shard_map``).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from numpyro.infer.hmc import hmc
from numpyro.infer.hmc_util import build_adaptation_schedule, dual_averaging
from numpyro.infer.util import ParamInfo

from gaussmix.inference.mcmc.program import Program, Structure
from gaussmix.inference.mcmc.progress import tick

__all__ = [
    "Draws",
    "NutsSettings",
    "adapted_metric",
    "build_sampler",
    "chain_device_count",
    "initial_metric",
    "mass_window",
    "metric",
    "run_chain",
]


class NutsSettings(NamedTuple):
    """Static settings of one NUTS run.

    Attributes:
        num_warmup: adaptation iterations per chain (discarded).
        num_samples: kept draws per chain.
        dense_mass: dense (True) or diagonal mass matrix.
        target_accept_prob: the step size adapts to this mean acceptance probability;
            raise it (e.g. 0.95) when there are divergences.
        max_tree_depth: at most 2**max_tree_depth - 1 leapfrog steps per iteration.
    """

    num_warmup: int
    num_samples: int
    dense_mass: bool
    target_accept_prob: float = 0.8
    max_tree_depth: int = 10


class Draws(NamedTuple):
    """What each kept NUTS iteration records; every field has leading (C, S) axes.

    Attributes:
        position: (C, S, P) unconstrained position.
        potential_energy: (C, S) :math:`U(z)`.
        energy: (C, S) Hamiltonian (for the BFMI).
        diverging: (C, S) divergent transition.
        num_steps: (C, S) leapfrog steps.
        accept_prob: (C, S) mean acceptance probability of the trajectory.
        step_size: (C, S) the adapted step size.
    """

    position: jax.Array
    potential_energy: jax.Array
    energy: jax.Array
    diverging: jax.Array
    num_steps: jax.Array
    accept_prob: jax.Array
    step_size: jax.Array


def mass_window(num_warmup: int) -> tuple[int, int] | None:
    """Warmup iterations whose positions estimate the posterior covariance, or None.

    NumPyro's schedule (Stan's): a fast initial buffer, slow windows, a fast terminal
    buffer. The window here spans all slow windows; the metric changes once, at its end,
    and the terminal buffer adapts the step size to the new metric.

    Example:
        >>> mass_window(1000), mass_window(10)
        ((75, 950), None)
    """
    schedule = build_adaptation_schedule(num_warmup)
    if len(schedule) < 3:
        return None
    return int(schedule[1][0]), int(schedule[-2][1]) + 1


def metric(inverse_mass_matrix: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(inverse mass matrix, mass_matrix_sqrt, mass_matrix_sqrt_inv)`` as NumPyro keeps them.

    Args:
        inverse_mass_matrix: (P,) diagonal or (P, P) dense.
    """
    if inverse_mass_matrix.ndim == 1:
        root = jnp.sqrt(inverse_mass_matrix)
        return inverse_mass_matrix, jnp.reciprocal(root), root
    flipped = jnp.linalg.cholesky(inverse_mass_matrix[::-1, ::-1])[::-1, ::-1]
    root_inverse = flipped.T
    identity = jnp.eye(inverse_mass_matrix.shape[-1], dtype=inverse_mass_matrix.dtype)
    root = jax.scipy.linalg.solve_triangular(root_inverse, identity, lower=True)
    return inverse_mass_matrix, root, root_inverse


def adapted_metric(prior: jax.Array, count, mean, scatter) -> jax.Array:
    """Covariance of the window's positions, shrunk toward the Laplace (prior) metric.

    .. math::

        M^{-1} = \\frac{n\\,S + k\\,\\Sigma_0}{n + k},\\qquad k = P,

    kept only if finite and positive definite (else :math:`\\Sigma_0`).

    Args:
        prior: :math:`\\Sigma_0`, (P,) diagonal or (P, P) dense.
        count: :math:`n`, positions seen.
        mean: (P,) their running mean.
        scatter: (P, P) their scatter matrix (:math:`(n - 1) S`).
    """
    dimension = mean.shape[-1]
    covariance = scatter / jnp.maximum(count - 1, 1)
    if prior.ndim == 1:
        covariance = jnp.diagonal(covariance)
    weight = count / (count + dimension)
    blended = weight * covariance + (1 - weight) * prior
    if prior.ndim == 1:
        valid = jnp.all(jnp.isfinite(blended) & (blended > 0))
    else:
        valid = jnp.all(jnp.isfinite(jnp.linalg.cholesky(blended)))
    return jnp.where(valid & (count > 1), blended, prior)


def run_chain(
    potential_fn: Callable,
    start: jax.Array,
    start_value: tuple,
    rng_key: jax.Array,
    fallback: tuple,
    inverse_mass_matrix: jax.Array,
    settings: NutsSettings,
    keep_warmup: bool = False,
    report_progress: bool = False,
) -> Draws:
    """Warmup then sampling of one chain; pure, so it jits, maps and shards.

    The metric starts as the Laplace covariance (``inverse_mass_matrix``) and changes
    once, at the end of the slow windows of the warmup, to the covariance of the positions
    visited there shrunk toward it (:func:`adapted_metric`); the step size adapts by
    dual averaging throughout (NumPyro's). Re-estimating a dense metric from the first,
    short windows, as NumPyro's own adaptation does, throws the good start away and costs
    long trajectories.

    Args:
        potential_fn: :math:`U` of a flat (P,) unconstrained position.
        start: (P,) the chain's start.
        start_value: ``(potential, gradient)`` at ``start`` (the preparation evaluates
            them, so that the potential's gradient is compiled once here: in the NUTS
            step).
        rng_key: the chain's key.
        fallback: ``(center, potential, gradient)`` of the mode, taken instead of
            ``start`` when the jittered start has no finite potential or gradient.
        inverse_mass_matrix: (P,) or (P, P) initial metric.
        settings: the run's settings.
        keep_warmup: also return the warmup iterations.
        report_progress: (static) add the host callbacks that advance the progress
            bar. Without them the program has no host callback, so it can be serialized
            (persistent compilation caches refuse programs with host callbacks).

    Returns:
        :class:`Draws` with a leading (S,) axis (warmup + S with ``keep_warmup``).
    """
    center, center_energy, center_gradient = fallback
    energy, gradient = start_value
    valid = jnp.isfinite(energy) & jnp.all(jnp.isfinite(gradient))
    init_kernel, sample_kernel = hmc(potential_fn=potential_fn, algo="NUTS")
    state = init_kernel(
        ParamInfo(
            jnp.where(valid, start, center),
            jnp.where(valid, energy, center_energy),
            jnp.where(valid, gradient, center_gradient),
        ),
        settings.num_warmup,
        inverse_mass_matrix=inverse_mass_matrix,
        adapt_mass_matrix=False,
        dense_mass=settings.dense_mass,
        target_accept_prob=settings.target_accept_prob,
        max_tree_depth=settings.max_tree_depth,
        rng_key=rng_key,
    )
    total = settings.num_warmup + settings.num_samples
    rate = max(1, total // 50)
    window = mass_window(settings.num_warmup)
    restart_step_size, _ = dual_averaging()
    dimension = start.shape[-1]
    moments = (
        jnp.zeros((), start.dtype),
        jnp.zeros(dimension, start.dtype),
        jnp.zeros((dimension, dimension), start.dtype),
    )

    def accumulate(moments, position):
        """Welford's running mean and scatter matrix."""
        count, mean, scatter = moments
        count = count + 1
        delta = position - mean
        mean = mean + delta / count
        return count, mean, scatter + jnp.outer(delta, position - mean)

    def switch_metric(state, moments):
        adapt = state.adapt_state
        new_metric = metric(adapted_metric(inverse_mass_matrix, *moments))
        adapt = adapt._replace(
            inverse_mass_matrix=new_metric[0],
            mass_matrix_sqrt=new_metric[1],
            mass_matrix_sqrt_inv=new_metric[2],
            ss_state=restart_step_size(jnp.log(10 * adapt.step_size)),
        )
        return state._replace(adapt_state=adapt)

    def step(carry, iteration):
        state, moments = carry
        state = sample_kernel(state)
        if window is not None:
            inside = (iteration >= window[0]) & (iteration < window[1])
            moments = jax.tree.map(
                lambda new, old: jnp.where(inside, new, old),
                accumulate(moments, state.z),
                moments,
            )
            state = lax.cond(
                iteration == window[1] - 1,
                switch_metric,
                lambda state, moments: state,
                state,
                moments,
            )
        if report_progress:  # progress to the tqdm bar of the run in flight
            done = iteration + 1
            lax.cond(
                (done % rate == 0) | (done == total),
                lambda: jax.debug.callback(tick, done, rate, total),
                lambda: None,
            )
        return (state, moments), Draws(
            state.z,
            state.potential_energy,
            state.energy,
            state.diverging,
            state.num_steps,
            state.accept_prob,
            state.adapt_state.step_size,
        )

    # One loop for warmup and sampling: the NUTS step is compiled once.
    _, draws = lax.scan(step, (state, moments), jnp.arange(total))
    if keep_warmup:
        return draws
    return jax.tree.map(lambda value: value[settings.num_warmup :], draws)


def chain_device_count(num_chains: int) -> int:
    """Largest divisor of num_chains not above the number of local devices."""
    devices = jax.local_device_count()
    return max(d for d in range(1, min(devices, num_chains) + 1) if num_chains % d == 0)


def initial_metric(covariance: jax.Array, dense_mass: bool) -> jax.Array:
    """The starting inverse mass matrix from the preparation's covariance.

    Args:
        covariance: (P, P) Laplace covariance (the identity where the Hessian was not
            definite), or (P,) ones when no Laplace fit was made.
        dense_mass: dense (P, P) or diagonal (P,) metric.
    """
    if covariance.ndim == 1:
        return jnp.diag(covariance) if dense_mass else covariance
    return covariance if dense_mass else jnp.diagonal(covariance)


def build_sampler(
    program: Program,
    structure: Structure,
    settings: NutsSettings,
    devices: int,
    progress: bool = False,
) -> Callable:
    """``build(found)`` of the chains, for :func:`~.program.compiled`.

    The compiled ``run(dynamic, starts (C, P), start_values ((C,), (C, P)), rng_keys (C,),
    fallback, covariance)``
    returns :class:`Draws` with leading (C, S) axes; chains are mapped on one device or
    sharded over ``devices``; the metric starts at :func:`initial_metric` of
    ``covariance``. With ``progress`` it advances the progress bar through host
    callbacks; without, it has none.
    """

    def build(found: dict):
        def run(dynamic, starts, start_values, rng_keys, fallback, covariance):
            args, kwargs = program.arguments(dynamic)
            potential = structure.potential_fn_gen(*args, **kwargs)
            inverse_mass_matrix = initial_metric(covariance, settings.dense_mass)

            def flat_potential(flat):
                return potential(structure.unravel(flat))

            def chains(starts, start_values, rng_keys):
                return lax.map(
                    lambda chain: run_chain(
                        flat_potential,
                        chain[0],
                        chain[1],
                        chain[2],
                        fallback,
                        inverse_mass_matrix,
                        settings,
                        report_progress=progress,
                    ),
                    (starts, start_values, rng_keys),
                )

            if devices == 1:
                return chains(starts, start_values, rng_keys)
            mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()[:devices]), ("chain",))
            spec = jax.sharding.PartitionSpec("chain")
            return jax.shard_map(
                chains, mesh=mesh, in_specs=(spec, spec, spec), out_specs=spec, check_vma=False
            )(starts, start_values, rng_keys)

        return run

    return build
