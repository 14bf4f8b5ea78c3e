"""NUTS for any NumPyro program, started at the MAP, returned as an ArviZ DataTree.

:func:`sample` runs the No-U-Turn sampler (NumPyro's kernel) on the potential of a
NumPyro program, the negative log joint density in the unconstrained space of its latent
sites,

.. math::

    U(z) = -\\log p\\big(T(z), y\\big) - \\log\\left|\\det J_T(z)\\right|,

with :math:`T` the transform from the unconstrained space to each site's support.

Initialization. Chains start at the mode :math:`z^*` with jitter drawn from the Laplace
approximation :math:`\\mathcal{N}(z^*, H^{-1})`, :math:`H = \\nabla^2 U(z^*)` (central
differences of the gradient), which also seeds the mass matrix. The mode is

* ``init`` when given (constrained site values, e.g. a MAP from elsewhere);
* for :func:`gaussmix.models.gaussian_mixture`, the EM answer
  (:func:`gaussmix.inference.em.fit_em` under the program's prior);
* for any other program, the minimum of :math:`U` found by BFGS from NumPyro's
  ``init_to_median``; when that search fails, ``init_to_median`` itself (with a
  :class:`~gaussmix.inference.diagnostics.SamplingWarning`).

A program without any point of finite log density and gradient raises ``ValueError``.

Execution. Three ``jax.jit``-compiled programs do all the work: preparation (NumPyro's
``initialize_model``, the MAP search, the Laplace fit), the chains (warmup and sampling
in one ``lax.scan`` around NumPyro's NUTS step) and post-processing (constrained draws,
pointwise log-likelihood, observed values). Array arguments of the program are traced,
so a later call with data of the same shapes reuses all three (compile time is reported
apart from sampling time in ``sample_stats.attrs``). Chains run one after the other on
one device (``lax.map``): measured on a 2-core CPU this is 2-3x faster than vectorizing
them with ``vmap``, whose tree building waits for the slowest chain at every step. With
several host devices, chains are split over them (``shard_map``); on CPU create the
devices before JAX starts with

>>> import numpyro  # doctest: +SKIP
>>> numpyro.set_host_device_count(4)  # doctest: +SKIP

The mass matrix is dense up to 100 unconstrained dimensions and diagonal beyond.

Mixtures. For :func:`gaussmix.models.gaussian_mixture` the draws are relabeled (see
:mod:`gaussmix.inference.relabel`) to the labelling of the starting point (``init``, else
the EM answer) before anything is summarized. In one dimension they are ordered by their
means: ascending after an EM start; after ``init``, the ordered components take the labels
of ``init``'s components of the same rank, so the draws keep ``init``'s labelling. The
log-likelihood is the marginal one (the component index is summed out), so
``arviz_stats.loo`` is right.
"""

import os
import sys
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.typing import ArrayLike
from numpyro import handlers
from numpyro.infer.hmc import hmc
from numpyro.infer.hmc_util import build_adaptation_schedule, dual_averaging
from numpyro.infer.initialization import init_to_median, init_to_value
from numpyro.infer.util import ParamInfo, constrain_fn, initialize_model
from numpyro.primitives import Messenger

from gaussmix.inference.diagnostics import SamplingWarning
from gaussmix.inference.relabel import (
    apply_permutation,
    label_switching_fraction,
    relabel_mixture,
    relabeling_permutation,
    sort_components,
)
from gaussmix.models.mixture import check_priors, component_log_density, gaussian_mixture
from gaussmix.models.priors import COVARIANCE_SITES, check_covariance_type

__all__ = [
    "DENSE_MASS_MAX_DIMENSION",
    "Draws",
    "NutsSettings",
    "posterior_responsibilities",
    "sample",
    "sample_mixture",
]

#: Largest number of unconstrained dimensions with a dense mass matrix.
DENSE_MASS_MAX_DIMENSION = 100
#: Largest number of unconstrained dimensions for which the Laplace Hessian is formed.
_LAPLACE_MAX_DIMENSION = 500
#: Standard deviation of the jitter (unconstrained space) when there is no Laplace fit.
_FALLBACK_JITTER = 0.1
#: BFGS iterations of the generic MAP search, and restarts after a failed line search.
_MAP_MAX_ITERATIONS = 200
_MAP_RESTARTS = 10
#: Compiled programs kept for reuse.
_CACHE_SIZE = 32
_COMPILED: OrderedDict = OrderedDict()
#: The progress bar the compiled programs report to (set while a run is in flight).
_PROGRESS: dict[str, Any] = {"bar": None}


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


class _Structure(NamedTuple):
    """What tracing NumPyro's ``initialize_model`` tells about a program."""

    potential_fn_gen: Callable
    unravel: Callable
    latent: tuple  # continuous latent sites, in the order of the flat position
    deterministic: tuple
    observed: tuple


# --------------------------------------------------------------------------------------
# A model bound to its arguments: array leaves are traced, the rest is static.


