"""One EM step, written once: ``init`` and ``step`` in BlackJAX's style, State and Info apart.

EM is additive: an iteration needs only the sufficient statistics of the data under the
current parameters, summed over any partition of the rows. So the step takes the
statistics, not the data,

.. math::

    \\mathcal{L}(\\theta^{(t)}) = \\frac{\\ell(\\theta^{(t)}) + \\log p(\\theta^{(t)})}{W},\\qquad
    \\theta^{(t+1)} = \\operatorname{M-step}(S(\\theta^{(t)})),

(:math:`\\ell` the weighted log-likelihood carried by the statistics, :math:`W` their total
weight, :math:`\\log p` the log prior for MAP, none for maximum likelihood: scikit-learn's
``lower_bound_``), and every execution mode is a way to produce and sum statistics: one
``lax.scan`` over blocks in memory (:func:`gaussmix.inference.em.fit_em`), a host loop
over chunks (:func:`gaussmix.inference.streaming.fit_em_chunked`), a step-size blend
online (:func:`gaussmix.inference.streaming.online_em_step`), ``psum`` over devices
(:func:`gaussmix.inference.shard.fit_em_sharded`), a sum over processes. :func:`step` is
pure with no jit inside; :func:`iterate` is the one ``lax.while_loop`` that the in-memory
and sharded drivers put inside their ``jax.jit``.

Example:
    >>> import jax.numpy as jnp
    >>> from gaussmix.inference.em.statistics import sufficient_statistics
    >>> from gaussmix.inference.em.parameters import with_covariances
    >>> x = jnp.array([[0.0], [1.0], [4.0], [5.0]])
    >>> p = with_covariances(jnp.array([0.5, 0.5]), jnp.array([[0.0], [5.0]]),
    ...     jnp.ones((2, 1)), "diag")
    >>> config = StepConfig(n_components=2, covariance_type="diag")
    >>> context = make_context(config, centre=x.mean(0), reg_covar=1e-6, tol=1e-3)
    >>> statistics = sufficient_statistics(x, p, covariance_type="diag", centre=x.mean(0))
    >>> state, info = step(init(p), statistics, context, config)
    >>> int(state.n_iter), bool(info.converged)
    (1, False)
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from gaussmix.inference.em.generalized import generalized_m_step, program_log_prior
from gaussmix.inference.em.maximization import (
    ConjugatePrior,
    conjugate_log_prior,
    make_conjugate_prior,
    maximization_step,
)
from gaussmix.inference.em.options import EMOptions
from gaussmix.inference.em.parameters import MixtureParameters, collapsed_components, site_values
from gaussmix.inference.em.statistics import SufficientStatistics
from gaussmix.models.priors import MixturePriorParameters

__all__ = [
    "EMContext",
    "EMInfo",
    "EMState",
    "StepConfig",
    "init",
    "iterate",
    "lower_bound",
    "make_context",
    "maximize",
    "step",
]


class EMState(NamedTuple):
    """What the next EM step needs.

    Attributes:
        parameters: the current :class:`MixtureParameters`.
        lower_bound: () lower bound of the parameters that entered the last step (the
            start's lower bound before the first).
        n_iter: () steps done.
    """

    parameters: MixtureParameters
    lower_bound: jax.Array
    n_iter: jax.Array


class EMInfo(NamedTuple):
    """What a user reads after an EM step.

    Attributes:
        lower_bound: () lower bound of the parameters that entered the step.
        change: () its change from the previous step's.
        converged: () whether ``|change| < tol``.
        collapsed_component: () the first component whose new covariance is not positive
            definite, -1 if none.
    """

    lower_bound: jax.Array
    change: jax.Array
    converged: jax.Array
    collapsed_component: jax.Array


class StepConfig(NamedTuple):
    """The static (hashable) description of the step: shapes and branches of the program.

    Attributes:
        n_components: K.
        covariance_type: "full", "tied", "diag", "spherical" or one of mclust's
            constrained models (its classic name for an alias).
        method: "maximum_likelihood", "conjugate_map" or "generalized_em".
        with_scales: whether the priors name ``scales`` (generalized EM's log prior).
        background: a uniform background component (:mod:`gaussmix.inference.em.background`):
            the weights are the Gaussian components', summing to one minus the
            background's, and the context carries the background's log density.
    """

    n_components: int
    covariance_type: str
    method: str = "maximum_likelihood"
    with_scales: bool = False
    background: bool = False

    @classmethod
    def from_options(cls, options: EMOptions) -> "StepConfig":
        """The step's configuration of validated :class:`EMOptions`."""
        return cls(
            n_components=options.n_components,
            covariance_type=options.covariance_type,
            method=options.method,
            with_scales=options.with_scales,
        )


class EMContext(NamedTuple):
    """The arrays a step needs besides statistics, fixed over a fit (traced, not static).

    Attributes:
        centre: (D,) the centre the statistics are taken about.
        reg_covar: () added to the diagonal of every covariance.
        tol: () convergence threshold on the change of the lower bound.
        priors: the checked priors (a dict of distributions, empty for the defaults).
        prior_parameters: the default prior's hyperparameters (MAP), else None.
        conjugate_prior: the :class:`ConjugatePrior` of a closed-form MAP, else None.
        background_log_density: () :math:`-\\log V` of a uniform background (with
            ``StepConfig.background``), else None.
    """

    centre: jax.Array
    reg_covar: jax.Array
    tol: jax.Array
    priors: Mapping
    prior_parameters: MixturePriorParameters | None
    conjugate_prior: ConjugatePrior | None
    background_log_density: jax.Array | None = None


def make_context(
    config: StepConfig,
    *,
    centre: ArrayLike,
    reg_covar: ArrayLike,
    tol: ArrayLike,
    priors: Mapping | None = None,
    prior_parameters: MixturePriorParameters | None = None,
    background_log_density: ArrayLike | None = None,
) -> EMContext:
    """An :class:`EMContext` in ``centre``'s dtype; the conjugate prior of a closed-form
    MAP is built from ``priors`` and ``prior_parameters`` here. ``background_log_density``:
    :math:`-\\log V` of a uniform background (``config.background``), else None."""
    centre = jnp.asarray(centre)
    dtype = centre.dtype
    priors = {} if priors is None else priors
    conjugate_prior = None
    if config.method == "conjugate_map":
        conjugate_prior = make_conjugate_prior(
            priors, prior_parameters, config.n_components, config.covariance_type, dtype
        )
    return EMContext(
        centre=centre,
        reg_covar=jnp.asarray(reg_covar, dtype),
        tol=jnp.asarray(tol, dtype),
        priors=priors,
        prior_parameters=prior_parameters,
        conjugate_prior=conjugate_prior,
        background_log_density=(
            None if background_log_density is None else jnp.asarray(background_log_density, dtype)
        ),
    )


def init(parameters: MixtureParameters, lower_bound: ArrayLike = -np.inf) -> EMState:
    """The state before the first step, from starting ``parameters``.

    Args:
        parameters: the start (:mod:`gaussmix.inference.em.initialization`).
        lower_bound: the start's lower bound (a warm start can converge at once).
    """
    dtype = parameters.means.dtype
    return EMState(
        parameters=parameters,
        lower_bound=jnp.asarray(lower_bound, dtype),
        n_iter=jnp.zeros((), jnp.int32),
    )


def lower_bound(
    statistics: SufficientStatistics,
    parameters: MixtureParameters,
    context: EMContext,
    config: StepConfig,
) -> jax.Array:
    """() scikit-learn's lower bound of ``parameters``: the weighted mean log-likelihood,
    plus the log prior divided by the total weight for MAP."""
    bound = statistics.log_likelihood
    if config.method == "conjugate_map":
        bound = bound + conjugate_log_prior(
            parameters,
            context.conjugate_prior,
            config.covariance_type,
            background=config.background,
        )
    elif config.method == "generalized_em":
        bound = bound + program_log_prior(
            site_values(parameters, config.covariance_type, with_scales=config.with_scales),
            n_components=config.n_components,
            covariance_type=config.covariance_type,
            priors=context.priors,
            prior_parameters=context.prior_parameters,
        )
    return bound / statistics.total_weight


def maximize(
    statistics: SufficientStatistics,
    parameters: MixtureParameters,
    context: EMContext,
    config: StepConfig,
) -> MixtureParameters:
    """The M-step of ``config.method`` (``parameters``: where generalized EM starts, and
    the warm start of an iterative constrained M-step)."""
    if config.method == "generalized_em":
        if config.background:
            raise NotImplementedError(
                "a uniform background with non-conjugate priors (generalized EM) is not "
                "implemented; use priors=None, 'default' or conjugate priors."
            )
        return generalized_m_step(
            statistics,
            parameters,
            centre=context.centre,
            reg_covar=context.reg_covar,
            n_components=config.n_components,
            covariance_type=config.covariance_type,
            priors=context.priors,
            prior_parameters=context.prior_parameters,
        )
    prior = context.conjugate_prior if config.method == "conjugate_map" else None
    return maximization_step(
        statistics,
        covariance_type=config.covariance_type,
        centre=context.centre,
        reg_covar=context.reg_covar,
        prior=prior,
        previous=parameters.covariances,
        background=config.background,
    )


def step(
    state: EMState,
    statistics: SufficientStatistics,
    context: EMContext,
    config: StepConfig,
) -> tuple[EMState, EMInfo]:
    """One EM step from the statistics of all data under ``state.parameters`` (pure).

    The lower bound of the entering parameters, the M-step, collapse detection (a new
    covariance that is not positive definite) and the convergence test
    :math:`|\\mathcal{L}_t - \\mathcal{L}_{t-1}| < \\mathrm{tol}`.

    Args:
        state: the current :class:`EMState`.
        statistics: :class:`SufficientStatistics` of all rows (summed over blocks,
            chunks, devices, processes) under ``state.parameters``.
        context: :class:`EMContext`.
        config: :class:`StepConfig` (static under ``jax.jit``).

    Returns:
        The new :class:`EMState` and the step's :class:`EMInfo`.
    """
    bound = lower_bound(statistics, state.parameters, context, config)
    parameters = maximize(statistics, state.parameters, context, config)
    collapsed = collapsed_components(parameters, config.covariance_type)
    collapsed_component = jnp.where(jnp.any(collapsed), jnp.argmax(collapsed), -1)
    change = bound - state.lower_bound
    info = EMInfo(
        lower_bound=bound,
        change=change,
        converged=jnp.abs(change) < context.tol,
        collapsed_component=collapsed_component.astype(jnp.int32),
    )
    return EMState(parameters, bound, state.n_iter + 1), info


def iterate(
    state: EMState,
    statistics_fn: Callable[[MixtureParameters], SufficientStatistics],
    context: EMContext,
    config: StepConfig,
    max_iter: int,
) -> tuple[EMState, EMInfo, jax.Array]:
    """:func:`step` in a ``lax.while_loop`` until convergence, collapse or ``max_iter``.

    Args:
        state: the start, from :func:`init`.
        statistics_fn: parameters -> statistics of all data (a scan over blocks, or one
            that ``psum``\\ s over devices).
        context, config: as for :func:`step`.
        max_iter: steps at most (static).

    Returns:
        The last state, the last step's info (before any step: the start's lower bound,
        not converged, nothing collapsed) and the (max_iter + 1,) lower bound of each
        step, -inf past the last (one spare slot keeps the never executed update valid
        when ``max_iter`` is 0).
    """
    dtype = state.lower_bound.dtype

    def cond(carry: tuple[EMState, EMInfo, Any]) -> jax.Array:
        state, info, _ = carry
        return (state.n_iter < max_iter) & ~info.converged & (info.collapsed_component < 0)

    def body(carry: tuple[EMState, EMInfo, Any]) -> tuple[EMState, EMInfo, Any]:
        state, _, trace = carry
        new_state, info = step(state, statistics_fn(state.parameters), context, config)
        return new_state, info, trace.at[state.n_iter].set(info.lower_bound)

    start_info = EMInfo(
        lower_bound=state.lower_bound,
        change=jnp.full((), jnp.inf, dtype),
        converged=jnp.array(False),
        collapsed_component=jnp.full((), -1, jnp.int32),
    )
    trace = jnp.full((max_iter + 1,), -jnp.inf, dtype)
    return lax.while_loop(cond, body, (state, start_info, trace))
