"""The result of an EM fit, the choice of the best restart and the failure messages."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gaussmix.inference.em.core import EMInfo, EMState, StepConfig
from gaussmix.inference.em.parameters import MixtureParameters, site_values
from gaussmix.inference.em.validation import precision_advice
from gaussmix.models.priors import COVARIANCE_SITES

__all__ = [
    "ConvergenceWarning",
    "EMResult",
    "best_restart",
    "parameters_of",
    "raise_on_failure",
]


class ConvergenceWarning(UserWarning):
    """The best initialization stopped at ``max_iter`` before the lower bound converged."""


class EMResult(NamedTuple):
    """Result of :func:`fit_em`; with batched data every field has a leading (B,) axis.

    Attributes:
        params: the program's sites: ``weights`` (K,), ``means`` (K, D) and the
            covariance site (``covariances`` (K, D, D) | ``covariance`` (D, D) |
            ``variances`` (K, D) or (K,)); plus ``scales`` when the priors name it. A
            valid point of :func:`gaussmix.models.gaussian_mixture`, usable as NUTS
            init values.
        precisions_cholesky: scikit-learn's ``precisions_cholesky_`` layout.
        lower_bound: () mean per-sample log-likelihood (+ log prior / total weight for
            MAP) of the last iteration, scikit-learn's ``lower_bound_``.
        lower_bounds: (max_iter,) the lower bound of each iteration, entries past
            ``n_iter`` filled with the final value.
        n_iter: () iterations run by the best initialization.
        converged: () whether it converged.
        method: ``"maximum_likelihood"``, ``"conjugate_map"`` or ``"generalized_em"``.
        background_weight: () the weight of a uniform background component
            (:mod:`gaussmix.inference.em.background`; ``params["weights"]`` then sum to
            one minus it), None for a fit without background.
    """

    params: dict[str, jax.Array]
    precisions_cholesky: jax.Array
    lower_bound: jax.Array
    lower_bounds: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    method: str
    background_weight: jax.Array | None = None


def raise_on_failure(
    collapsed: np.ndarray,
    n_iters: np.ndarray,
    lower_bound: np.ndarray,
    batched: bool,
    covariance_type: str,
    dtype,
) -> None:
    """A ValueError naming the first collapsed component (dataset, restart, iteration)
    or a non-finite lower bound, with what to do.

    Args:
        collapsed: (B, R) collapsed component of each dataset and restart, -1 if none.
        n_iters: (B, R) iterations run.
        lower_bound: the final lower bound(s).
        batched: whether to name the dataset.
        covariance_type: the fit's.
        dtype: the computing dtype (float32 adds its advice).
    """
    failed = np.argwhere(collapsed >= 0)
    if failed.size:
        dataset, restart = failed[0]
        component = collapsed[dataset, restart]
        where = f"dataset {dataset}, " if batched else ""
        tied = " (the shared tied covariance)" if covariance_type == "tied" else ""
        message = (
            f"Fitting the mixture model failed because component {component}{tied} has an "
            f"ill-defined empirical covariance ({where}restart {restart}, iteration "
            f"{n_iters[dataset, restart]}), for instance caused by singleton or collapsed "
            "samples. Try to increase reg_covar, decrease the number of components, or "
            "scale the input data."
        )
        if dtype == jnp.float32:
            message += (
                " The computation ran in float32, whose rounding can also collapse a "
                "component: " + precision_advice(dtype)
            )
        raise ValueError(message)
    if np.any(np.isnan(lower_bound)) or np.any(lower_bound == np.inf):
        raise ValueError(
            f"The lower bound became NaN or infinite in {np.dtype(dtype)} (the data had "
            "none): the parameters left the support of a prior or the computation "
            "overflowed; check the priors, or " + precision_advice(dtype)
        )


def parameters_of(result: EMResult, covariance_type: str) -> MixtureParameters:
    """The :class:`MixtureParameters` of a result (its covariance site and factors)."""
    params = result.params
    return MixtureParameters(
        params["weights"],
        params["means"],
        params[COVARIANCE_SITES[covariance_type]],
        result.precisions_cholesky,
    )


def best_restart(
    states: EMState,
    infos: EMInfo,
    lower_bounds: np.ndarray,
    config: StepConfig,
    max_iter: int,
    dtype,
) -> EMResult:
    """The result of the restart with the best lower bound, on the host; errors as
    :func:`gaussmix.inference.em.fit_em` raises them.

    Args:
        states: (R,) stacked final :class:`gaussmix.inference.em.core.EMState` s.
        infos: (R,) their last :class:`gaussmix.inference.em.core.EMInfo` s.
        lower_bounds: (R, >= max_iter) lower bound of each iteration.
        config: the fit's :class:`gaussmix.inference.em.core.StepConfig`.
        max_iter: the fit's.
        dtype: the computing dtype.
    """
    states, infos = jax.tree.map(np.asarray, (states, infos))
    lower_bounds = np.asarray(lower_bounds)[:, :max_iter]
    lower_bound, n_iter = states.lower_bound, states.n_iter
    best = int(np.argmax(lower_bound))
    raise_on_failure(
        infos.collapsed_component[None],
        n_iter[None],
        lower_bound[None],
        False,
        config.covariance_type,
        dtype,
    )
    chosen = jax.tree.map(lambda leaf: jnp.asarray(leaf[best]), states.parameters)
    filled = np.where(np.arange(max_iter) < n_iter[best], lower_bounds[best], lower_bound[best])
    return EMResult(
        params=site_values(chosen, config.covariance_type, with_scales=config.with_scales),
        precisions_cholesky=chosen.precisions_cholesky,
        lower_bound=jnp.asarray(lower_bound[best]),
        lower_bounds=jnp.asarray(filled.astype(lower_bounds.dtype)),
        n_iter=jnp.asarray(n_iter[best]),
        converged=jnp.asarray(infos.converged[best]),
        method=config.method,
    )