class _Program(NamedTuple):
    model: Callable
    treedef: Any
    static_leaves: tuple
    dynamic: tuple  # the array leaves, in order
    dynamic_index: tuple  # their positions among all leaves
    cache_key: Any  # hashable, or None when the arguments cannot be hashed

    def arguments(self, dynamic=None) -> tuple[tuple, dict]:
        leaves = list(self.static_leaves)
        for index, value in zip(
            self.dynamic_index, self.dynamic if dynamic is None else dynamic, strict=True
        ):
            leaves[index] = value
        return jax.tree.unflatten(self.treedef, leaves)


def _bind(model: Callable, args: tuple, kwargs: dict) -> _Program:
    leaves, treedef = jax.tree.flatten((tuple(args), dict(kwargs)))
    dynamic_index = tuple(
        i
        for i, leaf in enumerate(leaves)
        if isinstance(leaf, jax.Array | np.ndarray)
        and (np.issubdtype(leaf.dtype, np.number) or leaf.dtype == np.bool_)
    )
    dynamic = tuple(jnp.asarray(leaves[i]) for i in dynamic_index)
    static_leaves = tuple(None if i in dynamic_index else leaf for i, leaf in enumerate(leaves))
    signature = tuple((value.shape, str(value.dtype)) for value in dynamic)
    cache_key = (model, treedef, static_leaves, dynamic_index, signature)
    try:
        hash(cache_key)
    except TypeError:
        cache_key = None
    return _Program(model, treedef, static_leaves, dynamic, dynamic_index, cache_key)


def _compiled(name: str, program: _Program, extra_key: tuple, build: Callable, *example):
    """Lower and compile ``build(found)`` for ``(program.dynamic, *example)``, cached.

    ``build`` receives a dict it may fill while being traced (e.g. with the program's
    structure); returns ``(compiled, found, seconds spent compiling)``.
    """
    key = None if program.cache_key is None else (name, program.cache_key, extra_key)
    if key is not None and key in _COMPILED:
        _COMPILED.move_to_end(key)
        compiled, found = _COMPILED[key]
        return compiled, found, 0.0
    found: dict = {}
    start = time.perf_counter()
    compiled = jax.jit(build(found)).lower(program.dynamic, *example).compile()
    seconds = time.perf_counter() - start
    if key is not None:
        _COMPILED[key] = (compiled, found)
        while len(_COMPILED) > _CACHE_SIZE:
            _COMPILED.popitem(last=False)
    return compiled, found, seconds


def _signature(tree) -> tuple:
    """Hashable (path, shape, dtype) of every leaf; reads attributes, converts nothing."""

    def describe(path, leaf):
        if not hasattr(leaf, "dtype"):  # a Python scalar or sequence
            leaf = jnp.asarray(leaf)
        return str(path), tuple(leaf.shape), str(leaf.dtype)

    return tuple(describe(path, leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(tree))


# --------------------------------------------------------------------------------------
# Preparation: initial point, MAP search, Laplace fit, jittered starts.


def _build_prepare(program: _Program, num_chains: int, has_init: bool):
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
            found["structure"] = _Structure(
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
                center, map_accepted = _map_search(flat_potential, start, start_energy)
            noise = jax.random.normal(noise_key, (num_chains, start.size), start.dtype)
            starts, laplace_valid, covariance, fallback = _laplace(flat_potential, center, noise)
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


def _map_search(flat_potential: Callable, start: jax.Array, start_energy: jax.Array):
    """Minimize the potential by BFGS, restarted (fresh Hessian estimate) until it converges.

    JAX's BFGS stops at the first failed line search; restarting from where it stopped
    resets its Hessian estimate and usually finishes the job. Returns ``(mode, accepted)``;
    a mode is finite, no worse than the start and (nearly) stationary, so that a search
    running off to an unbounded density is refused.
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


def _laplace(flat_potential: Callable, center: jax.Array, noise: jax.Array):
    """Potential and gradient at the mode, Laplace covariance, jittered chain starts.

    The Hessian is the central difference of gradients, one coordinate after the other
    (``lax.map``: the gradient is compiled once, unlike ``jax.hessian``).

    Returns ``(starts (C, P), valid, covariance (P, P) or ones (P,), (center, U, dU))``.
    """
    dimension = center.size
    with_hessian = dimension <= _LAPLACE_MAX_DIMENSION
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
            center + _FALLBACK_JITTER * noise,
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
    jitter = jnp.where(valid, jitter, _FALLBACK_JITTER * noise)
    covariance = jnp.where(valid, jax.scipy.linalg.cho_solve((safe, True), identity), identity)
    return center + jitter, valid, covariance, fallback


# --------------------------------------------------------------------------------------
# NUTS chains.


def _mass_window(num_warmup: int) -> tuple[int, int] | None:
    """Warmup iterations whose positions estimate the posterior covariance, or None.

    NumPyro's schedule (Stan's): a fast initial buffer, slow windows, a fast terminal
    buffer. The window here spans all slow windows; the metric changes once, at its end,
    and the terminal buffer adapts the step size to the new metric.
    """
    schedule = build_adaptation_schedule(num_warmup)
    if len(schedule) < 3:
        return None
    return int(schedule[1][0]), int(schedule[-2][1]) + 1


def _metric(inverse_mass_matrix: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(inverse mass matrix, mass_matrix_sqrt, mass_matrix_sqrt_inv)`` as NumPyro keeps them."""
    if inverse_mass_matrix.ndim == 1:
        root = jnp.sqrt(inverse_mass_matrix)
        return inverse_mass_matrix, jnp.reciprocal(root), root
    flipped = jnp.linalg.cholesky(inverse_mass_matrix[::-1, ::-1])[::-1, ::-1]
    root_inverse = flipped.T
    identity = jnp.eye(inverse_mass_matrix.shape[-1], dtype=inverse_mass_matrix.dtype)
    root = jax.scipy.linalg.solve_triangular(root_inverse, identity, lower=True)
    return inverse_mass_matrix, root, root_inverse


def _adapted_metric(prior: jax.Array, count, mean, scatter) -> jax.Array:
    """Covariance of the window's positions, shrunk toward the Laplace (prior) metric.

    .. math::

        M^{-1} = \\frac{n\\,S + k\\,\\Sigma_0}{n + k},\\qquad k = P,

    kept only if finite and positive definite (else :math:`\\Sigma_0`).
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


def _run_chain(
    potential_fn: Callable,
    start: jax.Array,
    rng_key: jax.Array,
    fallback: tuple,
    inverse_mass_matrix: jax.Array,
    settings: NutsSettings,
    keep_warmup: bool = False,
    report_progress: bool | jax.Array = False,
) -> Draws:
    """Warmup then sampling of one chain; pure, so it jits, maps and shards.

    The metric starts as the Laplace covariance (``inverse_mass_matrix``) and changes
    once, at the end of the slow windows of the warmup, to the covariance of the positions
    visited there shrunk toward it (:func:`_adapted_metric`); the step size adapts by
    dual averaging throughout (NumPyro's). Re-estimating a dense metric from the first,
    short windows, as NumPyro's own adaptation does, throws the good start away and costs
    long trajectories.

    ``fallback`` is ``(center, potential, gradient)`` of the mode, taken instead of
    ``start`` when the jittered start has no finite potential or gradient.
    ``report_progress`` (traced, so one program serves both) switches on the host
    callbacks that advance the progress bar; each is a device-host round trip, skipped
    when no bar is shown.
    """
    center, center_energy, center_gradient = fallback
    energy, gradient = jax.value_and_grad(potential_fn)(start)
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
    window = _mass_window(settings.num_warmup)
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
        metric = _metric(_adapted_metric(inverse_mass_matrix, *moments))
        adapt = adapt._replace(
            inverse_mass_matrix=metric[0],
            mass_matrix_sqrt=metric[1],
            mass_matrix_sqrt_inv=metric[2],
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
        done = iteration + 1  # progress to the tqdm bar of the run in flight
        lax.cond(
            jnp.asarray(report_progress) & ((done % rate == 0) | (done == total)),
            lambda: jax.debug.callback(_tick, done, rate, total),
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


def _tick(iteration, rate, total) -> None:
    bar = _PROGRESS["bar"]
    if bar is not None:
        iteration, rate, total = int(iteration), int(rate), int(total)
        bar.update(rate if iteration % rate == 0 else total % rate)


def _chain_device_count(num_chains: int) -> int:
    """Largest divisor of num_chains not above the number of local devices."""
    devices = jax.local_device_count()
    return max(d for d in range(1, min(devices, num_chains) + 1) if num_chains % d == 0)


def _build_sampler(program: _Program, structure: _Structure, settings: NutsSettings, devices):
    def build(found: dict):
        def run(dynamic, starts, rng_keys, fallback, inverse_mass_matrix, progress):
            args, kwargs = program.arguments(dynamic)
            potential = structure.potential_fn_gen(*args, **kwargs)

            def flat_potential(flat):
                return potential(structure.unravel(flat))

            def chains(starts, rng_keys):
                return lax.map(
                    lambda chain: _run_chain(
                        flat_potential,
                        chain[0],
                        chain[1],
                        fallback,
                        inverse_mass_matrix,
                        settings,
                        report_progress=progress,
                    ),
                    (starts, rng_keys),
                )

            if devices == 1:
                return chains(starts, rng_keys)
            mesh = jax.sharding.Mesh(np.asarray(jax.local_devices()[:devices]), ("chain",))
            spec = jax.sharding.PartitionSpec("chain")
            return jax.shard_map(
                chains, mesh=mesh, in_specs=(spec, spec), out_specs=spec, check_vma=False
            )(starts, rng_keys)

        return run

    return build


def _run_with_progress(sampler, settings: NutsSettings, progress: bool, num_chains, *arguments):
    if not progress:
        return jax.block_until_ready(sampler(*arguments, jnp.asarray(False)))
    from tqdm.auto import tqdm

    total = num_chains * (settings.num_warmup + settings.num_samples)
    with tqdm(total=total, desc="NUTS", unit="it", file=sys.stderr) as bar:
        _PROGRESS["bar"] = bar
        try:
            return jax.block_until_ready(sampler(*arguments, jnp.asarray(True)))
        finally:
            _PROGRESS["bar"] = None


# --------------------------------------------------------------------------------------
# Post-processing: constrained draws, log-likelihood, observed values.


def _build_postprocess(program: _Program, structure: _Structure):
    def build(found: dict):
        def postprocess(dynamic, positions, center):
            args, kwargs = program.arguments(dynamic)

            def constrain(flat):
                return constrain_fn(
                    program.model, args, kwargs, structure.unravel(flat), return_deterministic=True
                )

            def trace(values):
                model = handlers.substitute(handlers.seed(program.model, 0), values)
                return handlers.trace(model).get_trace(*args, **kwargs)

            def log_likelihood(values):
                model_trace = trace(values)
                return {
                    name: model_trace[name]["fn"].log_prob(model_trace[name]["value"])
                    for name in structure.observed
                }

            samples = jax.vmap(jax.vmap(constrain))(positions)
            point = constrain(center)
            center_trace = trace(point)
            return {
                "samples": samples,
                "log_likelihood": jax.vmap(jax.vmap(log_likelihood))(samples),
                "observed": {name: center_trace[name]["value"] for name in structure.observed},
                "center": point,
            }

        return postprocess

    return build


class _Unobserve(Messenger):
    """Turn observed sites into sampled ones (posterior predictive draws)."""

    def process_message(self, msg):
        if msg["type"] == "sample" and msg.get("is_observed"):
            msg["value"] = None
            msg["is_observed"] = False


def _build_predictive(program: _Program, structure: _Structure):
    def build(found: dict):
        def predictive(dynamic, samples, rng_key):
            from numpyro.infer import Predictive

            args, kwargs = program.arguments(dynamic)
            shape = jax.tree.leaves(samples)[0].shape[:2]
            flat = jax.tree.map(lambda value: value.reshape((-1, *value.shape[2:])), samples)
            draws = Predictive(
                _Unobserve(program.model),
                posterior_samples=flat,
                return_sites=list(structure.observed),
                parallel=True,
            )(rng_key, *args, **kwargs)
            return jax.tree.map(lambda value: value.reshape((*shape, *value.shape[1:])), draws)

        return predictive

    return build


# --------------------------------------------------------------------------------------
# The mixture program.


def _mixture_options(program: _Program) -> dict | None:
    """The mixture program's options, or None for any other program."""
    if program.model is not gaussian_mixture:
        return None
    args, kwargs = program.arguments()
    x = args[0] if args else kwargs.get("x")
    if x is None:
        raise ValueError("Sampling the mixture posterior needs data: pass x.")
    x = jnp.asarray(x)
    covariance_type = kwargs.get("covariance_type", "full")
    check_covariance_type(covariance_type)
    # The program's prior checks, with concrete values, before EM or NUTS trace anything.
    check_priors(
        kwargs.get("priors"),
        covariance_type,
        n_components=kwargs["n_components"],
        n_features=1 if x.ndim < 2 else x.shape[-1],
    )
    return {
        "x": x.reshape((-1, 1)) if x.ndim == 1 else x,
        "n_components": kwargs["n_components"],
        "covariance_type": covariance_type,
        "priors": kwargs.get("priors"),
        "sample_weight": kwargs.get("sample_weight"),
    }


def _em_init(options: dict, seed: int) -> dict | None:
    """The EM answer under the program's prior, or None with a warning if EM fails."""
    from gaussmix.inference import em

    priors = options["priors"] if options["priors"] else "default"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", em.ConvergenceWarning)
            result = em.fit_em(
                options["x"],
                n_components=options["n_components"],
                covariance_type=options["covariance_type"],
                priors=priors,
                sample_weight=options["sample_weight"],
                seed=seed,
            )
    except ValueError as error:
        warnings.warn(
            f"EM could not provide the starting point ({error}); starting from the generic "
            "MAP search instead.",
            SamplingWarning,
            stacklevel=4,
        )
        return None
    params = {name: jnp.asarray(value) for name, value in result.params.items()}
    if not all(bool(jnp.all(jnp.isfinite(value))) for value in params.values()):
        return None
    return params


def _mixture_dims(samples: Mapping, observed: tuple, sample_ndim: int = 2) -> dict:
    """Dimension names of the mixture sites (``sample_ndim`` leading sample axes)."""
    dims = {}
    for name, value in samples.items():
        event_ndim = np.ndim(value) - sample_ndim
        if name == "weights":
            dims[name] = ["components"]
        elif name == "means":
            dims[name] = ["components", "features"]
        elif name == "covariances":
            dims[name] = ["components", "feature_row", "feature_column"]
        elif name == "covariance":
            dims[name] = ["feature_row", "feature_column"]
        elif name in ("variances", "scales"):
            dims[name] = ["components"] + (["features"] if event_ndim == 2 else [])
    for name in observed:
        dims[name] = ["data", "features"]
    return dims


def _relabel_mixture_draws(
    samples: dict, reference: dict, covariance_type: str, keep_reference_labels: bool = False
):
    """Relabel the draws to the reference labelling.

    In one dimension the draws are ordered by their means; the reference is sorted too,
    unless ``keep_reference_labels`` (a user's ``init``), in which case the ordered
    components take the labels of the reference's components of the same rank.
    """
    one_dimensional = np.shape(samples["means"])[-1] == 1
    samples = {name: jnp.asarray(value) for name, value in samples.items()}
    if not one_dimensional:
        relabeled, permutation = relabel_mixture(
            samples, reference, covariance_type, method="match"
        )
    else:
        permutation = relabeling_permutation(samples, None, covariance_type, method="order")
        if keep_reference_labels:
            # Label k gets the draw's component whose mean has the rank of reference k's.
            rank = np.argsort(np.argsort(np.asarray(reference["means"])[:, 0], kind="stable"))
            permutation = permutation[..., rank]
        else:
            reference = sort_components(reference, covariance_type)
        relabeled = apply_permutation(samples, permutation, covariance_type)
    return (
        {name: np.asarray(value) for name, value in relabeled.items()},
        reference,
        "order" if one_dimensional else "match",
        label_switching_fraction(permutation),
    )


# --------------------------------------------------------------------------------------
# Public entry points.


def _check_count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _rng_key(seed):
    if isinstance(seed, jax.Array) and jnp.issubdtype(seed.dtype, jax.dtypes.prng_key):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise ValueError(f"seed must be an integer or a JAX key, got {seed!r}.")
    return jax.random.key(int(seed))


def _show_progress(progress_bar) -> bool:
    if progress_bar is None:
        return sys.stderr.isatty() and not os.environ.get("CI")
    return bool(progress_bar)


def _nuts_settings(options, num_warmup, num_samples, progress_bar) -> dict:
    options = dict(options or {})
    unknown = sorted(set(options) - {"target_accept_prob", "max_tree_depth", "dense_mass"})
    if unknown:
        raise ValueError(
            f"Unknown nuts_options {unknown}; use target_accept_prob, max_tree_depth, dense_mass."
        )
    target_accept_prob = float(options.get("target_accept_prob", 0.8))
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(f"target_accept_prob must lie in (0, 1), got {target_accept_prob}.")
    return {
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "target_accept_prob": target_accept_prob,
        "max_tree_depth": _check_count("max_tree_depth", options.get("max_tree_depth", 10), 1),
        "dense_mass": options.get("dense_mass"),
        "progress": _show_progress(progress_bar),
    }


class _Concrete:
    """A program with its arguments closed over (for programs that need concrete values)."""

    def __init__(self, model, args, kwargs):
        self.model, self.args, self.kwargs = model, args, kwargs

    def __call__(self):
        return self.model(*self.args, **self.kwargs)


_TRACING_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def sample(
    model: Callable,
    *args,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    seed: int | jax.Array = 0,
    init: Mapping[str, ArrayLike] | None = None,
    progress_bar: bool | None = None,
    posterior_predictive: bool = False,
    nuts_options: Mapping[str, Any] | None = None,
    **kwargs,
):
    """Sample the posterior of a NumPyro program by NUTS; an ArviZ DataTree back.

    Args:
        model: a NumPyro program, called as ``model(*args, **kwargs)``.
        *args: its positional arguments (data).
        num_warmup: adaptation iterations per chain (discarded), >= 0.
        num_samples: kept draws per chain, >= 1.
        num_chains: >= 1; >= 2 for R-hat.
        seed: integer or JAX key.
        init: constrained site values to start from (the MAP); by default the EM answer
            for :func:`gaussmix.models.gaussian_mixture` and a BFGS search of the mode of
            the unconstrained potential otherwise. Chains start at jittered copies.
        progress_bar: tqdm progress bar; ``None`` shows it on a terminal outside CI.
        posterior_predictive: also draw the observed sites given each posterior draw.
        nuts_options: ``target_accept_prob`` (0.8), ``max_tree_depth`` (10),
            ``dense_mass`` (default: dense up to 100 unconstrained dimensions).
        **kwargs: keyword arguments of the program.

    Returns:
        ``xarray.DataTree`` with groups ``posterior`` (latent and deterministic sites,
        (chain, draw, ...); relabeled for the mixture program), ``sample_stats``
        (``diverging``, ``energy``, ``lp``, ``n_steps``, ``tree_depth``,
        ``acceptance_rate``, ``step_size``; attrs ``sampling_time`` and ``compile_time``
        in seconds, ``init``: "init", "em", "map" or "init_to_median"),
        ``log_likelihood`` (pointwise, per observed site), ``observed_data``, on request
        ``posterior_predictive``, and for the mixture program ``mixture`` (the reference
        point of the labelling, ``reference_<site>``).

    Raises:
        ValueError: invalid counts, options or ``init``, or a program with no valid
            initial point.

    Warns:
        SamplingWarning: divergent transitions (with their count), or a failed MAP search.

    Example:
        >>> import jax, numpy as np, numpyro, numpyro.distributions as dist
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
        ...     with numpyro.plate("data", len(y)):
        ...         numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)
        >>> y = np.random.default_rng(0).normal(3.0, 1.0, 50)
        >>> tree = sample(model, y, num_warmup=200, num_samples=200, num_chains=2,
        ...               progress_bar=False)
        >>> sorted(tree.children)
        ['log_likelihood', 'observed_data', 'posterior', 'sample_stats']
        >>> bool(abs(float(tree.posterior["loc"].mean()) - y.mean()) < 0.1)
        True
    """
    if not callable(model):
        raise ValueError(
            f"model must be a NumPyro program (a callable), got {type(model).__name__}."
        )
    num_warmup = _check_count("num_warmup", num_warmup, 0)
    num_samples = _check_count("num_samples", num_samples, 1)
    num_chains = _check_count("num_chains", num_chains, 1)
    options = _nuts_settings(nuts_options, num_warmup, num_samples, progress_bar)
    rng_key = _rng_key(seed)
    if init is not None and not isinstance(init, Mapping):
        raise ValueError(
            f"init must be a dict of site values (constrained), got {type(init).__name__}."
        )
    program = _bind(model, args, kwargs)
    mixture = _mixture_options(program)
    source = "init"
    if init is None and mixture is not None:
        init = _em_init(mixture, int(seed) if isinstance(seed, int | np.integer) else 0)
        source = "em"
    try:
        return _sample(
            program, init, source, num_chains, options, rng_key, mixture, posterior_predictive
        )
    except _TRACING_ERRORS:
        if not program.dynamic:
            raise
        # The program needs concrete argument values: close over them instead.
        concrete = _bind(_Concrete(model, args, kwargs), (), {})
        return _sample(
            concrete, init, source, num_chains, options, rng_key, None, posterior_predictive
        )


def _check_init_names(program: _Program, init_values: Mapping) -> None:
    """Refuse init values for sites the program does not have (traced, nothing computed)."""
    names: dict = {}

    def record(dynamic):
        args, kwargs = program.arguments(dynamic)
        sites = handlers.trace(handlers.seed(program.model, 0)).get_trace(*args, **kwargs)
        names["latent"] = [
            n for n, s in sites.items() if s["type"] == "sample" and not s["is_observed"]
        ]
        names["known"] = set(names["latent"]) | {
            n for n, s in sites.items() if s["type"] == "deterministic"
        }
        return jnp.zeros(())

    jax.eval_shape(record, program.dynamic)
    unknown = sorted(set(init_values) - names["known"])
    if unknown:
        raise ValueError(
            f"init names unknown site(s) {unknown}; the latent sites are {names['latent']}."
        )


def _sample(program, init, source, num_chains, options, rng_key, mixture, posterior_predictive):
    prepare_key, chain_key, predictive_key = jax.random.split(rng_key, 3)
    init_values = None if init is None else {n: jnp.asarray(v) for n, v in init.items()}
    compile_time = 0.0
    if init_values is not None and source != "em":  # EM's answer names the right sites
        _check_init_names(program, init_values)

    # 1. Initial point, mode, Laplace fit.
    prepare, found, seconds = _compiled(
        "prepare",
        program,
        (num_chains, _signature(init_values)),
        _build_prepare(program, num_chains, init_values is not None),
        init_values,
        prepare_key,
    )
    compile_time += seconds
    structure = found["structure"]
    prepared = prepare(program.dynamic, init_values, prepare_key)
    if not bool(prepared["start_valid"]) or not (
        bool(jnp.isfinite(prepared["fallback"][1]))
        and bool(jnp.all(jnp.isfinite(prepared["fallback"][2])))
    ):
        if init_values is not None:
            raise ValueError(
                "The log density or its gradient is not finite at the values given in init "
                "(or found by EM); pass values inside the supports of the priors."
            )
        raise ValueError(
            "The model has no valid initial point: its log density or gradient is not "
            "finite at any point tried near the prior median. Check that the data lie in "
            "the support of the likelihood and that the priors are proper and consistent, "
            "or pass `init`, a dict of site values with finite log density."
        )
    if init_values is None:
        source = "map"
        if not bool(prepared["map_accepted"]):
            source = "init_to_median"
            warnings.warn(
                "The MAP search (BFGS on the unconstrained log density) failed to find a "
                "mode; chains start near the prior median instead (numpyro's "
                "init_to_median). Pass `init` with a good starting point if warmup struggles.",
                SamplingWarning,
                stacklevel=3,
            )
    starts = prepared["starts"]
    dimension = starts.shape[-1]
    dense_mass = options["dense_mass"]
    dense_mass = bool(dimension <= DENSE_MASS_MAX_DIMENSION if dense_mass is None else dense_mass)
    covariance = prepared["covariance"]
    if covariance.ndim == 1:  # no Laplace fit (too many dimensions): the identity
        inverse_mass_matrix = jnp.diag(covariance) if dense_mass else covariance
    else:  # the Laplace covariance, or the identity where the Hessian was not definite
        inverse_mass_matrix = covariance if dense_mass else jnp.diagonal(covariance)

    # 2. The chains.
    settings = NutsSettings(
        num_warmup=options["num_warmup"],
        num_samples=options["num_samples"],
        dense_mass=dense_mass,
        target_accept_prob=options["target_accept_prob"],
        max_tree_depth=options["max_tree_depth"],
    )
    devices = _chain_device_count(num_chains)
    chain_keys = jax.random.split(chain_key, num_chains)
    sampler, _, seconds = _compiled(
        "nuts",
        program,
        (settings, devices, num_chains, _signature(starts)),
        _build_sampler(program, structure, settings, devices),
        starts,
        chain_keys,
        prepared["fallback"],
        inverse_mass_matrix,
        jnp.asarray(False),
    )
    compile_time += seconds
    start = time.perf_counter()
    draws = _run_with_progress(
        sampler,
        settings,
        options["progress"],
        num_chains,
        program.dynamic,
        starts,
        chain_keys,
        prepared["fallback"],
        inverse_mass_matrix,
    )
    sampling_time = time.perf_counter() - start

    # 3. Constrained draws, log-likelihood, DataTree.
    center = prepared["fallback"][0]
    postprocess, _, seconds = _compiled(
        "postprocess",
        program,
        (_signature(draws.position),),
        _build_postprocess(program, structure),
        draws.position,
        center,
    )
    compile_time += seconds
    processed = jax.device_get(postprocess(program.dynamic, draws.position, center))
    samples = processed["samples"]
    predictive = None
    if posterior_predictive:
        predict, _, seconds = _compiled(
            "predictive",
            program,
            (_signature(samples),),
            _build_predictive(program, structure),
            samples,
            predictive_key,
        )
        compile_time += seconds
        predictive = jax.device_get(predict(program.dynamic, samples, predictive_key))
    attrs = {
        "sampling_time": sampling_time,
        "compile_time": compile_time,
        "init": source,
        "dense_mass": int(dense_mass),
        "laplace": int(bool(prepared["laplace_valid"])),
        "num_warmup": settings.num_warmup,
        "chain_devices": devices,
    }
    mixture_attrs, reference = {}, None
    if mixture is not None:
        covariance_type = mixture["covariance_type"]
        reference = init_values if init_values is not None else processed["center"]
        reference = {name: np.asarray(value) for name, value in reference.items()}
        samples, reference, method, switching = _relabel_mixture_draws(
            samples, reference, covariance_type, keep_reference_labels=source == "init"
        )
        mixture_attrs = {"relabel_method": method, "label_switching": switching, "init": source}
        dims = _mixture_dims(samples, structure.observed)
    else:
        from arviz_base.io_numpyro import infer_dims

        model_args, model_kwargs = program.arguments()
        dims = infer_dims(program.model, model_args, model_kwargs)
    tree = _to_datatree(
        samples,
        draws,
        processed["log_likelihood"],
        processed["observed"],
        predictive,
        dims,
        settings,
    )
    tree["sample_stats"].attrs.update(attrs)
    if mixture is not None:
        import xarray as xr

        tree["posterior"].attrs.update(mixture_attrs)
        site_dims = _mixture_dims(reference, (), sample_ndim=0)
        tree["mixture"] = xr.Dataset(
            {
                f"reference_{name}": (site_dims[name], np.asarray(value))
                for name, value in reference.items()
                if name in site_dims
            },
            attrs={"description": "the point whose labelling the draws follow (the MAP)"},
        )
    divergences = int(np.sum(np.asarray(draws.diverging)))
    if divergences:
        warnings.warn(
            f"{divergences} of {num_chains * settings.num_samples} transitions after warmup "
            "diverged: the sampler did not explore the whole posterior and the draws may be "
            "biased. Raise nuts_options={'target_accept_prob': 0.95} or reparameterize the "
            "model.",
            SamplingWarning,
            stacklevel=3,
        )
    return tree


def _to_datatree(samples, draws: Draws, log_likelihood, observed, predictive, dims, settings):
    from arviz_base import from_dict

    num_steps = np.asarray(draws.num_steps)
    tree_depth = np.floor(np.log2(np.maximum(num_steps, 1))).astype(int) + 1
    stats = {
        "lp": -np.asarray(draws.potential_energy),
        "energy": np.asarray(draws.energy),
        "diverging": np.asarray(draws.diverging),
        "n_steps": num_steps,
        "tree_depth": tree_depth,
        "reached_max_tree_depth": tree_depth > settings.max_tree_depth,
        "acceptance_rate": np.asarray(draws.accept_prob),
        "step_size": np.asarray(draws.step_size),
    }
    groups = {
        "posterior": {name: np.asarray(value) for name, value in samples.items()},
        "sample_stats": stats,
        "log_likelihood": {name: np.asarray(value) for name, value in log_likelihood.items()},
        "observed_data": {name: np.asarray(value) for name, value in observed.items()},
    }
    if predictive is not None:
        groups["posterior_predictive"] = {n: np.asarray(v) for n, v in predictive.items()}
    return from_dict(groups, dims=dims, sample_dims=["chain", "draw"])


def _responsibilities_impl(x, weights, means, covariance, covariance_type):
    def add(total, draw):
        w, m, c = draw
        log_prob = component_log_density(x, m, c, covariance_type)
        return total + jax.nn.softmax(log_prob + jnp.log(w), axis=-1), None

    initial = jnp.zeros((x.shape[0], weights.shape[-1]), x.dtype)
    total, _ = lax.scan(add, initial, (weights, means, covariance))
    return total / weights.shape[0]


_mean_responsibilities = jax.jit(_responsibilities_impl, static_argnames=("covariance_type",))


def posterior_responsibilities(x: ArrayLike, tree, covariance_type: str) -> jax.Array:
    """Posterior mean of the responsibilities, accumulated draw by draw.

    .. math::

        \\bar r_{nk} = \\frac{1}{S}\\sum_{s=1}^{S}
            \\frac{\\pi^{(s)}_k \\mathcal{N}(x_n \\mid \\mu^{(s)}_k, \\Sigma^{(s)}_k)}
                 {\\sum_j \\pi^{(s)}_j \\mathcal{N}(x_n \\mid \\mu^{(s)}_j, \\Sigma^{(s)}_j)}

    Args:
        x: (N, D) or (N,) data.
        tree: DataTree of the mixture posterior (relabeled).
        covariance_type: of the program.

    Returns:
        (N, K), rows summing to one.
    """
    x = jnp.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    site = COVARIANCE_SITES[covariance_type]
    values = {
        name: jnp.asarray(tree.posterior[name].values).reshape(
            (-1, *tree.posterior[name].shape[2:])
        )
        for name in ("weights", "means", site)
    }
    values = {name: value.astype(x.dtype) for name, value in values.items()}
    return _mean_responsibilities(
        x, values["weights"], values["means"], values[site], covariance_type
    )


def sample_mixture(
    x: ArrayLike,
    *,
    n_components: int,
    covariance_type: str = "full",
    priors: Mapping[str, Any] | None = None,
    sample_weight: ArrayLike | None = None,
    num_warmup: int = 1000,
    num_samples: int = 1000,
    num_chains: int = 4,
    seed: int | jax.Array = 0,
    progress_bar: bool | None = None,
    init: Mapping[str, ArrayLike] | None = None,
    prior_parameters=None,
    posterior_predictive: bool = False,
):
    """NUTS on :func:`gaussmix.models.gaussian_mixture`: relabeled draws, responsibilities.

    Runs :func:`sample` (chains from ``init``, else the EM answer under the program's
    prior), relabels the draws to the labelling of that point (ordered by the means in one
    dimension, ascending after EM, in ``init``'s rank order after ``init``) and adds the
    group
    ``mixture`` with

    .. math::

        \\bar r_{nk} = \\frac{1}{S}\\sum_{s=1}^{S}
            \\frac{\\pi^{(s)}_k \\mathcal{N}(x_n \\mid \\mu^{(s)}_k, \\Sigma^{(s)}_k)}
                 {\\sum_j \\pi^{(s)}_j \\mathcal{N}(x_n \\mid \\mu^{(s)}_j, \\Sigma^{(s)}_j)},

    the posterior-averaged responsibilities ``responsibilities`` (data, components), and
    the reference point of the labelling as ``reference_<site>``.

    Args:
        x: (N, D) or (N,) data.
        n_components, covariance_type, priors, sample_weight, prior_parameters: as in
            :func:`gaussmix.models.gaussian_mixture`.
        num_warmup, num_samples, num_chains, seed, progress_bar, init,
            posterior_predictive: as in :func:`sample`.

    Returns:
        The DataTree of :func:`sample` plus the group ``mixture``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> x = np.concatenate([rng.normal(-3, 1, 100), rng.normal(3, 1, 100)])
        >>> tree = sample_mixture(x, n_components=2, covariance_type="spherical",
        ...                       num_warmup=300, num_samples=300, num_chains=2,
        ...                       progress_bar=False)
        >>> np.round(tree.posterior["means"].mean(("chain", "draw")).values.ravel()).tolist()
        [-3.0, 3.0]
        >>> tree["mixture"]["responsibilities"].shape
        (200, 2)
    """
    check_covariance_type(covariance_type)
    kwargs = {"n_components": n_components, "covariance_type": covariance_type}
    if priors is not None:
        kwargs["priors"] = priors
    if sample_weight is not None:
        kwargs["sample_weight"] = sample_weight
    if prior_parameters is not None:
        kwargs["prior_parameters"] = prior_parameters
    tree = sample(
        gaussian_mixture,
        x,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        seed=seed,
        init=init,
        progress_bar=progress_bar,
        posterior_predictive=posterior_predictive,
        **kwargs,
    )
    responsibilities = posterior_responsibilities(
        tree.observed_data["x"].values, tree, covariance_type
    )
    import xarray as xr

    group = tree["mixture"].to_dataset() if "mixture" in tree.children else xr.Dataset()
    group["responsibilities"] = xr.DataArray(
        np.asarray(responsibilities),
        dims=("data", "components"),
        attrs={"description": "posterior mean of p(z_n = k | x_n, theta) over the draws"},
    )
    tree["mixture"] = group
    return tree
